//! Principals, tokens, grants and access keys of the AccessService (column
//! family `access`). Keys: `p/<name>`, `t/<16-byte id>`, `g/<16-byte id>`,
//! `a/<access key id>`, and
//! `u/<16-byte token id>` for when a token was last used (8 bytes, big-endian
//! Unix ms; not authenticated: it drives nothing). Values: JSON objects with
//! the field order below, the tag as 64 hex digits.

use std::collections::BTreeMap;

use keyward_core::{
    AccessId, AccessKeyRecord, AccessRecord, AccessRecordKey, ContextConstraint, Grant, GrantRecord,
    KeySelector, Permission, PrincipalRecord, Role, StoreError, TokenRecord,
};
use keyward_crypto::RecordTag;
use serde::{Deserialize, Serialize};

use super::corrupt;

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum Stored {
    Principal {
        name: String,
        roles: Vec<String>,
        created_ms: i64,
        tag: String,
    },
    Token {
        id: String,
        principal: String,
        sha256: String,
        created_ms: i64,
        expires_ms: i64,
        tag: String,
    },
    Grant {
        id: String,
        principal: String,
        keys: Vec<String>,
        operations: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context_equals: Option<BTreeMap<String, String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context_contains: Option<BTreeMap<String, String>>,
        created_ms: i64,
        tag: String,
    },
    #[serde(rename = "access_key")]
    AccessKey {
        id: String,
        principal: String,
        /// The secret sealed under the root key, hex.
        sealed_secret: String,
        created_ms: i64,
        tag: String,
    },
}

/// The store key of an access object.
pub fn key(k: &AccessRecordKey) -> Vec<u8> {
    match k {
        AccessRecordKey::Principal(n) => [b"p/".as_slice(), n.as_bytes()].concat(),
        AccessRecordKey::Token(id) => [b"t/".as_slice(), id.as_bytes()].concat(),
        AccessRecordKey::Grant(id) => [b"g/".as_slice(), id.as_bytes()].concat(),
        AccessRecordKey::AccessKey(id) => [b"a/".as_slice(), id.as_bytes()].concat(),
    }
}

/// The store key of a token's last use.
pub fn use_key(id: &AccessId) -> Vec<u8> {
    [b"u/".as_slice(), id.as_bytes()].concat()
}

/// Whether a store key is a token's last use (else a record).
pub fn is_use_key(k: &[u8]) -> bool {
    k.starts_with(b"u/")
}

/// Reads a last-use entry.
pub fn decode_use(k: &[u8], v: &[u8]) -> Result<(AccessId, i64), StoreError> {
    let id: [u8; 16] =
        k.get(2..).and_then(|b| b.try_into().ok()).ok_or_else(|| corrupt("token use key", "not 16 bytes"))?;
    let ms: [u8; 8] = v.try_into().map_err(|_| corrupt("token use", "not 8 bytes"))?;
    Ok((AccessId::from_bytes(id), i64::from_be_bytes(ms)))
}

/// The stored value of an access record. Fails for one without a tag.
pub fn encode(r: &AccessRecord) -> Result<Vec<u8>, StoreError> {
    let tag =
        r.tag().map(|t| hex::encode(t.0)).ok_or_else(|| StoreError("access record has no tag".into()))?;
    let stored = match r {
        AccessRecord::Principal(p) => Stored::Principal {
            name: p.name.clone(),
            roles: p.roles.iter().map(|r| r.as_str().to_string()).collect(),
            created_ms: p.created_ms,
            tag,
        },
        AccessRecord::Token(t) => Stored::Token {
            id: t.id.to_string(),
            principal: t.principal.clone(),
            sha256: hex::encode(t.hash),
            created_ms: t.created_ms,
            expires_ms: t.expires_ms,
            tag,
        },
        AccessRecord::Grant(g) => {
            let (context_equals, context_contains) = match &g.grant.constraint {
                ContextConstraint::None => (None, None),
                ContextConstraint::Equals(p) => (Some(p.clone()), None),
                ContextConstraint::Contains(p) => (None, Some(p.clone())),
            };
            Stored::Grant {
                id: g.id.to_string(),
                principal: g.principal.clone(),
                keys: g.grant.keys.iter().map(ToString::to_string).collect(),
                operations: g.grant.permissions.iter().map(|p| p.as_str().to_string()).collect(),
                context_equals,
                context_contains,
                created_ms: g.created_ms,
                tag,
            }
        }
        AccessRecord::AccessKey(k) => Stored::AccessKey {
            id: k.id.clone(),
            principal: k.principal.clone(),
            sealed_secret: hex::encode(k.sealed_secret.as_bytes()),
            created_ms: k.created_ms,
            tag,
        },
    };
    Ok(serde_json::to_vec(&stored).expect("access record serialises"))
}

