//! KafkaUser with real brokers run by the dev node agent (mutual TLS inside, an mTLS and a
//! SASL_SSL listener outside, SNI through a real Envoy), judged by kcat with the user's own
//! certificate or password: the first user with ACLs turns the StandardAuthorizer on (a roll);
//! a `tls` user and a `scram-sha-512` user may produce to the topic their ACLs allow and are
//! denied on another; a 100 KiB/s quota holds its user's producer near that rate; 20 users in sync cost no
//! Kubernetes write (the apiserver's audit log) and no Kafka admin write (the brokers' request
//! metrics) when a restarted operator reconciles them; deleting a user revokes its access; a new
//! password in a user's referenced Secret replaces the old one at once.
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use pier::api::{KafkaCluster, KafkaTopic, KafkaUser};
use pier_testenv::devlet::{self, DevletOptions};
use pier_testenv::{ControlPlane, LogDir, wait_for};
use serde_json::json;
use support::Operator;

mod support;

const NS: &str = "default";
const NAME: &str = "users";
const OPERATOR_USER: &str = "pier-operator";
const MTLS_DOMAIN: &str = "mtls.users.test";
const MTLS_PORT: u16 = 29793;
const SASL_DOMAIN: &str = "sasl.users.test";
const SASL_PORT: u16 = 29794;
const WAIT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(500);
/// KafkaUsers of the steady-state check.
const MANY: usize = 20;

fn cluster() -> anyhow::Result<KafkaCluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "kafka.pier.dev/v1alpha1",
        "kind": "KafkaCluster",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "kafka": {"readOnlyConfig": {"offsets.topic.replication.factor": "3"}},
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
                    {"name": "mtls", "containerPort": 9095, "bootstrapPort": MTLS_PORT,
                     "sni": {"domain": MTLS_DOMAIN}, "protocol": "SSL", "clientAuth": "required"},
                    {"name": "sasl", "containerPort": 9096, "bootstrapPort": SASL_PORT,
                     "sni": {"domain": SASL_DOMAIN}, "protocol": "SASL_SSL"}
                ]
            },
            "envoy": {"replicas": 1}
        }
    }))?)
}

fn user(name: &str, spec: serde_json::Value) -> anyhow::Result<KafkaUser> {
    let mut spec = spec;
    spec["clusterRef"] = json!({"name": NAME});
    Ok(serde_json::from_value(json!({
        "apiVersion": "kafka.pier.dev/v1alpha1", "kind": "KafkaUser",
        "metadata": {"name": name, "namespace": NS}, "spec": spec,
    }))?)
}

/// May write (and describe) topic `orders`, nothing else.
fn writes_orders() -> serde_json::Value {
    json!({"acls": [{"resource": {"type": "topic", "name": "orders"},
                      "operations": ["Write", "Describe"]}]})
}

fn users(client: &Client) -> Api<KafkaUser> {
    Api::namespaced(client.clone(), NS)
}

async fn wait_user_ready(client: &Client, name: &str) -> anyhow::Result<KafkaUser> {
    wait_for(&format!("KafkaUser {name} Ready"), WAIT, POLL, || async {
        let u = users(client).get(name).await.ok()?;
        let s = u.status.as_ref()?;
        let ready = s
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        (ready && s.observed_generation == u.metadata.generation).then_some(u)
    })
    .await
}

fn hosts_file(logs: &LogDir) -> anyhow::Result<PathBuf> {
    support::sni_hosts_file(logs, &[MTLS_DOMAIN, SASL_DOMAIN], 3)
}

async fn kcat(
    hosts: &Path,
    args: &[String],
    stdin: Option<&[u8]>,
) -> anyhow::Result<std::process::Output> {
    support::kcat_with_hosts(hosts, args, stdin, Duration::from_secs(120)).await
}

/// A client's credentials, as files kcat reads.
enum Login {
    Certificate { cert: PathBuf, key: PathBuf },
    Scram { name: String, password: String },
}

