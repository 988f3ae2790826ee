//! Emptying one log dir of a real Kafka broker (JBOD): a single KRaft node with two log dirs,
//! every replica moved off one of them with `plan_log_dir_moves` and AlterReplicaLogDirs,
//! DescribeLogDirs showing it empty, and every record still readable.
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use pier::kafka::{
    AdminClient, AdminOptions, BrokerConnection, ConnectOptions, LogDir, NewTopic, codes,
    dirs_empty, plan_log_dir_moves,
};
use pier_testenv::kafka::KafkaOptions;
use pier_testenv::{KafkaCluster, wait_for};

const TOPIC: &str = "jbod";
const PARTITIONS: i32 = 6;
const RECORDS: usize = 400;
/// Kafka's NOT_LEADER_OR_FOLLOWER.
const NOT_LEADER_OR_FOLLOWER: i16 = 6;

fn options() -> AdminOptions {
    AdminOptions {
        call_timeout: Duration::from_secs(10),
        max_attempts: 4,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        deadline: Duration::from_secs(30),
        ..AdminOptions::default()
    }
}

/// Whether the broker's `reported` path is the directory `configured`.
fn same_dir(reported: &str, configured: &Path) -> bool {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canonical(Path::new(reported)) == canonical(configured)
}

/// The reported path of the configured directory.
fn reported_path(dirs: &[LogDir], configured: &Path) -> anyhow::Result<String> {
    dirs.iter()
        .find(|d| same_dir(&d.path, configured))
        .map(|d| d.path.clone())
        .ok_or_else(|| anyhow::anyhow!("broker does not report {}: {dirs:?}", configured.display()))
}

fn values(partition: i32) -> Vec<Bytes> {
    (0..RECORDS)
        .map(|i| Bytes::from(format!("p{partition}-v{i}-{}", "x".repeat(200))))
        .collect()
}

