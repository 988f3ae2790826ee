//! Pier's `AdminClient` against real KRaft clusters: a 3-node static quorum (combined
//! broker+controller nodes), whose phases run in order, the one that stops a broker last; and
//! a dynamic (KIP-853) quorum that a controller-only node joins and leaves, with feature
//! levels read and changed.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use pier::kafka::{
    AdminClient, AdminOptions, ConfigClasses, ConfigEntry, ConfigOp, ConfigResource, ConfigSource,
    DescribeConfigsOptions, FeatureUpdate, KRAFT_VERSION_FEATURE, KafkaError,
    METADATA_VERSION_FEATURE, NewTopic, QuorumInfo, RaftEndpoint, Reassignment, UpdateMode, codes,
    random_directory_id,
};
use pier_testenv::kafka::{CONTROLLER_PORT, KafkaOptions};
use pier_testenv::{KafkaCluster, LogDir, wait_for};

const WAIT: Duration = Duration::from_secs(30);
const EVERY: Duration = Duration::from_millis(200);

fn node_addrs(cluster: &KafkaCluster) -> BTreeMap<i32, String> {
    cluster
        .nodes()
        .iter()
        .map(|n| (n.id, n.broker_addr()))
        .collect()
}

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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn entry<'a>(entries: &'a [ConfigEntry], key: &str) -> Option<&'a ConfigEntry> {
    entries.iter().find(|e| e.name == key)
}

/// `key` as broker `id` reports it: (value, source).
async fn broker_value(
    admin: &AdminClient,
    id: i32,
    key: &str,
) -> Result<Option<(Option<String>, ConfigSource)>, KafkaError> {
    let entries = admin
        .describe_configs_with(
            &ConfigResource::Broker(id),
            &DescribeConfigsOptions::keys(&[key]),
        )
        .await?;
    Ok(entry(&entries, key).map(|e| (e.value.clone(), e.source)))
}

/// Waits until every broker in `ids` reports `key` with this value and source.
async fn wait_for_brokers(
    admin: &AdminClient,
    ids: &[i32],
    key: &str,
    want: (Option<&str>, ConfigSource),
) -> anyhow::Result<()> {
    let what = format!("brokers {ids:?} to report {key} = {want:?}");
    wait_for(&what, WAIT, EVERY, || async move {
        for id in ids {
            let (value, source) = broker_value(admin, *id, key).await.ok()??;
            if (value.as_deref(), source) != want {
                return None;
            }
        }
        Some(())
    })
    .await
}

#[tokio::test]
async fn admin_client_against_a_real_cluster() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("kafka-admin")?;
    let mut cluster = KafkaCluster::start(&logs, 3).await?;
    let admin = AdminClient::new(node_addrs(&cluster), options());
    let classes = ConfigClasses::for_version("4.1");

    describe_cluster(&admin, &cluster)
        .await
        .context("describe_cluster")?;
    describe_quorum(&admin).await.context("describe_quorum")?;
    describe_configs(&admin).await.context("describe_configs")?;
    cluster_wide_config(&admin, &classes)
        .await
        .context("cluster-wide config")?;
    per_broker_config(&admin, &classes)
        .await
        .context("per-broker config")?;
    create_and_delete_topics(&admin)
        .await
        .context("create/delete topics")?;
    preferred_leaders(&admin).await.context("elect_leaders")?;
    stopped_broker(&admin, &mut cluster)
        .await
        .context("stopped broker")?;
    Ok(())
}

async fn describe_cluster(admin: &AdminClient, cluster: &KafkaCluster) -> anyhow::Result<()> {
    let d = admin.describe_cluster().await?;
    assert_eq!(d.cluster_id, cluster.cluster_id());
    let brokers: Vec<(i32, bool)> = d.brokers.iter().map(|b| (b.id, b.fenced)).collect();
    assert_eq!(brokers, [(1, false), (2, false), (3, false)], "{d:?}");
    assert!(d.brokers.iter().all(|b| b.port == 9092), "{d:?}");
    Ok(())
}

