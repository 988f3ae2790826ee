//! Pier's xDS server driving a real Envoy, in state-of-the-world and delta ADS.
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pier::model::{BrokerRouting, BrokerState, ExposedBroker, ExternalAccess};
use pier::xds::{EnvoyResources, Snapshot, SnapshotCache, translate};
use pier_testenv::{Envoy, LogDir, wait_for};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// An in-process xDS server on a free port.
struct Xds {
    cache: Arc<SnapshotCache>,
    addr: SocketAddr,
    /// Dropping it shuts the server down.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Xds {
    async fn start() -> anyhow::Result<Self> {
        let cache = Arc::new(SnapshotCache::default());
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(pier::xds::serve(listener, cache.clone(), async {
            let _ = rx.await;
        }));
        Ok(Xds {
            cache,
            addr,
            _stop: tx,
        })
    }

    fn set(&self, group: &[ExternalAccess]) -> Arc<Snapshot> {
        self.set_resources(&group[0].group(), translate(group).expect("valid model"))
    }

    fn set_resources(&self, group: &str, resources: EnvoyResources) -> Arc<Snapshot> {
        self.cache.set_snapshot(group, Snapshot::new(resources))
    }

    async fn wait_acked(&self, group: &str, snapshot: &Snapshot) -> anyhow::Result<()> {
        let want = snapshot.version();
        wait_for(
            &format!("group {group} to ACK {want}"),
            WAIT,
            POLL,
            || async {
                let s = self.cache.group_status(group);
                (s.all_acked && s.version.as_deref() == Some(want.as_str())).then_some(())
            },
        )
        .await
    }
}

/// A fake broker: says who it is on connect, then echoes.
async fn backend(id: i32) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if s.write_all(format!("broker-{id}\n").as_bytes())
                    .await
                    .is_ok()
                {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
        }
    });
    Ok(addr)
}

/// An open client connection through Envoy that knows which broker answered.
struct Client {
    reader: BufReader<TcpStream>,
    greeting: String,
}

impl Client {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream =
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await??;
        let mut reader = BufReader::new(stream);
        let mut greeting = String::new();
        tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut greeting))
            .await
            .context("no greeting through Envoy")??;
        anyhow::ensure!(!greeting.is_empty(), "connection closed without greeting");
        Ok(Self {
            reader,
            greeting: greeting.trim().to_string(),
        })
    }

    async fn echo(&mut self, msg: &str) -> anyhow::Result<()> {
        self.reader.get_mut().write_all(msg.as_bytes()).await?;
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), self.reader.read_exact(&mut back))
            .await
            .context("echo timed out")??;
        anyhow::ensure!(back == msg.as_bytes(), "echo mismatch");
        Ok(())
    }
}

/// Reaches broker `id` through Envoy, retrying while Envoy applies its config.
async fn reaches(addr: SocketAddr, expect: &str) -> anyhow::Result<()> {
    wait_for(&format!("{addr} to reach {expect}"), WAIT, POLL, || async {
        let c = Client::connect(addr).await.ok()?;
        (c.greeting == expect).then_some(())
    })
    .await
}

struct Setup {
    ip: Ipv4Addr,
    access: ExternalAccess,
}

const BOOTSTRAP_PORT: u16 = 29092;
const BASE_PORT: u16 = 29100;

async fn setup(ids: &[i32]) -> anyhow::Result<Setup> {
    let ports: Vec<u16> = std::iter::once(BOOTSTRAP_PORT)
        .chain((0..8).map(|i| BASE_PORT + i))
        .collect();
    let ip = pier_testenv::net::loopback_ips(1, &ports)?[0];
    let mut brokers = Vec::new();
    for id in ids {
        let addr = backend(*id).await?;
        brokers.push(ExposedBroker {
            id: *id,
            host: addr.ip().to_string(),
            port: addr.port(),
            state: BrokerState::Serving,
        });
    }
    Ok(Setup {
        ip,
        access: ExternalAccess {
            namespace: "kafka".into(),
            cluster: "demo".into(),
            listener: "external".into(),
            bind_address: ip.to_string(),
            bootstrap_port: BOOTSTRAP_PORT,
            routing: BrokerRouting::PortPerBroker {
                base_port: BASE_PORT,
            },
            idle_timeout: Duration::from_secs(600),
            brokers,
        },
    })
}

