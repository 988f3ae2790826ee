//! Discovery responses as they go on the wire, and the gRPC service that writes them.
//!
//! Every resource is encoded once, when its snapshot is built ([`Resource::wire_any`],
//! [`Resource::wire_delta`]). A response holds the resources it sends as shared references, and
//! the codec copies their bytes straight into the stream's buffer: however many streams get an
//! update, no body is cloned or re-encoded per stream. (The generated tonic service would take
//! `DiscoveryResponse` messages, whose `Any` bodies own their bytes: a copy, an allocation and
//! a free per resource and stream.) Requests are decoded as usual.
use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use prost::Message;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{WireType, encode_key, encode_varint};
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

use super::Resource;

/// A state-of-the-world response: `envoy.service.discovery.v3.DiscoveryResponse`.
#[derive(Debug, Clone, PartialEq)]
pub struct SotwResponse {
    pub version_info: String,
    pub resources: Vec<Arc<Resource>>,
    pub type_url: &'static str,
    pub nonce: String,
}

/// A delta response: `envoy.service.discovery.v3.DeltaDiscoveryResponse`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaResponse {
    pub system_version_info: String,
    pub resources: Vec<Arc<Resource>>,
    pub type_url: &'static str,
    pub removed_resources: Vec<String>,
    pub nonce: String,
}

/// A response the codec can write.
pub trait WireResponse: Send + 'static {
    fn encode_wire(&self, buf: &mut impl BufMut);
}

fn put_string(tag: u32, value: &str, buf: &mut impl BufMut) {
    // proto3: an empty string is not written.
    if !value.is_empty() {
        put_bytes(tag, value.as_bytes(), buf);
    }
}

fn put_bytes(tag: u32, value: &[u8], buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(value.len() as u64, buf);
    buf.put_slice(value);
}

// Field numbers from envoy/service/discovery/v3/discovery.proto, written in ascending order
// as prost does, so the bytes equal prost's encoding of `to_proto()` (a test checks it).
impl WireResponse for SotwResponse {
    fn encode_wire(&self, buf: &mut impl BufMut) {
        put_string(1, &self.version_info, buf);
        for r in &self.resources {
            put_bytes(2, &r.wire_any, buf);
        }
        put_string(4, self.type_url, buf);
        put_string(5, &self.nonce, buf);
    }
}

impl WireResponse for DeltaResponse {
    fn encode_wire(&self, buf: &mut impl BufMut) {
        put_string(1, &self.system_version_info, buf);
        for r in &self.resources {
            put_bytes(2, &r.wire_delta, buf);
        }
        put_string(4, self.type_url, buf);
        put_string(5, &self.nonce, buf);
        for name in &self.removed_resources {
            // Repeated strings are written even when empty.
            put_bytes(6, name.as_bytes(), buf);
        }
    }
}

impl SotwResponse {
    /// The same response as a prost message (tests, and clients of this crate that want one).
    pub fn to_proto(&self) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: self.version_info.clone(),
            resources: self.resources.iter().map(|r| r.body.clone()).collect(),
            type_url: self.type_url.to_string(),
            nonce: self.nonce.clone(),
            ..Default::default()
        }
    }
}

impl DeltaResponse {
    /// The same response as a prost message.
    pub fn to_proto(&self) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            system_version_info: self.system_version_info.clone(),
            resources: self.resources.iter().map(|r| r.delta_proto()).collect(),
            type_url: self.type_url.to_string(),
            removed_resources: self.removed_resources.clone(),
            nonce: self.nonce.clone(),
            ..Default::default()
        }
    }
}

/// Writes `E` with [`WireResponse`], reads `D` with prost.
pub struct AdsCodec<E, D>(PhantomData<fn() -> (E, D)>);

impl<E, D> Default for AdsCodec<E, D> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

pub struct WireEncoder<E>(PhantomData<fn() -> E>);
pub struct ProstDecoder<D>(PhantomData<fn() -> D>);

impl<E: WireResponse, D: Message + Default + Send + 'static> Codec for AdsCodec<E, D> {
    type Encode = E;
    type Decode = D;
    type Encoder = WireEncoder<E>;
    type Decoder = ProstDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        WireEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder(PhantomData)
    }
}

impl<E: WireResponse> Encoder for WireEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode_wire(dst);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        stream_buffers()
    }
}

/// Every stream keeps an encode and a decode buffer of this initial size for its lifetime
/// (tonic's default: 8 KiB each). Thousands of mostly idle streams make that most of a
/// stream's memory; a buffer grows when a message needs more.
fn stream_buffers() -> BufferSettings {
    BufferSettings::new(1024, 32 * 1024)
}

impl<D: Message + Default> Decoder for ProstDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        let message = D::decode(src.copy_to_bytes(src.remaining()))
            .map_err(|e| Status::internal(format!("malformed xDS request: {e}")))?;
        Ok(Some(message))
    }

    fn buffer_settings(&self) -> BufferSettings {
        stream_buffers()
    }
}

