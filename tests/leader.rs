//! Leader election between real `pier operator` processes against a real kube-apiserver: one
//! leader even when every replica is PID 1 without `POD_NAME`, a leader that cannot reach the
//! apiserver stops acting before a follower takes over, a frozen leader does not act when it
//! wakes up, and a SIGTERMed leader hands over in well under 2 s, then drains its xDS streams
//! (as `pier xds` does). The stand-by is ready with its xDS port closed; the leader marks its
//! Pod for the xDS Service, and takes the mark off a leader that died with it.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use pier::api::KafkaCluster;
use pier::controller::leader_pod::LEADER_LABEL;
use pier_testenv::{ControlPlane, LogDir, Process, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use support::{LEASE_DURATION, OperatorArgs, OperatorProcess, example, start_plane};

mod support;

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
const NS: &str = "default";
const LEASE: &str = "pier-operator";
/// Waits until exactly one of `ops` is ready and returns its index.
async fn one_leader(ops: &[&OperatorProcess]) -> anyhow::Result<usize> {
    wait_for("exactly one replica to lead", WAIT, POLL, || async {
        let mut leaders = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            if op.leading().await {
                leaders.push(i);
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await
}

async fn lease(client: &kube::Client) -> anyhow::Result<Lease> {
    Ok(Api::<Lease>::namespaced(client.clone(), NS)
        .get(LEASE)
        .await?)
}

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref()?.holder_identity.clone()
}

/// The identity an operator logged at start (`operator started`, field `identity`).
fn logged_identity(op: &OperatorProcess) -> anyhow::Result<String> {
    let log = std::fs::read_to_string(op.process.log_path())?;
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| {
            (v["fields"]["message"] == "operator started")
                .then(|| v["fields"]["identity"].as_str().map(str::to_string))
                .flatten()
        })
        .with_context(|| format!("{}: no `operator started` line", op.process.name()))
}

/// Unprivileged user namespaces may be off (some CI images): then the replicas share the PID
/// namespace, and the test still checks one leader, though not the PID 1 collision itself.
fn pid_namespaces_work() -> bool {
    std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--pid", "--fork", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn replicas_without_pod_name_elect_exactly_one_leader() -> anyhow::Result<()> {
    let plane = start_plane("leader-identity").await?;
    let client = plane.client();
    let pid_namespace = pid_namespaces_work();
    if !pid_namespace {
        println!("unprivileged PID namespaces unavailable: replicas share one PID namespace");
    }
    let replica = |name| OperatorArgs {
        name,
        pod_name: None,
        pid_namespace,
        kubeconfig: plane.kubeconfig(),
        namespace: NS,
        pod_namespace: None,
        xds_listen: None,
        xds_address: Some("pier-xds:18000"),
    };
    let a = OperatorProcess::start(&plane, replica("op-a"))?;
    let b = OperatorProcess::start(&plane, replica("op-b"))?;
    let leader = one_leader(&[&a, &b]).await?;
    let ops = [&a, &b];
    let (ida, idb) = (logged_identity(&a)?, logged_identity(&b)?);
    assert_ne!(ida, idb, "identities must be unique");
    let first = holder(&lease(&client).await?).context("the Lease has a holder")?;
    assert_eq!(first, [&ida, &idb][leader].as_str());

    // Through several renewals, never two leaders and no change of holder.
    let mut renewals = std::collections::BTreeSet::new();
    let deadline = Instant::now() + WAIT;
    while renewals.len() <= 3 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no three renewals within {WAIT:?}"
        );
        let l = lease(&client).await?;
        assert_eq!(holder(&l).as_deref(), Some(first.as_str()));
        assert!(
            !ops[1 - leader].leading().await,
            "the follower must not report ready"
        );
        renewals.insert(l.spec.and_then(|s| s.renew_time).map(|t| t.0.to_string()));
        tokio::time::sleep(POLL).await;
    }
    assert!(ops[leader].leading().await);
    // The stand-by is Ready all along (rollouts and disruption budgets count on it), with its
    // xDS port closed: an Envoy that reaches it is refused and dials again.
    assert!(ops[1 - leader].ready().await, "the stand-by is ready");
    assert!(
        TcpStream::connect(ops[1 - leader].xds).await.is_err(),
        "the stand-by's xDS port is closed"
    );
    TcpStream::connect(ops[leader].xds)
        .await
        .context("the leader's xDS port is open")?;
    Ok(())
}

