//! The rolling restart's side of one reconcile: read the cluster's health from Kafka, let
//! `reconcile::roll` decide, and — only after the status carrying the decision is written —
//! delete the one broker Pod it chose, or restore preferred leaders when the roll is done.
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};

use super::events::Reason;
use super::live_config::broker_pod;
use super::{Context, Error, call};
use crate::api::KafkaCluster;
use crate::kafka::{AdminClient, ConfigResource, DescribeConfigsOptions, QuorumInfo};
use crate::reconcile::pods::{pod_state, restart_due, roll_state, roll_status};
use crate::reconcile::roll::{
    Health, NodeState, PartitionHealth, Quorum, RollAction, RollPolicy, Voter, plan_roll,
};
use crate::reconcile::status::KafkaOutcome;
use crate::reconcile::{Desired, names};

/// A failing health gate counts as one failure per this interval (status writes wake the
/// controller at once; without this a paused roll would count in a hot loop).
const FAILURE_INTERVAL_MS: i64 = 10_000;
/// A broker Pod unready for longer than this serves nothing (a readiness probe that fails this
/// long is no flap); one unready for less may be coming back from a restart.
const UNREADY_GRACE_MS: i64 = 30_000;
use super::quorum::QUORUM_FETCH_TIMEOUT_MS;

/// What the roll does once its state is written.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Nothing,
    Restart {
        id: i32,
        gated: bool,
        reason: String,
    },
    /// The last restarted broker is back: restore preferred leaders.
    Finished,
}

/// Decides the roll's next step and records the state to persist in `outcome`. `held`: voters
/// that must leave the KRaft quorum before they restart without the controller role.
#[allow(clippy::too_many_arguments)]
pub async fn plan(
    kc: &KafkaCluster,
    ctx: &Context,
    admin: &AdminClient,
    pods: &[Pod],
    desired: &Desired,
    quorum: Option<Result<QuorumInfo, crate::kafka::KafkaError>>,
    held: &std::collections::BTreeSet<i32>,
    outcome: &mut KafkaOutcome,
) -> Step {
    let now = now_ms();
    let mut nodes: Vec<NodeState> = desired
        .brokers
        .iter()
        .map(|b| {
            let running = broker_pod(kc, pods, b.id);
            let planned = desired
                .pods
                .iter()
                .find(|p| p.name_any() == names::broker_pod(kc, b.id));
            NodeState {
                id: b.id,
                broker: b.is_broker(),
                controller: b.is_controller(),
                // While brokers wait for their external address there is no plan to roll to.
                restart_due: if desired.waiting_for_address {
                    None
                } else {
                    restart_due(planned, running)
                },
                pod: pod_state(running, now),
            }
        })
        .collect();
    // A restart that removes volumes waits until they are empty: a partition may have been
    // created in one since the plan dropped it.
    for n in nodes.iter_mut().filter(|n| n.restart_due.is_some()) {
        let name = names::broker_pod(kc, n.id);
        let planned = desired.pods.iter().find(|p| p.name_any() == name);
        let dropped = super::volumes::dropped_dirs(broker_pod(kc, pods, n.id), planned);
        if let Some(why) = super::volumes::still_holding(admin, n.id, &dropped).await {
            tracing::info!(broker = n.id, %why, "restart waits for its removed volumes to empty");
            n.restart_due = None;
        }
    }
    for n in nodes
        .iter_mut()
        .filter(|n| n.restart_due.is_some() && held.contains(&n.id))
    {
        tracing::info!(
            broker = n.id,
            "restart waits until the node has left the KRaft voters"
        );
        n.restart_due = None;
    }
    outcome.restart_due = nodes
        .iter()
        .filter(|n| n.restart_due.is_some())
        .map(|n| n.id)
        .collect();
    let prior_status = kc
        .status
        .as_ref()
        .and_then(|s| s.rolling_upgrade.clone())
        .unwrap_or_default();
    let prior = roll_state(&prior_status);
    let (mut blocked, mut paused) = (None, None);
    let step = if outcome.restart_due.is_empty() && prior.restarting.is_none() {
        outcome.roll = None;
        Step::Nothing
    } else if outcome.replicas_moving && prior.restarting.is_none() {
        // Moving partitions are under-replicated by design: the health gate would count
        // failures for the whole move. The roll starts once the moves are done.
        outcome.rolling = true;
        let why = "waiting for the replica moves to finish".to_string();
        outcome.roll = Some(roll_status(&prior, Some(why)));
        Step::Nothing
    } else {
        outcome.rolling = true;
        let health = match quorum {
            None => Err("no broker is reachable".to_string()),
            Some(Err(e)) => Err(e.to_string()),
            Some(Ok(q)) => read_health(admin, q).await.map_err(|e| e.to_string()),
        }
        .map(|mut h| {
            h.firing_alerts = crate::reconcile::alerts::roll_blocking(kc);
            h
        });
        if let Err(e) = &health {
            tracing::warn!(error = %e, "cannot read cluster health");
        }
        let policy = RollPolicy {
            failure_threshold: u32::try_from(kc.spec.rolling_upgrade.failure_threshold)
                .unwrap_or(1)
                .max(1),
            ready_timeout_ms: i64::from(kc.spec.rolling_upgrade.broker_ready_timeout_seconds)
                * 1000,
            failure_interval_ms: FAILURE_INTERVAL_MS,
            unready_grace_ms: UNREADY_GRACE_MS,
        };
        let plan = plan_roll(&nodes, health.as_ref().ok(), &prior, policy, now);
        tracing::debug!(action = ?plan.action, state = ?plan.state, "roll planned");
        let with_cause = |why: &str| match &health {
            Err(e) => format!("{why} ({e})"),
            Ok(_) => why.to_string(),
        };
        match plan.action {
            RollAction::Idle => {
                outcome.roll = None;
                outcome.rolling = false;
                Step::Nothing
            }
            RollAction::Finished => {
                outcome.roll = None;
                outcome.rolling = false;
                Step::Finished
            }
            RollAction::Wait { why, .. } => {
                if prior_status.message.as_deref() != Some(why.as_str()) {
                    tracing::info!(%why, "rolling restart waits");
                }
                outcome.roll = Some(roll_status(&plan.state, Some(why)));
                Step::Nothing
            }
            RollAction::Blocked { why } => {
                let why = with_cause(&why);
                tracing::info!(%why, failures = plan.state.failures, "rolling restart blocked");
                blocked = Some(why.clone());
                outcome.roll = Some(roll_status(&plan.state, Some(why)));
                Step::Nothing
            }
            RollAction::Paused { why } => {
                let why = with_cause(&why);
                tracing::warn!(%why, failures = plan.state.failures, "rolling restart paused");
                paused = Some(why.clone());
                outcome.paused = Some(why.clone());
                outcome.roll = Some(roll_status(&plan.state, Some(why)));
                Step::Nothing
            }
            RollAction::Restart { id, gated, reason } => {
                let message = format!("restarting broker {id}: {reason}");
                outcome.roll = Some(roll_status(&plan.state, Some(message)));
                Step::Restart { id, gated, reason }
            }
        }
    };
    ctx.events
        .problem(ctx, kc, Reason::RollBlocked, blocked.as_deref())
        .await;
    ctx.events
        .problem(ctx, kc, Reason::RollPaused, paused.as_deref())
        .await;
    step
}

