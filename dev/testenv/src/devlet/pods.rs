//! Runs the Pods the scheduler binds to this node as local processes. Each Pod gets its own
//! loopback address (reported as status.podIP), so brokers bind the same ports as in a real
//! cluster. Known images map to local launchers; volumes become directories; the Pod's DNS name
//! resolves through a hosts file the JVM reads (`-Djdk.net.hosts.file`). A Kafka image runs the
//! `dev/setup` install its tag names (`apache/kafka:4.0.2` → `kafka-node-4.0.2`), so a Kafka
//! upgrade runs both versions for real; an image without a version tag runs the default
//! `kafka-node`.
//!
//! As a kubelet: a container that exits (or fails its liveness probe) is restarted per restartPolicy with the crash-loop
//! back-off (see [`super::container`]) and reported with `restartCount`, `lastState` and
//! `CrashLoopBackOff`; a Pod that cannot start yet (its ports are taken on every address, a
//! ConfigMap or claim is not there yet, an init container failed) stays Pending with the reason
//! and is tried again. Init containers run to completion first. Only
//! an image without a local launcher fails a Pod.
//!
//! Every container gets `KUBERNETES_SERVICE_HOST`/`_PORT` (the real apiserver), as from a
//! kubelet. A Pier container also gets `KUBECONFIG`: a kubeconfig in the Pod's directory made of
//! its projected ServiceAccount token and CA (a local process cannot see
//! `/var/run/secrets/kubernetes.io/serviceaccount`, where in-cluster clients look), so it
//! authenticates as its ServiceAccount; and its `0.0.0.0:` listen addresses become the Pod's
//! address, so replicas do not collide. An Envoy's bootstrap gets Service names replaced by the
//! devlet's proxy addresses (see [`super::services`]).
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::DevletOptions;
use super::container::{Backoff, State, Terminated, log_tail, now_rfc3339, oom_kills, status_json};
use super::pod_volumes::{self, AbortOnDrop, field_value};
use super::services::{Addresses, rewrite_service_names, unknown_service_names};
use crate::net::loopback_ips;
use crate::paths::program;
use crate::process::Process;

/// A Pod this node runs.
struct RunningPod {
    pod: Pod,
    name: String,
    ip: Ipv4Addr,
    dir: PathBuf,
    /// hostname.subdomain, for the hosts file.
    dns_names: Vec<String>,
    containers: Vec<RunningContainer>,
    readiness: Readiness,
    ready: bool,
    /// When the Pod's processes were first started, and when readiness last changed.
    started_at: String,
    ready_since: String,
    restart_policy: String,
    /// The status last written to the apiserver. The probe loop alone writes a running Pod's
    /// status, whenever it differs from this: one writer, so an older status never lands after
    /// a newer one (a start's "not ready" after the probe's "ready" left a Pod unready for
    /// good), and a failed write is tried again on the next tick.
    reported: Option<Value>,
    /// Keep the Pod's ServiceAccount tokens fresh while it runs here.
    _refreshers: Vec<AbortOnDrop>,
}

struct RunningContainer {
    spec: Container,
    mounts: Vec<(String, PathBuf)>,
    process: Option<Process>,
    state: State,
    restarts: u32,
    grace: Duration,
    backoff: Backoff,
    /// Where the current run's output begins in the container's log.
    log_offset: u64,
    oom_kills_at_start: Option<u64>,
    /// How the last run ended.
    last: Option<Terminated>,
    liveness: Option<Liveness>,
}

/// A container's liveness probe: after `threshold` failures in a row, one `period` apart, the
/// container is stopped, and restarted per restartPolicy as after any exit.
struct Liveness {
    check: Readiness,
    initial_delay: Duration,
    period: Duration,
    threshold: u32,
    failures: u32,
    next_at: Instant,
    /// SIGTERM was sent; if the probe keeps failing, SIGKILL follows.
    stopping: bool,
}

/// A Pod that cannot start yet (its ports are taken, a volume is not ready): it stays Pending
/// with the reason, and is tried again after `delay`, doubled on every failure.
struct WaitingPod {
    pod: Pod,
    /// What its status says (rewritten only when this changes).
    message: String,
    next_try: Instant,
    delay: Duration,
}

/// Why a Pod did not start.
enum StartError {
    /// Tried again later; the Pod stays Pending with this reason.
    Retry(&'static str, anyhow::Error),
    /// The Pod can never run here (an image without a local launcher): Failed.
    Fatal(anyhow::Error),
}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Retry("ContainerCreating", e)
    }
}

impl From<kube::Error> for StartError {
    fn from(e: kube::Error) -> Self {
        StartError::Retry("ContainerCreating", e.into())
    }
}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> Self {
        StartError::Retry("ContainerCreating", e.into())
    }
}

/// How readiness is probed (the first container's readinessProbe).
#[derive(Debug, Clone)]
enum Readiness {
    Always,
    Tcp(u16),
    Http(u16, String),
    Exec(Vec<String>),
}

impl RunningContainer {
    fn spawn(&mut self, o: &Node, pod: &Pod, ip: Ipv4Addr, dir: &Path) -> anyhow::Result<()> {
        let cmd = launcher(o, pod, &self.spec, ip, &self.mounts, dir)?;
        let log = self.log_path(dir);
        let name = format!("{}/{}", pod.name_any(), self.spec.name);
        self.log_offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        self.oom_kills_at_start = oom_kills();
        self.process = Some(Process::spawn(&name, cmd, &log, self.grace)?);
        self.state = State::Running {
            started_at: now_rfc3339(),
        };
        if let Some(l) = &mut self.liveness {
            l.failures = 0;
            l.stopping = false;
            l.next_at = Instant::now() + l.initial_delay;
        }
        Ok(())
    }

    fn log_path(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.log", self.spec.name))
    }

    /// Records how the current run ended and decides what comes next: a restart now or
    /// after the back-off, or none (restartPolicy).
    fn exited(&mut self, status: std::process::ExitStatus, restart_policy: &str, dir: &Path) {
        let started_at = match &self.state {
            State::Running { started_at } => started_at.clone(),
            _ => now_rfc3339(),
        };
        let oom = matches!(
            (self.oom_kills_at_start, oom_kills()),
            (Some(before), Some(after)) if after > before
        );
        let fallback =
            self.spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
        let log = self.log_path(dir);
        let last = Terminated::exited(
            status,
            oom,
            fallback,
            || log_tail(&log, self.log_offset),
            &started_at,
        );
        self.process = None;
        self.finished(last, restart_policy);
    }

    fn finished(&mut self, last: Terminated, restart_policy: &str) {
        let again = match restart_policy {
            "Never" => false,
            "OnFailure" => last.exit_code != 0,
            _ => true,
        };
        self.last = Some(last);
        self.state = if again {
            let finished = Instant::now();
            State::BackOff {
                until: self.backoff.restart_at(finished),
                delay: self.backoff.delay(),
                finished,
            }
        } else {
            State::Terminated
        };
    }

