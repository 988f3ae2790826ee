//! The KRaft controller quorum, planned without I/O: how each node is formatted and finds the
//! quorum, and which single membership change (KIP-853 AddRaftVoter / RemoveRaftVoter) to make
//! now so that the voters become the spec's controllers.
//!
//! Rules, from Kafka's own (`AddVoterHandler`, `RemoveVoterHandler`) and the failures they guard
//! against:
//! - one change at a time, each planned from what DescribeQuorum says now, so an operator
//!   restart (or a change whose answer was lost) resumes from Kafka's state, not from a guess;
//! - a node is added only once its Pod runs the controller role and it has caught up with the
//!   metadata log as an observer, and only while the new voter set keeps a caught-up majority;
//! - a node leaves the voters before its Pod goes or restarts without the role (the controller
//!   holds the node meanwhile); removing the leader is allowed (Kafka elects another);
//! - never the last voter, and never a removal that leaves fewer caught-up voters than a
//!   majority of the rest: that is refused, with the reason in status.
use std::collections::{BTreeMap, BTreeSet};

use crate::api::{QuorumMode, QuorumStatus, QuorumVoter};
use crate::kafka::{QuorumInfo, ReplicaState};

/// An observer further behind the leader's high watermark than this many records is not
/// caught up, whatever its timestamps say.
pub const MAX_OBSERVER_LAG: i64 = 1_000;

/// The `kafka-storage.sh format` flags of a node (the value of [`FORMAT_ARGS_ENV`]).
/// Static quorums need none. In a dynamic quorum the initial controllers are formatted with
/// the same `--initial-controllers` list until the quorum has formed; every other node (and,
/// once formed, every node: a replaced disk must never bootstrap a second quorum) joins as an
/// observer with `--no-initial-controllers`.
pub fn format_args(
    quorum: &QuorumStatus,
    id: i32,
    endpoint: impl Fn(i32) -> String,
) -> Option<String> {
    if quorum.mode == QuorumMode::Static {
        return None;
    }
    let initial = quorum.initial_controllers.iter().any(|c| c.id == id);
    if quorum.formed || !initial {
        return Some("--no-initial-controllers".into());
    }
    let list: Vec<String> = quorum
        .initial_controllers
        .iter()
        .map(|c| {
            format!(
                "{}@{}:{}",
                c.id,
                endpoint(c.id),
                c.directory_id.as_deref().unwrap_or_default()
            )
        })
        .collect();
    Some(format!("--initial-controllers {}", list.join(",")))
}

/// The quorum as status records it (a cluster without one is static until the controller
/// chose).
pub fn status_of(kc: &crate::api::KafkaCluster) -> QuorumStatus {
    kc.status
        .as_ref()
        .and_then(|s| s.quorum.clone())
        .unwrap_or_default()
}

/// The environment variable the broker command passes to `kafka-storage.sh format`.
pub const FORMAT_ARGS_ENV: &str = "KAFKA_STORAGE_FORMAT_ARGS";

/// The nodes `controller.quorum.bootstrap.servers` names: the spec's controllers and the
/// voters Kafka last reported (a node restarted while every spec controller is new must
/// still find the leader), sorted.
pub fn bootstrap_nodes(quorum: &QuorumStatus, controllers: &[i32]) -> Vec<i32> {
    let set: BTreeSet<i32> = controllers
        .iter()
        .copied()
        .chain(quorum.voters.iter().map(|v| v.id))
        .collect();
    set.into_iter().collect()
}

/// Everything a membership decision is made from.
#[derive(Debug, Clone)]
pub struct QuorumInput<'a> {
    /// Nodes that should be voters: the spec's nodes with the controller role.
    pub controllers: &'a BTreeSet<i32>,
    /// Of those, the nodes whose Pod runs the controller role now (ready, no restart due).
    pub running: &'a BTreeSet<i32>,
    /// What DescribeQuorum said.
    pub quorum: &'a QuorumInfo,
    /// `controller.quorum.fetch.timeout.ms`: a replica whose last catch-up is older than this
    /// (by the leader's clock) is not caught up.
    pub fetch_timeout_ms: i64,
}