/// Takes the step. Called only after the status that records it was written.
pub async fn act(
    kc: &KafkaCluster,
    ctx: &Context,
    admin: &AdminClient,
    step: Step,
) -> Result<(), Error> {
    match step {
        Step::Nothing => {}
        Step::Finished => {
            // Leaders moved away during the roll; put them back now (instead of waiting
            // for auto.leader.rebalance's next check).
            if let Err(e) = admin.elect_preferred_leaders().await {
                tracing::warn!(error = %e, "preferred leader election failed");
            }
            ctx.events
                .did(
                    ctx,
                    kc,
                    Reason::RollFinished,
                    "every broker runs its current configuration; preferred leaders restored",
                )
                .await;
        }
        Step::Restart { id, gated, reason } => {
            let name = names::broker_pod(kc, id);
            let api: Api<Pod> =
                Api::namespaced(ctx.client.clone(), &kc.namespace().unwrap_or_default());
            match call(
                format!("deleting Pod {name} for its restart"),
                api.delete(&name, &DeleteParams::default()),
            )
            .await
            {
                Ok(_) => {}
                Err(Error::Kube {
                    source: kube::Error::Api(e),
                    ..
                }) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
            ctx.wrote();
            ctx.broker_restarts.inc();
            tracing::info!(broker = id, gated, %reason, "rolling restart");
            let note = format!("restarting broker {id}: {reason}");
            ctx.events.did(ctx, kc, Reason::RollingRestart, &note).await;
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

/// Reads partitions, min ISR, quorum and registered brokers from Kafka.
async fn read_health(
    admin: &AdminClient,
    quorum: QuorumInfo,
) -> Result<Health, crate::kafka::KafkaError> {
    let md = admin.metadata(None).await?;
    let defaults = admin
        .describe_configs(&ConfigResource::BrokerDefault)
        .await?;
    let default_min_isr = defaults
        .iter()
        .find(|e| e.name == "min.insync.replicas")
        .and_then(|e| e.value.as_deref()?.parse::<usize>().ok())
        .unwrap_or(1);
    let mut partitions = Vec::new();
    // One small call per topic (only the key needed); a batched DescribeConfigs would be
    // cheaper for clusters with thousands of topics.
    let only_min_isr = DescribeConfigsOptions::keys(&["min.insync.replicas"]);
    for t in &md.topics {
        let min_isr = admin
            .describe_configs_with(&ConfigResource::Topic(t.name.clone()), &only_min_isr)
            .await?
            .into_iter()
            .find(|e| e.name == "min.insync.replicas")
            .and_then(|e| e.value?.parse::<usize>().ok())
            .unwrap_or(default_min_isr);
        for p in &t.partitions {
            partitions.push(PartitionHealth {
                topic: t.name.clone(),
                partition: p.index,
                leader: p.leader,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                min_isr,
            });
        }
    }
    let cluster = admin.describe_cluster().await?;
    Ok(Health {
        partitions,
        quorum: Some(Quorum {
            leader: quorum.leader_id,
            voters: quorum
                .voters
                .iter()
                .map(|v| Voter {
                    id: v.replica_id,
                    last_caught_up_ms: v.last_caught_up_timestamp,
                })
                .collect(),
            fetch_timeout_ms: QUORUM_FETCH_TIMEOUT_MS,
        }),
        active_brokers: cluster
            .brokers
            .iter()
            .filter(|b| !b.fenced)
            .map(|b| b.id)
            .collect(),
        // Set by `plan` from the alerts the webhook recorded in status.
        firing_alerts: 0,
    })
}