    /// Restarts the container if its back-off is over.
    fn restart_if_due(
        &mut self,
        o: &Node,
        pod: &Pod,
        ip: Ipv4Addr,
        dir: &Path,
        restart_policy: &str,
    ) {
        let State::BackOff {
            until, finished, ..
        } = self.state
        else {
            return;
        };
        let now = Instant::now();
        if now < until {
            return;
        }
        self.backoff.restarted(finished, now);
        self.restarts += 1;
        if let Err(e) = self.spawn(o, pod, ip, dir) {
            tracing::warn!(pod = %pod.name_any(), container = %self.spec.name, error = format!("{e:#}"), "cannot restart container");
            self.finished(Terminated::start_error(format!("{e:#}")), restart_policy);
        }
    }
}

/// What the node runs and what waits to start.
#[derive(Default)]
struct NodePods {
    running: BTreeMap<String, RunningPod>,
    waiting: BTreeMap<String, WaitingPod>,
    /// Hosts-file lines of Pods other devlets run, by uid: one cluster-wide DNS.
    elsewhere: BTreeMap<String, String>,
}

type Pods = Arc<Mutex<NodePods>>;

/// What the Pods of this node are run with: the node's options and the addresses of the
/// Service proxy.
#[derive(Clone)]
struct Node {
    options: DevletOptions,
    services: Addresses,
}

impl std::ops::Deref for Node {
    type Target = DevletOptions;
    fn deref(&self) -> &DevletOptions {
        &self.options
    }
}

/// Rewrites the hosts file whenever Services get or lose proxy addresses.
async fn service_names(o: Node, node: Pods) {
    let mut services = o.services.clone();
    while services.changed().await.is_ok() {
        if let Err(e) = write_hosts(&o, &node).await {
            tracing::warn!(error = %e, "cannot write the hosts file");
        }
    }
}

/// Runs Pods bound to this node until the watch fails.
pub async fn run_pods(
    client: kube::Client,
    options: DevletOptions,
    services: Addresses,
) -> anyhow::Result<()> {
    let o = Node { options, services };
    let pods: Api<Pod> = Api::all(client.clone());
    let node: Pods = Arc::new(Mutex::new(NodePods::default()));
    tokio::spawn(probe_loop(client.clone(), o.clone(), node.clone()));
    tokio::spawn(names_elsewhere(client.clone(), o.clone(), node.clone()));
    tokio::spawn(service_names(o.clone(), node.clone()));
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", o.node_name));
    let mut stream = watcher(pods, config).applied_objects().boxed();
    while let Some(pod) = stream.try_next().await? {
        if let Err(e) = handle(&client, &o, &node, &pod).await {
            tracing::warn!(pod = %pod.name_any(), error = format!("{e:#}"), "cannot handle pod");
        }
    }
    Ok(())
}

async fn handle(client: &kube::Client, o: &Node, node: &Pods, pod: &Pod) -> anyhow::Result<()> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let ns = pod.namespace().unwrap_or_default();
    if pod.metadata.deletion_timestamp.is_some() {
        let (stopped, was_waiting) = {
            let mut n = node.lock().await;
            (n.running.remove(&uid), n.waiting.remove(&uid).is_some())
        };
        tracing::debug!(pod = %pod.name_any(), running = stopped.is_some(), was_waiting, "pod deleted");
        // Stopping takes up to the grace period: do it aside, so the node keeps serving
        // other Pods (a replacement waits for the ports meanwhile), then remove the object.
        let client = client.clone();
        let o = o.clone();
        let node = node.clone();
        let pod = pod.clone();
        tokio::spawn(async move {
            if let Some(mut p) = stopped {
                let _ = tokio::task::spawn_blocking(move || {
                    crate::process::stop_all(
                        p.containers.iter_mut().filter_map(|c| c.process.as_mut()),
                    );
                })
                .await;
                if let Err(e) = write_hosts(&o, &node).await {
                    tracing::warn!(error = %e, "cannot write the hosts file");
                }
            }
            let api: Api<Pod> = Api::namespaced(client, &ns);
            let _ = api
                .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
                .await;
        });
        return Ok(());
    }
    {
        let mut n = node.lock().await;
        if n.running.contains_key(&uid) {
            return Ok(());
        }
        if let Some(w) = n.waiting.get_mut(&uid) {
            w.pod = pod.clone();
            return Ok(());
        }
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    if matches!(phase.as_deref(), Some("Failed" | "Succeeded")) {
        return Ok(());
    }
    try_start(client, o, node, pod, None).await
}

/// Starts a Pod; on failure keeps it Pending (and waiting for a retry) or fails it.
/// `previous` is its waiting entry when this is a retry.
async fn try_start(
    client: &kube::Client,
    o: &Node,
    node: &Pods,
    pod: &Pod,
    previous: Option<Duration>,
) -> anyhow::Result<()> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    match start_pod(client, o, pod).await {
        Ok(started) => {
            {
                let mut n = node.lock().await;
                // Deleted while it was starting: stop what was started.
                if previous.is_some() && n.waiting.remove(&uid).is_none() {
                    drop(n);
                    let mut started = started;
                    tokio::task::spawn_blocking(move || {
                        crate::process::stop_all(
                            started
                                .containers
                                .iter_mut()
                                .filter_map(|c| c.process.as_mut()),
                        )
                    });
                    return Ok(());
                }
                n.running.insert(uid, started);
            }
            // The probe loop reports it (the one writer of a running Pod's status).
            write_hosts(o, node).await
        }
        Err(StartError::Retry(reason, e)) => {
            let delay = previous.map_or(RETRY_FIRST, |d| (d * 2).min(RETRY_MAX));
            let message = format!("{e:#}");
            tracing::info!(pod = %pod.name_any(), reason, message, retry_in = ?delay, "pod cannot start yet");
            let unchanged = {
                let mut n = node.lock().await;
                if previous.is_some() && !n.waiting.contains_key(&uid) {
                    return Ok(());
                }
                let old = n.waiting.insert(
                    uid,
                    WaitingPod {
                        pod: pod.clone(),
                        message: message.clone(),
                        next_try: Instant::now() + delay,
                        delay,
                    },
                );
                old.is_some_and(|w| w.message == message)
            };
            if unchanged {
                return Ok(());
            }
            patch_status(client, pod, pending_status(pod, reason, &message)).await
        }
        Err(StartError::Fatal(e)) => {
            node.lock().await.waiting.remove(&uid);
            tracing::warn!(pod = %pod.name_any(), error = format!("{e:#}"), "pod failed");
            fail_pod(client, pod, &format!("{e:#}")).await
        }
    }
}

/// The first retry of a Pod that could not start, doubling up to the maximum.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(10);

