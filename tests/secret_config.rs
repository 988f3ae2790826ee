//! Configuration values from Secrets (`configFrom`) with a real broker run by the dev node
//! agent and the operator in this process: a cluster-wide dynamic key (cluster default) and a
//! broker's own (that broker) reach Kafka live and a changed Secret sets them again without a
//! restart; a read-only key resolves through the mounted
//! Secret (Kafka's DirectoryConfigProvider) while the ConfigMap holds only the reference, and a
//! changed Secret restarts the broker; a Secret that is missing is a notice and an Event naming
//! it, the rest of the spec still converges, and creating it applies the key. SCRAM users'
//! credentials follow their Secrets: a changed password logs in over a SASL_PLAINTEXT
//! listener, the old one is refused (checked with Pier's own SCRAM client: the kcat of
//! dev/setup, librdkafka 2.0.2, cannot log in to Kafka 4.x with SCRAM at all — its client-final
//! nonce bug, fixed in librdkafka 2.6.1, confluentinc/librdkafka#4895), a user removed from the spec
//! loses its credential while one Pier did not create keeps it.
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use pier::api::KafkaCluster;
use pier::kafka::{
    AdminClient, AdminOptions, BrokerConnection, ConfigResource, ConfigSource, ConnectOptions,
    KafkaError, SaslMechanism, SaslOptions, ScramMechanism,
};
use pier_testenv::devlet::{self, DevletOptions};
use pier_testenv::{ControlPlane, LogDir, wait_for};
use serde_json::json;
use support::Operator;

mod support;

const NS: &str = "default";
const NAME: &str = "secrets";
/// A value no ConfigMap or Pod may ever hold.
const MARKER: &str = "s3cr3t-never-rendered";

fn cluster() -> anyhow::Result<KafkaCluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "kafka.pier.dev/v1alpha1",
        "kind": "KafkaCluster",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "kafka": {
                "readOnlyConfig": {
                    "offsets.topic.replication.factor": "1",
                    "transaction.state.log.replication.factor": "1",
                    "transaction.state.log.min.isr": "1"
                },
                "configFrom": {
                    // Cluster-wide dynamic: set live on the cluster default.
                    "log.cleaner.threads": {"secretKeyRef": {"name": "dynamic", "key": "threads"}},
                    // Read-only: through the mounted Secret.
                    "num.partitions": {"secretKeyRef": {"name": "static", "key": "partitions"}},
                    // Unknown to Kafka (a plugin's password, say): read-only too.
                    "pier.example.plugin.password": {"secretKeyRef": {"name": "static", "key": "plugin"}}
                }
            },
            "brokerConfigGroups": {"default": {
                "heapOpts": "-Xms256m -Xmx256m",
                "storage": [{"mountPath": "/var/lib/kafka/data0", "size": "1Gi"}]
            }},
            "brokers": [{"id": 0, "configGroup": "default", "configFrom": {
                // The broker's own: set live on broker 0.
                "log.cleaner.min.compaction.lag.ms": {"secretKeyRef": {"name": "dynamic", "key": "lag"}}
            }}],
            "rollingUpgrade": {"brokerReadyTimeoutSeconds": 120}
        }
    }))?)
}

async fn put_secret(client: &Client, name: &str, data: &[(&str, &str)]) -> anyhow::Result<()> {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "stringData": data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()
    }))?;
    let api: Api<Secret> = Api::namespaced(client.clone(), NS);
    api.patch(
        name,
        &PatchParams::apply("secret-config-test").force(),
        &Patch::Apply(&secret),
    )
    .await?;
    Ok(())
}

async fn secret_version(client: &Client, name: &str) -> anyhow::Result<String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), NS);
    Ok(api.get(name).await?.resource_version().unwrap_or_default())
}

/// Broker 0's Pod of cluster `name`: (uid, ready, ip).
async fn broker_pod_of(client: &Client, name: &str) -> anyhow::Result<Option<(String, bool)>> {
    Ok(support::broker_pods(client, NS, name)
        .await?
        .get(&0)
        .map(|b| (b.uid.clone(), b.ready)))
}

