//! A real Kubernetes control plane: etcd, kube-apiserver (client-certificate auth, RBAC),
//! kube-controller-manager (garbage collector, namespace, PV binder, …) and kube-scheduler.
//!
//! There is no kubelet: Nodes are whatever a test (or Pier's dev node agent) registers.
//! ServiceAccount admission is off, so Pods neither wait for a namespace's `default` account
//! nor get token volumes mounted; RBAC is on, and the admin client is in `system:masters`.
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Deserialize;

use crate::net::free_ports;
use crate::paths::{LogDir, program};
use crate::pki::{Ca, LeafSpec, key_pair_pem};
use crate::process::{Process, stop_all};
use crate::wait_for;

/// Which parts to run besides etcd and kube-apiserver.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    pub controller_manager: bool,
    pub scheduler: bool,
    /// Install the CRDs found in the repository's `crds/` directory.
    pub install_crds: bool,
}

impl Default for ControlPlaneOptions {
    fn default() -> Self {
        Self {
            controller_manager: true,
            scheduler: true,
            install_crds: true,
        }
    }
}

/// A running control plane. Dropping it stops every process.
pub struct ControlPlane {
    // Field order is drop order: clients of the apiserver first, etcd last.
    scheduler: Option<Process>,
    controller_manager: Option<Process>,
    apiserver: Process,
    etcd: Process,
    client: kube::Client,
    kubeconfig: PathBuf,
    server_url: String,
    logs: Arc<LogDir>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server_url", &self.server_url)
            .field("kubeconfig", &self.kubeconfig)
            .field("pids", &self.pids())
            .finish_non_exhaustive()
    }
}

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

impl ControlPlane {
    /// Starts everything with default options and waits until it serves.
    pub async fn start(logs: &Arc<LogDir>) -> anyhow::Result<Self> {
        Self::start_with(logs, ControlPlaneOptions::default()).await
    }

    pub async fn start_with(
        logs: &Arc<LogDir>,
        options: ControlPlaneOptions,
    ) -> anyhow::Result<Self> {
        let dir = logs.sub("control-plane")?;
        let ports = free_ports(LOOPBACK, 3)?;
        let (etcd_client, etcd_peer, apiserver_port) = (ports[0], ports[1], ports[2]);

        let etcd = start_etcd(logs, &dir, etcd_client, etcd_peer)?;
        let etcd_url = format!("http://{LOOPBACK}:{etcd_client}");
        let http = reqwest::Client::new();
        let mut etcd = etcd;
        wait_for(
            "etcd /health",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let check = etcd.check_running();
                let req = http.get(format!("{etcd_url}/health")).send();
                async move {
                    if let Err(e) = check {
                        return Some(Err(e));
                    }
                    match req.await {
                        Ok(r) if r.status().is_success() => Some(Ok(())),
                        _ => None,
                    }
                }
            },
        )
        .await??;

