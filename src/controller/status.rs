//! The KafkaCluster status: computed from what was observed and planned, written only when it
//! differs from what is there (a condition keeps its transition time while it holds).
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

use super::operations::Outcome;
use super::{Context, Error};
use crate::api::{BrokerPhase, BrokerStatus, KafkaCluster, KafkaClusterStatus, XdsStatus};
use crate::reconcile::{Desired, Observed, names};
use crate::xds::GroupStatus;

/// The address a cloud (or the dev node agent) gave the external LoadBalancer Service.
pub fn load_balancer_address(svc: &Service) -> Option<String> {
    let ingress = svc
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?;
    ingress
        .iter()
        .find_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
}

fn condition(
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
    status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The status after a successful reconcile.
pub fn compute(
    kc: &KafkaCluster,
    pods: &[Pod],
    desired: &Desired,
    observed: &Observed,
    xds: &GroupStatus,
    cluster_id: &str,
    ops: &Outcome,
) -> KafkaClusterStatus {
    let generation = kc.metadata.generation;
    let mut brokers = Vec::new();
    let mut ready_brokers = 0;
    for b in &kc.spec.brokers {
        let name = names::broker_pod(kc, b.id);
        let pod = pods.iter().find(|p| p.name_any() == name);
        let ready = pod.is_some_and(pod_ready);
        if ready {
            ready_brokers += 1;
        }
        let planned = desired.pods.iter().find(|p| p.name_any() == name);
        let planned_hash =
            planned.and_then(|p| p.annotations().get(names::RESTART_HASH_ANNOTATION).cloned());
        let dynamic = ops.dynamic.get(&b.id);
        let restarting = ops.roll.as_ref().and_then(|r| r.restarting) == Some(b.id);
        let state = if restarting {
            "Restarting"
        } else if pod.is_none() {
            "Pending"
        } else if ops.restart_due.contains(&b.id) {
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
        });
    }
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
    let xds_ok = !has_external || xds.all_acked;
    let all_ready = ready_brokers == total && xds_ok && !desired.waiting_for_address;
    let settled = all_ready && !ops.rolling;
    let ready_message = if desired.waiting_for_address {
        "waiting for the external LoadBalancer address".to_string()
    } else if ready_brokers < total {
        format!("{ready_brokers}/{total} brokers ready")
    } else if !xds_ok {
        "waiting for Envoy to take the current config".to_string()
    } else {
        format!("{total} brokers ready")
    };
    let roll_message = ops
        .roll
        .as_ref()
        .and_then(|r| r.message.clone())
        .or_else(|| {
            (!ops.restart_due.is_empty())
                .then(|| format!("restart due for brokers {:?}", ops.restart_due))
        });
    KafkaClusterStatus {
        observed_generation: generation,
        rolling_upgrade: ops.roll.clone(),
        config_notices: Vec::new(),
        conditions: vec![
            condition(
                "Ready",
                all_ready,
                if all_ready { "Ready" } else { "Progressing" },
                &ready_message,
                generation,
            ),
            condition(
                "Reconciling",
                !settled,
                if settled {
                    "Done"
                } else if ops.rolling {
                    "RollingRestart"
                } else {
                    "Progressing"
                },
                &roll_message.unwrap_or(ready_message.clone()),
                generation,
            ),
            match &ops.paused {
                Some(why) => condition("Degraded", true, "RollPaused", why, generation),
                None => condition("Degraded", false, "Valid", "the spec is valid", generation),
            },
        ],
        broker_count: total as i32,
        brokers,
        cluster_id: Some(cluster_id.to_string()),
        bootstrap_address,
        xds: has_external.then(|| XdsStatus {
            snapshot_version: xds.version.clone(),
            all_acked: xds.all_acked,
            rejected: xds
                .rejected
                .as_ref()
                .map(|r| format!("{} rejected by {}: {}", r.r#type, r.node_id, r.error)),
        }),
    }
}

/// The status of a spec that cannot be realised; everything else is kept as it was.
pub fn degraded(kc: &KafkaCluster, message: &str) -> KafkaClusterStatus {
    let mut status = kc.status.clone().unwrap_or_default();
    let generation = kc.metadata.generation;
    status.observed_generation = generation;
    status.conditions = vec![
        condition("Ready", false, "InvalidSpec", message, generation),
        condition("Reconciling", false, "InvalidSpec", message, generation),
        condition("Degraded", true, "InvalidSpec", message, generation),
    ];
    status
}

pub(super) fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Patches the status only when it changed; a condition that keeps its status keeps its
/// transition time.
pub async fn write_if_changed(
    kc: &KafkaCluster,
    ctx: &Context,
    mut new: KafkaClusterStatus,
) -> Result<(), Error> {
    let old = kc.status.clone().unwrap_or_default();
    for c in &mut new.conditions {
        if let Some(prev) = old
            .conditions
            .iter()
            .find(|p| p.type_ == c.type_ && p.status == c.status)
        {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
    if new == old {
        return Ok(());
    }
    let api: Api<KafkaCluster> =
        Api::namespaced(ctx.client.clone(), &kc.namespace().unwrap_or_default());
    api.patch_status(
        &kc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": merge_patch(&old, &new)? })),
    )
    .await?;
    ctx.wrote();
    Ok(())
}

/// The status as a JSON merge patch over `old`: fields `new` no longer has, at any depth of
/// nested objects (a finished roll, a broker no longer restarting, cleared notices), become
/// `null`, since a merge patch keeps whatever it does not mention. Arrays are replaced whole.
fn merge_patch(
    old: &KafkaClusterStatus,
    new: &KafkaClusterStatus,
) -> Result<serde_json::Value, Error> {
    let mut patch = serde_json::to_value(new)?;
    null_removed(&serde_json::to_value(old)?, &mut patch);
    Ok(patch)
}

fn null_removed(old: &serde_json::Value, new: &mut serde_json::Value) {
    if let (serde_json::Value::Object(old), serde_json::Value::Object(new)) = (old, new) {
        for (key, old_value) in old {
            match new.get_mut(key) {
                Some(new_value) => null_removed(old_value, new_value),
                None => {
                    new.insert(key.clone(), serde_json::Value::Null);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RollingUpgradeStatus;

    #[test]
    fn fields_gone_from_the_status_are_nulled_in_the_patch() {
        let old = KafkaClusterStatus {
            rolling_upgrade: Some(RollingUpgradeStatus {
                restarting: Some(2),
                ..Default::default()
            }),
            config_notices: vec!["x".into()],
            broker_count: 3,
            ..Default::default()
        };
        let new = KafkaClusterStatus {
            broker_count: 3,
            ..Default::default()
        };
        let patch = merge_patch(&old, &new).unwrap();
        assert_eq!(patch["rollingUpgrade"], serde_json::Value::Null);
        let still_rolling = KafkaClusterStatus {
            rolling_upgrade: Some(RollingUpgradeStatus {
                failures: 1,
                ..Default::default()
            }),
            ..new.clone()
        };
        let patch = merge_patch(&old, &still_rolling).unwrap();
        assert_eq!(
            patch["rollingUpgrade"]["restarting"],
            serde_json::Value::Null
        );
        assert_eq!(patch["rollingUpgrade"]["failures"], 1);
        assert_eq!(patch["configNotices"], serde_json::Value::Null);
        assert_eq!(patch["brokerCount"], 3);
    }
}
