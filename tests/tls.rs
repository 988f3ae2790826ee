//! TLS end to end, with real brokers and a real Envoy run by the dev node agent: Pier's own
//! CAs, brokers on SSL listeners only (inter-broker and controller with mutual TLS, so the
//! operator itself must speak mTLS), SNI routing through Envoy with TLS passed through, a
//! client that knows only `bootstrap.<domain>` and the CA (kcat, Kafka's Java producer, Pier's
//! Rust client), a listener that requires client certificates, a SASL_SSL listener where a
//! SCRAM user's password comes from a Secret, and certificates renewed live
//! under a running producer: no broker restarted, the new certificate served; then the
//! cluster CA rotated under a producer that trusts old and new during the overlap, after which
//! only the new CA verifies.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use pier::api::KafkaCluster;
use pier::kafka::{AdminClient, AdminOptions, ConnectOptions, TlsConfig, TlsOptions, Transport};
use pier_testenv::devlet::{self, DevletOptions};
use pier_testenv::{ControlPlane, LogDir, wait_for};
use serde_json::json;
use support::{Operator, VerifiableProducer, broker_pods};

mod support;

const NS: &str = "default";
const NAME: &str = "tls";
const DOMAIN: &str = "kafka.pier.test";
const MTLS_DOMAIN: &str = "mtls.pier.test";
const PORT: u16 = 29392;
const MTLS_PORT: u16 = 29393;
const SASL_DOMAIN: &str = "sasl.pier.test";
const SASL_PORT: u16 = 29394;
const TOPIC: &str = "tls";
const WAIT: Duration = Duration::from_secs(240);

fn cluster() -> anyhow::Result<KafkaCluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "kafka.pier.dev/v1alpha1",
        "kind": "KafkaCluster",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "kafka": {
                "readOnlyConfig": {
                    "default.replication.factor": "3",
                    "offsets.topic.replication.factor": "3",
                    "transaction.state.log.replication.factor": "3",
                    "transaction.state.log.min.isr": "2"
                },
                "clusterWideConfig": {"min.insync.replicas": "2"}
            },
            "brokerConfigGroups": {"default": {
                "heapOpts": "-Xms256m -Xmx256m",
                "storage": [{"mountPath": "/var/lib/kafka/data0", "size": "1Gi"}]
            }},
            "brokers": [
                {"id": 0, "configGroup": "default"},
                {"id": 1, "configGroup": "default"},
                {"id": 2, "configGroup": "default"}
            ],
            "listeners": {
                "internal": [
                    {"name": "internal", "port": 9092, "protocol": "SSL",
                     "clientAuth": "required", "usedForInterBroker": true},
                    {"name": "controller", "port": 9093, "protocol": "SSL",
                     "clientAuth": "required", "usedForController": true}
                ],
                "external": [
                    {"name": "external", "containerPort": 9094, "bootstrapPort": PORT,
                     "sni": {"domain": DOMAIN}, "protocol": "SSL"},
                    {"name": "mtls", "containerPort": 9095, "bootstrapPort": MTLS_PORT,
                     "sni": {"domain": MTLS_DOMAIN}, "protocol": "SSL", "clientAuth": "required"},
                    {"name": "sasl", "containerPort": 9096, "bootstrapPort": SASL_PORT,
                     "sni": {"domain": SASL_DOMAIN}, "protocol": "SASL_SSL"}
                ]
            },
            "tls": {"certificates": {"validityDays": 30, "renewBeforeDays": 7}},
            "sasl": {"scramUsers": [
                {"name": "alice", "passwordSecretRef": {"name": "alice", "key": "password"}}
            ]},
            "envoy": {"replicas": 1}
        }
    }))?)
}

fn hosts_file(logs: &LogDir) -> anyhow::Result<PathBuf> {
    support::sni_hosts_file(logs, &[DOMAIN, MTLS_DOMAIN, SASL_DOMAIN], 3)
}

