//! The AccessService use cases: principals, bearer tokens and grants that
//! change at runtime (admin role; every call audited, naming what it
//! changed in the record's `target`), and the per-request lookups the edge
//! makes to turn a credential into a policy.
//!
//! Every change is committed with its audit record in one synced write and
//! applied to the in-memory directory on the writer thread before the reply
//! is released, under the lifecycle lock: when a revocation is acknowledged,
//! the next request already sees it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::{pipeline::note_in, Caller, Kms};
use crate::committer::Mutation;
use crate::directory::{Directory, TokenRefusal};
use crate::{
    integrity, AccessChange, AccessId, AccessRecord, AccessRecordKey, AuditEntry, CommitBatch,
    ContextConstraint, Grant, GrantRecord, KeySelector, KmsError, Operation, Permission, Policy,
    PrincipalRecord, Role, TokenRecord,
};

/// Principal names Keyward itself records: `system` (scheduled work), `dev`
/// (the development principal), `kube-apiserver` and `kms-v2` (the KMS v2
/// plugin), `unauthenticated` (refused callers). Nobody may pose as one,
/// whatever the case or surrounding spaces.
pub const RESERVED_PRINCIPALS: [&str; 5] = ["system", "dev", "kube-apiserver", "kms-v2", "unauthenticated"];

/// How long an expired token stays listed (and refused as "token expired")
/// before the sweeper deletes it: one day.
pub const EXPIRED_TOKEN_RETENTION_MS: i64 = 24 * 3_600_000;

/// Longest principal name.
pub const MAX_PRINCIPAL_NAME: usize = 128;

/// A principal as `ListPrincipals` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalView {
    /// Its name.
    pub name: String,
    /// Its roles.
    pub roles: BTreeSet<Role>,
    /// Whether it comes from the configuration file (read-only here).
    pub bootstrap: bool,
    /// When it was created through the API (bootstrap principals: `None`).
    pub created_ms: Option<i64>,
    /// How many runtime tokens it has.
    pub tokens: usize,
    /// How many grants it has (configuration and runtime).
    pub grants: usize,
}

/// A token as `ListTokens` shows it: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenView {
    /// Its id.
    pub id: AccessId,
    /// Whose it is.
    pub principal: String,
    /// Created, Unix ms.
    pub created_ms: i64,
    /// Expires, Unix ms.
    pub expires_ms: i64,
    /// Last used, Unix ms (as last saved; `None`: never).
    pub last_used_ms: Option<i64>,
}

/// A token just created: the token text is shown once, here.
pub struct NewToken {
    /// `kwt_<id>_<secret>`; never stored, never logged.
    pub token: zeroize::Zeroizing<String>,
    /// What `ListTokens` will show of it.
    pub view: TokenView,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken").field("token", &"REDACTED").field("view", &self.view).finish()
    }
}

/// A grant as `ListGrants` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantView {
    /// Its id (`None`: a grant from the configuration file, read-only).
    pub id: Option<AccessId>,
    /// Whom it grants.
    pub principal: String,
    /// Keys, operations, constraint.
    pub grant: Grant,
    /// Created through the API, Unix ms.
    pub created_ms: Option<i64>,
}

/// What `CreateGrant` asks for.
#[derive(Debug, Clone, Default)]
pub struct GrantInput {
    /// Whom to grant.
    pub principal: String,
    /// Key ids, `alias/<name>`, `label:k=v` or `*`.
    pub keys: Vec<String>,
    /// Operation names (or `*`).
    pub operations: Vec<String>,
    /// The context must be exactly these pairs.
    pub context_equals: HashMap<String, String>,
    /// The context must contain these pairs.
    pub context_contains: HashMap<String, String>,
}

/// How long tokens live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTtl {
    /// When a request names no TTL, ms.
    pub default_ms: i64,
    /// The longest a request may ask for, ms.
    pub max_ms: i64,
}

impl Default for TokenTtl {
    fn default() -> Self {
        Self { default_ms: 3_600_000, max_ms: 30 * 24 * 3_600_000 }
    }
}

/// What a valid runtime token stands for.
#[derive(Debug, Clone)]
pub struct TokenIdentity {
    /// The principal.
    pub principal: String,
    /// Its policy now.
    pub policy: Arc<Policy>,
    /// The token's id.
    pub token: AccessId,
    /// When it was created, Unix ms.
    pub created_ms: i64,
    /// When it stops working, Unix ms.
    pub expires_ms: i64,
}

