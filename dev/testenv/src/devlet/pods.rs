//! Runs the Pods the scheduler binds to this node as local processes. Each Pod gets its own
//! loopback address (reported as status.podIP), so brokers bind the same ports as in a real
//! cluster. Known images map to local launchers; volumes become directories; the Pod's DNS name
//! resolves through a hosts file the JVM reads (`-Djdk.net.hosts.file`).
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::Mutex;

use super::DevletOptions;
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
    restart_policy: String,
}

struct RunningContainer {
    spec: Container,
    mounts: Vec<(String, PathBuf)>,
    process: Option<Process>,
    restarts: u32,
    grace: Duration,
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
    fn spawn(
        &mut self,
        o: &DevletOptions,
        pod: &Pod,
        ip: Ipv4Addr,
        dir: &Path,
    ) -> anyhow::Result<()> {
        let cmd = launcher(o, pod, &self.spec, ip, &self.mounts, dir)?;
        let log = dir.join(format!("{}.log", self.spec.name));
        let name = format!("{}/{}", pod.name_any(), self.spec.name);
        self.process = Some(Process::spawn(&name, cmd, &log, self.grace)?);
        Ok(())
    }
}

type Pods = Arc<Mutex<BTreeMap<String, RunningPod>>>;

/// Runs Pods bound to this node until the watch fails.
pub async fn run_pods(client: kube::Client, o: DevletOptions) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::all(client.clone());
    let running: Pods = Arc::new(Mutex::new(BTreeMap::new()));
    tokio::spawn(probe_loop(client.clone(), o.clone(), running.clone()));
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", o.node_name));
    let mut stream = watcher(pods, config).applied_objects().boxed();
    while let Some(pod) = stream.try_next().await? {
        if let Err(e) = handle(&client, &o, &running, &pod).await {
            tracing::warn!(pod = %pod.name_any(), error = format!("{e:#}"), "pod failed");
            let _ = fail_pod(&client, &pod, &format!("{e:#}")).await;
        }
    }
    Ok(())
}