/// The one membership change to make now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuorumStep {
    /// The voters are the spec's controllers.
    Settled,
    Add {
        id: i32,
        directory_id: String,
    },
    Remove {
        id: i32,
        directory_id: String,
        why: String,
    },
    /// A change is due but must wait (a node not caught up yet, no leader): why.
    Wait(String),
    /// A removal that would cost the quorum its majority, or its last voter: why.
    Refused(String),
}

impl QuorumStep {
    /// One line for status and Events.
    pub fn describe(&self) -> Option<String> {
        match self {
            QuorumStep::Settled => None,
            QuorumStep::Add { id, directory_id } => Some(format!(
                "adding controller {id} (directory {directory_id}) to the KRaft voters"
            )),
            QuorumStep::Remove {
                id,
                directory_id,
                why,
            } => Some(format!(
                "removing controller {id} (directory {directory_id}) from the KRaft voters: {why}"
            )),
            QuorumStep::Wait(why) | QuorumStep::Refused(why) => Some(why.clone()),
        }
    }
}

/// Voters that should not be: nodes left the spec or lost the controller role. They keep
/// their Pod (and role) until they have left the voters.
pub fn leaving_voters(controllers: &BTreeSet<i32>, voters: &BTreeSet<i32>) -> BTreeSet<i32> {
    voters.difference(controllers).copied().collect()
}

/// The voters that hold their node (its objects stay, its restart without the role waits):
/// in a dynamic quorum those Kafka reports, or, Kafka not answering, those status last
/// recorded (nothing goes on a guess). A static quorum's membership cannot change: its
/// controllers leave as they always did.
pub fn holding_voters(recorded: &QuorumStatus, described: Option<&QuorumInfo>) -> BTreeSet<i32> {
    match (recorded.mode, described) {
        (QuorumMode::Static, _) => BTreeSet::new(),
        (QuorumMode::Dynamic, Some(q)) => voter_ids(q),
        (QuorumMode::Dynamic, None) => recorded.voters.iter().map(|v| v.id).collect(),
    }
}

fn voter_ids(q: &QuorumInfo) -> BTreeSet<i32> {
    q.voters.iter().map(|v| v.replica_id).collect()
}

/// The leader's clock: its own catch-up time (the leader reports itself as caught up now),
/// else the newest time any replica reports.
fn leader_now(q: &QuorumInfo) -> Option<i64> {
    q.voter(q.leader_id)
        .and_then(|l| l.last_caught_up_timestamp)
        .or_else(|| {
            q.voters
                .iter()
                .chain(&q.observers)
                .filter_map(|r| r.last_caught_up_timestamp)
                .max()
        })
}

fn caught_up(q: &QuorumInfo, r: &ReplicaState, fetch_timeout_ms: i64) -> bool {
    if r.replica_id == q.leader_id && q.voter(r.replica_id).is_some() {
        return true;
    }
    let recent = match (leader_now(q), r.last_caught_up_timestamp) {
        (Some(now), Some(t)) => now - t < fetch_timeout_ms,
        _ => false,
    };
    recent && q.high_watermark - r.log_end_offset <= MAX_OBSERVER_LAG
}

/// Caught-up voters among `ids` (the leader counts).
fn healthy(q: &QuorumInfo, ids: &BTreeSet<i32>, fetch_timeout_ms: i64) -> usize {
    q.voters
        .iter()
        .filter(|v| ids.contains(&v.replica_id) && caught_up(q, v, fetch_timeout_ms))
        .count()
}

fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// Plans the next membership change.
pub fn plan_quorum(input: &QuorumInput<'_>) -> QuorumStep {
    let q = input.quorum;
    let voters = voter_ids(q);
    let observers: BTreeMap<i32, &ReplicaState> =
        q.observers.iter().map(|o| (o.replica_id, o)).collect();
    // A voter whose node now runs with another directory (its disk was replaced): that voter
    // is gone for good, and the node can join again only after it is removed.
    let replaced: BTreeSet<i32> = q
        .voters
        .iter()
        .filter(|v| {
            input.controllers.contains(&v.replica_id)
                && observers.get(&v.replica_id).is_some_and(|o| {
                    o.directory_id.is_some()
                        && v.directory_id.is_some()
                        && o.directory_id != v.directory_id
                })
        })
        .map(|v| v.replica_id)
        .collect();
    let to_add: Vec<i32> = input
        .controllers
        .iter()
        .copied()
        .filter(|id| !voters.contains(id))
        .collect();
    let to_remove: Vec<i32> = leaving_voters(input.controllers, &voters)
        .into_iter()
        .chain(replaced.iter().copied())
        .collect();
    if to_add.is_empty() && to_remove.is_empty() {
        return QuorumStep::Settled;
    }
    if q.leader_id < 0 || !voters.contains(&q.leader_id) {
        return QuorumStep::Wait("the KRaft quorum has no leader; membership changes wait".into());
    }

    // Adds first: a replacement joins before the node it replaces leaves.
    let mut waits = Vec::new();
    for id in &to_add {
        match addable(input, *id, &observers) {
            Ok(directory_id) => {
                let n = voters.len() + 1;
                let healthy_after = healthy(q, &voters, input.fetch_timeout_ms) + 1;
                if healthy_after >= majority(n) {
                    return QuorumStep::Add {
                        id: *id,
                        directory_id,
                    };
                }
                waits.push(format!(
                    "controller {id} waits to join: only {healthy_after} of {n} voters would be caught up"
                ));
            }
            Err(why) => waits.push(format!("controller {id} waits to join: {why}")),
        }
    }

    // Then removals: a replaced directory first, then followers, the leader last (each
    // removal of the leader costs an election).
    let mut order = to_remove.clone();
    order.sort_by_key(|id| (!replaced.contains(id), *id == q.leader_id, *id));
    let mut refusals = Vec::new();
    for id in order {
        let Some(voter) = q.voter(id) else { continue };
        let rest: BTreeSet<i32> = voters.iter().copied().filter(|v| *v != id).collect();
        if rest.is_empty() {
            refusals.push(format!(
                "removing controller {id} refused: it is the last voter of the KRaft quorum"
            ));
            continue;
        }
        let healthy_rest = healthy(q, &rest, input.fetch_timeout_ms);
        if healthy_rest < majority(rest.len()) {
            refusals.push(format!(
                "removing controller {id} refused: {healthy_rest} of the {} remaining voters {:?} are caught up, a majority needs {}",
                rest.len(),
                rest,
                majority(rest.len())
            ));
            continue;
        }
        let Some(directory_id) = voter.directory_id.clone() else {
            refusals.push(format!(
                "removing controller {id} refused: Kafka did not report its directory id"
            ));
            continue;
        };
        let why = if replaced.contains(&id) {
            "its node runs on a new disk (another directory id)".to_string()
        } else if id == q.leader_id {
            "it left the spec's controllers (it is the leader: Kafka elects another)".to_string()
        } else {
            "it left the spec's controllers".to_string()
        };
        return QuorumStep::Remove {
            id,
            directory_id,
            why,
        };
    }
    if !refusals.is_empty() {
        let mut all = refusals;
        all.extend(waits);
        return QuorumStep::Refused(all.join("; "));
    }
    QuorumStep::Wait(waits.join("; "))
}

/// The directory id to add node `id` with, if it can be added now.
fn addable(
    input: &QuorumInput<'_>,
    id: i32,
    observers: &BTreeMap<i32, &ReplicaState>,
) -> Result<String, String> {
    if !input.running.contains(&id) {
        return Err("its Pod does not run the controller role yet".into());
    }
    let o = observers
        .get(&id)
        .ok_or("it is not fetching the metadata log yet (no observer with its id)")?;
    let dir = o
        .directory_id
        .clone()
        .ok_or("Kafka does not report its directory id (DescribeQuorum v2 needed)")?;
    if !caught_up(input.quorum, o, input.fetch_timeout_ms) {
        return Err(format!(
            "not caught up with the metadata log (log end offset {}, high watermark {})",
            o.log_end_offset, input.quorum.high_watermark
        ));
    }
    Ok(dir)
}

