//! xDS fan-out side by side: `pier xds` against go-control-plane (issue 15, part 1).
//!
//!     cargo bench --bench xds_anchor             # N = 100, 1000, 5000 streams; SotW and delta
//!     cargo bench --bench xds_anchor -- 1000     # chosen N only
//!     cargo bench --bench xds_anchor -- 1000 pier sotw   # and only these servers / protocols
//!                                                # (pier, typed, raw; sotw, delta)
//!     cargo test --bench xds_anchor              # smoke: 2 streams, 2 updates, every server
//!     XDS_ANCHOR_UPDATES=400 cargo bench ...    # more updates per run, e.g. to profile a server
//!
//! Three processes per run, each pinned to its own core where it matters:
//! - the server (`taskset -c 1`): `pier xds` (CARGO_BIN_EXE_pier) on a broker file, or
//!   `pier-gcp-xds` (dev/go-control-plane, built by `dev/setup gcp-xds`) serving the very
//!   resources Pier translated from that file: typed (go-control-plane marshals typed messages
//!   as its users run it) or raw (Pier's bytes, unchanged);
//! - the load generator (`taskset -c 0`): this binary re-executed as `__load`, N simulated
//!   Envoys, each a real ADS stream (SotW or delta) on its own HTTP/2 connection, decoding every
//!   response and ACKing it as Envoy does (EDS named after the clusters it got);
//! - this orchestrator, which changes the config and reads the clocks.
//!
//! Updates alternate 7 and 8 brokers (from 6), so each changes every type. An update counts for
//! a client when it ACKed the update's versions of all three types; the latency runs from the
//! server's own snapshot-set time (Pier: `pier_xds_snapshot_set_timestamp_seconds`, so its
//! 500 ms file poll is not counted; go-control-plane: the control API's answer) to that ACK,
//! on the wall clock of one machine. Before timing, the bodies one client holds are compared
//! byte for byte with Pier's translation. Server CPU is read from /proc (every thread's
//! schedstat run time), peak RSS from VmHWM. Numbers are printed, never asserted.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::protobuf::Any;
use pier::xds::{ResourceType, Snapshot};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const NAME: &str = "xds_anchor";
/// Broker counts of the first config and of the updates (alternating).
const BROKERS: [usize; 3] = [6, 7, 8];

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// What a client has applied: its ACKed versions of clusters, endpoints and listeners.
fn versions_key(versions: [&str; 3]) -> u64 {
    let mut bytes = Vec::new();
    for v in versions {
        bytes.extend_from_slice(v.as_bytes());
        bytes.push(0);
    }
    pier::hash::fnv1a(&bytes)
}

/// Digest of resource bodies: (type, name, Any type URL, Any bytes) in order.
fn bodies_digest<'a>(entries: impl Iterator<Item = (usize, &'a str, &'a Any)>) -> u64 {
    let mut bytes = Vec::new();
    for (t, name, any) in entries {
        bytes.push(t as u8);
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(any.type_url.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&(any.value.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&any.value);
    }
    pier::hash::fnv1a(&bytes)
}

/// `any` decoded as its type and encoded again by prost: equal for equal messages, whatever
/// field order their encoder chose.
fn canonical(t: usize, any: &Any) -> Any {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use prost::Message;
    let value = match ResourceType::ALL[t] {
        ResourceType::Cluster => Cluster::decode(any.value.as_slice()).map(|m| m.encode_to_vec()),
        ResourceType::Endpoint => {
            ClusterLoadAssignment::decode(any.value.as_slice()).map(|m| m.encode_to_vec())
        }
        ResourceType::Listener => Listener::decode(any.value.as_slice()).map(|m| m.encode_to_vec()),
    };
    Any {
        type_url: any.type_url.clone(),
        // Undecodable bodies stay as they are (and differ).
        value: value.unwrap_or_else(|_| any.value.clone()),
    }
}

fn type_index(url: &str) -> Option<usize> {
    ResourceType::from_type_url(url).map(|t| t as usize)
}

/// The load generator: the `__load` role of this binary.
mod load {
    use super::*;

    pub struct Args {
        pub addr: String,
        pub streams: usize,
        pub delta: bool,
        pub group: String,
    }

    enum Event {
        Applied { client: usize, key: u64, at: i64 },
        Failed { client: usize, error: String },
    }

    type Bodies = Arc<Mutex<BTreeMap<(usize, String), Any>>>;

