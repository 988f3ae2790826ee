//! `pier xds` serving ADS over TLS with client certificates, against real Envoys started from
//! the bootstrap the operator writes (`reconcile::envoy::envoy_bootstrap` with TLS): the Envoy
//! whose certificate names its Kafka cluster gets its listeners; one with a certificate for
//! another cluster, from an untrusted CA, or with none gets nothing and the refusal is counted;
//! a plaintext gRPC client is refused, a gRPC client with another cluster's identity gets
//! PERMISSION_DENIED naming both groups; a serving certificate replaced on disk is served to new
//! connections without a restart.
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pier::xds::identity::spiffe_uri;
use pier_testenv::pki::{Ca, CertPem, LeafSpec};
use pier_testenv::{Envoy, LogDir, wait_for};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
/// The name Envoy dials the xDS server by; the serving certificate carries it.
const XDS_HOST: &str = "localhost";
const NAMESPACE: &str = "kafka";
const CLUSTER: &str = "demo";
const TOKEN: &str = "admin-token-for-tests";

/// The CAs of one test: one signs the xDS server's certificate, one the Envoys' certificates.
struct Pki {
    server_ca: Ca,
    client_ca: Ca,
}

impl Pki {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            server_ca: Ca::new("xds server CA")?,
            client_ca: Ca::new("envoy client CA")?,
        })
    }

    fn server_cert(&self) -> anyhow::Result<CertPem> {
        self.server_ca.issue(&LeafSpec {
            common_name: "pier-xds",
            dns_names: &[XDS_HOST],
            server: true,
            ..LeafSpec::default()
        })
    }
}

/// A client certificate for the Envoys of KafkaCluster `namespace/name`, signed by `ca`.
fn envoy_cert(ca: &Ca, namespace: &str, name: &str) -> anyhow::Result<CertPem> {
    let uri = spiffe_uri(namespace, name);
    ca.issue(&LeafSpec {
        common_name: "envoy",
        uris: &[&uri],
        client: true,
        ..LeafSpec::default()
    })
}

/// The `pier xds` process with TLS, a client CA and an admin token.
struct PierXds {
    process: pier_testenv::Process,
    listen: SocketAddr,
    admin: SocketAddr,
    /// The serving certificate's Secret-like directory (`tls.crt`, `tls.key`).
    tls_dir: PathBuf,
    server_cert: PathBuf,
    client_ca: PathBuf,
    args: Vec<std::ffi::OsString>,
    log: PathBuf,
    http: reqwest::Client,
}

impl PierXds {
    fn start(logs: &Arc<LogDir>, pki: &Pki, brokers_file: &str) -> anyhow::Result<Self> {
        let dir = logs.sub("pier-xds")?;
        let ports = pier_testenv::net::free_ports(Ipv4Addr::LOCALHOST, 2)?;
        let server = pki.server_cert()?;
        let tls_dir = dir.join("tls");
        write_pair(&tls_dir, &server, &[])?;
        let (server_cert, server_key) = (tls_dir.join("tls.crt"), tls_dir.join("tls.key"));
        let client_ca = dir.join("client-ca.crt");
        std::fs::write(&client_ca, pki.client_ca.cert_pem())?;
        let token = dir.join("admin-token");
        std::fs::write(&token, format!("{TOKEN}\n"))?;
        let config = dir.join("brokers.yaml");
        std::fs::write(&config, brokers_file)?;
        let listen: SocketAddr = (Ipv4Addr::LOCALHOST, ports[0]).into();
        let admin: SocketAddr = (Ipv4Addr::LOCALHOST, ports[1]).into();
        let args: Vec<std::ffi::OsString> = vec![
            "xds".into(),
            "--config".into(),
            config.into(),
            format!("--listen={listen}").into(),
            format!("--admin={admin}").into(),
            "--admin-token-file".into(),
            token.into(),
            "--xds-tls-cert".into(),
            server_cert.clone().into(),
            "--xds-tls-key".into(),
            server_key.into(),
            "--xds-client-ca".into(),
            client_ca.clone().into(),
        ];
        let log = dir.join("pier.log");
        Ok(Self {
            process: Self::spawn(&args, &log)?,
            listen,
            admin,
            tls_dir,
            server_cert,
            client_ca,
            args,
            log,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        })
    }

