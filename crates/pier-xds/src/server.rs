//! The ADS gRPC service: one task per stream runs a protocol session (SotW or delta), feeding it
//! the client's requests and the group's snapshots, and sending what it answers. What a client
//! can make the server hold is bounded ([`Limits`]): streams of groups Pier does not serve wait
//! briefly for the group, holding nothing but their first request, then are refused. On
//! shutdown every stream ends with UNAVAILABLE, so Envoys reconnect elsewhere at once. Over
//! TLS ([`crate::tls`]) a stream is served only the node group its client certificate names;
//! asking for another is refused with PERMISSION_DENIED.
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::protobuf::value::Kind;
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::SnapshotCache;
use super::delta::DeltaSession;
use super::metrics::RefusalReason;
use super::session::Output;
use super::snapshot::Snapshot;
use super::sotw::SotwSession;
use super::tls::{PeerInfo, ServerTls};
use super::wire::{AdsHandler, AdsService, DeltaResponse, SotwResponse};

/// Node metadata key that names the node group explicitly (else `node.cluster` is used).
pub const GROUP_METADATA_KEY: &str = "pier.dev/group";

/// The node group of an Envoy: metadata `pier.dev/group`, else `node.cluster`.
pub fn node_group(node: &Node) -> Option<String> {
    let from_metadata = node
        .metadata
        .as_ref()
        .and_then(|m| m.fields.get(GROUP_METADATA_KEY))
        .and_then(|v| match &v.kind {
            Some(Kind::StringValue(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        });
    from_metadata.or_else(|| (!node.cluster.is_empty()).then(|| node.cluster.clone()))
}

/// A protocol session the stream task can drive.
trait Session: Send + 'static {
    type Req: Send + 'static;
    type Resp: Send + 'static;
    const PROTOCOL: &'static str;
    fn node(req: &Self::Req) -> Option<&Node>;
    fn on_request(&mut self, req: &Self::Req) -> Output<Self::Resp>;
    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Output<Self::Resp>;
}

/// Longest `node.id` accepted (Envoy's are Pod names).
pub const MAX_NODE_ID_LEN: usize = 256;

/// Bounds on what clients can make the server hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time a new stream has to send its first request.
    pub first_request_timeout: Duration,
    /// How long a stream of a group Pier does not serve (yet) waits for it to be declared
    /// before it is refused (an Envoy may start before the operator's first snapshot).
    pub unknown_group_wait: Duration,
    /// Streams waiting for their group at once; more are refused at once.
    pub max_waiting_streams: usize,
    /// Open ADS streams in all.
    pub max_streams: usize,
    /// HTTP/2 streams per connection (an Envoy uses one).
    pub max_concurrent_streams: u32,
    /// Longest request accepted.
    pub max_request_bytes: usize,
    /// After the shutdown signal, how long connections get to close.
    pub drain_timeout: Duration,
    /// Time a TLS client has to complete its handshake.
    pub tls_handshake_timeout: Duration,
    /// TLS handshakes in progress at once; connections beyond are closed at once.
    pub max_tls_handshakes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            first_request_timeout: Duration::from_secs(10),
            unknown_group_wait: Duration::from_secs(15),
            max_waiting_streams: 64,
            max_streams: 10_000,
            max_concurrent_streams: 16,
            max_request_bytes: 4 * 1024 * 1024,
            drain_timeout: Duration::from_secs(5),
            tls_handshake_timeout: Duration::from_secs(10),
            max_tls_handshakes: 256,
        }
    }
}

impl Session for SotwSession {
    type Req = DiscoveryRequest;
    type Resp = SotwResponse;
    const PROTOCOL: &'static str = "sotw";
    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn on_request(&mut self, req: &DiscoveryRequest) -> Output<SotwResponse> {
        SotwSession::on_request(self, req)
    }
    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Output<SotwResponse> {
        SotwSession::on_snapshot(self, snapshot)
    }
}

impl Session for DeltaSession {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaResponse;
    const PROTOCOL: &'static str = "delta";
    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn on_request(&mut self, req: &DeltaDiscoveryRequest) -> Output<DeltaResponse> {
        DeltaSession::on_request(self, req)
    }
    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Output<DeltaResponse> {
        DeltaSession::on_snapshot(self, snapshot)
    }
}

