//! The KafkaCluster controller: the Kubernetes side effects of the plans made in `reconcile`.
//! Server-side apply (field manager `pier`) of what changed, deletion of what a removed broker
//! left, the xDS snapshot of the cluster's Envoys, Events and status. An object whose applied
//! hash annotation matches the plan is not written again, so a reconcile with nothing to change
//! makes zero write calls.
mod apply;
pub mod leader;
mod operations;
mod status;

use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use crate::api::KafkaCluster;
use crate::reconcile::{self, Observed, PlanError, Settings, names};
use crate::xds::{Snapshot, SnapshotCache, translate};
use apply::Mode;

pub const FIELD_MANAGER: &str = "pier";
pub const FINALIZER: &str = "kafka.pier.dev/cleanup";

/// Errors of one reconcile; they are retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("serialising {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("cannot read random bytes for a cluster id: {0}")]
    Random(std::io::Error),
}

/// Shared state of the controller.
pub struct Context {
    pub client: Client,
    pub cache: Arc<SnapshotCache>,
    pub settings: Settings,
    pub recorder: Recorder,
    /// Write calls made to the API server (create/apply/patch/delete).
    pub writes: Counter,
    /// Reconciles run.
    pub reconciles: Counter,
    /// Reconciles that failed (and are retried with backoff).
    pub reconcile_errors: Counter,
    /// Broker Pods deleted by rolling restarts.
    pub broker_restarts: Counter,
    /// IncrementalAlterConfigs calls that changed live configuration.
    pub dynamic_config_changes: Counter,
    /// Consecutive failed reconciles per cluster (`namespace/name`), for backoff.
    failures: dashmap::DashMap<String, u32>,
    /// Kafka admin client per cluster (`namespace/name`), with its cached connections.
    admins: dashmap::DashMap<String, Arc<crate::kafka::AdminClient>>,
}

impl Context {
    pub fn new(client: Client, cache: Arc<SnapshotCache>, settings: Settings) -> Arc<Self> {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "pier".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Arc::new(Self {
            client,
            cache,
            settings,
            recorder,
            writes: Counter::default(),
            reconciles: Counter::default(),
            reconcile_errors: Counter::default(),
            broker_restarts: Counter::default(),
            dynamic_config_changes: Counter::default(),
            failures: dashmap::DashMap::new(),
            admins: dashmap::DashMap::new(),
        })
    }

    /// The cluster's admin client, pointed at `nodes` (broker id → `host:port`).
    pub(crate) fn admin(
        &self,
        cluster: &str,
        nodes: std::collections::BTreeMap<i32, String>,
    ) -> Arc<crate::kafka::AdminClient> {
        let admin = self
            .admins
            .entry(cluster.to_string())
            .or_insert_with(|| {
                // Short: a hung broker must not stall the whole reconcile for minutes.
                let options = crate::kafka::AdminOptions {
                    call_timeout: Duration::from_secs(10),
                    max_attempts: 3,
                    deadline: Duration::from_secs(20),
                    ..Default::default()
                };
                Arc::new(crate::kafka::AdminClient::new(nodes.clone(), options))
            })
            .clone();
        admin.set_nodes(nodes);
        admin
    }

    pub(crate) fn wrote(&self) {
        self.writes.inc();
    }

    /// Registers the controller's metrics.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "pier_kube_writes",
            "Write calls made to the Kubernetes API",
            self.writes.clone(),
        );
        registry.register(
            "pier_reconciles",
            "KafkaCluster reconciles run",
            self.reconciles.clone(),
        );
        registry.register(
            "pier_reconcile_errors",
            "KafkaCluster reconciles that failed",
            self.reconcile_errors.clone(),
        );
        registry.register(
            "pier_broker_restarts",
            "Broker Pods deleted by rolling restarts",
            self.broker_restarts.clone(),
        );
        registry.register(
            "pier_dynamic_config_changes",
            "Live configuration changes applied through the Kafka admin protocol",
            self.dynamic_config_changes.clone(),
        );
    }

    async fn event(&self, kc: &KafkaCluster, type_: EventType, reason: &str, note: String) {
        let ev = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &kc.object_ref(&())).await {
            tracing::warn!(error = %e, "cannot publish event");
        }
    }
}