    fn spawn(args: &[std::ffi::OsString], log: &Path) -> anyhow::Result<pier_testenv::Process> {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pier"));
        cmd.args(args);
        pier_testenv::Process::spawn("pier-xds", cmd, log, Duration::from_secs(5))
    }

    /// Kills the process and starts it again trusting only `client_ca_pem` for clients.
    async fn restart_trusting(&mut self, client_ca_pem: &str) -> anyhow::Result<()> {
        self.process.signal(libc::SIGKILL);
        self.process.stop();
        std::fs::write(&self.client_ca, client_ca_pem)?;
        self.process = Self::spawn(&self.args, &self.log)?;
        self.wait_serving().await
    }

    async fn wait_serving(&mut self) -> anyhow::Result<()> {
        let (listen, process) = (self.listen, &mut self.process);
        wait_for("pier xds to listen", WAIT, POLL, || {
            let running = process.check_running();
            async move {
                if let Err(e) = running {
                    return Some(Err(e));
                }
                pier_testenv::net::accepts(listen).await.then_some(Ok(()))
            }
        })
        .await?
    }

    /// The admin endpoint's metrics, with the token.
    async fn metrics(&self) -> anyhow::Result<String> {
        let resp = self
            .http
            .get(format!("http://{}/metrics", self.admin))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "metrics: {}", resp.status());
        Ok(resp.text().await?)
    }

    /// `/status`, with the token.
    async fn status(&self) -> anyhow::Result<serde_json::Value> {
        let resp = self
            .http
            .get(format!("http://{}/status", self.admin))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "status: {}", resp.status());
        Ok(resp.json().await?)
    }

    /// `pier_xds_refused_streams_total{reason}`.
    async fn refused(&self, reason: &str) -> anyhow::Result<u64> {
        let text = self.metrics().await?;
        let prefix = format!("pier_xds_refused_streams_total{{reason=\"{reason}\"}} ");
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
            .unwrap_or(0))
    }

    async fn wait_refused(&self, reason: &str) -> anyhow::Result<()> {
        wait_for(
            &format!("pier to count a {reason} refusal"),
            WAIT,
            POLL,
            || async { (self.refused(reason).await.ok()? > 0).then_some(()) },
        )
        .await
    }
}

/// A fake broker: says who it is on connect.
async fn backend() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"broker-0\n").await;
            });
        }
    });
    Ok(addr)
}

/// A broker file for `kafka/demo` with one broker behind Envoy on a free loopback port.
async fn brokers_file() -> anyhow::Result<(String, SocketAddr)> {
    let broker = backend().await?;
    let ports = pier_testenv::net::free_ports(Ipv4Addr::LOCALHOST, 2)?;
    let text = format!(
        "namespace: {NAMESPACE}\ncluster: {CLUSTER}\nlisteners:\n  - name: external\n    bindAddress: 127.0.0.1\n    bootstrapPort: {}\n    brokerPortBase: {}\n    brokers:\n      - {{id: 0, host: {}, port: {}}}\n",
        ports[0],
        ports[1],
        broker.ip(),
        broker.port()
    );
    Ok((text, (Ipv4Addr::LOCALHOST, ports[1]).into()))
}

/// How an Envoy authenticates to the xDS server.
enum ClientCert {
    Some(CertPem),
    None,
}

