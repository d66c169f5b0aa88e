//! Identity: who is calling. A principal comes from a verified client
//! certificate or from a bearer token in `authorization` metadata. Tokens are
//! configured only as SHA-256 hashes and compared in constant time.
//!
//! Certificate identities are typed: a principal names the DNS subject
//! alternative names, URI subject alternative names (SPIFFE IDs) and, only
//! when asked for, subject common names it answers to, each matched only
//! against names of its own kind. A client certificate must carry the
//! clientAuth extended key usage, and one whose names match two different
//! principals is refused rather than resolved by order.
//!
//! What a principal may do (its `Policy`) is decided in `keyward-core`.

use std::collections::BTreeMap;
use std::sync::Arc;

use keyward_core::Policy;

use crate::jwt::JwtIssuers;

/// The principal the Kubernetes KMS v2 plugin records (`crate::k8s`).
pub const KMS_V2_PRINCIPAL: &str = "kube-apiserver";
use ring::digest::{digest, SHA256};
use subtle::ConstantTimeEq;

/// A configured principal.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Its name, as recorded in the audit log.
    pub name: String,
    /// What it may do.
    pub policy: Arc<Policy>,
}

/// The kinds of certificate name a principal can be matched by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CertNameKind {
    /// A DNS subject alternative name (`cert_dns_names`), compared without
    /// regard to ASCII case or a trailing dot.
    Dns,
    /// A URI subject alternative name such as a SPIFFE ID (`cert_uris`), exact.
    Uri,
    /// The subject common name (`cert_common_names`), exact.
    CommonName,
}

impl CertNameKind {
    /// The configuration field naming this kind.
    pub fn field(self) -> &'static str {
        match self {
            Self::Dns => "cert_dns_names",
            Self::Uri => "cert_uris",
            Self::CommonName => "cert_common_names",
        }
    }

    /// The form a name of this kind is compared in.
    pub fn normalize(self, name: &str) -> String {
        match self {
            Self::Dns => name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase(),
            Self::Uri | Self::CommonName => name.to_string(),
        }
    }
}

/// How callers are identified.
#[derive(Debug, Clone)]
pub enum Authenticator {
    /// Development: every caller is `dev` with every role (loopback only).
    Dev(Principal),
    /// Production: tokens and certificate names map to principals.
    Configured {
        /// SHA-256 of each token, and its principal.
        tokens: Vec<([u8; 32], Principal)>,
        /// (kind, normalized name) -> principal; each key claimed once.
        cert_names: BTreeMap<(CertNameKind, String), Principal>,
        /// Every configured principal by name (those a JWT may map to).
        principals: BTreeMap<String, Principal>,
        /// `[[jwt_issuers]]`, once their JWKS files are read (`Server::build`).
        jwt: Option<Arc<JwtIssuers>>,
    },
}

/// Why a caller has no identity. The message is safe to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoIdentity(pub &'static str);

impl Authenticator {
    /// The development authenticator.
    pub fn dev() -> Self {
        Self::Dev(Principal { name: "dev".into(), policy: Arc::new(Policy::everything()) })
    }