/// The ADS service over a snapshot cache.
#[derive(Debug, Clone)]
pub struct AdsServer {
    cache: Arc<SnapshotCache>,
    limits: Arc<Limits>,
    streams: Arc<AtomicUsize>,
    waiting: Arc<AtomicUsize>,
    /// Becomes true on shutdown; streams then end. `None`: never.
    stopping: Option<watch::Receiver<bool>>,
    /// Streams must come with a client certificate naming their group (served over TLS).
    require_identity: bool,
}

type ResponseStream<R> = Pin<Box<dyn Stream<Item = Result<R, Status>> + Send>>;

/// Counts one slot of a bounded number (streams, waiting streams) while alive.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(counter: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        let taken = counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| Slot(counter.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn stopped(stopping: Option<watch::Receiver<bool>>) {
    match stopping {
        // A dropped sender means the server is gone: stop as well.
        Some(mut rx) => {
            let _ = rx.wait_for(|s| *s).await;
        }
        None => std::future::pending().await,
    }
}

impl AdsServer {
    /// A server that never stops its streams by itself (see [`serve`] for one that does).
    pub fn new(cache: Arc<SnapshotCache>) -> Self {
        Self::with_limits(cache, Limits::default(), None)
    }

    /// A server with `limits` whose streams end when `stopping` becomes true.
    pub fn with_limits(
        cache: Arc<SnapshotCache>,
        limits: Limits,
        stopping: Option<watch::Receiver<bool>>,
    ) -> Self {
        Self {
            cache,
            limits: Arc::new(limits),
            streams: Arc::new(AtomicUsize::new(0)),
            waiting: Arc::new(AtomicUsize::new(0)),
            stopping,
            require_identity: false,
        }
    }

    /// Streams are served only the node group their client certificate names (see
    /// [`crate::identity`]); the connections must come through [`crate::tls::incoming`] with TLS.
    pub fn requiring_identity(mut self) -> Self {
        self.require_identity = true;
        self
    }

    /// Open ADS streams (admitted to their group).
    pub fn open_streams(&self) -> usize {
        self.streams.load(Ordering::Acquire)
    }

    pub fn into_service(self) -> AdsService<Self> {
        // Envoy's requests are small, but a big cluster's responses are not: no encode limit.
        let max = self.limits.max_request_bytes;
        AdsService::new(self, max)
    }

    async fn open<S: Session>(
        &self,
        request: Request<Streaming<S::Req>>,
        session: S,
    ) -> Result<Response<ResponseStream<S::Resp>>, Status> {
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let mut inbound = request.into_inner();
        let result = self.admit::<S>(&mut inbound, peer).await;
        let (stream_slot, first, node_id, group) = match result {
            Ok(admitted) => admitted,
            Err((reason, status)) => {
                if let Some(reason) = reason {
                    self.cache.metrics().refused(reason);
                }
                return Err(status);
            }
        };
        self.run(inbound, session, stream_slot, first, node_id, group)
    }

