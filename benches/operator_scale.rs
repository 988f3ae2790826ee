//! The operator at scale (issue 15, part 4): one KafkaCluster of 10, 100 and 1,000 brokers
//! reconciled by a real `pier operator` process against a real control plane (etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler), with the dev node agent in its
//! simulated mode (`DevletOptions::simulated`: Pods are reported Running and Ready with an
//! address of their own, no process runs), so a thousand brokers fit on one machine.
//!
//!     cargo bench --bench operator_scale             # 10, 100 and 1,000 brokers
//!     cargo bench --bench operator_scale -- 100      # chosen sizes only
//!     cargo test --bench operator_scale              # smoke: 3 brokers, short windows
//!
//! Measured, for each size on a fresh control plane:
//! - apply → every object created: from the apiserver's audit log, the KafkaCluster's create to
//!   the operator's last create of a Pod, ConfigMap, PersistentVolumeClaim or Service;
//! - apply → every broker in the xDS snapshot: an ADS client of this process (standing for the
//!   cluster's Envoy, which is simulated too and so does not connect) subscribed to the
//!   cluster's node group, until its listeners are the bootstrap and one per broker. A broker is
//!   in the snapshot once its Pod has an address, so this includes scheduling, volume binding
//!   and the devlet's status report;
//! - steady state (no write by the operator for a quiet period, then a window): reconcile
//!   duration p50/p99 from the operator's own histogram (`pier_reconcile_duration_seconds`,
//!   interpolated within buckets as Prometheus' `histogram_quantile` does), reconciles, API
//!   requests per reconcile and writes from the audit log (the operator authenticates as the
//!   chart's ServiceAccount, whose every request the test control plane logs, reads included;
//!   its leader Lease renewals are counted apart), RSS (VmRSS, VmHWM) and CPU from `/proc`.
//!
//! No Kafka answers behind simulated Pods (their addresses refuse connections): what the
//! operator does then is part of what is measured, and the KafkaCluster's conditions at the end
//! are printed with the numbers. Numbers are printed, never asserted; the smoke run asserts
//! only that every step happened. Logs and each cluster's final status: `target/test-logs/bench-operator-scale-<n>/`.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use common::{Operator, SERVICE_ACCOUNT, install_chart};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use kube::api::{Api, Patch, PatchParams, PostParams};
use pier::api::KafkaCluster;
use pier::xds::ResourceType;
use pier_testenv::devlet::{self, DevletOptions};
use pier_testenv::{ControlPlane, LogDir, wait_for};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

mod common;

const NS: &str = "default";
/// The most brokers one KafkaCluster may have (the CRD's `maxItems` of `spec.brokers`): a
/// larger size is several clusters of one operator.
const MAX_BROKERS_PER_CLUSTER: usize = 200;

/// The clusters of a size: (name, brokers).
fn clusters(brokers: usize) -> Vec<(String, usize)> {
    let count = brokers.div_ceil(MAX_BROKERS_PER_CLUSTER).max(1);
    (0..count)
        .map(|i| {
            let share = brokers / count + usize::from(i < brokers % count);
            (format!("scale-{i}"), share)
        })
        .collect()
}
/// Kinds whose creation "every object created" waits for.
const CREATED_KINDS: [&str; 4] = ["pods", "configmaps", "persistentvolumeclaims", "services"];

/// How one size is run.
#[derive(Clone, Copy)]
struct Plan {
    brokers: usize,
    /// No write by the operator for this long counts as steady.
    quiet: Duration,
    /// Longest wait for steadiness; past it the window is measured anyway (and says so).
    settle_within: Duration,
    /// The steady-state window.
    window: Duration,
    /// How often the KafkaCluster is poked during the window (each poke wakes a reconcile).
    poke_every: Duration,
    /// Longest wait for every broker in the xDS snapshot.
    ramp_within: Duration,
}