    /// The value of field 1 (a string) of a protobuf message: the name of a Cluster or Listener
    /// and the cluster_name of a ClusterLoadAssignment.
    fn first_field_string(mut b: &[u8]) -> Option<String> {
        fn varint(b: &mut &[u8]) -> Option<u64> {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let (&byte, rest) = b.split_first()?;
                *b = rest;
                v |= u64::from(byte & 0x7f) << shift;
                if byte < 0x80 {
                    return Some(v);
                }
            }
            None
        }
        while !b.is_empty() {
            let tag = varint(&mut b)?;
            let skip = match tag & 7 {
                0 => {
                    varint(&mut b)?;
                    0
                }
                1 => 8,
                2 => {
                    let len = usize::try_from(varint(&mut b)?).ok()?;
                    if tag >> 3 == 1 {
                        return String::from_utf8(b.get(..len)?.to_vec()).ok();
                    }
                    len
                }
                5 => 4,
                _ => return None,
            };
            b = b.get(skip..)?;
        }
        None
    }

    async fn connect(
        addr: &str,
    ) -> anyhow::Result<AggregatedDiscoveryServiceClient<tonic::transport::Channel>> {
        let endpoint = tonic::transport::Endpoint::from_shared(addr.to_string())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10));
        let mut attempt = 0u64;
        loop {
            // Thousands of simultaneous connects can overflow a listen backlog: retry.
            match endpoint.connect().await {
                Ok(c) => {
                    return Ok(AggregatedDiscoveryServiceClient::new(c)
                        .max_decoding_message_size(64 << 20));
                }
                Err(e) if attempt < 40 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(25 * attempt.min(8))).await;
                    let _ = e;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn node(id: usize, group: &str) -> Node {
        Node {
            id: format!("load-{id}"),
            cluster: group.to_string(),
            ..Default::default()
        }
    }

    /// One simulated Envoy on a state-of-the-world ADS stream.
    async fn sotw(
        args: Arc<Args>,
        id: usize,
        events: mpsc::UnboundedSender<Event>,
        bodies: Option<Bodies>,
        got: &std::sync::atomic::AtomicBool,
    ) -> anyhow::Result<()> {
        let mut grpc = connect(&args.addr).await?;
        let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
        for (i, t) in [ResourceType::Cluster, ResourceType::Listener]
            .iter()
            .enumerate()
        {
            tx.send(DiscoveryRequest {
                node: (i == 0).then(|| node(id, &args.group)),
                type_url: t.type_url().into(),
                ..Default::default()
            })
            .await?;
        }
        let mut responses = grpc
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await?
            .into_inner();
        let mut acked: [String; 3] = Default::default();
        let mut nonces: [String; 3] = Default::default();
        let mut eds_names: Vec<String> = Vec::new();
        let mut last_key = 0;
        let eds = ResourceType::Endpoint as usize;
        while let Some(resp) = responses.message().await? {
            got.store(true, std::sync::atomic::Ordering::Relaxed);
            let t = type_index(&resp.type_url).context("unknown type URL")?;
            let names: Vec<String> = resp
                .resources
                .iter()
                .map(|a| first_field_string(&a.value).context("resource without a name"))
                .collect::<anyhow::Result<_>>()?;
            if let Some(bodies) = &bodies {
                let mut b = bodies.lock().expect("bodies");
                b.retain(|(bt, _), _| *bt != t);
                for (n, a) in names.iter().zip(&resp.resources) {
                    b.insert((t, n.clone()), a.clone());
                }
            }
            acked[t] = resp.version_info.clone();
            nonces[t] = resp.nonce.clone();
            tx.send(DiscoveryRequest {
                type_url: resp.type_url,
                version_info: resp.version_info,
                response_nonce: resp.nonce,
                resource_names: if t == eds {
                    eds_names.clone()
                } else {
                    Vec::new()
                },
                ..Default::default()
            })
            .await?;
            if t == ResourceType::Cluster as usize {
                let mut clusters = names;
                clusters.sort();
                if clusters != eds_names {
                    eds_names = clusters;
                    if let Some(bodies) = &bodies {
                        bodies
                            .lock()
                            .expect("bodies")
                            .retain(|(bt, n), _| *bt != eds || eds_names.contains(n));
                    }
                    // The new subscription, from the last accepted endpoints, as Envoy does.
                    tx.send(DiscoveryRequest {
                        type_url: ResourceType::Endpoint.type_url().into(),
                        version_info: acked[eds].clone(),
                        response_nonce: nonces[eds].clone(),
                        resource_names: eds_names.clone(),
                        ..Default::default()
                    })
                    .await?;
                }
            }
            let key = versions_key([&acked[0], &acked[1], &acked[2]]);
            if key != last_key {
                last_key = key;
                let _ = events.send(Event::Applied {
                    client: id,
                    key,
                    at: now_micros(),
                });
            }
        }
        bail!("the server ended the stream")
    }

    /// One simulated Envoy on a delta ADS stream.
    async fn delta(
        args: Arc<Args>,
        id: usize,
        events: mpsc::UnboundedSender<Event>,
        bodies: Option<Bodies>,
        got: &std::sync::atomic::AtomicBool,
    ) -> anyhow::Result<()> {
        let mut grpc = connect(&args.addr).await?;
        let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
        for (i, t) in [ResourceType::Cluster, ResourceType::Listener]
            .iter()
            .enumerate()
        {
            tx.send(DeltaDiscoveryRequest {
                node: (i == 0).then(|| node(id, &args.group)),
                type_url: t.type_url().into(),
                ..Default::default()
            })
            .await?;
        }
        let mut responses = grpc
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await?
            .into_inner();
        let mut acked: [String; 3] = Default::default();
        let mut clusters: std::collections::BTreeSet<String> = Default::default();
        let mut subscribed: std::collections::BTreeSet<String> = Default::default();
        let mut last_key = 0;
        let eds = ResourceType::Endpoint as usize;
        while let Some(resp) = responses.message().await? {
            got.store(true, std::sync::atomic::Ordering::Relaxed);
            let t = type_index(&resp.type_url).context("unknown type URL")?;
            for r in &resp.resources {
                let body = r.resource.as_ref().context("a resource without a body")?;
                ensure!(!r.name.is_empty(), "a delta resource without a name");
                if t == ResourceType::Cluster as usize {
                    clusters.insert(r.name.clone());
                }
                if let Some(bodies) = &bodies {
                    bodies
                        .lock()
                        .expect("bodies")
                        .insert((t, r.name.clone()), body.clone());
                }
            }
            for n in &resp.removed_resources {
                if t == ResourceType::Cluster as usize {
                    clusters.remove(n);
                }
                if let Some(bodies) = &bodies {
                    bodies.lock().expect("bodies").remove(&(t, n.clone()));
                }
            }
            acked[t] = resp.system_version_info;
            tx.send(DeltaDiscoveryRequest {
                type_url: resp.type_url,
                response_nonce: resp.nonce,
                ..Default::default()
            })
            .await?;
            if t == ResourceType::Cluster as usize && clusters != subscribed {
                let add: Vec<String> = clusters.difference(&subscribed).cloned().collect();
                let remove: Vec<String> = subscribed.difference(&clusters).cloned().collect();
                if let Some(bodies) = &bodies {
                    let mut b = bodies.lock().expect("bodies");
                    for n in &remove {
                        b.remove(&(eds, n.clone()));
                    }
                }
                subscribed = clusters.clone();
                tx.send(DeltaDiscoveryRequest {
                    type_url: ResourceType::Endpoint.type_url().into(),
                    resource_names_subscribe: add,
                    resource_names_unsubscribe: remove,
                    ..Default::default()
                })
                .await?;
            }
            let key = versions_key([&acked[0], &acked[1], &acked[2]]);
            if key != last_key {
                last_key = key;
                let _ = events.send(Event::Applied {
                    client: id,
                    key,
                    at: now_micros(),
                });
            }
        }
        bail!("the server ended the stream")
    }

    fn cpu_seconds() -> f64 {
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage fills the struct we pass.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        ru.ru_utime.tv_sec as f64
            + ru.ru_utime.tv_usec as f64 / 1e6
            + ru.ru_stime.tv_sec as f64
            + ru.ru_stime.tv_usec as f64 / 1e6
    }

    /// Runs the streams and answers the orchestrator's commands on stdin, one line each:
    /// `wait KEY MILLIS` → `acked T0,T1,…` (every client's time of applying KEY, µs since the
    /// epoch) or `error …`; `dump` → `dump DIGEST COUNT` (client 0's bodies); `cpu` → `cpu SECONDS`.
    pub async fn run(args: Args) -> anyhow::Result<()> {
        let args = Arc::new(args);
        let n = args.streams;
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        let bodies: Bodies = Arc::default();
        for id in 0..n {
            let (args, events) = (args.clone(), ev_tx.clone());
            let bodies = (id == 0).then(|| bodies.clone());
            tokio::spawn(async move {
                // A connection reset before the first response (a listen backlog overflowing
                // under thousands of connects) is retried, as Envoy would; later ones count.
                let got = std::sync::atomic::AtomicBool::new(false);
                let mut attempt = 0u64;
                let result = loop {
                    let r = if args.delta {
                        delta(args.clone(), id, events.clone(), bodies.clone(), &got).await
                    } else {
                        sotw(args.clone(), id, events.clone(), bodies.clone(), &got).await
                    };
                    if r.is_err() && attempt < 10 && !got.load(std::sync::atomic::Ordering::Relaxed)
                    {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                        continue;
                    }
                    break r;
                };
                if let Err(e) = result {
                    let _ = events.send(Event::Failed {
                        client: id,
                        error: format!("{e:#}"),
                    });
                }
            });
            if id % 100 == 99 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        drop(ev_tx);
        let mut state: Vec<(u64, i64)> = vec![(0, 0); n];
        let mut failed: Option<String> = None;
        // Commands arrive on stdin, read by a thread of their own.
        let (line_tx, mut lines) = mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut out = std::io::stdout();
        let apply = |state: &mut Vec<(u64, i64)>, failed: &mut Option<String>, ev: Event| match ev {
            Event::Applied { client, key, at } => {
                let old = state[client].0;
                state[client] = (key, at);
                Some((old, key))
            }
            Event::Failed { client, error } => {
                eprintln!("client {client}: {error}");
                failed.get_or_insert(format!("client {client}: {error}"));
                None
            }
        };
        loop {
            let line = tokio::select! {
                ev = ev_rx.recv() => {
                    if let Some(ev) = ev {
                        apply(&mut state, &mut failed, ev);
                    }
                    continue;
                }
                line = lines.recv() => line,
            };
            let Some(line) = line else { return Ok(()) };
            let words: Vec<&str> = line.split_whitespace().collect();
            let reply = match words.as_slice() {
                ["wait", key, millis] => {
                    let key: u64 = key.parse()?;
                    let deadline =
                        tokio::time::Instant::now() + Duration::from_millis(millis.parse()?);
                    let mut have = state.iter().filter(|s| s.0 == key).count();
                    while have < n && failed.is_none() {
                        match tokio::time::timeout_at(deadline, ev_rx.recv()).await {
                            Ok(Some(ev)) => {
                                if let Some((old, new)) = apply(&mut state, &mut failed, ev) {
                                    if old == key && new != key {
                                        have -= 1;
                                    } else if new == key && old != key {
                                        have += 1;
                                    }
                                }
                            }
                            Ok(None) => break,
                            Err(_) => break,
                        }
                    }
                    if let Some(f) = &failed {
                        format!("error {f}")
                    } else if have < n {
                        format!("error only {have} of {n} streams applied the update in time")
                    } else {
                        let mut s = String::from("acked ");
                        for (i, (_, at)) in state.iter().enumerate() {
                            if i > 0 {
                                s.push(',');
                            }
                            let _ = write!(s, "{at}");
                        }
                        s
                    }
                }
                ["dump"] => {
                    let b = bodies.lock().expect("bodies");
                    let digest = bodies_digest(b.iter().map(|((t, n), a)| (*t, n.as_str(), a)));
                    let canonical: Vec<(usize, &str, Any)> = b
                        .iter()
                        .map(|((t, n), a)| (*t, n.as_str(), canonical(*t, a)))
                        .collect();
                    let same_messages =
                        bodies_digest(canonical.iter().map(|(t, n, a)| (*t, *n, a)));
                    format!("dump {digest:016x} {same_messages:016x} {}", b.len())
                }
                ["cpu"] => format!("cpu {}", cpu_seconds()),
                _ => format!("error unknown command {line:?}"),
            };
            {
                use std::io::Write;
                writeln!(out, "{reply}")?;
                out.flush()?;
            }
        }
    }
}

/// One config of the benchmark's node group, from a broker file as `pier xds` reads it.
struct Variant {
    yaml: String,
    snapshot: Snapshot,
    /// [`versions_key`] of its versions: what a client reports once it applied it.
    key: u64,
    /// [`bodies_digest`] of its resources.
    digest: u64,
}

fn broker_file(brokers: usize) -> String {
    let mut s = String::from(
        "namespace: bench\ncluster: kafka\nlisteners:\n  - name: external\n    bindAddress: 127.0.0.1\n    bootstrapPort: 29092\n    brokerPortBase: 30000\n    brokers:\n",
    );
    for id in 0..brokers {
        let _ = writeln!(
            s,
            "      - {{id: {id}, host: 127.0.1.{}, port: 9092}}",
            id % 250 + 1
        );
    }
    s
}

fn variants(dir: &Path) -> anyhow::Result<(String, Vec<Variant>)> {
    let mut group = String::new();
    let mut out = Vec::new();
    for brokers in BROKERS {
        let yaml = broker_file(brokers);
        let path = dir.join(format!("brokers-{brokers}.yaml"));
        std::fs::write(&path, &yaml)?;
        let (g, snapshot) = pier::standalone::load(&path)?;
        group = g;
        let v = |t: ResourceType| snapshot.get(t).version.as_str();
        let key = versions_key([
            v(ResourceType::Cluster),
            v(ResourceType::Endpoint),
            v(ResourceType::Listener),
        ]);
        let digest = bodies_digest(ResourceType::ALL.iter().flat_map(|t| {
            snapshot
                .get(*t)
                .resources
                .iter()
                .map(move |(n, r)| (*t as usize, n.as_str(), &r.body))
        }));
        out.push(Variant {
            yaml,
            snapshot,
            key,
            digest,
        });
    }
    Ok((group, out))
}

/// The file pier-gcp-xds serves: every variant's resources as Pier's Any bytes and versions.
fn gcp_resources(group: &str, variants: &[Variant]) -> serde_json::Value {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    serde_json::json!({
        "group": group,
        "variants": variants.iter().map(|v| serde_json::json!({
            "types": ResourceType::ALL.iter().map(|t| {
                let ts = v.snapshot.get(*t);
                serde_json::json!({
                    "type_url": t.type_url(),
                    "version": ts.version,
                    "resources": ts.resources.values().map(|r| serde_json::json!({
                        "name": r.name,
                        "value": b64.encode(&r.body.value),
                    })).collect::<Vec<_>>(),
                })
            }).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Pier,
    GcpTyped,
    GcpRaw,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Pier, Kind::GcpTyped, Kind::GcpRaw];

    fn label(self) -> &'static str {
        match self {
            Kind::Pier => "pier xds",
            Kind::GcpTyped => "go-control-plane typed",
            Kind::GcpRaw => "go-control-plane raw",
        }
    }
}

/// A running xDS server under test.
struct Server {
    kind: Kind,
    process: pier_testenv::Process,
    ads: String,
    /// Pier's admin endpoint or pier-gcp-xds's control API.
    control: String,
    /// Pier's broker file.
    config: PathBuf,
    group: String,
    http: reqwest::Client,
}

async fn wait_http(
    http: &reqwest::Client,
    url: &str,
    process: &mut pier_testenv::Process,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        process.check_running()?;
        ensure!(
            Instant::now() < deadline,
            "{url} did not answer within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Server {
    async fn start(
        kind: Kind,
        logs: &Path,
        group: &str,
        variants: &[Variant],
    ) -> anyhow::Result<Self> {
        let ip = std::net::Ipv4Addr::LOCALHOST;
        let ports = pier_testenv::net::free_ports(ip, 2)?;
        let (ads, control) = (
            format!("127.0.0.1:{}", ports[0]),
            format!("127.0.0.1:{}", ports[1]),
        );
        let http = reqwest::Client::new();
        let config = logs.join("brokers.yaml");
        let mut cmd = std::process::Command::new("taskset");
        cmd.args(["-c", "1"]);
        let name = match kind {
            Kind::Pier => {
                std::fs::write(&config, &variants[0].yaml)?;
                cmd.arg(env!("CARGO_BIN_EXE_pier"))
                    .args(["xds", "--config"])
                    .arg(&config)
                    .args(["--listen", &ads, "--admin", &control])
                    // As quiet as the Go server: no line per stream.
                    .env("RUST_LOG", "warn");
                "pier-xds"
            }
            Kind::GcpTyped | Kind::GcpRaw => {
                let bin = pier_testenv::paths::program("pier-gcp-xds")
                    .context("the go-control-plane server is missing: run `dev/setup gcp-xds`")?;
                let file = logs.join("gcp-resources.json");
                std::fs::write(&file, gcp_resources(group, variants).to_string())?;
                cmd.arg(bin)
                    .args(["-listen", &ads, "-control", &control, "-resources"])
                    .arg(&file)
                    .args(["-mode", if kind == Kind::GcpRaw { "raw" } else { "typed" }]);
                "gcp-xds"
            }
        };
        let mut process = pier_testenv::Process::spawn(
            name,
            cmd,
            &logs.join(format!("{name}.log")),
            Duration::from_secs(5),
        )?;
        let probe = match kind {
            Kind::Pier => format!("http://{control}/healthz"),
            _ => format!("http://{control}/version"),
        };
        wait_http(&http, &probe, &mut process).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pier_testenv::net::accepts(ads.parse()?).await {
            process.check_running()?;
            ensure!(Instant::now() < deadline, "{name} does not accept on {ads}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            kind,
            process,
            ads: format!("http://{ads}"),
            control: format!("http://{control}"),
            config,
            group: group.to_string(),
            http,
        })
    }

    async fn version(&self) -> String {
        match self.kind {
            Kind::Pier => "pier (this build)".into(),
            _ => match self
                .http
                .get(format!("{}/version", self.control))
                .send()
                .await
            {
                Ok(r) => r.text().await.unwrap_or_default().trim().to_string(),
                Err(e) => format!("unknown ({e})"),
            },
        }
    }

    /// Starts a switch to variant `i`. Pier: the broker file is replaced (its poll picks it up).
    /// go-control-plane: set now; returns the set time (µs since the epoch).
    async fn update(&self, i: usize, variants: &[Variant]) -> anyhow::Result<Option<i64>> {
        match self.kind {
            Kind::Pier => {
                let tmp = self.config.with_extension("yaml.new");
                std::fs::write(&tmp, &variants[i].yaml)?;
                std::fs::rename(&tmp, &self.config)?;
                Ok(None)
            }
            _ => {
                let r: serde_json::Value = self
                    .http
                    .post(format!("{}/set?variant={i}", self.control))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                let ns = r["set_unix_nanos"].as_i64().context("no set_unix_nanos")?;
                Ok(Some(ns / 1000))
            }
        }
    }

    /// Pier's set time of its current snapshot, from its metrics (µs since the epoch).
    async fn pier_set_time(&self) -> anyhow::Result<i64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.control))
            .send()
            .await?
            .text()
            .await?;
        let prefix = format!(
            "pier_xds_snapshot_set_timestamp_seconds{{group=\"{}\"}} ",
            self.group
        );
        let secs: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .context("no pier_xds_snapshot_set_timestamp_seconds for the group")?
            .trim()
            .parse()?;
        Ok((secs * 1e6).round() as i64)
    }

    /// CPU seconds the server used: every thread's run time (schedstat, ns), or utime+stime.
    fn cpu_seconds(&self) -> f64 {
        proc_cpu_seconds(self.process.pid())
    }

    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.pid()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

fn proc_cpu_seconds(pid: u32) -> f64 {
    let mut ns = 0u64;
    let mut threads = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat"))
                && let Some(v) = s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
            {
                ns += v;
                threads += 1;
            }
        }
    }
    // utime + stime also counts threads that ended, at 10 ms resolution.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let ticks: f64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
                + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        })
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let from_stat = ticks / hz;
    if threads > 0 {
        (ns as f64 / 1e9).max(from_stat - 0.02)
    } else {
        from_stat
    }
}