fn client_args(ca: &Path, login: &Login) -> Vec<String> {
    let mut args = vec![
        format!("ssl.ca.location={}", ca.display()),
        "ssl.endpoint.identification.algorithm=https".into(),
    ];
    match login {
        Login::Certificate { cert, key } => args.extend([
            format!("-b bootstrap.{MTLS_DOMAIN}:{MTLS_PORT}"),
            "security.protocol=SSL".into(),
            format!("ssl.certificate.location={}", cert.display()),
            format!("ssl.key.location={}", key.display()),
        ]),
        Login::Scram { name, password } => args.extend([
            format!("-b bootstrap.{SASL_DOMAIN}:{SASL_PORT}"),
            "security.protocol=SASL_SSL".into(),
            "sasl.mechanisms=SCRAM-SHA-512".into(),
            format!("sasl.username={name}"),
            format!("sasl.password={password}"),
        ]),
    }
    args.into_iter()
        .flat_map(|a| match a.strip_prefix("-b ") {
            Some(b) => vec!["-b".to_string(), b.to_string()],
            None => vec!["-X".to_string(), a],
        })
        .collect()
}

/// Produces `records` to `topic` with acks=all; the outcome and the client's error text.
/// A certificate user produces with kcat; a SCRAM user with Kafka's own Java producer
/// (ProducerPerformance): librdkafka before 2.6.1 (Debian's kcat has 2.0.2) sends a SCRAM
/// nonce Kafka 4 rejects (confluentinc/librdkafka#4895).
async fn produce(
    hosts: &Path,
    ca: &Path,
    login: &Login,
    topic: &str,
    records: &str,
) -> anyhow::Result<(bool, String)> {
    if let Login::Scram { name, password } = login {
        return java_produce(hosts, ca, name, password, topic, records).await;
    }
    let mut args = client_args(ca, login);
    args.extend(
        [
            "-P",
            "-t",
            topic,
            "-X",
            "acks=all",
            "-X",
            "message.timeout.ms=20000",
        ]
        .map(String::from),
    );
    let out = kcat(hosts, &args, Some(records.as_bytes())).await?;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    // kcat exits 0 even when deliveries failed; its stderr says so.
    let ok = out.status.success() && !stderr.contains("ERROR") && !stderr.contains("failed");
    Ok((ok, stderr))
}

async fn java_produce(
    hosts: &Path,
    ca: &Path,
    name: &str,
    password: &str,
    topic: &str,
    records: &str,
) -> anyhow::Result<(bool, String)> {
    let dir = hosts.parent().context("a log dir")?;
    let config = dir.join(format!("producer-{name}.properties"));
    std::fs::write(
        &config,
        format!(
            "bootstrap.servers=bootstrap.{SASL_DOMAIN}:{SASL_PORT}\nsecurity.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nssl.truststore.type=PEM\nssl.truststore.location={}\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{name}\" password=\"{password}\";\nacks=all\nmax.block.ms=15000\ndelivery.timeout.ms=60000\nrequest.timeout.ms=20000\n",
            ca.display()
        ),
    )?;
    let lines: Vec<&str> = records.lines().collect();
    let size = lines.iter().map(|l| l.len()).max().unwrap_or(1).max(1);
    let out = support::kafka_tool("org.apache.kafka.tools.ProducerPerformance")?
        .env(
            "KAFKA_JVM_OPTS",
            format!("-Djdk.net.hosts.file={}", hosts.display()),
        )
        .args(["--topic", topic, "--throughput", "-1"])
        .args(["--num-records", &lines.len().to_string()])
        .args(["--record-size", &size.to_string()])
        .arg("--producer.config")
        .arg(&config)
        .output()
        .await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = out.status.success() && !text.contains("Exception") && text.contains("records sent");
    Ok((ok, text))
}

