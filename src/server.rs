//! Server bootstrap: `run(config, listener, shutdown)`.
//!
//! The binary parses flags and calls [`run`]; the end-to-end tests call the
//! same function on `127.0.0.1:0`. [`run_with_store`] lets tests put a
//! fault-injecting wrapper around the real store.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_core::{Kms, OpenError, Store, SystemClock};
use keyward_crypto::RootKey;
use keyward_store::RocksStore;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::config::{load_root_key, ConfigError, ServerConfig};
use crate::grpc::{Api, AuditApi, CryptoApi, KeysApi};
use crate::pb;
use crate::pb::audit_service_server::AuditServiceServer;
use crate::pb::crypto_service_server::CryptoServiceServer;
use crate::pb::key_service_server::KeyServiceServer;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Bad configuration or root key.
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
    /// IO on the data folder.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Opens the data folder and root key named by `config` and serves until
/// `shutdown` resolves.
pub async fn run(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    create_private_dir(&config.data_dir)?;
    let root = load_root_key(&config.root_key)?;
    let db_dir = config.data_dir.join("db");
    let store = RocksStore::open(&db_dir)
        .map_err(|source| ServerError::Store { path: db_dir.display().to_string(), source })?;
    run_with_store(config, Arc::new(store), root, listener, shutdown).await
}

