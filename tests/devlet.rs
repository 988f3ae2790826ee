//! The dev node agent against a real control plane: its Node stays Ready with a fresh Lease, the
//! real scheduler binds Pods to it, and its provisioner's volumes are bound by the real PV binder.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use pier_testenv::devlet::{self, DevletOptions, STORAGE_CLASS};
use pier_testenv::{ControlPlane, LogDir, wait_for};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

/// An Envoy bootstrap with one TCP listener on all addresses at `port`.
fn bootstrap(port: u16) -> String {
    format!(
        "static_resources:
  listeners:
  - name: probe
    address: {{socket_address: {{address: 0.0.0.0, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: probe
          cluster: none
  clusters:
  - {{name: none, type: STATIC, connect_timeout: 1s, load_assignment: {{cluster_name: none}}}}
"
    )
}

/// An Envoy Pod reading `/etc/envoy/<file>` from ConfigMap `config_map`, Ready by a TCP probe
/// on `port`.
fn envoy_pod(name: &str, config_map: &str, file: &str, port: u16) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "envoy", "image": "envoyproxy/envoy:v1.40.0",
                "args": ["-c", format!("/etc/envoy/{file}"), "--service-node", "$(POD_NAME)"],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "ports": [{"containerPort": port}],
                "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "volumeMounts": [{"name": "cfg", "mountPath": "/etc/envoy"}]}],
            "volumes": [{"name": "cfg", "configMap": {"name": config_map}}],
        },
    }))?)
}

fn config_map(name: &str, file: &str, text: &str) -> anyhow::Result<ConfigMap> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name}, "data": {file: text},
    }))?)
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The reason of a Pod's Ready condition.
fn ready_reason(p: &Pod) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?
        .reason
        .clone()
}

