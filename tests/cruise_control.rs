//! Cruise Control as the engine of replica moves, with real brokers run by the dev node agent
//! and a stand-in for CC (CC's jars are in no registry reachable here; the stand-in speaks CC's
//! documented JSON: 202 + `User-Task-ID`, task states, a restart that forgets every task).
//!
//! With `fallback: BuiltIn` and CC not ready, a removed broker is drained by Pier's own
//! balancer and CC is asked nothing. With `fallback: Wait`, a removal waits and status says
//! why; once CC is ready Pier asks it (`remove_broker`, with the spec's throttle) and moves
//! nothing itself; the broker put back stops CC's execution. A CC restart forgets the task: Pier submits again and never takes the lost
//! task as done. CC saying "done" while Kafka still shows replicas on the broker deletes
//! nothing (Pier submits again). The test, standing in for CC's executor, then moves the
//! replicas through Kafka: the broker's Pod goes only once Kafka shows it empty.
use std::collections::BTreeSet;
use std::time::Duration;

use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use pier::api::{BrokerPhase, KafkaCluster, KafkaClusterStatus};
use pier::kafka::{AdminClient, NewTopic};
use pier_testenv::devlet::{self, DevletOptions};
use pier_testenv::{ControlPlane, LogDir, wait_for};
use serde_json::json;
use stand_in::{Phase, StandIn, World};

#[path = "../crates/pier-cruise-control/tests/stand_in/mod.rs"]
mod stand_in;
mod support;

const NS: &str = "default";
const NAME: &str = "cc";
const TOPIC: &str = "spread";
/// The spec's throttle, passed to CC as `replication_throttle`.
const THROTTLE: i64 = 2 * 1024 * 1024;

fn brokers_spec(ids: &[i32]) -> serde_json::Value {
    serde_json::Value::Array(
        ids.iter()
            .map(|id| {
                let roles = if *id == 0 {
                    json!(["broker", "controller"])
                } else {
                    json!(["broker"])
                };
                json!({"id": id, "configGroup": "default", "roles": roles})
            })
            .collect(),
    )
}

fn cluster(cc_url: &str) -> anyhow::Result<KafkaCluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "kafka.pier.dev/v1alpha1",
        "kind": "KafkaCluster",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "kafka": {
                "readOnlyConfig": {
                    "default.replication.factor": "2",
                    "offsets.topic.replication.factor": "1",
                    "transaction.state.log.replication.factor": "1",
                    "transaction.state.log.min.isr": "1"
                }
            },
            "brokerConfigGroups": {"default": {
                "heapOpts": "-Xms192m -Xmx192m",
                "storage": [{"mountPath": "/var/lib/kafka/data0", "size": "1Gi"}]
            }},
            "brokers": brokers_spec(&[0, 1, 2, 3]),
            "rebalance": {"throttleBytesPerSecond": THROTTLE},
            // The stand-in's brokers have no metrics reporter jar.
            "cruiseControl": {
                "enabled": true,
                "url": cc_url,
                "metricsReporter": false,
                "fallback": "Wait"
            }
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

async fn pods(client: &Client) -> anyhow::Result<BTreeSet<i32>> {
    Ok(support::broker_pods(client, NS, NAME)
        .await?
        .keys()
        .copied()
        .collect())
}

async fn admin(client: &Client) -> anyhow::Result<AdminClient> {
    support::broker_admin(client, NS, NAME).await
}

/// Brokers holding a replica of some partition, as Kafka says.
async fn holders(client: &Client) -> anyhow::Result<BTreeSet<i32>> {
    let md = admin(client).await?.metadata(None).await?;
    Ok(md
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .flat_map(|p| p.replicas.iter().copied())
        .collect())
}

fn message(s: &KafkaClusterStatus) -> String {
    s.replica_moves
        .as_ref()
        .and_then(|m| m.message.clone())
        .unwrap_or_default()
}

fn phase(s: &KafkaClusterStatus, id: i32) -> Option<BrokerPhase> {
    s.brokers.iter().find(|b| b.id == id).map(|b| b.phase)
}

/// The task id Pier persisted for CC's operation.
fn persisted_task(s: &KafkaClusterStatus) -> Option<(String, u32)> {
    let op = s.replica_moves.as_ref()?.cruise_control.as_ref()?;
    Some((op.task_id.clone()?, op.attempts))
}