async fn add_broker(access: &mut ExternalAccess, id: i32) -> anyhow::Result<()> {
    let addr = backend(id).await?;
    access.brokers.push(ExposedBroker {
        id,
        host: addr.ip().to_string(),
        port: addr.port(),
        state: BrokerState::Serving,
    });
    Ok(())
}

/// Starts Envoy from envoy/bootstrap.yaml pointed at `xds`, as node `node` in `group`.
async fn envoy(
    logs: &Arc<LogDir>,
    xds: &Xds,
    node: &str,
    group: &str,
    delta: bool,
) -> anyhow::Result<Envoy> {
    envoy_at(logs, xds.addr.port(), node, group, delta).await
}

/// Starts Envoy from envoy/bootstrap.yaml pointed at the xDS server on `xds_port`.
async fn envoy_at(
    logs: &Arc<LogDir>,
    xds_port: u16,
    node: &str,
    group: &str,
    delta: bool,
) -> anyhow::Result<Envoy> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(repo.join("envoy/bootstrap.yaml"))?;
    assert!(text.contains("port_value: 18000"));
    let text = text.replace("port_value: 18000", &format!("port_value: {xds_port}"));
    let dir = logs.sub(node)?;
    let bootstrap = dir.join("bootstrap.yaml");
    std::fs::write(&bootstrap, text)?;
    let overlay = if delta {
        Some(std::fs::read_to_string(repo.join("envoy/delta.yaml"))?)
    } else {
        None
    };
    Envoy::start_with_overlay(
        logs,
        node,
        &bootstrap,
        overlay.as_deref(),
        &["--service-node", node, "--service-cluster", group],
    )
    .await
}

fn mode(delta: bool) -> &'static str {
    if delta { "delta" } else { "sotw" }
}

async fn forwards_and_updates_live(delta: bool) -> anyhow::Result<()> {
    let logs = LogDir::for_current_test(&format!("xds-live-{}", mode(delta)))?;
    let xds = Xds::start().await?;
    let Setup { ip, mut access } = setup(&[0, 1]).await?;
    let group = access.group();
    let snap = xds.set(std::slice::from_ref(&access));
    let mut envoy = envoy(&logs, &xds, "envoy-0", &group, delta).await?;
    envoy.wait_live(WAIT).await?;
    xds.wait_acked(&group, &snap).await?;
    let protocol = xds
        .cache
        .node_status(&group, "envoy-0")
        .context("node status")?
        .protocol;
    assert_eq!(protocol, mode(delta));

    // Each broker's port reaches that broker; the bootstrap port reaches a serving one.
    reaches((ip, BASE_PORT).into(), "broker-0").await?;
    reaches((ip, BASE_PORT + 1).into(), "broker-1").await?;
    let boot = Client::connect((ip, BOOTSTRAP_PORT).into()).await?;
    assert!(
        ["broker-0", "broker-1"].contains(&boot.greeting.as_str()),
        "{}",
        boot.greeting
    );

    // Add a broker: a new listener, the same Envoy process, and old connections live on.
    let pid = envoy.pid();
    let uptime_before = envoy.uptime_seconds().await?;
    let mut held = Client::connect((ip, BASE_PORT).into()).await?;
    held.echo("before the update\n").await?;
    add_broker(&mut access, 2).await?;
    let snap = xds.set(std::slice::from_ref(&access));
    xds.wait_acked(&group, &snap).await?;
    let name = format!("{}/broker-2", access.resource_prefix());
    wait_for("the new listener in /listeners", WAIT, POLL, || async {
        envoy
            .listener_names()
            .await
            .ok()?
            .contains(&name)
            .then_some(())
    })
    .await?;
    reaches((ip, BASE_PORT + 2).into(), "broker-2").await?;
    held.echo("after the update\n").await?;
    assert_eq!(envoy.pid(), pid);
    // Uptime counts on (a restarted Envoy would start again from 0).
    wait_for("Envoy's uptime to count on", WAIT, POLL, || async {
        (envoy.uptime_seconds().await.ok()? > uptime_before).then_some(())
    })
    .await?;
    assert_eq!(
        envoy.stat("listener_manager.lds.update_rejected").await?,
        Some(0)
    );

    // Remove broker 1: its listener goes after draining; others are unaffected.
    access.brokers.retain(|b| b.id != 1);
    let snap = xds.set(std::slice::from_ref(&access));
    xds.wait_acked(&group, &snap).await?;
    let gone = format!("{}/broker-1", access.resource_prefix());
    wait_for("broker-1's listener to go", WAIT, POLL, || async {
        (!envoy.listener_names().await.ok()?.contains(&gone)).then_some(())
    })
    .await?;
    held.echo("after a removal\n").await?;
    reaches((ip, BASE_PORT + 2).into(), "broker-2").await?;
    assert!(
        Client::connect((ip, BASE_PORT + 1).into()).await.is_err(),
        "broker-1's port is closed"
    );
    assert_eq!(envoy.pid(), pid);
    Ok(())
}

