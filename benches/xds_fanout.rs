//! xDS fan-out benchmark: how fast one snapshot update reaches N ADS clients, and a real Envoy.
//!
//!     cargo bench --bench xds_fanout            # N = 10, 100, 1000 and the Envoy run
//!     cargo bench --bench xds_fanout -- 10 100  # chosen N only (the Envoy run needs dev/setup)
//!     cargo test --bench xds_fanout             # smoke: 2 clients, 2 updates, 10 churn cycles, Envoy
//!
//! Clients are real gRPC ADS streams (SotW) in this process, each on its own HTTP/2
//! connection; every client ACKs every response. Numbers are printed, never asserted.
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use pier::model::{BrokerRouting, BrokerState, ExposedBroker, ExternalAccess};
use pier::xds::{ResourceType, Snapshot, SnapshotCache, translate};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const GROUP: &str = "bench/kafka";

fn model(brokers: i32) -> ExternalAccess {
    ExternalAccess {
        namespace: "bench".into(),
        cluster: "kafka".into(),
        listener: "external".into(),
        bind_address: "127.0.0.1".into(),
        bootstrap_port: 29092,
        routing: BrokerRouting::PortPerBroker { base_port: 30000 },
        idle_timeout: Duration::from_secs(3600),
        brokers: (0..brokers)
            .map(|id| ExposedBroker {
                id,
                host: format!("127.0.1.{}", id % 250 + 1),
                port: 9092,
                state: BrokerState::Serving,
            })
            .collect(),
    }
}

fn snapshot(brokers: i32) -> Snapshot {
    Snapshot::new(translate(&[model(brokers)]).expect("valid model"))
}

