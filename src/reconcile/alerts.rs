//! Alert-driven actions, planned: what an alert the webhook received asks for
//! ([`AlertRequest`]), whether the guardrails let it happen and which concrete spec change it
//! becomes ([`decide`]), and the bounded log and firing list kept in status. Pure functions:
//! the webhook's HTTP side lives in `crate::alerts`, the writes in `controller::alerts`.
use std::collections::BTreeMap;
use std::str::FromStr;

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

/// Roll-blocking alerts kept in status at most.
const FIRING_LIMIT: usize = 200;

/// The actions every cluster has without declaring them.
pub const BUILT_IN_ACTIONS: [&str; 4] = ["upscale", "downscale", "addDisk", "resizeDisk"];

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
        // Bounded like the CRD says; any firing alert already blocks rolls.
        (true, false) if alerts.firing.len() >= FIRING_LIMIT => return None,
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

/// An alert the cluster's spec cannot act on (HTTP 422: the alert, or the rule behind it, is
/// wrong, not the moment).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("alert {alertname} ({fingerprint}): {reason}")]
pub struct Unprocessable {
    pub alertname: String,
    pub fingerprint: String,
    pub reason: String,
}

/// What to do about one alert.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Its fingerprint and start are in the log already: a re-sent or duplicated alert.
    Duplicate,
    /// It asks for no action (a roll-blocking alert, a resolved one, or `mode: off`).
    NoAction,
    /// Append this record: an action to apply (`Pending`), to report (`DryRun`), or a refusal.
    Record(Box<AlertActionRecord>),
}

/// The moment of a decision, as the log writes it.
#[derive(Debug, Clone, Copy)]
pub struct Now<'a> {
    pub ms: i64,
    pub rfc3339: &'a str,
}

/// Replicas per broker id, to pick the least-loaded broker for a downscale without a broker.
pub type BrokerLoads = BTreeMap<i32, u64>;

/// Decides what one alert does to `kc`. `loads` picks the broker of a downscale that names
/// none (without them the choice is left to the controller); `render` fills a declared
/// action's merge patch from the alert.
pub fn decide(
    kc: &KafkaCluster,
    alert: &AlertRequest,
    loads: Option<&BrokerLoads>,
    render: &dyn Fn(&serde_json::Value, &AlertRequest) -> Result<serde_json::Value, String>,
    now: Now<'_>,
) -> Result<Decision, Unprocessable> {
    let settings = &kc.spec.alerts;
    if settings.mode == AlertsMode::Off || !alert.firing {
        return Ok(Decision::NoAction);
    }
    let log = log_of(kc);
    if already_recorded(log, alert) {
        return Ok(Decision::Duplicate);
    }
    let unprocessable = |reason: String| Unprocessable {
        alertname: alert.alertname.clone(),
        fingerprint: alert.fingerprint.clone(),
        reason,
    };
    let declared_match = || {
        settings.actions.iter().find(|a| {
            !a.match_labels.is_empty()
                && a.match_labels
                    .iter()
                    .all(|(k, v)| alert.labels.get(k) == Some(v))
        })
    };
    let request = match &alert.action {
        Some(r) => r.clone(),
        None => match declared_match() {
            Some(a) => ActionRequest::Declared {
                name: a.name.clone(),
            },
            None => return Ok(Decision::NoAction),
        },
    };
    let (change, scale) = match plan_change(kc, &request, loads, alert, render) {
        Ok(planned) => planned,
        Err(ChangeError::Unprocessable(reason)) => return Err(unprocessable(reason)),
        Err(ChangeError::Refused(reason)) => {
            return Ok(Decision::Record(Box::new(record(
                alert,
                &request,
                None,
                AlertActionState::Refused,
                Some(reason),
                now,
            ))));
        }
    };
    let refusal = guardrail(kc, &request, &change, scale, now);
    let (state, message) = match refusal {
        Some(why) => (AlertActionState::Refused, Some(why)),
        None => (initial_state(settings.mode), None),
    };
    let change = (state != AlertActionState::Refused).then_some(change);
    Ok(Decision::Record(Box::new(record(
        alert, &request, change, state, message, now,
    ))))
}

fn record(
    alert: &AlertRequest,
    request: &ActionRequest,
    change: Option<SpecChange>,
    state: AlertActionState,
    message: Option<String>,
    now: Now<'_>,
) -> AlertActionRecord {
    let done = state != AlertActionState::Pending;
    AlertActionRecord {
        fingerprint: alert.fingerprint.clone(),
        starts_at: alert.starts_at.clone(),
        alertname: alert.alertname.clone(),
        action: request.name().to_string(),
        change,
        state,
        message,
        received_at: now.rfc3339.to_string(),
        done_at: done.then(|| now.rfc3339.to_string()),
    }
}

fn log_of(kc: &KafkaCluster) -> &[AlertActionRecord] {
    kc.status
        .as_ref()
        .and_then(|s| s.alerts.as_ref())
        .map_or(&[], |a| a.actions.as_slice())
}

enum ChangeError {
    /// The alert asks for something this cluster does not have (422).
    Unprocessable(String),
    /// It cannot be done on this cluster as it is (recorded as refused).
    Refused(String),
}

/// Nodes with the broker role in the spec.
fn broker_count(kc: &KafkaCluster) -> usize {
    kc.spec.brokers.iter().filter(|b| is_broker(b)).count()
}

fn is_broker(b: &crate::api::BrokerSpec) -> bool {
    b.roles.contains(&crate::api::Role::Broker)
}