#[tokio::test]
async fn sotw_forwards_and_updates_live() -> anyhow::Result<()> {
    forwards_and_updates_live(false).await
}

#[tokio::test]
async fn delta_forwards_and_updates_live() -> anyhow::Result<()> {
    forwards_and_updates_live(true).await
}

async fn nack_keeps_the_previous_config(delta: bool) -> anyhow::Result<()> {
    let logs = LogDir::for_current_test(&format!("xds-nack-{}", mode(delta)))?;
    let xds = Xds::start().await?;
    let Setup { ip, access } = setup(&[0, 1]).await?;
    let group = access.group();
    let good = xds.set(std::slice::from_ref(&access));
    let mut envoy = envoy(&logs, &xds, "envoy-0", &group, delta).await?;
    envoy.wait_live(WAIT).await?;
    xds.wait_acked(&group, &good).await?;

    // Two listeners on one port: Envoy must reject the listener update.
    let mut bad = translate(std::slice::from_ref(&access))?;
    let port_of_first = bad.listeners[0].address.clone();
    bad.listeners[1].address = port_of_first;
    xds.set_resources(&group, bad);
    let rejection = wait_for("the NACK to be reported", WAIT, POLL, || async {
        xds.cache.group_status(&group).rejected
    })
    .await?;
    assert_eq!(rejection.r#type, "listener");
    assert!(!rejection.error.is_empty());
    let node = xds
        .cache
        .node_status(&group, "envoy-0")
        .context("node status")?;
    let nack = node.types["listener"]
        .nacked
        .clone()
        .context("nack recorded")?;
    assert_eq!(nack.error, rejection.error);
    assert!(!xds.cache.group_status(&group).all_acked);
    // Envoy keeps serving the previous listeners.
    reaches((ip, BASE_PORT + 1).into(), "broker-1").await?;
    assert!(
        envoy
            .stat("listener_manager.lds.update_rejected")
            .await?
            .unwrap_or(0)
            >= 1
    );

    // The fixed config is ACKed.
    let mut fixed = access.clone();
    fixed.idle_timeout = Duration::from_secs(601);
    let snap = xds.set(&[fixed]);
    xds.wait_acked(&group, &snap).await?;
    assert!(xds.cache.group_status(&group).rejected.is_none());
    reaches((ip, BASE_PORT).into(), "broker-0").await?;
    Ok(())
}

#[tokio::test]
async fn sotw_nack_keeps_the_previous_config() -> anyhow::Result<()> {
    nack_keeps_the_previous_config(false).await
}

#[tokio::test]
async fn delta_nack_keeps_the_previous_config() -> anyhow::Result<()> {
    nack_keeps_the_previous_config(true).await
}

/// The standalone `pier xds` process, with its broker file.
struct PierXds {
    process: Option<pier_testenv::Process>,
    file: std::path::PathBuf,
    listen: SocketAddr,
    admin: SocketAddr,
    log: std::path::PathBuf,
}

impl PierXds {
    fn start(logs: &Arc<LogDir>, file_text: &str) -> anyhow::Result<Self> {
        let dir = logs.sub("pier-xds")?;
        let ports = pier_testenv::net::free_ports(Ipv4Addr::LOCALHOST, 2)?;
        let mut x = PierXds {
            process: None,
            file: dir.join("brokers.yaml"),
            listen: (Ipv4Addr::LOCALHOST, ports[0]).into(),
            admin: (Ipv4Addr::LOCALHOST, ports[1]).into(),
            log: dir.join("pier.log"),
        };
        std::fs::write(&x.file, file_text)?;
        x.spawn()?;
        Ok(x)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pier"));
        cmd.arg("xds")
            .arg("--config")
            .arg(&self.file)
            .arg(format!("--listen={}", self.listen))
            .arg(format!("--admin={}", self.admin));
        self.process = Some(pier_testenv::Process::spawn(
            "pier-xds",
            cmd,
            &self.log,
            Duration::from_secs(5),
        )?);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.signal(libc::SIGKILL);
            p.stop();
        }
    }

    async fn status(&self) -> anyhow::Result<serde_json::Value> {
        let url = format!("http://{}/status", self.admin);
        Ok(reqwest::get(&url).await?.json().await?)
    }
}

