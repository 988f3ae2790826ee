//! Pier's HTTP admin endpoint: `/status` (every node group's xDS status as JSON), `/metrics`
//! (Prometheus text format), `/healthz`, `/readyz` and `/leader`.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::ListenerExt;
use prometheus_client::registry::Registry;

use crate::xds::SnapshotCache;

/// What a replica says about itself.
#[derive(Debug, Default)]
pub struct Health {
    /// It serves its role: it leads, or stands by to take over. Not while starting or stopping.
    pub ready: AtomicBool,
    /// It leads: it reconciles and its xDS server has the Envoys' config.
    pub leading: AtomicBool,
}

impl Health {
    /// A process that is the only one of its kind (`pier xds`): ready and leading from the start.
    pub fn alone() -> Arc<Self> {
        Arc::new(Self {
            ready: AtomicBool::new(true),
            leading: AtomicBool::new(true),
        })
    }
}

struct AdminState {
    cache: Arc<SnapshotCache>,
    registry: Registry,
    health: Arc<Health>,
}

/// Serves the admin endpoint until the process ends. `/readyz` answers 200 while the replica
/// serves its role (leading or standing by), `/leader` only while it leads.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cache: Arc<SnapshotCache>,
    registry: Registry,
    health: Arc<Health>,
) {
    let state = Arc::new(AdminState {
        cache,
        registry,
        health,
    });
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/leader", get(leader))
        .route("/status", get(status))
        .route("/metrics", get(metrics_text))
        .with_state(state);
    // Small responses on a kept-alive connection must not wait for the client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "admin endpoint failed");
    }
}

async fn readyz(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    if state.health.ready.load(Ordering::Relaxed) {
        (axum::http::StatusCode::OK, "ok")
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "starting or stopping",
        )
    }
}

async fn leader(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    if state.health.leading.load(Ordering::Relaxed) {
        (axum::http::StatusCode::OK, "leading")
    } else {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "standing by")
    }
}

async fn status(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let groups: Vec<_> = state
        .cache
        .groups()
        .iter()
        .map(|g| state.cache.group_status(g))
        .collect();
    axum::Json(groups)
}

async fn metrics_text(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &state.registry).is_err() {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            [(CONTENT_TYPE, "text/plain")],
            String::new(),
        );
    }
    (
        axum::http::StatusCode::OK,
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}
