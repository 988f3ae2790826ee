//! The Alertmanager webhook server (`pier operator --alerts-listen`): `POST /alerts` (or `/`,
//! for configs that post to the root) takes one notification, checks it whole (payload, then
//! the contract of every alert) and hands all its requests at once to an [`AlertSink`], which
//! answers only once they are recorded: never a partial action.
//!
//! Authentication is required: a bearer token read from a file (a mounted Secret; read again
//! when the file changes, so rotating the Secret needs no restart), and/or mTLS (a client
//! certificate signed by `--alerts-client-ca`; a client without one fails the TLS handshake).
//! The TLS files (serving certificate, key, client CAs) are read again when they change.
//!
//! | answer | when |
//! | --- | --- |
//! | 200 | recorded; a JSON [`RecordSummary`] |
//! | 400 | not a version 4 notification (the reason in the body) |
//! | 401 | no valid bearer token (when one is configured) |
//! | 413 | a body over the limit (default 1 MiB) |
//! | 422 | an alert breaks the contract, or the sink cannot act on it (unknown cluster or action) |
//! | 500 | the sink failed unexpectedly (it panicked); the server keeps serving |
//! | 503 | the sink cannot record now, or not within [`RECORD_TIMEOUT`] (Alertmanager retries) |
//!
//! Requests are counted by code in `pier_alert_webhook_requests_total{code}`.
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::serve::{Listener, ListenerExt};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::alerts::{contract, payload};
use crate::reconcile::alerts::AlertRequest;
use crate::xds::tls::{ServerTls, TlsError};

/// The body limit unless configured.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// How long the sink may take to record a notification before the answer is 503.
pub const RECORD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client has to finish its TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once; further connections are closed.
pub const MAX_TLS_HANDSHAKES: usize = 256;
/// How much of a body over the limit is still read (and dropped) so that the client, still
/// sending, gets the 413 instead of a reset connection.
const MAX_DRAIN_BYTES: usize = 16 << 20;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the TLS files are checked for a change.
const TLS_RELOAD_PERIOD: Duration = Duration::from_secs(1);

/// Where alerts' requests go: the controller records them in the KafkaClusters' status.
pub trait AlertSink: Send + Sync + 'static {
    /// Records every alert of one notification (all or none); returns only once recorded.
    fn record(&self, alerts: Vec<AlertRequest>) -> BoxFuture<'_, Result<RecordSummary, SinkError>>;
}

/// What the sink did with a notification's requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RecordSummary {
    /// New alerts recorded (actions to take, roll-blocking alerts firing or resolved).
    pub recorded: usize,
    /// Alerts recorded before (same fingerprint and start): nothing more done.
    pub duplicates: usize,
    /// Recorded as refused by a guardrail (mode, cooldown, broker limits, one scale in flight).
    pub refused: usize,
    /// Alerts not for Pier (no `pier_action`, no `pier_blocks_roll`), or that the sink skips.
    pub ignored: usize,
}

/// Why the sink did not record a notification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// It never will: an unknown cluster or action (HTTP 422).
    #[error("{0}")]
    Unprocessable(String),
    /// Not now: the API server is unreachable, not leading, a conflict (HTTP 503; retried).
    #[error("{0}")]
    Unavailable(String),
}

/// The webhook server's settings (from `pier operator --alerts-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsServerConfig {
    pub listen: SocketAddr,
    /// A file holding the bearer token requests must carry; read again when it changes.
    pub token_file: Option<PathBuf>,
    /// Serve HTTPS with these files.
    pub tls: Option<AlertsTlsFiles>,
    pub max_body_bytes: usize,
}

impl AlertsServerConfig {
    /// Listening on `listen` with the default body limit and no authentication yet.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            token_file: None,
            tls: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl AlertsServerConfig {
    /// Whether clients must present a certificate.
    fn mtls(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.client_ca.is_some())
    }

    /// Checks that the webhook can start: some authentication, a body limit, usable files.
    pub fn check(&self) -> Result<(), ServeError> {
        self.load().map(drop)
    }

    /// The token file and the TLS setup.
    fn load(&self) -> Result<(Option<TokenFile>, Option<Arc<ReloadingTls>>), ServeError> {
        if self.token_file.is_none() && !self.mtls() {
            return Err(ServeError::NoAuthentication);
        }
        if self.max_body_bytes == 0 {
            return Err(ServeError::NoBodyLimit);
        }
        let token = self
            .token_file
            .as_deref()
            .map(TokenFile::open)
            .transpose()?;
        let tls = self
            .tls
            .as_ref()
            .map(|files| ReloadingTls::load(files.clone()).map(Arc::new))
            .transpose()?;
        Ok((token, tls))
    }
}

