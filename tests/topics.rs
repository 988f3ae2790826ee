//! KafkaTopic with real brokers run by the dev node agent, a real `pier operator` process, and
//! Kafka's own TopicCommand and kcat through Envoy as the judges: a pre-existing topic adopted
//! (grown, its stray override removed); a topic created with its partitions, factor and config;
//! partitions raised; the replication factor raised 1 → 3 with every record kept and the
//! throttles gone afterwards; a config key removed falls back to the default; a decrease, an
//! unknown config key and a second KafkaTopic for the same topic refused with conditions and
//! nothing changed; 100 KafkaTopics created together are read back in fewer requests than
//! topics; 100 KafkaTopics in sync cost no Kubernetes write (the apiserver's audit log)
//! and no Kafka admin write (the brokers' own request metrics) when a restarted operator
//! reconciles them all, and a handful of DescribeConfigs requests, not one per topic; deletion
//! removes the topic, `retain` keeps it, and a topic whose cluster is gone is released at once.
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use pier::api::{KafkaCluster, KafkaTopic};
use pier_testenv::devlet::{self, DevletOptions};
use pier_testenv::{ControlPlane, LogDir, wait_for};
use serde_json::json;
use support::{OperatorArgs, OperatorProcess, read_topic};

mod support;

const NS: &str = "default";
const NAME: &str = "topics";
/// Envoy's bootstrap port for this test (others use 29092 … 29892).
const BOOTSTRAP: &str = "127.0.0.1:29692";
const OPERATOR_USER: &str = "pier-operator";
const WAIT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(500);
/// KafkaTopics of the steady-state check.
const MANY: usize = 100;

fn cluster() -> anyhow::Result<KafkaCluster> {
    let brokers: Vec<serde_json::Value> = (0..3)
        .map(|id| json!({"id": id, "configGroup": "default", "roles": ["broker", "controller"]}))
        .collect();
    Ok(serde_json::from_value(json!({
        "apiVersion": "kafka.pier.dev/v1alpha1",
        "kind": "KafkaCluster",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "kafka": {"readOnlyConfig": {"offsets.topic.replication.factor": "1"}},
            "brokerConfigGroups": {"default": {
                "heapOpts": "-Xms256m -Xmx256m",
                "storage": [{"mountPath": "/var/lib/kafka/data0", "size": "1Gi"}]
            }},
            "brokers": brokers,
            "listeners": {"external": [{
                "name": "external", "containerPort": 9094,
                "bootstrapPort": 29692, "brokerPortBase": 29700
            }]},
            "envoy": {"replicas": 1}
        }
    }))?)
}

fn kafka_topic(name: &str, spec: serde_json::Value) -> anyhow::Result<KafkaTopic> {
    let mut spec = spec;
    spec["clusterRef"] = json!({"name": NAME});
    Ok(serde_json::from_value(json!({
        "apiVersion": "kafka.pier.dev/v1alpha1",
        "kind": "KafkaTopic",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }))?)
}

fn topics(client: &Client) -> Api<KafkaTopic> {
    Api::namespaced(client.clone(), NS)
}

/// The Ready condition's (status, reason) once it reflects the current generation.
async fn ready_of(client: &Client, name: &str) -> Option<(String, String, KafkaTopic)> {
    let kt = topics(client).get(name).await.ok()?;
    let c = kt
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?
        .clone();
    (c.observed_generation == kt.metadata.generation).then_some((c.status, c.reason, kt))
}

async fn wait_ready(client: &Client, name: &str) -> anyhow::Result<KafkaTopic> {
    wait_for(&format!("KafkaTopic {name} Ready"), WAIT, POLL, || async {
        let (status, _, kt) = ready_of(client, name).await?;
        (status == "True").then_some(kt)
    })
    .await
}

async fn wait_reason(client: &Client, name: &str, reason: &str) -> anyhow::Result<KafkaTopic> {
    wait_for(
        &format!("KafkaTopic {name} with reason {reason}"),
        WAIT,
        POLL,
        || async {
            let (_, r, kt) = ready_of(client, name).await?;
            (r == reason).then_some(kt)
        },
    )
    .await
}

async fn patch_spec(client: &Client, name: &str, spec: serde_json::Value) -> anyhow::Result<()> {
    topics(client)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await?;
    Ok(())
}

/// A topic as Kafka's TopicCommand describes it through Envoy.
#[derive(Debug, Default)]
struct Described {
    partitions: usize,
    replication_factor: usize,
    configs: BTreeMap<String, String>,
    replicas: Vec<Vec<i32>>,
}

