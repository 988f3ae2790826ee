//! Kafka-aware operations of one reconcile: live (dynamic) configuration through the Kafka
//! admin protocol, and the rolling restart (one broker Pod deleted at a time, when
//! `reconcile::roll` says so). Kafka is reached at the brokers' Pod IPs on the inter-broker
//! listener, never through advertised names. What happened is returned for the status; the
//! roll's durable state is written to status before a Pod is deleted.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::events::EventType;

use super::status::pod_ready;
use super::{Context, Error};
use crate::api::{KafkaCluster, RollingUpgradeStatus};
use crate::kafka::{
    AdminClient, ConfigOp, ConfigResource, ConfigSource, DescribeConfigsOptions, QuorumInfo,
};
use crate::reconcile::config::{ConfigChange, config_changes};
use crate::reconcile::roll::{
    Health, NodeState, PartitionHealth, PodState, Quorum, RollAction, RollPolicy, RollState, Voter,
    plan_roll,
};
use crate::reconcile::{Desired, EffectiveBroker, names};

/// A failing health gate counts as one failure per this interval (status writes wake the
/// controller at once; without this a paused roll would count in a hot loop).
const FAILURE_INTERVAL_MS: i64 = 10_000;
/// Kafka's default `controller.quorum.fetch.timeout.ms`.
const QUORUM_FETCH_TIMEOUT_MS: i64 = 2_000;

/// Per-broker outcome of the live configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DynamicState {
    /// The live configuration was already as the spec says, or was just changed to it
    /// (validate-only first); the next reconcile describes it again.
    pub in_sync: bool,
    pub error: Option<String>,
}

/// What the Kafka-side operations found and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub dynamic: BTreeMap<i32, DynamicState>,
    /// Brokers whose Pod needs a restart.
    pub restart_due: Vec<i32>,
    pub roll: Option<RollingUpgradeStatus>,
    /// The roll is paused at the failure threshold: the cluster is Degraded.
    pub paused: Option<String>,
    /// A roll is in progress (due, restarting or blocked).
    pub rolling: bool,
    /// The KRaft quorum's voters differ from the spec's controllers.
    pub quorum_notice: Option<String>,
}

/// Runs the live configuration and the roll for one cluster.
pub async fn run(
    kc: &KafkaCluster,
    ctx: &Context,
    pods: &[Pod],
    desired: &Desired,
) -> Result<Outcome, Error> {
    let key = format!("{}/{}", kc.namespace().unwrap_or_default(), kc.name_any());
    let admin = ctx.admin(&key, reachable_nodes(kc, pods, &desired.brokers));
    let mut outcome = Outcome::default();
    if !desired.waiting_for_address {
        outcome.dynamic = apply_dynamic(kc, ctx, &admin, desired).await;
    }
    // Asked once per reconcile: for the voter notice here and for the roll's quorum gate.
    let quorum = if admin.nodes().is_empty() {
        None
    } else {
        Some(admin.describe_quorum().await)
    };
    outcome.quorum_notice = quorum
        .as_ref()
        .and_then(|q| q.as_ref().ok())
        .and_then(|q| quorum_notice(q, &desired.brokers));
    roll(kc, ctx, &admin, pods, desired, quorum, &mut outcome).await?;
    Ok(outcome)
}

/// `host:port` of every broker Pod that is ready, on the inter-broker listener.
fn reachable_nodes(
    kc: &KafkaCluster,
    pods: &[Pod],
    brokers: &[EffectiveBroker],
) -> BTreeMap<i32, String> {
    let Some(port) = kc
        .spec
        .listeners
        .internal
        .iter()
        .find(|l| l.used_for_inter_broker)
        .map(|l| l.port)
    else {
        return BTreeMap::new();
    };
    brokers
        .iter()
        .filter(|b| b.is_broker())
        .filter_map(|b| {
            let pod = broker_pod(kc, pods, b.id)?;
            if pod.metadata.deletion_timestamp.is_some() || !pod_ready(pod) {
                return None;
            }
            let ip = pod.status.as_ref()?.pod_ip.clone()?;
            Some((b.id, format!("{ip}:{port}")))
        })
        .collect()
}

