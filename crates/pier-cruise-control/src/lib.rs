//! Pier's client for Cruise Control (CC), the optional engine that drains brokers, fills new
//! ones, rebalances and empties disks. Knows nothing of Kubernetes.
//!
//! - [`CruiseControl`]: the REST client (`/kafkacruisecontrol/...`, always `json=true`, optional
//!   Basic auth and TLS, a request timeout). [`CruiseControl::state`] says whether CC can execute
//!   now; the executing calls (`add_broker`, `remove_broker`, `rebalance`, `remove_disks`) check
//!   that first and never POST into a busy or untrained CC; [`CruiseControl::user_task`] asks
//!   about one task; [`CruiseControl::observe`] turns that into an [`Observation`].
//! - [`Operation`] and [`next_step`]: the persisted request and the pure decision of what to do
//!   next. CC keeps its tasks in memory only, so a task it no longer knows is *lost*: never
//!   reported done, re-submitted a bounded number of times.
//! - [`Error`]: what went wrong, typed: unreachable, not ready, another execution running,
//!   unknown brokers, CC's own error message, a malformed reply.
//!
//! What CC's replies mean (checked against CC 2.5's sources): a POST that executes answers
//! `202` while CC still computes the proposal and `200` once the proposal went to CC's executor;
//! neither means the moves are done. Both carry a `User-Task-ID`. The task's status in
//! `user_tasks` goes Active → InExecution → Completed / CompletedWithError, and CC's task
//! scanner can show Completed for a moment before InExecution, which is why "done" also needs
//! CC's executor to have let go of the task.
#![forbid(unsafe_code)]

mod client;
mod error;
mod reply;
mod tls;
mod tracker;

pub use client::{BasicAuth, CruiseControl, CruiseControlBuilder, ExecutionOptions};
pub use error::{Error, NotReady};
pub use reply::{
    CruiseControlState, ExecutorState, MonitorState, ProposalSummary, Readiness, Submission,
    SubmissionPhase, TaskStatus,
};
pub use tracker::{
    BrokerDisk, Observation, Operation, OperationKind, RetryPolicy, Step, TaskAnswer, Waiting,
    next_step,
};