async fn describe(topic: &str) -> anyhow::Result<Option<Described>> {
    let out = support::kafka_tool("org.apache.kafka.tools.TopicCommand")?
        .args([
            "--bootstrap-server",
            BOOTSTRAP,
            "--describe",
            "--topic",
            topic,
        ])
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("does not exist") || stdout.contains("does not exist") {
            return Ok(None);
        }
        anyhow::bail!("TopicCommand --describe {topic}: {stderr}");
    }
    let mut d = Described::default();
    for line in stdout.lines() {
        let fields: BTreeMap<&str, &str> = line
            .split('\t')
            .filter_map(|f| {
                f.trim()
                    .split_once(": ")
                    .or_else(|| f.trim().split_once(':'))
            })
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        if let Some(n) = fields.get("PartitionCount") {
            d.partitions = n.parse()?;
            d.replication_factor = fields
                .get("ReplicationFactor")
                .context("ReplicationFactor")?
                .parse()?;
            d.configs = fields
                .get("Configs")
                .map(|c| {
                    c.split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                })
                .unwrap_or_default();
        } else if let Some(r) = fields.get("Replicas") {
            d.replicas.push(
                r.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::parse)
                    .collect::<Result<_, _>>()?,
            );
        }
    }
    Ok(Some(d))
}

async fn kafka_requests(client: &Client, kinds: &[&str]) -> anyhow::Result<f64> {
    support::broker_requests(client, NS, NAME, kinds).await
}

/// Admin requests that change something in Kafka.
const ADMIN_WRITES: &[&str] = &[
    "CreateTopics",
    "DeleteTopics",
    "CreatePartitions",
    "IncrementalAlterConfigs",
    "AlterPartitionReassignments",
];