/// Pier's own Pods, as the chart's Deployment makes them (no kubelet runs them here).
async fn operator_pod(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "pier"}},
        "spec": {"containers": [{"name": "pier", "image": "pier"}]},
    }))?;
    Api::<Pod>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &pod)
        .await?;
    Ok(())
}

/// The Pods that carry the leader label.
async fn marked(client: &kube::Client) -> anyhow::Result<Vec<String>> {
    let pods = Api::<Pod>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels(&format!("{LEADER_LABEL}=true")))
        .await?;
    Ok(pods.items.iter().map(|p| p.name_any()).collect())
}

#[tokio::test]
async fn the_leader_marks_its_pod_for_the_xds_service() -> anyhow::Result<()> {
    let plane = start_plane("leader-label").await?;
    let client = plane.client();
    for name in ["op-a", "op-b"] {
        operator_pod(&client, name).await?;
    }
    let replica = |name| OperatorArgs {
        name,
        pod_name: Some(name),
        pid_namespace: false,
        kubeconfig: plane.kubeconfig(),
        namespace: NS,
        pod_namespace: None,
        xds_listen: None,
        xds_address: Some("pier-xds:18000"),
    };
    let a = OperatorProcess::start(&plane, replica("op-a"))?;
    let b = OperatorProcess::start(&plane, replica("op-b"))?;
    let leader = one_leader(&[&a, &b]).await?;
    let (mut leader, mut follower) = if leader == 0 { (a, b) } else { (b, a) };
    let leader_name = leader.process.name().to_string();
    wait_for("the leader's Pod marked", WAIT, POLL, || async {
        (marked(&client).await.ok()? == [leader_name.clone()]).then_some(())
    })
    .await?;

    // Killed without a word, the leader keeps its mark; the next leader takes it off.
    leader.process.signal(libc::SIGKILL);
    leader.exited(Duration::from_secs(10)).await?;
    let next = follower.process.name().to_string();
    wait_for("the new leader's Pod marked, alone", WAIT, POLL, || async {
        (marked(&client).await.ok()? == [next.clone()]).then_some(())
    })
    .await?;
    assert!(follower.leading().await);

    // A leader that stops unmarks itself.
    follower.process.terminate();
    follower.exited(Duration::from_secs(20)).await?;
    assert_eq!(marked(&client).await?, Vec::<String>::new());
    Ok(())
}

/// A TCP proxy in front of the apiserver that can be frozen: bytes stop flowing, connections
/// stay open, so every call made through it hangs.
struct FreezableProxy {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        let task = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    tokio::join!(pipe(dr, uw, flag.clone()), pipe(ur, dw, flag));
                });
            }
        });
        Ok(Self { addr, frozen, task })
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Frozen: hold the bytes for good (the connection stays open, the peer hangs).
        if frozen.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A copy of the control plane's kubeconfig that reaches the apiserver through `proxy`.
fn kubeconfig_via(plane: &ControlPlane, proxy: SocketAddr, dir: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(plane.kubeconfig())?;
    let server = plane.server_url();
    anyhow::ensure!(text.contains(server), "kubeconfig does not name {server}");
    let path = dir.join("kubeconfig-via-proxy");
    std::fs::write(&path, text.replace(server, &format!("https://{proxy}")))?;
    Ok(path)
}

fn apiserver_addr(plane: &ControlPlane) -> anyhow::Result<SocketAddr> {
    let url = plane.server_url();
    let hostport = url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    hostport
        .parse()
        .with_context(|| format!("apiserver address in {url}"))
}