        let files = write_pki(&dir)?;
        let server_url = format!("https://{LOOPBACK}:{apiserver_port}");
        let kubeconfig = dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig, &server_url, &files)?;

        let mut cmd = Command::new(program("kube-apiserver")?);
        cmd.args([
            format!("--etcd-servers={etcd_url}"),
            format!("--bind-address={LOOPBACK}"),
            format!("--advertise-address={LOOPBACK}"),
            format!("--secure-port={apiserver_port}"),
            // Endpoints may not hold loopback addresses, so the apiserver must not publish its own.
            "--endpoint-reconciler-type=none".into(),
            format!("--tls-cert-file={}", files.apiserver_cert.display()),
            format!("--tls-private-key-file={}", files.apiserver_key.display()),
            format!("--client-ca-file={}", files.ca_cert.display()),
            "--authorization-mode=Node,RBAC".into(),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            format!("--service-account-issuer={server_url}"),
            format!("--service-account-key-file={}", files.sa_pub.display()),
            format!(
                "--service-account-signing-key-file={}",
                files.sa_key.display()
            ),
            "--disable-admission-plugins=ServiceAccount".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
        ]);
        let mut apiserver = Process::spawn(
            "kube-apiserver",
            cmd,
            &dir.join("kube-apiserver.log"),
            Duration::from_secs(5),
        )?;

        let config = kube::Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&kubeconfig)?,
            &KubeConfigOptions::default(),
        )
        .await
        .context("loading the generated kubeconfig")?;
        let client = kube::Client::try_from(config).context("building the kube client")?;
        wait_for(
            "kube-apiserver /readyz",
            Duration::from_secs(90),
            Duration::from_millis(250),
            || {
                let check = apiserver.check_running();
                let client = client.clone();
                async move {
                    if let Err(e) = check {
                        return Some(Err(e));
                    }
                    let req = http::Request::get("/readyz").body(Vec::new()).ok()?;
                    match client.request_text(req).await {
                        Ok(body) if body.trim() == "ok" => Some(Ok(())),
                        _ => None,
                    }
                }
            },
        )
        .await??;

        let controller_manager = if options.controller_manager {
            let mut cmd = Command::new(program("kube-controller-manager")?);
            cmd.args([
                format!("--kubeconfig={}", kubeconfig.display()),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                format!(
                    "--service-account-private-key-file={}",
                    files.sa_key.display()
                ),
                format!("--root-ca-file={}", files.ca_cert.display()),
                format!("--cluster-signing-cert-file={}", files.ca_cert.display()),
                format!("--cluster-signing-key-file={}", files.ca_key.display()),
                "--use-service-account-credentials=false".into(),
                "--controllers=*".into(),
            ]);
            Some(Process::spawn(
                "kube-controller-manager",
                cmd,
                &dir.join("kube-controller-manager.log"),
                Duration::from_secs(5),
            )?)
        } else {
            None
        };
        let scheduler = if options.scheduler {
            let mut cmd = Command::new(program("kube-scheduler")?);
            cmd.args([
                format!("--kubeconfig={}", kubeconfig.display()),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
            ]);
            Some(Process::spawn(
                "kube-scheduler",
                cmd,
                &dir.join("kube-scheduler.log"),
                Duration::from_secs(5),
            )?)
        } else {
            None
        };

        let mut plane = ControlPlane {
            scheduler,
            controller_manager,
            apiserver,
            etcd,
            client,
            kubeconfig,
            server_url,
            logs: logs.clone(),
        };
        if plane.controller_manager.is_some() {
            plane.wait_for_controller_manager().await?;
        }
        if options.install_crds {
            plane.install_crds(&repo_crds_dir()).await?;
        }
        Ok(plane)
    }

    /// A client with cluster-admin rights.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A kubeconfig file for the admin user (certificates embedded).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    pub fn logs(&self) -> &Arc<LogDir> {
        &self.logs
    }

    /// PIDs of every process of this control plane.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.etcd.pid(), self.apiserver.pid()];
        pids.extend(self.controller_manager.as_ref().map(Process::pid));
        pids.extend(self.scheduler.as_ref().map(Process::pid));
        pids
    }

    /// Fails (with the log tail) if any process of the control plane has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        self.etcd.check_running()?;
        self.apiserver.check_running()?;
        if let Some(p) = &mut self.controller_manager {
            p.check_running()?;
        }
        if let Some(p) = &mut self.scheduler {
            p.check_running()?;
        }
        Ok(())
    }

    /// Applies every CRD in the YAML files of `dir` (server-side apply) and waits until each is
    /// Established. A missing directory means no CRDs.
    pub async fn install_crds(&self, dir: &Path) -> anyhow::Result<Vec<String>> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                .collect(),
            Err(_) => return Ok(Vec::new()),
        };
        files.sort();
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let mut names = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                let value = serde_yaml_ng::Value::deserialize(doc)
                    .with_context(|| format!("parsing {}", file.display()))?;
                if value.is_null() {
                    continue;
                }
                let crd: CustomResourceDefinition =
                    serde_yaml_ng::from_value(value).with_context(|| {
                        format!("{} is not a CustomResourceDefinition", file.display())
                    })?;
                let name = crd.metadata.name.clone().context("CRD without a name")?;
                api.patch(
                    &name,
                    &PatchParams::apply("pier-testenv").force(),
                    &Patch::Apply(&crd),
                )
                .await
                .with_context(|| format!("applying CRD {name} from {}", file.display()))?;
                names.push(name);
            }
        }
        for name in &names {
            let api = api.clone();
            wait_for(
                &format!("CRD {name} Established"),
                Duration::from_secs(30),
                Duration::from_millis(200),
                || {
                    let api = api.clone();
                    async move {
                        let crd = api.get(name).await.ok()?;
                        let established = crd
                            .status?
                            .conditions?
                            .iter()
                            .any(|c| c.type_ == "Established" && c.status == "True");
                        established.then_some(())
                    }
                },
            )
            .await?;
        }
        Ok(names)
    }

    /// The controller-manager is working once its service-account controller has created the
    /// `default` account of the `default` namespace.
    async fn wait_for_controller_manager(&mut self) -> anyhow::Result<()> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), "default");
        let kcm = self
            .controller_manager
            .as_mut()
            .context("no controller-manager")?;
        wait_for(
            "kube-controller-manager to create the default ServiceAccount",
            Duration::from_secs(90),
            Duration::from_millis(250),
            || {
                let check = kcm.check_running();
                let api = api.clone();
                async move {
                    if let Err(e) = check {
                        return Some(Err(e));
                    }
                    api.get_opt("default").await.ok()?.map(|_| Ok(()))
                }
            },
        )
        .await?
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Clients go first so they do not log errors about a vanished apiserver.
        stop_all(
            self.scheduler
                .iter_mut()
                .chain(self.controller_manager.iter_mut()),
        );
        self.apiserver.stop();
        self.etcd.stop();
    }
}

