//! Reading an AWS KMS JSON request: typed fields with the lengths and
//! ranges of AWS's own model (botocore checks some minimums on its side, no
//! maximum and no blob length; other SDKs check less), each error naming
//! the field as AWS spells it; and the four forms of a key id.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use keyward_core::KmsError;
use serde_json::{Map, Value};

/// A request body: a JSON object.
pub(super) struct Body(pub Map<String, Value>);

impl Body {
    /// Parses the raw body (`{}` when empty, as some SDKs send nothing for
    /// operations without input).
    pub fn parse(raw: &[u8]) -> Result<Self, KmsError> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(Map::new()));
        }
        match serde_json::from_slice::<Value>(raw) {
            Ok(Value::Object(m)) => Ok(Self(m)),
            Ok(_) => Err(KmsError::invalid("body", "must be a JSON object")),
            Err(e) => Err(KmsError::invalid("body", format!("is not valid JSON: {e}"))),
        }
    }

    fn get(&self, field: &'static str) -> Option<&Value> {
        // JSON null is "not given", as the SDKs treat it.
        self.0.get(field).filter(|v| !v.is_null())
    }

    /// A string of `min..=max` characters, if given.
    pub fn opt_str(&self, field: &'static str, min: usize, max: usize) -> Result<Option<String>, KmsError> {
        let Some(v) = self.get(field) else { return Ok(None) };
        let s = v.as_str().ok_or_else(|| KmsError::invalid(field, "must be a string"))?;
        let n = s.chars().count();
        if n < min || n > max {
            return Err(KmsError::invalid(field, format!("must be {min} to {max} characters, got {n}")));
        }
        Ok(Some(s.to_string()))
    }

    /// A required string of `min..=max` characters.
    pub fn str(&self, field: &'static str, min: usize, max: usize) -> Result<String, KmsError> {
        self.opt_str(field, min, max)?.ok_or_else(|| KmsError::invalid(field, "is required"))
    }

    /// A base64 blob of `min..=max` bytes, if given.
    pub fn opt_blob(&self, field: &'static str, min: usize, max: usize) -> Result<Option<Vec<u8>>, KmsError> {
        let Some(v) = self.get(field) else { return Ok(None) };
        let s = v.as_str().ok_or_else(|| KmsError::invalid(field, "must be a base64 string"))?;
        // Decoded length is at most 3/4 of the text: refuse huge text first.
        if s.len() > max.saturating_mul(4) / 3 + 4 {
            return Err(KmsError::invalid(field, format!("must be {min} to {max} bytes")));
        }
        let b = base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| KmsError::invalid(field, "is not valid base64"))?;
        if b.len() < min || b.len() > max {
            return Err(KmsError::invalid(field, format!("must be {min} to {max} bytes, got {}", b.len())));
        }
        Ok(Some(b))
    }

    /// A required base64 blob.
    pub fn blob(&self, field: &'static str, min: usize, max: usize) -> Result<Vec<u8>, KmsError> {
        self.opt_blob(field, min, max)?.ok_or_else(|| KmsError::invalid(field, "is required"))
    }

    /// An integer in `min..=max`, if given.
    pub fn opt_int(&self, field: &'static str, min: i64, max: i64) -> Result<Option<i64>, KmsError> {
        let Some(v) = self.get(field) else { return Ok(None) };
        let n = v.as_i64().ok_or_else(|| KmsError::invalid(field, "must be an integer"))?;
        if n < min || n > max {
            return Err(KmsError::invalid(field, format!("must be between {min} and {max}, got {n}")));
        }
        Ok(Some(n))
    }

    /// A boolean, if given.
    pub fn opt_bool(&self, field: &'static str) -> Result<Option<bool>, KmsError> {
        let Some(v) = self.get(field) else { return Ok(None) };
        v.as_bool().map(Some).ok_or_else(|| KmsError::invalid(field, "must be true or false"))
    }

    /// A string→string map (an encryption context), empty when not given.
    pub fn context(&self, field: &'static str) -> Result<HashMap<String, String>, KmsError> {
        let Some(v) = self.get(field) else { return Ok(HashMap::new()) };
        let m = v.as_object().ok_or_else(|| KmsError::invalid(field, "must be an object of strings"))?;
        m.iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|v| (k.clone(), v.to_string()))
                    .ok_or_else(|| KmsError::invalid(field, "values must be strings"))
            })
            .collect()
    }

    /// A list of strings (each `min..=max` characters), at most `most`.
    pub fn str_list(
        &self,
        field: &'static str,
        most: usize,
        min: usize,
        max: usize,
    ) -> Result<Vec<String>, KmsError> {
        let Some(v) = self.get(field) else { return Ok(Vec::new()) };
        let items = v.as_array().ok_or_else(|| KmsError::invalid(field, "must be a list of strings"))?;
        if items.len() > most {
            return Err(KmsError::invalid(field, format!("at most {most} items")));
        }
        items
            .iter()
            .map(|i| {
                let s = i.as_str().ok_or_else(|| KmsError::invalid(field, "must be a list of strings"))?;
                let n = s.chars().count();
                if n < min || n > max {
                    return Err(KmsError::invalid(field, format!("items must be {min} to {max} characters")));
                }
                Ok(s.to_string())
            })
            .collect()
    }

    /// `Tags`: `[{"TagKey": k, "TagValue": v}]` (keys 1..=128, values
    /// 0..=256 characters; at most 200 tags).
    pub fn tags(&self, field: &'static str) -> Result<BTreeMap<String, String>, KmsError> {
        let Some(v) = self.get(field) else { return Ok(BTreeMap::new()) };
        let items = v.as_array().ok_or_else(|| KmsError::invalid(field, "must be a list of tags"))?;
        if items.len() > 200 {
            return Err(KmsError::invalid(field, "at most 200 tags"));
        }
        let mut out = BTreeMap::new();
        for i in items {
            let t = Body(i.as_object().cloned().ok_or_else(|| {
                KmsError::invalid(field, "each tag must be {\"TagKey\": ..., \"TagValue\": ...}")
            })?);
            let k = t.str("TagKey", 1, 128)?;
            let v =
                t.opt_str("TagValue", 0, 256)?.ok_or_else(|| KmsError::invalid("TagValue", "is required"))?;
            out.insert(k, v);
        }
        Ok(out)
    }

    /// Refuses fields this edge does not implement, when given: a silent
    /// ignore could weaken what the caller asked for (a key policy, a
    /// custom key store) or change what it gets.
    pub fn refuse_given(&self, fields: &[(&'static str, &'static str)]) -> Result<(), KmsError> {
        for (field, why) in fields {
            if self.get(field).is_some() {
                return Err(KmsError::invalid(field, *why));
            }
        }
        Ok(())
    }

    /// An enum field that may only take `allowed` (AWS's spelling), if given.
    pub fn only(&self, field: &'static str, allowed: &[&str]) -> Result<Option<String>, KmsError> {
        let Some(v) = self.opt_str(field, 1, 64)? else { return Ok(None) };
        if !allowed.contains(&v.as_str()) {
            return Err(KmsError::invalid(
                field,
                format!("{v:?} is not supported here (supported: {allowed:?})"),
            ));
        }
        Ok(Some(v))
    }

    /// `DryRun`: not supported (a dry run that checks nothing would lie).
    pub fn no_dry_run(&self) -> Result<(), KmsError> {
        if self.opt_bool("DryRun")? == Some(true) {
            return Err(KmsError::invalid("DryRun", "dry runs are not supported by this endpoint"));
        }
        Ok(())
    }
}

