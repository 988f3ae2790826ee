//! Errors of the Kafka admin client. Each names the broker address (or node) and the API
//! involved, and says whether trying again may help ([`KafkaError::is_retriable`]).
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;

/// Something went wrong talking to a Kafka broker. Cheap to clone (I/O sources are shared), so
/// one failure can be reported for several topics or partitions.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KafkaError {
    #[error("cannot connect to Kafka broker {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: Arc<std::io::Error>,
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
        source: Arc<std::io::Error>,
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
    #[error("invalid TLS settings for Kafka: {message}")]
    TlsConfig { message: String },
    /// The TLS handshake failed for a reason retrying will not fix: the broker's certificate
    /// did not verify, or the broker refused ours (or our lack of one).
    #[error("Kafka broker {addr}: TLS failed: {source}")]
    Tls {
        addr: String,
        #[source]
        source: rustls::Error,
    },
    /// SASL authentication was refused (wrong credentials, a mechanism the listener does not
    /// enable, a server signature that did not verify); `message` is the broker's reason.
    #[error("Kafka broker {addr}: SASL {mechanism} authentication failed: {message}")]
    Authentication {
        addr: String,
        mechanism: String,
        message: String,
    },
    #[error("{api}: no address known for Kafka node {node}")]
    UnknownNode { api: String, node: i32 },
    #[error("{api}: no Kafka node addresses known")]
    NoNodes { api: String },
    /// The caller asked for something no request can carry (a directory id that is not a
    /// Kafka Uuid, say); nothing was sent.
    #[error("{api}: invalid argument: {message}")]
    InvalidArgument { api: String, message: String },
}

impl KafkaError {
    /// Builds [`KafkaError::Broker`] from a non-zero Kafka error code.
    pub(crate) fn broker(addr: &str, api: &str, code: i16, message: Option<String>) -> Self {
        let name = match ResponseError::try_from_code(code) {
            Some(ResponseError::Unknown(_)) | None => "unknown error code".to_string(),
            Some(e) => format!("{e:?}"),
        };
        KafkaError::Broker {
            addr: addr.to_string(),
            api: api.to_string(),
            code,
            name,
            message: message.filter(|m| !m.is_empty()),
        }
    }

    /// `Ok` for error code 0, else [`KafkaError::Broker`] with the message Kafka sent.
    pub(crate) fn check(
        addr: &str,
        api: &str,
        code: i16,
        message: Option<&kafka_protocol::protocol::StrBytes>,
    ) -> Result<(), Self> {
        if code == 0 {
            return Ok(());
        }
        Err(Self::broker(
            addr,
            api,
            code,
            message.map(|m| m.to_string()),
        ))
    }

