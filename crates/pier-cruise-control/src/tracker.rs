//! The persisted Cruise Control operation and the pure decision of its next step.
//!
//! Cruise Control keeps user tasks in memory only. The operator therefore persists the request
//! and CC's `User-Task-ID` ([`Operation`], kept in the cluster's status) and, on every poll,
//! decides from what CC says about that task ([`Observation`]) with [`next_step`]:
//!
//! - no task yet → submit;
//! - Active / InExecution → wait;
//! - Completed → done, unless CC's executor still works for the task (CC's task scanner can
//!   mark a task Completed just before its execution begins);
//! - CompletedWithError → failed, with CC's message;
//! - unknown to CC (it restarted, or the task expired) → the task is lost: never done. While
//!   Kafka still shows reassignments (the lost execution's moves), wait; then re-submit, at most
//!   [`RetryPolicy::max_attempts`] submissions in all;
//! - no answer from CC → wait: CC may well be executing.
//!
//! A timeout never turns into "done" (banzaicloud/koperator#272 deleted a broker whose drain had
//! been given up on). Whether a broker may be deleted stays Kafka's to say.

use serde::{Deserialize, Serialize};

use crate::reply::TaskStatus;

/// What a Cruise Control operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum OperationKind {
    /// Move replicas onto new brokers (`add_broker`).
    AddBroker,
    /// Move every replica off brokers before they go (`remove_broker`).
    RemoveBroker,
    /// Balance the cluster (`rebalance`), or the disks within each broker (`rebalance_disk`).
    Rebalance,
    /// Move every replica off some log dirs onto the broker's other disks (`remove_disks`).
    RemoveDisks,
}

/// One log dir of one broker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct BrokerDisk {
    pub broker_id: i32,
    pub log_dir: String,
}

impl BrokerDisk {
    pub fn new(broker_id: i32, log_dir: impl Into<String>) -> Self {
        BrokerDisk {
            broker_id,
            log_dir: log_dir.into(),
        }
    }
}

/// A Cruise Control operation as the operator persists it: the request, CC's task id, when it
/// was submitted and how many times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub kind: OperationKind,
    /// The brokers added or removed (sorted, no duplicates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<i32>,
    /// The log dirs emptied (sorted, no duplicates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<BrokerDisk>,
    /// For `Rebalance`: balance the disks within each broker instead of the brokers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rebalance_disk: bool,
    /// CC's `User-Task-ID` of the latest submission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// When the latest submission was accepted (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at_ms: Option<i64>,
    /// Submissions CC accepted so far.
    #[serde(default)]
    pub attempts: u32,
}

impl Operation {
    fn new(kind: OperationKind) -> Self {
        Operation {
            kind,
            brokers: Vec::new(),
            disks: Vec::new(),
            rebalance_disk: false,
            task_id: None,
            submitted_at_ms: None,
            attempts: 0,
        }
    }

    fn with_brokers(kind: OperationKind, brokers: impl IntoIterator<Item = i32>) -> Self {
        let mut brokers: Vec<i32> = brokers.into_iter().collect();
        brokers.sort_unstable();
        brokers.dedup();
        Operation {
            brokers,
            ..Operation::new(kind)
        }
    }

    pub fn add_brokers(brokers: impl IntoIterator<Item = i32>) -> Self {
        Operation::with_brokers(OperationKind::AddBroker, brokers)
    }

    pub fn remove_brokers(brokers: impl IntoIterator<Item = i32>) -> Self {
        Operation::with_brokers(OperationKind::RemoveBroker, brokers)
    }

    pub fn rebalance() -> Self {
        Operation::new(OperationKind::Rebalance)
    }

    /// Balance the disks within each broker (after a disk was added).
    pub fn rebalance_disks() -> Self {
        Operation {
            rebalance_disk: true,
            ..Operation::new(OperationKind::Rebalance)
        }
    }

    pub fn remove_disks(disks: impl IntoIterator<Item = BrokerDisk>) -> Self {
        let mut disks: Vec<BrokerDisk> = disks.into_iter().collect();
        disks.sort();
        disks.dedup();
        Operation {
            disks,
            ..Operation::new(OperationKind::RemoveDisks)
        }
    }

