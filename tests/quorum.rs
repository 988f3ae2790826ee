//! KRaft quorum changes and a Kafka upgrade, with real brokers run by the dev node agent and
//! Kafka's own VerifiableProducer (acks=all) through Envoy. One cluster, started on Kafka 4.0.2
//! with Pier's dynamic quorum (three combined nodes, one broker):
//! 1. a controller-only node added to the spec joins the voters (DescribeQuorum), no other node
//!    restarts;
//! 2. the image changed to 4.1.2: every node restarts on 4.1.2 (controllers first, the active
//!    controller last) under the producer, then metadata.version is raised to 4.1-IV1;
//! 3. the active controller removed from the spec leaves the voters first (its Pod still runs),
//!    another leader is elected, then it drains and goes; the producer never fails;
//! 4. with the controller-only voter frozen (SIGSTOP), a combined node that drops its controller
//!    role would leave no caught-up majority: refused (`QuorumChangeRefused`), the node is not
//!    restarted; once the frozen voter is back it leaves the voters, then restarts as a broker;
//!    given the role back, it restarts with it and joins the voters again;
//! 5. going back to 4.0.2 is refused, and nothing restarts.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use pier::api::{KafkaCluster, KafkaClusterStatus, QuorumMode};
use pier::kafka::{AdminClient, AdminOptions, QuorumInfo};
use pier_testenv::devlet::{self, DevletOptions};
use pier_testenv::{ControlPlane, LogDir, wait_for};
use serde_json::json;
use support::{BrokerPod, OperatorArgs, OperatorProcess, VerifiableProducer};

mod support;

const NS: &str = "default";
const NAME: &str = "quorum";
/// Envoy's bootstrap port for this test (others use 29092, 29192, 29392 and 29592).
const BOOTSTRAP: &str = "127.0.0.1:29892";
const EVENTS: &str = "events";
const OLD_IMAGE: &str = "apache/kafka:4.0.2";
const NEW_IMAGE: &str = "apache/kafka:4.1.2";
/// `metadata.version` levels: 4.0-IV3 and 4.1-IV1, each release's latest.
const MV_4_0: i16 = 25;
const MV_4_1: i16 = 27;

fn node(id: i32, roles: &[&str]) -> serde_json::Value {
    json!({"id": id, "configGroup": "default", "roles": roles})
}

/// Nodes 0-2 combined, 3 a broker, 4 (when asked) a controller.
fn nodes(ids: &[i32]) -> serde_json::Value {
    nodes_with(ids, &[])
}

/// [`nodes`], with the combined nodes `brokers_only` reduced to the broker role.
fn nodes_with(ids: &[i32], brokers_only: &[i32]) -> serde_json::Value {
    serde_json::Value::Array(
        ids.iter()
            .map(|id| match id {
                _ if brokers_only.contains(id) => node(*id, &["broker"]),
                0..=2 => node(*id, &["broker", "controller"]),
                4 => node(*id, &["controller"]),
                _ => node(*id, &["broker"]),
            })
            .collect(),
    )
}

/// How far behind the leader's clock voter `id` last caught up (ms); `None` if unknown.
fn catch_up_lag(q: &QuorumInfo, id: i32) -> Option<i64> {
    let now = q.voter(q.leader_id)?.last_caught_up_timestamp?;
    Some(now - q.voter(id)?.last_caught_up_timestamp?)
}

fn cluster() -> anyhow::Result<KafkaCluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "kafka.pier.dev/v1alpha1",
        "kind": "KafkaCluster",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "kafka": {
                "image": OLD_IMAGE,
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
            "brokers": nodes(&[0, 1, 2, 3]),
            "listeners": {"external": [{
                "name": "external", "containerPort": 9094,
                "bootstrapPort": 29892, "brokerPortBase": 29900
            }]},
            "envoy": {"replicas": 1}
        }
    }))?)
}

async fn patch(client: &Client, spec: serde_json::Value) -> anyhow::Result<()> {
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await?;
    Ok(())
}

async fn status(client: &Client) -> anyhow::Result<KafkaClusterStatus> {
    support::cluster_status(client, NS, NAME).await
}

async fn pods(client: &Client) -> anyhow::Result<BTreeMap<i32, BrokerPod>> {
    support::broker_pods(client, NS, NAME).await
}