/// HTTPS for the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsTlsFiles {
    /// Serving certificate chain (PEM), reloaded when it changes.
    pub cert: PathBuf,
    /// Its private key (PEM), reloaded with it.
    pub key: PathBuf,
    /// CAs (PEM bundle) that sign the certificates clients must present; without it, no
    /// client certificate is asked for.
    pub client_ca: Option<PathBuf>,
}

/// The webhook server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "the alerts webhook needs authentication: give --alerts-token-file, or \
         --alerts-tls-cert and --alerts-tls-key with --alerts-client-ca (or both)"
    )]
    NoAuthentication,
    #[error("the alerts webhook's body limit must be at least 1 byte")]
    NoBodyLimit,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("alerts webhook TLS: {0}")]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Listen(#[from] crate::listen::ListenError),
    #[error("alerts webhook: {0}")]
    Serve(#[source] std::io::Error),
}

/// The token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the alerts token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the alerts token file {path} is empty")]
    Empty { path: PathBuf },
}

/// The bearer token in a file, read again when the file changes (a Secret's new content
/// replaces the symlinks of its mount, a rewritten file gets a new modification time). If the
/// new content cannot be used, the previous token stays. Never printed.
pub struct TokenFile {
    path: PathBuf,
    state: Mutex<TokenState>,
}

struct TokenState {
    stamp: Option<FileStamp>,
    token: Arc<[u8]>,
}

/// What tells a changed file apart.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileStamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            modified: m.modified().ok(),
        })
    }
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl TokenFile {
    /// Reads the token in `path` (without surrounding whitespace).
    pub fn open(path: &Path) -> Result<Self, TokenError> {
        let stamp = FileStamp::of(path).ok();
        let token = read_token(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            state: Mutex::new(TokenState { stamp, token }),
        })
    }

    /// The token now: read again if the file changed.
    fn current(&self) -> Arc<[u8]> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = FileStamp::of(&self.path).ok();
        if stamp.is_some() && stamp != state.stamp {
            match read_token(&self.path) {
                Ok(token) => {
                    if *token != *state.token {
                        tracing::info!(path = %self.path.display(), "alerts webhook token changed");
                    }
                    state.token = token;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the alerts token file changed but cannot be used; the previous token stays");
                }
            }
            state.stamp = stamp;
        }
        state.token.clone()
    }

    /// Whether an `Authorization` header value is `Bearer <the token>`, compared in constant
    /// time.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        use subtle::ConstantTimeEq;
        let Some((scheme, given)) = authorization.and_then(|v| {
            let at = v.iter().position(|b| *b == b' ')?;
            Some((&v[..at], v[at + 1..].trim_ascii()))
        }) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return false;
        }
        bool::from(given.ct_eq(&self.current()))
    }
}

