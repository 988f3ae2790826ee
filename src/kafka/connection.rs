//! One TCP connection to one Kafka broker: ApiVersions negotiation on connect, then typed
//! request/response round trips with size-prefixed frames, timeouts and correlation checks.
//! A connection that saw an I/O error, a timeout or a malformed frame is marked broken: its
//! stream may be mid-frame, so every later call fails fast until the caller reconnects.
use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::KafkaError;

/// Largest response frame accepted; Kafka's own clients default `max.response.size` lower.
const MAX_FRAME_BYTES: i64 = 100 * 1024 * 1024;
/// Kafka's error code for a request version the broker does not speak.
const UNSUPPORTED_VERSION: i16 = 35;

/// How to reach and talk to a broker.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub client_id: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            client_id: "pier".to_string(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A negotiated connection to a single broker.
#[derive(Debug)]
pub struct BrokerConnection {
    addr: String,
    stream: TcpStream,
    options: ConnectOptions,
    next_correlation_id: i32,
    /// api key → (min, max) version the broker accepts.
    broker_versions: HashMap<i16, (i16, i16)>,
    broken: bool,
}

impl BrokerConnection {
    /// Connects to `addr` (`host:port`) and negotiates API versions.
    pub async fn connect(addr: &str, options: ConnectOptions) -> Result<Self, KafkaError> {
        let stream = match timeout(options.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(KafkaError::Connect {
                    addr: addr.to_string(),
                    source,
                });
            }
            Err(_) => {
                return Err(KafkaError::Timeout {
                    addr: addr.to_string(),
                    api: "connect".to_string(),
                    after: options.connect_timeout,
                });
            }
        };
        // Nagle only delays small admin requests.
        let _ = stream.set_nodelay(true);
        let mut conn = BrokerConnection {
            addr: addr.to_string(),
            stream,
            options,
            next_correlation_id: 1,
            broker_versions: HashMap::new(),
            broken: false,
        };
        conn.negotiate_versions().await?;
        Ok(conn)
    }

    /// The `host:port` this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The version range the broker announced for an API, if it supports it at all.
    pub fn broker_versions(&self, api: ApiKey) -> Option<(i16, i16)> {
        self.broker_versions.get(&(api as i16)).copied()
    }

    /// Sends `request` at the highest version both sides speak and returns the decoded answer.
    /// Error codes inside the response body are the caller's to interpret.
    pub async fn send<R: Request>(&mut self, request: &R) -> Result<R::Response, KafkaError> {
        let api = api_name(R::KEY);
        let (min, max) = self.broker_versions(api_key(R::KEY)?).ok_or_else(|| {
            KafkaError::UnsupportedVersion {
                addr: self.addr.clone(),
                api: api.clone(),
                ours: R::VERSIONS.to_string(),
                theirs: "none".to_string(),
            }
        })?;
        let version = R::VERSIONS.max.min(max);
        if version < R::VERSIONS.min.max(min) {
            return Err(KafkaError::UnsupportedVersion {
                addr: self.addr.clone(),
                api,
                ours: R::VERSIONS.to_string(),
                theirs: format!("{min}..{max}"),
            });
        }
        self.round_trip(request, version).await
    }

    async fn negotiate_versions(&mut self) -> Result<(), KafkaError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("pier"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut version = ApiVersionsRequest::VERSIONS.max.min(4);
        let mut response: ApiVersionsResponse = self.round_trip(&request, version).await?;
        if response.error_code == UNSUPPORTED_VERSION && version > 0 {
            // The broker answered in v0 with what it supports; retry in the highest common one.
            let theirs = response
                .api_keys
                .iter()
                .find(|k| k.api_key == ApiKey::ApiVersions as i16)
                .map(|k| k.max_version)
                .unwrap_or(0);
            version = theirs.min(version);
            response = self.round_trip(&request, version).await?;
        }
        if response.error_code != 0 {
            return Err(KafkaError::broker(
                &self.addr,
                "ApiVersions",
                response.error_code,
                None,
            ));
        }
        self.broker_versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(())
    }

    async fn round_trip<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, KafkaError> {
        let api = api_name(R::KEY);
        if self.broken {
            return Err(KafkaError::Broken {
                addr: self.addr.clone(),
            });
        }
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = encode_request(request, version, correlation_id, &self.options.client_id)?;
        let after = self.options.request_timeout;
        let exchanged = timeout(after, async {
            self.stream.write_all(&frame).await?;
            let size = self.stream.read_i32().await?;
            if !(4..=MAX_FRAME_BYTES).contains(&i64::from(size)) {
                return Ok(Err(i64::from(size)));
            }
            let mut body = vec![0u8; size as usize];
            self.stream.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(Ok(body))
        })
        .await;
        let body = match exchanged {
            Ok(Ok(Ok(body))) => body,
            Ok(Ok(Err(size))) => {
                self.broken = true;
                return Err(KafkaError::FrameSize {
                    addr: self.addr.clone(),
                    api,
                    size,
                });
            }
            Ok(Err(source)) => {
                self.broken = true;
                return Err(KafkaError::Io {
                    addr: self.addr.clone(),
                    api,
                    source,
                });
            }
            Err(_) => {
                self.broken = true;
                return Err(KafkaError::Timeout {
                    addr: self.addr.clone(),
                    api,
                    after,
                });
            }
        };
        let decoded = decode_response::<R>(body, version, correlation_id);
        if decoded.is_err() {
            self.broken = true;
        }
        decoded.map_err(|e| e.into_error(&self.addr, &api))
    }
}