async fn kcat(
    hosts: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> anyhow::Result<std::process::Output> {
    support::kcat_with_hosts(hosts, args, stdin, Duration::from_secs(60)).await
}

/// kcat's TLS flags for a client trusting `ca` (and presenting `cert`/`key` when given).
fn tls_args(ca: &Path, client: Option<(&Path, &Path)>) -> Vec<String> {
    let mut args = vec![
        "-X".to_string(),
        "security.protocol=SSL".to_string(),
        "-X".to_string(),
        format!("ssl.ca.location={}", ca.display()),
        "-X".to_string(),
        "ssl.endpoint.identification.algorithm=https".to_string(),
    ];
    if let Some((cert, key)) = client {
        args.extend([
            "-X".to_string(),
            format!("ssl.certificate.location={}", cert.display()),
            "-X".to_string(),
            format!("ssl.key.location={}", key.display()),
        ]);
    }
    args
}

/// The broker names kcat's metadata lists (`-L -J`), or why it failed.
async fn kcat_brokers(
    hosts: &Path,
    bootstrap: &str,
    tls: &[String],
) -> Result<Vec<String>, String> {
    let mut args: Vec<&str> = vec!["-L", "-J", "-b", bootstrap, "-m", "10"];
    args.extend(tls.iter().map(String::as_str));
    let out = kcat(hosts, &args, None).await.map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    let md: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let mut names: Vec<String> = md["brokers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}

async fn secret_key(client: &Client, name: &str, key: &str) -> anyhow::Result<String> {
    let s = Api::<Secret>::namespaced(client.clone(), NS)
        .get(name)
        .await?;
    let bytes = s
        .data
        .unwrap_or_default()
        .remove(key)
        .ok_or_else(|| anyhow::anyhow!("Secret {name} has no {key}"))?;
    Ok(String::from_utf8(bytes.0)?)
}

async fn status(client: &Client) -> anyhow::Result<pier::api::KafkaClusterStatus> {
    support::cluster_status(client, NS, NAME).await
}

/// Serial of each broker's certificate as status reports it, once every one is served.
async fn served_serials(client: &Client) -> Option<BTreeMap<String, String>> {
    let s = status(client).await.ok()?;
    let tls = s.tls?;
    let brokers: Vec<_> = tls
        .certificates
        .iter()
        .filter(|c| c.secret.contains("-broker-"))
        .collect();
    (brokers.len() == 3 && brokers.iter().all(|c| c.served)).then(|| {
        brokers
            .iter()
            .map(|c| (c.secret.clone(), c.serial.clone()))
            .collect()
    })
}

/// The serial of the certificate broker `id` serves through Envoy (SNI), verified with `ca`.
async fn serial_through_envoy(ca: &str, id: i32) -> anyhow::Result<String> {
    let tls = trusting(ca)?;
    let der = pier::kafka::served_certificate(
        &format!("127.0.0.1:{PORT}"),
        Some(&format!("broker-{id}.{DOMAIN}")),
        &tls,
        Duration::from_secs(5),
    )
    .await?;
    let serial = pier::kafka::certificate_serial(&der)
        .ok_or_else(|| anyhow::anyhow!("broker {id} served something that is not a certificate"))?;
    let hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
    Ok(pier_pki::normalize_serial(&hex))
}

async fn annotate(client: &Client, key: &str, value: &str) -> anyhow::Result<()> {
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
        )
        .await?;
    Ok(())
}

fn uids(pods: &BTreeMap<i32, support::BrokerPod>) -> BTreeMap<i32, String> {
    pods.iter().map(|(id, p)| (*id, p.uid.clone())).collect()
}

#[tokio::test]
async fn tls_listeners_through_envoy_and_live_certificate_renewal() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("tls")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    // xDS over mTLS too: the Envoy gets its listeners only with the client certificate Pier
    // issues it from the cluster CA (its identity names this cluster).
    let operator = Operator::start_with_xds_tls(client.clone(), NS, logs.path()).await?;
    let _devlet = tokio::spawn(devlet::run(
        client.clone(),
        DevletOptions::new("dev-a", logs.data("devlet")?),
    ));
    set_password(&client, "first-password").await?;
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &cluster()?)
        .await?;

    // Brokers on TLS-only listeners come up: the operator reached them over mTLS (live
    // config and status need it) and every certificate is served.
    let first = wait_for(
        "every broker to serve its certificate",
        WAIT,
        Duration::from_secs(1),
        || served_serials(&client),
    )
    .await?;
    wait_for(
        "the cluster to be Ready",
        WAIT,
        Duration::from_secs(1),
        || async {
            let s = status(&client).await.ok()?;
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        },
    )
    .await?;
    let before = uids(&broker_pods(&client, NS, NAME).await?);

    // Only Pier writes these; the public CA bundle is what clients get.
    let ca = secret_key(&client, &format!("{NAME}-cluster-ca-cert"), "ca.crt").await?;
    let ca_file = logs.path().join("ca.pem");
    std::fs::write(&ca_file, &ca)?;
    let hosts = hosts_file(&logs)?;
    let bootstrap = format!("bootstrap.{DOMAIN}:{PORT}");

    // kcat knows only bootstrap.<domain> and the CA: it verifies every broker (each advertises
    // its SNI name) and lists all three.
    let tls = tls_args(&ca_file, None);
    let names = wait_for(
        "kcat to list 3 brokers over TLS",
        WAIT,
        Duration::from_secs(2),
        || async {
            kcat_brokers(&hosts, &bootstrap, &tls)
                .await
                .ok()
                .filter(|n| n.len() == 3)
        },
    )
    .await?;
    assert_eq!(
        names,
        (0..3)
            .map(|id| format!("broker-{id}.{DOMAIN}:{PORT}"))
            .collect::<Vec<_>>()
    );
    // A client with another CA cannot verify the brokers.
    let stranger = pier_pki::generate_ca("someone else", 10, now())?;
    let stranger_file = logs.path().join("stranger.pem");
    std::fs::write(&stranger_file, &stranger.cert_pem)?;
    let refused = kcat_brokers(&hosts, &bootstrap, &tls_args(&stranger_file, None)).await;
    assert!(
        refused.is_err(),
        "a client without the CA must fail to verify: {refused:?}"
    );

    // Produce and consume with kcat through Envoy.
    // The topic is created by the first produce (auto-creation, replication factor 3).
    let mut produce: Vec<&str> = vec!["-P", "-b", &bootstrap, "-t", TOPIC, "-X", "acks=all"];
    produce.extend(tls.iter().map(String::as_str));
    let out = kcat(&hosts, &produce, Some(b"one\ntwo\nthree\n")).await?;
    assert!(
        out.status.success(),
        "kcat produce: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut consume: Vec<&str> = vec![
        "-C",
        "-b",
        &bootstrap,
        "-t",
        TOPIC,
        "-o",
        "beginning",
        "-e",
        "-c",
        "3",
    ];
    consume.extend(tls.iter().map(String::as_str));
    let out = kcat(&hosts, &consume, None).await?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        3,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Pier's Rust client through Envoy with only the CA.
    let rust = AdminClient::new(
        [(0, format!("127.0.0.1:{PORT}"))],
        through_envoy(&ca, None)?,
    );
    rust.set_server_names([(0, format!("bootstrap.{DOMAIN}"))]);
    let md = rust.metadata(None).await?;
    assert_eq!(md.brokers.len(), 3);

    // The listener that requires client certificates: one from the clients CA works, none
    // is refused.
    let clients_ca = pier_pki::CaMaterial {
        cert_pem: secret_key(&client, &format!("{NAME}-clients-ca"), "ca.crt").await?,
        key_pem: secret_key(&client, &format!("{NAME}-clients-ca"), "ca.key").await?,
    };
    let user = pier_pki::Issuer::load(&clients_ca)?.issue(
        &pier_pki::LeafRequest {
            common_name: "alice".into(),
            client: true,
            ..Default::default()
        },
        1,
        now(),
    )?;
    let (cert_file, key_file) = (logs.path().join("alice.crt"), logs.path().join("alice.key"));
    std::fs::write(&cert_file, &user.chain_pem)?;
    std::fs::write(&key_file, &user.key_pem)?;
    let mtls_bootstrap = format!("bootstrap.{MTLS_DOMAIN}:{MTLS_PORT}");
    let with_cert = tls_args(&ca_file, Some((&cert_file, &key_file)));
    let names = wait_for(
        "kcat with a client certificate",
        WAIT,
        Duration::from_secs(2),
        || async {
            kcat_brokers(&hosts, &mtls_bootstrap, &with_cert)
                .await
                .ok()
                .filter(|n| n.len() == 3)
        },
    )
    .await?;
    assert!(
        names
            .iter()
            .all(|n| n.ends_with(&format!("{MTLS_DOMAIN}:{MTLS_PORT}")))
    );
    let refused = kcat_brokers(&hosts, &mtls_bootstrap, &tls).await;
    assert!(
        refused.is_err(),
        "no client certificate must be refused: {refused:?}"
    );

    // SASL_SSL with SCRAM-SHA-512 through Envoy: alice's password comes from her Secret;
    // Kafka's Java producer logs in with it, and a changed Secret changes the credential.
    let sasl_bootstrap = format!("bootstrap.{SASL_DOMAIN}:{SASL_PORT}");
    let sasl_config = |password: &str| {
        format!(
            "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nssl.truststore.type=PEM\nssl.truststore.location={}\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"alice\" password=\"{password}\";\n",
            ca_file.display()
        )
    };
    let jvm = format!("-Djdk.net.hosts.file={}", hosts.display());
    let alice = VerifiableProducer::start_with(
        &logs,
        "sasl-producer",
        &sasl_bootstrap,
        TOPIC,
        &sasl_config("first-password"),
        Some(&jvm),
    )?;
    alice.wait_acked(50).await?;
    alice.finish().await?;
    set_password(&client, "second-password").await?;
    wait_for(
        "the new password to log in",
        WAIT,
        Duration::from_secs(1),
        || async { sasl_login(&ca, "second-password").await.ok() },
    )
    .await?;
    let old = sasl_login(&ca, "first-password").await;
    assert!(old.is_err(), "the old password must be refused: {old:?}");
    let alice = VerifiableProducer::start_with(
        &logs,
        "sasl-producer-2",
        &sasl_bootstrap,
        TOPIC,
        &sasl_config("second-password"),
        Some(&jvm),
    )?;
    alice.wait_acked(50).await?;
    alice.finish().await?;

    // Renewal under a running acks=all producer through Envoy (Kafka's own Java client,
    // trusting the CA): every broker certificate re-issued and reloaded live.
    let producer = VerifiableProducer::start_with(
        &logs,
        "renewal-producer",
        &bootstrap,
        TOPIC,
        &format!(
            "security.protocol=SSL\nssl.truststore.type=PEM\nssl.truststore.location={}\n",
            ca_file.display()
        ),
        Some(&format!("-Djdk.net.hosts.file={}", hosts.display())),
    )?;
    producer.wait_acked(200).await?;
    annotate(&client, "kafka.pier.dev/renew-certificates", "1").await?;
    let renewed = wait_for(
        "renewed certificates to be served",
        WAIT,
        Duration::from_secs(1),
        || async {
            let now = served_serials(&client).await?;
            now.iter()
                .all(|(secret, serial)| first.get(secret) != Some(serial))
                .then_some(now)
        },
    )
    .await?;
    for id in 0..3 {
        let want = &renewed[&format!("{NAME}-broker-{id}-tls")];
        assert_eq!(
            &serial_through_envoy(&ca, id).await?,
            want,
            "broker {id} serves the new certificate"
        );
    }
    let acked_at_renewal = producer.outcomes()?.0.len();
    producer.wait_acked(acked_at_renewal + 200).await?;
    let acked = producer.finish().await?;
    assert!(acked.len() > acked_at_renewal);
    assert_eq!(
        uids(&broker_pods(&client, NS, NAME).await?),
        before,
        "no broker restarted"
    );

    // The cluster CA rotated: clients that take the bundle of old and new during the overlap
    // keep producing through every step; afterwards only the new CA verifies the brokers.
    let cluster_ca = |s: &pier::api::KafkaClusterStatus| {
        s.tls
            .as_ref()
            .and_then(|t| t.cas.iter().find(|c| c.kind == "cluster").cloned())
    };
    let old_ca = cluster_ca(&status(&client).await?).expect("cluster CA in status");
    annotate(&client, "kafka.pier.dev/renew-cluster-ca", "1").await?;
    let overlap = wait_for(
        "the rotation to trust old and new",
        WAIT,
        Duration::from_millis(200),
        || async {
            let ca = cluster_ca(&status(&client).await.ok()?)?;
            (ca.trusted.len() == 2 && ca.trusted.contains(&old_ca.serial)).then_some(ca)
        },
    )
    .await?;
    assert!(
        ["trust-both", "reissue"].contains(&overlap.phase.as_str()),
        "{overlap:?}"
    );
    let bundle = secret_key(&client, &format!("{NAME}-cluster-ca-cert"), "ca.crt").await?;
    assert_eq!(
        pier_pki::parse_bundle(&bundle)?.len(),
        2,
        "the public bundle holds old and new"
    );
    let bundle_file = logs.path().join("bundle.pem");
    std::fs::write(&bundle_file, &bundle)?;
    let producer = VerifiableProducer::start_with(
        &logs,
        "rotation-producer",
        &bootstrap,
        TOPIC,
        &format!(
            "security.protocol=SSL\nssl.truststore.type=PEM\nssl.truststore.location={}\n",
            bundle_file.display()
        ),
        Some(&format!("-Djdk.net.hosts.file={}", hosts.display())),
    )?;
    producer.wait_acked(100).await?;
    let phases = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let rotated = wait_for(
        "the rotation to finish",
        WAIT,
        Duration::from_millis(200),
        || async {
            let s = status(&client).await.ok()?;
            let ca = cluster_ca(&s)?;
            phases.lock().ok()?.insert(ca.phase.clone());
            let all_served = s.tls.as_ref()?.certificates.iter().all(|c| c.served);
            (ca.phase.is_empty()
                && ca.serial != old_ca.serial
                && ca.trusted.len() == 1
                && all_served)
                .then_some(ca)
        },
    )
    .await?;
    let seen = phases.into_inner().unwrap_or_default();
    assert!(
        seen.contains("drop-old") || seen.contains("reissue"),
        "phases seen: {seen:?}"
    );
    let acked_at_rotation = producer.outcomes()?.0.len();
    producer.wait_acked(acked_at_rotation + 100).await?;
    producer.finish().await?;
    let new_ca = secret_key(&client, &format!("{NAME}-cluster-ca-cert"), "ca.crt").await?;
    let new_infos = pier_pki::parse_bundle(&new_ca)?;
    assert_eq!(new_infos.len(), 1);
    assert_eq!(new_infos[0].serial, rotated.serial);
    let new_file = logs.path().join("new-ca.pem");
    std::fs::write(&new_file, &new_ca)?;
    let names = wait_for(
        "kcat with the new CA",
        WAIT,
        Duration::from_secs(2),
        || async {
            kcat_brokers(&hosts, &bootstrap, &tls_args(&new_file, None))
                .await
                .ok()
                .filter(|n| n.len() == 3)
        },
    )
    .await?;
    assert_eq!(names.len(), 3);
    let refused = kcat_brokers(&hosts, &bootstrap, &tls).await;
    assert!(
        refused.is_err(),
        "only the old CA no longer verifies: {refused:?}"
    );
    assert_eq!(
        uids(&broker_pods(&client, NS, NAME).await?),
        before,
        "no broker restarted"
    );

    // The earliest expiry is a metric.
    assert!(
        operator.metrics().lines().any(|l| l
            .starts_with("pier_certificate_earliest_expiry_seconds{")
            && l.contains(NAME)),
        "{}",
        operator.metrics()
    );
    Ok(())
}