async fn describe_quorum(admin: &AdminClient) -> anyhow::Result<()> {
    let q = wait_for("every voter caught up", WAIT, EVERY, || async move {
        let q = admin.describe_quorum().await.ok()?;
        let now = now_ms();
        let caught_up = q
            .voters
            .iter()
            .all(|v| v.last_caught_up_timestamp.is_some_and(|t| now - t < 10_000));
        caught_up.then_some(q)
    })
    .await?;
    let voters: Vec<i32> = q.voters.iter().map(|v| v.replica_id).collect();
    assert_eq!(voters, [1, 2, 3], "{q:?}");
    assert!(q.voter(q.leader_id).is_some(), "leader among voters: {q:?}");
    assert!(q.leader_epoch > 0 && q.high_watermark > 0, "{q:?}");
    let leader = q.voter(q.leader_id).context("leader")?;
    assert!(leader.log_end_offset >= q.high_watermark, "{q:?}");
    let features = admin.features().await?;
    assert_eq!(
        features.level(KRAFT_VERSION_FEATURE),
        0,
        "a static quorum: {features:?}"
    );
    Ok(())
}

async fn describe_configs(admin: &AdminClient) -> anyhow::Result<()> {
    for id in [1, 2, 3] {
        let entries = admin.describe_configs(&ConfigResource::Broker(id)).await?;
        let node_id = entry(&entries, "node.id").context("node.id")?;
        assert_eq!(node_id.value.as_deref(), Some(id.to_string().as_str()));
        assert!(node_id.read_only);
        assert_eq!(node_id.source, ConfigSource::StaticBrokerConfig);
        assert!(entries.len() > 200, "every config: {}", entries.len());
    }

    // num.io.threads: static (the test support sets 2) over Kafka's default (8).
    let threads = admin
        .describe_configs_with(
            &ConfigResource::Broker(1),
            &DescribeConfigsOptions {
                keys: Some(vec!["num.io.threads".into()]),
                include_synonyms: true,
            },
        )
        .await?;
    assert_eq!(threads.len(), 1, "{threads:?}");
    let synonyms: Vec<(Option<&str>, ConfigSource)> = threads[0]
        .synonyms
        .iter()
        .map(|s| (s.value.as_deref(), s.source))
        .collect();
    assert_eq!(
        synonyms,
        [
            (Some("2"), ConfigSource::StaticBrokerConfig),
            (Some("8"), ConfigSource::DefaultConfig)
        ],
        "{threads:?}"
    );

    // The cluster default holds only what was set dynamically.
    let defaults = admin
        .describe_configs(&ConfigResource::BrokerDefault)
        .await?;
    assert!(
        defaults
            .iter()
            .all(|e| e.source == ConfigSource::DynamicDefaultBrokerConfig),
        "{defaults:?}"
    );

    // A topic created with a config of its own.
    let topic = ConfigResource::Topic("admin-configs".into());
    admin
        .create_topic(&NewTopic::new("admin-configs", 1, 3).with_config("min.insync.replicas", "2"))
        .await?;
    let entries = admin.describe_configs(&topic).await?;
    let min_isr = entry(&entries, "min.insync.replicas").context("min.insync.replicas")?;
    assert_eq!(
        (min_isr.value.as_deref(), min_isr.source),
        (Some("2"), ConfigSource::DynamicTopicConfig)
    );
    let ops = [ConfigOp::set("retention.ms", "3600000")];
    admin.incremental_alter_configs(&topic, &ops, true).await?;
    admin.incremental_alter_configs(&topic, &ops, false).await?;
    wait_for("topic retention.ms", WAIT, EVERY, || {
        let topic = topic.clone();
        async move {
            let entries = admin.describe_configs(&topic).await.ok()?;
            let e = entry(&entries, "retention.ms")?;
            (e.value.as_deref() == Some("3600000")).then_some(())
        }
    })
    .await?;
    Ok(())
}

