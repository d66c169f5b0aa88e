//! `[[principals]]` -> the [`Authenticator`]: who may connect (bearer token
//! hashes, client certificate names) and what each may do (roles, grants).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use keyward_core::{ContextConstraint, Grant, KeySelector, Permission, Policy, Role};

use super::file::FilePrincipal;
use super::ConfigError;
use crate::auth::{Authenticator, CertNameKind, Principal};

/// The development principal with `dev`, else the configured ones; and
/// the bootstrap principals (name and policy) the AccessService shows.
pub(super) fn authenticator(
    dev: bool,
    list: Vec<FilePrincipal>,
) -> Result<(Authenticator, Vec<(String, Policy)>), ConfigError> {
    if !dev {
        let bootstrap = list.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        let auth = configured(list)?;
        let policies = bootstrap_policies(&auth, bootstrap);
        return Ok((auth, policies));
    }
    if !list.is_empty() {
        return Err(ConfigError::Invalid(
            "--dev uses one development principal with every role; remove [[principals]] or drop --dev"
                .into(),
        ));
    }
    Ok((Authenticator::dev(), Vec::new()))
}

/// Each configured principal's policy, by name.
fn bootstrap_policies(auth: &Authenticator, names: Vec<String>) -> Vec<(String, Policy)> {
    let Authenticator::Configured { principals, .. } = auth else { return Vec::new() };
    names.into_iter().filter_map(|n| principals.get(&n).map(|p| (n, Policy::clone(&p.policy)))).collect()
}

/// Principal names the audit log uses for Keyward itself: `system` for
/// scheduled and automatic work, `dev` for the development principal,
/// `kube-apiserver` for the KMS v2 plugin's caller (and `kms-v2`, the
/// plugin's name), `unauthenticated` for callers refused without an
/// identity. A configured principal may not pose as any of them.
pub(super) const RESERVED: [&str; 5] = keyward_core::RESERVED_PRINCIPALS;

fn configured(list: Vec<FilePrincipal>) -> Result<Authenticator, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::Invalid(
            "no [[principals]] configured: nobody could use this server (see deploy/keyward.toml)".into(),
        ));
    }
    let mut tokens: Vec<([u8; 32], Principal)> = Vec::new();
    let mut cert_names: BTreeMap<(CertNameKind, String), Principal> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut principals = BTreeMap::new();
    for p in list {
        let bad = |m: String| ConfigError::Invalid(format!("principals {:?}: {m}", p.name));
        if p.name.trim().is_empty() || !seen.insert(p.name.clone()) {
            return Err(bad("names must be non-empty and unique".into()));
        }
        // Compared as a reader of the audit log would: "KMS-V2" or " system"
        // would pose as Keyward's own names just as well.
        if RESERVED.iter().any(|r| p.name.trim().eq_ignore_ascii_case(r)) {
            return Err(bad(format!(
                "the names {RESERVED:?} are Keyward's own in the audit log (scheduled work, --dev, the KMS v2 plugin, refused callers)"
            )));
        }
        if p.cert_names.is_some() {
            return Err(bad(
                "cert_names is no longer accepted: it matched a subject CN and a DNS SAN alike. \
                 Say which kind each name is: cert_dns_names (DNS SANs), cert_uris (URI SANs such as \
                 spiffe:// IDs) or cert_common_names (subject CN, only if you must)"
                    .into(),
            ));
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
            if [&g.context_equals, &g.context_contains]
                .iter()
                .any(|c| c.as_ref().is_some_and(|m| m.is_empty()))
            {
                return Err(bad(
                    "a grant's context_equals or context_contains names at least one pair".into()
                ));
            }
            if [&g.context_equals, &g.context_contains]
                .iter()
                .flat_map(|c| c.iter().flat_map(|m| m.keys()))
                .any(String::is_empty)
            {
                return Err(bad("a grant's context constraint has an empty key".into()));
            }
            let constraint = match (&g.context_equals, &g.context_contains) {
                (None, None) => ContextConstraint::None,
                (Some(e), None) => ContextConstraint::Equals(e.clone()),
                (None, Some(c)) => ContextConstraint::Contains(c.clone()),
                (Some(_), Some(_)) => {
                    return Err(bad("a grant has context_equals or context_contains, not both".into()))
                }
            };
            grants.push(Grant { keys, permissions, constraint });
        }
        let principal = Principal { name: p.name.clone(), policy: Arc::new(Policy::new(roles, grants)) };
        principals.insert(p.name.clone(), principal.clone());
        for h in &p.token_sha256 {
            let bytes: [u8; 32] = hex::decode(h).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| {
                bad("token_sha256 entries are 64 hex characters (keyward token create prints one)".into())
            })?;
            if let Some((_, other)) = tokens.iter().find(|(t, _)| *t == bytes) {
                return Err(bad(format!(
                    "token_sha256 {h:?} is also listed for principal {:?}: each token names one principal",
                    other.name
                )));
            }
            if bytes[..] == *ring::digest::digest(&ring::digest::SHA256, b"").as_ref() {
                return Err(bad(format!("token_sha256 {h:?} is the hash of the empty token")));
            }
            tokens.push((bytes, principal.clone()));
        }
        for (kind, names) in [
            (CertNameKind::Dns, &p.cert_dns_names),
            (CertNameKind::Uri, &p.cert_uris),
            (CertNameKind::CommonName, &p.cert_common_names),
        ] {
            for n in names {
                check_cert_name(kind, n).map_err(|m| bad(format!("{} {n:?}: {m}", kind.field())))?;
                if let Some(other) = cert_names.insert((kind, kind.normalize(n)), principal.clone()) {
                    return Err(bad(format!(
                        "{} {n:?} is also claimed by principal {:?}: a certificate with it would be ambiguous",
                        kind.field(),
                        other.name
                    )));
                }
            }
        }
    }
    Ok(Authenticator::Configured { tokens, cert_names, principals, jwt: None })
}