/// Runs the controller until the stream ends: every KafkaCluster in `namespace` (all when
/// `None`), woken by changes of the objects it owns.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    let kcs = scoped::<KafkaCluster>(&client, namespace.as_deref());
    let pods = scoped::<Pod>(&client, namespace.as_deref());
    let cms = scoped::<ConfigMap>(&client, namespace.as_deref());
    let svcs = scoped::<Service>(&client, namespace.as_deref());
    let deps = scoped::<Deployment>(&client, namespace.as_deref());
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=pier");
    Controller::new(kcs, watcher::Config::default())
        .owns(pods, owned.clone())
        .owns(cms, owned.clone())
        .owns(svcs, owned.clone())
        .owns(deps, owned)
        .shutdown_on_signal()
        .run(reconcile_cluster, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile failed");
            }
        })
        .await;
}

/// An API for one namespace, or all.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn error_policy(kc: Arc<KafkaCluster>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = format!("{}/{}", kc.namespace().unwrap_or_default(), kc.name_any());
    ctx.reconcile_errors.inc();
    let failures = {
        let mut n = ctx.failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = retry_delay(failures);
    tracing::warn!(cluster = %kc.name_any(), error = %err, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Exponential backoff: 1 s, 2 s, 4 s, … up to 5 minutes.
pub fn retry_delay(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(9);
    Duration::from_secs(secs.min(300))
}

async fn reconcile_cluster(kc: Arc<KafkaCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.reconciles.inc();
    let ns = kc.namespace().unwrap_or_default();
    let api: Api<KafkaCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let had_finalizer = kc.finalizers().iter().any(|f| f == FINALIZER);
    let kc_name = kc.name_any();
    let result = finalizer(&api, FINALIZER, kc, |event| async {
        match event {
            FinalizerEvent::Apply(kc) => apply_cluster(&kc, &ctx).await,
            FinalizerEvent::Cleanup(kc) => cleanup(&kc, &ctx).await,
        }
    })
    .await;
    if !had_finalizer {
        ctx.wrote();
    }
    if result.is_ok() {
        ctx.failures.remove(&format!("{ns}/{}", kc_name));
    }
    result.map_err(|e| Error::Finalizer(e.to_string()))
}

/// The cluster is being deleted: its Envoys get no config any more; Kubernetes' garbage
/// collector removes the owned objects (PVCs only when they are owned, see reconcile).
async fn cleanup(kc: &KafkaCluster, ctx: &Context) -> Result<Action, Error> {
    let group = crate::model::group_name(&kc.namespace().unwrap_or_default(), &kc.name_any());
    ctx.cache.remove_group(&group);
    ctx.admins.remove(&format!(
        "{}/{}",
        kc.namespace().unwrap_or_default(),
        kc.name_any()
    ));
    tracing::info!(cluster = %kc.name_any(), %group, "cluster deleted; xDS snapshot removed");
    Ok(Action::await_change())
}

async fn apply_cluster(kc: &KafkaCluster, ctx: &Context) -> Result<Action, Error> {
    let ns = kc.namespace().unwrap_or_default();
    let name = kc.name_any();
    let client = ctx.client.clone();
    let selector = format!("{}={name}", names::CLUSTER_LABEL);
    let lp = ListParams::default().labels(&selector);

    // The KRaft cluster id is chosen once and kept in status before anything uses it.
    let status = kc.status.clone().unwrap_or_default();
    let cluster_id = match (&kc.spec.kafka.cluster_id, &status.cluster_id) {
        (Some(id), _) | (None, Some(id)) => id.clone(),
        (None, None) => {
            let id = new_cluster_id().map_err(Error::Random)?;
            let api: Api<KafkaCluster> = Api::namespaced(client.clone(), &ns);
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": {"clusterId": id}})),
            )
            .await?;
            ctx.wrote();
            id
        }
    };

    let pods: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&lp)
        .await?
        .items;
    let external: Option<Service> = Api::<Service>::namespaced(client.clone(), &ns)
        .get_opt(&names::external_service(kc))
        .await?;
    let observed = Observed {
        pod_ips: pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| {
                let id = p.labels().get(names::BROKER_ID_LABEL)?.parse().ok()?;
                let ip = p.status.as_ref()?.pod_ip.clone()?;
                Some((id, ip))
            })
            .collect(),
        external_address: external.as_ref().and_then(status::load_balancer_address),
        cluster_id: Some(cluster_id.clone()),
    };

    let desired = match reconcile::plan(kc, &observed, &ctx.settings) {
        Ok(d) => d,
        Err(e) => return degraded(kc, ctx, &e).await,
    };

    let mut writer = apply::Writer {
        ctx,
        namespace: &ns,
        selector: lp,
        changes: Vec::new(),
    };
    // While brokers wait for their external address, their existing Pods and ConfigMaps stay.
    let waiting = desired.waiting_for_address;
    writer
        .converge(&desired.config_maps, Mode::Update, waiting)
        .await?;
    writer
        .converge(&desired.claims, Mode::CreateOnly, false)
        .await?;
    writer
        .converge(&desired.services, Mode::Update, false)
        .await?;
    writer
        .converge(&desired.deployments, Mode::Update, false)
        .await?;
    writer
        .converge(&desired.disruption_budgets, Mode::Update, false)
        .await?;
    writer
        .converge(&desired.pods, Mode::CreateOnly, waiting)
        .await?;
    for line in &writer.changes {
        ctx.event(kc, EventType::Normal, "Applied", line.clone())
            .await;
    }

    // Envoy's config for this cluster's node group.
    let group = crate::model::group_name(&ns, &name);
    if !desired.external_access.is_empty() {
        match translate(&desired.external_access) {
            Ok(resources) => {
                ctx.cache.set_snapshot(&group, Snapshot::new(resources));
            }
            Err(e) => return degraded(kc, ctx, &PlanError::External(e)).await,
        }
    } else {
        ctx.cache.remove_group(&group);
    }

    // Live configuration and rolling restarts, through the Kafka admin protocol.
    let outcome = operations::run(kc, ctx, &pods, &desired).await?;
    let notices: Vec<String> = desired
        .config
        .notices
        .iter()
        .map(|n| n.to_string())
        .chain(outcome.quorum_notice.clone())
        .collect();
    for notice in &notices {
        let known = kc
            .status
            .as_ref()
            .is_some_and(|s| s.config_notices.contains(notice));
        if !known {
            ctx.event(kc, EventType::Warning, "ConfigNotice", notice.clone())
                .await;
        }
    }

    let mut new_status = status::compute(
        kc,
        &pods,
        &desired,
        &observed,
        &ctx.cache.group_status(&group),
        &cluster_id,
        &outcome,
    );
    new_status.config_notices = notices;
    status::write_if_changed(kc, ctx, new_status.clone()).await?;
    if outcome.rolling || outcome.dynamic.values().any(|d| !d.in_sync) {
        // A roll moves on as soon as its broker is back; failed live config is retried.
        Ok(Action::requeue(Duration::from_secs(5)))
    } else if status::is_ready(&new_status) {
        Ok(Action::requeue(Duration::from_secs(300)))
    } else {
        // Pods starting and Envoys ACKing are not all watched: look again soon.
        Ok(Action::requeue(Duration::from_secs(5)))
    }
}