/// The load generator process and its command line.
struct Load {
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Load {
    fn start(logs: &Path, server: &Server, streams: usize, delta: bool) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let log = std::fs::File::create(logs.join("load.log"))?;
        let mut child = tokio::process::Command::new("taskset")
            .args(["-c", "0"])
            .arg(exe)
            .args(["__load", &server.ads, &streams.to_string()])
            .arg(if delta { "delta" } else { "sotw" })
            .arg(&server.group)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting the load generator")?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
        Ok(Self {
            _child: child,
            stdin,
            stdout,
        })
    }

    async fn ask(&mut self, command: &str) -> anyhow::Result<String> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        let line = self
            .stdout
            .next_line()
            .await?
            .context("the load generator ended (see load.log)")?;
        if let Some(e) = line.strip_prefix("error ") {
            bail!("load generator: {e}");
        }
        Ok(line)
    }

    /// Every stream's time (µs since the epoch) of applying `key`.
    async fn wait(&mut self, key: u64, within: Duration) -> anyhow::Result<Vec<i64>> {
        let line = self
            .ask(&format!("wait {key} {}", within.as_millis()))
            .await?;
        let list = line.strip_prefix("acked ").context("unexpected answer")?;
        Ok(list
            .split(',')
            .map(|v| v.parse())
            .collect::<Result<_, _>>()?)
    }

    async fn cpu(&mut self) -> anyhow::Result<f64> {
        let line = self.ask("cpu").await?;
        Ok(line
            .strip_prefix("cpu ")
            .context("unexpected answer")?
            .parse()?)
    }

    /// Digests of client 0's bodies: as received, and as prost encodes the same messages.
    async fn dump(&mut self) -> anyhow::Result<(u64, u64, usize)> {
        let line = self.ask("dump").await?;
        let mut w = line.split_whitespace().skip(1);
        let digest = u64::from_str_radix(w.next().context("digest")?, 16)?;
        let same_messages = u64::from_str_radix(w.next().context("digest")?, 16)?;
        let count = w.next().context("count")?.parse()?;
        Ok((digest, same_messages, count))
    }
}