    /// Reads the first request and admits the stream to its group, or says why not.
    async fn admit<S: Session>(
        &self,
        inbound: &mut Streaming<S::Req>,
        peer: Option<PeerInfo>,
    ) -> Result<(Slot, S::Req, String, String), (Option<RefusalReason>, Status)> {
        use RefusalReason as R;
        let limits = &self.limits;
        let identity = match self.require_identity {
            true => Some(identify(peer.as_ref())?),
            false => None,
        };
        let stream_slot = Slot::take(&self.streams, limits.max_streams).ok_or((
            Some(R::TooManyStreams),
            Status::resource_exhausted("too many xDS streams"),
        ))?;
        // The first request names the node; later ones may omit it.
        let shutting_down = || (None, Status::unavailable("xDS server shutting down"));
        let first = tokio::select! {
            first = tokio::time::timeout(limits.first_request_timeout, inbound.message()) => first,
            _ = stopped(self.stopping.clone()) => return Err(shutting_down()),
        };
        let first = first
            .map_err(|_| {
                (
                    Some(R::FirstRequestTimeout),
                    Status::deadline_exceeded("no request within the first-request timeout"),
                )
            })?
            .map_err(|status| (None, status))?
            .ok_or((
                None,
                Status::invalid_argument("stream closed before its first request"),
            ))?;
        let bad_node = |message: String| (Some(R::BadNode), Status::invalid_argument(message));
        let node = S::node(&first)
            .ok_or_else(|| bad_node("the first request must carry the node".into()))?;
        if node.id.is_empty() || node.id.len() > MAX_NODE_ID_LEN {
            return Err(bad_node(format!(
                "node.id must have 1 to {MAX_NODE_ID_LEN} bytes"
            )));
        }
        let group = node_group(node).ok_or_else(|| {
            bad_node(format!(
                "node {:?} has no group: set node.cluster (--service-cluster) or metadata {GROUP_METADATA_KEY}",
                node.id
            ))
        })?;
        let node_id = node.id.clone();
        if let Some(id) = identity
            && id.group != group
        {
            let remote = peer.and_then(|p| p.remote);
            tracing::warn!(node = %node_id, %group, identity = %id.uri, ?remote, "xDS stream refused: node group does not match the client certificate");
            return Err((
                Some(R::GroupMismatch),
                Status::permission_denied(format!(
                    "node {node_id:?} asks for node group {group:?} (node.cluster), but its client certificate ({}) is for node group {:?}",
                    id.uri, id.group
                )),
            ));
        }
        if !self.cache.is_declared(&group) {
            let _waiting = Slot::take(&self.waiting, limits.max_waiting_streams)
                .ok_or_else(|| (Some(R::TooManyWaiting), unknown_group(&group)))?;
            tracing::debug!(node = %node_id, %group, "stream waits for its node group");
            let deadline = tokio::time::Instant::now() + limits.unknown_group_wait;
            let declared = tokio::select! {
                declared = self.cache.wait_declared(&group, deadline) => declared,
                _ = stopped(self.stopping.clone()) => return Err(shutting_down()),
            };
            if !declared {
                tracing::info!(node = %node_id, %group, "xDS stream refused: unknown node group");
                return Err((Some(R::UnknownGroup), unknown_group(&group)));
            }
        }
        Ok((stream_slot, first, node_id, group))
    }