#[tokio::test]
async fn devlet_node_volumes_and_scheduling() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("devlet")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    let mut options = DevletOptions::new("dev-a", logs.data("devlet")?);
    options.zone = Some("zone-a".into());
    options.heartbeat_every = Duration::from_secs(1);
    let devlet = tokio::spawn(devlet::run(client.clone(), options.clone()));

    // The Node is Ready, labelled with its zone, and its Lease is renewed.
    let nodes: Api<Node> = Api::all(client.clone());
    let node = wait_for("Node dev-a to be Ready", WAIT, POLL, || async {
        let n = nodes.get("dev-a").await.ok()?;
        let ready = n
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(n)
    })
    .await?;
    assert_eq!(
        node.metadata.labels.context("labels")?["topology.kubernetes.io/zone"],
        "zone-a"
    );
    // A container that keeps crashing (an Envoy with a broken bootstrap), started now so its
    // back-off runs while the rest is checked.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &config_map("bad-cfg", "bad.yaml", "static_resources: {listeners: 7}\n")?,
    )
    .await?;
    pods.create(
        &PostParams::default(),
        &envoy_pod("crasher", "bad-cfg", "bad.yaml", 24002)?,
    )
    .await?;
    let crash_loop = tokio::spawn(watch_crash_loop(pods.clone(), "crasher", 3));

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renewed = |l: Lease| l.spec.and_then(|s| s.renew_time).map(|t| t.0);
    let first = wait_for("the node Lease", WAIT, POLL, || async {
        renewed(leases.get("dev-a").await.ok()?)
    })
    .await?;
    wait_for("the node Lease to be renewed", WAIT, POLL, || async {
        (renewed(leases.get("dev-a").await.ok()?)? > first).then_some(())
    })
    .await?;

    // A claim of the devlet's class waits for its first consumer: the real scheduler places a
    // Pod that uses it on the devlet's node, the devlet of that node makes the volume, and
    // kube-controller-manager binds it.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {"storageClassName": STORAGE_CLASS, "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}},
    }))?;
    claims.create(&PostParams::default(), &claim).await?;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "user"},
        "spec": {
            "containers": [{"name": "c", "image": "apache/kafka:4.1.2",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        },
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let node_name = wait_for("the Pod to be scheduled", WAIT, POLL, || async {
        pods.get("user").await.ok()?.spec?.node_name
    })
    .await?;
    assert_eq!(node_name, "dev-a");
    let bound = wait_for("the claim to be Bound", WAIT, POLL, || async {
        let c = claims.get("data").await.ok()?;
        (c.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(c)
    })
    .await?;
    let pv_name = bound
        .spec
        .and_then(|s| s.volume_name)
        .context("volume name")?;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs.get(&pv_name).await?;
    let dir = pv.spec.and_then(|s| s.host_path).context("hostPath")?.path;
    assert!(std::path::Path::new(&dir).is_dir(), "{dir} exists");

    // An Envoy Pod runs as a local process on its own loopback address, becomes Ready by its
    // TCP probe, and is restarted when it dies.
    cms.create(
        &PostParams::default(),
        &config_map("envoy-cfg", "bootstrap.yaml", &bootstrap(24000))?,
    )
    .await?;
    let envoy = envoy_pod("envoy", "envoy-cfg", "bootstrap.yaml", 24000)?;
    pods.create(&PostParams::default(), &envoy).await?;
    let ready_pod = |restarts: i32| {
        let pods = pods.clone();
        async move {
            let p = pods.get("envoy").await.ok()?;
            let status = p.status?;
            let ready = status
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let count = status.container_statuses?.first()?.restart_count;
            (ready && count == restarts).then_some(status.pod_ip?)
        }
    };
    let ip = wait_for("the Envoy Pod to be Ready", WAIT, POLL, || ready_pod(0)).await?;
    let ip: std::net::Ipv4Addr = ip.parse()?;
    assert!(
        ip.is_loopback() && ip != std::net::Ipv4Addr::LOCALHOST,
        "its own loopback address: {ip}"
    );
    let uid = pods.get("envoy").await?.metadata.uid.context("uid")?;
    let pid = pid_of(&format!("default_envoy_{uid}"))?;
    // SAFETY: kill(2) on the Envoy this Pod runs, found by its Pod directory.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for("Envoy to be restarted and Ready again", WAIT, POLL, || {
        ready_pod(1)
    })
    .await?;

    // The crashing container: restarted at once the first time, then after 10 s, then 20 s
    // (the kubelet's back-off), waiting in CrashLoopBackOff meanwhile, with how its last run
    // ended (exit code, reason, the end of its log as the message). The Pod stays Running.
    let crash_loop = crash_loop.await??;
    let first = crash_loop.runs.get(&0).or(crash_loop.runs.get(&1));
    let first = first.context("a run seen")?;
    assert_eq!(first.exit_code, 1, "{first:?}");
    assert_eq!(first.reason.as_deref(), Some("Error"));
    let message = first.message.clone().unwrap_or_default();
    assert!(
        message.contains("bad.yaml"),
        "the message is the end of Envoy's log: {message}"
    );
    // The first restart comes without a back-off: no back-off was ever reported while the
    // container had not been restarted yet (a behaviour, not a timing, so load cannot fail it).
    let early_back_off: Vec<_> = crash_loop
        .waiting
        .iter()
        .filter(|(restarts, m)| *restarts == 0 && m.contains("back-off"))
        .collect();
    assert!(
        early_back_off.is_empty(),
        "the first restart is at once: {early_back_off:?}"
    );
    for (run, delay) in [(1, 10.0), (2, 20.0)] {
        let (a, b) = (&crash_loop.runs[&run], &crash_loop.runs[&(run + 1)]);
        let gap = b.started_at.duration_since(a.finished_at).as_secs_f64();
        assert!(
            (delay - 0.5..delay + 8.0).contains(&gap),
            "run {} started {gap:.1} s after run {run} ended, not about {delay} s: {:?}",
            run + 1,
            crash_loop.runs
        );
    }
    for want in ["back-off 10s", "back-off 20s"] {
        assert!(
            crash_loop.waiting.iter().any(|(_, m)| m.contains(want)),
            "{want} in {:?}",
            crash_loop.waiting
        );
    }
    pods.delete("crasher", &Default::default()).await?;

    // An image without a local launcher fails the Pod with a clear reason.
    let unknown: Pod = serde_json::from_value(json!({
        "metadata": {"name": "mystery"},
        "spec": {"containers": [{"name": "c", "image": "example.invalid/mystery:1"}]},
    }))?;
    pods.create(&PostParams::default(), &unknown).await?;
    let message = wait_for("the unknown image to fail", WAIT, POLL, || async {
        let s = pods.get("mystery").await.ok()?.status?;
        (s.phase.as_deref() == Some("Failed")).then_some(s.message.unwrap_or_default())
    })
    .await?;
    assert!(message.contains("no local launcher"), "{message}");

    // Deleting a Pod stops its process and removes it.
    pods.delete("envoy", &kube::api::DeleteParams::default())
        .await?;
    wait_for("the Envoy Pod to be gone", WAIT, POLL, || async {
        matches!(pods.get_opt("envoy").await, Ok(None)).then_some(())
    })
    .await?;
    assert!(
        std::net::TcpStream::connect_timeout(&(ip, 24000).into(), Duration::from_millis(500))
            .is_err(),
        "its listener is closed"
    );

    // A Pod whose ports are taken on every address (by a process on 0.0.0.0, like an Envoy of
    // an earlier Pod still stopping) stays Pending with the reason, not Failed, and starts
    // once the port is free.
    let holder = std::net::TcpListener::bind(("0.0.0.0", 24000))?;
    pods.create(
        &PostParams::default(),
        &envoy_pod("envoy-2", "envoy-cfg", "bootstrap.yaml", 24000)?,
    )
    .await?;
    let pending = wait_for("envoy-2 Pending with PortsInUse", WAIT, POLL, || async {
        let p = pods.get("envoy-2").await.ok()?;
        (ready_reason(&p).as_deref() == Some("PortsInUse")).then_some(p)
    })
    .await?;
    let status = pending.status.clone().unwrap_or_default();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let waiting = status
        .container_statuses
        .unwrap_or_default()
        .first()
        .and_then(|c| c.state.clone()?.waiting)
        .context("a waiting container")?;
    assert_eq!(waiting.reason.as_deref(), Some("PortsInUse"));
    assert!(
        waiting.message.unwrap_or_default().contains("24000"),
        "the message names the port"
    );
    // Several retries later it is still the same Pending Pod.
    let uid = pending.metadata.uid.clone();
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < until {
        let p = pods.get("envoy-2").await?;
        let phase = p.status.and_then(|s| s.phase);
        assert_eq!(phase.as_deref(), Some("Pending"), "still Pending");
        assert_eq!(p.metadata.uid, uid);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(holder);
    wait_for(
        "envoy-2 to start once the port is free",
        WAIT,
        POLL,
        || async { pod_ready(&pods.get("envoy-2").await.ok()?).then_some(()) },
    )
    .await?;

    // A Pod whose ConfigMap does not exist yet waits for it (Pending) and then starts.
    pods.create(
        &PostParams::default(),
        &envoy_pod("late", "late-cfg", "bootstrap.yaml", 24001)?,
    )
    .await?;
    let message = wait_for("late Pending for its ConfigMap", WAIT, POLL, || async {
        let p = pods.get("late").await.ok()?;
        let s = p.status.as_ref()?;
        let c = s.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
        (s.phase.as_deref() == Some("Pending") && c.reason.as_deref() == Some("ContainerCreating"))
            .then(|| c.message.clone().unwrap_or_default())
    })
    .await?;
    assert!(message.contains("late-cfg"), "{message}");
    cms.create(
        &PostParams::default(),
        &config_map("late-cfg", "bootstrap.yaml", &bootstrap(24001))?,
    )
    .await?;
    wait_for(
        "late to start once its ConfigMap exists",
        WAIT,
        POLL,
        || async { pod_ready(&pods.get("late").await.ok()?).then_some(()) },
    )
    .await?;

    assert!(!devlet.is_finished(), "the devlet keeps running");
    devlet.abort();
    Ok(())
}

/// The PID of the process whose command line contains `needle` (a Pod's directory).
fn pid_of(needle: &str) -> anyhow::Result<i32> {
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            return Ok(pid);
        }
    }
    anyhow::bail!("no process with {needle} in its command line")
}