/// One simulated Envoy: subscribes to clusters, endpoints and listeners, ACKs everything, and
/// reports each listener version it ACKed.
async fn client(
    addr: String,
    id: usize,
    acks: mpsc::UnboundedSender<(String, Instant)>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // A thousand simultaneous connects can overflow the listen backlog: retry.
    let mut attempt = 0;
    let mut grpc = loop {
        match AggregatedDiscoveryServiceClient::connect(addr.clone()).await {
            Ok(c) => break c,
            Err(e) if attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                let _ = e;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(64);
    let node = Node {
        id: format!("bench-{id}"),
        cluster: GROUP.into(),
        ..Default::default()
    };
    for (i, t) in ResourceType::ALL.iter().enumerate() {
        tx.send(DiscoveryRequest {
            node: (i == 0).then(|| node.clone()),
            type_url: t.type_url().into(),
            // Endpoints are named; the names follow from every cluster response below.
            resource_names: Vec::new(),
            ..Default::default()
        })
        .await?;
    }
    let mut responses = grpc
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut eds_names: Vec<String> = Vec::new();
    while let Some(resp) = responses.message().await? {
        let t = ResourceType::from_type_url(&resp.type_url);
        if t == Some(ResourceType::Cluster) {
            use prost::Message;
            eds_names = resp
                .resources
                .iter()
                .filter_map(|a| {
                    envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(a.value.as_slice())
                        .ok()
                        .map(|c| c.name)
                })
                .collect();
        }
        let names = if t == Some(ResourceType::Endpoint) {
            eds_names.clone()
        } else {
            Vec::new()
        };
        tx.send(DiscoveryRequest {
            type_url: resp.type_url.clone(),
            version_info: resp.version_info.clone(),
            response_nonce: resp.nonce.clone(),
            resource_names: names,
            ..Default::default()
        })
        .await?;
        if t == Some(ResourceType::Cluster) {
            tx.send(DiscoveryRequest {
                type_url: ResourceType::Endpoint.type_url().into(),
                resource_names: eds_names.clone(),
                ..Default::default()
            })
            .await?;
        }
        if t == Some(ResourceType::Listener) {
            let _ = acks.send((resp.version_info, Instant::now()));
        }
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// (user + system CPU seconds, RSS bytes, peak RSS bytes) of this process.
fn usage() -> (f64, u64, u64) {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we pass.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let cpu = ru.ru_utime.tv_sec as f64
        + ru.ru_utime.tv_usec as f64 / 1e6
        + ru.ru_stime.tv_sec as f64
        + ru.ru_stime.tv_usec as f64 / 1e6;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (cpu, kb("VmRSS:"), kb("VmHWM:"))
}

async fn fanout(n: usize, updates: usize) {
    let cache = Arc::new(SnapshotCache::default());
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(pier::xds::serve(
        listener,
        cache.clone(),
        std::future::pending(),
    ));
    let brokers = 6;
    cache.set_snapshot(GROUP, snapshot(brokers));
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
    let rss_before = usage().1;
    for id in 0..n {
        let (addr, acks) = (addr.clone(), ack_tx.clone());
        tokio::spawn(async move {
            if let Err(e) = client(addr, id, acks).await {
                eprintln!("client {id}: {e}");
            }
        });
        if id % 50 == 49 {
            // Pace the connects a little; the measurement starts once all are in.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Everyone has the first config.
    let first = cache
        .snapshot(GROUP)
        .expect("snapshot")
        .get(ResourceType::Listener)
        .version
        .clone();
    let mut have = 0;
    while have < n {
        let (v, _) = ack_rx.recv().await.expect("acks");
        if v == first {
            have += 1;
        }
    }
    let (cpu0, _, _) = usage();
    let started = Instant::now();
    let mut per_client = Vec::with_capacity(n * updates);
    let mut per_update = Vec::with_capacity(updates);
    for k in 0..updates {
        // Alternate between adding and removing a broker so every update changes all types.
        let snap = cache.set_snapshot(GROUP, snapshot(brokers + 1 + (k as i32 % 2)));
        let t0 = snap.created;
        let want = snap.get(ResourceType::Listener).version.clone();
        let mut got = 0;
        let mut last = Duration::ZERO;
        while got < n {
            let (v, at) = ack_rx.recv().await.expect("acks");
            if v == want {
                got += 1;
                let d = at - t0;
                per_client.push(d);
                last = last.max(d);
            }
        }
        per_update.push(last);
    }
    let wall = started.elapsed();
    let (cpu1, rss, peak) = usage();
    per_client.sort();
    per_update.sort();
    println!(
        "| {n:>5} | {updates:>4} | {} | {} | {} | {} | {:>7.1} | {:>4.2} | {:>6.1} | {:>6.1} |",
        ms(percentile(&per_client, 0.5)),
        ms(percentile(&per_client, 0.99)),
        ms(percentile(&per_update, 0.5)),
        ms(percentile(&per_update, 0.99)),
        updates as f64 / wall.as_secs_f64(),
        (cpu1 - cpu0) / wall.as_secs_f64(),
        rss as f64 / 1048576.0,
        (peak.max(rss_before)) as f64 / 1048576.0,
    );
}

/// Snapshot update → the new listener visible in a real Envoy's admin API.
async fn envoy_latency(updates: usize) -> anyhow::Result<()> {
    let logs = pier_testenv::LogDir::named("bench-xds-envoy")?;
    let cache = Arc::new(SnapshotCache::default());
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(pier::xds::serve(
        listener,
        cache.clone(),
        std::future::pending(),
    ));
    let ip = pier_testenv::net::loopback_ips(1, &[29092])?[0];
    let mut access = model(3);
    access.bind_address = ip.to_string();
    cache.set_snapshot(
        GROUP,
        Snapshot::new(translate(std::slice::from_ref(&access))?),
    );
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(repo.join("envoy/bootstrap.yaml"))?
        .replace("port_value: 18000", &format!("port_value: {port}"));
    let bootstrap = logs.sub("envoy")?.join("bootstrap.yaml");
    std::fs::write(&bootstrap, text)?;
    let mut envoy = pier_testenv::Envoy::start_from_file(
        &logs,
        "envoy",
        &bootstrap,
        &["--service-node", "bench-envoy", "--service-cluster", GROUP],
    )
    .await?;
    envoy.wait_live(Duration::from_secs(60)).await?;
    // One simulated client in the same group: "converged" is both having applied an update.
    let (ack_tx, _acks) = mpsc::unbounded_channel();
    let sim_addr = format!("http://127.0.0.1:{port}");
    tokio::spawn(async move {
        if let Err(e) = client(sim_addr, 0, ack_tx).await {
            eprintln!("simulated client: {e}");
        }
    });
    let first = cache.snapshot(GROUP).expect("snapshot");
    converged(&cache, &first, 2).await?;
    let mut samples = Vec::new();
    let mut both = Vec::new();
    for k in 0..updates {
        let id = 10 + (k % 2) as i32;
        let mut m = access.clone();
        m.brokers.push(ExposedBroker {
            id,
            host: "127.0.1.1".into(),
            port: 9092,
            state: BrokerState::Serving,
        });
        let want = format!("{}/broker-{id}", m.resource_prefix());
        let snap = cache.set_snapshot(GROUP, Snapshot::new(translate(&[m])?));
        both.push(converged(&cache, &snap, 2).await?);
        loop {
            if envoy.listener_names().await?.contains(&want) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples.push(snap.created.elapsed());
    }
    samples.sort();
    both.sort();
    println!(
        "| real Envoy 1.40 (SotW): update → listener in admin API | {updates} | {} | {} |",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99))
    );
    println!(
        "| real Envoy + simulated client: update → both applied all of it | {updates} | {} | {} |",
        ms(percentile(&both, 0.5)),
        ms(percentile(&both, 0.99))
    );
    Ok(())
}

/// Waits until `nodes` connected nodes applied `snap` in full (every type ACKed, nothing held
/// or in flight); returns the time since the snapshot was built.
async fn converged(
    cache: &SnapshotCache,
    snap: &Snapshot,
    nodes: usize,
) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = cache.group_status(GROUP);
        if status.version.as_deref() == Some(snap.version_str())
            && status.nodes.len() >= nodes
            && status.all_acked
        {
            return Ok(snap.created.elapsed());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no convergence on {}: {status:?}",
            snap.version()
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Connect/disconnect cycles with random node ids: the server's per-node map and this
/// process's RSS before and after.
async fn churn(cycles: usize) {
    let cache = Arc::new(SnapshotCache::default());
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(pier::xds::serve(
        listener,
        cache.clone(),
        std::future::pending(),
    ));
    cache.set_snapshot(GROUP, snapshot(6));
    let mut grpc = AggregatedDiscoveryServiceClient::connect(addr)
        .await
        .expect("connect");
    let rss_before = usage().1;
    let started = Instant::now();
    let mut peak_nodes = 0;
    for i in 0..cycles {
        let random =
            std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), i);
        let (tx, rx) = mpsc::channel::<DiscoveryRequest>(1);
        tx.send(DiscoveryRequest {
            node: Some(Node {
                id: format!("envoy-{random:016x}"),
                cluster: GROUP.into(),
                ..Default::default()
            }),
            type_url: ResourceType::Cluster.type_url().into(),
            ..Default::default()
        })
        .await
        .expect("queue");
        let mut stream = grpc
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("stream")
            .into_inner();
        stream.message().await.expect("response");
        peak_nodes = peak_nodes.max(cache.node_count());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.node_count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let (_, rss, _) = usage();
    println!(
        "| {cycles} | {:.0} | {peak_nodes} | {} | {:.1} | {:.1} |",
        cycles as f64 / elapsed.as_secs_f64(),
        cache.node_count(),
        rss_before as f64 / 1048576.0,
        rss as f64 / 1048576.0,
    );
}

fn main() {
    // `cargo test` runs this without `--bench`: a smoke run of every path, numbers unread.
    let full = std::env::args().any(|a| a == "--bench");
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if !full {
        vec![2]
    } else if args.is_empty() {
        vec![10, 100, 1000]
    } else {
        args.clone()
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    println!("## xDS in one process: fan-out, churn, a real Envoy\n");
    println!(
        "`pier::xds` and its simulated clients in one process (so CPU and RSS include both: \
         `xds_anchor` separates them); each client a real gRPC ADS stream (SotW) on its own \
         HTTP/2 connection that ACKs every response; updates alternate 7 and 8 brokers.\n"
    );
    println!("xDS fan-out: snapshot update → ACK of the listener response by every client\n");
    println!(
        "| clients | updates | per-client p50 ms | per-client p99 ms | all-ACKed p50 ms | all-ACKed p99 ms | updates/s | CPU cores | RSS MiB | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let updates = if !full {
            2
        } else if n >= 1000 {
            20
        } else {
            50
        };
        runtime.block_on(fanout(n, updates));
    }
    if args.is_empty() {
        let (cycles, envoy_updates) = if full { (10_000, 50) } else { (10, 2) };
        println!();
        println!(
            "Churn: ADS streams opened (first response received) and closed, random node ids; \
             the server's node map and the process's RSS before and after\n"
        );
        println!(
            "| cycles | cycles/s | node map peak | node map after | RSS MiB before | RSS MiB after |"
        );
        println!("|---|---|---|---|---|---|");
        runtime.block_on(churn(cycles));
        runtime.block_on(churn(cycles));
        println!();
        println!(
            "A real Envoy 1.40 (SotW ADS): update → the new listener in its admin API (polled \
             every 2 ms), and a real Envoy and a simulated client in one group both applying it\n"
        );
        println!("| path | updates | p50 ms | p99 ms |");
        println!("|---|---|---|---|");
        if let Err(e) = runtime.block_on(envoy_latency(envoy_updates)) {
            // The smoke run must notice a broken path (or missing Envoy: run dev/setup).
            assert!(full, "real Envoy run failed: {e:#}");
            println!("real Envoy run skipped: {e:#}");
        }
    }
}
