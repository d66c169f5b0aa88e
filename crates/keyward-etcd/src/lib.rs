//! Cluster mode's shared key store on etcd: [`EtcdShared`] implements
//! `keyward_core::SharedKeys`.
//!
//! Layout under the prefix (default `/keyward/`):
//!
//! | key | value |
//! |---|---|
//! | `keys/<uuid>` | the key record, shared form (`keyward_format::keys::encode_shared`: metadata, tag, wrapped secrets) |
//! | `aliases/<alias>` | key UUID (16 bytes) and the alias's tag (32 bytes), as format 2 stores it |
//! | `pending/<node>` | the node's latest lifecycle record, put with its change (tagged; see `keyward_core`'s `kms::pending`) |
//! | `nodes/<node>` | what the node publishes about itself (`keyward_format::cluster`), under its lease |
//! | `checkpoints/<node>` | the node's newest signed audit checkpoint (`keyward_format::checkpoint`), kept after the node stops |
//! | `usage/<key>/<version>` | seals granted to nodes so far under the version's usage cap (u64, big-endian) |
//! | `sweeper` | the node id of the sweeper leader, under its lease; its `create_revision` fences the leader's writes |
//! | `last-write` | empty; put by every write, so its `mod_revision` is the last write's revision |
//! | `root-check` | the root key's check value, put by the first node |
//!
//! Every write is one transaction that compares the `mod_revision` of each
//! key and alias it replaces (0: must not exist) and puts `last-write`.
//! Nothing here is a secret in the clear: version secrets are wrapped under
//! the root key, which never leaves the nodes.

use std::time::Duration;

#[cfg(feature = "test-util")]
pub mod testing;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use keyward_core::{
    AliasChange, Members, Membership, NodeInfo, Revision, SharedAlias, SharedEvent, SharedKey, SharedKeys,
    SharedSnapshot, SharedWrite, StoreError, WatchError, WriteError,
};
use keyward_format as format;

pub use etcd_client::{Certificate, Identity, TlsOptions};

/// Keys read per range request while loading.
const PAGE: i64 = 500;

/// How a node reaches etcd.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// `http://host:port` or `https://host:port`, one per member.
    pub endpoints: Vec<String>,
    /// Prefix of every key Keyward writes (default `/keyward/`).
    pub prefix: String,
    /// Longest wait for one request.
    pub request_timeout: Duration,
    /// TLS to the members (CA, and a client certificate if they ask for one).
    pub tls: Option<etcd_client::TlsOptions>,
}

impl EtcdConfig {
    /// Plain connections to `endpoints`, prefix `/keyward/`, 5 s per request.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self { endpoints, prefix: "/keyward/".into(), request_timeout: Duration::from_secs(5), tls: None }
    }
}

/// The shared key store on an etcd cluster.
#[derive(Clone)]
pub struct EtcdShared {
    client: Client,
    prefix: String,
    endpoints: Vec<String>,
    /// This node's lease, once granted.
    lease: std::sync::Arc<std::sync::Mutex<Option<i64>>>,
}

impl std::fmt::Debug for EtcdShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdShared")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn store_err(what: &str, e: etcd_client::Error) -> StoreError {
    StoreError(format!("etcd {what}: {e}"))
}