/// One run of a container, from `lastState.terminated`.
#[derive(Debug, Clone)]
struct Run {
    started_at: Timestamp,
    finished_at: Timestamp,
    exit_code: i32,
    reason: Option<String>,
    message: Option<String>,
}

/// What a crash loop looked like.
#[derive(Debug)]
struct CrashLoop {
    /// Runs by index (0 = the first start), as far as they were seen.
    runs: BTreeMap<i32, Run>,
    /// Every `waiting` message seen, with the restart count it was seen at.
    waiting: BTreeSet<(i32, String)>,
}

/// Polls the Pod's first container until `runs` + 1 runs have started, recording every run
/// (`lastState.terminated`) and waiting message; the Pod must stay Running, not Ready.
async fn watch_crash_loop(
    pods: Api<Pod>,
    name: &'static str,
    restarts: i32,
) -> anyhow::Result<CrashLoop> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut runs = BTreeMap::new();
    let mut waiting = BTreeSet::new();
    loop {
        let p = pods.get(name).await?;
        let Some(status) = p.status.clone().filter(|s| s.start_time.is_some()) else {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{name} never started"
            );
            tokio::time::sleep(POLL).await;
            continue;
        };
        let c = status
            .container_statuses
            .clone()
            .unwrap_or_default()
            .into_iter()
            .next()
            .context("a container status")?;
        let state = c.state.clone().unwrap_or_default();
        if let Some(w) = &state.waiting {
            waiting.insert((
                c.restart_count,
                format!(
                    "{}: {}",
                    w.reason.clone().unwrap_or_default(),
                    w.message.clone().unwrap_or_default()
                ),
            ));
        }
        // In back-off lastState is the run that just ended; while running, the one before.
        let index = if state.running.is_some() {
            c.restart_count - 1
        } else {
            c.restart_count
        };
        if let Some(t) = c.last_state.as_ref().and_then(|l| l.terminated.as_ref()) {
            anyhow::ensure!(
                status.phase.as_deref() == Some("Running") && !pod_ready(&p),
                "a crash-looping Pod is Running and not Ready: {status:?}"
            );
            runs.insert(
                index,
                Run {
                    started_at: t.started_at.clone().context("startedAt")?.0,
                    finished_at: t.finished_at.clone().context("finishedAt")?.0,
                    exit_code: t.exit_code,
                    reason: t.reason.clone(),
                    message: t.message.clone(),
                },
            );
        }
        // Run `restarts` has started: seen as lastState once it ended (it crashes at once).
        if runs.contains_key(&restarts) && (1..=restarts).all(|r| runs.contains_key(&r)) {
            return Ok(CrashLoop { runs, waiting });
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{name} did not restart {restarts} times: runs {runs:?}, waiting {waiting:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The directory of a Pod the devlet runs (`<root>/pods/<ns>_<name>_<uid>`).
async fn pod_dir(
    pods: &Api<Pod>,
    root: &std::path::Path,
    name: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let uid = pods.get(name).await?.metadata.uid.context("uid")?;
    Ok(root.join("pods").join(format!("default_{name}_{uid}")))
}

/// The environment of the process that has `needle` in its environment.
fn environ_with(needle: &str) -> anyhow::Result<BTreeMap<String, String>> {
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().parse::<i32>().is_err() {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let environ = String::from_utf8_lossy(&environ);
        if environ.split('\0').any(|kv| kv == needle) {
            return Ok(environ
                .split('\0')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect());
        }
    }
    anyhow::bail!("no process with {needle} in its environment")
}

/// A Pod of Pier's image as the chart makes it: named ports, readiness on `port: metrics`,
/// listening on all addresses, run as ServiceAccount `sa`.
fn pier_pod(name: &str, sa: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "pier"}},
        "spec": {
            "serviceAccountName": sa,
            "containers": [{"name": "pier", "image": "ghcr.io/pier-dev/pier:test",
                "args": ["operator", "--xds-listen=0.0.0.0:24020", "--metrics-listen=0.0.0.0:24021",
                         "--namespace=default", "--leader-election-lease-duration=6s",
                         "--leader-election-renew-deadline=4s", "--leader-election-retry-period=1s"],
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                ],
                "ports": [{"name": "xds", "containerPort": 24020}, {"name": "metrics", "containerPort": 24021}],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 1}}],
        },
    }))?)
}