async fn cluster_wide_config(admin: &AdminClient, classes: &ConfigClasses) -> anyhow::Result<()> {
    let key = "log.cleaner.threads";
    assert_eq!(classes.lookup(key), Some(UpdateMode::ClusterWide));
    let default = ConfigResource::BrokerDefault;
    let all = [1, 2, 3];
    wait_for_brokers(admin, &all, key, (Some("1"), ConfigSource::DefaultConfig)).await?;

    // A value Kafka cannot parse: refused at once, with Kafka's message.
    let started = Instant::now();
    let err = admin
        .incremental_alter_configs(&default, &[ConfigOp::set(key, "many")], true)
        .await
        .expect_err("not a number");
    assert!(!err.is_retriable(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "not retried");
    let text = err.to_string();
    assert!(
        text.contains("IncrementalAlterConfigs") && text.contains(key),
        "{text}"
    );

    admin
        .incremental_alter_configs(&default, &[ConfigOp::set(key, "2")], true)
        .await?;
    let defaults = admin.describe_configs(&default).await?;
    assert!(
        entry(&defaults, key).is_none(),
        "validate_only changes nothing"
    );

    admin
        .incremental_alter_configs(&default, &[ConfigOp::set(key, "2")], false)
        .await?;
    wait_for_brokers(
        admin,
        &all,
        key,
        (Some("2"), ConfigSource::DynamicDefaultBrokerConfig),
    )
    .await?;
    let defaults = admin.describe_configs(&default).await?;
    assert_eq!(
        entry(&defaults, key).and_then(|e| e.value.as_deref()),
        Some("2")
    );

    admin
        .incremental_alter_configs(&default, &[ConfigOp::delete(key)], false)
        .await?;
    wait_for_brokers(admin, &all, key, (Some("1"), ConfigSource::DefaultConfig)).await?;
    Ok(())
}

async fn per_broker_config(admin: &AdminClient, classes: &ConfigClasses) -> anyhow::Result<()> {
    let key = "sasl.kerberos.service.name";
    assert_eq!(classes.lookup(key), Some(UpdateMode::PerBroker));
    let set = [ConfigOp::set(key, "pier")];

    let err = admin
        .incremental_alter_configs(&ConfigResource::BrokerDefault, &set, true)
        .await
        .expect_err("per-broker key at the cluster default");
    assert_eq!(err.code(), Some(codes::INVALID_REQUEST), "{err}");
    assert!(
        err.broker_message()
            .is_some_and(|m| m.contains("broker id must be specified")),
        "{err}"
    );

    let broker2 = ConfigResource::Broker(2);
    admin
        .incremental_alter_configs(&broker2, &set, true)
        .await?;
    admin
        .incremental_alter_configs(&broker2, &set, false)
        .await?;
    wait_for_brokers(
        admin,
        &[2],
        key,
        (Some("pier"), ConfigSource::DynamicBrokerConfig),
    )
    .await?;
    for other in [1, 3] {
        let (value, source) = broker_value(admin, other, key).await?.context(key)?;
        assert_ne!(source, ConfigSource::DynamicBrokerConfig, "broker {other}");
        assert_ne!(value.as_deref(), Some("pier"), "broker {other}");
    }

    admin
        .incremental_alter_configs(&broker2, &[ConfigOp::delete(key)], false)
        .await?;
    wait_for(
        &format!("{key} gone from broker 2"),
        WAIT,
        EVERY,
        || async move {
            let (_, source) = broker_value(admin, 2, key).await.ok()??;
            (source != ConfigSource::DynamicBrokerConfig).then_some(())
        },
    )
    .await?;
    Ok(())
}

async fn create_and_delete_topics(admin: &AdminClient) -> anyhow::Result<()> {
    let name = "admin-topic";
    admin.create_topic(&NewTopic::new(name, 3, 3)).await?;
    wait_for("3 partitions with leaders", WAIT, EVERY, || async move {
        let md = admin.metadata(Some(&[name])).await.ok()?;
        let t = md.topic(name)?;
        (t.partitions.len() == 3 && t.partitions.iter().all(|p| p.leader >= 0)).then_some(())
    })
    .await?;

    let out = admin
        .create_topics(&[
            NewTopic::new(name, 3, 3),
            NewTopic::new("admin-too-many-replicas", 1, 5),
        ])
        .await?;
    assert_eq!(
        out[0].result.as_ref().err().and_then(KafkaError::code),
        Some(codes::TOPIC_ALREADY_EXISTS),
        "{out:?}"
    );
    let rf = out[1]
        .result
        .as_ref()
        .expect_err("replication factor 5 of 3 brokers");
    assert!(!rf.is_retriable(), "{rf}");
    assert!(rf.to_string().contains("admin-too-many-replicas"), "{rf}");

    let out = admin.delete_topics(&[name]).await?;
    assert!(out[0].result.is_ok(), "{out:?}");
    wait_for("the topic gone", WAIT, EVERY, || async move {
        let md = admin.metadata(None).await.ok()?;
        md.topic(name).is_none().then_some(())
    })
    .await?;
    let out = admin.delete_topics(&[name]).await?;
    assert_eq!(
        out[0].result.as_ref().err().and_then(KafkaError::code),
        Some(codes::UNKNOWN_TOPIC_OR_PARTITION),
        "{out:?}"
    );
    Ok(())
}

async fn preferred_leaders(admin: &AdminClient) -> anyhow::Result<()> {
    let name = "admin-leaders";
    admin.create_topic(&NewTopic::new(name, 1, 3)).await?;
    let replicas = wait_for("a leader and a full ISR", WAIT, EVERY, || async move {
        let md = admin.metadata(Some(&[name])).await.ok()?;
        let p = md.topic(name)?.partitions.first()?.clone();
        (p.leader >= 0 && p.isr.len() == 3).then_some(p.replicas)
    })
    .await?;

    // Same replicas, another order: another replica becomes the preferred leader, while the
    // current leader stays.
    let rotated = vec![replicas[1], replicas[2], replicas[0]];
    admin
        .alter_partition_reassignments(&[Reassignment {
            topic: name.into(),
            partition: 0,
            replicas: rotated.clone(),
        }])
        .await?;
    let rotated = &rotated;
    wait_for("the new replica order", WAIT, EVERY, || async move {
        if !admin.list_partition_reassignments().await.ok()?.is_empty() {
            return None;
        }
        let md = admin.metadata(Some(&[name])).await.ok()?;
        let p = md.topic(name)?.partitions.first()?.clone();
        (p.replicas == *rotated && p.isr.len() == 3).then_some(())
    })
    .await?;

    let out = admin.elect_leaders(Some(&[(name.to_string(), 0)])).await?;
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].result.is_ok(), "{out:?}");
    wait_for("the preferred replica leads", WAIT, EVERY, || async move {
        let md = admin.metadata(Some(&[name])).await.ok()?;
        let p = md.topic(name)?.partitions.first()?.clone();
        (p.leader == rotated[0]).then_some(())
    })
    .await?;

    // Everywhere: nothing left to move is a success, not ELECTION_NOT_NEEDED.
    let all = admin.elect_leaders(None).await?;
    assert!(all.iter().all(|o| o.result.is_ok()), "{all:?}");
    let again = admin.elect_leaders(Some(&[(name.to_string(), 0)])).await?;
    assert!(again[0].result.is_ok(), "{again:?}");
    admin.elect_preferred_leaders().await?;
    Ok(())
}

