//! Cruise Control's JSON replies, read into Pier's types: `state` (monitor and executor),
//! `user_tasks`, the summary of a proposal, the error body. Fields CC leaves out in some states
//! are optional; a wrong shape is a [`Error::MalformedReply`], never a panic.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, NotReady};

/// Parses a reply body, naming the endpoint in the error.
pub(crate) fn parse<T: DeserializeOwned>(endpoint: &'static str, body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::MalformedReply {
        endpoint,
        detail: format!("{e} (body starts {:?})", excerpt(body, 120)),
    })
}

/// The start of a body as text, for messages.
pub(crate) fn excerpt(body: &[u8], max_chars: usize) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(max_chars)
        .collect()
}

/// CC's error body: `{version, errorMessage, stackTrace}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(rename = "errorMessage")]
    pub error_message: Option<String>,
    #[serde(rename = "stackTrace", default)]
    pub stack_trace: Option<String>,
}

/// `errorMessage` of a body, if the body is a JSON object that has one.
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.error_message)
}

/// The innermost `Caused by:` of an error body's `stackTrace`: the root cause, which CC's
/// `errorMessage` sometimes wraps beyond recognition.
pub(crate) fn stack_trace_cause(body: &[u8]) -> Option<String> {
    let trace = serde_json::from_slice::<ErrorBody>(body)
        .ok()?
        .stack_trace?;
    trace
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Caused by: "))
        .next_back()
        .map(str::to_string)
}

// === state ===

/// `GET state?substates=executor,monitor,analyzer`: what Pier needs to know before executing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CruiseControlState {
    #[serde(rename = "MonitorState")]
    pub monitor: MonitorState,
    #[serde(rename = "ExecutorState")]
    pub executor: ExecutorState,
    #[serde(rename = "AnalyzerState", default)]
    analyzer: Option<AnalyzerState>,
}

/// CC's load monitor (`MonitorState`). CC leaves the counts out while `NOT_STARTED`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MonitorState {
    /// `RUNNING`, `SAMPLING`, `PAUSED`, `NOT_STARTED`, `LOADING`, `BOOTSTRAPPING`, `TRAINING`.
    pub state: String,
    /// Metric windows CC holds (all of them; CC's stricter "valid" count is not in the reply).
    #[serde(default)]
    pub num_monitored_windows: Option<u32>,
    #[serde(default)]
    pub monitoring_coverage_pct: Option<f64>,
    #[serde(default)]
    pub num_valid_partitions: Option<i64>,
    #[serde(default)]
    pub num_total_partitions: Option<i64>,
    #[serde(default)]
    pub error: Option<String>,
}

/// CC's executor (`ExecutorState`); data amounts are in MB.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutorState {
    /// `NO_TASK_IN_PROGRESS`, `GENERATING_PROPOSALS_FOR_EXECUTION`, `STARTING_EXECUTION`,
    /// `INTER_BROKER_REPLICA_MOVEMENT_TASK_IN_PROGRESS`, ..., `STOPPING_EXECUTION`.
    pub state: String,
    /// The user task the executor works for; CC sends `""` for none.
    #[serde(default)]
    pub triggered_user_task_id: Option<String>,
    #[serde(default)]
    pub num_total_partition_movements: Option<i64>,
    #[serde(default)]
    pub num_finished_partition_movements: Option<i64>,
    #[serde(default)]
    pub num_in_progress_partition_movements: Option<i64>,
    #[serde(default)]
    pub num_pending_partition_movements: Option<i64>,
    #[serde(default)]
    pub finished_data_movement: Option<i64>,
    #[serde(default)]
    pub total_data_to_move: Option<i64>,
    #[serde(default)]
    pub recently_removed_brokers: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnalyzerState {
    #[serde(default)]
    is_proposal_ready: Option<bool>,
}

const EXECUTOR_IDLE: &str = "NO_TASK_IN_PROGRESS";
/// Load monitor states in which CC computes proposals. `PAUSED` is included: CC pauses sampling
/// itself around executions, and the windows it holds stay usable.
const MONITOR_USABLE: &[&str] = &["RUNNING", "SAMPLING", "PAUSED"];