fn brokers_file(access: &ExternalAccess) -> String {
    let mut text = format!(
        "namespace: {}\ncluster: {}\nlisteners:\n  - name: {}\n    bindAddress: {}\n    bootstrapPort: {}\n    brokerPortBase: {}\n    brokers:\n",
        access.namespace,
        access.cluster,
        access.listener,
        access.bind_address,
        BOOTSTRAP_PORT,
        BASE_PORT
    );
    for b in &access.brokers {
        text.push_str(&format!(
            "      - {{id: {}, host: {}, port: {}}}\n",
            b.id, b.host, b.port
        ));
    }
    text
}

async fn survives_a_control_plane_restart(delta: bool) -> anyhow::Result<()> {
    let logs = LogDir::for_current_test(&format!("xds-restart-{}", mode(delta)))?;
    let Setup { ip, mut access } = setup(&[0]).await?;
    let group = access.group();
    let mut pier = PierXds::start(&logs, &brokers_file(&access))?;
    let xds_port = pier.listen.port();
    let mut envoy = envoy_at(&logs, xds_port, "envoy-0", &group, delta).await?;
    envoy.wait_live(WAIT).await?;
    reaches((ip, BASE_PORT).into(), "broker-0").await?;
    let status = pier.status().await?;
    assert_eq!(status[0]["group"], group.as_str());
    let pid = envoy.pid();
    // Without TLS flags it serves plaintext, and says so.
    let text = std::fs::read_to_string(&pier.log)?;
    assert!(
        text.contains("xDS is served in PLAINTEXT"),
        "no plaintext warning in {}",
        pier.log.display()
    );

    // An edit of the file reaches Envoy without a restart.
    add_broker(&mut access, 1).await?;
    std::fs::write(&pier.file, brokers_file(&access))?;
    reaches((ip, BASE_PORT + 1).into(), "broker-1").await?;

    // A broken edit is reported and the last good config keeps serving.
    std::fs::write(&pier.file, brokers_file(&access).replace("port:", "prot:"))?;
    let log = pier.log.clone();
    wait_for("pier to report the broken file", WAIT, POLL, || async {
        let text = std::fs::read_to_string(&log).ok()?;
        (text.contains("invalid broker file") && text.contains("prot")).then_some(())
    })
    .await?;
    reaches((ip, BASE_PORT + 1).into(), "broker-1").await?;

    // Kill the xDS server: Envoy keeps forwarding on its last config.
    pier.kill();
    wait_for(
        "Envoy to see the control plane gone",
        WAIT,
        POLL,
        || async { (envoy.stat("control_plane.connected_state").await.ok()?? == 0).then_some(()) },
    )
    .await?;
    reaches((ip, BASE_PORT).into(), "broker-0").await?;

    // A change made while it is down reaches Envoy once it is back.
    add_broker(&mut access, 2).await?;
    std::fs::write(&pier.file, brokers_file(&access))?;
    pier.spawn()?;
    wait_for("Envoy to reconnect", WAIT, POLL, || async {
        (envoy.stat("control_plane.connected_state").await.ok()?? == 1).then_some(())
    })
    .await?;
    reaches((ip, BASE_PORT + 2).into(), "broker-2").await?;
    reaches((ip, BASE_PORT + 1).into(), "broker-1").await?;
    assert_eq!(envoy.pid(), pid, "Envoy was never restarted");
    Ok(())
}

