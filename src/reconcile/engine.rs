//! Which engine moves replicas, planned without I/O: Pier's own balancer (what
//! [`super::scaling::plan`] decided) or Cruise Control (CC), when `spec.cruiseControl.enabled`.
//!
//! [`plan`] takes the built-in plan (which brokers drain, which were added, whether the
//! rebalance annotation asked for a full rebalance), the CC operation persisted in
//! `status.replicaMoves.cruiseControl`, and what CC said (ready or why not, its answer about the
//! task), and rewrites the built-in plan into CC's calls: `remove_broker`, `add_broker`,
//! `rebalance`, `stop_proposal_execution`. What stays Kafka's to say, whatever CC reports:
//!
//! - which broker is empty, so which Pod goes: the built-in plan's phases are never touched
//!   here, and CC's "done" deletes nothing;
//! - whether a lost task was done: a task CC forgot (it restarted) is re-submitted a bounded
//!   number of times ([`RetryPolicy`]), never taken as done.
//!
//! CC sets its own replication throttles (Pier passes `spec.rebalance.throttleBytesPerSecond`
//! as CC's `replication_throttle`): the built-in plan's throttles and moves are dropped while CC
//! is the engine. While CC is not ready, `fallback: Wait` keeps the request in status and says
//! why; `fallback: BuiltIn` lets the built-in plan stand (CC takes over for later moves, never
//! for moves already in flight in Kafka).
use std::collections::BTreeSet;

use pier_cruise_control::{Observation, Operation, OperationKind, RetryPolicy, Step, Waiting};

use super::pods::format_ms;
use super::scaling::{KafkaView, PartitionView, ScalingPlan};
use crate::api::{
    BrokerPhase, CruiseControlFallback, CruiseControlSpec, KafkaClusterStatus, ReplicaMoveKind,
    ReplicaMovesStatus,
};

/// Whether CC can start an execution now, as its `state` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    Ready,
    /// Its executor is busy (with another task, or one Pier lost track of).
    Busy(String),
    /// Not reachable, not deployed yet, or without enough metric windows: why.
    NotReady(String),
}

/// Everything the engine's decision is made from, beside the built-in plan.
#[derive(Debug, Clone)]
pub struct EngineInput<'a> {
    pub spec: &'a CruiseControlSpec,
    pub prior: &'a KafkaClusterStatus,
    /// Every node id of the spec.
    pub spec_nodes: &'a BTreeSet<i32>,
    /// `None`: Kafka gave no complete answer.
    pub kafka: Option<&'a KafkaView>,
    pub availability: Availability,
    /// CC's answer about the persisted operation's task; `None` when not asked (no task).
    pub task: Option<&'a Observation>,
    pub policy: RetryPolicy,
    pub now_ms: i64,
}

/// A call to CC, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Stop CC's execution: a draining broker came back into the spec.
    Stop,
    /// Submit this request; on success record the task with [`record_submission`].
    Submit(Operation),
}

