//! Replica moves as a pure plan: what happens to brokers that left the spec (Draining while
//! they hold replicas, Removed once drained, their objects kept until then), which partitions
//! move where (one batch for every leaving broker; a rebalance onto added brokers), what is
//! cancelled (moves off a broker that came back, moves onto one that left), which throttles
//! are set and cleared, which brokers are unregistered, and the durable progress for status.
//!
//! Kafka is the source of truth for what moves: an operator restarted mid-move sees the
//! in-flight reassignments and waits for them instead of starting over. Nothing is deleted on
//! a guess: without a complete answer from Kafka a leaving broker keeps its Pod.
use std::collections::{BTreeMap, BTreeSet};

use super::pods::{format_ms, parse_ms};
use crate::api::{
    BrokerPhase, KafkaClusterStatus, RebalanceSpec, ReplicaMoveKind, ReplicaMovesStatus,
};
use crate::kafka::Reassignment;

/// Topic configs that list the throttled replicas of a topic.
pub const LEADER_THROTTLED_REPLICAS: &str = "leader.replication.throttled.replicas";
pub const FOLLOWER_THROTTLED_REPLICAS: &str = "follower.replication.throttled.replicas";
/// Broker configs that cap the replication rate of throttled replicas.
pub const LEADER_THROTTLED_RATE: &str = "leader.replication.throttled.rate";
pub const FOLLOWER_THROTTLED_RATE: &str = "follower.replication.throttled.rate";

/// One partition as Kafka reports it, its in-flight move merged in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionView {
    pub topic: String,
    pub partition: i32,
    /// Every replica; while a move runs, the targets plus those being removed.
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

impl PartitionView {
    /// A reassignment of this partition is in flight.
    pub fn moving(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The broker holds a replica of it or is part of its move.
    pub fn involves(&self, id: i32) -> bool {
        self.replicas.contains(&id) || self.adding.contains(&id) || self.removing.contains(&id)
    }

    /// The replicas once the move in flight (if any) is done.
    pub fn target(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing.contains(r))
            .collect()
    }
}

/// A broker registered with the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegisteredBroker {
    pub rack: Option<String>,
    pub fenced: bool,
}

/// What Kafka says, complete: every partition of every topic (a topic that failed to
/// describe makes the controller give no view at all).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KafkaView {
    pub partitions: Vec<PartitionView>,
    /// Registered brokers, fenced ones included.
    pub registered: BTreeMap<i32, RegisteredBroker>,
    /// Effective `min.insync.replicas` per topic; asked only while brokers are leaving.
    pub min_insync: Option<BTreeMap<String, i32>>,
    /// Bytes of the replicas on each leaving broker (DescribeLogDirs), where it answered.
    pub bytes_on: BTreeMap<i32, i64>,
    /// Topics with throttled-replica lists set, when asked (an operator's first look, to
    /// clean throttles a crash left behind).
    pub throttled_topics: Option<BTreeSet<String>>,
}

/// A broker's Pod, as far as moves care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PodFacts {
    pub ready: bool,
    /// The Pod runs a node with the broker role (controller-only nodes hold no replicas).
    pub broker_role: bool,
}

/// Everything the plan is made from.
#[derive(Debug, Clone)]
pub struct ScalingInput<'a> {
    /// Every node id of the spec.
    pub spec_nodes: BTreeSet<i32>,
    /// The spec's ids with the broker role.
    pub spec_brokers: BTreeSet<i32>,
    pub prior: &'a KafkaClusterStatus,
    /// Ids that still have objects (Pod, ConfigMap, Service or owned claim).
    pub objects: BTreeSet<i32>,
    /// Broker Pods that exist, terminating ones included.
    pub pods: BTreeMap<i32, PodFacts>,
    /// `None`: Kafka could not be asked, or gave an incomplete answer.
    pub kafka: Option<&'a KafkaView>,
    pub rebalance: &'a RebalanceSpec,
    /// The value of the `kafka.pier.dev/rebalance` annotation.
    pub rebalance_annotation: Option<&'a str>,
    /// A rolling restart is restarting a broker: no new moves meanwhile.
    pub restarting: bool,
    /// Nodes that are still KRaft voters (DescribeQuorum): a leaving one keeps its objects
    /// until it has left the quorum (see `reconcile::quorum`).
    pub voters: BTreeSet<i32>,
    pub now_ms: i64,
}

/// Throttles to set for a batch of moves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Throttles {
    pub rate: i64,
    /// Brokers that send or receive: both rates are set on each.
    pub brokers: BTreeSet<i32>,
    /// Per topic, `partition:broker` entries to append to the leader list (current replicas).
    pub leader: BTreeMap<String, Vec<String>>,
    /// Per topic, `partition:broker` entries to append to the follower list (new replicas).
    pub follower: BTreeMap<String, Vec<String>>,
}

/// Throttles to remove: the rates on these brokers, both lists on these topics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClearThrottles {
    pub brokers: BTreeSet<i32>,
    pub topics: BTreeSet<String>,
}

/// What the controller does about replica moves in this reconcile, and what status says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScalingPlan {
    /// Phase of every broker that left the spec and is still tracked.
    pub leaving: BTreeMap<i32, BrokerPhase>,
    /// Brokers not in the spec whose objects stay (still draining, or not known to be empty).
    pub retained: BTreeSet<i32>,
    /// Leaving brokers Envoy keeps a listener for, out of bootstrap.
    pub draining: BTreeSet<i32>,
    pub cancel: Vec<(String, i32)>,
    pub submit: Vec<Reassignment>,
    pub throttles: Option<Throttles>,
    pub clear_throttles: Option<ClearThrottles>,
    pub unregister: Vec<i32>,
    /// Move leadership to the preferred replicas (a move just ended).
    pub elect_leaders: bool,
    /// A removal that would break replication factors or min.insync.replicas.
    pub refused: Option<String>,
    /// `status.replicaMoves`.
    pub moves: Option<ReplicaMovesStatus>,
    pub rebalanced_brokers: Option<Vec<i32>>,
    pub rebalance_requested: Option<String>,
    /// One line per step taken, for Events.
    pub events: Vec<String>,
    /// Something is in progress that no watch will announce: look again soon.
    pub waiting: bool,
}

