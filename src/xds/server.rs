//! The ADS gRPC service: one task per stream runs a protocol session (SotW or delta), feeding it
//! the client's requests and the group's snapshots, and sending what it answers.
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::value::Kind;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use super::SnapshotCache;
use super::delta::DeltaSession;
use super::session::Output;
use super::snapshot::Snapshot;
use super::sotw::SotwSession;

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

impl Session for SotwSession {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    const PROTOCOL: &'static str = "sotw";
    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn on_request(&mut self, req: &DiscoveryRequest) -> Output<DiscoveryResponse> {
        SotwSession::on_request(self, req)
    }
    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Output<DiscoveryResponse> {
        SotwSession::on_snapshot(self, snapshot)
    }
}

impl Session for DeltaSession {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
    const PROTOCOL: &'static str = "delta";
    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn on_request(&mut self, req: &DeltaDiscoveryRequest) -> Output<DeltaDiscoveryResponse> {
        DeltaSession::on_request(self, req)
    }
    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Output<DeltaDiscoveryResponse> {
        DeltaSession::on_snapshot(self, snapshot)
    }
}

/// The ADS service over a snapshot cache.
#[derive(Debug, Clone)]
pub struct AdsServer {
    cache: Arc<SnapshotCache>,
}

type ResponseStream<R> = Pin<Box<dyn Stream<Item = Result<R, Status>> + Send>>;

impl AdsServer {
    pub fn new(cache: Arc<SnapshotCache>) -> Self {
        Self { cache }
    }

    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        // Envoy's requests are small, but a big cluster's responses are not: no encode limit.
        AggregatedDiscoveryServiceServer::new(self).max_decoding_message_size(16 * 1024 * 1024)
    }

    async fn open<S: Session>(
        &self,
        mut inbound: Streaming<S::Req>,
        mut session: S,
    ) -> Result<Response<ResponseStream<S::Resp>>, Status> {
        // The first request names the node; later ones may omit it.
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("stream closed before its first request"))?;
        let node = S::node(&first)
            .ok_or_else(|| Status::invalid_argument("the first request must carry the node"))?;
        let group = node_group(node).ok_or_else(|| {
            Status::invalid_argument(format!(
                "node {:?} has no group: set node.cluster (--service-cluster) or metadata {GROUP_METADATA_KEY}",
                node.id
            ))
        })?;
        let node_id = node.id.clone();
        let cache = self.cache.clone();
        let (tx, rx) = mpsc::channel::<Result<S::Resp, Status>>(16);
        tokio::spawn(async move {
            let _guard = cache.open_stream(&node_id, &group, S::PROTOCOL);
            tracing::info!(node = %node_id, %group, protocol = S::PROTOCOL, "xDS stream opened");
            let (start, mut snapshots) = cache.subscribe(&group);
            let send = |out: Output<S::Resp>| {
                let (cache, tx, node_id, group) = (&cache, &tx, &node_id, &group);
                async move {
                    for e in &out.events {
                        cache.record(node_id, group, e);
                    }
                    for r in out.responses {
                        tx.send(Ok(r)).await.map_err(|_| ())?;
                    }
                    Ok::<(), ()>(())
                }
            };
            let mut ok = true;
            if let Some(snapshot) = start {
                ok &= send(session.on_snapshot(snapshot)).await.is_ok();
            }
            ok &= send(session.on_request(&first)).await.is_ok();
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
                            break;
                        }
                        let latest = snapshots.borrow_and_update().clone();
                        if let Some(snapshot) = latest {
                            ok = send(session.on_snapshot(snapshot)).await.is_ok();
                        }
                    }
                }
            }
            tracing::info!(node = %node_id, %group, "xDS stream closed");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        self.open(request.into_inner(), SotwSession::new()).await
    }

    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        self.open(request.into_inner(), DeltaSession::new()).await
    }
}

/// Serves ADS on an already bound listener until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cache: Arc<SnapshotCache>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "xDS server listening");
    tonic::transport::Server::builder()
        // Envoy keeps one long-lived stream; keepalives notice a dead peer behind a NAT or LB.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .add_service(AdsServer::new(cache).into_service())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