/// What one size measured.
struct Outcome {
    brokers: usize,
    clusters: usize,
    objects_created: Duration,
    created: BTreeMap<String, usize>,
    xds_complete: Duration,
    settled: bool,
    window: Duration,
    pokes: usize,
    reconciles: f64,
    p50: Option<f64>,
    p99: Option<f64>,
    requests: usize,
    requests_by_verb: BTreeMap<String, usize>,
    writes: BTreeMap<String, usize>,
    lease_writes: usize,
    rss: u64,
    hwm: u64,
    cpu_ramp: f64,
    cpu_window: f64,
    errors: BTreeMap<String, f64>,
    conditions: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let chosen: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    // Chosen sizes are measured as in the full run.
    let full = args.iter().any(|a| a == "--bench") || !chosen.is_empty();
    let sizes: Vec<usize> = match (full, chosen.is_empty()) {
        (_, false) => chosen,
        (true, true) => vec![10, 100, 1000],
        (false, true) => vec![3],
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut outcomes = Vec::new();
    let mut failed = Vec::new();
    for brokers in sizes {
        let plan = if full {
            Plan {
                brokers,
                quiet: Duration::from_secs(15),
                settle_within: Duration::from_secs(120),
                window: Duration::from_secs(60),
                poke_every: Duration::from_secs(2),
                ramp_within: Duration::from_secs(900),
            }
        } else {
            Plan {
                brokers,
                quiet: Duration::from_secs(3),
                settle_within: Duration::from_secs(20),
                window: Duration::from_secs(6),
                poke_every: Duration::from_secs(1),
                ramp_within: Duration::from_secs(60),
            }
        };
        eprintln!("operator_scale: {brokers} brokers");
        let outcome = match runtime.block_on(run(plan)) {
            Ok(o) => o,
            // A full run reports the sizes that were measured and says which one failed.
            Err(e) if full => {
                eprintln!("operator_scale: {brokers} brokers failed: {e:#}");
                failed.push(format!("{brokers} brokers: {e:#}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        if !full {
            ensure!(
                outcome.created.values().all(|n| *n > 0),
                "every kind created: {:?}",
                outcome.created
            );
        }
        outcomes.push(outcome);
    }
    let mut section = report(&outcomes);
    for f in &failed {
        section.push_str(&format!("- Not measured: {f}\n"));
    }
    println!("{section}");
    if let Some(dir) = std::env::var_os("PIER_BENCH_OUT") {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(Path::new(&dir).join("operator_scale.md"), &section)?;
    }
    Ok(())
}

/// The KafkaCluster: three combined broker+controller nodes, the rest brokers, one volume each,
/// one external listener routed per broker port through Envoy.
fn cluster(name: &str, brokers: usize) -> anyhow::Result<KafkaCluster> {
    let nodes: Vec<serde_json::Value> = (0..brokers as i32)
        .map(|id| {
            let roles: &[&str] = if id < 3 {
                &["broker", "controller"]
            } else {
                &["broker"]
            };
            json!({"id": id, "configGroup": "default", "roles": roles})
        })
        .collect();
    Ok(serde_json::from_value(json!({
        "apiVersion": "kafka.pier.dev/v1alpha1",
        "kind": "KafkaCluster",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "kafka": {"readOnlyConfig": {"default.replication.factor": "3"}},
            "brokerConfigGroups": {"default": {
                "heapOpts": "-Xms512m -Xmx512m",
                "storage": [{"mountPath": "/var/lib/kafka/data0", "size": "1Gi"}]
            }},
            "brokers": nodes,
            "listeners": {"external": [{
                "name": "external", "containerPort": 9094, "type": "LoadBalancer",
                "bootstrapPort": 29092, "brokerPortBase": 30000
            }]},
            "envoy": {"replicas": 1}
        }
    }))?)
}

async fn run(plan: Plan) -> anyhow::Result<Outcome> {
    let n = plan.brokers;
    let logs = LogDir::named(&format!("bench-operator-scale-{n}"))?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    install_chart(&plane).await?;
    let devlet = tokio::spawn(devlet::run(
        client.clone(),
        DevletOptions::simulated("simulated", logs.data("devlet")?, n + 50),
    ));
    let mut operator = Operator::start(&plane, NS)?;
    wait_for(
        "the operator to lead",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async { operator.get("/leader").await.ok().map(|_| ()) },
    )
    .await?;

    // Each cluster's Envoy, as far as xDS goes.
    let clusters = clusters(n);
    let mut ads = Vec::new();
    let mut listeners = Vec::new();
    for (name, brokers) in &clusters {
        let (tx, rx) = watch::channel((0usize, Instant::now()));
        ads.push(tokio::spawn(ads_client(
            format!("http://{}", operator.xds),
            pier::model::group_name(NS, name),
            tx,
        )));
        listeners.push((rx, brokers + 1));
    }

    let mark = plane.audit_mark()?;
    let cpu_start = operator.cpu()?;
    let applied = Instant::now();
    let kcs: Api<KafkaCluster> = Api::namespaced(client.clone(), NS);
    for (name, brokers) in &clusters {
        kcs.create(&PostParams::default(), &cluster(name, *brokers)?)
            .await?;
    }
    let mut xds_complete = Duration::ZERO;
    for (rx, want) in listeners.iter_mut() {
        let done = tokio::time::timeout(plan.ramp_within, async {
            loop {
                let (count, at) = *rx.borrow_and_update();
                if count >= *want {
                    return Ok::<_, anyhow::Error>(at.duration_since(applied));
                }
                operator.check_running()?;
                rx.changed().await?;
            }
        })
        .await
        .with_context(|| {
            format!(
                "{n} brokers in the xDS snapshots within {:?} (listeners of a cluster: {} of {want})",
                plan.ramp_within,
                rx.borrow().0
            )
        })??;
        xds_complete = xds_complete.max(done);
    }
    eprintln!("  every broker in xDS after {xds_complete:?}");

    // Every object the operator made, and when, from the audit log.
    let events = plane.audit_events(&mark, None)?;
    let apply_at = events
        .iter()
        .find(|e| e.verb == "create" && e.resource == "kafkaclusters")
        .map(|e| timestamp(&e.timestamp))
        .transpose()?
        .context("the KafkaCluster's create is not in the audit log")?;
    let mut created = BTreeMap::new();
    let mut last_create = apply_at;
    for e in events.iter().filter(|e| {
        // Pier applies server-side: a patch answered 201 created the object.
        e.user == SERVICE_ACCOUNT
            && (e.verb == "create" || (e.verb == "patch" && e.code == 201))
            && e.subresource.is_empty()
            && (200..300).contains(&e.code)
            && CREATED_KINDS.contains(&e.resource.as_str())
    }) {
        *created.entry(e.resource.clone()).or_insert(0) += 1;
        last_create = last_create.max(timestamp(&e.timestamp)?);
    }
    let objects_created =
        Duration::try_from(last_create.duration_since(apply_at)).unwrap_or(Duration::ZERO);
    eprintln!("  objects created after {objects_created:?}: {created:?}");

    // Steady: no write by the operator (its Lease aside) for `quiet`.
    let settle_deadline = Instant::now() + plan.settle_within;
    let settled = loop {
        let quiet_mark = plane.audit_mark()?;
        tokio::time::sleep(plan.quiet).await;
        operator.check_running()?;
        let (writes, _) = operator_writes(&plane, &quiet_mark)?;
        if writes.is_empty() {
            break true;
        }
        eprintln!("  not steady yet: {writes:?}");
        if Instant::now() >= settle_deadline {
            break false;
        }
    };
    let cpu_ramp = operator.cpu()? - cpu_start;

    // The steady-state window.
    let before = operator.metrics().await?;
    let cpu_before = operator.cpu()?;
    let window_mark = plane.audit_mark()?;
    let window_started = Instant::now();
    // A reconcile per poke: an annotation of a KafkaCluster's changes, nothing Pier reads.
    let mut pokes = 0;
    while window_started.elapsed() < plan.window {
        for (name, _) in &clusters {
            pokes += 1;
            kcs.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {"bench.pier.dev/poke": pokes.to_string()}}}),
                ),
            )
            .await?;
        }
        tokio::time::sleep(plan.poke_every).await;
    }
    let window = window_started.elapsed();
    let after = operator.metrics().await?;
    let cpu_window = operator.cpu()? - cpu_before;
    let (rss, hwm) = operator.memory()?;
    let (writes, lease_writes) = operator_writes(&plane, &window_mark)?;
    let mut requests_by_verb = BTreeMap::new();
    let mut requests = 0;
    for e in plane
        .audit_events(&window_mark, None)?
        .into_iter()
        .filter(|e| e.user == SERVICE_ACCOUNT && e.resource != "leases")
    {
        requests += 1;
        *requests_by_verb.entry(e.verb.clone()).or_insert(0) += 1;
    }
    let delta = |key: &str| {
        after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
    };
    let reconciles = delta("pier_reconciles_total");
    let buckets: Vec<(f64, f64)> = after
        .keys()
        .filter_map(|k| {
            let le = k
                .strip_prefix("pier_reconcile_duration_seconds_bucket{le=\"")?
                .strip_suffix("\"}")?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, delta(k)))
        })
        .collect();
    let errors: BTreeMap<String, f64> = after
        .keys()
        .filter_map(|k| {
            let reason = k
                .strip_prefix("pier_reconcile_errors_total{reason=\"")?
                .strip_suffix("\"}")?;
            Some((reason.to_string(), delta(k)))
        })
        .filter(|(_, v)| *v > 0.0)
        .collect();
    let mut conditions = std::collections::BTreeSet::new();
    for (name, _) in &clusters {
        let status = kcs.get(name).await?.status.unwrap_or_default();
        std::fs::write(
            logs.path().join(format!("status-{name}.json")),
            serde_json::to_string_pretty(&status)?,
        )?;
        conditions.extend(
            status
                .conditions
                .iter()
                .map(|c| format!("{}={} ({})", c.type_, c.status, c.reason)),
        );
    }
    let conditions = conditions.into_iter().collect();
    let outcome = Outcome {
        brokers: n,
        clusters: clusters.len(),
        objects_created,
        created,
        xds_complete,
        settled,
        window,
        pokes,
        reconciles,
        p50: quantile(&buckets, 0.5),
        p99: quantile(&buckets, 0.99),
        requests,
        requests_by_verb,
        writes,
        lease_writes,
        rss,
        hwm,
        cpu_ramp,
        cpu_window,
        errors,
        conditions,
    };
    eprintln!(
        "  steady: {} reconciles in {:?}, {} requests {:?}, writes {:?}, RSS {} MiB (peak {} MiB), errors {:?}, conditions {:?}",
        outcome.reconciles,
        outcome.window,
        outcome.requests,
        outcome.requests_by_verb,
        outcome.writes,
        mib(outcome.rss),
        mib(outcome.hwm),
        outcome.errors,
        outcome.conditions
    );
    for a in ads {
        a.abort();
    }
    operator.stop();
    devlet.abort();
    drop(plane);
    Ok(outcome)
}