#[derive(Debug, Default, Clone)]
struct RunResult {
    per_client: Vec<f64>,
    all_acked: Vec<f64>,
    updates: usize,
    server_cpu: f64,
    load_cpu: f64,
    peak_rss_mib: f64,
    identical: bool,
    /// The same messages, maybe encoded in another field order.
    equivalent: bool,
    /// Sum of every update's set → all-ACKed time, seconds.
    busy: f64,
    negative: usize,
}

impl RunResult {
    fn cpu_ms_per_update(&self) -> f64 {
        self.server_cpu / self.updates as f64 * 1e3
    }
    fn load_ms_per_update(&self) -> f64 {
        self.load_cpu / self.updates as f64 * 1e3
    }
    fn updates_per_s(&self) -> f64 {
        self.updates as f64 / self.busy
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// What every run shares.
struct Plan {
    logs: PathBuf,
    group: String,
    variants: Vec<Variant>,
}

async fn run_one(
    kind: Kind,
    streams: usize,
    delta: bool,
    updates: usize,
    plan: &Plan,
    versions: &mut BTreeMap<&'static str, String>,
) -> anyhow::Result<RunResult> {
    let (group, variants) = (plan.group.as_str(), plan.variants.as_slice());
    let proto = if delta { "delta" } else { "sotw" };
    let logs = plan.logs.join(format!(
        "{}-{proto}-{streams}",
        kind.label().replace(' ', "-")
    ));
    std::fs::create_dir_all(&logs)?;
    let server = Server::start(kind, &logs, group, variants).await?;
    versions
        .entry(kind.label())
        .or_insert(server.version().await);
    let mut load = Load::start(&logs, &server, streams, delta)?;
    let connect = Instant::now();
    load.wait(variants[0].key, Duration::from_secs(180))
        .await
        .context("first config")?;
    eprintln!(
        "  {} {proto} N={streams}: all streams have the first config after {:.1} s",
        kind.label(),
        connect.elapsed().as_secs_f64()
    );
    let (digest, same_messages, count) = load.dump().await?;
    let identical = digest == variants[0].digest;
    let equivalent = same_messages == variants[0].digest;
    if !identical {
        eprintln!(
            "  {}: the bodies a client received ({count}) differ from Pier's translation byte for byte{}",
            kind.label(),
            if equivalent {
                ", not as messages (another field order)"
            } else {
                ", also as messages"
            }
        );
    }
    ensure!(
        equivalent,
        "{}: the client did not receive Pier's resources",
        kind.label()
    );
    let (cpu0, load0) = (server.cpu_seconds(), load.cpu().await?);
    let mut result = RunResult {
        updates,
        identical,
        equivalent,
        ..Default::default()
    };
    for k in 0..updates {
        let i = 1 + k % 2;
        let gcp_set = server.update(i, variants).await?;
        let acks = load
            .wait(variants[i].key, Duration::from_secs(120))
            .await
            .with_context(|| format!("update {k}"))?;
        let set = match gcp_set {
            Some(t) => t,
            None => server.pier_set_time().await?,
        };
        let mut last = 0.0f64;
        for at in acks {
            let ms = (at - set) as f64 / 1e3;
            if ms < 0.0 {
                result.negative += 1;
            }
            last = last.max(ms);
            result.per_client.push(ms.max(0.0));
        }
        result.all_acked.push(last);
        result.busy += last / 1e3;
    }
    result.server_cpu = server.cpu_seconds() - cpu0;
    result.load_cpu = load.cpu().await? - load0;
    result.peak_rss_mib = server.peak_rss_mib();
    result.per_client.sort_by(f64::total_cmp);
    result.all_acked.sort_by(f64::total_cmp);
    drop(load);
    let mut process = server.process;
    process.stop();
    if result.negative > 0 {
        eprintln!(
            "  {}: {} ACK times before the set time (clock?)",
            kind.label(),
            result.negative
        );
    }
    eprintln!(
        "  {} {proto} N={streams}: per-client p50 {:.2} ms p99 {:.2} ms, all-ACKed p99 {:.2} ms, CPU {:.2} ms/update (generator {:.2}), peak RSS {:.1} MiB",
        kind.label(),
        percentile(&result.per_client, 0.5),
        percentile(&result.per_client, 0.99),
        percentile(&result.all_acked, 0.99),
        result.cpu_ms_per_update(),
        result.load_ms_per_update(),
        result.peak_rss_mib,
    );
    Ok(result)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}", a / b)
    } else {
        "–".into()
    }
}