/// Why a response body could not be turned into a typed answer.
#[derive(Debug, PartialEq)]
pub(crate) enum DecodeFailure {
    Malformed(String),
    Correlation { expected: i32, got: i32 },
}

impl DecodeFailure {
    fn into_error(self, addr: &str, api: &str) -> KafkaError {
        match self {
            DecodeFailure::Malformed(message) => KafkaError::Decode {
                addr: addr.to_string(),
                api: api.to_string(),
                message,
            },
            DecodeFailure::Correlation { expected, got } => KafkaError::CorrelationMismatch {
                addr: addr.to_string(),
                api: api.to_string(),
                expected,
                got,
            },
        }
    }
}

/// A size-prefixed request frame: length, header, body.
pub(crate) fn encode_request<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &str,
) -> Result<BytesMut, KafkaError> {
    let encode_err = |message: String| KafkaError::Encode {
        api: api_name(R::KEY),
        message,
    };
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    header
        .encode(&mut frame, R::header_version(version))
        .map_err(|e| encode_err(e.to_string()))?;
    request
        .encode(&mut frame, version)
        .map_err(|e| encode_err(e.to_string()))?;
    let len = i32::try_from(frame.len() - 4)
        .map_err(|_| encode_err("request larger than 2 GiB".to_string()))?;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    Ok(frame)
}

/// Decodes a response body (without its length prefix), checking the correlation id and that
/// nothing is left over.
pub(crate) fn decode_response<R: Request>(
    body: Vec<u8>,
    version: i16,
    correlation_id: i32,
) -> Result<R::Response, DecodeFailure> {
    let mut buf = bytes::Bytes::from(body);
    let header = ResponseHeader::decode(&mut buf, R::Response::header_version(version))
        .map_err(|e| DecodeFailure::Malformed(format!("header: {e}")))?;
    if header.correlation_id != correlation_id {
        return Err(DecodeFailure::Correlation {
            expected: correlation_id,
            got: header.correlation_id,
        });
    }
    let response = R::Response::decode(&mut buf, version)
        .map_err(|e| DecodeFailure::Malformed(format!("body (v{version}): {e}")))?;
    if buf.has_remaining() {
        return Err(DecodeFailure::Malformed(format!(
            "{} unexpected trailing bytes (v{version})",
            buf.remaining()
        )));
    }
    Ok(response)
}

fn api_key(key: i16) -> Result<ApiKey, KafkaError> {
    ApiKey::try_from(key).map_err(|_| KafkaError::Encode {
        api: format!("api key {key}"),
        message: "unknown API key".to_string(),
    })
}

