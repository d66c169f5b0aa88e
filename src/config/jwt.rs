//! `[[jwt_issuers]]` -> [`JwtIssuerConfig`]: who may issue the JWTs that
//! identify workloads, and the rules mapping their claims to principals.
//! Validated here without reading a file; the JWKS files are read when the
//! server is built (`crate::jwt::JwtIssuers::load`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use jsonwebtoken::Algorithm;

use super::file::FileJwtIssuer;
use super::principals::RESERVED;
use super::ConfigError;
use crate::jwt::ACCEPTED_ALGORITHMS;

/// The default `algorithms`.
const DEFAULT_ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
/// The default and the largest `leeway_seconds`.
const DEFAULT_LEEWAY: u64 = 30;
const MAX_LEEWAY: u64 = 300;

/// One validated `[[jwt_issuers]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtIssuerConfig {
    /// The exact `iss`.
    pub issuer: String,
    /// Accepted audiences (one of them must be in `aud`).
    pub audiences: Vec<String>,
    /// The JWKS document.
    pub jwks_file: PathBuf,
    /// Accepted algorithms (asymmetric only).
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed for `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
    /// Claims -> principal, in order.
    pub rules: Vec<ClaimRule>,
}

/// A rule: a token whose claims equal all of these is `principal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRule {
    /// The principal's name.
    pub principal: String,
    /// Claim name -> the string it must equal.
    pub claims: BTreeMap<String, String>,
}

/// Validates `[[jwt_issuers]]` (none with `--dev`).
pub(super) fn issuers(dev: bool, list: Vec<FileJwtIssuer>) -> Result<Vec<JwtIssuerConfig>, ConfigError> {
    if dev && !list.is_empty() {
        return Err(ConfigError::Invalid(
            "--dev uses one development principal with every role; remove [[jwt_issuers]] or drop --dev"
                .into(),
        ));
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, f) in list.into_iter().enumerate() {
        let bad = |field: &str, m: String| ConfigError::Invalid(format!("jwt_issuers[{i}].{field}: {m}"));
        if f.issuer.trim().is_empty() || f.issuer.trim() != f.issuer {
            return Err(bad(
                "issuer",
                "must be non-empty, without surrounding spaces (the exact iss)".into(),
            ));
        }
        if let Some(j) = seen.insert(f.issuer.clone(), i) {
            return Err(bad("issuer", format!("{:?} is also configured as jwt_issuers[{j}]", f.issuer)));
        }
        if f.audiences.is_empty() || f.audiences.iter().any(|a| a.trim().is_empty()) {
            return Err(bad(
                "audiences",
                "list at least one non-empty audience (a token's aud must contain one of them)".into(),
            ));
        }
        if f.jwks_file.as_os_str().is_empty() {
            return Err(bad("jwks_file", "must name a JWKS file".into()));
        }
        let algorithms = match &f.algorithms {
            None => DEFAULT_ALGORITHMS.to_vec(),
            Some(names) if names.is_empty() => {
                return Err(bad("algorithms", "list at least one, or leave it out for the default".into()))
            }
            Some(names) => {
                let mut algs = Vec::new();
                for n in names {
                    let a = algorithm(n).map_err(|m| bad("algorithms", m))?;
                    if !algs.contains(&a) {
                        algs.push(a);
                    }
                }
                algs
            }
        };
        let leeway_seconds = f.leeway_seconds.unwrap_or(DEFAULT_LEEWAY);
        if leeway_seconds > MAX_LEEWAY {
            return Err(bad("leeway_seconds", format!("at most {MAX_LEEWAY}")));
        }
        if f.rules.is_empty() {
            return Err(bad(
                "rules",
                "add at least one [[jwt_issuers.rules]] mapping claims to a principal".into(),
            ));
        }
        let mut rules = Vec::new();
        for (r, rule) in f.rules.into_iter().enumerate() {
            let principal = rule.principal;
            if principal.trim().is_empty() {
                return Err(bad(&format!("rules[{r}].principal"), "must be non-empty".into()));
            }
            if RESERVED.iter().any(|n| principal.trim().eq_ignore_ascii_case(n)) {
                return Err(bad(
                    &format!("rules[{r}].principal"),
                    format!("{principal:?}: the names {RESERVED:?} are Keyward's own in the audit log"),
                ));
            }
            if rule.claims.is_empty() {
                return Err(bad(
                    &format!("rules[{r}].claims"),
                    "list at least one claim to match (a rule without claims would map every token of the issuer)"
                        .into(),
                ));
            }
            if rule.claims.keys().any(|k| k.is_empty()) {
                return Err(bad(&format!("rules[{r}].claims"), "claim names must be non-empty".into()));
            }
            rules.push(ClaimRule { principal, claims: rule.claims });
        }
        out.push(JwtIssuerConfig {
            issuer: f.issuer,
            audiences: f.audiences,
            jwks_file: f.jwks_file,
            algorithms,
            leeway_seconds,
            rules,
        });
    }
    Ok(out)
}