fn read_token(path: &Path) -> Result<Arc<[u8]>, TokenError> {
    let bytes = std::fs::read(path).map_err(|source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let token = bytes.trim_ascii();
    if token.is_empty() {
        return Err(TokenError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(token.into())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: u16,
}

/// The webhook's metrics.
#[derive(Debug, Default, Clone)]
struct Metrics {
    requests: Family<CodeLabels, Counter>,
}

struct WebhookState {
    token: Option<TokenFile>,
    sink: Arc<dyn AlertSink>,
    max_body_bytes: usize,
    metrics: Metrics,
}

/// A bound webhook server, ready to [`AlertsServer::run`].
pub struct AlertsServer {
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    tls: Option<Arc<ReloadingTls>>,
    state: Arc<WebhookState>,
}

impl std::fmt::Debug for AlertsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertsServer")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl AlertsServer {
    /// Checks the configuration (some authentication, readable files), binds the port and
    /// registers `pier_alert_webhook_requests_total{code}` in `registry`.
    pub async fn bind(
        config: &AlertsServerConfig,
        sink: Arc<dyn AlertSink>,
        registry: &mut Registry,
    ) -> Result<Self, ServeError> {
        let (token, tls) = config.load()?;
        let mtls = config.mtls();
        let listener = crate::listen::bind(config.listen, "alerts webhook").await?;
        let local_addr = listener.local_addr().map_err(ServeError::Serve)?;
        let metrics = Metrics::default();
        registry.register(
            "pier_alert_webhook_requests",
            "Requests to the Alertmanager webhook, by HTTP status code",
            metrics.requests.clone(),
        );
        if tls.is_none() {
            tracing::warn!(
                listen = %local_addr,
                "the alerts webhook serves plain HTTP: its bearer token crosses the network in \
                 clear; set --alerts-tls-cert and --alerts-tls-key"
            );
        }
        tracing::info!(
            listen = %local_addr,
            token = config.token_file.is_some(),
            tls = tls.is_some(),
            client_certificates = mtls,
            max_body_bytes = config.max_body_bytes,
            "alerts webhook listening"
        );
        Ok(Self {
            listener,
            local_addr,
            tls,
            state: Arc::new(WebhookState {
                token,
                sink,
                max_body_bytes: config.max_body_bytes,
                metrics,
            }),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then finishes the requests in progress.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let app = Router::new()
            .route("/alerts", any(receive))
            .route("/", any(receive))
            .fallback(not_found)
            .with_state(self.state);
        let nodelay = |tcp: &mut TcpStream| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        };
        let result = match self.tls {
            None => {
                axum::serve(self.listener.tap_io(nodelay), app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            Some(tls) => {
                let reload = tokio::spawn(tls.clone().watch());
                let listener = TlsListener::start(self.listener, self.local_addr, tls);
                let result = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await;
                reload.abort();
                result
            }
        };
        tracing::info!("alerts webhook stopped");
        result.map_err(ServeError::Serve)
    }
}

/// Binds and serves the webhook until `shutdown` resolves (see [`AlertsServer`]).
pub async fn serve(
    config: AlertsServerConfig,
    sink: Arc<dyn AlertSink>,
    registry: &mut Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    AlertsServer::bind(&config, sink, registry)
        .await?
        .run(shutdown)
        .await
}

/// The webhook's TLS, built again from its files (serving certificate, key, client CAs) when
/// any of them changes, so renewed certificates and a rotated client CA need no restart. Files
/// that do not form a valid setup (a certificate renewed, its key not yet) leave the previous
/// one serving, and are tried again when they change again.
struct ReloadingTls {
    files: AlertsTlsFiles,
    seen: Mutex<Vec<Vec<u8>>>,
    acceptor: RwLock<tokio_rustls::TlsAcceptor>,
}

impl ReloadingTls {
    fn load(files: AlertsTlsFiles) -> Result<Self, ServeError> {
        let seen = Self::read(&files)?;
        let acceptor = Self::build(&files)?;
        Ok(Self {
            files,
            seen: Mutex::new(seen),
            acceptor: RwLock::new(acceptor),
        })
    }

    fn read(files: &AlertsTlsFiles) -> Result<Vec<Vec<u8>>, TlsError> {
        [
            Some(&files.cert),
            Some(&files.key),
            files.client_ca.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.clone(),
                source,
            })
        })
        .collect()
    }

    fn build(files: &AlertsTlsFiles) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let roots = files
            .client_ca
            .as_deref()
            .map(crate::xds::tls::read_certificates)
            .transpose()?;
        Ok(ServerTls::https(&files.cert, &files.key, roots)?.acceptor())
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the files again; `Ok(true)` when they changed and now serve.
    fn reload(&self) -> Result<bool, TlsError> {
        let bytes = Self::read(&self.files)?;
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == bytes {
                return Ok(false);
            }
            *seen = bytes;
        }
        let acceptor = Self::build(&self.files)?;
        *self.acceptor.write().unwrap_or_else(|p| p.into_inner()) = acceptor;
        Ok(true)
    }

    /// Reloads whenever the files change, until dropped.
    async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(TLS_RELOAD_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.reload() {
                Ok(true) => tracing::info!(
                    cert = %self.files.cert.display(),
                    client_ca = ?self.files.client_ca,
                    "alerts webhook TLS files reloaded; new connections use them"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot reload the alerts webhook's TLS files; the previous ones keep serving"
                ),
            }
        }
    }
}

/// TLS connections, each handshake in a task of its own under a timeout.
struct TlsListener {
    accepted: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    fn start(
        listener: tokio::net::TcpListener,
        local_addr: SocketAddr,
        tls: Arc<ReloadingTls>,
    ) -> Self {
        let (tx, accepted) = tokio::sync::mpsc::channel(64);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_TLS_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let (tcp, remote) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(conn) => conn,
                        Err(e) => {
                            // Out of file descriptors and the like: do not spin.
                            tracing::warn!(error = %e, "alerts webhook accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    _ = tx.closed() => break,
                };
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
                let Ok(slot) = handshakes.clone().try_acquire_owned() else {
                    tracing::warn!(%remote, "too many TLS handshakes in progress; connection closed");
                    continue;
                };
                let (acceptor, tx) = (tls.acceptor(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, remote)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(%remote, error = %e, "alerts webhook client refused in the TLS handshake")
                        }
                        Err(_) => {
                            tracing::info!(%remote, "alerts webhook TLS handshake timed out")
                        }
                    }
                });
            }
        });
        Self {
            accepted,
            local_addr,
        }
    }
}