impl EtcdShared {
    /// Connects to the members (a balanced channel over every endpoint).
    /// Requests need the member to have a leader, so a member cut off from
    /// its quorum fails them instead of answering from its own state.
    pub async fn connect(config: EtcdConfig) -> Result<Self, StoreError> {
        let mut options = ConnectOptions::new()
            .with_timeout(config.request_timeout)
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_require_leader(true);
        if let Some(tls) = config.tls {
            options = options.with_tls(tls);
        }
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|e| store_err(&format!("connect to {}", config.endpoints.join(",")), e))?;
        Ok(Self { client, prefix: config.prefix, endpoints: config.endpoints, lease: Default::default() })
    }

    fn key_of_record(&self, id: &str) -> String {
        format!("{}keys/{id}", self.prefix)
    }

    fn key_of_alias(&self, alias: &str) -> String {
        format!("{}aliases/{alias}", self.prefix)
    }

    fn key_of_node(&self, node: &str) -> String {
        format!("{}nodes/{node}", self.prefix)
    }

    fn sweeper_key(&self) -> String {
        format!("{}sweeper", self.prefix)
    }

    fn key_of_usage(&self, key: keyward_core::KeyId, version: u32) -> String {
        format!("{}usage/{key}/{version}", self.prefix)
    }

    fn key_of_checkpoint(&self, node: &str) -> String {
        format!("{}checkpoints/{node}", self.prefix)
    }

    /// This node's lease, renewed; a new one if it expired (or none was granted).
    async fn renewed_lease(&self, ttl: Duration) -> Result<i64, StoreError> {
        let mut client = self.client.clone();
        let held = *self.lease.lock().expect("lease lock");
        if let Some(id) = held {
            // An expired lease answers "lease not found" (or a TTL of 0):
            // then a new one. Any other failure is the connection's.
            let renewed = async {
                let (mut keeper, mut stream) = client.lease_keep_alive(id).await?;
                keeper.keep_alive().await?;
                stream.message().await
            }
            .await;
            match renewed {
                Ok(Some(r)) if r.ttl() > 0 => return Ok(id),
                Ok(_) => {}
                Err(e) if e.to_string().contains("lease not found") => {}
                Err(e) => return Err(store_err("lease keep-alive", e)),
            }
        }
        // etcd leases last whole seconds.
        let secs = ttl.as_secs().max(2) as i64;
        let id = client.lease_grant(secs, None).await.map_err(|e| store_err("lease grant", e))?.id();
        *self.lease.lock().expect("lease lock") = Some(id);
        Ok(id)
    }

    fn key_of_pending(&self, node: &str) -> String {
        format!("{}pending/{node}", self.prefix)
    }

    fn last_write_key(&self) -> String {
        format!("{}last-write", self.prefix)
    }

    /// Whether every key holds what `wanted` says (an earlier attempt of
    /// a write applied), and at which revision. `None` if any differs;
    /// an error (outcome still unknown) if that cannot be told: a write
    /// that only removes has no revision of its own to read.
    async fn applied_at(&self, wanted: &[(String, Option<Vec<u8>>)]) -> Result<Option<Revision>, StoreError> {
        let mut client = self.client.clone();
        let mut at = None;
        for (k, want) in wanted {
            let resp = client.get(k.clone(), None).await.map_err(|e| store_err("read back", e))?;
            let kv = resp.kvs().first();
            match (want, kv) {
                (Some(v), Some(kv)) if kv.value() == v.as_slice() => at = Some(kv.mod_revision()),
                (None, None) => {}
                _ => return Ok(None),
            }
        }
        at.map(Some).ok_or_else(|| StoreError("etcd: the outcome of a removal is unknown".into()))
    }

    /// Every value under `prefix` at `revision` (0: now), page by page.
    async fn range_all(
        &self,
        prefix: &str,
        revision: i64,
    ) -> Result<(i64, Vec<etcd_client::KeyValue>), StoreError> {
        let mut client = self.client.clone();
        let end = prefix_end(prefix.as_bytes());
        let mut from = prefix.as_bytes().to_vec();
        let mut at = revision;
        let mut out = Vec::new();
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if at > 0 {
                opts = opts.with_revision(at);
            }
            let mut resp =
                client.get(from.clone(), Some(opts)).await.map_err(|e| store_err("range read", e))?;
            if at == 0 {
                at = resp.header().map_or(0, |h| h.revision());
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            let Some(last) = kvs.last() else { break };
            from = [last.key(), &[0]].concat();
            out.extend(kvs);
            if !more {
                break;
            }
        }
        Ok((at, out))
    }

    fn decode_key(&self, kv: &etcd_client::KeyValue) -> Result<SharedKey, StoreError> {
        let record = format::keys::decode_shared(kv.value())?;
        let expected = self.key_of_record(&record.meta.id.to_string());
        if kv.key() != expected.as_bytes() {
            return Err(StoreError(format!(
                "etcd: key record {} is stored under another key",
                record.meta.id
            )));
        }
        Ok(SharedKey { record, revision: kv.mod_revision() })
    }

    fn decode_alias(&self, kv: &etcd_client::KeyValue) -> Result<SharedAlias, StoreError> {
        let name = &kv.key()[self.key_of_alias("").len()..];
        let entry = format::aliases::decode(name, kv.value())?;
        Ok(SharedAlias { entry, revision: kv.mod_revision() })
    }

    /// The events of one watch response, in order, then how far it got.
    fn events_of(&self, resp: &etcd_client::WatchResponse) -> Result<Vec<SharedEvent>, WatchError> {
        let (keys, aliases) = (self.key_of_record(""), self.key_of_alias(""));
        let mut out = Vec::new();
        let mut last = 0;
        for e in resp.events() {
            let Some(kv) = e.kv() else { continue };
            last = last.max(kv.mod_revision());
            let k = kv.key();
            if k.starts_with(keys.as_bytes()) {
                if e.event_type() == EventType::Put {
                    out.push(SharedEvent::Key(self.decode_key(kv).map_err(WatchError::Store)?));
                }
                // Key records are never deleted by Keyward: a deletion is
                // someone else's doing, and memory keeps what it has.
            } else if k.starts_with(aliases.as_bytes()) {
                match e.event_type() {
                    EventType::Put => {
                        out.push(SharedEvent::Alias(self.decode_alias(kv).map_err(WatchError::Store)?))
                    }
                    EventType::Delete => {
                        let name = String::from_utf8_lossy(&k[aliases.len()..]).into_owned();
                        out.push(SharedEvent::AliasRemoved { alias: name, revision: kv.mod_revision() });
                    }
                }
            }
        }
        if resp.events().is_empty() {
            // A progress notification: the watch is synced up to the header's revision.
            last = resp.header().map_or(0, |h| h.revision());
        }
        if last > 0 {
            out.push(SharedEvent::Progress(last));
        }
        Ok(out)
    }
}