/// Pier's Pods as the chart's Deployment makes them run from Pier's image (an OCI archive as
/// `make image` writes it, whose `/pier` says it ran and then runs this build's operator) as
/// their ServiceAccount: the ServiceAccount admission plugin's `kube-api-access-*` volume is
/// filled (a token from the TokenRequest API, `kube-root-ca.crt`, the namespace), the operator
/// gets a kubeconfig of them and the apiserver's address, readiness is probed on the port
/// named `metrics`, two replicas listening on 0.0.0.0 both run, and a ServiceAccount without
/// rights is refused (RBAC holds).
#[tokio::test]
async fn devlet_runs_pier_from_its_image_as_its_service_account() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    use std::os::unix::fs::PermissionsExt;

    let logs = LogDir::for_current_test("devlet-pier")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();

    // The image: /pier announces itself and runs the operator built with this test.
    let work = logs.data("image")?;
    let script = work.join("pier");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"pier from the image: $0\"\nexec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_pier")
        ),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    let archive = work.join("pier-image.tar");
    let out = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/dev/image"))
        .arg("--binary")
        .arg(&script)
        .arg("--out")
        .arg(&archive)
        .args(["--tag", "ghcr.io/pier-dev/pier:test"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "dev/image: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let root = logs.data("devlet")?;
    let mut options = DevletOptions::new("dev-a", root.clone());
    options.pier_image = archive;
    let devlet = tokio::spawn(devlet::run(client.clone(), options));

    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    for sa in ["pier", "nobody"] {
        let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": sa}}))?;
        sas.create(&PostParams::default(), &account).await?;
    }
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "pier-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "pier", "namespace": "default"}],
    }))?;
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await?;

    let mark = plane.audit_mark()?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pier_pod("pier-0", "pier")?)
        .await?;
    pods.create(&PostParams::default(), &pier_pod("pier-1", "nobody")?)
        .await?;
    wait_for(
        "pier-0 to be Ready",
        Duration::from_secs(90),
        POLL,
        || async { pod_ready(&pods.get("pier-0").await.ok()?).then_some(()) },
    )
    .await?;

    // It ran the image's /pier.
    let dir = pod_dir(&pods, &root, "pier-0").await?;
    let log = std::fs::read_to_string(dir.join("pier.log"))?;
    assert!(log.contains("pier from the image"), "{log}");

    // The admission plugin's volume, filled as a kubelet fills it.
    let pod = pods.get("pier-0").await?;
    let volume = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default()
        .into_iter()
        .find(|v| v.name.starts_with("kube-api-access-") && v.projected.is_some())
        .context("the ServiceAccount admission plugin's projected volume")?;
    let vdir = dir.join("volumes").join(&volume.name);
    let token = vdir.join("token");
    assert!(!std::fs::read_to_string(&token)?.trim().is_empty());
    assert_eq!(
        std::fs::metadata(&token)?.permissions().mode() & 0o777,
        0o644,
        "defaultMode 420"
    );
    assert_eq!(std::fs::read_to_string(vdir.join("namespace"))?, "default");
    let root_ca = Api::<ConfigMap>::namespaced(client.clone(), "default")
        .get("kube-root-ca.crt")
        .await?;
    assert_eq!(
        Some(std::fs::read_to_string(vdir.join("ca.crt"))?),
        root_ca.data.context("data")?.get("ca.crt").cloned()
    );

    // The operator's environment: the apiserver, and a kubeconfig of the projected files.
    let kubeconfig = dir.join("kubeconfig");
    let env = environ_with(&format!("KUBECONFIG={}", kubeconfig.display()))?;
    let server: url::Url = plane.server_url().parse()?;
    assert_eq!(
        env.get("KUBERNETES_SERVICE_HOST").map(String::as_str),
        server.host_str()
    );
    assert_eq!(
        env.get("KUBERNETES_SERVICE_PORT").cloned(),
        server.port().map(|p| p.to_string())
    );
    let config = std::fs::read_to_string(&kubeconfig)?;
    assert!(
        config.contains(&format!("tokenFile: {}", token.display())),
        "{config}"
    );

    // Every request of the operator was made as its ServiceAccount; the replica whose
    // ServiceAccount has no rights is refused.
    wait_for("pier-1 to be refused", WAIT, POLL, || async {
        let refused = plane
            .audit_refused("system:serviceaccount:default:nobody", &mark)
            .ok()?;
        (!refused.is_empty()).then_some(())
    })
    .await?;
    let events = plane.audit_events(&mark, None)?;
    let by_pier: Vec<_> = events
        .iter()
        .filter(|e| e.user == "system:serviceaccount:default:pier")
        .collect();
    assert!(
        by_pier
            .iter()
            .any(|e| e.resource == "leases" && e.code < 300),
        "the operator took its Lease as its ServiceAccount: {:?}",
        by_pier.iter().map(|e| e.summary()).collect::<Vec<_>>()
    );
    assert!(
        by_pier.iter().all(|e| e.code != 403),
        "{:?}",
        by_pier.iter().map(|e| e.summary()).collect::<Vec<_>>()
    );
    assert!(!devlet.is_finished(), "the devlet keeps running");
    devlet.abort();
    Ok(())
}

