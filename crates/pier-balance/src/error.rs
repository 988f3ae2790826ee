//! Why a plan cannot be made: malformed input, or too few brokers left.
use thiserror::Error;

/// Why [`crate::plan`] refused the request. Nothing is planned when it fails.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BalanceError {
    /// A partition with a replica to move has more replicas than there are remaining brokers.
    #[error(
        "{topic}-{partition} has {replication_factor} replicas but only {available} brokers \
         remain once the leaving ones are gone; add brokers or leave fewer"
    )]
    NotEnoughBrokers {
        topic: String,
        partition: i32,
        replication_factor: usize,
        available: usize,
    },
    /// The same broker id is registered twice.
    #[error("broker {id} is listed twice in the brokers")]
    DuplicateBroker { id: i32 },
    /// The same partition is listed twice.
    #[error("partition {topic}-{partition} is listed twice")]
    DuplicatePartition { topic: String, partition: i32 },
    /// A partition names one broker twice in its replicas.
    #[error("{topic}-{partition} names broker {broker} twice in its replicas {replicas:?}")]
    DuplicateReplica {
        topic: String,
        partition: i32,
        broker: i32,
        replicas: Vec<i32>,
    },
    /// A replica is on a broker that is neither registered nor leaving.
    #[error(
        "{topic}-{partition} has a replica on broker {broker}, which is neither registered nor \
         leaving; if it is gone for good, list it as leaving to move its replicas away"
    )]
    UnknownBroker {
        topic: String,
        partition: i32,
        broker: i32,
    },
}
