//! The KRaft quorum's side of one reconcile: choose the quorum mode once (before the first
//! Pod), read the quorum from Kafka, make the one membership change `reconcile::quorum` plans
//! (AddRaftVoter / RemoveRaftVoter), and raise `metadata.version` after an upgrade as
//! `reconcile::upgrade` plans it. Kafka's answers decide; nothing here is remembered between
//! reconciles except what status records.
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::events::Reason;
use super::live_config::broker_pod;
use super::{Context, Error, status};
use crate::api::{KafkaCluster, KafkaClusterStatus, KafkaVersionStatus, QuorumMode, QuorumStatus};
use crate::kafka::{
    AdminClient, FeatureUpdate, KafkaError, QuorumInfo, RaftEndpoint, UpgradeType, codes,
};
use crate::reconcile::pods::{pod_ready, restart_due};
use crate::reconcile::quorum::{QuorumInput, QuorumStep, observed_status, plan_quorum};
use crate::reconcile::status::KafkaOutcome;
use crate::reconcile::upgrade::{
    METADATA_VERSION_FEATURE, MetadataInput, MetadataStep, describe_level, level_name,
    node_version, plan_metadata,
};
use crate::reconcile::{Desired, names, quorum};

/// Kafka's default `controller.quorum.fetch.timeout.ms`.
pub const QUORUM_FETCH_TIMEOUT_MS: i64 = 2_000;
/// How long Kafka may take to commit a voter change before it answers REQUEST_TIMED_OUT.
const VOTER_CHANGE_TIMEOUT_MS: i32 = 30_000;

/// Chooses the quorum mode of a cluster whose status has none, and records it (the write
/// wakes the next reconcile, which plans with it). A cluster that already has nodes was
/// formatted with a static voter list by an earlier Pier: it stays static. A new one is
/// formatted for a dynamic quorum (KIP-853), its initial controllers with directory ids
/// chosen here, unless a node runs a release older than 4.0. Returns whether it wrote.
pub async fn choose_mode(
    kc: &KafkaCluster,
    ctx: &Context,
    prior: &KafkaClusterStatus,
    has_nodes: bool,
) -> Result<bool, Error> {
    if prior.quorum.is_some() {
        return Ok(false);
    }
    // Without a valid list of controllers nothing is formatted yet (the plan says why):
    // choosing now would format a quorum without its initial voters.
    let Ok(brokers) = crate::reconcile::effective_brokers(kc) else {
        return Ok(false);
    };
    if !brokers.iter().any(|b| b.is_controller()) {
        return Ok(false);
    }
    let static_because =
        quorum::static_because(kc, &brokers, has_nodes || !prior.brokers.is_empty());
    let chosen = if let Some(why) = static_because {
        QuorumStatus {
            mode: QuorumMode::Static,
            message: Some(why.into()),
            ..QuorumStatus::default()
        }
    } else {
        let mut initial = Vec::new();
        for b in brokers.iter().filter(|b| b.is_controller()) {
            initial.push(crate::api::QuorumVoter {
                id: b.id,
                directory_id: Some(crate::kafka::random_directory_id().map_err(Error::Random)?),
            });
        }
        QuorumStatus {
            mode: QuorumMode::Dynamic,
            initial_controllers: initial,
            ..QuorumStatus::default()
        }
    };
    tracing::info!(mode = ?chosen.mode, "KRaft quorum mode chosen");
    let mut with_quorum = prior.clone();
    with_quorum.quorum = Some(chosen);
    status::write(kc, ctx, with_quorum).await?;
    Ok(true)
}

/// The voters that must leave before their node goes or restarts without the controller role
/// (the roll holds their restart), of `voters` ([`crate::reconcile::quorum::holding_voters`]).
pub fn leaving_voters(desired: &Desired, voters: &BTreeSet<i32>) -> BTreeSet<i32> {
    crate::reconcile::quorum::leaving_voters(&spec_controllers(desired), voters)
}

fn spec_controllers(desired: &Desired) -> BTreeSet<i32> {
    desired
        .brokers
        .iter()
        .filter(|b| b.is_controller())
        .map(|b| b.id)
        .collect()
}