async fn stopped_broker(admin: &AdminClient, cluster: &mut KafkaCluster) -> anyhow::Result<()> {
    // Node 1 is the first the client tries for "any node" calls and holds a cached
    // connection.
    admin.describe_cluster().await?;
    let addr1 = cluster.node(1)?.broker_addr();
    cluster.stop_node(1)?;

    let started = Instant::now();
    let err = admin
        .describe_configs(&ConfigResource::Broker(1))
        .await
        .expect_err("broker 1 is down");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded retries"
    );
    assert!(err.is_retriable(), "{err}");
    assert_eq!(err.addr(), Some(addr1.as_str()), "{err}");
    assert!(err.to_string().contains(&addr1), "{err}");
    let err = admin
        .incremental_alter_configs(
            &ConfigResource::Broker(1),
            &[ConfigOp::set("sasl.kerberos.service.name", "x")],
            true,
        )
        .await
        .expect_err("broker 1 is down");
    assert_eq!(err.addr(), Some(addr1.as_str()), "{err}");

    // Calls any node may answer still work.
    let d = wait_for("broker 1 fenced or gone", WAIT, EVERY, || async move {
        let d = admin.describe_cluster().await.ok()?;
        d.broker(1).is_none_or(|b| b.fenced).then_some(d)
    })
    .await?;
    for id in [2, 3] {
        assert!(d.broker(id).is_some_and(|b| !b.fenced), "{d:?}");
    }
    admin.metadata(None).await?;
    admin.describe_configs(&ConfigResource::Broker(2)).await?;
    admin
        .describe_configs(&ConfigResource::BrokerDefault)
        .await?;
    wait_for(
        "a quorum leader among the live voters",
        WAIT,
        EVERY,
        || async move {
            let q = admin.describe_quorum().await.ok()?;
            [2, 3].contains(&q.leader_id).then_some(())
        },
    )
    .await?;
    Ok(())
}