    /// Runs an admitted stream in its own task.
    fn run<S: Session>(
        &self,
        mut inbound: Streaming<S::Req>,
        mut session: S,
        stream_slot: Slot,
        first: S::Req,
        node_id: String,
        group: String,
    ) -> Result<Response<ResponseStream<S::Resp>>, Status> {
        // The group may have been removed since admission.
        let (start, mut snapshots) = self.cache.subscribe(&group).ok_or_else(|| {
            self.cache.metrics().refused(RefusalReason::UnknownGroup);
            unknown_group(&group)
        })?;
        let cache = self.cache.clone();
        let stopping = self.stopping.clone();
        let (tx, rx) = mpsc::channel::<Result<S::Resp, Status>>(16);
        tokio::spawn(async move {
            let _slot = stream_slot;
            let node = cache.open_stream(&node_id, &group, S::PROTOCOL);
            tracing::info!(node = %node_id, %group, protocol = S::PROTOCOL, "xDS stream opened");
            let send = |out: Output<S::Resp>| {
                let (cache, tx, node_id, group, node) = (&cache, &tx, &node_id, &group, &node);
                async move {
                    for e in &out.events {
                        cache.record(node.key(), e);
                    }
                    for r in out.responses {
                        tx.send(Ok(r)).await.map_err(|_| ())?;
                    }
                    if let Some(refused) = out.refused {
                        tracing::warn!(node = %node_id, %group, reason = %refused, "xDS stream refused");
                        cache.metrics().refused(RefusalReason::SubscriptionLimit);
                        let _ = tx.send(Err(Status::resource_exhausted(refused.0))).await;
                        return Err(());
                    }
                    Ok::<(), ()>(())
                }
            };
            let mut ok = true;
            if let Some(snapshot) = start {
                ok &= send(session.on_snapshot(snapshot)).await.is_ok();
            }
            ok = ok && send(session.on_request(&first)).await.is_ok();
            let stop = stopped(stopping);
            tokio::pin!(stop);
            while ok {
                tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(req)) => ok = send(session.on_request(&req)).await.is_ok(),
                        Ok(None) => break,
                        Err(status) => {
                            tracing::debug!(node = %node_id, %status, "xDS stream error");
                            break;
                        }
                    },
                    changed = snapshots.changed() => {
                        if changed.is_err() {
                            // The group was removed.
                            let _ = tx.send(Err(unknown_group(&group))).await;
                            break;
                        }
                        let latest = snapshots.borrow_and_update().clone();
                        if let Some(snapshot) = latest {
                            ok = send(session.on_snapshot(snapshot)).await.is_ok();
                        }
                    }
                    _ = &mut stop => {
                        let _ = tx.send(Err(Status::unavailable("xDS server shutting down"))).await;
                        break;
                    }
                }
            }
            tracing::info!(node = %node_id, %group, "xDS stream closed");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The identity of a TLS client, from the certificate chain its connection carries.
fn identify(
    peer: Option<&PeerInfo>,
) -> Result<crate::identity::Identity, (Option<RefusalReason>, Status)> {
    let leaf = peer
        .and_then(|p| p.certificates.as_ref())
        .and_then(|chain| chain.first());
    let Some(leaf) = leaf else {
        let remote = peer.and_then(|p| p.remote);
        tracing::warn!(?remote, "xDS stream refused: no client certificate");
        return Err((
            Some(RefusalReason::NoCertificate),
            Status::permission_denied(
                "no client certificate: this xDS server serves only clients whose certificate names their Kafka cluster",
            ),
        ));
    };
    crate::identity::certificate_identity(leaf).map_err(|e| {
        let remote = peer.and_then(|p| p.remote);
        tracing::warn!(?remote, error = %e, "xDS stream refused: unknown client identity");
        (
            Some(RefusalReason::UnknownIdentity),
            Status::permission_denied(format!("client certificate has no usable identity: {e}")),
        )
    })
}

fn unknown_group(group: &str) -> Status {
    Status::failed_precondition(format!(
        "node group {group:?} is not served here (no such Kafka cluster, or not yet reconciled)"
    ))
}

impl AdsHandler for AdsServer {
    type SotwStream = ResponseStream<SotwResponse>;
    type DeltaStream = ResponseStream<DeltaResponse>;

