//! The alert-driven part of a KafkaCluster: what Pier may do when Alertmanager reports an alert
//! for it (`spec.alerts`), its broker metrics (`spec.monitoring`), and the action log and the
//! firing roll-blocking alerts kept in status (`status.alerts`), so a restarted operator neither
//! repeats nor forgets an action.
use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Seconds after an action on a cluster before the same action may run again on it.
pub const DEFAULT_ALERT_COOLDOWN_SECONDS: i32 = 300;
/// Entries of the action log kept in status; older ones are dropped first.
pub const ALERT_LOG_LIMIT: usize = 50;
/// The port of each broker's Prometheus JMX exporter, unless the spec says otherwise.
pub const DEFAULT_METRICS_PORT: i32 = 9404;

/// What alerts may do to this cluster. Actions are spec changes Pier writes with the field
/// manager `pier-alerts` (so `kubectl get -o yaml --show-managed-fields` and GitOps tools show
/// who changed what) and reports in an Event and in `status.alerts.actions`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.maxBrokers) || self.minBrokers <= self.maxBrokers").message("minBrokers must not exceed maxBrokers"))]
pub struct AlertsSpec {
    /// `enforce` acts, `dryRun` (the default) only reports what it would do in an Event and
    /// the action log, `off` ignores this cluster's alerts (roll-blocking ones included).
    #[serde(default)]
    pub mode: AlertsMode,
    /// Seconds after an action before the same action may run again on this cluster.
    #[serde(default = "default_cooldown")]
    #[schemars(range(min = 0, max = 86400))]
    pub cooldown_seconds: i32,
    /// A downscale never leaves fewer brokers (nodes with the broker role) than this.
    #[serde(default = "default_min_brokers")]
    #[schemars(range(min = 1, max = 200))]
    pub min_brokers: i32,
    /// An upscale never makes more brokers than this (default: no limit below 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 200))]
    pub max_brokers: Option<i32>,
    /// Further actions, declared as data: an alert selects one by its name (`pier_action`) or
    /// by matching its labels, and the action's JSON merge patch, with `{{ $labels.x }}` and
    /// `{{ $annotations.y }}` filled from the alert, is applied to the spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(a, self.filter(b, b.name == a.name).size() == 1)").message("alert action names must differ"))]
    pub actions: Vec<AlertActionSpec>,
}

impl Default for AlertsSpec {
    fn default() -> Self {
        AlertsSpec {
            mode: AlertsMode::default(),
            cooldown_seconds: default_cooldown(),
            min_brokers: default_min_brokers(),
            max_brokers: None,
            actions: Vec::new(),
        }
    }
}

fn default_cooldown() -> i32 {
    DEFAULT_ALERT_COOLDOWN_SECONDS
}

fn default_min_brokers() -> i32 {
    1
}

/// Whether alerts act on a cluster.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum AlertsMode {
    Enforce,
    #[default]
    DryRun,
    Off,
}

/// An alert action declared as data.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AlertActionSpec {
    /// The value of an alert's `pier_action` that selects this action; not one of the
    /// built-ins (upscale, downscale, addDisk, resizeDisk).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]*$")
    )]
    #[x_kube(validation = Rule::new("!(self in ['upscale', 'downscale', 'addDisk', 'resizeDisk'])").message("the built-in action names cannot be redeclared"))]
    pub name: String,
    /// Alert labels that select this action for an alert without `pier_action` (all must be
    /// equal); empty: only selected by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub match_labels: BTreeMap<String, String>,
    /// A JSON merge patch (RFC 7386) of the KafkaCluster `spec`. String values may hold
    /// `{{ $labels.NAME }}` and `{{ $annotations.NAME }}`; a value that is only a placeholder
    /// becomes a number or boolean when the alert's text is one. Checked against the API server
    /// (a dry run) when declared, with each placeholder filled with `1`, and again before it acts.
    #[schemars(schema_with = "crate::api::alerts::any_object")]
    pub merge_patch: serde_json::Value,
    /// The action changes the number of brokers or their volumes: it then counts as the
    /// cluster's one scale action in flight.
    #[serde(default)]
    pub scale: bool,
}