/// The `remove_broker` requests CC received, as their `brokerid` parameter.
fn remove_requests(cc: &StandIn) -> Vec<String> {
    cc.world()
        .executions()
        .iter()
        .filter(|s| s.endpoint == "remove_broker")
        .map(|s| s.param("brokerid").unwrap_or_default().to_string())
        .collect()
}

/// Waits until CC received `n` remove_broker requests and Pier persisted the latest task as
/// the operation's submission number `attempts`.
async fn wait_submission(
    client: &Client,
    cc: &StandIn,
    n: usize,
    attempts: u32,
) -> anyhow::Result<String> {
    wait_for(
        &format!("remove_broker #{n} accepted and persisted"),
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let latest = {
                let world = cc.world();
                (world
                    .executions()
                    .iter()
                    .filter(|s| s.endpoint == "remove_broker")
                    .count()
                    == n)
                    .then(|| world.tasks.last().map(|t| t.id.clone()))
                    .flatten()?
            };
            let (task, persisted) = persisted_task(&status(client).await.ok()?)?;
            (task == latest && persisted == attempts).then_some(task)
        },
    )
    .await
}

/// What CC's executor would do for a `remove_broker` of `leaving`: move every replica off it
/// through Kafka and wait until Kafka is done.
async fn execute_as_cc(client: &Client, leaving: i32) -> anyhow::Result<()> {
    let a = admin(client).await?;
    let md = a.metadata(None).await?;
    let moves = pier::kafka::plan_drain(&md, &[leaving]).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(!moves.is_empty(), "broker {leaving} holds replicas");
    a.alter_partition_reassignments(&moves).await?;
    wait_for(
        "CC's moves done in Kafka",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let a = admin(client).await.ok()?;
            a.list_partition_reassignments()
                .await
                .ok()?
                .is_empty()
                .then_some(())
        },
    )
    .await
}

