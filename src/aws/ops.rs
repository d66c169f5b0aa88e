//! Each AWS KMS operation as a call of the `Kms` use case that does it:
//! read the fields (AWS's names, lengths and ranges), call, and shape the
//! answer as AWS does (the key ARN in every `KeyId`, timestamps as epoch
//! seconds, blobs as base64). Errors found here, before the use case runs,
//! are audited through `Kms::refuse`, like the use case's own.

use std::collections::BTreeMap;

use base64::Engine as _;
use keyward_core::{
    Caller, CreateKeyInput, DataKeyInput, KeyState, KeyView, Kms, KmsError, Operation, ReEncryptInput,
};
use keyward_crypto::Plaintext;
use serde_json::{json, Map, Value};

use super::input::{Arns, Body};
use super::AwsError;

const DAY_MS: i64 = 24 * 3_600_000;
const KEY_ID: (usize, usize) = (1, 2048);
const MAX_PLAINTEXT: usize = 4096;
const MAX_CIPHERTEXT: usize = 6144;
const SYMMETRIC: &str = "SYMMETRIC_DEFAULT";

/// Why an operation failed: already audited by the use case, or found here
/// (and still to be audited).
enum Failure {
    Audited(KmsError),
    Edge(KmsError),
}

impl From<KmsError> for Failure {
    fn from(e: KmsError) -> Self {
        Self::Edge(e)
    }
}

