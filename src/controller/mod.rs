//! The KafkaCluster controller: the Kubernetes side effects of the plans made in `reconcile`.
//! One reconcile observes (watch-backed stores, never a LIST), plans (pure), applies the
//! objects (`apply`), sets the xDS snapshot, runs the Kafka-side operations (`live_config`,
//! `roll`), computes the whole status as data (`reconcile::status`) and writes it once
//! (`status`), conditionally on the KafkaCluster's resourceVersion; a Pod deletion of the roll
//! happens only after that write. Events go through one dedupe helper (`events`).
pub mod alerts;
mod apply;
mod cruise_control;
mod events;
pub mod leader;
pub mod leader_pod;
mod live_config;
mod member;
pub mod metrics;
mod pki;
mod quorum;
mod roll;
mod scaling;
mod secrets;
mod status;
pub mod topics;
pub mod users;
mod volumes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self as kcontroller, Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tracing::Instrument;

use crate::api::{KafkaCluster, KafkaUser};
use crate::reconcile::status::{EnvoyState, KafkaOutcome, StatusInput, compute, invalid_spec};
use crate::reconcile::{self, Observed, Settings, names};
use crate::xds::{Snapshot, SnapshotCache};
use apply::Mode;

pub const FIELD_MANAGER: &str = "pier";
/// The finalizer earlier versions put on every KafkaCluster. It did no work that owner
/// references do not already do, and it made deleting a cluster hang while no operator ran;
/// the controller removes it from clusters that still have it.
pub const LEGACY_FINALIZER: &str = "kafka.pier.dev/cleanup";
/// Longest wait for one Kubernetes API call (kube's client has no read timeout).
pub const API_TIMEOUT: Duration = Duration::from_secs(20);
/// How long after this process began serving xDS a cluster's prior ACK counts while its Envoys
/// reconnect: Envoy retries a closed xDS stream with a jittered back-off of at most 30 s.
const ENVOY_RECONNECT_GRACE: Duration = Duration::from_secs(60);

/// Errors of one reconcile; they are retried with backoff, and reported in status when they
/// persist.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: no answer from the Kubernetes API within {} s", API_TIMEOUT.as_secs())]
    Timeout { what: String },
    #[error("serialising {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("cannot read random bytes for a cluster id: {0}")]
    Random(std::io::Error),
    #[error("the watch caches did not start: {0}")]
    Stores(String),
    #[error("the KafkaCluster changed since it was read")]
    Conflict,
}

impl Error {
    /// Every value of [`Error::metric_label`].
    pub const METRIC_LABELS: [&'static str; 9] = [
        "conflict",
        "invalid",
        "forbidden",
        "api",
        "transport",
        "timeout",
        "serialize",
        "random",
        "stores",
    ];

    /// A short label for the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } => match source {
                kube::Error::Api(e) if e.code == 409 => "conflict",
                kube::Error::Api(e) if e.code == 422 || e.code == 400 => "invalid",
                kube::Error::Api(e) if e.code == 403 => "forbidden",
                kube::Error::Api(_) => "api",
                _ => "transport",
            },
            Error::Timeout { .. } => "timeout",
            Error::Serialize(_) => "serialize",
            Error::Random(_) => "random",
            Error::Stores(_) => "stores",
            Error::Conflict => "conflict",
        }
    }
}

/// One Kubernetes API call with a deadline and the context of what it was for.
pub(crate) async fn call<T>(
    what: impl Into<String>,
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(API_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(Error::Kube {
            what: what.into(),
            source,
        }),
        Err(_) => Err(Error::Timeout { what: what.into() }),
    }
}

/// Watch-backed caches of the objects Pier owns (label `app.kubernetes.io/managed-by=pier`),
/// for one watched scope (a namespace, or all).
#[derive(Clone)]
pub struct Stores {
    pub pods: Store<Pod>,
    pub config_maps: Store<ConfigMap>,
    pub services: Store<Service>,
    pub claims: Store<PersistentVolumeClaim>,
    pub deployments: Store<Deployment>,
    pub budgets: Store<PodDisruptionBudget>,
    /// Pier's own Secrets (certificates); users' Secrets are read by name when referenced.
    pub secrets: Store<Secret>,
    /// Every KafkaUser (not only Pier's): whether a cluster needs its authorizer. `None`
    /// when the KafkaUser CRD is not installed (no user can exist).
    pub users: Option<Store<KafkaUser>>,
}

impl Stores {
    /// Waits until every cache holds its first complete list.
    async fn ready(&self) -> Result<(), Error> {
        let err = |e: reflector::store::WriterDropped| Error::Stores(e.to_string());
        self.pods.wait_until_ready().await.map_err(err)?;
        self.config_maps.wait_until_ready().await.map_err(err)?;
        self.services.wait_until_ready().await.map_err(err)?;
        self.claims.wait_until_ready().await.map_err(err)?;
        self.deployments.wait_until_ready().await.map_err(err)?;
        self.budgets.wait_until_ready().await.map_err(err)?;
        self.secrets.wait_until_ready().await.map_err(err)?;
        if let Some(users) = &self.users {
            users.wait_until_ready().await.map_err(err)?;
        }
        Ok(())
    }
}

