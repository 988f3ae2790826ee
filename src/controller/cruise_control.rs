//! Cruise Control's side of replica moves: asks CC (at `spec.cruiseControl`'s URL, or the
//! Service Pier runs it behind) whether it can execute and what became of the persisted task,
//! lets [`engine::plan`] decide, and makes the calls it chose (`remove_broker`, `add_broker`,
//! `rebalance`, `stop_proposal_execution`), recording each accepted task in the plan's status
//! before anything else happens.
use std::time::Duration;

use kube::ResourceExt;
use pier_cruise_control::{CruiseControl, ExecutionOptions, Readiness, RetryPolicy};

use crate::api::KafkaCluster;
use crate::reconcile::cruise_control as cc_plan;
use crate::reconcile::engine::{self, Availability, Call, EngineInput};
use crate::reconcile::scaling::{KafkaView, ScalingPlan};

/// Short: CC is asked on every reconcile and must not stall it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Decides which engine moves replicas in this reconcile (rewriting `scaling` accordingly) and
/// makes Cruise Control's calls. Returns one line per failed call.
pub async fn run(
    kc: &KafkaCluster,
    kafka: Option<&KafkaView>,
    scaling: &mut ScalingPlan,
    now_ms: i64,
) -> Vec<String> {
    let spec = &kc.spec.cruise_control;
    let prior = kc.status.clone().unwrap_or_default();
    let spec_nodes = kc.spec.brokers.iter().map(|b| b.id).collect();
    let namespace = kc.namespace().unwrap_or_default();
    let client = match cc_plan::url(kc, spec, &namespace).map(|url| client(kc, &url)) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot build the Cruise Control client");
            return vec![format!("Cruise Control client: {e}")];
        }
    };
    let (availability, task) = match &client {
        None => (Availability::NotReady("disabled".into()), None),
        Some(c) => observe(c, &prior).await,
    };
    let calls = engine::plan(
        &EngineInput {
            spec,
            prior: &prior,
            spec_nodes: &spec_nodes,
            kafka,
            availability,
            task: task.as_ref(),
            policy: RetryPolicy::default(),
            now_ms,
        },
        scaling,
    );
    let Some(client) = client else {
        return Vec::new();
    };
    let mut failures = Vec::new();
    for call in calls {
        match call {
            Call::Stop => match client.stop_proposal_execution().await {
                Ok(()) => tracing::info!("Cruise Control's execution stopped"),
                Err(e) => {
                    tracing::warn!(error = %e, "stopping Cruise Control's execution failed");
                    failures.push(format!("stopping Cruise Control's execution: {e}"));
                }
            },
            Call::Submit(op) => match client.submit(&op).await {
                Ok(submission) => {
                    tracing::info!(
                        kind = ?op.kind,
                        brokers = ?op.brokers,
                        task_id = %submission.task_id,
                        attempt = op.attempts + 1,
                        "Cruise Control accepted the request"
                    );
                    engine::record_submission(scaling, &submission.task_id, now_ms);
                }
                Err(e) => {
                    tracing::warn!(kind = ?op.kind, error = %e, "Cruise Control refused the request");
                    engine::submission_failed(scaling, &e.to_string(), e.is_transient());
                    if e.is_transient() {
                        failures.push(format!("submitting to Cruise Control: {e}"));
                    }
                }
            },
        }
    }
    failures
}

fn client(kc: &KafkaCluster, url: &str) -> Result<CruiseControl, pier_cruise_control::Error> {
    let throttle = u64::try_from(kc.spec.rebalance.throttle_bytes_per_second).ok();
    CruiseControl::builder(url)
        .request_timeout(REQUEST_TIMEOUT)
        .execution_options(ExecutionOptions {
            reason: Some(format!(
                "Pier, KafkaCluster {}/{}",
                kc.namespace().unwrap_or_default(),
                kc.name_any()
            )),
            replication_throttle_bytes_per_second: throttle,
            ..ExecutionOptions::default()
        })
        .build()
}

/// CC's readiness, and its answer about the persisted operation's task when there is one.
async fn observe(
    client: &CruiseControl,
    prior: &crate::api::KafkaClusterStatus,
) -> (Availability, Option<pier_cruise_control::Observation>) {
    let availability = match client.readiness().await {
        Ok(Readiness::Ready) => Availability::Ready,
        Ok(Readiness::Busy { state, task_id }) => Availability::Busy(match task_id {
            Some(id) => format!("executor is {state} for task {id}"),
            None => format!("executor is {state}"),
        }),
        Ok(Readiness::NotReady(why)) => Availability::NotReady(why.to_string()),
        Err(e) => Availability::NotReady(e.to_string()),
    };
    let op = prior
        .replica_moves
        .as_ref()
        .and_then(|m| m.cruise_control.as_ref())
        .filter(|op| op.task_id.is_some());
    let task = match op {
        Some(op) => Some(client.observe(op).await),
        None => None,
    };
    (availability, task)
}