#[tokio::test]
async fn cruise_control_drains_a_broker_and_pier_deletes_it_only_when_kafka_says_empty()
-> anyhow::Result<()> {
    let logs = LogDir::for_current_test("cruise_control")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    // CC not ready (no metric windows) until the test says so; its tasks stay InExecution
    // until the test ends them, as a long execution would.
    let cc = StandIn::start_with(World {
        windows_after_state_polls: u32::MAX,
        script: vec![Phase::Active, Phase::InExecution],
        ..World::default()
    })
    .await;
    let _operator = support::Operator::start(client.clone(), NS).await?;
    let _devlet = tokio::spawn(devlet::run(
        client.clone(),
        DevletOptions::new("dev-a", logs.data("devlet")?),
    ));
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &cluster(&cc.url)?)
        .await?;
    wait_for(
        "4 brokers ready",
        Duration::from_secs(180),
        Duration::from_secs(1),
        || async {
            let b = support::broker_pods(&client, NS, NAME).await.ok()?;
            (b.len() == 4 && b.values().all(|p| p.ready)).then_some(())
        },
    )
    .await?;
    // Every broker holds replicas.
    wait_for(
        "the topic created on every broker",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async {
            let a = admin(&client).await.ok()?;
            let _ = a.create_topic(&NewTopic::new(TOPIC, 8, 2)).await;
            (holders(&client).await.ok()? == BTreeSet::from([0, 1, 2, 3])).then_some(())
        },
    )
    .await?;

    // 1. fallback Wait, CC not ready: the removal of broker 3 waits, status says why, nothing
    // moves.
    patch(&client, json!({"brokers": brokers_spec(&[0, 1, 2])})).await?;
    let last = std::sync::Mutex::new(None);
    let why = wait_for(
        "the drain waiting for CC",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let s = status(&client).await.ok()?;
            let m = message(&s);
            let found = phase(&s, 3) == Some(BrokerPhase::Draining) && m.contains("not ready");
            *last.lock().unwrap() = Some(s);
            found.then_some(m)
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}; last status: {:?}", last.lock().unwrap()))?;
    assert!(why.contains("metric windows"), "{why}");
    let a = admin(&client).await?;
    assert!(
        a.list_partition_reassignments().await?.is_empty(),
        "nothing moves"
    );
    assert!(pods(&client).await?.contains(&3));
    assert!(cc.world().executions().is_empty());
    assert!(cc.world().state_polls > 0, "CC's readiness was asked");

    // 2. CC ready: Pier asks it to remove broker 3, with the spec's throttle, and moves
    // nothing itself.
    {
        let mut world = cc.world();
        world.windows_after_state_polls = world.state_polls;
    }
    wait_submission(&client, &cc, 1, 1).await?;
    assert_eq!(remove_requests(&cc), vec!["3".to_string()]);
    let throttle = cc.world().executions()[0]
        .param("replication_throttle")
        .map(str::to_string);
    assert_eq!(throttle, Some(THROTTLE.to_string()));
    assert!(
        a.list_partition_reassignments().await?.is_empty(),
        "Pier moved nothing"
    );
    assert!(holders(&client).await?.contains(&3));

    // Broker 3 back in the spec: CC's execution is stopped, the broker Running again.
    patch(&client, json!({"brokers": brokers_spec(&[0, 1, 2, 3])})).await?;
    wait_for(
        "CC stopped and broker 3 Running",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let stopped = cc
                .world()
                .seen
                .iter()
                .any(|s| s.method == "POST" && s.endpoint == "stop_proposal_execution");
            let s = status(&client).await.ok()?;
            (stopped && phase(&s, 3) == Some(BrokerPhase::Running) && persisted_task(&s).is_none())
                .then_some(())
        },
    )
    .await?;
    patch(&client, json!({"brokers": brokers_spec(&[0, 1, 2])})).await?;
    let first = wait_submission(&client, &cc, 2, 1).await?;

    // 3. CC restarts and forgets the task: Pier submits again, never reports it done.
    cc.restart();
    let second = wait_submission(&client, &cc, 3, 2).await?;
    assert_ne!(first, second);
    let s = status(&client).await?;
    assert_eq!(phase(&s, 3), Some(BrokerPhase::Draining));
    assert!(
        pods(&client).await?.contains(&3),
        "a lost task deletes nothing"
    );

    // 4. CC says Completed while Kafka still shows replicas on broker 3: nothing is deleted,
    // Pier submits again.
    {
        let mut world = cc.world();
        let task = world
            .tasks
            .iter_mut()
            .find(|t| t.id == second)
            .expect("the task");
        task.phase = Phase::Completed;
        task.script.clear();
    }
    let third = wait_submission(&client, &cc, 4, 3).await?;
    assert!(
        pods(&client).await?.contains(&3),
        "CC's done deletes nothing"
    );
    assert!(holders(&client).await?.contains(&3));
    assert_eq!(
        phase(&status(&client).await?, 3),
        Some(BrokerPhase::Draining)
    );

    // 5. CC's executor (the test, for the stand-in) moves the replicas through Kafka; once
    // Kafka shows broker 3 empty, its Pod goes.
    execute_as_cc(&client, 3).await?;
    {
        let mut world = cc.world();
        if let Some(task) = world.tasks.iter_mut().find(|t| t.id == third) {
            task.phase = Phase::Completed;
            task.script.clear();
        }
    }
    wait_for(
        "broker 3's Pod gone and the move over",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async {
            let s = status(&client).await.ok()?;
            let gone = !pods(&client).await.ok()?.contains(&3);
            (gone && s.replica_moves.is_none()).then_some(())
        },
    )
    .await?;
    assert_eq!(pods(&client).await?, BTreeSet::from([0, 1, 2]));
    assert_eq!(
        remove_requests(&cc).len(),
        4,
        "nothing submitted after Kafka said empty"
    );
    let s = status(&client).await?;
    assert!(
        !s.conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True"),
        "{:?}",
        s.conditions
    );

    // 6. fallback BuiltIn, CC not ready: Pier's own balancer drains broker 2; CC is asked
    // nothing.
    cc.world().windows_after_state_polls = u32::MAX;
    patch(
        &client,
        json!({"brokers": brokers_spec(&[0, 1]), "cruiseControl": {"fallback": "BuiltIn"}}),
    )
    .await?;
    wait_for(
        "broker 2 drained by Pier and its Pod gone",
        Duration::from_secs(90),
        Duration::from_secs(1),
        || async {
            let gone = !pods(&client).await.ok()?.contains(&2);
            let empty = !holders(&client).await.ok()?.contains(&2);
            (gone && empty).then_some(())
        },
    )
    .await?;
    assert_eq!(remove_requests(&cc).len(), 4, "CC was asked nothing more");
    Ok(())
}
