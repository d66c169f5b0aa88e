//! Audit records: what is recorded for every request that touches a key or
//! the audit log, and how records chain.
//!
//! A record never holds plaintext, data keys, ciphertext bodies or key
//! material: the fields below are all there is, and none can carry them.

use std::collections::BTreeMap;

use ring::digest::{digest, SHA256};

use crate::{KeyId, KmsError};

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Every operation that is audited: the RPCs, and the system's own
/// scheduled work. Each is recorded under its RPC name ([`Operation::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// The `CreateKey` RPC.
    CreateKey,
    /// The `DescribeKey` RPC.
    DescribeKey,
    /// The `ListKeys` RPC.
    ListKeys,
    /// The `RotateKey` RPC.
    RotateKey,
    /// The `EnableKey` RPC.
    EnableKey,
    /// The `DisableKey` RPC.
    DisableKey,
    /// The `CreateAlias` RPC.
    CreateAlias,
    /// The `DeleteAlias` RPC.
    DeleteAlias,
    /// The `Encrypt` RPC.
    Encrypt,
    /// The `Decrypt` RPC.
    Decrypt,
    /// The `GenerateDataKey` RPC.
    GenerateDataKey,
    /// The `GenerateDataKeyWithoutPlaintext` RPC.
    GenerateDataKeyWithoutPlaintext,
    /// The `ReEncrypt` RPC.
    ReEncrypt,
    /// The `QueryAuditLog` RPC.
    QueryAuditLog,
    /// The `VerifyAuditLog` RPC.
    VerifyAuditLog,
    /// The `DisableKeyVersion` RPC.
    DisableKeyVersion,
    /// The `EnableKeyVersion` RPC.
    EnableKeyVersion,
    /// The `ScheduleKeyVersionDestruction` RPC.
    ScheduleKeyVersionDestruction,
    /// The `RestoreKeyVersion` RPC.
    RestoreKeyVersion,
    /// The `ScheduleKeyDeletion` RPC.
    ScheduleKeyDeletion,
    /// The `CancelKeyDeletion` RPC.
    CancelKeyDeletion,
    /// The system erased a key's material at the end of its deletion window.
    DestroyKey,
    /// The system erased a version's material at the end of its window.
    DestroyKeyVersion,
    /// The `GenerateRandom` RPC.
    GenerateRandom,
    /// The `UpdateRotationPolicy` RPC.
    UpdateRotationPolicy,
    /// The `ListKeyVersions` RPC.
    ListKeyVersions,
    /// The `MarkKeyVersionCompromised` RPC.
    MarkKeyVersionCompromised,
    /// The `GetAuditPublicKey` RPC.
    GetAuditPublicKey,
    /// The `ExportAuditLog` RPC.
    ExportAuditLog,
    /// The `CreatePrincipal` RPC (AccessService).
    CreatePrincipal,
    /// The `DeletePrincipal` RPC (AccessService).
    DeletePrincipal,
    /// The `ListPrincipals` RPC (AccessService).
    ListPrincipals,
    /// The `CreateToken` RPC (AccessService).
    CreateToken,
    /// The `RevokeToken` RPC (AccessService).
    RevokeToken,
    /// The `RevokeAllTokens` RPC (AccessService).
    RevokeAllTokens,
    /// The `ListTokens` RPC (AccessService).
    ListTokens,
    /// The `CreateGrant` RPC (AccessService).
    CreateGrant,
    /// The `RevokeGrant` RPC (AccessService).
    RevokeGrant,
    /// The `ListGrants` RPC (AccessService).
    ListGrants,
    /// The `CreateAccessKey` RPC (AccessService).
    CreateAccessKey,
    /// The `ListAccessKeys` RPC (AccessService).
    ListAccessKeys,
    /// The `RevokeAccessKey` RPC (AccessService).
    RevokeAccessKey,
    /// `UpdateAlias` (AWS KMS edge): an alias pointed at another key.
    UpdateAlias,
    /// `UpdateKeyLabels` (AWS KMS edge's TagResource and UntagResource).
    UpdateKeyLabels,
    /// `ListAliases` (AWS KMS edge).
    ListAliases,
    /// `auth/token/lookup-self` (Vault edge): a caller checking its token.
    LookupToken,
    /// An unseal attempt (`OperatorService.Unseal`): each share offered,
    /// recorded once the log is writable (never the share).
    Unseal,
    /// `OperatorService.Seal`: every key dropped from memory.
    Seal,
    /// `OperatorService.RotateRootKey` or `keyward root-key rotate`.
    RotateRootKey,
    /// `OperatorService.CreateBackup`.
    CreateBackup,
    /// `OperatorService.ClusterStatus` (`keyward cluster status`).
    ClusterStatus,
    /// A web console sign-in (a credential exchanged for a session).
    SignIn,
    /// A web console sign-out (the session ended on the server).
    SignOut,
    /// A key's uses per hour or day (the console's usage plot).
    GetKeyUsage,
    /// Audit records counted by outcome (the console's breakdown plot).
    SummarizeAuditLog,
}

