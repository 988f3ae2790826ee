//! Graceful scaling with real brokers run by the dev node agent and clients through Envoy:
//! a removal that would break replication is refused; a removed broker is drained by the
//! operator (a `pier operator` process SIGKILLed mid-drain is replaced by one that resumes the
//! same moves: Kafka's assignment after the drain is exactly the one in flight at the kill) while
//! Kafka's own
//! VerifiableProducer (acks=all, idempotent) and a kcat consumer keep working, and its Pod and
//! registration go only then; added brokers are filled until replica and leader counts are
//! within one of the mean with every partition over both zones (two devlets, brokers pinned by
//! `rack`); throttles are gone at the end of every move.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use pier::api::{BrokerPhase, KafkaCluster, KafkaClusterStatus};
use pier::kafka::{AdminClient, ConfigResource};
use pier_testenv::devlet::{self, DevletOptions};
use pier_testenv::{ControlPlane, LogDir, wait_for};
use serde_json::json;
use support::{BrokerPod, OperatorArgs, OperatorProcess, VerifiableProducer, read_topic};

mod support;

const NS: &str = "default";
const NAME: &str = "scale";
/// Envoy's bootstrap port for this test (others use 29092 and 29192).
const BOOTSTRAP: &str = "127.0.0.1:29392";
/// Replicated three times, produced to during the whole test.
const EVENTS: &str = "events";
/// One partition, one replica, on the broker that is removed.
const SOLO: &str = "solo";
/// ~15 MB on the removed broker alone: at 1 MiB/s its move outlasts an operator's takeover.
const SOLO_RECORDS: usize = 15_000;

/// Even ids in zone-a, odd ones in zone-b: two devlets stand for two zones.
fn broker(id: i32, roles: &[&str]) -> serde_json::Value {
    let rack = if id % 2 == 0 { "zone-a" } else { "zone-b" };
    json!({"id": id, "configGroup": "default", "roles": roles, "rack": rack})
}

fn brokers_spec(ids: &[i32]) -> serde_json::Value {
    serde_json::Value::Array(
        ids.iter()
            .map(|id| {
                if *id < 3 {
                    broker(*id, &["broker", "controller"])
                } else {
                    broker(*id, &["broker"])
                }
            })
            .collect(),
    )
}

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
            "brokers": brokers_spec(&[0, 1, 2, 3]),
            "listeners": {"external": [{
                "name": "external", "containerPort": 9094,
                "bootstrapPort": 29392, "brokerPortBase": 29400
            }]},
            "envoy": {"replicas": 1},
            // The slowest throttle Kafka advises: the drain takes long enough to replace
            // the operator in the middle of it.
            "rebalance": {"throttleBytesPerSecond": 1048576}
        }
    }))?)
}

async fn set_brokers(client: &Client, ids: &[i32]) -> anyhow::Result<()> {
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"brokers": brokers_spec(ids)}})),
        )
        .await?;
    Ok(())
}

async fn status(client: &Client) -> anyhow::Result<KafkaClusterStatus> {
    support::cluster_status(client, NS, NAME).await
}

async fn broker_pods(client: &Client) -> anyhow::Result<BTreeMap<i32, BrokerPod>> {
    support::broker_pods(client, NS, NAME).await
}

async fn admin(client: &Client) -> anyhow::Result<AdminClient> {
    support::broker_admin(client, NS, NAME).await
}

async fn wait_brokers_ready(client: &Client, ids: &[i32], within: Duration) -> anyhow::Result<()> {
    let want: BTreeSet<i32> = ids.iter().copied().collect();
    wait_for(
        &format!("brokers {ids:?} ready"),
        within,
        Duration::from_secs(1),
        || async {
            let b = broker_pods(client).await.ok()?;
            let ready: BTreeSet<i32> = b.iter().filter(|(_, v)| v.ready).map(|(k, _)| *k).collect();
            (ready == want).then_some(())
        },
    )
    .await
}

async fn create_topic(args: &[&str]) -> anyhow::Result<()> {
    support::create_topic(BOOTSTRAP, args).await
}

/// Replicas and leaders per broker, over every partition of every topic.
async fn counts(
    admin: &AdminClient,
) -> anyhow::Result<(BTreeMap<i32, usize>, BTreeMap<i32, usize>)> {
    let md = admin.metadata(None).await?;
    let (mut replicas, mut leaders) = (BTreeMap::new(), BTreeMap::new());
    for b in &md.brokers {
        replicas.insert(b.id, 0);
        leaders.insert(b.id, 0);
    }
    for t in &md.topics {
        for p in &t.partitions {
            for r in &p.replicas {
                *replicas.entry(*r).or_default() += 1;
            }
            *leaders.entry(p.leader).or_default() += 1;
        }
    }
    Ok((replicas, leaders))
}

