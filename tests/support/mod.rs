//! Shared by the integration tests that run the operator (`controller.rs`, `e2e.rs`,
//! `rolling.rs`, `leader.rs`, `scaling.rs`, `jbod.rs`): the operator in the test process or as
//! a real `pier operator` process, a control plane without a scheduler, the shipped examples,
//! small Pod and record helpers, and Kafka's own tools (TopicCommand, VerifiableProducer).
#![allow(dead_code)]
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use pier::controller::{self, Context};
use pier::reconcile::Settings;
use pier::xds::{ResourceType, SnapshotCache};

/// The operator (xDS server + controller) in this process; restartable.
pub struct Operator {
    client: Client,
    cache: Arc<SnapshotCache>,
    settings: Settings,
    /// With xDS over TLS: the Envoys' trust (cluster CAs registered per group) and the file
    /// of the serving certificate's CA.
    xds_tls: Option<(pier::xds::ClientTrust, std::path::PathBuf)>,
    namespace: String,
    /// The running controller's context (its counters and xDS cache).
    ctx: Arc<Context>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Operator {
    /// Starts the xDS server and the controller for `namespace`.
    pub async fn start(client: Client, namespace: &str) -> anyhow::Result<Self> {
        let xds_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let settings = Settings {
            xds_address: xds_listener.local_addr()?.to_string(),
            ..Settings::default()
        };
        Ok(Self::launch(
            client,
            namespace,
            xds_listener,
            settings,
            None,
        ))
    }

    /// [`Self::start`] with ADS over TLS and client certificates, as `pier operator
    /// --xds-tls-cert … --xds-server-ca …` serves it: a serving certificate for `localhost`
    /// from a CA of its own (files in `dir`); the Envoys dial `localhost:<port>` with the client
    /// certificate Pier issues them from their cluster's CA.
    pub async fn start_with_xds_tls(
        client: Client,
        namespace: &str,
        dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let ca = pier_testenv::pki::Ca::new("pier-xds-test-ca")?;
        let serving = ca.issue(&pier_testenv::pki::LeafSpec {
            common_name: "pier-xds",
            dns_names: &["localhost"],
            server: true,
            ..Default::default()
        })?;
        let (cert, key, ca_file) = (
            dir.join("xds.crt"),
            dir.join("xds.key"),
            dir.join("xds-ca.crt"),
        );
        std::fs::write(&cert, &serving.cert)?;
        std::fs::write(&key, &serving.key)?;
        std::fs::write(&ca_file, ca.cert_pem())?;
        let trust = pier::xds::ClientTrust::new(Vec::new())?;
        let tls = pier::xds::ServerTls::new(&cert, &key, trust.clone())?;
        // Both stacks: Envoy resolves `localhost` to ::1 first.
        let xds_listener = tokio::net::TcpListener::bind("[::]:0").await?;
        let settings = Settings {
            xds_address: format!("localhost:{}", xds_listener.local_addr()?.port()),
            xds_tls: true,
            ..Settings::default()
        };
        Ok(Self::launch(
            client,
            namespace,
            xds_listener,
            settings,
            Some((tls, trust, ca_file)),
        ))
    }

    /// Serves xDS on `xds_listener` (over TLS with `tls`: the serving certificate, the
    /// Envoys' trust and the file of the serving certificate's CA) and starts the controller.
    fn launch(
        client: Client,
        namespace: &str,
        xds_listener: tokio::net::TcpListener,
        settings: Settings,
        tls: Option<(
            Arc<pier::xds::ServerTls>,
            pier::xds::ClientTrust,
            std::path::PathBuf,
        )>,
    ) -> Self {
        // A test that set up its own subscriber first keeps it.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("pier=info,pier_testenv=info")
            .with_test_writer()
            .try_init();
        let cache = Arc::new(SnapshotCache::default());
        let (server_tls, xds_tls) = match tls {
            Some((server, trust, ca)) => (Some(server), Some((trust, ca))),
            None => (None, None),
        };
        tokio::spawn(pier::xds::serve_with(
            xds_listener,
            cache.clone(),
            Default::default(),
            server_tls,
            std::future::pending(),
        ));
        let ctx = Context::new(client.clone(), cache.clone(), settings.clone());
        let mut op = Operator {
            client,
            cache,
            settings,
            xds_tls,
            namespace: namespace.to_string(),
            ctx,
            task: None,
        };
        op.restart();
        op
    }

    /// Stops the controller and starts a fresh one: nothing survives but the cluster's state.
    pub fn restart(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            self.ctx = Context::new(
                self.client.clone(),
                self.cache.clone(),
                self.settings.clone(),
            );
        }
        if let Some((trust, ca)) = &self.xds_tls {
            let _ = self.ctx.xds_trust.set(trust.clone());
            let _ = self.ctx.xds_server_ca.set(ca.clone());
        }
        self.task = Some(tokio::spawn(controller::run(
            self.ctx.clone(),
            Some(self.namespace.clone()),
            std::future::pending(),
        )));
    }