/// Rewrites `scaling` for the engine in use and returns the calls to make to CC (none with
/// the built-in engine).
pub fn plan(input: &EngineInput<'_>, scaling: &mut ScalingPlan) -> Vec<Call> {
    let prior_op = input
        .prior
        .replica_moves
        .as_ref()
        .and_then(|m| m.cruise_control.as_ref());
    let prior_failure = input
        .prior
        .replica_moves
        .as_ref()
        .and_then(|m| m.cruise_control_failure.clone());
    if !input.spec.enabled {
        forget(scaling);
        return Vec::new();
    }
    let Some(kafka) = input.kafka else {
        // Without Kafka's answer nothing new starts; the persisted operation stays as it was.
        if let Some(op) = prior_op {
            keep(scaling, op.clone(), prior_failure, input.now_ms);
            suppress_builtin(scaling);
        }
        return Vec::new();
    };
    let kafka_moving = kafka.partitions.iter().any(PartitionView::moving);

    // A draining broker back in the spec: CC stops; the built-in plan cancels Kafka's moves.
    if let Some(op) = prior_op.filter(|op| op.kind == OperationKind::RemoveBroker) {
        let returned: Vec<i32> = op
            .brokers
            .iter()
            .copied()
            .filter(|id| input.spec_nodes.contains(id))
            .collect();
        if !returned.is_empty() {
            forget(scaling);
            suppress_builtin(scaling);
            scaling.events.push(format!(
                "brokers {returned:?} are back in the spec: stopping Cruise Control's execution (task {})",
                op.task_id.as_deref().unwrap_or("not submitted")
            ));
            scaling.waiting = true;
            return if op.task_id.is_some() {
                vec![Call::Stop]
            } else {
                Vec::new()
            };
        }
    }

    let need = need(input, scaling);
    let current = match (need, prior_op) {
        // A drain goes on while the same brokers drain; a rebalance request is new each time.
        (Some(need), Some(prior))
            if need.kind == OperationKind::RemoveBroker && prior.same_request(&need) =>
        {
            Some(prior.clone())
        }
        (Some(need), _) => Some(need),
        // The brokers CC drained hold nothing now (Kafka says): nothing more to wait for.
        (None, Some(prior))
            if prior.kind == OperationKind::RemoveBroker
                && !prior
                    .brokers
                    .iter()
                    .any(|id| scaling.leaving.get(id) == Some(&BrokerPhase::Draining)) =>
        {
            scaling.events.push(format!(
                "Cruise Control's drain of brokers {:?}: Kafka shows them empty",
                prior.brokers
            ));
            None
        }
        (None, Some(prior)) => Some(prior.clone()),
        (None, None) => None,
    };
    let Some(op) = current else {
        forget(scaling);
        return Vec::new();
    };
    let failure = prior_failure.filter(|_| prior_op.is_some_and(|p| p == &op));
    if let Some(why) = failure {
        // Failed before: shown until the move changes, never submitted again by itself.
        keep(scaling, op, Some(why), input.now_ms);
        suppress_builtin(scaling);
        return Vec::new();
    }

    let step = match (op.task_id.as_ref(), input.task) {
        (None, _) => Step::Submit,
        (Some(_), Some(seen)) => {
            let seen = seen.clone().with_kafka_reassigning(kafka_moving);
            pier_cruise_control::next_step(&op, &seen, &input.policy)
        }
        (Some(_), None) => Step::Wait(Waiting::NoAnswer("not asked".into())),
    };
    match step {
        Step::Wait(why) => {
            keep(scaling, op, None, input.now_ms);
            suppress_builtin(scaling);
            set_message(scaling, waiting_message(&why));
            Vec::new()
        }
        Step::Done if op.kind == OperationKind::RemoveBroker => {
            // CC says done, yet Kafka still shows replicas on the brokers (else there would be
            // no need): submitted again, within the same bound as a lost task.
            let left = format!(
                "Cruise Control reported task {} done but Kafka still shows replicas on brokers {:?}",
                op.task_id.as_deref().unwrap_or_default(),
                op.brokers
            );
            if kafka_moving {
                keep(scaling, op, None, input.now_ms);
                suppress_builtin(scaling);
                set_message(scaling, "waiting for the partitions in flight".into());
                Vec::new()
            } else if op.attempts >= input.policy.max_attempts {
                fail(scaling, op, left, input.now_ms)
            } else {
                scaling.events.push(format!("{left}: submitting again"));
                submit(input, scaling, op, kafka_moving)
            }
        }
        Step::Done => {
            scaling.events.push(format!(
                "Cruise Control finished {} (task {})",
                describe(&op),
                op.task_id.as_deref().unwrap_or_default()
            ));
            scaling.elect_leaders = true;
            forget(scaling);
            Vec::new()
        }
        Step::Failed(why) => fail(scaling, op, why, input.now_ms),
        Step::Resubmit { lost_task_id } => {
            scaling.events.push(format!(
                "Cruise Control lost task {lost_task_id} of {} (it restarted or expired it): submitting again",
                describe(&op)
            ));
            submit(input, scaling, op, kafka_moving)
        }
        Step::Submit => submit(input, scaling, op, kafka_moving),
    }
}

/// Records a submission CC accepted on the operation the plan persists.
pub fn record_submission(scaling: &mut ScalingPlan, task_id: &str, now_ms: i64) {
    if let Some(op) = scaling
        .moves
        .as_mut()
        .and_then(|m| m.cruise_control.as_mut())
    {
        op.record_submission(task_id, now_ms);
    }
    set_message(
        scaling,
        format!("Cruise Control accepted the request (task {task_id})"),
    );
}

/// A submission CC refused or never answered: a transient error is retried by the next
/// reconcile (status says why), any other fails the operation.
pub fn submission_failed(scaling: &mut ScalingPlan, error: &str, transient: bool) {
    let Some(m) = scaling.moves.as_mut() else {
        return;
    };
    if transient {
        m.message = Some(format!("waiting for Cruise Control: {error}"));
    } else {
        m.cruise_control_failure = Some(error.to_string());
        m.message = Some(format!("Cruise Control failed: {error}"));
    }
}

/// The failure to report (Degraded, an Event), if the operation failed.
pub fn failure(scaling: &ScalingPlan) -> Option<&str> {
    scaling
        .moves
        .as_ref()
        .and_then(|m| m.cruise_control_failure.as_deref())
}

/// What the spec and Kafka ask of CC in this reconcile: a drain while brokers hold replicas
/// (and the removal is not refused), else a rebalance the annotation asked for, else filling
/// brokers added since the last rebalance. The last two are decided by the built-in plan
/// (every broker up, nothing moving) in the one reconcile it starts them.
fn need(input: &EngineInput<'_>, scaling: &ScalingPlan) -> Option<Operation> {
    let draining: Vec<i32> = scaling
        .leaving
        .iter()
        .filter(|(_, phase)| **phase == BrokerPhase::Draining)
        .map(|(id, _)| *id)
        .collect();
    if !draining.is_empty() {
        return scaling
            .refused
            .is_none()
            .then(|| Operation::remove_brokers(draining));
    }
    if scaling.rebalance_requested.is_some()
        && scaling.rebalance_requested != input.prior.rebalance_requested
    {
        return Some(Operation::rebalance());
    }
    let before: BTreeSet<i32> = input
        .prior
        .rebalanced_brokers
        .iter()
        .flatten()
        .copied()
        .collect();
    let added: Vec<i32> = scaling
        .rebalanced_brokers
        .iter()
        .flatten()
        .copied()
        .filter(|id| !before.contains(id))
        .collect();
    (input.prior.rebalanced_brokers.is_some() && !added.is_empty())
        .then(|| Operation::add_brokers(added))
}