#[tokio::test]
async fn sotw_survives_a_control_plane_restart() -> anyhow::Result<()> {
    survives_a_control_plane_restart(false).await
}

#[tokio::test]
async fn delta_survives_a_control_plane_restart() -> anyhow::Result<()> {
    survives_a_control_plane_restart(true).await
}

/// SIGTERM: `pier xds` ends every stream (Envoy sees the control plane go at once and keeps
/// forwarding on its config) and exits without waiting for Envoy to hang up.
async fn drains_on_sigterm(delta: bool) -> anyhow::Result<()> {
    let logs = LogDir::for_current_test(&format!("xds-sigterm-{}", mode(delta)))?;
    let Setup { ip, access } = setup(&[0]).await?;
    let group = access.group();
    let mut pier = PierXds::start(&logs, &brokers_file(&access))?;
    let mut envoy = envoy_at(&logs, pier.listen.port(), "envoy-0", &group, delta).await?;
    envoy.wait_live(WAIT).await?;
    reaches((ip, BASE_PORT).into(), "broker-0").await?;
    let mut process = pier.process.take().context("pier xds runs")?;
    let asked = std::time::Instant::now();
    process.signal(libc::SIGTERM);
    let status = wait_for("pier xds to exit", WAIT, POLL, || {
        let status = process.try_exit();
        async move { status }
    })
    .await?;
    assert!(status.success(), "{status:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "exited within the drain timeout: {:?}",
        asked.elapsed()
    );
    let log = std::fs::read_to_string(&pier.log)?;
    assert!(log.contains("xDS server stopping"), "{log}");
    wait_for(
        "Envoy to see the control plane gone",
        WAIT,
        POLL,
        || async { (envoy.stat("control_plane.connected_state").await.ok()?? == 0).then_some(()) },
    )
    .await?;
    reaches((ip, BASE_PORT).into(), "broker-0").await?;
    Ok(())
}

#[tokio::test]
async fn sotw_drains_on_sigterm() -> anyhow::Result<()> {
    drains_on_sigterm(false).await
}

#[tokio::test]
async fn delta_drains_on_sigterm() -> anyhow::Result<()> {
    drains_on_sigterm(true).await
}

/// An Envoy that starts before its group is served (before the operator's first reconcile)
/// waits, and gets its config once the group's first snapshot is set.
async fn an_envoy_may_start_before_its_group_is_served(delta: bool) -> anyhow::Result<()> {
    let logs = LogDir::for_current_test(&format!("xds-early-{}", mode(delta)))?;
    let xds = Xds::start().await?;
    let Setup { ip, access } = setup(&[0]).await?;
    let group = access.group();
    let mut envoy = envoy(&logs, &xds, "envoy-0", &group, delta).await?;
    wait_for(
        "Envoy's stream to wait for its group",
        WAIT,
        POLL,
        || async { (xds.cache.waiting_streams() == 1).then_some(()) },
    )
    .await?;
    assert_eq!(xds.cache.node_count(), 0, "no node state before admission");
    let snap = xds.set(std::slice::from_ref(&access));
    envoy.wait_live(WAIT).await?;
    xds.wait_acked(&group, &snap).await?;
    reaches((ip, BASE_PORT).into(), "broker-0").await?;
    Ok(())
}

#[tokio::test]
async fn sotw_an_envoy_may_start_before_its_group_is_served() -> anyhow::Result<()> {
    an_envoy_may_start_before_its_group_is_served(false).await
}

#[tokio::test]
async fn delta_an_envoy_may_start_before_its_group_is_served() -> anyhow::Result<()> {
    an_envoy_may_start_before_its_group_is_served(true).await
}