/// The operator's writes since `mark` by `verb resource[/subresource]`, its leader Lease's
/// renewals apart.
fn operator_writes(
    plane: &ControlPlane,
    mark: &pier_testenv::control_plane::AuditMark,
) -> anyhow::Result<(BTreeMap<String, usize>, usize)> {
    let mut writes = BTreeMap::new();
    let mut lease = 0;
    for e in plane.audit_writes(SERVICE_ACCOUNT, mark)? {
        if e.resource == "leases" {
            lease += 1;
        } else {
            *writes.entry(e.verb_and_resource()).or_insert(0) += 1;
        }
    }
    Ok((writes, lease))
}

fn timestamp(s: &str) -> anyhow::Result<k8s_openapi::jiff::Timestamp> {
    s.parse().with_context(|| format!("audit timestamp {s:?}"))
}

/// An ADS client for `group` that ACKs everything and publishes how many listeners it holds
/// and since when.
async fn ads_client(
    addr: String,
    group: String,
    listeners: watch::Sender<(usize, Instant)>,
) -> anyhow::Result<()> {
    use prost::Message;
    let mut grpc = AggregatedDiscoveryServiceClient::connect(addr).await?;
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
    let node = Node {
        // One node id per cluster, as Envoy Pods have: Pier keeps one status per node id.
        id: format!("bench-envoy-{group}"),
        cluster: group,
        ..Default::default()
    };
    for (i, t) in [ResourceType::Cluster, ResourceType::Listener]
        .iter()
        .enumerate()
    {
        tx.send(DiscoveryRequest {
            node: (i == 0).then(|| node.clone()),
            type_url: t.type_url().into(),
            ..Default::default()
        })
        .await?;
    }
    let mut responses = grpc
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut eds_names: Option<Vec<String>> = None;
    while let Some(resp) = responses.message().await? {
        let t = ResourceType::from_type_url(&resp.type_url);
        let mut names = Vec::new();
        if t == Some(ResourceType::Cluster) {
            names = resp
                .resources
                .iter()
                .filter_map(|a| {
                    envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(a.value.as_slice())
                        .ok()
                        .map(|c| c.name)
                })
                .collect();
        }
        if t == Some(ResourceType::Endpoint) {
            names = eds_names.clone().unwrap_or_default();
        }
        tx.send(DiscoveryRequest {
            type_url: resp.type_url.clone(),
            version_info: resp.version_info.clone(),
            response_nonce: resp.nonce.clone(),
            resource_names: if t == Some(ResourceType::Cluster) {
                Vec::new()
            } else {
                names.clone()
            },
            ..Default::default()
        })
        .await?;
        if t == Some(ResourceType::Cluster) {
            tx.send(DiscoveryRequest {
                type_url: ResourceType::Endpoint.type_url().into(),
                resource_names: names.clone(),
                version_info: String::new(),
                ..Default::default()
            })
            .await?;
            eds_names = Some(names);
        }
        if t == Some(ResourceType::Listener) {
            let _ = listeners.send((resp.resources.len(), Instant::now()));
        }
    }
    Ok(())
}