/// An admin client on the ready Pods of nodes with the broker role (controller-only nodes
/// serve no admin requests).
async fn admin(client: &Client) -> anyhow::Result<AdminClient> {
    let nodes: BTreeMap<i32, String> = pods(client)
        .await?
        .into_iter()
        .filter(|(id, p)| *id != 4 && p.ready && !p.ip.is_empty())
        .map(|(id, p)| (id, format!("{}:9092", p.ip)))
        .collect();
    // Short: a check inside a wait must end well before the wait's deadline, even when the
    // quorum leader it is forwarded to was just frozen.
    let options = AdminOptions {
        call_timeout: Duration::from_secs(5),
        max_attempts: 2,
        deadline: Duration::from_secs(10),
        ..AdminOptions::default()
    };
    Ok(AdminClient::new(nodes, options))
}

async fn quorum(client: &Client) -> Option<QuorumInfo> {
    admin(client).await.ok()?.describe_quorum().await.ok()
}

fn voters(q: &QuorumInfo) -> BTreeSet<i32> {
    q.voters.iter().map(|v| v.replica_id).collect()
}

async fn wait_voters(
    client: &Client,
    want: &[i32],
    within: Duration,
) -> anyhow::Result<QuorumInfo> {
    let want: BTreeSet<i32> = want.iter().copied().collect();
    wait_for(
        &format!("KRaft voters {want:?}"),
        within,
        Duration::from_millis(500),
        || async {
            let q = quorum(client).await?;
            (voters(&q) == want && q.leader_id >= 0).then_some(q)
        },
    )
    .await
}

async fn wait_pods_ready(client: &Client, ids: &[i32], within: Duration) -> anyhow::Result<()> {
    let want: BTreeSet<i32> = ids.iter().copied().collect();
    wait_for(
        &format!("Pods {ids:?} ready"),
        within,
        Duration::from_secs(1),
        || async {
            let p = pods(client).await.ok()?;
            let ready: BTreeSet<i32> = p.iter().filter(|(_, v)| v.ready).map(|(k, _)| *k).collect();
            (ready == want).then_some(())
        },
    )
    .await
}

async fn wait_condition(
    client: &Client,
    type_: &str,
    state: &str,
    reason: Option<&str>,
    within: Duration,
) -> anyhow::Result<String> {
    wait_for(
        &format!("{type_}={state} ({reason:?})"),
        within,
        Duration::from_millis(500),
        || async {
            let s = status(client).await.ok()?;
            s.conditions
                .iter()
                .find(|c| c.type_ == type_ && c.status == state)
                .filter(|c| reason.is_none_or(|r| c.reason == r))
                .map(|c| c.message.clone())
        },
    )
    .await
}

/// The PID of the Kafka process the devlet runs for this Pod (its properties file lives in
/// the Pod's directory, named after namespace, name and uid).
fn kafka_pid(pod_name: &str, uid: &str) -> anyhow::Result<u32> {
    let marker = format!("{NS}_{pod_name}_{uid}/server.properties");
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("kafka.Kafka") && cmdline.contains(&marker) {
            return Ok(pid);
        }
    }
    anyhow::bail!("no Kafka process for Pod {pod_name} ({uid})")
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()?
        .success();
    anyhow::ensure!(ok, "kill {sig} {pid}");
    Ok(())
}

async fn finalized_metadata_version(client: &Client) -> Option<i16> {
    let f = admin(client).await.ok()?.features().await.ok()?;
    f.finalized.get("metadata.version").copied()
}