async fn handle(
    client: &kube::Client,
    o: &DevletOptions,
    running: &Pods,
    pod: &Pod,
) -> anyhow::Result<()> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let ns = pod.namespace().unwrap_or_default();
    if pod.metadata.deletion_timestamp.is_some() {
        let stopped = running.lock().await.remove(&uid);
        if let Some(mut p) = stopped {
            crate::process::stop_all(p.containers.iter_mut().filter_map(|c| c.process.as_mut()));
            write_hosts(o, running).await?;
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let _ = api
            .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
            .await;
        return Ok(());
    }
    if running.lock().await.contains_key(&uid) {
        return Ok(());
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    if matches!(phase.as_deref(), Some("Failed" | "Succeeded")) {
        return Ok(());
    }
    let started = start_pod(client, o, pod).await?;
    let ip = started.ip;
    running.lock().await.insert(uid, started);
    write_hosts(o, running).await?;
    report_running(client, pod, ip, false, &BTreeMap::new()).await?;
    Ok(())
}

async fn start_pod(
    client: &kube::Client,
    o: &DevletOptions,
    pod: &Pod,
) -> anyhow::Result<RunningPod> {
    let spec = pod.spec.clone().context("pod without spec")?;
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
    let ip = loopback_ips(1, &ports)?[0];

    // Volumes: name → local directory.
    let mut volumes: BTreeMap<String, PathBuf> = BTreeMap::new();
    for v in spec.volumes.clone().unwrap_or_default() {
        let vdir = dir.join("volumes").join(&v.name);
        if let Some(cm) = &v.config_map {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            let cm = api
                .get(&cm.name)
                .await
                .with_context(|| format!("ConfigMap {}", cm.name))?;
            std::fs::create_dir_all(&vdir)?;
            for (k, text) in cm.data.unwrap_or_default() {
                std::fs::write(vdir.join(k), text)?;
            }
        } else if let Some(secret) = &v.secret {
            let secret_name = secret.secret_name.clone().unwrap_or_default();
            let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
            let s = api
                .get(&secret_name)
                .await
                .with_context(|| format!("Secret {secret_name}"))?;
            std::fs::create_dir_all(&vdir)?;
            for (k, bytes) in s.data.unwrap_or_default() {
                std::fs::write(vdir.join(k), bytes.0)?;
            }
        } else if let Some(claim) = &v.persistent_volume_claim {
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
            let c = claims.get(&claim.claim_name).await?;
            let pv_name = c
                .spec
                .and_then(|s| s.volume_name)
                .context("claim not bound")?;
            let pv = Api::<PersistentVolume>::all(client.clone())
                .get(&pv_name)
                .await?;
            let path = pv
                .spec
                .and_then(|s| s.host_path)
                .context("volume is not a local directory")?
                .path;
            volumes.insert(v.name.clone(), PathBuf::from(path));
            continue;
        } else if let Some(d) = &v.downward_api {
            std::fs::create_dir_all(&vdir)?;
            for item in d.items.clone().unwrap_or_default() {
                let field = item.field_ref.map(|f| f.field_path).unwrap_or_default();
                let value = match field.as_str() {
                    "metadata.name" => pod.name_any(),
                    "metadata.namespace" => ns.clone(),
                    "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
                    "metadata.labels" => format_map(pod.labels()),
                    "metadata.annotations" => format_map(pod.annotations()),
                    _ => String::new(),
                };
                std::fs::write(vdir.join(&item.path), value)?;
            }
        } else {
            // emptyDir and anything else: a fresh directory.
            std::fs::create_dir_all(&vdir)?;
        }
        volumes.insert(v.name.clone(), vdir);
    }

    let hostname = spec.hostname.clone().unwrap_or_else(|| name.clone());
    let mut dns_names = vec![hostname.clone()];
    if let Some(sub) = &spec.subdomain {
        dns_names.push(format!("{hostname}.{sub}.{ns}.svc.cluster.local"));
        dns_names.push(format!("{hostname}.{sub}.{ns}.svc"));
    }
    let grace = Duration::from_secs(
        spec.termination_grace_period_seconds
            .unwrap_or(30)
            .clamp(1, 120) as u64,
    );
    let mut containers = Vec::new();
    for c in &spec.containers {
        let mounts: Vec<(String, PathBuf)> = c
            .volume_mounts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| volumes.get(&m.name).map(|d| (m.mount_path, d.clone())))
            .collect();
        let mut rc = RunningContainer {
            spec: c.clone(),
            mounts,
            process: None,
            restarts: 0,
            grace,
        };
        rc.spawn(o, pod, ip, &dir)?;
        containers.push(rc);
    }
    let readiness = spec
        .containers
        .first()
        .and_then(|c| c.readiness_probe.clone())
        .map(|probe| {
            use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
            let port = |p: &IntOrString| match p {
                IntOrString::Int(n) => u16::try_from(*n).unwrap_or(0),
                IntOrString::String(_) => 0,
            };
            if let Some(t) = &probe.tcp_socket {
                Readiness::Tcp(port(&t.port))
            } else if let Some(h) = &probe.http_get {
                Readiness::Http(port(&h.port), h.path.clone().unwrap_or_else(|| "/".into()))
            } else if let Some(e) = &probe.exec {
                Readiness::Exec(e.command.clone().unwrap_or_default())
            } else {
                Readiness::Always
            }
        })
        .unwrap_or(Readiness::Always);
    tracing::info!(pod = %name, %ip, "started");
    Ok(RunningPod {
        pod: pod.clone(),
        name,
        ip,
        dir,
        dns_names,
        containers,
        readiness,
        ready: false,
        restart_policy: spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into()),
    })
}

/// `key="value"` lines, as the kubelet writes labels and annotations.
fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter().map(|(k, v)| format!("{k}={v:?}\n")).collect()
}

/// Rewrites a path of the container's filesystem to the local directory it is mounted from.
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

fn env_of(pod: &Pod, c: &Container) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for e in c.env.clone().unwrap_or_default() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("metadata.name") => pod.name_any(),
                Some("metadata.namespace") => pod.namespace().unwrap_or_default(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        env.insert(e.name, value);
    }
    env
}

/// `$(VAR)` expansion, as the kubelet does for command and args.
fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