impl ScalingPlan {
    /// Nodes that left the spec but stay, their removal refused (nothing about them changes).
    pub fn refused_removals(&self) -> BTreeSet<i32> {
        if self.refused.is_none() {
            return BTreeSet::new();
        }
        self.leaving
            .iter()
            .filter(|(_, phase)| **phase == BrokerPhase::Running)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Kafka refused or failed a step of this plan: status says so where the move is shown
    /// (the next reconcile plans again from what Kafka then says).
    pub fn note_failures(&mut self, failures: &[String]) {
        if let (Some(m), false) = (self.moves.as_mut(), failures.is_empty()) {
            m.message = Some(format!("a step failed, retrying: {}", failures.join("; ")));
        }
    }
}

/// Whether an event line announces moves of Pier's own balancer, or their end (dropped when
/// another engine moves the replicas).
pub fn is_builtin_move_event(line: &str) -> bool {
    (line.starts_with("draining brokers ") && line.contains(": moving "))
        || (line.starts_with("drain of brokers ") && line.ends_with(" done"))
        || line.starts_with("rebalancing: moving ")
        || line == "rebalance done"
        || line == ALREADY_BALANCED
}

const ALREADY_BALANCED: &str = "rebalance: replicas and leaders are already balanced";

/// Plans this reconcile's replica moves.
pub fn plan(input: &ScalingInput<'_>) -> ScalingPlan {
    let prior = input.prior;
    let prior_phase: BTreeMap<i32, BrokerPhase> =
        prior.brokers.iter().map(|b| (b.id, b.phase)).collect();
    let leaving: BTreeSet<i32> = prior_phase
        .keys()
        .chain(input.objects.iter())
        .chain(input.pods.keys())
        .copied()
        .filter(|id| !input.spec_nodes.contains(id))
        .collect();
    let mut out = ScalingPlan {
        // Rebalances are counted from the brokers there were when Pier first looked: an
        // existing cluster is not rebalanced just because Pier was upgraded.
        rebalanced_brokers: Some(
            prior
                .rebalanced_brokers
                .clone()
                .unwrap_or_else(|| input.spec_brokers.iter().copied().collect()),
        ),
        rebalance_requested: prior.rebalance_requested.clone(),
        ..ScalingPlan::default()
    };
    let Some(kafka) = input.kafka else {
        return without_kafka(input, &leaving, &prior_phase, out);
    };

    let holds = |id: i32| kafka.partitions.iter().any(|p| p.involves(id));
    let holding: BTreeSet<i32> = leaving.iter().copied().filter(|id| holds(*id)).collect();
    let any_moving = kafka.partitions.iter().any(PartitionView::moving);

    // Cancel moves off brokers back in the spec, and moves onto brokers that left it.
    let returned: BTreeSet<i32> = prior_phase
        .iter()
        .filter(|(id, phase)| **phase == BrokerPhase::Draining && input.spec_nodes.contains(id))
        .map(|(id, _)| *id)
        .collect();
    for p in kafka.partitions.iter().filter(|p| p.moving()) {
        let off_returned = p.removing.iter().any(|r| returned.contains(r));
        let onto_leaving = p.adding.iter().any(|r| leaving.contains(r));
        if off_returned || onto_leaving {
            out.cancel.push((p.topic.clone(), p.partition));
        }
    }
    if !returned.is_empty() {
        out.events.push(format!(
            "brokers {returned:?} are back in the spec: their drain is cancelled ({} moves)",
            out.cancel.len()
        ));
    }

    if !holding.is_empty() {
        out.refused = refusal(input, kafka, &holding);
    }
    for id in &leaving {
        let was = prior_phase.get(id).copied();
        // A refused removal touches none of the brokers it names, empty ones included.
        let refused_too = out.refused.is_some()
            && was != Some(BrokerPhase::Removed)
            && input.pods.contains_key(id);
        if holding.contains(id) || refused_too {
            out.retained.insert(*id);
            out.draining.insert(*id);
            let refused_before_draining =
                out.refused.is_some() && was != Some(BrokerPhase::Draining);
            let phase = if refused_before_draining {
                out.draining.remove(id);
                BrokerPhase::Running
            } else {
                BrokerPhase::Draining
            };
            out.leaving.insert(*id, phase);
            continue;
        }
        // A voter leaves the quorum before its node goes.
        if input.voters.contains(id) && input.pods.contains_key(id) {
            out.retained.insert(*id);
            out.draining.insert(*id);
            out.leaving.insert(*id, BrokerPhase::Draining);
            continue;
        }
        // Holds nothing and nothing moving involves it: its objects go, then its registration.
        let registered = kafka.registered.contains_key(id);
        if input.pods.contains_key(id) {
            if was != Some(BrokerPhase::Removed) {
                out.events
                    .push(format!("broker {id} holds no replica: deleting its Pod"));
            }
            out.leaving.insert(*id, BrokerPhase::Removed);
        } else if registered {
            out.unregister.push(*id);
            out.events
                .push(format!("broker {id} is gone: unregistering it from Kafka"));
            out.leaving.insert(*id, BrokerPhase::Removed);
        } else if input.objects.contains(id) {
            out.leaving.insert(*id, BrokerPhase::Removed);
        }
    }

    let prior_moves = prior.replica_moves.clone();
    if !holding.is_empty() {
        drain(input, kafka, &holding, prior_moves.as_ref(), &mut out);
    } else if any_moving {
        // Moves of a finished drain's cancel, a rebalance, or someone else's: wait for them.
        // Moves status does not know of (submitted by a reconcile whose status write was then
        // lost to a conflict, or by someone else) are adopted, so their end is seen: throttles
        // cleared, leaders restored.
        let in_flight = kafka.partitions.iter().filter(|p| p.moving()).count();
        let mut m = prior_moves.unwrap_or_else(|| adopt(kafka, input.now_ms, &mut out));
        m.partitions_left = i32::try_from(in_flight).unwrap_or(i32::MAX);
        m.partitions_total = m.partitions_total.max(m.partitions_left);
        m.message = Some("waiting for the partitions in flight".into());
        out.moves = Some(m);
        out.waiting = true;
    } else {
        if let Some(m) = &prior_moves {
            out.events.push(match m.kind {
                ReplicaMoveKind::Drain => format!("drain of brokers {:?} done", m.brokers),
                ReplicaMoveKind::Rebalance => "rebalance done".to_string(),
            });
            out.elect_leaders = true;
        }
        clear_throttles(kafka, &leaving, prior_moves.as_ref(), &mut out);
        if !input.restarting {
            rebalance(input, kafka, &mut out);
        }
    }
    out.waiting |= !out.retained.is_empty() || !out.unregister.is_empty() || out.moves.is_some();
    out
}

/// Moves in flight that status does not record, tracked from now on as a rebalance: the
/// throttles that may belong to them (every topic and broker involved) are cleared when they end.
fn adopt(kafka: &KafkaView, now_ms: i64, out: &mut ScalingPlan) -> ReplicaMovesStatus {
    let moving: Vec<&PartitionView> = kafka.partitions.iter().filter(|p| p.moving()).collect();
    let topics: BTreeSet<String> = moving.iter().map(|p| p.topic.clone()).collect();
    let brokers: BTreeSet<i32> = moving
        .iter()
        .flat_map(|p| p.replicas.iter().chain(&p.adding).chain(&p.removing))
        .copied()
        .collect();
    out.events.push(format!(
        "found {} partitions moving that status did not record: tracking them until they are done",
        moving.len()
    ));
    ReplicaMovesStatus {
        kind: ReplicaMoveKind::Rebalance,
        started_at: format_ms(now_ms),
        throttled_brokers: brokers.into_iter().collect(),
        throttled_topics: topics.into_iter().collect(),
        ..Default::default()
    }
}

/// Without Kafka's answer nothing can be known to be empty: every leaving broker with the
/// broker role keeps its objects. Controller-only nodes hold no replicas and go.
fn without_kafka(
    input: &ScalingInput<'_>,
    leaving: &BTreeSet<i32>,
    prior_phase: &BTreeMap<i32, BrokerPhase>,
    mut out: ScalingPlan,
) -> ScalingPlan {
    for id in leaving {
        let was = prior_phase.get(id).copied();
        let broker_role = input.pods.get(id).is_some_and(|p| p.broker_role);
        if broker_role || was == Some(BrokerPhase::Draining) {
            out.retained.insert(*id);
            if was == Some(BrokerPhase::Draining) {
                out.draining.insert(*id);
            }
            out.leaving
                .insert(*id, was.unwrap_or(BrokerPhase::Running).min_running());
        } else if input.objects.contains(id) || input.pods.contains_key(id) {
            out.leaving.insert(*id, BrokerPhase::Removed);
        }
    }
    out.moves = input.prior.replica_moves.clone().map(|mut m| {
        m.message = Some("waiting for Kafka to answer".into());
        m
    });
    if !out.retained.is_empty() && out.moves.is_none() {
        out.moves = Some(ReplicaMovesStatus {
            kind: ReplicaMoveKind::Drain,
            brokers: out.retained.iter().copied().collect(),
            message: Some(format!(
                "brokers {:?} left the spec; waiting for Kafka to say which replicas they hold",
                out.retained
            )),
            ..Default::default()
        });
    }
    out.waiting = !out.retained.is_empty();
    out
}

trait PhaseExt {
    fn min_running(self) -> BrokerPhase;
}

impl PhaseExt for BrokerPhase {
    /// A broker still holding data is at least Running in status, never Removed or Pending.
    fn min_running(self) -> BrokerPhase {
        match self {
            BrokerPhase::Draining => BrokerPhase::Draining,
            _ => BrokerPhase::Running,
        }
    }
}

/// Why removing these brokers must not start: the brokers that stay cannot hold some topic's
/// replicas, or acks=all producers would fail for lack of in-sync replicas.
fn refusal(input: &ScalingInput<'_>, kafka: &KafkaView, holding: &BTreeSet<i32>) -> Option<String> {
    let remaining = input.spec_brokers.len();
    let widest = kafka
        .partitions
        .iter()
        .map(|p| (p.target().len(), &p.topic))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)));
    if let Some((rf, topic)) = widest
        && rf > remaining
    {
        return Some(format!(
            "removing brokers {holding:?} would leave {remaining} brokers, fewer than topic {topic:?}'s replication factor {rf}; nothing was moved"
        ));
    }
    let min_insync = kafka.min_insync.as_ref()?;
    let strictest = min_insync
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))?;
    let needed = usize::try_from(*strictest.1).unwrap_or(0);
    (needed > remaining).then(|| {
        format!(
            "removing brokers {holding:?} would leave {remaining} brokers, fewer than topic {:?}'s min.insync.replicas {needed}: acks=all producers would fail; nothing was moved",
            strictest.0
        )
    })
}

