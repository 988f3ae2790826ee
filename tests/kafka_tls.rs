//! Pier's Kafka client over TLS, mutual TLS and SASL SCRAM against a real 2-node KRaft
//! cluster, and a broker certificate reloaded live. One cluster for the whole file; the
//! inter-broker and controller listeners stay plaintext, and each node adds:
//!
//! | listener   | port | protocol       | what                                       |
//! |------------|------|----------------|--------------------------------------------|
//! | TLS        | 9094 | SSL            | PEM keystore file rewritten in place       |
//! | MTLS       | 9095 | SSL            | `ssl.client.auth=required`, kubelet-style symlinked keystore |
//! | SCRAM      | 9096 | SASL_SSL       | SCRAM-SHA-512                              |
//! | SCRAMPLAIN | 9097 | SASL_PLAINTEXT | SCRAM-SHA-256, and PLAIN (user in the JAAS config) |
//!
//! Broker certificates name `kafka-<id>.kafka.test` and the node's IP.
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use pier::kafka::{
    AdminClient, AdminOptions, BrokerConnection, ConfigOp, ConfigResource, ConnectOptions,
    KafkaError, SaslMechanism, SaslOptions, ScramMechanism, TlsConfig, TlsOptions, Transport,
    certificate_serial, served_certificate, served_certificates,
};
use pier_testenv::kafka::{BROKER_PORT, CONTROLLER_PORT, KafkaOptions};
use pier_testenv::pki::{Ca, CertPem, LeafSpec};
use pier_testenv::{KafkaCluster, LogDir, wait_for};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

const TLS_PORT: u16 = 9094;
const MTLS_PORT: u16 = 9095;
const SCRAM_PORT: u16 = 9096;
const SCRAM_PLAIN_PORT: u16 = 9097;
const NODES: usize = 2;

const WAIT: Duration = Duration::from_secs(30);
const EVERY: Duration = Duration::from_millis(200);

fn options(connect: ConnectOptions) -> AdminOptions {
    AdminOptions {
        connect,
        call_timeout: Duration::from_secs(10),
        max_attempts: 3,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        deadline: Duration::from_secs(20),
    }
}

fn dns_name(id: i32) -> String {
    format!("kafka-{id}.kafka.test")
}

/// The test's PKI and files: one CA, per-node broker certificates, a client certificate.
struct Pki {
    ca: Ca,
    dir: PathBuf,
    ips: Vec<Ipv4Addr>,
}

impl Pki {
    fn broker_cert(&self, id: i32) -> anyhow::Result<CertPem> {
        let ip = self.ips[(id - 1) as usize];
        self.ca.issue(&LeafSpec {
            common_name: &format!("kafka-{id}"),
            dns_names: &[&dns_name(id)],
            ips: &[IpAddr::V4(ip)],
            server: true,
            ..LeafSpec::default()
        })
    }

    /// A PEM keystore as Kafka reads it: the PKCS#8 key, then the chain.
    fn keystore(&self, cert: &CertPem) -> String {
        format!("{}{}{}", cert.key, cert.cert, self.ca.cert_pem())
    }

    fn tls_keystore(&self, id: i32) -> PathBuf {
        self.dir.join(format!("kafka-{id}-tls.pem"))
    }

    fn scram_keystore(&self, id: i32) -> PathBuf {
        self.dir.join(format!("kafka-{id}-scram.pem"))
    }