    /// Write calls the running controller made to the API server.
    pub fn writes(&self) -> u64 {
        self.ctx.writes.get()
    }

    /// Reconciles the running controller ran.
    pub fn reconciles(&self) -> u64 {
        self.ctx.reconciles.get()
    }

    /// Waits until the controller ran two reconciles in a row that wrote nothing, and returns
    /// the write count then. Reconciles must keep coming (a roll, Pods not ready, Envoys that
    /// did not ACK); the deadline bounds the wait.
    pub async fn wait_steady(&self, within: std::time::Duration) -> anyhow::Result<u64> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (writes, reconciles) = (self.writes(), self.reconciles());
            pier_testenv::wait_for(
                "two more reconciles",
                deadline.saturating_duration_since(tokio::time::Instant::now()),
                std::time::Duration::from_millis(100),
                || async { (self.reconciles() >= reconciles + 2).then_some(()) },
            )
            .await?;
            if self.writes() == writes {
                return Ok(writes);
            }
        }
    }

    /// The controller's metrics in Prometheus' text format.
    pub fn metrics(&self) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        self.ctx.register(&mut registry);
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }

    /// Listener names of a node group's xDS snapshot.
    pub fn listeners(&self, group: &str) -> Vec<String> {
        self.ctx
            .cache
            .snapshot(group)
            .map(|s| {
                s.get(ResourceType::Listener)
                    .resources
                    .keys()
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// The Pod reports Ready.
pub fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Everything in `topic` right now, one record per line, read with kcat from the beginning
/// through `bootstrap`; `None` when kcat fails.
pub async fn read_topic(bootstrap: &str, topic: &str) -> Option<String> {
    let args = [
        "-b",
        bootstrap,
        "-C",
        "-t",
        topic,
        "-o",
        "beginning",
        "-e",
        "-q",
    ];
    // Bounded: a kcat waiting on a broker that is gone must not hang the test.
    let out = pier_testenv::kcat(&args, None, std::time::Duration::from_secs(60))
        .await
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).to_string())
}

/// A control plane without a scheduler (nothing runs Pods): for tests of the operator alone.
pub async fn start_plane(name: &str) -> anyhow::Result<pier_testenv::ControlPlane> {
    let logs = pier_testenv::LogDir::for_current_test(name)?;
    pier_testenv::ControlPlane::start_with(
        &logs,
        pier_testenv::control_plane::ControlPlaneOptions {
            scheduler: false,
            ..Default::default()
        },
    )
    .await
}

/// A KafkaCluster from `examples/`.
pub fn example(file: &str) -> anyhow::Result<pier::api::KafkaCluster> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(file);
    Ok(serde_yaml_ng::from_str(&std::fs::read_to_string(path)?)?)
}

/// Leader-election timings for operator processes in tests: short, so takeovers take seconds;
/// the renew deadline stays below the lease duration as in production.
pub const LEASE_DURATION: &str = "6s";
pub const RENEW_DEADLINE: &str = "4s";
pub const RETRY_PERIOD: &str = "500ms";