/// What a configured certificate name must look like for its kind. Names
/// are matched exactly (DNS names without regard to case), never as patterns.
fn check_cert_name(kind: CertNameKind, n: &str) -> Result<(), String> {
    if n.trim().is_empty() || n.trim() != n {
        return Err("must be non-empty, without surrounding spaces".into());
    }
    match kind {
        CertNameKind::Dns => {
            if n.contains('*') {
                return Err("wildcards are not matched; list each name".into());
            }
            if !n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
                return Err("a DNS name holds only letters, digits, - . _".into());
            }
        }
        CertNameKind::Uri => {
            let scheme = n.split_once(':').map(|(s, _)| s).unwrap_or("");
            if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            {
                return Err("must be an absolute URI such as spiffe://example.org/service".into());
            }
            if n.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
                return Err("a URI holds no spaces or control characters".into());
            }
        }
        CertNameKind::CommonName => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> FilePrincipal {
        FilePrincipal {
            name: name.into(),
            roles: vec!["admin".into()],
            token_sha256: vec![],
            cert_dns_names: vec![],
            cert_uris: vec![],
            cert_common_names: vec![],
            cert_names: None,
            grants: vec![],
        }
    }

    #[test]
    fn keywards_own_names_are_refused() {
        for name in RESERVED.iter().copied().chain(["KMS-V2", " system", "Dev "]) {
            let e = configured(vec![named(name)]).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains("audit log"), "{e}");
        }
        assert!(configured(vec![named("system-backup")]).is_ok());
    }

    fn from_toml(text: &str) -> Result<Authenticator, String> {
        let file: super::super::FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        configured(file.principals).map_err(|e| e.to_string())
    }

    fn names(a: &Authenticator) -> Vec<(CertNameKind, String, String)> {
        let Authenticator::Configured { cert_names, .. } = a else { panic!("configured") };
        cert_names.iter().map(|((k, n), p)| (*k, n.clone(), p.name.clone())).collect()
    }

    #[test]
    fn certificate_names_are_typed() {
        let a = from_toml(
            r#"
            [[principals]]
            name = "a"
            cert_dns_names = ["Payments.Svc.Cluster.Local."]
            cert_uris = ["spiffe://example.org/payments"]
            [[principals]]
            name = "b"
            cert_common_names = ["payments.svc.cluster.local"]
            cert_uris = ["spiffe://example.org/Payments"]
            "#,
        )
        .unwrap();
        // The same text under two kinds is two names; DNS names compare without case.
        assert_eq!(
            names(&a),
            vec![
                (CertNameKind::Dns, "payments.svc.cluster.local".into(), "a".into()),
                (CertNameKind::Uri, "spiffe://example.org/Payments".into(), "b".into()),
                (CertNameKind::Uri, "spiffe://example.org/payments".into(), "a".into()),
                (CertNameKind::CommonName, "payments.svc.cluster.local".into(), "b".into()),
            ]
        );
    }

    #[test]
    fn the_untyped_cert_names_is_refused_naming_the_typed_fields() {
        let e = from_toml("[[principals]]\nname = \"a\"\ncert_names = [\"x\"]").unwrap_err();
        for needle in ["\"a\"", "cert_names", "cert_dns_names", "cert_uris", "cert_common_names"] {
            assert!(e.contains(needle), "{needle} missing in {e}");
        }
    }

    #[test]
    fn ambiguous_certificate_names_are_refused() {
        for (first, second) in [
            ("cert_dns_names = [\"svc.example\"]", "cert_dns_names = [\"SVC.example.\"]"),
            ("cert_uris = [\"spiffe://t/x\"]", "cert_uris = [\"spiffe://t/x\"]"),
            ("cert_common_names = [\"svc\"]", "cert_common_names = [\"svc\"]"),
        ] {
            let text =
                format!("[[principals]]\nname = \"a\"\n{first}\n[[principals]]\nname = \"b\"\n{second}");
            let e = from_toml(&text).unwrap_err();
            assert!(e.contains("principals \"b\"") && e.contains("also claimed by principal \"a\""), "{e}");
            // Twice in one principal is refused too.
            let text = format!(
                "[[principals]]\nname = \"a\"\n{}",
                first.replace(']', &format!(", {}", &second[second.find('[').unwrap() + 1..]))
            );
            assert!(from_toml(&text).unwrap_err().contains("also claimed"), "{text}");
        }
    }

    #[test]
    fn malformed_certificate_names_are_refused() {
        for (field, value, needle) in [
            ("cert_dns_names", "*.example.org", "wildcards"),
            ("cert_dns_names", "", "non-empty"),
            ("cert_dns_names", "a b", "only letters"),
            ("cert_uris", "example.org/x", "absolute URI"),
            ("cert_uris", "spiffe://t/a b", "no spaces"),
            ("cert_common_names", " svc", "surrounding spaces"),
        ] {
            let e = from_toml(&format!("[[principals]]\nname = \"a\"\n{field} = [{value:?}]")).unwrap_err();
            assert!(e.contains(field) && e.contains(needle), "{field} {value:?}: {e}");
        }
    }

    #[test]
    fn duplicate_empty_and_reused_tokens_are_refused() {
        let t = crate::auth::token_hash_hex("kw_token");
        let empty = crate::auth::token_hash_hex("");
        let cases = [
            (format!("[[principals]]\nname = \"a\"\ntoken_sha256 = [\"{t}\", \"{t}\"]"), "also listed"),
            (
                format!("[[principals]]\nname = \"a\"\ntoken_sha256 = [\"{t}\"]\n[[principals]]\nname = \"b\"\ntoken_sha256 = [\"{}\"]", t.to_uppercase()),
                "also listed for principal \"a\"",
            ),
            (format!("[[principals]]\nname = \"a\"\ntoken_sha256 = [\"{empty}\"]"), "empty token"),
            ("[[principals]]\nname = \"a\"\ntoken_sha256 = [\"\"]".to_string(), "64 hex"),
            ("[[principals]]\nname = \"\"".to_string(), "non-empty and unique"),
            ("[[principals]]\nname = \" \"".to_string(), "non-empty and unique"),
            ("[[principals]]\nname = \"a\"\n[[principals]]\nname = \"a\"".to_string(), "non-empty and unique"),
        ];
        for (text, needle) in cases {
            let e = from_toml(&text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
