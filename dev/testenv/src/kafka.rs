//! A real Apache Kafka cluster in KRaft mode: N combined broker+controller nodes, each on its
//! own loopback address with the usual ports (9092 broker, 9093 controller), started through
//! the `kafka-node` launcher that `dev/setup` installs.
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use rand::RngCore;

use crate::net::loopback_ips;
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
    /// certificates. Empty: picked here.
    pub ips: Vec<Ipv4Addr>,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            properties: Vec::new(),
            heap: "-Xms256m -Xmx512m".to_string(),
            log_dirs: 1,
            ips: Vec::new(),
        }
    }
}

/// One node of the cluster.
#[derive(Debug)]
pub struct KafkaNode {
    pub id: i32,
    pub ip: Ipv4Addr,
    pub properties: PathBuf,
    /// Its `log.dirs`, in order.
    pub log_dirs: Vec<PathBuf>,
    log: PathBuf,
    process: Option<Process>,
}

impl KafkaNode {
    /// `ip:9092`.
    pub fn broker_addr(&self) -> String {
        format!("{}:{BROKER_PORT}", self.ip)
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }
}

/// A running cluster. Dropping it stops every node.
#[derive(Debug)]
pub struct KafkaCluster {
    nodes: Vec<KafkaNode>,
    cluster_id: String,
    heap: String,
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
        program("kafka-node")?;
        let dir = logs.sub("kafka")?;
        let ips = if options.ips.is_empty() {
            loopback_ips(options.nodes, &[BROKER_PORT, CONTROLLER_PORT])?
        } else if options.ips.len() == options.nodes {
            options.ips.clone()
        } else {
            bail!(
                "{} addresses given for {} Kafka nodes",
                options.ips.len(),
                options.nodes
            );
        };
        let voters = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| format!("{}@{ip}:{CONTROLLER_PORT}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let rf = options.nodes.min(3);
        let min_isr = options.nodes.min(2);
        let mut nodes = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            let id = i as i32 + 1;
            // The first dir keeps the name a single-dir node has always had.
            let log_dirs = (0..options.log_dirs)
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
            let mut props = vec![
                ("process.roles".to_string(), "broker,controller".to_string()),
                ("node.id".into(), id.to_string()),
                ("controller.quorum.voters".into(), voters.clone()),
                (
                    "listeners".into(),
                    format!("PLAINTEXT://{ip}:{BROKER_PORT},CONTROLLER://{ip}:{CONTROLLER_PORT}"),
                ),
                (
                    "advertised.listeners".into(),
                    format!("PLAINTEXT://{ip}:{BROKER_PORT}"),
                ),
                ("controller.listener.names".into(), "CONTROLLER".into()),
                ("inter.broker.listener.name".into(), "PLAINTEXT".into()),
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
            ];
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
            nodes.push(KafkaNode {
                id,
                ip: *ip,
                properties,
                log_dirs,
                log: dir.join(format!("node-{id}.log")),
                process: None,
            });
        }
        let mut cluster = KafkaCluster {
            nodes,
            cluster_id: new_cluster_id(),
            heap: options.heap,
            _logs: logs.clone(),
        };
        for i in 0..cluster.nodes.len() {
            cluster.spawn_node(i)?;
        }
        cluster.wait_for_brokers(cluster.nodes.len()).await?;
        Ok(cluster)
    }

    /// `ip1:9092,ip2:9092,…` of the running nodes.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.process.is_some())
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

    /// Starts a stopped node again on its data and waits until the cluster lists every running
    /// node as a broker.
    pub async fn start_node(&mut self, id: i32) -> anyhow::Result<()> {
        let node = self.index(id)?;
        if self.nodes[node].process.is_none() {
            self.spawn_node(node)?;
        }
        let running = self.nodes.iter().filter(|n| n.process.is_some()).count();
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
        let mut cmd = Command::new(program("kafka-node")?);
        cmd.arg(&node.properties)
            .env("KAFKA_CLUSTER_ID", &self.cluster_id)
            .env("KAFKA_HEAP_OPTS", &self.heap);
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
/// `Uuid.randomUuid()` makes them (never starting with '-', which the tools would take for a flag).
pub fn new_cluster_id() -> String {
    let mut rng = rand::rng();
    loop {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        if !id.starts_with('-') && bytes.iter().any(|b| *b != 0) {
            return id;
        }
    }
}
