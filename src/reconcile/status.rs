//! The KafkaCluster status, computed as data from what one reconcile observed, planned and
//! did: conditions (types and reasons are the constants below), per-broker state, the roll's
//! persisted state, notices, and when to look again. The controller writes it in one place.
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use super::pods::{crash_loop, pod_ready};
use super::scaling::ScalingPlan;
use super::{Desired, EffectiveBroker, Observed, names};
use crate::api::{
    BrokerPhase, BrokerStatus, KafkaCluster, KafkaClusterStatus, ReplicaMoveKind,
    ReplicaMovesStatus, RollingUpgradeStatus, XdsStatus,
};
use crate::kafka::QuorumInfo;

/// Condition types.
pub mod conditions {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const DEGRADED: &str = "Degraded";
    /// Present when the spec declares alert actions.
    pub const ALERT_ACTIONS_VALID: &str = "AlertActionsValid";
}

/// Condition reasons.
pub mod reasons {
    pub const READY: &str = "Ready";
    pub const PROGRESSING: &str = "Progressing";
    pub const DONE: &str = "Done";
    pub const ROLLING_RESTART: &str = "RollingRestart";
    pub const VALID: &str = "Valid";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const ROLL_PAUSED: &str = "RollPaused";
    pub const BROKER_CRASH_LOOPING: &str = "BrokerCrashLooping";
    pub const APPLY_FAILED: &str = "ApplyFailed";
    pub const VOLUME_RESIZE_REFUSED: &str = "VolumeResizeRefused";
    pub const REMOVAL_REFUSED: &str = "RemovalRefused";
    pub const CRUISE_CONTROL_FAILED: &str = "CruiseControlFailed";
    pub const CERTIFICATES_FAILED: &str = "CertificatesFailed";
    pub const DRAINING: &str = "Draining";
    pub const REBALANCING: &str = "Rebalancing";
    pub const REMOVING_VOLUMES: &str = "RemovingVolumes";
    pub const VOLUME_REMOVAL_REFUSED: &str = "VolumeRemovalRefused";
    pub const INVALID_ALERT_ACTION: &str = "InvalidAlertAction";
    pub const QUORUM_CHANGE_REFUSED: &str = "QuorumChangeRefused";
    pub const CHANGING_QUORUM: &str = "ChangingQuorum";
}

/// Per-broker outcome of the live configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DynamicState {
    /// The live configuration was already as the spec says, or was just changed to it
    /// (validate-only first); the next reconcile describes it again.
    pub in_sync: bool,
    pub error: Option<String>,
}

/// What the Kafka-side operations of one reconcile found and decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KafkaOutcome {
    pub dynamic: BTreeMap<i32, DynamicState>,
    /// Brokers whose Pod needs a restart.
    pub restart_due: Vec<i32>,
    /// The roll's state to persist (before its next Pod deletion), `None` when no roll runs.
    pub roll: Option<RollingUpgradeStatus>,
    /// The roll is paused at the failure threshold: the cluster is Degraded.
    pub paused: Option<String>,
    /// A roll is in progress (due, restarting or blocked).
    pub rolling: bool,
    /// A static KRaft quorum's voters differ from the spec's controllers.
    pub quorum_notice: Option<String>,
    /// `status.quorum` after this reconcile (`None`: not chosen yet).
    pub quorum: Option<crate::api::QuorumStatus>,
    /// A membership change is due (made, or waiting for a node to catch up): look again soon.
    pub quorum_changing: bool,
    /// A membership change the quorum cannot take: the cluster is Degraded.
    pub quorum_refused: Option<String>,
    /// `status.kafkaVersion` after this reconcile.
    pub kafka_version: Option<crate::api::KafkaVersionStatus>,
    /// metadata.version is due to be raised: look again soon.
    pub metadata_pending: bool,
    /// Replicas are moving (a drain or a rebalance): no broker restart starts meanwhile.
    pub replicas_moving: bool,
    /// Volumes being emptied, and the log dirs each broker is known to have.
    pub volumes: super::volumes::VolumeOutcome,
    /// The cluster's CAs and certificates (when a listener uses TLS).
    pub tls: Option<crate::api::TlsStatus>,
    /// A certificate renewal or CA rotation waits for brokers to reload: look again soon.
    pub tls_pending: bool,
    /// Certificates cannot be issued (a provided CA Secret missing or unusable).
    pub tls_error: Option<String>,
    /// Referenced Secrets' versions applied live (see `KafkaClusterStatus::applied_secrets`).
    pub applied_secrets: BTreeMap<String, String>,
    /// The alert action log and firing roll-blocking alerts, after this reconcile's actions.
    pub alerts: Option<crate::api::AlertsStatus>,
}

