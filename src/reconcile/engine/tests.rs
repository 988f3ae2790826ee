//! The engine's decisions on small clusters: which CC call, what status keeps, and that the
//! built-in plan's phases (which decide Pod deletion) are never changed.
use std::collections::{BTreeMap, BTreeSet};

use pier_cruise_control::{Observation, Operation, OperationKind, RetryPolicy, TaskStatus};

use super::*;
use crate::api::{BrokerStatus, RebalanceSpec};
use crate::reconcile::scaling::{self, PodFacts, RegisteredBroker, ScalingInput};

const NOW: i64 = 1_800_000_000_000;
const TASK: &str = "5f0ce5a2-3a4b-4c1e-9f57-6c1a8f1b2d3e";
const TASK2: &str = "00000000-0000-4000-8000-000000000002";

struct World {
    spec: Vec<i32>,
    prior: KafkaClusterStatus,
    kafka: Option<KafkaView>,
    cc: CruiseControlSpec,
    availability: Availability,
    task: Option<Observation>,
    annotation: Option<String>,
}

fn partition(topic: &str, p: i32, replicas: &[i32]) -> PartitionView {
    PartitionView {
        topic: topic.into(),
        partition: p,
        replicas: replicas.to_vec(),
        ..Default::default()
    }
}

impl World {
    /// Brokers 0..=3, broker 3 removed from the spec and holding replicas; CC enabled, ready.
    fn drain() -> World {
        World {
            spec: vec![0, 1, 2],
            prior: KafkaClusterStatus {
                brokers: (0..4)
                    .map(|id| BrokerStatus {
                        id,
                        phase: BrokerPhase::Running,
                        ..Default::default()
                    })
                    .collect(),
                rebalanced_brokers: Some(vec![0, 1, 2, 3]),
                ..Default::default()
            },
            kafka: Some(KafkaView {
                partitions: vec![
                    partition("t", 0, &[0, 3]),
                    partition("t", 1, &[1, 3]),
                    partition("only-on-3", 0, &[3]),
                    partition("t", 2, &[0, 1]),
                ],
                registered: (0..4).map(|id| (id, RegisteredBroker::default())).collect(),
                min_insync: Some(BTreeMap::new()),
                ..Default::default()
            }),
            cc: CruiseControlSpec {
                enabled: true,
                ..Default::default()
            },
            availability: Availability::Ready,
            task: None,
            annotation: None,
        }
    }

    /// Every broker in the spec, none holding anything it should not.
    fn steady() -> World {
        let mut w = World::drain();
        w.spec = vec![0, 1, 2, 3];
        w.kafka.as_mut().unwrap().partitions = vec![
            partition("t", 0, &[0, 3]),
            partition("t", 1, &[1, 2]),
            partition("t", 2, &[2, 3]),
            partition("t", 3, &[0, 1]),
        ];
        w
    }

    /// The prior status holds `op` (and the built-in plan's move status around it).
    fn with_op(mut self, op: Operation) -> World {
        let kind = match op.kind {
            OperationKind::RemoveBroker => ReplicaMoveKind::Drain,
            _ => ReplicaMoveKind::Rebalance,
        };
        if kind == ReplicaMoveKind::Drain {
            for b in &mut self.prior.brokers {
                if op.brokers.contains(&b.id) {
                    b.phase = BrokerPhase::Draining;
                }
            }
        }
        self.prior.replica_moves = Some(ReplicaMovesStatus {
            kind,
            brokers: op.brokers.clone(),
            started_at: format_ms(NOW - 60_000),
            cruise_control: Some(op),
            ..Default::default()
        });
        self
    }

    fn task(mut self, status: TaskStatus, executor_on_task: bool) -> World {
        self.task = Some(Observation::task(status, executor_on_task));
        self
    }

    /// Kafka shows the partitions with a replica on `from` moving to `to`.
    fn moving(mut self, from: i32, to: i32) -> World {
        for p in &mut self.kafka.as_mut().unwrap().partitions {
            if p.replicas.contains(&from) {
                p.adding = vec![to];
                p.removing = vec![from];
                p.replicas.push(to);
            }
        }
        self
    }

