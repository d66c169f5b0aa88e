//! The Kubernetes KMS v2 plugin (`k8s.io/kms/apis/v2`, package `v2`), served
//! on a unix socket by the same process (`--kms-v2-socket`, `--kms-v2-key`).
//!
//! kube-apiserver seals its data-encryption keys through it:
//! - `Status` (polled every 10-60 s) is answered from memory: `version`
//!   "v2"; `healthz` "ok" only while the key is enabled and the audit log is
//!   writable, else a short reason; `key_id` = `<key uuid>:v<primary version>`,
//!   not secret, 42-47 bytes, changing on every rotation and never reused
//!   (versions only grow, key ids are never reused).
//! - `Encrypt` seals under the primary version (ciphertext = Keyward format
//!   v1, plaintext + 81 bytes, refused above 1 kB) and returns the same
//!   `key_id` form for the version used. No annotations.
//! - `Decrypt` accepts ciphertexts of every enabled version; the request's
//!   `key_id` must name this key and the version in the ciphertext's header,
//!   otherwise it is refused.
//!
//! Every Encrypt and Decrypt goes through the same use cases as the gRPC API
//! and is audited, with principal `kube-apiserver`, the socket peer's uid and
//! pid, and the request `uid` as the request id. Whoever can open the socket
//! is the apiserver: the socket is created mode 0600.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use keyward_core::{
    Caller, Edge, Grant, KeyId, KeySelector, KeyState, Kms, KmsError, Operation, Permission, Policy, Role,
};
use keyward_crypto::{CiphertextHeader, Plaintext, HEADER_LEN};
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};

use crate::grpc::{respond, to_status};
use crate::k8s_pb::{self as v2, key_management_service_server::KeyManagementService};
use crate::observe::sane_request_id;
use crate::seal::Seal;

/// Largest ciphertext the apiserver accepts.
pub const MAX_CIPHERTEXT: usize = 1024;
/// Ciphertext bytes beyond the plaintext (header + GCM tag).
const OVERHEAD: usize = HEADER_LEN + 16;

/// The principal every plugin call is recorded under.
pub const PRINCIPAL: &str = crate::auth::KMS_V2_PRINCIPAL;

/// The plugin service over one key.
#[derive(Debug, Clone)]
pub struct KmsV2 {
    seal: Arc<Seal>,
    /// The key as configured (an id or alias).
    configured: String,
    /// The key it resolved to, the first time the server was unsealed.
    bound: Arc<OnceLock<Binding>>,
    socket: String,
}

/// The key the plugin serves, resolved once.
#[derive(Debug)]
struct Binding {
    key: KeyId,
    /// `key` as the use cases take it (formatted once).
    key_ref: String,
    policy: Arc<Policy>,
}

/// Resolves the plugin's key once (an alias moved later does not move it).
fn bind_key<'a>(bound: &'a OnceLock<Binding>, configured: &str, kms: &Kms) -> Result<&'a Binding, KmsError> {
    if let Some(b) = bound.get() {
        return Ok(b);
    }
    let (id, _, _) = kms.peek_key(configured)?;
    let policy = Arc::new(Policy::new(
        [Role::User].into(),
        vec![Grant::new(vec![KeySelector::Id(id)], [Permission::Encrypt, Permission::Decrypt])],
    ));
    let _ = bound.set(Binding { key: id, key_ref: id.to_string(), policy });
    Ok(bound.get().expect("set just now"))
}

/// The non-secret id kube-apiserver tracks: key and version.
pub fn version_id(key: KeyId, version: u32) -> String {
    format!("{key}:v{version}")
}

fn parse_version_id(s: &str) -> Option<(KeyId, u32)> {
    let (k, v) = s.rsplit_once(":v")?;
    Some((k.parse().ok()?, v.parse().ok()?))
}