fn broker_pod<'a>(kc: &KafkaCluster, pods: &'a [Pod], id: i32) -> Option<&'a Pod> {
    let name = names::broker_pod(kc, id);
    pods.iter().find(|p| p.name_any() == name)
}

/// Makes the live dynamic configuration what the spec says: the cluster default first, then
/// each reachable broker. Validate-only first; a refused change is an error in that broker's
/// status and an Event, never a crash. Keys only in Events and logs: values may be secrets.
async fn apply_dynamic(
    kc: &KafkaCluster,
    ctx: &Context,
    admin: &AdminClient,
    desired: &Desired,
) -> BTreeMap<i32, DynamicState> {
    let mut states = BTreeMap::new();
    let reachable = admin.nodes();
    if reachable.is_empty() {
        return states;
    }
    let cluster_error = converge_resource(
        kc,
        ctx,
        admin,
        ConfigResource::BrokerDefault,
        &desired.config.cluster_default,
    )
    .await
    .err();
    for (id, config) in &desired.config.brokers {
        if !reachable.contains_key(id) {
            continue;
        }
        let result =
            converge_resource(kc, ctx, admin, ConfigResource::Broker(*id), &config.live).await;
        let error = result.err().or_else(|| cluster_error.clone());
        states.insert(
            *id,
            DynamicState {
                in_sync: error.is_none(),
                error,
            },
        );
    }
    states
}

/// Pier writes a static quorum (`controller.quorum.voters`): adding or removing a controller in
/// the spec does not change the voters of a running cluster (that needs KIP-853's dynamic
/// quorum, not supported yet). Says so when Kafka's voters and the spec's controllers differ.
fn quorum_notice(quorum: &QuorumInfo, brokers: &[EffectiveBroker]) -> Option<String> {
    // Both sorted by id: QuorumInfo's voters are, and so are the effective brokers.
    let voters: Vec<i32> = quorum.voters.iter().map(|v| v.replica_id).collect();
    let controllers: Vec<i32> = brokers
        .iter()
        .filter(|b| b.is_controller())
        .map(|b| b.id)
        .collect();
    (voters != controllers).then(|| {
        format!(
            "the KRaft quorum's voters are {voters:?} but the spec's controllers are {controllers:?}: \
             Pier runs a static quorum and cannot change its membership; nodes restarted later \
             read the spec's list"
        )
    })
}

/// Describe → diff → validate-only → apply, for one config resource (the cluster default or
/// one broker), with an Event naming the keys changed. A failure is returned as the message
/// for status, after a Warning Event (once per message).
async fn converge_resource(
    kc: &KafkaCluster,
    ctx: &Context,
    admin: &AdminClient,
    resource: ConfigResource,
    desired: &BTreeMap<String, String>,
) -> Result<(), String> {
    let (what, source) = match &resource {
        ConfigResource::Broker(id) => (
            format!("broker {id} config"),
            ConfigSource::DynamicBrokerConfig,
        ),
        _ => (
            "cluster-wide config".to_string(),
            ConfigSource::DynamicDefaultBrokerConfig,
        ),
    };
    let result = async {
        let entries = admin.describe_configs(&resource).await?;
        let current: BTreeMap<String, Option<String>> = entries
            .into_iter()
            .filter(|e| e.source == source)
            .map(|e| (e.name, e.value))
            .collect();
        let changes = config_changes(desired, &current);
        if changes.is_empty() {
            return Ok(changes);
        }
        let ops: Vec<ConfigOp> = changes
            .iter()
            .map(|c| match c {
                ConfigChange::Set { key, value } => ConfigOp::set(key, value),
                ConfigChange::Delete { key } => ConfigOp::delete(key),
            })
            .collect();
        admin
            .incremental_alter_configs(&resource, &ops, true)
            .await?;
        admin
            .incremental_alter_configs(&resource, &ops, false)
            .await?;
        Ok::<_, crate::kafka::KafkaError>(changes)
    }
    .await;
    match result {
        Ok(changes) if changes.is_empty() => Ok(()),
        Ok(changes) => {
            ctx.dynamic_config_changes.inc();
            tracing::info!(cluster = %kc.name_any(), resource = ?resource, changes = %describe(&changes), "dynamic config applied");
            let note = format!("{what} changed live: {}", describe(&changes));
            ctx.event(kc, EventType::Normal, "ConfigApplied", note)
                .await;
            Ok(())
        }
        Err(e) => {
            let message = format!("{what}: {e}");
            warn_once(kc, ctx, "ConfigFailed", &message).await;
            Err(message)
        }
    }
}

