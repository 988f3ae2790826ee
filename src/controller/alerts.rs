//! Alert actions, carried out. [`AlertRecorder`] is the webhook's sink: it records every alert
//! of a notification in its KafkaCluster's status (through the one status writer, at the
//! resourceVersion it read) before the webhook answers, so a restarted operator neither repeats
//! nor forgets one. [`apply_pending`], in the leader's reconcile, turns the oldest pending
//! record into a spec change written with the field manager `pier-alerts`, then marks it done.
use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

use super::events::Reason;
use super::status::{self, WriteError};
use super::{Context, Error, call};
use crate::alerts::{AlertSink, RecordSummary, SinkError};
use crate::api::{AlertActionState, AlertsMode, KafkaCluster, SpecChange};
use crate::reconcile::alerts::{
    self as plan, AlertRequest, ClusterKey, Now, Outcome, SpecPatch, Unprocessable,
};

/// The field manager of every spec change an alert makes.
pub const FIELD_MANAGER: &str = "pier-alerts";

/// How often a status write that lost a race is tried again before the webhook says 503.
const WRITE_ATTEMPTS: usize = 8;

impl From<Unprocessable> for SinkError {
    fn from(e: Unprocessable) -> Self {
        SinkError::Unprocessable(e.to_string())
    }
}

/// Records alerts in KafkaCluster statuses; one per process, shared by the webhook's requests.
pub struct AlertRecorder {
    ctx: Arc<Context>,
    /// One recording at a time per cluster in this process (a burst of duplicates then reads
    /// the first one's record instead of racing it); across replicas the resourceVersion
    /// precondition of the status write decides.
    locks: dashmap::DashMap<ClusterKey, Arc<tokio::sync::Mutex<()>>>,
}

impl AlertRecorder {
    pub fn new(ctx: Arc<Context>) -> Self {
        AlertRecorder {
            ctx,
            locks: dashmap::DashMap::new(),
        }
    }

    /// Records every alert (all clusters are checked before anything is written); returns
    /// once each record is in the API server.
    pub async fn record(&self, alerts: Vec<AlertRequest>) -> Result<RecordSummary, SinkError> {
        let mut by_cluster: BTreeMap<ClusterKey, Vec<AlertRequest>> = BTreeMap::new();
        for alert in alerts {
            by_cluster
                .entry(alert.cluster.clone())
                .or_default()
                .push(alert);
        }
        // Every cluster exists and takes its alerts, or nothing is written. (One cluster's
        // recording checks that itself before it writes.)
        if by_cluster.len() > 1 {
            for (key, alerts) in &by_cluster {
                let kc = self.get(key).await?;
                plan::plan_notification(&kc, alerts, &render, now().as_now())?;
            }
        }
        let mut total = RecordSummary::default();
        for (key, alerts) in &by_cluster {
            let tally = self.record_cluster(key, alerts).await?;
            total.recorded += tally.recorded;
            total.duplicates += tally.duplicates;
            total.refused += tally.refused;
            total.ignored += tally.ignored;
        }
        Ok(total)
    }

    async fn get(&self, key: &ClusterKey) -> Result<KafkaCluster, SinkError> {
        let api: Api<KafkaCluster> = Api::namespaced(self.ctx.client.clone(), &key.namespace);
        let found = call(
            format!("reading KafkaCluster {}/{}", key.namespace, key.name),
            api.get_opt(&key.name),
        )
        .await
        .map_err(|e| SinkError::Unavailable(e.to_string()))?;
        found.ok_or_else(|| {
            SinkError::Unprocessable(format!(
                "no KafkaCluster {} in namespace {}",
                key.name, key.namespace
            ))
        })
    }

