//! Server bootstrap, in two named steps.
//!
//! [`Server::build`] does everything that can fail on a bad configuration or
//! data folder: it reads and parses the TLS files and the JWT issuers' JWKS
//! files, builds reflection, opens
//! the data folder and root key, starts the `Kms` (and its audit writer) and
//! resolves the KMS v2 plugin's key. Nothing is bound and no scheduled work
//! runs yet. [`Prepared::serve`] then binds the side listeners (metrics,
//! health, KMS v2 socket), starts the sweeper (`Kms::run_due` at start and
//! every minute) and serves until the one shutdown signal, which stops, in
//! order: every listener (each drains its connections), the sweeper, the
//! requests still finishing, and the audit writer; then the `Kms` is dropped,
//! which releases the store before [`Prepared::serve`] returns.
//!
//! The binary builds, then binds its listener, then serves; [`run`] and
//! [`run_with_store`] (for tests, on `127.0.0.1:0`) do the same with a
//! listener the caller bound.

pub(crate) mod accept;
mod clock;
mod drain;
mod tasks;

use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use keyward_core::{Kms, OpenError, Store};
use keyward_crypto::RootKey;
use keyward_store::RocksStore;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::Server as Transport;

use crate::config::{load_root_key, ConfigError, RootKeySource, ServerConfig};
use crate::grpc::{AccessApi, Api, AuditApi, CryptoApi, KeysApi, OperatorApi, PeerApi};
use crate::k8s::KmsV2;
use crate::metrics::Metrics;
use crate::pb;
use crate::pb::access_service_server::AccessServiceServer;
use crate::pb::audit_service_server::AuditServiceServer;
use crate::pb::cluster_peer_service_server::ClusterPeerServiceServer;
use crate::pb::crypto_service_server::CryptoServiceServer;
use crate::pb::key_service_server::KeyServiceServer;
use crate::pb::operator_service_server::OperatorServiceServer;
use crate::seal::{Seal, ShamirInit, Source};
use drain::Drain;