fn validate_name(field: &'static str, name: &str) -> Result<(), KmsError> {
    if name.is_empty() || name.len() > MAX_PRINCIPAL_NAME {
        return Err(KmsError::invalid(field, format!("must be 1 to {MAX_PRINCIPAL_NAME} bytes")));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@:/".contains(&b)) {
        return Err(KmsError::invalid(field, "may hold only letters, digits and - _ . @ : /"));
    }
    if RESERVED_PRINCIPALS.iter().any(|r| name.eq_ignore_ascii_case(r)) {
        return Err(KmsError::invalid(
            field,
            format!("{name:?} is one of Keyward's own names in the audit log ({RESERVED_PRINCIPALS:?})"),
        ));
    }
    Ok(())
}

/// A token as an audit record names it: its id and whose it is.
fn token_target(id: AccessId, principal: &str) -> String {
    crate::bounded(&format!("token:{id} principal:{principal}"), 256)
}

/// A grant as an audit record names it: id, principal, and what it allows,
/// so a reviewer can tell what a revoked grant had allowed.
fn grant_target(id: AccessId, principal: &str, g: &Grant) -> String {
    let keys: Vec<String> = g.keys.iter().map(ToString::to_string).collect();
    let ops: Vec<&str> = g.permissions.iter().map(|p| p.as_str()).collect();
    let mut s =
        format!("grant:{id} principal:{principal} keys:{} operations:{}", keys.join(","), ops.join(","));
    let (kind, pairs) = match &g.constraint {
        ContextConstraint::None => ("", None),
        ContextConstraint::Equals(p) => ("context_equals", Some(p)),
        ContextConstraint::Contains(p) => ("context_contains", Some(p)),
    };
    if let Some(pairs) = pairs {
        let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        s.push_str(&format!(" {kind}:{}", pairs.join(",")));
    }
    crate::bounded(&s, 1024)
}

pub(super) fn principal_target(name: &str) -> Option<String> {
    // Unvalidated names are not echoed into the record unbounded.
    let name = crate::bounded(name, MAX_PRINCIPAL_NAME);
    Some(format!("principal:{name}"))
}

impl Kms {
    /// The effective policy of a principal (bootstrap or runtime), now.
    pub fn policy_of(&self, principal: &str) -> Option<Arc<Policy>> {
        self.access.read().expect("access lock").policy(principal)
    }

    /// Checks a runtime bearer token (`kwt_...`).
    pub fn identify_token(&self, token: &str) -> Result<TokenIdentity, TokenRefusal> {
        let now = self.clock.now_ms();
        let (principal, policy, token) = self.access.read().expect("access lock").identify(token, now)?;
        let (created_ms, expires_ms) = self
            .access
            .read()
            .expect("access lock")
            .token(&token)
            .map_or((0, 0), |t| (t.record.created_ms, t.record.expires_ms));
        Ok(TokenIdentity { principal, policy, token, created_ms, expires_ms })
    }

    /// Records a refused runtime token (UNAUTHENTICATED, naming the token
    /// when it was a real one) and returns the error.
    pub async fn refuse_token(&self, caller: &Caller, op: Operation, why: &TokenRefusal) -> KmsError {
        let mut entry = self.entry(caller, op);
        if let TokenRefusal::Expired(id) | TokenRefusal::NoPrincipal(id) = why {
            entry.target = Some(format!("token:{id}"));
        }
        let error = KmsError::Unauthenticated(why.message().to_string());
        entry.outcome = crate::Outcome::of_error(&error);
        match self.record(entry).await {
            Ok(()) => error,
            Err(e) => KmsError::AuditUnavailable(e),
        }
    }

    /// Saves when tokens were last used, for those used since the last save
    /// (the sweeper calls it every minute, and at a stop). It holds the
    /// lifecycle lock, so no revocation is committed between reading the
    /// directory and writing (which would bring a revoked token's entry
    /// back); if a change holds the lock, it skips this round.
    pub fn save_token_uses(&self) -> Result<(), KmsError> {
        let Ok(_guard) = self.lifecycle.try_lock() else { return Ok(()) };
        let uses = self.access.read().expect("access lock").unsaved_uses();
        if uses.is_empty() {
            return Ok(());
        }
        let batch = CommitBatch { token_uses: uses.clone(), ..Default::default() };
        self.store.commit(&batch).map_err(KmsError::Store)?;
        self.access.read().expect("access lock").mark_saved(&uses);
        Ok(())
    }