    async fn record_cluster(
        &self,
        key: &ClusterKey,
        alerts: &[AlertRequest],
    ) -> Result<RecordSummary, SinkError> {
        let lock = self.locks.entry(key.clone()).or_default().clone();
        let _one_at_a_time = lock.lock().await;
        for _ in 0..WRITE_ATTEMPTS {
            let kc = self.get(key).await?;
            let stamp = now();
            let (next, outcomes) = plan::plan_notification(&kc, alerts, &render, stamp.as_now())?;
            let mut status = kc.status.clone().unwrap_or_default();
            if status.alerts.clone().unwrap_or_default() != next {
                status.alerts = Some(next);
                match status::write(&kc, &self.ctx, status).await {
                    Ok(()) => {}
                    Err(WriteError::Conflict) => continue,
                    Err(WriteError::Other(e)) => {
                        return Err(SinkError::Unavailable(e.to_string()));
                    }
                }
            }
            return Ok(self.report(&kc, &outcomes).await);
        }
        Err(SinkError::Unavailable(format!(
            "the status of KafkaCluster {}/{} kept changing while the alerts were recorded",
            key.namespace, key.name
        )))
    }

    /// Metrics and Events for what was recorded.
    async fn report(&self, kc: &KafkaCluster, outcomes: &[Outcome]) -> RecordSummary {
        let (ns, name) = (kc.namespace().unwrap_or_default(), kc.name_any());
        let mut tally = RecordSummary::default();
        for outcome in outcomes {
            match outcome {
                Outcome::NoAction => tally.ignored += 1,
                Outcome::Duplicate { action } => {
                    tally.duplicates += 1;
                    self.ctx
                        .metrics
                        .alert_action(&ns, &name, action, "duplicate");
                }
                Outcome::Recorded(record) => {
                    let result = super::metrics::result_label(record.state);
                    self.ctx
                        .metrics
                        .alert_action(&ns, &name, &record.action, result);
                    let note = plan::event_note(record);
                    match record.state {
                        AlertActionState::Refused => {
                            tally.refused += 1;
                            self.ctx
                                .events
                                .warn(&self.ctx, kc, Reason::AlertActionRefused, &note)
                                .await;
                        }
                        AlertActionState::DryRun => {
                            tally.recorded += 1;
                            self.ctx
                                .events
                                .did(&self.ctx, kc, Reason::AlertAction, &note)
                                .await;
                        }
                        _ => tally.recorded += 1,
                    }
                    tracing::info!(
                        namespace = %ns,
                        cluster = %name,
                        alert = %record.alertname,
                        fingerprint = %record.fingerprint,
                        action = %record.action,
                        state = ?record.state,
                        "alert recorded"
                    );
                }
            }
        }
        tally
    }
}

/// Fills a declared action's merge patch from the alert.
fn render(patch: &serde_json::Value, alert: &AlertRequest) -> Result<serde_json::Value, String> {
    let mut rendered = crate::alerts::template::render(patch, &alert.labels, &alert.annotations)
        .map_err(|e| e.to_string())?;
    plan::fit_to_schema(&mut rendered, spec_schema());
    Ok(rendered)
}

/// The OpenAPI schema of the KafkaCluster spec, from the CRD Pier generates.
fn spec_schema() -> &'static serde_json::Value {
    static SCHEMA: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(KafkaCluster::crd()).unwrap_or_default();
        crd.pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec")
            .cloned()
            .unwrap_or_default()
    })
}

/// The webhook's sink.
impl AlertSink for AlertRecorder {
    fn record(
        &self,
        alerts: Vec<AlertRequest>,
    ) -> futures::future::BoxFuture<'_, Result<RecordSummary, SinkError>> {
        Box::pin(AlertRecorder::record(self, alerts))
    }
}

struct Stamp {
    ms: i64,
    rfc3339: String,
}

impl Stamp {
    fn as_now(&self) -> Now<'_> {
        Now {
            ms: self.ms,
            rfc3339: &self.rfc3339,
        }
    }
}

fn now() -> Stamp {
    let t = k8s_openapi::jiff::Timestamp::now();
    Stamp {
        ms: t.as_millisecond(),
        rfc3339: t
            .round(k8s_openapi::jiff::Unit::Second)
            .map_or_else(|_| t.to_string(), |r| r.to_string()),
    }
}

