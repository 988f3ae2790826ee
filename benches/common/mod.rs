//! Shared by the benchmarks that run `pier operator` against a real control plane
//! (`operator_scale.rs`, `operator_path.rs`): the chart installed for its RBAC, the operator as
//! a process authenticated as the chart's ServiceAccount, and its CPU and memory from `/proc`.
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
        let kubeconfig: PathBuf =
            plane.kubeconfig_for(SERVICE_ACCOUNT, Some("system:serviceaccounts"))?;
        let localhost = Ipv4Addr::LOCALHOST;
        let ports = pier_testenv::net::free_ports(localhost, 2)?;
        let (xds, admin): (SocketAddr, SocketAddr) =
            ((localhost, ports[0]).into(), (localhost, ports[1]).into());
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