/// Starts Envoy from the operator's TLS bootstrap, its certificate files in a directory of its
/// own instead of /etc/pier/xds-tls.
async fn envoy(
    logs: &Arc<LogDir>,
    name: &str,
    pki: &Pki,
    pier: &PierXds,
    cert: ClientCert,
) -> anyhow::Result<Envoy> {
    let dir = logs.sub(name)?;
    let tls_dir = dir.join("xds-tls");
    let server_ca = pki.server_ca.cert_pem();
    let tls_path = tls_dir.display().to_string();
    // The bootstrap ConfigMap's SDS files, pointing at this Envoy's certificate directory.
    for (file, text) in pier::reconcile::xds_tls_sds_files() {
        let text = text.replace(pier::reconcile::XDS_TLS_DIR, &tls_path);
        std::fs::write(dir.join(file), text)?;
    }
    let address = format!("{XDS_HOST}:{}", pier.listen.port());
    let text = pier::reconcile::envoy_bootstrap(&address, true).replace(
        pier::reconcile::ENVOY_CONFIG_DIR,
        &dir.display().to_string(),
    );
    let mut yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)?;
    let cluster = yaml
        .get_mut("static_resources")
        .and_then(|v| v.get_mut("clusters"))
        .and_then(|v| v.get_mut(0))
        .and_then(|v| v.as_mapping_mut())
        .context("no xDS cluster in the bootstrap")?;
    // pier xds listens on 127.0.0.1 only; "localhost" may resolve to ::1 first.
    cluster.insert("dns_lookup_family".into(), "V4_ONLY".into());
    match cert {
        // The Secret <cluster>-envoy-xds-tls.
        ClientCert::Some(pem) => write_pair(&tls_dir, &pem, &[("xds-ca.crt", &server_ca)])?,
        ClientCert::None => {
            write_secret(&tls_dir, &[("xds-ca.crt", &server_ca)])?;
            let common = cluster
                .get_mut("transport_socket")
                .and_then(|v| v.get_mut("typed_config"))
                .and_then(|v| v.get_mut("common_tls_context"))
                .and_then(|v| v.as_mapping_mut())
                .context("no common_tls_context in the TLS bootstrap")?;
            common
                .remove("tls_certificate_sds_secret_configs")
                .context("no client certificate in the TLS bootstrap")?;
        }
    }
    let text = serde_yaml_ng::to_string(&yaml)?;
    let group = pier::model::group_name(NAMESPACE, CLUSTER);
    Envoy::start(
        logs,
        name,
        &text,
        &["--service-node", name, "--service-cluster", &group],
    )
    .await
}

/// Reaches the broker through Envoy, retrying while Envoy applies its config.
async fn reaches(addr: SocketAddr) -> anyhow::Result<()> {
    wait_for(&format!("{addr} to reach broker-0"), WAIT, POLL, || async {
        let s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(5),
            BufReader::new(s).read_line(&mut line),
        )
        .await
        .ok()?
        .ok()?;
        (line.trim() == "broker-0").then_some(())
    })
    .await
}

/// An Envoy that was refused has no listener and never accepted a response from the control
/// plane. (Not `control_plane.connected_state`: Envoy sets it to 1 as soon as it opens a stream,
/// before the handshake or the server's PERMISSION_DENIED, so it flickers while Envoy retries.)
async fn got_nothing(envoy: &Envoy) -> anyhow::Result<()> {
    let names = envoy.listener_names().await?;
    anyhow::ensure!(names.is_empty(), "a refused Envoy has listeners: {names:?}");
    for accepted in [
        "cluster_manager.cds.update_success",
        "listener_manager.lds.update_success",
    ] {
        let count = envoy.stat(accepted).await?.unwrap_or(0);
        anyhow::ensure!(count == 0, "a refused Envoy has {accepted} = {count}");
    }
    Ok(())
}

#[tokio::test]
async fn only_the_envoy_whose_certificate_names_its_cluster_gets_its_config() -> anyhow::Result<()>
{
    let logs = LogDir::for_current_test("xds-tls-identity")?;
    let pki = Pki::new()?;
    let (file, broker_port) = brokers_file().await?;
    let mut pier = PierXds::start(&logs, &pki, &file)?;
    pier.wait_serving().await?;

    // The right certificate: listeners arrive and the Kafka port forwards.
    let own = envoy_cert(&pki.client_ca, NAMESPACE, CLUSTER)?;
    let mut right = envoy(&logs, "envoy-right", &pki, &pier, ClientCert::Some(own)).await?;
    right.wait_live(WAIT).await?;
    reaches(broker_port).await?;
    let names = right.listener_names().await?;
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("pier/kafka/demo/external")),
        "{names:?}"
    );

    // A certificate for another cluster, from the trusted CA: refused with PERMISSION_DENIED.
    let other = envoy_cert(&pki.client_ca, NAMESPACE, "other")?;
    let wrong = envoy(&logs, "envoy-other", &pki, &pier, ClientCert::Some(other)).await?;
    pier.wait_refused("GroupMismatch").await?;
    got_nothing(&wrong).await?;

    // No client certificate: refused in the handshake.
    let none = envoy(&logs, "envoy-none", &pki, &pier, ClientCert::None).await?;
    pier.wait_refused("NoCertificate").await?;
    got_nothing(&none).await?;

    // The right identity, signed by a CA the server does not trust.
    let rogue_ca = Ca::new("rogue CA")?;
    let rogue = envoy_cert(&rogue_ca, NAMESPACE, CLUSTER)?;
    let untrusted = envoy(&logs, "envoy-rogue", &pki, &pier, ClientCert::Some(rogue)).await?;
    pier.wait_refused("Untrusted").await?;
    got_nothing(&untrusted).await?;

    // The refused Envoys never got it; the right one still forwards.
    reaches(broker_port).await?;
    for refused in [&wrong, &none, &untrusted] {
        got_nothing(refused).await?;
    }

    // The admin endpoint wants its token for /metrics and /status, not for the probes.
    let base = format!("http://{}", pier.admin);
    let status = |path: &'static str| {
        let url = format!("{base}{path}");
        let http = pier.http.clone();
        async move { anyhow::Ok(http.get(url).send().await?.status().as_u16()) }
    };
    assert_eq!(status("/metrics").await?, 401);
    assert_eq!(status("/status").await?, 401);
    assert_eq!(status("/healthz").await?, 200);
    let metrics = pier.metrics().await?;
    let expiry: i64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("pier_xds_serving_certificate_expiry_timestamp_seconds ")?
                .trim()
                .parse()
                .ok()
        })
        .context("no serving certificate expiry metric")?;
    assert!(expiry > 0, "{expiry}");
    let log = std::fs::read_to_string(pier.process.log_path())?;
    assert!(!log.contains(TOKEN), "the admin token is never logged");
    Ok(())
}