/// The concrete change an action makes, and whether it is a scale action.
fn plan_change(
    kc: &KafkaCluster,
    request: &ActionRequest,
    loads: Option<&BrokerLoads>,
    alert: &AlertRequest,
    render: &dyn Fn(&serde_json::Value, &AlertRequest) -> Result<serde_json::Value, String>,
) -> Result<(SpecChange, bool), ChangeError> {
    let spec = &kc.spec;
    let broker = |id: i32| {
        spec.brokers
            .iter()
            .find(|b| b.id == id)
            .ok_or_else(|| ChangeError::Unprocessable(format!("the cluster has no broker {id}")))
    };
    let group_exists = |g: &str| {
        if spec.broker_config_groups.contains_key(g) {
            Ok(())
        } else {
            Err(ChangeError::Unprocessable(format!(
                "the cluster has no config group {g:?}"
            )))
        }
    };
    match request {
        ActionRequest::Upscale {
            config_group,
            count,
        } => {
            let group = match config_group {
                Some(g) => {
                    group_exists(g)?;
                    Some(g.clone())
                }
                None => most_used_group(kc),
            };
            let has_storage = group
                .as_ref()
                .and_then(|g| spec.broker_config_groups.get(g))
                .is_some_and(|g| !g.storage.is_empty());
            if !has_storage {
                return Err(ChangeError::Refused(
                    "an upscale adds brokers to a config group with storage; name one with the \
                     config_group label (the brokers' group has no storage)"
                        .into(),
                ));
            }
            Ok((
                SpecChange::AddBrokers {
                    ids: next_ids(kc, *count),
                    config_group: group,
                },
                true,
            ))
        }
        ActionRequest::Downscale { broker: Some(id) } => {
            let b = broker(*id)?;
            if b.roles.contains(&crate::api::Role::Controller) {
                return Err(ChangeError::Refused(format!(
                    "broker {id} is a KRaft controller: a downscale removes only broker-only nodes"
                )));
            }
            Ok((SpecChange::RemoveBroker { id: Some(*id) }, true))
        }
        ActionRequest::Downscale { broker: None } => match loads {
            // Chosen by the controller, which asks Kafka, before it changes the spec.
            None if has_removable(kc) => Ok((SpecChange::RemoveBroker { id: None }, true)),
            None => Err(ChangeError::Refused(NO_REMOVABLE.into())),
            Some(loads) => match least_loaded(kc, loads) {
                Some(id) => Ok((SpecChange::RemoveBroker { id: Some(id) }, true)),
                None => Err(ChangeError::Refused(NO_REMOVABLE.into())),
            },
        },
        ActionRequest::AddDisk {
            target,
            size,
            storage_class,
            mount_path,
        } => {
            let used = mount_paths(kc, target)?;
            let mount_path = match mount_path {
                Some(m) if used.contains(m) => {
                    return Err(ChangeError::Refused(format!(
                        "{} already has a volume at {m}",
                        describe(target)
                    )));
                }
                Some(m) => m.clone(),
                None => (1..)
                    .map(|n| format!("/kafka-data-{n}"))
                    .find(|m| !used.contains(m))
                    .unwrap_or_default(),
            };
            if used.len() >= 16 {
                return Err(ChangeError::Refused(format!(
                    "{} has 16 volumes, the most a broker may have",
                    describe(target)
                )));
            }
            Ok((
                SpecChange::AddVolume {
                    target: target.clone(),
                    mount_path,
                    size: size.clone(),
                    storage_class_name: storage_class.clone(),
                },
                true,
            ))
        }
        ActionRequest::ResizeDisk {
            target,
            mount_path,
            size,
        } => {
            let own = own_storage(kc, target)?;
            let volume = match mount_path {
                Some(m) => own.iter().find(|s| &s.mount_path == m),
                None if own.len() == 1 => own.first(),
                None => {
                    return Err(ChangeError::Unprocessable(format!(
                        "{} has {} volumes of its own: say which with the mount_path label",
                        describe(target),
                        own.len()
                    )));
                }
            };
            let Some(volume) = volume else {
                return Err(ChangeError::Unprocessable(format!(
                    "{} has no volume of its own at {}{}",
                    describe(target),
                    mount_path.as_deref().unwrap_or("?"),
                    match target {
                        VolumeTarget::Broker(_) =>
                            " (a volume of its config group is resized through the group)",
                        VolumeTarget::ConfigGroup(_) => "",
                    }
                )));
            };
            match (
                crate::api::quantity_units(size),
                crate::api::quantity_units(&volume.size),
            ) {
                (Some(want), Some(have)) if want > have => {}
                (Some(_), Some(_)) => {
                    return Err(ChangeError::Refused(format!(
                        "volume {} of {} is {} already; volumes only grow",
                        volume.mount_path,
                        describe(target),
                        volume.size
                    )));
                }
                _ => {
                    return Err(ChangeError::Unprocessable(format!(
                        "size {size:?} is not a Kubernetes quantity"
                    )));
                }
            }
            Ok((
                SpecChange::ResizeVolume {
                    target: target.clone(),
                    mount_path: volume.mount_path.clone(),
                    size: size.clone(),
                },
                true,
            ))
        }
        ActionRequest::Declared { name } => {
            let Some(action) = spec.alerts.actions.iter().find(|a| &a.name == name) else {
                return Err(ChangeError::Unprocessable(format!(
                    "unknown action {name:?}: not a built-in (upscale, downscale, addDisk, \
                     resizeDisk) nor declared in spec.alerts.actions"
                )));
            };
            let invalid = kc
                .status
                .as_ref()
                .and_then(|s| s.alerts.as_ref())
                .and_then(|a| {
                    a.invalid_actions
                        .iter()
                        .find(|p| p.starts_with(&format!("action {name}:")))
                });
            if let Some(problem) = invalid {
                return Err(ChangeError::Refused(problem.clone()));
            }
            let patch = render(&action.merge_patch, alert).map_err(|e| {
                ChangeError::Unprocessable(format!("action {name:?} cannot be filled: {e}"))
            })?;
            Ok((SpecChange::MergePatch { patch }, action.scale))
        }
    }
}