    /// An I/O failure during `api`; one that carries a TLS error (a certificate that did not
    /// verify, an alert from the broker) is [`KafkaError::Tls`].
    pub(crate) fn io(addr: &str, api: &str, source: std::io::Error) -> Self {
        if let Some(tls) = source
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            return KafkaError::Tls {
                addr: addr.to_string(),
                source: tls.clone(),
            };
        }
        KafkaError::Io {
            addr: addr.to_string(),
            api: api.to_string(),
            source: Arc::new(source),
        }
    }

    /// A request the caller's arguments cannot make (nothing is sent).
    pub(crate) fn invalid_argument(api: &str, message: impl Into<String>) -> Self {
        KafkaError::InvalidArgument {
            api: api.to_string(),
            message: message.into(),
        }
    }

    /// A response that does not say what it should (a missing result, a wrong resource).
    pub(crate) fn malformed(addr: &str, api: &str, message: impl Into<String>) -> Self {
        KafkaError::Decode {
            addr: addr.to_string(),
            api: api.to_string(),
            message: message.into(),
        }
    }

    /// The Kafka error code, if the broker answered with one.
    pub fn code(&self) -> Option<i16> {
        match self {
            KafkaError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The message the broker sent with its error code, if any.
    pub fn broker_message(&self) -> Option<&str> {
        match self {
            KafkaError::Broker { message, .. } => message.as_deref(),
            _ => None,
        }
    }

    /// The cluster has no authorizer, so there are no ACLs to read or change
    /// (SECURITY_DISABLED).
    pub fn is_security_disabled(&self) -> bool {
        self.code() == Some(codes::SECURITY_DISABLED)
    }

    /// The broker address involved, if any.
    pub fn addr(&self) -> Option<&str> {
        match self {
            KafkaError::Connect { addr, .. }
            | KafkaError::Timeout { addr, .. }
            | KafkaError::Io { addr, .. }
            | KafkaError::Broken { addr }
            | KafkaError::Decode { addr, .. }
            | KafkaError::FrameSize { addr, .. }
            | KafkaError::CorrelationMismatch { addr, .. }
            | KafkaError::UnsupportedVersion { addr, .. }
            | KafkaError::Broker { addr, .. }
            | KafkaError::Tls { addr, .. }
            | KafkaError::Authentication { addr, .. } => Some(addr),
            KafkaError::Encode { .. }
            | KafkaError::TlsConfig { .. }
            | KafkaError::UnknownNode { .. }
            | KafkaError::NoNodes { .. }
            | KafkaError::InvalidArgument { .. } => None,
        }
    }

    /// Nothing listens at the broker's address (connection refused): it is down or not
    /// started yet, a state that lasts longer than a retry's backoff.
    pub fn is_refused(&self) -> bool {
        matches!(self, KafkaError::Connect { source, .. }
            if source.kind() == std::io::ErrorKind::ConnectionRefused)
    }

    /// Whether the same call may succeed later: connection failures, timeouts and the Kafka
    /// error codes the protocol marks retriable (NOT_CONTROLLER, REQUEST_TIMED_OUT,
    /// LEADER_NOT_AVAILABLE, …). Malformed answers, unsupported versions, unknown nodes, TLS
    /// and SASL failures and every other code (INVALID_REQUEST, POLICY_VIOLATION, codes we do
    /// not know) are final.
    pub fn is_retriable(&self) -> bool {
        match self {
            KafkaError::Connect { .. }
            | KafkaError::Timeout { .. }
            | KafkaError::Io { .. }
            | KafkaError::Broken { .. } => true,
            KafkaError::Broker { code, .. } => {
                ResponseError::try_from_code(*code).is_some_and(|e| e.is_retriable())
            }
            KafkaError::Encode { .. }
            | KafkaError::Decode { .. }
            | KafkaError::FrameSize { .. }
            | KafkaError::CorrelationMismatch { .. }
            | KafkaError::UnsupportedVersion { .. }
            | KafkaError::UnknownNode { .. }
            | KafkaError::NoNodes { .. }
            | KafkaError::InvalidArgument { .. }
            | KafkaError::TlsConfig { .. }
            | KafkaError::Tls { .. }
            | KafkaError::Authentication { .. } => false,
        }
    }
}

/// Kafka error codes Pier looks at by number.
pub mod codes {
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    /// Also what a raft leader answers a pending AddRaftVoter/RemoveRaftVoter with when it
    /// loses leadership: the change may still commit.
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    /// On AddRaftVoter/RemoveRaftVoter: outcome unknown (the change may still commit, or
    /// another change was pending, or the new voter lags); read the quorum again.
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const REPLICA_NOT_AVAILABLE: i16 = 9;
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    /// CreatePartitions: fewer partitions than the topic has, or as many.
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    pub const NOT_CONTROLLER: i16 = 41;
    pub const INVALID_REQUEST: i16 = 42;
    pub const POLICY_VIOLATION: i16 = 44;
    /// DescribeAcls, CreateAcls, DeleteAcls: the cluster has no authorizer
    /// (`authorizer.class.name` unset).
    pub const SECURITY_DISABLED: i16 = 54;
    pub const INVALID_CONFIG: i16 = 40;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const LOG_DIR_NOT_FOUND: i16 = 57;
    pub const ELECTION_NOT_NEEDED: i16 = 84;
    pub const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
    pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
    pub const ILLEGAL_SASL_STATE: i16 = 34;
    pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
    pub const RESOURCE_NOT_FOUND: i16 = 91;
    /// UpdateFeatures refused a level (a downgrade that would lose metadata, a level some
    /// node does not support, kraft.version not ready).
    pub const INVALID_UPDATE_VERSION: i16 = 95;
    pub const FEATURE_UPDATE_FAILED: i16 = 96;
    pub const BROKER_ID_NOT_REGISTERED: i16 = 102;
    pub const INCONSISTENT_CLUSTER_ID: i16 = 104;
    /// AddRaftVoter: the id is a voter already (with any directory id).
    pub const DUPLICATE_VOTER: i16 = 126;
    /// RemoveRaftVoter: no voter with this id and directory id (or it is the last voter).
    pub const VOTER_NOT_FOUND: i16 = 127;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_follows_the_protocol_and_io() {
        let b = |code| KafkaError::broker("b:9092", "X", code, None);
        assert!(b(codes::NOT_CONTROLLER).is_retriable());
        assert!(b(codes::REQUEST_TIMED_OUT).is_retriable());
        assert!(b(codes::LEADER_NOT_AVAILABLE).is_retriable());
        assert!(!b(codes::INVALID_REQUEST).is_retriable());
        assert!(!b(codes::POLICY_VIOLATION).is_retriable());
        assert!(!b(9999).is_retriable());
        assert!(!b(-1).is_retriable(), "UNKNOWN_SERVER_ERROR");
        let io = KafkaError::Io {
            addr: "b:9092".into(),
            api: "Metadata".into(),
            source: Arc::new(std::io::ErrorKind::UnexpectedEof.into()),
        };
        assert!(io.is_retriable());
        assert!(
            !KafkaError::malformed("b:9092", "Metadata", "short").is_retriable(),
            "malformed answers are final"
        );
    }

    #[test]
    fn broker_errors_name_broker_api_code_and_message() {
        let e = KafkaError::broker("b:9092", "DescribeConfigs", 9999, Some("odd".into()));
        let text = e.to_string();
        for part in [
            "b:9092",
            "DescribeConfigs",
            "9999",
            "unknown error code",
            "odd",
        ] {
            assert!(text.contains(part), "{text}");
        }
        assert_eq!(e.code(), Some(9999));
        assert_eq!(e.broker_message(), Some("odd"));
        let e = KafkaError::broker("b:9092", "X", codes::NOT_CONTROLLER, Some(String::new()));
        assert!(e.to_string().ends_with("(NotController)"), "{e}");
    }

    #[test]
    fn codes_pier_looks_at_have_kafka_names() {
        for (code, name, retriable) in [
            (codes::DUPLICATE_VOTER, "DuplicateVoter", false),
            (codes::VOTER_NOT_FOUND, "VoterNotFound", false),
            (codes::REQUEST_TIMED_OUT, "RequestTimedOut", true),
            (codes::NOT_LEADER_OR_FOLLOWER, "NotLeaderOrFollower", true),
            (codes::UNSUPPORTED_VERSION, "UnsupportedVersion", false),
            (codes::SECURITY_DISABLED, "SecurityDisabled", false),
            (codes::INVALID_PARTITIONS, "InvalidPartitions", false),
            (
                codes::TOPIC_AUTHORIZATION_FAILED,
                "TopicAuthorizationFailed",
                false,
            ),
            (
                codes::CLUSTER_AUTHORIZATION_FAILED,
                "ClusterAuthorizationFailed",
                false,
            ),
            (
                codes::INVALID_REPLICA_ASSIGNMENT,
                "InvalidReplicaAssignment",
                false,
            ),
            (codes::INVALID_UPDATE_VERSION, "InvalidUpdateVersion", false),
            (codes::FEATURE_UPDATE_FAILED, "FeatureUpdateFailed", false),
            (
                codes::INCONSISTENT_CLUSTER_ID,
                "InconsistentClusterId",
                false,
            ),
        ] {
            let e = KafkaError::broker("b:9092", "AddRaftVoter", code, None);
            assert!(e.to_string().contains(&format!("({name})")), "{e}");
            assert_eq!(e.is_retriable(), retriable, "{e}");
        }
        assert!(KafkaError::broker("b:9092", "DescribeAcls", 54, None).is_security_disabled());
        assert!(!KafkaError::broker("b:9092", "DescribeAcls", 42, None).is_security_disabled());
        let e = KafkaError::invalid_argument("AddRaftVoter", "bad id");
        assert!(!e.is_security_disabled());
        assert!(!e.is_retriable());
        assert_eq!(e.addr(), None);
        assert_eq!(e.to_string(), "AddRaftVoter: invalid argument: bad id");
    }
}