/// Moves every replica off the leaving brokers, as one batch, throttled.
fn drain(
    input: &ScalingInput<'_>,
    kafka: &KafkaView,
    holding: &BTreeSet<i32>,
    prior: Option<&ReplicaMovesStatus>,
    out: &mut ScalingPlan,
) {
    let left = kafka
        .partitions
        .iter()
        .filter(|p| holding.iter().any(|id| p.involves(*id)))
        .count();
    let prior = prior.filter(|m| m.kind == ReplicaMoveKind::Drain);
    let mut status = prior.cloned().unwrap_or_else(|| ReplicaMovesStatus {
        kind: ReplicaMoveKind::Drain,
        started_at: format_ms(input.now_ms),
        ..Default::default()
    });
    status.brokers = holding.iter().copied().collect();
    let left_i32 = i32::try_from(left).unwrap_or(i32::MAX);
    status.partitions_left = left_i32;
    status.partitions_total = status.partitions_total.max(left_i32);
    // Bytes and the estimate change all the time; they are refreshed when a partition is
    // done, so a running move writes the status once per partition, not once per look (every
    // status write wakes another reconcile).
    let progressed = prior.is_none_or(|p| p.partitions_left != left_i32);
    if progressed {
        let bytes: Vec<i64> = holding
            .iter()
            .filter_map(|id| kafka.bytes_on.get(id).copied())
            .collect();
        status.bytes_left = (!bytes.is_empty()).then(|| bytes.iter().sum());
        status.estimated_seconds_left = estimate(&status, input.now_ms);
    }
    status.message = None;

    if let Some(why) = &out.refused {
        status.message = Some(why.clone());
        // Moves already in flight go on; a drain that never started is no move at all.
        out.moves = prior.map(|_| status);
        return;
    }
    let to_move: Vec<&PartitionView> = kafka
        .partitions
        .iter()
        .filter(|p| !p.moving() && p.replicas.iter().any(|r| holding.contains(r)))
        .collect();
    if !to_move.is_empty() {
        let down: Vec<i32> = input
            .spec_brokers
            .iter()
            .copied()
            .filter(|id| kafka.registered.get(id).is_none_or(|b| b.fenced))
            .collect();
        if input.restarting {
            status.message = Some("waiting for the rolling restart's broker".into());
        } else if !down.is_empty() {
            status.message = Some(format!(
                "waiting for brokers {down:?} to be up before moving replicas onto them"
            ));
        } else {
            match balance(input, kafka, holding, crate::balance::Mode::DrainOnly) {
                Ok(moves) => {
                    out.events.push(format!(
                        "draining brokers {holding:?}: moving {} partitions",
                        moves.len()
                    ));
                    submit(input, moves, &mut status, out);
                }
                Err(e) => status.message = Some(format!("cannot plan the drain: {e}")),
            }
        }
    }
    out.moves = Some(status);
}

