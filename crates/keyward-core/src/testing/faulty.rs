//! A store wrapper whose writes can be made to fail or stall,
//! to show that Keyward fails closed (and recovers) when the audit log cannot
//! be written.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::{
    AuditHead, AuditPage, AuditQuery, AuditRecord, CommitBatch, KeyId, KeyRecord, Store, StoreError,
};

/// Switches shared between a test and its [`FaultyStore`].
#[derive(Debug, Default)]
pub struct Faults {
    /// When set, every `commit` fails as a full disk would.
    pub fail_writes: AtomicBool,
    /// When non-zero, every `commit` first sleeps this many milliseconds.
    pub stall_ms: AtomicU64,
}

/// Wraps a store and injects faults into its writes.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    faults: Arc<Faults>,
}

impl FaultyStore {
    /// Wraps `inner`; the returned `Faults` control it.
    pub fn new(inner: Arc<dyn Store>) -> (Self, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        (Self { inner, faults: faults.clone() }, faults)
    }
}

impl Store for FaultyStore {
    fn usage_hours(
        &self,
        key: KeyId,
        from: u32,
        to: u32,
    ) -> Result<Vec<crate::rollup::HourUsage>, StoreError> {
        self.inner.usage_hours(key, from, to)
    }
    fn outcome_hours(
        &self,
        of: &crate::rollup::OutcomesOf,
        from: u32,
        to: u32,
    ) -> Result<Vec<crate::rollup::HourOutcome>, StoreError> {
        self.inner.outcome_hours(of, from, to)
    }
    fn encode_audit(&self, record: &AuditRecord) -> Vec<u8> {
        self.inner.encode_audit(record)
    }
    fn decode_audit(&self, bytes: &[u8]) -> Result<AuditRecord, StoreError> {
        self.inner.decode_audit(bytes)
    }
    fn load_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.load_keys()
    }
    fn load_aliases(&self) -> Result<Vec<crate::AliasEntry>, StoreError> {
        self.inner.load_aliases()
    }
    fn needs_upgrade(&self) -> bool {
        self.inner.needs_upgrade()
    }
    fn upgrade(&self, keys: &[KeyRecord], aliases: &[crate::AliasEntry]) -> Result<(), StoreError> {
        self.inner.upgrade(keys, aliases)
    }
    fn load_usage(&self) -> Result<Vec<(KeyId, u32, crate::VersionUsage)>, StoreError> {
        self.inner.load_usage()
    }

    fn root_check(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.root_check()
    }
    fn set_root_check(&self, value: &[u8]) -> Result<(), StoreError> {
        self.inner.set_root_check(value)
    }
    fn settled_pending(&self) -> Result<Option<[u8; 16]>, StoreError> {
        self.inner.settled_pending()
    }
    fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        self.inner.audit_head()
    }
    fn commit(&self, batch: &CommitBatch) -> Result<(), StoreError> {
        let stall = self.faults.stall_ms.load(Ordering::SeqCst);
        if stall > 0 {
            std::thread::sleep(Duration::from_millis(stall));
        }
        if self.faults.fail_writes.load(Ordering::SeqCst) {
            return Err(StoreError("injected fault: No space left on device".into()));
        }
        self.inner.commit(batch)
    }
    fn load_access(&self) -> Result<Vec<crate::directory::AccessRecord>, StoreError> {
        self.inner.load_access()
    }
    fn load_token_uses(&self) -> Result<Vec<(crate::directory::AccessId, i64)>, StoreError> {
        self.inner.load_token_uses()
    }
    fn query_audit(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        self.inner.query_audit(query)
    }
    fn scan_audit(&self, from_seq: u64, f: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError> {
        self.inner.scan_audit(from_seq, f)
    }
    fn audit_signer(&self) -> Result<Option<crate::AuditSigner>, StoreError> {
        self.inner.audit_signer()
    }
    fn set_audit_signer(&self, signer: &crate::AuditSigner) -> Result<(), StoreError> {
        self.inner.set_audit_signer(signer)
    }
    fn last_checkpoint(&self) -> Result<Option<crate::Checkpoint>, StoreError> {
        self.inner.last_checkpoint()
    }
    fn head_seal(&self) -> Result<Option<crate::Checkpoint>, StoreError> {
        self.inner.head_seal()
    }
    fn newest_audit_seq(&self) -> Result<Option<u64>, StoreError> {
        self.inner.newest_audit_seq()
    }
    fn audit_view(
        &self,
        f: &mut dyn FnMut(&dyn crate::AuditView) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.inner.audit_view(f)
    }
}