    /// Like a Secret volume: `keystore.pem` → `..data/keystore.pem`, `..data` → `..<version>`.
    fn mtls_volume(&self, id: i32) -> PathBuf {
        self.dir.join(format!("kafka-{id}-mtls"))
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

/// Writes `content` as `keystore.pem` of a kubelet-style volume: a new timestamped directory,
/// a `..data_tmp` symlink to it renamed over `..data` (atomic), the old directory removed.
fn swap_volume(volume: &Path, version: u32, content: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(volume)?;
    let new = format!("..{version}");
    std::fs::create_dir(volume.join(&new))?;
    std::fs::write(volume.join(&new).join("keystore.pem"), content)?;
    let old = std::fs::read_link(volume.join("..data")).ok();
    let tmp = volume.join("..data_tmp");
    std::os::unix::fs::symlink(&new, &tmp)?;
    std::fs::rename(&tmp, volume.join("..data"))?;
    let link = volume.join("keystore.pem");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/keystore.pem", &link)?;
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(volume.join(old))?;
    }
    Ok(())
}

fn der(pem: &str) -> anyhow::Result<Vec<u8>> {
    Ok(CertificateDer::from_pem_slice(pem.as_bytes())
        .context("parsing a PEM certificate")?
        .to_vec())
}

fn tls(ca: &Ca, client: Option<&CertPem>) -> anyhow::Result<TlsConfig> {
    Ok(TlsConfig::new(TlsOptions {
        trust_bundle_pem: ca.cert_pem(),
        client_cert_chain_pem: client.map(|c| c.cert.clone()),
        client_key_pem: client.map(|c| c.key.clone()),
    })?)
}

fn connect(transport: Transport, sasl: Option<SaslOptions>) -> ConnectOptions {
    ConnectOptions {
        transport,
        sasl,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        ..ConnectOptions::default()
    }
}

fn addrs(cluster: &KafkaCluster, port: u16) -> BTreeMap<i32, String> {
    cluster
        .nodes()
        .iter()
        .map(|n| (n.id, format!("{}:{port}", n.ip)))
        .collect()
}

fn names() -> BTreeMap<i32, String> {
    (1..=NODES as i32).map(|id| (id, dns_name(id))).collect()
}

fn listener_properties(pki: &Pki) -> Vec<(String, String)> {
    let dir = pki.dir.display();
    let ca = pki.ca_file().display().to_string();
    let mut props: Vec<(String, String)> = vec![
        (
            "listeners".into(),
            format!(
                "PLAINTEXT://{{ip}}:{BROKER_PORT},CONTROLLER://{{ip}}:{CONTROLLER_PORT},\
                 TLS://{{ip}}:{TLS_PORT},MTLS://{{ip}}:{MTLS_PORT},SCRAM://{{ip}}:{SCRAM_PORT},\
                 SCRAMPLAIN://{{ip}}:{SCRAM_PLAIN_PORT}"
            ),
        ),
        (
            "advertised.listeners".into(),
            format!(
                "PLAINTEXT://{{ip}}:{BROKER_PORT},TLS://{{ip}}:{TLS_PORT},MTLS://{{ip}}:{MTLS_PORT},\
                 SCRAM://{{ip}}:{SCRAM_PORT},SCRAMPLAIN://{{ip}}:{SCRAM_PLAIN_PORT}"
            ),
        ),
        (
            "listener.security.protocol.map".into(),
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,TLS:SSL,MTLS:SSL,SCRAM:SASL_SSL,\
             SCRAMPLAIN:SASL_PLAINTEXT"
                .into(),
        ),
        (
            "listener.name.tls.ssl.keystore.location".into(),
            format!("{dir}/kafka-{{id}}-tls.pem"),
        ),
        (
            "listener.name.mtls.ssl.keystore.location".into(),
            format!("{dir}/kafka-{{id}}-mtls/keystore.pem"),
        ),
        (
            "listener.name.mtls.ssl.truststore.type".into(),
            "PEM".into(),
        ),
        ("listener.name.mtls.ssl.truststore.location".into(), ca),
        (
            "listener.name.mtls.ssl.client.auth".into(),
            "required".into(),
        ),
        (
            "listener.name.scram.ssl.keystore.location".into(),
            format!("{dir}/kafka-{{id}}-scram.pem"),
        ),
        (
            "listener.name.scram.sasl.enabled.mechanisms".into(),
            "SCRAM-SHA-512".into(),
        ),
        (
            "listener.name.scram.scram-sha-512.sasl.jaas.config".into(),
            "org.apache.kafka.common.security.scram.ScramLoginModule required;".into(),
        ),
        (
            "listener.name.scramplain.sasl.enabled.mechanisms".into(),
            "SCRAM-SHA-256,PLAIN".into(),
        ),
        (
            "listener.name.scramplain.plain.sasl.jaas.config".into(),
            "org.apache.kafka.common.security.plain.PlainLoginModule required \
             user_carol=\"carol-secret\";"
                .into(),
        ),
        (
            "listener.name.scramplain.scram-sha-256.sasl.jaas.config".into(),
            "org.apache.kafka.common.security.scram.ScramLoginModule required;".into(),
        ),
        // Sessions end after 6 s unless re-authenticated (KIP-368).
        (
            "listener.name.scramplain.scram-sha-256.connections.max.reauth.ms".into(),
            "6000".into(),
        ),
    ];
    for l in ["tls", "mtls", "scram"] {
        props.push((format!("listener.name.{l}.ssl.keystore.type"), "PEM".into()));
    }
    props
}

#[tokio::test]
async fn tls_mtls_scram_and_a_live_keystore_reload() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("kafka-tls")?;
    let ips = pier_testenv::net::loopback_ips(
        NODES,
        &[
            BROKER_PORT,
            CONTROLLER_PORT,
            TLS_PORT,
            MTLS_PORT,
            SCRAM_PORT,
            SCRAM_PLAIN_PORT,
        ],
    )?;
    let pki = Pki {
        ca: Ca::new("pier-test-cluster-ca")?,
        dir: logs.sub("certs")?,
        ips: ips.clone(),
    };
    std::fs::write(pki.ca_file(), pki.ca.cert_pem())?;
    let mut served = BTreeMap::new();
    for id in 1..=NODES as i32 {
        let tls_cert = pki.broker_cert(id)?;
        std::fs::write(pki.tls_keystore(id), pki.keystore(&tls_cert))?;
        let mtls_cert = pki.broker_cert(id)?;
        swap_volume(&pki.mtls_volume(id), 1, &pki.keystore(&mtls_cert))?;
        std::fs::write(pki.scram_keystore(id), pki.keystore(&pki.broker_cert(id)?))?;
        served.insert((id, TLS_PORT), der(&tls_cert.cert)?);
        served.insert((id, MTLS_PORT), der(&mtls_cert.cert)?);
    }
    let started = Instant::now();
    let cluster = KafkaCluster::start_with(
        &logs,
        KafkaOptions {
            nodes: NODES,
            properties: listener_properties(&pki),
            ips,
            ..KafkaOptions::default()
        },
    )
    .await?;
    eprintln!("cluster up in {:?}", started.elapsed());
    let plain = AdminClient::new(
        addrs(&cluster, BROKER_PORT),
        options(connect(Transport::Plaintext, None)),
    );

