//! Live (dynamic) configuration through the Kafka admin protocol: the cluster-wide default
//! first, then each reachable broker; describe → diff → validate-only → apply. Kafka is reached
//! at the brokers' Pod IPs on the inter-broker listener, never through advertised names.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::Context;
use super::events::Reason;
use crate::api::KafkaCluster;
use crate::kafka::{AdminClient, ConfigOp, ConfigResource, ConfigSource};
use crate::reconcile::config::{ConfigChange, cluster_default_changes, config_changes};
use crate::reconcile::pods::pod_ready;
use crate::reconcile::status::DynamicState;
use crate::reconcile::{Desired, names};

/// `host:port` of every broker Pod that is ready, on the inter-broker listener.
pub fn reachable_nodes(kc: &KafkaCluster, pods: &[Pod]) -> BTreeMap<i32, String> {
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
    // Every Ready broker Pod, those of brokers leaving the spec included (they still answer).
    pods.iter()
        .filter(|p| {
            p.labels().get(names::BROKER_ROLE_LABEL).map(String::as_str) == Some("true")
                && p.metadata.deletion_timestamp.is_none()
                && pod_ready(p)
        })
        .filter_map(|p| {
            let id = p.labels().get(names::BROKER_ID_LABEL)?.parse().ok()?;
            let ip = p.status.as_ref()?.pod_ip.clone()?;
            Some((id, format!("{ip}:{port}")))
        })
        .collect()
}

pub fn broker_pod<'a>(kc: &KafkaCluster, pods: &'a [Pod], id: i32) -> Option<&'a Pod> {
    let name = names::broker_pod(kc, id);
    pods.iter().find(|p| p.name_any() == name)
}

/// Makes the live dynamic configuration what the spec says. A refused change is an error in
/// that broker's status and a Warning Event, never a crash. Keys only in Events and logs:
/// values may be secrets.
pub async fn run(
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
    let mut failures = Vec::new();
    let cluster_error = converge_resource(
        kc,
        ctx,
        admin,
        ConfigResource::BrokerDefault,
        &desired.config.cluster_default,
    )
    .await
    .err();
    failures.extend(cluster_error.clone());
    for (id, config) in &desired.config.brokers {
        if !reachable.contains_key(id) {
            continue;
        }
        let result =
            converge_resource(kc, ctx, admin, ConfigResource::Broker(*id), &config.live).await;
        let error = result.err();
        failures.extend(error.clone());
        let error = error.or_else(|| cluster_error.clone());
        states.insert(
            *id,
            DynamicState {
                in_sync: error.is_none(),
                error,
            },
        );
    }
    ctx.events
        .problems(ctx, kc, Reason::ConfigFailed, &failures)
        .await;
    states
}

/// Describe → diff → validate-only → apply, for one config resource (the cluster default or
/// one broker), with an Event naming the keys changed. A failure is returned as the message
/// for status.
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
        let changes = match resource {
            ConfigResource::BrokerDefault => cluster_default_changes(desired, &current),
            _ => config_changes(desired, &current),
        };
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
            tracing::info!(resource = ?resource, changes = %describe(&changes), "dynamic config applied");
            let note = format!("{what} changed live: {}", describe(&changes));
            ctx.events.did(ctx, kc, Reason::ConfigApplied, &note).await;
            Ok(())
        }
        Err(e) => Err(format!("{what}: {e}")),
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