/// Starts a rebalance when brokers were added since the last one (and every broker is up), or
/// when the annotation asks for one.
fn rebalance(input: &ScalingInput<'_>, kafka: &KafkaView, out: &mut ScalingPlan) {
    let all_up = input.spec_brokers.iter().all(|id| {
        input.pods.get(id).is_some_and(|p| p.ready)
            && kafka.registered.get(id).is_some_and(|b| !b.fenced)
    });
    let known: BTreeSet<i32> = out.rebalanced_brokers.iter().flatten().copied().collect();
    let added: Vec<i32> = input
        .spec_brokers
        .iter()
        .copied()
        .filter(|id| !known.contains(id))
        .collect();
    let requested = input
        .rebalance_annotation
        .filter(|v| Some(*v) != input.prior.rebalance_requested.as_deref());
    let auto = input.rebalance.on_broker_add && !added.is_empty();
    if !all_up || (!auto && requested.is_none()) {
        if !all_up && (auto || requested.is_some()) {
            out.waiting = true;
        }
        // Brokers that left no longer count; added ones wait for the next rebalance.
        out.rebalanced_brokers = Some(
            known
                .iter()
                .copied()
                .filter(|id| input.spec_brokers.contains(id) || !input.rebalance.on_broker_add)
                .collect(),
        );
        return;
    }
    out.rebalanced_brokers = Some(input.spec_brokers.iter().copied().collect());
    if let Some(v) = requested {
        out.rebalance_requested = Some(v.to_string());
    }
    match balance(input, kafka, &BTreeSet::new(), crate::balance::Mode::Full) {
        Ok(moves) if moves.is_empty() => {
            out.events.push(ALREADY_BALANCED.into());
        }
        Ok(moves) => {
            let mut status = ReplicaMovesStatus {
                kind: ReplicaMoveKind::Rebalance,
                brokers: added,
                started_at: format_ms(input.now_ms),
                ..Default::default()
            };
            out.events
                .push(format!("rebalancing: moving {} partitions", moves.len()));
            submit(input, moves, &mut status, out);
            status.partitions_left = status.partitions_total;
            out.moves = Some(status);
        }
        Err(e) => out.events.push(format!("cannot plan a rebalance: {e}")),
    }
}

/// The throttles of `moves` (each with the replicas it held before) at `rate` bytes per
/// second: the replicas sending on the leader list, the new ones on the follower list, both
/// rates on every broker involved.
pub fn throttles_for(rate: i64, moves: &[(Vec<i32>, Reassignment)]) -> Throttles {
    let mut throttles = Throttles {
        rate,
        ..Throttles::default()
    };
    for (from, m) in moves {
        for b in from {
            throttles
                .leader
                .entry(m.topic.clone())
                .or_default()
                .push(format!("{}:{b}", m.partition));
            throttles.brokers.insert(*b);
        }
        for b in m.replicas.iter().filter(|b| !from.contains(b)) {
            throttles
                .follower
                .entry(m.topic.clone())
                .or_default()
                .push(format!("{}:{b}", m.partition));
            throttles.brokers.insert(*b);
        }
    }
    throttles
}

/// Submits moves with their throttles, and records the throttles in status.
fn submit(
    input: &ScalingInput<'_>,
    moves: Vec<(Vec<i32>, Reassignment)>,
    status: &mut ReplicaMovesStatus,
    out: &mut ScalingPlan,
) {
    let throttles = throttles_for(input.rebalance.throttle_bytes_per_second, &moves);
    let mut brokers: BTreeSet<i32> = status.throttled_brokers.iter().copied().collect();
    brokers.extend(throttles.brokers.iter().copied());
    status.throttled_brokers = brokers.into_iter().collect();
    let mut topics: BTreeSet<String> = status.throttled_topics.iter().cloned().collect();
    topics.extend(throttles.leader.keys().cloned());
    topics.extend(throttles.follower.keys().cloned());
    status.throttled_topics = topics.into_iter().collect();
    status.partitions_total = status
        .partitions_total
        .max(i32::try_from(moves.len()).unwrap_or(i32::MAX));
    out.throttles = Some(throttles);
    out.submit = moves.into_iter().map(|(_, m)| m).collect();
}