/// Marks a use case's error as already audited.
fn audited<T>(r: Result<T, KmsError>) -> Result<T, Failure> {
    r.map_err(Failure::Audited)
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn secs(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

/// Runs operation `name` for `caller`.
pub(super) async fn run(
    kms: &Kms,
    arns: &Arns,
    caller: &Caller,
    name: &str,
    op: Operation,
    body: Body,
) -> Result<Value, AwsError> {
    let o = Ops { kms, arns, caller };
    let result = match name {
        "Encrypt" => o.encrypt(body).await,
        "Decrypt" => o.decrypt(body).await,
        "ReEncrypt" => o.re_encrypt(body).await,
        "GenerateDataKey" => o.data_key(body, true).await,
        "GenerateDataKeyWithoutPlaintext" => o.data_key(body, false).await,
        "GenerateRandom" => o.random(body).await,
        "CreateKey" => o.create_key(body).await,
        "DescribeKey" => o.describe_key(body).await,
        "ListKeys" => o.list_keys(body).await,
        "CreateAlias" => o.create_alias(body, false).await,
        "UpdateAlias" => o.create_alias(body, true).await,
        "DeleteAlias" => o.delete_alias(body).await,
        "ListAliases" => o.list_aliases(body).await,
        "EnableKey" => o.set_enabled(body, true).await,
        "DisableKey" => o.set_enabled(body, false).await,
        "EnableKeyRotation" => o.rotation(body, true).await,
        "DisableKeyRotation" => o.rotation(body, false).await,
        "GetKeyRotationStatus" => o.rotation_status(body).await,
        "RotateKeyOnDemand" => o.rotate(body).await,
        "ListKeyRotations" => o.list_rotations(body).await,
        "ScheduleKeyDeletion" => o.schedule_deletion(body).await,
        "CancelKeyDeletion" => o.cancel_deletion(body).await,
        "TagResource" => o.tag(body).await,
        "UntagResource" => o.untag(body).await,
        "ListResourceTags" => o.list_tags(body).await,
        _ => Err(Failure::Edge(KmsError::Internal(format!("no translation for {name}")))),
    };
    match result {
        Ok(v) => Ok(v),
        Err(Failure::Audited(e)) => Err(AwsError::of(&e)),
        Err(Failure::Edge(e)) => Err(AwsError::of(&kms.refuse(caller, op, e).await)),
    }
}

struct Ops<'a> {
    kms: &'a Kms,
    arns: &'a Arns,
    caller: &'a Caller,
}

impl Ops<'_> {
    fn key(&self, body: &Body, field: &'static str) -> Result<String, KmsError> {
        self.arns.key_ref(field, &body.str(field, KEY_ID.0, KEY_ID.1)?)
    }

    fn opt_key(&self, body: &Body, field: &'static str) -> Result<Option<String>, KmsError> {
        body.opt_str(field, KEY_ID.0, KEY_ID.1)?.map(|k| self.arns.key_ref(field, &k)).transpose()
    }

    /// The fields every crypto operation accepts and ignores or refuses.
    fn crypto_common(body: &Body, algorithm_fields: &[&'static str]) -> Result<(), KmsError> {
        body.str_list("GrantTokens", 10, 1, 8192)?;
        body.no_dry_run()?;
        for f in algorithm_fields {
            body.only(f, &[SYMMETRIC])?;
        }
        Ok(())
    }

    async fn encrypt(&self, body: Body) -> Result<Value, Failure> {
        let key = self.key(&body, "KeyId")?;
        let plaintext = body.blob("Plaintext", 1, MAX_PLAINTEXT)?;
        let context = body.context("EncryptionContext")?;
        Self::crypto_common(&body, &["EncryptionAlgorithm"])?;
        let out = audited(self.kms.encrypt(self.caller, &key, Plaintext::new(plaintext), context).await)?;
        Ok(json!({
            "CiphertextBlob": b64(&out.ciphertext),
            "KeyId": self.arns.key(out.key_id),
            "EncryptionAlgorithm": SYMMETRIC,
        }))
    }

    async fn decrypt(&self, body: Body) -> Result<Value, Failure> {
        let ciphertext = body.blob("CiphertextBlob", 1, MAX_CIPHERTEXT)?;
        let pinned = self.opt_key(&body, "KeyId")?;
        let context = body.context("EncryptionContext")?;
        Self::crypto_common(&body, &["EncryptionAlgorithm"])?;
        body.refuse_given(&[("Recipient", "attested (Nitro Enclaves) decryption is not supported")])?;
        let out = audited(self.kms.decrypt(self.caller, &ciphertext, context, pinned.as_deref()).await)?;
        Ok(json!({
            "Plaintext": b64(out.plaintext.expose_secret()),
            "KeyId": self.arns.key(out.key_id),
            "EncryptionAlgorithm": SYMMETRIC,
        }))
    }

    async fn re_encrypt(&self, body: Body) -> Result<Value, Failure> {
        let input = ReEncryptInput {
            ciphertext: body.blob("CiphertextBlob", 1, MAX_CIPHERTEXT)?,
            source_context: body.context("SourceEncryptionContext")?,
            source_key: self.opt_key(&body, "SourceKeyId")?,
            destination_key: self.key(&body, "DestinationKeyId")?,
            destination_context: body.context("DestinationEncryptionContext")?,
        };
        Self::crypto_common(&body, &["SourceEncryptionAlgorithm", "DestinationEncryptionAlgorithm"])?;
        let out = audited(self.kms.re_encrypt(self.caller, input).await)?;
        Ok(json!({
            "CiphertextBlob": b64(&out.ciphertext),
            "SourceKeyId": self.arns.key(out.source_key_id),
            "KeyId": self.arns.key(out.key_id),
            "SourceEncryptionAlgorithm": SYMMETRIC,
            "DestinationEncryptionAlgorithm": SYMMETRIC,
        }))
    }

    async fn data_key(&self, body: Body, with_plaintext: bool) -> Result<Value, Failure> {
        let key = self.key(&body, "KeyId")?;
        let bytes = body.opt_int("NumberOfBytes", 1, 1024)?;
        let spec = body.only("KeySpec", &["AES_256", "AES_128"])?;
        let n = match (bytes, spec.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(
                    KmsError::invalid("KeySpec", "give either KeySpec or NumberOfBytes, not both").into()
                )
            }
            (None, None) => {
                return Err(
                    KmsError::invalid("KeySpec", "give KeySpec (AES_256, AES_128) or NumberOfBytes").into()
                )
            }
            (Some(n), None) => n as u32,
            (None, Some("AES_128")) => 16,
            (None, _) => 32,
        };
        let context = body.context("EncryptionContext")?;
        Self::crypto_common(&body, &[])?;
        if with_plaintext {
            body.refuse_given(&[("Recipient", "attested (Nitro Enclaves) data keys are not supported")])?;
        }
        let input = DataKeyInput { key, number_of_bytes: Some(n), context, with_plaintext };
        let out = audited(self.kms.generate_data_key(self.caller, input).await)?;
        let mut v = json!({ "CiphertextBlob": b64(&out.ciphertext), "KeyId": self.arns.key(out.key_id) });
        if let Some(p) = &out.plaintext {
            v["Plaintext"] = json!(b64(p.expose_secret()));
        }
        Ok(v)
    }

    async fn random(&self, body: Body) -> Result<Value, Failure> {
        let n = body.opt_int("NumberOfBytes", 1, 1024)?.unwrap_or(32) as u32;
        body.refuse_given(&[
            ("CustomKeyStoreId", "custom key stores are not supported"),
            ("Recipient", "attested (Nitro Enclaves) random bytes are not supported"),
        ])?;
        let out = audited(self.kms.generate_random(self.caller, n).await)?;
        Ok(json!({ "Plaintext": b64(out.expose_secret()) }))
    }

    /// `KeyMetadata` of a key.
    fn metadata(&self, v: &KeyView) -> Value {
        let m = &v.meta;
        let arn = self.arns.key(m.id);
        let state = match m.state {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
            KeyState::Destroyed => "Unavailable",
        };
        let mut md = json!({
            "AWSAccountId": self.arns.account,
            "KeyId": arn,
            "Arn": arn,
            "CreationDate": secs(m.created_ms),
            "Enabled": m.state == KeyState::Enabled,
            "Description": m.description,
            "KeyUsage": "ENCRYPT_DECRYPT",
            "KeyState": state,
            "Origin": "AWS_KMS",
            "KeyManager": "CUSTOMER",
            "CustomerMasterKeySpec": SYMMETRIC,
            "KeySpec": SYMMETRIC,
            "EncryptionAlgorithms": [SYMMETRIC],
            "MultiRegion": false,
        });
        if let Some(d) = m.deletion_ms {
            md["DeletionDate"] = secs(d);
        }
        md
    }

    async fn create_key(&self, body: Body) -> Result<Value, Failure> {
        let description = body.opt_str("Description", 0, 8192)?.unwrap_or_default();
        body.only("KeyUsage", &["ENCRYPT_DECRYPT"])?;
        body.only("KeySpec", &[SYMMETRIC])?;
        body.only("CustomerMasterKeySpec", &[SYMMETRIC])?;
        body.only("Origin", &["AWS_KMS"])?;
        if body.opt_bool("MultiRegion")? == Some(true) {
            return Err(KmsError::invalid("MultiRegion", "multi-Region keys are not supported").into());
        }
        body.opt_bool("BypassPolicyLockoutSafetyCheck")?;
        body.refuse_given(&[
            (
                "Policy",
                "key policies are not supported: access is Keyward's roles and grants (keyward grant create)",
            ),
            ("CustomKeyStoreId", "custom key stores are not supported"),
            ("XksKeyId", "external key stores are not supported"),
        ])?;
        let labels = body.tags("Tags")?;
        let input = CreateKeyInput { description, labels, ..Default::default() };
        let v = audited(self.kms.create_key(self.caller, input).await)?;
        Ok(json!({ "KeyMetadata": self.metadata(&v) }))
    }

    async fn describe_key(&self, body: Body) -> Result<Value, Failure> {
        let key = self.key(&body, "KeyId")?;
        body.str_list("GrantTokens", 10, 1, 8192)?;
        let v = audited(self.kms.describe_key(self.caller, &key).await)?;
        Ok(json!({ "KeyMetadata": self.metadata(&v) }))
    }

    async fn list_keys(&self, body: Body) -> Result<Value, Failure> {
        let limit = body.opt_int("Limit", 1, 1000)?.unwrap_or(100) as u32;
        let marker = body.opt_str("Marker", 1, 1024)?;
        let page = audited(self.kms.list_keys(self.caller, Some(limit), marker.as_deref()).await)?;
        let keys: Vec<Value> = page
            .keys
            .iter()
            .map(|k| json!({ "KeyId": self.arns.key(k.meta.id), "KeyArn": self.arns.key(k.meta.id) }))
            .collect();
        let mut v = json!({ "Keys": keys, "Truncated": page.next_page_token.is_some() });
        if let Some(t) = page.next_page_token {
            v["NextMarker"] = json!(t);
        }
        Ok(v)
    }

    fn alias_name(body: &Body) -> Result<String, KmsError> {
        let a = body.str("AliasName", 1, 256)?;
        if a.starts_with("alias/aws/") {
            return Err(KmsError::invalid("AliasName", "alias/aws/ is reserved for AWS managed keys"));
        }
        keyward_core::validate_alias("AliasName", &a)?;
        Ok(a)
    }

    async fn create_alias(&self, body: Body, update: bool) -> Result<Value, Failure> {
        let alias = Self::alias_name(&body)?;
        let key = self.key(&body, "TargetKeyId")?;
        if key.starts_with("alias/") {
            return Err(KmsError::invalid("TargetKeyId", "must name a key, not an alias").into());
        }
        if update {
            audited(self.kms.update_alias(self.caller, &alias, &key).await)?;
        } else {
            audited(self.kms.create_alias(self.caller, &alias, &key).await)?;
        }
        Ok(json!({}))
    }

    async fn delete_alias(&self, body: Body) -> Result<Value, Failure> {
        let alias = Self::alias_name(&body)?;
        audited(self.kms.delete_alias(self.caller, &alias).await)?;
        Ok(json!({}))
    }

    async fn list_aliases(&self, body: Body) -> Result<Value, Failure> {
        let only = self.opt_key(&body, "KeyId")?;
        let limit = body.opt_int("Limit", 1, 100)?.unwrap_or(50) as usize;
        let marker = body.opt_str("Marker", 1, 320)?;
        let (aliases, truncated) =
            audited(self.kms.list_aliases(self.caller, only.as_deref(), marker.as_deref(), limit).await)?;
        let listed: Vec<Value> = aliases
            .iter()
            .map(|(a, id)| json!({ "AliasName": a, "AliasArn": self.arns.alias(a), "TargetKeyId": id.to_string() }))
            .collect();
        let mut v = json!({ "Aliases": listed, "Truncated": truncated });
        if truncated {
            v["NextMarker"] = json!(aliases.last().map(|(a, _)| a.clone()));
        }
        Ok(v)
    }

    async fn set_enabled(&self, body: Body, enabled: bool) -> Result<Value, Failure> {
        let key = self.key(&body, "KeyId")?;
        if enabled {
            audited(self.kms.enable_key(self.caller, &key).await)?;
        } else {
            audited(self.kms.disable_key(self.caller, &key).await)?;
        }
        Ok(json!({}))
    }

    async fn rotation(&self, body: Body, enable: bool) -> Result<Value, Failure> {
        let key = self.key(&body, "KeyId")?;
        let period = if enable {
            let days = body.opt_int("RotationPeriodInDays", 90, 2560)?.unwrap_or(365);
            Some(days * DAY_MS)
        } else {
            None
        };
        audited(self.kms.update_rotation_period(self.caller, &key, period).await)?;
        Ok(json!({}))
    }

    async fn rotation_status(&self, body: Body) -> Result<Value, Failure> {
        let key = self.key(&body, "KeyId")?;
        let v = audited(self.kms.describe_key(self.caller, &key).await)?;
        let r = &v.meta.rotation;
        let mut out =
            json!({ "KeyId": self.arns.key(v.meta.id), "KeyRotationEnabled": r.period_ms.is_some() });
        if let Some(p) = r.period_ms {
            // Whole days, at least one (a Keyward period may be shorter).
            out["RotationPeriodInDays"] = json!(((p + DAY_MS - 1) / DAY_MS).max(1));
        }
        if let Some(n) = r.next_rotation_ms {
            out["NextRotationDate"] = secs(n);
        }
        Ok(out)
    }

    async fn rotate(&self, body: Body) -> Result<Value, Failure> {
        let key = self.key(&body, "KeyId")?;
        let v = audited(self.kms.rotate_key(self.caller, &key).await)?;
        Ok(json!({ "KeyId": self.arns.key(v.meta.id) }))
    }

    async fn list_rotations(&self, body: Body) -> Result<Value, Failure> {
        let key = self.key(&body, "KeyId")?;
        let limit = body.opt_int("Limit", 1, 1000)?.unwrap_or(100) as usize;
        let marker = body.opt_str("Marker", 1, 1024)?;
        let after: u32 = match &marker {
            Some(m) => {
                m.parse().map_err(|_| KmsError::invalid("Marker", "is not a marker this endpoint gave"))?
            }
            None => 1,
        };
        let versions = audited(self.kms.list_key_versions(self.caller, &key).await)?;
        let arn = self.arns.key(versions.meta.id);
        // Every version after the first is a rotation.
        let mut rotations: Vec<(u32, Value)> = versions
            .versions
            .iter()
            .filter(|v| v.meta.version > after.max(1))
            .map(|v| (v.meta.version, json!({ "KeyId": arn, "RotationDate": secs(v.meta.created_ms) })))
            .collect();
        let truncated = rotations.len() > limit;
        rotations.truncate(limit);
        let mut out = json!({ "Truncated": truncated });
        if truncated {
            out["NextMarker"] = json!(rotations.last().map(|(n, _)| n.to_string()));
        }
        out["Rotations"] = Value::Array(rotations.into_iter().map(|(_, v)| v).collect());
        Ok(out)
    }

    async fn schedule_deletion(&self, body: Body) -> Result<Value, Failure> {
        let key = self.key(&body, "KeyId")?;
        let days = body.opt_int("PendingWindowInDays", 7, 30)?.unwrap_or(30);
        let v = audited(self.kms.schedule_key_deletion(self.caller, &key, Some(days as u32)).await)?;
        let mut out = json!({
            "KeyId": self.arns.key(v.meta.id),
            "KeyState": "PendingDeletion",
            "PendingWindowInDays": days,
        });
        if let Some(d) = v.meta.deletion_ms {
            out["DeletionDate"] = secs(d);
        }
        Ok(out)
    }

    async fn cancel_deletion(&self, body: Body) -> Result<Value, Failure> {
        let key = self.key(&body, "KeyId")?;
        let v = audited(self.kms.cancel_key_deletion(self.caller, &key).await)?;
        Ok(json!({ "KeyId": self.arns.key(v.meta.id) }))
    }

    async fn tag(&self, body: Body) -> Result<Value, Failure> {
        let key = self.key(&body, "KeyId")?;
        let tags = body.tags("Tags")?;
        if tags.is_empty() {
            return Err(KmsError::invalid("Tags", "is required (at least one tag)").into());
        }
        audited(self.kms.update_key_labels(self.caller, &key, tags, Vec::new()).await)?;
        Ok(json!({}))
    }

    async fn untag(&self, body: Body) -> Result<Value, Failure> {
        let key = self.key(&body, "KeyId")?;
        let keys = body.str_list("TagKeys", 200, 1, 128)?;
        if keys.is_empty() {
            return Err(KmsError::invalid("TagKeys", "is required (at least one tag key)").into());
        }
        audited(self.kms.update_key_labels(self.caller, &key, BTreeMap::new(), keys).await)?;
        Ok(json!({}))
    }

    async fn list_tags(&self, body: Body) -> Result<Value, Failure> {
        let key = self.key(&body, "KeyId")?;
        let limit = body.opt_int("Limit", 1, 50)?.unwrap_or(50) as usize;
        let marker = body.opt_str("Marker", 1, 1024)?;
        let v = audited(self.kms.describe_key(self.caller, &key).await)?;
        let mut tags: Vec<(&String, &String)> =
            v.meta.labels.iter().filter(|(k, _)| marker.as_ref().is_none_or(|m| *k > m)).collect();
        let truncated = tags.len() > limit;
        tags.truncate(limit);
        let listed: Vec<Value> = tags.iter().map(|(k, v)| json!({ "TagKey": k, "TagValue": v })).collect();
        let mut out = Map::new();
        out.insert("Tags".into(), Value::Array(listed));
        out.insert("Truncated".into(), json!(truncated));
        if truncated {
            out.insert("NextMarker".into(), json!(tags.last().map(|(k, _)| k.to_string())));
        }
        Ok(Value::Object(out))
    }
}
