//! A real Apache Kafka cluster in KRaft mode: N combined broker+controller nodes, each on its
//! own loopback address with the usual ports (9092 broker, 9093 controller), started through
//! the `kafka-node` launcher that `dev/setup` installs. The controller quorum is static
//! (`controller.quorum.voters`) or, on request, dynamic (KIP-853, kraft.version 1), with
//! controller-only nodes that can be started later to join it.
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use rand::RngCore;

use crate::net::{accepts, loopback_ips};
use crate::paths::{LogDir, program};
use crate::process::{Process, stop_all};
use crate::wait_for;

pub const BROKER_PORT: u16 = 9092;
pub const CONTROLLER_PORT: u16 = 9093;

/// How to build the cluster.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    pub nodes: usize,
    /// Extra `server.properties` lines for every node (override the defaults). In a value,
    /// `{id}` and `{ip}` become the node's id and address (per-node listeners, keystores).
    pub properties: Vec<(String, String)>,
    /// `KAFKA_HEAP_OPTS` for every node.
    pub heap: String,
    /// Data directories (`log.dirs`) per node, JBOD when more than one. With more than one,
    /// `metadata.log.dir` is set to the first, so the others can be emptied and dropped.
    pub log_dirs: usize,
    /// The nodes' loopback addresses, when the caller picked them first (with
    /// [`crate::net::loopback_ips`], listing every port it will use), e.g. to put them into
    /// certificates. Empty: picked here. One per node, spare controllers included (last).
    pub ips: Vec<Ipv4Addr>,
    /// A dynamic KRaft quorum (KIP-853, kraft.version 1): nodes find the controllers through
    /// `controller.quorum.bootstrap.servers` instead of a fixed `controller.quorum.voters`,
    /// and the combined nodes, the initial voters, are formatted with `--initial-controllers`
    /// naming each with a directory id chosen here ([`KafkaNode::directory_id`]).
    pub dynamic_quorum: bool,
    /// Controller-only nodes prepared (ids and addresses after the combined nodes, their
    /// properties written) but not started: [`KafkaCluster::start_node`] starts one,
    /// formatted with `--no-initial-controllers`, and it fetches from the quorum as an
    /// observer until something adds it as a voter. Needs `dynamic_quorum` (a static quorum
    /// refuses a controller that is not in `controller.quorum.voters`). `properties` apply
    /// to them too.
    pub spare_controllers: usize,
    /// The program that runs a node: `kafka-node` (the default Kafka), or a version's own
    /// `kafka-node-<version>` (dev/setup installs several).
    pub launcher: String,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            properties: Vec::new(),
            heap: "-Xms256m -Xmx512m".to_string(),
            log_dirs: 1,
            ips: Vec::new(),
            dynamic_quorum: false,
            spare_controllers: 0,
            launcher: "kafka-node".to_string(),
        }
    }
}

/// One node of the cluster.
#[derive(Debug)]
pub struct KafkaNode {
    pub id: i32,
    pub ip: Ipv4Addr,
    pub properties: PathBuf,
    /// Its `log.dirs`, in order; the first holds the metadata log.
    pub log_dirs: Vec<PathBuf>,
    /// Runs a broker; `false` for a controller-only node.
    pub broker: bool,
    /// Further `kafka-storage format` flags for its first start.
    format_args: Option<String>,
    log: PathBuf,
    process: Option<Process>,
}

impl KafkaNode {
    /// `ip:9092`.
    pub fn broker_addr(&self) -> String {
        format!("{}:{BROKER_PORT}", self.ip)
    }

    /// `ip:9093`.
    pub fn controller_addr(&self) -> String {
        format!("{}:{CONTROLLER_PORT}", self.ip)
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// The `directory.id` of its metadata log dir (Kafka's Uuid text), from the
    /// `meta.properties` written when the node's storage was formatted (its first start).
    pub fn directory_id(&self) -> anyhow::Result<String> {
        let path = self
            .log_dirs
            .first()
            .context("a node without log dirs")?
            .join("meta.properties");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (formatted yet?)", path.display()))?;
        text.lines()
            .find_map(|l| l.trim().strip_prefix("directory.id="))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("no directory.id in {}", path.display()))
    }
}

/// A running cluster. Dropping it stops every node.
#[derive(Debug)]
pub struct KafkaCluster {
    nodes: Vec<KafkaNode>,
    cluster_id: String,
    heap: String,
    /// The program that runs each node.
    launcher: PathBuf,
    _logs: Arc<LogDir>,
}