async fn groups_are_isolated(delta: bool) -> anyhow::Result<()> {
    let logs = LogDir::for_current_test(&format!("xds-groups-{}", mode(delta)))?;
    let xds = Xds::start().await?;
    let Setup { access, .. } = setup(&[0, 1]).await?;
    let group = access.group();
    let snap = xds.set(std::slice::from_ref(&access));
    let mut a = envoy(&logs, &xds, "envoy-a", &group, delta).await?;
    let mut b = envoy(&logs, &xds, "envoy-b", &group, delta).await?;
    // Another group with its own (empty but valid) config.
    let Setup {
        access: mut other, ..
    } = setup(&[]).await?;
    other.cluster = "other".into();
    let other_group = other.group();
    xds.set(std::slice::from_ref(&other));
    let mut c = envoy(&logs, &xds, "envoy-c", &other_group, delta).await?;
    for e in [&mut a, &mut b, &mut c] {
        e.wait_live(WAIT).await?;
    }
    xds.wait_acked(&group, &snap).await?;
    let status = xds.cache.group_status(&group);
    let nodes: Vec<&str> = status.nodes.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(nodes, ["envoy-a", "envoy-b"]);

    let mut names_a = a.listener_names().await?;
    let mut names_b = b.listener_names().await?;
    names_a.sort();
    names_b.sort();
    assert_eq!(names_a, names_b, "one group, one config");
    assert_eq!(names_a.len(), 3);
    let names_c = c.listener_names().await?;
    assert_eq!(names_c, [format!("{}/bootstrap", other.resource_prefix())]);
    assert!(names_c.iter().all(|n| !names_a.contains(n)));
    Ok(())
}

#[tokio::test]
async fn sotw_groups_are_isolated() -> anyhow::Result<()> {
    groups_are_isolated(false).await
}

#[tokio::test]
async fn delta_groups_are_isolated() -> anyhow::Result<()> {
    groups_are_isolated(true).await
}

