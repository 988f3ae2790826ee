//! What the controllers of a cluster's member resources (KafkaTopic, KafkaUser) share: finding
//! their cluster, the finalizer around each reconcile with per-object backoff, the Ready
//! condition, status written only when it changes, and Events on the object.
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::{Context, call};
use crate::api::{KafkaCluster, KafkaTopic, KafkaTopicStatus, KafkaUser, KafkaUserStatus};
use crate::reconcile::status::{condition, keep_condition_times};

/// A namespaced resource of one KafkaCluster with a status holding a Ready condition.
pub trait Member:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    type Status: Serialize + DeserializeOwned + PartialEq + Clone + Default + Send + Sync;
    /// The KafkaCluster's name (same namespace).
    fn cluster_name(&self) -> &str;
    fn status(&self) -> Option<&Self::Status>;
    fn conditions(status: &Self::Status) -> &[Condition];
    fn conditions_mut(status: &mut Self::Status) -> &mut Vec<Condition>;
}

impl Member for KafkaTopic {
    type Status = KafkaTopicStatus;
    fn cluster_name(&self) -> &str {
        &self.spec.cluster_ref.name
    }
    fn status(&self) -> Option<&KafkaTopicStatus> {
        self.status.as_ref()
    }
    fn conditions(status: &KafkaTopicStatus) -> &[Condition] {
        &status.conditions
    }
    fn conditions_mut(status: &mut KafkaTopicStatus) -> &mut Vec<Condition> {
        &mut status.conditions
    }
}

impl Member for KafkaUser {
    type Status = KafkaUserStatus;
    fn cluster_name(&self) -> &str {
        &self.spec.cluster_ref.name
    }
    fn status(&self) -> Option<&KafkaUserStatus> {
        self.status.as_ref()
    }
    fn conditions(status: &KafkaUserStatus) -> &[Condition] {
        &status.conditions
    }
    fn conditions_mut(status: &mut KafkaUserStatus) -> &mut Vec<Condition> {
        &mut status.conditions
    }
}

/// `namespace/name` of the object.
pub fn key<M: Member>(m: &M) -> String {
    format!("{}/{}", m.namespace().unwrap_or_default(), m.name_any())
}

/// `namespace/name` of its cluster (the key of the cluster's admin client).
pub fn cluster_key<M: Member>(m: &M) -> String {
    format!("{}/{}", m.namespace().unwrap_or_default(), m.cluster_name())
}

/// Its cluster, unless it is gone or being deleted.
pub fn live_cluster<M: Member>(m: &M, clusters: &Store<KafkaCluster>) -> Option<Arc<KafkaCluster>> {
    let cluster = clusters
        .get(&ObjectRef::new(m.cluster_name()).within(&m.namespace().unwrap_or_default()))?;
    cluster
        .metadata
        .deletion_timestamp
        .is_none()
        .then_some(cluster)
}

/// The cluster's admin client, as the cluster's own reconcile points it at brokers: `None`
/// before that reconcile ran in this process (just started: nothing to report yet).
pub fn admin<M: Member>(ctx: &Context, m: &M) -> Option<Arc<crate::kafka::AdminClient>> {
    ctx.admins.get(&cluster_key(m)).map(|a| a.clone())
}

/// Runs `apply` (or `cleanup` once the object is being deleted) inside the finalizer
/// `finalizer_name`, counting consecutive failures per object in `failures` for backoff.
pub async fn reconcile<M, E, A, AF, C, CF>(
    ctx: &Context,
    finalizer_name: &str,
    m: Arc<M>,
    failures: &dashmap::DashMap<String, u32>,
    apply: A,
    cleanup: C,
    wrap: impl FnOnce(String) -> E,
) -> Result<Action, E>
where
    M: Member,
    E: std::error::Error + Send + 'static,
    A: FnOnce(Arc<M>) -> AF,
    AF: Future<Output = Result<Action, E>>,
    C: FnOnce(Arc<M>) -> CF,
    CF: Future<Output = Result<Action, E>>,
{
    let api: Api<M> = Api::namespaced(ctx.client.clone(), &m.namespace().unwrap_or_default());
    let span = tracing::info_span!(
        "member",
        kind = %M::kind(&()),
        namespace = %m.namespace().unwrap_or_default(),
        name = %m.name_any()
    );
    let result = finalizer(&api, finalizer_name, m.clone(), |event| async {
        match event {
            finalizer::Event::Apply(m) => apply(m).await,
            finalizer::Event::Cleanup(m) => cleanup(m).await,
        }
    })
    .instrument(span)
    .await;
    match result {
        Ok(action) => {
            failures.remove(&key(m.as_ref()));
            if m.meta().deletion_timestamp.is_some() {
                // Cleaned up: its finalizer is gone, and so is the object soon.
                ctx.statuses_written.remove(&written_key(m.as_ref()));
            }
            Ok(action)
        }
        Err(e) => {
            *failures.entry(key(m.as_ref())).or_insert(0) += 1;
            Err(match e {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
                other => wrap(other.to_string()),
            })
        }
    }
}