/// The quorum part of status after this reconcile: what Kafka reported, formed once the
/// initial voters are all there, the step's message.
pub fn observed_status(
    prior: &QuorumStatus,
    quorum: Option<&QuorumInfo>,
    step: Option<&QuorumStep>,
) -> QuorumStatus {
    let mut out = prior.clone();
    if let Some(q) = quorum {
        out.voters = q
            .voters
            .iter()
            .map(|v| QuorumVoter {
                id: v.replica_id,
                directory_id: v.directory_id.clone(),
            })
            .collect();
        out.leader = (q.leader_id >= 0).then_some(q.leader_id);
        if out.mode == QuorumMode::Dynamic
            && !out.formed
            && !out.initial_controllers.is_empty()
            && out
                .initial_controllers
                .iter()
                .all(|c| q.voter(c.id).is_some())
        {
            out.formed = true;
        }
    }
    out.message = match (prior.mode, step) {
        (QuorumMode::Static, _) => prior.message.clone().or(Some(STATIC_NOTICE.into())),
        (QuorumMode::Dynamic, Some(step)) => step.describe(),
        (QuorumMode::Dynamic, None) => prior.message.clone(),
    };
    out
}

/// Why a new cluster gets a static quorum, if it does: it already has nodes (formatted static
/// by an earlier Pier), a node runs a release before 4.0, or the controller listener uses TLS
/// (Kafka 4.0/4.1 dial `controller.quorum.bootstrap.servers` by IP address, and the brokers'
/// certificates name their DNS names only: every node would fail its first quorum handshake).
pub fn static_because(
    kc: &crate::api::KafkaCluster,
    brokers: &[super::EffectiveBroker],
    has_nodes: bool,
) -> Option<&'static str> {
    use crate::api::SecurityProtocol;
    if has_nodes {
        return Some(STATIC_NOTICE);
    }
    if brokers
        .iter()
        .any(|b| super::upgrade::node_version(kc, b).is_some_and(|v| !v.dynamic_quorum()))
    {
        return Some(OLD_RELEASE_NOTICE);
    }
    let tls_controller = kc.spec.listeners.internal.iter().any(|l| {
        l.used_for_controller
            && matches!(
                l.protocol,
                SecurityProtocol::Ssl | SecurityProtocol::SaslSsl
            )
    });
    tls_controller.then_some(TLS_CONTROLLER_NOTICE)
}

/// Static because a node runs a release without KIP-853.
pub const OLD_RELEASE_NOTICE: &str = "static quorum: a node runs a Kafka release before 4.0, \
     which cannot change its controllers";

/// Static because the controller listener uses TLS.
pub const TLS_CONTROLLER_NOTICE: &str = "static quorum: the controller listener uses TLS, and \
     Kafka 4.0/4.1 connect to controller.quorum.bootstrap.servers by IP address, which the \
     brokers' certificates do not name; Pier cannot add or remove controllers of this cluster";

