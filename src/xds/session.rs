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
    },
}

/// Responses to send, in order, and events to record.
#[derive(Debug)]
pub struct Output<R> {
    pub responses: Vec<R>,
    pub events: Vec<StreamEvent>,
}

impl<R> Default for Output<R> {
    fn default() -> Self {
        Self {
            responses: Vec::new(),
            events: Vec::new(),
        }
    }
}