/// How one `pier operator` process is started.
pub struct OperatorArgs<'a> {
    /// Its name in the test's logs (`operators/<name>.log`).
    pub name: &'a str,
    /// `None`: POD_NAME unset, the identity is generated.
    pub pod_name: Option<&'a str>,
    /// Run as PID 1 of its own PID namespace, as in a container.
    pub pid_namespace: bool,
    pub kubeconfig: &'a std::path::Path,
    /// The watched namespace, also the Lease's unless `pod_namespace` is given.
    pub namespace: &'a str,
    /// `POD_NAMESPACE`, the namespace of the operator's own Pod and Lease; `None`: `namespace`.
    pub pod_namespace: Option<&'a str>,
    /// Where its xDS server listens; `None`: a free port. A restarted operator passes the
    /// address of the one before, which its Envoys dial.
    pub xds_listen: Option<std::net::SocketAddr>,
    /// What the Envoy bootstrap says to dial; `None`: `xds_listen`.
    pub xds_address: Option<&'a str>,
}

/// `pier operator` as a process, as it runs in a Pod (leader election on).
pub struct OperatorProcess {
    pub process: pier_testenv::Process,
    pub metrics: std::net::SocketAddr,
    pub xds: std::net::SocketAddr,
}

impl OperatorProcess {
    pub fn start(
        plane: &pier_testenv::ControlPlane,
        args: OperatorArgs<'_>,
    ) -> anyhow::Result<Self> {
        Self::start_with_args(plane, args, &[])
    }

    /// [`Self::start`] with further `pier operator` arguments.
    pub fn start_with_args(
        plane: &pier_testenv::ControlPlane,
        args: OperatorArgs<'_>,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        let localhost = std::net::Ipv4Addr::LOCALHOST;
        let ports = pier_testenv::net::free_ports(localhost, 2)?;
        let xds = args
            .xds_listen
            .unwrap_or_else(|| (localhost, ports[0]).into());
        let metrics: std::net::SocketAddr = (localhost, ports[1]).into();
        let pier = env!("CARGO_BIN_EXE_pier");
        let mut cmd = if args.pid_namespace {
            // A user namespace makes a PID namespace possible without root.
            let mut c = std::process::Command::new("unshare");
            c.args([
                "--user",
                "--map-root-user",
                "--pid",
                "--fork",
                "--kill-child",
                "--",
                pier,
            ]);
            c
        } else {
            std::process::Command::new(pier)
        };
        let xds_address = args
            .xds_address
            .map(str::to_string)
            .unwrap_or_else(|| xds.to_string());
        cmd.arg("operator")
            .arg("--kubeconfig")
            .arg(args.kubeconfig)
            .args(["--namespace", args.namespace])
            .arg(format!("--xds-listen={xds}"))
            .arg(format!("--xds-address={xds_address}"))
            .arg(format!("--metrics-listen={metrics}"))
            .args(["--log-format", "json"])
            .arg(format!("--leader-election-lease-duration={LEASE_DURATION}"))
            .arg(format!("--leader-election-renew-deadline={RENEW_DEADLINE}"))
            .arg(format!("--leader-election-retry-period={RETRY_PERIOD}"))
            .args(extra)
            .env(
                "POD_NAMESPACE",
                args.pod_namespace.unwrap_or(args.namespace),
            )
            .env("RUST_LOG", "info,pier=debug");
        match args.pod_name {
            Some(pod) => cmd.env("POD_NAME", pod),
            None => cmd.env_remove("POD_NAME"),
        };
        let log = plane
            .logs()
            .sub("operators")?
            .join(format!("{}.log", args.name));
        let process =
            pier_testenv::Process::spawn(args.name, cmd, &log, std::time::Duration::from_secs(10))?;
        Ok(Self {
            process,
            metrics,
            xds,
        })
    }

    /// It leads (`/leader`).
    pub async fn leading(&self) -> bool {
        self.admin_ok("/leader").await
    }

    /// It serves its role, leading or standing by (`/readyz`, its readiness probe).
    pub async fn ready(&self) -> bool {
        self.admin_ok("/readyz").await
    }

