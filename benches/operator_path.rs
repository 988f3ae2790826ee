//! The whole path (issue 15, part 3): a KafkaCluster spec change → `pier operator` → xDS →
//! Envoy serving, with the real control plane, real brokers and Envoy run by the dev node agent,
//! and the operator as a process with the chart's RBAC.
//!
//!     cargo bench --bench operator_path     # 3 brokers, 10 additions and 10 removals
//!     cargo test --bench operator_path      # smoke: 1 broker, one addition and one removal
//!
//! Each cycle adds a broker (a new Pod) with a merge patch of `spec.brokers`, then removes it
//! again: Pier drains it (the bench moved one empty partition onto it), deletes its Pod and
//! drops its Envoy listener, a listener change with no new Pod. Fresh broker ids every cycle.
//! Timed per change, from the bench's clock (one machine, one clock):
//! - addition: patch → Envoy's admin API lists the broker's listener (polled every 20 ms);
//!   the xDS part of it: the Pod's address reported (seen by a watch of this process, as the
//!   operator's own watch sees it) → Envoy lists the listener; and patch → the broker answers
//!   on its own port through Envoy, and → kcat produces (acks=all) through Envoy's bootstrap
//!   to a partition the bench moved onto it (broker start-up included);
//! - removal: patch → Envoy no longer lists the listener; the xDS part: the operator's deletion
//!   of the Pod (it drops the listener in the same reconcile) → Envoy no longer lists it.
//!
//! Meanwhile producers of this process (one connection per partition leader of a replicated
//! topic, through Envoy's per-broker listeners, one acks=all record per 100 ms each) count
//! dropped connections and failed produce requests. Logs: `target/test-logs/bench-operator-path/`.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use common::{Operator, install_chart};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use pier::api::KafkaCluster;
use pier::kafka::{AdminClient, BrokerConnection, Reassignment};
use pier_testenv::devlet::{self, DevletOptions};
use pier_testenv::{ControlPlane, LogDir, wait_for};
use serde_json::json;
use tokio::sync::Mutex;

mod common;

const NS: &str = "default";
const NAME: &str = "path";
/// Ports no test uses (Envoy binds them on every address).
const BOOTSTRAP_PORT: u16 = 31592;
const BROKER_PORT_BASE: u16 = 31600;
const PROBE: &str = "probe";
const STEADY: &str = "steady";

fn bootstrap() -> String {
    format!("127.0.0.1:{BOOTSTRAP_PORT}")
}

fn broker_address(id: i32) -> String {
    format!("127.0.0.1:{}", BROKER_PORT_BASE as i32 + id)
}

fn brokers_spec(ids: &[i32]) -> serde_json::Value {
    ids.iter()
        .map(|id| {
            let roles: &[&str] = if *id < 3 {
                &["broker", "controller"]
            } else {
                &["broker"]
            };
            json!({"id": id, "configGroup": "default", "roles": roles})
        })
        .collect()
}

fn cluster(initial: i32) -> anyhow::Result<KafkaCluster> {
    let rf = initial.min(3).to_string();
    let ids: Vec<i32> = (0..initial).collect();
    Ok(serde_json::from_value(json!({
        "apiVersion": "kafka.pier.dev/v1alpha1",
        "kind": "KafkaCluster",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "kafka": {"readOnlyConfig": {
                "default.replication.factor": rf,
                "offsets.topic.replication.factor": rf,
                "transaction.state.log.replication.factor": rf,
                "transaction.state.log.min.isr": "1",
                "auto.create.topics.enable": "false"
            }},
            "brokerConfigGroups": {"default": {
                "heapOpts": "-Xms256m -Xmx256m",
                "storage": [{"mountPath": "/var/lib/kafka/data0", "size": "1Gi"}]
            }},
            "brokers": brokers_spec(&ids),
            "listeners": {"external": [{
                "name": "external", "containerPort": 9094, "type": "LoadBalancer",
                "bootstrapPort": BOOTSTRAP_PORT, "brokerPortBase": BROKER_PORT_BASE
            }]},
            "envoy": {"replicas": 1},
            // The bench places partitions itself; Pier drains on removal.
            "rebalance": {"onBrokerAdd": false}
        }
    }))?)
}

