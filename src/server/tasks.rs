//! The server's running parts and their one shutdown path: the side
//! listeners' sockets (bound together, after everything is built), the tasks
//! that serve them, the health status publisher and the lifecycle sweeper.
//! [`Tasks::run_main`] serves the main listener until the shutdown signal,
//! then stops every task and joins it, in order.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use keyward_core::Kms;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::ServingStatus;

use super::{ServerError, STAGE_LIMIT};
use crate::config::{ConfigError, ServerConfig};
use crate::seal::Seal;

/// The side listeners, bound.
#[derive(Debug)]
pub(super) struct Sockets {
    pub(super) metrics: Option<TcpListener>,
    pub(super) health: Option<TcpListener>,
    pub(super) kms_v2: Option<UnixListener>,
    pub(super) aws_kms: Option<TcpListener>,
    pub(super) vault: Option<TcpListener>,
    pub(super) console: Option<TcpListener>,
}

impl Sockets {
    /// Binds every configured side listener, or none.
    pub(super) async fn bind(config: &ServerConfig) -> Result<Self, ServerError> {
        let metrics = match config.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let health = match config.health_listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let kms_v2 =
            match &config.kms_v2 {
                Some(k) => Some(crate::k8s::bind(&k.socket).map_err(|e| {
                    ConfigError::Invalid(format!("kms_v2.socket {}: {e}", k.socket.display()))
                })?),
                None => None,
            };
        let aws_kms = bind_edge("aws_kms.listen", config.aws_kms.as_ref().map(|a| a.listen)).await?;
        let vault =
            bind_edge("vault_transit.listen", config.vault_transit.as_ref().map(|v| v.listen)).await?;
        let console = match &config.console {
            None => None,
            // `--dev` turns the console on at 127.0.0.1:8080; another dev
            // server (or anything else) holding that port is no reason not to start.
            Some(c) if c.dev_default => match TcpListener::bind(c.listen).await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!(addr = %c.listen, error = %e, "the development console could not listen; serving without it (give --console-listen ADDR for another address)");
                    None
                }
            },
            Some(c) => bind_edge("console_listen", Some(c.listen)).await?,
        };
        Ok(Self { metrics, health, kms_v2, aws_kms, vault, console })
    }
}

/// Binds an HTTP edge's listener, if it has an address; a failure names the field.
async fn bind_edge(
    field: &str,
    addr: Option<std::net::SocketAddr>,
) -> Result<Option<TcpListener>, ServerError> {
    let Some(addr) = addr else { return Ok(None) };
    let l =
        TcpListener::bind(addr).await.map_err(|e| ConfigError::Invalid(format!("{field} {addr}: {e}")))?;
    Ok(Some(l))
}

/// Every task of one server, and the signal that stops them.
#[derive(Debug)]
pub(super) struct Tasks {
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    listeners: Vec<(&'static str, JoinHandle<()>)>,
    sweeper: Option<JoinHandle<()>>,
    health: Option<JoinHandle<()>>,
}

impl Tasks {
    pub(super) fn new() -> Self {
        let (stop_tx, stop_rx) = watch::channel(false);
        Self { stop_tx, stop_rx, listeners: Vec::new(), sweeper: None, health: None }
    }

    /// The shutdown signal, for a task that watches it.
    pub(super) fn stop(&self) -> watch::Receiver<bool> {
        self.stop_rx.clone()
    }

    /// Resolves on the shutdown signal.
    pub(super) fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Runs a listener's task until it has drained after the signal.
    pub(super) fn listener(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.listeners.push((name, tokio::spawn(task)));
    }

