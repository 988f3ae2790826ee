//! Kubernetes Events of the controller, and the one rule that keeps them from storming: what
//! Pier did is an Event every time; a problem (a Warning) is an Event when it appears, not on
//! every reconcile while it lasts.
use std::collections::BTreeSet;

use kube::Resource;
use kube::ResourceExt;
use kube::runtime::events::{Event, EventType};

use super::Context;
use crate::api::KafkaCluster;

/// Why an Event is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    // Things Pier did.
    Applied,
    ConfigApplied,
    RollingRestart,
    RollFinished,
    ReplicaMoves,
    LogDirMoves,
    ScramUsers,
    Certificates,
    AlertAction,
    QuorumChanged,
    MetadataVersionRaised,
    // Problems.
    InvalidSpec,
    ApplyFailed,
    ConfigNotice,
    ConfigFailed,
    RollBlocked,
    RollPaused,
    BrokerCrashLooping,
    VolumeResizeRefused,
    RemovalRefused,
    ReplicaMoveFailed,
    LogDirMoveFailed,
    VolumeRemovalRefused,
    CruiseControlFailed,
    SecretUnavailable,
    ScramUserFailed,
    CertificatesFailed,
    AlertActionRefused,
    AlertActionFailed,
    QuorumChangeRefused,
    QuorumChangeFailed,
    MetadataVersionFailed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Applied => "Applied",
            Reason::ConfigApplied => "ConfigApplied",
            Reason::RollingRestart => "RollingRestart",
            Reason::RollFinished => "RollFinished",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::ApplyFailed => "ApplyFailed",
            Reason::ConfigNotice => "ConfigNotice",
            Reason::ConfigFailed => "ConfigFailed",
            Reason::RollBlocked => "RollBlocked",
            Reason::RollPaused => "RollPaused",
            Reason::BrokerCrashLooping => "BrokerCrashLooping",
            Reason::VolumeResizeRefused => "VolumeResizeRefused",
            Reason::ReplicaMoves => "ReplicaMoves",
            Reason::RemovalRefused => "RemovalRefused",
            Reason::ReplicaMoveFailed => "ReplicaMoveFailed",
            Reason::LogDirMoves => "LogDirMoves",
            Reason::LogDirMoveFailed => "LogDirMoveFailed",
            Reason::VolumeRemovalRefused => "VolumeRemovalRefused",
            Reason::CruiseControlFailed => "CruiseControlFailed",
            Reason::SecretUnavailable => "SecretUnavailable",
            Reason::ScramUsers => "ScramUsers",
            Reason::ScramUserFailed => "ScramUserFailed",
            Reason::Certificates => "Certificates",
            Reason::CertificatesFailed => "CertificatesFailed",
            Reason::AlertAction => "AlertAction",
            Reason::AlertActionRefused => "AlertActionRefused",
            Reason::AlertActionFailed => "AlertActionFailed",
            Reason::QuorumChanged => "QuorumChanged",
            Reason::MetadataVersionRaised => "MetadataVersionRaised",
            Reason::QuorumChangeRefused => "QuorumChangeRefused",
            Reason::QuorumChangeFailed => "QuorumChangeFailed",
            Reason::MetadataVersionFailed => "MetadataVersionFailed",
        }
    }
}

/// The problems each cluster has been told about, per reason (in memory: after an operator
/// restart a lasting problem is told once more).
#[derive(Default)]
pub struct Events {
    told: dashmap::DashMap<(String, Reason), BTreeSet<String>>,
}

fn key(kc: &KafkaCluster) -> String {
    format!("{}/{}", kc.namespace().unwrap_or_default(), kc.name_any())
}

impl Events {
    /// Something Pier did: a Normal Event.
    pub async fn did(&self, ctx: &Context, kc: &KafkaCluster, reason: Reason, note: &str) {
        publish(ctx, kc, EventType::Normal, reason, note).await;
    }

    /// A one-off problem (a refused alert action): a Warning Event each time.
    pub async fn warn(&self, ctx: &Context, kc: &KafkaCluster, reason: Reason, note: &str) {
        publish(ctx, kc, EventType::Warning, reason, note).await;
    }

    /// The problems of `reason` the cluster has now: a Warning Event for each one that was
    /// not there the last time; those gone are forgotten, so they are told again if they
    /// come back. Called on every reconcile that knows, with an empty slice when there are none.
    pub async fn problems(
        &self,
        ctx: &Context,
        kc: &KafkaCluster,
        reason: Reason,
        messages: &[String],
    ) {
        let now: BTreeSet<String> = messages.iter().cloned().collect();
        let before = self
            .told
            .insert((key(kc), reason), now.clone())
            .unwrap_or_default();
        for message in now.difference(&before) {
            publish(ctx, kc, EventType::Warning, reason, message).await;
        }
    }

    /// One problem of `reason`, or none.
    pub async fn problem(
        &self,
        ctx: &Context,
        kc: &KafkaCluster,
        reason: Reason,
        message: Option<&str>,
    ) {
        let messages: Vec<String> = message.map(str::to_string).into_iter().collect();
        self.problems(ctx, kc, reason, &messages).await;
    }

    pub fn forget(&self, namespace: &str, name: &str) {
        let cluster = format!("{namespace}/{name}");
        self.told.retain(|(k, _), _| *k != cluster);
    }
}

async fn publish(ctx: &Context, kc: &KafkaCluster, type_: EventType, reason: Reason, note: &str) {
    let event = Event {
        type_,
        reason: reason.as_str().into(),
        note: Some(note.to_string()),
        action: reason.as_str().into(),
        secondary: None,
    };
    let published = tokio::time::timeout(
        super::API_TIMEOUT,
        ctx.recorder.publish(&event, &kc.object_ref(&())),
    )
    .await;
    match published {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, reason = reason.as_str(), "cannot publish event"),
        Err(_) => tracing::warn!(reason = reason.as_str(), "publishing an event timed out"),
    }
}