async fn start_pod(client: &kube::Client, o: &Node, pod: &Pod) -> Result<RunningPod, StartError> {
    let spec = pod
        .spec
        .clone()
        .ok_or_else(|| StartError::Fatal(anyhow::anyhow!("pod without spec")))?;
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        let image = c.image.clone().unwrap_or_default();
        if !has_launcher(&image) {
            return Err(StartError::Fatal(anyhow::anyhow!(
                "image {image:?} has no local launcher (known: Kafka, Envoy, Pier)"
            )));
        }
        // A Kafka version that is not installed is this node's image that cannot be pulled:
        // Pending (dev/setup may install it meanwhile), not a run of another version.
        if is_kafka_image(&image) {
            kafka_program(&image).map_err(|e| StartError::Retry("ErrImagePull", e))?;
        }
    }
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let dir = o.root.join("pods").join(format!(
        "{ns}_{name}_{}",
        pod.metadata.uid.clone().unwrap_or_default()
    ));
    std::fs::create_dir_all(&dir)?;
    let ports: Vec<u16> = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.clone().unwrap_or_default())
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    // Each Pod has its own loopback address, but a process may hold a port on all addresses
    // (an Envoy listener on 0.0.0.0, maybe of a Pod still stopping): wait until it is free.
    let ip = match loopback_ips(1, &ports) {
        Ok(ips) => ips[0],
        Err(_) => {
            return Err(StartError::Retry(
                "PortsInUse",
                anyhow::anyhow!(
                    "ports {:?} are in use on every local address of node {} (a process \
                     bound to 0.0.0.0, perhaps a Pod still stopping); retrying",
                    busy_ports(&ports),
                    o.node_name
                ),
            ));
        }
    };

    // Volumes: name → local directory.
    let pod_volumes::PodVolumes {
        dirs: volumes,
        refreshers,
    } = pod_volumes::prepare(client, pod, &dir).await?;
    // Claims' volumes: mounted through a link at the container path under the Pod's `root`
    // (below), so a path the process reports ends with the path the container sees.
    let claimed: std::collections::BTreeSet<String> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.persistent_volume_claim.is_some())
        .map(|v| v.name.clone())
        .collect();

    let dns_names = dns_names(pod);
    let grace = Duration::from_secs(
        spec.termination_grace_period_seconds
            .unwrap_or(30)
            .clamp(1, 120) as u64,
    );
    let mounts_of = |c: &Container| -> std::io::Result<Vec<(String, PathBuf)>> {
        c.volume_mounts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let d = volumes.get(&m.name)?;
                if !claimed.contains(&m.name) {
                    return Some(Ok((m.mount_path, d.clone())));
                }
                Some(link_mount(&dir, &m.mount_path, d).map(|link| (m.mount_path, link)))
            })
            .collect()
    };
    // Init containers run one after the other, each to completion, before the containers
    // start (e.g. a broker's copying the metrics agent from Pier's image into an emptyDir).
    for c in spec.init_containers.iter().flatten() {
        run_init_container(o, pod, c, ip, &mounts_of(c)?, &dir).await?;
    }
    let mut containers = Vec::new();
    for c in &spec.containers {
        let mounts = mounts_of(c)?;
        let mut rc = RunningContainer {
            spec: c.clone(),
            mounts,
            process: None,
            state: State::Terminated,
            restarts: 0,
            grace,
            backoff: Backoff::new(o.crash_backoff, o.crash_backoff_max),
            log_offset: 0,
            oom_kills_at_start: None,
            last: None,
            liveness: c.liveness_probe.as_ref().map(|probe| Liveness {
                check: probe_check(c, probe),
                initial_delay: seconds(probe.initial_delay_seconds, 0),
                period: seconds(probe.period_seconds, 10),
                threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
                failures: 0,
                next_at: Instant::now(),
                stopping: false,
            }),
        };
        rc.spawn(o, pod, ip, &dir)?;
        containers.push(rc);
    }
    let readiness = spec
        .containers
        .first()
        .and_then(|c| Some(probe_check(c, c.readiness_probe.as_ref()?)))
        .unwrap_or(Readiness::Always);
    tracing::info!(pod = %name, %ip, "started");
    let now = now_rfc3339();
    Ok(RunningPod {
        pod: pod.clone(),
        name,
        ip,
        dir,
        dns_names,
        containers,
        readiness,
        ready: false,
        started_at: now.clone(),
        ready_since: now,
        restart_policy: spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into()),
        reported: None,
        _refreshers: refreshers,
    })
}

/// How long an init container may run.
const INIT_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs an init container to completion (its output in `<pod dir>/<name>.log`); one that fails
/// keeps the Pod Pending (`Init:Error`) and is tried again, as a kubelet retries it.
async fn run_init_container(
    o: &Node,
    pod: &Pod,
    c: &Container,
    ip: Ipv4Addr,
    mounts: &[(String, PathBuf)],
    dir: &Path,
) -> Result<(), StartError> {
    let init_error = |e: anyhow::Error| StartError::Retry("Init:Error", e);
    let mut cmd = launcher(o, pod, c, ip, mounts, dir).map_err(init_error)?;
    let log = dir.join(format!("{}.log", c.name));
    let out = std::fs::File::create(&log)?;
    cmd.stdout(out.try_clone()?)
        .stderr(out)
        .stdin(std::process::Stdio::null());
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| init_error(anyhow::anyhow!("init container {}: {e}", c.name)))?;
    let status = tokio::time::timeout(INIT_TIMEOUT, child.wait())
        .await
        .map_err(|_| {
            init_error(anyhow::anyhow!(
                "init container {} still running after {INIT_TIMEOUT:?}",
                c.name
            ))
        })??;
    if !status.success() {
        return Err(init_error(anyhow::anyhow!(
            "init container {} failed ({status}): {}",
            c.name,
            log_tail(&log, 0)
        )));
    }
    tracing::info!(pod = %pod.name_any(), container = %c.name, "init container completed");
    Ok(())
}

/// What a probe of container `c` checks. A named port is the container's port of that name, as
/// for a kubelet.
fn probe_check(c: &Container, probe: &k8s_openapi::api::core::v1::Probe) -> Readiness {
    let port = |p: &IntOrString| container_port(c, p).unwrap_or(0);
    if let Some(t) = &probe.tcp_socket {
        Readiness::Tcp(port(&t.port))
    } else if let Some(h) = &probe.http_get {
        Readiness::Http(port(&h.port), h.path.clone().unwrap_or_else(|| "/".into()))
    } else if let Some(e) = &probe.exec {
        Readiness::Exec(e.command.clone().unwrap_or_default())
    } else {
        Readiness::Always
    }
}

fn seconds(value: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(value.map_or(default, |v| v.max(0) as u64))
}

