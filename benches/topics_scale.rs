//! KafkaTopics at scale: 1,000 KafkaTopics of one KafkaCluster, with the real control plane,
//! real Kafka brokers and Envoy run by the dev node agent, and `pier operator` as a process with
//! the chart's ServiceAccount and RBAC.
//!
//!     cargo bench --bench topics_scale            # 3 brokers, 1,000 KafkaTopics, 5 changes
//!     cargo bench --bench topics_scale -- 300     # another number of KafkaTopics
//!     cargo test --bench topics_scale             # smoke: 1 broker, 20 KafkaTopics, 1 change
//!
//! Measured (numbers printed, never asserted):
//! 1. apply: N KafkaTopics (1 partition, replication factor 1, `retention.ms` set) created
//!    through the API, 16 at a time → every one Ready for its generation. Per topic: its
//!    create call answered → the first event of this process's watch showing it Ready.
//! 2. restart: the operator stopped and a new process started on the same xDS address (the
//!    Envoy's bootstrap names it) with N KafkaTopics in sync: time to lead, until
//!    `pier_topic_reconciles_total` ≥ N, until that counter's last move, and its bursts (a
//!    reconcile before the cluster's first one in the process has no Kafka client yet and is
//!    requeued, so N reconciles are not yet N looks at Kafka); the window ends when the
//!    reconcile counters stood still for a while. In it: the operator's Kubernetes writes and
//!    requests (the apiserver's audit log, its leader Lease apart), Kafka's admin writes and its
//!    Metadata and DescribeConfigs requests (the brokers' own counters, from their JMX
//!    exporters: they count every client, the KafkaCluster controller's requests included, so
//!    the same restart is first measured with no KafkaTopic at all), the new process's CPU and
//!    memory, and what the restart changed in the KafkaCluster's status.
//! 3. change: one KafkaTopic's `retention.ms` changed, a few times, one topic at a time, each
//!    after the cluster's topic snapshot has expired (as for a lone change in a quiet cluster):
//!    patch → the topic Ready for the new generation; the new value is then read back from
//!    Kafka.
//!
//! Kafka's request counters come from `monitoring/jmx-exporter.yaml`'s rules: ListPartition-
//! Reassignments, which the topic controller asks with every snapshot, is not among them. An
//! admin write may count more than once (a broker forwards it to the active controller), so the
//! bench first makes one CreateTopics and one IncrementalAlterConfigs of its own and reports
//! what each added.
//! Logs: `target/test-logs/bench-topics-scale/`.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use common::{KAFKA_ADMIN_WRITES, Operator, SERVICE_ACCOUNT, install_chart, kafka_requests};
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use pier::api::{KafkaCluster, KafkaTopic};
use pier::controller::topics::SNAPSHOT_MAX_AGE;
use pier_testenv::devlet::{self, DevletOptions};
use pier_testenv::{ControlPlane, LogDir, wait_for};
use serde_json::json;

mod common;
mod kafka_env;

const NS: &str = "default";
const NAME: &str = "topics";
/// Envoy's ports for this bench: no test or other bench uses them (Envoy binds every address).
const BOOTSTRAP_PORT: u16 = 31792;
const BROKER_PORT_BASE: u16 = 31800;
/// The config key every KafkaTopic sets, and the changes of step 3 change.
const CONFIG_KEY: &str = "retention.ms";
const POLL: Duration = Duration::from_millis(100);

/// How the bench is run.
#[derive(Clone, Copy)]
struct Plan {
    topics: usize,
    /// Combined broker+controller nodes.
    nodes: i32,
    /// Config changes of step 3.
    changes: usize,
    /// Create calls in flight at once.
    create_concurrency: usize,
    /// Longest wait for the cluster, for every topic Ready, for a restart to settle.
    within: Duration,
    /// The operator's reconcile counters still this long: it has nothing left to do.
    quiet: Duration,
}

/// When each KafkaTopic was first seen Ready, by name and generation (this process's watch).
type ReadyTimes = Arc<Mutex<BTreeMap<String, BTreeMap<i64, Instant>>>>;

/// Step 1.
struct Apply {
    /// First create call → last topic Ready.
    total: Duration,
    /// First create call → last create answered.
    creates: Duration,
    /// Per topic: create answered → Ready.
    per_topic: Vec<Duration>,
    /// Per topic, from the audit log: the create → the operator's first status write (made
    /// once its CreateTopics was answered).
    first_status: Vec<Duration>,
    kafka: BTreeMap<String, f64>,
    writes: BTreeMap<String, usize>,
    topic_reconciles: f64,
    cpu: f64,
    hwm: u64,
    /// Cores busy on the machine meanwhile, every process counted.
    machine_busy: f64,
}