/// An Envoy answering every HTTP request on `port` (all addresses) with `body`.
fn web_bootstrap(port: u16, body: &str) -> String {
    format!(
        "static_resources:
  listeners:
  - name: web
    address: {{socket_address: {{address: 0.0.0.0, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
          route_config:
            virtual_hosts:
            - name: all
              domains: [\"*\"]
              routes:
              - match: {{prefix: /}}
                direct_response: {{status: 200, body: {{inline_string: {body}}}}}
"
    )
}

/// An Envoy forwarding TCP on `port` to `upstream` (`host:port`, resolved by Envoy's DNS).
fn client_bootstrap(port: u16, host: &str, upstream_port: u16) -> String {
    format!(
        "static_resources:
  listeners:
  - name: out
    address: {{socket_address: {{address: 0.0.0.0, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: out
          cluster: web
  clusters:
  - name: web
    type: STRICT_DNS
    connect_timeout: 1s
    load_assignment:
      cluster_name: web
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {host}, port_value: {upstream_port}}}}}}}
"
    )
}

/// An Envoy Pod with labels, its port named `http`, Ready by a TCP probe on that name.
fn named_port_pod(
    name: &str,
    labels: serde_json::Value,
    config_map: &str,
    port: u16,
) -> anyhow::Result<Pod> {
    let mut pod = envoy_pod(name, config_map, "bootstrap.yaml", port)?;
    pod.metadata.labels = serde_json::from_value(labels)?;
    let c = &mut pod.spec.as_mut().context("spec")?.containers[0];
    c.ports = serde_json::from_value(json!([{"name": "http", "containerPort": port}]))?;
    c.readiness_probe =
        serde_json::from_value(json!({"tcpSocket": {"port": "http"}, "periodSeconds": 1}))?;
    Ok(pod)
}

/// The body of `GET /` at `addr`, if it answers.
async fn http_get(addr: std::net::SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out).to_string();
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

/// The address the devlet's hosts file gives `name`.
fn hosts_address(root: &std::path::Path, name: &str) -> Option<std::net::Ipv4Addr> {
    let hosts = std::fs::read_to_string(root.join("hosts")).ok()?;
    hosts
        .lines()
        .find(|l| l.split_whitespace().skip(1).any(|n| n == name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The devlet's Service proxy: a ClusterIP Service gets an address of its own (in the hosts
/// file and in an Envoy bootstrap that names the Service; such an Envoy waits, Pending, until
/// the Service is there), and new connections go to its ready endpoint through the named target
/// port; when the selector's label moves to another Pod, new connections reach that one at the
/// same address. The Pods are Ready by probes on a named port.
#[tokio::test]
async fn devlet_proxies_services_to_their_ready_endpoints() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Patch, PatchParams};

    let logs = LogDir::for_current_test("devlet-services")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    let root = logs.data("devlet")?;
    let devlet = tokio::spawn(devlet::run(
        client.clone(),
        DevletOptions::new("dev-a", root.clone()),
    ));
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for (name, port) in [("a", 24030), ("b", 24031)] {
        cms.create(
            &PostParams::default(),
            &config_map(
                &format!("web-{name}"),
                "bootstrap.yaml",
                &web_bootstrap(port, name),
            )?,
        )
        .await?;
        let serving = if name == "a" { "yes" } else { "no" };
        pods.create(
            &PostParams::default(),
            &named_port_pod(
                &format!("web-{name}"),
                json!({"app": "web", "serving": serving}),
                &format!("web-{name}"),
                port,
            )?,
        )
        .await?;
    }
    // An Envoy whose bootstrap names a Service that is not there yet waits for it, Pending.
    cms.create(
        &PostParams::default(),
        &config_map(
            "web-client",
            "bootstrap.yaml",
            &client_bootstrap(24033, "web.default.svc", 24032),
        )?,
    )
    .await?;
    pods.create(
        &PostParams::default(),
        &envoy_pod("web-client", "web-client", "bootstrap.yaml", 24033)?,
    )
    .await?;
    let message = wait_for("web-client Pending for its Service", WAIT, POLL, || async {
        let p = pods.get("web-client").await.ok()?;
        let s = p.status.as_ref()?;
        let c = s.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
        (s.phase.as_deref() == Some("Pending")).then(|| c.message.clone().unwrap_or_default())
    })
    .await?;
    assert!(message.contains("web.default.svc"), "{message}");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web", "serving": "yes"},
                 "ports": [{"name": "http", "port": 24032, "targetPort": "http"}]},
    }))?;
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &service)
        .await?;
    // Ready by probes on the port named `http`.
    for name in ["web-a", "web-b"] {
        wait_for(&format!("{name} to be Ready"), WAIT, POLL, || async {
            pod_ready(&pods.get(name).await.ok()?).then_some(())
        })
        .await?;
    }
    let ip = wait_for("web.default.svc in the hosts file", WAIT, POLL, || async {
        hosts_address(&root, "web.default.svc")
    })
    .await?;
    assert_eq!(
        hosts_address(&root, "web.default.svc.cluster.local"),
        Some(ip)
    );
    let proxy = std::net::SocketAddr::from((ip, 24032));
    wait_for("the proxy to reach web-a", WAIT, POLL, || async {
        (http_get(proxy).await? == "a").then_some(())
    })
    .await?;

    // An Envoy whose bootstrap names the Service reaches it through the proxy.
    let client_ip: std::net::Ipv4Addr = wait_for("web-client to be Ready", WAIT, POLL, || async {
        let p = pods.get("web-client").await.ok()?;
        pod_ready(&p).then_some(())?;
        p.status?.pod_ip?.parse().ok()
    })
    .await?;
    let through_envoy = std::net::SocketAddr::from((client_ip, 24033));
    wait_for(
        "Envoy to reach web-a by the Service's name",
        WAIT,
        POLL,
        || async { (http_get(through_envoy).await? == "a").then_some(()) },
    )
    .await?;

    // The label moves: new connections reach web-b, at the same address.
    for (name, serving) in [("web-a", "no"), ("web-b", "yes")] {
        pods.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"serving": serving}}})),
        )
        .await?;
    }
    wait_for("the proxy to reach web-b", WAIT, POLL, || async {
        for _ in 0..3 {
            if http_get(proxy).await? != "b" {
                return None;
            }
        }
        Some(())
    })
    .await?;
    assert_eq!(
        hosts_address(&root, "web.default.svc"),
        Some(ip),
        "the address stays"
    );
    wait_for("Envoy to reach web-b", WAIT, POLL, || async {
        (http_get(through_envoy).await? == "b").then_some(())
    })
    .await?;
    assert!(!devlet.is_finished(), "the devlet keeps running");
    devlet.abort();
    Ok(())
}