/// How long each stage of shutdown may take before the next one starts anyway.
const STAGE_LIMIT: Duration = Duration::from_secs(10);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Bad configuration, TLS files or root key.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data folder could not be opened.
    #[error("data folder {path}: {source}")]
    Store {
        /// The folder.
        path: String,
        /// The store's error.
        source: keyward_core::StoreError,
    },
    /// The root key does not fit the data, or the data is unreadable.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Reflection descriptors failed to load (a build problem).
    #[error("reflection: {0}")]
    Reflection(String),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// IO on the data folder or a listener.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Names the bootstrap; see the module documentation.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Validates and opens everything `config` names (store and root key
    /// included); binds nothing. With `[root_key] kind = "shamir"` the
    /// store is opened but the server is sealed until enough shares come.
    pub async fn build(config: ServerConfig) -> Result<Prepared, ServerError> {
        let transport = transport(&config)?;
        let config = with_jwt_issuers(config)?;
        create_private_dir(&config.data_dir)?;
        let seal_file = crate::seal::SealFile::read(&config.data_dir).map_err(ConfigError::Invalid)?;
        check_seal_kind(&config, seal_file.as_ref())?;
        // Read the root key before opening the store: a bad key file is a
        // configuration error, whatever the folder holds.
        let (source, root, fallback) = root_source(&config, seal_file)?;
        let db_dir = config.data_dir.join("db");
        let store = RocksStore::open(&db_dir)
            .map_err(|source| ServerError::Store { path: db_dir.display().to_string(), source })?;
        let (source, root) = match (fallback, root) {
            (Some(f), Some(r)) => {
                let (s, r) = settle_hsm_root(&store, &config.data_dir, source, r, f)?;
                (s, Some(r))
            }
            (_, root) => (source, root),
        };
        let store: Arc<dyn Store> = Arc::new(store);
        if let Some(cluster) = &config.cluster {
            let root =
                root.ok_or_else(|| ConfigError::Invalid("cluster mode needs a root key file".into()))?;
            let copy =
                RootKey::from_bytes(root.expose_secret()).map_err(|e| ConfigError::Invalid(e.to_string()))?;
            let clock = clock::server_clock(config.dev_clock_file.as_deref());
            let kms = open_cluster_node(cluster, store.clone(), root, clock.clone(), &config).await?;
            let opened = Opening::Opened(Box::new(kms), copy, clock);
            return Self::prepare_with(config, transport, store, source, Some(opened));
        }
        Self::prepare(config, transport, store, source, root)
    }

    /// Like [`Server::build`], over an already opened store (tests wrap it to
    /// inject faults).
    pub fn build_with_store(
        config: ServerConfig,
        store: Arc<dyn Store>,
        root: RootKey,
    ) -> Result<Prepared, ServerError> {
        let transport = transport(&config)?;
        let config = with_jwt_issuers(config)?;
        let bytes = zeroize::Zeroizing::new(*root.expose_secret());
        let load: crate::seal::RootLoader =
            Arc::new(move || RootKey::from_bytes(&*bytes).map_err(|e| e.to_string()));
        Self::prepare(
            config,
            transport,
            store,
            Source::Auto { kind: "file", load: RwLock::new(load) },
            Some(root),
        )
    }

    fn prepare(
        config: ServerConfig,
        transport: Transport,
        store: Arc<dyn Store>,
        source: Source,
        root: Option<RootKey>,
    ) -> Result<Prepared, ServerError> {
        Self::prepare_with(config, transport, store, source, root.map(Opening::Root))
    }

    fn prepare_with(
        config: ServerConfig,
        transport: Transport,
        store: Arc<dyn Store>,
        source: Source,
        opening: Option<Opening>,
    ) -> Result<Prepared, ServerError> {
        let root = opening.as_ref().map(Opening::root);
        let reflection = reflection()?;
        // The HTTP edges' TLS, read now so a bad file refuses to start.
        let edge_tls = match (&config.tls, config.aws_kms.is_some() || config.vault_transit.is_some()) {
            (Some(t), true) => Some(crate::http::tls_acceptor(t)?),
            _ => None,
        };
        let dev = matches!(config.auth, crate::auth::Authenticator::Dev(_));
        // Development credentials exist only with a development root key (file kind).
        let aws_dev = match (&root, dev && config.aws_kms.is_some()) {
            (Some(r), true) => Some(crate::aws::DevAccessKey::of(r)),
            _ => None,
        };
        let vault_dev = match (&root, dev && config.vault_transit.is_some()) {
            (Some(r), true) => Some(crate::vault::DevToken::of(r)),
            _ => None,
        };
        let metrics = config.metrics_listen.map(|_| Arc::new(Metrics::new()));
        let mut kms_config = config.kms.clone();
        if let Some(m) = &metrics {
            kms_config.audit.observer = Some(m.clone());
        }
        let in_flight = Arc::new(AtomicUsize::new(0));
        kms_config.audit.in_flight = Some(in_flight.clone());
        // The writer does not preempt the request thread where they share a core.
        kms_config.audit.writer_started = Some(crate::hardening::batch_scheduling);
        // One clock per server: a cluster node's, as it was opened with.
        let clock = match &opening {
            Some(Opening::Opened(_, _, clock)) => clock.clone(),
            _ => clock::server_clock(config.dev_clock_file.as_deref()),
        };
        let seal = Arc::new(match opening {
            None => Seal::sealed(store, kms_config, clock, source),
            Some(Opening::Root(root)) => {
                let kms = Seal::open_kms(store.clone(), root, kms_config.clone(), clock.clone())?;
                Seal::unsealed(Arc::new(kms), store, kms_config, clock, source)
            }
            Some(Opening::Opened(kms, _, _)) => {
                Seal::unsealed(Arc::from(kms), store, kms_config, clock, source)
            }
        });
        if let Some(kms) = seal.get() {
            for (issuer, rule) in
                config.jwt_issuers.iter().flat_map(|i| i.rules.iter().map(move |r| (&i.issuer, r)))
            {
                if kms.policy_of(&rule.principal).is_none() {
                    tracing::warn!(
                        issuer = %issuer,
                        principal = %rule.principal,
                        "a [[jwt_issuers.rules]] entry names a principal that exists neither in the configuration file nor at runtime: its JWTs are refused until an administrator creates it"
                    );
                }
            }
        }
        let plugin = match &config.kms_v2 {
            None => None,
            Some(k) => match KmsV2::new(seal.clone(), &k.key, &k.socket) {
                Ok(p) => Some(p),
                Err(e) => {
                    seal.close();
                    return Err(ConfigError::Invalid(format!(
                        "kms_v2.key {:?}: {}",
                        k.key,
                        e.public_message()
                    ))
                    .into());
                }
            },
        };
        let limiter =
            config.edge.rate.map(|(rate, burst)| Arc::new(crate::grpc::RateLimiter::new(rate, burst)));
        let aws = config.aws_kms.as_ref().map(|a| {
            let arns = crate::aws::Arns { region: a.region.clone(), account: a.account_id.clone() };
            Arc::new(crate::aws::AwsKms::new(seal.clone(), arns, limiter.clone(), aws_dev))
        });
        let vault = config.vault_transit.as_ref().map(|v| {
            Arc::new(crate::vault::VaultTransit::new(
                seal.clone(),
                config.auth.clone(),
                v.mount.clone(),
                limiter.clone(),
                vault_dev,
            ))
        });
        // The console's TLS also asks for client certificates where mutual TLS is configured.
        let console_tls = match (&config.tls, &config.console) {
            (Some(t), Some(_)) => Some(crate::http::tls_acceptor_with_client_certs(t)?),
            _ => None,
        };
        let console = config.console.as_ref().map(|c| {
            Arc::new(crate::console::Console::new(
                seal.clone(),
                config.auth.clone(),
                c.session_idle,
                dev,
                console_tls.is_some(),
            ))
        });
        let api = Api::new(seal.clone(), config.auth.clone(), limiter);
        Ok(Prepared {
            config,
            transport,
            reflection,
            seal,
            metrics,
            in_flight,
            plugin,
            api,
            aws,
            vault,
            console,
            console_tls,
            edge_tls,
        })
    }
}

