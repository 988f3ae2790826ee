//! How a Pier process stops, the same for `pier operator` and `pier xds`: one signal (SIGTERM or
//! Ctrl-C), and an xDS server that drains its streams for a bounded time after it.
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use crate::xds::{ServerTls, SnapshotCache};

/// How long the xDS server waits, after it stopped accepting, for open streams to end before it
/// closes them (well inside Kubernetes' default 30 s termination grace period).
pub const XDS_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves on the first SIGTERM or Ctrl-C (SIGINT).
pub async fn requested() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops"))
        .ok();
    let sigterm = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "shutting down"),
        _ = sigterm => tracing::info!(signal = "SIGTERM", "shutting down"),
    }
}

/// Serves xDS until `stop` resolves, then drains: Envoys are told to go away (HTTP/2 GOAWAY) and
/// streams still open after [`XDS_DRAIN_TIMEOUT`] are closed. With `tls`, over TLS with client
/// certificates (see [`crate::listen::xds_tls`]).
pub async fn serve_xds(
    listener: tokio::net::TcpListener,
    cache: Arc<SnapshotCache>,
    tls: Option<Arc<ServerTls>>,
    stop: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        stop.await;
        tracing::info!(timeout = ?XDS_DRAIN_TIMEOUT, "xDS server draining");
        let _ = stopped_tx.send(());
    };
    let limits = crate::xds::Limits::default();
    let mut server = pin!(crate::xds::serve_with(listener, cache, limits, tls, stop));
    let drain_expired = async {
        if stopped_rx.await.is_ok() {
            tokio::time::sleep(XDS_DRAIN_TIMEOUT).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = &mut server => {
            tracing::info!("xDS server stopped");
            result
        }
        _ = drain_expired => {
            tracing::warn!(timeout = ?XDS_DRAIN_TIMEOUT, "xDS streams still open after the drain timeout; closing them");
            Ok(())
        }
    }
}