/// The repository's `crds/` directory.
pub fn repo_crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds")
}

fn start_etcd(logs: &LogDir, dir: &Path, client: u16, peer: u16) -> anyhow::Result<Process> {
    let data = logs.data("etcd")?;
    let mut cmd = Command::new(program("etcd")?);
    cmd.args([
        "--name=pier-test".to_string(),
        format!("--data-dir={}", data.display()),
        format!("--listen-client-urls=http://{LOOPBACK}:{client}"),
        format!("--advertise-client-urls=http://{LOOPBACK}:{client}"),
        format!("--listen-peer-urls=http://{LOOPBACK}:{peer}"),
        format!("--initial-advertise-peer-urls=http://{LOOPBACK}:{peer}"),
        format!("--initial-cluster=pier-test=http://{LOOPBACK}:{peer}"),
        // Test data is throwaway: fsync only slows every write down.
        "--unsafe-no-fsync".into(),
        "--log-level=warn".into(),
    ]);
    Process::spawn("etcd", cmd, &dir.join("etcd.log"), Duration::from_secs(5))
}

struct PkiFiles {
    ca_cert: PathBuf,
    ca_key: PathBuf,
    apiserver_cert: PathBuf,
    apiserver_key: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
    sa_key: PathBuf,
    sa_pub: PathBuf,
}

fn write_pki(dir: &Path) -> anyhow::Result<PkiFiles> {
    let ca = Ca::new("pier-test-ca")?;
    let apiserver = ca.issue(&LeafSpec {
        common_name: "kube-apiserver",
        dns_names: &[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
        ],
        ips: &[
            IpAddr::V4(LOOPBACK),
            IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)),
        ],
        server: true,
        ..LeafSpec::default()
    })?;
    let admin = ca.issue(&LeafSpec {
        common_name: "admin",
        organization: Some("system:masters"),
        client: true,
        ..LeafSpec::default()
    })?;
    let ca_pem = ca.cert_and_key();
    let files = PkiFiles {
        ca_cert: dir.join("ca.crt"),
        ca_key: dir.join("ca.key"),
        apiserver_cert: dir.join("apiserver.crt"),
        apiserver_key: dir.join("apiserver.key"),
        admin_cert: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        sa_key: dir.join("sa.key"),
        sa_pub: dir.join("sa.pub"),
    };
    let (sa_key, sa_pub) = key_pair_pem()?;
    for (path, text) in [
        (&files.ca_cert, &ca_pem.cert),
        (&files.ca_key, &ca_pem.key),
        (&files.apiserver_cert, &apiserver.cert),
        (&files.apiserver_key, &apiserver.key),
        (&files.admin_cert, &admin.cert),
        (&files.admin_key, &admin.key),
        (&files.sa_key, &sa_key),
        (&files.sa_pub, &sa_pub),
    ] {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(files)
}

fn write_kubeconfig(path: &Path, server: &str, files: &PkiFiles) -> anyhow::Result<()> {
    let b64 = |p: &Path| -> anyhow::Result<String> {
        Ok(base64::engine::general_purpose::STANDARD.encode(std::fs::read(p)?))
    };
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: pier-test
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: pier-test
  context: {{cluster: pier-test, user: admin, namespace: default}}
current-context: pier-test
",
        ca = b64(&files.ca_cert)?,
        cert = b64(&files.admin_cert)?,
        key = b64(&files.admin_key)?,
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