    /// The health service: SERVING while unsealed and the audit writer is healthy.
    pub(super) fn health(&mut self, seal: &Arc<Seal>) -> HealthServer<impl Health> {
        let (reporter, service) = tonic_health::server::health_reporter();
        let mut unsealed = seal.watch();
        let seal = seal.clone();
        let stopped = self.stopped();
        self.health = Some(tokio::spawn(async move {
            tokio::pin!(stopped);
            loop {
                unsealed.borrow_and_update();
                // The audit writer's health, without holding the `Kms`
                // (sealing waits for every holder to let go).
                let mut healthy = seal.get().map(|k| k.audit_log().health());
                // A cluster node serves while it is current with etcd: looked at every 100 ms.
                let cluster = seal.get().and_then(|k| k.applied_revision().map(|_| k.is_current()));
                let ok = healthy.as_mut().is_some_and(|h| *h.borrow_and_update()) && cluster != Some(false);
                let status = if ok { ServingStatus::Serving } else { ServingStatus::NotServing };
                for name in [
                    "",
                    "keyward.v1.KeyService",
                    "keyward.v1.CryptoService",
                    "keyward.v1.AuditService",
                    "keyward.v1.AccessService",
                    "keyward.v1.OperatorService",
                ] {
                    reporter.set_service_status(name, status).await;
                }
                let audit_changed = async {
                    match healthy.as_mut() {
                        // A writer that stopped (its `Kms` sealed or closed) changes nothing more.
                        Some(h) => {
                            if h.changed().await.is_err() {
                                std::future::pending::<()>().await
                            }
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                let recheck = async {
                    match cluster {
                        Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    changed = unsealed.changed() => if changed.is_err() { break },
                    _ = audit_changed => {}
                    _ = recheck => {}
                    _ = &mut stopped => break,
                }
            }
        }));
        service
    }

    /// Scheduled lifecycle work: at once (catching up on anything missed
    /// while stopped), then every `every` (`sweep_interval`, a minute by
    /// default), until the signal; a run in progress finishes first. Every second, the refusal summaries of the
    /// second that ended (`Kms::flush_refusals`).
    pub(super) fn sweeper(&mut self, seal: Arc<Seal>, every: Duration) {
        let stopped = self.stopped();
        self.sweeper = Some(tokio::spawn(async move {
            tokio::pin!(stopped);
            let mut tick = tokio::time::interval(every);
            // Refusal summaries: each second's, once it is over (the last
            // one at shutdown, once the requests have drained).
            let mut second = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = second.tick() => {
                        if let Some(kms) = seal.get() {
                            kms.flush_refusals(false).await;
                        }
                        continue;
                    }
                    _ = &mut stopped => {
                        if let Some(kms) = seal.get() {
                            save_token_uses(&kms).await;
                        }
                        return;
                    }
                }
                // Sealed: nothing is due until it is unsealed (which catches up at the next tick).
                let Some(kms) = seal.get() else { continue };
                if let Err(e) = kms.run_due().await {
                    tracing::error!(error = %e, "scheduled lifecycle work failed; retrying at the next tick");
                }
                save_token_uses(&kms).await;
            }
        }));
    }

    /// Serves `main` (which must stop on [`Tasks::stopped`]) until
    /// `shutdown` resolves (or `main` fails), then
    /// signals every task and joins, in order: the main listener, the side
    /// listeners, the sweeper, the health publisher.
    pub(super) async fn run_main<E: Send + 'static>(
        self,
        main: impl Future<Output = Result<(), E>> + Send + 'static,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), E> {
        let mut main = tokio::spawn(main);
        let early = tokio::select! {
            _ = shutdown => None,
            r = &mut main => Some(r),
        };
        let _ = self.stop_tx.send(true);
        let served = match early {
            Some(r) => r,
            None => main.await,
        };
        for (name, mut task) in self.listeners {
            if tokio::time::timeout(STAGE_LIMIT, &mut task).await.is_err() {
                tracing::warn!(listener = name, "still draining after {STAGE_LIMIT:?}; closing it");
                task.abort();
                let _ = task.await;
            }
        }
        for task in [self.sweeper, self.health].into_iter().flatten() {
            let _ = task.await;
        }
        match served {
            Ok(r) => r,
            // Never aborted, so the only way it fails is a panic: pass it on.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// Saves when runtime tokens were last used (once a minute, and at a stop),
/// off the async threads: it is a synced write.
async fn save_token_uses(kms: &Arc<Kms>) {
    let kms = kms.clone();
    match tokio::task::spawn_blocking(move || kms.save_token_uses()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "saving when tokens were last used failed; retrying in a minute")
        }
        Err(e) => tracing::warn!(error = %e, "saving when tokens were last used did not finish"),
    }
}