/// Broker metrics: every broker runs the Prometheus JMX exporter java agent with the rules
/// Pier ships, on a `metrics` port of its Pod and per-broker Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Run the exporter (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Its port.
    #[serde(default = "default_metrics_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: i32,
}

impl Default for MonitoringSpec {
    fn default() -> Self {
        MonitoringSpec {
            enabled: true,
            port: DEFAULT_METRICS_PORT,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_metrics_port() -> i32 {
    DEFAULT_METRICS_PORT
}

/// What status says about alerts: the action log and the roll-blocking alerts firing now.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertsStatus {
    /// Every alert acted on (or refused), newest last, at most 50: an alert whose fingerprint
    /// and start time are here is never acted on again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub actions: Vec<AlertActionRecord>,
    /// Alerts labelled `pier_blocks_roll="true"` firing now: while any fires, rolling
    /// restarts pause (each counts as a failed health check).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 200))]
    pub firing: Vec<FiringAlert>,
    /// The declared actions (`spec.alerts.actions`) last checked with a dry run, as a hash:
    /// they are checked again only when they change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_actions: Option<String>,
    /// What the check found wrong with declared actions (the `AlertActionsValid` condition
    /// says it too); such an action is refused when an alert asks for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub invalid_actions: Vec<String>,
}

/// A roll-blocking alert that fires.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FiringAlert {
    pub fingerprint: String,
    pub alertname: String,
    pub starts_at: String,
}

/// One alert and what was done about it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertActionRecord {
    /// Alertmanager's fingerprint of the alert; with `startsAt`, the key of this record.
    pub fingerprint: String,
    pub starts_at: String,
    pub alertname: String,
    /// upscale, downscale, addDisk, resizeDisk or a declared action's name.
    pub action: String,
    /// The spec change, fixed when the alert was received so that doing it again after a
    /// restart changes nothing more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<SpecChange>,
    pub state: AlertActionState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the webhook recorded it (RFC 3339).
    pub received_at: String,
    /// When it was applied, refused or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<String>,
}

/// Where an alert action stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum AlertActionState {
    /// Recorded; the controller applies it next.
    Pending,
    /// The spec was changed.
    Applied,
    /// `dryRun`: reported, not applied.
    DryRun,
    /// A guardrail said no (message says which); nothing changed.
    Refused,
    /// The API server refused the change (message says why); nothing changed.
    Failed,
}

impl AlertActionState {
    /// Still to be applied.
    pub fn pending(self) -> bool {
        self == AlertActionState::Pending
    }
}

/// A spec change an alert action makes, concrete enough to be applied again without effect.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SpecChange {
    /// New broker-only nodes with these ids (their config group's settings).
    AddBrokers {
        ids: Vec<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config_group: Option<String>,
    },
    /// Remove this broker (drained first, as any broker removed from the spec); `None` until
    /// the least-loaded broker has been chosen.
    RemoveBroker {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<i32>,
    },
    /// A new volume on these brokers, or on every broker of a config group.
    AddVolume {
        target: VolumeTarget,
        mount_path: String,
        size: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        storage_class_name: Option<String>,
    },
    /// Grow the volume at `mountPath` to `size`.
    ResizeVolume {
        target: VolumeTarget,
        mount_path: String,
        size: String,
    },
    /// A declared action's merge patch, filled from the alert.
    MergePatch {
        #[schemars(schema_with = "crate::api::alerts::any_object")]
        patch: serde_json::Value,
    },
}

/// The brokers a volume action is for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum VolumeTarget {
    Broker(i32),
    ConfigGroup(String),
}

/// A free-form JSON object in the CRD schema (`x-kubernetes-preserve-unknown-fields`).
pub fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}