/// What the cluster's Envoys took of the xDS snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvoyState {
    pub version: Option<String>,
    pub all_acked: bool,
    pub rejected: Option<String>,
    /// `all_acked` is the prior status's: this process began serving xDS a moment ago and no
    /// Envoy has reconnected yet (see [`EnvoyState::after_restart`]).
    pub reconnecting: bool,
}

impl EnvoyState {
    /// The state while the Envoys reconnect to a process that just began serving xDS (an
    /// operator restart, a new leader): until one of the group's Envoys is back, the ACK the
    /// prior status recorded counts if it was for the same snapshot version (versions are
    /// content hashes, so the same config has the same version in every process). Without
    /// this, each restart flipped Ready to False ("waiting for Envoy") and back: two status
    /// writes and a false alarm. Once an Envoy is connected, or the grace is over, what the
    /// Envoys say counts again.
    pub fn after_restart(
        self,
        prior: Option<&XdsStatus>,
        envoys_connected: bool,
        in_reconnect_grace: bool,
    ) -> Self {
        let prior_acked_this = prior.is_some_and(|p| {
            p.all_acked && p.rejected.is_none() && p.snapshot_version == self.version
        });
        if self.all_acked || envoys_connected || !in_reconnect_grace || !prior_acked_this {
            return self;
        }
        Self {
            all_acked: true,
            reconnecting: true,
            ..self
        }
    }
}

/// Everything the status is computed from.
pub struct StatusInput<'a> {
    pub kc: &'a KafkaCluster,
    /// The cluster's broker Pods.
    pub pods: &'a [Pod],
    pub desired: &'a Desired,
    pub observed: &'a Observed,
    pub envoy: &'a EnvoyState,
    pub cluster_id: &'a str,
    pub kafka: &'a KafkaOutcome,
    /// Volume resizes that cannot be done.
    pub volumes: &'a [String],
    /// Replica moves: leaving brokers, progress, a refused removal.
    pub scaling: &'a ScalingPlan,
}

/// When the controller looks again without being woken by a watched change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Waiting on Kafka (a roll, live config to retry) or on Envoy: nothing Kubernetes watches.
    Soon,
    /// Settled: a periodic look, in case something unwatched drifted.
    Idle,
}

impl Requeue {
    pub fn after(self) -> Duration {
        match self {
            Requeue::Soon => Duration::from_secs(5),
            Requeue::Idle => Duration::from_secs(300),
        }
    }
}

pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    }
}

pub fn is_ready(status: &KafkaClusterStatus) -> bool {
    has_condition(status, conditions::READY, true)
}

fn has_condition(status: &KafkaClusterStatus, type_: &str, ok: bool) -> bool {
    let want = if ok { "True" } else { "False" };
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == want)
}

/// The Degraded condition's reason and message, if the cluster is degraded.
pub fn degraded_reason(status: &KafkaClusterStatus) -> Option<(&str, &str)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::DEGRADED && c.status == "True")
        .map(|c| (c.reason.as_str(), c.message.as_str()))
}