fn tag(s: &str) -> Result<RecordTag, StoreError> {
    let b: [u8; 32] = hex::decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("access record tag", "not 64 hex digits"))?;
    Ok(RecordTag(b))
}

fn id(s: &str) -> Result<AccessId, StoreError> {
    s.parse().map_err(|e| corrupt("access record id", e))
}

/// Reads a stored access record.
pub fn decode(bytes: &[u8]) -> Result<AccessRecord, StoreError> {
    let s: Stored = serde_json::from_slice(bytes).map_err(|e| corrupt("access record", e))?;
    Ok(match s {
        Stored::Principal { name, roles, created_ms, tag: t } => AccessRecord::Principal(PrincipalRecord {
            name,
            roles: roles
                .iter()
                .map(|r| r.parse::<Role>().map_err(|e| corrupt("principal roles", e)))
                .collect::<Result<_, _>>()?,
            created_ms,
            tag: Some(tag(&t)?),
        }),
        Stored::Token { id: i, principal, sha256, created_ms, expires_ms, tag: t } => {
            let hash: [u8; 32] = hex::decode(&sha256)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| corrupt("token hash", "not 64 hex digits"))?;
            AccessRecord::Token(TokenRecord {
                id: id(&i)?,
                principal,
                hash,
                created_ms,
                expires_ms,
                tag: Some(tag(&t)?),
            })
        }
        Stored::Grant {
            id: i,
            principal,
            keys,
            operations,
            context_equals,
            context_contains,
            created_ms,
            tag: t,
        } => {
            let keys = keys
                .iter()
                .map(|k| k.parse::<KeySelector>().map_err(|e| corrupt("grant keys", e)))
                .collect::<Result<_, _>>()?;
            let permissions = operations
                .iter()
                .map(|o| o.parse::<Permission>().map_err(|e| corrupt("grant operations", e)))
                .collect::<Result<_, _>>()?;
            let constraint = match (context_equals, context_contains) {
                (None, None) => ContextConstraint::None,
                (Some(p), None) => ContextConstraint::Equals(p),
                (None, Some(p)) => ContextConstraint::Contains(p),
                (Some(_), Some(_)) => return Err(corrupt("grant", "two context constraints")),
            };
            AccessRecord::Grant(GrantRecord {
                id: id(&i)?,
                principal,
                grant: Grant { keys, permissions, constraint },
                created_ms,
                tag: Some(tag(&t)?),
            })
        }
        Stored::AccessKey { id, principal, sealed_secret, created_ms, tag: t } => {
            if !keyward_core::is_access_key_id(&id) {
                return Err(corrupt("access key id", "not an access key id"));
            }
            let sealed = hex::decode(&sealed_secret).map_err(|e| corrupt("access key secret", e))?;
            AccessRecord::AccessKey(AccessKeyRecord {
                id,
                principal,
                sealed_secret: keyward_crypto::SealedAccessSecret::from_stored(sealed),
                created_ms,
                tag: Some(tag(&t)?),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"{}",
            b"{\"kind\":\"token\"}",
            b"{\"kind\":\"principal\",\"name\":\"a\",\"roles\":[\"boss\"],\"created_ms\":0,\"tag\":\"00\"}",
        ] {
            assert!(decode(bad).is_err());
        }
        assert!(decode_use(b"u/short", &[0; 8]).is_err());
    }
}