/// Writes alice's password Secret.
async fn set_password(client: &Client, password: &str) -> anyhow::Result<()> {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "alice", "namespace": NS},
        "stringData": {"password": password}
    }))?;
    Api::<Secret>::namespaced(client.clone(), NS)
        .patch(
            "alice",
            &PatchParams::apply("tls-test").force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(())
}

/// TLS that trusts only `ca` (Envoy passes TLS through: the client verifies the brokers).
fn trusting(ca: &str) -> anyhow::Result<TlsConfig> {
    Ok(TlsConfig::new(TlsOptions {
        trust_bundle_pem: ca.to_string(),
        client_cert_chain_pem: None,
        client_key_pem: None,
    })?)
}

/// Pier's client through Envoy, trusting only `ca`, logging in with `sasl` when given.
fn through_envoy(ca: &str, sasl: Option<pier::kafka::SaslOptions>) -> anyhow::Result<AdminOptions> {
    Ok(AdminOptions {
        connect: ConnectOptions {
            transport: Transport::Tls(trusting(ca)?),
            sasl,
            ..Default::default()
        },
        ..Default::default()
    })
}

/// Logs in as alice over SASL_SSL through Envoy with Pier's own client (a metadata request).
async fn sasl_login(ca: &str, password: &str) -> anyhow::Result<()> {
    let sasl = pier::kafka::SaslOptions {
        mechanism: pier::kafka::SaslMechanism::ScramSha512,
        username: "alice".into(),
        password: password.into(),
    };
    let admin = AdminClient::new(
        [(0, format!("127.0.0.1:{SASL_PORT}"))],
        AdminOptions {
            max_attempts: 1,
            ..through_envoy(ca, Some(sasl))?
        },
    );
    admin.set_server_names([(0, format!("bootstrap.{SASL_DOMAIN}"))]);
    admin.metadata(None).await?;
    Ok(())
}

