//! Accept loops that survive accept errors. When `accept` fails (EMFILE when
//! out of file descriptors, ENOBUFS, ...) retrying at once would spin a core
//! and flood the log; giving up would stop serving. Instead each listener
//! waits, doubling the delay from 5 ms up to 1 s, and logs an error once per
//! kind of failure, then once more when accepting works again.

use std::io;
use std::time::Duration;

use futures_util::Stream;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

const FIRST_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_secs(1);

/// The back-off state of one listener.
#[derive(Debug)]
pub(crate) struct Backoff {
    listener: &'static str,
    delay: Option<Duration>,
    logged: Option<io::ErrorKind>,
}

impl Backoff {
    /// For the listener named `listener` in log lines.
    pub(crate) fn new(listener: &'static str) -> Self {
        Self { listener, delay: None, logged: None }
    }

    /// An accept succeeded: the next failure starts from the shortest delay.
    pub(crate) fn succeeded(&mut self) {
        if self.delay.take().is_some() {
            tracing::info!(listener = self.listener, "accepting connections again");
        }
        self.logged = None;
    }

    /// An accept failed: logs (once per kind of error) and waits.
    pub(crate) async fn failed(&mut self, e: &io::Error) {
        if self.logged != Some(e.kind()) {
            tracing::error!(
                listener = self.listener,
                error = %e,
                "accept failed; retrying with a growing delay (up to 1 s)"
            );
            self.logged = Some(e.kind());
        }
        let delay = next_delay(self.delay);
        self.delay = Some(delay);
        tokio::time::sleep(delay).await;
    }
}

/// The wait after a failure, given the previous wait (none after a success).
fn next_delay(previous: Option<Duration>) -> Duration {
    previous.map_or(FIRST_DELAY, |d| (d * 2).min(MAX_DELAY))
}

/// Accepted TCP connections (with TCP_NODELAY), backing off on errors.
pub(crate) fn tcp(
    listener: TcpListener,
    name: &'static str,
    nodelay: bool,
) -> impl Stream<Item = io::Result<TcpStream>> + Send + 'static {
    futures_util::stream::unfold((listener, Backoff::new(name)), move |(l, mut backoff)| async move {
        loop {
            match l.accept().await {
                Ok((s, _)) => {
                    backoff.succeeded();
                    if nodelay {
                        // Best effort, as hyper does: a socket that refuses is still served.
                        let _ = s.set_nodelay(true);
                    }
                    return Some((Ok(s), (l, backoff)));
                }
                Err(e) => backoff.failed(&e).await,
            }
        }
    })
}

/// Accepted unix socket connections, backing off on errors.
pub(crate) fn unix(
    listener: UnixListener,
    name: &'static str,
) -> impl Stream<Item = io::Result<UnixStream>> + Send + 'static {
    futures_util::stream::unfold((listener, Backoff::new(name)), |(l, mut backoff)| async move {
        loop {
            match l.accept().await {
                Ok((s, _)) => {
                    backoff.succeeded();
                    return Some((Ok(s), (l, backoff)));
                }
                Err(e) => backoff.failed(&e).await,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_up_to_a_second() {
        let mut waits = vec![next_delay(None)];
        for _ in 0..12 {
            waits.push(next_delay(waits.last().copied()));
        }
        assert_eq!((waits[0], waits[1], waits[2]), (FIRST_DELAY, FIRST_DELAY * 2, FIRST_DELAY * 4));
        assert_eq!(*waits.last().unwrap(), MAX_DELAY);
        assert!(waits.windows(2).all(|w| w[0] <= w[1] && w[1] <= MAX_DELAY));
    }

    #[test]
    fn a_success_starts_over() {
        let mut b = Backoff::new("test");
        b.delay = Some(MAX_DELAY);
        b.logged = Some(io::ErrorKind::Other);
        b.succeeded();
        assert_eq!((b.delay, b.logged), (None, None));
        assert_eq!(next_delay(b.delay), FIRST_DELAY);
    }
}
