//! `keyward.v1.AccessService`: principals, tokens and grants at runtime.

use keyward_core::{
    AccessKeyView, ContextConstraint, GrantInput, GrantView, Operation, PrincipalView, TokenView,
};
use tonic::{Request, Response, Status};

use super::convert::{duration_ms, given, timestamp};
use super::{respond, Api};
use crate::pb::{self, access_service_server::AccessService};

/// The access service.
#[derive(Debug, Clone)]
pub struct AccessApi(pub Api);

fn principal_to_pb(p: PrincipalView) -> pb::Principal {
    pb::Principal {
        name: p.name,
        roles: p.roles.iter().map(|r| r.as_str().to_string()).collect(),
        bootstrap: p.bootstrap,
        create_time: p.created_ms.map(timestamp),
        token_count: u32::try_from(p.tokens).unwrap_or(u32::MAX),
        grant_count: u32::try_from(p.grants).unwrap_or(u32::MAX),
    }
}

fn token_to_pb(t: TokenView) -> pb::TokenInfo {
    pb::TokenInfo {
        token_id: t.id.to_string(),
        principal: t.principal,
        create_time: Some(timestamp(t.created_ms)),
        expire_time: Some(timestamp(t.expires_ms)),
        last_used_time: t.last_used_ms.map(timestamp),
    }
}

fn access_key_to_pb(k: AccessKeyView) -> pb::AccessKeyInfo {
    pb::AccessKeyInfo {
        access_key_id: k.id,
        principal: k.principal,
        create_time: Some(timestamp(k.created_ms)),
    }
}

fn grant_to_pb(g: GrantView) -> pb::Grant {
    let (context_equals, context_contains) = match g.grant.constraint {
        ContextConstraint::None => Default::default(),
        ContextConstraint::Equals(p) => (p.into_iter().collect(), Default::default()),
        ContextConstraint::Contains(p) => (Default::default(), p.into_iter().collect()),
    };
    pb::Grant {
        grant_id: g.id.map(|i| i.to_string()).unwrap_or_default(),
        principal: g.principal,
        keys: g.grant.keys.iter().map(ToString::to_string).collect(),
        operations: g.grant.permissions.iter().map(|p| p.as_str().to_string()).collect(),
        context_equals,
        context_contains,
        create_time: g.created_ms.map(timestamp),
    }
}

#[tonic::async_trait]
impl AccessService for AccessApi {
    async fn create_principal(
        &self,
        req: Request<pb::CreatePrincipalRequest>,
    ) -> Result<Response<pb::CreatePrincipalResponse>, Status> {
        let c = self.0.caller(&req, Operation::CreatePrincipal).await?;
        let r = req.into_inner();
        let out = self.0.live()?.create_principal(&c, &r.name, &r.roles).await;
        respond(&c, out.map(|p| pb::CreatePrincipalResponse { principal: Some(principal_to_pb(p)) }))
    }

    async fn delete_principal(
        &self,
        req: Request<pb::DeletePrincipalRequest>,
    ) -> Result<Response<pb::DeletePrincipalResponse>, Status> {
        let c = self.0.caller(&req, Operation::DeletePrincipal).await?;
        let out = self.0.live()?.delete_principal(&c, &req.into_inner().name).await;
        respond(&c, out.map(|()| pb::DeletePrincipalResponse {}))
    }

    async fn list_principals(
        &self,
        req: Request<pb::ListPrincipalsRequest>,
    ) -> Result<Response<pb::ListPrincipalsResponse>, Status> {
        let c = self.0.caller(&req, Operation::ListPrincipals).await?;
        let out = self.0.live()?.list_principals(&c).await;
        respond(
            &c,
            out.map(|ps| pb::ListPrincipalsResponse {
                principals: ps.into_iter().map(principal_to_pb).collect(),
            }),
        )
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let c = self.0.caller(&req, Operation::CreateToken).await?;
        let r = req.into_inner();
        let out = self.0.live()?.create_token(&c, &r.principal, r.ttl.as_ref().map(duration_ms)).await;
        respond(
            &c,
            out.map(|t| pb::CreateTokenResponse {
                token: t.token.to_string(),
                info: Some(token_to_pb(t.view)),
            }),
        )
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let c = self.0.caller(&req, Operation::RevokeToken).await?;
        let out = self.0.live()?.revoke_token(&c, &req.into_inner().token_id).await;
        respond(&c, out.map(|()| pb::RevokeTokenResponse {}))
    }