/// A dynamic quorum: one combined node (the only initial voter) and one controller-only
/// node started later, which joins as an observer, is made a voter and removed again.
#[tokio::test]
async fn dynamic_quorum_membership_and_features() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("kafka-dynamic-quorum")?;
    let mut cluster = KafkaCluster::start_with(
        &logs,
        KafkaOptions {
            nodes: 1,
            dynamic_quorum: true,
            spare_controllers: 1,
            ..KafkaOptions::default()
        },
    )
    .await?;
    let admin = &AdminClient::new([(1, cluster.node(1)?.broker_addr())], options());

    let q = wait_for("a quorum leader", WAIT, EVERY, || async move {
        let q = admin.describe_quorum().await.ok()?;
        (q.leader_id == 1).then_some(q)
    })
    .await?;
    let node1 = cluster.node(1)?;
    assert_eq!(voter_ids(&q), [1], "{q:?}");
    let dir1 = node1.directory_id()?;
    assert_eq!(
        q.voter(1).and_then(|v| v.directory_id.as_deref()),
        Some(dir1.as_str())
    );
    assert_eq!(
        q.voter_endpoints.get(&1),
        Some(&endpoints(node1.ip)),
        "{q:?}"
    );

    features(admin).await.context("features")?;

    cluster.start_node(2).await?;
    let node2 = cluster.node(2)?;
    let dir2 = node2.directory_id()?;
    membership(admin, cluster.cluster_id(), 2, &dir2, &endpoints(node2.ip))
        .await
        .context("voter membership")?;
    Ok(())
}

fn voter_ids(q: &QuorumInfo) -> Vec<i32> {
    q.voters.iter().map(|v| v.replica_id).collect()
}

fn endpoints(ip: std::net::Ipv4Addr) -> Vec<RaftEndpoint> {
    vec![RaftEndpoint {
        name: "CONTROLLER".into(),
        host: ip.to_string(),
        port: CONTROLLER_PORT,
    }]
}