    let step = Instant::now();
    tls_with_only_the_ca(&cluster, &pki).await.context("TLS")?;
    eprintln!("TLS: {:?}", step.elapsed());
    let step = Instant::now();
    mutual_tls(&cluster, &pki).await.context("mTLS")?;
    eprintln!("mTLS: {:?}", step.elapsed());
    let step = Instant::now();
    scram(&cluster, &pki, &plain).await.context("SCRAM")?;
    eprintln!("SCRAM: {:?}", step.elapsed());
    let step = Instant::now();
    keystore_rewritten_in_place(&cluster, &pki, &plain, &served)
        .await
        .context("keystore reload, file rewritten")?;
    eprintln!("reload, file rewritten: {:?}", step.elapsed());
    let step = Instant::now();
    keystore_swapped_like_kubelet(&cluster, &pki, &plain, &served)
        .await
        .context("keystore reload, symlink swap")?;
    eprintln!("reload, symlink swap: {:?}", step.elapsed());
    let step = Instant::now();
    refused_reload(&cluster, &pki, &plain, &logs)
        .await
        .context("refused keystore reload")?;
    eprintln!("refused reload: {:?}", step.elapsed());
    let step = Instant::now();
    truststore_reload(&cluster, &pki, &plain)
        .await
        .context("truststore reload")?;
    eprintln!("truststore reload: {:?}", step.elapsed());
    Ok(())
}

