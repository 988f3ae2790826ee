//! The test bed the Kafka-through-Envoy benchmarks share (`broker_added`, `kafka_through_envoy`):
//! a real KRaft cluster whose nodes each listen twice — `PLAINTEXT` on `<ip>:9092` advertised
//! as itself (the direct path) and `EXTERNAL` on `<ip>:9094` advertised as Envoy's port for that
//! broker (`<envoy ip>:29100 + id`) — and the two ways to put Envoy in front of it: `pier xds`
//! serving the broker file live, or a static bootstrap rendered from the very same translated
//! resources (koperator's way).
#![allow(dead_code)] // each bench uses its own part of the bed

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::bootstrap::v3::bootstrap::StaticResources;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use pier::model::{BrokerRouting, BrokerState, ExposedBroker, ExternalAccess};
use pier_testenv::kafka::{BROKER_PORT, CONTROLLER_PORT, KafkaOptions};
use pier_testenv::{Envoy, KafkaCluster, LogDir, Process, program, wait_for};

/// The broker port Envoy proxies to (each node's `EXTERNAL` listener).
pub const EXTERNAL_PORT: u16 = 9094;
/// Envoy's bootstrap port and the base of its port per broker (broker `id` on `BASE + id`).
/// Not the usual 29092/29100: other tests' Envoys bind those on 0.0.0.0, which would take
/// them from every loopback address while a bench runs next to them.
pub const BOOTSTRAP_PORT: u16 = 27092;
pub const BASE_PORT: u16 = 27100;

/// `cargo bench` passes `--bench`; `cargo test` runs the same binary without it (smoke mode).
pub fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Fails at once, naming what is missing, when `dev/setup` has not run.
pub fn require_components() -> anyhow::Result<()> {
    for p in ["envoy", "kafka-node", "kcat"] {
        program(p).context("the Kafka/Envoy benchmarks need the real components")?;
    }
    Ok(())
}

