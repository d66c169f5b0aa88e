//! A real Keyward server on a free loopback port with RocksDB in a temporary
//! folder, and typed clients for it.

#![expect(dead_code, reason = "each test binary uses a different subset of these helpers")]

pub mod binary;
pub mod clients;
pub mod payments;
pub mod pki;
pub mod rpcs;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keyward::pb::audit_service_client::AuditServiceClient;
use keyward::pb::crypto_service_client::CryptoServiceClient;
use keyward::pb::key_service_client::KeyServiceClient;
use keyward::{pb, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub struct TestServer {
    pub addr: String,
    pub dir: PathBuf,
    pub channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), keyward::ServerError>>>,
}

impl TestServer {
    /// Starts `keyward::run` with the dev configuration over `dir`.
    pub async fn start(dir: &Path) -> Self {
        Self::start_with(dir, ServerConfig::dev(dir), None).await
    }

    /// Starts with a given config, optionally over a given store.
    pub async fn start_with(
        dir: &Path,
        config: ServerConfig,
        store: Option<(Arc<dyn keyward_core::Store>, keyward_crypto::RootKey)>,
    ) -> Self {
        private(dir);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = rx.await;
        };
        let handle = match store {
            None => tokio::spawn(keyward::run(config, listener, shutdown)),
            Some((store, root)) => {
                tokio::spawn(keyward::run_with_store(config, store, root, listener, shutdown))
            }
        };
        let channel = connect(&addr).await;
        Self { addr, dir: dir.to_path_buf(), channel, stop: Some(tx), handle: Some(handle) }
    }

    pub fn keys(&self) -> KeyServiceClient<Channel> {
        KeyServiceClient::new(self.channel.clone())
    }
    pub fn crypto(&self) -> CryptoServiceClient<Channel> {
        CryptoServiceClient::new(self.channel.clone())
    }
    pub fn audit(&self) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(self.channel.clone())
    }

    /// Graceful shutdown; returns what `run` returned.
    pub async fn stop(mut self) -> Result<(), keyward::ServerError> {
        self.stop.take().unwrap().send(()).ok();
        drop(self.channel.clone());
        self.handle.take().unwrap().await.unwrap()
    }

    /// Creates a key (optionally with an alias) and returns its id.
    pub async fn create_key(&self, alias: &str) -> String {
        self.keys()
            .create_key(pb::CreateKeyRequest { alias: alias.into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .key
            .unwrap()
            .key_id
    }

    /// Up to 1000 audit records matching `filter`, newest first.
    pub async fn records(&self, filter: pb::QueryAuditLogRequest) -> Vec<pb::AuditRecord> {
        self.audit()
            .query_audit_log(pb::QueryAuditLogRequest { page_size: 1000, ..filter })
            .await
            .unwrap()
            .into_inner()
            .records
    }

    /// Number of audit records (from the verifier).
    pub async fn audit_count(&self) -> u64 {
        let r = self.audit().verify_audit_log(pb::VerifyAuditLogRequest {}).await.unwrap().into_inner();
        assert!(r.intact, "{r:?}");
        r.records_checked
    }
}

/// Makes `dir` mode 0700: the server refuses a data folder others can enter,
/// and `tempfile` makes them with the default mode.
pub fn private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
}

pub async fn connect(addr: &str) -> Channel {
    for _ in 0..200 {
        if let Ok(c) = Channel::from_shared(addr.to_string()).unwrap().connect().await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("server at {addr} did not come up");
}

/// A request carrying `token` as its bearer token.
pub fn bearer<T>(body: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

pub fn ctx(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Asserts a status code and that the message contains `needle`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    r: Result<T, tonic::Status>,
    code: tonic::Code,
    needle: &str,
) -> tonic::Status {
    let s = r.expect_err("expected an error");
    assert_eq!(s.code(), code, "message: {}", s.message());
    assert!(s.message().contains(needle), "{:?} does not contain {needle:?}", s.message());
    s
}

/// A Kubernetes KMS v2 client on the plugin's unix socket at `path`
/// (retried while the server starts, up to 10 s).
pub async fn kms_v2_client(
    path: PathBuf,
) -> keyward::k8s_pb::key_management_service_client::KeyManagementServiceClient<Channel> {
    use hyper_util::rt::TokioIo;
    use tonic::transport::{Endpoint, Uri};
    for _ in 0..400 {
        let p = path.clone();
        let connected = Endpoint::from_static("http://kms.invalid")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let p = p.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?)) }
            }))
            .await;
        if let Ok(ch) = connected {
            return keyward::k8s_pb::key_management_service_client::KeyManagementServiceClient::new(ch);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no plugin socket at {}", path.display())
}