/// Step 2 (and its baseline with no KafkaTopic).
struct Restart {
    topics: usize,
    /// New process started → it leads.
    leading: Duration,
    /// New process started → `pier_topic_reconciles_total` ≥ topics (and a cluster reconcile).
    reconciled: Duration,
    /// New process started → the KafkaTopic counter's last move.
    topics_settled: Option<Duration>,
    /// Bursts of KafkaTopic reconciles: (from, to, reconciles), from the new process's start.
    bursts: Vec<(Duration, Duration, f64)>,
    /// KafkaCluster status fields the restart changed (their values before and after).
    cluster_status_changed: Vec<String>,
    topic_reconciles: f64,
    cluster_reconciles: f64,
    kafka: BTreeMap<String, f64>,
    writes: BTreeMap<String, usize>,
    /// The operator's API requests by `verb resource`, reads included, its Lease apart.
    requests: BTreeMap<String, usize>,
    /// New process started → the end of the window.
    window: Duration,
    cpu: f64,
    rss: u64,
    hwm: u64,
    machine_busy: f64,
}

/// Step 3.
struct Change {
    durations: Vec<Duration>,
    kafka: BTreeMap<String, f64>,
    /// Changed topics whose new value Kafka holds (read back after the last change).
    verified: usize,
}

struct Outcome {
    cluster_ready: Duration,
    /// What one CreateTopics and one IncrementalAlterConfigs of a client add to Kafka's counters.
    calibration: (f64, f64),
    apply: Apply,
    baseline: Restart,
    restart: Restart,
    change: Change,
    load: (Option<f64>, Option<f64>),
}

fn main() -> anyhow::Result<()> {
    let chosen: Option<usize> = std::env::args().skip(1).find_map(|a| a.parse().ok());
    // A chosen count is measured as in the full run.
    let full = kafka_env::full_run() || chosen.is_some();
    let plan = if full {
        Plan {
            topics: chosen.unwrap_or(1000),
            nodes: 3,
            changes: 5,
            create_concurrency: 16,
            within: Duration::from_secs(900),
            quiet: Duration::from_secs(6),
        }
    } else {
        Plan {
            topics: 20,
            nodes: 1,
            changes: 1,
            create_concurrency: 16,
            within: Duration::from_secs(300),
            quiet: Duration::from_secs(6),
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(run(plan))?;
    kafka_env::emit("topics_scale", &report(&plan, &outcome))
}

fn cluster(nodes: i32) -> anyhow::Result<KafkaCluster> {
    let brokers: Vec<serde_json::Value> = (0..nodes)
        .map(|id| json!({"id": id, "configGroup": "default", "roles": ["broker", "controller"]}))
        .collect();
    Ok(serde_json::from_value(json!({
        "apiVersion": "kafka.pier.dev/v1alpha1",
        "kind": "KafkaCluster",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "kafka": {"readOnlyConfig": {
                "offsets.topic.replication.factor": "1",
                "auto.create.topics.enable": "false"
            }},
            "brokerConfigGroups": {"default": {
                "heapOpts": "-Xms256m -Xmx256m",
                "storage": [{"mountPath": "/var/lib/kafka/data0", "size": "1Gi"}]
            }},
            "brokers": brokers,
            "listeners": {"external": [{
                "name": "external", "containerPort": 9094,
                "bootstrapPort": BOOTSTRAP_PORT, "brokerPortBase": BROKER_PORT_BASE
            }]},
            "envoy": {"replicas": 1}
        }
    }))?)
}

fn topic_name(i: usize) -> String {
    format!("bench-{i:04}")
}

fn kafka_topic(i: usize) -> anyhow::Result<KafkaTopic> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "kafka.pier.dev/v1alpha1",
        "kind": "KafkaTopic",
        "metadata": {"name": topic_name(i), "namespace": NS},
        "spec": {
            "clusterRef": {"name": NAME},
            "partitions": 1,
            "replicationFactor": 1,
            "config": {CONFIG_KEY: "86400000"}
        }
    }))?)
}