fn report(
    results: &BTreeMap<(usize, bool), BTreeMap<&'static str, RunResult>>,
    versions: &BTreeMap<&'static str, String>,
    updates_of: impl Fn(usize) -> usize,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## xDS fan-out: pier xds vs go-control-plane\n");
    let sizes: Vec<String> = results
        .keys()
        .map(|(n, _)| n.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let _ = writeln!(
        s,
        "N simulated Envoys ({} streams), each a real ADS stream (SotW or delta) on its own HTTP/2 connection, in a separate load-generator process pinned to core 0 (`taskset -c 0`); the server alone on core 1 (`taskset -c 1`). Updates alternate 7 and 8 brokers (from 6; every type changes); {} per run, each waited for until every stream ACKed it. Latency: the server's own snapshot-set time (Pier: `pier_xds_snapshot_set_timestamp_seconds`, after its file poll; go-control-plane: just before `SetSnapshot`) → a stream's ACK of the update's last type, wall clock. Both servers serve Pier's translation of the same broker file; before timing, one stream's bodies were compared with it byte for byte (and as decoded messages). go-control-plane {}: *typed* (Envoy messages, marshalled by the cache) and *raw* (Pier's bytes as a `ResourceWithName`, never re-encoded). Server CPU: run time of all its threads during the updates (/proc schedstat), per update; peak RSS: VmHWM over the whole run, connections included.\n",
        sizes.join(", "),
        sizes
            .iter()
            .map(|n| format!("{} at N={n}", updates_of(n.parse().unwrap_or(0))))
            .collect::<Vec<_>>()
            .join(", "),
        versions
            .get(Kind::GcpTyped.label())
            .or_else(|| versions.get(Kind::GcpRaw.label()))
            .cloned()
            .unwrap_or_default(),
    );
    let _ = writeln!(
        s,
        "| streams | ADS | figure | pier xds | go-control-plane typed | pier / typed | go-control-plane raw | pier / raw |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    type Figure = (&'static str, fn(&RunResult) -> f64);
    let figures: [Figure; 7] = [
        ("per-client p50 ms", |r| percentile(&r.per_client, 0.5)),
        ("per-client p99 ms", |r| percentile(&r.per_client, 0.99)),
        ("all-ACKed p50 ms", |r| percentile(&r.all_acked, 0.5)),
        ("all-ACKed p99 ms", |r| percentile(&r.all_acked, 0.99)),
        ("updates/s (1 / mean all-ACKed)", RunResult::updates_per_s),
        ("server CPU ms / update", RunResult::cpu_ms_per_update),
        ("server peak RSS MiB", |r| r.peak_rss_mib),
    ];
    for ((n, delta), runs) in results {
        let proto = if *delta { "delta" } else { "SotW" };
        for (name, f) in &figures {
            let get = |k: Kind| runs.get(k.label()).map(f);
            let cell = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}"));
            let (p, t, r) = (get(Kind::Pier), get(Kind::GcpTyped), get(Kind::GcpRaw));
            let _ = writeln!(
                s,
                "| {n} | {proto} | {name} | {} | {} | {} | {} | {} |",
                cell(p),
                cell(t),
                p.zip(t).map_or("–".into(), |(p, t)| ratio(p, t)),
                cell(r),
                p.zip(r).map_or("–".into(), |(p, r)| ratio(p, r)),
            );
        }
    }
    let _ = writeln!(
        s,
        "\nThe load generator's own CPU per update (ms), which must stay below the server's for the latencies to measure the server:\n"
    );
    let _ = writeln!(
        s,
        "| streams | ADS | against pier xds | against typed | against raw | bodies byte-identical (pier / typed / raw) | generator-bound? |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    let mut bound_any = false;
    for ((n, delta), runs) in results {
        let proto = if *delta { "delta" } else { "SotW" };
        let cell = |k: Kind| {
            runs.get(k.label()).map_or("–".to_string(), |r| {
                format!("{:.2}", r.load_ms_per_update())
            })
        };
        let same = |k: Kind| {
            runs.get(k.label())
                .map_or("–", |r| match (r.identical, r.equivalent) {
                    (true, _) => "yes",
                    (false, true) => "same messages",
                    (false, false) => "NO",
                })
        };
        let bound: Vec<&str> = Kind::ALL
            .iter()
            .filter(|k| {
                runs.get(k.label())
                    .is_some_and(|r| r.load_cpu >= r.server_cpu)
            })
            .map(|k| k.label())
            .collect();
        bound_any |= !bound.is_empty();
        let _ = writeln!(
            s,
            "| {n} | {proto} | {} | {} | {} | {} / {} / {} | {} |",
            cell(Kind::Pier),
            cell(Kind::GcpTyped),
            cell(Kind::GcpRaw),
            same(Kind::Pier),
            same(Kind::GcpTyped),
            same(Kind::GcpRaw),
            if bound.is_empty() {
                "no".to_string()
            } else {
                format!("yes: {}", bound.join(", "))
            },
        );
    }
    // The reading: CPU and RSS ratios at the largest N, against the better anchor.
    let _ = writeln!(s, "\nReading:");
    for ((n, delta), runs) in results {
        let proto = if *delta { "delta" } else { "SotW" };
        let (Some(p), Some(t), Some(r)) = (
            runs.get(Kind::Pier.label()),
            runs.get(Kind::GcpTyped.label()),
            runs.get(Kind::GcpRaw.label()),
        ) else {
            continue;
        };
        let best_cpu = t.cpu_ms_per_update().min(r.cpu_ms_per_update());
        let best_rss = t.peak_rss_mib.min(r.peak_rss_mib);
        let best_p99 = percentile(&t.all_acked, 0.99).min(percentile(&r.all_acked, 0.99));
        let _ = writeln!(
            s,
            "- {n} streams, {proto}: Pier uses {}× the CPU per update of the leaner go-control-plane mode (goal ≤ 0.4), {}× its peak RSS (goal ≤ 0.5); all-ACKed p99 {}× ({}).",
            ratio(p.cpu_ms_per_update(), best_cpu),
            ratio(p.peak_rss_mib, best_rss),
            ratio(percentile(&p.all_acked, 0.99), best_p99),
            if percentile(&p.all_acked, 0.99) < best_p99 {
                "lower"
            } else {
                "not lower"
            },
        );
    }
    if bound_any {
        let _ = writeln!(
            s,
            "- Where the generator used as much CPU as the server (\"generator-bound\"), the latencies measure the generator as much as the server: compare CPU and RSS there, not latency."
        );
    }
    s
}

async fn orchestrate(
    full: bool,
    sizes: Vec<usize>,
    kinds: Vec<Kind>,
    protocols: Vec<bool>,
) -> anyhow::Result<()> {
    let logs = pier_testenv::paths::target_dir()
        .join("bench-logs")
        .join(if full {
            NAME.to_string()
        } else {
            format!("{NAME}-smoke")
        });
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    // Fail early and clearly when a component is missing.
    pier_testenv::paths::program("pier-gcp-xds")
        .context("the go-control-plane server is missing: run `dev/setup gcp-xds`")?;
    let (group, variants) = variants(&logs)?;
    let plan = Plan {
        logs: logs.clone(),
        group,
        variants,
    };
    // More updates make a run long enough to attach a profiler to the server
    // (`perf record -p <pid>` once it is listening).
    let updates_override: Option<usize> = std::env::var("XDS_ANCHOR_UPDATES")
        .ok()
        .and_then(|v| v.parse().ok());
    let updates_of = move |n: usize| {
        if let Some(updates) = updates_override {
            updates
        } else if !full {
            2
        } else if n >= 5000 {
            10
        } else if n >= 1000 {
            20
        } else {
            40
        }
    };
    let mut results: BTreeMap<(usize, bool), BTreeMap<&'static str, RunResult>> = BTreeMap::new();
    let mut versions = BTreeMap::new();
    let started = Instant::now();
    for &n in &sizes {
        for &delta in &protocols {
            for &kind in &kinds {
                eprintln!(
                    "{NAME}: {} {} N={n} ({:.0} s in)",
                    kind.label(),
                    if delta { "delta" } else { "sotw" },
                    started.elapsed().as_secs_f64()
                );
                let r = run_one(kind, n, delta, updates_of(n), &plan, &mut versions)
                    .await
                    .with_context(|| {
                        format!(
                            "{} {} N={n}",
                            kind.label(),
                            if delta { "delta" } else { "sotw" }
                        )
                    })?;
                results
                    .entry((n, delta))
                    .or_default()
                    .insert(kind.label(), r);
            }
        }
    }
    let section = report(&results, &versions, updates_of);
    if full {
        println!("{section}");
        if let Some(dir) = std::env::var_os("PIER_BENCH_OUT") {
            std::fs::create_dir_all(&dir)?;
            std::fs::write(Path::new(&dir).join(format!("{NAME}.md")), &section)?;
        }
    } else {
        eprintln!("{section}");
        // Smoke: it ran, every stream applied every update, and the raw bodies are Pier's.
        for ((n, delta), runs) in &results {
            ensure!(
                runs.len() == Kind::ALL.len(),
                "the smoke run runs every server"
            );
            for (kind, r) in runs {
                ensure!(
                    r.per_client.len() == n * r.updates,
                    "{kind} {delta} {n}: missing ACKs"
                );
            }
            let raw = &runs[Kind::GcpRaw.label()];
            ensure!(
                raw.identical,
                "go-control-plane raw does not serve Pier's bytes"
            );
            ensure!(
                runs[Kind::Pier.label()].identical,
                "pier xds does not serve its translation"
            );
        }
    }
    eprintln!("{NAME}: done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__load") {
        let [_, _, addr, streams, proto, group] = args.as_slice() else {
            bail!("usage: __load ADDR STREAMS sotw|delta GROUP");
        };
        let load = load::Args {
            addr: addr.clone(),
            streams: streams.parse()?,
            delta: proto == "delta",
            group: group.clone(),
        };
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(load::run(load));
    }
    let full = args.iter().any(|a| a == "--bench");
    let chosen: Vec<usize> = args.iter().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if !full {
        vec![2]
    } else if chosen.is_empty() {
        vec![100, 1000, 5000]
    } else {
        chosen
    };
    let has = |w: &str| args.iter().skip(1).any(|a| a == w);
    let mut kinds: Vec<Kind> = [
        ("pier", Kind::Pier),
        ("typed", Kind::GcpTyped),
        ("raw", Kind::GcpRaw),
    ]
    .into_iter()
    .filter(|(w, _)| has(w))
    .map(|(_, k)| k)
    .collect();
    if kinds.is_empty() {
        kinds = Kind::ALL.to_vec();
    }
    let mut protocols: Vec<bool> = [("sotw", false), ("delta", true)]
        .into_iter()
        .filter(|(w, _)| has(w))
        .map(|(_, d)| d)
        .collect();
    if protocols.is_empty() {
        protocols = vec![false, true];
    }
    tokio::runtime::Runtime::new()?.block_on(orchestrate(full, sizes, kinds, protocols))
}
