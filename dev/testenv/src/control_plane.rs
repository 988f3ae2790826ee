//! A real Kubernetes control plane: etcd, kube-apiserver (client-certificate auth, RBAC),
//! kube-controller-manager (garbage collector, namespace, PV binder, …) and kube-scheduler.
//!
//! There is no kubelet: Nodes are whatever a test (or Pier's dev node agent) registers.
//! ServiceAccount admission is off, so Pods neither wait for a namespace's `default` account
//! nor get token volumes mounted; RBAC is on, and the admin client is in `system:masters`.
//! Further users get client certificates of the same CA ([`ControlPlane::kubeconfig_for`]).
//!
//! The apiserver writes an audit log of every write request (Metadata level), so a test can
//! count who wrote what between two points ([`ControlPlane::audit_mark`],
//! [`ControlPlane::audit_writes`]).
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
    ca: Ca,
    ca_cert: PathBuf,
    audit_log: PathBuf,
    dir: PathBuf,
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

        let (ca, files) = write_pki(&dir)?;
        let audit_policy = dir.join("audit-policy.yaml");
        std::fs::write(&audit_policy, AUDIT_POLICY)
            .with_context(|| format!("writing {}", audit_policy.display()))?;
        let audit_log = dir.join("audit.log");
        let server_url = format!("https://{LOOPBACK}:{apiserver_port}");
        let kubeconfig = dir.join("kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            &server_url,
            &std::fs::read(&files.ca_cert)?,
            "admin",
            &std::fs::read(&files.admin_cert)?,
            &std::fs::read(&files.admin_key)?,
        )?;

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
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
            format!("--audit-policy-file={}", audit_policy.display()),
            format!("--audit-log-path={}", audit_log.display()),
            "--audit-log-format=json".into(),
            // Each event is written before the response is sent, so a test that got an
            // answer finds the write in the log.
            "--audit-log-mode=blocking".into(),
            // In MB. 0 is not "unlimited": the log library then rotates at 100 MB, which moves
            // the log under the byte offsets of `audit_mark` (seen with 1,000 brokers).
            "--audit-log-maxsize=100000".into(),
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
            ca,
            ca_cert: files.ca_cert.clone(),
            audit_log,
            dir,
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

    /// A kubeconfig file for `user`: a client certificate of this control plane's CA with
    /// CN=`user` and, if given, O=`group` (Kubernetes reads them as user name and group; e.g.
    /// `system:masters` for full rights until the user has RBAC bindings of its own). The
    /// apiserver and its audit log then tell this user's requests from everyone else's.
    pub fn kubeconfig_for(&self, user: &str, group: Option<&str>) -> anyhow::Result<PathBuf> {
        let cert = self.ca.issue(&LeafSpec {
            common_name: user,
            organization: group,
            client: true,
            ..LeafSpec::default()
        })?;
        let safe: String = user
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.dir.join(format!("kubeconfig-{safe}"));
        write_kubeconfig(
            &path,
            &self.server_url,
            &std::fs::read(&self.ca_cert)?,
            user,
            cert.cert.as_bytes(),
            cert.key.as_bytes(),
        )?;
        Ok(path)
    }

    /// A client that acts as `user` (see [`Self::kubeconfig_for`]).
    pub async fn client_for(
        &self,
        user: &str,
        group: Option<&str>,
    ) -> anyhow::Result<kube::Client> {
        let path = self.kubeconfig_for(user, group)?;
        let config = kube::Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&path)?,
            &KubeConfigOptions::default(),
        )
        .await
        .with_context(|| format!("loading {}", path.display()))?;
        kube::Client::try_from(config).context("building the kube client")
    }

    /// The apiserver's audit log (JSON lines, one event per write request).
    pub fn audit_log(&self) -> &Path {
        &self.audit_log
    }

    /// The end of the audit log right now: events after it happened after this call.
    pub fn audit_mark(&self) -> anyhow::Result<AuditMark> {
        let text = read_log(&self.audit_log)?;
        Ok(AuditMark(complete_lines(&text).len() as u64))
    }

    /// Write requests (create, update, patch, delete, deletecollection) by `user` logged after
    /// `since`, up to now. A request made as another user through impersonation counts as the
    /// impersonated user's.
    pub fn audit_writes(&self, user: &str, since: &AuditMark) -> anyhow::Result<Vec<AuditEvent>> {
        Ok(self
            .audit_events(since, None)?
            .into_iter()
            .filter(|e| e.is_write() && e.user == user)
            .collect())
    }

    /// How many writes `user` made since `since`, by `verb resource[/subresource]` (e.g.
    /// `patch kafkaclusters/status`): a short, readable account for assertion messages.
    pub fn audit_write_counts(
        &self,
        user: &str,
        since: &AuditMark,
    ) -> anyhow::Result<std::collections::BTreeMap<String, usize>> {
        let mut counts = std::collections::BTreeMap::new();
        for e in self.audit_writes(user, since)? {
            *counts.entry(e.verb_and_resource()).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Requests of `user` the apiserver refused (403) since `since`, as summaries: a test of
    /// the RBAC Pier ships fails on any.
    pub fn audit_refused(&self, user: &str, since: &AuditMark) -> anyhow::Result<Vec<String>> {
        Ok(self
            .audit_events(since, None)?
            .into_iter()
            .filter(|e| e.user == user && e.code == 403)
            .map(|e| e.summary())
            .collect())
    }

    /// Every audit event between two marks (`to` = now if `None`).
    pub fn audit_events(
        &self,
        from: &AuditMark,
        to: Option<&AuditMark>,
    ) -> anyhow::Result<Vec<AuditEvent>> {
        let text = read_log(&self.audit_log)?;
        let text = complete_lines(&text);
        let end = to.map_or(text.len(), |m| (m.0 as usize).min(text.len()));
        let start = (from.0 as usize).min(end);
        text[start..end]
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(AuditEvent::parse)
            .collect()
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

/// Logs every write request's metadata (who, verb, resource, name, response code), and every
/// request of a ServiceAccount (reads too: a test of the RBAC Pier ships finds any refused
/// request), only once a request is complete.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: [system:serviceaccounts]
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
";

/// The write verbs of the audit policy.
pub const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

/// A point in the audit log (a byte offset at a line boundary), from [`ControlPlane::audit_mark`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AuditMark(u64);

/// One request in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Who made the request (the impersonated user, if any).
    pub user: String,
    pub groups: Vec<String>,
    /// create, update, patch, delete, deletecollection, get, list, watch.
    pub verb: String,
    /// e.g. `configmaps`, `pods`, `kafkaclusters`.
    pub resource: String,
    /// e.g. `status`; empty for the object itself.
    pub subresource: String,
    pub api_group: String,
    pub namespace: String,
    pub name: String,
    /// The HTTP status code of the response.
    pub code: u16,
    pub request_uri: String,
    /// When the request completed (RFC 3339).
    pub timestamp: String,
}

impl AuditEvent {
    fn parse(line: &str) -> anyhow::Result<Self> {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("an audit log line is not JSON: {line}"))?;
        let s = |p: &str| {
            v.pointer(p)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let (user, groups) = match v.get("impersonatedUser") {
            Some(u) if !u.is_null() => ("/impersonatedUser/username", u.get("groups")),
            _ => ("/user/username", v.pointer("/user/groups")),
        };
        Ok(Self {
            user: s(user),
            groups: groups
                .and_then(|g| g.as_array())
                .map(|g| {
                    g.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            verb: s("/verb"),
            resource: s("/objectRef/resource"),
            subresource: s("/objectRef/subresource"),
            api_group: s("/objectRef/apiGroup"),
            namespace: s("/objectRef/namespace"),
            name: s("/objectRef/name"),
            code: v
                .pointer("/responseStatus/code")
                .and_then(|c| c.as_u64())
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(0),
            request_uri: s("/requestURI"),
            timestamp: s("/stageTimestamp"),
        })
    }

    pub fn is_write(&self) -> bool {
        WRITE_VERBS.contains(&self.verb.as_str())
    }

    /// `patch kafkaclusters/status`.
    pub fn verb_and_resource(&self) -> String {
        if self.subresource.is_empty() {
            format!("{} {}", self.verb, self.resource)
        } else {
            format!("{} {}/{}", self.verb, self.resource, self.subresource)
        }
    }

    /// `pier-operator patch kafkaclusters/status default/roll (200)`, for assertion messages.
    pub fn summary(&self) -> String {
        format!(
            "{} {} {}/{} ({})",
            self.user,
            self.verb_and_resource(),
            self.namespace,
            self.name,
            self.code
        )
    }
}

fn read_log(path: &Path) -> anyhow::Result<String> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        // Nothing written yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The text up to its last newline: a line still being written is not an event yet.
fn complete_lines(text: &str) -> &str {
    text.rfind('\n').map_or("", |i| &text[..=i])
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

fn write_pki(dir: &Path) -> anyhow::Result<(Ca, PkiFiles)> {
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
    Ok((ca, files))
}

fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_cert: &[u8],
    user: &str,
    cert: &[u8],
    key: &[u8],
) -> anyhow::Result<()> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: pier-test
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user:?}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: pier-test
  context: {{cluster: pier-test, user: {user:?}, namespace: default}}
current-context: pier-test
",
        ca = b64(ca_cert),
        cert = b64(cert),
        key = b64(key),
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_events_parse_and_partial_lines_wait() {
        let line = r#"{"kind":"Event","level":"Metadata","stage":"ResponseComplete","requestURI":"/apis/kafka.pier.dev/v1alpha1/namespaces/default/kafkaclusters/roll/status","verb":"patch","user":{"username":"admin","groups":["system:masters"]},"impersonatedUser":{"username":"pier-operator","groups":["pier"]},"objectRef":{"resource":"kafkaclusters","namespace":"default","name":"roll","apiGroup":"kafka.pier.dev","subresource":"status"},"responseStatus":{"code":200},"stageTimestamp":"2026-01-01T00:00:00.000000Z"}"#;
        let e = AuditEvent::parse(line).unwrap();
        assert_eq!(e.user, "pier-operator", "the impersonated user counts");
        assert_eq!(e.groups, ["pier"]);
        assert!(e.is_write());
        assert_eq!(e.verb_and_resource(), "patch kafkaclusters/status");
        assert_eq!(
            e.summary(),
            "pier-operator patch kafkaclusters/status default/roll (200)"
        );
        let text = format!("{line}\n{{\"kind\":\"Ev");
        assert_eq!(complete_lines(&text), format!("{line}\n"));
        assert_eq!(complete_lines("no newline yet"), "");
    }
}