    /// Identifies a caller from its `authorization` header value and its
    /// verified TLS client certificate chain (leaf first).
    pub fn identify(
        &self,
        authorization: Option<&str>,
        peer_certs: Option<&[tonic::transport::CertificateDer<'static>]>,
    ) -> Result<Principal, NoIdentity> {
        let (tokens, cert_names, jwt) = match self {
            Self::Dev(p) => return Ok(p.clone()),
            Self::Configured { tokens, cert_names, jwt, .. } => (tokens, cert_names, jwt),
        };
        if let Some(leaf) = peer_certs.and_then(|c| c.first()) {
            let names = client_cert_names(leaf)?;
            let mut found: Option<&Principal> = None;
            for (kind, name) in names {
                let Some(p) = cert_names.get(&(kind, kind.normalize(&name))) else { continue };
                match found {
                    Some(f) if f.name != p.name => {
                        tracing::warn!(
                            first = %f.name,
                            second = %p.name,
                            "a client certificate names two principals; refused"
                        );
                        return Err(NoIdentity(
                            "the client certificate matches more than one configured principal",
                        ));
                    }
                    _ => found = Some(p),
                }
            }
            if let Some(p) = found {
                return Ok(p.clone());
            }
            if authorization.is_none() {
                return Err(NoIdentity("the client certificate names no configured principal"));
            }
        }
        let Some(header) = authorization else {
            return Err(NoIdentity(
                "no credentials: send a client certificate or an authorization: Bearer token",
            ));
        };
        let Some(token) = header.strip_prefix("Bearer ").map(str::trim) else {
            return Err(NoIdentity("the authorization header must be: Bearer <token>"));
        };
        let hash = digest(&SHA256, token.as_bytes());
        // Compare against every configured hash without stopping early, so
        // timing does not tell how many were checked or how much matched.
        let mut found: Option<&Principal> = None;
        for (h, p) in tokens {
            if bool::from(h[..].ct_eq(hash.as_ref())) {
                found = Some(p);
            }
        }
        match (found, jwt) {
            (Some(p), _) => Ok(p.clone()),
            // Workload identity: a JWT from a configured issuer (crate::jwt).
            // The name may also be a runtime principal (AccessService):
            // the edge looks its policy up, and refuses a name that is
            // neither (`grpc::Api::caller`).
            (None, Some(jwt)) if crate::jwt::looks_like_jwt(token) => {
                let name = jwt.identify(token)?;
                Ok(self
                    .principal_named(&name)
                    .unwrap_or(Principal { name, policy: Arc::new(Policy::default()) }))
            }
            (None, _) => Err(NoIdentity("the bearer token is not valid")),
        }
    }

    /// The principal called `name`, as a token of it would identify it.
    fn principal_named(&self, name: &str) -> Option<Principal> {
        match self {
            Self::Dev(_) => None,
            Self::Configured { principals, .. } => principals.get(name).cloned(),
        }
    }

    /// With the JWT issuers (none when `jwt` is empty) attached.
    pub fn with_jwt(self, jwt: JwtIssuers) -> Self {
        match self {
            Self::Configured { tokens, cert_names, principals, .. } if !jwt.is_empty() => {
                Self::Configured { tokens, cert_names, principals, jwt: Some(Arc::new(jwt)) }
            }
            other => other,
        }
    }
}

/// The typed names of a DER client certificate: its DNS and URI subject
/// alternative names and its subject common names. Refused when it cannot
/// be read or does not carry the clientAuth extended key usage (a
/// certificate made for something else, a server say, is not a client's).
pub fn client_cert_names(der: &[u8]) -> Result<Vec<(CertNameKind, String)>, NoIdentity> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Err(NoIdentity("the client certificate cannot be read"));
    };
    let client_auth = matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.client_auth);
    if !client_auth {
        return Err(NoIdentity(
            "the client certificate lacks the clientAuth extended key usage; issue it for client authentication",
        ));
    }
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push((CertNameKind::Dns, d.to_string())),
                GeneralName::URI(u) => names.push((CertNameKind::Uri, u.to_string())),
                _ => {}
            }
        }
    }
    for cn in cert.subject().iter_common_name() {
        if let Ok(cn) = cn.as_str() {
            names.push((CertNameKind::CommonName, cn.to_string()));
        }
    }
    Ok(names)
}