    /// Records a submission CC accepted: its task id replaces any earlier (lost) one.
    pub fn record_submission(&mut self, task_id: impl Into<String>, now_ms: i64) {
        self.task_id = Some(task_id.into());
        self.submitted_at_ms = Some(now_ms);
        self.attempts = self.attempts.saturating_add(1);
    }

    /// Whether `other` asks CC for the same thing (ignoring task, time and attempts): a changed
    /// request is a new operation.
    pub fn same_request(&self, other: &Operation) -> bool {
        self.kind == other.kind
            && self.brokers == other.brokers
            && self.disks == other.disks
            && self.rebalance_disk == other.rebalance_disk
    }

    /// Why CC could not be asked for this operation as it stands, if so. A persisted operation
    /// comes back from a status anyone can edit.
    pub fn invalid_reason(&self) -> Option<String> {
        match self.kind {
            OperationKind::AddBroker | OperationKind::RemoveBroker => {
                if self.brokers.is_empty() {
                    return Some(format!("{:?} names no broker", self.kind));
                }
                if let Some(id) = self.brokers.iter().find(|id| **id < 0) {
                    return Some(format!("broker id {id} is negative"));
                }
            }
            OperationKind::RemoveDisks => {
                if self.disks.is_empty() {
                    return Some("RemoveDisks names no disk".to_string());
                }
                for disk in &self.disks {
                    if disk.broker_id < 0 {
                        return Some(format!("broker id {} is negative", disk.broker_id));
                    }
                    // CC splits the list on commas.
                    if disk.log_dir.is_empty() || disk.log_dir.contains(',') {
                        return Some(format!(
                            "log dir {:?} of broker {} is empty or has a comma",
                            disk.log_dir, disk.broker_id
                        ));
                    }
                }
            }
            OperationKind::Rebalance => {}
        }
        None
    }
}

/// How often a lost task is re-submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Submissions in all, the first included.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 5 }
    }
}

/// What CC said about an operation's task in one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskAnswer {
    /// CC could not be asked or its answer was unusable: nothing is known.
    NoAnswer { reason: String },
    Status {
        status: TaskStatus,
        /// CC's executor works for this task (`ExecutorState.triggeredUserTaskId`, not idle).
        /// Read only with `Completed`, so [`crate::CruiseControl::observe`] asks only then.
        executor_on_task: bool,
    },
}

/// What Pier knows about an operation at one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub answer: TaskAnswer,
    /// Whether Kafka itself lists partition reassignments in progress; `None` when not looked
    /// at. Only read for a lost task.
    pub kafka_reassigning: Option<bool>,
}

impl Observation {
    pub fn no_answer(reason: impl Into<String>) -> Self {
        Observation {
            answer: TaskAnswer::NoAnswer {
                reason: reason.into(),
            },
            kafka_reassigning: None,
        }
    }

    pub fn task(status: TaskStatus, executor_on_task: bool) -> Self {
        Observation {
            answer: TaskAnswer::Status {
                status,
                executor_on_task,
            },
            kafka_reassigning: None,
        }
    }

    pub fn with_kafka_reassigning(mut self, reassigning: bool) -> Self {
        self.kafka_reassigning = Some(reassigning);
        self
    }
}

/// Why an operation waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// CC computes the proposal (Active).
    Computing,
    /// CC's executor moves replicas (InExecution).
    Executing,
    /// CC shows Completed while its executor still starts the task's execution.
    ExecutionStarting,
    /// CC lost the task while Kafka still moves replicas; re-submitting now would have CC stop
    /// or refuse those moves.
    LostWhileKafkaReassigning,
    /// CC gave no usable answer.
    NoAnswer(String),
}

/// What to do next with an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing was submitted yet: submit, then [`Operation::record_submission`].
    Submit,
    /// Poll again later.
    Wait(Waiting),
    /// CC completed the task and its executor is done with it.
    Done,
    /// The operation failed; a new one is a new decision.
    Failed(String),
    /// CC lost the task: submit the same request again, then record it.
    Resubmit { lost_task_id: String },
}