const NO_REMOVABLE: &str =
    "no broker-only node to remove (controllers are never removed by a downscale)";

fn has_removable(kc: &KafkaCluster) -> bool {
    kc.spec
        .brokers
        .iter()
        .any(|b| b.roles == [crate::api::Role::Broker])
}

/// The broker-only node with the fewest replicas (among equals the newest, highest id).
pub fn least_loaded(kc: &KafkaCluster, loads: &BrokerLoads) -> Option<i32> {
    let load = |id: &i32| loads.get(id).copied().unwrap_or(0);
    kc.spec
        .brokers
        .iter()
        .filter(|b| b.roles == [crate::api::Role::Broker])
        .map(|b| b.id)
        .min_by_key(|id| (load(id), std::cmp::Reverse(*id)))
}

fn describe(target: &VolumeTarget) -> String {
    match target {
        VolumeTarget::Broker(id) => format!("broker {id}"),
        VolumeTarget::ConfigGroup(g) => format!("config group {g:?}"),
    }
}

/// The volumes a target has of its own (a broker's, not its group's).
fn own_storage<'a>(
    kc: &'a KafkaCluster,
    target: &VolumeTarget,
) -> Result<&'a [crate::api::StorageSpec], ChangeError> {
    match target {
        VolumeTarget::Broker(id) => kc
            .spec
            .brokers
            .iter()
            .find(|b| b.id == *id)
            .map(|b| b.storage.as_slice())
            .ok_or_else(|| ChangeError::Unprocessable(format!("the cluster has no broker {id}"))),
        VolumeTarget::ConfigGroup(g) => kc
            .spec
            .broker_config_groups
            .get(g)
            .map(|g| g.storage.as_slice())
            .ok_or_else(|| {
                ChangeError::Unprocessable(format!("the cluster has no config group {g:?}"))
            }),
    }
}