async fn tls_with_only_the_ca(cluster: &KafkaCluster, pki: &Pki) -> anyhow::Result<()> {
    let transport = Transport::Tls(tls(&pki.ca, None)?);
    // Dialled at IPs, verified against the DNS names.
    let admin = AdminClient::new(
        addrs(cluster, TLS_PORT),
        options(connect(transport.clone(), None)),
    );
    admin.set_server_names(names());
    let md = admin.metadata(None).await?;
    let ports: Vec<(i32, i32)> = md.brokers.iter().map(|b| (b.id, b.port)).collect();
    assert_eq!(
        ports,
        [(1, TLS_PORT as i32), (2, TLS_PORT as i32)],
        "{md:?}"
    );
    for id in [1, 2] {
        admin
            .describe_configs(&ConfigResource::Broker(id))
            .await
            .with_context(|| format!("broker {id} over TLS"))?;
    }

    // Names that are not the broker's: refused at once, not retried.
    admin.set_server_names([(1, dns_name(2)), (2, dns_name(1))]);
    let started = Instant::now();
    let err = admin
        .describe_configs(&ConfigResource::Broker(1))
        .await
        .unwrap_err();
    assert!(matches!(err, KafkaError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("not valid for name"), "{err}");
    assert!(!err.is_retriable());
    assert!(started.elapsed() < Duration::from_secs(2), "not retried");

    // No names: the IP of the address is verified (the certificates carry it).
    admin.set_server_names([]);
    admin.describe_cluster().await?;

    // A client that trusts another CA does not accept the brokers.
    let other = Ca::new("some-other-ca")?;
    let stranger = AdminClient::new(
        addrs(cluster, TLS_PORT),
        options(connect(Transport::Tls(tls(&other, None)?), None)),
    );
    let err = stranger.describe_cluster().await.unwrap_err();
    assert!(matches!(err, KafkaError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // A plaintext client on the TLS listener gets no answer it can use.
    let err = BrokerConnection::connect(
        &format!("{}:{TLS_PORT}", cluster.nodes()[0].ip),
        connect(Transport::Plaintext, None),
    )
    .await
    .unwrap_err();
    assert!(!matches!(err, KafkaError::Tls { .. }), "{err}");
    Ok(())
}

async fn mutual_tls(cluster: &KafkaCluster, pki: &Pki) -> anyhow::Result<()> {
    let client = pki.ca.issue(&LeafSpec {
        common_name: "pier-operator",
        client: true,
        ..LeafSpec::default()
    })?;
    let admin = AdminClient::new(
        addrs(cluster, MTLS_PORT),
        options(connect(Transport::Tls(tls(&pki.ca, Some(&client))?), None)),
    );
    admin.set_server_names(names());
    let d = admin.describe_cluster().await?;
    assert_eq!(d.brokers.len(), NODES, "{d:?}");

    // Without a client certificate, or with one from another CA: refused, not retried.
    let other = Ca::new("some-other-clients-ca")?;
    let foreign = other.issue(&LeafSpec {
        common_name: "pier-operator",
        client: true,
        ..LeafSpec::default()
    })?;
    for (what, tls) in [
        ("no client certificate", tls(&pki.ca, None)?),
        (
            "a foreign client certificate",
            tls(&pki.ca, Some(&foreign))?,
        ),
    ] {
        admin.set_connect_options(connect(Transport::Tls(tls), None));
        let err = admin.describe_cluster().await.unwrap_err();
        assert!(matches!(err, KafkaError::Tls { .. }), "{what}: {err}");
        assert!(!err.is_retriable(), "{what}: {err}");
        eprintln!("mTLS with {what}: {err}");
    }
    // The right certificate again: the cached connections were replaced, calls work.
    admin.set_connect_options(connect(Transport::Tls(tls(&pki.ca, Some(&client))?), None));
    admin.describe_cluster().await?;
    Ok(())
}

fn scram_login(user: &str, password: &str, mechanism: SaslMechanism) -> SaslOptions {
    SaslOptions {
        mechanism,
        username: user.to_string(),
        password: password.to_string(),
    }
}

/// Authenticates on node `id`'s SASL listener and asks for metadata: `Ok` if accepted.
async fn login(
    cluster: &KafkaCluster,
    pki: &Pki,
    id: i32,
    sasl: SaslOptions,
) -> Result<(), KafkaError> {
    let node = cluster.nodes().iter().find(|n| n.id == id).expect("node");
    let (port, transport) = match sasl.mechanism {
        SaslMechanism::ScramSha256 => (SCRAM_PLAIN_PORT, Transport::Plaintext),
        _ => (
            SCRAM_PORT,
            Transport::Tls(tls(&pki.ca, None).expect("TLS config")),
        ),
    };
    let addr = format!("{}:{port}", node.ip);
    let mut conn =
        BrokerConnection::connect_named(&addr, Some(&dns_name(id)), connect(transport, Some(sasl)))
            .await?;
    conn.metadata(None).await.map(|_| ())
}

/// Waits until every node accepts (or refuses, `accepted = false`) this login: credentials
/// reach each broker through the metadata log.
async fn wait_for_login(
    cluster: &KafkaCluster,
    pki: &Pki,
    sasl: &SaslOptions,
    accepted: bool,
) -> anyhow::Result<()> {
    let what = format!(
        "{} login of {} to be {}",
        sasl.mechanism.name(),
        sasl.username,
        if accepted { "accepted" } else { "refused" }
    );
    wait_for(&what, WAIT, EVERY, || async move {
        for id in 1..=NODES as i32 {
            match login(cluster, pki, id, sasl.clone()).await {
                Ok(()) if accepted => {}
                Err(KafkaError::Authentication { .. }) if !accepted => {}
                _ => return None,
            }
        }
        Some(())
    })
    .await
}

async fn scram(cluster: &KafkaCluster, pki: &Pki, plain: &AdminClient) -> anyhow::Result<()> {
    let sha512 = |pw: &str| scram_login("alice", pw, SaslMechanism::ScramSha512);
    let sha256 = |pw: &str| scram_login("alice", pw, SaslMechanism::ScramSha256);

    // No credential yet: refused with Kafka's reason, not retried, no panic.
    let err = login(cluster, pki, 1, sha512("first")).await.unwrap_err();
    assert!(matches!(err, KafkaError::Authentication { .. }), "{err}");
    assert!(!err.is_retriable());
    eprintln!("unknown user: {err}");

    plain
        .upsert_user_scram_credential("alice", ScramMechanism::Sha512, "first", 8192)
        .await?;
    plain
        .upsert_user_scram_credential("alice", ScramMechanism::Sha256, "first", 4096)
        .await?;
    // Described by the answering broker from its metadata: it may lag the controller.
    let both = [
        (ScramMechanism::Sha256, 4096),
        (ScramMechanism::Sha512, 8192),
    ];
    let described = wait_for(
        "both credentials of alice described",
        WAIT,
        EVERY,
        || async {
            let described = plain
                .describe_user_scram_credentials(Some(&["alice", "bob"]))
                .await
                .ok()?;
            let alice: Vec<(ScramMechanism, i32)> = described
                .get("alice")?
                .iter()
                .map(|c| (c.mechanism, c.iterations))
                .collect();
            (alice == both).then_some(described)
        },
    )
    .await?;
    assert!(!described.contains_key("bob"), "{described:?}");
    let all = plain.describe_user_scram_credentials(None).await?;
    assert!(all.contains_key("alice"), "{all:?}");

    // SASL_SSL with SCRAM-SHA-512, SASL_PLAINTEXT with SCRAM-SHA-256.
    wait_for_login(cluster, pki, &sha512("first"), true).await?;
    wait_for_login(cluster, pki, &sha256("first"), true).await?;
    let err = login(cluster, pki, 1, sha512("wrong")).await.unwrap_err();
    assert!(matches!(err, KafkaError::Authentication { .. }), "{err}");
    assert!(err.to_string().contains("SCRAM-SHA-512"), "{err}");
    eprintln!("wrong password: {err}");

    // PLAIN (the broker's JAAS config holds the user).
    let plain_addr = format!("{}:{SCRAM_PLAIN_PORT}", cluster.node(1)?.ip);
    let carol = |pw: &str| {
        connect(
            Transport::Plaintext,
            Some(scram_login("carol", pw, SaslMechanism::Plain)),
        )
    };
    let mut conn = BrokerConnection::connect(&plain_addr, carol("carol-secret")).await?;
    conn.metadata(None).await?;
    let err = BrokerConnection::connect(&plain_addr, carol("wrong"))
        .await
        .unwrap_err();
    assert!(matches!(err, KafkaError::Authentication { .. }), "{err}");
    eprintln!("PLAIN, wrong password: {err}");

    // A session the broker limits (6 s): the connection reports itself done shortly before
    // the end, and the admin client opens a new one.
    let node = cluster.node(1)?;
    let conn = BrokerConnection::connect_named(
        &format!("{}:{SCRAM_PLAIN_PORT}", node.ip),
        None,
        connect(Transport::Plaintext, Some(sha256("first"))),
    )
    .await?;
    assert!(!conn.is_broken());
    wait_for("the limited session to end", WAIT, EVERY, || {
        let broken = conn.is_broken();
        async move { broken.then_some(()) }
    })
    .await?;
    let admin256 = AdminClient::new(
        addrs(cluster, SCRAM_PLAIN_PORT),
        options(connect(Transport::Plaintext, Some(sha256("first")))),
    );
    admin256.describe_cluster().await?;

    // The admin client over SASL_SSL.
    let admin = AdminClient::new(
        addrs(cluster, SCRAM_PORT),
        options(connect(
            Transport::Tls(tls(&pki.ca, None)?),
            Some(sha512("first")),
        )),
    );
    admin.set_server_names(names());
    assert_eq!(admin.describe_cluster().await?.brokers.len(), NODES);

    // A mechanism the listener does not enable: refused, the reason names the enabled one.
    let err = login(
        cluster,
        pki,
        1,
        scram_login("alice", "first", SaslMechanism::Plain),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, KafkaError::Authentication { .. }), "{err}");
    assert!(err.to_string().contains("SCRAM-SHA-512"), "{err}");
    eprintln!("mechanism not enabled: {err}");

    // A changed credential: the old password is refused, the new one accepted.
    plain
        .upsert_user_scram_credential("alice", ScramMechanism::Sha512, "second", 4096)
        .await?;
    wait_for_login(cluster, pki, &sha512("first"), false).await?;
    wait_for_login(cluster, pki, &sha512("second"), true).await?;
    // The admin client's cached connections stay authenticated; a new password is swapped in.
    admin.set_connect_options(connect(
        Transport::Tls(tls(&pki.ca, None)?),
        Some(sha512("second")),
    ));
    admin.describe_cluster().await?;

    // A deleted credential: refused; deleting it again is RESOURCE_NOT_FOUND.
    plain
        .delete_user_scram_credential("alice", ScramMechanism::Sha256)
        .await?;
    wait_for_login(cluster, pki, &sha256("first"), false).await?;
    let err = plain
        .delete_user_scram_credential("alice", ScramMechanism::Sha256)
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(pier::kafka::codes::RESOURCE_NOT_FOUND),
        "{err}"
    );
    wait_for(
        "alice's SCRAM-SHA-256 credential gone",
        WAIT,
        EVERY,
        || async {
            let described = plain
                .describe_user_scram_credentials(Some(&["alice"]))
                .await
                .ok()?;
            (described.get("alice")?.len() == 1).then_some(())
        },
    )
    .await?;

    // Out-of-range iterations never reach Kafka.
    let err = plain
        .upsert_user_scram_credential("alice", ScramMechanism::Sha512, "x", 100)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("iterations"), "{err}");
    Ok(())
}