/// What broker 0 reports for `key`: value and source.
async fn broker_config(
    client: &Client,
    key: &str,
) -> anyhow::Result<(Option<String>, ConfigSource)> {
    let entries = support::broker_admin(client, NS, NAME)
        .await?
        .describe_configs(&ConfigResource::Broker(0))
        .await?;
    let e = entries
        .into_iter()
        .find(|e| e.name == key)
        .ok_or_else(|| anyhow::anyhow!("broker 0 does not report {key}"))?;
    Ok((e.value, e.source))
}

async fn wait_config(
    client: &Client,
    key: &str,
    value: &str,
    source: ConfigSource,
    within: Duration,
) -> anyhow::Result<()> {
    wait_for(
        &format!("{key} = {value} ({source:?}) on broker 0"),
        within,
        Duration::from_secs(1),
        || async {
            let (v, s) = broker_config(client, key).await.ok()?;
            (v.as_deref() == Some(value) && s == source).then_some(())
        },
    )
    .await
}

async fn broker_pod(client: &Client) -> anyhow::Result<Option<(String, bool)>> {
    broker_pod_of(client, NAME).await
}

async fn status(client: &Client) -> anyhow::Result<pier::api::KafkaClusterStatus> {
    support::cluster_status(client, NS, NAME).await
}

async fn wait_applied(client: &Client, what: &str, want: &str) -> anyhow::Result<()> {
    wait_for(
        &format!("status.appliedSecrets[{what}] = {want}"),
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let s = status(client).await.ok()?;
            (s.applied_secrets.get(what).map(String::as_str) == Some(want)).then_some(())
        },
    )
    .await
}

