//! `[cluster]` and `--etcd-endpoints`/`--node-id`: cluster mode, where the
//! keys live in etcd and every node follows them (see
//! `keyward_core::ClusterConfig` and the `keyward-etcd` crate).

use std::path::PathBuf;
use std::time::Duration;

use super::file::FileCluster;
use super::ConfigError;

/// Cluster-mode settings, validated.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// One URL per etcd member (`http://` or `https://`).
    pub etcd_endpoints: Vec<String>,
    /// This node's name (letters, digits, `.`, `_`, `-`; at most 64).
    pub node_id: String,
    /// The address other nodes reach this one at (default: the listen address).
    pub advertise_addr: Option<String>,
    /// How long a node serves after it last confirmed it is current.
    pub freshness_bound: Duration,
    /// Prefix of every etcd key Keyward writes.
    pub etcd_prefix: String,
    /// CA bundle that signs the members' certificates (https endpoints).
    pub etcd_ca_file: Option<PathBuf>,
    /// Client certificate and key for members that ask for one.
    pub etcd_cert_file: Option<PathBuf>,
    /// The client certificate's key.
    pub etcd_key_file: Option<PathBuf>,
}

/// Longest and shortest freshness bound.
const BOUND_RANGE: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(60));

pub(super) fn settings(
    endpoints_flag: Vec<String>,
    node_id_flag: Option<String>,
    file: Option<FileCluster>,
) -> Result<Option<ClusterSettings>, ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    let file = match (file, endpoints_flag.is_empty(), &node_id_flag) {
        (None, true, None) => return Ok(None),
        (None, true, Some(_)) => {
            return invalid("--node-id is for cluster mode: give --etcd-endpoints too".into())
        }
        (f, _, _) => f.unwrap_or_default(),
    };
    let endpoints = if endpoints_flag.is_empty() { file.etcd_endpoints } else { endpoints_flag };
    let endpoints: Vec<String> =
        endpoints.into_iter().map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect();
    if endpoints.is_empty() {
        return invalid("cluster.etcd_endpoints: name at least one etcd member (--etcd-endpoints http://127.0.0.1:2379,...)".into());
    }
    for e in &endpoints {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return invalid(format!("cluster.etcd_endpoints: {e:?} is not an http:// or https:// URL"));
        }
    }
    let node_id = node_id_flag.or(file.node_id).ok_or_else(|| {
        ConfigError::Invalid("cluster mode needs a node id: --node-id NAME (or node_id in [cluster])".into())
    })?;
    if node_id.is_empty()
        || node_id.len() > 64
        || !node_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return invalid(format!("cluster.node_id {node_id:?}: 1 to 64 letters, digits, '.', '_' or '-'"));
    }
    let freshness_bound = match &file.freshness_bound {
        None => Duration::from_secs(2),
        Some(v) => {
            let d = humantime::parse_duration(v).map_err(|e| {
                ConfigError::Invalid(format!(
                    "cluster.freshness_bound {v:?}: {e} (say e.g. \"2s\" or \"1500ms\")"
                ))
            })?;
            if d < BOUND_RANGE.0 || d > BOUND_RANGE.1 {
                return invalid(format!("cluster.freshness_bound {v:?}: must be between 500ms and 60s"));
            }
            d
        }
    };
    let prefix = file.etcd_prefix.unwrap_or_else(|| "/keyward/".into());
    if !prefix.starts_with('/') || !prefix.ends_with('/') {
        return invalid(format!("cluster.etcd_prefix {prefix:?}: must start and end with '/'"));
    }
    if file.etcd_cert_file.is_some() != file.etcd_key_file.is_some() {
        return invalid("cluster.etcd_cert_file and cluster.etcd_key_file go together".into());
    }
    let tls_files = file.etcd_ca_file.is_some() || file.etcd_cert_file.is_some();
    if tls_files && endpoints.iter().any(|e| e.starts_with("http://")) {
        return invalid(
            "cluster: etcd TLS files are set but an endpoint is http://; use https:// endpoints".into(),
        );
    }
    Ok(Some(ClusterSettings {
        etcd_endpoints: endpoints,
        node_id,
        advertise_addr: file.advertise_addr,
        freshness_bound,
        etcd_prefix: prefix,
        etcd_ca_file: file.etcd_ca_file,
        etcd_cert_file: file.etcd_cert_file,
        etcd_key_file: file.etcd_key_file,
    }))
}