/// The next step for `op` given what was observed. Pure; see the module documentation.
pub fn next_step(op: &Operation, seen: &Observation, policy: &RetryPolicy) -> Step {
    if let Some(reason) = op.invalid_reason() {
        return Step::Failed(format!("invalid operation: {reason}"));
    }
    let Some(task_id) = op.task_id.as_deref() else {
        return Step::Submit;
    };
    let (status, executor_on_task) = match &seen.answer {
        TaskAnswer::NoAnswer { reason } => return Step::Wait(Waiting::NoAnswer(reason.clone())),
        TaskAnswer::Status {
            status,
            executor_on_task,
        } => (status, *executor_on_task),
    };
    match status {
        TaskStatus::Active => Step::Wait(Waiting::Computing),
        TaskStatus::InExecution => Step::Wait(Waiting::Executing),
        TaskStatus::Completed if executor_on_task => Step::Wait(Waiting::ExecutionStarting),
        TaskStatus::Completed => Step::Done,
        TaskStatus::CompletedWithError { message } => Step::Failed(match message {
            Some(message) => format!("Cruise Control task {task_id} failed: {message}"),
            None => format!("Cruise Control task {task_id} completed with an error"),
        }),
        TaskStatus::Unknown if seen.kafka_reassigning == Some(true) => {
            Step::Wait(Waiting::LostWhileKafkaReassigning)
        }
        TaskStatus::Unknown if op.attempts >= policy.max_attempts => Step::Failed(format!(
            "Cruise Control lost task {task_id}, the last of {} submissions \
             (it restarted or expired the task)",
            op.attempts
        )),
        TaskStatus::Unknown => Step::Resubmit {
            lost_task_id: task_id.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "5f0ce5a2-3a4b-4c1e-9f57-6c1a8f1b2d3e";

    fn submitted(mut op: Operation, attempts: u32) -> Operation {
        for i in 0..attempts {
            op.record_submission(ID, 1_000 + i64::from(i));
        }
        op
    }

    fn drain() -> Operation {
        submitted(Operation::remove_brokers([4, 3]), 1)
    }

    fn step(op: &Operation, seen: Observation) -> Step {
        next_step(op, &seen, &RetryPolicy::default())
    }

    #[test]
    fn unsubmitted_operation_is_submitted() {
        let op = Operation::remove_brokers([3]);
        assert_eq!(step(&op, Observation::no_answer("x")), Step::Submit);
        assert_eq!(
            step(&op, Observation::task(TaskStatus::Completed, false)),
            Step::Submit
        );
    }

    #[test]
    fn active_and_in_execution_wait() {
        assert_eq!(
            step(&drain(), Observation::task(TaskStatus::Active, true)),
            Step::Wait(Waiting::Computing)
        );
        assert_eq!(
            step(&drain(), Observation::task(TaskStatus::InExecution, true)),
            Step::Wait(Waiting::Executing)
        );
        assert_eq!(
            step(&drain(), Observation::task(TaskStatus::InExecution, false)),
            Step::Wait(Waiting::Executing)
        );
    }

    #[test]
    fn completed_is_done_only_once_the_executor_let_go() {
        assert_eq!(
            step(&drain(), Observation::task(TaskStatus::Completed, true)),
            Step::Wait(Waiting::ExecutionStarting)
        );
        assert_eq!(
            step(&drain(), Observation::task(TaskStatus::Completed, false)),
            Step::Done
        );
    }

    #[test]
    fn completed_with_error_fails_with_the_message() {
        let failed = step(
            &drain(),
            Observation::task(
                TaskStatus::CompletedWithError {
                    message: Some("Broker [9] does not exist.".into()),
                },
                false,
            ),
        );
        match failed {
            Step::Failed(m) => {
                assert!(m.contains("Broker [9] does not exist."), "{m}");
                assert!(m.contains(ID), "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            step(
                &drain(),
                Observation::task(TaskStatus::CompletedWithError { message: None }, false)
            ),
            Step::Failed(_)
        ));
    }

    #[test]
    fn no_answer_waits_and_never_resubmits() {
        assert_eq!(
            step(&drain(), Observation::no_answer("connection refused")),
            Step::Wait(Waiting::NoAnswer("connection refused".into()))
        );
        let exhausted = submitted(Operation::remove_brokers([3]), 9);
        assert!(matches!(
            step(&exhausted, Observation::no_answer("timeout")),
            Step::Wait(Waiting::NoAnswer(_))
        ));
    }

    #[test]
    fn lost_task_is_resubmitted_not_done() {
        assert_eq!(
            step(&drain(), Observation::task(TaskStatus::Unknown, false)),
            Step::Resubmit {
                lost_task_id: ID.into()
            }
        );
        assert_eq!(
            step(
                &drain(),
                Observation::task(TaskStatus::Unknown, false).with_kafka_reassigning(false)
            ),
            Step::Resubmit {
                lost_task_id: ID.into()
            }
        );
    }

    #[test]
    fn lost_task_waits_while_kafka_still_moves_replicas() {
        assert_eq!(
            step(
                &drain(),
                Observation::task(TaskStatus::Unknown, false).with_kafka_reassigning(true)
            ),
            Step::Wait(Waiting::LostWhileKafkaReassigning)
        );
        // Even with no attempt left: the moves in flight finish first.
        let exhausted = submitted(Operation::remove_brokers([3]), 5);
        assert_eq!(
            step(
                &exhausted,
                Observation::task(TaskStatus::Unknown, false).with_kafka_reassigning(true)
            ),
            Step::Wait(Waiting::LostWhileKafkaReassigning)
        );
    }

    #[test]
    fn lost_task_fails_after_the_last_attempt() {
        let policy = RetryPolicy { max_attempts: 3 };
        let lost = Observation::task(TaskStatus::Unknown, false);
        let mut op = Operation::remove_brokers([3]);
        for attempt in 1..=3 {
            op.record_submission(format!("00000000-0000-4000-8000-00000000000{attempt}"), 0);
            let s = next_step(&op, &lost, &policy);
            if attempt < 3 {
                assert!(matches!(s, Step::Resubmit { .. }), "{attempt}: {s:?}");
            } else {
                match s {
                    Step::Failed(m) => assert!(m.contains("3 submissions"), "{m}"),
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    #[test]
    fn record_submission_replaces_the_lost_task() {
        let mut op = drain();
        op.record_submission("00000000-0000-4000-8000-000000000002", 5_000);
        assert_eq!(
            op.task_id.as_deref(),
            Some("00000000-0000-4000-8000-000000000002")
        );
        assert_eq!(op.submitted_at_ms, Some(5_000));
        assert_eq!(op.attempts, 2);
        op.attempts = u32::MAX;
        op.record_submission(ID, 0);
        assert_eq!(op.attempts, u32::MAX);
    }

    #[test]
    fn invalid_persisted_operations_fail_instead_of_reaching_cc() {
        let mut no_brokers = drain();
        no_brokers.brokers.clear();
        let mut negative = drain();
        negative.brokers = vec![-1];
        let comma = submitted(Operation::remove_disks([BrokerDisk::new(1, "/a,/b")]), 1);
        let empty_dir = submitted(Operation::remove_disks([BrokerDisk::new(1, "")]), 1);
        let no_disks = submitted(Operation::remove_disks([]), 1);
        let negative_disk = submitted(Operation::remove_disks([BrokerDisk::new(-2, "/d")]), 1);
        for op in [
            no_brokers,
            negative,
            comma,
            empty_dir,
            no_disks,
            negative_disk,
        ] {
            let s = step(&op, Observation::task(TaskStatus::Completed, false));
            assert!(
                matches!(&s, Step::Failed(m) if m.starts_with("invalid operation")),
                "{op:?}: {s:?}"
            );
        }
        assert_eq!(Operation::rebalance().invalid_reason(), None);
        assert_eq!(Operation::add_brokers([0]).invalid_reason(), None);
    }

    #[test]
    fn constructors_normalise_targets() {
        let op = Operation::add_brokers([5, 3, 5, 4]);
        assert_eq!(op.brokers, vec![3, 4, 5]);
        assert_eq!(op.kind, OperationKind::AddBroker);
        let disks = Operation::remove_disks([
            BrokerDisk::new(2, "/var/lib/kafka/data-1"),
            BrokerDisk::new(1, "/var/lib/kafka/data-0"),
            BrokerDisk::new(2, "/var/lib/kafka/data-1"),
        ]);
        assert_eq!(
            disks.disks,
            vec![
                BrokerDisk::new(1, "/var/lib/kafka/data-0"),
                BrokerDisk::new(2, "/var/lib/kafka/data-1")
            ]
        );
        assert!(Operation::rebalance_disks().rebalance_disk);
        assert!(!Operation::rebalance().rebalance_disk);
    }

    #[test]
    fn same_request_ignores_progress() {
        let fresh = Operation::remove_brokers([3, 4]);
        assert!(drain().same_request(&fresh));
        assert!(!drain().same_request(&Operation::remove_brokers([3])));
        assert!(!drain().same_request(&Operation::add_brokers([3, 4])));
        assert!(!Operation::rebalance().same_request(&Operation::rebalance_disks()));
    }

    #[test]
    fn persisted_form_is_compact_and_round_trips() {
        let op = drain();
        let json = serde_json::to_value(&op).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "RemoveBroker",
                "brokers": [3, 4],
                "taskId": ID,
                "submittedAtMs": 1000,
                "attempts": 1
            })
        );
        let back: Operation = serde_json::from_value(json).unwrap();
        assert_eq!(back, op);

        let disks = Operation::remove_disks([BrokerDisk::new(1, "/d1")]);
        let json = serde_json::to_value(&disks).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "RemoveDisks",
                "disks": [{"brokerId": 1, "logDir": "/d1"}],
                "attempts": 0
            })
        );
        let rebalance = serde_json::to_value(Operation::rebalance_disks()).unwrap();
        assert_eq!(
            rebalance,
            serde_json::json!({"kind": "Rebalance", "rebalanceDisk": true, "attempts": 0})
        );
        // Older or hand-written statuses with fields missing still read.
        let minimal: Operation = serde_json::from_str(r#"{"kind":"Rebalance"}"#).unwrap();
        assert_eq!(minimal, Operation::rebalance());
        assert!(serde_json::from_str::<Operation>(r#"{"kind":"Explode"}"#).is_err());
    }

    fn any_status() -> impl Strategy<Value = TaskStatus> {
        prop_oneof![
            Just(TaskStatus::Active),
            Just(TaskStatus::InExecution),
            Just(TaskStatus::Completed),
            proptest::option::of("[a-z ]{0,10}")
                .prop_map(|message| TaskStatus::CompletedWithError { message }),
            Just(TaskStatus::Unknown),
        ]
    }

    fn any_observation() -> impl Strategy<Value = Observation> {
        let answer = prop_oneof![
            "[a-z]{0,8}".prop_map(|reason| TaskAnswer::NoAnswer { reason }),
            (any_status(), any::<bool>()).prop_map(|(status, executor_on_task)| {
                TaskAnswer::Status {
                    status,
                    executor_on_task,
                }
            }),
        ];
        (answer, proptest::option::of(any::<bool>())).prop_map(|(answer, kafka_reassigning)| {
            Observation {
                answer,
                kafka_reassigning,
            }
        })
    }

    proptest! {
        /// Done needs CC to say Completed with its executor free of the task; a lost task is
        /// never done, and re-submissions stay within the policy.
        #[test]
        fn done_and_resubmit_only_when_earned(
            seen in any_observation(),
            attempts in 1u32..8,
            max_attempts in 1u32..8,
        ) {
            let op = submitted(Operation::remove_brokers([1, 2]), attempts);
            let s = next_step(&op, &seen, &RetryPolicy { max_attempts });
            if s == Step::Done {
                prop_assert_eq!(&seen.answer, &TaskAnswer::Status {
                    status: TaskStatus::Completed,
                    executor_on_task: false,
                });
            }
            if let Step::Resubmit { .. } = s {
                let lost = matches!(
                    seen.answer,
                    TaskAnswer::Status { status: TaskStatus::Unknown, .. }
                );
                prop_assert!(lost, "re-submitted a task CC still knows");
                prop_assert!(attempts < max_attempts);
                prop_assert_ne!(seen.kafka_reassigning, Some(true));
            }
            prop_assert_ne!(s, Step::Submit);
        }
    }
}