#[tokio::test]
async fn a_log_dir_is_emptied_and_the_records_stay_readable() -> anyhow::Result<()> {
    let logs = pier_testenv::LogDir::for_current_test("kafka-logdirs")?;
    let cluster = KafkaCluster::start_with(
        &logs,
        KafkaOptions {
            nodes: 1,
            log_dirs: 2,
            ..KafkaOptions::default()
        },
    )
    .await?;
    let node = &cluster.nodes()[0];
    let addr = node.broker_addr();
    let admin = AdminClient::new([(node.id, addr.clone())], options());

    admin
        .create_topic(&NewTopic::new(TOPIC, PARTITIONS, 1))
        .await?;
    let md = wait_for(
        "every partition to have a leader",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let md = admin.metadata(Some(&[TOPIC])).await.ok()?;
            let t = md.topic(TOPIC)?;
            (t.partitions.len() == PARTITIONS as usize
                && t.partitions.iter().all(|p| p.leader >= 0))
            .then_some(md)
        },
    )
    .await?;
    let topic = md
        .topic_ref(TOPIC)
        .ok_or_else(|| anyhow::anyhow!("no topic {TOPIC}"))?;
    // Metadata may name the leader before the broker has made its logs: wait for all of them.
    wait_for(
        "the broker to hold every partition's log",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let dirs = admin.describe_log_dirs(node.id).await.ok()?;
            let logs = dirs
                .iter()
                .flat_map(|d| d.replicas.iter())
                .filter(|r| r.topic == TOPIC && !r.future)
                .count();
            (logs == PARTITIONS as usize).then_some(())
        },
    )
    .await?;
    for p in 0..PARTITIONS {
        // NOT_LEADER_OR_FOLLOWER appends nothing: try again until the broker leads.
        let batch = values(p);
        wait_for(
            &format!("producing to partition {p}"),
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                let (addr, topic, batch) = (&addr, &topic, &batch);
                async move {
                    let mut conn =
                        match BrokerConnection::connect(addr, ConnectOptions::default()).await {
                            Ok(c) => c,
                            Err(e) => return Some(Err(e)),
                        };
                    match conn.produce(topic, p, batch).await {
                        Ok(_) => Some(Ok(())),
                        Err(e) if e.code() == Some(NOT_LEADER_OR_FOLLOWER) => None,
                        Err(e) => Some(Err(e)),
                    }
                }
            },
        )
        .await??;
    }

    // The broker spreads new partitions over its dirs: dir A (the second, without the metadata
    // log) holds some of them.
    let dirs = admin.describe_log_dirs(node.id).await?;
    let a = reported_path(&dirs, &node.log_dirs[1])?;
    let b = reported_path(&dirs, &node.log_dirs[0])?;
    let on_a: Vec<(String, i32)> = dirs
        .iter()
        .filter(|d| d.path == a)
        .flat_map(|d| d.replicas.iter().map(|r| (r.topic.clone(), r.partition)))
        .collect();
    assert!(!on_a.is_empty(), "dir A holds replicas to move: {dirs:#?}");
    assert!(dirs.iter().all(|d| d.error_code == 0), "{dirs:#?}");
    let leaving = vec![a.clone()];
    assert!(!dirs_empty(&dirs, &leaving));

    // A destination the broker does not have is refused per partition.
    let (t0, p0) = on_a[0].clone();
    let refused = admin
        .alter_replica_log_dirs(node.id, &[("/no/such/dir".to_string(), t0.clone(), p0)])
        .await?;
    assert_eq!(refused.len(), 1);
    let code = refused[0].2.as_ref().err().and_then(|e| e.code());
    assert_eq!(code, Some(codes::LOG_DIR_NOT_FOUND), "{refused:?}");

    let plan = plan_log_dir_moves(&dirs, &leaving).map_err(anyhow::Error::msg)?;
    let planned: Vec<(String, i32)> = plan
        .moves
        .iter()
        .map(|m| (m.topic.clone(), m.partition))
        .collect();
    assert_eq!(planned, on_a, "every replica on A, nothing else");
    assert!(plan.moves.iter().all(|m| m.dest == b), "{plan:?}");
    assert!(plan.bytes > 0, "{plan:?}");

    let outcomes = admin
        .alter_replica_log_dirs(node.id, &plan.requests())
        .await?;
    assert_eq!(outcomes.len(), plan.moves.len());
    for (topic, partition, result) in &outcomes {
        assert!(result.is_ok(), "{topic}-{partition}: {result:?}");
    }

    let dirs = wait_for(
        "log dir A to hold no replica and no copy",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let dirs = admin.describe_log_dirs(node.id).await.ok()?;
            dirs_empty(&dirs, &leaving).then_some(dirs)
        },
    )
    .await?;
    let on_b: Vec<i32> = dirs
        .iter()
        .filter(|d| d.path == b)
        .flat_map(|d| d.replicas.iter())
        .filter(|r| r.topic == TOPIC && !r.future)
        .map(|r| r.partition)
        .collect();
    assert_eq!(on_b, (0..PARTITIONS).collect::<Vec<_>>(), "{dirs:#?}");
    assert_eq!(
        plan_log_dir_moves(&dirs, &leaving).map_err(anyhow::Error::msg)?,
        Default::default(),
        "nothing left to move"
    );

    // Every record is still there, in order.
    let mut conn = BrokerConnection::connect(&addr, ConnectOptions::default()).await?;
    for p in 0..PARTITIONS {
        let want = values(p);
        let mut got = Vec::new();
        while got.len() < want.len() {
            let (records, high) = conn.fetch(&topic, p, got.len() as i64, 1 << 20).await?;
            assert_eq!(high, RECORDS as i64, "partition {p}");
            assert!(!records.is_empty(), "fetch makes progress on partition {p}");
            got.extend(records.into_iter().map(|(_, v)| v));
        }
        assert_eq!(got, want, "partition {p}");
    }
    Ok(())
}