/// The port a probe or Service names: a number, or the name of one of the container's ports.
fn container_port(c: &Container, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .as_ref()?
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// The ports of `ports` that cannot be bound on a fresh loopback address right now.
fn busy_ports(ports: &[u16]) -> Vec<u16> {
    let probe = Ipv4Addr::new(127, 254, 253, 252);
    ports
        .iter()
        .copied()
        .filter(|p| std::net::TcpListener::bind((probe, *p)).is_err())
        .collect()
}

fn has_launcher(image: &str) -> bool {
    ["kafka", "envoy", "pier"].iter().any(|k| image.contains(k))
}

/// Whether an image runs through `kafka-node` (checked first, as in [`launcher`]).
fn is_kafka_image(image: &str) -> bool {
    image.contains("kafka")
}

/// The tag of an image reference: `4.0.2` of `registry:5000/apache/kafka:4.0.2@sha256:…`;
/// `None` without one (`apache/kafka`, a digest only). A registry's port is not a tag: the tag
/// is in the last path component.
fn image_tag(image: &str) -> Option<&str> {
    let name = image.split_once('@').map_or(image, |(name, _digest)| name);
    let last = name.rsplit_once('/').map_or(name, |(_, last)| last);
    last.split_once(':')
        .map(|(_, tag)| tag)
        .filter(|t| !t.is_empty())
}

/// The Kafka version an image's tag names: its leading digits and dots when they hold a dot
/// (`4.0.2`, `4.1.2-scala2.13` → `4.1.2`, `4.1` → `4.1`, as Pier reads a tag); `None` for a tag
/// that names no version (`latest`, `dev`, `1`) or no tag.
fn kafka_image_version(image: &str) -> Option<&str> {
    let tag = image_tag(image)?;
    let end = tag
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(tag.len());
    let version = tag[..end].trim_end_matches('.');
    (version.contains('.') && version.starts_with(|c: char| c.is_ascii_digit())).then_some(version)
}

/// The `dev/setup` program a Kafka image runs: `kafka-node-<version>` for a tag naming a
/// version, else `kafka-node` (the default install).
fn kafka_program_name(image: &str) -> String {
    match kafka_image_version(image) {
        Some(version) => format!("kafka-node-{version}"),
        None => "kafka-node".to_string(),
    }
}

/// The launcher of a Kafka image's install. A version that `dev/setup` did not install is an
/// error naming it, never the default version in its place: an upgrade test must run the
/// versions it names.
fn kafka_program(image: &str) -> anyhow::Result<PathBuf> {
    let name = kafka_program_name(image);
    match kafka_image_version(image) {
        Some(version) => program(&name).map_err(|_| {
            anyhow::anyhow!(
                "image {image:?} names Kafka {version}, which is not installed ({} missing): run dev/setup kafka (its KAFKA_VERSIONS lists the versions it installs)",
                crate::paths::cache_dir().join("bin").join(&name).display()
            )
        }),
        None => program(&name),
    }
}

/// `<pod dir>/root<mount path>`, a link to `target`: the path the container's `mount_path`
/// maps to. Every Pod (uid) has its own, so a Pod whose volumes changed since the last one
/// maps exactly its own.
fn link_mount(pod_dir: &Path, mount_path: &str, target: &Path) -> std::io::Result<PathBuf> {
    let link = pod_dir.join("root").join(mount_path.trim_matches('/'));
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::symlink_metadata(&link) {
        Ok(_) => std::fs::remove_file(&link)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::os::unix::fs::symlink(target, &link)?;
    Ok(link)
}

/// Rewrites a path of the container's filesystem to the local directory it is mounted from.
/// Every mount path inside `value` (starting the value or after `=`, `:`, `,`, `{` or a
/// space, followed by `/`, `:`, `,`, `}`, a space or the end) mapped to its local directory.
fn map_embedded_paths(value: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut sorted: Vec<&(String, PathBuf)> = mounts.iter().collect();
    sorted.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
    let mut out = String::with_capacity(value.len());
    let mut i = 0;
    'scan: while i < value.len() {
        let at_start = i == 0 || value[..i].ends_with(['=', ':', ',', '{', ' ']);
        if at_start {
            for (m, dir) in &sorted {
                let m = m.trim_end_matches('/');
                if m.is_empty() || !value[i..].starts_with(m) {
                    continue;
                }
                let rest = &value[i + m.len()..];
                if rest.is_empty() || rest.starts_with(['/', ':', ',', '}', ' ']) {
                    out.push_str(&dir.display().to_string());
                    i += m.len();
                    continue 'scan;
                }
            }
        }
        let c = value[i..].chars().next().unwrap_or_default();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

fn map_path(path: &str, mounts: &[(String, PathBuf)]) -> String {
    let best = mounts
        .iter()
        .filter(|(m, _)| path == m || path.starts_with(&format!("{}/", m.trim_end_matches('/'))))
        .max_by_key(|(m, _)| m.len());
    match best {
        Some((m, dir)) => format!(
            "{}{}",
            dir.display(),
            &path[m.trim_end_matches('/').len()..]
        ),
        None => path.to_string(),
    }
}

/// A container's environment: the apiserver's address as the kubelet gives it to every
/// container (`KUBERNETES_SERVICE_HOST`/`_PORT`), then the container's own variables.
fn env_of(o: &Node, pod: &Pod, c: &Container) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    if let Some((host, port)) = o.api_server.as_deref().and_then(host_port) {
        env.insert("KUBERNETES_SERVICE_HOST".to_string(), host.clone());
        env.insert("KUBERNETES_SERVICE_PORT".to_string(), port.to_string());
        env.insert(
            "KUBERNETES_SERVICE_PORT_HTTPS".to_string(),
            port.to_string(),
        );
    }
    for e in c.env.clone().unwrap_or_default() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => from
                .field_ref
                .as_ref()
                .map(|f| field_value(pod, &f.field_path))
                .unwrap_or_default(),
            _ => String::new(),
        };
        env.insert(e.name, value);
    }
    env
}

/// Host and port of an `https://host:port` URL.
fn host_port(url: &str) -> Option<(String, u16)> {
    let uri: http::Uri = url.parse().ok()?;
    Some((uri.host()?.to_string(), uri.port_u16().unwrap_or(443)))
}

/// Where a container sees its ServiceAccount (the `kube-api-access-*` mount).
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A kubeconfig for a local process in place of the in-cluster config: the apiserver, the
/// projected CA and token file (re-read by the client as the devlet renews it), the Pod's
/// namespace. `None` without a ServiceAccount mount.
fn service_account_kubeconfig(
    o: &Node,
    pod: &Pod,
    mounts: &[(String, PathBuf)],
    dir: &Path,
) -> anyhow::Result<Option<PathBuf>> {
    let (Some(server), Some((_, sa))) = (
        o.api_server.as_deref(),
        mounts
            .iter()
            .find(|(m, _)| m.trim_end_matches('/') == SERVICE_ACCOUNT_DIR),
    ) else {
        return Ok(None);
    };
    let ns = pod.namespace().unwrap_or_default();
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": {
            "server": server,
            "certificate-authority": sa.join("ca.crt").display().to_string(),
        }}],
        "users": [{"name": "service-account", "user": {
            "tokenFile": sa.join("token").display().to_string(),
        }}],
        "contexts": [{"name": "in-cluster", "context": {
            "cluster": "cluster", "user": "service-account", "namespace": ns,
        }}],
        "current-context": "in-cluster",
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_yaml_ng::to_string(&config)?)?;
    Ok(Some(path))
}