/// Objects of one kind in the caches: those of one cluster.
pub(crate) trait Cached: apply::Owned + Send + Sync + 'static {
    fn store(stores: &Stores) -> &Store<Self>;
}

macro_rules! cached {
    ($($kind:ty => $field:ident),*) => {$(
        impl Cached for $kind {
            fn store(stores: &Stores) -> &Store<Self> {
                &stores.$field
            }
        }
    )*};
}
cached!(Pod => pods, ConfigMap => config_maps, Service => services,
    PersistentVolumeClaim => claims, Deployment => deployments, PodDisruptionBudget => budgets,
    Secret => secrets);

/// The cached objects of kind `K` of one cluster.
pub(crate) fn cluster_objects<K: Cached>(
    stores: &Stores,
    namespace: &str,
    cluster: &str,
) -> Vec<K> {
    cluster_objects_shared::<K>(stores, namespace, cluster)
        .into_iter()
        .map(|o| (*o).clone())
        .collect()
}

/// [`cluster_objects`] as the cache holds them, not copied: for reading only (a reconcile of a
/// big cluster would otherwise copy every object it looks at).
pub(crate) fn cluster_objects_shared<K: Cached>(
    stores: &Stores,
    namespace: &str,
    cluster: &str,
) -> Vec<Arc<K>> {
    K::store(stores)
        .state()
        .into_iter()
        .filter(|o| {
            o.meta().namespace.as_deref() == Some(namespace)
                && o.labels().get(names::CLUSTER_LABEL).map(String::as_str) == Some(cluster)
        })
        .collect()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub namespace: String,
    pub cluster: String,
}

/// Shared state of the controller.
pub struct Context {
    pub client: Client,
    pub cache: Arc<SnapshotCache>,
    pub settings: Settings,
    /// The xDS server's client trust when it serves TLS: each KafkaCluster's CA is registered
    /// for its node group (`ClientTrust::set_group_roots`).
    pub xds_trust: std::sync::OnceLock<crate::xds::ClientTrust>,
    /// The CA file of the xDS serving certificate, given to each cluster's Envoys.
    pub xds_server_ca: std::sync::OnceLock<std::path::PathBuf>,
    /// When this process began serving xDS (it leads): Envoys reconnect within a back-off
    /// after that, and a cluster's prior ACK counts meanwhile ([`EnvoyState::after_restart`]).
    pub xds_serving_since: std::sync::OnceLock<std::time::Instant>,
    /// The status this process last wrote for each KafkaTopic and KafkaUser (`<kind>/<uid>`),
    /// so that a reconcile reading a cache that lags behind it does not write it again.
    pub statuses_written: dashmap::DashMap<String, serde_json::Value>,
    pub recorder: Recorder,
    /// Write calls made to the API server (create/apply/patch/delete).
    pub writes: Counter,
    /// Reconciles run.
    pub reconciles: Counter,
    /// KafkaTopic reconciles that compared the spec with Kafka.
    pub topic_reconciles: Counter,
    /// KafkaUser reconciles that compared the spec with Kafka.
    pub user_reconciles: Counter,
    /// Reconciles that failed (and are retried with backoff), by reason.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// How long reconciles take.
    pub reconcile_duration: Histogram,
    /// Broker Pods deleted by rolling restarts.
    pub broker_restarts: Counter,
    /// IncrementalAlterConfigs calls that changed live configuration.
    pub dynamic_config_changes: Counter,
    /// Earliest certificate expiry per cluster (unix seconds).
    pub certificate_expiry: Family<ClusterLabels, prometheus_client::metrics::gauge::Gauge>,
    /// Clusters (`namespace/name`) whose throttles a crashed operator may have left were
    /// checked by this process.
    throttles_checked: dashmap::DashSet<String>,
    /// Consecutive failed reconciles per cluster (`namespace/name`), for backoff.
    failures: dashmap::DashMap<String, u32>,
    /// Kafka admin client per cluster (`namespace/name`), with its cached connections.
    admins: dashmap::DashMap<String, Arc<crate::kafka::AdminClient>>,
    /// Caches per watched scope (`None` = all namespaces).
    stores: dashmap::DashMap<Option<String>, Stores>,
    events: events::Events,
    /// Per-cluster gauges and alert action counters, and whether this replica leads.
    pub metrics: metrics::ClusterMetrics,
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
            xds_trust: std::sync::OnceLock::new(),
            xds_server_ca: std::sync::OnceLock::new(),
            xds_serving_since: std::sync::OnceLock::new(),
            statuses_written: dashmap::DashMap::new(),
            recorder,
            writes: Counter::default(),
            reconciles: Counter::default(),
            topic_reconciles: Counter::default(),
            user_reconciles: Counter::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            broker_restarts: Counter::default(),
            dynamic_config_changes: Counter::default(),
            certificate_expiry: Family::default(),
            throttles_checked: dashmap::DashSet::new(),
            failures: dashmap::DashMap::new(),
            admins: dashmap::DashMap::new(),
            stores: dashmap::DashMap::new(),
            events: events::Events::default(),
            metrics: metrics::ClusterMetrics::default(),
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