/// Whether CC can start an execution now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// The executor is busy (`state`), for `task_id` when a user task started it.
    Busy {
        state: String,
        task_id: Option<String>,
    },
    NotReady(NotReady),
}

impl ExecutorState {
    /// Whether an execution (or the proposal computation for one) is in progress.
    pub fn execution_in_progress(&self) -> bool {
        self.state != EXECUTOR_IDLE
    }

    /// The user task the executor works for, if any.
    pub fn task_id(&self) -> Option<&str> {
        self.triggered_user_task_id
            .as_deref()
            .filter(|id| !id.is_empty())
    }

    /// Whether the executor is busy with this user task.
    pub fn is_executing(&self, task_id: &str) -> bool {
        self.execution_in_progress() && self.task_id() == Some(task_id)
    }
}

impl CruiseControlState {
    /// CC's analyzer has a cached proposal for the default goals.
    pub fn proposal_ready(&self) -> Option<bool> {
        self.analyzer.as_ref().and_then(|a| a.is_proposal_ready)
    }

    /// Whether CC can execute now: the executor idle, the load monitor usable with at least
    /// `min_windows` windows. CC may still answer `NotEnoughValidWindows` (it counts only
    /// windows with enough valid partitions, which `state` does not show).
    pub fn readiness(&self, min_windows: u32) -> Readiness {
        if self.executor.execution_in_progress() {
            return Readiness::Busy {
                state: self.executor.state.clone(),
                task_id: self.executor.task_id().map(str::to_string),
            };
        }
        if !MONITOR_USABLE.contains(&self.monitor.state.as_str()) {
            return Readiness::NotReady(NotReady::MonitorNotRunning {
                state: self.monitor.state.clone(),
            });
        }
        let monitored = self.monitor.num_monitored_windows.unwrap_or(0);
        if monitored < min_windows {
            return Readiness::NotReady(NotReady::TooFewWindows {
                monitored,
                required: min_windows,
            });
        }
        Readiness::Ready
    }
}

// === user_tasks ===

/// A user task as CC reports it in `user_tasks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskStatus {
    /// Accepted; CC is computing the proposal.
    Active,
    /// CC's executor is moving replicas or leaders for it.
    InExecution,
    /// Finished. Right after the proposal, CC can show this before `InExecution`; see
    /// [`crate::Observation`].
    Completed,
    /// Finished with an error: CC's message when it gave one.
    CompletedWithError { message: Option<String> },
    /// CC does not list the task: it restarted (tasks live in memory only) or the task expired.
    Unknown,
}

