//! A test certificate authority (rcgen) and TLS channels to a server that
//! trusts it.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    SanType,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

pub struct Pki {
    pub ca_pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new() -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "keyward test CA");
        let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        Self { ca_pem: issuer.pem(), issuer }
    }

    /// (certificate PEM, key PEM) for `name` (CN and DNS SAN), for server
    /// and client authentication.
    pub fn leaf(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// (certificate PEM, key PEM) with exactly these names and extended key
    /// usages: subject CN `cn` (if any) and the given subject alternative names.
    pub fn client(
        &self,
        cn: Option<&str>,
        sans: Vec<SanType>,
        eku: Vec<ExtendedKeyUsagePurpose>,
    ) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        p.subject_alt_names = sans;
        p.extended_key_usages = eku;
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

pub async fn channel(addr: &str, pki: &Pki, identity: Option<&(String, String)>) -> Channel {
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca_pem)).domain_name("localhost");
    if let Some((c, k)) = identity {
        tls = tls.identity(Identity::from_pem(c, k));
    }
    let endpoint = Channel::from_shared(addr.to_string()).unwrap().tls_config(tls).unwrap();
    for _ in 0..200 {
        if let Ok(c) = endpoint.connect().await {
            return c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("no TLS connection to {addr}")
}

/// A server on 127.0.0.1:0 with TLS (a leaf of `pki` for `localhost`),
/// client certificates verified against `pki`, and the `[[principals]]`
/// tables given, over a data folder in `dir`.
pub struct TlsServer {
    /// `https://127.0.0.1:PORT`.
    pub addr: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), keyward::ServerError>>,
}

impl TlsServer {
    pub async fn start(dir: &Path, pki: &Pki, principals: &str) -> Self {
        Self::start_with(dir, pki, "", principals).await
    }

    /// As [`TlsServer::start`], with top-level settings `top` (before the tables).
    pub async fn start_with(dir: &Path, pki: &Pki, top: &str, principals: &str) -> Self {
        let (server_cert, server_key) = pki.leaf("localhost");
        let root = dir.join("root.key");
        keyward::config::create_root_key_file(&root).unwrap();
        let toml = format!(
            "root_key_file = \"{root}\"\n{top}\n[tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\nclient_ca_file = \"{ca}\"\n\n{principals}",
            root = root.display(),
            cert = write(dir, "server.crt", &server_cert),
            key = write(dir, "server.key", &server_key),
            ca = write(dir, "ca.crt", &pki.ca_pem),
        );
        let overrides = keyward::config::Overrides { data_dir: Some(dir.join("data")), ..Default::default() };
        let config = keyward::ServerConfig::from_toml(&toml, Path::new("test.toml"), &overrides).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(keyward::run(config, listener, async move {
            let _ = stopped.await;
        }));
        Self { addr, stop, task }
    }

    /// Stops the server and waits for its clean shutdown.
    pub async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}