/// Kafka's `num.network.threads` in testenv: each network thread has its own TLS context per
/// listener, reloaded one after the other, and new connections go to them in turn.
const NETWORK_THREADS: usize = 2;

/// The leaf certificates of `n` consecutive handshakes with node `id`'s listener on `port`.
async fn served_samples(
    cluster: &KafkaCluster,
    pki: &Pki,
    id: i32,
    port: u16,
    n: usize,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let addr = format!("{}:{port}", cluster.node(id)?.ip);
    let client = pki.ca.issue(&LeafSpec {
        common_name: "pier-operator",
        client: true,
        ..LeafSpec::default()
    })?;
    let tls = tls(&pki.ca, Some(&client))?;
    let within = Duration::from_secs(5);
    Ok(served_certificates(&addr, Some(&dns_name(id)), &tls, within, n).await?)
}

/// Waits until node `id`'s listener on `port` serves `want` (DER) on twice as many
/// consecutive handshakes as it has network threads: every thread has reloaded.
async fn wait_for_served(
    cluster: &KafkaCluster,
    pki: &Pki,
    id: i32,
    port: u16,
    want: &[u8],
) -> anyhow::Result<()> {
    let what = format!("node {id}'s listener on {port} to serve the new certificate");
    wait_for(&what, WAIT, EVERY, || async move {
        let samples = served_samples(cluster, pki, id, port, 2 * NETWORK_THREADS)
            .await
            .ok()?;
        samples.iter().all(|s| s == want).then_some(())
    })
    .await
}

