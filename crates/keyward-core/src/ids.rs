//! Key identifiers: UUIDs, aliases, and the `key_id` strings that name either.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::KmsError;

/// A fresh request id: a random UUID v4 in its hyphenated form, its bits
/// from the system CSPRNG (drawn in blocks: `keyward_crypto::random_bytes`).
/// Request ids are not secrets, only unique.
pub fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    keyward_crypto::random_bytes(&mut bytes).expect("system randomness");
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Builder::from_random_bytes(bytes).into_uuid().hyphenated().encode_lower(&mut buf).to_string()
}

/// A key's identity: a UUID v4, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(Uuid);

impl KeyId {
    /// A fresh random id.
    pub fn generate() -> Self {
        Self(Uuid::new_v4())
    }

    /// The 16 bytes bound into ciphertext headers.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// From the 16 header bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(Uuid::from_bytes(bytes))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for KeyId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// What a request's `key_id` field names: a key by id, or an alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// A key UUID.
    Id(KeyId),
    /// `alias/<name>`.
    Alias(String),
}

impl KeyRef {
    /// Parses a `key_id` field; `field` names it in the error.
    pub fn parse(field: &'static str, s: &str) -> Result<Self, KmsError> {
        if s.is_empty() {
            return Err(KmsError::invalid(field, "must not be empty"));
        }
        if s.starts_with("alias/") {
            validate_alias(field, s)?;
            return Ok(Self::Alias(s.to_string()));
        }
        s.parse::<KeyId>()
            .map(Self::Id)
            .map_err(|_| KmsError::invalid(field, "must be a key UUID or alias/<name>"))
    }

    /// The alias, if this names one.
    pub fn alias(&self) -> Option<&str> {
        match self {
            Self::Alias(a) => Some(a),
            Self::Id(_) => None,
        }
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => id.fmt(f),
            Self::Alias(a) => f.write_str(a),
        }
    }
}

/// Checks an alias: `alias/` then 1–250 of `A-Z a-z 0-9 / _ - . :`.
pub fn validate_alias(field: &'static str, alias: &str) -> Result<(), KmsError> {
    let Some(name) = alias.strip_prefix("alias/") else {
        return Err(KmsError::invalid(field, "must start with alias/"));
    };
    if name.is_empty() || name.len() > 250 {
        return Err(KmsError::invalid(field, "alias name must be 1 to 250 characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_-.:".contains(&b)) {
        return Err(KmsError::invalid(field, "alias name may hold only letters, digits and / _ - . :"));
    }
    Ok(())
}

#[cfg(test)]
mod request_id_tests {
    use super::*;

    #[test]
    fn request_ids_are_distinct_v4_uuids_across_refills() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            let u = Uuid::parse_str(id).unwrap();
            assert_eq!(u.get_version_num(), 4);
            assert_eq!(id, &u.hyphenated().to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_and_aliases() {
        let id = KeyId::generate();
        assert_eq!(KeyRef::parse("key_id", &id.to_string()).unwrap(), KeyRef::Id(id));
        assert_eq!(
            KeyRef::parse("key_id", "alias/payments").unwrap(),
            KeyRef::Alias("alias/payments".into())
        );
    }

    #[test]
    fn bad_refs_name_the_field() {
        for bad in ["", "payments", "alias/", "alias/has space", "alias/ünï"] {
            let e = KeyRef::parse("destination_key_id", bad).unwrap_err();
            assert!(e.to_string().starts_with("destination_key_id:"), "{bad}: {e}");
        }
    }
}