/// Serves over an already opened store (tests wrap it to inject faults).
pub async fn run_with_store(
    config: ServerConfig,
    store: Arc<dyn Store>,
    root: RootKey,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let metrics = config.metrics_listen.map(|_| Arc::new(crate::metrics::Metrics::new()));
    let mut kms_config = config.kms.clone();
    if let Some(m) = &metrics {
        kms_config.audit.observer = Some(m.clone());
    }
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    kms_config.audit.in_flight = Some(in_flight.clone());
    let kms = Arc::new(Kms::open(store.clone(), root, Arc::new(SystemClock), kms_config)?);
    let audit = kms.audit_log().clone();
    // One shutdown signal for every listener.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut side_tasks = Vec::new();
    if let (Some(addr), Some(m)) = (config.metrics_listen, &metrics) {
        let listener = TcpListener::bind(addr).await?;
        side_tasks.push(tokio::spawn(crate::metrics::serve(
            listener,
            m.clone(),
            kms.clone(),
            stop_rx.clone(),
        )));
    }
    if let Some(k) = &config.kms_v2 {
        let plugin = crate::k8s::KmsV2::new(kms.clone(), &k.key, &k.socket)
            .map_err(|e| ConfigError::Invalid(format!("kms_v2.key {:?}: {}", k.key, e.public_message())))?;
        let listener = crate::k8s::bind(&k.socket)
            .map_err(|e| ConfigError::Invalid(format!("kms_v2.socket {}: {e}", k.socket.display())))?;
        let incoming = futures_util::stream::unfold(listener, |l| async move {
            let accepted = l.accept().await.map(|(s, _)| s);
            Some((accepted, l))
        });
        tracing::info!(socket = %k.socket.display(), key = %k.key, "Kubernetes KMS v2 plugin serving");
        let layer = crate::observe::ObserveLayer::new(metrics.clone(), in_flight.clone());
        let server = Server::builder().layer(layer).add_service(
            crate::k8s_pb::key_management_service_server::KeyManagementServiceServer::new(plugin),
        );
        let socket = k.socket.clone();
        let stop = stopped(stop_rx.clone());
        side_tasks.push(tokio::spawn(async move {
            if let Err(e) = server.serve_with_incoming_shutdown(incoming, stop).await {
                tracing::error!(error = %e, "KMS v2 plugin stopped");
            }
            let _ = std::fs::remove_file(&socket);
        }));
    }
    // Scheduled destructions: at start (catching up on anything missed while
    // stopped), then every minute.
    let sweeper = {
        let kms = kms.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                if let Err(e) = kms.run_due().await {
                    tracing::error!(error = %e, "scheduled lifecycle work failed; retrying at the next tick");
                }
            }
        })
    };
    let limiter = config.edge.rate.map(|(rate, burst)| crate::grpc::RateLimiter::new(rate, burst));
    let api = Api::new(kms.clone(), config.auth.clone(), limiter);
    drop(kms);

    let (health, health_service) = tonic_health::server::health_reporter();
    let mut healthy = audit.health();
    tokio::spawn(async move {
        loop {
            let status =
                if *healthy.borrow_and_update() { ServingStatus::Serving } else { ServingStatus::NotServing };
            for name in ["", "keyward.v1.KeyService", "keyward.v1.CryptoService", "keyward.v1.AuditService"] {
                health.set_service_status(name, status).await;
            }
            if healthy.changed().await.is_err() {
                break;
            }
        }
    });

    if let Some(addr) = config.health_listen {
        // Health only, no key operation: kubelet's gRPC probes cannot do TLS.
        let listener = TcpListener::bind(addr).await?;
        tracing::info!(addr = %listener.local_addr()?, "plaintext health checks (grpc.health.v1 only)");
        let server = Server::builder().add_service(health_service.clone());
        let stop = stopped(stop_rx.clone());
        side_tasks.push(tokio::spawn(async move {
            if let Err(e) = server.serve_with_incoming_shutdown(TcpIncoming::from(listener), stop).await {
                tracing::error!(error = %e, "health listener stopped");
            }
        }));
    }

    let reflection = |b: tonic_reflection::server::Builder<'static>| {
        b.register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection(tonic_reflection::server::Builder::configure())
        .build_v1()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection(tonic_reflection::server::Builder::configure())
        .build_v1alpha()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;

    let max = config.max_request_bytes;
    let addr = listener.local_addr()?;
    let mut builder = Server::builder().timeout(config.edge.request_timeout);
    if let Some(n) = config.edge.concurrency_per_connection {
        // Bound what a connection may have in flight at the HTTP/2 layer too
        // (SETTINGS_MAX_CONCURRENT_STREAMS), so excess streams are refused
        // instead of queueing inside the server.
        builder = builder.concurrency_limit_per_connection(n).max_concurrent_streams(Some(n as u32));
    }
    match &config.tls {
        Some(t) => {
            builder = builder.tls_config(tls_config(t)?)?;
            tracing::info!(mutual = t.client_ca_file.is_some(), "TLS enabled");
        }
        None if !addr.ip().is_loopback() => {
            tracing::warn!(%addr, "serving plaintext gRPC on a non-loopback address (allow_insecure = true)")
        }
        None => {}
    }
    if matches!(config.auth, crate::auth::Authenticator::Dev(_)) {
        tracing::warn!("DEVELOPMENT MODE: every caller is principal \"dev\" with every role (loopback only)");
    }
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "keyward serving");
    let served = builder
        .layer(crate::observe::ObserveLayer::new(metrics.clone(), in_flight.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(KeyServiceServer::new(KeysApi(api.clone())).max_decoding_message_size(max))
        .add_service(CryptoServiceServer::new(CryptoApi(api.clone())).max_decoding_message_size(max))
        .add_service(AuditServiceServer::new(AuditApi(api.clone())).max_decoding_message_size(max))
        .serve_with_incoming_shutdown(
            // TCP_NODELAY: without it, a 4 KiB response waits on Nagle and
            // delayed ACKs for ~40 ms (measured with keyward-bench).
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            stopped(stop_rx.clone()),
        )
        .await;
    drop(api);
    sweeper.abort();
    let _ = sweeper.await;
    for t in side_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    // Write what is queued and release the store, so the data folder can be
    // reopened (by a restart in the same process, or by offline tools).
    audit.stop(Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&store) > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::info!("keyward stopped");
    served.map_err(ServerError::from)
}

fn tls_config(t: &crate::config::TlsConfig) -> Result<tonic::transport::ServerTlsConfig, ServerError> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| ConfigError::Invalid(format!("tls: cannot read {}: {e}", p.display())))
    };
    let mut c = ServerTlsConfig::new().identity(Identity::from_pem(read(&t.cert_file)?, read(&t.key_file)?));
    if let Some(ca) = &t.client_ca_file {
        c = c.client_ca_root(Certificate::from_pem(read(ca)?)).client_auth_optional(!t.require_client_cert);
    }
    Ok(c)
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    Ok(())
}