impl Operation {
    /// Every operation, for [`Operation::from_rpc`].
    const ALL: [Operation; 55] = [
        Self::CreateKey,
        Self::DescribeKey,
        Self::ListKeys,
        Self::RotateKey,
        Self::EnableKey,
        Self::DisableKey,
        Self::CreateAlias,
        Self::DeleteAlias,
        Self::Encrypt,
        Self::Decrypt,
        Self::GenerateDataKey,
        Self::GenerateDataKeyWithoutPlaintext,
        Self::ReEncrypt,
        Self::QueryAuditLog,
        Self::VerifyAuditLog,
        Self::DisableKeyVersion,
        Self::EnableKeyVersion,
        Self::ScheduleKeyVersionDestruction,
        Self::RestoreKeyVersion,
        Self::ScheduleKeyDeletion,
        Self::CancelKeyDeletion,
        Self::DestroyKey,
        Self::DestroyKeyVersion,
        Self::GenerateRandom,
        Self::UpdateRotationPolicy,
        Self::ListKeyVersions,
        Self::MarkKeyVersionCompromised,
        Self::GetAuditPublicKey,
        Self::ExportAuditLog,
        Self::CreatePrincipal,
        Self::DeletePrincipal,
        Self::ListPrincipals,
        Self::CreateToken,
        Self::RevokeToken,
        Self::RevokeAllTokens,
        Self::ListTokens,
        Self::CreateGrant,
        Self::RevokeGrant,
        Self::ListGrants,
        Self::CreateAccessKey,
        Self::ListAccessKeys,
        Self::RevokeAccessKey,
        Self::UpdateAlias,
        Self::UpdateKeyLabels,
        Self::ListAliases,
        Self::LookupToken,
        Self::Unseal,
        Self::Seal,
        Self::RotateRootKey,
        Self::CreateBackup,
        Self::ClusterStatus,
        Self::SignIn,
        Self::SignOut,
        Self::GetKeyUsage,
        Self::SummarizeAuditLog,
    ];

    /// The operation an RPC method name records (batch and stream RPCs
    /// record their items as the single operation, e.g. ReEncrypt).
    pub fn from_rpc(method: &str) -> Option<Self> {
        let single = match method {
            "GenerateDataKeyBatch" => "GenerateDataKey",
            "BatchReEncrypt" | "ReEncryptStream" => "ReEncrypt",
            // Node to node (cluster mode): one node's part of the merged read.
            "PeerQueryAuditLog" => "QueryAuditLog",
            "PeerVerifyAuditLog" => "VerifyAuditLog",
            m => m,
        };
        Self::ALL.into_iter().find(|o| o.as_str() == single)
    }

    /// The RPC name, as recorded.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::CreateKey => "CreateKey",
            Self::DescribeKey => "DescribeKey",
            Self::ListKeys => "ListKeys",
            Self::RotateKey => "RotateKey",
            Self::EnableKey => "EnableKey",
            Self::DisableKey => "DisableKey",
            Self::CreateAlias => "CreateAlias",
            Self::DeleteAlias => "DeleteAlias",
            Self::Encrypt => "Encrypt",
            Self::Decrypt => "Decrypt",
            Self::GenerateDataKey => "GenerateDataKey",
            Self::GenerateDataKeyWithoutPlaintext => "GenerateDataKeyWithoutPlaintext",
            Self::ReEncrypt => "ReEncrypt",
            Self::QueryAuditLog => "QueryAuditLog",
            Self::VerifyAuditLog => "VerifyAuditLog",
            Self::DisableKeyVersion => "DisableKeyVersion",
            Self::EnableKeyVersion => "EnableKeyVersion",
            Self::ScheduleKeyVersionDestruction => "ScheduleKeyVersionDestruction",
            Self::RestoreKeyVersion => "RestoreKeyVersion",
            Self::ScheduleKeyDeletion => "ScheduleKeyDeletion",
            Self::CancelKeyDeletion => "CancelKeyDeletion",
            Self::DestroyKey => "DestroyKey",
            Self::DestroyKeyVersion => "DestroyKeyVersion",
            Self::GenerateRandom => "GenerateRandom",
            Self::UpdateRotationPolicy => "UpdateRotationPolicy",
            Self::ListKeyVersions => "ListKeyVersions",
            Self::MarkKeyVersionCompromised => "MarkKeyVersionCompromised",
            Self::GetAuditPublicKey => "GetAuditPublicKey",
            Self::ExportAuditLog => "ExportAuditLog",
            Self::CreatePrincipal => "CreatePrincipal",
            Self::DeletePrincipal => "DeletePrincipal",
            Self::ListPrincipals => "ListPrincipals",
            Self::CreateToken => "CreateToken",
            Self::RevokeToken => "RevokeToken",
            Self::RevokeAllTokens => "RevokeAllTokens",
            Self::ListTokens => "ListTokens",
            Self::CreateGrant => "CreateGrant",
            Self::RevokeGrant => "RevokeGrant",
            Self::ListGrants => "ListGrants",
            Self::CreateAccessKey => "CreateAccessKey",
            Self::ListAccessKeys => "ListAccessKeys",
            Self::RevokeAccessKey => "RevokeAccessKey",
            Self::UpdateAlias => "UpdateAlias",
            Self::UpdateKeyLabels => "UpdateKeyLabels",
            Self::ListAliases => "ListAliases",
            Self::LookupToken => "LookupToken",
            Self::Unseal => "Unseal",
            Self::Seal => "Seal",
            Self::RotateRootKey => "RotateRootKey",
            Self::CreateBackup => "CreateBackup",
            Self::ClusterStatus => "ClusterStatus",
            Self::SignIn => "SignIn",
            Self::SignOut => "SignOut",
            Self::GetKeyUsage => "GetKeyUsage",
            Self::SummarizeAuditLog => "SummarizeAuditLog",
        }
    }
}