impl KmsV2 {
    /// Binds the plugin to `key` (an id or alias, resolved now, or on a
    /// sealed server when it is first unsealed: an alias moved later does
    /// not move the plugin).
    pub fn new(seal: Arc<Seal>, key: &str, socket: &std::path::Path) -> Result<Self, KmsError> {
        let plugin = Self {
            seal,
            configured: key.to_string(),
            bound: Arc::new(OnceLock::new()),
            socket: socket.display().to_string(),
        };
        match plugin.seal.get() {
            // Unsealed at start: a key that does not resolve refuses to start.
            Some(kms) => {
                bind_key(&plugin.bound, &plugin.configured, &kms)?;
            }
            // Sealed: bound when unsealed (a failure is logged; Status says it).
            None => {
                let (bound, configured) = (plugin.bound.clone(), plugin.configured.clone());
                plugin.seal.on_unseal(move |kms| {
                    if let Err(e) = bind_key(&bound, &configured, kms) {
                        tracing::error!(key = %configured, error = %e.public_message(), "KMS v2 plugin: its key does not resolve; every plugin call fails until the configuration names an existing key");
                    }
                });
            }
        }
        Ok(plugin)
    }

    /// The key served, resolved the first time it is asked for unsealed.
    fn binding(&self, kms: &Kms) -> Result<&Binding, KmsError> {
        bind_key(&self.bound, &self.configured, kms)
    }

    /// The key service and the key, or the status to answer.
    fn live(&self) -> Result<(Arc<Kms>, &Binding), Status> {
        let kms = self.seal.kms().map_err(|e| to_status(&e))?;
        let b = self.binding(&kms).map_err(|e| to_status(&e))?;
        Ok((kms, b))
    }

    fn caller<T>(&self, req: &Request<T>, uid: &str, b: &Binding) -> Caller {
        let peer = match req.extensions().get::<UdsConnectInfo>().and_then(|i| i.peer_cred) {
            Some(c) => format!(
                "unix:{} uid={} pid={}",
                self.socket,
                c.uid(),
                c.pid().map(|p| p.to_string()).unwrap_or_default()
            ),
            None => format!("unix:{}", self.socket),
        };
        let request_id = if sane_request_id(uid) { uid.to_string() } else { keyward_core::new_request_id() };
        // Log lines of this call carry the id its audit record has.
        tracing::Span::current().record("uid", request_id.as_str());
        Caller { request_id, principal: PRINCIPAL.into(), peer, edge: Edge::KmsV2, policy: b.policy.clone() }
    }

    /// What `Status` reports; from memory only.
    pub fn status(&self) -> v2::StatusResponse {
        let kms = match self.seal.kms() {
            Ok(k) => k,
            Err(e) => {
                return v2::StatusResponse {
                    version: "v2".into(),
                    healthz: e.public_message(),
                    key_id: String::new(),
                }
            }
        };
        let b = match self.binding(&kms) {
            Ok(b) => b,
            Err(e) => {
                let healthz = format!("key {}: {}", self.configured, e.public_message());
                return v2::StatusResponse { version: "v2".into(), healthz, key_id: String::new() };
            }
        };
        let (healthz, key_id) = match kms.peek_key(&b.key_ref) {
            Err(e) => (format!("key {}: {}", b.key, e.public_message()), String::new()),
            Ok((id, state, primary)) => {
                let healthz = if !*kms.audit_log().health().borrow() {
                    "audit log not writable".to_string()
                } else if state != KeyState::Enabled {
                    format!("key {id} is {}", state.as_str())
                } else {
                    "ok".to_string()
                };
                (healthz, version_id(id, primary))
            }
        };
        v2::StatusResponse { version: "v2".into(), healthz, key_id }
    }
}

#[tonic::async_trait]
impl KeyManagementService for KmsV2 {
    async fn status(&self, _: Request<v2::StatusRequest>) -> Result<Response<v2::StatusResponse>, Status> {
        Ok(Response::new(KmsV2::status(self)))
    }