    fn builtin(&self) -> ScalingPlan {
        let spec: BTreeSet<i32> = self.spec.iter().copied().collect();
        let pods: BTreeMap<i32, PodFacts> = (0..4)
            .map(|id| {
                (
                    id,
                    PodFacts {
                        ready: true,
                        broker_role: true,
                    },
                )
            })
            .collect();
        scaling::plan(&ScalingInput {
            spec_nodes: spec.clone(),
            spec_brokers: spec,
            prior: &self.prior,
            objects: pods.keys().copied().collect(),
            pods,
            kafka: self.kafka.as_ref(),
            rebalance: &RebalanceSpec::default(),
            rebalance_annotation: self.annotation.as_deref(),
            restarting: false,
            voters: BTreeSet::new(),
            now_ms: NOW,
        })
    }

    /// The built-in plan, the plan after the engine, and CC's calls.
    fn run(&self) -> (ScalingPlan, ScalingPlan, Vec<Call>) {
        let builtin = self.builtin();
        let mut after = builtin.clone();
        let spec: BTreeSet<i32> = self.spec.iter().copied().collect();
        let calls = plan(
            &EngineInput {
                spec: &self.cc,
                prior: &self.prior,
                spec_nodes: &spec,
                kafka: self.kafka.as_ref(),
                availability: self.availability.clone(),
                task: self.task.as_ref(),
                policy: RetryPolicy { max_attempts: 3 },
                now_ms: NOW,
            },
            &mut after,
        );
        // Whatever the engine decides, which broker is empty (and loses its Pod) is Kafka's
        // to say, through the built-in plan.
        assert_eq!(after.leaving, builtin.leaving);
        assert_eq!(after.retained, builtin.retained);
        assert_eq!(after.draining, builtin.draining);
        assert_eq!(after.unregister, builtin.unregister);
        assert_eq!(after.refused, builtin.refused);
        assert_eq!(after.cancel, builtin.cancel);
        (builtin, after, calls)
    }
}

fn submitted(mut op: Operation, attempts: u32) -> Operation {
    for i in 0..attempts {
        op.record_submission(if i % 2 == 0 { TASK } else { TASK2 }, NOW - 1000);
    }
    op
}

fn op_of(p: &ScalingPlan) -> Option<&Operation> {
    p.moves.as_ref().and_then(|m| m.cruise_control.as_ref())
}

fn message(p: &ScalingPlan) -> String {
    p.moves
        .as_ref()
        .and_then(|m| m.message.clone())
        .unwrap_or_default()
}

fn cc_only(p: &ScalingPlan) {
    assert!(p.submit.is_empty(), "built-in moves left: {:?}", p.submit);
    assert_eq!(p.throttles, None);
    assert!(
        !p.events.iter().any(|e| scaling::is_builtin_move_event(e)),
        "{:?}",
        p.events
    );
}

#[test]
fn disabled_leaves_the_builtin_plan_and_drops_ccs_fields() {
    let mut w = World::drain().with_op(submitted(Operation::remove_brokers([3]), 1));
    w.cc.enabled = false;
    let (builtin, after, calls) = w.run();
    assert!(calls.is_empty());
    assert!(!after.submit.is_empty(), "the built-in balancer drains");
    assert_eq!(after.submit, builtin.submit);
    assert_eq!(after.throttles, builtin.throttles);
    assert_eq!(op_of(&after), None);
}

#[test]
fn a_drain_is_submitted_as_remove_broker_and_the_builtin_moves_go() {
    let (builtin, after, calls) = World::drain().run();
    assert!(!builtin.submit.is_empty() && builtin.throttles.is_some());
    assert_eq!(calls, vec![Call::Submit(Operation::remove_brokers([3]))]);
    cc_only(&after);
    assert_eq!(op_of(&after), Some(&Operation::remove_brokers([3])));
    let m = after.moves.as_ref().unwrap();
    assert_eq!(m.kind, ReplicaMoveKind::Drain);
    assert!(m.throttled_brokers.is_empty() && m.throttled_topics.is_empty());
    assert!(
        message(&after).contains("Cruise Control"),
        "{}",
        message(&after)
    );
    assert_eq!(after.leaving.get(&3), Some(&BrokerPhase::Draining));
    assert!(
        after.retained.contains(&3),
        "the Pod stays while Kafka shows replicas"
    );
}