/// One change's timings.
#[derive(Default, Clone)]
struct Change {
    /// patch → Envoy lists the listener (addition) / lists it no more (removal).
    total: Duration,
    /// The operator's input → Envoy (see the module doc).
    xds: Option<Duration>,
    /// Additions: patch → the broker answers through its own Envoy port.
    reachable: Option<Duration>,
    /// Additions: patch → kcat produced to it through Envoy.
    produced: Option<Duration>,
}

/// When the bench's own watch first saw each broker Pod with an address, and being deleted.
#[derive(Default)]
struct PodTimes {
    addressed: BTreeMap<String, Instant>,
    deleting: BTreeMap<String, Instant>,
}

/// Producer counters.
#[derive(Default)]
struct Counters {
    acked: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let (initial, cycles) = if full { (3, 10) } else { (1, 1) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let section = runtime.block_on(run(initial, cycles))?;
    println!("{section}");
    if let Some(dir) = std::env::var_os("PIER_BENCH_OUT") {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(Path::new(&dir).join("operator_path.md"), &section)?;
    }
    Ok(())
}

async fn run(initial: i32, cycles: i32) -> anyhow::Result<String> {
    let logs = LogDir::named("bench-operator-path")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    install_chart(&plane).await?;
    let devlet = tokio::spawn(devlet::run(
        client.clone(),
        DevletOptions::new("path", logs.data("devlet")?),
    ));
    let mut operator = Operator::start(&plane, NS)?;
    wait_for(
        "the operator to lead",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async { operator.get("/leader").await.ok().map(|_| ()) },
    )
    .await?;
    let times = Arc::new(Mutex::new(PodTimes::default()));
    let watch = tokio::spawn(watch_pods(client.clone(), times.clone()));

    let kcs: Api<KafkaCluster> = Api::namespaced(client.clone(), NS);
    kcs.create(&PostParams::default(), &cluster(initial)?)
        .await?;
    eprintln!("operator_path: waiting for {initial} brokers and Envoy");
    wait_for(
        &format!("{initial} brokers through Envoy"),
        Duration::from_secs(300),
        Duration::from_secs(1),
        || async {
            let mut c = BrokerConnection::connect(&bootstrap(), Default::default())
                .await
                .ok()?;
            let md = c.metadata(None).await.ok()?;
            (md.brokers.len() == initial as usize).then_some(())
        },
    )
    .await?;
    operator.check_running()?;
    let envoy_admin = envoy_admin(&client).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let stats_before = envoy_stats(&http, &envoy_admin).await?;

    let mut boot = BrokerConnection::connect(&bootstrap(), Default::default()).await?;
    boot.create_topic(STEADY, initial, initial.min(3) as i16)
        .await?;
    boot.create_topic(PROBE, 1, 1).await?;
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(tokio::sync::Notify::new());
    let producers = start_producers(initial, counters.clone(), stop.clone()).await?;

    let mut ids: Vec<i32> = (0..initial).collect();
    let (mut additions, mut removals) = (Vec::new(), Vec::new());
    for cycle in 0..cycles {
        let id = initial + cycle;
        let pod = format!("{NAME}-broker-{id}");
        let port = BROKER_PORT_BASE as i32 + id;
        // Addition.
        ids.push(id);
        let patched = Instant::now();
        set_brokers(&kcs, &ids).await?;
        let listed =
            wait_listener(&http, &envoy_admin, port, true, Duration::from_secs(180)).await?;
        let addressed = times.lock().await.addressed.get(&pod).copied();
        let reachable = wait_for(
            &format!("broker {id} answering through Envoy"),
            Duration::from_secs(180),
            Duration::from_millis(100),
            || async {
                let mut c = BrokerConnection::connect(&broker_address(id), Default::default())
                    .await
                    .ok()?;
                c.metadata(Some(&[])).await.ok().map(|_| Instant::now())
            },
        )
        .await?;
        move_probe_to(&ids, id).await?;
        let produced = wait_for(
            &format!("kcat producing to broker {id} through Envoy"),
            Duration::from_secs(120),
            Duration::from_millis(200),
            || async {
                let out = pier_testenv::kcat(
                    &[
                        "-b",
                        &bootstrap(),
                        "-P",
                        "-t",
                        PROBE,
                        "-p",
                        "0",
                        "-X",
                        "acks=all",
                    ],
                    Some(format!("cycle-{cycle}\n").as_bytes()),
                    Duration::from_secs(20),
                )
                .await
                .ok()?;
                out.status.success().then(Instant::now)
            },
        )
        .await?;
        let add = Change {
            total: listed - patched,
            xds: addressed.map(|a| listed.saturating_duration_since(a)),
            reachable: Some(reachable - patched),
            produced: Some(produced - patched),
        };
        eprintln!(
            "  + broker {id}: listener after {:?} (xDS part {:?}), reachable {:?}, produced {:?}",
            add.total, add.xds, add.reachable, add.produced
        );
        additions.push(add);

        // Removal: Pier drains the probe partition off it, deletes its Pod, drops its listener.
        ids.retain(|i| *i != id);
        let patched = Instant::now();
        set_brokers(&kcs, &ids).await?;
        let gone =
            wait_listener(&http, &envoy_admin, port, false, Duration::from_secs(180)).await?;
        let deleting = times.lock().await.deleting.get(&pod).copied();
        let remove = Change {
            total: gone - patched,
            xds: deleting.map(|d| gone.saturating_duration_since(d)),
            ..Change::default()
        };
        eprintln!(
            "  - broker {id}: listener gone after {:?} (xDS part {:?})",
            remove.total, remove.xds
        );
        removals.push(remove);
        // The next cycle starts from a settled cluster: the Pod gone, Kafka without it.
        wait_for(
            &format!("broker {id} gone"),
            Duration::from_secs(180),
            Duration::from_millis(500),
            || async {
                let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
                let present = pods.get_opt(&pod).await.ok()?.is_some();
                let mut c = BrokerConnection::connect(&bootstrap(), Default::default())
                    .await
                    .ok()?;
                let md = c.metadata(Some(&[])).await.ok()?;
                (!present && md.brokers.iter().all(|b| b.id != id)).then_some(())
            },
        )
        .await?;
        operator.check_running()?;
    }
    stop.notify_waiters();
    for p in producers {
        let _ = tokio::time::timeout(Duration::from_secs(30), p).await;
    }
    let stats_after = envoy_stats(&http, &envoy_admin).await?;
    let stat = |k: &str| {
        stats_after.get(k).copied().unwrap_or(0) - stats_before.get(k).copied().unwrap_or(0)
    };
    let envoy_listeners = (
        stat("listener_manager.listener_added"),
        stat("listener_manager.listener_modified"),
        stat("listener_manager.listener_removed"),
    );
    let acked = counters.acked.load(Ordering::Relaxed);
    let failed = counters.failed.load(Ordering::Relaxed);
    let dropped = counters.dropped.load(Ordering::Relaxed);
    eprintln!(
        "  producers: {acked} acked, {failed} failed, {dropped} connections dropped; Envoy listeners added/modified/removed {envoy_listeners:?}"
    );
    ensure!(acked > 0, "the producers produced nothing");
    watch.abort();
    operator.stop();
    devlet.abort();
    drop(plane);
    Ok(report(
        initial,
        &additions,
        &removals,
        (acked, failed, dropped),
        envoy_listeners,
    ))
}

async fn set_brokers(kcs: &Api<KafkaCluster>, ids: &[i32]) -> anyhow::Result<()> {
    kcs.patch(
        NAME,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"brokers": brokers_spec(ids)}})),
    )
    .await?;
    Ok(())
}