async fn patch_spec(client: &Client, patch: serde_json::Value) -> anyhow::Result<()> {
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .patch(NAME, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

#[tokio::test]
async fn values_from_secrets_reach_kafka_and_never_a_config_map() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("secret_config")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    let _operator = Operator::start(client.clone(), NS).await?;
    let _devlet = tokio::spawn(devlet::run(
        client.clone(),
        DevletOptions::new("dev-a", logs.data("devlet")?),
    ));
    put_secret(&client, "dynamic", &[("threads", "2"), ("lag", "1000")]).await?;
    put_secret(
        &client,
        "static",
        &[("partitions", "5"), ("plugin", MARKER)],
    )
    .await?;
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &cluster()?)
        .await?;
    wait_for(
        "broker 0 ready",
        Duration::from_secs(240),
        Duration::from_secs(1),
        || async { broker_pod(&client).await.ok()?.filter(|(_, r)| *r) },
    )
    .await?;

    // 1. The dynamic key is live on the cluster default; its version is in status.
    wait_config(
        &client,
        "log.cleaner.threads",
        "2",
        ConfigSource::DynamicDefaultBrokerConfig,
        Duration::from_secs(60),
    )
    .await?;
    wait_config(
        &client,
        "log.cleaner.min.compaction.lag.ms",
        "1000",
        ConfigSource::DynamicBrokerConfig,
        Duration::from_secs(60),
    )
    .await?;
    let v1 = secret_version(&client, "dynamic").await?;
    wait_applied(
        &client,
        "broker/0/log.cleaner.min.compaction.lag.ms",
        &format!("dynamic@{v1}"),
    )
    .await?;
    wait_applied(
        &client,
        "cluster/log.cleaner.threads",
        &format!("dynamic@{v1}"),
    )
    .await?;

    // 2. The read-only key resolved through the mounted Secret; the ConfigMap and the Pod hold
    // only the reference.
    let (partitions, source) = broker_config(&client, "num.partitions").await?;
    assert_eq!(partitions.as_deref(), Some("5"));
    assert_eq!(source, ConfigSource::StaticBrokerConfig);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let props = cms
        .get(&format!("{NAME}-broker-0-config"))
        .await?
        .data
        .unwrap_or_default()
        .remove("server.properties")
        .unwrap_or_default();
    assert!(
        props.contains("num.partitions=${pierdir:/etc/pier-secrets/static:partitions}\n"),
        "{props}"
    );
    assert!(
        props.contains("pier.example.plugin.password=${pierdir:/etc/pier-secrets/static:plugin}\n"),
        "{props}"
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pod = pods.get(&format!("{NAME}-broker-0")).await?;
    for (what, text) in [
        ("ConfigMap", props.clone()),
        ("Pod", serde_json::to_string(&pod)?),
        ("status", serde_json::to_string(&status(&client).await?)?),
    ] {
        assert!(!text.contains(MARKER), "{what} holds a Secret's value");
    }
    let (uid, _) = broker_pod(&client).await?.expect("broker 0");

    // 3. A changed Secret sets the dynamic key again, live: no restart.
    put_secret(&client, "dynamic", &[("threads", "3"), ("lag", "2000")]).await?;
    wait_config(
        &client,
        "log.cleaner.threads",
        "3",
        ConfigSource::DynamicDefaultBrokerConfig,
        Duration::from_secs(60),
    )
    .await?;
    wait_config(
        &client,
        "log.cleaner.min.compaction.lag.ms",
        "2000",
        ConfigSource::DynamicBrokerConfig,
        Duration::from_secs(60),
    )
    .await?;
    let v2 = secret_version(&client, "dynamic").await?;
    wait_applied(
        &client,
        "broker/0/log.cleaner.min.compaction.lag.ms",
        &format!("dynamic@{v2}"),
    )
    .await?;
    wait_applied(
        &client,
        "cluster/log.cleaner.threads",
        &format!("dynamic@{v2}"),
    )
    .await?;
    assert_eq!(broker_pod(&client).await?.map(|p| p.0), Some(uid.clone()));

    // 4. A missing Secret: a notice and an Event naming it and its key; the rest of the spec
    // converges meanwhile; once created, the key is applied.
    patch_spec(
        &client,
        json!({"spec": {"kafka": {
            "clusterWideConfig": {"log.retention.ms": "3600000"},
            "configFrom": {"log.cleaner.backoff.ms": {"secretKeyRef": {"name": "absent", "key": "backoff"}}}
        }}}),
    )
    .await?;
    wait_config(
        &client,
        "log.retention.ms",
        "3600000",
        ConfigSource::DynamicDefaultBrokerConfig,
        Duration::from_secs(60),
    )
    .await?;
    wait_for(
        "a notice naming Secret absent and key backoff",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let s = status(&client).await.ok()?;
            s.config_notices
                .iter()
                .find(|n| n.contains("\"absent\"") && n.contains("\"backoff\""))
                .cloned()
        },
    )
    .await?;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    wait_for(
        "a Warning Event naming Secret absent",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some("SecretUnavailable")
                    && e.note
                        .as_deref()
                        .is_some_and(|n| n.contains("\"absent\"") && n.contains("\"backoff\""))
            })
        },
    )
    .await?;
    // The other Secret keys stay applied.
    let (threads, _) = broker_config(&client, "log.cleaner.threads").await?;
    assert_eq!(threads.as_deref(), Some("3"));
    put_secret(&client, "absent", &[("backoff", "20000")]).await?;
    wait_config(
        &client,
        "log.cleaner.backoff.ms",
        "20000",
        ConfigSource::DynamicDefaultBrokerConfig,
        Duration::from_secs(60),
    )
    .await?;
    wait_for(
        "the notice gone",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let s = status(&client).await.ok()?;
            (!s.config_notices.iter().any(|n| n.contains("\"absent\""))).then_some(())
        },
    )
    .await?;
    assert_eq!(broker_pod(&client).await?.map(|p| p.0), Some(uid.clone()));

    // 5. A changed Secret the file reads restarts the broker, which then reads the new value.
    put_secret(
        &client,
        "static",
        &[("partitions", "6"), ("plugin", MARKER)],
    )
    .await?;
    wait_for(
        "broker 0 restarted and ready",
        Duration::from_secs(300),
        Duration::from_secs(1),
        || async {
            broker_pod(&client)
                .await
                .ok()?
                .filter(|(u, ready)| *ready && *u != uid)
        },
    )
    .await?;
    wait_config(
        &client,
        "num.partitions",
        "6",
        ConfigSource::StaticBrokerConfig,
        Duration::from_secs(60),
    )
    .await?;

    // 6. A key dropped from the spec drops its entry in status.appliedSecrets.
    patch_spec(
        &client,
        json!({"spec": {"kafka": {"configFrom": {"log.cleaner.backoff.ms": null}}}}),
    )
    .await?;
    wait_for(
        "the dropped key's entry gone",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let s = status(&client).await.ok()?;
            (!s.applied_secrets
                .contains_key("cluster/log.cleaner.backoff.ms")
                && s.applied_secrets
                    .contains_key("cluster/log.cleaner.threads"))
            .then_some(())
        },
    )
    .await?;

    // 7. The Secret the file reads is deleted: said so, and the running broker is not
    // restarted for it (its planned Pod keeps the version it started with).
    let uid = broker_pod(&client).await?.expect("broker 0").0;
    Api::<Secret>::namespaced(client.clone(), NS)
        .delete("static", &Default::default())
        .await?;
    let s = wait_for(
        "a notice naming Secret static",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let s = status(&client).await.ok()?;
            s.config_notices
                .iter()
                .any(|n| n.contains("\"static\"") && n.contains("no such Secret"))
                .then_some(s)
        },
    )
    .await?;
    let running = pods.get(&format!("{NAME}-broker-0")).await?;
    let b0 = s
        .brokers
        .iter()
        .find(|b| b.id == 0)
        .expect("broker 0 status");
    assert_eq!(
        b0.restart_hash.as_ref(),
        running.annotations().get("kafka.pier.dev/restart-hash"),
        "the plan keeps the running broker's restart hash"
    );
    assert_ne!(b0.configuration_state.as_deref(), Some("RestartPending"));
    assert_eq!(running.metadata.uid, Some(uid));
    Ok(())
}