fn describe(changes: &[ConfigChange]) -> String {
    changes
        .iter()
        .map(|c| match c {
            ConfigChange::Set { key, .. } => format!("set {key}"),
            ConfigChange::Delete { key } => format!("deleted {key}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A Warning Event, unless the same message is already in status (no Event storm).
async fn warn_once(kc: &KafkaCluster, ctx: &Context, reason: &str, message: &str) {
    let known = kc.status.as_ref().is_some_and(|s| {
        s.brokers
            .iter()
            .any(|b| b.configuration_error.as_deref() == Some(message))
            || s.rolling_upgrade
                .as_ref()
                .is_some_and(|r| r.message.as_deref() == Some(message))
    });
    if !known {
        ctx.event(kc, EventType::Warning, reason, message.to_string())
            .await;
    }
}

/// What a broker's Pod is doing, for the roll.
fn pod_state(pod: Option<&Pod>, now_ms: i64) -> PodState {
    let Some(pod) = pod else {
        return PodState::Missing;
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return PodState::Terminating;
    }
    let status = pod.status.clone().unwrap_or_default();
    if status.phase.as_deref() == Some("Failed") {
        return PodState::Broken {
            reason: status
                .message
                .or(status.reason)
                .unwrap_or_else(|| "Pod failed".into()),
        };
    }
    for cs in status.container_statuses.iter().flatten() {
        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.clone().unwrap_or_default();
            if matches!(
                reason.as_str(),
                "CrashLoopBackOff"
                    | "ImagePullBackOff"
                    | "ErrImagePull"
                    | "InvalidImageName"
                    | "CreateContainerConfigError"
                    | "CreateContainerError"
            ) {
                return PodState::Broken { reason };
            }
        }
    }
    if status.conditions.iter().flatten().any(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    }) {
        return PodState::Broken {
            reason: "Unschedulable".into(),
        };
    }
    if pod_ready(pod) {
        return PodState::Ready;
    }
    let since_ms = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .unwrap_or(now_ms);
    PodState::Starting { since_ms }
}

/// Why broker `b` needs a restart, comparing the planned Pod with the running one.
fn restart_due(planned: Option<&Pod>, running: Option<&Pod>) -> Option<String> {
    let running = running?;
    if running.metadata.deletion_timestamp.is_some() {
        return None;
    }
    if let Some(token) = running.annotations().get(names::RESTART_ANNOTATION) {
        return Some(format!("restart requested on its Pod ({token})"));
    }
    let planned = planned?;
    let want = planned.annotations().get(names::RESTART_HASH_ANNOTATION);
    let have = running.annotations().get(names::RESTART_HASH_ANNOTATION);
    (want != have).then(|| "its Pod spec or read-only configuration changed".to_string())
}

fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

fn parse_ms(rfc3339: &str) -> Option<i64> {
    rfc3339
        .parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

fn format_ms(ms: i64) -> Option<String> {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(|t| t.to_string())
}

fn to_state(s: &RollingUpgradeStatus) -> RollState {
    RollState {
        restarting: s.restarting,
        restart_started_ms: s.restart_started_at.as_deref().and_then(parse_ms),
        failures: u32::try_from(s.failures).unwrap_or(0),
        last_failure_ms: s.last_failure_at.as_deref().and_then(parse_ms),
        paused: s.paused,
    }
}

fn from_state(s: &RollState, message: Option<String>) -> RollingUpgradeStatus {
    RollingUpgradeStatus {
        restarting: s.restarting,
        restart_started_at: s.restart_started_ms.and_then(format_ms),
        last_failure_at: s.last_failure_ms.and_then(format_ms),
        failures: i32::try_from(s.failures).unwrap_or(i32::MAX),
        paused: s.paused,
        message,
    }
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
        // Alertmanager's firing alerts join here when the webhook exists.
        firing_alerts: 0,
    })
}

/// Plans and takes the roll's next step.
async fn roll(
    kc: &KafkaCluster,
    ctx: &Context,
    admin: &AdminClient,
    pods: &[Pod],
    desired: &Desired,
    quorum: Option<Result<QuorumInfo, crate::kafka::KafkaError>>,
    outcome: &mut Outcome,
) -> Result<(), Error> {
    let now = now_ms();
    let nodes: Vec<NodeState> = desired
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
    let prior = to_state(&prior_status);
    if outcome.restart_due.is_empty() && prior.restarting.is_none() {
        outcome.roll = None;
        return Ok(());
    }
    outcome.rolling = true;
    let health = match quorum {
        None => Err("no broker is reachable".to_string()),
        Some(Err(e)) => Err(e.to_string()),
        Some(Ok(q)) => read_health(admin, q).await.map_err(|e| e.to_string()),
    };
    if let Err(e) = &health {
        tracing::warn!(cluster = %kc.name_any(), error = %e, "cannot read cluster health");
    }
    let policy = RollPolicy {
        failure_threshold: u32::try_from(kc.spec.rolling_upgrade.failure_threshold)
            .unwrap_or(1)
            .max(1),
        ready_timeout_ms: i64::from(kc.spec.rolling_upgrade.broker_ready_timeout_seconds) * 1000,
        failure_interval_ms: FAILURE_INTERVAL_MS,
    };
    let plan = plan_roll(&nodes, health.as_ref().ok(), &prior, policy, now);
    tracing::debug!(cluster = %kc.name_any(), action = ?plan.action, state = ?plan.state, "roll planned");
    let with_cause = |why: &str| match &health {
        Err(e) => format!("{why} ({e})"),
        Ok(_) => why.to_string(),
    };
    match &plan.action {
        RollAction::Idle => {
            outcome.roll = None;
            outcome.rolling = false;
        }
        RollAction::Finished => {
            outcome.roll = None;
            outcome.rolling = false;
            // Leaders moved away during the roll; put them back now (instead of waiting
            // for auto.leader.rebalance's next check).
            if let Err(e) = admin.elect_preferred_leaders().await {
                tracing::warn!(cluster = %kc.name_any(), error = %e, "preferred leader election failed");
            }
            ctx.event(
                kc,
                EventType::Normal,
                "RollFinished",
                "every broker runs its current configuration; preferred leaders restored".into(),
            )
            .await;
        }
        RollAction::Wait { why, .. } => {
            if prior_status.message.as_deref() != Some(why.as_str()) {
                tracing::info!(cluster = %kc.name_any(), %why, "rolling restart waits");
            }
            outcome.roll = Some(from_state(&plan.state, Some(why.clone())));
        }
        RollAction::Blocked { why } => {
            let why = with_cause(why);
            tracing::info!(cluster = %kc.name_any(), %why, failures = plan.state.failures, "rolling restart blocked");
            warn_once(kc, ctx, "RollBlocked", &why).await;
            outcome.roll = Some(from_state(&plan.state, Some(why)));
        }
        RollAction::Paused { why } => {
            let why = with_cause(why);
            tracing::warn!(cluster = %kc.name_any(), %why, failures = plan.state.failures, "rolling restart paused");
            if !prior.paused {
                ctx.event(kc, EventType::Warning, "RollPaused", why.clone())
                    .await;
            }
            outcome.paused = Some(why.clone());
            outcome.roll = Some(from_state(&plan.state, Some(why)));
        }
        RollAction::Restart { id, gated, reason } => {
            let message = format!("restarting broker {id}: {reason}");
            let status = from_state(&plan.state, Some(message.clone()));
            // Durable first: an operator killed after the deletion resumes by waiting for
            // this broker, not by restarting another.
            write_roll_status(kc, ctx, &status).await?;
            let name = names::broker_pod(kc, *id);
            let api: Api<Pod> =
                Api::namespaced(ctx.client.clone(), &kc.namespace().unwrap_or_default());
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            ctx.wrote();
            ctx.broker_restarts.inc();
            tracing::info!(cluster = %kc.name_any(), broker = id, gated, %reason, "rolling restart");
            ctx.event(kc, EventType::Normal, "RollingRestart", message)
                .await;
            outcome.roll = Some(status);
        }
    }
    Ok(())
}

/// Writes only the roll's state into status (merge patch), before acting on it.
async fn write_roll_status(
    kc: &KafkaCluster,
    ctx: &Context,
    status: &RollingUpgradeStatus,
) -> Result<(), Error> {
    let api: Api<KafkaCluster> =
        Api::namespaced(ctx.client.clone(), &kc.namespace().unwrap_or_default());
    api.patch_status(
        &kc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {"rollingUpgrade": status}})),
    )
    .await?;
    ctx.wrote();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn pod_with(annotations: &[(&str, &str)], status: PodStatus) -> Pod {
        Pod {
            metadata: ObjectMeta {
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..Default::default()
            },
            status: Some(status),
            ..Default::default()
        }
    }

    #[test]
    fn restart_is_due_on_hash_change_or_pod_annotation() {
        let planned = pod_with(
            &[(names::RESTART_HASH_ANNOTATION, "a")],
            PodStatus::default(),
        );
        let same = pod_with(
            &[(names::RESTART_HASH_ANNOTATION, "a")],
            PodStatus::default(),
        );
        let old = pod_with(
            &[(names::RESTART_HASH_ANNOTATION, "b")],
            PodStatus::default(),
        );
        let asked = pod_with(
            &[
                (names::RESTART_HASH_ANNOTATION, "a"),
                (names::RESTART_ANNOTATION, "now"),
            ],
            PodStatus::default(),
        );
        assert_eq!(restart_due(Some(&planned), Some(&same)), None);
        assert!(restart_due(Some(&planned), Some(&old)).is_some());
        assert!(
            restart_due(Some(&planned), Some(&asked))
                .unwrap()
                .contains("now")
        );
        assert_eq!(
            restart_due(Some(&planned), None),
            None,
            "missing Pods are created, not restarted"
        );
    }

    #[test]
    fn pod_states_from_pod_status() {
        assert_eq!(pod_state(None, 0), PodState::Missing);
        let crash = PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("CrashLoopBackOff".into()),
                        message: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(
            pod_state(Some(&pod_with(&[], crash)), 0),
            PodState::Broken {
                reason: "CrashLoopBackOff".into()
            }
        );
        let failed = PodStatus {
            phase: Some("Failed".into()),
            message: Some("image unknown".into()),
            ..Default::default()
        };
        assert!(
            matches!(pod_state(Some(&pod_with(&[], failed)), 0), PodState::Broken { reason } if reason == "image unknown")
        );
        assert_eq!(
            pod_state(Some(&pod_with(&[], PodStatus::default())), 7),
            PodState::Starting { since_ms: 7 }
        );
    }

    #[test]
    fn a_voter_set_other_than_the_spec_controllers_is_a_notice() {
        let voter = |id| crate::kafka::ReplicaState {
            replica_id: id,
            log_end_offset: 0,
            last_fetch_timestamp: None,
            last_caught_up_timestamp: None,
        };
        let quorum = QuorumInfo {
            leader_id: 0,
            leader_epoch: 1,
            high_watermark: 0,
            voters: vec![voter(0), voter(1), voter(2)],
            observers: vec![],
        };
        let node = |id, roles: &[crate::api::Role]| EffectiveBroker {
            id,
            roles: roles.to_vec(),
            ..Default::default()
        };
        use crate::api::Role::{Broker, Controller};
        let same = [
            node(0, &[Controller]),
            node(1, &[Controller]),
            node(2, &[Broker, Controller]),
            node(3, &[Broker]),
        ];
        assert_eq!(quorum_notice(&quorum, &same), None);
        let removed = [node(0, &[Controller]), node(2, &[Controller])];
        let notice = quorum_notice(&quorum, &removed).unwrap();
        assert!(
            notice.contains("voters are [0, 1, 2]") && notice.contains("controllers are [0, 2]"),
            "{notice}"
        );
    }

    #[test]
    fn roll_state_round_trips_through_status() {
        let s = RollState {
            restarting: Some(2),
            restart_started_ms: Some(1_764_000_000_123),
            failures: 3,
            last_failure_ms: Some(1_764_000_000_456),
            paused: true,
        };
        let status = from_state(&s, Some("x".into()));
        assert_eq!(to_state(&status), s);
        assert_eq!(
            to_state(&RollingUpgradeStatus::default()),
            RollState::default()
        );
    }
}