/// What status says of a static quorum.
pub const STATIC_NOTICE: &str = "static quorum (controller.quorum.voters, formatted before Pier \
     used KIP-853): Pier cannot add or remove controllers. On Kafka 4.1+ it can be converted \
     by hand: kafka-features.sh upgrade --feature kraft.version=1 once every node runs 4.1 \
     (Kafka 4.0 cannot convert)";

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: i64 = 2_000;
    const NOW: i64 = 1_000_000;

    fn replica(id: i32, dir: &str, leo: i64, caught_up_ago: Option<i64>) -> ReplicaState {
        ReplicaState {
            replica_id: id,
            directory_id: (!dir.is_empty()).then(|| dir.to_string()),
            log_end_offset: leo,
            last_fetch_timestamp: caught_up_ago.map(|a| NOW - a),
            last_caught_up_timestamp: caught_up_ago.map(|a| NOW - a),
        }
    }

    /// Voters 0..n, all caught up, leader `leader`; HWM 500.
    fn quorum(voters: &[i32], leader: i32) -> QuorumInfo {
        QuorumInfo {
            leader_id: leader,
            leader_epoch: 3,
            high_watermark: 500,
            voters: voters
                .iter()
                .map(|id| replica(*id, &format!("dir{id}"), 500, Some(0)))
                .collect(),
            observers: Vec::new(),
            voter_endpoints: Default::default(),
        }
    }

    fn set(ids: &[i32]) -> BTreeSet<i32> {
        ids.iter().copied().collect()
    }

    fn plan(controllers: &[i32], running: &[i32], q: &QuorumInfo) -> QuorumStep {
        plan_quorum(&QuorumInput {
            controllers: &set(controllers),
            running: &set(running),
            quorum: q,
            fetch_timeout_ms: TIMEOUT,
        })
    }

    #[test]
    fn settled_when_voters_are_the_controllers() {
        let q = quorum(&[0, 1, 2], 1);
        assert_eq!(plan(&[0, 1, 2], &[0, 1, 2], &q), QuorumStep::Settled);
    }

    #[test]
    fn a_caught_up_observer_is_added() {
        let mut q = quorum(&[0, 1, 2], 0);
        q.observers.push(replica(3, "new3", 499, Some(100)));
        assert_eq!(
            plan(&[0, 1, 2, 3], &[0, 1, 2, 3], &q),
            QuorumStep::Add {
                id: 3,
                directory_id: "new3".into()
            }
        );
    }

    #[test]
    fn an_observer_is_added_only_when_running_known_and_caught_up() {
        let mut q = quorum(&[0, 1, 2], 0);
        // Pod not running the controller role yet.
        q.observers.push(replica(3, "new3", 500, Some(0)));
        let step = plan(&[0, 1, 2, 3], &[0, 1, 2], &q);
        assert!(
            matches!(&step, QuorumStep::Wait(w) if w.contains("controller role")),
            "{step:?}"
        );
        // Behind in offsets.
        q.observers[0] = replica(3, "new3", 500 - MAX_OBSERVER_LAG - 1, Some(0));
        let step = plan(&[0, 1, 2, 3], &[0, 1, 2, 3], &q);
        assert!(
            matches!(&step, QuorumStep::Wait(w) if w.contains("not caught up")),
            "{step:?}"
        );
        // Last caught up too long ago.
        q.observers[0] = replica(3, "new3", 500, Some(TIMEOUT + 1));
        assert!(matches!(
            plan(&[0, 1, 2, 3], &[0, 1, 2, 3], &q),
            QuorumStep::Wait(_)
        ));
        // Never caught up.
        q.observers[0] = replica(3, "new3", 500, None);
        assert!(matches!(
            plan(&[0, 1, 2, 3], &[0, 1, 2, 3], &q),
            QuorumStep::Wait(_)
        ));
        // Not an observer at all.
        q.observers.clear();
        let step = plan(&[0, 1, 2, 3], &[0, 1, 2, 3], &q);
        assert!(
            matches!(&step, QuorumStep::Wait(w) if w.contains("not fetching")),
            "{step:?}"
        );
        // No directory id (an old DescribeQuorum).
        q.observers.push(replica(3, "", 500, Some(0)));
        let step = plan(&[0, 1, 2, 3], &[0, 1, 2, 3], &q);
        assert!(
            matches!(&step, QuorumStep::Wait(w) if w.contains("directory id")),
            "{step:?}"
        );
    }

    #[test]
    fn an_add_waits_while_the_new_set_would_lack_a_caught_up_majority() {
        // Voters 0,1 with 1 dead: adding 2 makes 3 voters with 2 caught up — fine.
        let mut q = quorum(&[0, 1], 0);
        q.voters[1] = replica(1, "dir1", 100, Some(60_000));
        q.observers.push(replica(2, "d2", 500, Some(0)));
        assert!(matches!(
            plan(&[0, 1, 2], &[0, 1, 2], &q),
            QuorumStep::Add { id: 2, .. }
        ));
        // Voters 0,1,2,3 with 2 and 3 dead: adding 4 makes 5 with 2 caught up — waits.
        let mut q = quorum(&[0, 1, 2, 3], 0);
        q.voters[2] = replica(2, "dir2", 100, Some(60_000));
        q.voters[3] = replica(3, "dir3", 100, Some(60_000));
        q.voters[1] = replica(1, "dir1", 100, Some(60_000));
        q.observers.push(replica(4, "d4", 500, Some(0)));
        let step = plan(&[0, 1, 2, 3, 4], &[0, 1, 2, 3, 4], &q);
        assert!(
            matches!(&step, QuorumStep::Wait(w) if w.contains("would be caught up")),
            "{step:?}"
        );
    }

    #[test]
    fn a_node_that_left_the_spec_is_removed_followers_before_the_leader() {
        let q = quorum(&[0, 1, 2, 3], 3);
        assert_eq!(
            plan(&[0, 1], &[0, 1], &q),
            QuorumStep::Remove {
                id: 2,
                directory_id: "dir2".into(),
                why: "it left the spec's controllers".into()
            }
        );
        let q = quorum(&[0, 1, 3], 3);
        let step = plan(&[0, 1], &[0, 1], &q);
        assert!(
            matches!(&step, QuorumStep::Remove { id: 3, why, .. } if why.contains("leader")),
            "{step:?}"
        );
    }

    #[test]
    fn adds_come_before_removals() {
        // Replacing controller 0 by 3: 3 joins first.
        let mut q = quorum(&[0, 1, 2], 0);
        q.observers.push(replica(3, "d3", 500, Some(0)));
        assert!(matches!(
            plan(&[1, 2, 3], &[1, 2, 3], &q),
            QuorumStep::Add { id: 3, .. }
        ));
        // While 3 cannot join yet, 0 still leaves.
        q.observers.clear();
        assert!(matches!(
            plan(&[1, 2, 3], &[1, 2], &q),
            QuorumStep::Remove { id: 0, .. }
        ));
    }

    #[test]
    fn never_the_last_voter() {
        let q = quorum(&[0], 0);
        // The spec's only controller is a new node that is not running yet.
        let step = plan(&[5], &[], &q);
        let QuorumStep::Refused(why) = step else {
            panic!("must refuse: {step:?}")
        };
        assert!(why.contains("last voter"), "{why}");
        assert!(why.contains("controller 5 waits to join"), "{why}");
    }

    #[test]
    fn a_removal_that_loses_the_majority_is_refused() {
        // Voters 0,1,2; 2 is not caught up; removing 1 would leave {0,2} with one caught up.
        let mut q = quorum(&[0, 1, 2], 0);
        q.voters[2] = replica(2, "dir2", 100, Some(60_000));
        let step = plan(&[0, 2], &[0, 2], &q);
        let QuorumStep::Refused(why) = step else {
            panic!("must refuse: {step:?}")
        };
        assert!(why.contains("removing controller 1 refused"), "{why}");
        assert!(why.contains("a majority needs 2"), "{why}");
        // Removing the dead one instead is fine: {0,1} both caught up.
        assert!(matches!(
            plan(&[0, 1], &[0, 1], &q),
            QuorumStep::Remove { id: 2, .. }
        ));
    }

    #[test]
    fn no_leader_means_wait() {
        let step = plan(&[0, 1], &[0, 1], &quorum(&[0, 1, 2], -1));
        assert!(
            matches!(&step, QuorumStep::Wait(w) if w.contains("no leader")),
            "{step:?}"
        );
    }

    #[test]
    fn a_replaced_disk_is_removed_then_added_again() {
        let mut q = quorum(&[0, 1, 2], 0);
        q.observers.push(replica(2, "fresh", 500, Some(0)));
        let step = plan(&[0, 1, 2], &[0, 1, 2], &q);
        assert!(
            matches!(&step, QuorumStep::Remove { id: 2, directory_id, why } if directory_id == "dir2" && why.contains("new disk")),
            "{step:?}"
        );
        // Once removed, it is added with its new directory.
        let mut q = quorum(&[0, 1], 0);
        q.observers.push(replica(2, "fresh", 500, Some(0)));
        assert_eq!(
            plan(&[0, 1, 2], &[0, 1, 2], &q),
            QuorumStep::Add {
                id: 2,
                directory_id: "fresh".into()
            }
        );
    }

    #[test]
    fn leaving_voters_are_those_not_in_the_spec() {
        assert_eq!(
            leaving_voters(&set(&[0, 2, 7]), &set(&[0, 1, 2])),
            set(&[1])
        );
    }

    #[test]
    fn voters_hold_their_node_as_kafka_or_else_status_says() {
        let mut recorded = dynamic(true);
        recorded.voters = vec![QuorumVoter {
            id: 4,
            directory_id: None,
        }];
        let q = quorum(&[0, 1], 0);
        assert_eq!(holding_voters(&recorded, Some(&q)), set(&[0, 1]));
        // Kafka not answering: what status saw last.
        assert_eq!(holding_voters(&recorded, None), set(&[4]));
        // A static quorum holds nothing.
        assert!(holding_voters(&QuorumStatus::default(), Some(&q)).is_empty());
    }

    fn dynamic(formed: bool) -> QuorumStatus {
        QuorumStatus {
            mode: QuorumMode::Dynamic,
            initial_controllers: vec![
                QuorumVoter {
                    id: 0,
                    directory_id: Some("AAAAAAAAAAAAAAAAAAAAAA".into()),
                },
                QuorumVoter {
                    id: 1,
                    directory_id: Some("BBBBBBBBBBBBBBBBBBBBBB".into()),
                },
            ],
            formed,
            ..QuorumStatus::default()
        }
    }

    #[test]
    fn format_flags_by_mode_and_node() {
        let host = |id: i32| format!("c-{id}.svc:9093");
        assert_eq!(format_args(&QuorumStatus::default(), 0, host), None);
        let list = "--initial-controllers 0@c-0.svc:9093:AAAAAAAAAAAAAAAAAAAAAA,1@c-1.svc:9093:BBBBBBBBBBBBBBBBBBBBBB";
        assert_eq!(format_args(&dynamic(false), 0, host).as_deref(), Some(list));
        // The same list on every initial controller.
        assert_eq!(format_args(&dynamic(false), 1, host).as_deref(), Some(list));
        assert_eq!(
            format_args(&dynamic(false), 2, host).as_deref(),
            Some("--no-initial-controllers")
        );
        assert_eq!(
            format_args(&dynamic(true), 0, host).as_deref(),
            Some("--no-initial-controllers")
        );
    }

    #[test]
    fn status_records_voters_and_formation() {
        let q = quorum(&[0, 1], 1);
        let out = observed_status(&dynamic(false), Some(&q), Some(&QuorumStep::Settled));
        assert!(out.formed);
        assert_eq!(out.leader, Some(1));
        assert_eq!(out.voters.len(), 2);
        assert_eq!(out.voters[0].directory_id.as_deref(), Some("dir0"));
        assert_eq!(out.message, None);
        // Only one initial voter seen: not formed.
        let out = observed_status(&dynamic(false), Some(&quorum(&[0], 0)), None);
        assert!(!out.formed);
        // Static: the notice.
        let out = observed_status(&QuorumStatus::default(), Some(&q), None);
        assert_eq!(out.message.as_deref(), Some(STATIC_NOTICE));
        assert!(!out.formed);
    }

    #[test]
    fn new_clusters_are_static_only_for_a_reason() {
        use crate::api::SecurityProtocol;
        let mut kc = crate::reconcile::tests::example("kafkacluster-basic.yaml");
        let brokers = crate::reconcile::effective_brokers(&kc).unwrap();
        assert_eq!(static_because(&kc, &brokers, false), None);
        assert_eq!(static_because(&kc, &brokers, true), Some(STATIC_NOTICE));
        kc.spec.kafka.image = "apache/kafka:3.9.1".into();
        let old = crate::reconcile::effective_brokers(&kc).unwrap();
        assert_eq!(static_because(&kc, &old, false), Some(OLD_RELEASE_NOTICE));
        kc.spec.kafka.image = "apache/kafka:4.1.2".into();
        for l in &mut kc.spec.listeners.internal {
            l.protocol = SecurityProtocol::Ssl;
        }
        assert_eq!(
            static_because(&kc, &brokers, false),
            Some(TLS_CONTROLLER_NOTICE)
        );
    }

    #[test]
    fn bootstrap_names_controllers_and_voters() {
        let mut s = dynamic(true);
        s.voters = vec![QuorumVoter {
            id: 9,
            directory_id: None,
        }];
        assert_eq!(bootstrap_nodes(&s, &[2, 0]), vec![0, 2, 9]);
    }
}