/// A gRPC channel to the xDS server over TLS with `client`'s certificate (or plaintext).
async fn channel(
    pier: &PierXds,
    pki: &Pki,
    client: Option<&CertPem>,
) -> anyhow::Result<tonic::transport::Channel> {
    let Some(client) = client else {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", pier.listen))?;
        return Ok(endpoint.connect().await?);
    };
    let mut config = client_config(pki, client)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connect = TlsConnect {
        addr: pier.listen,
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
    };
    Ok(
        tonic::transport::Endpoint::from_static("http://pier-xds.invalid")
            .connect_with_connector(connect)
            .await?,
    )
}

/// Dials the xDS server over TLS for tonic.
#[derive(Clone)]
struct TlsConnect {
    addr: SocketAddr,
    connector: tokio_rustls::TlsConnector,
}

type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tonic::codegen::Service<tonic::codegen::http::Uri> for TlsConnect {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<TlsIo>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::codegen::http::Uri) -> Self::Future {
        let (addr, connector) = (self.addr, self.connector.clone());
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = ServerName::try_from(XDS_HOST).map_err(std::io::Error::other)?;
            Ok(hyper_util::rt::TokioIo::new(
                connector.connect(name, tcp).await?,
            ))
        })
    }
}

/// Opens a SotW stream as a node of `kafka/demo` and returns its first response or error.
async fn first_response(
    channel: tonic::transport::Channel,
) -> anyhow::Result<
    Result<envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse, tonic::Status>,
> {
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    let request = DiscoveryRequest {
        node: Some(Node {
            id: "grpc-client".into(),
            cluster: pier::model::group_name(NAMESPACE, CLUSTER),
            ..Default::default()
        }),
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        ..Default::default()
    };
    let attempt = async {
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(request).await?;
        let mut stream = client
            .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let first = stream.message().await?;
        drop(tx);
        first.context("the stream ended without a response")
    };
    let outcome = tokio::time::timeout(Duration::from_secs(20), attempt)
        .await
        .context("an xDS stream neither served nor refused")?;
    Ok(match outcome {
        Ok(resp) => Ok(resp),
        Err(e) => match e.downcast::<tonic::Status>() {
            Ok(status) => Err(status),
            Err(other) => return Err(other),
        },
    })
}