    /// Deletes the tokens that expired more than
    /// [`EXPIRED_TOKEN_RETENTION_MS`] ago, each audited as a `RevokeToken`
    /// by `system` (target `token:<id> principal:<name> expired`), so stored
    /// tokens do not grow without bound. Called by [`Kms::run_due`].
    pub(super) async fn purge_expired_tokens(&self, system: &Caller, now: i64) -> Result<usize, KmsError> {
        let due: Vec<AccessId> = {
            let dir = self.access.read().expect("access lock");
            dir.tokens
                .values()
                .filter(|t| t.record.expires_ms.saturating_add(EXPIRED_TOKEN_RETENTION_MS) <= now)
                .map(|t| t.record.id)
                .collect()
        };
        let mut done = 0;
        for id in due {
            let purged = self
                .access_change(
                    system,
                    Operation::RevokeToken,
                    Some(format!("token:{id}")),
                    false,
                    |entry, dir, now| {
                        // Re-checked under the lock: an administrator may have revoked it meanwhile.
                        let Some(t) = dir.token(&id) else {
                            return Ok((Vec::new(), false));
                        };
                        if t.record.expires_ms.saturating_add(EXPIRED_TOKEN_RETENTION_MS) > now {
                            return Ok((Vec::new(), false));
                        }
                        entry.target = Some(format!("{} expired", token_target(id, &t.record.principal)));
                        Ok((vec![AccessChange::Delete(AccessRecordKey::Token(id))], true))
                    },
                )
                .await?;
            done += usize::from(purged);
        }
        Ok(done)
    }

    /// `CreatePrincipal`.
    pub async fn create_principal(
        &self,
        caller: &Caller,
        name: &str,
        roles: &[String],
    ) -> Result<PrincipalView, KmsError> {
        self.access_change(caller, Operation::CreatePrincipal, principal_target(name), true, |_, dir, now| {
            validate_name("name", name)?;
            if roles.is_empty() {
                return Err(KmsError::invalid("roles", "give at least one role (admin, user, auditor)"));
            }
            let roles = roles
                .iter()
                .map(|r| r.parse::<Role>().map_err(|e| KmsError::invalid("roles", e)))
                .collect::<Result<BTreeSet<_>, _>>()?;
            if dir.is_bootstrap(name) {
                return Err(KmsError::AlreadyExists(format!(
                    "principal {name:?} (from the configuration file)"
                )));
            }
            if dir.exists(name) {
                return Err(KmsError::AlreadyExists(format!("principal {name:?}")));
            }
            // Tokens and grants left by a principal of the same name that is
            // gone (removed from the configuration file) must not come back
            // to life with the new one: they are deleted in the same write.
            let mut changes = dir.delete_holdings_of(name);
            let record =
                PrincipalRecord { name: name.to_string(), roles: roles.clone(), created_ms: now, tag: None };
            let view = PrincipalView {
                name: name.to_string(),
                roles,
                bootstrap: false,
                created_ms: Some(now),
                tokens: 0,
                grants: 0,
            };
            changes.push(AccessChange::Put(AccessRecord::Principal(record)));
            Ok((changes, view))
        })
        .await
    }

    /// `DeletePrincipal`: a runtime principal, with every token and grant it has.
    pub async fn delete_principal(&self, caller: &Caller, name: &str) -> Result<(), KmsError> {
        self.access_change(caller, Operation::DeletePrincipal, principal_target(name), true, |_, dir, _| {
            if name.is_empty() {
                return Err(KmsError::invalid("name", "must not be empty"));
            }
            if dir.is_bootstrap(name) {
                return Err(KmsError::FailedPrecondition(format!(
                    "principal {name:?} comes from the configuration file; remove it there"
                )));
            }
            if !dir.principals.contains_key(name) {
                return Err(KmsError::NotFound(format!("principal {name:?}")));
            }
            let mut changes = dir.delete_holdings_of(name);
            changes.push(AccessChange::Delete(AccessRecordKey::Principal(name.to_string())));
            Ok((changes, ()))
        })
        .await
    }