fn api_name(key: i16) -> String {
    ApiKey::try_from(key)
        .map(|k| format!("{k:?}"))
        .unwrap_or_else(|_| format!("api key {key}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
    use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
    use kafka_protocol::protocol::decode_request_header_from_buffer;
    use tokio::net::TcpListener;

    fn encode_response<R: Encodable + HeaderVersion>(
        response: &R,
        version: i16,
        correlation_id: i32,
    ) -> Vec<u8> {
        let mut body = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut body, R::header_version(version))
            .unwrap();
        response.encode(&mut body, version).unwrap();
        body.to_vec()
    }

    fn metadata_response() -> MetadataResponse {
        MetadataResponse::default()
            .with_controller_id(BrokerId(2))
            .with_brokers(vec![
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(2))
                    .with_host(StrBytes::from_static_str("b2"))
                    .with_port(9092),
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(1))
                    .with_host(StrBytes::from_static_str("b1"))
                    .with_port(9092),
            ])
    }

    #[test]
    fn request_frame_carries_length_header_and_body() {
        let frame = encode_request(&MetadataRequest::default(), 12, 7, "pier-test").unwrap();
        let len = i32::from_be_bytes(frame[..4].try_into().unwrap());
        assert_eq!(len as usize, frame.len() - 4);
        let mut rest = bytes::Bytes::copy_from_slice(&frame[4..]);
        let header = decode_request_header_from_buffer(&mut rest).unwrap();
        assert_eq!(header.request_api_key, ApiKey::Metadata as i16);
        assert_eq!(header.request_api_version, 12);
        assert_eq!(header.correlation_id, 7);
        assert_eq!(header.client_id.unwrap().to_string(), "pier-test");
        MetadataRequest::decode(&mut rest, 12).unwrap();
        assert!(!rest.has_remaining());
    }

    #[test]
    fn response_decodes_and_checks_correlation_and_trailing_bytes() {
        let body = encode_response(&metadata_response(), 12, 5);
        let ok = decode_response::<MetadataRequest>(body.clone(), 12, 5).unwrap();
        assert_eq!(ok.brokers.len(), 2);

        let err = decode_response::<MetadataRequest>(body.clone(), 12, 6).unwrap_err();
        assert_eq!(
            err,
            DecodeFailure::Correlation {
                expected: 6,
                got: 5
            }
        );

        let mut trailing = body.clone();
        trailing.push(0);
        assert!(matches!(
            decode_response::<MetadataRequest>(trailing, 12, 5),
            Err(DecodeFailure::Malformed(m)) if m.contains("trailing")
        ));

        let truncated = body[..body.len() / 2].to_vec();
        assert!(matches!(
            decode_response::<MetadataRequest>(truncated, 12, 5),
            Err(DecodeFailure::Malformed(_))
        ));
        assert!(matches!(
            decode_response::<MetadataRequest>(vec![], 12, 5),
            Err(DecodeFailure::Malformed(_))
        ));
    }

    /// What the fake broker does with the request after ApiVersions.
    enum Behaviour {
        AnswerMetadata,
        Close,
        HugeFrame,
        Silent,
    }

    /// A one-connection fake broker: answers ApiVersions (Metadata v0..12 only), then behaves.
    async fn fake_broker(behaviour: Behaviour) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            loop {
                let Ok(size) = s.read_i32().await else { return };
                let mut buf = vec![0u8; size as usize];
                s.read_exact(&mut buf).await.unwrap();
                let mut req = bytes::Bytes::from(buf);
                let header = decode_request_header_from_buffer(&mut req).unwrap();
                let v = header.request_api_version;
                let out = if header.request_api_key == ApiKey::ApiVersions as i16 {
                    let r = ApiVersionsResponse::default().with_api_keys(vec![
                        ApiVersion::default()
                            .with_api_key(ApiKey::ApiVersions as i16)
                            .with_max_version(4),
                        ApiVersion::default()
                            .with_api_key(ApiKey::Metadata as i16)
                            .with_max_version(12),
                    ]);
                    encode_response(&r, v, header.correlation_id)
                } else {
                    match behaviour {
                        Behaviour::AnswerMetadata => {
                            encode_response(&metadata_response(), v, header.correlation_id)
                        }
                        Behaviour::Close => return,
                        Behaviour::HugeFrame => {
                            s.write_i32(i32::MAX).await.unwrap();
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            return;
                        }
                        Behaviour::Silent => {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            return;
                        }
                    }
                };
                s.write_i32(out.len() as i32).await.unwrap();
                s.write_all(&out).await.unwrap();
            }
        });
        addr
    }

    fn quick() -> ConnectOptions {
        ConnectOptions {
            request_timeout: Duration::from_millis(300),
            ..ConnectOptions::default()
        }
    }

    #[tokio::test]
    async fn negotiates_and_reads_metadata_from_a_fake_broker() {
        let addr = fake_broker(Behaviour::AnswerMetadata).await;
        let mut conn = BrokerConnection::connect(&addr, quick()).await.unwrap();
        assert_eq!(conn.broker_versions(ApiKey::Metadata), Some((0, 12)));
        let md = conn.metadata(None).await.unwrap();
        assert_eq!(md.controller_id, 2);
        let ids: Vec<i32> = md.brokers.iter().map(|b| b.id).collect();
        assert_eq!(ids, vec![1, 2], "brokers are sorted by id");
    }

    #[tokio::test]
    async fn an_api_the_broker_lacks_is_a_clear_error() {
        let addr = fake_broker(Behaviour::AnswerMetadata).await;
        let mut conn = BrokerConnection::connect(&addr, quick()).await.unwrap();
        let err = conn.create_topic("t", 1, 1).await.unwrap_err();
        assert!(
            matches!(err, KafkaError::UnsupportedVersion { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("CreateTopics"), "{err}");
    }

    #[tokio::test]
    async fn broken_answers_are_errors_and_poison_the_connection() {
        for (behaviour, expect) in [
            (Behaviour::Close, "connection failed"),
            (Behaviour::HugeFrame, "out of bounds"),
            (Behaviour::Silent, "timed out"),
        ] {
            let addr = fake_broker(behaviour).await;
            let mut conn = BrokerConnection::connect(&addr, quick()).await.unwrap();
            let err = conn.metadata(None).await.unwrap_err();
            assert!(err.to_string().contains(expect), "{err}");
            assert!(
                err.to_string().contains(&addr),
                "error names the broker: {err}"
            );
            let again = conn.metadata(None).await.unwrap_err();
            assert!(matches!(again, KafkaError::Broken { .. }), "{again}");
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = BrokerConnection::connect(&addr, quick()).await.unwrap_err();
        assert!(matches!(err, KafkaError::Connect { .. }), "{err}");
    }
}
