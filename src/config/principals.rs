//! `[[principals]]` -> the [`Authenticator`]: who may connect (bearer token
//! hashes, client certificate names) and what each may do (roles, grants).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use keyward_core::{Grant, KeySelector, Permission, Policy, Role};

use super::file::FilePrincipal;
use super::ConfigError;
use crate::auth::{Authenticator, Principal};

/// The development principal with `dev`, else the configured ones.
pub(super) fn authenticator(dev: bool, list: Vec<FilePrincipal>) -> Result<Authenticator, ConfigError> {
    if !dev {
        return configured(list);
    }
    if !list.is_empty() {
        return Err(ConfigError::Invalid(
            "--dev uses one development principal with every role; remove [[principals]] or drop --dev"
                .into(),
        ));
    }
    Ok(Authenticator::dev())
}

/// Principal names the audit log uses for Keyward itself: `system` for
/// scheduled and automatic work, `dev` for the development principal. A
/// configured principal may not pose as either.
const RESERVED: [&str; 2] = ["system", "dev"];

fn configured(list: Vec<FilePrincipal>) -> Result<Authenticator, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::Invalid(
            "no [[principals]] configured: nobody could use this server (see deploy/keyward.toml)".into(),
        ));
    }
    let mut tokens = Vec::new();
    let mut cert_names = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for p in list {
        let bad = |m: String| ConfigError::Invalid(format!("principals {:?}: {m}", p.name));
        if p.name.is_empty() || !seen.insert(p.name.clone()) {
            return Err(bad("names must be non-empty and unique".into()));
        }
        if RESERVED.contains(&p.name.as_str()) {
            return Err(bad(format!(
                "the names {RESERVED:?} are Keyward's own in the audit log (scheduled work, --dev)"
            )));
        }
        let roles = p.roles.iter().map(|r| r.parse::<Role>()).collect::<Result<_, _>>().map_err(bad)?;
        let mut grants = Vec::new();
        for g in &p.grants {
            let keys = g
                .keys
                .iter()
                .map(|k| k.parse::<KeySelector>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?;
            let mut permissions = BTreeSet::new();
            for o in &g.operations {
                if o == "*" {
                    permissions.extend(Permission::ALL);
                } else {
                    permissions.insert(o.parse::<Permission>().map_err(bad)?);
                }
            }
            grants.push(Grant { keys, permissions });
        }
        let principal = Principal { name: p.name.clone(), policy: Arc::new(Policy { roles, grants }) };
        for h in &p.token_sha256 {
            let bytes: [u8; 32] = hex::decode(h).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| {
                bad("token_sha256 entries are 64 hex characters (keyward token create prints one)".into())
            })?;
            tokens.push((bytes, principal.clone()));
        }
        for n in &p.cert_names {
            if cert_names.insert(n.clone(), principal.clone()).is_some() {
                return Err(bad(format!("certificate name {n:?} is claimed twice")));
            }
        }
    }
    Ok(Authenticator::Configured { tokens, cert_names })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> FilePrincipal {
        FilePrincipal {
            name: name.into(),
            roles: vec!["admin".into()],
            token_sha256: vec![],
            cert_names: vec![],
            grants: vec![],
        }
    }

    #[test]
    fn keywards_own_names_are_refused() {
        for name in RESERVED {
            let e = configured(vec![named(name)]).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains("audit log"), "{e}");
        }
        assert!(configured(vec![named("system-backup")]).is_ok());
    }
}
