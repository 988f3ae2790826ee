//! Live (dynamic) configuration through the Kafka admin protocol: the cluster-wide default
//! first, then each reachable broker; describe → diff → validate-only → apply. Kafka is reached
//! at the brokers' Pod IPs on the inter-broker listener, never through advertised names.
//! Values read from Secrets are resolved here ([`crate::reconcile::secret_refs`]) and set again
//! whenever their Secret's version differs from the one recorded in `status.appliedSecrets`.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::Context;
use super::events::Reason;
use crate::api::KafkaCluster;
use crate::kafka::{AdminClient, ConfigOp, ConfigResource, ConfigSource};
use crate::reconcile::config::ConfigChange;
use crate::reconcile::pods::pod_ready;
use crate::reconcile::secret_refs::{self, Fetched, LiveDesired};
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

/// Makes the live dynamic configuration what the spec says, values from Secrets (`fetched`)
/// included. A refused change is an error in that broker's status and a Warning Event, never a
/// crash. Keys only in Events and logs: values may be secrets. Returns each reachable broker's
/// state and `status.appliedSecrets` for the live keys (entries of other kinds, SCRAM users',
/// are kept as they were).
pub async fn run(
    kc: &KafkaCluster,
    ctx: &Context,
    admin: &AdminClient,
    desired: &Desired,
    fetched: &Fetched,
) -> (BTreeMap<i32, DynamicState>, BTreeMap<String, String>) {
    let mut states = BTreeMap::new();
    let prior = kc
        .status
        .as_ref()
        .map(|s| s.applied_secrets.clone())
        .unwrap_or_default();
    let plan = &desired.config;
    let mut wanted = secret_refs::live_whats(plan);
    wanted.extend(prior.keys().filter(|k| k.starts_with("scram/")).cloned());
    let mut applied_now = BTreeMap::new();
    let reachable = admin.nodes();
    if reachable.is_empty() {
        return (
            states,
            secret_refs::applied_after(&prior, &wanted, &applied_now),
        );
    }
    let mut failures = Vec::new();
    let (cluster_desired, _) = secret_refs::resolve(
        &plan.cluster_default,
        &plan.cluster_default_from,
        fetched,
        &prior,
        secret_refs::applied_cluster,
        |k| k.to_string(),
    );
    let cluster_error = converge_resource(
        kc,
        ctx,
        admin,
        ConfigResource::BrokerDefault,
        &cluster_desired,
    )
    .await
    .err();
    if cluster_error.is_none() {
        applied_now.extend(cluster_desired.versions.clone());
    }
    failures.extend(cluster_error.clone());
    for (id, config) in &plan.brokers {
        if !reachable.contains_key(id) {
            continue;
        }
        let (broker_desired, _) = secret_refs::resolve(
            &config.live,
            &config.live_from,
            fetched,
            &prior,
            |k| secret_refs::applied_broker(*id, k),
            |k| k.to_string(),
        );
        let result =
            converge_resource(kc, ctx, admin, ConfigResource::Broker(*id), &broker_desired).await;
        let error = result.err();
        if error.is_none() {
            applied_now.extend(broker_desired.versions.clone());
        }
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
    (
        states,
        secret_refs::applied_after(&prior, &wanted, &applied_now),
    )
}

/// Describe → diff → validate-only → apply, for one config resource (the cluster default or
/// one broker), with an Event naming the keys changed. A failure is returned as the message
/// for status.
async fn converge_resource(
    kc: &KafkaCluster,
    ctx: &Context,
    admin: &AdminClient,
    resource: ConfigResource,
    desired: &LiveDesired,
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
        let changes = secret_refs::live_changes(
            desired,
            &current,
            matches!(resource, ConfigResource::BrokerDefault),
        );
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
        // Kafka may quote a refused value: never one read from a Secret.
        Err(e) => Err(desired.scrub(&format!("{what}: {e}"))),
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