/// The local command for a container, by image.
fn launcher(
    o: &DevletOptions,
    pod: &Pod,
    c: &Container,
    ip: Ipv4Addr,
    mounts: &[(String, PathBuf)],
    dir: &Path,
) -> anyhow::Result<Command> {
    let image = c.image.clone().unwrap_or_default();
    let env = env_of(pod, c);
    let script = c.command.clone().unwrap_or_default().join(" ")
        + " "
        + &c.args.clone().unwrap_or_default().join(" ");
    if image.contains("kafka") {
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
        let mut cmd = Command::new(program("kafka-node")?);
        cmd.arg(&local).envs(&env).env("KAFKA_LOG_DIR", dir).env(
            "KAFKA_JVM_OPTS",
            format!(
                "-Djdk.net.hosts.file={} -Dsun.net.inetaddr.ttl=1 -Dsun.net.inetaddr.negative.ttl=1",
                o.root.join("hosts").display()
            ),
        );
        return Ok(cmd);
    }
    if image.contains("envoy") {
        let args: Vec<String> = c
            .args
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|a| map_path(&expand(a, &env), mounts))
            .collect();
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
        let pier = std::env::var_os("PIER_BINARY")
            .map(PathBuf::from)
            .context("the Pier image needs PIER_BINARY (the pier binary to run)")?;
        let mut cmd = Command::new(pier);
        cmd.args(
            c.args
                .clone()
                .unwrap_or_default()
                .iter()
                .map(|a| expand(a, &env)),
        )
        .envs(&env);
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
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

async fn write_hosts(o: &DevletOptions, running: &Pods) -> anyhow::Result<()> {
    let mut text = String::from("127.0.0.1 localhost\n");
    for p in running.lock().await.values() {
        text.push_str(&format!("{} {}\n", p.ip, p.dns_names.join(" ")));
    }
    let path = o.root.join("hosts");
    let tmp = o.root.join("hosts.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)?;
    Ok(())
}

async fn report_running(
    client: &kube::Client,
    pod: &Pod,
    ip: Ipv4Addr,
    ready: bool,
    restarts: &BTreeMap<String, u32>,
) -> anyhow::Result<()> {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let ready_s = if ready { "True" } else { "False" };
    let statuses: Vec<serde_json::Value> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image, "imageID": "", "ready": ready, "started": true,
                "restartCount": restarts.get(&c.name).copied().unwrap_or(0), "state": {"running": {"startedAt": now}},
            })
        })
        .collect();
    let status = json!({"status": {
        "phase": "Running",
        "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}],
        "hostIP": "127.0.0.1", "startTime": now,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": ready_s, "lastTransitionTime": now},
            {"type": "Ready", "status": ready_s, "lastTransitionTime": now},
        ],
        "containerStatuses": statuses,
    }});
    patch_status(client, pod, status).await
}

async fn fail_pod(client: &kube::Client, pod: &Pod, message: &str) -> anyhow::Result<()> {
    let status =
        json!({"status": {"phase": "Failed", "reason": "DevletCannotRun", "message": message}});
    patch_status(client, pod, status).await
}

async fn patch_status(
    client: &kube::Client,
    pod: &Pod,
    status: serde_json::Value,
) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    api.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(status),
    )
    .await?;
    Ok(())
}

/// Restarts (per restartPolicy) and readiness probes, every second.
async fn probe_loop(client: kube::Client, o: DevletOptions, running: Pods) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut changes = Vec::new();
        {
            let mut pods = running.lock().await;
            for p in pods.values_mut() {
                let mut restarted = false;
                for c in p.containers.iter_mut() {
                    let Some(status) = c.process.as_mut().and_then(Process::try_exit) else {
                        continue;
                    };
                    let again = match p.restart_policy.as_str() {
                        "Never" => false,
                        "OnFailure" => !status.success(),
                        _ => true,
                    };
                    tracing::warn!(pod = %p.name, container = %c.spec.name, %status, restart = again, "container exited");
                    c.process = None;
                    if again {
                        c.restarts += 1;
                        if let Err(e) = c.spawn(&o, &p.pod, p.ip, &p.dir) {
                            tracing::warn!(pod = %p.name, error = %e, "cannot restart container");
                        }
                        restarted = true;
                    }
                }
                let alive = p.containers.iter().all(|c| c.process.is_some());
                let ready = alive && probe(&p.readiness, p.ip);
                if ready != p.ready || restarted {
                    p.ready = ready;
                    let restarts = p
                        .containers
                        .iter()
                        .map(|c| (c.spec.name.clone(), c.restarts))
                        .collect();
                    changes.push((p.pod.clone(), p.ip, ready, restarts));
                }
            }
        }
        for (pod, ip, ready, restarts) in changes {
            let _ = report_running(&client, &pod, ip, ready, &restarts).await;
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
        Readiness::Exec(cmd) => match cmd.split_first() {
            Some((prog, args)) => Command::new(prog)
                .args(args)
                .status()
                .is_ok_and(|s| s.success()),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let text = "node.id=1\nlisteners=INTERNAL://:9092,CONTROLLER://:9093\nlog.dirs=/var/lib/kafka/data0/kafka\n";
        let out = rewrite_kafka_properties(text, Ipv4Addr::new(127, 9, 0, 1), &mounts);
        assert!(out.contains("listeners=INTERNAL://127.9.0.1:9092,CONTROLLER://127.9.0.1:9093"));
        assert!(out.contains("log.dirs=/tmp/v/pvc-1/kafka"));
        assert!(out.contains("node.id=1"));
        let env = BTreeMap::from([("POD_NAME".to_string(), "envoy-0".to_string())]);
        assert_eq!(
            expand("--service-node=$(POD_NAME)", &env),
            "--service-node=envoy-0"
        );
    }
}
