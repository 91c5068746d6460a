//! Running one node process: load its identity, have the wiring place build everything, start
//! the supervisor, wait for a signal, drain.

use std::future::Future;
use std::sync::Arc;

use ractor::Actor;
use tracing::{Instrument, info, info_span};

use crate::config::{Config, LogFormat, LogSection};
pub use crate::supervisor::NodeError;
use crate::supervisor::{Supervisor, SupervisorMsg, wiring};
use crate::transport::tls::Identity;

/// How long a graceful stop waits for services to finish (the last clicks to reach their
/// partitions).
const SERVICES_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Sets up logging for a node process: `RUST_LOG` if set, else `log.filter`. Colours only on a
/// terminal: log files (`dev up`, the test harness, systemd) get plain text.
pub fn init_tracing(log: &LogSection) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs a node until SIGTERM or SIGINT, then shuts it down gracefully.
pub async fn run(config: Config) -> Result<(), NodeError> {
    run_until(config, shutdown_signal()).await
}

/// Runs a node until `shutdown` completes (or an actor keeps failing).
pub async fn run_until(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    let span = info_span!("node", node_id = config.node.id);
    run_inner(config, shutdown).instrument(span).await
}

async fn run_inner(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    let identity = Identity::load(&config.tls)?;
    if identity.node_id != config.node.id {
        return Err(NodeError::IdentityMismatch {
            path: config.tls.cert.display().to_string(),
            cert_id: identity.node_id,
            config_id: config.node.id,
        });
    }
    std::fs::create_dir_all(&config.node.data_dir)
        .map_err(|source| NodeError::DataDir { path: config.node.data_dir.display().to_string(), source })?;
    let deps = wiring::build(config, &identity)?;
    let services = Arc::clone(&deps.services);
    let http_addr = deps.config.http.listen;
    let peer_addr = deps.config.peer.listen;
    let fatal = Arc::clone(&deps.fatal);
    let (supervisor, handle) = Actor::spawn(None, Supervisor, deps).await?;
    info!(%http_addr, %peer_addr, "node started");
    let mut handle = std::pin::pin!(handle);
    tokio::select! {
        _ = shutdown => {
            info!("shutdown requested; draining");
            // Clicks counted here reach their partitions before the groups stop.
            let _ = tokio::time::timeout(SERVICES_DRAIN, services.drain()).await;
            let _ = supervisor.call(SupervisorMsg::Shutdown, None).await;
            let _ = handle.await;
        }
        _ = &mut handle => {}
    }
    let fatal = crate::util::lock(&fatal).take();
    match fatal {
        Some(reason) => Err(NodeError::Fatal(reason)),
        None => {
            info!("shutdown complete");
            Ok(())
        }
    }
}

/// Completes on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