    async fn admin_ok(&self, path: &str) -> bool {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(2))
            .build();
        let Ok(client) = client else { return false };
        match client
            .get(format!("http://{}{path}", self.metrics))
            .send()
            .await
        {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    /// Waits for the process to exit.
    pub async fn exited(
        &mut self,
        within: std::time::Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.process.try_exit() {
                return Ok(status);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{} did not exit within {within:?}; log:\n{}",
                self.process.name(),
                self.process.log_tail(20)
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// A broker Pod as the tests look at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerPod {
    pub uid: String,
    pub ready: bool,
    /// Empty until the Pod has an IP.
    pub ip: String,
}

/// The broker Pods of cluster `name`, by broker id; terminating ones left out.
pub async fn broker_pods(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<std::collections::BTreeMap<i32, BrokerPod>> {
    use kube::ResourceExt;
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), namespace);
    let selector = format!("kafka.pier.dev/cluster={name},app.kubernetes.io/component=broker");
    let list = pods
        .list(&kube::api::ListParams::default().labels(&selector))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let id = p.labels().get("kafka.pier.dev/broker-id")?.parse().ok()?;
            let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone());
            Some((
                id,
                BrokerPod {
                    uid: p.metadata.uid.clone().unwrap_or_default(),
                    ready: ready(&p),
                    ip: ip.unwrap_or_default(),
                },
            ))
        })
        .collect())
}

/// An admin client on the Ready brokers' Pod IPs (port 9092), as the operator uses.
pub async fn broker_admin(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<pier::kafka::AdminClient> {
    let nodes: std::collections::BTreeMap<i32, String> = broker_pods(client, namespace, name)
        .await?
        .into_iter()
        .filter(|(_, b)| b.ready && !b.ip.is_empty())
        .map(|(id, b)| (id, format!("{}:9092", b.ip)))
        .collect();
    Ok(pier::kafka::AdminClient::new(
        nodes,
        pier::kafka::AdminOptions::default(),
    ))
}

/// The cluster's status; empty while Pier has written none.
pub async fn cluster_status(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<pier::api::KafkaClusterStatus> {
    Ok(
        kube::Api::<pier::api::KafkaCluster>::namespaced(client.clone(), namespace)
            .get(name)
            .await?
            .status
            .unwrap_or_default(),
    )
}

/// Kafka's own tool, on the Kafka classpath dev/setup installed.
pub fn kafka_tool(class: &str) -> anyhow::Result<tokio::process::Command> {
    let mut cmd = tokio::process::Command::new(pier_testenv::program("kafka-node")?);
    cmd.args(["class", class]);
    cmd.env("KAFKA_HEAP_OPTS", "-Xms64m -Xmx256m");
    Ok(cmd)
}

/// Creates a topic with Kafka's TopicCommand.
pub async fn create_topic(bootstrap: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = kafka_tool("org.apache.kafka.tools.TopicCommand")?
        .args(["--bootstrap-server", bootstrap, "--create"])
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

/// Kafka's VerifiableProducer: acks=all, idempotent, a steady pace, every send's outcome on
/// stdout as JSON.
pub struct VerifiableProducer {
    child: tokio::process::Child,
    out: std::path::PathBuf,
}

impl VerifiableProducer {
    /// Produces to `topic` at 100 records/s until finished.
    pub fn start(
        logs: &pier_testenv::LogDir,
        bootstrap: &str,
        topic: &str,
    ) -> anyhow::Result<Self> {
        Self::start_with(logs, "verifiable-producer", bootstrap, topic, "", None)
    }

    /// [`Self::start`] with extra producer properties (TLS settings, say) and JVM options (a
    /// hosts file), its files named after `name`.
    pub fn start_with(
        logs: &pier_testenv::LogDir,
        name: &str,
        bootstrap: &str,
        topic: &str,
        extra_properties: &str,
        jvm_options: Option<&str>,
    ) -> anyhow::Result<Self> {
        let config = logs.path().join(format!("{name}.properties"));
        std::fs::write(
            &config,
            format!(
                "enable.idempotence=true\nacks=all\nretries=2147483647\nmax.in.flight.requests.per.connection=5\ndelivery.timeout.ms=120000\nreconnect.backoff.max.ms=1000\n{extra_properties}"
            ),
        )?;
        let out = logs.path().join(format!("{name}.jsonl"));
        let mut tool = kafka_tool("org.apache.kafka.tools.VerifiableProducer")?;
        if let Some(opts) = jvm_options {
            tool.env("KAFKA_JVM_OPTS", opts);
        }
        let child = tool
            .args(["--bootstrap-server", bootstrap, "--topic", topic])
            .args(["--throughput", "100", "--acks", "-1"])
            .arg("--producer.config")
            .arg(&config)
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(
                logs.path().join(format!("{name}.stderr")),
            )?)
            .kill_on_drop(true)
            .spawn()?;
        Ok(VerifiableProducer { child, out })
    }

    /// (acked values, failed sends) so far.
    pub fn outcomes(&self) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let text = std::fs::read_to_string(&self.out)?;
        let (mut acked, mut failed) = (Vec::new(), Vec::new());
        for line in text.lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            match event["name"].as_str() {
                Some("producer_send_success") => {
                    acked.push(event["value"].as_str().unwrap_or_default().to_string())
                }
                Some("producer_send_error") => failed.push(line.to_string()),
                _ => {}
            }
        }
        Ok((acked, failed))
    }

    pub async fn wait_acked(&self, at_least: usize) -> anyhow::Result<()> {
        pier_testenv::wait_for(
            &format!("{at_least} records acked"),
            Duration::from_secs(120),
            Duration::from_millis(500),
            || async { (self.outcomes().ok()?.0.len() >= at_least).then_some(()) },
        )
        .await
    }

    /// Stops it (SIGTERM flushes what is in flight); returns the acked values.
    pub async fn finish(mut self) -> anyhow::Result<Vec<String>> {
        if let Some(pid) = self.child.id() {
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()?;
        }
        tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await??;
        let (acked, failed) = self.outcomes()?;
        // A send the tool's loop begins while SIGTERM closes its producer was never accepted:
        // the stop, not a lost record.
        let failed: Vec<&String> = failed
            .iter()
            .filter(|f| !f.contains("Cannot perform operation after producer has been closed"))
            .collect();
        anyhow::ensure!(failed.is_empty(), "failed sends: {failed:?}");
        Ok(acked)
    }
}