    async fn encrypt(
        &self,
        req: Request<v2::EncryptRequest>,
    ) -> Result<Response<v2::EncryptResponse>, Status> {
        let (kms, b) = self.live()?;
        let c = self.caller(&req, &req.get_ref().uid, b);
        let r = req.into_inner();
        if r.plaintext.len() + OVERHEAD > MAX_CIPHERTEXT {
            let e = KmsError::invalid(
                "plaintext",
                format!(
                    "at most {} bytes, so the ciphertext fits the KMS v2 limit of {MAX_CIPHERTEXT}",
                    MAX_CIPHERTEXT - OVERHEAD
                ),
            );
            return Err(to_status(&kms.refuse_key(&c, Operation::Encrypt, &b.key_ref, e).await));
        }
        let out = kms.encrypt(&c, &b.key_ref, Plaintext::new(r.plaintext), HashMap::new()).await;
        respond(
            &c,
            out.map(|o| v2::EncryptResponse {
                key_id: version_id(o.key_id, o.key_version),
                ciphertext: o.ciphertext,
                annotations: HashMap::new(),
            }),
        )
    }

    async fn decrypt(
        &self,
        req: Request<v2::DecryptRequest>,
    ) -> Result<Response<v2::DecryptResponse>, Status> {
        let (kms, b) = self.live()?;
        let c = self.caller(&req, &req.get_ref().uid, b);
        let r = req.into_inner();
        // The key_id must name this key and the version the ciphertext says.
        let header = CiphertextHeader::parse(&r.ciphertext).ok();
        let named = parse_version_id(&r.key_id);
        let matches = match (named, &header) {
            (Some((k, v)), Some(h)) => k == b.key && KeyId::from_bytes(h.key_id) == k && h.version == v,
            _ => false,
        };
        if !matches {
            let e = KmsError::invalid(
                "key_id",
                format!(
                    "{:?} is not a version of key {} that made this ciphertext",
                    keyward_core::bounded(&r.key_id, 64),
                    b.key
                ),
            );
            return Err(to_status(&kms.refuse_key(&c, Operation::Decrypt, &b.key_ref, e).await));
        }
        let out = kms.decrypt(&c, &r.ciphertext, HashMap::new(), Some(&b.key_ref)).await;
        respond(&c, out.map(|o| v2::DecryptResponse { plaintext: o.plaintext.into_exposed() }))
    }
}

/// Binds the plugin's unix socket: removes a stale socket left by a previous
/// run (never any other kind of file, never one a live server answers on),
/// and creates it mode 0600.
///
/// The socket never exists at `path` with looser permissions, not even for
/// an instant: it is bound inside a fresh private directory (mode 0700, next
/// to `path`, so nobody else can reach the socket there), set to 0600, and
/// only then renamed into place. This avoids `umask`, which is process-wide
/// and would also apply to files other threads (RocksDB, the audit writer)
/// create meanwhile; and it closes the window a chmod after binding leaves
/// open, in which another local user could connect to a socket created with
/// the process's default mode.
pub fn bind(path: &std::path::Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.file_type().is_socket() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is in use by another running server", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    // Short, so the temporary socket path stays within sun_path's 108 bytes
    // wherever the final one does (or nearly).
    // Unique to this process and call (a leftover of the same name is from a
    // process that died: no live one has this pid).
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let private = parent.join(format!(".kw{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let bound = (|| {
        let staged = private.join("s");
        let listener = tokio::net::UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    bound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bind_replaces_a_stale_socket_but_not_a_live_one_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.sock");
        let live = bind(&path).unwrap();
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        // The socket answers at its final path, and the private staging
        // directory is gone.
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("kms.sock")]);
        assert_eq!(bind(&path).unwrap_err().kind(), std::io::ErrorKind::AddrInUse);
        drop(live);
        bind(&path).unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(bind(&file).unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
    }

    #[test]
    fn version_ids_round_trip_and_stay_small() {
        let k = KeyId::generate();
        let s = version_id(k, u32::MAX);
        assert!(s.len() <= 1024);
        assert_eq!(parse_version_id(&s), Some((k, u32::MAX)));
        assert_eq!(parse_version_id(&version_id(k, 1)), Some((k, 1)));
        for bad in ["", "v1", "not-a-uuid:v1", &format!("{k}:1"), &format!("{k}:vx")] {
            assert_eq!(parse_version_id(bad), None, "{bad}");
        }
    }
}
