//! The HTTP/1.1 listeners of the JSON edges (the AWS KMS API, `src/aws/`;
//! the Vault Transit API, `src/vault/`): accept (with back-off), optional
//! TLS (the server's certificate and key), bounded connections, header and
//! request timeouts, a bounded body, a request id, the in-flight count the
//! audit writer batches by, and a graceful stop. An edge supplies only an
//! [`Handler`]: what to answer for one request whose body has been read.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::Instrument;

use crate::config::{ConfigError, TlsConfig};

/// Most connections one edge holds open at once; past it, accepting waits.
const MAX_CONNECTIONS: usize = 1024;
/// Most connections from one IP address; past it, a new one is closed at
/// once (so one peer cannot take every slot).
const MAX_CONNECTIONS_PER_IP: usize = 64;
/// How long a client may take to send a request's headers, or its body.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// A request as an edge sees it: head, body (or why it was not read), peer,
/// and the request id its audit record and response carry.
#[derive(Debug)]
pub(crate) struct EdgeRequest {
    /// Method, URI and headers.
    pub head: http::request::Parts,
    /// The body, read up to the edge's limit.
    pub body: Result<Bytes, BodyError>,
    /// The client's address.
    pub peer: SocketAddr,
    /// A fresh UUID.
    pub request_id: String,
    /// The client's certificate chain, when the listener asks for one
    /// (the console under mutual TLS) and the client gave it.
    pub client_certs: Option<Arc<Vec<rustls_pki_types::CertificateDer<'static>>>>,
}

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Longer than the limit (bytes).
    TooLarge(usize),
    /// The connection failed or timed out while sending it.
    Unreadable,
}

/// The answer to one request.
pub(crate) type EdgeResponse = http::Response<Full<Bytes>>;

/// What an edge does with a request.
pub(crate) type Handler =
    Arc<dyn Fn(EdgeRequest) -> Pin<Box<dyn Future<Output = EdgeResponse> + Send>> + Send + Sync>;

/// The edge's own answer when a request ran out of time (in its error
/// shape, carrying the request id).
pub(crate) type TimedOut = Arc<dyn Fn(&str) -> EdgeResponse + Send + Sync>;

/// How an edge listener serves.
#[derive(Clone)]
pub(crate) struct EdgeSettings {
    /// For log lines.
    pub name: &'static str,
    /// TLS, or plaintext (loopback only; checked by the configuration).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Largest body read.
    pub max_body: usize,
    /// Longest a request may take, body included.
    pub request_timeout: Duration,
    /// Requests being handled, shared with the audit writer.
    pub in_flight: Arc<AtomicUsize>,
    /// The answer to a request that ran out of time.
    pub timed_out: TimedOut,
}

impl std::fmt::Debug for EdgeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeSettings")
            .field("name", &self.name)
            .field("tls", &self.tls.is_some())
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

/// A TLS acceptor over the server's certificate and key (client
/// certificates are not asked for: these edges authenticate requests by
/// their own credentials).
pub(crate) fn tls_acceptor(t: &TlsConfig) -> Result<tokio_rustls::TlsAcceptor, ConfigError> {
    acceptor(t, false)
}

/// As [`tls_acceptor`], also asking for a client certificate (optional,
/// verified against `client_ca_file`) where mutual TLS is configured: the
/// console's certificate sign-in.
pub(crate) fn tls_acceptor_with_client_certs(
    t: &TlsConfig,
) -> Result<tokio_rustls::TlsAcceptor, ConfigError> {
    acceptor(t, true)
}