    /// The caches that hold `namespace`'s objects.
    fn stores_for(&self, namespace: &str) -> Option<Stores> {
        self.stores
            .get(&Some(namespace.to_string()))
            .or_else(|| self.stores.get(&None))
            .map(|s| s.clone())
    }

    /// A cluster is gone: its Envoys get no config any more and its Kafka connections close.
    /// Kubernetes' garbage collector removes the objects it owns.
    fn forget(&self, namespace: &str, name: &str) {
        let group = crate::model::group_name(namespace, name);
        self.cache.remove_group(&group);
        let key = format!("{namespace}/{name}");
        self.admins.remove(&key);
        self.failures.remove(&key);
        self.throttles_checked.remove(&key);
        self.events.forget(namespace, name);
        if let Some(trust) = self.xds_trust.get() {
            trust.remove_group(&group);
        }
        self.certificate_expiry.remove(&ClusterLabels {
            namespace: namespace.to_string(),
            cluster: name.to_string(),
        });
        self.metrics.forget(namespace, name);
        tracing::info!(cluster = %name, %namespace, %group, "cluster deleted; xDS snapshot removed");
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
            "pier_topic_reconciles",
            "KafkaTopic reconciles that compared the spec with Kafka",
            self.topic_reconciles.clone(),
        );
        registry.register(
            "pier_user_reconciles",
            "KafkaUser reconciles that compared the spec with Kafka",
            self.user_reconciles.clone(),
        );
        registry.register(
            "pier_reconcile_errors",
            "KafkaCluster reconciles that failed, by reason",
            self.reconcile_errors.clone(),
        );
        registry.register(
            "pier_reconcile_duration_seconds",
            "How long KafkaCluster reconciles take",
            self.reconcile_duration.clone(),
        );
        registry.register(
            "pier_broker_restarts",
            "Broker Pods deleted by rolling restarts",
            self.broker_restarts.clone(),
        );
        registry.register(
            "pier_certificate_earliest_expiry_seconds",
            "Earliest expiry (unix seconds) of any certificate of a cluster (its CAs included)",
            self.certificate_expiry.clone(),
        );
        registry.register(
            "pier_dynamic_config_changes",
            "Live configuration changes applied through the Kafka admin protocol",
            self.dynamic_config_changes.clone(),
        );
        // Every reason has a series from the start, so rules and dashboards find it.
        for reason in Error::METRIC_LABELS {
            let _ = self.reconcile_errors.get_or_create(&ErrorLabels { reason });
        }
        self.metrics.register(registry);
    }
}

/// A watch of `api`'s objects managed by Pier, feeding a cache; the stream must be polled
/// (the controller does) for the cache to fill.
fn cached_watch<K>(
    api: Api<K>,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K: Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default().labels("app.kubernetes.io/managed-by=pier");
    let stream = watcher(api, config)
        .default_backoff()
        // Nothing reads who manages which field, and the field managers of a Pod (Pier, the
        // scheduler, the kubelet) are often more than half of what the cache would keep.
        .modify(|o: &mut K| o.meta_mut().managed_fields = None)
        .reflect(writer)
        .touched_objects();
    (reader, stream)
}