/// How the key service comes up at start.
enum Opening {
    /// Open it over the local store with this root key.
    Root(RootKey),
    /// Already open (a cluster node), with a copy of its root key for the
    /// development credentials, and the clock it was opened with.
    Opened(Box<Kms>, RootKey, Arc<dyn keyward_core::Clock>),
}

impl Opening {
    fn root(&self) -> &RootKey {
        match self {
            Self::Root(r) | Self::Opened(_, r, _) => r,
        }
    }
}

/// How to reach etcd: its members, Keyward's key prefix, and TLS (a CA
/// bundle, and a client certificate and key) read from files; an
/// unreadable file is named. The server and `keyward cluster import` share it.
pub(crate) fn etcd_config(
    endpoints: &[String],
    prefix: &str,
    ca_file: Option<&std::path::Path>,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<keyward_etcd::EtcdConfig, String> {
    let mut etcd = keyward_etcd::EtcdConfig::new(endpoints.to_vec());
    etcd.prefix = prefix.to_string();
    if let Some(ca) = ca_file {
        let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let mut tls =
            keyward_etcd::TlsOptions::new().ca_certificate(keyward_etcd::Certificate::from_pem(read(ca)?));
        if let Some((c, k)) = identity {
            tls = tls.identity(keyward_etcd::Identity::from_pem(read(c)?, read(k)?));
        }
        etcd.tls = Some(tls);
    }
    Ok(etcd)
}

/// Connects to etcd and opens this node's key service over the shared
/// keys (the local store keeps its audit log, usage and access records).
async fn open_cluster_node(
    cluster: &crate::config::ClusterSettings,
    store: Arc<dyn Store>,
    root: RootKey,
    clock: Arc<dyn keyward_core::Clock>,
    config: &ServerConfig,
) -> Result<Kms, ServerError> {
    let etcd = etcd_config(
        &cluster.etcd_endpoints,
        &cluster.etcd_prefix,
        cluster.etcd_ca_file.as_deref(),
        cluster.etcd_cert_file.as_deref().zip(cluster.etcd_key_file.as_deref()),
    )
    .map_err(|e| ConfigError::Invalid(format!("cluster: {e}")))?;
    let shared = keyward_etcd::EtcdShared::connect(etcd).await.map_err(|e| {
        ConfigError::Invalid(format!(
            "cluster: {e} (is etcd running at {}?)",
            cluster.etcd_endpoints.join(",")
        ))
    })?;
    let settings = keyward_core::ClusterConfig {
        node_id: cluster.node_id.clone(),
        // The listener as other nodes and operators reach it.
        address: cluster.advertise_addr.clone().unwrap_or_else(|| config.listen.to_string()),
        version: env!("CARGO_PKG_VERSION").to_string(),
        lease_ttl: Duration::from_secs(5),
        freshness_bound: cluster.freshness_bound,
        // 50 ms at the default 2 s: a confirmation begun just before an etcd
        // leader dies holds almost the whole bound through its election.
        probe_every: (cluster.freshness_bound / 40)
            .clamp(Duration::from_millis(25), Duration::from_millis(500)),
        peers: Some(Arc::new(crate::grpc::GrpcPeers::new(
            config.tls.as_ref().map(crate::grpc::GrpcPeers::tls_for).transpose().map_err(|e| {
                ConfigError::Invalid(format!("cluster: the TLS files to reach other nodes: {e}"))
            })?,
        ))),
    };
    let kms = Kms::open_cluster(store, Arc::new(shared), root, clock, config.kms.clone(), settings).await?;
    tracing::info!(
        node_id = %cluster.node_id,
        etcd = %cluster.etcd_endpoints.join(","),
        revision = kms.applied_revision().unwrap_or(0),
        freshness_bound_ms = cluster.freshness_bound.as_millis() as u64,
        "cluster node: keys shared through etcd"
    );
    Ok(kms)
}

/// A `seal.json` in the data folder says how its root key is sealed; the
/// configuration must agree (a folder initialized for shares does not open
/// with a key file, nor the other way round).
fn check_seal_kind(config: &ServerConfig, file: Option<&crate::seal::SealFile>) -> Result<(), ConfigError> {
    let want = config.root_key.kind();
    let dir = config.data_dir.display();
    match (want, file) {
        ("file", None) => Ok(()),
        ("file", Some(f)) => Err(ConfigError::Invalid(format!(
            "data folder {dir} was initialized with [root_key] kind = {:?} (its seal.json); configure that kind, not a root key file",
            f.kind
        ))),
        (kind, None) => Err(ConfigError::Invalid(format!(
            "data folder {dir} is not initialized for [root_key] kind = {kind:?}: run `keyward operator init --config <this file>` first{}",
            if kind == "shamir" { " (with --shares N --threshold K)" } else { "" }
        ))),
        (kind, Some(f)) if f.kind != kind => Err(ConfigError::Invalid(format!(
            "data folder {dir} was initialized with [root_key] kind = {:?} (its seal.json), but the configuration says {kind:?}",
            f.kind
        ))),
        _ => Ok(()),
    }
}

/// How the server gets its root key, and the key itself when it comes at
/// start (a file, an HSM); none for Shamir (sealed until unsealed). For an
/// HSM whose seal.json still names the root key before a rotation, also
/// that one: [`settle_hsm_root`] keeps whichever opens the store.
fn root_source(
    config: &ServerConfig,
    file: Option<crate::seal::SealFile>,
) -> Result<(Source, Option<RootKey>, Option<HsmFallback>), ConfigError> {
    let path = crate::seal::SealFile::path(&config.data_dir);
    match &config.root_key {
        RootKeySource::File(_) | RootKeySource::Dev(_) => {
            let root = load_root_key(&config.root_key)?;
            let src = config.root_key.clone();
            let load: crate::seal::RootLoader =
                Arc::new(move || load_root_key(&src).map_err(|e| e.to_string()));
            Ok((Source::Auto { kind: "file", load: RwLock::new(load) }, Some(root), None))
        }
        RootKeySource::Shamir => {
            let f = file.expect("checked by check_seal_kind");
            let current = ShamirInit::of(&f, &path).map_err(ConfigError::Invalid)?;
            let previous = match &f.previous {
                Some(p) => Some(ShamirInit::of(p, &path).map_err(ConfigError::Invalid)?),
                None => None,
            };
            Ok((Source::Shamir { current, previous, data_dir: config.data_dir.clone() }, None, None))
        }
        RootKeySource::Pkcs11(hsm) => {
            let f = file.expect("checked by check_seal_kind");
            let loader = |f: &crate::seal::SealFile| {
                f.hsm_loader(hsm).map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))
            };
            if let Some(l) = f.key_label.as_deref().filter(|l| *l != hsm.key_label) {
                tracing::info!(
                    seal_json = l,
                    configured = %hsm.key_label,
                    "the root key is wrapped by the HSM key seal.json names (a rotation moved it), not [root_key] key_label"
                );
            }
            let load = loader(&f)?;
            let root =
                load().map_err(|e| ConfigError::Invalid(format!("[root_key] kind = \"pkcs11\": {e}")))?;
            let fallback = match &f.previous {
                Some(p) => {
                    let load = loader(p)?;
                    // One that no longer unwraps (its HSM key destroyed) cannot be
                    // the one in use unless the current one does not fit either.
                    let root = load()
                        .map_err(|e| tracing::warn!(error = %e, "the root key before the last rotation does not unwrap"))
                        .ok();
                    Some(HsmFallback { root, load, file: f.clone() })
                }
                None => None,
            };
            Ok((Source::Auto { kind: "pkcs11", load: RwLock::new(load) }, Some(root), fallback))
        }
    }
}