/// Applies the oldest pending alert action of `kc`, if any, and records what became of it.
/// Returns whether it wrote (the reconcile then starts again from the new object).
pub async fn apply_pending(
    kc: &KafkaCluster,
    ctx: &Context,
    admin: &crate::kafka::AdminClient,
) -> Result<bool, Error> {
    let Some(mut alerts) = kc.status.as_ref().and_then(|s| s.alerts.clone()) else {
        return Ok(false);
    };
    let Some(index) = alerts.actions.iter().position(|r| r.state.pending()) else {
        return Ok(false);
    };
    let (ns, name) = (kc.namespace().unwrap_or_default(), kc.name_any());
    let stamp = now();
    let mut record = alerts.actions[index].clone();
    let mut written = kc.clone();
    if kc.spec.alerts.mode != AlertsMode::Enforce {
        record.state = AlertActionState::DryRun;
        record.message = Some("alerts.mode changed before it was applied".into());
    } else {
        match record.change.clone() {
            // The least-loaded broker is chosen (and recorded) before the spec changes, so a
            // restart in between removes the same one.
            Some(SpecChange::RemoveBroker { id: None }) => {
                let loads = replica_loads(admin).await;
                match loads.and_then(|l| plan::least_loaded(kc, &l)) {
                    Some(id) => {
                        record.change = Some(SpecChange::RemoveBroker { id: Some(id) });
                    }
                    None => {
                        record.state = AlertActionState::Failed;
                        record.message = Some(
                            "cannot choose the least-loaded broker: Kafka's metadata is not available or no broker-only node is left"
                                .into(),
                        );
                    }
                }
            }
            Some(change) => match write_change(kc, ctx, &change).await {
                Ok(after) => {
                    record.state = AlertActionState::Applied;
                    written = after;
                }
                Err(e) => match refused_by_api(&e) {
                    Some(reason) => {
                        record.state = AlertActionState::Failed;
                        record.message = Some(format!("the API server refused it: {reason}"));
                    }
                    None => return Err(e),
                },
            },
            None => {
                record.state = AlertActionState::Failed;
                record.message = Some("the record holds no change".into());
            }
        }
    }
    if !record.state.pending() {
        record.done_at = Some(stamp.rfc3339.clone());
    }
    let what = record
        .change
        .as_ref()
        .map(plan::describe_change)
        .unwrap_or_default();
    alerts.actions[index] = record.clone();
    // After a spec change `written` is newer than `kc`: its status may hold alerts recorded
    // meanwhile, which stay; only this record changes.
    let mut status = written.status.clone().unwrap_or_default();
    let mut fresh = status.alerts.clone().unwrap_or_default();
    match fresh
        .actions
        .iter_mut()
        .find(|r| r.fingerprint == record.fingerprint && r.starts_at == record.starts_at)
    {
        Some(r) => *r = record.clone(),
        None => fresh = alerts,
    }
    status.alerts = Some(fresh);
    status::write(&written, ctx, status).await?;
    if !record.state.pending() {
        ctx.metrics.alert_action(
            &ns,
            &name,
            &record.action,
            super::metrics::result_label(record.state),
        );
    }
    let note = plan::event_note(&record);
    match record.state {
        AlertActionState::Applied => ctx.events.did(ctx, kc, Reason::AlertAction, &note).await,
        AlertActionState::Failed => {
            ctx.events
                .warn(ctx, kc, Reason::AlertActionFailed, &note)
                .await
        }
        _ => {}
    }
    tracing::info!(
        namespace = %ns, cluster = %name, alert = %record.alertname, action = %record.action,
        state = ?record.state, change = %what, "alert action carried out"
    );
    Ok(true)
}

/// The API server's reason when it refused a request for good (a 4xx other than a conflict or
/// throttling, which are worth retrying).
fn refused_by_api(e: &Error) -> Option<&str> {
    match e {
        Error::Kube {
            source: kube::Error::Api(e),
            ..
        } if (400..500).contains(&e.code) && e.code != 409 && e.code != 429 => Some(&e.message),
        _ => None,
    }
}

