//! Shared by the benchmarks that run `pier operator` against a real control plane
//! (`operator_scale.rs`, `operator_path.rs`, `topics_scale.rs`): the chart installed for its
//! RBAC, the operator as a process authenticated as the chart's ServiceAccount (restartable on
//! the same xDS address), its CPU and memory from `/proc`, and Kafka's own request counters
//! from the brokers' JMX exporters.
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use pier_testenv::ControlPlane;
use serde_json::json;

pub const RELEASE_NS: &str = "pier-system";
/// The chart's ServiceAccount as a user: the test control plane's audit log records every
/// request of a ServiceAccount, reads included.
pub const SERVICE_ACCOUNT: &str = "system:serviceaccount:pier-system:pier";

/// The chart installed for real (its ServiceAccount, ClusterRoles, Roles and bindings), no
/// replica of its Deployment: the operator below runs as its ServiceAccount instead. Also the
/// Pod the operator says it is (its leader mark patches it), on no node that runs it.
pub async fn install_chart(plane: &ControlPlane) -> anyhow::Result<()> {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/pier");
    let home = tempfile::tempdir()?;
    let out = Command::new(pier_testenv::program("helm")?)
        .arg("--kubeconfig")
        .arg(plane.kubeconfig())
        .args(["install", "pier"])
        .arg(&chart)
        .args(["--namespace", RELEASE_NS, "--create-namespace"])
        .args([
            "--set",
            "replicaCount=0",
            "--set",
            "watchNamespaces={default}",
        ])
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .context("running helm")?;
    ensure!(
        out.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = plane.client();
    let _ = Api::<Namespace>::all(client.clone())
        .get(RELEASE_NS)
        .await?;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "pier-0", "labels": {"app.kubernetes.io/name": "pier"}},
        "spec": {"nodeName": "elsewhere", "serviceAccountName": "pier",
                 "containers": [{"name": "pier", "image": "pier"}]},
    }))?;
    Api::<Pod>::namespaced(client, RELEASE_NS)
        .create(&PostParams::default(), &pod)
        .await?;
    Ok(())
}

/// `pier operator` as the chart runs it (leader election with the chart's timings, JSON logs at
/// the default level), authenticated as the chart's ServiceAccount; xDS in plaintext.
/// The `pier` binary the operator runs as: `PIER_BENCH_OPERATOR_BIN` (`make bench` sets it to
/// the container image's static, stripped binary: what users run), else this build's.
pub fn operator_binary() -> String {
    std::env::var("PIER_BENCH_OPERATOR_BIN")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_pier").to_string())
}

/// Which binary [`operator_binary`] is, for a report.
pub fn operator_binary_described() -> String {
    let path = operator_binary();
    let size = std::fs::metadata(&path)
        .map(|m| format!("{:.1} MB", m.len() as f64 / 1e6))
        .unwrap_or_else(|_| "size unknown".into());
    if path == env!("CARGO_BIN_EXE_pier") {
        format!("this cargo build's `pier` ({size})")
    } else {
        format!("`{path}` ({size})")
    }
}

pub struct Operator {
    pub process: pier_testenv::Process,
    pub admin: SocketAddr,
    pub xds: SocketAddr,
    http: reqwest::Client,
}

impl Operator {
    pub fn start(plane: &ControlPlane, namespace: &str) -> anyhow::Result<Self> {
        Self::start_at(plane, namespace, None)
    }