/// The `q` quantile of a histogram's (upper bound, cumulative count) buckets, linear within a
/// bucket as `histogram_quantile`; `None` without observations, infinity past the last bound.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let mut buckets = buckets.to_vec();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(f64::INFINITY);
            }
            let inside = count - below;
            let fraction = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * fraction);
        }
        (lower, below) = (bound, count);
    }
    None
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

fn seconds_or_ms(s: Option<f64>) -> String {
    match s {
        None => "n/a".into(),
        Some(v) if v.is_infinite() => "> 30 s".into(),
        Some(v) if v < 1.0 => format!("{:.0} ms", v * 1000.0),
        Some(v) => format!("{v:.2} s"),
    }
}

fn report(outcomes: &[Outcome]) -> String {
    let mut s = String::from("## The operator at scale (simulated brokers)\n\n");
    s.push_str(
        "KafkaClusters of at most 200 brokers (the CRD's limit; 1,000 brokers are 5 clusters of one operator), each 3 broker+controller nodes and the rest brokers, one 1 Gi volume each, one external listener routed per broker port, applied to a fresh real control plane (etcd, kube-apiserver, controller-manager, scheduler); `pier operator` runs as a process with the chart's ServiceAccount and RBAC (leader election on, the chart's timings; xDS in plaintext); `pier-devlet --simulate` reports every Pod Running and Ready on an address of its own where nothing listens, so there is no Kafka. *Objects created*: first KafkaCluster create → the operator's last Pod/ConfigMap/PVC/Service creation (server-side apply answered 201; audit log). *xDS complete*: apply → an ADS client of each cluster's node group holds the bootstrap listener and one per broker (a broker enters the snapshot once its Pod has an address: scheduling, volume provisioning and binding included). Steady state: after 15 s without an operator write (leader Lease aside), a 60 s window in which the bench changes an annotation of each KafkaCluster every 2 s (each change wakes a reconcile that has nothing to do; Pier reads no such annotation): reconcile p50/p99 from the operator's histogram (interpolated within its buckets), API requests per reconcile and writes from the audit log, RSS from /proc at the end of the window, CPU from /proc. No pinning.\n\n",
    );
    s.push_str(&format!(
        "The operator's binary: {}.\n\n",
        common::operator_binary_described()
    ));
    s.push_str("| Brokers (clusters) | Objects created | xDS complete | Reconcile p50 | Reconcile p99 | Reconciles (pokes) | API requests / reconcile | Writes in steady state | Lease renewals / min | VmRSS | VmHWM | CPU s to steady | CPU % steady |\n");
    s.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for o in outcomes {
        let minutes = o.window.as_secs_f64() / 60.0;
        let per_reconcile = if o.reconciles > 0.0 {
            format!("{:.1}", o.requests as f64 / o.reconciles)
        } else {
            format!("n/a ({} requests)", o.requests)
        };
        let writes: usize = o.writes.values().sum();
        s.push_str(&format!(
            "| {} ({}) | {:.1} s | {:.1} s | {} | {} | {} ({}) | {} | {}{} | {:.0} | {} MiB | {} MiB | {:.1} | {:.1} |\n",
            o.brokers,
            o.clusters,
            o.objects_created.as_secs_f64(),
            o.xds_complete.as_secs_f64(),
            seconds_or_ms(o.p50),
            seconds_or_ms(o.p99),
            o.reconciles,
            o.pokes,
            per_reconcile,
            writes,
            if o.settled { "" } else { " (never quiet)" },
            o.lease_writes as f64 / minutes,
            mib(o.rss),
            mib(o.hwm),
            o.cpu_ramp,
            100.0 * o.cpu_window / o.window.as_secs_f64(),
        ));
    }
    s.push('\n');
    for o in outcomes {
        s.push_str(&format!(
            "- {} brokers: created {:?}; steady-state requests by verb {:?}; writes {:?}; reconcile errors in the window {:?}; conditions at the end: {}.\n",
            o.brokers,
            o.created,
            o.requests_by_verb,
            o.writes,
            o.errors,
            o.conditions.join(", ")
        ));
    }
    s.push_str("\nReading:\n");
    for o in outcomes {
        let writes: usize = o.writes.values().sum();
        s.push_str(&format!(
            "- {} brokers: {} API requests and {writes} writes in the steady window ({:.0} reconciles){}.\n",
            o.brokers,
            o.requests,
            o.reconciles,
            if o.requests == 0 && writes == 0 {
                ": reconciles read only the operator's caches"
            } else {
                ""
            },
        ));
    }
    if let Some(o) = outcomes.iter().find(|o| o.brokers == 100) {
        let goal = 40 * 1024 * 1024;
        s.push_str(&format!(
            "- Goal RSS < 40 MiB at 100 brokers: VmRSS {} MiB, peak (VmHWM) {} MiB: {}.\n",
            mib(o.rss),
            mib(o.hwm),
            if o.hwm < goal {
                "met, peak included"
            } else if o.rss < goal {
                "met at the end of the window, not at the peak"
            } else {
                "**not met**"
            }
        ));
    }
    s
}