async fn served_now(
    cluster: &KafkaCluster,
    pki: &Pki,
    id: i32,
    port: u16,
) -> anyhow::Result<Vec<u8>> {
    let node = cluster.node(id)?;
    let client = pki.ca.issue(&LeafSpec {
        common_name: "pier-operator",
        client: true,
        ..LeafSpec::default()
    })?;
    Ok(served_certificate(
        &format!("{}:{port}", node.ip),
        Some(&dns_name(id)),
        &tls(&pki.ca, Some(&client))?,
        Duration::from_secs(5),
    )
    .await?)
}

/// Rewrites node 1's TLS keystore file in place with a new certificate (same subject, same
/// SANs, new key and serial) and SETs the unchanged location on BROKER "1": the listener
/// serves the new certificate, nothing restarted.
async fn keystore_rewritten_in_place(
    cluster: &KafkaCluster,
    pki: &Pki,
    plain: &AdminClient,
    served: &BTreeMap<(i32, u16), Vec<u8>>,
) -> anyhow::Result<()> {
    let pids = cluster.pids();
    let old = &served[&(1, TLS_PORT)];
    assert_eq!(&served_now(cluster, pki, 1, TLS_PORT).await?, old);
    let (addr1, within) = (
        format!("{}:{TLS_PORT}", cluster.node(1)?.ip),
        Duration::from_secs(5),
    );
    let probe = tls(&pki.ca, None)?;
    assert_eq!(
        &served_certificate(&addr1, Some(&dns_name(1)), &probe, within).await?,
        old
    );

    let renewed = pki.broker_cert(1)?;
    let new = der(&renewed.cert)?;
    let (old_serial, new_serial) = (certificate_serial(old), certificate_serial(&new));
    assert!(old_serial.is_some() && new_serial.is_some());
    assert_ne!(old_serial, new_serial);
    std::fs::write(pki.tls_keystore(1), pki.keystore(&renewed))?;
    // Kafka does not watch the file: until told, the old certificate is served.
    assert_eq!(&served_now(cluster, pki, 1, TLS_PORT).await?, old);

    let location = pki.tls_keystore(1).display().to_string();
    let started = Instant::now();
    plain
        .incremental_alter_configs(
            &ConfigResource::Broker(1),
            &[ConfigOp::set(
                "listener.name.tls.ssl.keystore.location",
                location,
            )],
            false,
        )
        .await?;
    wait_for_served(cluster, pki, 1, TLS_PORT, &new).await?;
    eprintln!(
        "in-place rewrite: new certificate served {:?} after the SET",
        started.elapsed()
    );
    let now = served_now(cluster, pki, 1, TLS_PORT).await?;
    assert_eq!(certificate_serial(&now), new_serial);
    // One TlsConfig reused before and after, as the operator caches it: the new certificate.
    assert_eq!(
        served_certificate(&addr1, Some(&dns_name(1)), &probe, within).await?,
        new
    );
    // Per broker: node 2 still serves its own, unchanged certificate.
    assert_eq!(
        &served_now(cluster, pki, 2, TLS_PORT).await?,
        &served[&(2, TLS_PORT)]
    );
    assert_eq!(cluster.pids(), pids, "no broker restarted");

    // Clients over TLS keep working with the renewed certificate.
    let admin = AdminClient::new(
        addrs(cluster, TLS_PORT),
        options(connect(Transport::Tls(tls(&pki.ca, None)?), None)),
    );
    admin.set_server_names(names());
    admin.describe_cluster().await?;

    // Only per broker: the cluster default is refused.
    let err = plain
        .incremental_alter_configs(
            &ConfigResource::BrokerDefault,
            &[ConfigOp::set(
                "listener.name.tls.ssl.keystore.location",
                pki.tls_keystore(1).display().to_string(),
            )],
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(pier::kafka::codes::INVALID_REQUEST),
        "{err}"
    );

    Ok(())
}