/// Replicas per broker, from Kafka's metadata.
async fn replica_loads(admin: &crate::kafka::AdminClient) -> Option<plan::BrokerLoads> {
    let md = match admin.metadata(None).await {
        Ok(md) => md,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read Kafka's metadata to choose a broker");
            return None;
        }
    };
    let mut loads = plan::BrokerLoads::new();
    for b in &md.brokers {
        loads.entry(b.id).or_default();
    }
    for t in &md.topics {
        for p in &t.partitions {
            for r in &p.replicas {
                *loads.entry(*r).or_default() += 1;
            }
        }
    }
    Some(loads)
}

/// Writes a change to the spec as `pier-alerts`; returns the object after it.
async fn write_change(
    kc: &KafkaCluster,
    ctx: &Context,
    change: &SpecChange,
) -> Result<KafkaCluster, Error> {
    let api: Api<KafkaCluster> =
        Api::namespaced(ctx.client.clone(), &kc.namespace().unwrap_or_default());
    let name = kc.name_any();
    // Planned on the object as it is now: the reconcile's copy may be behind the webhook's.
    let fresh = call(format!("reading KafkaCluster {name}"), api.get(&name)).await?;
    let kc = &fresh;
    let patch = plan::spec_patch(kc, change).map_err(|e| Error::Kube {
        what: format!("planning the alert action on {name}"),
        source: kube::Error::Service(e.into()),
    })?;
    let what = format!("changing the spec of {name} for an alert");
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let after = match patch {
        SpecPatch::Nothing => return Ok(kc.clone()),
        SpecPatch::Json(p) => {
            match call(what, api.patch(&name, &params, &Patch::<()>::Json(p))).await {
                Ok(after) => after,
                // A failed `test`: the object moved since it was read; plan again.
                Err(Error::Kube {
                    source: kube::Error::Api(e),
                    ..
                }) if e.code == 422 && e.message.to_lowercase().contains("test") => {
                    return Err(Error::Conflict);
                }
                Err(e) => return Err(e),
            }
        }
        SpecPatch::Merge(p) => call(what, api.patch(&name, &params, &Patch::Merge(&p))).await?,
    };
    ctx.wrote();
    Ok(after)
}

/// The declared actions' check: a hash of what was checked and the problems found.
pub struct DeclaredCheck {
    pub hash: Option<String>,
    pub problems: Vec<String>,
}

/// Checks `spec.alerts.actions` with a server-side dry run of each merge patch (placeholders
/// filled with `1`) when they changed since the last check recorded in status; `None` when
/// nothing changed (no API call: the steady state writes nothing).
pub async fn check_declared(
    kc: &KafkaCluster,
    ctx: &Context,
) -> Result<Option<DeclaredCheck>, Error> {
    let actions = &kc.spec.alerts.actions;
    let hash = (!actions.is_empty()).then(|| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_string(actions)
            .unwrap_or_default()
            .hash(&mut h);
        format!("{:016x}", h.finish())
    });
    let checked = kc
        .status
        .as_ref()
        .and_then(|s| s.alerts.as_ref())
        .and_then(|a| a.checked_actions.clone());
    if checked == hash {
        return Ok(None);
    }
    let api: Api<KafkaCluster> =
        Api::namespaced(ctx.client.clone(), &kc.namespace().unwrap_or_default());
    let params = PatchParams {
        dry_run: true,
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let mut problems = Vec::new();
    for action in actions {
        let rendered = match crate::alerts::template::render_with_ones(&action.merge_patch) {
            Ok(mut r) => {
                plan::fit_to_schema(&mut r, spec_schema());
                r
            }
            Err(e) => {
                problems.push(format!("action {}: {e}", action.name));
                continue;
            }
        };
        let patch = serde_json::json!({"spec": rendered});
        let tried = call(
            format!("checking alert action {} of {}", action.name, kc.name_any()),
            api.patch(&kc.name_any(), &params, &Patch::Merge(&patch)),
        )
        .await;
        if let Err(e) = tried {
            match refused_by_api(&e) {
                Some(reason) => problems.push(format!(
                    "action {}: its patch would make the spec invalid: {reason}",
                    action.name
                )),
                None => return Err(e),
            }
        }
    }
    if !problems.is_empty() {
        tracing::warn!(problems = ?problems, "declared alert actions refused");
    }
    Ok(Some(DeclaredCheck { hash, problems }))
}