    /// [`Self::start`] with the xDS server on `xds` (a free port when `None`): a process that
    /// replaces a stopped one serves where the cluster's Envoys dial, as after a restart. Its
    /// log is appended to the one before's.
    pub fn start_at(
        plane: &ControlPlane,
        namespace: &str,
        xds: Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
        let kubeconfig: PathBuf =
            plane.kubeconfig_for(SERVICE_ACCOUNT, Some("system:serviceaccounts"))?;
        let localhost = Ipv4Addr::LOCALHOST;
        let ports = pier_testenv::net::free_ports(localhost, 2)?;
        let (xds, admin): (SocketAddr, SocketAddr) = (
            xds.unwrap_or_else(|| (localhost, ports[0]).into()),
            (localhost, ports[1]).into(),
        );
        let pier = operator_binary();
        // A profiler to run it under (e.g. `heaptrack -o /tmp/pier`); its CPU and memory
        // figures are then the profiler's.
        let mut cmd = match std::env::var("PIER_BENCH_OPERATOR_WRAPPER") {
            Ok(wrapper) if !wrapper.trim().is_empty() => {
                let mut words = wrapper.split_whitespace();
                let mut c = Command::new(words.next().unwrap_or_default());
                c.args(words).arg(&pier);
                c
            }
            _ => Command::new(&pier),
        };
        cmd.arg("operator")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--namespace", namespace])
            .arg(format!("--xds-listen={xds}"))
            .arg(format!("--xds-address={xds}"))
            .arg(format!("--metrics-listen={admin}"))
            .args(["--log-format", "json"])
            .env("POD_NAME", "pier-0")
            .env("POD_NAMESPACE", RELEASE_NS)
            // The chart's level; `PIER_BENCH_OPERATOR_LOG` to look closer.
            .env(
                "RUST_LOG",
                std::env::var("PIER_BENCH_OPERATOR_LOG").unwrap_or_else(|_| "info".into()),
            );
        let log = plane.logs().sub("operators")?.join("pier-0.log");
        let process = pier_testenv::Process::spawn("pier-0", cmd, &log, Duration::from_secs(10))?;
        Ok(Self {
            process,
            admin,
            xds,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<String> {
        let r = self
            .http
            .get(format!("http://{}{path}", self.admin))
            .send()
            .await?;
        ensure!(r.status().is_success(), "{path}: {}", r.status());
        Ok(r.text().await?)
    }

    /// Its metrics, by series (`name{labels}`).
    pub async fn metrics(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        let text = self.get("/metrics").await?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect())
    }

    pub fn check_running(&mut self) -> anyhow::Result<()> {
        self.process.check_running()
    }

    /// User + system CPU seconds so far.
    pub fn cpu(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.process.pid()))?;
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("/proc/<pid>/stat")?
            .1
            .split_whitespace()
            .collect();
        // After the command: state is field 3; utime and stime are fields 14 and 15.
        let ticks =
            |i: usize| -> anyhow::Result<f64> { Ok(fields.get(i - 3).context("stat")?.parse()?) };
        // SAFETY: sysconf only reads a constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok((ticks(14)? + ticks(15)?) / hz)
    }

    /// (VmRSS, VmHWM) in bytes.
    pub fn memory(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.pid()))?;
        let kb = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .map(|v| v * 1024)
                .with_context(|| format!("{key} in /proc/<pid>/status"))
        };
        Ok((kb("VmRSS:")?, kb("VmHWM:")?))
    }

    pub fn stop(&mut self) {
        self.process.stop();
    }
}

/// Kafka's own count of requests by kind (the `request` label of
/// `kafka_network_requestmetrics_requests_total`, every version summed), over the JMX exporters
/// (`<Pod IP>:9404`) of cluster `name`'s broker Pods. The benches' equivalent of
/// `tests/topics.rs`' `kafka_requests`; only the kinds `monitoring/jmx-exporter.yaml` exports
/// are there.
pub async fn kafka_requests(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<BTreeMap<String, f64>> {
    use kube::api::ListParams;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("kafka.pier.dev/cluster={name},app.kubernetes.io/component=broker");
    let list = pods.list(&ListParams::default().labels(&selector)).await?;
    let ips: Vec<String> = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect();
    ensure!(
        !ips.is_empty(),
        "cluster {name} has no broker Pod with an address"
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut counts = BTreeMap::new();
    for ip in ips {
        let url = format!("http://{ip}:9404/metrics");
        let text = http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("scraping {url}"))?
            .text()
            .await?;
        for line in text.lines() {
            let Some(labels) = line.strip_prefix("kafka_network_requestmetrics_requests_total{")
            else {
                continue;
            };
            let Some(kind) = labels
                .split_once("request=\"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(kind, _)| kind)
            else {
                continue;
            };
            let value: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("a value in {line:?} of {url}"))?;
            *counts.entry(kind.to_string()).or_insert(0.0) += value;
        }
    }
    Ok(counts)
}

/// Kafka admin requests that change something, of those [`kafka_requests`] counts.
pub const KAFKA_ADMIN_WRITES: &[&str] = &[
    "CreateTopics",
    "DeleteTopics",
    "CreatePartitions",
    "IncrementalAlterConfigs",
    "AlterPartitionReassignments",
    "CreateAcls",
    "DeleteAcls",
    "AlterClientQuotas",
    "AlterUserScramCredentials",
];

/// `after - before` for every kind that moved.
pub fn request_deltas(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

/// The `p` quantile of `values` by nearest rank; `None` when empty.
pub fn percentile(values: &[Duration], p: f64) -> Option<Duration> {
    let mut v = values.to_vec();
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied()
}