fn acceptor(t: &TlsConfig, client_certs: bool) -> Result<tokio_rustls::TlsAcceptor, ConfigError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, p: &std::path::Path, e: &dyn std::fmt::Display| {
        ConfigError::Invalid(format!("tls: {what} {}: {e}", p.display()))
    };
    let certs = CertificateDer::pem_file_iter(&t.cert_file)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad("cannot read the certificate chain", &t.cert_file, &e))?;
    let key =
        PrivateKeyDer::from_pem_file(&t.key_file).map_err(|e| bad("cannot read the key", &t.key_file, &e))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Invalid(format!("tls: {e}")))?;
    let builder = match (&t.client_ca_file, client_certs) {
        (Some(ca), true) => {
            let mut roots = tokio_rustls::rustls::RootCertStore::empty();
            for c in
                CertificateDer::pem_file_iter(ca).map_err(|e| bad("cannot read the client CA", ca, &e))?
            {
                let c = c.map_err(|e| bad("cannot read the client CA", ca, &e))?;
                roots.add(c).map_err(|e| bad("a bad client CA certificate in", ca, &e))?;
            }
            let verifier = tokio_rustls::rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| bad("cannot verify clients with", ca, &e))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| bad("the certificate and key do not match", &t.cert_file, &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves `handler` on `listener` until `stop` is signalled; then lets each
/// open connection finish its response and returns once all have closed.
pub(crate) async fn serve(
    listener: TcpListener,
    settings: EdgeSettings,
    handler: Handler,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_ip: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>> = Arc::default();
    let mut backoff = crate::server::accept::Backoff::new(settings.name);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            _ = signalled(&mut stop) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = signalled(&mut stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff.succeeded();
                a
            }
            Err(e) => {
                backoff.failed(&e).await;
                continue;
            }
        };
        let Some(ip_slot) = IpSlot::take(&per_ip, peer.ip()) else {
            tracing::debug!(%peer, "too many connections from this address; closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        while connections.try_join_next().is_some() {}
        let (settings, handler, stop) = (settings.clone(), handler.clone(), stop.clone());
        connections.spawn(async move {
            let _ip_slot = ip_slot;
            match settings.tls.clone() {
                None => connection(stream, peer, None, settings, handler, stop).await,
                Some(tls) => match tokio::time::timeout(HEADER_TIMEOUT, tls.accept(stream)).await {
                    Ok(Ok(s)) => {
                        let certs = s.get_ref().1.peer_certificates().map(|c| Arc::new(c.to_vec()));
                        connection(s, peer, certs, settings, handler, stop).await
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
            drop(slot);
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// One of an IP address's connections, released on drop.
struct IpSlot {
    map: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl IpSlot {
    fn take(
        map: &Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
        ip: std::net::IpAddr,
    ) -> Option<Self> {
        let mut m = map.lock().expect("connection table lock");
        let n = m.entry(ip).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_IP {
            return None;
        }
        *n += 1;
        Some(Self { map: map.clone(), ip })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self.map.lock().expect("connection table lock");
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// A request being handled, counted for the audit writer while it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(n: &Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One HTTP/1 connection; closes gracefully on stop.
async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    certs: Option<Arc<Vec<rustls_pki_types::CertificateDer<'static>>>>,
    settings: EdgeSettings,
    handler: Handler,
    mut stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (settings, handler, certs) = (settings.clone(), handler.clone(), certs.clone());
        async move { Ok::<_, std::convert::Infallible>(one_request(req, peer, certs, &settings, &handler).await) }
    });
    let io = hyper_util::rt::TokioIo::new(stream);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        // A client that half-closes after its request still gets its answer
        // (and the request is not dropped half done).
        .half_close(true)
        .max_buf_size(64 * 1024)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        _ = signalled(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, %peer, "connection ended");
    }
}

/// Reads the body within its own deadline and the limit, then runs the
/// handler to completion in a task of its own, inside a span naming the
/// request id: a client that goes away cannot cancel a request half done
/// (its audit record is written either way).
async fn one_request(
    req: hyper::Request<hyper::body::Incoming>,
    peer: SocketAddr,
    client_certs: Option<Arc<Vec<rustls_pki_types::CertificateDer<'static>>>>,
    settings: &EdgeSettings,
    handler: &Handler,
) -> EdgeResponse {
    let request_id = keyward_core::new_request_id();
    let span = tracing::info_span!("request", request_id = %request_id, edge = settings.name);
    let (head, body) = req.into_parts();
    let max = settings.max_body;
    let read = async {
        match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, max).collect()).await {
            Ok(Ok(b)) => Ok(b.to_bytes()),
            Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                Err(BodyError::TooLarge(max))
            }
            Ok(Err(_)) | Err(_) => Err(BodyError::Unreadable),
        }
    };
    let body = read.instrument(span.clone()).await;
    let in_flight = InFlight::enter(&settings.in_flight);
    let handling = handler(EdgeRequest { head, body, peer, request_id: request_id.clone(), client_certs });
    let handled = tokio::spawn(
        async move {
            let _counted = in_flight;
            handling.await
        }
        .instrument(span),
    );
    let answered = tokio::time::timeout(settings.request_timeout, handled).await;
    match answered {
        Ok(Ok(resp)) => resp,
        Ok(Err(_)) | Err(_) => (settings.timed_out)(&request_id),
    }
}

/// Resolves once stop has been signalled.
async fn signalled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