/// Runs the controller until `shutdown` resolves (or the stream ends): every KafkaCluster in
/// `namespace` (all when `None`), woken by changes of the objects it owns.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let kcs = scoped::<KafkaCluster>(&client, ns);
    let (pods, pod_events) = cached_watch(scoped::<Pod>(&client, ns));
    let (config_maps, cm_events) = cached_watch(scoped::<ConfigMap>(&client, ns));
    let (services, svc_events) = cached_watch(scoped::<Service>(&client, ns));
    let (claims, claim_events) = cached_watch(scoped::<PersistentVolumeClaim>(&client, ns));
    let (deployments, dep_events) = cached_watch(scoped::<Deployment>(&client, ns));
    let (budgets, pdb_events) = cached_watch(scoped::<PodDisruptionBudget>(&client, ns));
    let (secrets, secret_events) = cached_watch(scoped::<Secret>(&client, ns));
    // A CRD not installed (Helm never upgrades a chart's CRDs) leaves its controller off
    // instead of keeping every cluster waiting for a cache that never fills.
    let users_served = served(&scoped::<KafkaUser>(&client, ns)).await;
    let topics_served = served(&scoped::<crate::api::KafkaTopic>(&client, ns)).await;
    let (users, user_events) = if users_served {
        let (reader, writer) = reflector::store();
        let stream = watcher(scoped::<KafkaUser>(&client, ns), watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .touched_objects()
            .boxed();
        (Some(reader), stream)
    } else {
        (None, futures::stream::empty().boxed())
    };
    ctx.stores.insert(
        namespace.clone(),
        Stores {
            pods,
            config_maps,
            services,
            claims,
            deployments,
            budgets,
            secrets,
            users: users.clone(),
        },
    );
    // Claims and budgets only feed their caches (no reconcile reacts to their changes); their
    // streams are polled here so that the caches fill.
    let claims_driver = claim_events.for_each(|_| async {});
    let budgets_driver = pdb_events.for_each(|_| async {});
    let secrets_driver = secret_events.for_each(|_| async {});
    let controller = Controller::new(kcs, watcher::Config::default());
    // A referenced Secret's change wakes the clusters that read it.
    let referencing = secrets::referencing(controller.store());
    // The KafkaTopic controller runs beside, on the same leadership, reading the clusters'
    // cache and waking a cluster whose replicas it started moving.
    let (wake_cluster, cluster_wakeups) = futures::channel::mpsc::unbounded();
    let topics = {
        let (ctx, ns, clusters) = (ctx.clone(), namespace.clone(), controller.store());
        async move {
            if topics_served {
                topics::run(ctx, ns, clusters, wake_cluster).await;
            }
            std::future::pending::<()>().await
        }
    };
    // One metadata watch of Secrets serves both controllers: the cluster controller's stream
    // passes each change on to the user controller (credential Secrets) when that one runs.
    let (to_users, users_secret_changes) = futures::channel::mpsc::unbounded();
    let to_users = users_served.then_some(to_users);
    let secret_changes = secrets::changes(&client, ns).inspect(move |change| {
        if let (Some(tx), Ok(secret)) = (&to_users, change) {
            // The user controller gone (its stream ended): nothing to tell.
            let _ = tx.unbounded_send(secret.clone());
        }
    });
    let users_controller = {
        let (ctx, ns, clusters) = (ctx.clone(), namespace.clone(), controller.store());
        async move {
            if users_served {
                users::run(ctx, ns, clusters, users_secret_changes).await;
            }
            std::future::pending::<()>().await
        }
    };
    let controller = controller
        .reconcile_on(cluster_wakeups)
        // A KafkaUser wakes its cluster: ACLs asked for turn the authorizer on.
        .watches_stream(user_events, |u: KafkaUser| {
            Some(
                ObjectRef::new(&u.spec.cluster_ref.name).within(&u.namespace().unwrap_or_default()),
            )
        })
        .watches_stream(secret_changes, referencing)
        .owns_stream(pod_events)
        .owns_stream(cm_events)
        .owns_stream(svc_events)
        .owns_stream(dep_events)
        .graceful_shutdown_on(shutdown)
        .run(reconcile_cluster, error_policy, ctx.clone())
        .for_each(|res| {
            let ctx = ctx.clone();
            async move {
                match res {
                    Ok(_) => {}
                    // Deleted: the reconcile for it finds no object.
                    Err(kcontroller::Error::ObjectNotFound(obj)) => {
                        ctx.forget(obj.namespace.as_deref().unwrap_or_default(), &obj.name);
                    }
                    Err(e) => tracing::debug!(error = %e, "reconcile failed"),
                }
            }
        });
    tokio::select! {
        _ = controller => {}
        _ = topics => {}
        _ = users_controller => {}
        _ = claims_driver => {}
        _ = budgets_driver => {}
        _ = secrets_driver => {}
    }
}

/// Whether the API server serves `K`: its CRD is installed (a 404 says it is not; any other
/// answer is taken as yes, and the watch retries).
async fn served<K>(api: &Api<K>) -> bool
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.list(&kube::api::ListParams::default().limit(1)).await {
        Err(kube::Error::Api(e)) if e.code == 404 => {
            tracing::warn!(
                kind = %K::kind(&()),
                "CRD not installed: its controller stays off (kubectl apply -f crds/, then restart Pier)"
            );
            false
        }
        _ => true,
    }
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
    let failures = ctx.failures.get(&key).map(|n| *n).unwrap_or(1);
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
    let ns = kc.namespace().unwrap_or_default();
    let name = kc.name_any();
    let span = tracing::info_span!("reconcile", namespace = %ns, cluster = %name);
    async move {
        ctx.reconciles.inc();
        let started = std::time::Instant::now();
        let result = reconcile_once(&kc, &ctx).await;
        ctx.reconcile_duration
            .observe(started.elapsed().as_secs_f64());
        let key = format!("{ns}/{name}");
        match &result {
            Ok(_) => {
                ctx.failures.remove(&key);
                ctx.events
                    .problem(&ctx, &kc, events::Reason::ApplyFailed, None)
                    .await;
            }
            Err(e) => {
                ctx.reconcile_errors
                    .get_or_create(&ErrorLabels {
                        reason: e.metric_label(),
                    })
                    .inc();
                let failures = {
                    let mut n = ctx.failures.entry(key).or_insert(0);
                    *n = n.saturating_add(1);
                    *n
                };
                // One failure may be a blip (a conflict, a restarting apiserver); a second in
                // a row is a problem the user must see without reading the operator's log.
                if failures >= 2 {
                    status::report_failure(&kc, &ctx, e).await;
                }
            }
        }
        result
    }
    .instrument(span)
    .await
}