/// Submits `op` if CC can take it, else waits or lets the built-in plan stand.
fn submit(
    input: &EngineInput<'_>,
    scaling: &mut ScalingPlan,
    op: Operation,
    kafka_moving: bool,
) -> Vec<Call> {
    let builtin = input.spec.fallback == CruiseControlFallback::BuiltIn;
    let (why, not_ready) = match &input.availability {
        // Moves in flight (someone's, or the built-in engine's): CC would refuse or stop them.
        Availability::Ready if kafka_moving => {
            ("waiting for the partitions in flight".to_string(), false)
        }
        Availability::Ready => {
            keep(scaling, op.clone(), None, input.now_ms);
            suppress_builtin(scaling);
            set_message(
                scaling,
                format!("submitting {} to Cruise Control", describe(&op)),
            );
            return vec![Call::Submit(op)];
        }
        Availability::Busy(why) => (format!("Cruise Control is busy: {why}"), true),
        Availability::NotReady(why) => (format!("Cruise Control is not ready: {why}"), true),
    };
    if builtin && not_ready {
        // Pier's own balancer meanwhile; nothing of CC's is kept for this move.
        forget(scaling);
        if let Some(m) = scaling.moves.as_mut()
            && m.message.is_none()
        {
            m.message = Some(format!("{why}; moving replicas with Pier's own balancer"));
        }
        return Vec::new();
    }
    keep(scaling, op, None, input.now_ms);
    suppress_builtin(scaling);
    set_message(scaling, why);
    scaling.waiting = true;
    Vec::new()
}

fn fail(scaling: &mut ScalingPlan, op: Operation, why: String, now_ms: i64) -> Vec<Call> {
    scaling
        .events
        .push(format!("Cruise Control failed {}: {why}", describe(&op)));
    keep(scaling, op, Some(why), now_ms);
    suppress_builtin(scaling);
    Vec::new()
}

/// Puts the operation (and its failure) into the move status, creating one if the built-in plan
/// has none (a rebalance it found nothing to do for, a drain whose brokers it already saw empty).
fn keep(scaling: &mut ScalingPlan, op: Operation, failure: Option<String>, now_ms: i64) {
    let kind = match op.kind {
        OperationKind::RemoveBroker => ReplicaMoveKind::Drain,
        _ => ReplicaMoveKind::Rebalance,
    };
    let m = scaling.moves.get_or_insert_with(|| ReplicaMovesStatus {
        kind,
        brokers: op.brokers.clone(),
        started_at: format_ms(now_ms),
        ..Default::default()
    });
    if let Some(why) = &failure {
        m.message = Some(format!("Cruise Control failed: {why}"));
    }
    m.cruise_control = Some(op);
    m.cruise_control_failure = failure;
    scaling.waiting = true;
}

/// Drops CC's fields from the move status.
fn forget(scaling: &mut ScalingPlan) {
    if let Some(m) = scaling.moves.as_mut() {
        m.cruise_control = None;
        m.cruise_control_failure = None;
    }
}

/// CC moves the replicas: the built-in plan's moves, throttles and their events go.
fn suppress_builtin(scaling: &mut ScalingPlan) {
    scaling
        .events
        .retain(|e| !super::scaling::is_builtin_move_event(e));
    scaling.submit.clear();
    scaling.throttles = None;
    if let Some(m) = scaling.moves.as_mut() {
        m.throttled_brokers.clear();
        m.throttled_topics.clear();
    }
}

fn set_message(scaling: &mut ScalingPlan, message: String) {
    if let Some(m) = scaling.moves.as_mut() {
        m.message = Some(message);
    }
}

fn waiting_message(why: &Waiting) -> String {
    match why {
        Waiting::Computing => "Cruise Control is computing the proposal".into(),
        Waiting::Executing => "Cruise Control is moving replicas".into(),
        Waiting::ExecutionStarting => "Cruise Control is starting the execution".into(),
        Waiting::LostWhileKafkaReassigning => {
            "Cruise Control lost the task; waiting for Kafka's moves in flight before submitting again"
                .into()
        }
        Waiting::NoAnswer(why) => format!("no answer from Cruise Control: {why}"),
    }
}

fn describe(op: &Operation) -> String {
    match op.kind {
        OperationKind::RemoveBroker => format!("the drain of brokers {:?}", op.brokers),
        OperationKind::AddBroker => format!("the rebalance onto brokers {:?}", op.brokers),
        OperationKind::Rebalance => "the rebalance".to_string(),
        OperationKind::RemoveDisks => "the removal of disks".to_string(),
    }
}

#[cfg(test)]
mod tests;