impl KafkaCluster {
    /// Starts `nodes` nodes with default settings and waits until every broker is registered.
    pub async fn start(logs: &Arc<LogDir>, nodes: usize) -> anyhow::Result<Self> {
        Self::start_with(
            logs,
            KafkaOptions {
                nodes,
                ..KafkaOptions::default()
            },
        )
        .await
    }

    pub async fn start_with(logs: &Arc<LogDir>, options: KafkaOptions) -> anyhow::Result<Self> {
        if options.nodes == 0 {
            bail!("a Kafka cluster needs at least one node");
        }
        if options.log_dirs == 0 {
            bail!("a Kafka node needs at least one log dir");
        }
        if options.spare_controllers > 0 && !options.dynamic_quorum {
            bail!("spare controllers need a dynamic quorum");
        }
        let launcher = program(&options.launcher)?;
        let dir = logs.sub("kafka")?;
        let total = options.nodes + options.spare_controllers;
        let ips = if options.ips.is_empty() {
            loopback_ips(total, &[BROKER_PORT, CONTROLLER_PORT])?
        } else if options.ips.len() == total {
            options.ips.clone()
        } else {
            bail!(
                "{} addresses given for {total} Kafka nodes",
                options.ips.len()
            );
        };
        let combined = &ips[..options.nodes];
        let controller_endpoint =
            |i: usize, ip: &Ipv4Addr| format!("{}@{ip}:{CONTROLLER_PORT}", i + 1);
        // Static: the voters, fixed. Dynamic: where to find the quorum, plus the initial
        // voters with their directory ids for formatting.
        let (quorum_key, quorum_value, initial_controllers) = if options.dynamic_quorum {
            let bootstrap = combined
                .iter()
                .map(|ip| format!("{ip}:{CONTROLLER_PORT}"))
                .collect::<Vec<_>>()
                .join(",");
            let initial = combined
                .iter()
                .enumerate()
                .map(|(i, ip)| format!("{}:{}", controller_endpoint(i, ip), new_directory_id()))
                .collect::<Vec<_>>()
                .join(",");
            (
                "controller.quorum.bootstrap.servers",
                bootstrap,
                Some(initial),
            )
        } else {
            let voters = combined
                .iter()
                .enumerate()
                .map(|(i, ip)| controller_endpoint(i, ip))
                .collect::<Vec<_>>()
                .join(",");
            ("controller.quorum.voters", voters, None)
        };
        let rf = options.nodes.min(3);
        let min_isr = options.nodes.min(2);
        let mut nodes = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            let id = i as i32 + 1;
            let broker = i < options.nodes;
            // The first dir keeps the name a single-dir node has always had. A
            // controller-only node holds just the metadata log.
            let dir_count = if broker { options.log_dirs } else { 1 };
            let log_dirs = (0..dir_count)
                .map(|d| match d {
                    0 => logs.data(&format!("kafka-{id}")),
                    d => logs.data(&format!("kafka-{id}-{d}")),
                })
                .collect::<anyhow::Result<Vec<PathBuf>>>()?;
            let joined = log_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(",");
            let mut props = if broker {
                vec![
                    ("process.roles".to_string(), "broker,controller".to_string()),
                    (
                        "listeners".into(),
                        format!(
                            "PLAINTEXT://{ip}:{BROKER_PORT},CONTROLLER://{ip}:{CONTROLLER_PORT}"
                        ),
                    ),
                    (
                        "advertised.listeners".into(),
                        format!("PLAINTEXT://{ip}:{BROKER_PORT}"),
                    ),
                    ("inter.broker.listener.name".into(), "PLAINTEXT".into()),
                ]
            } else {
                vec![
                    ("process.roles".to_string(), "controller".to_string()),
                    (
                        "listeners".into(),
                        format!("CONTROLLER://{ip}:{CONTROLLER_PORT}"),
                    ),
                    // What AddRaftVoter gets told, as `kafka-metadata-quorum add-controller`
                    // would read it.
                    (
                        "advertised.listeners".into(),
                        format!("CONTROLLER://{ip}:{CONTROLLER_PORT}"),
                    ),
                ]
            };
            props.extend([
                ("node.id".to_string(), id.to_string()),
                (quorum_key.to_string(), quorum_value.clone()),
                ("controller.listener.names".into(), "CONTROLLER".into()),
                (
                    "listener.security.protocol.map".into(),
                    "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT".into(),
                ),
                ("log.dirs".into(), joined),
                ("num.partitions".into(), "1".into()),
                ("group.initial.rebalance.delay.ms".into(), "0".into()),
                ("num.network.threads".into(), "2".into()),
                ("num.io.threads".into(), "2".into()),
                ("offsets.topic.replication.factor".into(), rf.to_string()),
                (
                    "transaction.state.log.replication.factor".into(),
                    rf.to_string(),
                ),
                ("transaction.state.log.min.isr".into(), min_isr.to_string()),
                (
                    "share.coordinator.state.topic.replication.factor".into(),
                    rf.to_string(),
                ),
                (
                    "share.coordinator.state.topic.min.isr".into(),
                    min_isr.to_string(),
                ),
            ]);
            if log_dirs.len() > 1 {
                // Kafka's default is the first of log.dirs; said explicitly so that
                // emptying and dropping another dir never moves the metadata log.
                props.push(("metadata.log.dir".into(), log_dirs[0].display().to_string()));
            }
            for (k, v) in &options.properties {
                props.retain(|(pk, _)| pk != k);
                let v = v
                    .replace("{id}", &id.to_string())
                    .replace("{ip}", &ip.to_string());
                props.push((k.clone(), v));
            }
            let text: String = props.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            let properties = dir.join(format!("node-{id}.properties"));
            std::fs::write(&properties, text)
                .with_context(|| format!("writing {}", properties.display()))?;
            let format_args = match (&initial_controllers, broker) {
                (None, _) => None,
                (Some(initial), true) => Some(format!("--initial-controllers {initial}")),
                (Some(_), false) => Some("--no-initial-controllers".to_string()),
            };
            nodes.push(KafkaNode {
                id,
                ip: *ip,
                properties,
                log_dirs,
                broker,
                format_args,
                log: dir.join(format!("node-{id}.log")),
                process: None,
            });
        }
        let mut cluster = KafkaCluster {
            nodes,
            cluster_id: new_cluster_id(),
            heap: options.heap,
            launcher,
            _logs: logs.clone(),
        };
        for i in 0..options.nodes {
            cluster.spawn_node(i)?;
        }
        cluster.wait_for_brokers(options.nodes).await?;
        Ok(cluster)
    }

    /// `ip1:9092,ip2:9092,…` of the running brokers.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.process.is_some() && n.broker)
            .map(KafkaNode::broker_addr)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn nodes(&self) -> &[KafkaNode] {
        &self.nodes
    }

    pub fn node(&self, id: i32) -> anyhow::Result<&KafkaNode> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .with_context(|| format!("no Kafka node {id}"))
    }

    /// PIDs of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(KafkaNode::pid).collect()
    }

    /// Stops one node (SIGTERM: a controlled shutdown), keeping its data.
    pub fn stop_node(&mut self, id: i32) -> anyhow::Result<()> {
        let node = self.index(id)?;
        if let Some(mut p) = self.nodes[node].process.take() {
            p.stop();
        }
        Ok(())
    }

    /// Starts a stopped node again on its data (or a spare controller for the first time) and
    /// waits until the cluster lists every running broker, or, for a controller-only node,
    /// until it listens on its controller port (joining the quorum is up to the caller to
    /// watch).
    pub async fn start_node(&mut self, id: i32) -> anyhow::Result<()> {
        let node = self.index(id)?;
        if self.nodes[node].process.is_none() {
            self.spawn_node(node)?;
        }
        if !self.nodes[node].broker {
            return self.wait_for_controller(node).await;
        }
        let running = self
            .nodes
            .iter()
            .filter(|n| n.process.is_some() && n.broker)
            .count();
        self.wait_for_brokers(running).await
    }

    fn index(&self, id: i32) -> anyhow::Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .with_context(|| format!("no Kafka node {id}"))
    }

    fn spawn_node(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        let mut cmd = Command::new(&self.launcher);
        cmd.arg(&node.properties)
            .env("KAFKA_CLUSTER_ID", &self.cluster_id)
            .env("KAFKA_HEAP_OPTS", &self.heap);
        // Used only while the node's storage is not formatted yet (kafka-node checks).
        if let Some(args) = &node.format_args {
            cmd.env("KAFKA_STORAGE_FORMAT_ARGS", args);
        }
        if let Some(dir) = node.log.parent() {
            cmd.env("KAFKA_LOG_DIR", dir);
        }
        let process = Process::spawn(
            &format!("kafka-{}", node.id),
            cmd,
            &node.log,
            Duration::from_secs(15),
        )?;
        self.nodes[i].process = Some(process);
        Ok(())
    }

    /// Waits until the controller-only node at `index` accepts connections on its controller
    /// port, failing early if it exits.
    async fn wait_for_controller(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[index];
        let addr = SocketAddr::from((node.ip, CONTROLLER_PORT));
        let what = format!("Kafka controller {} listening at {addr}", node.id);
        wait_for(
            &what,
            Duration::from_secs(120),
            Duration::from_millis(300),
            || {
                let exited = node.process.as_mut().map(Process::check_running);
                async move {
                    if let Some(Err(e)) = exited {
                        return Some(Err(e));
                    }
                    accepts(addr).await.then_some(Ok(()))
                }
            },
        )
        .await?
    }

    /// Waits until metadata (read with kcat, a real client) lists `count` brokers.
    async fn wait_for_brokers(&mut self, count: usize) -> anyhow::Result<()> {
        program("kcat")?;
        let bootstrap = self.bootstrap();
        let what = format!("{count} Kafka brokers registered at {bootstrap}");
        let nodes = &mut self.nodes;
        wait_for(
            &what,
            Duration::from_secs(120),
            Duration::from_millis(500),
            || {
                let exited = nodes
                    .iter_mut()
                    .filter_map(|n| n.process.as_mut())
                    .map(Process::check_running)
                    .find_map(Result::err);
                let bootstrap = bootstrap.clone();
                async move {
                    if let Some(e) = exited {
                        return Some(Err(e));
                    }
                    let out = kcat(
                        &["-b", &bootstrap, "-L", "-J", "-m", "2"],
                        None,
                        Duration::from_secs(10),
                    )
                    .await
                    .ok()?;
                    let md: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                    let brokers = md.get("brokers")?.as_array()?.len();
                    (brokers == count).then_some(Ok(()))
                }
            },
        )
        .await?
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        stop_all(self.nodes.iter_mut().filter_map(|n| n.process.as_mut()));
    }
}

