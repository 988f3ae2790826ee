//! Errors of the Kafka admin client. Each names the broker address and the API involved.
use std::time::Duration;

/// Something went wrong talking to a Kafka broker.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("cannot connect to Kafka broker {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Kafka broker {addr}: {api} timed out after {after:?}")]
    Timeout {
        addr: String,
        api: String,
        after: Duration,
    },
    #[error("Kafka broker {addr}: connection failed during {api}: {source}")]
    Io {
        addr: String,
        api: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Kafka broker {addr}: connection is broken by an earlier error; reconnect")]
    Broken { addr: String },
    #[error("cannot encode {api} request: {message}")]
    Encode { api: String, message: String },
    #[error("Kafka broker {addr}: malformed {api} response: {message}")]
    Decode {
        addr: String,
        api: String,
        message: String,
    },
    #[error("Kafka broker {addr}: {api} response frame of {size} bytes is out of bounds")]
    FrameSize {
        addr: String,
        api: String,
        size: i64,
    },
    #[error("Kafka broker {addr}: {api} response has correlation id {got}, expected {expected}")]
    CorrelationMismatch {
        addr: String,
        api: String,
        expected: i32,
        got: i32,
    },
    #[error(
        "Kafka broker {addr} does not support {api} in a version we speak (ours {ours}, broker's {theirs})"
    )]
    UnsupportedVersion {
        addr: String,
        api: String,
        ours: String,
        theirs: String,
    },
    #[error("Kafka broker {addr}: {api} failed with error code {code} ({name}){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Broker {
        addr: String,
        api: String,
        code: i16,
        name: String,
        message: Option<String>,
    },
}

impl KafkaError {
    /// Builds [`KafkaError::Broker`] from a non-zero Kafka error code.
    pub(crate) fn broker(addr: &str, api: &str, code: i16, message: Option<String>) -> Self {
        use kafka_protocol::error::ParseResponseErrorCode;
        let name = match code.err() {
            Some(kafka_protocol::ResponseError::Unknown(_)) | None => {
                "unknown error code".to_string()
            }
            Some(e) => format!("{e:?}"),
        };
        KafkaError::Broker {
            addr: addr.to_string(),
            api: api.to_string(),
            code,
            name,
            message,
        }
    }
}