#[test]
fn several_brokers_drain_in_one_request() {
    let mut w = World::drain();
    w.spec = vec![0, 1];
    w.kafka.as_mut().unwrap().partitions = vec![
        partition("t", 0, &[0, 3]),
        partition("t", 1, &[2, 1]),
        partition("t", 2, &[3, 2]),
    ];
    let (_, _, calls) = w.run();
    assert_eq!(calls, vec![Call::Submit(Operation::remove_brokers([2, 3]))]);
}

#[test]
fn recording_a_submission_keeps_the_task_in_status() {
    let (_, mut after, _) = World::drain().run();
    record_submission(&mut after, TASK, NOW);
    let op = op_of(&after).unwrap();
    assert_eq!(op.task_id.as_deref(), Some(TASK));
    assert_eq!(op.attempts, 1);
    assert!(message(&after).contains(TASK));
}

#[test]
fn not_ready_with_fallback_wait_waits_and_says_why() {
    let mut w = World::drain();
    w.availability = Availability::NotReady(
        "not enough valid metric windows: NotEnoughValidWindowsException".into(),
    );
    let (_, after, calls) = w.run();
    assert!(calls.is_empty());
    cc_only(&after);
    assert!(
        message(&after).contains("NotEnoughValidWindows"),
        "{}",
        message(&after)
    );
    // The request is kept, unsubmitted, for when CC is ready.
    assert_eq!(op_of(&after), Some(&Operation::remove_brokers([3])));
    assert!(after.waiting);
}

#[test]
fn not_ready_with_fallback_builtin_uses_pier_balancer() {
    let mut w = World::drain();
    w.cc.fallback = CruiseControlFallback::BuiltIn;
    w.availability = Availability::NotReady("connection refused".into());
    let (builtin, after, calls) = w.run();
    assert!(calls.is_empty());
    assert_eq!(after.submit, builtin.submit);
    assert!(!after.submit.is_empty());
    assert_eq!(after.throttles, builtin.throttles);
    assert_eq!(op_of(&after), None);
}

#[test]
fn busy_cc_waits_for_its_other_execution() {
    let mut w = World::drain();
    w.availability = Availability::Busy("executor is INTER_BROKER_REPLICA_MOVEMENT".into());
    let (_, after, calls) = w.run();
    assert!(calls.is_empty());
    cc_only(&after);
    assert!(message(&after).contains("busy"), "{}", message(&after));
}

#[test]
fn ready_cc_waits_for_moves_already_in_flight() {
    // The built-in engine moved some partitions before CC became ready.
    let w = World::drain().moving(3, 2);
    let (_, after, calls) = w.run();
    assert!(calls.is_empty(), "{calls:?}");
    cc_only(&after);
    assert!(message(&after).contains("in flight"), "{}", message(&after));
    assert_eq!(op_of(&after), Some(&Operation::remove_brokers([3])));
}

#[test]
fn a_running_task_is_waited_for_without_builtin_moves() {
    for (status, executor) in [
        (TaskStatus::Active, true),
        (TaskStatus::InExecution, true),
        (TaskStatus::Completed, true),
    ] {
        let w = World::drain()
            .with_op(submitted(Operation::remove_brokers([3]), 1))
            .task(status.clone(), executor);
        let (_, after, calls) = w.run();
        assert!(calls.is_empty(), "{status:?}: {calls:?}");
        cc_only(&after);
        assert_eq!(op_of(&after).unwrap().task_id.as_deref(), Some(TASK));
        assert!(after.retained.contains(&3));
    }
}

#[test]
fn no_answer_about_the_task_waits() {
    let mut w = World::drain().with_op(submitted(Operation::remove_brokers([3]), 1));
    w.task = Some(Observation::no_answer("connection refused"));
    w.availability = Availability::NotReady("connection refused".into());
    let (_, after, calls) = w.run();
    assert!(calls.is_empty());
    cc_only(&after);
    assert!(message(&after).contains("connection refused"));
    assert_eq!(op_of(&after).unwrap().attempts, 1);
}

