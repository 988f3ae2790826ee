//! Pier's HTTP admin endpoint: `/status` (every node group's xDS status as JSON), `/metrics`
//! (Prometheus text format), `/healthz`, `/readyz` and `/leader`. With an [`AdminToken`]
//! everything but the kubelet's probes (`/healthz`, `/readyz`) needs
//! `Authorization: Bearer <token>`.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::request::Parts;
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

/// The bearer token the admin endpoint asks for. Never printed.
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// The token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the admin token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the admin token file {path} is empty")]
    Empty { path: PathBuf },
}

impl AdminToken {
    /// The token in `path`, without surrounding whitespace (a trailing newline is common).
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self(token.into()))
    }

    /// Whether an `Authorization` header value carries this token, compared in constant time.
    fn admits(&self, authorization: Option<&[u8]>) -> bool {
        use subtle::ConstantTimeEq;
        // The scheme is case-insensitive (RFC 9110).
        let Some((scheme, given)) = authorization.and_then(|v| {
            let at = v.iter().position(|b| *b == b' ')?;
            Some((&v[..at], &v[at + 1..]))
        }) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return false;
        }
        bool::from(given.ct_eq(self.0.as_bytes()))
    }
}

struct AdminState {
    cache: Arc<SnapshotCache>,
    registry: Registry,
    health: Arc<Health>,
    token: Option<AdminToken>,
}

/// A request that may see the protected paths: it carries the token, or none is needed.
struct Authorized;

impl FromRequestParts<Arc<AdminState>> for Authorized {
    type Rejection = (
        StatusCode,
        [(axum::http::HeaderName, &'static str); 1],
        &'static str,
    );

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AdminState>,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = &state.token else {
            return Ok(Authorized);
        };
        let given = parts.headers.get(AUTHORIZATION).map(|v| v.as_bytes());
        if token.admits(given) {
            Ok(Authorized)
        } else {
            Err((
                StatusCode::UNAUTHORIZED,
                [(WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is required\n",
            ))
        }
    }
}

/// Serves the admin endpoint until the process ends. `/readyz` answers 200 while the replica
/// serves its role (leading or standing by), `/leader` only while it leads. With `token`,
/// `/status`, `/metrics` and `/leader` answer 401 to a request without it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cache: Arc<SnapshotCache>,
    registry: Registry,
    health: Arc<Health>,
    token: Option<AdminToken>,
) {
    let state = Arc::new(AdminState {
        cache,
        registry,
        health,
        token,
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

async fn leader(_: Authorized, State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    if state.health.leading.load(Ordering::Relaxed) {
        (axum::http::StatusCode::OK, "leading")
    } else {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "standing by")
    }
}

async fn status(_: Authorized, State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let groups: Vec<_> = state
        .cache
        .groups()
        .iter()
        .map(|g| state.cache.group_status(g))
        .collect();
    axum::Json(groups)
}

async fn metrics_text(_: Authorized, State(state): State<Arc<AdminState>>) -> impl IntoResponse {
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn start(token: Option<AdminToken>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cache = Arc::new(SnapshotCache::default());
        tokio::spawn(serve(
            listener,
            cache,
            Registry::default(),
            Health::alone(),
            token,
        ));
        format!("http://{addr}")
    }

    async fn get(url: &str, bearer: Option<&str>) -> u16 {
        let mut req = reqwest::Client::new().get(url);
        if let Some(b) = bearer {
            req = req.header("Authorization", format!("Bearer {b}"));
        }
        req.send().await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn a_token_guards_everything_but_the_probes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let token = AdminToken::from_file(&file).unwrap();
        assert!(!format!("{token:?}").contains("s3cret"));
        let base = start(Some(token)).await;
        for path in ["/healthz", "/readyz"] {
            assert_eq!(get(&format!("{base}{path}"), None).await, 200, "{path}");
        }
        for path in ["/status", "/metrics", "/leader"] {
            let url = format!("{base}{path}");
            assert_eq!(get(&url, None).await, 401, "{path}");
            assert_eq!(get(&url, Some("wrong")).await, 401, "{path}");
            assert_eq!(get(&url, Some("s3cre")).await, 401, "{path}");
            assert_eq!(get(&url, Some("s3cretx")).await, 401, "{path}");
            assert_eq!(get(&url, Some("s3cret")).await, 200, "{path}");
        }
        let basic = reqwest::Client::new()
            .get(format!("{base}/status"))
            .header("Authorization", "Basic s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(basic.status().as_u16(), 401);
        // Without a token configured, nothing asks for one.
        let open = start(None).await;
        assert_eq!(get(&format!("{open}/status"), None).await, 200);
    }

    #[test]
    fn an_empty_or_missing_token_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, " \n").unwrap();
        assert!(matches!(
            AdminToken::from_file(&file),
            Err(TokenError::Empty { .. })
        ));
        assert!(matches!(
            AdminToken::from_file(&dir.path().join("none")),
            Err(TokenError::Read { .. })
        ));
    }
}