/// The HSM-wrapped root key before an unfinished rotation (none if it no
/// longer unwraps).
struct HsmFallback {
    root: Option<RootKey>,
    load: crate::seal::RootLoader,
    file: crate::seal::SealFile,
}

/// An HSM's seal.json naming two root keys (a rotation that may not have
/// finished): keeps the one whose check value the store holds, rewrites
/// seal.json to name only it (so the other can never be unwrapped again),
/// and returns the key and the source to serve with.
fn settle_hsm_root(
    store: &dyn Store,
    data_dir: &std::path::Path,
    source: Source,
    root: RootKey,
    fallback: HsmFallback,
) -> Result<(Source, RootKey), ServerError> {
    let check = store
        .root_check()
        .map_err(|source| ServerError::Store { path: data_dir.display().to_string(), source })?;
    let fits = |r: &RootKey| check.as_ref().is_some_and(|c| r.matches(&keyward_crypto::RootCheck(c.clone())));
    let mut file = fallback.file;
    let previous = *file.previous.take().expect("a fallback comes from previous");
    let (keep, source, root) = if fits(&root) {
        (file, source, root)
    } else if let Some(old) = fallback.root.filter(|r| fits(r)) {
        tracing::warn!("the last root-key rotation did not finish: serving with the root key before it");
        (previous, Source::Auto { kind: "pkcs11", load: RwLock::new(fallback.load) }, old)
    } else {
        return Err(ServerError::Open(OpenError::WrongRootKey));
    };
    keep.write(data_dir).map_err(ConfigError::Invalid)?;
    Ok((source, root))
}