/// Produces until it succeeds: a new credential or ACL reaches every broker a moment after
/// Kafka accepted it.
async fn produce_allowed(
    hosts: &Path,
    ca: &Path,
    login: &Login,
    topic: &str,
    records: &str,
) -> anyhow::Result<()> {
    let last = std::sync::Mutex::new(String::new());
    let result = wait_for(
        &format!("a write to {topic} allowed"),
        WAIT,
        POLL,
        || async {
            let err = match produce(hosts, ca, login, topic, records).await {
                Ok((true, _)) => return Some(()),
                Ok((false, err)) => err,
                Err(e) => e.to_string(),
            };
            *last.lock().unwrap_or_else(|e| e.into_inner()) = err;
            None
        },
    )
    .await;
    result.with_context(|| last.lock().map(|l| l.clone()).unwrap_or_default())
}

/// Produces until Kafka answers with an authorization error (a transport failure, a broker
/// restarting say, is tried again); a write that succeeds fails the test at once.
async fn produce_denied(hosts: &Path, ca: &Path, login: &Login, topic: &str) -> anyhow::Result<()> {
    wait_for(
        &format!("a write to {topic} denied"),
        WAIT,
        POLL,
        || async {
            match produce(hosts, ca, login, topic, "denied\n").await {
                Ok((true, _)) => Some(Err(anyhow::anyhow!("a write to {topic} was allowed"))),
                Ok((false, err)) if err.to_lowercase().contains("authoriz") => Some(Ok(())),
                _ => None,
            }
        },
    )
    .await?
}

async fn secret_value(client: &Client, name: &str, key: &str) -> anyhow::Result<String> {
    let s = Api::<Secret>::namespaced(client.clone(), NS)
        .get(name)
        .await?;
    let v = s
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .with_context(|| format!("Secret {name} has no {key}"))?;
    Ok(String::from_utf8(v.0.clone())?)
}

async fn kafka_requests(client: &Client, kinds: &[&str]) -> anyhow::Result<f64> {
    support::broker_requests(client, NS, NAME, kinds).await
}