/// Where a request came in: recorded in every new audit record's `edge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Edge {
    /// The gRPC services.
    Grpc,
    /// The Kubernetes KMS v2 plugin socket.
    KmsV2,
    /// The AWS KMS JSON API.
    AwsKms,
    /// The Vault Transit HTTP API.
    VaultTransit,
    /// The server's own scheduled and automatic work (no edge).
    System,
    /// The web console (`--console-listen`).
    Console,
}

impl Edge {
    /// Every edge.
    pub const ALL: [Edge; 6] =
        [Self::Grpc, Self::KmsV2, Self::AwsKms, Self::VaultTransit, Self::System, Self::Console];

    /// The recorded name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::KmsV2 => "kms-v2",
            Self::AwsKms => "aws-kms",
            Self::VaultTransit => "vault-transit",
            Self::System => "system",
            Self::Console => "console",
        }
    }
}

impl std::str::FromStr for Edge {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|e| e.as_str() == s).ok_or_else(|| {
            format!(
                "unknown edge {s:?} (one of {})",
                Self::ALL.iter().map(Edge::as_str).collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// The result of a request, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `OK` or a gRPC code name.
    pub code: &'static str,
    /// A short reason (empty on success).
    pub reason: String,
}

impl Outcome {
    /// Success.
    pub fn ok() -> Self {
        Self { code: "OK", reason: String::new() }
    }

    /// The outcome of a failed request.
    pub fn of_error(e: &KmsError) -> Self {
        Self { code: e.kind().code_name(), reason: e.public_message() }
    }
}

/// A record being assembled while a request runs (no sequence yet).
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// Request time, Unix ms.
    pub time_ms: i64,
    /// The request id echoed to the caller.
    pub request_id: String,
    /// Who asked.
    pub principal: String,
    /// From where.
    pub peer: String,
    /// Through which edge.
    pub edge: Edge,
    /// What.
    pub operation: Operation,
    /// The key used (the destination key for ReEncrypt).
    pub key_id: Option<KeyId>,
    /// Its version.
    pub key_version: Option<u32>,
    /// The alias the request named, if any.
    pub alias: Option<String>,
    /// ReEncrypt's source key.
    pub source_key_id: Option<KeyId>,
    /// ReEncrypt's source version.
    pub source_key_version: Option<u32>,
    /// What an access change concerned (`principal:<name>`, `token:<id>`,
    /// `grant:<id>`), or the token a refused caller presented.
    pub target: Option<String>,
    /// The encryption context (not secret by contract).
    pub context: BTreeMap<String, String>,
    /// Result.
    pub outcome: Outcome,
}

/// A durable record. Its stored bytes (what the chain hashes) are the
/// store's format: see [`Store::encode_audit`](crate::Store::encode_audit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Sequence number, from 1, without gaps.
    pub seq: u64,
    /// Request time, Unix ms.
    pub time_ms: i64,
    /// Request id.
    pub request_id: String,
    /// Principal.
    pub principal: String,
    /// Peer address.
    pub peer: String,
    /// The edge the request came through (`None` in records written
    /// before edges were recorded).
    pub edge: Option<String>,
    /// The cluster node that wrote the record (`None` in single-node mode).
    pub node_id: Option<String>,
    /// Operation name.
    pub operation: String,
    /// Key id (destination key for ReEncrypt).
    pub key_id: Option<String>,
    /// Key version.
    pub key_version: Option<u32>,
    /// Alias named by the request.
    pub alias: Option<String>,
    /// ReEncrypt source key.
    pub source_key_id: Option<String>,
    /// ReEncrypt source version.
    pub source_key_version: Option<u32>,
    /// What an access change concerned (see [`AuditEntry::target`]).
    pub target: Option<String>,
    /// Encryption context.
    pub context: BTreeMap<String, String>,
    /// `OK` or a gRPC code name.
    pub outcome: String,
    /// Short reason for a failure.
    pub reason: String,
    /// Hex SHA-256 of the previous record's stored bytes.
    pub prev_hash: String,
}

