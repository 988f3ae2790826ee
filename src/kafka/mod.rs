//! The Kafka admin protocol, spoken directly with the `kafka-protocol` crate: connections to
//! brokers, API-version negotiation, framing, and typed answers. Knows nothing of Kubernetes.
mod connection;
mod error;
mod metadata;
mod reassign;
mod records;

pub use connection::{BrokerConnection, ConnectOptions};
pub use error::KafkaError;
pub use metadata::{BrokerInfo, ClusterMetadata, PartitionInfo, TopicInfo};
pub use reassign::{Reassignment, plan_drain};
pub use records::TopicRef;