/// What the Reconciling condition says while volumes are emptied.
fn volumes_message(v: &super::volumes::VolumeOutcome) -> String {
    v.removals
        .iter()
        .map(|(id, r)| {
            format!(
                "broker {id}: moving {} replicas ({} bytes) off {}",
                r.partitions_left,
                r.bytes_left,
                r.dirs.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The status after a reconcile that applied the plan, and when to look again.
pub fn compute(input: &StatusInput<'_>) -> (KafkaClusterStatus, Requeue) {
    let StatusInput {
        kc,
        pods,
        desired,
        observed,
        envoy,
        cluster_id,
        kafka,
        volumes,
        scaling,
    } = input;
    let generation = kc.metadata.generation;
    let mut brokers = Vec::new();
    let mut ready_brokers = 0;
    let mut crash_looping = Vec::new();
    for b in &kc.spec.brokers {
        let name = names::broker_pod(kc, b.id);
        let pod = pods.iter().find(|p| p.name_any() == name);
        let ready = pod.is_some_and(pod_ready);
        if ready {
            ready_brokers += 1;
        }
        if let Some(why) = pod.and_then(crash_loop) {
            crash_looping.push(format!("broker {}: {why}", b.id));
        }
        let planned = desired.pods.iter().find(|p| p.name_any() == name);
        let planned_hash =
            planned.and_then(|p| p.annotations().get(names::RESTART_HASH_ANNOTATION).cloned());
        let dynamic = kafka.dynamic.get(&b.id);
        let restarting = kafka.roll.as_ref().and_then(|r| r.restarting) == Some(b.id);
        let state = if restarting {
            "Restarting"
        } else if pod.is_none() {
            "Pending"
        } else if kafka.restart_due.contains(&b.id) {
            "RestartPending"
        } else {
            match dynamic {
                Some(d) if d.error.is_some() => "DynamicConfigFailed",
                Some(d) if d.in_sync => "InSync",
                // Not reachable yet: the live configuration is still to be applied.
                _ => "DynamicConfigPending",
            }
        };
        brokers.push(BrokerStatus {
            id: b.id,
            pod_name: pod.map(|p| p.name_any()),
            pod_uid: pod.and_then(|p| p.metadata.uid.clone()),
            restart_hash: planned_hash,
            phase: if ready {
                BrokerPhase::Running
            } else {
                BrokerPhase::Pending
            },
            configuration_state: Some(state.into()),
            configuration_error: dynamic.and_then(|d| d.error.clone()),
            volume_removal: kafka.volumes.removals.get(&b.id).cloned(),
            known_log_dirs: kafka
                .volumes
                .known_log_dirs
                .get(&b.id)
                .cloned()
                .or_else(|| {
                    let prior = kc.status.as_ref()?.brokers.iter().find(|p| p.id == b.id)?;
                    Some(prior.known_log_dirs.clone())
                })
                .unwrap_or_default(),
        });
    }
    for (id, phase) in &scaling.leaving {
        let name = names::broker_pod(kc, *id);
        let pod = pods.iter().find(|p| p.name_any() == name);
        brokers.push(BrokerStatus {
            id: *id,
            pod_name: pod.map(|p| p.name_any()),
            pod_uid: pod.and_then(|p| p.metadata.uid.clone()),
            phase: *phase,
            ..Default::default()
        });
    }
    brokers.sort_by_key(|b| b.id);
    let total = kc.spec.brokers.len();
    let bootstrap_address = kc.spec.listeners.external.first().and_then(|l| {
        let host = l
            .advertised_host
            .clone()
            .or_else(|| l.sni.as_ref().map(|s| format!("bootstrap.{}", s.domain)))
            .or_else(|| observed.external_address.clone())?;
        Some(format!("{host}:{}", l.bootstrap_port))
    });
    let has_external = !kc.spec.listeners.external.is_empty();
    let xds_ok = !has_external || envoy.all_acked;
    let all_ready = ready_brokers == total && xds_ok && !desired.waiting_for_address;
    let removing_volumes = !kafka.volumes.removals.is_empty();
    let moving = scaling.moves.is_some() || !scaling.leaving.is_empty() || removing_volumes;
    let settled = all_ready && !kafka.rolling && !moving && !kafka.quorum_changing;
    let ready_message = if desired.waiting_for_address {
        "waiting for the external LoadBalancer address".to_string()
    } else if ready_brokers < total {
        format!("{ready_brokers}/{total} brokers ready")
    } else if !xds_ok {
        match &envoy.rejected {
            Some(why) => format!("Envoy rejected the current config: {why}"),
            None => "waiting for Envoy to take the current config".to_string(),
        }
    } else {
        format!("{total} brokers ready")
    };
    let roll_message = kafka
        .roll
        .as_ref()
        .and_then(|r| r.message.clone())
        .or_else(|| {
            (!kafka.restart_due.is_empty())
                .then(|| format!("restart due for brokers {:?}", kafka.restart_due))
        });
    // The most urgent problem names the condition.
    let problem = kafka
        .paused
        .clone()
        .map(|why| (reasons::ROLL_PAUSED, why))
        .or_else(|| {
            (!crash_looping.is_empty())
                .then(|| (reasons::BROKER_CRASH_LOOPING, crash_looping.join("; ")))
        })
        .or_else(|| {
            scaling
                .refused
                .clone()
                .map(|why| (reasons::REMOVAL_REFUSED, why))
        })
        .or_else(|| {
            kafka
                .quorum_refused
                .clone()
                .map(|why| (reasons::QUORUM_CHANGE_REFUSED, why))
        })
        .or_else(|| {
            super::engine::failure(scaling).map(|why| (reasons::CRUISE_CONTROL_FAILED, why.into()))
        })
        .or_else(|| {
            (!desired.volume_refusals.is_empty()).then(|| {
                (
                    reasons::VOLUME_REMOVAL_REFUSED,
                    desired.volume_refusals.join("; "),
                )
            })
        })
        .or_else(|| {
            (!volumes.is_empty()).then(|| (reasons::VOLUME_RESIZE_REFUSED, volumes.join("; ")))
        })
        .or_else(|| {
            kafka
                .tls_error
                .clone()
                .map(|e| (reasons::CERTIFICATES_FAILED, e))
        });
    let degraded = match problem {
        Some((reason, message)) => {
            condition(conditions::DEGRADED, true, reason, &message, generation)
        }
        None => condition(
            conditions::DEGRADED,
            false,
            reasons::VALID,
            "the spec is valid",
            generation,
        ),
    };
    let config_notices = desired
        .config
        .notices
        .iter()
        .map(|n| n.to_string())
        .chain(kafka.quorum_notice.clone())
        .collect();
    let mut status = KafkaClusterStatus {
        observed_generation: generation,
        rolling_upgrade: kafka.roll.clone(),
        replica_moves: scaling.moves.clone(),
        rebalanced_brokers: scaling.rebalanced_brokers.clone(),
        rebalance_requested: scaling.rebalance_requested.clone(),
        config_notices,
        conditions: vec![
            condition(
                conditions::READY,
                all_ready,
                if all_ready {
                    reasons::READY
                } else {
                    reasons::PROGRESSING
                },
                &ready_message,
                generation,
            ),
            condition(
                conditions::RECONCILING,
                !settled,
                if settled {
                    reasons::DONE
                } else if kafka.rolling {
                    reasons::ROLLING_RESTART
                } else if let Some(m) = &scaling.moves {
                    match m.kind {
                        ReplicaMoveKind::Drain => reasons::DRAINING,
                        ReplicaMoveKind::Rebalance => reasons::REBALANCING,
                    }
                } else if removing_volumes {
                    reasons::REMOVING_VOLUMES
                } else if kafka.quorum_changing {
                    reasons::CHANGING_QUORUM
                } else {
                    reasons::PROGRESSING
                },
                &roll_message
                    .or_else(|| scaling.moves.as_ref().map(moves_message))
                    .or_else(|| removing_volumes.then(|| volumes_message(&kafka.volumes)))
                    .or_else(|| {
                        kafka
                            .quorum_changing
                            .then(|| kafka.quorum.as_ref().and_then(|q| q.message.clone()))
                            .flatten()
                    })
                    .unwrap_or(ready_message.clone()),
                generation,
            ),
            degraded,
        ],
        broker_count: i32::try_from(total).unwrap_or(i32::MAX),
        brokers,
        cluster_id: Some(cluster_id.to_string()),
        bootstrap_address,
        xds: has_external.then(|| XdsStatus {
            snapshot_version: envoy.version.clone(),
            all_acked: envoy.all_acked,
            rejected: envoy.rejected.clone(),
        }),
        tls: kafka.tls.clone(),
        applied_secrets: kafka.applied_secrets.clone(),
        alerts: kafka.alerts.clone(),
        quorum: kafka.quorum.clone(),
        kafka_version: kafka.kafka_version.clone(),
    };
    if !kc.spec.alerts.actions.is_empty() {
        let problems = kafka
            .alerts
            .as_ref()
            .map(|a| a.invalid_actions.join("; "))
            .unwrap_or_default();
        status.conditions.push(if problems.is_empty() {
            condition(
                conditions::ALERT_ACTIONS_VALID,
                true,
                reasons::VALID,
                "the declared alert actions pass a dry run",
                generation,
            )
        } else {
            condition(
                conditions::ALERT_ACTIONS_VALID,
                false,
                reasons::INVALID_ALERT_ACTION,
                &problems,
                generation,
            )
        });
    }
    // Pods are watched; Kafka and Envoy's ACKs are not.
    let waiting_on_kafka = kafka.rolling || kafka.dynamic.values().any(|d| !d.in_sync);
    let requeue = if waiting_on_kafka
        || kafka.tls_pending
        || !xds_ok
        || envoy.reconnecting
        || scaling.waiting
        || removing_volumes
        || kafka.quorum_changing
        || kafka.metadata_pending
    {
        Requeue::Soon
    } else {
        Requeue::Idle
    };
    (status, requeue)
}

/// One line on a replica move's progress.
fn moves_message(m: &ReplicaMovesStatus) -> String {
    let what = match m.kind {
        ReplicaMoveKind::Drain => format!("draining brokers {:?}", m.brokers),
        ReplicaMoveKind::Rebalance => format!("rebalancing onto brokers {:?}", m.brokers),
    };
    let mut line = format!(
        "{what}: {}/{} partitions left",
        m.partitions_left, m.partitions_total
    );
    if let Some(b) = m.bytes_left {
        line.push_str(&format!(", {b} bytes on the drained brokers"));
    }
    if let Some(s) = m.estimated_seconds_left {
        line.push_str(&format!(", about {s} s left"));
    }
    if let Some(why) = &m.message {
        line.push_str(&format!("; {why}"));
    }
    line
}

/// A static quorum (`controller.quorum.voters`, clusters formatted before Pier used KIP-853):
/// adding or removing a controller in the spec does not change the voters of a running
/// cluster. Says so when Kafka's voters and the spec's controllers differ.
pub fn quorum_notice(quorum: &QuorumInfo, brokers: &[EffectiveBroker]) -> Option<String> {
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
             this cluster's quorum is static and its membership cannot change; nodes restarted \
             later read the spec's list"
        )
    })
}

/// The status of a spec that cannot be realised; everything else is kept as it was.
pub fn invalid_spec(kc: &KafkaCluster, message: &str) -> KafkaClusterStatus {
    let mut status = kc.status.clone().unwrap_or_default();
    let generation = kc.metadata.generation;
    status.observed_generation = generation;
    status.conditions = vec![
        condition(
            conditions::READY,
            false,
            reasons::INVALID_SPEC,
            message,
            generation,
        ),
        condition(
            conditions::RECONCILING,
            false,
            reasons::INVALID_SPEC,
            message,
            generation,
        ),
        condition(
            conditions::DEGRADED,
            true,
            reasons::INVALID_SPEC,
            message,
            generation,
        ),
    ];
    status
}

/// The status after reconciles that keep failing (the API server refuses a write, a call
/// times out): the last status, Degraded with the error, Reconciling still true.
pub fn apply_failed(kc: &KafkaCluster, message: &str) -> KafkaClusterStatus {
    let mut status = kc.status.clone().unwrap_or_default();
    let generation = kc.metadata.generation;
    let mut set = |c: Condition| match status.conditions.iter_mut().find(|o| o.type_ == c.type_) {
        Some(old) => *old = c,
        None => status.conditions.push(c),
    };
    set(condition(
        conditions::DEGRADED,
        true,
        reasons::APPLY_FAILED,
        message,
        generation,
    ));
    set(condition(
        conditions::RECONCILING,
        true,
        reasons::APPLY_FAILED,
        message,
        generation,
    ));
    status
}

/// `new` with the transition times of `old`'s conditions that kept their status.
pub fn keep_transition_times(old: &KafkaClusterStatus, new: &mut KafkaClusterStatus) {
    keep_condition_times(&old.conditions, &mut new.conditions);
}

/// A condition whose status did not change keeps the time it last changed (of any resource).
pub fn keep_condition_times(old: &[Condition], new: &mut [Condition]) {
    for c in new {
        if let Some(prev) = old
            .iter()
            .find(|p| p.type_ == c.type_ && p.status == c.status)
        {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_voter_set_other_than_the_spec_controllers_is_a_notice() {
        let voter = |id| crate::kafka::ReplicaState {
            replica_id: id,
            directory_id: None,
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
            voter_endpoints: Default::default(),
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
    fn ready_says_why_envoy_has_not_taken_the_config() {
        let kc = crate::reconcile::tests::example("kafkacluster-basic.yaml");
        let observed = Observed {
            external_address: Some("127.0.0.1".into()),
            cluster_id: Some("MkU3OEVBNTcwNTJENDM2Qk".into()),
            ..Default::default()
        };
        let desired = crate::reconcile::plan(&kc, &observed, &Default::default()).unwrap();
        let pods: Vec<Pod> = desired
            .pods
            .iter()
            .cloned()
            .map(|mut p| {
                p.status = Some(k8s_openapi::api::core::v1::PodStatus {
                    conditions: Some(vec![k8s_openapi::api::core::v1::PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                });
                p
            })
            .collect();
        let ready_message = |envoy: &EnvoyState| {
            let (status, requeue) = compute(&StatusInput {
                kc: &kc,
                pods: &pods,
                desired: &desired,
                observed: &observed,
                envoy,
                cluster_id: "id",
                kafka: &KafkaOutcome::default(),
                volumes: &[],
                scaling: &ScalingPlan::default(),
            });
            let ready = status
                .conditions
                .iter()
                .find(|c| c.type_ == conditions::READY)
                .unwrap();
            (ready.status.clone(), ready.message.clone(), requeue)
        };
        let waiting = EnvoyState {
            version: Some("v2".into()),
            ..Default::default()
        };
        assert_eq!(
            ready_message(&waiting),
            (
                "False".into(),
                "waiting for Envoy to take the current config".into(),
                Requeue::Soon
            )
        );
        let rejected = EnvoyState {
            rejected: Some("Listener rejected by envoy-0: cannot bind '0.0.0.0:29092'".into()),
            ..waiting
        };
        let (status, message, _) = ready_message(&rejected);
        assert_eq!(status, "False");
        assert_eq!(
            message,
            "Envoy rejected the current config: Listener rejected by envoy-0: cannot bind '0.0.0.0:29092'"
        );
        let acked = EnvoyState {
            version: Some("v2".into()),
            all_acked: true,
            ..Default::default()
        };
        assert_eq!(
            ready_message(&acked),
            ("True".into(), "3 brokers ready".into(), Requeue::Idle)
        );
    }

    #[test]
    fn a_restarted_operator_keeps_the_ack_of_the_same_config_until_envoys_reconnect() {
        let prior = |version: &str, all_acked: bool| XdsStatus {
            snapshot_version: Some(version.into()),
            all_acked,
            rejected: None,
        };
        let none_yet = EnvoyState {
            version: Some("v1".into()),
            ..Default::default()
        };
        let kept = none_yet
            .clone()
            .after_restart(Some(&prior("v1", true)), false, true);
        assert!(kept.all_acked && kept.reconnecting);
        // Anything else: what the Envoys say now.
        for (prior, connected, grace) in [
            (Some(prior("v1", true)), true, true), // an Envoy is back: it says
            (Some(prior("v1", true)), false, false), // grace over: none is there
            (Some(prior("v0", true)), false, true), // another config: not taken yet
            (Some(prior("v1", false)), false, true), // it was not taken before either
            (None, false, true),
        ] {
            let got = none_yet
                .clone()
                .after_restart(prior.as_ref(), connected, grace);
            assert_eq!(got, none_yet, "{prior:?} {connected} {grace}");
        }
        let rejected = XdsStatus {
            rejected: Some("bad".into()),
            ..prior("v1", true)
        };
        assert_eq!(
            none_yet.clone().after_restart(Some(&rejected), false, true),
            none_yet
        );
    }

    #[test]
    fn apply_failures_keep_the_rest_of_the_status() {
        let mut kc = crate::reconcile::tests::example("kafkacluster-basic.yaml");
        kc.status = Some(KafkaClusterStatus {
            broker_count: 3,
            cluster_id: Some("x".into()),
            conditions: vec![condition(conditions::READY, true, reasons::READY, "", None)],
            ..Default::default()
        });
        let s = apply_failed(&kc, "admission webhook said no");
        assert_eq!(s.broker_count, 3);
        assert!(is_ready(&s), "Ready is kept: the brokers still serve");
        assert_eq!(
            degraded_reason(&s),
            Some((reasons::APPLY_FAILED, "admission webhook said no"))
        );
    }

    #[test]
    fn transition_times_are_kept_while_a_condition_holds() {
        let old = KafkaClusterStatus {
            conditions: vec![Condition {
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                ..condition(conditions::READY, true, reasons::READY, "a", None)
            }],
            ..Default::default()
        };
        let mut new = KafkaClusterStatus {
            conditions: vec![
                condition(conditions::READY, true, reasons::READY, "b", None),
                condition(conditions::DEGRADED, false, reasons::VALID, "", None),
            ],
            ..Default::default()
        };
        keep_transition_times(&old, &mut new);
        assert_eq!(
            new.conditions[0].last_transition_time,
            old.conditions[0].last_transition_time
        );
        assert_ne!(
            new.conditions[1].last_transition_time,
            old.conditions[0].last_transition_time
        );
    }
}