async fn run(plan: Plan) -> anyhow::Result<Outcome> {
    let load_start = kafka_env::load_average();
    let logs = LogDir::named("bench-topics-scale")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    install_chart(&plane).await?;
    let devlet = tokio::spawn(devlet::run(
        client.clone(),
        DevletOptions::new("topics", logs.data("devlet")?),
    ));
    let mut operator = Operator::start(&plane, NS)?;
    wait_leading(&operator).await?;

    eprintln!("topics_scale: a KafkaCluster of {} broker(s)", plan.nodes);
    let started = Instant::now();
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &cluster(plan.nodes)?)
        .await?;
    wait_for("the KafkaCluster Ready", plan.within, POLL * 5, || async {
        let kc = Api::<KafkaCluster>::namespaced(client.clone(), NS)
            .get(NAME)
            .await
            .ok()?;
        kc.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await
    .with_context(|| operator.process.log_tail(20))?;
    let cluster_ready = started.elapsed();
    eprintln!("  Ready after {cluster_ready:?}");

    // The same restart with no KafkaTopic: what the KafkaCluster controller asks Kafka alone.
    wait_reconciled(&operator, 0, plan).await?;
    eprintln!("topics_scale: restart without KafkaTopics");
    let baseline = restart(&mut operator, &plane, 0, plan).await?;

    let calibration = calibrate(&client).await?;
    eprintln!("  one CreateTopics / IncrementalAlterConfigs counts {calibration:?}");

    let times: ReadyTimes = Arc::default();
    let topics: Api<KafkaTopic> = Api::namespaced(client.clone(), NS);
    let (listed, initial) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(watch_ready(topics.clone(), times.clone(), listed));
    // Every Ready is seen as it happens: the watch has listed before the first create.
    tokio::time::timeout(Duration::from_secs(60), initial)
        .await
        .context("the bench's KafkaTopic watch did not list within 60 s")??;

    eprintln!("topics_scale: applying {} KafkaTopics", plan.topics);
    let apply = apply(&operator, &plane, &topics, &times, plan).await?;
    operator.check_running()?;
    eprintln!(
        "  all Ready after {:?} (creates answered after {:?})",
        apply.total, apply.creates
    );

    // Reconciles of the last status writes settle before the restart.
    wait_reconciled(&operator, 0, plan).await?;
    eprintln!("topics_scale: restart with {} KafkaTopics", plan.topics);
    let restart = restart(&mut operator, &plane, plan.topics, plan).await?;
    eprintln!(
        "  topic reconciles ≥ {} after {:?}, their last after {:?}; bursts {:?}",
        plan.topics, restart.reconciled, restart.topics_settled, restart.bursts
    );

    eprintln!("topics_scale: {} config change(s)", plan.changes);
    let change = change(&operator, &topics, &times, plan).await?;
    operator.check_running()?;

    watch.abort();
    operator.stop();
    devlet.abort();
    drop(plane);
    Ok(Outcome {
        cluster_ready,
        calibration,
        apply,
        baseline,
        restart,
        change,
        load: (load_start, kafka_env::load_average()),
    })
}

async fn wait_leading(operator: &Operator) -> anyhow::Result<Instant> {
    wait_for(
        "the operator to lead",
        Duration::from_secs(120),
        Duration::from_millis(50),
        || async { operator.get("/leader").await.ok().map(|_| Instant::now()) },
    )
    .await
    .with_context(|| operator.process.log_tail(20))
}

/// The generation a KafkaTopic is Ready for, if it is.
fn ready_generation(kt: &KafkaTopic) -> Option<i64> {
    let generation = kt.metadata.generation?;
    kt.status
        .as_ref()?
        .conditions
        .iter()
        .any(|c| {
            c.type_ == "Ready" && c.status == "True" && c.observed_generation == Some(generation)
        })
        .then_some(generation)
}

/// Records when each KafkaTopic is first seen Ready for a generation; says on `listed` when
/// its first list is done.
async fn watch_ready(
    api: Api<KafkaTopic>,
    times: ReadyTimes,
    listed: tokio::sync::oneshot::Sender<()>,
) {
    let mut listed = Some(listed);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let now = Instant::now();
        let kt = match event {
            Ok(watcher::Event::Apply(kt) | watcher::Event::InitApply(kt)) => kt,
            Ok(watcher::Event::InitDone) => {
                if let Some(listed) = listed.take() {
                    let _ = listed.send(());
                }
                continue;
            }
            _ => continue,
        };
        if let Some(generation) = ready_generation(&kt)
            && let Ok(mut times) = times.lock()
        {
            times
                .entry(kt.name_any())
                .or_default()
                .entry(generation)
                .or_insert(now);
        }
    }
}

/// When `name` was first seen Ready for `generation`.
fn ready_at(times: &ReadyTimes, name: &str, generation: i64) -> Option<Instant> {
    times.lock().ok()?.get(name)?.get(&generation).copied()
}

/// The operator's reconcile counters: (KafkaTopic, KafkaCluster).
async fn reconcile_counts(operator: &Operator) -> Option<(f64, f64)> {
    let m = operator.metrics().await.ok()?;
    Some((
        m.get("pier_topic_reconciles_total").copied().unwrap_or(0.0),
        m.get("pier_reconciles_total").copied().unwrap_or(0.0),
    ))
}

/// A process's reconciles as its counters showed them (polled every [`POLL`]).
struct Reconciles {
    /// When at least the wanted KafkaTopic reconciles and one KafkaCluster reconcile had run.
    reached: Instant,
    /// Each move of the KafkaTopic counter: (when, count).
    topic_moves: Vec<(Instant, f64)>,
    topic_reconciles: f64,
    cluster_reconciles: f64,
}

impl Reconciles {
    /// When the KafkaTopic counter last moved.
    fn topics_settled(&self) -> Option<Instant> {
        self.topic_moves.last().map(|(at, _)| *at)
    }

    /// Bursts of KafkaTopic reconciles (moves less than a second apart), relative to `from`:
    /// `(first move, last move, reconciles)`.
    fn bursts(&self, from: Instant) -> Vec<(Duration, Duration, f64)> {
        let mut bursts: Vec<(Duration, Duration, f64)> = Vec::new();
        let mut before = 0.0;
        let mut prior: Option<Instant> = None;
        for (at, total) in &self.topic_moves {
            let since = at.saturating_duration_since(from);
            match bursts.last_mut() {
                Some(b)
                    if prior.is_some_and(|p| at.duration_since(p) <= Duration::from_secs(1)) =>
                {
                    b.1 = since;
                    b.2 += total - before;
                }
                _ => bursts.push((since, since, total - before)),
            }
            (before, prior) = (*total, Some(*at));
        }
        bursts
    }
}

