//! What a stream session (SotW or delta) tells the server besides the responses it sends.
use std::time::Instant;

use super::ResourceType;

/// Something the client said about a response it got, or a response sent.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A response of this type and version went out.
    Sent {
        type_: ResourceType,
        version: String,
    },
    /// The client applied the response of this version.
    Acked {
        type_: ResourceType,
        version: String,
        /// When the snapshot behind the response was built (update → ACK latency).
        snapshot_created: Option<Instant>,
    },
    /// The client rejected the response of this version and keeps its previous config.
    Nacked {
        type_: ResourceType,
        version: String,
        error: String,
        /// Version ([`super::Snapshot::version`]) of the snapshot the rejected response came from.
        snapshot: Option<String>,
    },
    /// The stream has everything of this snapshot it subscribes to, and ACKed all of it
    /// (nothing in flight, nothing held back). Told once per snapshot.
    Applied { snapshot: String },
}

/// The client asked for more than a stream may hold; the stream is closed with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Responses to send, in order, and events to record.
#[derive(Debug)]
pub struct Output<R> {
    pub responses: Vec<R>,
    pub events: Vec<StreamEvent>,
    /// Set when the request was refused: the server ends the stream.
    pub refused: Option<Refused>,
}

impl<R> Default for Output<R> {
    fn default() -> Self {
        Self {
            responses: Vec::new(),
            events: Vec::new(),
            refused: None,
        }
    }
}