mod sni {
    //! SNI mode: one port, TLS passed through to the broker chosen by the server name.
    use super::*;
    use pier_testenv::pki::{Ca, LeafSpec};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    const DOMAIN: &str = "kafka.pier.test";

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A TLS "broker" with a wildcard certificate: greets with its id after the handshake.
    async fn tls_backend(ca: &Ca, id: i32) -> anyhow::Result<SocketAddr> {
        let wildcard = format!("*.{DOMAIN}");
        let leaf = ca.issue(&LeafSpec {
            common_name: &wildcard,
            dns_names: &[&wildcard],
            server: true,
            ..LeafSpec::default()
        })?;
        let certs = vec![CertificateDer::from_pem_slice(leaf.cert.as_bytes())?];
        let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes())?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // The first byte must be a raw TLS record: Envoy passes TLS through.
                    let mut first = [0u8; 1];
                    if s.peek(&mut first).await.ok() != Some(1) || first[0] != 0x16 {
                        return;
                    }
                    let Ok(mut tls) = acceptor.accept(s).await else {
                        return;
                    };
                    if tls
                        .write_all(format!("broker-{id}\n").as_bytes())
                        .await
                        .is_ok()
                    {
                        let (mut r, mut w) = tokio::io::split(tls);
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    }
                });
            }
        });
        Ok(addr)
    }

    struct TlsClient {
        reader: BufReader<tokio_rustls::client::TlsStream<TcpStream>>,
        greeting: String,
    }

    impl TlsClient {
        async fn connect(ca: &Ca, addr: SocketAddr, sni: &str) -> anyhow::Result<Self> {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes())?)?;
            let config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let connector = TlsConnector::from(Arc::new(config));
            let tcp = TcpStream::connect(addr).await?;
            let name = ServerName::try_from(sni.to_string())?;
            let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
                .await
                .context("TLS handshake timed out")??;
            let mut reader = BufReader::new(tls);
            let mut greeting = String::new();
            tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut greeting))
                .await
                .context("no greeting")??;
            Ok(Self {
                reader,
                greeting: greeting.trim().to_string(),
            })
        }

        async fn echo(&mut self, msg: &str) -> anyhow::Result<()> {
            self.reader.get_mut().write_all(msg.as_bytes()).await?;
            self.reader.get_mut().flush().await?;
            let mut back = vec![0u8; msg.len()];
            tokio::time::timeout(Duration::from_secs(5), self.reader.read_exact(&mut back))
                .await
                .context("echo timed out")??;
            anyhow::ensure!(back == msg.as_bytes(), "echo mismatch");
            Ok(())
        }
    }

    async fn tls_reaches(ca: &Ca, addr: SocketAddr, sni: &str, expect: &str) -> anyhow::Result<()> {
        wait_for(&format!("{sni} to reach {expect}"), WAIT, POLL, || async {
            let c = TlsClient::connect(ca, addr, sni).await.ok()?;
            (c.greeting == expect).then_some(())
        })
        .await
    }

    async fn broker(ca: &Ca, id: i32) -> anyhow::Result<ExposedBroker> {
        let addr = tls_backend(ca, id).await?;
        Ok(ExposedBroker {
            id,
            host: addr.ip().to_string(),
            port: addr.port(),
            state: BrokerState::Serving,
        })
    }

    async fn tls_passthrough_by_server_name(delta: bool) -> anyhow::Result<()> {
        let logs = LogDir::for_current_test(&format!("xds-sni-{}", mode(delta)))?;
        let ca = Ca::new("pier-sni-test-ca")?;
        let xds = Xds::start().await?;
        let ip = pier_testenv::net::loopback_ips(1, &[BOOTSTRAP_PORT])?[0];
        let mut access = ExternalAccess {
            namespace: "kafka".into(),
            cluster: "sni".into(),
            listener: "tls".into(),
            bind_address: ip.to_string(),
            bootstrap_port: BOOTSTRAP_PORT,
            routing: BrokerRouting::Sni {
                domain: DOMAIN.into(),
            },
            idle_timeout: Duration::from_secs(600),
            brokers: vec![broker(&ca, 0).await?, broker(&ca, 1).await?],
        };
        let group = access.group();
        let snap = xds.set(std::slice::from_ref(&access));
        let mut envoy = envoy(&logs, &xds, "envoy-0", &group, delta).await?;
        envoy.wait_live(WAIT).await?;
        xds.wait_acked(&group, &snap).await?;
        let port: SocketAddr = (ip, BOOTSTRAP_PORT).into();
        for id in [0, 1] {
            let sni = access.broker_sni(id).context("sni name")?;
            tls_reaches(&ca, port, &sni, &format!("broker-{id}")).await?;
        }
        let boot = TlsClient::connect(&ca, port, &format!("bootstrap.{DOMAIN}")).await?;
        assert!(boot.greeting.starts_with("broker-"), "{}", boot.greeting);
        assert!(
            TlsClient::connect(&ca, port, &format!("nobody.{DOMAIN}"))
                .await
                .is_err(),
            "an unknown name matches no chain"
        );

        // A new broker is a new filter chain: an in-place update that keeps TLS sessions.
        let mut held = TlsClient::connect(&ca, port, &format!("broker-0.{DOMAIN}")).await?;
        held.echo("before\n").await?;
        access.brokers.push(broker(&ca, 2).await?);
        let snap = xds.set(std::slice::from_ref(&access));
        xds.wait_acked(&group, &snap).await?;
        tls_reaches(&ca, port, &format!("broker-2.{DOMAIN}"), "broker-2").await?;
        held.echo("after\n").await?;
        let in_place = envoy
            .stat("listener_manager.listener_in_place_updated")
            .await?
            .unwrap_or(0);
        assert!(in_place >= 1, "the SNI listener was updated in place");
        Ok(())
    }

    /// Whether Envoy's `/clusters` lists `cluster`.
    async fn has_cluster(envoy: &Envoy, cluster: &str) -> anyhow::Result<bool> {
        let text = envoy.admin_get("/clusters").await?;
        Ok(text.lines().any(|l| l.starts_with(&format!("{cluster}::"))))
    }

    /// Nothing is in flight to `node`: every response it got was ACKed or NACKed.
    fn settled(xds: &Xds, group: &str, node: &str) -> bool {
        xds.cache.node_status(group, node).is_some_and(|n| {
            n.types.values().all(|t| {
                t.sent_version.is_some()
                    && (t.acked_version == t.sent_version
                        || t.nacked.as_ref().map(|n| &n.version) == t.sent_version.as_ref())
            })
        })
    }

    /// Broker 1 leaves in the same update that makes the SNI listener invalid (a bad bind
    /// address). Envoy rejects the listener and keeps the old one, whose chain for broker 1
    /// still routes to broker 1's cluster: the cluster (and its endpoints) must stay, and both
    /// open and new connections to broker 1 keep working until a listener update is ACKed.
    async fn a_rejected_listener_keeps_its_clusters(delta: bool) -> anyhow::Result<()> {
        let logs = LogDir::for_current_test(&format!("xds-sni-nack-{}", mode(delta)))?;
        let ca = Ca::new("pier-sni-nack-ca")?;
        let xds = Xds::start().await?;
        let ip = pier_testenv::net::loopback_ips(1, &[BOOTSTRAP_PORT])?[0];
        let access = ExternalAccess {
            namespace: "kafka".into(),
            cluster: "sni".into(),
            listener: "tls".into(),
            bind_address: ip.to_string(),
            bootstrap_port: BOOTSTRAP_PORT,
            routing: BrokerRouting::Sni {
                domain: DOMAIN.into(),
            },
            idle_timeout: Duration::from_secs(600),
            brokers: vec![broker(&ca, 0).await?, broker(&ca, 1).await?],
        };
        let group = access.group();
        let good = xds.set(std::slice::from_ref(&access));
        let mut envoy = envoy(&logs, &xds, "envoy-0", &group, delta).await?;
        envoy.wait_live(WAIT).await?;
        xds.wait_acked(&group, &good).await?;
        let port: SocketAddr = (ip, BOOTSTRAP_PORT).into();
        let one = format!("broker-1.{DOMAIN}");
        tls_reaches(&ca, port, &one, "broker-1").await?;
        let mut open = TlsClient::connect(&ca, port, &one).await?;
        open.echo("before\n").await?;
        let cluster = format!("{}/broker-1", access.resource_prefix());
        assert!(has_cluster(&envoy, &cluster).await?);

        let mut bad = access.clone();
        bad.brokers.retain(|b| b.id != 1);
        bad.bind_address = "999.0.0.1".into();
        xds.set(&[bad]);
        wait_for(
            "the NACK, with nothing left in flight",
            WAIT,
            POLL,
            || async {
                let rejected = xds.cache.group_status(&group).rejected?;
                (rejected.r#type == "listener" && settled(&xds, &group, "envoy-0"))
                    .then_some(rejected)
            },
        )
        .await?;
        assert!(
            has_cluster(&envoy, &cluster).await?,
            "the rejected update's dropped cluster is held"
        );
        open.echo("after the NACK\n").await?;
        let fresh = TlsClient::connect(&ca, port, &one).await?;
        assert_eq!(fresh.greeting, "broker-1", "new connections reach it too");
        assert!(
            envoy
                .stat("listener_manager.lds.update_rejected")
                .await?
                .unwrap_or(0)
                >= 1
        );
        // Envoys that connect now get the last good config, not the rejected one.
        assert_eq!(
            xds.cache.group_status(&group).last_good_version,
            Some(good.version())
        );

        // A valid update is ACKed: the cluster goes.
        let mut fixed = access.clone();
        fixed.brokers.retain(|b| b.id != 1);
        let snap = xds.set(&[fixed]);
        xds.wait_acked(&group, &snap).await?;
        wait_for("broker 1's cluster to go", WAIT, POLL, || async {
            (!has_cluster(&envoy, &cluster).await.ok()?).then_some(())
        })
        .await?;
        tls_reaches(&ca, port, &format!("broker-0.{DOMAIN}"), "broker-0").await?;
        Ok(())
    }

    #[tokio::test]
    async fn sotw_a_rejected_listener_keeps_its_clusters() -> anyhow::Result<()> {
        a_rejected_listener_keeps_its_clusters(false).await
    }

    #[tokio::test]
    async fn delta_a_rejected_listener_keeps_its_clusters() -> anyhow::Result<()> {
        a_rejected_listener_keeps_its_clusters(true).await
    }

    #[tokio::test]
    async fn sotw_tls_passthrough_by_server_name() -> anyhow::Result<()> {
        tls_passthrough_by_server_name(false).await
    }

    #[tokio::test]
    async fn delta_tls_passthrough_by_server_name() -> anyhow::Result<()> {
        tls_passthrough_by_server_name(true).await
    }
}