/// An accepted algorithm by its JWS name.
fn algorithm(name: &str) -> Result<Algorithm, String> {
    let names = || ACCEPTED_ALGORITHMS.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ");
    match name.parse::<Algorithm>() {
        Ok(a) if ACCEPTED_ALGORITHMS.contains(&a) => Ok(a),
        Ok(_) => Err(format!(
            "{name:?} is a shared-secret algorithm; only asymmetric signatures are accepted: {}",
            names()
        )),
        Err(_) => Err(format!("{name:?} is not an accepted algorithm; use one of {}", names())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FileConfig, Overrides, ServerConfig};
    use std::path::Path;

    const BASE: &str = r#"
        root_key_file = "/k"
        [[principals]]
        name = "payments-api"
        roles = ["user"]
    "#;

    const ISSUER: &str = r#"
        [[jwt_issuers]]
        issuer = "https://kubernetes.default.svc.cluster.local"
        audiences = ["keyward"]
        jwks_file = "/etc/keyward/k8s-jwks.json"
        [[jwt_issuers.rules]]
        principal = "payments-api"
        [jwt_issuers.rules.claims]
        sub = "system:serviceaccount:payments:api"
    "#;

    fn load(text: &str) -> Result<ServerConfig, String> {
        ServerConfig::from_toml(&format!("{BASE}{text}"), Path::new("t.toml"), &Overrides::default())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_example_validates_with_defaults() {
        let c = load(ISSUER).unwrap();
        assert_eq!(
            c.jwt_issuers,
            vec![JwtIssuerConfig {
                issuer: "https://kubernetes.default.svc.cluster.local".into(),
                audiences: vec!["keyward".into()],
                jwks_file: "/etc/keyward/k8s-jwks.json".into(),
                algorithms: DEFAULT_ALGORITHMS.to_vec(),
                leeway_seconds: 30,
                rules: vec![ClaimRule {
                    principal: "payments-api".into(),
                    claims: [("sub".into(), "system:serviceaccount:payments:api".into())].into(),
                }],
            }]
        );
        let c = load(&ISSUER.replace(
            "jwks_file",
            "algorithms = [\"ES256\", \"PS256\", \"ES256\"]\nleeway_seconds = 0\njwks_file",
        ))
        .unwrap();
        assert_eq!(c.jwt_issuers[0].algorithms, vec![Algorithm::ES256, Algorithm::PS256]);
        assert_eq!(c.jwt_issuers[0].leeway_seconds, 0);
    }

    #[test]
    fn errors_name_the_field() {
        let twice = format!("{ISSUER}{ISSUER}");
        let cases: Vec<(String, &str)> = vec![
            (ISSUER.replace("\"https://kubernetes.default.svc.cluster.local\"", "\"\""), "jwt_issuers[0].issuer: must be non-empty"),
            (twice, "jwt_issuers[1].issuer: \"https://kubernetes.default.svc.cluster.local\" is also configured as jwt_issuers[0]"),
            (ISSUER.replace("[\"keyward\"]", "[]"), "jwt_issuers[0].audiences: list at least one"),
            (ISSUER.replace("[\"keyward\"]", "[\" \"]"), "jwt_issuers[0].audiences"),
            (ISSUER.replace("audiences = [\"keyward\"]", ""), "missing field `audiences`"),
            (ISSUER.replace("\"/etc/keyward/k8s-jwks.json\"", "\"\""), "jwt_issuers[0].jwks_file: must name"),
            (ISSUER.replace("jwks_file", "algorithms = [\"HS256\"]\njwks_file"), "jwt_issuers[0].algorithms: \"HS256\" is a shared-secret"),
            (ISSUER.replace("jwks_file", "algorithms = [\"none\"]\njwks_file"), "jwt_issuers[0].algorithms: \"none\" is not an accepted"),
            (ISSUER.replace("jwks_file", "algorithms = []\njwks_file"), "jwt_issuers[0].algorithms: list at least one"),
            (ISSUER.replace("jwks_file", "leeway_seconds = 301\njwks_file"), "jwt_issuers[0].leeway_seconds: at most 300"),
            (ISSUER.replace("payments-api\"\n", "system\"\n"), "jwt_issuers[0].rules[0].principal: \"system\""),
            (ISSUER.replace("payments-api\"\n", "Unauthenticated\"\n"), "jwt_issuers[0].rules[0].principal"),
            (ISSUER.replace("principal = \"payments-api\"", "principal = \"\""), "jwt_issuers[0].rules[0].principal: must be non-empty"),
            (
                ISSUER.replace("[jwt_issuers.rules.claims]\n        sub = \"system:serviceaccount:payments:api\"", ""),
                "jwt_issuers[0].rules[0].claims: list at least one claim",
            ),
            (ISSUER[..ISSUER.find("[[jwt_issuers.rules]]").unwrap()].to_string(), "jwt_issuers[0].rules: add at least one"),
            (ISSUER.replace("jwks_file", "jwks_url = \"https://x\"\njwks_file"), "unknown field `jwks_url`"),
            (ISSUER.replace("principal = ", "name = \"x\"\nprincipal = "), "unknown field `name`"),
        ];
        for (text, needle) in cases {
            let e = load(&text).unwrap_err();
            assert!(e.contains(needle), "{needle:?} not in {e:?}");
        }
    }

    #[test]
    fn the_commented_out_example_in_deploy_validates() {
        let text = include_str!("../../deploy/keyward.toml");
        let start = text.find("# [[jwt_issuers]]").expect("the example");
        let uncommented: String =
            text[start..].lines().map(|l| l.strip_prefix("# ").unwrap_or(l)).collect::<Vec<_>>().join("\n");
        let text = format!("{}\n{uncommented}", &text[..start]);
        let file: FileConfig = toml::from_str(&text).unwrap();
        let c = ServerConfig::from_parts(file, &Overrides::default()).unwrap();
        assert_eq!(c.jwt_issuers[0].rules[0].principal, "payments-service");
    }

    #[test]
    fn dev_mode_refuses_jwt_issuers() {
        let file: FileConfig = toml::from_str(ISSUER).unwrap();
        let o = Overrides { dev: true, ..Default::default() };
        let e = ServerConfig::from_parts(file, &o).unwrap_err().to_string();
        assert!(e.contains("--dev") && e.contains("[[jwt_issuers]]"), "{e}");
    }

    #[test]
    fn a_missing_or_invalid_jwks_file_is_refused_naming_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(
            &ISSUER
                .replace("/etc/keyward/k8s-jwks.json", &dir.path().join("none.json").display().to_string()),
        )
        .unwrap();
        let e = crate::jwt::JwtIssuers::load(&c.jwt_issuers).unwrap_err().to_string();
        assert!(e.starts_with("jwt_issuers[0].jwks_file ") && e.contains("cannot read"), "{e}");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"keys": []}"#).unwrap();
        let c = load(&ISSUER.replace("/etc/keyward/k8s-jwks.json", &bad.display().to_string())).unwrap();
        let e = crate::jwt::JwtIssuers::load(&c.jwt_issuers).unwrap_err().to_string();
        assert!(e.starts_with("jwt_issuers[0].jwks_file ") && e.contains("no usable"), "{e}");
    }
}