/// SETs `key` (a keystore or truststore location) to `path` on BROKER `id`.
async fn set_location(plain: &AdminClient, id: i32, key: &str, path: &Path) -> anyhow::Result<()> {
    plain
        .incremental_alter_configs(
            &ConfigResource::Broker(id),
            &[ConfigOp::set(key, path.display().to_string())],
            false,
        )
        .await?;
    Ok(())
}

/// Waits until node `id`'s log holds `needle` at least `times` times.
async fn wait_for_log(logs: &LogDir, id: i32, needle: &str, times: usize) -> anyhow::Result<()> {
    let log = logs.path().join("kafka").join(format!("node-{id}.log"));
    let what = format!("node {id} to log {needle:?} {times} times");
    wait_for(&what, WAIT, EVERY, || {
        let log = log.clone();
        async move {
            let text = std::fs::read_to_string(&log).ok()?;
            (text.matches(needle).count() >= times).then_some(())
        }
    })
    .await
}

/// A certificate that drops a SAN: the SET succeeds, but the broker refuses the reload (only
/// its log says so) and keeps serving the current certificate. While that file stays, a
/// reload of another listener of that broker may be blocked too; once the file is fixed, one
/// SET reloads every listener whose file changed.
async fn refused_reload(
    cluster: &KafkaCluster,
    pki: &Pki,
    plain: &AdminClient,
    logs: &LogDir,
) -> anyhow::Result<()> {
    const REFUSED: &str = "Keystore SubjectAltNames do not match";
    let tls_key = "listener.name.tls.ssl.keystore.location";
    let mtls_key = "listener.name.mtls.ssl.keystore.location";
    let tls_before = served_now(cluster, pki, 1, TLS_PORT).await?;
    let mtls_before = served_now(cluster, pki, 1, MTLS_PORT).await?;
    let pids = cluster.pids();

    let narrower = pki.ca.issue(&LeafSpec {
        common_name: "kafka-1",
        dns_names: &[&dns_name(1)],
        server: true,
        ..LeafSpec::default()
    })?;
    std::fs::write(pki.tls_keystore(1), pki.keystore(&narrower))?;
    set_location(plain, 1, tls_key, &pki.tls_keystore(1)).await?;
    wait_for_log(logs, 1, REFUSED, 1).await?;
    assert_eq!(served_now(cluster, pki, 1, TLS_PORT).await?, tls_before);

    // Every SET on the broker reloads every listener whose file changed, in an order that
    // varies between runs, and stops at the refused file: the MTLS listener's renewal is
    // held up whenever the TLS listener comes first (seen both ways).
    let mtls_renewed = pki.broker_cert(1)?;
    swap_volume(&pki.mtls_volume(1), 3, &pki.keystore(&mtls_renewed))?;
    set_location(plain, 1, mtls_key, &pki.mtls_volume(1).join("keystore.pem")).await?;
    wait_for_log(logs, 1, REFUSED, 2).await?;
    let samples = served_samples(cluster, pki, 1, MTLS_PORT, 2 * NETWORK_THREADS).await?;
    let old_ones = samples.iter().filter(|s| **s == mtls_before).count();
    eprintln!(
        "MTLS listener while the TLS listener's keystore is refused: {old_ones} of {} \
         handshakes still served the old certificate",
        samples.len()
    );

    // Fixed: one SET (of the TLS listener) reloads both.
    let tls_renewed = pki.broker_cert(1)?;
    std::fs::write(pki.tls_keystore(1), pki.keystore(&tls_renewed))?;
    set_location(plain, 1, tls_key, &pki.tls_keystore(1)).await?;
    wait_for_served(cluster, pki, 1, TLS_PORT, &der(&tls_renewed.cert)?).await?;
    wait_for_served(cluster, pki, 1, MTLS_PORT, &der(&mtls_renewed.cert)?).await?;
    assert_eq!(cluster.pids(), pids, "no broker restarted");
    Ok(())
}