#[derive(Debug, Deserialize)]
pub(crate) struct UserTasksReply {
    #[serde(rename = "userTasks")]
    pub user_tasks: Vec<UserTaskEntry>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct UserTaskEntry {
    #[serde(rename = "UserTaskId")]
    pub id: String,
    #[serde(rename = "Status")]
    pub status: String,
    /// With `fetch_completed_task=true`: the task's final reply, itself JSON inside a string.
    #[serde(rename = "originalResponse", default)]
    pub original_response: Option<serde_json::Value>,
}

/// The status of `task_id` in a `user_tasks` reply; an unlisted task is `Unknown`. The message
/// of `CompletedWithError` is filled in separately.
pub(crate) fn task_status(
    endpoint: &'static str,
    reply: &UserTasksReply,
    task_id: &str,
) -> Result<TaskStatus, Error> {
    let Some(entry) = reply
        .user_tasks
        .iter()
        .find(|t| t.id.eq_ignore_ascii_case(task_id))
    else {
        return Ok(TaskStatus::Unknown);
    };
    match entry.status.as_str() {
        "Active" => Ok(TaskStatus::Active),
        "InExecution" => Ok(TaskStatus::InExecution),
        "Completed" => Ok(TaskStatus::Completed),
        "CompletedWithError" => Ok(TaskStatus::CompletedWithError { message: None }),
        other => Err(Error::MalformedReply {
            endpoint,
            detail: format!("task {task_id} has unknown status {other:?}"),
        }),
    }
}

/// What a finished task's `originalResponse` says went wrong: its `errorMessage` when it is a
/// JSON error body, else its text.
pub(crate) fn original_error(entry: &UserTaskEntry) -> Option<String> {
    let text = match entry.original_response.as_ref()? {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => return None,
        other => other.to_string(),
    };
    error_message(text.as_bytes())
        .or_else(|| Some(excerpt(text.as_bytes(), 500)).filter(|t| !t.trim().is_empty()))
}

/// Whether a task id has the shape of CC's ids (a UUID). CC answers a malformed id in
/// `user_task_ids` with an error, which would hide that the task is simply gone.
pub(crate) fn looks_like_uuid(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

// === executing POSTs ===

/// What CC said to an executing POST.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// CC's `User-Task-ID`: persist it before anything else.
    pub task_id: String,
    pub phase: SubmissionPhase,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SubmissionPhase {
    /// `202`: CC is still computing the proposal.
    Computing,
    /// `200`: the proposal is computed and went to CC's executor (nothing to move is possible).
    /// The moves are not done; the task's status says when they are.
    ProposalReady { summary: Option<ProposalSummary> },
}

/// The `summary` of CC's optimization result; data amounts in MB.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProposalSummary {
    #[serde(default)]
    pub num_replica_movements: Option<i64>,
    #[serde(default)]
    pub num_intra_broker_replica_movements: Option<i64>,
    #[serde(default)]
    pub num_leader_movements: Option<i64>,
    #[serde(default, rename = "dataToMoveMB")]
    pub data_to_move_mb: Option<f64>,
    #[serde(default, rename = "intraBrokerDataToMoveMB")]
    pub intra_broker_data_to_move_mb: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct OptimizationReply {
    #[serde(default)]
    summary: Option<ProposalSummary>,
}

/// The summary of a `200` to an executing POST. The body only informs: CC has accepted the work
/// by then, so an unreadable body must not lose the task id.
pub(crate) fn proposal_summary(body: &[u8]) -> Option<ProposalSummary> {
    serde_json::from_slice::<OptimizationReply>(body)
        .ok()
        .and_then(|r| r.summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strimzi's recorded `state` reply (`CC-State.json`), trimmed.
    const STATE_IDLE: &str = r#"{"AnalyzerState":{"isProposalReady":true,"readyGoals":["RackAwareGoal"]},
        "MonitorState":{"trainingPct":3.6,"trained":false,"numFlawedPartitions":0,"state":"RUNNING",
        "numTotalPartitions":65,"numMonitoredWindows":1,"monitoringCoveragePct":100.0,
        "reasonOfLatestPauseOrResume":"N/A","numValidPartitions":65},
        "ExecutorState":{"state":"NO_TASK_IN_PROGRESS"},"version":1}"#;

    /// Strimzi's `CC-State-inExecution.json`, trimmed.
    const STATE_EXECUTING: &str = r#"{"MonitorState":{"state":"SAMPLING","numMonitoredWindows":3},
        "ExecutorState":{"abortingPartitions":0,"finishedDataMovement":20,"numFinishedPartitionMovements":5,
        "numInProgressPartitionMovements":5,"numPendingPartitionMovements":15,"numTotalPartitionMovements":20,
        "state":"INTER_BROKER_REPLICA_MOVEMENT_TASK_IN_PROGRESS","totalDataToMove":100,
        "triggeredSelfHealingTaskId":"","triggeredUserTaskId":"0230d401-6a36-430e-9858-fac8f2edde93"},
        "version":1}"#;

    fn state(json: &str) -> CruiseControlState {
        parse("state", json.as_bytes()).unwrap()
    }

    #[test]
    fn idle_trained_state_is_ready() {
        let s = state(STATE_IDLE);
        assert_eq!(s.monitor.num_monitored_windows, Some(1));
        assert_eq!(s.proposal_ready(), Some(true));
        assert!(!s.executor.execution_in_progress());
        assert_eq!(s.readiness(1), Readiness::Ready);
        assert_eq!(
            s.readiness(2),
            Readiness::NotReady(NotReady::TooFewWindows {
                monitored: 1,
                required: 2
            })
        );
    }

    #[test]
    fn executing_state_is_busy_with_its_task() {
        let s = state(STATE_EXECUTING);
        let id = "0230d401-6a36-430e-9858-fac8f2edde93";
        assert!(s.executor.is_executing(id));
        assert!(
            !s.executor
                .is_executing("00000000-0000-0000-0000-000000000000")
        );
        assert_eq!(s.executor.total_data_to_move, Some(100));
        assert_eq!(
            s.readiness(1),
            Readiness::Busy {
                state: "INTER_BROKER_REPLICA_MOVEMENT_TASK_IN_PROGRESS".into(),
                task_id: Some(id.into())
            }
        );
    }

    #[test]
    fn not_started_monitor_without_counts_is_not_ready() {
        let s = state(
            r#"{"MonitorState":{"state":"NOT_STARTED","error":"ILLEGAL_STATE_EXCEPTION"},
               "ExecutorState":{"state":"NO_TASK_IN_PROGRESS","triggeredUserTaskId":""},"version":1}"#,
        );
        assert_eq!(s.executor.task_id(), None);
        assert_eq!(
            s.readiness(1),
            Readiness::NotReady(NotReady::MonitorNotRunning {
                state: "NOT_STARTED".into()
            })
        );
        let loading = state(
            r#"{"MonitorState":{"state":"LOADING","numMonitoredWindows":4},
               "ExecutorState":{"state":"NO_TASK_IN_PROGRESS"}}"#,
        );
        assert!(matches!(
            loading.readiness(1),
            Readiness::NotReady(NotReady::MonitorNotRunning { .. })
        ));
        let paused = state(
            r#"{"MonitorState":{"state":"PAUSED","numMonitoredWindows":4},
               "ExecutorState":{"state":"NO_TASK_IN_PROGRESS"}}"#,
        );
        assert_eq!(paused.readiness(1), Readiness::Ready);
    }

    #[test]
    fn generating_proposals_counts_as_busy() {
        let s = state(
            r#"{"MonitorState":{"state":"RUNNING","numMonitoredWindows":5},
               "ExecutorState":{"state":"GENERATING_PROPOSALS_FOR_EXECUTION",
               "triggeredUserTaskId":"0230d401-6a36-430e-9858-fac8f2edde93"}}"#,
        );
        assert!(matches!(s.readiness(1), Readiness::Busy { .. }));
    }

    #[test]
    fn malformed_state_is_an_error_not_a_panic() {
        for body in [
            "",
            "not json",
            "{",
            "[]",
            r#"{"MonitorState":{"state":"RUNNING"}}"#,
            r#"{"MonitorState":{"state":5},"ExecutorState":{"state":"NO_TASK_IN_PROGRESS"}}"#,
            r#"{"MonitorState":{"state":"RUNNING","numMonitoredWindows":-1},"ExecutorState":{"state":"X"}}"#,
        ] {
            let e = parse::<CruiseControlState>("state", body.as_bytes()).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::MalformedReply {
                        endpoint: "state",
                        ..
                    }
                ),
                "{body}: {e:?}"
            );
        }
    }

    const ID: &str = "5f0ce5a2-3a4b-4c1e-9f57-6c1a8f1b2d3e";

    fn status_of(json: &str) -> Result<TaskStatus, Error> {
        let reply: UserTasksReply = parse("user_tasks", json.as_bytes())?;
        task_status("user_tasks", &reply, ID)
    }

    #[test]
    fn user_task_statuses() {
        let with = |status: &str| {
            format!(
                r#"{{"userTasks":[{{"UserTaskId":"{ID}","RequestURL":"POST /kafkacruisecontrol/remove_broker?brokerid=3",
                "ClientIdentity":"10.0.0.1","StartMs":"1700000000000","Status":"{status}"}}],"version":1}}"#
            )
        };
        assert_eq!(status_of(&with("Active")).unwrap(), TaskStatus::Active);
        assert_eq!(
            status_of(&with("InExecution")).unwrap(),
            TaskStatus::InExecution
        );
        assert_eq!(
            status_of(&with("Completed")).unwrap(),
            TaskStatus::Completed
        );
        assert_eq!(
            status_of(&with("CompletedWithError")).unwrap(),
            TaskStatus::CompletedWithError { message: None }
        );
        assert!(matches!(
            status_of(&with("Paused")),
            Err(Error::MalformedReply { .. })
        ));
    }

    #[test]
    fn unlisted_task_is_unknown() {
        assert_eq!(
            status_of(r#"{"userTasks":[],"version":1}"#).unwrap(),
            TaskStatus::Unknown
        );
        let other = r#"{"userTasks":[{"UserTaskId":"00000000-0000-0000-0000-000000000000","Status":"Active"}]}"#;
        assert_eq!(status_of(other).unwrap(), TaskStatus::Unknown);
    }

    #[test]
    fn malformed_user_tasks_is_an_error() {
        for body in [
            "{",
            r#"{"userTasks":"none"}"#,
            r#"{"userTasks":[{"Status":"Active"}]}"#,
            r#"{"version":1}"#,
        ] {
            assert!(
                matches!(status_of(body), Err(Error::MalformedReply { .. })),
                "{body}"
            );
        }
    }

    #[test]
    fn original_response_error_message_is_read_through_the_string() {
        let entry = |original: serde_json::Value| UserTaskEntry {
            id: ID.into(),
            status: "CompletedWithError".into(),
            original_response: Some(original),
        };
        let inner =
            r#"{"errorMessage":"Broker [7] does not exist.","stackTrace":"...","version":1}"#;
        assert_eq!(
            original_error(&entry(serde_json::Value::String(inner.into()))).as_deref(),
            Some("Broker [7] does not exist.")
        );
        assert_eq!(
            original_error(&entry(serde_json::Value::String(
                "CompletedWithError".into()
            )))
            .as_deref(),
            Some("CompletedWithError")
        );
        assert_eq!(
            original_error(&entry(serde_json::Value::String("  ".into()))),
            None
        );
        assert_eq!(original_error(&entry(serde_json::Value::Null)), None);
    }

    #[test]
    fn uuid_shape() {
        assert!(looks_like_uuid(ID));
        assert!(looks_like_uuid(&ID.to_uppercase()));
        assert!(!looks_like_uuid(""));
        assert!(!looks_like_uuid("5f0ce5a2-3a4b-4c1e-9f57-6c1a8f1b2d3"));
        assert!(!looks_like_uuid("5f0ce5a2x3a4b-4c1e-9f57-6c1a8f1b2d3e"));
        assert!(!looks_like_uuid("zf0ce5a2-3a4b-4c1e-9f57-6c1a8f1b2d3e"));
        assert!(!looks_like_uuid("5f0ce5a2-3a4b-4c1e-9f57-6c1a8f1b2d3é"));
    }

    #[test]
    fn proposal_summary_is_optional() {
        let body =
            br#"{"summary":{"numReplicaMovements":12,"dataToMoveMB":340.5,"numLeaderMovements":3,
            "numIntraBrokerReplicaMovements":0,"recentWindows":5,"provisionStatus":"RIGHT_SIZED"},
            "goalSummary":[],"version":1}"#;
        let s = proposal_summary(body).unwrap();
        assert_eq!(s.num_replica_movements, Some(12));
        assert_eq!(s.data_to_move_mb, Some(340.5));
        assert_eq!(proposal_summary(b"garbage"), None);
        assert_eq!(proposal_summary(br#"{"version":1}"#), None);
    }

    #[test]
    fn stack_trace_cause_is_the_innermost() {
        let body = br#"{"errorMessage":"Error processing GET request '/user_tasks'","version":1,
            "stackTrace":"java.lang.IllegalStateException: Error happened in fetching response\n\tat x\nCaused by: java.util.concurrent.ExecutionException: wrapped\n\tat y\nCaused by: java.lang.IllegalArgumentException: Broker [3] does not exist.\n\t... 9 more\n"}"#;
        assert_eq!(
            stack_trace_cause(body).as_deref(),
            Some("java.lang.IllegalArgumentException: Broker [3] does not exist.")
        );
        assert_eq!(
            stack_trace_cause(br#"{"errorMessage":"x","stackTrace":"no cause"}"#),
            None
        );
        assert_eq!(stack_trace_cause(b"nope"), None);
    }

    #[test]
    fn error_message_only_from_json_objects() {
        assert_eq!(
            error_message(br#"{"errorMessage":"boom","stackTrace":"x","version":1}"#).as_deref(),
            Some("boom")
        );
        assert_eq!(error_message(b"<html>502</html>"), None);
        assert_eq!(error_message(br#"{"version":1}"#), None);
    }
}