/// With nothing moving: removes the throttles the last move set, and on a first look those
/// a crash may have left (any topic with a throttled-replica list, rates on every broker).
fn clear_throttles(
    kafka: &KafkaView,
    leaving: &BTreeSet<i32>,
    prior: Option<&ReplicaMovesStatus>,
    out: &mut ScalingPlan,
) {
    let mut clear = ClearThrottles::default();
    if let Some(m) = prior {
        clear.brokers.extend(m.throttled_brokers.iter().copied());
        clear.topics.extend(m.throttled_topics.iter().cloned());
    }
    if let Some(stale) = &kafka.throttled_topics {
        clear.topics.extend(stale.iter().cloned());
        if !stale.is_empty() {
            clear.brokers.extend(kafka.registered.keys().copied());
        }
    }
    // Brokers that are leaving or gone cannot be altered (their Pod is going), and need no
    // cleaning.
    clear
        .brokers
        .retain(|id| kafka.registered.get(id).is_some_and(|b| !b.fenced) && !leaving.contains(id));
    if !clear.brokers.is_empty() || !clear.topics.is_empty() {
        out.clear_throttles = Some(clear);
    }
}

/// Seconds left, from the pace so far.
fn estimate(status: &ReplicaMovesStatus, now_ms: i64) -> Option<i64> {
    let started = parse_ms(status.started_at.as_deref()?)?;
    let done = i64::from(status.partitions_total - status.partitions_left);
    if done <= 0 || status.partitions_left <= 0 {
        return None;
    }
    let elapsed_s = (now_ms - started).max(0) / 1000;
    Some(elapsed_s * i64::from(status.partitions_left) / done)
}