/// The end of the range of keys starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Longest wait for one attempt of a write (a healthy write takes
/// milliseconds; see `write`).
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);

/// How long a write waits for the members to elect a leader.
const ELECTION_WAIT: Duration = Duration::from_secs(6);

/// Whether a member refused a request for want of a leader (it proposed
/// nothing: retrying is safe).
fn no_leader(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("no leader"))
}

/// Whether a failed request may still have been applied.
fn outcome_unknown(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => matches!(
            s.code(),
            tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Unknown
        ),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

impl SharedKeys for EtcdShared {
    fn load(&self) -> BoxFuture<'_, Result<SharedSnapshot, StoreError>> {
        async move {
            let (rev, key_kvs) = self.range_all(&self.key_of_record(""), 0).await?;
            let (_, alias_kvs) = self.range_all(&self.key_of_alias(""), rev).await?;
            let keys = key_kvs.iter().map(|kv| self.decode_key(kv)).collect::<Result<_, _>>()?;
            let aliases = alias_kvs.iter().map(|kv| self.decode_alias(kv)).collect::<Result<_, _>>()?;
            Ok(SharedSnapshot { revision: rev, keys, aliases })
        }
        .boxed()
    }

    fn write(&self, write: SharedWrite) -> BoxFuture<'_, Result<Revision, WriteError>> {
        async move {
            let mut compares = Vec::new();
            let mut ops = Vec::new();
            // What each key holds once the write applied (None: removed).
            let mut wanted: Vec<(String, Option<Vec<u8>>)> = Vec::new();
            for (record, rev) in &write.keys {
                let k = self.key_of_record(&record.meta.id.to_string());
                let value = format::keys::encode_shared(record).map_err(WriteError::Store)?;
                compares.push(Compare::mod_revision(k.clone(), CompareOp::Equal, *rev));
                ops.push(TxnOp::put(k.clone(), value.clone(), None));
                wanted.push((k, Some(value)));
            }
            for (change, rev) in &write.aliases {
                match change {
                    AliasChange::Set(e) => {
                        let k = self.key_of_alias(&e.alias);
                        let value = format::aliases::encode(e).map_err(WriteError::Store)?;
                        compares.push(Compare::mod_revision(k.clone(), CompareOp::Equal, *rev));
                        ops.push(TxnOp::put(k.clone(), value.clone(), None));
                        wanted.push((k, Some(value)));
                    }
                    AliasChange::Remove(name) => {
                        let k = self.key_of_alias(name);
                        compares.push(Compare::mod_revision(k.clone(), CompareOp::Equal, *rev));
                        ops.push(TxnOp::delete(k.clone(), None));
                        wanted.push((k, None));
                    }
                }
            }
            if let Some(fence) = write.fence {
                compares.push(Compare::create_revision(self.sweeper_key(), CompareOp::Equal, fence));
            }
            for (key, version, count) in &write.usage {
                let k = self.key_of_usage(*key, *version);
                compares.push(Compare::create_revision(k.clone(), CompareOp::Equal, 0));
                let value = count.to_be_bytes().to_vec();
                ops.push(TxnOp::put(k.clone(), value.clone(), None));
                wanted.push((k, Some(value)));
            }
            if let Some(p) = &write.pending {
                ops.push(TxnOp::put(self.key_of_pending(&p.node), p.value.clone(), None));
            }
            ops.push(TxnOp::put(self.last_write_key(), Vec::new(), None));
            let txn = Txn::new().when(compares).and_then(ops);
            let mut client = self.client.clone();
            // While the members elect a leader (the old one died or froze),
            // a write fails: refused before anything was proposed ("no
            // leader"), or with its outcome unknown (the proposal timed
            // out). The same transaction is sent again, for as long as an
            // election takes: it compares revisions, so it can never apply
            // twice; a retry that finds them moved asks whether the values
            // are this write's (an earlier attempt applied) or someone else's.
            let started = std::time::Instant::now();
            let mut unsure = None;
            let resp = loop {
                // A proposal in flight when the leader dies is dropped
                // without an answer: the member waits out its own timeout
                // (5 s). An attempt is given up sooner, as outcome unknown.
                let attempt = match tokio::time::timeout(ATTEMPT_TIMEOUT, client.txn(txn.clone())).await {
                    Ok(r) => r,
                    Err(_) => Err(etcd_client::Error::GRpcStatus(tonic::Status::deadline_exceeded(format!(
                        "no answer within {ATTEMPT_TIMEOUT:?}"
                    )))),
                };
                match attempt {
                    Ok(r) => break r,
                    Err(e) if (no_leader(&e) || outcome_unknown(&e)) && started.elapsed() < ELECTION_WAIT => {
                        if outcome_unknown(&e) {
                            unsure = Some(store_err("write", e));
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) if outcome_unknown(&e) => return Err(WriteError::Unknown(store_err("write", e))),
                    Err(e) => return Err(WriteError::Store(store_err("write", e))),
                }
            };
            let rev = resp.header().map_or(0, |h| h.revision());
            if resp.succeeded() {
                return Ok(rev);
            }
            // An earlier attempt may have applied: then this one's compares
            // fail on that attempt's own revisions (and, for the sweeper, on
            // a leadership lost since). Asked first, so a change in force
            // is never reported as fenced or lost to a race.
            if let Some(first) = unsure {
                match self.applied_at(&wanted).await {
                    Ok(Some(at)) => return Ok(at),
                    Ok(None) => {}
                    Err(_) => return Err(WriteError::Unknown(first)),
                }
            }
            if let Some(fence) = write.fence {
                let leader = client
                    .get(self.sweeper_key(), None)
                    .await
                    .map_err(|e| WriteError::Store(store_err("read the sweeper leader", e)))?;
                if leader.kvs().first().map(|kv| kv.create_revision()) != Some(fence) {
                    return Err(WriteError::Fenced);
                }
            }
            Err(WriteError::Conflict(rev))
        }
        .boxed()
    }

    fn watch(&self, after: Revision) -> BoxStream<'static, Result<SharedEvent, WatchError>> {
        let this = self.clone();
        let start = async move {
            let mut client = this.client.clone();
            let opts =
                WatchOptions::new().with_prefix().with_start_revision(after + 1).with_progress_notify();
            let stream = client
                .watch(this.prefix.clone(), Some(opts))
                .await
                .map_err(|e| WatchError::Store(store_err("watch", e)))?;
            Ok::<_, WatchError>((this, stream))
        };
        futures_util::stream::once(start)
            .flat_map(|started| match started {
                Err(e) => futures_util::stream::iter(vec![Err(e)]).boxed(),
                Ok((this, stream)) => {
                    futures_util::stream::unfold(Some((this, stream)), |state| async move {
                        let (this, mut stream) = state?;
                        loop {
                            match stream.message().await {
                                Ok(Some(resp)) => {
                                    if resp.compact_revision() > 0 {
                                        return Some((
                                            vec![Err(WatchError::Compacted(resp.compact_revision()))],
                                            None,
                                        ));
                                    }
                                    if resp.canceled() {
                                        let why = resp.cancel_reason().to_string();
                                        return Some((
                                            vec![Err(WatchError::Store(StoreError(format!(
                                                "etcd watch canceled: {why}"
                                            ))))],
                                            None,
                                        ));
                                    }
                                    if resp.created() && resp.events().is_empty() {
                                        continue;
                                    }
                                    match this.events_of(&resp) {
                                        Ok(events) if events.is_empty() => continue,
                                        Ok(events) => {
                                            return Some((
                                                events.into_iter().map(Ok).collect(),
                                                Some((this, stream)),
                                            ))
                                        }
                                        Err(e) => return Some((vec![Err(e)], None)),
                                    }
                                }
                                Ok(None) => {
                                    return Some((
                                        vec![Err(WatchError::Store(StoreError("etcd watch ended".into())))],
                                        None,
                                    ))
                                }
                                Err(e) => {
                                    return Some((vec![Err(WatchError::Store(store_err("watch", e)))], None))
                                }
                            }
                        }
                    })
                    .flat_map(futures_util::stream::iter)
                    .boxed()
                }
            })
            .boxed()
    }

    fn last_write(&self) -> BoxFuture<'_, Result<Revision, StoreError>> {
        async move {
            let mut client = self.client.clone();
            let resp = client.get(self.last_write_key(), None).await.map_err(|e| store_err("probe", e))?;
            Ok(resp.kvs().first().map_or(0, |kv| kv.mod_revision()))
        }
        .boxed()
    }

    fn root_check(&self, mine: &[u8]) -> BoxFuture<'_, Result<Vec<u8>, StoreError>> {
        let mine = mine.to_vec();
        async move {
            let k = format!("{}root-check", self.prefix);
            let mut client = self.client.clone();
            let txn = Txn::new()
                .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(k.clone(), mine.clone(), None)]);
            let resp = client.txn(txn).await.map_err(|e| store_err("root-key check", e))?;
            if resp.succeeded() {
                return Ok(mine);
            }
            let resp = client.get(k, None).await.map_err(|e| store_err("root-key check", e))?;
            resp.kvs()
                .first()
                .map(|kv| kv.value().to_vec())
                .ok_or_else(|| StoreError("etcd: the root-key check vanished".into()))
        }
        .boxed()
    }

    fn heartbeat(&self, me: NodeInfo, ttl: Duration) -> BoxFuture<'_, Result<Membership, StoreError>> {
        async move {
            let lease = self.renewed_lease(ttl).await?;
            let sweeper = self.sweeper_key();
            let leased = || Some(PutOptions::new().with_lease(lease));
            let put_node =
                TxnOp::put(self.key_of_node(&me.node_id), format::cluster::encode_node(&me), leased());
            // Take the leadership if no node holds it; read who does.
            let txn = Txn::new()
                .when([Compare::create_revision(sweeper.clone(), CompareOp::Equal, 0)])
                .and_then([
                    put_node.clone(),
                    TxnOp::put(sweeper.clone(), me.node_id.clone(), leased()),
                    TxnOp::get(sweeper.clone(), None),
                ])
                .or_else([put_node, TxnOp::get(sweeper, None)]);
            let mut client = self.client.clone();
            let resp = client.txn(txn).await.map_err(|e| store_err("heartbeat", e))?;
            let mut out = Membership::default();
            for r in resp.op_responses() {
                if let TxnOpResponse::Get(g) = r {
                    if let Some(kv) = g.kvs().first() {
                        out.leading = (kv.lease() == lease).then(|| kv.create_revision());
                        out.leader = Some(String::from_utf8_lossy(kv.value()).into_owned());
                    }
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn lease_units(
        &self,
        key: keyward_core::KeyId,
        version: u32,
        want: u64,
        cap: u64,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        let k = self.key_of_usage(key, version);
        async move {
            let mut client = self.client.clone();
            // Compare-and-swap on the count; a lost race reads it again. An
            // unknown outcome is not retried: its units are lost, never doubled.
            for _ in 0..16 {
                let resp =
                    client.get(k.clone(), None).await.map_err(|e| store_err("read a usage count", e))?;
                let (granted, rev) = match resp.kvs().first() {
                    None => (0, 0),
                    Some(kv) => {
                        let v: [u8; 8] = kv
                            .value()
                            .try_into()
                            .map_err(|_| StoreError(format!("etcd: the usage count {k} is not 8 bytes")))?;
                        (u64::from_be_bytes(v), kv.mod_revision())
                    }
                };
                let left = cap.saturating_sub(granted);
                let grant = want.min((left / 4).max(1)).min(left);
                if grant == 0 {
                    return Ok(0);
                }
                let txn = Txn::new()
                    .when([Compare::mod_revision(k.clone(), CompareOp::Equal, rev)])
                    .and_then([TxnOp::put(k.clone(), (granted + grant).to_be_bytes().to_vec(), None)]);
                let resp = client.txn(txn).await.map_err(|e| store_err("lease usage units", e))?;
                if resp.succeeded() {
                    return Ok(grant);
                }
            }
            Err(StoreError("etcd: the usage count kept changing; retry".into()))
        }
        .boxed()
    }

    fn members(&self) -> BoxFuture<'_, Result<Members, StoreError>> {
        async move {
            let (rev, kvs) = self.range_all(&self.key_of_node(""), 0).await?;
            let nodes =
                kvs.iter().map(|kv| format::cluster::decode_node(kv.value())).collect::<Result<_, _>>()?;
            let mut client = self.client.clone();
            let leader = client
                .get(self.sweeper_key(), Some(GetOptions::new().with_revision(rev)))
                .await
                .map_err(|e| store_err("read the sweeper leader", e))?;
            let leader = leader.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
            Ok(Members { nodes, sweeper_leader: leader })
        }
        .boxed()
    }

    fn pending(&self, node: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        let k = self.key_of_pending(node);
        async move {
            let mut client = self.client.clone();
            let resp = client.get(k, None).await.map_err(|e| store_err("read the pending record", e))?;
            Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
        }
        .boxed()
    }

    fn publish_checkpoint(
        &self,
        node: &str,
        checkpoint: &keyward_core::Checkpoint,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let (k, v) = (self.key_of_checkpoint(node), format::checkpoint::encode(checkpoint));
        async move {
            let mut client = self.client.clone();
            client.put(k, v, None).await.map_err(|e| store_err("publish the audit checkpoint", e))?;
            Ok(())
        }
        .boxed()
    }

    fn checkpoints(&self) -> BoxFuture<'_, Result<Vec<(String, keyward_core::Checkpoint)>, StoreError>> {
        async move {
            let prefix = self.key_of_checkpoint("");
            let (_, kvs) = self.range_all(&prefix, 0).await?;
            kvs.iter()
                .map(|kv| {
                    let node = String::from_utf8_lossy(&kv.key()[prefix.len()..]).into_owned();
                    Ok((node, format::checkpoint::decode(kv.value())?))
                })
                .collect()
        }
        .boxed()
    }
}