async fn membership(
    admin: &AdminClient,
    cluster_id: &str,
    id: i32,
    dir: &str,
    listeners: &[RaftEndpoint],
) -> anyhow::Result<()> {
    // The new controller fetches as an observer, under its directory id, and catches up.
    wait_for(
        "the new controller caught up as an observer",
        WAIT,
        EVERY,
        || async move {
            let q = admin.describe_quorum().await.ok()?;
            let o = q.observer(id)?;
            (o.directory_id.as_deref() == Some(dir)
                && o.last_caught_up_timestamp.is_some()
                && o.log_end_offset >= q.high_watermark)
                .then_some(())
        },
    )
    .await?;

    // Not a voter yet: nothing to remove.
    let err = admin
        .remove_raft_voter(Some(cluster_id), id, dir)
        .await
        .expect_err("not a voter");
    assert_eq!(err.code(), Some(codes::VOTER_NOT_FOUND), "{err}");

    // Add it; a retriable refusal (a pending change, "lagging behind") means: read the
    // quorum, then ask again.
    let tries = &AtomicUsize::new(0);
    let added = &AtomicBool::new(false);
    let q = wait_for("the new controller a voter", WAIT, EVERY, || async move {
        let q = match admin.describe_quorum().await {
            Ok(q) => q,
            Err(_) => return None,
        };
        if q.voter(id).is_some() {
            return Some(Ok(q));
        }
        if added.load(Ordering::SeqCst) {
            return None;
        }
        tries.fetch_add(1, Ordering::SeqCst);
        match admin
            .add_raft_voter(Some(cluster_id), id, dir, listeners, 10_000)
            .await
        {
            Ok(()) => {
                added.store(true, Ordering::SeqCst);
                None
            }
            Err(e) if e.is_retriable() => {
                eprintln!("AddRaftVoter, outcome unknown: {e}");
                None
            }
            Err(e) => Some(Err(e)),
        }
    })
    .await??;
    eprintln!(
        "added after {} AddRaftVoter call(s)",
        tries.load(Ordering::SeqCst)
    );
    assert_eq!(voter_ids(&q), [1, id], "{q:?}");
    assert_eq!(
        q.voter(id).and_then(|v| v.directory_id.as_deref()),
        Some(dir)
    );
    assert_eq!(
        q.voter_endpoints.get(&id).map(Vec::as_slice),
        Some(listeners)
    );
    assert!(q.observer(id).is_none(), "{q:?}");

    // Kafka's refusals come back with their code, at once.
    let started = Instant::now();
    let err = admin
        .add_raft_voter(None, id, dir, listeners, 10_000)
        .await
        .expect_err("a voter already");
    assert_eq!(err.code(), Some(codes::DUPLICATE_VOTER), "{err}");
    let other_dir = random_directory_id()?;
    let err = admin
        .remove_raft_voter(None, id, &other_dir)
        .await
        .expect_err("another directory id");
    assert_eq!(err.code(), Some(codes::VOTER_NOT_FOUND), "{err}");
    let err = admin
        .add_raft_voter(
            Some("not-this-cluster-id-at-all"),
            9,
            &other_dir,
            listeners,
            10_000,
        )
        .await
        .expect_err("another cluster");
    assert_eq!(err.code(), Some(codes::INCONSISTENT_CLUSTER_ID), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "not retried");

    let removed = &AtomicBool::new(false);
    wait_for("the controller removed", WAIT, EVERY, || async move {
        let q = match admin.describe_quorum().await {
            Ok(q) => q,
            Err(_) => return None,
        };
        if q.voter(id).is_none() {
            return Some(Ok(q));
        }
        if removed.load(Ordering::SeqCst) {
            return None;
        }
        match admin.remove_raft_voter(Some(cluster_id), id, dir).await {
            Ok(()) => {
                removed.store(true, Ordering::SeqCst);
                None
            }
            Err(e) if e.is_retriable() => {
                eprintln!("RemoveRaftVoter, outcome unknown: {e}");
                None
            }
            Err(e) => Some(Err(e)),
        }
    })
    .await??;
    let q = admin.describe_quorum().await?;
    assert_eq!(voter_ids(&q), [1], "{q:?}");
    assert!(!q.voter_endpoints.contains_key(&id), "{q:?}");
    Ok(())
}

async fn features(admin: &AdminClient) -> anyhow::Result<()> {
    let before = admin.features().await?;
    assert_eq!(
        before.level(KRAFT_VERSION_FEATURE),
        1,
        "dynamic: {before:?}"
    );
    let mv = before.level(METADATA_VERSION_FEATURE);
    // 4.0-IV1 (23) is the oldest level any 4.x release formats with.
    assert!(mv >= 23, "{before:?}");
    let (min, max) = before.supported[METADATA_VERSION_FEATURE];
    assert!(min <= mv && mv <= max, "{before:?}");
    assert!(before.finalized_epoch >= 0, "{before:?}");

    let same = [FeatureUpdate::upgrade(METADATA_VERSION_FEATURE, mv)];
    admin.update_features(&same, true).await?;
    // Asking for the level already finalized changes nothing (what makes retries safe).
    admin.update_features(&same, false).await?;

    // Below 4.0-IV1 a downgrade would drop metadata (ELR records): refused, with Kafka's reason.
    let down = [FeatureUpdate::safe_downgrade(METADATA_VERSION_FEATURE, 22)];
    for validate_only in [true, false] {
        let started = Instant::now();
        let err = admin
            .update_features(&down, validate_only)
            .await
            .expect_err("a lossy downgrade");
        assert_eq!(err.code(), Some(codes::INVALID_UPDATE_VERSION), "{err}");
        assert!(
            err.broker_message()
                .is_some_and(|m| m.contains("downgrade")),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "not retried");
    }
    let after = admin.features().await?;
    assert_eq!(after.level(METADATA_VERSION_FEATURE), mv, "{after:?}");
    Ok(())
}