/// SHA-256 of a token, hex, as it goes into the configuration.
pub fn token_hash_hex(token: &str) -> String {
    hex::encode(digest(&SHA256, token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured() -> Authenticator {
        let p = Principal { name: "svc".into(), policy: Arc::new(Policy::default()) };
        let h: [u8; 32] = hex::decode(token_hash_hex("s3cret")).unwrap().try_into().unwrap();
        Authenticator::Configured {
            tokens: vec![(h, p)],
            cert_names: BTreeMap::new(),
            principals: BTreeMap::new(),
            jwt: None,
        }
    }

    #[test]
    fn tokens() {
        let a = configured();
        assert_eq!(a.identify(Some("Bearer s3cret"), None).unwrap().name, "svc");
        assert!(a.identify(Some("Bearer s3cre"), None).is_err());
        assert!(a.identify(Some("s3cret"), None).unwrap_err().0.contains("Bearer"));
        assert!(a.identify(None, None).unwrap_err().0.contains("no credentials"));
        assert_eq!(Authenticator::dev().identify(None, None).unwrap().name, "dev");
    }

    /// A DER certificate (self-signed: these tests check names, not chains).
    fn cert(
        cn: &str,
        sans: &[rcgen::SanType],
        client_auth: bool,
    ) -> tonic::transport::CertificateDer<'static> {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.subject_alt_names = sans.to_vec();
        if client_auth {
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        }
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().clone()
    }

    fn dns(n: &str) -> rcgen::SanType {
        rcgen::SanType::DnsName(n.try_into().unwrap())
    }

    fn uri(n: &str) -> rcgen::SanType {
        rcgen::SanType::URI(n.try_into().unwrap())
    }

    fn with_certs(names: &[(CertNameKind, &str, &str)]) -> Authenticator {
        let cert_names = names
            .iter()
            .map(|(k, n, p)| {
                ((*k, k.normalize(n)), Principal { name: p.to_string(), policy: Arc::new(Policy::default()) })
            })
            .collect();
        Authenticator::Configured { tokens: Vec::new(), cert_names, principals: BTreeMap::new(), jwt: None }
    }

    fn who(a: &Authenticator, c: tonic::transport::CertificateDer<'static>) -> Result<String, &'static str> {
        a.identify(None, Some(&[c])).map(|p| p.name).map_err(|e| e.0)
    }

    #[test]
    fn certificate_names_match_only_their_own_kind() {
        let a = with_certs(&[
            (CertNameKind::Dns, "pay.example", "by-dns"),
            (CertNameKind::Uri, "spiffe://example.org/pay", "by-uri"),
            (CertNameKind::CommonName, "legacy-client", "by-cn"),
        ]);
        assert_eq!(who(&a, cert("x", &[dns("PAY.example")], true)), Ok("by-dns".into()));
        assert_eq!(who(&a, cert("x", &[uri("spiffe://example.org/pay")], true)), Ok("by-uri".into()));
        assert_eq!(who(&a, cert("legacy-client", &[], true)), Ok("by-cn".into()));
        // A CN is not a DNS name, a DNS name not a URI, a URI not a CN.
        let nobody = Err("the client certificate names no configured principal");
        assert_eq!(who(&a, cert("pay.example", &[], true)), nobody);
        assert_eq!(who(&a, cert("x", &[dns("legacy-client")], true)), nobody);
        assert_eq!(who(&a, cert("spiffe://example.org/pay", &[dns("x")], true)), nobody);
        // CNs match only when configured as such.
        let dns_only = with_certs(&[(CertNameKind::Dns, "legacy-client", "p")]);
        assert_eq!(who(&dns_only, cert("legacy-client", &[], true)), nobody);
    }

    #[test]
    fn a_certificate_without_client_auth_or_naming_two_principals_is_refused() {
        let a = with_certs(&[
            (CertNameKind::Dns, "pay.example", "by-dns"),
            (CertNameKind::Uri, "spiffe://example.org/pay", "by-uri"),
        ]);
        let e = who(&a, cert("x", &[dns("pay.example")], false)).unwrap_err();
        assert!(e.contains("clientAuth"), "{e}");
        let both = cert("x", &[dns("pay.example"), uri("spiffe://example.org/pay")], true);
        assert!(who(&a, both).unwrap_err().contains("more than one"));
        // Two names of one principal are fine.
        let a = with_certs(&[(CertNameKind::Dns, "a.example", "p"), (CertNameKind::Dns, "b.example", "p")]);
        assert_eq!(who(&a, cert("x", &[dns("a.example"), dns("b.example")], true)), Ok("p".into()));
        assert!(who(&a, tonic::transport::CertificateDer::from(vec![1, 2, 3]))
            .unwrap_err()
            .contains("cannot be read"));
    }
}