/// Reads the JWT issuers' JWKS files (an unusable one refuses to start) and
/// attaches them to the authenticator.
fn with_jwt_issuers(mut config: ServerConfig) -> Result<ServerConfig, ConfigError> {
    let jwt = crate::jwt::JwtIssuers::load(&config.jwt_issuers)?;
    config.auth = config.auth.with_jwt(jwt);
    Ok(config)
}

/// A server built and validated, not yet serving: nothing is bound and no
/// scheduled work has run.
pub struct Prepared {
    config: ServerConfig,
    transport: Transport,
    reflection: Routes,
    seal: Arc<Seal>,
    metrics: Option<Arc<Metrics>>,
    in_flight: Arc<AtomicUsize>,
    plugin: Option<KmsV2>,
    api: Api,
    aws: Option<Arc<crate::aws::AwsKms>>,
    vault: Option<Arc<crate::vault::VaultTransit>>,
    console: Option<Arc<crate::console::Console>>,
    console_tls: Option<tokio_rustls::TlsAcceptor>,
    edge_tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("listen", &self.config.listen).finish_non_exhaustive()
    }
}

impl Prepared {
    /// The configuration it was built from.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Gives up without serving: stops the audit writer and releases the store.
    pub fn close(self) {
        let Prepared { seal, plugin, api, aws, vault, console, .. } = self;
        drop((api, plugin, aws, vault, console));
        seal.close();
    }

