//! Identity: who is calling. A principal comes from a verified client
//! certificate (its subject common name or a DNS subject alternative name)
//! or from a bearer token in `authorization` metadata. Tokens are configured
//! only as SHA-256 hashes and compared in constant time.
//!
//! What a principal may do (its `Policy`) is decided in `keyward-core`.

use std::collections::BTreeMap;
use std::sync::Arc;

use keyward_core::Policy;
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

/// How callers are identified.
#[derive(Debug, Clone)]
pub enum Authenticator {
    /// Development: every caller is `dev` with every role (loopback only).
    Dev(Principal),
    /// Production: tokens and certificate names map to principals.
    Configured {
        /// SHA-256 of each token, and its principal.
        tokens: Vec<([u8; 32], Principal)>,
        /// Certificate name (CN or DNS SAN) -> principal.
        cert_names: BTreeMap<String, Principal>,
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
        let (tokens, cert_names) = match self {
            Self::Dev(p) => return Ok(p.clone()),
            Self::Configured { tokens, cert_names } => (tokens, cert_names),
        };
        if let Some(leaf) = peer_certs.and_then(|c| c.first()) {
            for name in cert_names_of(leaf) {
                if let Some(p) = cert_names.get(&name) {
                    return Ok(p.clone());
                }
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
        found.cloned().ok_or(NoIdentity("the bearer token is not valid"))
    }
}

/// The subject common name and DNS subject alternative names of a DER certificate.
pub fn cert_names_of(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    let mut names: Vec<String> =
        cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_string)).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    names
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
        Authenticator::Configured { tokens: vec![(h, p)], cert_names: BTreeMap::new() }
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
}