#[test]
fn a_lost_task_is_resubmitted_never_done() {
    let w = World::drain()
        .with_op(submitted(Operation::remove_brokers([3]), 1))
        .task(TaskStatus::Unknown, false);
    let (_, after, calls) = w.run();
    match calls.as_slice() {
        [Call::Submit(op)] => {
            assert!(op.same_request(&Operation::remove_brokers([3])));
            assert_eq!(op.attempts, 1, "the attempt counts on");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        after.events.iter().any(|e| e.contains("lost task")),
        "{:?}",
        after.events
    );
    assert!(!after.events.iter().any(|e| e.contains("finished")));
    assert_eq!(after.leaving.get(&3), Some(&BrokerPhase::Draining));
}

#[test]
fn a_lost_task_waits_while_kafka_still_moves() {
    let w = World::drain()
        .moving(3, 2)
        .with_op(submitted(Operation::remove_brokers([3]), 1))
        .task(TaskStatus::Unknown, false);
    let (_, after, calls) = w.run();
    assert!(calls.is_empty());
    cc_only(&after);
    assert!(message(&after).contains("lost"), "{}", message(&after));
}

#[test]
fn a_lost_task_fails_after_the_last_attempt() {
    let w = World::drain()
        .with_op(submitted(Operation::remove_brokers([3]), 3))
        .task(TaskStatus::Unknown, false);
    let (_, after, calls) = w.run();
    assert!(calls.is_empty());
    cc_only(&after);
    let why = failure(&after).expect("failed");
    assert!(why.contains("3 submissions"), "{why}");
    assert!(
        after
            .events
            .iter()
            .any(|e| e.contains("Cruise Control failed"))
    );
    // Failed, not done: the broker keeps its replicas and its Pod.
    assert!(after.retained.contains(&3));
}

#[test]
fn lost_while_cc_not_ready_falls_back_or_waits() {
    let base = World::drain()
        .with_op(submitted(Operation::remove_brokers([3]), 1))
        .task(TaskStatus::Unknown, false);
    let mut wait = base;
    wait.availability = Availability::NotReady("load monitor is LOADING".into());
    let (_, after, calls) = wait.run();
    assert!(calls.is_empty());
    cc_only(&after);
    assert!(message(&after).contains("LOADING"));

    let mut fallback = World::drain()
        .with_op(submitted(Operation::remove_brokers([3]), 1))
        .task(TaskStatus::Unknown, false);
    fallback.availability = Availability::NotReady("load monitor is LOADING".into());
    fallback.cc.fallback = CruiseControlFallback::BuiltIn;
    let (builtin, after, calls) = fallback.run();
    assert!(calls.is_empty());
    assert_eq!(after.submit, builtin.submit);
    assert_eq!(op_of(&after), None);
}

#[test]
fn a_failure_is_kept_and_not_resubmitted() {
    let mut w = World::drain()
        .with_op(submitted(Operation::remove_brokers([3]), 1))
        .task(TaskStatus::Unknown, false);
    w.prior
        .replica_moves
        .as_mut()
        .unwrap()
        .cruise_control_failure = Some("boom".into());
    let (_, after, calls) = w.run();
    assert!(calls.is_empty());
    cc_only(&after);
    assert_eq!(failure(&after), Some("boom"));
}

#[test]
fn completed_with_error_is_a_failure() {
    let w = World::drain()
        .with_op(submitted(Operation::remove_brokers([3]), 1))
        .task(
            TaskStatus::CompletedWithError {
                message: Some("Broker [3] is not alive".into()),
            },
            false,
        );
    let (_, after, calls) = w.run();
    assert!(calls.is_empty());
    assert!(failure(&after).unwrap().contains("Broker [3] is not alive"));
}

#[test]
fn done_while_kafka_still_shows_replicas_is_submitted_again_within_the_bound() {
    let w = World::drain()
        .with_op(submitted(Operation::remove_brokers([3]), 1))
        .task(TaskStatus::Completed, false);
    let (_, after, calls) = w.run();
    assert!(matches!(calls.as_slice(), [Call::Submit(_)]), "{calls:?}");
    assert!(after.retained.contains(&3), "CC's done deletes nothing");
    assert_eq!(after.leaving.get(&3), Some(&BrokerPhase::Draining));

    let w = World::drain()
        .with_op(submitted(Operation::remove_brokers([3]), 3))
        .task(TaskStatus::Completed, false);
    let (_, after, calls) = w.run();
    assert!(calls.is_empty());
    assert!(failure(&after).unwrap().contains("still shows replicas"));
}

#[test]
fn kafka_showing_the_brokers_empty_ends_the_drain_whatever_cc_says() {
    let mut w = World::drain()
        .with_op(submitted(Operation::remove_brokers([3]), 1))
        .task(TaskStatus::InExecution, true);
    w.kafka.as_mut().unwrap().partitions = vec![
        partition("t", 0, &[0, 2]),
        partition("t", 1, &[1, 2]),
        partition("only-on-3", 0, &[1]),
    ];
    let (builtin, after, calls) = w.run();
    assert!(calls.is_empty());
    assert_eq!(op_of(&after), None);
    assert_eq!(builtin.leaving.get(&3), Some(&BrokerPhase::Removed));
    assert!(
        after
            .events
            .iter()
            .any(|e| e.contains("Kafka shows them empty"))
    );
}

#[test]
fn a_draining_broker_back_in_the_spec_stops_cc() {
    let mut w = World::drain()
        .moving(3, 2)
        .with_op(submitted(Operation::remove_brokers([3]), 1))
        .task(TaskStatus::InExecution, true);
    w.spec = vec![0, 1, 2, 3];
    let (builtin, after, calls) = w.run();
    assert_eq!(calls, vec![Call::Stop]);
    assert!(
        !builtin.cancel.is_empty(),
        "Kafka's moves are cancelled too"
    );
    assert_eq!(op_of(&after), None);
    assert!(
        after
            .events
            .iter()
            .any(|e| e.contains("stopping Cruise Control"))
    );

    // Never submitted: nothing to stop.
    let mut w = World::drain().with_op(Operation::remove_brokers([3]));
    w.spec = vec![0, 1, 2, 3];
    let (_, _, calls) = w.run();
    assert!(calls.is_empty());
}

#[test]
fn a_different_drain_replaces_the_request() {
    let mut w = World::drain()
        .with_op(submitted(Operation::remove_brokers([3]), 1))
        .task(TaskStatus::InExecution, true);
    w.spec = vec![0, 1];
    w.prior
        .replica_moves
        .as_mut()
        .unwrap()
        .cruise_control_failure = Some("old".into());
    w.kafka.as_mut().unwrap().partitions =
        vec![partition("t", 0, &[0, 3]), partition("t", 1, &[2, 1])];
    w.availability = Availability::Busy("executor busy".into());
    let (_, after, calls) = w.run();
    assert!(calls.is_empty());
    assert_eq!(op_of(&after), Some(&Operation::remove_brokers([2, 3])));
    assert_eq!(
        failure(&after),
        None,
        "a new request starts without the old failure"
    );
}

#[test]
fn an_added_broker_is_filled_with_add_broker() {
    let mut w = World::steady();
    w.prior.rebalanced_brokers = Some(vec![0, 1, 2]);
    let (builtin, after, calls) = w.run();
    assert_eq!(builtin.rebalanced_brokers, Some(vec![0, 1, 2, 3]));
    assert_eq!(calls, vec![Call::Submit(Operation::add_brokers([3]))]);
    cc_only(&after);
    let m = after.moves.as_ref().unwrap();
    assert_eq!(m.kind, ReplicaMoveKind::Rebalance);
    assert_eq!(after.rebalanced_brokers, builtin.rebalanced_brokers);
}

#[test]
fn the_annotation_asks_cc_for_a_full_rebalance() {
    let mut w = World::steady();
    w.annotation = Some("now".into());
    let (_, after, calls) = w.run();
    assert_eq!(calls, vec![Call::Submit(Operation::rebalance())]);
    assert_eq!(after.rebalance_requested.as_deref(), Some("now"));
    // Already acted on: nothing new.
    w.prior.rebalance_requested = Some("now".into());
    let (_, _, calls) = w.run();
    assert!(calls.is_empty());
}

#[test]
fn a_first_look_at_a_cluster_rebalances_nothing() {
    let mut w = World::steady();
    w.prior.rebalanced_brokers = None;
    let (_, after, calls) = w.run();
    assert!(calls.is_empty());
    assert_eq!(after.moves, None);
}

#[test]
fn a_rebalance_is_followed_until_cc_completes_it() {
    let running = World::steady()
        .with_op(submitted(Operation::rebalance(), 1))
        .task(TaskStatus::InExecution, true);
    let (builtin, after, calls) = running.run();
    assert!(calls.is_empty());
    assert_eq!(op_of(&after).unwrap().kind, OperationKind::Rebalance);
    // Nothing moves in Kafka while CC computes: the built-in plan's "done" is not CC's.
    assert!(builtin.events.iter().any(|e| e == "rebalance done"));
    assert!(
        !after.events.iter().any(|e| e.contains("done")),
        "{:?}",
        after.events
    );

    let done = World::steady()
        .with_op(submitted(Operation::rebalance(), 1))
        .task(TaskStatus::Completed, false);
    let (_, after, calls) = done.run();
    assert!(calls.is_empty());
    assert_eq!(op_of(&after), None);
    assert!(after.elect_leaders);
    assert!(
        after
            .events
            .iter()
            .any(|e| e.contains("finished the rebalance"))
    );

    let lost = World::steady()
        .with_op(submitted(Operation::add_brokers([3]), 1))
        .task(TaskStatus::Unknown, false);
    let (_, _, calls) = lost.run();
    assert!(matches!(&calls[..], [Call::Submit(op)] if op.kind == OperationKind::AddBroker));
}

#[test]
fn without_kafkas_answer_nothing_starts_and_the_operation_stays() {
    let mut w = World::drain()
        .with_op(submitted(Operation::remove_brokers([3]), 1))
        .task(TaskStatus::Unknown, false);
    w.kafka = None;
    let (_, after, calls) = w.run();
    assert!(calls.is_empty());
    assert_eq!(op_of(&after).unwrap().task_id.as_deref(), Some(TASK));
    assert!(after.retained.contains(&3));
}

#[test]
fn a_refused_removal_asks_cc_for_nothing() {
    let mut w = World::drain();
    w.spec = vec![0];
    let (builtin, after, calls) = w.run();
    assert!(builtin.refused.is_some());
    assert!(calls.is_empty());
    assert_eq!(op_of(&after), None);
}

#[test]
fn submission_errors_wait_or_fail() {
    let (_, mut after, _) = World::drain().run();
    submission_failed(&mut after, "Cruise Control at x is unreachable", true);
    assert_eq!(failure(&after), None);
    assert!(message(&after).contains("unreachable"));
    submission_failed(&mut after, "Broker [3] does not exist", false);
    assert_eq!(failure(&after), Some("Broker [3] does not exist"));
}

/// Whatever CC answers, in any state, a broker holding replicas keeps its Pod, and nothing
/// lost is ever reported done.
#[test]
fn no_answer_from_cc_deletes_a_broker_or_reports_a_lost_task_done() {
    let statuses = [
        Some(TaskStatus::Active),
        Some(TaskStatus::InExecution),
        Some(TaskStatus::Completed),
        Some(TaskStatus::CompletedWithError { message: None }),
        Some(TaskStatus::Unknown),
        None,
    ];
    let availabilities = [
        Availability::Ready,
        Availability::Busy("b".into()),
        Availability::NotReady("n".into()),
    ];
    for status in &statuses {
        for availability in &availabilities {
            for fallback in [CruiseControlFallback::Wait, CruiseControlFallback::BuiltIn] {
                for moving in [false, true] {
                    for attempts in [1, 3] {
                        let mut w = World::drain();
                        if moving {
                            w = w.moving(3, 2);
                        }
                        w = w.with_op(submitted(Operation::remove_brokers([3]), attempts));
                        w.task = Some(match status {
                            Some(s) => Observation::task(s.clone(), false),
                            None => Observation::no_answer("down"),
                        });
                        w.availability = availability.clone();
                        w.cc.fallback = fallback;
                        let (_, after, _) = w.run();
                        assert!(after.retained.contains(&3));
                        assert_eq!(after.leaving.get(&3), Some(&BrokerPhase::Draining));
                        if status == &Some(TaskStatus::Unknown) {
                            assert!(
                                !after.events.iter().any(|e| e.contains("finished")),
                                "{:?}",
                                after.events
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_refused_wider_removal_leaves_the_drain_in_flight_to_cc() {
    // Broker 3 drains with CC; then broker 2 is removed too, which the built-in plan refuses.
    let mut w = World::drain()
        .moving(3, 2)
        .with_op(submitted(Operation::remove_brokers([3]), 1))
        .task(TaskStatus::InExecution, true);
    w.spec = vec![0];
    let (builtin, after, calls) = w.run();
    assert!(builtin.refused.is_some());
    assert!(calls.is_empty());
    assert_eq!(op_of(&after).unwrap().task_id.as_deref(), Some(TASK));
    assert!(
        !after.events.iter().any(|e| e.contains("empty")),
        "{:?}",
        after.events
    );
}