    /// Serves on `listener` (and the configured side listeners) until
    /// `shutdown` resolves; returns after the store is released.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let bound = match listener.local_addr() {
            Ok(addr) => tasks::Sockets::bind(&self.config).await.map(|s| (addr, s)),
            Err(e) => Err(e.into()),
        };
        let (addr, sockets) = match bound {
            Ok(b) => b,
            Err(e) => {
                self.close();
                return Err(e);
            }
        };
        let Prepared {
            config,
            transport,
            reflection,
            seal,
            metrics,
            in_flight,
            plugin,
            api,
            aws,
            vault,
            console,
            console_tls,
            edge_tls,
        } = self;
        let drain = Drain::new();
        let mut tasks = tasks::Tasks::new();
        // A cluster node follows etcd and confirms it is current (each task
        // ends with its `Kms`).
        if let Some(kms) = seal.get() {
            for task in kms.cluster_tasks() {
                tokio::spawn(task);
            }
        }
        let health = tasks.health(&seal);
        if let Some(l) = sockets.metrics {
            let m = metrics.clone().expect("metrics are on when they have a listener");
            let served = crate::metrics::serve(l, m, seal.clone(), tasks.stop());
            tasks.listener("metrics", served);
        }
        if let Some(l) = sockets.health {
            // Health only, no key operation: kubelet's gRPC probes cannot do TLS.
            tracing::info!(addr = ?l.local_addr().ok(), "plaintext health checks (grpc.health.v1 only)");
            let served = Transport::builder()
                .add_routes(Routes::new(health.clone()))
                .serve_with_incoming_shutdown(accept::tcp(l, "health", false), tasks.stopped());
            tasks.listener("health", async move {
                if let Err(e) = served.await {
                    tracing::error!(error = %e, "health listener stopped");
                }
            });
        }
        if let (Some(l), Some(plugin), Some(k)) = (sockets.kms_v2, plugin, &config.kms_v2) {
            tracing::info!(socket = %k.socket.display(), key = %k.key, "Kubernetes KMS v2 plugin serving");
            let served = Transport::builder()
                .layer(drain.layer())
                .layer(crate::observe::ObserveLayer::new(metrics.clone(), in_flight.clone()))
                .add_service(crate::k8s_pb::key_management_service_server::KeyManagementServiceServer::new(
                    plugin,
                ))
                .serve_with_incoming_shutdown(accept::unix(l, "kms_v2"), tasks.stopped());
            let socket = k.socket.clone();
            tasks.listener("kms_v2", async move {
                if let Err(e) = served.await {
                    tracing::error!(error = %e, "KMS v2 plugin stopped");
                }
                let _ = std::fs::remove_file(&socket);
            });
        }
        // The HTTP edges share the listener settings but their body limit and timeout answer.
        let edge_settings = |name, max_body, timed_out| crate::http::EdgeSettings {
            name,
            tls: edge_tls.clone(),
            max_body,
            request_timeout: config.edge.request_timeout,
            in_flight: in_flight.clone(),
            timed_out,
        };
        if let (Some(l), Some(aws), Some(a)) = (sockets.aws_kms, aws, &config.aws_kms) {
            let settings = edge_settings("aws_kms", crate::aws::MAX_BODY, Arc::new(crate::aws::timed_out));
            tracing::info!(
                addr = ?l.local_addr().ok(),
                region = %a.region,
                account = %a.account_id,
                tls = settings.tls.is_some(),
                "AWS KMS API serving"
            );
            warn_if_plaintext_off_loopback(&settings, a.listen);
            if let Some(d) = aws.dev_access_key() {
                tracing::warn!(
                    access_key_id = %d.id,
                    secret_access_key = %d.secret.as_str(),
                    "DEVELOPMENT MODE: the AWS KMS API accepts this development access key (principal \"dev\", every role); never use it outside development"
                );
            }
            tasks.listener("aws_kms", crate::http::serve(l, settings, aws.handler(), tasks.stop()));
        }
        if let (Some(l), Some(vault), Some(v)) = (sockets.vault, vault, &config.vault_transit) {
            let settings =
                edge_settings("vault_transit", crate::vault::MAX_BODY, Arc::new(crate::vault::timed_out));
            tracing::info!(
                addr = ?l.local_addr().ok(),
                mount = %v.mount,
                tls = settings.tls.is_some(),
                "Vault Transit API serving"
            );
            warn_if_plaintext_off_loopback(&settings, v.listen);
            if let Some(t) = vault.dev_token() {
                tracing::warn!(
                    token = %t.0.as_str(),
                    "DEVELOPMENT MODE: the Vault Transit API accepts this development token as X-Vault-Token (principal \"dev\", every role); never use it outside development"
                );
            }
            tasks.listener("vault_transit", crate::http::serve(l, settings, vault.handler(), tasks.stop()));
        }
        if let (Some(l), Some(console), Some(c)) = (sockets.console, console, &config.console) {
            let settings = crate::http::EdgeSettings {
                tls: console_tls,
                ..edge_settings("console", crate::console::MAX_BODY, Arc::new(crate::console::timed_out))
            };
            let scheme = if settings.tls.is_some() { "https" } else { "http" };
            let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| c.listen.to_string());
            if c.dev_default {
                tracing::warn!(
                    url = %format!("{scheme}://{addr}/"),
                    "DEVELOPMENT MODE: the web console is on and signs you in as principal \"dev\" (every role) without a token; never use it outside development"
                );
            } else {
                tracing::info!(url = %format!("{scheme}://{addr}/"), "web console serving");
            }
            warn_if_plaintext_off_loopback(&settings, c.listen);
            tasks.listener("console", crate::http::serve(l, settings, console.handler(), tasks.stop()));
        }
        tasks.sweeper(seal.clone(), config.sweep_every);

        match &config.tls {
            Some(t) => tracing::info!(mutual = t.client_ca_file.is_some(), "TLS enabled"),
            None if !addr.ip().is_loopback() => {
                tracing::warn!(%addr, "serving plaintext gRPC on a non-loopback address (allow_insecure = true)")
            }
            None => {}
        }
        if matches!(config.auth, crate::auth::Authenticator::Dev(_)) {
            tracing::warn!(
                "DEVELOPMENT MODE: every caller is principal \"dev\" with every role (loopback only)"
            );
        }
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "keyward serving");
        if let Err(e) = seal.kms() {
            tracing::warn!(state = %e.public_message(), "keyward is SEALED: every request but SealStatus and Unseal is refused until enough key shares are given");
        }
        let max = config.max_request_bytes;
        let limiter = api.limiter();
        let size = crate::grpc::SizeLayer::new(api.clone());
        let routes = reflection
            .add_service(health)
            .add_service(KeyServiceServer::new(KeysApi(api.clone())).max_decoding_message_size(max))
            .add_service(CryptoServiceServer::new(CryptoApi(api.clone())).max_decoding_message_size(max))
            .add_service(AccessServiceServer::new(AccessApi(api.clone())).max_decoding_message_size(max))
            .add_service(AuditServiceServer::new(AuditApi(api.clone())).max_decoding_message_size(max))
            .add_service(ClusterPeerServiceServer::new(PeerApi(api.clone())).max_decoding_message_size(max))
            .add_service(
                OperatorServiceServer::new(OperatorApi {
                    api,
                    data_dir: config.data_dir.clone(),
                    root_key: config.root_key.clone(),
                })
                .max_decoding_message_size(max),
            );
        // TCP_NODELAY: without it, a 4 KiB response waits on Nagle and
        // delayed ACKs for ~40 ms (measured with keyward-bench).
        let main = transport
            .layer(drain.layer())
            .layer(crate::observe::ObserveLayer::new(metrics, in_flight).refunding(limiter))
            // Inside observe (which gives every request its id): tonic's own
            // refusal of an oversized message, as Keyward reports it.
            .layer(size)
            .add_routes(routes)
            .serve_with_incoming_shutdown(accept::tcp(listener, "grpc", true), tasks.stopped());
        let served = tasks.run_main(main, shutdown).await;

        // The listeners have stopped (each drained its connections) and the
        // sweeper has finished; wait for the last responses to be dropped.
        if !drain.wait(STAGE_LIMIT).await {
            tracing::warn!("requests still running after {STAGE_LIMIT:?}; stopping the audit writer anyway");
        }
        if let Some(kms) = seal.get() {
            kms.flush_refusals(true).await;
        }
        seal.close();
        tracing::info!("keyward stopped");
        served.map_err(ServerError::from)
    }
}