/// A listener's truststore reloads the same way: a client certificate from a new CA is
/// refused until the bundle holds the new CA too and the location is SET again.
async fn truststore_reload(
    cluster: &KafkaCluster,
    pki: &Pki,
    plain: &AdminClient,
) -> anyhow::Result<()> {
    let next = Ca::new("pier-test-clients-ca-2")?;
    let client = next.issue(&LeafSpec {
        common_name: "pier-operator",
        client: true,
        ..LeafSpec::default()
    })?;
    let addr = format!("{}:{MTLS_PORT}", cluster.node(1)?.ip);
    let options = connect(Transport::Tls(tls(&pki.ca, Some(&client))?), None);
    let err = BrokerConnection::connect_named(&addr, Some(&dns_name(1)), options.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, KafkaError::Tls { .. }), "{err}");
    std::fs::write(
        pki.ca_file(),
        format!("{}{}", pki.ca.cert_pem(), next.cert_pem()),
    )?;
    plain
        .incremental_alter_configs(
            &ConfigResource::Broker(1),
            &[ConfigOp::set(
                "listener.name.mtls.ssl.truststore.location",
                pki.ca_file().display().to_string(),
            )],
            false,
        )
        .await?;
    wait_for("node 1 to accept the new CA's client", WAIT, EVERY, || {
        let (addr, options) = (addr.clone(), options.clone());
        async move {
            let mut conn = BrokerConnection::connect_named(&addr, Some(&dns_name(1)), options)
                .await
                .ok()?;
            conn.metadata(None).await.ok()
        }
    })
    .await?;
    Ok(())
}

/// The same through a kubelet-style atomic symlink swap of the MTLS listener's keystore.
async fn keystore_swapped_like_kubelet(
    cluster: &KafkaCluster,
    pki: &Pki,
    plain: &AdminClient,
    served: &BTreeMap<(i32, u16), Vec<u8>>,
) -> anyhow::Result<()> {
    let pids = cluster.pids();
    let old = &served[&(1, MTLS_PORT)];
    assert_eq!(&served_now(cluster, pki, 1, MTLS_PORT).await?, old);
    let renewed = pki.broker_cert(1)?;
    let new = der(&renewed.cert)?;
    swap_volume(&pki.mtls_volume(1), 2, &pki.keystore(&renewed))?;
    let location = pki
        .mtls_volume(1)
        .join("keystore.pem")
        .display()
        .to_string();
    let started = Instant::now();
    plain
        .incremental_alter_configs(
            &ConfigResource::Broker(1),
            &[ConfigOp::set(
                "listener.name.mtls.ssl.keystore.location",
                location,
            )],
            false,
        )
        .await?;
    wait_for_served(cluster, pki, 1, MTLS_PORT, &new).await?;
    eprintln!(
        "symlink swap: new certificate served {:?} after the SET",
        started.elapsed()
    );
    assert_eq!(cluster.pids(), pids, "no broker restarted");
    Ok(())
}