/// Polls the reconcile counters until at least `topics` KafkaTopic reconciles and one
/// KafkaCluster reconcile ran and neither counter moved for `plan.quiet`.
async fn wait_reconciled(
    operator: &Operator,
    topics: usize,
    plan: Plan,
) -> anyhow::Result<Reconciles> {
    let deadline = Instant::now() + plan.within;
    let mut last = (0.0, 0.0);
    let mut moved = Instant::now();
    let mut reached = None;
    let mut topic_moves = Vec::new();
    loop {
        let now = Instant::now();
        if let Some(counts) = reconcile_counts(operator).await {
            if counts.0 != last.0 {
                topic_moves.push((now, counts.0));
            }
            if counts != last {
                (last, moved) = (counts, now);
            }
            if reached.is_none() && counts.0 >= topics as f64 && counts.1 >= 1.0 {
                reached = Some(now);
            }
        }
        if let Some(reached) = reached
            && now.duration_since(moved) >= plan.quiet
        {
            return Ok(Reconciles {
                reached,
                topic_moves,
                topic_reconciles: last.0,
                cluster_reconciles: last.1,
            });
        }
        anyhow::ensure!(
            now < deadline,
            "the operator's reconciles did not settle within {:?} ({topics} KafkaTopic reconciles wanted; counts {last:?}); log:\n{}",
            plan.within,
            operator.process.log_tail(20)
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The operator's writes since `mark` by `verb resource[/subresource]`, its Lease apart.
fn operator_writes(
    plane: &ControlPlane,
    mark: &pier_testenv::control_plane::AuditMark,
) -> anyhow::Result<BTreeMap<String, usize>> {
    Ok(plane
        .audit_write_counts(SERVICE_ACCOUNT, mark)?
        .into_iter()
        .filter(|(what, _)| !what.contains("leases"))
        .collect())
}

async fn apply(
    operator: &Operator,
    plane: &ControlPlane,
    topics: &Api<KafkaTopic>,
    times: &ReadyTimes,
    plan: Plan,
) -> anyhow::Result<Apply> {
    let client = plane.client();
    let kafka_before = kafka_requests(&client, NS, NAME).await?;
    let reconciles_before = reconcile_counts(operator).await.unwrap_or_default();
    let mark = plane.audit_mark()?;
    let cpu_before = operator.cpu()?;
    let machine_before = kafka_env::machine_cpu_seconds();
    let first = Instant::now();
    let created: Vec<anyhow::Result<(String, i64, Instant)>> =
        futures::stream::iter(0..plan.topics)
            .map(|i| async move {
                let kt = topics
                    .create(&PostParams::default(), &kafka_topic(i)?)
                    .await?;
                Ok((
                    kt.name_any(),
                    kt.metadata.generation.unwrap_or(1),
                    Instant::now(),
                ))
            })
            .buffer_unordered(plan.create_concurrency)
            .collect()
            .await;
    let created: Vec<(String, i64, Instant)> = created.into_iter().collect::<Result<_, _>>()?;
    let creates = created
        .iter()
        .map(|(_, _, at)| at.duration_since(first))
        .max()
        .unwrap_or_default();
    let count_ready = || {
        created
            .iter()
            .filter(|(name, g, _)| ready_at(times, name, *g).is_some())
            .count()
    };
    let last = wait_for(
        &format!("{} KafkaTopics Ready", plan.topics),
        plan.within,
        POLL * 2,
        || async {
            created
                .iter()
                .map(|(name, g, _)| ready_at(times, name, *g))
                .collect::<Option<Vec<Instant>>>()?
                .into_iter()
                .max()
        },
    )
    .await
    .with_context(|| {
        format!(
            "{} of {} Ready; operator log:\n{}",
            count_ready(),
            plan.topics,
            operator.process.log_tail(20)
        )
    })?;
    let machine = kafka_env::machine_cpu_seconds()
        .zip(machine_before)
        .map(|(after, before)| after - before);
    let total = last.duration_since(first);
    let per_topic = created
        .iter()
        .filter_map(|(name, g, at)| Some(ready_at(times, name, *g)?.saturating_duration_since(*at)))
        .collect();
    let cpu = operator.cpu()? - cpu_before;
    let (_, hwm) = operator.memory()?;
    let kafka_after = kafka_requests(&client, NS, NAME).await?;
    let reconciles_after = reconcile_counts(operator).await.unwrap_or_default();
    let first_status = first_status_writes(plane, &mark)?;
    Ok(Apply {
        first_status,
        total,
        creates,
        per_topic,
        kafka: admin_requests(&kafka_before, &kafka_after),
        writes: operator_writes(plane, &mark)?,
        topic_reconciles: reconciles_after.0 - reconciles_before.0,
        cpu,
        hwm,
        machine_busy: machine.unwrap_or(f64::NAN) / total.as_secs_f64(),
    })
}

/// Per KafkaTopic created since `mark`: its create → the operator's first write of its status,
/// both as the apiserver's audit log times them.
fn first_status_writes(
    plane: &ControlPlane,
    mark: &pier_testenv::control_plane::AuditMark,
) -> anyhow::Result<Vec<Duration>> {
    let at = |s: &str| -> anyhow::Result<k8s_openapi::jiff::Timestamp> {
        s.parse().with_context(|| format!("audit timestamp {s:?}"))
    };
    let mut created = BTreeMap::new();
    let mut written = BTreeMap::new();
    for e in plane
        .audit_events(mark, None)?
        .into_iter()
        .filter(|e| e.resource == "kafkatopics" && (200..300).contains(&e.code))
    {
        if e.verb == "create" && e.subresource.is_empty() {
            created.insert(e.name.clone(), at(&e.timestamp)?);
        } else if e.user == SERVICE_ACCOUNT && e.verb == "patch" && e.subresource == "status" {
            written.entry(e.name.clone()).or_insert(at(&e.timestamp)?);
        }
    }
    Ok(created
        .iter()
        .filter_map(|(name, c)| {
            let w = written.get(name)?;
            Duration::try_from(w.duration_since(*c)).ok()
        })
        .collect())
}

/// Stops the operator and starts another process on its xDS address; measures it until its
/// reconciles settle with `topics` KafkaTopics in sync.
async fn restart(
    operator: &mut Operator,
    plane: &ControlPlane,
    topics: usize,
    plan: Plan,
) -> anyhow::Result<Restart> {
    let client = plane.client();
    let xds = operator.xds;
    let status_before = cluster_status(&client).await?;
    operator.stop();
    // Counted from here: the stopped process's last writes (its leader mark removed) are not.
    let kafka_before = kafka_requests(&client, NS, NAME).await?;
    let mark = plane.audit_mark()?;
    let machine_before = kafka_env::machine_cpu_seconds();
    let started = Instant::now();
    *operator = Operator::start_at(plane, NS, Some(xds))?;
    let leading = wait_leading(operator).await?;
    let reconciles = wait_reconciled(operator, topics, plan).await?;
    let machine = kafka_env::machine_cpu_seconds()
        .zip(machine_before)
        .map(|(after, before)| after - before);
    let window = started.elapsed();
    let cpu = operator.cpu()?;
    let (rss, hwm) = operator.memory()?;
    let kafka_after = kafka_requests(&client, NS, NAME).await?;
    let mut requests = BTreeMap::new();
    for e in plane
        .audit_events(&mark, None)?
        .into_iter()
        .filter(|e| e.user == SERVICE_ACCOUNT && e.resource != "leases")
    {
        *requests.entry(e.verb_and_resource()).or_insert(0) += 1;
    }
    operator.check_running()?;
    Ok(Restart {
        topics,
        leading: leading.duration_since(started),
        reconciled: reconciles.reached.duration_since(started),
        topics_settled: reconciles
            .topics_settled()
            .map(|at| at.duration_since(started)),
        bursts: reconciles.bursts(started),
        cluster_status_changed: status_changes(&status_before, &cluster_status(&client).await?),
        topic_reconciles: reconciles.topic_reconciles,
        cluster_reconciles: reconciles.cluster_reconciles,
        kafka: admin_requests(&kafka_before, &kafka_after),
        writes: operator_writes(plane, &mark)?,
        requests,
        window,
        cpu,
        rss,
        hwm,
        machine_busy: machine.unwrap_or(f64::NAN) / window.as_secs_f64(),
    })
}

/// The KafkaCluster's status as JSON.
async fn cluster_status(client: &kube::Client) -> anyhow::Result<serde_json::Value> {
    let kc = Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .get(NAME)
        .await?;
    Ok(serde_json::to_value(kc.status)?)
}

/// The status fields (conditions by type) that differ between `before` and `after`, each as
/// `field: before → after`.
fn status_changes(before: &serde_json::Value, after: &serde_json::Value) -> Vec<String> {
    let fields = |v: &serde_json::Value| -> BTreeMap<String, serde_json::Value> {
        let mut out: BTreeMap<String, serde_json::Value> = v
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        if let Some(serde_json::Value::Array(conditions)) = out.remove("conditions") {
            for c in conditions {
                let type_ = c["type"].as_str().unwrap_or_default().to_string();
                out.insert(format!("conditions[{type_}]"), c);
            }
        }
        out
    };
    let (before, after) = (fields(before), fields(after));
    let null = serde_json::Value::Null;
    before
        .keys()
        .chain(after.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter_map(|k| {
            let (b, a) = (
                before.get(k).unwrap_or(&null),
                after.get(k).unwrap_or(&null),
            );
            (a != b).then(|| format!("`{k}`: `{b}` → `{a}`"))
        })
        .collect()
}

/// Step 3: `retention.ms` of one topic changed at a time, each after the snapshot expired.
async fn change(
    operator: &Operator,
    topics: &Api<KafkaTopic>,
    times: &ReadyTimes,
    plan: Plan,
) -> anyhow::Result<Change> {
    let client = topics.clone().into_client();
    let kafka_before = kafka_requests(&client, NS, NAME).await?;
    let mut durations = Vec::new();
    let mut expected = BTreeMap::new();
    for i in 0..plan.changes {
        let name = topic_name((plan.topics / 2 + 7 * i) % plan.topics);
        let value = (3_600_000 * (i + 2)).to_string();
        // The cluster's snapshot expires: the change pays for a full one, as a lone change in
        // a quiet cluster does.
        tokio::time::sleep(SNAPSHOT_MAX_AGE + Duration::from_secs(1)).await;
        let patched = Instant::now();
        let kt = topics
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"config": {CONFIG_KEY: value}}})),
            )
            .await?;
        let generation = kt.metadata.generation.context("a generation")?;
        let ready = wait_for(
            &format!("{name} Ready for generation {generation}"),
            Duration::from_secs(120),
            Duration::from_millis(10),
            || async { ready_at(times, &name, generation) },
        )
        .await
        .with_context(|| operator.process.log_tail(20))?;
        let took = ready.saturating_duration_since(patched);
        eprintln!("  {name}: Ready after {took:?}");
        durations.push(took);
        expected.insert(name, value);
    }
    let kafka_after = kafka_requests(&client, NS, NAME).await?;
    // Read back from Kafka, after the counters (this DescribeConfigs is the bench's own).
    let nodes: BTreeMap<i32, String> = broker_addresses(&client).await?;
    let admin = pier::kafka::AdminClient::new(nodes, Default::default());
    let names: Vec<String> = expected.keys().cloned().collect();
    let configs = admin
        .describe_topic_configs(&names, &[CONFIG_KEY.to_string()])
        .await?;
    let verified = expected
        .iter()
        .filter(|(name, value)| {
            configs.get(*name).is_some_and(|entries| {
                entries
                    .iter()
                    .any(|e| e.name == CONFIG_KEY && e.value.as_ref() == Some(*value))
            })
        })
        .count();
    Ok(Change {
        durations,
        kafka: admin_requests(&kafka_before, &kafka_after),
        verified,
    })
}