#[tokio::test]
async fn a_leader_that_cannot_renew_stops_before_a_follower_takes_over() -> anyhow::Result<()> {
    let plane = start_plane("leader-hung-apiserver").await?;
    let proxy = FreezableProxy::start(apiserver_addr(&plane)?).await?;
    let dir = tempfile::tempdir()?;
    let via_proxy = kubeconfig_via(&plane, proxy.addr, dir.path())?;
    let mut a = OperatorProcess::start(
        &plane,
        OperatorArgs {
            name: "op-proxied",
            pod_name: Some("op-proxied"),
            pid_namespace: false,
            kubeconfig: &via_proxy,
            namespace: NS,
            pod_namespace: None,
            xds_listen: None,
            xds_address: Some("pier-xds:18000"),
        },
    )?;
    one_leader(&[&a]).await?;
    let b = OperatorProcess::start(
        &plane,
        OperatorArgs {
            name: "op-direct",
            pod_name: Some("op-direct"),
            pid_namespace: false,
            kubeconfig: plane.kubeconfig(),
            namespace: NS,
            pod_namespace: None,
            xds_listen: None,
            xds_address: Some("pier-xds:18000"),
        },
    )?;
    // The follower has seen the Lease (it renews every retry period) and stays a follower.
    wait_for(
        "the follower to log that it started",
        WAIT,
        POLL,
        || async { logged_identity(&b).ok() },
    )
    .await?;
    assert!(a.leading().await && !b.leading().await);

    // Every apiserver call of the leader hangs from now on.
    proxy.freeze();
    let frozen = Instant::now();
    let mut leader_stopped = None;
    let deadline = frozen + WAIT;
    while !b.leading().await {
        anyhow::ensure!(Instant::now() < deadline, "the follower did not take over");
        if leader_stopped.is_none() && !a.leading().await {
            leader_stopped = Some(frozen.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let follower_ready = frozen.elapsed();
    println!("leader unready after {leader_stopped:?}, follower ready after {follower_ready:?}");
    let stopped = leader_stopped.context("the old leader still reports ready")?;
    assert!(
        stopped < follower_ready,
        "the leader stopped at {stopped:?}, after the follower took over at {follower_ready:?}"
    );
    assert!(!a.leading().await);
    let status = a.exited(WAIT).await?;
    assert!(
        !status.success(),
        "losing leadership exits non-zero: {status}"
    );
    let l = lease(&plane.client()).await?;
    assert_eq!(holder(&l).as_deref(), Some("op-direct"));
    Ok(())
}

#[tokio::test]
async fn a_frozen_leader_does_not_act_when_it_wakes_up() -> anyhow::Result<()> {
    let plane = start_plane("leader-sigstop").await?;
    let client = plane.client();
    // The two replicas render the Envoy bootstrap differently, so its content says who wrote it.
    let mut a = OperatorProcess::start(
        &plane,
        OperatorArgs {
            name: "op-a",
            pod_name: Some("op-a"),
            pid_namespace: false,
            kubeconfig: plane.kubeconfig(),
            namespace: NS,
            pod_namespace: None,
            xds_listen: None,
            xds_address: Some("xds-of-a:18000"),
        },
    )?;
    one_leader(&[&a]).await?;
    let b = OperatorProcess::start(
        &plane,
        OperatorArgs {
            name: "op-b",
            pod_name: Some("op-b"),
            pid_namespace: false,
            kubeconfig: plane.kubeconfig(),
            namespace: NS,
            pod_namespace: None,
            xds_listen: None,
            xds_address: Some("xds-of-b:18000"),
        },
    )?;
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &example("kafkacluster-basic.yaml")?)
        .await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let bootstrap = "basic-envoy-bootstrap";
    let written_by = |cm: &ConfigMap, who: &str| {
        cm.data
            .as_ref()
            .and_then(|d| d.get("bootstrap.yaml"))
            .is_some_and(|y| y.contains(who))
    };
    wait_for(
        "the leader to write the Envoy bootstrap",
        WAIT,
        POLL,
        || async {
            let cm = cms.get_opt(bootstrap).await.ok()??;
            written_by(&cm, "xds-of-a").then_some(())
        },
    )
    .await?;

    // Freeze the leader; the follower takes over and rewrites the bootstrap.
    a.process.signal(libc::SIGSTOP);
    wait_for("the follower to take over", WAIT, POLL, || async {
        b.leading().await.then_some(())
    })
    .await?;
    let taken_over = wait_for(
        "the follower to rewrite the bootstrap",
        WAIT,
        POLL,
        || async {
            let cm = cms.get_opt(bootstrap).await.ok()??;
            written_by(&cm, "xds-of-b").then_some(cm)
        },
    )
    .await?;

    // The old leader wakes up with its renew deadline long past: it must exit without writing,
    // though its watches now deliver a bootstrap that differs from what it would render.
    a.process.signal(libc::SIGCONT);
    let status = a.exited(WAIT).await?;
    assert!(
        !status.success(),
        "losing leadership exits non-zero: {status}"
    );
    let now = cms.get(bootstrap).await?;
    assert_eq!(
        now.metadata.resource_version, taken_over.metadata.resource_version,
        "the old leader wrote the bootstrap after it woke up"
    );
    assert_eq!(holder(&lease(&client).await?).as_deref(), Some("op-b"));
    assert!(b.leading().await);
    let log = std::fs::read_to_string(a.process.log_path())?;
    assert!(
        log.contains("renew deadline"),
        "the old leader says why it stopped"
    );
    Ok(())
}

/// An open ADS stream to `xds`; resolves when the server ends it.
async fn open_ads_stream(
    xds: SocketAddr,
    group: &str,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    let mut grpc = AggregatedDiscoveryServiceClient::connect(format!("http://{xds}")).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<DiscoveryRequest>(4);
    tx.send(DiscoveryRequest {
        node: Some(Node {
            id: "test-envoy".into(),
            cluster: group.into(),
            ..Default::default()
        }),
        type_url: "type.googleapis.com/envoy.config.listener.v3.Listener".into(),
        ..Default::default()
    })
    .await?;
    let mut responses = grpc
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(tokio::spawn(async move {
        let _keep_requests_open = tx;
        while let Ok(Some(_)) = responses.message().await {}
    }))
}

#[tokio::test]
async fn a_sigtermed_leader_hands_over_at_once_and_drains() -> anyhow::Result<()> {
    let plane = start_plane("leader-sigterm").await?;
    let client = plane.client();
    let replica = |name| OperatorArgs {
        name,
        pod_name: Some(name),
        pid_namespace: false,
        kubeconfig: plane.kubeconfig(),
        namespace: NS,
        pod_namespace: None,
        xds_listen: None,
        xds_address: Some("pier-xds:18000"),
    };
    let a = OperatorProcess::start(&plane, replica("op-a"))?;
    let b = OperatorProcess::start(&plane, replica("op-b"))?;
    let leader = one_leader(&[&a, &b]).await?;
    let (mut leader, follower) = if leader == 0 { (a, b) } else { (b, a) };
    // The leader serves only the node groups of the clusters it manages.
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &example("kafkacluster-basic.yaml")?)
        .await?;
    let stream = open_ads_stream(leader.xds, "default/basic").await?;

    let sent = Instant::now();
    leader.process.terminate();
    wait_for(
        "the follower to take over",
        WAIT,
        Duration::from_millis(20),
        || async { follower.leading().await.then_some(()) },
    )
    .await?;
    let failover = sent.elapsed();
    println!("failover after SIGTERM: {failover:?}");
    // The requirement is < 2 s; without the release it is the lease duration.
    assert!(
        failover < Duration::from_secs(2),
        "failover took {failover:?}"
    );
    assert_eq!(
        holder(&lease(&client).await?).as_deref(),
        Some(follower.process.name())
    );

    // The old leader drains its xDS streams and exits cleanly.
    let drain = pier::shutdown::XDS_DRAIN_TIMEOUT + Duration::from_secs(10);
    let status = leader.exited(drain).await?;
    assert!(status.success(), "a SIGTERMed operator exits 0: {status}");
    tokio::time::timeout(Duration::from_secs(5), stream)
        .await
        .context("the ADS stream is still open after the operator exited")??;
    Ok(())
}

#[tokio::test]
async fn a_skewed_clock_does_not_steal_a_live_lease() -> anyhow::Result<()> {
    let plane = start_plane("leader-clock-skew").await?;
    let leases: Api<Lease> = Api::namespaced(plane.client(), NS);
    // Another holder renews the Lease on time, but its clock says 2000-01-01: compared with our
    // wall clock its renewTime is 26 years old.
    let skewed = |micros: i64| {
        let t: k8s_openapi::jiff::Timestamp = "2000-01-01T00:00:00Z".parse().expect("a timestamp");
        let t = t
            .checked_add(k8s_openapi::jiff::SignedDuration::from_micros(micros))
            .expect("in range");
        k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(t)
    };
    let secs = LEASE_DURATION.trim_end_matches('s').parse::<i32>()?;
    leases
        .create(
            &PostParams::default(),
            &Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(LEASE.into()),
                    ..Default::default()
                },
                spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                    holder_identity: Some("skewed".into()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(skewed(0)),
                    renew_time: Some(skewed(0)),
                    ..Default::default()
                }),
            },
        )
        .await?;
    let op = OperatorProcess::start(
        &plane,
        OperatorArgs {
            name: "op",
            pod_name: Some("op"),
            pid_namespace: false,
            kubeconfig: plane.kubeconfig(),
            namespace: NS,
            pod_namespace: None,
            xds_listen: None,
            xds_address: Some("pier-xds:18000"),
        },
    )?;
    wait_for("the operator to start", WAIT, POLL, || async {
        logged_identity(&op).ok()
    })
    .await?;
    // Renew as the skewed holder every second, for twice the lease duration.
    let mut last_renewal = Instant::now();
    for i in 1..=(2 * i64::from(secs)) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut l = leases.get(LEASE).await?;
        assert_eq!(holder(&l).as_deref(), Some("skewed"), "renewal {i}");
        assert!(!op.leading().await, "the operator took a live Lease");
        if let Some(spec) = l.spec.as_mut() {
            spec.renew_time = Some(skewed(i));
        }
        leases.replace(LEASE, &PostParams::default(), &l).await?;
        last_renewal = Instant::now();
    }
    // The holder stops renewing: the operator takes over a lease duration after the last change.
    wait_for("the operator to take over", WAIT, POLL, || async {
        op.leading().await.then_some(())
    })
    .await?;
    let after = last_renewal.elapsed();
    println!("took over {after:?} after the last renewal");
    // A lease duration after it saw the last change, which is about when we made it.
    let duration = Duration::from_secs(u64::try_from(secs)?);
    assert!(after + Duration::from_millis(500) >= duration, "{after:?}");
    assert_eq!(holder(&leases.get(LEASE).await?).as_deref(), Some("op"));
    Ok(())
}

