//! Knowing when every request is gone. Handlers hold the `Kms` (and so the
//! store) while they run, and a streaming response holds it in its body
//! until the body is dropped, which can happen on a connection task after
//! the server's accept loop has returned. [`DrainLayer`] gives every request
//! future and response body a token; [`Drain::wait`] resolves when all
//! tokens are dropped, so shutdown knows, without polling, that no request
//! still reaches the store.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// A request (or response body) in progress; never sends.
#[derive(Debug, Clone)]
struct Token {
    _alive: mpsc::Sender<()>,
}

/// The waiting side.
#[derive(Debug)]
pub(crate) struct Drain {
    token: Option<Token>,
    rx: mpsc::Receiver<()>,
}

impl Drain {
    /// A drain with no request yet.
    pub(crate) fn new() -> Self {
        let (tx, rx) = mpsc::channel(1);
        Self { token: Some(Token { _alive: tx }), rx }
    }

    /// The layer that hands out tokens (to put outermost on a server).
    pub(crate) fn layer(&self) -> DrainLayer {
        DrainLayer(self.token.clone().expect("layers are made before waiting"))
    }

    /// Waits until every request and response body is dropped (at most
    /// `limit`); false when some were still alive at the limit.
    pub(crate) async fn wait(mut self, limit: Duration) -> bool {
        self.token = None;
        tokio::time::timeout(limit, self.rx.recv()).await.is_ok()
    }
}

/// Adds [`Drained`] to a service.
#[derive(Debug, Clone)]
pub(crate) struct DrainLayer(Token);

impl<S> tower::Layer<S> for DrainLayer {
    type Service = Drained<S>;
    fn layer(&self, inner: S) -> Drained<S> {
        Drained { inner, token: self.0.clone() }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Drained<S> {
    inner: S,
    token: Token,
}

impl<S, B, RB> tower::Service<http::Request<B>> for Drained<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Guarded<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let token = self.token.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|body| Guarded { body, _token: token }))
        })
    }
}

/// A response body that holds its request's token until dropped.
#[derive(Debug)]
pub(crate) struct Guarded<B> {
    body: B,
    _token: Token,
}

impl<B: Body + Unpin> Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