/// `$(VAR)` expansion, as the kubelet does for command and args.
fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

/// The variable with the broker's `-javaagent:` option (Pier's `monitoring::AGENT_ENV`).
const METRICS_AGENT_ENV: &str = "PIER_METRICS_AGENT";
/// Where Pier's image holds the JMX exporter agent (Pier's `monitoring::IMAGE_AGENT_JAR`).
const IMAGE_AGENT_JAR: &str = "/opt/pier/jmx_prometheus_javaagent.jar";

/// The local command for a container, by image.
fn launcher(
    o: &Node,
    pod: &Pod,
    c: &Container,
    ip: Ipv4Addr,
    mounts: &[(String, PathBuf)],
    dir: &Path,
) -> anyhow::Result<Command> {
    let image = c.image.clone().unwrap_or_default();
    let env = env_of(o, pod, c);
    let script = c.command.clone().unwrap_or_default().join(" ")
        + " "
        + &c.args.clone().unwrap_or_default().join(" ");
    if is_kafka_image(&image) {
        // The broker's properties file: the argument of kafka-server-start.sh (or -c).
        let props = script
            .split_whitespace()
            .find(|w| w.ends_with(".properties"))
            .context("no .properties file in the Kafka container's command")?;
        let text = std::fs::read_to_string(map_path(props, mounts))
            .with_context(|| format!("reading {props}"))?;
        let rewritten = rewrite_kafka_properties(&text, ip, mounts);
        let local = dir.join("server.properties");
        std::fs::write(&local, rewritten)?;
        let mut jvm_opts = format!(
            "-Djdk.net.hosts.file={} -Dsun.net.inetaddr.ttl=1 -Dsun.net.inetaddr.negative.ttl=1",
            o.root.join("hosts").display()
        );
        // The metrics agent Pier's command adds to the broker's KAFKA_OPTS (see Pier's
        // reconcile::monitoring), on the Pod's address and with the Pod's paths.
        if let Some(agent) = env.get(METRICS_AGENT_ENV).filter(|a| !a.trim().is_empty()) {
            jvm_opts.push(' ');
            jvm_opts.push_str(&map_embedded_paths(
                &agent.replace("0.0.0.0:", &format!("{ip}:")),
                mounts,
            ));
        }
        // The container's env carries KAFKA_CLUSTER_ID and KAFKA_STORAGE_FORMAT_ARGS (the
        // `kafka-storage.sh format` flags of Pier's command), which kafka-node formats with.
        let mut cmd = Command::new(kafka_program(&image)?);
        cmd.arg(&local)
            .envs(&env)
            .env("KAFKA_LOG_DIR", dir)
            .env("KAFKA_JVM_OPTS", jvm_opts);
        return Ok(cmd);
    }
    if image.contains("envoy") {
        let mut args: Vec<String> = c
            .args
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|a| map_path(&expand(a, &env), mounts))
            .collect();
        // The bootstrap and the files beside it (file-based SDS), copied with Service names
        // replaced by the proxy's addresses and the Pod's paths by local ones; the copies
        // stand for the config directory.
        if let Some(i) = args.iter().position(|a| a == "-c" || a == "--config-path")
            && let Some(path) = args.get(i + 1).cloned()
        {
            let services = o.services.borrow().clone();
            let local_dir = Path::new(&path).parent().unwrap_or(Path::new("."));
            let copy = dir.join(format!("{}-config", c.name));
            std::fs::create_dir_all(&copy)?;
            let copy_mounts: Vec<(String, PathBuf)> = mounts
                .iter()
                .map(|(m, local)| {
                    if local == local_dir {
                        (m.clone(), copy.clone())
                    } else {
                        (m.clone(), local.clone())
                    }
                })
                .collect();
            for entry in std::fs::read_dir(local_dir)? {
                let entry = entry?;
                let name = entry.file_name();
                // Files only (a Secret or ConfigMap volume's `..data` links are not config).
                if name.to_string_lossy().starts_with("..") || !entry.path().is_file() {
                    continue;
                }
                let original = std::fs::read_to_string(entry.path())
                    .with_context(|| format!("reading {}", entry.path().display()))?;
                let text = rewrite_service_names(&original, &services);
                let text = map_embedded_paths(&text, &copy_mounts);
                if entry.path() == Path::new(&path) {
                    let unknown = unknown_service_names(&text, &services);
                    if !unknown.is_empty() {
                        bail!(
                            "the Envoy bootstrap names Services without an address yet: {unknown:?}"
                        );
                    }
                }
                // Same file names, so Envoy's messages name the files the Pod names.
                std::fs::write(copy.join(&name), text)?;
            }
            let file = Path::new(&path).file_name().unwrap_or("bootstrap".as_ref());
            args[i + 1] = copy.join(file).display().to_string();
        }
        let mut cmd = Command::new(program("envoy")?);
        cmd.args(&args)
            .args(["--use-dynamic-base-id", "--config-yaml"])
            .arg(format!(
                "{{admin: {{address: {{socket_address: {{address: {ip}, port_value: 19901}}}}}}}}"
            ))
            .envs(&env);
        return Ok(cmd);
    }
    if image.contains("pier") {
        // The image's entrypoint is /pier, its command `operator`; `command` replaces the
        // entrypoint (only /pier is in the image), `args` the command.
        let pier = super::image::pier_binary(o)?;
        // The image's own files the devlet has locally: the JMX exporter agent (dev/setup).
        let mut mounts = mounts.to_vec();
        if let Ok(jar) = program("jmx_prometheus_javaagent.jar") {
            mounts.push((IMAGE_AGENT_JAR.to_string(), jar));
        }
        let mounts = mounts.as_slice();
        let mut args: Vec<String> = c.command.clone().unwrap_or_default();
        if !args.is_empty() {
            args.remove(0);
        }
        // As a runtime does: a `command` without `args` drops the image's command too.
        let image_cmd = if c.command.is_some() {
            Vec::new()
        } else {
            vec!["operator".into()]
        };
        args.extend(c.args.clone().unwrap_or(image_cmd));
        let mut cmd = Command::new(pier);
        cmd.args(args.iter().map(|a| {
            map_embedded_paths(
                &expand(a, &env).replace("0.0.0.0:", &format!("{ip}:")),
                mounts,
            )
        }))
        .envs(&env);
        if let Some(kubeconfig) = service_account_kubeconfig(o, pod, mounts, dir)? {
            cmd.env("KUBECONFIG", kubeconfig);
        }
        return Ok(cmd);
    }
    bail!("image {image:?} has no local launcher (known: Kafka, Envoy, Pier)")
}