fn metric(op: &Operator, name: &str) -> f64 {
    op.metrics()
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn kafka_users_against_real_brokers() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("users")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    let mut op = Operator::start(
        plane
            .client_for(OPERATOR_USER, Some("system:masters"))
            .await?,
        NS,
    )
    .await?;
    let _devlet = tokio::spawn(devlet::run(
        client.clone(),
        DevletOptions::new("node-1", logs.data("devlet")?),
    ));
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &cluster()?)
        .await?;
    let cluster_ready = || async {
        let s = support::cluster_status(&client, NS, NAME).await.ok()?;
        let ready = s
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        (ready && s.rolling_upgrade.is_none()).then_some(())
    };
    wait_for("the cluster Ready", WAIT, POLL, cluster_ready).await?;
    let hosts = hosts_file(&logs)?;
    let post = PostParams::default();
    for topic in ["orders", "audit"] {
        let t: KafkaTopic = serde_json::from_value(json!({
            "apiVersion": "kafka.pier.dev/v1alpha1", "kind": "KafkaTopic",
            "metadata": {"name": topic, "namespace": NS},
            "spec": {"clusterRef": {"name": NAME}, "partitions": 1, "replicationFactor": 3},
        }))?;
        Api::<KafkaTopic>::namespaced(client.clone(), NS)
            .create(&post, &t)
            .await?;
    }

    // 1. A tls user: its certificate in a Secret named after it; the first ACLs turn the
    // authorizer on (a rolling restart), after which it may write `orders` and not `audit`.
    users(&client)
        .create(
            &post,
            &user(
                "writer-tls",
                json!({"authentication": {"type": "tls"}, "authorization": writes_orders()}),
            )?,
        )
        .await?;
    let tls_user = wait_user_ready(&client, "writer-tls").await?;
    let status = tls_user.status.context("status")?;
    ensure!(
        status.principal.as_deref() == Some("User:writer-tls"),
        "{status:?}"
    );
    ensure!(status.certificate_not_after.is_some(), "{status:?}");
    wait_for(
        "the roll adding the authorizer done",
        WAIT,
        POLL,
        cluster_ready,
    )
    .await?;
    let dir = logs.sub("writer-tls")?;
    let (ca, cert, key) = (
        dir.join("ca.crt"),
        dir.join("user.crt"),
        dir.join("user.key"),
    );
    std::fs::write(&ca, secret_value(&client, "writer-tls", "ca.crt").await?)?;
    std::fs::write(
        &cert,
        secret_value(&client, "writer-tls", "user.crt").await?,
    )?;
    std::fs::write(&key, secret_value(&client, "writer-tls", "user.key").await?)?;
    let tls_login = Login::Certificate { cert, key };
    produce_allowed(&hosts, &ca, &tls_login, "orders", "tls-1\ntls-2\n").await?;
    produce_denied(&hosts, &ca, &tls_login, "audit").await?;

    // 2. A scram-sha-512 user with a generated password, the same ACLs.
    users(&client)
        .create(
            &post,
            &user(
                "writer-scram",
                json!({"authentication": {"type": "scram-sha-512"}, "authorization": writes_orders()}),
            )?,
        )
        .await?;
    wait_user_ready(&client, "writer-scram").await?;
    let scram_login = Login::Scram {
        name: "writer-scram".into(),
        password: secret_value(&client, "writer-scram", "password").await?,
    };
    produce_allowed(&hosts, &ca, &scram_login, "orders", "scram-1\n").await?;
    produce_denied(&hosts, &ca, &scram_login, "audit").await?;

    // 3. A quota of 100 KiB/s holds that user near the rate (broker-side throttling).
    users(&client)
        .create(
            &post,
            &user(
                "slow",
                json!({"authentication": {"type": "scram-sha-512"}, "authorization": writes_orders(),
                       "quotas": {"producerByteRate": 102400}}),
            )?,
        )
        .await?;
    wait_user_ready(&client, "slow").await?;
    let slow_login = Login::Scram {
        name: "slow".into(),
        password: secret_value(&client, "slow", "password").await?,
    };
    produce_allowed(&hosts, &ca, &slow_login, "orders", "warm-up\n").await?;
    // 3 MiB: Kafka measures a user's rate over its quota windows (11 s), so a short burst
    // is not throttled at once; this is long enough for the rate to be held near the quota.
    let payload: String = (0..3072).map(|i| format!("{i:01023}\n")).collect();
    let (ok, out) = produce(&hosts, &ca, &slow_login, "orders", &payload).await?;
    ensure!(ok, "the slow user writes: {out}");
    // ProducerPerformance's summary: "1024 records sent, 97.6 records/sec (0.10 MB/sec), …".
    let rate: f64 = out
        .lines()
        .rfind(|l| l.contains("records sent"))
        .and_then(|l| l.split('(').nth(1)?.split(' ').next()?.parse().ok())
        .with_context(|| format!("no rate in {out}"))?;
    ensure!(
        rate <= 0.25,
        "3 MiB at a 100 KiB/s quota went at {rate} MB/s: not throttled"
    );

    // 4. Twenty users in sync: a restarted operator reconciles them without writing.
    for i in 0..(MANY - 3) {
        users(&client)
            .create(
                &post,
                &user(
                    &format!("reader-{i:02}"),
                    json!({"authentication": {"type": "scram-sha-512"},
                           "authorization": {"acls": [
                               {"resource": {"type": "topic", "name": "orders"}, "operations": ["Read", "Describe"]},
                               {"resource": {"type": "group", "name": format!("app-{i}-"), "patternType": "prefixed"}, "operations": ["Read"]}]},
                           "quotas": {"consumerByteRate": 1048576}}),
                )?,
            )
            .await?;
    }
    for i in 0..(MANY - 3) {
        wait_user_ready(&client, &format!("reader-{i:02}")).await?;
    }
    wait_user_ready(&client, "slow").await?;
    let kafka_writes = [
        "CreateAcls",
        "DeleteAcls",
        "AlterClientQuotas",
        "AlterUserScramCredentials",
    ];
    let mark = plane.audit_mark()?;
    let before = kafka_requests(&client, &kafka_writes).await?;
    let described = kafka_requests(&client, &["DescribeAcls"]).await?;
    op.restart();
    // Each reconcile that reaches Kafka describes the user's ACLs once.
    wait_for(
        "the restarted operator reconciled every KafkaUser with Kafka",
        WAIT,
        POLL,
        || async {
            let asked = kafka_requests(&client, &["DescribeAcls"]).await.ok()? - described;
            (metric(&op, "pier_user_reconciles_total") >= MANY as f64 && asked >= MANY as f64)
                .then_some(())
        },
    )
    .await?;
    let writes = plane.audit_write_counts(OPERATOR_USER, &mark)?;
    let writes: std::collections::BTreeMap<_, _> = writes
        .into_iter()
        // The users' own writes and their Secrets (an Event of theirs comes with a Kafka
        // write, counted below). The cluster's status may say Envoy has not yet taken the
        // restarted operator's xDS config: not the users' business.
        .filter(|(what, _)| what.contains("kafkausers") || what.contains("secrets"))
        .collect();
    ensure!(
        writes.is_empty(),
        "Kubernetes writes in the steady state: {writes:?}"
    );
    let kafka = kafka_requests(&client, &kafka_writes).await? - before;
    ensure!(
        kafka == 0.0,
        "{kafka} Kafka admin writes in the steady state"
    );

    // 5. Deleting a user revokes its access.
    users(&client)
        .delete("writer-scram", &DeleteParams::default())
        .await?;
    users(&client)
        .delete("writer-tls", &DeleteParams::default())
        .await?;
    for name in ["writer-scram", "writer-tls"] {
        wait_for(&format!("{name} gone"), WAIT, POLL, || async {
            users(&client)
                .get_opt(name)
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await?;
    }
    let (ok, err) = produce(&hosts, &ca, &scram_login, "orders", "after\n").await?;
    ensure!(
        !ok && err.contains("SaslAuthenticationException"),
        "the deleted scram user cannot log in: {err}"
    );
    // The deleted tls user's certificate is still valid, but no ACL lets it write.
    produce_denied(&hosts, &ca, &tls_login, "orders").await?;

    // 6. A password from a Secret of the user's: a new password there is the credential at
    // once (the Secret is watched; the user's own resync is 5 minutes away).
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let password_secret = |password: &str| -> anyhow::Result<Secret> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "rotating-password"},
            "stringData": {"pw": password},
        }))?)
    };
    secrets
        .create(&post, &password_secret("first-password-1")?)
        .await?;
    users(&client)
        .create(
            &post,
            &user(
                "rotating",
                json!({"authentication": {"type": "scram-sha-512", "password": {"valueFrom":
                        {"secretKeyRef": {"name": "rotating-password", "key": "pw"}}}},
                       "authorization": writes_orders()}),
            )?,
        )
        .await?;
    let first = wait_user_ready(&client, "rotating").await?;
    let first_version = first.status.and_then(|s| s.credential_version);
    let login = |password: &str| Login::Scram {
        name: "rotating".into(),
        password: password.into(),
    };
    produce_allowed(&hosts, &ca, &login("first-password-1"), "orders", "r-1\n").await?;
    secrets
        .replace(
            "rotating-password",
            &PostParams::default(),
            &password_secret("second-password-2")?,
        )
        .await?;
    wait_for(
        "the new password applied",
        Duration::from_secs(60),
        POLL,
        || async {
            let u = users(&client).get("rotating").await.ok()?;
            let version = u.status?.credential_version;
            (version.is_some() && version != first_version).then_some(())
        },
    )
    .await?;
    produce_allowed(&hosts, &ca, &login("second-password-2"), "orders", "r-2\n").await?;
    let (ok, err) = produce(&hosts, &ca, &login("first-password-1"), "orders", "r-3\n").await?;
    ensure!(
        !ok && err.contains("SaslAuthenticationException"),
        "the old password is refused: {err}"
    );
    Ok(())
}