/// The retry of a failed reconcile: exponential backoff by the object's consecutive failures.
pub fn retry<M: Member>(
    m: &M,
    err: &dyn std::fmt::Display,
    failures: &dashmap::DashMap<String, u32>,
) -> Action {
    let n = failures.get(&key(m)).map(|n| *n).unwrap_or(1);
    let delay = super::retry_delay(n);
    tracing::warn!(kind = %M::kind(&()), name = %m.name_any(), error = %err, failures = n, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// `status` with its Ready condition (for the object's generation) set.
pub fn with_ready<M: Member>(
    m: &M,
    mut status: M::Status,
    ready: bool,
    reason: &str,
    message: &str,
) -> M::Status {
    *M::conditions_mut(&mut status) = vec![condition(
        "Ready",
        ready,
        reason,
        message,
        m.meta().generation,
    )];
    status
}

/// Whether the status read says Ready with this reason.
pub fn has_reason<M: Member>(status: &M::Status, reason: &str) -> bool {
    M::conditions(status)
        .iter()
        .any(|c| c.type_ == "Ready" && c.reason == reason)
}

/// The object's status as this process knows it: the one it last wrote, else the cached
/// object's. A reconcile woken by another watch (a Secret, say) may read the object from a
/// cache that has not seen this process's last write yet; only this process (the leader)
/// writes these statuses, so its last write is the newest.
pub fn prior_status<M: Member>(ctx: &Context, m: &M) -> M::Status {
    ctx.statuses_written
        .get(&written_key(m))
        .and_then(|w| serde_json::from_value(w.clone()).ok())
        .or_else(|| m.status().cloned())
        .unwrap_or_default()
}

fn written_key<M: Member>(m: &M) -> String {
    format!("{}/{}", M::kind(&()), m.uid().unwrap_or_default())
}

/// Writes the status when it differs from the prior one ([`prior_status`]; a condition that
/// kept its status keeps its time): zero writes in the steady state.
pub async fn write_status<M: Member>(
    ctx: &Context,
    m: &M,
    mut new: M::Status,
) -> Result<(), super::Error> {
    let old = prior_status(ctx, m);
    keep_condition_times(M::conditions(&old), M::conditions_mut(&mut new));
    if new == old {
        return Ok(());
    }
    let api: Api<M> = Api::namespaced(ctx.client.clone(), &m.namespace().unwrap_or_default());
    let patch = serde_json::json!({ "status": super::status::merge_patch(&old, &new)? });
    call(
        format!("writing the status of {} {}", M::kind(&()), m.name_any()),
        api.patch_status(
            &m.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        ),
    )
    .await?;
    ctx.wrote();
    if let Ok(written) = serde_json::to_value(&new) {
        ctx.statuses_written.insert(written_key(m), written);
    }
    Ok(())
}

/// An Event on the object (bounded: a slow apiserver never stalls the reconcile).
pub async fn publish<M: Member>(ctx: &Context, m: &M, type_: EventType, reason: &str, note: &str) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.to_string()),
        action: reason.into(),
        secondary: None,
    };
    let published = tokio::time::timeout(
        super::API_TIMEOUT,
        ctx.recorder.publish(&event, &m.object_ref(&())),
    )
    .await;
    if !matches!(published, Ok(Ok(()))) {
        tracing::warn!(reason, kind = %M::kind(&()), "cannot publish an event");
    }
}