/// What one admin write adds to Kafka's request counters, from the bench's own CreateTopics and
/// IncrementalAlterConfigs of a topic no KafkaTopic names: in KRaft the broker that receives
/// such a request forwards it to the active controller, whose request metrics may count it
/// again.
async fn calibrate(client: &kube::Client) -> anyhow::Result<(f64, f64)> {
    use pier::kafka::{ConfigOp, ConfigResource, NewTopic};
    const TOPIC: &str = "bench-calibration";
    let admin = pier::kafka::AdminClient::new(broker_addresses(client).await?, Default::default());
    let before = kafka_requests(client, NS, NAME).await?;
    admin
        .create_topic(&NewTopic {
            name: TOPIC.into(),
            partitions: 1,
            replication_factor: 1,
            configs: Vec::new(),
        })
        .await?;
    admin
        .incremental_alter_configs(
            &ConfigResource::Topic(TOPIC.into()),
            &[ConfigOp::set(CONFIG_KEY, "3600000")],
            false,
        )
        .await?;
    let after = kafka_requests(client, NS, NAME).await?;
    let d = common::request_deltas(&before, &after);
    Ok((
        count(&d, "CreateTopics"),
        count(&d, "IncrementalAlterConfigs"),
    ))
}

/// The brokers' own listeners (`<Pod IP>:9092`), by broker id.
async fn broker_addresses(client: &kube::Client) -> anyhow::Result<BTreeMap<i32, String>> {
    use k8s_openapi::api::core::v1::Pod;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let selector = format!("kafka.pier.dev/cluster={NAME},app.kubernetes.io/component=broker");
    Ok(pods
        .list(&kube::api::ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter_map(|p| {
            let id = p.labels().get("kafka.pier.dev/broker-id")?.parse().ok()?;
            Some((id, format!("{}:9092", p.status?.pod_ip?)))
        })
        .collect())
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// "p50 / p99 / max" of `values`.
fn p50_p99_max(values: &[Duration]) -> String {
    format!(
        "{} / {} / {}",
        secs_of(common::percentile(values, 0.5)),
        secs_of(common::percentile(values, 0.99)),
        secs_of(values.iter().max().copied())
    )
}

fn secs_of(d: Option<Duration>) -> String {
    d.map_or("n/a".into(), |d| {
        if d < Duration::from_secs(1) {
            format!("{:.0} ms", d.as_secs_f64() * 1000.0)
        } else {
            format!("{:.2} s", d.as_secs_f64())
        }
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn count(map: &BTreeMap<String, f64>, kind: &str) -> f64 {
    map.get(kind).copied().unwrap_or(0.0)
}

/// Kafka's requests between two readings, the data path (produce, consumer and replica
/// fetches: the KRaft quorum's own replication among them) left out.
fn admin_requests(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    let mut deltas = common::request_deltas(before, after);
    deltas
        .retain(|kind, _| !["Produce", "FetchConsumer", "FetchFollower"].contains(&kind.as_str()));
    deltas
}

/// Requests behind `counted` when one request counts `per` (see [`calibrate`]).
fn per_request(counted: f64, per: f64) -> String {
    if per > 0.0 {
        format!("{}", counted / per)
    } else {
        "n/a".into()
    }
}

fn admin_writes(map: &BTreeMap<String, f64>) -> f64 {
    KAFKA_ADMIN_WRITES.iter().map(|k| count(map, k)).sum()
}

fn listed<V: std::fmt::Display>(map: &BTreeMap<String, V>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn report(plan: &Plan, o: &Outcome) -> String {
    let n = plan.topics;
    let a = &o.apply;
    let (b, r, c) = (&o.baseline, &o.restart, &o.change);
    let writes = |m: &BTreeMap<String, usize>| m.values().sum::<usize>();
    let topic_writes = |m: &BTreeMap<String, usize>| {
        m.iter()
            .filter(|(k, _)| k.contains("kafkatopics"))
            .map(|(_, v)| v)
            .sum::<usize>()
    };
    let mut s = String::from("## KafkaTopics at scale\n\n");
    s.push_str(&format!(
        "{n} KafkaTopics (1 partition, replication factor 1, `{CONFIG_KEY}` set) of one KafkaCluster of {} real Kafka node(s) (KRaft, combined broker+controller, 256 MB heap) and Envoy run by `pier-devlet` as local processes; real control plane; `pier operator` as a process with the chart's ServiceAccount and RBAC (leader election on). Kafka's requests are the brokers' own counts (`kafka_network_requestmetrics_requests_total` of every broker's JMX exporter, all clients: the KafkaCluster controller's requests too, hence the restart measured first with no KafkaTopic); the operator's Kubernetes requests come from the apiserver's audit log (its leader Lease apart), its CPU and memory from /proc. (1) {n} creates through the API, {} at a time; per topic: create answered → first event of the bench's watch showing it Ready. (2) The operator stopped, a new process started on the same xDS address; the window ends when `pier_topic_reconciles_total` ≥ {n} and the reconcile counters have not moved for {} s. (3) `{CONFIG_KEY}` of one topic changed, {} time(s), each {} s after the last (the cluster's topic snapshot, {} s old at most, has then expired): patch → Ready for the new generation. No pinning; the machine is shared and was busy with other work (load average {} at the start, {} at the end), so times are noisy. Kafka counts one admin write of a client as {} CreateTopics and {} IncrementalAlterConfigs (the bench's own single calls, before step 1: the receiving broker forwards it to the active controller, which counts it too); \"requests\" below divide by that.\n\n",
        plan.nodes,
        plan.create_concurrency,
        plan.quiet.as_secs(),
        plan.changes,
        (SNAPSHOT_MAX_AGE + Duration::from_secs(1)).as_secs(),
        SNAPSHOT_MAX_AGE.as_secs(),
        o.load.0.map_or("n/a".into(), |l| format!("{l:.1}")),
        o.load.1.map_or("n/a".into(), |l| format!("{l:.1}")),
        o.calibration.0,
        o.calibration.1,
    ));
    s.push_str(&format!(
        "The operator's binary: {}. The KafkaCluster was Ready {} after its creation.\n\n",
        common::operator_binary_described(),
        secs(o.cluster_ready)
    ));
    s.push_str("| Step | Measure | Value |\n|---|---|---:|\n");
    let mut row = |step: &str, what: &str, value: String| {
        s.push_str(&format!("| {step} | {what} | {value} |\n"));
    };
    row(
        &format!("1. apply {n} → all Ready"),
        "first create → last Ready",
        format!(
            "{} ({:.0} topics/s; creates answered after {})",
            secs(a.total),
            n as f64 / a.total.as_secs_f64(),
            secs(a.creates)
        ),
    );
    row(
        "",
        "per topic, create → Ready: p50 / p99 / max",
        p50_p99_max(&a.per_topic),
    );
    row(
        "",
        "per topic, create → Pier's first status write (its CreateTopics answered): p50 / p99 / max",
        p50_p99_max(&a.first_status),
    );
    row(
        "",
        "Kafka CreateTopics (requests) / Metadata / DescribeConfigs",
        format!(
            "{} ({}) / {} / {}",
            count(&a.kafka, "CreateTopics"),
            per_request(count(&a.kafka, "CreateTopics"), o.calibration.0),
            count(&a.kafka, "Metadata"),
            count(&a.kafka, "DescribeConfigs")
        ),
    );
    row(
        "",
        "topic reconciles; Kubernetes writes (per topic)",
        format!(
            "{} ({:.1}); {} ({:.1})",
            a.topic_reconciles,
            a.topic_reconciles / n as f64,
            writes(&a.writes),
            writes(&a.writes) as f64 / n as f64
        ),
    );
    row(
        "",
        "operator CPU; VmHWM",
        format!("{:.1} s; {}", a.cpu, mib(a.hwm)),
    );
    let bursts = |x: &Restart| {
        x.bursts
            .iter()
            .map(|(from, to, n)| {
                format!("{n} in {:.1}–{:.1} s", from.as_secs_f64(), to.as_secs_f64())
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    row(
        &format!("2. restart, {n} in sync"),
        &format!("new process → leads; → topic reconciles ≥ {n}; → last topic reconcile"),
        format!(
            "{}; {}; {}",
            secs(r.leading),
            secs(r.reconciled),
            r.topics_settled.map_or("n/a".into(), secs)
        ),
    );
    row(
        "",
        "topic reconciles (bursts, from the start)",
        format!("{} ({})", r.topic_reconciles, bursts(r)),
    );
    row(
        "",
        "Kubernetes writes to KafkaTopics; all writes (no KafkaTopic)",
        format!(
            "{}; {} ({})",
            topic_writes(&r.writes),
            writes(&r.writes),
            writes(&b.writes)
        ),
    );
    row(
        "",
        "Kafka admin writes (no KafkaTopic)",
        format!("{} ({})", admin_writes(&r.kafka), admin_writes(&b.kafka)),
    );
    row(
        "",
        "Kafka Metadata / DescribeConfigs (no KafkaTopic)",
        format!(
            "{} / {} ({} / {})",
            count(&r.kafka, "Metadata"),
            count(&r.kafka, "DescribeConfigs"),
            count(&b.kafka, "Metadata"),
            count(&b.kafka, "DescribeConfigs")
        ),
    );
    row(
        "",
        "operator CPU; VmRSS / VmHWM (no KafkaTopic)",
        format!(
            "{:.1} s; {} / {} ({:.1} s; {} / {})",
            r.cpu,
            mib(r.rss),
            mib(r.hwm),
            b.cpu,
            mib(b.rss),
            mib(b.hwm)
        ),
    );
    row(
        &format!("3. one change among {n}"),
        "patch → Ready: p50 / max",
        format!(
            "{} / {} ({} change(s))",
            secs_of(common::percentile(&c.durations, 0.5)),
            secs_of(c.durations.iter().max().copied()),
            c.durations.len()
        ),
    );
    row(
        "",
        "Kafka IncrementalAlterConfigs (requests) / Metadata / DescribeConfigs",
        format!(
            "{} ({}) / {} / {}",
            count(&c.kafka, "IncrementalAlterConfigs"),
            per_request(count(&c.kafka, "IncrementalAlterConfigs"), o.calibration.1),
            count(&c.kafka, "Metadata"),
            count(&c.kafka, "DescribeConfigs")
        ),
    );
    row(
        "",
        "new value read back from Kafka",
        format!("{} of {}", c.verified, c.durations.len()),
    );
    s.push('\n');
    s.push_str(&format!(
        "- Apply: Kafka requests {}; operator writes {}; cores busy on the machine meanwhile (every process) {:.2}.\n",
        listed(&a.kafka),
        listed(&a.writes),
        a.machine_busy
    ));
    for x in [b, r] {
        s.push_str(&format!(
            "- Restart with {} KafkaTopics (window {}: until the reconcile counters stood still for {} s): Kafka requests {}; operator writes {}; operator requests {}; {} topic and {} cluster reconciles; KafkaCluster status changed: {}; cores busy on the machine {:.2}.\n",
            x.topics,
            secs(x.window),
            plan.quiet.as_secs(),
            listed(&x.kafka),
            listed(&x.writes),
            listed(&x.requests),
            x.topic_reconciles,
            x.cluster_reconciles,
            if x.cluster_status_changed.is_empty() {
                "nothing".into()
            } else {
                x.cluster_status_changed.join("; ")
            },
            x.machine_busy
        ));
    }
    s.push_str(&format!(
        "- Changes: each took {}; Kafka requests meanwhile {} (the {} s waits included).\n",
        c.durations
            .iter()
            .map(|d| secs_of(Some(*d)))
            .collect::<Vec<_>>()
            .join(", "),
        listed(&c.kafka),
        (SNAPSHOT_MAX_AGE + Duration::from_secs(1)).as_secs()
    ));
    // Beyond what the same restart asked without KafkaTopics.
    let per_topic = ["Metadata", "DescribeConfigs"]
        .iter()
        .any(|k| count(&r.kafka, k) - count(&b.kafka, k) >= n as f64 / 2.0);
    s.push_str(&format!(
        "\nReading: creating {n} topics cost Kafka {:.2} Metadata and {:.2} DescribeConfigs requests per topic (topics Pier created are asked about again, together, before they say Ready). After the restart the {n} KafkaTopics in sync ({} topic reconciles) cost {} Kubernetes writes to KafkaTopics and {} Kafka admin writes, and Kafka saw {} Metadata and {} DescribeConfigs requests from every client together (the same restart without KafkaTopics: {} and {}): {}. A change of one topic among {n} was Ready again after {} (p50; a reconcile that finds the cluster's snapshot expired asks for all {n} topics again, alters the config, then asks for the changed topics again).\n",
        count(&a.kafka, "Metadata") / n as f64,
        count(&a.kafka, "DescribeConfigs") / n as f64,
        r.topic_reconciles,
        topic_writes(&r.writes),
        admin_writes(&r.kafka),
        count(&r.kafka, "Metadata"),
        count(&r.kafka, "DescribeConfigs"),
        count(&b.kafka, "Metadata"),
        count(&b.kafka, "DescribeConfigs"),
        if per_topic {
            "**about one per topic: the snapshot is not shared**"
        } else {
            "a few cluster-wide snapshots, not a request per topic"
        },
        secs_of(common::percentile(&c.durations, 0.5)),
    ));
    s
}