#[tokio::test]
async fn grpc_clients_without_tls_or_with_another_identity_are_refused() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("xds-tls-grpc")?;
    let pki = Pki::new()?;
    let (file, _) = brokers_file().await?;
    let mut pier = PierXds::start(&logs, &pki, &file)?;
    pier.wait_serving().await?;

    // Plaintext: the server speaks only TLS; nothing is served.
    let plaintext = match channel(&pier, &pki, None).await {
        Err(e) => format!("connect: {e:#}"),
        Ok(channel) => match first_response(channel).await {
            Err(e) => format!("{e:#}"),
            Ok(Err(status)) => format!("{status}"),
            Ok(Ok(resp)) => panic!("a plaintext client got an answer: {resp:?}"),
        },
    };
    eprintln!("plaintext client refused: {plaintext}");

    // The right identity is served (the control for what follows).
    let own = envoy_cert(&pki.client_ca, NAMESPACE, CLUSTER)?;
    let resp = first_response(channel(&pier, &pki, Some(&own)).await?).await??;
    assert!(!resp.resources.is_empty(), "{resp:?}");

    // Another cluster's identity asking for kafka/demo: PERMISSION_DENIED naming both.
    let other = envoy_cert(&pki.client_ca, NAMESPACE, "other")?;
    let status = first_response(channel(&pier, &pki, Some(&other)).await?)
        .await?
        .expect_err("another cluster's certificate is refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let message = status.message();
    assert!(
        message.contains("\"kafka/demo\"") && message.contains("\"kafka/other\""),
        "{message}"
    );
    assert_eq!(pier.refused("GroupMismatch").await?, 1);

    // A trusted certificate that names no Kafka cluster.
    let anonymous = pki.client_ca.issue(&LeafSpec {
        common_name: "someone",
        client: true,
        ..LeafSpec::default()
    })?;
    let status = first_response(channel(&pier, &pki, Some(&anonymous)).await?)
        .await?
        .expect_err("a certificate without identity is refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("spiffe://pier.dev/ns/"),
        "{status:?}"
    );
    assert_eq!(pier.refused("UnknownIdentity").await?, 1);
    pier.process.check_running()?;
    Ok(())
}

fn client_config(pki: &Pki, client: &CertPem) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(
        pki.server_ca.cert_pem().as_bytes(),
    )?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(client.cert.as_bytes())?],
            PrivateKeyDer::from_pem_slice(client.key.as_bytes())?,
        )?)
}

/// The certificate the xDS server presents to a new TLS connection.
async fn served_certificate(
    pier: &PierXds,
    pki: &Pki,
    client: &CertPem,
) -> anyhow::Result<CertificateDer<'static>> {
    let config = client_config(pki, client)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(pier.listen).await?;
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        connector.connect(ServerName::try_from(XDS_HOST)?, tcp),
    )
    .await??;
    let (_, session) = tls.get_ref();
    let chain = session
        .peer_certificates()
        .context("the server sent no certificate")?;
    Ok(chain[0].clone().into_owned())
}

fn der(pem: &str) -> anyhow::Result<CertificateDer<'static>> {
    Ok(CertificateDer::from_pem_slice(pem.as_bytes())?)
}

/// Writes `files` into `dir` as the kubelet updates a Secret volume: into a new versioned
/// directory, then one atomic rename of the `..data` symlink, so readers see all the new files
/// or none; `dir/<name>` are symlinks through `..data`.
fn write_secret(dir: &Path, files: &[(&str, &str)]) -> anyhow::Result<()> {
    static VERSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let n = VERSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let version = format!("..{}-{n}", std::process::id());
    std::fs::create_dir(dir.join(&version))?;
    for (name, text) in files {
        std::fs::write(dir.join(&version).join(name), text)?;
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    std::os::unix::fs::symlink(&version, dir.join("..data_tmp"))?;
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data"))?;
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link)?;
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old))?;
    }
    Ok(())
}

/// A certificate Secret's files: `tls.crt`, `tls.key`, and more.
fn write_pair(dir: &Path, pem: &CertPem, more: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut files = vec![
        ("tls.crt", pem.cert.as_str()),
        ("tls.key", pem.key.as_str()),
    ];
    files.extend_from_slice(more);
    write_secret(dir, &files)
}