/// Binds every listener to the Pod's address and maps log dirs to local directories.
pub fn rewrite_kafka_properties(text: &str, ip: Ipv4Addr, mounts: &[(String, PathBuf)]) -> String {
    text.lines()
        .map(|line| {
            if let Some(v) = line.strip_prefix("listeners=") {
                format!("listeners={}", v.replace("://:", &format!("://{ip}:")))
            } else if let Some(v) = line.strip_prefix("log.dirs=") {
                let dirs: Vec<String> = v.split(',').map(|d| map_path(d, mounts)).collect();
                format!("log.dirs={}", dirs.join(","))
            } else if let Some(v) = line.strip_prefix("metadata.log.dir=") {
                format!("metadata.log.dir={}", map_path(v, mounts))
            } else if let Some(v) = line.strip_prefix("log.dir=") {
                format!("log.dir={}", map_path(v, mounts))
            } else if let Some((k, v)) = line.split_once('=')
                && !line.starts_with('#')
            {
                // Files named in other values: keystores (`….location`), config-provider
                // references (`${provider:/path:key}`).
                format!("{k}={}", map_embedded_paths(v, mounts))
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Keeps the names of Pods on other nodes in this node's hosts file, so Pods of several
/// devlets (zones) reach each other by name as they would through cluster DNS.
async fn names_elsewhere(client: kube::Client, o: Node, node: Pods) {
    let pods: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName!={}", o.node_name));
    let mut stream = watcher(pods, config).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        let changed = {
            let mut n = node.lock().await;
            let before = n.elsewhere.clone();
            match event {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    match hosts_line(&p) {
                        Some(line) => n.elsewhere.insert(uid, line),
                        None => n.elsewhere.remove(&uid),
                    };
                }
                Ok(watcher::Event::Delete(p)) => {
                    n.elsewhere
                        .remove(&p.metadata.uid.clone().unwrap_or_default());
                }
                Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                Err(e) => tracing::debug!(error = %e, "watching Pods of other nodes"),
            }
            n.elsewhere != before
        };
        if changed && let Err(e) = write_hosts(&o, &node).await {
            tracing::warn!(error = %e, "cannot write the hosts file");
        }
    }
}

/// The hosts-file line of a Pod with an IP that is not going away.
fn hosts_line(p: &Pod) -> Option<String> {
    if p.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ip = p.status.as_ref()?.pod_ip.clone()?;
    Some(format!("{ip} {}", dns_names(p).join(" ")))
}

/// A Pod's names: its hostname, and with a subdomain (a headless Service) the Service names.
fn dns_names(p: &Pod) -> Vec<String> {
    let spec = p.spec.clone().unwrap_or_default();
    let hostname = spec.hostname.clone().unwrap_or_else(|| p.name_any());
    let ns = p.namespace().unwrap_or_default();
    let mut names = vec![hostname.clone()];
    if let Some(sub) = &spec.subdomain {
        names.push(format!("{hostname}.{sub}.{ns}.svc.cluster.local"));
        names.push(format!("{hostname}.{sub}.{ns}.svc"));
    }
    names
}

async fn write_hosts(o: &Node, node: &Pods) -> anyhow::Result<()> {
    let mut text = String::from("127.0.0.1 localhost\n");
    let n = node.lock().await;
    for p in n.running.values() {
        text.push_str(&format!("{} {}\n", p.ip, p.dns_names.join(" ")));
    }
    for line in n.elsewhere.values() {
        text.push_str(line);
        text.push('\n');
    }
    drop(n);
    // Services: both names of each on one line.
    let mut by_ip: BTreeMap<Ipv4Addr, Vec<String>> = BTreeMap::new();
    for (name, ip) in o.services.borrow().iter() {
        by_ip.entry(*ip).or_default().push(name.clone());
    }
    for (ip, names) in by_ip {
        text.push_str(&format!("{ip} {}\n", names.join(" ")));
    }
    let path = o.root.join("hosts");
    let tmp = o.root.join("hosts.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)?;
    Ok(())
}

/// `namespace_name(uid)`, as the kubelet names a Pod in its messages.
fn pod_ref(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.name_any(),
        pod.namespace().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

fn condition(type_: &str, ok: bool, since: &str, reason: &str, message: &str) -> Value {
    let mut c = json!({"type": type_, "status": if ok { "True" } else { "False" }, "lastTransitionTime": since});
    if !ok && !reason.is_empty() {
        c["reason"] = json!(reason);
        c["message"] = json!(message);
    }
    c
}

/// The status of a Pod this node runs: phase, conditions and one entry per container.
fn pod_status(p: &RunningPod) -> Value {
    let pod_ref = pod_ref(&p.pod);
    let statuses: Vec<Value> = p
        .containers
        .iter()
        .map(|c| {
            status_json(
                &c.spec.name,
                c.spec.image.as_deref().unwrap_or_default(),
                &pod_ref,
                &c.state,
                p.ready,
                c.restarts,
                c.last.as_ref(),
            )
        })
        .collect();
    let done = p
        .containers
        .iter()
        .all(|c| matches!(c.state, State::Terminated));
    let phase = if !done {
        "Running"
    } else if p
        .containers
        .iter()
        .all(|c| c.last.as_ref().is_some_and(|t| t.exit_code == 0))
    {
        "Succeeded"
    } else {
        "Failed"
    };
    let unready: Vec<&str> = p
        .containers
        .iter()
        .filter(|c| !p.ready || !matches!(c.state, State::Running { .. }))
        .map(|c| c.spec.name.as_str())
        .collect();
    let why = format!("containers with unready status: [{}]", unready.join(" "));
    json!({"status": {
        "phase": phase, "reason": null, "message": null,
        "podIP": p.ip.to_string(), "podIPs": [{"ip": p.ip.to_string()}],
        "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}], "startTime": p.started_at,
        "conditions": [
            condition("PodReadyToStartContainers", true, &p.started_at, "", ""),
            condition("PodScheduled", true, &p.started_at, "", ""),
            condition("Initialized", true, &p.started_at, "", ""),
            condition("ContainersReady", p.ready, &p.ready_since, "ContainersNotReady", &why),
            condition("Ready", p.ready, &p.ready_since, "ContainersNotReady", &why),
        ],
        "containerStatuses": statuses,
    }})
}

/// The status of a Pod that waits to start: Pending, with the reason in its conditions and
/// in each container's waiting state.
fn pending_status(pod: &Pod, reason: &str, message: &str) -> Value {
    let now = now_rfc3339();
    let statuses: Vec<Value> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image, "imageID": "", "ready": false, "started": false,
                "restartCount": 0, "state": {"waiting": {"reason": reason, "message": message}},
            })
        })
        .collect();
    json!({"status": {
        "phase": "Pending", "reason": null, "message": null,
        "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
        "conditions": [
            condition("PodReadyToStartContainers", false, &now, reason, message),
            condition("PodScheduled", true, &now, "", ""),
            condition("Initialized", true, &now, "", ""),
            condition("ContainersReady", false, &now, reason, message),
            condition("Ready", false, &now, reason, message),
        ],
        "containerStatuses": statuses,
    }})
}