/// A metric of the operator: the sum of its series (the value, for an unlabelled one).
fn operator_metric(op: &OperatorProcess, name: &str) -> Option<f64> {
    let text = std::process::Command::new("curl")
        .args(["-sf", &format!("http://{}/metrics", op.metrics)])
        .output()
        .ok()?;
    let values: Vec<f64> = String::from_utf8_lossy(&text.stdout)
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// `xds_listen`: a restarted operator serves where the one before did (the Envoys' bootstrap
/// names it).
fn start_operator(
    plane: &ControlPlane,
    name: &str,
    kubeconfig: &std::path::Path,
    xds_listen: Option<std::net::SocketAddr>,
) -> anyhow::Result<OperatorProcess> {
    OperatorProcess::start(
        plane,
        OperatorArgs {
            name,
            pod_name: None,
            pid_namespace: false,
            kubeconfig,
            namespace: NS,
            pod_namespace: None,
            xds_listen,
            xds_address: None,
        },
    )
}

#[tokio::test]
async fn kafka_topics_against_real_brokers() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("topics")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    let kubeconfig = plane.kubeconfig_for(OPERATOR_USER, Some("system:masters"))?;
    let mut op = start_operator(&plane, "op-1", &kubeconfig, None)?;
    let _devlet = tokio::spawn(devlet::run(
        client.clone(),
        DevletOptions::new("node-1", logs.data("devlet")?),
    ));
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &cluster()?)
        .await?;
    wait_for(
        "the cluster Ready",
        Duration::from_secs(300),
        POLL,
        || async {
            let s = support::cluster_status(&client, NS, NAME).await.ok()?;
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        },
    )
    .await?;
    let post = PostParams::default();

    // 1. Adoption: a topic made by someone else is taken over, grown, its stray override gone.
    support::create_topic(
        BOOTSTRAP,
        &[
            "--topic",
            "legacy",
            "--partitions",
            "2",
            "--replication-factor",
            "1",
            "--config",
            "retention.ms=1000",
        ],
    )
    .await?;
    topics(&client)
        .create(
            &post,
            &kafka_topic("legacy", json!({"partitions": 3, "replicationFactor": 1}))?,
        )
        .await?;
    let legacy = wait_ready(&client, "legacy").await?;
    let status = legacy.status.clone().context("status")?;
    ensure!(status.adopted, "adopted: {status:?}");
    let d = describe("legacy").await?.context("legacy exists")?;
    ensure!(d.partitions == 3, "legacy grown to 3: {d:?}");
    ensure!(
        !d.configs.contains_key("retention.ms"),
        "override removed: {d:?}"
    );

    // 2. Created as specified (a topic name a resource name cannot be).
    topics(&client)
        .create(
            &post,
            &kafka_topic(
                "orders",
                json!({"topicName": "Orders_v1", "partitions": 3, "replicationFactor": 1,
                       "config": {"retention.ms": "3600000", "cleanup.policy": "delete"}}),
            )?,
        )
        .await?;
    let orders = wait_ready(&client, "orders").await?;
    let status = orders.status.clone().context("status")?;
    ensure!(!status.adopted && status.topic_id.is_some(), "{status:?}");
    let d = describe("Orders_v1").await?.context("created")?;
    ensure!(
        d.partitions == 3 && d.replication_factor == 1,
        "as specified: {d:?}"
    );
    ensure!(
        d.configs.get("retention.ms").map(String::as_str) == Some("3600000"),
        "config: {d:?}"
    );
    let records: String = (0..300).map(|i| format!("order-{i}\n")).collect();
    let out = pier_testenv::kcat(
        &["-b", BOOTSTRAP, "-P", "-t", "Orders_v1", "-X", "acks=all"],
        Some(records.as_bytes()),
        Duration::from_secs(60),
    )
    .await?;
    ensure!(out.status.success(), "kcat produced");

    // 3. More partitions.
    patch_spec(&client, "orders", json!({"partitions": 6})).await?;
    wait_ready(&client, "orders").await?;
    ensure!(describe("Orders_v1").await?.context("exists")?.partitions == 6);

    // 4. Replication factor 1 → 3: replicas move (throttled), every record stays, the
    // throttles go once the moves are done.
    patch_spec(&client, "orders", json!({"replicationFactor": 3})).await?;
    wait_ready(&client, "orders").await?;
    let d = describe("Orders_v1").await?.context("exists")?;
    ensure!(
        d.replication_factor == 3 && d.replicas.iter().all(|r| r.len() == 3),
        "replicated three times: {d:?}"
    );
    wait_for("all 300 records back", WAIT, POLL, || async {
        (read_topic(BOOTSTRAP, "Orders_v1").await?.lines().count() == 300).then_some(())
    })
    .await?;
    wait_for("the throttles removed", WAIT, POLL, || async {
        let d = describe("Orders_v1").await.ok()??;
        (!d.configs.keys().any(|k| k.contains("throttled"))).then_some(())
    })
    .await?;

    // 5. A config key removed falls back to the default.
    patch_spec(&client, "orders", json!({"config": {"retention.ms": null}})).await?;
    wait_ready(&client, "orders").await?;
    let d = describe("Orders_v1").await?.context("exists")?;
    ensure!(
        !d.configs.contains_key("retention.ms"),
        "back to default: {d:?}"
    );
    ensure!(d.configs.contains_key("cleanup.policy"), "kept: {d:?}");

    // 6. Refusals change nothing: fewer partitions, an unknown key, a second claim.
    patch_spec(&client, "orders", json!({"partitions": 2})).await?;
    wait_reason(&client, "orders", "PartitionDecreaseRefused").await?;
    ensure!(describe("Orders_v1").await?.context("exists")?.partitions == 6);
    patch_spec(&client, "orders", json!({"partitions": 6})).await?;
    wait_ready(&client, "orders").await?;
    topics(&client)
        .create(
            &post,
            &kafka_topic(
                "typo",
                json!({"partitions": 1, "replicationFactor": 1, "config": {"retention.msec": "1"}}),
            )?,
        )
        .await?;
    let typo = wait_reason(&client, "typo", "InvalidSpec").await?;
    let message = typo.status.context("status")?.conditions[0].message.clone();
    ensure!(message.contains("retention.msec"), "{message}");
    ensure!(describe("typo").await?.is_none(), "typo not created");
    topics(&client)
        .create(
            &post,
            &kafka_topic(
                "orders-again",
                json!({"topicName": "Orders_v1", "partitions": 1, "replicationFactor": 1}),
            )?,
        )
        .await?;
    wait_reason(&client, "orders-again", "Conflict").await?;
    topics(&client)
        .delete("orders-again", &DeleteParams::default())
        .await?;
    wait_for("orders-again gone", WAIT, POLL, || async {
        topics(&client)
            .get_opt("orders-again")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await?;
    ensure!(
        describe("Orders_v1").await?.is_some(),
        "the conflicting KafkaTopic's deletion left the topic alone"
    );

    // 7. Many KafkaTopics in sync: a restarted operator reconciles every one of them without
    // a write to Kubernetes or Kafka, and asks Kafka for their configs in a few requests.
    let reads_before = kafka_requests(&client, &["Metadata", "DescribeConfigs"]).await?;
    for i in 0..MANY {
        topics(&client)
            .create(
                &post,
                &kafka_topic(
                    &format!("bulk-{i:03}"),
                    json!({"partitions": 1, "replicationFactor": 1, "config": {"retention.ms": "86400000"}}),
                )?,
            )
            .await?;
    }
    wait_for(&format!("{MANY} KafkaTopics Ready"), WAIT, POLL, || async {
        let list = topics(&client).list(&Default::default()).await.ok()?;
        let ready = list
            .items
            .iter()
            .filter(|t| t.name_any().starts_with("bulk-"))
            .filter(|t| {
                t.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        (ready == MANY).then_some(())
    })
    .await?;
    // Topics created together are asked about together once created (not one Metadata and
    // one DescribeConfigs each).
    let reads = kafka_requests(&client, &["Metadata", "DescribeConfigs"]).await? - reads_before;
    println!("{MANY} topics created and read back with {reads} Metadata and DescribeConfigs");
    ensure!(
        reads < MANY as f64,
        "{reads} Metadata and DescribeConfigs requests to create {MANY} topics: not batched"
    );
    // Reconciles of the last changes settle before the count starts.
    wait_ready(&client, "orders").await?;
    op.process.stop();
    let mark = plane.audit_mark()?;
    let writes_before = kafka_requests(&client, ADMIN_WRITES).await?;
    let describes_before = kafka_requests(&client, &["DescribeConfigs"]).await?;
    op = start_operator(&plane, "op-2", &kubeconfig, Some(op.xds))?;
    let managed = MANY + 2; // legacy, orders (typo is refused before Kafka is asked)
    wait_for(
        "the restarted operator reconciled every KafkaTopic",
        WAIT,
        POLL,
        || async {
            (operator_metric(&op, "pier_topic_reconciles_total")? >= (managed + 1) as f64)
                .then_some(())
        },
    )
    .await?;
    // The Envoy reconnects to the restarted operator and takes its config (the same as
    // before): the cluster's status says Ready throughout, no flip to "waiting for Envoy".
    wait_for(
        "the Envoy reconnected and ACKed the restarted operator's config",
        WAIT,
        POLL,
        || async { (operator_metric(&op, "pier_xds_acks_total")? >= 1.0).then_some(()) },
    )
    .await?;
    let kafka_writes = kafka_requests(&client, ADMIN_WRITES).await? - writes_before;
    let describes = kafka_requests(&client, &["DescribeConfigs"]).await? - describes_before;
    let kube_writes: BTreeMap<String, usize> = plane
        .audit_write_counts(OPERATOR_USER, &mark)?
        .into_iter()
        // The topics' own writes (an Event of theirs comes with a Kafka write, counted below)
        // and the cluster's (its status keeps the Envoys' prior ACK while they reconnect).
        .filter(|(what, _)| what.contains("kafkatopics") || what.contains("kafkaclusters"))
        .collect();
    ensure!(
        kube_writes.is_empty(),
        "Kubernetes writes in the steady state: {kube_writes:?}"
    );
    ensure!(
        kafka_writes == 0.0,
        "{kafka_writes} Kafka admin writes in the steady state"
    );
    ensure!(
        // The cluster's own reconciles describe its brokers' configs too; one per topic would
        // be over a hundred.
        describes < managed as f64 / 4.0,
        "{describes} DescribeConfigs requests for {managed} topics: not batched"
    );

    // 8. Deletion: the topic goes; `retain` keeps it; with the cluster gone, nothing hangs.
    topics(&client)
        .delete("orders", &DeleteParams::default())
        .await?;
    wait_for(
        "orders deleted in Kafka and Kubernetes",
        WAIT,
        POLL,
        || async {
            let gone = topics(&client).get_opt("orders").await.ok()?.is_none();
            (gone && describe("Orders_v1").await.ok()?.is_none()).then_some(())
        },
    )
    .await?;
    patch_spec(&client, "bulk-000", json!({"deletionPolicy": "retain"})).await?;
    wait_ready(&client, "bulk-000").await?;
    topics(&client)
        .delete("bulk-000", &DeleteParams::default())
        .await?;
    wait_for("bulk-000 released", WAIT, POLL, || async {
        topics(&client)
            .get_opt("bulk-000")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await?;
    ensure!(describe("bulk-000").await?.is_some(), "retained in Kafka");
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .delete(NAME, &DeleteParams::default())
        .await?;
    wait_for("the cluster gone", WAIT, POLL, || async {
        Api::<KafkaCluster>::namespaced(client.clone(), NS)
            .get_opt(NAME)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await?;
    topics(&client)
        .delete("legacy", &DeleteParams::default())
        .await?;
    wait_for(
        "legacy released without its cluster",
        Duration::from_secs(60),
        POLL,
        || async {
            topics(&client)
                .get_opt("legacy")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await?;
    drop(op);
    Ok(())
}