    async fn sotw(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::SotwStream>, Status> {
        self.open(request, SotwSession::new()).await
    }

    async fn delta(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaStream>, Status> {
        self.open(request, DeltaSession::new()).await
    }
}

/// Serves ADS on an already bound listener until `shutdown` resolves, with default [`Limits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    cache: Arc<SnapshotCache>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_with(listener, cache, Limits::default(), None, shutdown).await
}

/// Serves ADS until `shutdown` resolves; then stops accepting, ends every stream with
/// UNAVAILABLE (Envoys keep their config and reconnect, to another replica if there is one)
/// and waits up to `limits.drain_timeout` for the connections to close. With `tls`, every
/// client must present a trusted certificate and is served only its own node group; the
/// serving certificate is reloaded when its files change.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    cache: Arc<SnapshotCache>,
    limits: Limits,
    tls: Option<Arc<ServerTls>>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, tls = tls.is_some(), "xDS server listening");
    let (stop_tx, stop_rx) = watch::channel(false);
    let drain_timeout = limits.drain_timeout;
    let mut ads = AdsServer::with_limits(cache.clone(), limits.clone(), Some(stop_rx.clone()));
    if tls.is_some() {
        ads = ads.requiring_identity();
    }
    let service = ads.into_service();
    // Reloads the serving certificate while serving; aborted when serving ends.
    let _reloading = tls
        .clone()
        .map(|tls| AbortOnDrop(tokio::spawn(tls.watch())));
    let incoming = crate::tls::incoming(listener, tls, &limits, cache.metrics().clone());
    let server = tonic::transport::Server::builder()
        // Envoy keeps one long-lived stream; keepalives notice a dead peer behind a NAT or LB.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(limits.max_concurrent_streams))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            tracing::info!("xDS server stopping: ending streams");
            let _ = stop_tx.send(true);
        });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        _ = stopped(Some(stop_rx)) => {}
    }
    match tokio::time::timeout(drain_timeout, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                ?drain_timeout,
                "xDS connections still open after the drain timeout"
            );
            Ok(())
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::per_port;
    use crate::{ResourceType, translate};
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use futures::StreamExt;
    use tonic::transport::Channel;

    const GROUP: &str = "kafka/demo";

    struct Running {
        cache: Arc<SnapshotCache>,
        addr: SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        done: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    }

    async fn start(limits: Limits) -> Running {
        let cache = Arc::new(SnapshotCache::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(serve_with(listener, cache.clone(), limits, None, async {
            let _ = stopped.await;
        }));
        Running {
            cache,
            addr,
            stop: Some(stop),
            done,
        }
    }

    async fn client(addr: SocketAddr) -> AggregatedDiscoveryServiceClient<Channel> {
        AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
    }

    fn first(node: &str, group: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            node: Some(Node {
                id: node.into(),
                cluster: group.into(),
                ..Default::default()
            }),
            type_url: ResourceType::Cluster.type_url().into(),
            ..Default::default()
        }
    }

    /// Opens a SotW stream that sends `reqs` and keeps its request side open.
    async fn open(
        c: &mut AggregatedDiscoveryServiceClient<Channel>,
        reqs: Vec<DiscoveryRequest>,
    ) -> (
        Result<Streaming<DiscoveryResponse>, Status>,
        mpsc::Sender<DiscoveryRequest>,
    ) {
        let (tx, rx) = mpsc::channel(8);
        for r in reqs {
            tx.send(r).await.unwrap();
        }
        let stream = c
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner());
        (stream, tx)
    }

    async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !check() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ten_thousand_connects_with_random_node_ids_leave_the_node_map_bounded() {
        let server = start(Limits::default()).await;
        server.cache.set_snapshot(
            GROUP,
            Snapshot::new(translate(&[per_port(&[0, 1])]).unwrap()),
        );
        const CYCLES: usize = 10_000;
        const PARALLEL: usize = 8;
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for p in 0..PARALLEL {
            let (addr, cache, peak) = (server.addr, server.cache.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = client(addr).await;
                for i in (p..CYCLES).step_by(PARALLEL) {
                    let random = std::hash::BuildHasher::hash_one(
                        &std::collections::hash_map::RandomState::new(),
                        i,
                    );
                    let node = format!("envoy-{random:016x}-{i}");
                    let (stream, tx) = open(&mut c, vec![first(&node, GROUP)]).await;
                    let mut stream = stream.unwrap();
                    let resp = stream.message().await.unwrap().unwrap();
                    assert_eq!(resp.type_url, ResourceType::Cluster.type_url());
                    peak.fetch_max(cache.node_count(), Ordering::Relaxed);
                    drop((tx, stream));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let cache = &server.cache;
        eventually("every node to be forgotten", || cache.node_count() == 0).await;
        let peak = peak.load(Ordering::Relaxed);
        assert!(peak <= 4 * PARALLEL, "node map peaked at {peak}");
        assert_eq!(cache.groups(), [GROUP]);
    }

    #[tokio::test]
    async fn streams_of_unknown_groups_wait_briefly_and_hold_no_node_state() {
        let limits = Limits {
            unknown_group_wait: Duration::from_millis(200),
            ..Limits::default()
        };
        let server = start(limits).await;
        let mut c = client(server.addr).await;
        let (refused, _tx) = open(&mut c, vec![first("stranger", "no/such")]).await;
        assert_eq!(refused.unwrap_err().code(), tonic::Code::FailedPrecondition);
        let counted = server
            .cache
            .metrics()
            .refused_streams
            .get(&crate::metrics::RefusalLabels {
                reason: RefusalReason::UnknownGroup,
            })
            .map(|c| c.get());
        assert_eq!(counted, Some(1));
        assert_eq!(server.cache.node_count(), 0);
        assert!(server.cache.groups().is_empty());

        // A group declared while its Envoy waits is served (the operator's first snapshot may
        // come after its Envoys).
        let server = start(Limits::default()).await;
        let mut c = client(server.addr).await;
        let cache = server.cache.clone();
        let declare = tokio::spawn(async move {
            eventually("the stream to wait", || cache.waiting_streams() == 1).await;
            assert_eq!(cache.node_count(), 0, "nothing allocated while waiting");
            cache.declare_group(GROUP);
            cache.set_snapshot(GROUP, Snapshot::new(translate(&[per_port(&[0])]).unwrap()));
        });
        let (stream, _tx) = open(&mut c, vec![first("envoy-0", GROUP)]).await;
        let resp = stream.unwrap().message().await.unwrap().unwrap();
        assert_eq!(resp.type_url, ResourceType::Cluster.type_url());
        declare.await.unwrap();
        assert_eq!(server.cache.node_count(), 1);
    }

    #[tokio::test]
    async fn a_stream_must_send_its_first_request_in_time() {
        let limits = Limits {
            first_request_timeout: Duration::from_millis(100),
            ..Limits::default()
        };
        let server = start(limits).await;
        server.cache.declare_group(GROUP);
        let mut c = client(server.addr).await;
        let (silent, _tx) = open(&mut c, vec![]).await;
        assert_eq!(silent.unwrap_err().code(), tonic::Code::DeadlineExceeded);
        let long = "x".repeat(MAX_NODE_ID_LEN + 1);
        let (bad, _tx) = open(&mut c, vec![first(&long, GROUP)]).await;
        assert_eq!(bad.unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    #[tokio::test]
    async fn streams_are_limited() {
        let limits = Limits {
            max_streams: 2,
            ..Limits::default()
        };
        let server = start(limits).await;
        server
            .cache
            .set_snapshot(GROUP, Snapshot::new(translate(&[per_port(&[0])]).unwrap()));
        let mut c = client(server.addr).await;
        let (a, _ta) = open(&mut c, vec![first("a", GROUP)]).await;
        let (b, _tb) = open(&mut c, vec![first("b", GROUP)]).await;
        let (mut a, mut b) = (a.unwrap(), b.unwrap());
        a.message().await.unwrap();
        b.message().await.unwrap();
        let (third, _tc) = open(&mut c, vec![first("c", GROUP)]).await;
        assert_eq!(third.unwrap_err().code(), tonic::Code::ResourceExhausted);
    }

    #[tokio::test]
    async fn a_subscription_beyond_the_bounds_ends_the_stream() {
        let server = start(Limits::default()).await;
        server
            .cache
            .set_snapshot(GROUP, Snapshot::new(translate(&[per_port(&[0])]).unwrap()));
        let mut c = client(server.addr).await;
        let many = DiscoveryRequest {
            type_url: ResourceType::Endpoint.type_url().into(),
            resource_names: (0..=crate::subscription::MAX_NAMES)
                .map(|i| format!("n{i}"))
                .collect(),
            ..Default::default()
        };
        let (stream, _tx) = open(&mut c, vec![first("envoy-0", GROUP), many]).await;
        let mut stream = stream.unwrap();
        let end = loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => break other,
            }
        };
        assert_eq!(end.unwrap_err().code(), tonic::Code::ResourceExhausted);
        let cache = server.cache.clone();
        eventually("the node to be forgotten", || cache.node_count() == 0).await;
    }

    #[tokio::test]
    async fn shutdown_ends_every_stream_and_serve_returns() {
        let mut server = start(Limits::default()).await;
        server
            .cache
            .set_snapshot(GROUP, Snapshot::new(translate(&[per_port(&[0])]).unwrap()));
        let mut c = client(server.addr).await;
        let (stream, _tx) = open(&mut c, vec![first("envoy-0", GROUP)]).await;
        let mut stream = stream.unwrap();
        stream.message().await.unwrap().unwrap();
        let asked = tokio::time::Instant::now();
        server.stop.take().unwrap().send(()).unwrap();
        let end = stream.message().await;
        assert_eq!(end.unwrap_err().code(), tonic::Code::Unavailable);
        // The client keeps its side open: serve still returns, before the drain timeout.
        tokio::time::timeout(Duration::from_secs(4), &mut server.done)
            .await
            .expect("serve returned")
            .unwrap()
            .unwrap();
        assert!(asked.elapsed() < Limits::default().drain_timeout);
    }

    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(crate::metrics::XdsMetrics::default());
        let limits = Limits::default();
        let mut incoming = Box::pin(crate::tls::incoming(listener, None, &limits, metrics));
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.tcp().nodelay().unwrap());
    }
}