async fn fail_pod(client: &kube::Client, pod: &Pod, message: &str) -> anyhow::Result<()> {
    let status =
        json!({"status": {"phase": "Failed", "reason": "DevletCannotRun", "message": message}});
    patch_status(client, pod, status).await
}

async fn patch_status(client: &kube::Client, pod: &Pod, status: Value) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    api.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(status),
    )
    .await?;
    Ok(())
}

/// Every second: container exits and restarts (restartPolicy, crash-loop back-off),
/// readiness probes, and retries of Pods waiting to start.
async fn probe_loop(client: kube::Client, o: Node, node: Pods) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut changes = Vec::new();
        let mut retries = Vec::new();
        {
            let mut n = node.lock().await;
            let now = Instant::now();
            for w in n.waiting.values() {
                if w.next_try <= now {
                    retries.push((w.pod.clone(), w.delay));
                }
            }
            for (uid, p) in n.running.iter_mut() {
                for c in p.containers.iter_mut() {
                    if let Some(status) = c.process.as_mut().and_then(Process::try_exit) {
                        c.exited(status, &p.restart_policy, &p.dir);
                        let last = c.last.as_ref();
                        tracing::warn!(
                            pod = %p.name, container = %c.spec.name, %status,
                            reason = last.map(|t| t.reason.as_str()),
                            restarts = c.restarts, "container exited"
                        );
                    }
                    c.restart_if_due(&o, &p.pod, p.ip, &p.dir, &p.restart_policy);
                    // Liveness: a running container that fails its probe `threshold` times in
                    // a row is stopped; its exit is then handled as any other.
                    if let (Some(l), Some(process), State::Running { .. }) =
                        (c.liveness.as_mut(), c.process.as_ref(), &c.state)
                        && l.next_at <= now
                    {
                        l.next_at = now + l.period;
                        if probe(&l.check, p.ip) {
                            l.failures = 0;
                        } else {
                            l.failures += 1;
                            if l.failures >= l.threshold {
                                tracing::warn!(pod = %p.name, container = %c.spec.name, failures = l.failures, "liveness probe failed: stopping the container");
                                l.failures = 0;
                                if l.stopping {
                                    process.signal(libc::SIGKILL);
                                } else {
                                    process.terminate();
                                    l.stopping = true;
                                }
                            }
                        }
                    }
                }
                let alive = p
                    .containers
                    .iter()
                    .all(|c| matches!(c.state, State::Running { .. }));
                let ready = alive && probe(&p.readiness, p.ip);
                if ready != p.ready {
                    p.ready = ready;
                    p.ready_since = now_rfc3339();
                }
                let status = pod_status(p);
                if p.reported.as_ref() != Some(&status) {
                    changes.push((uid.clone(), p.pod.clone(), status));
                }
            }
        }
        for (uid, pod, status) in changes {
            match patch_status(&client, &pod, status.clone()).await {
                Ok(()) => {
                    if let Some(p) = node.lock().await.running.get_mut(&uid) {
                        p.reported = Some(status);
                    }
                }
                Err(e) => {
                    tracing::warn!(pod = %pod.name_any(), error = %e, "cannot report the pod status; trying again")
                }
            }
        }
        for (pod, delay) in retries {
            if let Err(e) = try_start(&client, &o, &node, &pod, Some(delay)).await {
                tracing::warn!(pod = %pod.name_any(), error = format!("{e:#}"), "cannot start pod");
            }
        }
    }
}