/// Records when each broker Pod first has an address and first is being deleted.
async fn watch_pods(client: kube::Client, times: Arc<Mutex<PodTimes>>) {
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let config = watcher::Config::default().labels(&format!("kafka.pier.dev/cluster={NAME}"));
    let mut stream = watcher(pods, config).boxed();
    while let Some(event) = stream.next().await {
        let now = Instant::now();
        let (pod, deleted) = match event {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => (p, false),
            Ok(watcher::Event::Delete(p)) => (p, true),
            _ => continue,
        };
        let name = pod.name_any();
        let mut t = times.lock().await;
        if deleted || pod.metadata.deletion_timestamp.is_some() {
            t.deleting.entry(name).or_insert(now);
        } else if pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_ref())
            .is_some()
        {
            t.addressed.entry(name).or_insert(now);
        }
    }
}

/// The Envoy Pod's admin API (the devlet puts it on the Pod's address, port 19901).
async fn envoy_admin(client: &kube::Client) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let list = pods
        .list(&ListParams::default().labels(&format!(
            "kafka.pier.dev/cluster={NAME},app.kubernetes.io/component=envoy"
        )))
        .await?;
    let ip = list
        .items
        .iter()
        .find_map(|p| p.status.as_ref()?.pod_ip.clone())
        .context("the Envoy Pod has no address")?;
    Ok(format!("http://{ip}:19901"))
}