    /// `ListPrincipals`: bootstrap and runtime, by name.
    pub async fn list_principals(&self, caller: &Caller) -> Result<Vec<PrincipalView>, KmsError> {
        let entry = self.entry(caller, Operation::ListPrincipals);
        let result = self.require(caller, Role::Admin, "list principals").map(|()| {
            let dir = self.access.read().expect("access lock");
            let mut out: BTreeMap<String, PrincipalView> = BTreeMap::new();
            for (name, policy) in dir.bootstrap() {
                out.insert(
                    name.clone(),
                    PrincipalView {
                        name: name.clone(),
                        roles: policy.roles().clone(),
                        bootstrap: true,
                        created_ms: None,
                        tokens: dir.tokens_of(name).len(),
                        grants: dir.policy(name).map_or(0, |p| p.grants().len()),
                    },
                );
            }
            for p in dir.principals.values() {
                out.entry(p.name.clone()).or_insert_with(|| PrincipalView {
                    name: p.name.clone(),
                    roles: p.roles.clone(),
                    bootstrap: false,
                    created_ms: Some(p.created_ms),
                    tokens: dir.tokens_of(&p.name).len(),
                    grants: dir.grants_of(&p.name).len(),
                });
            }
            out.into_values().collect()
        });
        self.finish(entry, result).await
    }

    /// `CreateToken`: a new bearer token for a principal, living `ttl_ms`
    /// (default and maximum: [`TokenTtl`]). The token is in the answer once.
    pub async fn create_token(
        &self,
        caller: &Caller,
        principal: &str,
        ttl_ms: Option<i64>,
    ) -> Result<NewToken, KmsError> {
        let ttl = self.token_ttl;
        self.access_change(
            caller,
            Operation::CreateToken,
            principal_target(principal),
            true,
            |entry, dir, now| {
                if principal.is_empty() {
                    return Err(KmsError::invalid("principal", "must not be empty"));
                }
                if !dir.exists(principal) {
                    return Err(KmsError::NotFound(format!("principal {principal:?}")));
                }
                let ttl_ms = ttl_ms.unwrap_or(ttl.default_ms);
                if ttl_ms <= 0 || ttl_ms > ttl.max_ms {
                    return Err(KmsError::invalid(
                        "ttl",
                        format!(
                            "must be more than 0 and at most {} s (the server's max_token_ttl), got {} s",
                            ttl.max_ms / 1000,
                            ttl_ms / 1000
                        ),
                    ));
                }
                let (id, token, hash) = crate::directory::new_token()?;
                entry.target = Some(token_target(id, principal));
                let record = TokenRecord {
                    id,
                    principal: principal.to_string(),
                    hash,
                    created_ms: now,
                    expires_ms: now.saturating_add(ttl_ms),
                    tag: None,
                };
                let view = TokenView {
                    id,
                    principal: principal.to_string(),
                    created_ms: record.created_ms,
                    expires_ms: record.expires_ms,
                    last_used_ms: None,
                };
                Ok((vec![AccessChange::Put(AccessRecord::Token(record))], NewToken { token, view }))
            },
        )
        .await
    }

    /// `RevokeToken`.
    pub async fn revoke_token(&self, caller: &Caller, id: &str) -> Result<(), KmsError> {
        let parsed = id.parse::<AccessId>();
        let target = parsed.as_ref().ok().map(|id| format!("token:{id}"));
        self.access_change(caller, Operation::RevokeToken, target, true, |entry, dir, _| {
            let id = parsed.map_err(|_| KmsError::invalid("token_id", "expected a token id (a UUID)"))?;
            let Some(t) = dir.token(&id) else {
                return Err(KmsError::NotFound(format!("token {id}")));
            };
            entry.target = Some(token_target(id, &t.record.principal));
            Ok((vec![AccessChange::Delete(AccessRecordKey::Token(id))], ()))
        })
        .await
    }

    /// `RevokeAllTokens`: every runtime token of a principal; how many.
    pub async fn revoke_all_tokens(&self, caller: &Caller, principal: &str) -> Result<usize, KmsError> {
        self.access_change(
            caller,
            Operation::RevokeAllTokens,
            principal_target(principal),
            true,
            |entry, dir, _| {
                if principal.is_empty() {
                    return Err(KmsError::invalid("principal", "must not be empty"));
                }
                if !dir.exists(principal) && dir.tokens_of(principal).is_empty() {
                    return Err(KmsError::NotFound(format!("principal {principal:?}")));
                }
                let ids = dir.tokens_of(principal);
                let n = ids.len();
                if let Some(t) = entry.target.as_mut() {
                    t.push_str(&format!(" tokens:{n}"));
                }
                Ok((ids.into_iter().map(|id| AccessChange::Delete(AccessRecordKey::Token(id))).collect(), n))
            },
        )
        .await
    }