    async fn revoke_all_tokens(
        &self,
        req: Request<pb::RevokeAllTokensRequest>,
    ) -> Result<Response<pb::RevokeAllTokensResponse>, Status> {
        let c = self.0.caller(&req, Operation::RevokeAllTokens).await?;
        let out = self.0.live()?.revoke_all_tokens(&c, &req.into_inner().principal).await;
        respond(
            &c,
            out.map(|n| pb::RevokeAllTokensResponse { revoked: u32::try_from(n).unwrap_or(u32::MAX) }),
        )
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let c = self.0.caller(&req, Operation::ListTokens).await?;
        let principal = given(req.into_inner().principal);
        let out = self.0.live()?.list_tokens(&c, principal.as_deref()).await;
        respond(
            &c,
            out.map(|ts| pb::ListTokensResponse { tokens: ts.into_iter().map(token_to_pb).collect() }),
        )
    }

    async fn create_grant(
        &self,
        req: Request<pb::CreateGrantRequest>,
    ) -> Result<Response<pb::CreateGrantResponse>, Status> {
        let c = self.0.caller(&req, Operation::CreateGrant).await?;
        let r = req.into_inner();
        let input = GrantInput {
            principal: r.principal,
            keys: r.keys,
            operations: r.operations,
            context_equals: r.context_equals,
            context_contains: r.context_contains,
        };
        let out = self.0.live()?.create_grant(&c, input).await;
        respond(&c, out.map(|g| pb::CreateGrantResponse { grant: Some(grant_to_pb(g)) }))
    }

    async fn revoke_grant(
        &self,
        req: Request<pb::RevokeGrantRequest>,
    ) -> Result<Response<pb::RevokeGrantResponse>, Status> {
        let c = self.0.caller(&req, Operation::RevokeGrant).await?;
        let out = self.0.live()?.revoke_grant(&c, &req.into_inner().grant_id).await;
        respond(&c, out.map(|()| pb::RevokeGrantResponse {}))
    }

    async fn list_grants(
        &self,
        req: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let c = self.0.caller(&req, Operation::ListGrants).await?;
        let r = req.into_inner();
        let (principal, key) = (given(r.principal), given(r.key_id));
        let out = self.0.live()?.list_grants(&c, principal.as_deref(), key.as_deref()).await;
        respond(
            &c,
            out.map(|gs| pb::ListGrantsResponse { grants: gs.into_iter().map(grant_to_pb).collect() }),
        )
    }

    async fn create_access_key(
        &self,
        req: Request<pb::CreateAccessKeyRequest>,
    ) -> Result<Response<pb::CreateAccessKeyResponse>, Status> {
        let c = self.0.caller(&req, Operation::CreateAccessKey).await?;
        let out = self.0.live()?.create_access_key(&c, &req.into_inner().principal).await;
        respond(
            &c,
            out.map(|k| pb::CreateAccessKeyResponse {
                secret_access_key: k.secret.to_string(),
                info: Some(access_key_to_pb(k.view)),
            }),
        )
    }

    async fn list_access_keys(
        &self,
        req: Request<pb::ListAccessKeysRequest>,
    ) -> Result<Response<pb::ListAccessKeysResponse>, Status> {
        let c = self.0.caller(&req, Operation::ListAccessKeys).await?;
        let principal = given(req.into_inner().principal);
        let out = self.0.live()?.list_access_keys(&c, principal.as_deref()).await;
        respond(
            &c,
            out.map(|ks| pb::ListAccessKeysResponse {
                access_keys: ks.into_iter().map(access_key_to_pb).collect(),
            }),
        )
    }

    async fn revoke_access_key(
        &self,
        req: Request<pb::RevokeAccessKeyRequest>,
    ) -> Result<Response<pb::RevokeAccessKeyResponse>, Status> {
        let c = self.0.caller(&req, Operation::RevokeAccessKey).await?;
        let out = self.0.live()?.revoke_access_key(&c, &req.into_inner().access_key_id).await;
        respond(&c, out.map(|()| pb::RevokeAccessKeyResponse {}))
    }
}