/// Polls Envoy's `/listeners` every 20 ms until a listener on `port` is there (`present`) or
/// gone; returns when it first saw that.
async fn wait_listener(
    http: &reqwest::Client,
    admin: &str,
    port: i32,
    present: bool,
    within: Duration,
) -> anyhow::Result<Instant> {
    let suffix = format!(":{port}");
    wait_for(
        &format!(
            "Envoy {} a listener on {port}",
            if present { "with" } else { "without" }
        ),
        within,
        Duration::from_millis(20),
        || async {
            let text = http
                .get(format!("{admin}/listeners"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let listed = text.lines().any(|l| l.trim_end().ends_with(&suffix));
            (listed == present).then(Instant::now)
        },
    )
    .await
}

async fn envoy_stats(http: &reqwest::Client, admin: &str) -> anyhow::Result<BTreeMap<String, i64>> {
    let text = http
        .get(format!("{admin}/stats?filter=listener_manager"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(": ")?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect())
}

/// Moves the probe partition onto broker `id` (through Envoy) and waits until it leads it.
async fn move_probe_to(ids: &[i32], id: i32) -> anyhow::Result<()> {
    let nodes: BTreeMap<i32, String> = ids.iter().map(|i| (*i, broker_address(*i))).collect();
    let admin = AdminClient::new(nodes, Default::default());
    wait_for(
        &format!("{PROBE}-0 led by broker {id}"),
        Duration::from_secs(120),
        Duration::from_millis(250),
        || async {
            let md = admin.metadata(Some(&[PROBE])).await.ok()?;
            let p = md.topic(PROBE)?.partitions.first()?;
            if p.leader == id {
                return Some(());
            }
            if p.replicas != [id] {
                let _ = admin
                    .alter_partition_reassignments(&[Reassignment {
                        topic: PROBE.into(),
                        partition: 0,
                        replicas: vec![id],
                    }])
                    .await;
            }
            None
        },
    )
    .await
}

/// One producer per partition of the steady topic, on its leader's Envoy port, one record
/// every 100 ms; a broken connection counts as dropped and is dialled again.
async fn start_producers(
    partitions: i32,
    counters: Arc<Counters>,
    stop: Arc<tokio::sync::Notify>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let md = wait_for(
        &format!("{STEADY} to have leaders"),
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async {
            let mut c = BrokerConnection::connect(&bootstrap(), Default::default())
                .await
                .ok()?;
            let md = c.metadata(Some(&[STEADY])).await.ok()?;
            let t = md.topic(STEADY)?;
            (t.partitions.len() == partitions as usize
                && t.partitions.iter().all(|p| p.leader >= 0))
            .then_some(md)
        },
    )
    .await?;
    let topic = md.topic_ref(STEADY).context("steady topic")?;
    let mut tasks = Vec::new();
    for p in &md.topic(STEADY).context("steady topic")?.partitions {
        let (topic, counters, stop) = (topic.clone(), counters.clone(), stop.clone());
        let (partition, addr) = (p.index, broker_address(p.leader));
        tasks.push(tokio::spawn(async move {
            let mut conn: Option<BrokerConnection> = None;
            let mut n = 0u64;
            loop {
                if conn.is_none() {
                    conn = BrokerConnection::connect(&addr, Default::default())
                        .await
                        .ok();
                }
                if let Some(c) = conn.as_mut() {
                    let value = bytes::Bytes::from(format!("p{partition}-{n}"));
                    match c.produce(&topic, partition, &[value]).await {
                        Ok(_) => {
                            counters.acked.fetch_add(1, Ordering::Relaxed);
                            n += 1;
                        }
                        Err(e) => {
                            counters.failed.fetch_add(1, Ordering::Relaxed);
                            if c.is_broken() {
                                counters.dropped.fetch_add(1, Ordering::Relaxed);
                                conn = None;
                            }
                            eprintln!("  producer {partition}: {e}");
                        }
                    }
                }
                tokio::select! {
                    _ = stop.notified() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }));
    }
    Ok(tasks)
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("n/a".into(), |d| {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    })
}

fn row(what: &str, values: Vec<Duration>) -> String {
    format!(
        "| {what} | {} | {} | {} | {} |\n",
        values.len(),
        ms(common::percentile(&values, 0.5)),
        ms(common::percentile(&values, 0.99)),
        ms(values.iter().max().copied()),
    )
}

fn report(
    initial: i32,
    additions: &[Change],
    removals: &[Change],
    (acked, failed, dropped): (u64, u64, u64),
    (added, modified, removed): (i64, i64, i64),
) -> String {
    let mut s = String::from("## The whole path: KafkaCluster spec change → Envoy serving\n\n");
    s.push_str(&format!(
        "Real control plane, `pier-devlet` running {initial} real Kafka brokers (KRaft, 256 MB heap) and Envoy as local processes, `pier operator` as a process with the chart's RBAC (xDS in plaintext). {} cycles, each a merge patch of `spec.brokers` adding a broker with a fresh id (a new Pod), then one removing it (a listener change with no new Pod: Pier drains the one empty partition the bench moved onto it, deletes its Pod and drops its listener): {} changes. Envoy's `/listeners` polled every 20 ms; the xDS part of an addition starts when the Pod's address is reported (this process's watch; scheduling, volume binding and process start come before it), of a removal when the operator deletes the Pod (same reconcile as the snapshot change). Meanwhile one producer per partition leader of a replicated topic (own connections through Envoy's per-broker listeners, acks=all, 10 records/s each). No pinning (2 cores shared with the control plane and the JVMs).\n\n",
        additions.len(),
        additions.len() + removals.len()
    ));
    s.push_str("| Step | Changes | p50 | p99 | max |\n|---|---:|---:|---:|---:|\n");
    let all_xds: Vec<Duration> = additions
        .iter()
        .chain(removals)
        .filter_map(|c| c.xds)
        .collect();
    s.push_str(&row(
        "xDS part, every change (operator input → Envoy lists / drops the listener)",
        all_xds,
    ));
    s.push_str(&row(
        "xDS part, additions (Pod address → listener)",
        additions.iter().filter_map(|c| c.xds).collect(),
    ));
    s.push_str(&row(
        "xDS part, removals (Pod deleted → listener gone)",
        removals.iter().filter_map(|c| c.xds).collect(),
    ));
    s.push_str(&row(
        "addition: patch → Envoy lists the listener",
        additions.iter().map(|c| c.total).collect(),
    ));
    s.push_str(&row(
        "addition: patch → broker answers through Envoy",
        additions.iter().filter_map(|c| c.reachable).collect(),
    ));
    s.push_str(&row(
        "addition: patch → kcat produced to it through Envoy",
        additions.iter().filter_map(|c| c.produced).collect(),
    ));
    s.push_str(&row(
        "removal: patch → listener gone (drain included)",
        removals.iter().map(|c| c.total).collect(),
    ));
    s.push_str(&format!(
        "\nProducers through Envoy during the changes: {acked} records acked, {failed} produce requests failed, {dropped} connections dropped. Envoy's listener manager: {added} listeners added, {modified} modified, {removed} removed.\n"
    ));
    s
}