    /// `ListTokens`: every runtime token, or one principal's.
    pub async fn list_tokens(
        &self,
        caller: &Caller,
        principal: Option<&str>,
    ) -> Result<Vec<TokenView>, KmsError> {
        let mut entry = self.entry(caller, Operation::ListTokens);
        entry.target = principal.and_then(principal_target);
        let result = self.require(caller, Role::Admin, "list tokens").map(|()| {
            let dir = self.access.read().expect("access lock");
            let mut out: Vec<TokenView> = dir
                .tokens
                .values()
                .filter(|t| principal.is_none_or(|p| t.record.principal == p))
                .map(|t| TokenView {
                    id: t.record.id,
                    principal: t.record.principal.clone(),
                    created_ms: t.record.created_ms,
                    expires_ms: t.record.expires_ms,
                    last_used_ms: t.last_used(),
                })
                .collect();
            out.sort_by(|a, b| (&a.principal, a.created_ms, a.id).cmp(&(&b.principal, b.created_ms, b.id)));
            out
        });
        self.finish(entry, result).await
    }

    /// `CreateGrant`.
    pub async fn create_grant(&self, caller: &Caller, input: GrantInput) -> Result<GrantView, KmsError> {
        let target = principal_target(&input.principal);
        self.access_change(caller, Operation::CreateGrant, target, true, |entry, dir, now| {
            let grant = self.parse_grant(&input)?;
            if !dir.exists(&input.principal) {
                return Err(KmsError::NotFound(format!("principal {:?}", input.principal)));
            }
            // A key named by id or alias must exist now (a typo would grant
            // nothing, silently); labels and `*` select whatever carries them.
            {
                let state = self.state.read().expect("state lock");
                for k in &grant.keys {
                    let r = match k {
                        KeySelector::Id(id) => crate::KeyRef::Id(*id),
                        KeySelector::Alias(a) => crate::KeyRef::Alias(a.clone()),
                        KeySelector::Any | KeySelector::Label(..) => continue,
                    };
                    state.resolve(&r)?;
                }
            }
            // A grant of one key names it in the record, so the key's history shows it.
            if let [one] = input.keys.as_slice() {
                note_in(&self.state.read().expect("state lock"), entry, one);
            }
            let id = AccessId::generate();
            entry.target = Some(grant_target(id, &input.principal, &grant));
            let record = GrantRecord {
                id,
                principal: input.principal.clone(),
                grant: grant.clone(),
                created_ms: now,
                tag: None,
            };
            let view =
                GrantView { id: Some(id), principal: input.principal.clone(), grant, created_ms: Some(now) };
            Ok((vec![AccessChange::Put(AccessRecord::Grant(record))], view))
        })
        .await
    }

    fn parse_grant(&self, input: &GrantInput) -> Result<Grant, KmsError> {
        if input.principal.is_empty() {
            return Err(KmsError::invalid("principal", "must not be empty"));
        }
        if input.keys.is_empty() {
            return Err(KmsError::invalid("keys", "name at least one key id, alias/<name>, label:k=v or *"));
        }
        if input.keys.len() > 100 {
            return Err(KmsError::invalid(
                "keys",
                format!("at most 100 selectors, got {}", input.keys.len()),
            ));
        }
        let keys = input
            .keys
            .iter()
            .map(|k| k.parse::<KeySelector>().map_err(|e| KmsError::invalid("keys", crate::bounded(&e, 200))))
            .collect::<Result<Vec<_>, _>>()?;
        if input.operations.is_empty() {
            return Err(KmsError::invalid("operations", "name at least one operation (or *)"));
        }
        let mut permissions = BTreeSet::new();
        for o in &input.operations {
            if o == "*" {
                permissions.extend(Permission::ALL);
            } else {
                permissions.insert(
                    o.parse::<Permission>()
                        .map_err(|e| KmsError::invalid("operations", crate::bounded(&e, 300)))?,
                );
            }
        }
        let constraint = match (input.context_equals.is_empty(), input.context_contains.is_empty()) {
            (true, true) => ContextConstraint::None,
            (false, true) => ContextConstraint::Equals(
                self.context("context_equals", input.context_equals.clone())?.pairs().clone(),
            ),
            (true, false) => ContextConstraint::Contains(
                self.context("context_contains", input.context_contains.clone())?.pairs().clone(),
            ),
            (false, false) => {
                return Err(KmsError::invalid(
                    "context_contains",
                    "give context_equals or context_contains, not both",
                ))
            }
        };
        Ok(Grant { keys, permissions, constraint })
    }