const SCRAM_CLUSTER: &str = "scram";
/// The SASL_PLAINTEXT listener's port.
const SASL_PORT: i32 = 9095;

fn scram_cluster(users: serde_json::Value) -> anyhow::Result<KafkaCluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "kafka.pier.dev/v1alpha1",
        "kind": "KafkaCluster",
        "metadata": {"name": SCRAM_CLUSTER, "namespace": NS},
        "spec": {
            "kafka": {"readOnlyConfig": {
                "offsets.topic.replication.factor": "1",
                "transaction.state.log.replication.factor": "1",
                "transaction.state.log.min.isr": "1"
            }},
            "listeners": {"internal": [
                {"name": "internal", "port": 9092, "usedForInterBroker": true},
                {"name": "controller", "port": 9093, "usedForController": true},
                {"name": "clients", "port": SASL_PORT, "protocol": "SASL_PLAINTEXT"}
            ]},
            "sasl": {"scramUsers": users},
            "brokerConfigGroups": {"default": {
                "heapOpts": "-Xms256m -Xmx256m",
                "storage": [{"mountPath": "/var/lib/kafka/data0", "size": "1Gi"}]
            }},
            "brokers": [{"id": 0, "configGroup": "default"}]
        }
    }))?)
}

/// Broker 0's Pod IP.
async fn scram_broker_ip(client: &Client) -> Option<String> {
    let pods = support::broker_pods(client, NS, SCRAM_CLUSTER).await.ok()?;
    pods.get(&0)
        .filter(|b| b.ready && !b.ip.is_empty())
        .map(|b| b.ip.clone())
}

/// Logs in as `user` on the SASL listener and asks for metadata.
async fn login(ip: &str, user: &str, password: &str) -> Result<(), KafkaError> {
    let options = ConnectOptions {
        sasl: Some(SaslOptions {
            mechanism: SaslMechanism::ScramSha512,
            username: user.into(),
            password: password.into(),
        }),
        ..ConnectOptions::default()
    };
    let mut conn = BrokerConnection::connect(&format!("{ip}:{SASL_PORT}"), options).await?;
    conn.metadata(None).await.map(|_| ())
}