/// Prints the markdown section on stdout and, with `$PIER_BENCH_OUT`, writes `<name>.md` there.
pub fn emit(name: &str, section: &str) -> anyhow::Result<()> {
    println!("{section}");
    if let Some(dir) = std::env::var_os("PIER_BENCH_OUT") {
        let path = Path::new(&dir).join(format!("{name}.md"));
        std::fs::write(&path, section).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// CPU seconds every process on the machine has used so far (busy time of all cores, from
/// `/proc/stat`): with [`cpu_seconds`] of the bench's own processes, what others took meanwhile.
pub fn machine_cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
    let busy: f64 = f
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(busy / hz)
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU seconds used by reaped children of this process so far (a client tool, measured
/// around its run).
pub fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// The cluster, and the loopback address Envoy listens on.
pub struct Bed {
    pub logs: Arc<LogDir>,
    pub kafka: KafkaCluster,
    pub envoy_ip: Ipv4Addr,
}

impl Bed {
    /// `nodes` KRaft nodes (broker ids 1..=nodes, at most 9), each advertising its Envoy port
    /// on the `EXTERNAL` listener.
    pub async fn start(bench: &str, nodes: usize) -> anyhow::Result<Self> {
        anyhow::ensure!((1..=9).contains(&nodes), "1 to 9 nodes");
        require_components()?;
        let logs = LogDir::for_bench(bench)?;
        let mut ports = vec![BROKER_PORT, CONTROLLER_PORT, EXTERNAL_PORT, BOOTSTRAP_PORT];
        ports.extend((1..=nodes as u16).map(|id| BASE_PORT + id));
        let mut ips = pier_testenv::net::loopback_ips(nodes + 1, &ports)?;
        let envoy_ip = ips.pop().context("an address for Envoy")?;
        eprintln!("starting {nodes} Kafka nodes on {ips:?}, Envoy on {envoy_ip}");
        let options = KafkaOptions {
            nodes,
            ips,
            heap: "-Xms512m -Xmx512m".into(),
            properties: vec![
                (
                    "listeners".into(),
                    format!(
                        "PLAINTEXT://{{ip}}:{BROKER_PORT},CONTROLLER://{{ip}}:{CONTROLLER_PORT},\
                         EXTERNAL://{{ip}}:{EXTERNAL_PORT}"
                    ),
                ),
                (
                    "advertised.listeners".into(),
                    // Broker ids are single digits: BASE_PORT + id is "2710{id}".
                    format!(
                        "PLAINTEXT://{{ip}}:{BROKER_PORT},EXTERNAL://{envoy_ip}:{}{{id}}",
                        BASE_PORT / 10
                    ),
                ),
                (
                    "listener.security.protocol.map".into(),
                    "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,EXTERNAL:PLAINTEXT".into(),
                ),
                ("auto.create.topics.enable".into(), "false".into()),
            ],
            ..KafkaOptions::default()
        };
        let kafka = KafkaCluster::start_with(&logs, options).await?;
        Ok(Self {
            logs,
            kafka,
            envoy_ip,
        })
    }

    /// Envoy's address for broker `id`.
    pub fn broker_via_envoy(&self, id: i32) -> SocketAddr {
        (self.envoy_ip, BASE_PORT + id as u16).into()
    }

    /// Envoy's bootstrap address.
    pub fn bootstrap_via_envoy(&self) -> String {
        format!("{}:{BOOTSTRAP_PORT}", self.envoy_ip)
    }

    /// The brokers' own addresses.
    pub fn bootstrap_direct(&self) -> String {
        self.kafka.bootstrap()
    }

    /// Pier's model of the external listener exposing brokers `ids`.
    pub fn model(&self, ids: &[i32]) -> anyhow::Result<ExternalAccess> {
        let brokers = ids
            .iter()
            .map(|id| {
                Ok(ExposedBroker {
                    id: *id,
                    host: self.kafka.node(*id)?.ip.to_string(),
                    port: EXTERNAL_PORT,
                    state: BrokerState::Serving,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(ExternalAccess {
            namespace: "bench".into(),
            cluster: "kafka".into(),
            listener: "external".into(),
            bind_address: self.envoy_ip.to_string(),
            bootstrap_port: BOOTSTRAP_PORT,
            routing: BrokerRouting::PortPerBroker {
                base_port: BASE_PORT,
            },
            idle_timeout: Duration::from_secs(3600),
            brokers,
        })
    }

    /// The same model as `pier xds`'s broker file.
    pub fn brokers_file(&self, ids: &[i32]) -> anyhow::Result<String> {
        let mut text = format!(
            "namespace: bench\ncluster: kafka\nlisteners:\n  - name: external\n    \
             bindAddress: {}\n    bootstrapPort: {BOOTSTRAP_PORT}\n    brokerPortBase: {BASE_PORT}\n    \
             idleTimeoutSeconds: 3600\n    brokers:\n",
            self.envoy_ip
        );
        for id in ids {
            let ip = self.kafka.node(*id)?.ip;
            text.push_str(&format!(
                "      - {{id: {id}, host: {ip}, port: {EXTERNAL_PORT}}}\n"
            ));
        }
        Ok(text)
    }

    /// Kafka's TopicCommand `--create` with `args`, through the brokers' own addresses.
    pub async fn create_topic(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = kafka_tool("org.apache.kafka.tools.TopicCommand")?
            .args(["--bootstrap-server", &self.bootstrap_direct(), "--create"])
            .args(args)
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "TopicCommand {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

/// Kafka's own tool `class` on the classpath dev/setup installed.
pub fn kafka_tool(class: &str) -> anyhow::Result<tokio::process::Command> {
    let mut cmd = tokio::process::Command::new(program("kafka-node")?);
    cmd.args(["class", class]);
    cmd.env("KAFKA_HEAP_OPTS", "-Xms256m -Xmx512m");
    cmd.kill_on_drop(true);
    Ok(cmd)
}

/// A static Envoy bootstrap (binary protobuf, `.pb`) with exactly the listeners and clusters
/// Pier translates for `model`, each EDS cluster's endpoints inlined as its `load_assignment`
/// (a static file has no EDS): koperator's way of configuring Envoy.
pub fn static_bootstrap(model: &ExternalAccess) -> anyhow::Result<Vec<u8>> {
    use prost::Message;
    let resources = pier::xds::translate(std::slice::from_ref(model))?;
    let mut clusters = resources.clusters;
    for c in &mut clusters {
        if c.eds_cluster_config.take().is_some() {
            let assignment = resources
                .endpoints
                .iter()
                .find(|e| e.cluster_name == c.name)
                .with_context(|| format!("no endpoints for {}", c.name))?;
            c.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
            c.load_assignment = Some(assignment.clone());
        }
    }
    let bootstrap = Bootstrap {
        static_resources: Some(StaticResources {
            listeners: resources.listeners,
            clusters,
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(bootstrap.encode_to_vec())
}

/// `pier xds` serving a broker file, and its address.
pub struct PierXds {
    pub process: Process,
    pub file: PathBuf,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

impl PierXds {
    pub async fn start(logs: &Arc<LogDir>, name: &str, file_text: &str) -> anyhow::Result<Self> {
        let dir = logs.sub(name)?;
        let ports = pier_testenv::net::free_ports(Ipv4Addr::LOCALHOST, 2)?;
        let listen: SocketAddr = (Ipv4Addr::LOCALHOST, ports[0]).into();
        let admin: SocketAddr = (Ipv4Addr::LOCALHOST, ports[1]).into();
        let file = dir.join("brokers.yaml");
        std::fs::write(&file, file_text)?;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pier"));
        cmd.arg("xds")
            .arg("--config")
            .arg(&file)
            .arg(format!("--listen={listen}"))
            .arg(format!("--admin={admin}"));
        let mut process = Process::spawn(name, cmd, &dir.join("pier.log"), Duration::from_secs(5))?;
        let url = format!("http://{admin}/healthz");
        wait_for(
            "pier xds to answer /healthz",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || {
                let alive = process.check_running();
                let url = url.clone();
                async move {
                    if let Err(e) = alive {
                        return Some(Err(e));
                    }
                    reqwest::get(&url).await.ok()?;
                    Some(Ok(()))
                }
            },
        )
        .await??;
        Ok(Self {
            process,
            file,
            listen,
            admin,
        })
    }

    /// Replaces the broker file (written aside and renamed, so `pier xds` never reads half).
    pub fn write_file(&self, text: &str) -> anyhow::Result<()> {
        let tmp = self.file.with_extension("yaml.new");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.file)?;
        Ok(())
    }

    /// `pier_xds_snapshot_updates_total` summed over groups, from `/metrics`.
    pub async fn snapshot_updates(&self) -> anyhow::Result<u64> {
        let text = reqwest::get(format!("http://{}/metrics", self.admin))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with("pier_xds_snapshot_updates_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }

    /// Polls `/metrics` every 5 ms until a snapshot update beyond `seen` happened; returns
    /// when it was first seen.
    pub async fn wait_snapshot_after(&self, seen: u64) -> anyhow::Result<std::time::Instant> {
        wait_for(
            "pier xds to set a new snapshot",
            Duration::from_secs(30),
            Duration::from_millis(5),
            || async {
                let now = self.snapshot_updates().await.ok()?;
                (now > seen).then(std::time::Instant::now)
            },
        )
        .await
    }

    /// An Envoy from the repo's `envoy/bootstrap.yaml` (state-of-the-world ADS) pointed at it.
    pub async fn envoy(&self, logs: &Arc<LogDir>, name: &str) -> anyhow::Result<Envoy> {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(repo.join("envoy/bootstrap.yaml"))?;
        anyhow::ensure!(
            text.contains("port_value: 18000"),
            "envoy/bootstrap.yaml changed"
        );
        let text = text.replace(
            "port_value: 18000",
            &format!("port_value: {}", self.listen.port()),
        );
        Envoy::start(
            logs,
            name,
            &text,
            &["--service-node", name, "--service-cluster", "bench/kafka"],
        )
        .await
    }
}

/// Waits until broker `id` answers ApiVersions at `addr` (through Envoy).
pub async fn wait_served(addr: SocketAddr, within: Duration) -> anyhow::Result<()> {
    wait_for(
        &format!("a broker to answer at {addr}"),
        within,
        Duration::from_millis(10),
        || async move { answers(addr).await.then_some(()) },
    )
    .await
}

/// Whether a Kafka broker answers ApiVersions at `addr` now.
pub async fn answers(addr: SocketAddr) -> bool {
    let options = pier::kafka::ConnectOptions {
        client_id: "bench-probe".into(),
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    pier::kafka::BrokerConnection::connect(&addr.to_string(), options)
        .await
        .is_ok()
}