impl AuditRecord {
    /// Builds the record for `entry` at `seq`, chained to `prev_hash`.
    pub fn from_entry(entry: AuditEntry, seq: u64, prev_hash: String) -> Self {
        Self {
            seq,
            time_ms: entry.time_ms,
            request_id: entry.request_id,
            principal: entry.principal,
            peer: entry.peer,
            edge: Some(entry.edge.as_str().to_string()),
            node_id: None,
            operation: entry.operation.as_str().to_string(),
            key_id: entry.key_id.map(|k| k.to_string()),
            key_version: entry.key_version,
            alias: entry.alias,
            source_key_id: entry.source_key_id.map(|k| k.to_string()),
            source_key_version: entry.source_key_version,
            target: entry.target,
            context: entry.context,
            outcome: entry.outcome.code.to_string(),
            reason: entry.outcome.reason,
            prev_hash,
        }
    }
}

impl AuditEntry {
    /// The entry a successful request's record was built from (a cluster
    /// node's pending lifecycle record, read back): `None` if a field does
    /// not parse.
    pub(crate) fn from_record(r: AuditRecord) -> Option<Self> {
        let key = |k: Option<String>| k.map(|k| k.parse::<KeyId>().map_err(drop)).transpose().ok();
        Some(Self {
            time_ms: r.time_ms,
            request_id: r.request_id,
            principal: r.principal,
            peer: r.peer,
            edge: r.edge?.parse().ok()?,
            operation: Operation::ALL.into_iter().find(|o| o.as_str() == r.operation)?,
            key_id: key(r.key_id)?,
            key_version: r.key_version,
            alias: r.alias,
            source_key_id: key(r.source_key_id)?,
            source_key_version: r.source_key_version,
            target: r.target,
            context: r.context,
            outcome: (r.outcome == "OK").then(Outcome::ok)?,
        })
    }
}

/// Hex SHA-256 of stored record bytes: the next record's `prev_hash`.
pub fn hash_bytes(bytes: &[u8]) -> String {
    hex::encode(digest(&SHA256, bytes))
}

/// The newest record's sequence number and hash, stored with every batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    /// Sequence number of the newest record.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
}

/// Filters for reading the log. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Records naming this key (as key or source key).
    pub key_id: Option<KeyId>,
    /// Records of this principal.
    pub principal: Option<String>,
    /// Records of this operation.
    pub operation: Option<String>,
    /// Records with this outcome code.
    pub outcome: Option<String>,
    /// Records that came through this edge.
    pub edge: Option<String>,
    /// Records written by this cluster node.
    pub node_id: Option<String>,
    /// Records at or after this time, Unix ms.
    pub start_ms: Option<i64>,
    /// Records before this time, Unix ms.
    pub end_ms: Option<i64>,
    /// Page size (1..=1000).
    pub limit: usize,
    /// Paging cursor: continue past this sequence number (exclusive, in the
    /// direction of travel).
    pub cursor: Option<u64>,
    /// Oldest first instead of newest first.
    pub oldest_first: bool,
}

impl AuditQuery {
    /// Whether a record passes every filter except the paging cursor.
    pub fn matches(&self, r: &AuditRecord) -> bool {
        let key_ok = self.key_id.is_none_or(|k| {
            let k = k.to_string();
            r.key_id.as_deref() == Some(&k) || r.source_key_id.as_deref() == Some(&k)
        });
        key_ok
            && self.principal.as_ref().is_none_or(|p| &r.principal == p)
            && self.operation.as_ref().is_none_or(|o| &r.operation == o)
            && self.outcome.as_ref().is_none_or(|o| &r.outcome == o)
            && self.edge.as_ref().is_none_or(|e| r.edge.as_ref() == Some(e))
            && self.node_id.as_ref().is_none_or(|n| r.node_id.as_ref() == Some(n))
            && self.start_ms.is_none_or(|s| r.time_ms >= s)
            && self.end_ms.is_none_or(|e| r.time_ms < e)
    }
}

/// One page of query results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditPage {
    /// The records with their stored bytes, in the order asked for.
    pub records: Vec<crate::SealedRecord>,
    /// The cursor for the next page, if there may be more.
    pub next_cursor: Option<u64>,
}