impl Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(conn) => conn,
            // The accept loop never ends while this receiver lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// An answer: its code and a JSON body.
struct Answer {
    code: StatusCode,
    body: serde_json::Value,
}

impl Answer {
    fn error(code: StatusCode, reason: impl std::fmt::Display) -> Self {
        Self {
            code,
            body: serde_json::json!({ "error": reason.to_string() }),
        }
    }
}

async fn not_found(State(state): State<Arc<WebhookState>>) -> Response {
    respond(
        &state,
        Answer::error(
            StatusCode::NOT_FOUND,
            "not found: Alertmanager posts to /alerts",
        ),
    )
}

async fn receive(
    State(state): State<Arc<WebhookState>>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let answer = answer(&state, &method, &headers, body).await;
    respond(&state, answer)
}

fn respond(state: &WebhookState, answer: Answer) -> Response {
    state
        .metrics
        .requests
        .get_or_create(&CodeLabels {
            code: answer.code.as_u16(),
        })
        .inc();
    let mut response = (
        answer.code,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        answer.body.to_string(),
    )
        .into_response();
    if answer.code == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if answer.code == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(axum::http::header::ALLOW, HeaderValue::from_static("POST"));
    }
    response
}

async fn answer(state: &WebhookState, method: &Method, headers: &HeaderMap, body: Body) -> Answer {
    // Credentials first: nothing of an unauthenticated request is read.
    if let Some(token) = &state.token
        && !token.admits(headers.get(AUTHORIZATION).map(|v| v.as_bytes()))
    {
        tracing::info!("alerts webhook request without a valid bearer token");
        return Answer::error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    }
    if method != Method::POST {
        return Answer::error(StatusCode::METHOD_NOT_ALLOWED, "Alertmanager POSTs");
    }
    let too_large = || {
        Answer::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {} bytes", state.max_body_bytes),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
        drain(body).await;
        return too_large();
    }
    let bytes = match read_limited(body, state.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => return too_large(),
        Err(BodyError::Read(e)) => {
            return Answer::error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            );
        }
    };
    let notification = match payload::parse(&bytes) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(reason = %e, "alerts webhook: malformed notification");
            return Answer::error(StatusCode::BAD_REQUEST, e);
        }
    };
    if notification.truncated_alerts > 0 {
        tracing::warn!(
            truncated = notification.truncated_alerts,
            receiver = %notification.receiver,
            "Alertmanager left alerts out of this notification (max_alerts); they are not seen"
        );
    }
    let requests = match contract::requests(&notification) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(reason = %e, group = %notification.group_key, "alerts webhook: an alert breaks the contract; nothing recorded");
            return Answer::error(StatusCode::UNPROCESSABLE_ENTITY, e);
        }
    };
    let ignored = requests.ignored;
    if requests.requests.is_empty() {
        return summary(RecordSummary {
            ignored,
            ..RecordSummary::default()
        });
    }
    let count = requests.requests.len();
    let recording =
        std::panic::AssertUnwindSafe(state.sink.record(requests.requests)).catch_unwind();
    match tokio::time::timeout(RECORD_TIMEOUT, recording).await {
        Ok(Ok(Ok(mut recorded))) => {
            recorded.ignored += ignored;
            tracing::info!(
                alerts = count,
                recorded = recorded.recorded,
                duplicates = recorded.duplicates,
                refused = recorded.refused,
                ignored = recorded.ignored,
                group = %notification.group_key,
                "alerts webhook: notification recorded"
            );
            summary(recorded)
        }
        Ok(Ok(Err(SinkError::Unprocessable(reason)))) => {
            tracing::warn!(%reason, group = %notification.group_key, "alerts webhook: notification cannot be acted on");
            Answer::error(StatusCode::UNPROCESSABLE_ENTITY, reason)
        }
        Ok(Ok(Err(SinkError::Unavailable(reason)))) => {
            tracing::warn!(%reason, "alerts webhook: cannot record now; Alertmanager retries");
            Answer::error(StatusCode::SERVICE_UNAVAILABLE, reason)
        }
        Ok(Err(_panic)) => {
            tracing::error!("alerts webhook: recording panicked");
            Answer::error(StatusCode::INTERNAL_SERVER_ERROR, "recording failed")
        }
        Err(_) => {
            tracing::warn!(timeout = ?RECORD_TIMEOUT, "alerts webhook: recording timed out; Alertmanager retries");
            Answer::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "recording timed out; retry",
            )
        }
    }
}