/// Liveness probes as a kubelet runs them: a container whose probe (on a named port) fails
/// `failureThreshold` times in a row is stopped and restarted; one that passes is left alone.
#[tokio::test]
async fn devlet_restarts_a_container_whose_liveness_probe_fails() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("devlet-liveness")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    let devlet = tokio::spawn(devlet::run(
        client.clone(),
        DevletOptions::new("dev-a", logs.data("devlet")?),
    ));
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // Each Envoy listens on `port`; its liveness probe is on the port named `health`.
    for (name, port, health) in [("alive", 24040, 24040), ("unwell", 24041, 24042)] {
        cms.create(
            &PostParams::default(),
            &config_map(name, "bootstrap.yaml", &bootstrap(port))?,
        )
        .await?;
        let mut pod = envoy_pod(name, name, "bootstrap.yaml", port)?;
        let c = &mut pod.spec.as_mut().context("spec")?.containers[0];
        c.ports = serde_json::from_value(json!([
            {"name": "listener", "containerPort": port},
            {"name": "health", "containerPort": health},
        ]))?;
        c.liveness_probe = serde_json::from_value(json!({
            "tcpSocket": {"port": "health"}, "periodSeconds": 1, "failureThreshold": 2,
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
    }
    let restarts = |name: &'static str| {
        let pods = pods.clone();
        async move {
            let s = pods.get(name).await.ok()?.status?;
            Some(s.container_statuses?.first()?.restart_count)
        }
    };
    wait_for("unwell to be restarted twice", WAIT, POLL, || async {
        (restarts("unwell").await? >= 2).then_some(())
    })
    .await?;
    wait_for("alive to be Ready", WAIT, POLL, || async {
        pod_ready(&pods.get("alive").await.ok()?).then_some(())
    })
    .await?;
    assert_eq!(
        restarts("alive").await,
        Some(0),
        "a passing probe restarts nothing"
    );
    assert!(!devlet.is_finished(), "the devlet keeps running");
    devlet.abort();
    Ok(())
}