/// Runs kcat (librdkafka's command-line client) with `args`, feeding it `stdin` if given, and
/// returns its output. A kcat that has not finished after `within` is killed and the call
/// fails: a client waiting on a broker that is gone must not hang a test.
pub async fn kcat(
    args: &[&str],
    stdin: Option<&[u8]>,
    within: Duration,
) -> anyhow::Result<std::process::Output> {
    let mut cmd = tokio::process::Command::new(program("kcat")?);
    cmd.args(args);
    run_with_stdin(cmd, stdin, within)
        .await
        .with_context(|| format!("kcat {}", args.join(" ")))
}

/// Runs `cmd` to its end with `stdin` as its input (none: /dev/null), its output captured,
/// killed if it runs longer than `within`.
pub async fn run_with_stdin(
    mut cmd: tokio::process::Command,
    stdin: Option<&[u8]>,
    within: Duration,
) -> anyhow::Result<std::process::Output> {
    use tokio::io::AsyncWriteExt;
    cmd.stdin(if stdin.is_some() {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    })
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    let run = async {
        let mut child = cmd.spawn().context("starting")?;
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(bytes).await.context("writing stdin")?;
        }
        child
            .wait_with_output()
            .await
            .context("waiting for the end")
    };
    tokio::time::timeout(within, run)
        .await
        .with_context(|| format!("did not finish within {within:?}"))?
}

/// A random KRaft cluster id: 16 bytes, URL-safe base64 without padding, as Kafka's own
/// `Uuid.randomUuid()` makes them (never starting with '-', which the tools would take for a
/// flag; never 0 or 1, Kafka's reserved ids).
pub fn new_cluster_id() -> String {
    random_kafka_uuid(|high, low| high == 0 && low < 2)
}

/// A random directory id, as Kafka's `DirectoryId.random()` makes them: like a cluster id,
/// and never with the high 64 bits zero and the low ones below 100 (reserved values).
pub fn new_directory_id() -> String {
    random_kafka_uuid(|high, low| high == 0 && low < 100)
}

/// A random Kafka Uuid in text form that is not `reserved(high 64 bits, low 64 bits)` and
/// does not start with '-'.
fn random_kafka_uuid(reserved: impl Fn(u64, u64) -> bool) -> String {
    let mut rng = rand::rng();
    loop {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        let value = u128::from_be_bytes(bytes);
        if reserved((value >> 64) as u64, value as u64) {
            continue;
        }
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        if !id.starts_with('-') {
            return id;
        }
    }
}