/// The spec cannot be realised: say so in status and an Event, change nothing, and wait for
/// the next spec change (no crash loop, no deletion).
async fn degraded(kc: &KafkaCluster, ctx: &Context, error: &PlanError) -> Result<Action, Error> {
    let message = error.to_string();
    tracing::warn!(cluster = %kc.name_any(), error = %message, "invalid KafkaCluster");
    let prior = kc.status.clone().unwrap_or_default();
    let already = prior
        .conditions
        .iter()
        .any(|c| c.type_ == "Degraded" && c.status == "True" && c.message == message);
    if !already {
        ctx.event(kc, EventType::Warning, "InvalidSpec", message.clone())
            .await;
    }
    let new_status = status::degraded(kc, &message);
    status::write_if_changed(kc, ctx, new_status).await?;
    Ok(Action::await_change())
}

/// A random KRaft cluster id: 16 bytes from the kernel, URL-safe base64 without padding (as
/// Kafka's own `Uuid.randomUuid()`), never starting with '-'.
pub fn new_cluster_id() -> std::io::Result<String> {
    use base64::Engine;
    use std::io::Read;
    let mut urandom = std::fs::File::open("/dev/urandom")?;
    loop {
        let mut bytes = [0u8; 16];
        urandom.read_exact(&mut bytes)?;
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        if !id.starts_with('-') {
            return Ok(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=12).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    #[test]
    fn cluster_ids_look_like_kafka_uuids() {
        let id = new_cluster_id().unwrap();
        assert_eq!(id.len(), 22);
        assert!(!id.starts_with('-'));
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(id, new_cluster_id().unwrap());
    }
}
