//! Pier's own partition-replica balancer: given the brokers, where every partition's replicas
//! are and which brokers leave, [`plan`] says which partitions get which new replica lists.
//! The operator uses it (a) to drain brokers that leave the cluster ([`Mode::DrainOnly`]) and
//! (b) to spread replicas onto newly added brokers ([`Mode::Full`]). Pure: no I/O, no Kafka,
//! no Kubernetes; the same request always gives the same plan.
//!
//! Goals, highest first:
//! 1. every partition keeps its replication factor;
//! 2. no two replicas of a partition on one broker, none on a leaving broker afterwards;
//! 3. a partition's replicas span `min(RF, racks)` racks (brokers without a rack form one
//!    group);
//! 4. replicas per remaining broker within ±1 of the mean;
//! 5. leaders (first replicas) per remaining broker within ±1 of the mean, by reordering
//!    replicas where possible (no data copy);
//! 6. as few replica copies as possible.
//!
//! When a goal cannot be met because of a higher one (racks of unequal size, partitions being
//! reassigned already), the plan does the best it can and says so in [`Plan::notes`].
//!
//! The algorithm, in three greedy phases over indexed loads (sorted sets of `(load, broker)`
//! per rack, per cluster, and of each rack's least load):
//! 1. *Placement* (`placement.rs`): each replica on a leaving broker is replaced by the least
//!    loaded broker in a rack the partition does not use yet (while it spans too few racks),
//!    else by the least loaded broker not holding it. In [`Mode::Full`] a partition that still
//!    spans too few racks has a replica from its most crowded rack moved the same way.
//! 2. *Replica balance* ([`Mode::Full`] only, `replicas.rs`): first between racks (a rack's
//!    load against its share, moving only replicas whose partition keeps its rack spread),
//!    then between the brokers of each rack, always from the most to the least loaded, until
//!    every broker is within ±1 of the mean or no move reduces the imbalance.
//! 3. *Leader balance* (`leaders.rs`): leadership moves along chains of partitions (a broker
//!    leading a partition hands it to one of its followers) found by breadth-first search,
//!    from a broker above the band to one below it. In [`Mode::DrainOnly`] only the partitions
//!    that lose a replica anyway are reordered.
//!
//! Each phase only makes moves that strictly reduce the spread of loads, so it ends; each step
//! costs a few `log B` set operations plus a scan of one broker's partitions, far from
//! `O(P·B²)`. `benches/plan.rs` prints the times.
#![forbid(unsafe_code)]

mod error;
mod leaders;
mod model;
mod placement;
mod plan;
mod replicas;
mod state;

pub use error::BalanceError;
pub use model::{
    BrokerInfo, BrokerSummary, Load, Mode, Move, Note, PartitionInfo, Plan, Request, Spread,
};
pub use plan::plan;