/// A cluster that speaks TLS on its external listener only (plaintext inside): Pier still
/// issues and checks the brokers' certificates (asked over TLS on that listener), so renewals
/// complete instead of waiting forever for a reload it cannot see.
#[tokio::test]
async fn tls_on_the_external_listener_only() -> anyhow::Result<()> {
    const NAME: &str = "tls-ext";
    const DOMAIN: &str = "ext.pier.test";
    const PORT: u16 = 29395;
    let logs = LogDir::for_current_test("tls-ext")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    let _operator = Operator::start(client.clone(), NS).await?;
    let _devlet = tokio::spawn(devlet::run(
        client.clone(),
        DevletOptions::new("dev-a", logs.data("devlet")?),
    ));
    let kc: KafkaCluster = serde_json::from_value(json!({
        "apiVersion": "kafka.pier.dev/v1alpha1",
        "kind": "KafkaCluster",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "kafka": {"readOnlyConfig": {"offsets.topic.replication.factor": "1"}},
            "brokerConfigGroups": {"default": {
                "heapOpts": "-Xms256m -Xmx256m",
                "storage": [{"mountPath": "/var/lib/kafka/data0", "size": "1Gi"}]
            }},
            "brokers": [{"id": 0, "configGroup": "default"}],
            "listeners": {"external": [
                {"name": "external", "containerPort": 9094, "bootstrapPort": PORT,
                 "sni": {"domain": DOMAIN}, "protocol": "SSL"}
            ]},
            "envoy": {"replicas": 1}
        }
    }))?;
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &kc)
        .await?;
    let served = |client: Client| async move {
        let s = support::cluster_status(&client, NS, NAME).await.ok()?;
        let cert = s
            .tls?
            .certificates
            .into_iter()
            .find(|c| c.secret == format!("{NAME}-broker-0-tls"))?;
        cert.served.then_some(cert.serial)
    };
    let first = wait_for(
        "broker 0 to serve its certificate",
        WAIT,
        Duration::from_secs(1),
        || served(client.clone()),
    )
    .await?;
    let uid = broker_pods(&client, NS, NAME).await?[&0].uid.clone();
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "kafka.pier.dev/renew-certificates": "1"}}})),
        )
        .await?;
    wait_for(
        "the renewed certificate to be served",
        WAIT,
        Duration::from_secs(1),
        || async { served(client.clone()).await.filter(|s| *s != first) },
    )
    .await?;
    assert_eq!(
        broker_pods(&client, NS, NAME).await?[&0].uid,
        uid,
        "no restart"
    );
    Ok(())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}