fn summary(summary: RecordSummary) -> Answer {
    Answer {
        code: StatusCode::OK,
        body: serde_json::to_value(summary).unwrap_or_default(),
    }
}

enum BodyError {
    TooLarge,
    Read(axum::Error),
}

/// The body, if it has at most `limit` bytes; else what is left of it is drained (bounded).
async fn read_limited(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Read)?;
        if buf.len() + chunk.len() > limit {
            drain_stream(stream).await;
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

async fn drain(body: Body) {
    drain_stream(body.into_data_stream()).await;
}

/// Reads and drops up to [`MAX_DRAIN_BYTES`] within [`DRAIN_TIMEOUT`]: a client still sending
/// gets the answer rather than a reset connection.
async fn drain_stream(mut stream: axum::body::BodyDataStream) {
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let mut drained = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            drained += chunk.len();
            if drained > MAX_DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_file(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("token");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_token_admits_only_itself_and_is_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let t = TokenFile::open(&token_file(dir.path(), "s3cret\n")).unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(t.admits(Some(b"Bearer s3cret")));
        assert!(t.admits(Some(b"bearer s3cret")));
        for bad in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cretx",
            b"Basic s3cret",
            b"s3cret",
            b"Bearer",
            b"Bearer ",
            b"",
        ] {
            assert!(!t.admits(Some(bad)), "{}", String::from_utf8_lossy(bad));
        }
        assert!(!t.admits(None));
    }

    #[test]
    fn a_changed_token_file_is_read_again_and_a_bad_one_keeps_the_old_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = token_file(dir.path(), "one");
        let t = TokenFile::open(&path).unwrap();
        assert!(t.admits(Some(b"Bearer one")));
        // Replaced as a Secret volume does: a new file renamed over the old one.
        let next = dir.path().join("next");
        std::fs::write(&next, "two\n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert!(t.admits(Some(b"Bearer two")));
        assert!(!t.admits(Some(b"Bearer one")));
        std::fs::write(&next, "  \n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert!(
            t.admits(Some(b"Bearer two")),
            "an empty file keeps the token"
        );
        std::fs::remove_file(&path).unwrap();
        assert!(
            t.admits(Some(b"Bearer two")),
            "a missing file keeps the token"
        );
    }

    #[test]
    fn an_empty_or_missing_token_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            TokenFile::open(&token_file(dir.path(), " \n")),
            Err(TokenError::Empty { .. })
        ));
        assert!(matches!(
            TokenFile::open(&dir.path().join("none")),
            Err(TokenError::Read { .. })
        ));
    }

    struct NoSink;

    impl AlertSink for NoSink {
        fn record(&self, _: Vec<AlertRequest>) -> BoxFuture<'_, Result<RecordSummary, SinkError>> {
            Box::pin(async { Ok(RecordSummary::default()) })
        }
    }

    #[tokio::test]
    async fn without_authentication_it_does_not_start() {
        let mut registry = Registry::default();
        let mut config = AlertsServerConfig::new("127.0.0.1:0".parse().unwrap());
        let e = AlertsServer::bind(&config, Arc::new(NoSink), &mut registry)
            .await
            .unwrap_err();
        assert!(matches!(e, ServeError::NoAuthentication), "{e}");
        assert!(e.to_string().contains("--alerts-token-file"), "{e}");
        // TLS without client certificates is no authentication either.
        config.tls = Some(AlertsTlsFiles {
            cert: "/nonexistent/tls.crt".into(),
            key: "/nonexistent/tls.key".into(),
            client_ca: None,
        });
        let e = AlertsServer::bind(&config, Arc::new(NoSink), &mut registry)
            .await
            .unwrap_err();
        assert!(matches!(e, ServeError::NoAuthentication), "{e}");
        // A missing token file says which.
        config.tls = None;
        config.token_file = Some("/nonexistent/token".into());
        let e = AlertsServer::bind(&config, Arc::new(NoSink), &mut registry)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/token"), "{e}");
    }
}