/// Every mount path the target's brokers have (a broker's own and its group's; for a group,
/// also those of its brokers' own volumes).
fn mount_paths(
    kc: &KafkaCluster,
    target: &VolumeTarget,
) -> Result<std::collections::BTreeSet<String>, ChangeError> {
    let spec = &kc.spec;
    let group_paths = |g: &Option<String>| {
        g.as_ref()
            .and_then(|g| spec.broker_config_groups.get(g))
            .map(|g| {
                g.storage
                    .iter()
                    .map(|s| s.mount_path.clone())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    own_storage(kc, target)?;
    let brokers: Vec<&crate::api::BrokerSpec> = match target {
        VolumeTarget::Broker(id) => spec.brokers.iter().filter(|b| b.id == *id).collect(),
        VolumeTarget::ConfigGroup(g) => spec
            .brokers
            .iter()
            .filter(|b| b.config_group.as_deref() == Some(g))
            .collect(),
    };
    let mut paths: std::collections::BTreeSet<String> = match target {
        VolumeTarget::ConfigGroup(g) => group_paths(&Some(g.clone())).into_iter().collect(),
        VolumeTarget::Broker(_) => Default::default(),
    };
    for b in brokers {
        paths.extend(b.storage.iter().map(|s| s.mount_path.clone()));
        paths.extend(group_paths(&b.config_group));
    }
    Ok(paths)
}

/// The config group most broker-role nodes use (the first by name among equals).
fn most_used_group(kc: &KafkaCluster) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for b in kc.spec.brokers.iter().filter(|b| is_broker(b)) {
        if let Some(g) = &b.config_group {
            *counts.entry(g).or_default() += 1;
        }
    }
    counts
        .iter()
        .max_by_key(|(name, n)| (**n, std::cmp::Reverse(**name)))
        .map(|(name, _)| name.to_string())
}

/// `count` ids never used by this cluster: above every id in the spec, in status (removed
/// brokers included) and in the action log.
fn next_ids(kc: &KafkaCluster, count: u32) -> Vec<i32> {
    let status = kc.status.as_ref();
    let logged = log_of(kc).iter().filter_map(|r| match &r.change {
        Some(SpecChange::AddBrokers { ids, .. }) => ids.iter().max().copied(),
        _ => None,
    });
    let highest = kc
        .spec
        .brokers
        .iter()
        .map(|b| b.id)
        .chain(
            status
                .into_iter()
                .flat_map(|s| s.brokers.iter().map(|b| b.id)),
        )
        .chain(logged)
        .max()
        .unwrap_or(-1);
    (1..=count as i32).map(|n| highest + n).collect()
}

/// Why the guardrails refuse a change, if they do.
fn guardrail(
    kc: &KafkaCluster,
    request: &ActionRequest,
    change: &SpecChange,
    scale: bool,
    now: Now<'_>,
) -> Option<String> {
    let settings = &kc.spec.alerts;
    let log = log_of(kc);
    let name = request.name();
    let cooldown_ms = i64::from(settings.cooldown_seconds) * 1000;
    let recent = log.iter().rev().find(|r| {
        r.action == name
            && matches!(
                r.state,
                AlertActionState::Pending | AlertActionState::Applied | AlertActionState::DryRun
            )
    });
    if let Some(last) = recent {
        let at = k8s_openapi::jiff::Timestamp::from_str(&last.received_at)
            .map(|t| t.as_millisecond())
            .unwrap_or(now.ms);
        if now.ms - at < cooldown_ms {
            return Some(format!(
                "{name} ran at {} (alert {}): the cooldown of {} s has not passed",
                last.received_at, last.alertname, settings.cooldown_seconds
            ));
        }
    }
    if scale && is_scale(change, scale) {
        if let Some(p) = log
            .iter()
            .find(|r| r.state.pending() && r.change.as_ref().is_some_and(|c| is_scale(c, true)))
        {
            return Some(format!(
                "a scale action is in flight ({} for alert {})",
                p.action, p.alertname
            ));
        }
        if let Some(why) = scaling_in_progress(kc) {
            return Some(format!("a scale action is in flight: {why}"));
        }
    }
    let brokers = broker_count(kc);
    match change {
        SpecChange::AddBrokers { ids, .. } => {
            let max = settings.max_brokers.unwrap_or(200);
            let after = brokers + ids.len();
            if after > usize::try_from(max).unwrap_or(0) {
                return Some(format!(
                    "an upscale to {after} brokers exceeds maxBrokers {max}"
                ));
            }
        }
        SpecChange::RemoveBroker { .. } => {
            let min = usize::try_from(settings.min_brokers).unwrap_or(1);
            if brokers <= min {
                return Some(format!(
                    "a downscale from {brokers} brokers would go below minBrokers {min}"
                ));
            }
        }
        _ => {}
    }
    None
}

/// Brokers still being added or drained, or replicas moving: what a new scale would race.
fn scaling_in_progress(kc: &KafkaCluster) -> Option<String> {
    let status = kc.status.as_ref()?;
    if let Some(m) = &status.replica_moves {
        return Some(format!("replicas are moving ({:?})", m.kind));
    }
    let spec_ids: std::collections::BTreeSet<i32> = kc.spec.brokers.iter().map(|b| b.id).collect();
    let status_ids: std::collections::BTreeSet<i32> = status
        .brokers
        .iter()
        .filter(|b| b.phase != crate::api::BrokerPhase::Removed)
        .map(|b| b.id)
        .collect();
    if let Some(b) = status.brokers.iter().find(|b| {
        matches!(
            b.phase,
            crate::api::BrokerPhase::Pending | crate::api::BrokerPhase::Draining
        )
    }) {
        return Some(format!("broker {} is {:?}", b.id, b.phase));
    }
    if spec_ids != status_ids {
        return Some("the brokers in the spec are not all running yet".into());
    }
    None
}

/// What became of one alert of a notification.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Recorded in the log (pending, dry run or refused).
    Recorded(Box<AlertActionRecord>),
    /// Already in the log, as this action.
    Duplicate { action: String },
    /// No action asked for (its roll-blocking state may have changed).
    NoAction,
}

/// The alerts of one notification for one cluster, decided in order on `kc` (each seeing the
/// records of those before it): the cluster's next `status.alerts` and each alert's outcome.
pub fn plan_notification(
    kc: &KafkaCluster,
    alerts: &[AlertRequest],
    render: &dyn Fn(&serde_json::Value, &AlertRequest) -> Result<serde_json::Value, String>,
    now: Now<'_>,
) -> Result<(AlertsStatus, Vec<Outcome>), Unprocessable> {
    let mut working = kc.clone();
    let mut outcomes = Vec::with_capacity(alerts.len());
    for alert in alerts {
        let mut state = working
            .status
            .as_ref()
            .and_then(|s| s.alerts.clone())
            .unwrap_or_default();
        if working.spec.alerts.mode != AlertsMode::Off
            && let Some(next) = note_firing(&state, alert)
        {
            state = next;
        }
        let outcome = match decide(&working, alert, None, render, now)? {
            Decision::Duplicate => Outcome::Duplicate {
                action: log_of(&working)
                    .iter()
                    .find(|r| r.fingerprint == alert.fingerprint && r.starts_at == alert.starts_at)
                    .map(|r| r.action.clone())
                    .unwrap_or_default(),
            },
            Decision::NoAction => Outcome::NoAction,
            Decision::Record(record) => {
                append_record(&mut state.actions, (*record).clone());
                Outcome::Recorded(record)
            }
        };
        working.status.get_or_insert_with(Default::default).alerts = Some(state);
        outcomes.push(outcome);
    }
    let next = working.status.and_then(|s| s.alerts).unwrap_or_default();
    Ok((next, outcomes))
}

/// The Event text for a record: what the alert asked for and what became of it.
pub fn event_note(record: &AlertActionRecord) -> String {
    let what = record
        .change
        .as_ref()
        .map(describe_change)
        .unwrap_or_default();
    let head = format!("alert {} asked for {}", record.alertname, record.action);
    let why = record.message.as_deref().unwrap_or_default();
    match record.state {
        AlertActionState::Pending => format!("{head}: recorded, to {what}"),
        AlertActionState::Applied => format!("{head}: {what}"),
        AlertActionState::DryRun => format!("{head}: would {what} (alerts.mode is dryRun)"),
        AlertActionState::Refused => format!("{head}: refused, {why}"),
        AlertActionState::Failed => format!("{head} ({what}): failed, {why}"),
    }
}

/// A change in words, for Events.
pub fn describe_change(change: &SpecChange) -> String {
    let list = |ids: &[i32]| {
        ids.iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match change {
        SpecChange::AddBrokers { ids, config_group } => format!(
            "add broker(s) {}{}",
            list(ids),
            config_group
                .as_ref()
                .map(|g| format!(" in config group {g}"))
                .unwrap_or_default()
        ),
        SpecChange::RemoveBroker { id: Some(id) } => format!("remove broker {id} (drained first)"),
        SpecChange::RemoveBroker { id: None } => {
            "remove the least-loaded broker-only node (drained first)".into()
        }
        SpecChange::AddVolume {
            target,
            mount_path,
            size,
            ..
        } => format!(
            "add a {size} volume at {mount_path} to {}",
            describe(target)
        ),
        SpecChange::ResizeVolume {
            target,
            mount_path,
            size,
        } => format!("grow volume {mount_path} of {} to {size}", describe(target)),
        SpecChange::MergePatch { patch } => format!("merge {patch} into the spec"),
    }
}

/// Puts back as strings the numbers and booleans a template made where the spec's schema
/// wants strings (Kafka config values: `"{{ $labels.retention_ms }}"` stays `"86400000"`).
/// `schema` is the OpenAPI schema of the object `value` patches.
pub fn fit_to_schema(value: &mut serde_json::Value, schema: &serde_json::Value) {
    use serde_json::Value;
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Number(_) | Value::Bool(_) if schema.get("type") == Some(&Value::from("string")) => {
            *value = Value::String(value.to_string());
        }
        Value::Object(fields) => {
            for (key, item) in fields.iter_mut() {
                let sub = schema
                    .get("properties")
                    .and_then(|p| p.get(key))
                    .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
                if let Some(sub) = sub {
                    fit_to_schema(item, sub);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for item in items {
                    fit_to_schema(item, sub);
                }
            }
        }
        _ => {}
    }
}

/// How a spec change is written.
#[derive(Debug, Clone, PartialEq)]
pub enum SpecPatch {
    /// A JSON Patch that first tests the object's resourceVersion (and the entry it edits), so
    /// it fails instead of applying to a spec that moved meanwhile. Not server-side apply: one
    /// field manager applying each change alone would drop the fields of its earlier changes.
    Json(json_patch::Patch),
    /// A JSON merge patch of the object.
    Merge(serde_json::Value),
    /// The spec already has it.
    Nothing,
}

/// A JSON Pointer token (RFC 6901).
fn pointer_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// The patch that makes `change` in `kc`'s spec; `Nothing` when the spec has it already, so
/// doing a change again changes nothing more.
pub fn spec_patch(kc: &KafkaCluster, change: &SpecChange) -> Result<SpecPatch, String> {
    use serde_json::{Value, json};
    let mut ops: Vec<Value> = vec![json!({
        "op": "test", "path": "/metadata/resourceVersion", "value": kc.metadata.resource_version,
    })];
    let broker_index = |id: i32| kc.spec.brokers.iter().position(|b| b.id == id);
    // Where a target's own storage list is, and what it holds.
    let storage_of =
        |target: &VolumeTarget| -> Result<(String, &[crate::api::StorageSpec]), String> {
            match target {
                VolumeTarget::Broker(id) => {
                    let i = broker_index(*id).ok_or(format!("the cluster has no broker {id}"))?;
                    Ok((
                        format!("/spec/brokers/{i}/storage"),
                        &kc.spec.brokers[i].storage,
                    ))
                }
                VolumeTarget::ConfigGroup(g) => {
                    let group = kc
                        .spec
                        .broker_config_groups
                        .get(g)
                        .ok_or(format!("the cluster has no config group {g:?}"))?;
                    Ok((
                        format!("/spec/brokerConfigGroups/{}/storage", pointer_token(g)),
                        &group.storage,
                    ))
                }
            }
        };
    let test_broker = |ops: &mut Vec<Value>, target: &VolumeTarget| {
        if let VolumeTarget::Broker(id) = target
            && let Some(i) = broker_index(*id)
        {
            ops.push(json!({"op": "test", "path": format!("/spec/brokers/{i}/id"), "value": id}));
        }
    };
    match change {
        SpecChange::AddBrokers { ids, config_group } => {
            for id in ids.iter().filter(|id| broker_index(**id).is_none()) {
                let mut b = json!({"id": id, "roles": ["broker"]});
                if let Some(g) = config_group {
                    b["configGroup"] = json!(g);
                }
                ops.push(json!({"op": "add", "path": "/spec/brokers/-", "value": b}));
            }
        }
        SpecChange::RemoveBroker { id: None } => {
            return Err("the broker to remove has not been chosen".into());
        }
        SpecChange::RemoveBroker { id: Some(id) } => {
            if let Some(i) = broker_index(*id) {
                ops.push(
                    json!({"op": "test", "path": format!("/spec/brokers/{i}/id"), "value": id}),
                );
                ops.push(json!({"op": "remove", "path": format!("/spec/brokers/{i}")}));
            }
        }
        SpecChange::AddVolume {
            target,
            mount_path,
            size,
            storage_class_name,
        } => {
            let (path, storage) = storage_of(target)?;
            if !storage.iter().any(|s| &s.mount_path == mount_path) {
                let mut v = json!({"mountPath": mount_path, "size": size});
                if let Some(c) = storage_class_name {
                    v["storageClassName"] = json!(c);
                }
                test_broker(&mut ops, target);
                if storage.is_empty() {
                    ops.push(json!({"op": "add", "path": path, "value": [v]}));
                } else {
                    ops.push(json!({"op": "add", "path": format!("{path}/-"), "value": v}));
                }
            }
        }
        SpecChange::ResizeVolume {
            target,
            mount_path,
            size,
        } => {
            let (path, storage) = storage_of(target)?;
            let j = storage
                .iter()
                .position(|s| &s.mount_path == mount_path)
                .ok_or(format!("no volume at {mount_path}"))?;
            if &storage[j].size != size {
                test_broker(&mut ops, target);
                ops.push(json!({"op": "test", "path": format!("{path}/{j}/mountPath"), "value": mount_path}));
                ops.push(
                    json!({"op": "replace", "path": format!("{path}/{j}/size"), "value": size}),
                );
            }
        }
        SpecChange::MergePatch { patch } => return Ok(SpecPatch::Merge(json!({"spec": patch}))),
    }
    if ops.len() == 1 {
        return Ok(SpecPatch::Nothing);
    }
    serde_json::from_value(Value::Array(ops))
        .map(SpecPatch::Json)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AlertActionSpec, BrokerPhase, BrokerStatus, KafkaClusterStatus, Role};
    use crate::reconcile::tests::{broker, example};

    const NOW: Now<'static> = Now {
        ms: 1_800_000_000_000,
        rfc3339: "2027-01-15T08:00:00Z",
    };

    /// Three combined nodes 0-2 and broker-only 3 and 4 in group `default`, all running,
    /// alerts enforced.
    fn kc() -> KafkaCluster {
        let mut kc = example("kafkacluster-basic.yaml");
        for id in [3, 4] {
            let mut b = broker(id, &[Role::Broker]);
            b.config_group = Some("default".into());
            kc.spec.brokers.push(b);
        }
        kc.spec.alerts.mode = AlertsMode::Enforce;
        kc.status = Some(KafkaClusterStatus {
            brokers: (0..5)
                .map(|id| BrokerStatus {
                    id,
                    phase: BrokerPhase::Running,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        kc
    }

    fn alert(action: Option<ActionRequest>) -> AlertRequest {
        AlertRequest {
            cluster: ClusterKey {
                namespace: "kafka".into(),
                name: "basic".into(),
            },
            fingerprint: "f1".into(),
            starts_at: "2027-01-15T07:59:00Z".into(),
            alertname: "KafkaLoad".into(),
            firing: true,
            blocks_roll: false,
            action,
            labels: BTreeMap::from([("size".into(), "7".into())]),
            annotations: BTreeMap::new(),
        }
    }

    fn no_render(_: &serde_json::Value, _: &AlertRequest) -> Result<serde_json::Value, String> {
        Err("no templates here".into())
    }

    fn decided(kc: &KafkaCluster, a: &AlertRequest) -> AlertActionRecord {
        match decide(kc, a, None, &no_render, NOW) {
            Ok(Decision::Record(r)) => *r,
            other => panic!("expected a record, got {other:?}"),
        }
    }

    fn with_log(mut kc: KafkaCluster, records: Vec<AlertActionRecord>) -> KafkaCluster {
        kc.status.as_mut().unwrap().alerts = Some(AlertsStatus {
            actions: records,
            ..Default::default()
        });
        kc
    }

    fn upscale(count: u32) -> Option<ActionRequest> {
        Some(ActionRequest::Upscale {
            config_group: None,
            count,
        })
    }

    #[test]
    fn an_upscale_adds_broker_only_nodes_with_fresh_ids_in_the_busiest_group() {
        let r = decided(&kc(), &alert(upscale(2)));
        assert_eq!(r.state, AlertActionState::Pending);
        assert_eq!(r.action, "upscale");
        assert_eq!(
            r.change,
            Some(SpecChange::AddBrokers {
                ids: vec![5, 6],
                config_group: Some("default".into())
            })
        );
        assert_eq!(r.done_at, None);
    }

    #[test]
    fn ids_of_removed_brokers_and_earlier_actions_are_never_reused() {
        let mut kc = kc();
        kc.status.as_mut().unwrap().brokers.push(BrokerStatus {
            id: 9,
            phase: BrokerPhase::Removed,
            ..Default::default()
        });
        let r = decided(&kc, &alert(upscale(1)));
        assert_eq!(
            r.change,
            Some(SpecChange::AddBrokers {
                ids: vec![10],
                config_group: Some("default".into())
            })
        );
    }

    #[test]
    fn the_same_alert_twice_is_a_duplicate_and_a_new_start_is_not() {
        let first = decided(&kc(), &alert(upscale(1)));
        let mut done = first.clone();
        done.state = AlertActionState::Applied;
        let kc = with_log(kc(), vec![done]);
        assert_eq!(
            decide(&kc, &alert(upscale(1)), None, &no_render, NOW),
            Ok(Decision::Duplicate)
        );
        let mut later = alert(upscale(1));
        later.starts_at = "2027-01-15T09:00:00Z".into();
        let again = decided(&kc, &later);
        assert_eq!(again.state, AlertActionState::Refused, "cooldown");
        assert!(again.message.unwrap().contains("cooldown"));
    }

    #[test]
    fn after_the_cooldown_the_action_runs_again() {
        let mut old = decided(&kc(), &alert(upscale(1)));
        old.state = AlertActionState::Applied;
        old.received_at = "2027-01-15T07:00:00Z".into();
        let kc = with_log(kc(), vec![old]);
        let mut later = alert(upscale(1));
        later.fingerprint = "f2".into();
        assert_eq!(decided(&kc, &later).state, AlertActionState::Pending);
    }

    #[test]
    fn one_scale_action_in_flight_at_a_time() {
        let pending = decided(&kc(), &alert(upscale(1)));
        let kc_pending = with_log(kc(), vec![pending]);
        let mut disk = alert(Some(ActionRequest::AddDisk {
            target: VolumeTarget::Broker(3),
            size: "2Gi".into(),
            storage_class: None,
            mount_path: None,
        }));
        disk.fingerprint = "f2".into();
        let r = decided(&kc_pending, &disk);
        assert_eq!(r.state, AlertActionState::Refused);
        assert!(r.message.unwrap().contains("in flight"), "pending upscale");

        let mut draining = kc();
        draining.status.as_mut().unwrap().brokers[4].phase = BrokerPhase::Draining;
        let r = decided(&draining, &disk);
        assert!(r.message.unwrap().contains("broker 4 is Draining"));

        let mut unapplied = kc();
        unapplied.spec.brokers.pop();
        unapplied.status.as_mut().unwrap().brokers.pop();
        unapplied.spec.brokers.push(broker(7, &[Role::Broker]));
        let r = decided(&unapplied, &disk);
        assert!(r.message.unwrap().contains("not all running"));
    }

    #[test]
    fn min_and_max_brokers_bound_scaling() {
        let mut kc = kc();
        kc.spec.alerts.max_brokers = Some(6);
        let r = decided(&kc, &alert(upscale(2)));
        assert_eq!(r.state, AlertActionState::Refused);
        assert!(r.message.unwrap().contains("maxBrokers 6"));
        assert_eq!(r.change, None, "a refusal changes nothing");
        kc.spec.alerts.min_brokers = 5;
        let r = decided(&kc, &alert(Some(ActionRequest::Downscale { broker: None })));
        assert!(r.message.unwrap().contains("minBrokers 5"));
    }

    #[test]
    fn a_downscale_takes_the_least_loaded_broker_only_node() {
        let loads = BrokerLoads::from([(0, 1), (1, 1), (2, 1), (3, 40), (4, 12)]);
        let a = alert(Some(ActionRequest::Downscale { broker: None }));
        let Ok(Decision::Record(r)) = decide(&kc(), &a, Some(&loads), &no_render, NOW) else {
            panic!()
        };
        assert_eq!(r.change, Some(SpecChange::RemoveBroker { id: Some(4) }));
        // Without loads the controller chooses later.
        let r = decided(&kc(), &a);
        assert_eq!(r.change, Some(SpecChange::RemoveBroker { id: None }));
        // A controller is never removed by a downscale.
        let r = decided(
            &kc(),
            &alert(Some(ActionRequest::Downscale { broker: Some(1) })),
        );
        assert_eq!(r.state, AlertActionState::Refused);
        assert!(r.message.unwrap().contains("controller"));
        // An unknown broker is the alert's mistake.
        let err = decide(
            &kc(),
            &alert(Some(ActionRequest::Downscale { broker: Some(42) })),
            None,
            &no_render,
            NOW,
        )
        .unwrap_err();
        assert!(err.reason.contains("no broker 42"), "{err}");
    }

    #[test]
    fn add_disk_picks_a_free_mount_path_and_refuses_a_taken_one() {
        let a = alert(Some(ActionRequest::AddDisk {
            target: VolumeTarget::Broker(3),
            size: "2Gi".into(),
            storage_class: Some("fast".into()),
            mount_path: None,
        }));
        let r = decided(&kc(), &a);
        assert_eq!(
            r.change,
            Some(SpecChange::AddVolume {
                target: VolumeTarget::Broker(3),
                mount_path: "/kafka-data-1".into(),
                size: "2Gi".into(),
                storage_class_name: Some("fast".into())
            })
        );
        let taken = alert(Some(ActionRequest::AddDisk {
            target: VolumeTarget::Broker(3),
            size: "2Gi".into(),
            storage_class: None,
            mount_path: Some("/var/lib/kafka/data0".into()),
        }));
        let r = decided(&kc(), &taken);
        assert_eq!(r.state, AlertActionState::Refused);
        assert!(r.message.unwrap().contains("already has a volume"));
    }

    #[test]
    fn resize_grows_own_volumes_only() {
        let grow_group = alert(Some(ActionRequest::ResizeDisk {
            target: VolumeTarget::ConfigGroup("default".into()),
            mount_path: None,
            size: "5Gi".into(),
        }));
        assert_eq!(
            decided(&kc(), &grow_group).change,
            Some(SpecChange::ResizeVolume {
                target: VolumeTarget::ConfigGroup("default".into()),
                mount_path: "/var/lib/kafka/data0".into(),
                size: "5Gi".into()
            })
        );
        let shrink = alert(Some(ActionRequest::ResizeDisk {
            target: VolumeTarget::ConfigGroup("default".into()),
            mount_path: None,
            size: "512Mi".into(),
        }));
        assert!(
            decided(&kc(), &shrink)
                .message
                .unwrap()
                .contains("only grow")
        );
        let of_group = alert(Some(ActionRequest::ResizeDisk {
            target: VolumeTarget::Broker(3),
            mount_path: Some("/var/lib/kafka/data0".into()),
            size: "5Gi".into(),
        }));
        let err = decide(&kc(), &of_group, None, &no_render, NOW).unwrap_err();
        assert!(err.reason.contains("through the group"), "{err}");
    }

    #[test]
    fn declared_actions_by_name_or_by_labels() {
        let mut kc = kc();
        kc.spec.alerts.actions.push(AlertActionSpec {
            name: "moreRetention".into(),
            match_labels: BTreeMap::from([("alertname".into(), "KafkaLoad".into())]),
            merge_patch: serde_json::json!({"kafka": {"clusterWideConfig": {"log.retention.ms": "{{ $labels.size }}"}}}),
            scale: false,
        });
        let render = |p: &serde_json::Value, _: &AlertRequest| Ok(p.clone());
        let mut by_labels = alert(None);
        by_labels
            .labels
            .insert("alertname".into(), "KafkaLoad".into());
        let Ok(Decision::Record(r)) = decide(&kc, &by_labels, None, &render, NOW) else {
            panic!()
        };
        assert_eq!(r.action, "moreRetention");
        assert!(matches!(r.change, Some(SpecChange::MergePatch { .. })));
        let unknown = alert(Some(ActionRequest::Declared {
            name: "nope".into(),
        }));
        let err = decide(&kc, &unknown, None, &render, NOW).unwrap_err();
        assert!(err.reason.contains("unknown action \"nope\""), "{err}");
        let failing = alert(Some(ActionRequest::Declared {
            name: "moreRetention".into(),
        }));
        let err = decide(&kc, &failing, None, &no_render, NOW).unwrap_err();
        assert!(err.reason.contains("cannot be filled"), "{err}");
    }

    #[test]
    fn dry_run_records_and_off_or_resolved_do_nothing() {
        let mut kc = kc();
        kc.spec.alerts.mode = AlertsMode::DryRun;
        let r = decided(&kc, &alert(upscale(1)));
        assert_eq!(r.state, AlertActionState::DryRun);
        assert!(r.change.is_some(), "a dry run says what it would do");
        kc.spec.alerts.mode = AlertsMode::Off;
        assert_eq!(
            decide(&kc, &alert(upscale(1)), None, &no_render, NOW),
            Ok(Decision::NoAction)
        );
        kc.spec.alerts.mode = AlertsMode::Enforce;
        let mut resolved = alert(upscale(1));
        resolved.firing = false;
        assert_eq!(
            decide(&kc, &resolved, None, &no_render, NOW),
            Ok(Decision::NoAction)
        );
    }

    #[test]
    fn patches_test_the_version_and_the_entry_they_edit_and_repeat_as_nothing() {
        let mut kc = kc();
        kc.metadata.resource_version = Some("42".into());
        let json = |change: &SpecChange| match spec_patch(&kc, change).unwrap() {
            SpecPatch::Json(p) => serde_json::to_value(&p).unwrap(),
            other => panic!("{other:?}"),
        };
        let rv =
            serde_json::json!({"op": "test", "path": "/metadata/resourceVersion", "value": "42"});
        assert_eq!(
            json(&SpecChange::AddBrokers {
                ids: vec![5],
                config_group: Some("default".into()),
            }),
            serde_json::json!([rv, {"op": "add", "path": "/spec/brokers/-",
                "value": {"id": 5, "roles": ["broker"], "configGroup": "default"}}])
        );
        assert_eq!(
            json(&SpecChange::RemoveBroker { id: Some(4) }),
            serde_json::json!([rv,
                {"op": "test", "path": "/spec/brokers/4/id", "value": 4},
                {"op": "remove", "path": "/spec/brokers/4"}])
        );
        assert_eq!(
            json(&SpecChange::AddVolume {
                target: VolumeTarget::Broker(3),
                mount_path: "/d1".into(),
                size: "1Gi".into(),
                storage_class_name: None,
            }),
            serde_json::json!([rv,
                {"op": "test", "path": "/spec/brokers/3/id", "value": 3},
                {"op": "add", "path": "/spec/brokers/3/storage", "value": [{"mountPath": "/d1", "size": "1Gi"}]}])
        );
        assert_eq!(
            json(&SpecChange::ResizeVolume {
                target: VolumeTarget::ConfigGroup("default".into()),
                mount_path: "/var/lib/kafka/data0".into(),
                size: "5Gi".into(),
            }),
            serde_json::json!([rv,
                {"op": "test", "path": "/spec/brokerConfigGroups/default/storage/0/mountPath", "value": "/var/lib/kafka/data0"},
                {"op": "replace", "path": "/spec/brokerConfigGroups/default/storage/0/size", "value": "5Gi"}])
        );
        // Done already: nothing to write.
        for done in [
            SpecChange::AddBrokers {
                ids: vec![3],
                config_group: None,
            },
            SpecChange::RemoveBroker { id: Some(9) },
            SpecChange::AddVolume {
                target: VolumeTarget::ConfigGroup("default".into()),
                mount_path: "/var/lib/kafka/data0".into(),
                size: "1Gi".into(),
                storage_class_name: None,
            },
            SpecChange::ResizeVolume {
                target: VolumeTarget::ConfigGroup("default".into()),
                mount_path: "/var/lib/kafka/data0".into(),
                size: "1Gi".into(),
            },
        ] {
            assert_eq!(
                spec_patch(&kc, &done).unwrap(),
                SpecPatch::Nothing,
                "{done:?}"
            );
        }
    }

    #[test]
    fn template_numbers_become_strings_where_the_schema_wants_strings() {
        let schema = serde_json::json!({"type": "object", "properties": {
            "kafka": {"type": "object", "properties": {
                "clusterWideConfig": {"type": "object", "additionalProperties": {"type": "string"}}
            }},
            "rollingUpgrade": {"type": "object", "properties": {"failureThreshold": {"type": "integer"}}},
            "brokers": {"type": "array", "items": {"type": "object", "properties": {"rack": {"type": "string"}}}}
        }});
        let mut patch = serde_json::json!({
            "kafka": {"clusterWideConfig": {"log.retention.ms": 86400000, "x": true}},
            "rollingUpgrade": {"failureThreshold": 2},
            "brokers": [{"rack": 1}]
        });
        fit_to_schema(&mut patch, &schema);
        assert_eq!(
            patch,
            serde_json::json!({
                "kafka": {"clusterWideConfig": {"log.retention.ms": "86400000", "x": "true"}},
                "rollingUpgrade": {"failureThreshold": 2},
                "brokers": [{"rack": "1"}]
            })
        );
    }

    #[test]
    fn roll_blocking_alerts_come_and_go() {
        let mut a = alert(None);
        a.blocks_roll = true;
        let empty = AlertsStatus::default();
        let firing = note_firing(&empty, &a).expect("added");
        assert_eq!(firing.firing.len(), 1);
        assert_eq!(note_firing(&firing, &a), None, "already there");
        a.firing = false;
        assert_eq!(note_firing(&firing, &a), Some(empty));
    }

    #[test]
    fn the_log_is_bounded_but_keeps_pending_records() {
        let mut log = Vec::new();
        let base = decided(&kc(), &alert(upscale(1)));
        for n in 0..(ALERT_LOG_LIMIT + 10) {
            let mut r = base.clone();
            r.fingerprint = format!("f{n}");
            if n != 0 {
                r.state = AlertActionState::Applied;
            }
            append_record(&mut log, r);
        }
        assert_eq!(log.len(), ALERT_LOG_LIMIT);
        assert_eq!(log[0].fingerprint, "f0", "the pending one stays");
        assert_eq!(log[1].fingerprint, "f11");
    }
}
