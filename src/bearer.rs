//! Bearer tokens at the HTTP edges (the Vault Transit API, the web
//! console): the one check of a token that is not gRPC metadata. A runtime
//! token (`kwt_`), a configured one, a JWT, or in `--dev` the development
//! token each stand for a principal and its current policy.

use std::sync::Arc;

use keyward_core::{Caller, Kms, Policy, TokenRefusal};

use crate::auth::Authenticator;

/// Why a token was not accepted.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// A runtime token refused by the directory (named in the record).
    Token(TokenRefusal),
    /// Anything else.
    Other(String),
}

/// The caller `token` stands for, as `refused` (request id, peer, edge)
/// with its principal and policy; `dev` is the development token, if any.
pub(crate) fn identify(
    auth: &Authenticator,
    kms: &Kms,
    dev: Option<&[u8]>,
    token: &str,
    refused: Caller,
) -> Result<Caller, Refusal> {
    if let Some(d) = dev {
        if bool::from(subtle::ConstantTimeEq::ct_eq(token.as_bytes(), d)) {
            return Ok(Caller { principal: "dev".into(), policy: Arc::new(Policy::everything()), ..refused });
        }
    }
    if token.starts_with(keyward_core::TOKEN_PREFIX) {
        return match kms.identify_token(token) {
            Ok(id) => Ok(Caller { principal: id.principal, policy: id.policy, ..refused }),
            Err(why) => Err(Refusal::Token(why)),
        };
    }
    if matches!(auth, Authenticator::Dev(_)) {
        // In development mode only the development token (and runtime tokens) work here.
        return Err(Refusal::Other("not the development token".into()));
    }
    match auth.identify(Some(&format!("Bearer {token}")), None) {
        Ok(p) => match kms.policy_of(&p.name) {
            Some(policy) => Ok(Caller { principal: p.name, policy, ..refused }),
            None => Err(Refusal::Other("the token's principal does not exist".into())),
        },
        Err(e) => Err(Refusal::Other(e.0.to_string())),
    }
}