/// Kafka's own count of requests of these kinds (`CreateTopics`, `DescribeConfigs`, …) over
/// every broker of a cluster, from their JMX exporters (port 9404): what reached Kafka, not
/// what Pier says it sent.
pub async fn broker_requests(
    client: &Client,
    namespace: &str,
    name: &str,
    kinds: &[&str],
) -> anyhow::Result<f64> {
    use anyhow::Context as _;
    let pods = broker_pods(client, namespace, name).await?;
    let http = reqwest::Client::new();
    let mut total = 0.0;
    for pod in pods.values() {
        let text = http
            .get(format!("http://{}:9404/metrics", pod.ip))
            .timeout(Duration::from_secs(30))
            .send()
            .await?
            .text()
            .await?;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("kafka_network_requestmetrics_requests_total{")
            else {
                continue;
            };
            if kinds
                .iter()
                .any(|k| rest.contains(&format!("request=\"{k}\"")))
            {
                total += line.rsplit(' ').next().context("a value")?.parse::<f64>()?;
            }
        }
    }
    Ok(total)
}

/// A hosts file naming every SNI name (`bootstrap.<domain>`, `broker-<id>.<domain>` for ids
/// `0..brokers`) of `domains` after Envoy's address (the LoadBalancer's, loopback).
pub fn sni_hosts_file(
    logs: &pier_testenv::LogDir,
    domains: &[&str],
    brokers: i32,
) -> anyhow::Result<std::path::PathBuf> {
    let mut names = Vec::new();
    for domain in domains {
        names.push(format!("bootstrap.{domain}"));
        names.extend((0..brokers).map(|id| format!("broker-{id}.{domain}")));
    }
    let path = logs.path().join("hosts");
    std::fs::write(&path, format!("127.0.0.1 localhost {}\n", names.join(" ")))?;
    Ok(path)
}

/// kcat as a user outside the cluster runs it: it resolves the SNI names through a hosts
/// file of its own (a private mount namespace; librdkafka has no resolver setting).
pub async fn kcat_with_hosts<S: AsRef<std::ffi::OsStr>>(
    hosts: &std::path::Path,
    args: &[S],
    stdin: Option<&[u8]>,
    within: Duration,
) -> anyhow::Result<std::process::Output> {
    let mut cmd = tokio::process::Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
        .arg(hosts)
        .arg(pier_testenv::program("kcat")?)
        .args(args);
    pier_testenv::kafka::run_with_stdin(cmd, stdin, within).await
}