/// An HTTP edge in plaintext off loopback (allowed by `allow_insecure`):
/// its credentials cross the network in clear, so it says so.
fn warn_if_plaintext_off_loopback(settings: &crate::http::EdgeSettings, addr: std::net::SocketAddr) {
    if settings.tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            edge = settings.name,
            %addr,
            "serving in plaintext on a non-loopback address (allow_insecure = true): credentials cross the network in clear"
        );
    }
}

/// Opens the data folder and root key named by `config` and serves until
/// `shutdown` resolves.
pub async fn run(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    Server::build(config).await?.serve(listener, shutdown).await
}

/// Serves over an already opened store (tests wrap it to inject faults).
pub async fn run_with_store(
    config: ServerConfig,
    store: Arc<dyn Store>,
    root: RootKey,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    Server::build_with_store(config, store, root)?.serve(listener, shutdown).await
}

/// The main listener's transport: timeouts, per-connection limits and TLS
/// (its files read and parsed here, so a bad one fails before binding).
fn transport(config: &ServerConfig) -> Result<Transport, ServerError> {
    let mut builder = Transport::builder().timeout(config.edge.request_timeout);
    if let Some(n) = config.edge.concurrency_per_connection {
        // Bound what a connection may have in flight at the HTTP/2 layer too
        // (SETTINGS_MAX_CONCURRENT_STREAMS), so excess streams are refused
        // instead of queueing inside the server.
        builder = builder.concurrency_limit_per_connection(n).max_concurrent_streams(Some(n as u32));
    }
    if let Some(t) = &config.tls {
        builder = builder.tls_config(t.read()?).map_err(|e| {
            // The transport error's own text is generic; its source says what is wrong.
            let why = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
            ConfigError::Invalid(format!(
                "tls: {} and {} do not make a usable certificate and key: {why}",
                t.cert_file.display(),
                t.key_file.display()
            ))
        })?;
    }
    Ok(builder)
}

/// Health, and reflection (v1 and v1alpha) over our descriptors and health's.
fn reflection() -> Result<Routes, ServerError> {
    let configure = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = configure().build_v1().map_err(|e| ServerError::Reflection(e.to_string()))?;
    let v1alpha = configure().build_v1alpha().map_err(|e| ServerError::Reflection(e.to_string()))?;
    Ok(Routes::new(v1).add_service(v1alpha))
}

/// The data folder holds the keys (wrapped), the audit log and the
/// development root key: it is created mode 0700, and an existing one that
/// lets group or others in is refused (a configuration error, status 64)
/// rather than silently tightened, so the operator learns who could read it.
pub(crate) fn create_private_dir(dir: &std::path::Path) -> Result<(), ServerError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::Invalid(format!(
            "data folder {}: mode {mode:04o} lets other users in; it must be 0700, owned by the server's user \
             (chmod 0700 {})",
            dir.display(),
            dir.display()
        ))
        .into());
    }
    Ok(())
}