fn within_one_of_mean(counts: &BTreeMap<i32, usize>) -> bool {
    let total: usize = counts.values().sum();
    let n = counts.len().max(1);
    let (lo, hi) = (total / n, total.div_ceil(n));
    counts.values().all(|c| *c + 1 >= lo && *c <= hi + 1)
}

/// Every partition with more than one replica has replicas in both zones (Kafka reports each
/// broker's rack from its `broker.rack`).
async fn spans_both_zones(admin: &AdminClient) -> anyhow::Result<bool> {
    let md = admin.metadata(None).await?;
    let rack: BTreeMap<i32, Option<String>> =
        md.brokers.iter().map(|b| (b.id, b.rack.clone())).collect();
    anyhow::ensure!(
        rack.values().all(|r| r.is_some()),
        "every broker has its rack: {rack:?}"
    );
    Ok(md.topics.iter().flat_map(|t| &t.partitions).all(|p| {
        let zones: BTreeSet<&Option<String>> =
            p.replicas.iter().filter_map(|r| rack.get(r)).collect();
        p.replicas.len() < 2 || zones.len() == 2
    }))
}

/// No topic lists throttled replicas and no broker has a throttle rate.
async fn no_throttles(admin: &AdminClient, brokers: &[i32]) -> anyhow::Result<bool> {
    let md = admin.metadata(None).await?;
    for t in &md.topics {
        let entries = admin
            .describe_configs(&ConfigResource::Topic(t.name.clone()))
            .await?;
        if entries.iter().any(|e| {
            e.name.ends_with(".replication.throttled.replicas")
                && e.value.as_deref().is_some_and(|v| !v.is_empty())
        }) {
            return Ok(false);
        }
    }
    for id in brokers {
        let entries = admin.describe_configs(&ConfigResource::Broker(*id)).await?;
        if entries.iter().any(|e| {
            e.name.ends_with(".replication.throttled.rate")
                && e.value
                    .as_deref()
                    .is_some_and(|v| v != i64::MAX.to_string())
        }) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Every partition's replicas (as a set) once the reassignments in flight are done.
async fn assignment_when_done(
    client: &Client,
    leaving: i32,
) -> anyhow::Result<BTreeMap<(String, i32), BTreeSet<i32>>> {
    // The reassignments and the metadata are two answers (the metadata maybe from a broker a
    // moment behind): a partition whose move ended between them still lists its old replicas.
    // Every partition on the leaving broker moves in one batch, so a partition that is not
    // moving and still has a replica there is such a torn read; read again.
    wait_for(
        "a consistent read of the assignment",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let admin = admin(client).await.ok()?;
            let moving: BTreeMap<(String, i32), BTreeSet<i32>> = admin
                .list_partition_reassignments()
                .await
                .ok()?
                .into_iter()
                .map(|r| {
                    let target = r
                        .replicas
                        .iter()
                        .copied()
                        .filter(|b| !r.removing.contains(b))
                        .collect();
                    ((r.topic, r.partition), target)
                })
                .collect();
            let md = admin.metadata(None).await.ok()?;
            let mut out = BTreeMap::new();
            for t in md.topics {
                for p in t.partitions {
                    let key = (t.name.clone(), p.index);
                    let replicas = match moving.get(&key) {
                        Some(target) => target.clone(),
                        None if p.replicas.contains(&leaving) => return None,
                        None => p.replicas.iter().copied().collect(),
                    };
                    out.insert(key, replicas);
                }
            }
            Some(out)
        },
    )
    .await
}

#[tokio::test]
async fn brokers_are_drained_before_removal_and_filled_after_adding() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("scaling")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    let operator_args = |name| OperatorArgs {
        name,
        pod_name: Some(name),
        pid_namespace: false,
        kubeconfig: plane.kubeconfig(),
        namespace: NS,
        pod_namespace: None,
        xds_listen: None,
        xds_address: None,
    };
    let mut operator = OperatorProcess::start(&plane, operator_args("op-1"))?;
    let mut devlets = Vec::new();
    for zone in ["zone-a", "zone-b"] {
        let mut options = DevletOptions::new(zone, logs.data(&format!("devlet-{zone}"))?);
        options.zone = Some(zone.to_string());
        devlets.push(tokio::spawn(devlet::run(client.clone(), options)));
    }
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &cluster()?)
        .await?;
    wait_brokers_ready(&client, &[0, 1, 2, 3], Duration::from_secs(300)).await?;
    wait_for(
        "the cluster Ready",
        Duration::from_secs(120),
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

    create_topic(&[
        "--topic",
        EVENTS,
        "--partitions",
        "6",
        "--replication-factor",
        "3",
    ])
    .await?;
    create_topic(&["--topic", SOLO, "--replica-assignment", "3"]).await?;
    let payload = "x".repeat(1000);
    let solo_input: String = (0..SOLO_RECORDS)
        .map(|i| format!("solo-{i:05}-{payload}\n"))
        .collect();
    let produced = pier_testenv::kcat(
        &["-b", BOOTSTRAP, "-P", "-t", SOLO, "-X", "acks=all"],
        Some(solo_input.as_bytes()),
        Duration::from_secs(120),
    )
    .await?;
    anyhow::ensure!(produced.status.success(), "kcat produce to {SOLO}");

    let producer = VerifiableProducer::start(&logs, BOOTSTRAP, EVENTS)?;
    // A consumer through Envoy for the whole test: everything acked must reach it.
    let consumed = logs.path().join("consumer.out");
    let mut consumer = tokio::process::Command::new(pier_testenv::program("kcat")?)
        .args([
            "-b",
            BOOTSTRAP,
            "-C",
            "-t",
            EVENTS,
            "-o",
            "beginning",
            "-u",
            "-q",
        ])
        .args(["-X", "reconnect.backoff.max.ms=1000"])
        .stdout(std::fs::File::create(&consumed)?)
        .stderr(std::fs::File::create(logs.path().join("consumer.stderr"))?)
        .kill_on_drop(true)
        .spawn()?;
    producer.wait_acked(200).await?;
    let start_pods = broker_pods(&client).await?;

    // 1. Removing two brokers would leave 2, fewer than the replication factor 3: refused,
    // nothing moves, no Pod goes.
    set_brokers(&client, &[0, 1]).await?;
    let refused = wait_for(
        "the removal refused",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async {
            let s = status(&client).await.ok()?;
            s.conditions
                .iter()
                .find(|c| c.type_ == "Degraded" && c.status == "True")
                .filter(|c| c.reason == "RemovalRefused")
                .map(|c| c.message.clone())
        },
    )
    .await?;
    assert!(refused.contains("replication factor 3"), "{refused}");
    let a = admin(&client).await?;
    assert!(
        a.list_partition_reassignments().await?.is_empty(),
        "nothing moves"
    );
    assert_eq!(broker_pods(&client).await?, start_pods, "no Pod touched");
    set_brokers(&client, &[0, 1, 2, 3]).await?;
    wait_for(
        "Degraded cleared",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async {
            let s = status(&client).await.ok()?;
            s.conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.status == "False")
                .then_some(())
        },
    )
    .await?;

    // 2. Remove broker 3: it drains first. The operator is SIGKILLed mid-drain; the next one
    // resumes the same moves.
    set_brokers(&client, &[0, 1, 2]).await?;
    let started_at = wait_for(
        "broker 3 Draining",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let s = status(&client).await.ok()?;
            let three = s.brokers.iter().find(|b| b.id == 3)?;
            let moves = s.replica_moves.as_ref()?;
            (three.phase == BrokerPhase::Draining && moves.partitions_left > 0)
                .then(|| moves.started_at.clone())
        },
    )
    .await?;
    assert!(
        broker_pods(&client).await?.contains_key(&3),
        "broker 3's Pod stays while it holds replicas"
    );
    // The moving replicas are throttled (the single replica's ~6 MB take seconds at 1 MiB/s).
    let throttled = admin(&client)
        .await?
        .describe_configs(&ConfigResource::Topic(SOLO.into()))
        .await?
        .into_iter()
        .find(|e| e.name == "leader.replication.throttled.replicas")
        .and_then(|e| e.value)
        .unwrap_or_default();
    assert!(
        throttled.contains("0:3"),
        "solo's leader replica on 3 is throttled: {throttled:?}"
    );
    // What Kafka will hold once the moves in flight are done, read just before the operator
    // dies: the new operator must finish exactly these moves, neither redo nor change them.
    let expected = assignment_when_done(&client, 3).await?;
    let started_moving: BTreeSet<(String, i32)> = admin(&client)
        .await?
        .list_partition_reassignments()
        .await?
        .into_iter()
        .map(|r| (r.topic, r.partition))
        .collect();
    anyhow::ensure!(
        started_moving.contains(&(SOLO.to_string(), 0)),
        "solo moves when the operator dies"
    );
    operator.process.signal(libc::SIGKILL);
    operator.exited(Duration::from_secs(10)).await?;
    // Its replacement listens where the Envoys dial, as a new Pod behind the xDS Service would.
    let operator = OperatorProcess::start(
        &plane,
        OperatorArgs {
            xds_listen: Some(operator.xds),
            ..operator_args("op-2")
        },
    )?;
    wait_for(
        "the new operator leading",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async { operator.leading().await.then_some(()) },
    )
    .await?;
    let still_moving = admin(&client).await?.list_partition_reassignments().await?;
    println!(
        "{} of {} partition moves still in flight when the new operator took over",
        still_moving.len(),
        started_moving.len()
    );
    let resumed = wait_for(
        "the new operator reporting the drain",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let s = status(&client).await.ok()?;
            s.replica_moves.map(|m| m.started_at)
        },
    )
    .await;
    // The move may also have finished meanwhile; if it is still there, it is the same one.
    if let Ok(resumed) = resumed {
        assert_eq!(resumed, started_at, "the same move, resumed");
    }
    wait_for(
        "broker 3's Pod gone and broker 3 unregistered",
        Duration::from_secs(300),
        Duration::from_secs(1),
        || async {
            let pods = broker_pods(&client).await.ok()?;
            if pods.contains_key(&3) {
                return None;
            }
            let cluster = admin(&client).await.ok()?.describe_cluster().await.ok()?;
            cluster.broker(3).is_none().then_some(())
        },
    )
    .await?;
    let now = broker_pods(&client).await?;
    for id in 0..3 {
        assert_eq!(
            now[&id].uid, start_pods[&id].uid,
            "broker {id} was not restarted"
        );
    }
    let a = admin(&client).await?;
    let md = a.metadata(Some(&[SOLO])).await?;
    let solo = &md.topics[0].partitions[0];
    assert!(
        !solo.replicas.contains(&3) && solo.replicas.len() == 1,
        "the single-replica topic lives elsewhere: {solo:?}"
    );
    // Read through Envoy once clients see the new leader (a read may fail while they still
    // look for broker 3); a lost record never comes back, so the wait fails then.
    wait_for(
        "every record of the moved single replica read back",
        Duration::from_secs(90),
        Duration::from_secs(2),
        || async {
            let text = read_topic(BOOTSTRAP, SOLO).await?;
            (text.lines().filter(|l| l.starts_with("solo-")).count() == SOLO_RECORDS).then_some(())
        },
    )
    .await?;
    wait_for(
        "the drain done and its throttles removed",
        Duration::from_secs(120),
        Duration::from_secs(2),
        || async {
            let s = status(&client).await.ok()?;
            if s.replica_moves.is_some() || s.brokers.iter().any(|b| b.id == 3) {
                return None;
            }
            no_throttles(&a, &[0, 1, 2]).await.ok()?.then_some(())
        },
    )
    .await?;

    // Nothing was moved twice or elsewhere: Kafka holds exactly what was in flight at the kill.
    let after = assignment_when_done(&client, 3).await?;
    assert_eq!(
        after, expected,
        "the new operator finished the moves in flight, and moved nothing else"
    );

    // 3. Add brokers 4 and 5: once Ready they are filled until replicas and leaders are
    // within one of the mean; throttles are gone at the end.
    set_brokers(&client, &[0, 1, 2, 4, 5]).await?;
    wait_brokers_ready(&client, &[0, 1, 2, 4, 5], Duration::from_secs(300)).await?;
    wait_for(
        "the rebalance done, counts within one of the mean, no throttles",
        Duration::from_secs(300),
        Duration::from_secs(2),
        || async {
            let s = status(&client).await.ok()?;
            let rebalanced = s.rebalanced_brokers.as_ref()?;
            if s.replica_moves.is_some() || !rebalanced.contains(&4) || !rebalanced.contains(&5) {
                return None;
            }
            let a = admin(&client).await.ok()?;
            let (replicas, leaders) = counts(&a).await.ok()?;
            let balanced = replicas.len() == 5
                && within_one_of_mean(&replicas)
                && within_one_of_mean(&leaders)
                && spans_both_zones(&a).await.ok()?;
            (balanced && no_throttles(&a, &[0, 1, 2, 4, 5]).await.ok()?).then_some(())
        },
    )
    .await?;

    // 4. Every acked record is there, and no send failed during any of it.
    let acked = producer.finish().await?;
    assert!(
        acked.len() > 200,
        "the producer kept producing: {}",
        acked.len()
    );
    let missing = || -> anyhow::Result<Vec<String>> {
        let text = std::fs::read_to_string(&consumed)?;
        let back: BTreeSet<&str> = text.lines().collect();
        Ok(acked
            .iter()
            .filter(|v| !back.contains(v.as_str()))
            .cloned()
            .collect())
    };
    let all_back = wait_for(
        "the consumer to have every acked record",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async { missing().ok()?.is_empty().then_some(()) },
    )
    .await;
    assert!(
        all_back.is_ok(),
        "acked but never consumed: {:?}",
        missing()?.iter().take(20).collect::<Vec<_>>()
    );
    assert!(
        consumer.try_wait()?.is_none(),
        "the consumer ran through all of it"
    );
    Ok(())
}