async fn reconcile_once(kc: &KafkaCluster, ctx: &Context) -> Result<Action, Error> {
    let ns = kc.namespace().unwrap_or_default();
    let name = kc.name_any();
    // Writes nothing unless the finalizer of earlier versions is there.
    remove_legacy_finalizer(kc, ctx).await?;
    if kc.metadata.deletion_timestamp.is_some() {
        ctx.forget(&ns, &name);
        return Ok(Action::await_change());
    }
    // Envoys of this cluster are served from now on, even before its first snapshot.
    if !kc.spec.listeners.external.is_empty() {
        ctx.cache
            .declare_group(&crate::model::group_name(&ns, &name));
    }
    let stores = ctx
        .stores_for(&ns)
        .ok_or_else(|| Error::Stores(format!("namespace {ns} is not watched")))?;
    stores.ready().await?;

    // The KRaft cluster id is chosen once and kept in status before anything uses it.
    let prior = kc.status.clone().unwrap_or_default();
    let cluster_id = match (&kc.spec.kafka.cluster_id, &prior.cluster_id) {
        (Some(id), _) | (None, Some(id)) => id.clone(),
        (None, None) => {
            let id = new_cluster_id().map_err(Error::Random)?;
            let mut with_id = prior.clone();
            with_id.cluster_id = Some(id);
            status::write(kc, ctx, with_id).await?;
            // The write wakes the next reconcile, which plans with the stored id.
            return Ok(Action::await_change());
        }
    };

    let pods: Vec<Pod> = cluster_objects(&stores, &ns, &name);
    // The quorum mode is chosen once, before the first Pod is formatted.
    let has_nodes =
        !pods.is_empty() || !cluster_objects_shared::<ConfigMap>(&stores, &ns, &name).is_empty();
    if quorum::choose_mode(kc, ctx, &prior, has_nodes).await? {
        return Ok(Action::await_change());
    }
    let external = cluster_objects_shared::<Service>(&stores, &ns, &name)
        .into_iter()
        .find(|s| s.name_any() == names::external_service(kc))
        .map(|s| (*s).clone());

    // Kafka is asked before planning: a broker that left the spec keeps its objects until
    // Kafka says it holds no replica.
    let key = format!("{ns}/{name}");
    // On a TLS listener the operator needs its certificate Secrets first; until they exist
    // Kafka is not asked.
    let connect = pki::admin_connect(kc, &stores);
    let nodes = match &connect {
        Some(_) => live_config::reachable_nodes(kc, &pods),
        None => Default::default(),
    };
    let admin = ctx.admin(&key, nodes);
    admin.set_connect_options(connect.clone().unwrap_or_default());
    admin.set_server_names(pki::server_names(kc, &pods, &ctx.settings));
    // An alert's recorded action changes the spec first; the reconcile then starts over.
    if alerts::apply_pending(kc, ctx, &admin).await? {
        return Ok(Action::await_change());
    }
    let scaling_input = scaling_input(kc, &stores, &pods);
    let leaving: std::collections::BTreeSet<i32> = scaling_input
        .objects
        .iter()
        .chain(scaling_input.pods.keys())
        .chain(prior.brokers.iter().map(|b| &b.id))
        .copied()
        .filter(|id| !scaling_input.spec_nodes.contains(id))
        .collect();
    let first_look = !ctx.throttles_checked.contains(&key);
    let view = scaling::observe(
        &admin,
        scaling::Ask {
            leaving: &leaving,
            stale_throttles: first_look,
        },
    )
    .await;
    let view = match view {
        Ok(v) => {
            if first_look {
                ctx.throttles_checked.insert(key.clone());
            }
            Some(v)
        }
        Err(e) => {
            if !leaving.is_empty() || prior.replica_moves.is_some() {
                tracing::info!(error = %e, "no complete answer from Kafka for replica moves");
            }
            None
        }
    };
    // Asked once per reconcile: for membership changes, the nodes they hold, the static
    // quorum's notice and the roll's quorum gate.
    let quorum_info = if admin.nodes().is_empty() {
        None
    } else {
        Some(admin.describe_quorum().await)
    };
    let voters = reconcile::quorum::holding_voters(
        &reconcile::quorum::status_of(kc),
        quorum_info.as_ref().and_then(|q| q.as_ref().ok()),
    );
    let mut moves = reconcile::scaling::plan(&reconcile::scaling::ScalingInput {
        kafka: view.as_ref(),
        voters: voters.clone(),
        ..scaling_input
    });
    tracing::debug!(?moves, "replica moves planned");
    // A volume leaving a broker is emptied (and one added filled) before the plan drops it.
    let volumes_view = volumes::observe_and_move(kc, &stores, &admin, &pods).await;

    // Referenced Secrets: versions for the plan (restart hash), values for live config.
    let fetched = secrets::read(ctx, kc).await;
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
        retained: moves.retained.clone(),
        draining: moves.draining.clone(),
        volumes: volumes_view.observed.clone(),
        secret_versions: secrets::versions(kc, &fetched, &pods),
        authorization: reconcile::user::authorization_wanted(
            stores
                .users
                .as_ref()
                .map(|u| u.state())
                .unwrap_or_default()
                .iter()
                .filter(|u| {
                    u.namespace().as_deref() == Some(ns.as_str())
                        && u.spec.cluster_ref.name == name
                        && u.metadata.deletion_timestamp.is_none()
                })
                .map(|u| u.as_ref()),
        ),
    };

    // Everything is planned and validated, the Envoy config included, before any write.
    let mut desired = match reconcile::plan(kc, &observed, &ctx.settings) {
        Ok(d) => {
            ctx.events
                .problem(ctx, kc, events::Reason::InvalidSpec, None)
                .await;
            d
        }
        Err(e) => {
            let message = e.to_string();
            tracing::warn!(error = %message, "invalid KafkaCluster");
            ctx.events
                .problem(ctx, kc, events::Reason::InvalidSpec, Some(&message))
                .await;
            status::write(kc, ctx, invalid_spec(kc, &message)).await?;
            return Ok(Action::await_change());
        }
    };

    let secret_notices = reconcile::secret_refs::notices(kc, &desired.config, &fetched);
    let unavailable: Vec<String> = secret_notices.iter().map(|n| n.to_string()).collect();
    ctx.events
        .problems(ctx, kc, events::Reason::SecretUnavailable, &unavailable)
        .await;
    desired.config.notices.extend(secret_notices);

    // Certificates before the Pods that mount them.
    let tls = pki::converge(kc, ctx, &stores, &desired, &observed, &pods).await?;
    if let Some(t) = &tls {
        for line in &t.events {
            ctx.events
                .did(ctx, kc, events::Reason::Certificates, line)
                .await;
        }
    }
    ctx.events
        .problems(
            ctx,
            kc,
            events::Reason::CertificatesFailed,
            tls.as_ref()
                .map(|t| t.errors.as_slice())
                .unwrap_or_default(),
        )
        .await;

    let mut writer = apply::Writer::new(ctx, &stores, &ns, &name, &moves.retained);
    // While brokers wait for their external address, their existing Pods and ConfigMaps stay.
    let waiting = desired.waiting_for_address;
    writer
        .converge(&desired.config_maps, Mode::Update, waiting)
        .await?;
    // A leaving volume's claim is not planned but still mounted: no claim is deleted then.
    let volumes_leaving = desired
        .brokers
        .iter()
        .any(|b| b.layout.mounts.iter().any(|m| m.leaving));
    writer
        .converge(&desired.claims, Mode::CreateOnly, volumes_leaving)
        .await?;
    let (resized, volume_problems) =
        apply::resize_claims(ctx, &stores, &ns, &name, &desired.claims).await?;
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
    let changes: Vec<String> = writer.into_changes().into_iter().chain(resized).collect();
    for line in &changes {
        ctx.events.did(ctx, kc, events::Reason::Applied, line).await;
    }

    // Envoy's config for this cluster's node group.
    let group = crate::model::group_name(&ns, &name);
    match desired.xds.clone() {
        Some(resources) => {
            ctx.cache.set_snapshot(&group, Snapshot::new(resources));
        }
        None => ctx.cache.remove_group(&group),
    }

    // Replica moves, then live configuration and the roll's decision, through the Kafka admin
    // protocol.
    let cc_failures = cruise_control::run(kc, view.as_ref(), &mut moves, now_ms()).await;
    let mut move_failures = scaling::act(&admin, &moves).await;
    moves.note_failures(&move_failures);
    move_failures.extend(cc_failures);
    ctx.events
        .problem(
            ctx,
            kc,
            events::Reason::CruiseControlFailed,
            reconcile::engine::failure(&moves),
        )
        .await;
    for line in &moves.events {
        ctx.events
            .did(ctx, kc, events::Reason::ReplicaMoves, line)
            .await;
    }
    ctx.events
        .problems(ctx, kc, events::Reason::ReplicaMoveFailed, &move_failures)
        .await;
    ctx.events
        .problem(
            ctx,
            kc,
            events::Reason::RemovalRefused,
            moves.refused.as_deref(),
        )
        .await;
    let mut outcome = KafkaOutcome {
        applied_secrets: prior.applied_secrets.clone(),
        alerts: prior.alerts.clone(),
        ..KafkaOutcome::default()
    };
    if let Some(check) = alerts::check_declared(kc, ctx).await? {
        let state = outcome.alerts.get_or_insert_with(Default::default);
        state.checked_actions = check.hash;
        state.invalid_actions = check.problems;
        if state == &crate::api::AlertsStatus::default() {
            outcome.alerts = None;
        }
    }
    if !desired.waiting_for_address {
        (outcome.dynamic, outcome.applied_secrets) =
            live_config::run(kc, ctx, &admin, &desired, &fetched).await;
        let scram_failures =
            secrets::scram_users(kc, ctx, &admin, &fetched, &mut outcome.applied_secrets).await;
        ctx.events
            .problems(ctx, kc, events::Reason::ScramUserFailed, &scram_failures)
            .await;
    }
    if let Some(t) = tls {
        pki::reload(kc, &admin, &desired, &t.reload).await;
        outcome.tls_pending = t.pending;
        outcome.tls_error = (!t.errors.is_empty()).then(|| t.errors.join("; "));
        outcome.tls = Some(t.status);
    }
    let described = quorum_info.as_ref().and_then(|q| q.as_ref().ok());
    if reconcile::quorum::status_of(kc).mode == crate::api::QuorumMode::Static {
        outcome.quorum_notice =
            described.and_then(|q| reconcile::status::quorum_notice(q, &desired.brokers));
    }
    quorum::converge(
        kc,
        ctx,
        &admin,
        &desired,
        &pods,
        &cluster_id,
        described,
        &moves.refused_removals(),
        &mut outcome,
    )
    .await;
    let held = quorum::leaving_voters(&desired, &voters);
    outcome.replicas_moving = moves.moves.is_some();
    outcome.volumes = volumes_view.outcome.clone();
    for line in &volumes_view.events {
        ctx.events
            .did(ctx, kc, events::Reason::LogDirMoves, line)
            .await;
    }
    ctx.events
        .problems(
            ctx,
            kc,
            events::Reason::LogDirMoveFailed,
            &volumes_view.failures,
        )
        .await;
    ctx.events
        .problems(
            ctx,
            kc,
            events::Reason::VolumeRemovalRefused,
            &desired.volume_refusals,
        )
        .await;
    // Disk space per log dir: Kafka has no JMX metric for it, the brokers say it here.
    for b in desired.brokers.iter().filter(|b| b.is_broker()) {
        if admin.nodes().contains_key(&b.id)
            && let Ok(dirs) = admin.describe_log_dirs(b.id).await
        {
            ctx.metrics.log_dirs(&ns, &name, b.id, &dirs);
        }
    }
    let step = roll::plan(
        kc,
        ctx,
        &admin,
        &pods,
        &desired,
        quorum_info,
        &held,
        &mut outcome,
    )
    .await;
    quorum::metadata_version(kc, ctx, &admin, &desired, &pods, &mut outcome).await;

    let group_status = ctx.cache.group_status(&group);
    let envoy = EnvoyState {
        version: group_status.version.clone(),
        all_acked: group_status.all_acked,
        rejected: group_status
            .rejected
            .as_ref()
            .map(|r| format!("{} rejected by {}: {}", r.r#type, r.node_id, r.error.trim())),
        reconnecting: false,
    }
    .after_restart(
        kc.status.as_ref().and_then(|s| s.xds.as_ref()),
        !group_status.nodes.is_empty(),
        ctx.xds_serving_since
            .get()
            .is_some_and(|since| since.elapsed() < ENVOY_RECONNECT_GRACE),
    );
    let (new_status, requeue) = compute(&StatusInput {
        kc,
        pods: &pods,
        desired: &desired,
        observed: &observed,
        envoy: &envoy,
        cluster_id: &cluster_id,
        kafka: &outcome,
        volumes: &volume_problems,
        scaling: &moves,
    });
    ctx.metrics
        .observe(&ns, &name, &new_status, outcome.restart_due.len());
    ctx.events
        .problems(
            ctx,
            kc,
            events::Reason::VolumeResizeRefused,
            &volume_problems,
        )
        .await;
    ctx.events
        .problems(
            ctx,
            kc,
            events::Reason::ConfigNotice,
            &new_status.config_notices,
        )
        .await;
    let crash_looping = reconcile::status::degraded_reason(&new_status)
        .filter(|(reason, _)| *reason == reconcile::status::reasons::BROKER_CRASH_LOOPING)
        .map(|(_, message)| message.to_string());
    ctx.events
        .problem(
            ctx,
            kc,
            events::Reason::BrokerCrashLooping,
            crash_looping.as_deref(),
        )
        .await;
    // The one status write, before the roll acts: a Pod is deleted only once its restart is
    // durable, and only if nobody changed the cluster since it was read.
    match status::write(kc, ctx, new_status).await {
        Ok(()) => {}
        Err(status::WriteError::Conflict) => {
            tracing::debug!("status changed since it was read; planning again");
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        Err(status::WriteError::Other(e)) => return Err(e),
    }
    roll::act(kc, ctx, &admin, step).await?;
    Ok(Action::requeue(requeue.after()))
}

/// What replica moves are planned from, Kafka's view aside: the spec's nodes, the broker ids
/// that still have objects, the broker Pods.
fn scaling_input<'a>(
    kc: &'a KafkaCluster,
    stores: &Stores,
    pods: &[Pod],
) -> reconcile::scaling::ScalingInput<'a> {
    use std::collections::BTreeSet;
    let ns = kc.namespace().unwrap_or_default();
    let name = kc.name_any();
    let id_of = |labels: &std::collections::BTreeMap<String, String>| -> Option<i32> {
        labels.get(names::BROKER_ID_LABEL)?.parse().ok()
    };
    let owned = |refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference]| {
        refs.iter()
            .any(|o| o.kind == "KafkaCluster" && o.controller == Some(true))
    };
    let mut objects: BTreeSet<i32> = BTreeSet::new();
    objects.extend(pods.iter().filter_map(|p| id_of(p.labels())));
    objects.extend(
        cluster_objects_shared::<ConfigMap>(stores, &ns, &name)
            .iter()
            .filter_map(|c| id_of(c.labels())),
    );
    objects.extend(
        cluster_objects_shared::<Service>(stores, &ns, &name)
            .iter()
            .filter_map(|s| id_of(s.labels())),
    );
    objects.extend(
        cluster_objects_shared::<PersistentVolumeClaim>(stores, &ns, &name)
            .iter()
            .filter(|c| owned(c.owner_references()))
            .filter_map(|c| id_of(c.labels())),
    );
    let pod_facts = pods
        .iter()
        .filter_map(|p| {
            Some((
                id_of(p.labels())?,
                reconcile::scaling::PodFacts {
                    ready: reconcile::pods::pod_ready(p),
                    broker_role: p.labels().get(names::BROKER_ROLE_LABEL).map(String::as_str)
                        == Some("true"),
                },
            ))
        })
        .collect();
    let prior = kc.status.as_ref();
    reconcile::scaling::ScalingInput {
        spec_nodes: kc.spec.brokers.iter().map(|b| b.id).collect(),
        spec_brokers: kc
            .spec
            .brokers
            .iter()
            .filter(|b| b.roles.contains(&crate::api::Role::Broker))
            .map(|b| b.id)
            .collect(),
        prior: prior.unwrap_or(&EMPTY_STATUS),
        objects,
        pods: pod_facts,
        kafka: None,
        rebalance: &kc.spec.rebalance,
        rebalance_annotation: kc
            .annotations()
            .get(names::REBALANCE_ANNOTATION)
            .map(String::as_str),
        restarting: prior
            .and_then(|s| s.rolling_upgrade.as_ref())
            .is_some_and(|r| r.restarting.is_some()),
        voters: Default::default(),
        now_ms: now_ms(),
    }
}

fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

/// The status of a cluster Pier has not written yet.
static EMPTY_STATUS: crate::api::KafkaClusterStatus = crate::api::KafkaClusterStatus {
    observed_generation: None,
    conditions: Vec::new(),
    broker_count: 0,
    brokers: Vec::new(),
    cluster_id: None,
    bootstrap_address: None,
    xds: None,
    config_notices: Vec::new(),
    rolling_upgrade: None,
    replica_moves: None,
    rebalanced_brokers: None,
    rebalance_requested: None,
    tls: None,
    applied_secrets: std::collections::BTreeMap::new(),
    alerts: None,
    quorum: None,
    kafka_version: None,
};

/// Removes the finalizer of earlier versions, touching no other finalizer.
async fn remove_legacy_finalizer(kc: &KafkaCluster, ctx: &Context) -> Result<(), Error> {
    let Some(index) = kc.finalizers().iter().position(|f| f == LEGACY_FINALIZER) else {
        return Ok(());
    };
    let api: Api<KafkaCluster> =
        Api::namespaced(ctx.client.clone(), &kc.namespace().unwrap_or_default());
    let mut rest = kc.finalizers().to_vec();
    rest.remove(index);
    // The resourceVersion makes it conditional: a finalizer added meanwhile is not dropped.
    let patch = serde_json::json!({"metadata": {
        "finalizers": rest,
        "resourceVersion": kc.resource_version(),
    }});
    call(
        format!("removing the legacy finalizer of {}", kc.name_any()),
        api.patch(
            &kc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        ),
    )
    .await?;
    ctx.wrote();
    tracing::info!(finalizer = LEGACY_FINALIZER, "removed the legacy finalizer");
    Ok(())
}

/// A random KRaft cluster id: 16 bytes from the kernel, URL-safe base64 without padding (as
/// Kafka's own `Uuid.randomUuid()`), never starting with '-'.
pub fn new_cluster_id() -> std::io::Result<String> {
    use base64::Engine;
    loop {
        let mut bytes = [0u8; 16];
        crate::random::fill(&mut bytes)?;
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