fn probe(readiness: &Readiness, ip: Ipv4Addr) -> bool {
    let timeout = Duration::from_millis(500);
    match readiness {
        Readiness::Always => true,
        Readiness::Tcp(port) => {
            std::net::TcpStream::connect_timeout(&(ip, *port).into(), timeout).is_ok()
        }
        Readiness::Http(port, path) => {
            use std::io::{Read, Write};
            let Ok(mut s) = std::net::TcpStream::connect_timeout(&(ip, *port).into(), timeout)
            else {
                return false;
            };
            let _ = s.set_read_timeout(Some(timeout));
            if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
                .is_err()
            {
                return false;
            }
            let mut head = [0u8; 12];
            s.read_exact(&mut head).is_ok() && (head[9] == b'2' || head[9] == b'3')
        }
        Readiness::Exec(cmd) => {
            let Some((prog, args)) = cmd.split_first() else {
                return false;
            };
            let Ok(mut child) = Command::new(prog)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
            else {
                return false;
            };
            // As the kubelet's timeoutSeconds (1 s by default): a hanging probe fails and must
            // not hold up the other Pods' probes and restarts.
            let deadline = std::time::Instant::now() + Duration::from_secs(1);
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => return status.success(),
                    Ok(None) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return false;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kafka_image_runs_the_install_its_version_tag_names() {
        let cases = [
            ("apache/kafka:4.0.2", "kafka-node-4.0.2"),
            ("apache/kafka:4.1.2", "kafka-node-4.1.2"),
            ("docker.io/apache/kafka:4.0.2", "kafka-node-4.0.2"),
            ("registry.local:5000/apache/kafka:4.0.2", "kafka-node-4.0.2"),
            ("apache/kafka:4.0.2@sha256:0123abcd", "kafka-node-4.0.2"),
            ("apache/kafka:4.1.2-scala2.13", "kafka-node-4.1.2"),
            // A partial version is still a version: its missing install is an error, not 4.1.2.
            ("apache/kafka:4.1", "kafka-node-4.1"),
            ("apache/kafka:10.20.30", "kafka-node-10.20.30"),
            // No version in the tag: the default install.
            ("apache/kafka", "kafka-node"),
            ("apache/kafka:latest", "kafka-node"),
            ("apache/kafka:", "kafka-node"),
            ("apache/kafka@sha256:0123abcd", "kafka-node"),
            ("registry.local:5000/apache/kafka", "kafka-node"),
            ("example.com/team/custom-kafka:dev", "kafka-node"),
            ("example.com/team/kafka-with-plugins:1", "kafka-node"),
            ("example.com/team/kafka:v4.0.2", "kafka-node"),
            ("example.com/team/kafka:.4", "kafka-node"),
        ];
        for (image, want) in cases {
            assert_eq!(kafka_program_name(image), want, "{image}");
        }
    }

    /// Needs `dev/setup kafka` (the 4.0.2 install), as every test of a real Kafka.
    #[test]
    fn a_kafka_container_runs_its_versions_launcher_with_its_env() {
        let work = tempfile::tempdir().unwrap();
        let config = work.path().join("config");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(config.join("server.properties"), "node.id=0\n").unwrap();
        let (_tx, services) = tokio::sync::watch::channel(Default::default());
        let node = Node {
            options: DevletOptions::new("n", work.path().join("root")),
            services,
        };
        let flags = "--initial-controllers 0@c-0:9093:AAAAAAAAAAAAAAAAAAAAAA";
        let container: Container = serde_json::from_value(json!({
            "name": "kafka", "image": "apache/kafka:4.0.2",
            "command": ["sh", "-c", "kafka-storage.sh format ${KAFKA_STORAGE_FORMAT_ARGS:-} && exec kafka-server-start.sh /opt/kafka/config/server.properties"],
            "env": [
                {"name": "KAFKA_CLUSTER_ID", "value": "cluster"},
                {"name": "KAFKA_STORAGE_FORMAT_ARGS", "value": flags},
            ],
        }))
        .unwrap();
        let mounts = [("/opt/kafka/config".to_string(), config)];
        let cmd = launcher(
            &node,
            &Pod::default(),
            &container,
            Ipv4Addr::new(127, 9, 0, 1),
            &mounts,
            work.path(),
        )
        .unwrap();
        assert!(
            cmd.get_program()
                .to_string_lossy()
                .ends_with("/kafka-node-4.0.2"),
            "{:?}",
            cmd.get_program()
        );
        let env: BTreeMap<_, _> = cmd
            .get_envs()
            .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
            .collect();
        assert_eq!(
            env.get(std::ffi::OsStr::new("KAFKA_STORAGE_FORMAT_ARGS")),
            Some(&Some(flags.into()))
        );
        assert_eq!(
            env.get(std::ffi::OsStr::new("KAFKA_CLUSTER_ID")),
            Some(&Some("cluster".into()))
        );
    }

    #[test]
    fn an_image_tag_is_in_the_last_path_component() {
        assert_eq!(image_tag("apache/kafka:4.0.2"), Some("4.0.2"));
        assert_eq!(image_tag("registry.local:5000/apache/kafka"), None);
        assert_eq!(
            image_tag("registry.local:5000/kafka:4.0.2@sha256:ab"),
            Some("4.0.2")
        );
        assert_eq!(image_tag("kafka@sha256:ab"), None);
        assert_eq!(image_tag("kafka:"), None);
    }

    #[test]
    fn a_kafka_version_that_is_not_installed_is_an_error_naming_it() {
        // No dev/setup installs 0.0.1: the error names the image and says what to run.
        let err = kafka_program("apache/kafka:0.0.1")
            .expect_err("Kafka 0.0.1 is not installed")
            .to_string();
        assert!(err.contains("\"apache/kafka:0.0.1\""), "{err}");
        assert!(err.contains("Kafka 0.0.1"), "{err}");
        assert!(err.contains("kafka-node-0.0.1"), "{err}");
        assert!(err.contains("run dev/setup kafka"), "{err}");
    }

    #[test]
    fn a_claimed_volume_is_linked_at_its_container_path() {
        let pod = std::env::temp_dir().join(format!("devlet-link-{}", std::process::id()));
        let target = pod.join("pv");
        std::fs::create_dir_all(&target).unwrap();
        let link = link_mount(&pod, "/var/lib/kafka/data0", &target).unwrap();
        assert!(link.ends_with("root/var/lib/kafka/data0"));
        std::fs::write(link.join("f"), "x").unwrap();
        assert!(target.join("f").exists());
        // Linking again (a restarted container) replaces the link.
        let again = link_mount(&pod, "/var/lib/kafka/data0/", &target).unwrap();
        assert_eq!(again, link);
        std::fs::remove_dir_all(&pod).unwrap();
    }

    #[test]
    fn exec_probes_succeed_fail_and_time_out() {
        let ip = Ipv4Addr::LOCALHOST;
        let exec = |c: &[&str]| Readiness::Exec(c.iter().map(|s| s.to_string()).collect());
        assert!(probe(&exec(&["true"]), ip));
        assert!(!probe(&exec(&["false"]), ip));
        assert!(!probe(&exec(&["/nonexistent/probe"]), ip));
        let started = Instant::now();
        assert!(!probe(&exec(&["sleep", "30"]), ip), "a hanging probe fails");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn paths_and_listeners_are_rewritten_for_a_local_process() {
        let mounts = vec![
            ("/etc/pier".to_string(), PathBuf::from("/tmp/p/config")),
            (
                "/var/lib/kafka/data0".to_string(),
                PathBuf::from("/tmp/v/pvc-1"),
            ),
        ];
        assert_eq!(
            map_path("/etc/pier/server.properties", &mounts),
            "/tmp/p/config/server.properties"
        );
        assert_eq!(map_path("/etc/pierre", &mounts), "/etc/pierre");
        let text = "node.id=1\nlisteners=INTERNAL://:9092,CONTROLLER://:9093\nlog.dirs=/var/lib/kafka/data0/kafka\nmetadata.log.dir=/var/lib/kafka/data0/kafka\n";
        let out = rewrite_kafka_properties(text, Ipv4Addr::new(127, 9, 0, 1), &mounts);
        assert!(out.contains("listeners=INTERNAL://127.9.0.1:9092,CONTROLLER://127.9.0.1:9093"));
        assert!(out.contains("log.dirs=/tmp/v/pvc-1/kafka"));
        assert!(out.contains("metadata.log.dir=/tmp/v/pvc-1/kafka"), "{out}");
        assert!(out.contains("node.id=1"));
        let mounts = vec![
            ("/etc/pier-tls".to_string(), PathBuf::from("/tmp/p/tls")),
            ("/etc/pier-secrets/s".to_string(), PathBuf::from("/tmp/p/s")),
        ];
        let text = "listener.name.x.ssl.keystore.location=/etc/pier-tls/keystore.pem\nssl.key.password=${pierdir:/etc/pier-secrets/s:pw}\nother=/etc/pier-tlsx/a\n";
        let out = rewrite_kafka_properties(text, Ipv4Addr::new(127, 9, 0, 1), &mounts);
        assert!(
            out.contains("listener.name.x.ssl.keystore.location=/tmp/p/tls/keystore.pem"),
            "{out}"
        );
        assert!(
            out.contains("ssl.key.password=${pierdir:/tmp/p/s:pw}"),
            "{out}"
        );
        assert!(out.contains("other=/etc/pier-tlsx/a"), "{out}");
        let env = BTreeMap::from([("POD_NAME".to_string(), "envoy-0".to_string())]);
        assert_eq!(
            expand("--service-node=$(POD_NAME)", &env),
            "--service-node=envoy-0"
        );
    }
}