/// Plans and makes this reconcile's membership change (dynamic quorums), and records the
/// quorum's status in `outcome`. `kept`: nodes that left the spec but whose removal was
/// refused (a refused removal touches nothing: they stay voters).
#[allow(clippy::too_many_arguments)]
pub async fn converge(
    kc: &KafkaCluster,
    ctx: &Context,
    admin: &AdminClient,
    desired: &Desired,
    pods: &[Pod],
    cluster_id: &str,
    quorum: Option<&QuorumInfo>,
    kept: &BTreeSet<i32>,
    outcome: &mut KafkaOutcome,
) {
    let prior = quorum::status_of(kc);
    let step = match (prior.mode, quorum) {
        (QuorumMode::Dynamic, Some(q)) => {
            let mut controllers = spec_controllers(desired);
            controllers.extend(kept.iter().filter(|id| q.voter(**id).is_some()));
            // A node runs the controller role once its Pod is ready and runs its plan.
            let running: BTreeSet<i32> = controllers
                .iter()
                .copied()
                .filter(|id| runs_its_plan(kc, desired, pods, *id))
                .collect();
            Some(plan_quorum(&QuorumInput {
                controllers: &controllers,
                running: &running,
                quorum: q,
                fetch_timeout_ms: QUORUM_FETCH_TIMEOUT_MS,
            }))
        }
        _ => None,
    };
    let mut failure = None;
    let mut refused = None;
    match &step {
        Some(QuorumStep::Add { id, directory_id }) => {
            let listeners = controller_endpoints(kc, ctx, *id);
            let result = admin
                .add_raft_voter(
                    Some(cluster_id),
                    *id,
                    directory_id,
                    &listeners,
                    VOTER_CHANGE_TIMEOUT_MS,
                )
                .await;
            failure = report(ctx, kc, &step, result).await;
        }
        Some(QuorumStep::Remove {
            id, directory_id, ..
        }) => {
            let result = admin
                .remove_raft_voter(Some(cluster_id), *id, directory_id)
                .await;
            failure = report(ctx, kc, &step, result).await;
        }
        Some(QuorumStep::Refused(why)) => refused = Some(why.clone()),
        Some(QuorumStep::Wait(why)) if prior.message.as_deref() != Some(why.as_str()) => {
            tracing::info!(%why, "KRaft membership change waits");
        }
        Some(QuorumStep::Wait(_)) => {}
        Some(QuorumStep::Settled) | None => {}
    }
    ctx.events
        .problem(ctx, kc, Reason::QuorumChangeRefused, refused.as_deref())
        .await;
    ctx.events
        .problem(ctx, kc, Reason::QuorumChangeFailed, failure.as_deref())
        .await;
    let mut observed = observed_status(&prior, quorum, step.as_ref());
    if let Some(f) = &failure {
        observed.message = Some(f.clone());
    }
    outcome.quorum_changing = step
        .as_ref()
        .is_some_and(|s| !matches!(s, QuorumStep::Settled));
    outcome.quorum_refused = refused;
    outcome.quorum = Some(observed);
}

/// Sends the change's outcome to the log and Events; returns the failure line, if any.
async fn report(
    ctx: &Context,
    kc: &KafkaCluster,
    step: &Option<QuorumStep>,
    result: Result<(), KafkaError>,
) -> Option<String> {
    let what = step
        .as_ref()
        .and_then(QuorumStep::describe)
        .unwrap_or_default();
    match result {
        Ok(()) => {
            tracing::info!(change = %what, "KRaft voters changed");
            ctx.events.did(ctx, kc, Reason::QuorumChanged, &what).await;
            None
        }
        // The leader may have committed it anyway (it timed out, or lost leadership while
        // the change was pending): the next reconcile reads the voters again before planning
        // anything else.
        Err(e)
            if matches!(
                e.code(),
                Some(codes::REQUEST_TIMED_OUT | codes::NOT_LEADER_OR_FOLLOWER)
            ) =>
        {
            tracing::info!(change = %what, error = %e, "KRaft voter change: outcome unknown, reading the voters again");
            None
        }
        Err(e) => {
            tracing::warn!(change = %what, error = %e, "KRaft voter change failed");
            Some(format!("{what} failed: {e}"))
        }
    }
}

/// Node `id`'s Pod is ready and runs what the plan says (nothing to restart).
fn runs_its_plan(kc: &KafkaCluster, desired: &Desired, pods: &[Pod], id: i32) -> bool {
    let pod = broker_pod(kc, pods, id);
    let planned = desired
        .pods
        .iter()
        .find(|p| p.name_any() == names::broker_pod(kc, id));
    pod.is_some_and(pod_ready) && restart_due(planned, pod).is_none()
}

