//! The planner's inputs ([`Request`] and what it points at) and its output ([`Plan`]).
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A registered broker and the rack it reported (`broker.rack`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerInfo {
    /// The broker's `node.id`.
    pub id: i32,
    /// `broker.rack`; brokers without one form one "no rack" group.
    pub rack: Option<String>,
}

/// One partition and where its replicas are now.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionInfo {
    /// Topic name.
    pub topic: String,
    /// Partition index within the topic.
    pub partition: i32,
    /// Broker ids in preference order: `replicas[0]` is the preferred leader.
    pub replicas: Vec<i32>,
    /// `false` while the partition is in a reassignment already: its replicas count toward
    /// their brokers' load, but the plan never changes it.
    pub movable: bool,
}

/// How far the plan goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Only replace replicas on leaving brokers: the fewest copies. Targets are chosen to keep
    /// racks spread and loads even, and only the partitions that lose a replica are
    /// reordered for leader balance; every other partition is left alone.
    DrainOnly,
    /// Drain, then also fix rack spread and balance replicas and leaders over all movable
    /// partitions (for instance onto newly added, empty brokers).
    Full,
}

/// What to plan for.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Every registered broker, leaving ones included.
    pub brokers: &'a [BrokerInfo],
    /// Every partition of the cluster, movable or not.
    pub partitions: &'a [PartitionInfo],
    /// Brokers to empty. An id here need not be registered: that is how replicas on a broker
    /// that is gone for good are moved away (a replica on a broker that is neither registered
    /// nor leaving is an error, so a broker that is merely down is never drained by mistake).
    pub leaving: &'a BTreeSet<i32>,
    /// How far the plan goes.
    pub mode: Mode,
}

/// One partition's new replica list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Move {
    /// Topic name.
    pub topic: String,
    /// Partition index within the topic.
    pub partition: i32,
    /// The replicas now, as in the request.
    pub from: Vec<i32>,
    /// The new replicas in preference order (`to[0]` is the new preferred leader); same
    /// length as `from`.
    pub to: Vec<i32>,
}

impl Move {
    /// Brokers that get a copy of the partition's data (in `to`, not in `from`).
    pub fn added(&self) -> impl Iterator<Item = i32> + '_ {
        self.to.iter().copied().filter(|b| !self.from.contains(b))
    }

    /// True when the move only reorders the replicas (a leader change, no data copied).
    pub fn is_reorder(&self) -> bool {
        self.added().next().is_none()
    }
}

/// Replicas and leaders (first replicas) on one broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Load {
    /// Replicas of any partition on the broker.
    pub replicas: usize,
    /// Partitions whose first replica is on the broker.
    pub leaders: usize,
}

/// One broker's load before and after the plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct BrokerSummary {
    /// The broker is in [`Request::leaving`].
    pub leaving: bool,
    /// Load in the request.
    pub before: Load,
    /// Load once every move is done.
    pub after: Load,
}

/// How one count (replicas or leaders) spreads over the remaining brokers after the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Spread {
    /// Remaining (registered, not leaving) brokers.
    pub brokers: usize,
    /// Sum of the count over them.
    pub total: usize,
    /// Smallest count on one of them (0 without brokers).
    pub min: usize,
    /// Largest count on one of them (0 without brokers).
    pub max: usize,
    /// Brokers whose count is more than 1 away from the mean, by id.
    pub outside: Vec<i32>,
}

impl Spread {
    /// Mean count per remaining broker (0 without brokers).
    pub fn mean(&self) -> f64 {
        if self.brokers == 0 {
            0.0
        } else {
            self.total as f64 / self.brokers as f64
        }
    }

    /// True when every remaining broker is within ±1 of the mean.
    pub fn is_balanced(&self) -> bool {
        self.outside.is_empty()
    }
}

/// Something the plan could not do, and why it matters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Note {
    /// Partitions in a reassignment already (`movable: false`) still have replicas on these
    /// leaving brokers (id → replicas): plan again once that reassignment is over.
    LeavingStillHosts {
        /// Leaving broker id → replicas left on it.
        brokers: BTreeMap<i32, usize>,
    },
    /// Movable partitions whose replicas span fewer than `min(RF, racks)` racks after the plan
    /// ([`Mode::DrainOnly`] leaves partitions without a leaving replica as they are).
    RackSpreadShort {
        /// How many partitions.
        partitions: usize,
        /// The first few, as (topic, partition).
        examples: Vec<(String, i32)>,
    },
    /// Replicas per broker not within ±1 of the mean: racks of unequal size (rack spread comes
    /// first), partitions that may not move, or [`Mode::DrainOnly`].
    ReplicasUnbalanced(Spread),
    /// Leaders per broker not within ±1 of the mean, and reordering replicas could not fix it.
    LeadersUnbalanced(Spread),
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::LeavingStillHosts { brokers } => write!(
                f,
                "leaving brokers still hold replicas of partitions being reassigned already \
                 (broker → replicas: {brokers:?}); plan again once those reassignments finish"
            ),
            Note::RackSpreadShort {
                partitions,
                examples,
            } => {
                write!(
                    f,
                    "{partitions} partitions span fewer racks than min(replication factor, racks)"
                )?;
                let shown: Vec<String> = examples.iter().map(|(t, p)| format!("{t}-{p}")).collect();
                write!(f, ", e.g. {}", shown.join(", "))
            }
            Note::ReplicasUnbalanced(s) => write_spread(f, "replicas", s),
            Note::LeadersUnbalanced(s) => write_spread(f, "leaders", s),
        }
    }
}

/// How many broker ids a note's text names before it says how many more there are.
const NAMED_BROKERS: usize = 20;

fn write_spread(f: &mut fmt::Formatter<'_>, what: &str, s: &Spread) -> fmt::Result {
    write!(
        f,
        "{what} per broker range {}..={} around a mean of {:.2}; brokers outside mean ± 1: {:?}",
        s.min,
        s.max,
        s.mean(),
        &s.outside[..s.outside.len().min(NAMED_BROKERS)]
    )?;
    if s.outside.len() > NAMED_BROKERS {
        write!(f, " and {} more", s.outside.len() - NAMED_BROKERS)?;
    }
    Ok(())
}

/// What to change, and what the cluster looks like afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Partitions whose replica list changes, sorted by (topic, partition). Partitions that
    /// stay as they are do not appear.
    pub moves: Vec<Move>,
    /// Every registered or leaving broker, by id: load before and after.
    pub brokers: BTreeMap<i32, BrokerSummary>,
    /// Replicas per remaining broker after the plan.
    pub replicas: Spread,
    /// Leaders per remaining broker after the plan.
    pub leaders: Spread,
    /// Replica copies: the sum over moves of the brokers that newly get the partition.
    pub replicas_moved: usize,
    /// Moves that only reorder replicas (leader changes, no data copied).
    pub reorders: usize,
    /// What the plan could not do.
    pub notes: Vec<Note>,
}

impl Plan {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.moves.is_empty()
    }
}