async fn wait_login(ip: &str, user: &str, password: &str, accepted: bool) -> anyhow::Result<()> {
    let what = format!(
        "{user}'s login with {password:?} {}",
        if accepted { "accepted" } else { "refused" }
    );
    wait_for(
        &what,
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            match login(ip, user, password).await {
                Ok(()) if accepted => Some(()),
                Err(KafkaError::Authentication { .. }) if !accepted => Some(()),
                _ => None,
            }
        },
    )
    .await
}

async fn scram_users_in_kafka(admin: &AdminClient) -> anyhow::Result<Vec<String>> {
    Ok(admin
        .describe_user_scram_credentials(None)
        .await?
        .into_iter()
        .filter(|(_, c)| c.iter().any(|i| i.mechanism == ScramMechanism::Sha512))
        .map(|(u, _)| u)
        .collect())
}

#[tokio::test]
async fn scram_credentials_follow_their_secrets() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("secret_config_scram")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    let _operator = Operator::start(client.clone(), NS).await?;
    let _devlet = tokio::spawn(devlet::run(
        client.clone(),
        DevletOptions::new("dev-a", logs.data("devlet")?),
    ));
    put_secret(&client, "alice-pw", &[("password", "first-pw")]).await?;
    let alice =
        json!([{"name": "alice", "passwordSecretRef": {"name": "alice-pw", "key": "password"}}]);
    let kcs: Api<KafkaCluster> = Api::namespaced(client.clone(), NS);
    kcs.create(&PostParams::default(), &scram_cluster(alice)?)
        .await?;
    let ip = wait_for(
        "broker 0 ready",
        Duration::from_secs(240),
        Duration::from_secs(1),
        || scram_broker_ip(&client),
    )
    .await?;
    let admin = AdminClient::new([(0, format!("{ip}:9092"))], AdminOptions::default());
    let scram_status = || async { support::cluster_status(&client, NS, SCRAM_CLUSTER).await };

    // 1. Pier created alice's credential and recorded the Secret's version.
    let v1 = secret_version(&client, "alice-pw").await?;
    wait_for(
        "appliedSecrets[scram/alice] = alice-pw@<v1>",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let s = scram_status().await.ok()?;
            (s.applied_secrets.get("scram/alice") == Some(&format!("alice-pw@{v1}"))).then_some(())
        },
    )
    .await?;
    assert_eq!(scram_users_in_kafka(&admin).await?, ["alice"]);
    wait_login(&ip, "alice", "first-pw", true).await?;
    // A user somebody else created.
    admin
        .upsert_user_scram_credential("bob", ScramMechanism::Sha512, "bobs-own", 4096)
        .await?;

    // 2. A changed Secret changes the credential: the new password logs in, the old is refused.
    put_secret(&client, "alice-pw", &[("password", "second-pw")]).await?;
    wait_login(&ip, "alice", "second-pw", true).await?;
    wait_login(&ip, "alice", "first-pw", false).await?;
    let v2 = secret_version(&client, "alice-pw").await?;
    let s = scram_status().await?;
    assert_eq!(s.applied_secrets["scram/alice"], format!("alice-pw@{v2}"));
    assert!(!serde_json::to_string(&s)?.contains("second-pw"));

    // 3. alice leaves the spec: her credential is deleted; bob's, not Pier's, stays.
    kcs.patch(
        SCRAM_CLUSTER,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"sasl": {"scramUsers": []}}})),
    )
    .await?;
    wait_for(
        "alice's credential deleted",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let users = scram_users_in_kafka(&admin).await.ok()?;
            let s = scram_status().await.ok()?;
            (users == ["bob"] && !s.applied_secrets.contains_key("scram/alice")).then_some(())
        },
    )
    .await?;
    wait_login(&ip, "alice", "second-pw", false).await?;
    login(&ip, "bob", "bobs-own").await?;
    Ok(())
}