/// The controller listener of node `id` as its AddRaftVoter names it: the name Kafka knows
/// the listener by, the node's stable host name, the port.
fn controller_endpoints(kc: &KafkaCluster, ctx: &Context, id: i32) -> Vec<RaftEndpoint> {
    let ns = kc.namespace().unwrap_or_default();
    kc.spec
        .listeners
        .internal
        .iter()
        .filter(|l| l.used_for_controller)
        .map(|l| RaftEndpoint {
            name: l.name.to_uppercase(),
            host: names::broker_host(kc, &ns, id, &ctx.settings.cluster_domain),
            port: l.port as u16,
        })
        .collect()
}

/// Reads the finalized metadata.version, raises it when the upgrade is done (once; an Event
/// says so), and records `status.kafkaVersion` in `outcome`.
pub async fn metadata_version(
    kc: &KafkaCluster,
    ctx: &Context,
    admin: &AdminClient,
    desired: &Desired,
    pods: &[Pod],
    outcome: &mut KafkaOutcome,
) {
    let prior = kc
        .status
        .as_ref()
        .and_then(|s| s.kafka_version.clone())
        .unwrap_or_default();
    let versions: Vec<_> = desired
        .brokers
        .iter()
        .map(|b| node_version(kc, b))
        .collect();
    // Every node runs its plan: Pod ready, nothing to restart, nothing moving.
    let pods_current = desired
        .brokers
        .iter()
        .all(|b| runs_its_plan(kc, desired, pods, b.id));
    let settled = pods_current
        && !outcome.rolling
        && outcome.restart_due.is_empty()
        && !outcome.replicas_moving
        && !desired.waiting_for_address;
    let running = settled
        .then(|| {
            let first = versions.first().copied().flatten()?;
            versions
                .iter()
                .all(|v| *v == Some(first))
                .then(|| first.to_string())
        })
        .flatten()
        .or(prior.running.clone());
    let mut status = KafkaVersionStatus {
        running,
        ..prior.clone()
    };
    if admin.nodes().is_empty() {
        outcome.kafka_version = Some(status);
        return;
    }
    let features = match admin.features().await {
        Ok(f) => f,
        Err(e) => {
            tracing::info!(error = %e, "cannot read the finalized features");
            outcome.kafka_version = Some(status);
            return;
        }
    };
    let finalized = features.finalized.get(METADATA_VERSION_FEATURE).copied();
    let step = plan_metadata(&MetadataInput {
        versions,
        settled,
        finalized,
        supported_max: features
            .supported
            .get(METADATA_VERSION_FEATURE)
            .map(|(_, max)| *max),
        pin: kc.spec.kafka.metadata_version.clone(),
    });
    let mut level = finalized;
    let mut failure = None;
    status.message = None;
    match step {
        MetadataStep::Current => {}
        MetadataStep::Wait(why) => status.message = Some(why),
        MetadataStep::Raise { from, to } => {
            let update = FeatureUpdate {
                feature: METADATA_VERSION_FEATURE.to_string(),
                max_version_level: to,
                upgrade_type: UpgradeType::Upgrade,
            };
            let what = format!(
                "metadata.version raised from {} to {}",
                describe_level(from),
                describe_level(to)
            );
            match admin.update_features(&[update], false).await {
                Ok(()) => {
                    tracing::info!(from, to, "metadata.version raised");
                    ctx.events
                        .did(ctx, kc, Reason::MetadataVersionRaised, &what)
                        .await;
                    level = Some(to);
                }
                Err(e) => {
                    tracing::warn!(from, to, error = %e, "raising metadata.version failed");
                    let line = format!(
                        "raising metadata.version to {} failed: {e}",
                        describe_level(to)
                    );
                    status.message = Some(line.clone());
                    failure = Some(line);
                    // Kafka's refusal (a node or a controller registration without the
                    // level) stands until the cluster changes; a lost answer is retried soon.
                    outcome.metadata_pending = e.is_retriable();
                }
            }
        }
    }
    ctx.events
        .problem(ctx, kc, Reason::MetadataVersionFailed, failure.as_deref())
        .await;
    status.metadata_version_level = level.map(i32::from);
    status.metadata_version = level.and_then(level_name);
    outcome.kafka_version = Some(status);
}