#[tokio::test]
async fn controllers_join_and_leave_the_dynamic_quorum_and_kafka_upgrades() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("quorum")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    let _operator = OperatorProcess::start(
        &plane,
        OperatorArgs {
            name: "op",
            pod_name: Some("op"),
            pid_namespace: false,
            kubeconfig: plane.kubeconfig(),
            namespace: NS,
            pod_namespace: None,
            xds_listen: None,
            xds_address: None,
        },
    )?;
    let options = DevletOptions::new("node-a", logs.data("devlet")?);
    let _devlet = tokio::spawn(devlet::run(client.clone(), options));
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &cluster()?)
        .await?;
    wait_pods_ready(&client, &[0, 1, 2, 3], Duration::from_secs(300)).await?;
    wait_condition(&client, "Ready", "True", None, Duration::from_secs(120)).await?;

    // A new cluster is formatted for a dynamic quorum with the directory ids Pier chose.
    let s = status(&client).await?;
    let q = s.quorum.clone().expect("status.quorum");
    assert_eq!(q.mode, QuorumMode::Dynamic);
    let described = wait_voters(&client, &[0, 1, 2], Duration::from_secs(60)).await?;
    for initial in &q.initial_controllers {
        let voter = described.voter(initial.id).expect("an initial voter");
        assert_eq!(
            voter.directory_id, initial.directory_id,
            "voter {}",
            initial.id
        );
    }
    let features = admin(&client).await?.features().await?;
    assert_eq!(features.finalized.get("kraft.version"), Some(&1));
    assert_eq!(features.finalized.get("metadata.version"), Some(&MV_4_0));

    support::create_topic(
        BOOTSTRAP,
        &[
            "--topic",
            EVENTS,
            "--partitions",
            "6",
            "--replication-factor",
            "3",
            // A create whose answer was lost is retried by the tool: not an error.
            "--if-not-exists",
        ],
    )
    .await?;
    let producer = VerifiableProducer::start(&logs, BOOTSTRAP, EVENTS)?;
    producer.wait_acked(100).await?;

    // 1. A controller-only node joins the voters; no other node restarts.
    let before = pods(&client).await?;
    patch(&client, json!({"brokers": nodes(&[0, 1, 2, 3, 4])})).await?;
    wait_voters(&client, &[0, 1, 2, 4], Duration::from_secs(180)).await?;
    let after = pods(&client).await?;
    for id in 0..=3 {
        assert_eq!(
            before[&id].uid, after[&id].uid,
            "node {id} was not restarted"
        );
    }
    wait_condition(
        &client,
        "Reconciling",
        "False",
        None,
        Duration::from_secs(60),
    )
    .await?;

    // 2. Upgrade to 4.1.2 under the producer: one node at a time, controllers first, the
    // active controller last; then metadata.version is raised. (Before any controller is
    // removed: Kafka 4.0/4.1 keep a removed controller's registration, and its feature range
    // would cap metadata.version for good.)
    let leader = quorum(&client).await.expect("quorum").leader_id;
    let before = pods(&client).await?;
    patch(&client, json!({"kafka": {"image": NEW_IMAGE}})).await?;
    // Restarts in the order they happen (a Pod with a new uid).
    let seen = std::sync::Mutex::new(Vec::<i32>::new());
    wait_for(
        "every node restarted on 4.1.2",
        Duration::from_secs(900),
        Duration::from_millis(300),
        || async {
            let now = pods(&client).await.ok()?;
            let mut order = seen.lock().ok()?;
            for (id, p) in &now {
                if before.get(id).is_some_and(|b| b.uid != p.uid) && !order.contains(id) {
                    order.push(*id);
                }
            }
            (order.len() == before.len()).then_some(())
        },
    )
    .await?;
    let order = seen.into_inner().unwrap_or_default();
    assert_eq!(
        order.last(),
        Some(&leader),
        "the active controller last: {order:?}"
    );
    // Controllers (the voters) before the broker-only node 3.
    let broker_at = order
        .iter()
        .position(|id| *id == 3)
        .expect("node 3 restarted");
    for controller in [0, 1, 2, 4].iter().filter(|id| **id != leader) {
        let at = order
            .iter()
            .position(|id| id == controller)
            .expect("restarted");
        assert!(at < broker_at, "controllers before brokers: {order:?}");
    }
    wait_for(
        "metadata.version 4.1-IV1",
        Duration::from_secs(300),
        Duration::from_secs(1),
        || async { (finalized_metadata_version(&client).await? == MV_4_1).then_some(()) },
    )
    .await?;
    let s = status(&client).await?;
    let version = s.kafka_version.expect("status.kafkaVersion");
    assert_eq!(version.running.as_deref(), Some("4.1.2"));
    assert_eq!(version.metadata_version.as_deref(), Some("4.1-IV1"));
    producer.wait_acked(300).await?;
    wait_condition(
        &client,
        "Reconciling",
        "False",
        None,
        Duration::from_secs(120),
    )
    .await?;

    // 3. The active controller leaves the spec: it leaves the voters while its Pod still runs
    // (it holds replicas, so it drains after), another node leads, then it goes.
    // The upgrade's elections may have left the controller-only node leading: restarting it
    // hands leadership to a combined node (the case this step is about).
    let mut leader = quorum(&client).await.expect("quorum").leader_id;
    for _ in 0..3 {
        if leader != 4 {
            break;
        }
        Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), NS)
            .delete(&format!("{NAME}-broker-4"), &Default::default())
            .await?;
        leader = wait_for(
            "a new leader and node 4 back",
            Duration::from_secs(180),
            Duration::from_secs(1),
            || async {
                let q = quorum(&client).await?;
                let four = pods(&client).await.ok()?.get(&4)?.ready;
                (q.leader_id >= 0 && q.leader_id != 4 && four).then_some(q.leader_id)
            },
        )
        .await?;
    }
    assert!((0..=2).contains(&leader), "a combined node leads: {leader}");
    let rest: Vec<i32> = [0, 1, 2, 3, 4]
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    patch(&client, json!({"brokers": nodes(&rest)})).await?;
    let voters_left: Vec<i32> = rest.iter().copied().filter(|id| *id != 3).collect();
    wait_voters(&client, &voters_left, Duration::from_secs(120)).await?;
    assert!(
        pods(&client).await?.contains_key(&leader),
        "node {leader} left the voters before its Pod went"
    );
    // A leader that removed itself leads until the new voter set is committed, then resigns:
    // DescribeQuorum may show the new voters with the old leader for a moment.
    wait_for(
        &format!("leadership moved off node {leader}"),
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let q = quorum(&client).await?;
            (q.leader_id >= 0 && q.leader_id != leader).then_some(())
        },
    )
    .await?;
    wait_for(
        &format!("node {leader}'s Pod gone"),
        Duration::from_secs(300),
        Duration::from_secs(1),
        || async { (!pods(&client).await.ok()?.contains_key(&leader)).then_some(()) },
    )
    .await?;
    let acked = producer.finish().await?;
    assert!(acked.len() >= 400, "{} acked", acked.len());

    // 4. The controller-only voter frozen: a combined node dropping its controller role would
    // leave one caught-up voter of two. Refused, and the node is not restarted until the frozen
    // voter is back; then it leaves the voters first and restarts as a broker.
    let demoted = voters_left
        .iter()
        .copied()
        .find(|id| *id != 4)
        .expect("a combined voter");
    let frozen_pod = pods(&client).await?[&4].clone();
    let pid = kafka_pid(&format!("{NAME}-broker-4"), &frozen_pod.uid)?;
    signal(pid, "-STOP")?;
    let frozen = wait_for(
        "node 4 behind the quorum",
        // A frozen leader is replaced by an election first, slow on a loaded machine.
        Duration::from_secs(120),
        Duration::from_millis(500),
        || async {
            let q = quorum(&client).await?;
            // A new leader knows no catch-up time of a voter that never fetched from it.
            let behind = q.voter(4).is_some() && catch_up_lag(&q, 4).is_none_or(|lag| lag > 5_000);
            (q.leader_id != 4 && q.leader_id >= 0 && behind).then_some(())
        },
    )
    .await;
    if let Err(e) = frozen {
        signal(pid, "-CONT")?;
        return Err(e);
    }
    let demoted_uid = pods(&client).await?[&demoted].uid.clone();
    patch(&client, json!({"brokers": nodes_with(&rest, &[demoted])})).await?;
    let refused = wait_condition(
        &client,
        "Degraded",
        "True",
        Some("QuorumChangeRefused"),
        Duration::from_secs(120),
    )
    .await;
    let untouched = pods(&client).await?[&demoted].uid == demoted_uid;
    signal(pid, "-CONT")?;
    let refused = refused?;
    assert!(
        refused.contains(&format!("removing controller {demoted} refused")),
        "{refused}"
    );
    assert!(
        untouched,
        "node {demoted} not restarted while it is a voter"
    );
    let remaining: Vec<i32> = voters_left
        .iter()
        .copied()
        .filter(|id| *id != demoted)
        .collect();
    wait_voters(&client, &remaining, Duration::from_secs(180)).await?;
    wait_for(
        &format!("node {demoted} restarted as a broker"),
        Duration::from_secs(300),
        Duration::from_secs(1),
        || async {
            let p = pods(&client).await.ok()?;
            let d = p.get(&demoted)?;
            (d.uid != demoted_uid && d.ready).then_some(())
        },
    )
    .await?;
    wait_condition(&client, "Degraded", "False", None, Duration::from_secs(60)).await?;
    // The broker gets the controller role back: it restarts with it, joins as an observer and
    // is added once caught up.
    let broker_uid = pods(&client).await?[&demoted].uid.clone();
    patch(&client, json!({"brokers": nodes(&rest)})).await?;
    let mut three = remaining.clone();
    three.push(demoted);
    three.sort();
    wait_voters(&client, &three, Duration::from_secs(300)).await?;
    assert_ne!(
        pods(&client).await?[&demoted].uid,
        broker_uid,
        "restarted with the controller role"
    );
    wait_condition(
        &client,
        "Reconciling",
        "False",
        None,
        Duration::from_secs(300),
    )
    .await?;

    // 5. Back to 4.0.2 is refused now: nothing restarts.
    let before = pods(&client).await?;
    patch(&client, json!({"kafka": {"image": OLD_IMAGE}})).await?;
    let refused = wait_condition(
        &client,
        "Degraded",
        "True",
        Some("InvalidSpec"),
        Duration::from_secs(60),
    )
    .await?;
    assert!(refused.contains("downgrade refused"), "{refused}");
    assert!(refused.contains("4.1-IV1"), "{refused}");
    assert_eq!(pods(&client).await?, before, "no node restarted");
    Ok(())
}