#[tokio::test]
async fn a_renewed_serving_certificate_is_served_without_a_restart() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("xds-tls-renewal")?;
    let pki = Pki::new()?;
    let (file, broker_port) = brokers_file().await?;
    let mut pier = PierXds::start(&logs, &pki, &file)?;
    pier.wait_serving().await?;
    let pid = pier.process.pid();
    let client = envoy_cert(&pki.client_ca, NAMESPACE, CLUSTER)?;
    let first = std::fs::read_to_string(&pier.server_cert)?;
    assert_eq!(
        served_certificate(&pier, &pki, &client).await?,
        der(&first)?
    );

    // An Envoy connected before the renewal keeps its stream.
    let mut before = envoy(
        &logs,
        "envoy-before",
        &pki,
        &pier,
        ClientCert::Some(client.clone()),
    )
    .await?;
    before.wait_live(WAIT).await?;
    reaches(broker_port).await?;

    let renewed = pki.server_cert()?;
    write_pair(&pier.tls_dir, &renewed, &[])?;
    let want = der(&renewed.cert)?;
    wait_for(
        "new connections to get the renewed certificate",
        WAIT,
        POLL,
        || async {
            let served = served_certificate(&pier, &pki, &client).await.ok()?;
            (served == want).then_some(())
        },
    )
    .await?;
    pier.process.check_running()?;
    assert_eq!(pier.process.pid(), pid, "pier xds was not restarted");

    // A new Envoy connects with the renewed certificate; the old one still forwards.
    let mut after = envoy(
        &logs,
        "envoy-after",
        &pki,
        &pier,
        ClientCert::Some(client.clone()),
    )
    .await?;
    after.wait_live(WAIT).await?;
    assert_eq!(before.stat("control_plane.connected_state").await?, Some(1));
    reaches(broker_port).await?;

    // A broken renewal (key of another certificate) keeps the last good one serving.
    let other = pki.server_cert()?;
    write_pair(
        &pier.tls_dir,
        &CertPem {
            cert: other.cert,
            key: renewed.key.clone(),
        },
        &[],
    )?;
    let log = pier.process.log_path().to_path_buf();
    wait_for("pier to report the bad pair", WAIT, POLL, || async {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("cannot reload the xDS serving certificate")
            .then_some(())
    })
    .await?;
    assert_eq!(served_certificate(&pier, &pki, &client).await?, want);
    Ok(())
}

/// The serial numbers of the client certificate Envoy has loaded for the xDS cluster.
async fn client_serials(envoy: &Envoy) -> anyhow::Result<Vec<String>> {
    let text = envoy.admin_get("/certs").await?;
    let certs: serde_json::Value = serde_json::from_str(&text)?;
    Ok(certs["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["cert_chain"].as_array().into_iter().flatten())
        .filter_map(|c| c["serial_number"].as_str().map(str::to_string))
        .collect())
}

async fn connected(envoy: &Envoy) -> Option<u64> {
    envoy.stat("control_plane.connected_state").await.ok()?
}

#[tokio::test]
async fn an_envoy_uses_its_renewed_client_certificate_without_a_restart() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("xds-tls-envoy-renewal")?;
    let pki = Pki::new()?;
    let (file, broker_port) = brokers_file().await?;
    let mut pier = PierXds::start(&logs, &pki, &file)?;
    pier.wait_serving().await?;
    let first = envoy_cert(&pki.client_ca, NAMESPACE, CLUSTER)?;
    let mut envoy = envoy(&logs, "envoy", &pki, &pier, ClientCert::Some(first)).await?;
    envoy.wait_live(WAIT).await?;
    reaches(broker_port).await?;
    let old = client_serials(&envoy).await?;
    assert_eq!(old.len(), 1, "{old:?}");
    let pid = envoy.pid();

    // The Secret is renewed with a certificate from a new CA: Envoy picks it up from disk.
    let new_ca = Ca::new("renewed envoy client CA")?;
    let renewed = envoy_cert(&new_ca, NAMESPACE, CLUSTER)?;
    let tls_dir = logs.path().join("envoy/xds-tls");
    let server_ca = pki.server_ca.cert_pem();
    write_pair(&tls_dir, &renewed, &[("xds-ca.crt", &server_ca)])?;
    wait_for(
        "Envoy to load the renewed certificate",
        WAIT,
        POLL,
        || async {
            let now = client_serials(&envoy).await.ok()?;
            (now.len() == 1 && now != old).then_some(())
        },
    )
    .await?;

    // The server now trusts only the new CA: Envoy reconnects with the renewed certificate.
    pier.restart_trusting(&new_ca.cert_pem()).await?;
    wait_for(
        "the new pier xds to serve Envoy, which has the renewed certificate",
        WAIT,
        POLL,
        || async {
            let status = pier.status().await.ok()?;
            let group = &status[0];
            let served = group["nodes"]
                .as_array()?
                .iter()
                .any(|n| n["node_id"] == "envoy");
            (served && group["all_acked"] == true).then_some(())
        },
    )
    .await?;
    assert_eq!(connected(&envoy).await, Some(1));
    reaches(broker_port).await?;
    assert_eq!(pier.refused("Untrusted").await?, 0);
    assert_eq!(envoy.pid(), pid, "Envoy was not restarted");
    Ok(())
}