    /// `RevokeGrant`.
    pub async fn revoke_grant(&self, caller: &Caller, id: &str) -> Result<(), KmsError> {
        let parsed = id.parse::<AccessId>();
        let target = parsed.as_ref().ok().map(|id| format!("grant:{id}"));
        self.access_change(caller, Operation::RevokeGrant, target, true, |entry, dir, _| {
            let id = parsed.map_err(|_| KmsError::invalid("grant_id", "expected a grant id (a UUID)"))?;
            let Some(g) = dir.grants.get(&id) else {
                return Err(KmsError::NotFound(format!("grant {id}")));
            };
            entry.target = Some(grant_target(id, &g.principal, &g.grant));
            Ok((vec![AccessChange::Delete(AccessRecordKey::Grant(id))], ()))
        })
        .await
    }

    /// `ListGrants`: by principal, by key (the grants whose selectors cover
    /// it now), or all; configuration grants included, without an id.
    pub async fn list_grants(
        &self,
        caller: &Caller,
        principal: Option<&str>,
        key: Option<&str>,
    ) -> Result<Vec<GrantView>, KmsError> {
        let mut entry = self.entry(caller, Operation::ListGrants);
        entry.target = principal.and_then(principal_target);
        let result = (|| {
            let meta = match key {
                None => None,
                Some(k) => {
                    let state = self.state.read().expect("state lock");
                    let live = super::pipeline::resolve_in(&state, &mut entry, "key_id", k)?;
                    Some((live.meta().clone(), state.aliases_of(live.meta().id)))
                }
            };
            self.require(caller, Role::Admin, "list grants")?;
            let covers = |g: &Grant| {
                meta.as_ref()
                    .is_none_or(|(m, aliases)| g.keys.iter().any(|s| s.covers(m, &|| aliases.clone())))
            };
            let dir = self.access.read().expect("access lock");
            let mut out = Vec::new();
            for (name, base) in dir.bootstrap() {
                if principal.is_some_and(|p| p != name) {
                    continue;
                }
                for g in base.grants().iter().filter(|g| covers(g)) {
                    out.push(GrantView {
                        id: None,
                        principal: name.clone(),
                        grant: g.clone(),
                        created_ms: None,
                    });
                }
            }
            for g in dir.grants.values() {
                if principal.is_some_and(|p| p != g.principal) || !covers(&g.grant) {
                    continue;
                }
                out.push(GrantView {
                    id: Some(g.id),
                    principal: g.principal.clone(),
                    grant: g.grant.clone(),
                    created_ms: Some(g.created_ms),
                });
            }
            Ok(out)
        })();
        self.finish(entry, result).await
    }

    /// The one path of every access change: refuse a non-administrator
    /// without the lock; otherwise, under the lifecycle lock, `prepare`
    /// decides over the current directory; the changes, tagged, are written
    /// with the record in one synced batch and applied to the directory on
    /// the writer thread before the answer is released.
    pub(super) async fn access_change<T>(
        &self,
        caller: &Caller,
        op: Operation,
        target: Option<String>,
        record_noop: bool,
        prepare: impl FnOnce(&mut AuditEntry, &Directory, i64) -> Result<(Vec<AccessChange>, T), KmsError>,
    ) -> Result<T, KmsError> {
        let mut entry = self.entry(caller, op);
        entry.target = target;
        if !caller.policy.has(Role::Admin) {
            let e = KmsError::PermissionDenied(format!("{} may not change access", caller.principal));
            return self.finish(entry, Err(e)).await;
        }
        let guard = self.lifecycle.clone().lock_owned().await;
        if let Err(e) = self.check_not_retired() {
            drop(guard);
            return self.finish(entry, Err(e)).await;
        }
        let planned = {
            let dir = self.access.read().expect("access lock");
            prepare(&mut entry, &dir, self.clock.now_ms())
        };
        let (mut changes, output) = match planned {
            Ok(p) => p,
            Err(e) => {
                drop(guard);
                return self.finish(entry, Err(e)).await;
            }
        };
        if changes.is_empty() && !record_noop {
            // The system re-checked work someone else already did.
            drop(guard);
            return Ok(output);
        }
        for c in &mut changes {
            if let AccessChange::Put(r) = c {
                let tag = integrity::tag_access(&self.records, r);
                r.set_tag(tag);
            }
        }
        let batch = CommitBatch { access: changes.clone(), ..Default::default() };
        let dir = self.access.clone();
        let apply = move || {
            dir.write().expect("access lock").apply(changes);
            drop(guard);
        };
        self.audit
            .submit(entry, Some(Mutation { batch, apply: Box::new(apply) }))
            .await
            .map_err(KmsError::AuditUnavailable)?;
        Ok(output)
    }
}