#[tokio::test]
async fn pier_xds_drains_its_streams_and_exits_on_sigterm() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("xds-sigterm")?;
    let port = pier_testenv::net::free_ports(std::net::Ipv4Addr::LOCALHOST, 1)?[0];
    let listen: SocketAddr = (std::net::Ipv4Addr::LOCALHOST, port).into();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pier"));
    cmd.arg("xds")
        .arg("--config")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/brokers.yaml"))
        .arg(format!("--listen={listen}"));
    let mut xds = Process::spawn(
        "pier-xds",
        cmd,
        &logs.path().join("pier-xds.log"),
        Duration::from_secs(30),
    )?;
    let stream = wait_for("pier xds to accept a stream", WAIT, POLL, || async {
        open_ads_stream(listen, "default/my-kafka").await.ok()
    })
    .await?;
    let sent = Instant::now();
    xds.terminate();
    let within = pier::shutdown::XDS_DRAIN_TIMEOUT + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = xds.try_exit() {
            break status;
        }
        anyhow::ensure!(
            sent.elapsed() < within,
            "pier xds still runs {within:?} after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("pier xds exited {:?} after SIGTERM", sent.elapsed());
    assert!(status.success(), "{status}");
    tokio::time::timeout(Duration::from_secs(5), stream)
        .await
        .context("the ADS stream is still open after pier xds exited")??;
    Ok(())
}
