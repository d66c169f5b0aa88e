//! The Keyward domain: keys, versions and their states, audit records, the
//! use cases (`Kms`), and the ports through which they reach storage.
//!
//! This crate decides *what* happens: which key a request names, whether its
//! state allows the operation, what the audit record says, and that the record
//! is durable before an answer leaves. It must never name a protobuf, tonic or
//! RocksDB type; storage comes in through the [`Store`] trait and time through
//! [`Clock`].

// Every public item of the domain is documented (STYLE.md).
#![warn(missing_docs)]

mod access;
mod audit;
mod checkpoint;
mod clock;
mod committer;
mod crash;
mod directory;
mod error;
mod ids;
mod integrity;
mod kms;
mod limits;
mod model;
mod peers;
mod refusals;
pub mod rollup;
mod shared;
mod store;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
mod usage;
mod verify;
mod version_map;

pub use access::{ContextConstraint, Grant, KeySelector, Permission, Policy, Role};
pub use audit::{
    hash_bytes as record_hash, AuditEntry, AuditHead, AuditPage, AuditQuery, AuditRecord, Edge, Operation,
    Outcome, GENESIS_HASH,
};
pub use checkpoint::{
    checkpoint_signed_bytes, index_entries, AuditSigner, Checkpoint, IndexEntry, NodeId, CHECKPOINT_TAG,
};
pub use clock::{Clock, SystemClock};
pub use committer::{AuditError, AuditLog, AuditLogConfig, AuditObserver, DEFAULT_AUDIT_QUEUE_LIMIT};
pub use crash::{crash_point, CRASH_AT_VAR};
pub use directory::{
    access_key_from_bytes, is_access_key_id, AccessChange, AccessId, AccessKeyRecord, AccessRecord,
    AccessRecordKey, GrantRecord, PrincipalRecord, TokenRecord, TokenRefusal, ACCESS_KEY_ID_LEN,
    ACCESS_KEY_PREFIX, ACCESS_SECRET_LEN, TOKEN_PREFIX,
};
pub use error::{bounded, ErrorKind, KmsError, MAX_MESSAGE_BYTES};
pub use ids::{new_request_id, validate_alias, KeyId, KeyRef};
pub use kms::{
    export_audit_page, import_into_cluster, AccessKeyIdentity, AccessKeyRefusal, AccessKeyView,
    AuditQueryInput, AuditResults, AuditSummary, Bucket, Caller, ClusterConfig, ClusterStatus,
    CreateKeyInput, DataKeyInput, DataKeyOutput, DecryptOutput, EncryptOutput, ExportPage, GrantInput,
    GrantView, ImportReport, KeyFilter, KeyPage, KeyUsage, KeyVersions, KeyView, Kms, KmsConfig,
    NewAccessKey, NewToken, OpenError, PrincipalView, ReEncryptInput, ReEncryptOutput, RootRotation,
    RotationInput, TokenIdentity, TokenTtl, TokenView, UnsealAttempt, VersionInfo,
    EXPIRED_TOKEN_RETENTION_MS, MAX_BATCH_ITEMS, MAX_BUCKETS, MAX_PRINCIPAL_NAME, RESERVED_PRINCIPALS,
    SUMMARY_SCAN_LIMIT, WRONG_KEY,
};
pub use limits::Limits;
pub use model::{
    KeyMeta, KeyRecord, KeyState, RotationPolicy, VersionMeta, VersionState, VersionUsage,
    MIN_ROTATION_PERIOD_MS,
};
pub use peers::{
    peer_message, AuditPeers, NodeVerification, PeerCall, PeerCredential, PeerError, PeerVerifyReply,
    PEER_CREDENTIAL_WINDOW_MS, PEER_DOMAIN,
};
pub use refusals::{OTHER_PEERS, REFUSALS_AUDITED_PER_SECOND, REFUSAL_PEERS};
pub use shared::{
    Members, Membership, NodeInfo, PendingRecord, Revision, SharedAlias, SharedEvent, SharedKey, SharedKeys,
    SharedSnapshot, SharedWrite, WatchError, WriteError,
};
pub use store::{
    AliasChange, AliasEntry, AuditView, CommitBatch, EntrySink, Rekey, SealedRecord, Store, StoreError,
};
pub use verify::{verify_chain, verify_log, VerifyReport};
pub use version_map::VersionMap;
