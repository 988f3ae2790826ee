//! Alert-driven actions, planned: what an alert the webhook received asks for
//! ([`AlertRequest`]), whether the guardrails let it happen and which concrete spec change it
//! becomes ([`decide`]), and the spec that change leads to ([`changed_spec`]). Pure functions:
//! the webhook's HTTP side lives in `crate::alerts`, the writes in `controller::alerts`.
use std::collections::BTreeMap;

use crate::api::{
    ALERT_LOG_LIMIT, AlertActionRecord, AlertActionState, AlertsMode, AlertsStatus, FiringAlert,
    KafkaCluster, SpecChange, VolumeTarget,
};

/// The cluster an alert is for (its `namespace` and `kafkacluster` labels).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterKey {
    pub namespace: String,
    pub name: String,
}

/// One alert of a webhook notification, as the alert contract reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRequest {
    pub cluster: ClusterKey,
    /// Alertmanager's fingerprint; with `starts_at` the alert's identity.
    pub fingerprint: String,
    pub starts_at: String,
    pub alertname: String,
    /// `firing` (else `resolved`).
    pub firing: bool,
    /// Labelled `pier_blocks_roll="true"`: counts against rolling restarts while it fires.
    pub blocks_roll: bool,
    /// What it asks for: `None` when it names no action (a declared action may still match its
    /// labels).
    pub action: Option<ActionRequest>,
    /// The alert's labels and annotations, for declared actions' matches and templates.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// An action an alert names (`pier_action` and its parameters).
#[derive(Debug, Clone, PartialEq)]
pub enum ActionRequest {
    /// Add `count` broker-only nodes, in `config_group` (default: the group most brokers use).
    Upscale {
        config_group: Option<String>,
        count: u32,
    },
    /// Remove this broker, or the least-loaded one.
    Downscale { broker: Option<i32> },
    /// Add a volume to a broker or to every broker of a config group.
    AddDisk {
        target: VolumeTarget,
        size: String,
        storage_class: Option<String>,
        mount_path: Option<String>,
    },
    /// Grow a volume (the only one of its target when `mount_path` is not given).
    ResizeDisk {
        target: VolumeTarget,
        mount_path: Option<String>,
        size: String,
    },
    /// An action declared in `spec.alerts.actions`, by name.
    Declared { name: String },
}

impl ActionRequest {
    /// The name the action log and metrics use.
    pub fn name(&self) -> &str {
        match self {
            ActionRequest::Upscale { .. } => "upscale",
            ActionRequest::Downscale { .. } => "downscale",
            ActionRequest::AddDisk { .. } => "addDisk",
            ActionRequest::ResizeDisk { .. } => "resizeDisk",
            ActionRequest::Declared { name } => name,
        }
    }
}

/// Firing roll-blocking alerts recorded for the cluster: each is a failed roll health check.
pub fn roll_blocking(kc: &KafkaCluster) -> u32 {
    if kc.spec.alerts.mode == AlertsMode::Off {
        return 0;
    }
    let firing = kc
        .status
        .as_ref()
        .and_then(|s| s.alerts.as_ref())
        .map_or(0, |a| a.firing.len());
    u32::try_from(firing).unwrap_or(u32::MAX)
}

/// `alerts` with a roll-blocking alert's new state; `None` when nothing changes.
pub fn note_firing(alerts: &AlertsStatus, alert: &AlertRequest) -> Option<AlertsStatus> {
    let known = alerts
        .firing
        .iter()
        .any(|f| f.fingerprint == alert.fingerprint);
    let mut next = alerts.clone();
    match (alert.blocks_roll && alert.firing, known) {
        (true, false) => next.firing.push(FiringAlert {
            fingerprint: alert.fingerprint.clone(),
            alertname: alert.alertname.clone(),
            starts_at: alert.starts_at.clone(),
        }),
        (false, true) => next.firing.retain(|f| f.fingerprint != alert.fingerprint),
        _ => return None,
    }
    Some(next)
}

/// `log` with `record` appended, the oldest finished entries dropped beyond the limit (pending
/// ones are never dropped: they are still to be done).
pub fn append_record(log: &mut Vec<AlertActionRecord>, record: AlertActionRecord) {
    log.push(record);
    while log.len() > ALERT_LOG_LIMIT {
        match log.iter().position(|r| !r.state.pending()) {
            Some(oldest_done) => {
                log.remove(oldest_done);
            }
            None => break,
        }
    }
}

/// Whether the log already holds this alert (its fingerprint and start).
pub fn already_recorded(log: &[AlertActionRecord], alert: &AlertRequest) -> bool {
    log.iter()
        .any(|r| r.fingerprint == alert.fingerprint && r.starts_at == alert.starts_at)
}

/// Whether a change adds or removes brokers or volumes (at most one such action is in flight).
pub fn is_scale(change: &SpecChange, declared_scale: bool) -> bool {
    match change {
        SpecChange::MergePatch { .. } => declared_scale,
        _ => true,
    }
}

/// The state a decided record starts in under `mode`.
pub fn initial_state(mode: AlertsMode) -> AlertActionState {
    match mode {
        AlertsMode::Enforce => AlertActionState::Pending,
        AlertsMode::DryRun | AlertsMode::Off => AlertActionState::DryRun,
    }
}