/// What serves the two ADS methods (the server's stream logic).
pub trait AdsHandler: Send + Sync + 'static {
    type SotwStream: futures::Stream<Item = Result<SotwResponse, Status>> + Send + 'static;
    type DeltaStream: futures::Stream<Item = Result<DeltaResponse, Status>> + Send + 'static;
    fn sotw(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> impl Future<Output = Result<Response<Self::SotwStream>, Status>> + Send;
    fn delta(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> impl Future<Output = Result<Response<Self::DeltaStream>, Status>> + Send;
}

const SERVICE_NAME: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// `envoy.service.discovery.v3.AggregatedDiscoveryService` over an [`AdsHandler`].
pub struct AdsService<H> {
    handler: Arc<H>,
    max_request_bytes: usize,
}

impl<H> AdsService<H> {
    pub fn new(handler: H, max_request_bytes: usize) -> Self {
        Self {
            handler: Arc::new(handler),
            max_request_bytes,
        }
    }
}

impl<H> Clone for AdsService<H> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            max_request_bytes: self.max_request_bytes,
        }
    }
}

impl<H> NamedService for AdsService<H> {
    const NAME: &'static str = SERVICE_NAME;
}

struct Sotw<H>(Arc<H>);
struct Delta<H>(Arc<H>);

impl<H: AdsHandler> StreamingService<DiscoveryRequest> for Sotw<H> {
    type Response = SotwResponse;
    type ResponseStream = H::SotwStream;
    type Future = BoxFuture<Response<H::SotwStream>, Status>;

    fn call(&mut self, request: Request<Streaming<DiscoveryRequest>>) -> Self::Future {
        let handler = self.0.clone();
        Box::pin(async move { handler.sotw(request).await })
    }
}

impl<H: AdsHandler> StreamingService<DeltaDiscoveryRequest> for Delta<H> {
    type Response = DeltaResponse;
    type ResponseStream = H::DeltaStream;
    type Future = BoxFuture<Response<H::DeltaStream>, Status>;

    fn call(&mut self, request: Request<Streaming<DeltaDiscoveryRequest>>) -> Self::Future {
        let handler = self.0.clone();
        Box::pin(async move { handler.delta(request).await })
    }
}

impl<H, B> Service<http::Request<B>> for AdsService<H>
where
    H: AdsHandler,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<Body>, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let handler = self.handler.clone();
        let max = Some(self.max_request_bytes);
        match req.uri().path() {
            SOTW_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(AdsCodec::<SotwResponse, DiscoveryRequest>::default())
                    .apply_max_message_size_config(max, None);
                Ok(grpc.streaming(Sotw(handler), req).await)
            }),
            DELTA_PATH => Box::pin(async move {
                let mut grpc =
                    Grpc::new(AdsCodec::<DeltaResponse, DeltaDiscoveryRequest>::default())
                        .apply_max_message_size_config(max, None);
                Ok(grpc.streaming(Delta(handler), req).await)
            }),
            _ => Box::pin(async { Ok(Status::unimplemented("").into_http()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::per_port;
    use crate::{ResourceType, Snapshot, translate};

    fn resources(t: ResourceType) -> Vec<Arc<Resource>> {
        let snap = Snapshot::new(translate(&[per_port(&[0, 1, 2])]).unwrap());
        snap.get(t).resources.values().cloned().collect()
    }

    #[test]
    fn sotw_bytes_are_prosts() {
        for t in ResourceType::ALL {
            for nonce in ["", "7"] {
                let r = SotwResponse {
                    version_info: "abc+held".into(),
                    resources: resources(t),
                    type_url: t.type_url(),
                    nonce: nonce.into(),
                };
                let mut wire = Vec::new();
                r.encode_wire(&mut wire);
                assert_eq!(wire, r.to_proto().encode_to_vec());
            }
        }
        let empty = SotwResponse {
            version_info: String::new(),
            resources: vec![],
            type_url: ResourceType::Cluster.type_url(),
            nonce: "1".into(),
        };
        let mut wire = Vec::new();
        empty.encode_wire(&mut wire);
        assert_eq!(wire, empty.to_proto().encode_to_vec());
    }

    #[test]
    fn delta_bytes_decode_to_the_same_message() {
        for t in ResourceType::ALL {
            let r = DeltaResponse {
                system_version_info: "v".into(),
                resources: resources(t),
                type_url: t.type_url(),
                removed_resources: vec!["gone".into(), String::new()],
                nonce: "3".into(),
            };
            let mut wire = Vec::new();
            r.encode_wire(&mut wire);
            // Delta resources keep the field order of the .proto (name first): compare the
            // decoded messages.
            assert_eq!(
                DeltaDiscoveryResponse::decode(wire.as_slice()).unwrap(),
                r.to_proto()
            );
        }
    }
}