/// The balancer's moves, each with the replicas it moves from.
fn balance(
    input: &ScalingInput<'_>,
    kafka: &KafkaView,
    leaving: &BTreeSet<i32>,
    mode: crate::balance::Mode,
) -> Result<Vec<(Vec<i32>, Reassignment)>, crate::balance::BalanceError> {
    use crate::balance;
    let brokers: Vec<balance::BrokerInfo> = input
        .spec_brokers
        .iter()
        .chain(leaving.iter())
        .map(|id| balance::BrokerInfo {
            id: *id,
            rack: kafka.registered.get(id).and_then(|b| b.rack.clone()),
        })
        .collect();
    let partitions: Vec<balance::PartitionInfo> = kafka
        .partitions
        .iter()
        .map(|p| balance::PartitionInfo {
            topic: p.topic.clone(),
            partition: p.partition,
            replicas: p.target(),
            movable: !p.moving(),
        })
        .collect();
    let plan = balance::plan(&balance::Request {
        brokers: &brokers,
        partitions: &partitions,
        leaving,
        mode,
    })?;
    Ok(plan
        .moves
        .into_iter()
        .map(|m| {
            (
                m.from,
                Reassignment {
                    topic: m.topic,
                    partition: m.partition,
                    replicas: m.to,
                },
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_steps_are_shown_with_the_move() {
        let mut p = ScalingPlan::default();
        p.note_failures(&["submitting partition moves: timed out".into()]);
        assert_eq!(p.moves, None, "no move, nothing to show them on");
        p.moves = Some(ReplicaMovesStatus::default());
        p.note_failures(&[]);
        assert_eq!(p.moves.as_ref().and_then(|m| m.message.clone()), None);
        p.note_failures(&["a: x".into(), "b: y".into()]);
        assert_eq!(
            p.moves.and_then(|m| m.message).as_deref(),
            Some("a step failed, retrying: a: x; b: y")
        );
    }
    use crate::api::BrokerStatus;

    const NOW: i64 = 1_800_000_000_000;

    fn view(brokers: &[i32], partitions: &[(&str, i32, &[i32])]) -> KafkaView {
        KafkaView {
            partitions: partitions
                .iter()
                .map(|(t, p, r)| PartitionView {
                    topic: t.to_string(),
                    partition: *p,
                    replicas: r.to_vec(),
                    ..Default::default()
                })
                .collect(),
            registered: brokers
                .iter()
                .map(|id| (*id, RegisteredBroker::default()))
                .collect(),
            min_insync: Some(BTreeMap::new()),
            ..Default::default()
        }
    }

    fn status(phases: &[(i32, BrokerPhase)]) -> KafkaClusterStatus {
        KafkaClusterStatus {
            brokers: phases
                .iter()
                .map(|(id, phase)| BrokerStatus {
                    id: *id,
                    phase: *phase,
                    ..Default::default()
                })
                .collect(),
            rebalanced_brokers: Some(vec![0, 1, 2, 3]),
            ..Default::default()
        }
    }

    struct Case {
        spec: Vec<i32>,
        prior: KafkaClusterStatus,
        kafka: Option<KafkaView>,
        pods: Vec<i32>,
        rebalance: RebalanceSpec,
        annotation: Option<String>,
        restarting: bool,
        voters: BTreeSet<i32>,
    }

    impl Case {
        fn new(spec: &[i32], kafka: Option<KafkaView>) -> Self {
            let all: Vec<i32> = (0..4).collect();
            Case {
                spec: spec.to_vec(),
                prior: status(
                    &all.iter()
                        .map(|id| (*id, BrokerPhase::Running))
                        .collect::<Vec<_>>(),
                ),
                kafka,
                pods: all,
                rebalance: RebalanceSpec::default(),
                annotation: None,
                restarting: false,
                voters: BTreeSet::new(),
            }
        }

        fn plan(&self) -> ScalingPlan {
            let ids: BTreeSet<i32> = self.spec.iter().copied().collect();
            plan(&ScalingInput {
                spec_nodes: ids.clone(),
                spec_brokers: ids,
                prior: &self.prior,
                objects: self.pods.iter().copied().collect(),
                pods: self
                    .pods
                    .iter()
                    .map(|id| {
                        (
                            *id,
                            PodFacts {
                                ready: true,
                                broker_role: true,
                            },
                        )
                    })
                    .collect(),
                kafka: self.kafka.as_ref(),
                rebalance: &self.rebalance,
                rebalance_annotation: self.annotation.as_deref(),
                restarting: self.restarting,
                voters: self.voters.clone(),
                now_ms: NOW,
            })
        }
    }

    fn assert_valid(moves: &[Reassignment], leaving: &[i32], rf: usize) {
        for m in moves {
            let unique: BTreeSet<i32> = m.replicas.iter().copied().collect();
            assert_eq!(unique.len(), rf, "replication factor kept: {m:?}");
            assert!(
                !m.replicas.iter().any(|r| leaving.contains(r)),
                "nothing left on {leaving:?}: {m:?}"
            );
        }
    }

    #[test]
    fn a_broker_that_leaves_drains_in_one_throttled_batch_and_keeps_its_objects() {
        let kafka = view(
            &[0, 1, 2, 3],
            &[("a", 0, &[3, 0]), ("a", 1, &[1, 2]), ("b", 0, &[0, 3])],
        );
        let p = Case::new(&[0, 1, 2], Some(kafka)).plan();
        assert_eq!(p.leaving, BTreeMap::from([(3, BrokerPhase::Draining)]));
        assert_eq!(p.retained, BTreeSet::from([3]));
        assert_eq!(p.draining, BTreeSet::from([3]));
        assert_eq!(
            p.submit.len(),
            2,
            "only partitions on broker 3: {:?}",
            p.submit
        );
        assert_valid(&p.submit, &[3], 2);
        let t = p.throttles.expect("throttled");
        assert_eq!(t.rate, 50 * 1024 * 1024);
        assert!(t.leader["a"].contains(&"0:3".to_string()));
        assert!(t.brokers.contains(&3));
        let m = p.moves.expect("progress in status");
        assert_eq!(m.kind, ReplicaMoveKind::Drain);
        assert_eq!(m.brokers, [3]);
        assert_eq!((m.partitions_total, m.partitions_left), (2, 2));
        assert_eq!(m.started_at, format_ms(NOW));
        assert_eq!(m.throttled_topics, ["a", "b"]);
        assert!(p.refused.is_none() && p.unregister.is_empty() && p.waiting);
    }

    #[test]
    fn several_brokers_leaving_drain_as_one_batch() {
        let kafka = view(
            &[0, 1, 2, 3],
            &[("a", 0, &[2, 0]), ("a", 1, &[3, 1]), ("a", 2, &[0, 1])],
        );
        let p = Case::new(&[0, 1], Some(kafka)).plan();
        assert_eq!(p.retained, BTreeSet::from([2, 3]));
        assert_eq!(p.submit.len(), 2);
        assert_valid(&p.submit, &[2, 3], 2);
        assert_eq!(p.moves.expect("moves").brokers, [2, 3]);
    }

    #[test]
    fn moves_in_flight_are_waited_for_not_submitted_again() {
        let mut kafka = view(&[0, 1, 2, 3], &[("a", 0, &[3, 0]), ("a", 1, &[3, 1])]);
        kafka.partitions[0] = PartitionView {
            topic: "a".into(),
            partition: 0,
            replicas: vec![1, 0, 3],
            adding: vec![1],
            removing: vec![3],
        };
        let mut case = Case::new(&[0, 1, 2], Some(kafka));
        case.prior.replica_moves = Some(ReplicaMovesStatus {
            kind: ReplicaMoveKind::Drain,
            brokers: vec![3],
            started_at: format_ms(NOW - 60_000),
            partitions_total: 2,
            partitions_left: 2,
            ..Default::default()
        });
        let p = case.plan();
        assert_eq!(p.submit.len(), 1, "only the partition not moving yet");
        assert_eq!(p.submit[0].partition, 1);
        let m = p.moves.expect("moves");
        assert_eq!(
            m.started_at,
            format_ms(NOW - 60_000),
            "the same move, resumed"
        );
        assert_eq!(m.partitions_left, 2);
    }

    #[test]
    fn without_kafka_nothing_is_deleted() {
        let mut case = Case::new(&[0, 1, 2], None);
        let p = case.plan();
        assert_eq!(p.retained, BTreeSet::from([3]));
        assert_eq!(p.leaving[&3], BrokerPhase::Running, "not draining yet");
        assert!(p.submit.is_empty() && p.unregister.is_empty());
        assert!(p.moves.expect("says why").message.is_some());
        // A broker already draining stays Draining and keeps its Envoy listener.
        case.prior.brokers[3].phase = BrokerPhase::Draining;
        let p = case.plan();
        assert_eq!(p.leaving[&3], BrokerPhase::Draining);
        assert_eq!(p.draining, BTreeSet::from([3]));
    }

    #[test]
    fn a_removal_below_the_replication_factor_is_refused_and_nothing_moves() {
        let kafka = view(&[0, 1, 2, 3], &[("rf3", 0, &[0, 1, 3]), ("rf1", 0, &[3])]);
        let p = Case::new(&[0, 1], Some(kafka)).plan();
        let why = p.refused.expect("refused");
        assert!(
            why.contains("\"rf3\"") && why.contains("replication factor 3"),
            "{why}"
        );
        assert!(p.submit.is_empty() && p.throttles.is_none());
        assert_eq!(p.leaving[&2], BrokerPhase::Running);
        assert_eq!(
            p.retained,
            BTreeSet::from([2, 3]),
            "both keep their objects"
        );
        assert!(p.draining.is_empty(), "still in bootstrap");
        assert!(p.moves.is_none());
    }

    #[test]
    fn a_refused_removal_names_the_nodes_it_keeps() {
        let kafka = view(&[0, 1, 2, 3], &[("t", 0, &[0, 2, 3])]);
        let p = Case::new(&[0, 1], Some(kafka.clone())).plan();
        assert!(p.refused.is_some());
        assert_eq!(p.refused_removals(), BTreeSet::from([2, 3]));
        let p = Case::new(&[0, 1, 2], Some(kafka)).plan();
        assert!(p.refused.is_none());
        assert!(p.refused_removals().is_empty());
    }

    #[test]
    fn a_removal_below_min_insync_replicas_is_refused() {
        let mut kafka = view(&[0, 1, 2, 3], &[("t", 0, &[0, 3])]);
        kafka.min_insync = Some(BTreeMap::from([("t".to_string(), 3)]));
        let p = Case::new(&[0, 1], Some(kafka)).plan();
        let why = p.refused.expect("refused");
        assert!(why.contains("min.insync.replicas 3"), "{why}");
        assert!(p.submit.is_empty());
    }

    #[test]
    fn an_empty_node_keeps_its_pod_while_it_is_a_voter() {
        let kafka = view(&[0, 1, 2, 3], &[("a", 0, &[0, 1])]);
        let mut case = Case::new(&[0, 1, 2], Some(kafka));
        case.voters = BTreeSet::from([0, 3]);
        let p = case.plan();
        assert_eq!(p.leaving[&3], BrokerPhase::Draining);
        assert!(p.retained.contains(&3), "it leaves the quorum first");
        assert!(p.unregister.is_empty());
        // Out of the voters: it goes.
        case.voters = BTreeSet::from([0]);
        let p = case.plan();
        assert_eq!(p.leaving[&3], BrokerPhase::Removed);
        assert!(p.retained.is_empty());
    }

    #[test]
    fn a_drained_broker_loses_its_pod_then_its_registration() {
        let kafka = view(&[0, 1, 2, 3], &[("a", 0, &[0, 1])]);
        let mut case = Case::new(&[0, 1, 2], Some(kafka));
        let p = case.plan();
        assert_eq!(p.leaving[&3], BrokerPhase::Removed);
        assert!(p.retained.is_empty(), "its objects go");
        assert!(p.unregister.is_empty(), "not while its Pod runs");
        // Pod gone, still registered: unregister.
        case.pods = vec![0, 1, 2];
        let p = case.plan();
        assert_eq!(p.unregister, [3]);
        assert_eq!(p.leaving[&3], BrokerPhase::Removed);
        // Unregistered, no objects left: no longer tracked.
        case.kafka.as_mut().expect("kafka").registered.remove(&3);
        let p = case.plan();
        assert!(p.leaving.is_empty() && p.unregister.is_empty());
    }

    #[test]
    fn a_controller_only_node_leaving_without_kafka_goes() {
        let mut case = Case::new(&[0, 1, 2], None);
        case.prior.brokers.pop();
        let ids: BTreeSet<i32> = [0, 1, 2].into();
        let p = plan(&ScalingInput {
            spec_nodes: ids.clone(),
            spec_brokers: ids,
            prior: &case.prior,
            objects: [0, 1, 2, 3].into(),
            pods: BTreeMap::from([(
                3,
                PodFacts {
                    ready: true,
                    broker_role: false,
                },
            )]),
            kafka: None,
            rebalance: &case.rebalance,
            rebalance_annotation: None,
            restarting: false,
            voters: BTreeSet::new(),
            now_ms: NOW,
        });
        assert!(p.retained.is_empty());
        assert_eq!(p.leaving[&3], BrokerPhase::Removed);
    }

    #[test]
    fn a_broker_put_back_cancels_the_moves_off_it() {
        let mut kafka = view(&[0, 1, 2, 3], &[("a", 0, &[1, 0, 3]), ("a", 1, &[0, 1])]);
        kafka.partitions[0].adding = vec![1];
        kafka.partitions[0].removing = vec![3];
        let mut case = Case::new(&[0, 1, 2, 3], Some(kafka));
        case.prior.brokers[3].phase = BrokerPhase::Draining;
        let p = case.plan();
        assert_eq!(p.cancel, [("a".to_string(), 0)]);
        assert!(p.leaving.is_empty() && p.retained.is_empty());
        assert!(p.events.iter().any(|e| e.contains("cancelled")));
    }

    #[test]
    fn moves_onto_a_broker_that_left_are_cancelled() {
        let mut kafka = view(&[0, 1, 2, 3], &[("a", 0, &[3, 0, 1])]);
        kafka.partitions[0].adding = vec![3];
        kafka.partitions[0].removing = vec![1];
        let p = Case::new(&[0, 1, 2], Some(kafka)).plan();
        assert_eq!(p.cancel, [("a".to_string(), 0)]);
    }

    #[test]
    fn the_end_of_a_move_clears_its_throttles_and_restores_leaders() {
        let kafka = view(&[0, 1, 2], &[("a", 0, &[0, 1])]);
        let mut case = Case::new(&[0, 1, 2], Some(kafka));
        case.pods = vec![0, 1, 2];
        case.prior.brokers.pop();
        case.prior.rebalanced_brokers = Some(vec![0, 1, 2]);
        case.prior.replica_moves = Some(ReplicaMovesStatus {
            kind: ReplicaMoveKind::Drain,
            brokers: vec![3],
            throttled_brokers: vec![0, 1, 3],
            throttled_topics: vec!["a".into()],
            ..Default::default()
        });
        let p = case.plan();
        assert!(p.moves.is_none());
        assert!(p.elect_leaders);
        let c = p.clear_throttles.expect("cleared");
        assert_eq!(c.topics, BTreeSet::from(["a".to_string()]));
        assert_eq!(c.brokers, BTreeSet::from([0, 1]), "broker 3 is gone");
        assert!(p.events.iter().any(|e| e.contains("done")));
    }

    #[test]
    fn moves_status_lost_are_adopted_and_their_throttles_cleared_at_the_end() {
        // A rebalance was submitted, then the status write that recorded it lost a conflict.
        let mut kafka = view(&[0, 1, 2, 3], &[("a", 0, &[0, 1]), ("b", 0, &[1, 2])]);
        kafka.partitions[0] = PartitionView {
            topic: "a".into(),
            partition: 0,
            replicas: vec![3, 1, 0],
            adding: vec![3],
            removing: vec![0],
        };
        let mut case = Case::new(&[0, 1, 2, 3], Some(kafka.clone()));
        case.prior.rebalanced_brokers = Some(vec![0, 1, 2]);
        let p = case.plan();
        assert!(p.submit.is_empty(), "nothing new while a move runs");
        let m = p.moves.expect("the move in flight is tracked");
        assert_eq!(m.kind, ReplicaMoveKind::Rebalance);
        assert_eq!((m.partitions_total, m.partitions_left), (1, 1));
        assert_eq!(m.throttled_topics, ["a"]);
        assert_eq!(m.throttled_brokers, [0, 1, 3]);
        assert!(p.waiting && p.events.iter().any(|e| e.contains("did not record")));

        // It ends: the adopted move's throttles go, leaders are restored.
        kafka.partitions[0] = PartitionView {
            topic: "a".into(),
            partition: 0,
            replicas: vec![3, 1],
            ..Default::default()
        };
        case.kafka = Some(kafka);
        case.prior.replica_moves = Some(m);
        let p = case.plan();
        let c = p.clear_throttles.expect("cleared");
        assert_eq!(c.topics, BTreeSet::from(["a".to_string()]));
        assert_eq!(c.brokers, BTreeSet::from([0, 1, 3]));
        assert!(p.elect_leaders);
    }

    #[test]
    fn throttles_a_crash_left_are_found_on_the_first_look() {
        let mut kafka = view(&[0, 1, 2, 3], &[("a", 0, &[0, 1])]);
        kafka.throttled_topics = Some(BTreeSet::from(["a".to_string()]));
        let p = Case::new(&[0, 1, 2, 3], Some(kafka)).plan();
        let c = p.clear_throttles.expect("cleared");
        assert_eq!(c.topics.len(), 1);
        assert_eq!(c.brokers, BTreeSet::from([0, 1, 2, 3]));
    }

    #[test]
    fn no_drain_starts_while_a_broker_restarts_or_a_target_is_down() {
        let kafka = view(&[0, 1, 2, 3], &[("a", 0, &[3, 0])]);
        let mut case = Case::new(&[0, 1, 2], Some(kafka));
        case.restarting = true;
        let p = case.plan();
        assert!(p.submit.is_empty());
        assert_eq!(p.leaving[&3], BrokerPhase::Draining);
        case.restarting = false;
        case.kafka
            .as_mut()
            .expect("kafka")
            .registered
            .get_mut(&1)
            .expect("1")
            .fenced = true;
        let p = case.plan();
        assert!(p.submit.is_empty());
        let why = p.moves.and_then(|m| m.message).unwrap_or_default();
        assert!(why.contains("[1]"), "{why}");
    }

    #[test]
    fn a_cluster_seen_first_is_not_rebalanced() {
        let kafka = view(&[0, 1, 2, 3], &[("a", 0, &[0, 1]), ("a", 1, &[0, 1])]);
        let mut case = Case::new(&[0, 1, 2, 3], Some(kafka));
        case.prior.rebalanced_brokers = None;
        let p = case.plan();
        assert!(p.submit.is_empty());
        assert_eq!(p.rebalanced_brokers, Some(vec![0, 1, 2, 3]));
    }

    #[test]
    fn an_added_broker_is_filled_once_every_broker_is_up() {
        let partitions: Vec<(&str, i32, &[i32])> = (0..8).map(|i| ("a", i, &[0, 1][..])).collect();
        let kafka = view(&[0, 1, 2], &partitions);
        let mut case = Case::new(&[0, 1, 2], Some(kafka));
        case.pods = vec![0, 1, 2];
        case.prior.brokers.pop();
        case.prior.rebalanced_brokers = Some(vec![0, 1]);
        let p = case.plan();
        assert!(!p.submit.is_empty(), "broker 2 gets replicas");
        assert!(p.submit.iter().any(|m| m.replicas.contains(&2)));
        let m = p.moves.expect("moves");
        assert_eq!(m.kind, ReplicaMoveKind::Rebalance);
        assert_eq!(m.brokers, [2]);
        assert_eq!(p.rebalanced_brokers, Some(vec![0, 1, 2]));
        assert!(p.throttles.is_some());
        // Not before broker 2 is registered and unfenced.
        case.kafka
            .as_mut()
            .expect("kafka")
            .registered
            .get_mut(&2)
            .expect("2")
            .fenced = true;
        let p = case.plan();
        assert!(p.submit.is_empty() && p.waiting);
        assert_eq!(p.rebalanced_brokers, Some(vec![0, 1]));
        // Not at all with onBrokerAdd off.
        case.kafka
            .as_mut()
            .expect("kafka")
            .registered
            .get_mut(&2)
            .expect("2")
            .fenced = false;
        case.rebalance.on_broker_add = false;
        assert!(case.plan().submit.is_empty());
    }

    #[test]
    fn the_annotation_asks_for_a_rebalance_once_per_value() {
        let partitions: Vec<(&str, i32, &[i32])> = (0..8).map(|i| ("a", i, &[0, 1][..])).collect();
        let kafka = view(&[0, 1, 2], &partitions);
        let mut case = Case::new(&[0, 1, 2], Some(kafka));
        case.pods = vec![0, 1, 2];
        case.prior.brokers.pop();
        case.prior.rebalanced_brokers = Some(vec![0, 1, 2]);
        assert!(
            case.plan().submit.is_empty(),
            "balanced brokers, no request"
        );
        case.annotation = Some("now".into());
        let p = case.plan();
        assert!(!p.submit.is_empty());
        assert_eq!(p.rebalance_requested.as_deref(), Some("now"));
        case.prior.rebalance_requested = Some("now".into());
        assert!(case.plan().submit.is_empty(), "the same value asks nothing");
    }

    #[test]
    fn progress_estimates_the_time_left_from_the_pace() {
        let m = ReplicaMovesStatus {
            started_at: format_ms(NOW - 100_000),
            partitions_total: 10,
            partitions_left: 5,
            ..Default::default()
        };
        assert_eq!(estimate(&m, NOW), Some(100));
        let fresh = ReplicaMovesStatus {
            partitions_left: 10,
            ..m
        };
        assert_eq!(estimate(&fresh, NOW), None);
    }
}