/// The region and account ARNs name.
#[derive(Debug, Clone)]
pub(crate) struct Arns {
    /// The region.
    pub region: String,
    /// The 12-digit account.
    pub account: String,
}

impl Arns {
    /// The key ARN of a key id.
    pub fn key(&self, id: impl std::fmt::Display) -> String {
        format!("arn:aws:kms:{}:{}:key/{id}", self.region, self.account)
    }

    /// The ARN of an alias (`alias/x`).
    pub fn alias(&self, alias: &str) -> String {
        format!("arn:aws:kms:{}:{}:{alias}", self.region, self.account)
    }

    /// A key id in any of AWS's four forms (key id, key ARN, alias name,
    /// alias ARN) as Keyward names it (key id or `alias/<name>`). An ARN
    /// of another partition, service, region or account names nothing here.
    pub fn key_ref(&self, field: &'static str, given: &str) -> Result<String, KmsError> {
        let Some(rest) = given.strip_prefix("arn:") else { return Ok(given.to_string()) };
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [partition, service, region, account, resource] = parts[..] else {
            return Err(KmsError::invalid(field, "is not a KMS key or alias ARN"));
        };
        if partition != "aws" || service != "kms" {
            return Err(KmsError::invalid(field, "is not a KMS key or alias ARN"));
        }
        if region != self.region || account != self.account {
            return Err(KmsError::NotFound(format!(
                "{given:?} (this endpoint serves region {} account {})",
                self.region, self.account
            )));
        }
        if let Some(id) = resource.strip_prefix("key/") {
            return Ok(id.to_string());
        }
        if resource.starts_with("alias/") {
            return Ok(resource.to_string());
        }
        Err(KmsError::invalid(field, "an ARN must name key/<id> or alias/<name>"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arns() -> Arns {
        Arns { region: "keyward-1".into(), account: "000000000000".into() }
    }

    #[test]
    fn every_key_id_form_resolves() {
        let a = arns();
        let id = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
        assert_eq!(a.key_ref("KeyId", id).unwrap(), id);
        assert_eq!(a.key_ref("KeyId", &a.key(id)).unwrap(), id);
        assert_eq!(a.key_ref("KeyId", "alias/app").unwrap(), "alias/app");
        assert_eq!(a.key_ref("KeyId", &a.alias("alias/app")).unwrap(), "alias/app");
        assert_eq!(a.key_ref("KeyId", &a.alias("alias/a/b:c")).unwrap(), "alias/a/b:c");
        let other_region = format!("arn:aws:kms:us-east-1:000000000000:key/{id}");
        assert!(matches!(a.key_ref("KeyId", &other_region), Err(KmsError::NotFound(_))));
        for bad in [
            "arn:aws:s3:keyward-1:000000000000:key/x",
            "arn:aws:kms",
            "arn:aws:kms:keyward-1:000000000000:grant/x",
        ] {
            assert!(
                matches!(a.key_ref("KeyId", bad), Err(KmsError::InvalidArgument { field: "KeyId", .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn fields_are_typed_and_bounded_and_errors_name_them() {
        let b = Body::parse(
            br#"{"KeyId":"","Plaintext":"AAAA","N":2000,"Ctx":{"a":1},"T":[{"TagKey":"k"}],"Null":null}"#,
        )
        .unwrap();
        let field = |e: KmsError| match e {
            KmsError::InvalidArgument { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(b.str("KeyId", 1, 2048).unwrap_err()), "KeyId");
        assert_eq!(b.blob("Plaintext", 1, 4096).unwrap(), vec![0, 0, 0]);
        assert_eq!(field(b.blob("Plaintext", 4, 4096).unwrap_err()), "Plaintext");
        assert_eq!(field(b.opt_int("N", 1, 1024).unwrap_err()), "N");
        assert_eq!(field(b.context("Ctx").unwrap_err()), "Ctx");
        assert_eq!(field(b.tags("T").unwrap_err()), "TagValue");
        assert_eq!(b.opt_str("Null", 1, 2).unwrap(), None, "null is not given");
        assert_eq!(field(b.str("Missing", 1, 2).unwrap_err()), "Missing");
        assert!(Body::parse(b"[1]").is_err());
        assert!(Body::parse(b"{").is_err());
        assert!(Body::parse(b"").unwrap().0.is_empty());
        // Garbage never panics.
        for raw in [&b"\xff\xfe"[..], b"null", b"\"x\"", b"{\"Plaintext\": 5}", b"{\"Plaintext\": \"!!!\"}"] {
            if let Ok(b) = Body::parse(raw) {
                let _ = b.blob("Plaintext", 1, 10);
            }
        }
    }
}
