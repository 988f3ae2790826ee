//! Config classes and rolling restarts with real brokers run by the dev node agent: dynamic
//! keys change live (no Pod restarted), read-only keys roll the brokers one at a time while an
//! acks=all producer keeps every send, and a broker frozen mid-roll pauses the roll at the
//! failure threshold (kept across an operator restart) until it is back.
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use pier::api::KafkaCluster;
use pier::kafka::{AdminClient, AdminOptions, ConfigResource, ConfigSource};
use pier_testenv::devlet::{self, DevletOptions};
use pier_testenv::{ControlPlane, LogDir, wait_for};
use serde_json::json;
use support::{Operator, read_topic, ready};

mod support;

const NS: &str = "default";
const NAME: &str = "roll";
/// Envoy's bootstrap port for this test (the end-to-end test uses 29092).
const BOOTSTRAP: &str = "127.0.0.1:29192";
const TOPIC: &str = "rolling";

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
            "listeners": {"external": [{
                "name": "external", "containerPort": 9094,
                "bootstrapPort": 29192, "brokerPortBase": 29200
            }]},
            "envoy": {"replicas": 1},
            "rollingUpgrade": {"failureThreshold": 2, "brokerReadyTimeoutSeconds": 120}
        }
    }))?)
}

fn broker_pods() -> ListParams {
    ListParams::default().labels(&format!(
        "kafka.pier.dev/cluster={NAME},app.kubernetes.io/component=broker"
    ))
}

/// Broker Pods by name: (uid, ready, pod IP).
async fn brokers(client: &Client) -> anyhow::Result<BTreeMap<String, (String, bool, String)>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    Ok(pods
        .list(&broker_pods())
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let ip = p
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default();
            (
                p.name_any(),
                (p.metadata.uid.clone().unwrap_or_default(), ready(&p), ip),
            )
        })
        .collect())
}

fn uids(b: &BTreeMap<String, (String, bool, String)>) -> BTreeMap<String, String> {
    b.iter()
        .map(|(n, (u, _, _))| (n.clone(), u.clone()))
        .collect()
}

async fn admin(client: &Client) -> anyhow::Result<AdminClient> {
    support::broker_admin(client, NS, NAME).await
}

/// The value broker `id` reports for `key`, with its source.
async fn broker_config(
    client: &Client,
    id: i32,
    key: &str,
) -> anyhow::Result<(Option<String>, ConfigSource)> {
    let entries = admin(client)
        .await?
        .describe_configs(&ConfigResource::Broker(id))
        .await?;
    let e = entries
        .into_iter()
        .find(|e| e.name == key)
        .ok_or_else(|| anyhow::anyhow!("broker {id} does not report {key}"))?;
    Ok((e.value, e.source))
}

/// Waits until every broker of `ids` reports `key` as `want` says (value, source).
async fn wait_config(
    client: &Client,
    ids: &[i32],
    key: &str,
    what: &str,
    want: impl Fn(Option<&str>, ConfigSource) -> bool,
) -> anyhow::Result<()> {
    wait_for(
        &format!("{key} {what} on brokers {ids:?}"),
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async {
            for id in ids {
                let (v, s) = broker_config(client, *id, key).await.ok()?;
                if !want(v.as_deref(), s) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await
}

/// Replaces the broker list; `broker_2_config` is broker 2's dynamic `config`.
async fn set_broker_2_config(client: &Client, config: serde_json::Value) -> anyhow::Result<()> {
    patch_spec(
        client,
        json!({"spec": {"brokers": [
            {"id": 0, "configGroup": "default"},
            {"id": 1, "configGroup": "default"},
            {"id": 2, "configGroup": "default", "config": config}
        ]}}),
    )
    .await
}

async fn patch_spec(client: &Client, patch: serde_json::Value) -> anyhow::Result<()> {
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .patch(NAME, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

async fn status(client: &Client) -> anyhow::Result<pier::api::KafkaClusterStatus> {
    support::cluster_status(client, NS, NAME).await
}

fn condition(s: &pier::api::KafkaClusterStatus, type_: &str) -> Option<(String, String)> {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Every broker runs its current configuration and no roll is in progress.
async fn wait_settled(client: &Client, within: Duration) -> anyhow::Result<()> {
    wait_for(
        "every broker InSync and no roll in progress",
        within,
        Duration::from_secs(1),
        || async {
            let s = status(client).await.ok()?;
            let all = s.brokers.len() == 3
                && s.brokers
                    .iter()
                    .all(|b| b.configuration_state.as_deref() == Some("InSync"));
            (all && s.rolling_upgrade.is_none()).then_some(())
        },
    )
    .await
}

/// Watches broker Pods until `done` says so; fails if two brokers are ever down together.
/// Returns how many distinct Pods (UIDs) were seen per broker.
async fn watch_roll(
    client: &Client,
    within: Duration,
    done: impl AsyncFn(&BTreeMap<String, (String, bool, String)>) -> bool,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    loop {
        let now = brokers(client).await?;
        let down: Vec<&str> = ["roll-broker-0", "roll-broker-1", "roll-broker-2"]
            .into_iter()
            .filter(|n| !now.get(*n).is_some_and(|(_, ready, _)| *ready))
            .collect();
        anyhow::ensure!(down.len() <= 1, "two brokers down at once: {down:?}");
        for (name, (uid, _, _)) in &now {
            seen.entry(name.clone()).or_default().insert(uid.clone());
        }
        if done(&now).await {
            return Ok(seen.into_iter().map(|(n, u)| (n, u.len())).collect());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the roll did not finish within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A kcat producer writing `seq-<n>` lines at a steady pace, acks=all, idempotent, with a
/// 60 s delivery timeout: a failed delivery is reported on stderr ("Delivery failed") and in
/// the exit status.
struct Producer {
    child: tokio::process::Child,
    stop: tokio::sync::watch::Sender<bool>,
    writer: tokio::task::JoinHandle<anyhow::Result<u64>>,
    /// Lines handed to kcat so far.
    written: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Producer {
    fn start(logs: &LogDir) -> anyhow::Result<Self> {
        let stderr = std::fs::File::create(logs.path().join("producer.stderr"))?;
        let mut child = tokio::process::Command::new(pier_testenv::program("kcat")?)
            .args([
                "-b",
                BOOTSTRAP,
                "-P",
                "-t",
                TOPIC,
                "-X",
                "acks=all",
                "-X",
                "enable.idempotence=true",
                "-X",
                "message.timeout.ms=60000",
                // kcat exits when every broker connection is down at once. With sparse
                // connections librdkafka leaves idle brokers disconnected after their restart,
                // so the third restart of a roll would look like "all down" although two
                // brokers are up: keep a connection to every broker instead.
                "-X",
                "enable.sparse.connections=false",
                "-X",
                "reconnect.backoff.max.ms=1000",
            ])
            .stdin(std::process::Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()?;
        let mut stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("stdin"))?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = written.clone();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut n = 0u64;
            while !*stopped.borrow() {
                stdin.write_all(format!("seq-{n}\n").as_bytes()).await?;
                stdin.flush().await?;
                n += 1;
                counter.store(n, std::sync::atomic::Ordering::Relaxed);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = stopped.changed() => {}
                }
            }
            drop(stdin);
            Ok(n)
        });
        Ok(Producer {
            child,
            stop,
            writer,
            written,
        })
    }

    /// Waits until `more` further lines were handed to kcat.
    async fn wait_written(&self, more: u64) -> anyhow::Result<()> {
        let load = || self.written.load(std::sync::atomic::Ordering::Relaxed);
        let target = load() + more;
        wait_for(
            &format!("the producer to write {more} more records"),
            Duration::from_secs(60),
            Duration::from_millis(50),
            || async { (load() >= target).then_some(()) },
        )
        .await
    }

    /// Stops writing, waits for every record to be delivered; returns how many were sent.
    async fn finish(mut self, logs: &LogDir) -> anyhow::Result<u64> {
        let _ = self.stop.send(true);
        let sent = self.writer.await??;
        let status = tokio::time::timeout(Duration::from_secs(90), self.child.wait()).await??;
        let stderr = std::fs::read_to_string(logs.path().join("producer.stderr"))?;
        anyhow::ensure!(
            status.success() && !stderr.contains("Delivery failed"),
            "the producer saw failed sends ({status}): {stderr}"
        );
        Ok(sent)
    }
}

/// Every `seq-<n>` for n < count is in the topic.
async fn consume_all(count: u64) -> anyhow::Result<()> {
    wait_for(
        &format!("all {count} records back"),
        Duration::from_secs(60),
        Duration::from_secs(2),
        || async {
            let text = read_topic(BOOTSTRAP, TOPIC).await?;
            let got: std::collections::BTreeSet<&str> = text.lines().collect();
            (0..count)
                .all(|n| got.contains(format!("seq-{n}").as_str()))
                .then_some(())
        },
    )
    .await
}

/// The JVM of a broker Pod run by the devlet (its command line holds the Pod's directory).
fn broker_pid(pod: &str, uid: &str) -> anyhow::Result<i32> {
    let needle = format!("{NS}_{pod}_{uid}");
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains(&needle) && cmdline.contains("kafka.Kafka") {
            return Ok(pid);
        }
    }
    anyhow::bail!("no JVM of {pod} found")
}

fn signal(pid: i32, sig: &str) -> anyhow::Result<()> {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()?
        .success();
    anyhow::ensure!(ok, "kill {sig} {pid} failed");
    Ok(())
}

#[tokio::test]
async fn config_classes_and_health_gated_rolling_restarts() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("rolling")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    let mut operator = Operator::start(client.clone(), NS).await?;
    let devlet = tokio::spawn(devlet::run(
        client.clone(),
        DevletOptions::new("dev-a", logs.data("devlet")?),
    ));
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &cluster()?)
        .await?;
    wait_for(
        "3 brokers ready and their live config applied",
        Duration::from_secs(240),
        Duration::from_secs(1),
        || async {
            let b = brokers(&client).await.ok()?;
            (b.len() == 3 && b.values().all(|(_, ready, _)| *ready)).then_some(())
        },
    )
    .await?;
    wait_settled(&client, Duration::from_secs(120)).await?;
    // The cluster-wide min.insync.replicas of the spec is live on every broker.
    for id in 0..3 {
        let (value, source) = broker_config(&client, id, "min.insync.replicas").await?;
        assert_eq!(value.as_deref(), Some("2"));
        assert_eq!(source, ConfigSource::DynamicDefaultBrokerConfig);
    }
    let admin0 = admin(&client).await?;
    admin0
        .create_topic(&pier::kafka::NewTopic::new(TOPIC, 3, 3))
        .await?;
    let start_uids = uids(&brokers(&client).await?);

    // 1. A cluster-wide dynamic key changes live on every broker; no Pod restarts.
    patch_spec(
        &client,
        json!({"spec": {"kafka": {"clusterWideConfig": {"log.retention.ms": "3600000"}}}}),
    )
    .await?;
    wait_config(
        &client,
        &[0, 1, 2],
        "log.retention.ms",
        "= 3600000",
        |v, s| v == Some("3600000") && s == ConfigSource::DynamicDefaultBrokerConfig,
    )
    .await?;
    assert_eq!(
        uids(&brokers(&client).await?),
        start_uids,
        "no Pod restarted"
    );

    // 2. A per-broker key on broker 2 changes only broker 2; removing it deletes it live.
    set_broker_2_config(&client, json!({"log.cleaner.threads": "2"})).await?;
    wait_config(&client, &[2], "log.cleaner.threads", "= 2", |v, s| {
        v == Some("2") && s == ConfigSource::DynamicBrokerConfig
    })
    .await?;
    wait_config(
        &client,
        &[0, 1],
        "log.cleaner.threads",
        "default",
        |v, s| v == Some("1") && s == ConfigSource::DefaultConfig,
    )
    .await?;
    assert_eq!(
        uids(&brokers(&client).await?),
        start_uids,
        "no Pod restarted"
    );
    set_broker_2_config(&client, json!({})).await?;
    wait_config(&client, &[2], "log.cleaner.threads", "deleted", |_, s| {
        s == ConfigSource::DefaultConfig
    })
    .await?;
    wait_settled(&client, Duration::from_secs(60)).await?;

    // 3. A read-only key rolls the brokers one at a time; an acks=all producer on an RF=3,
    // min.insync.replicas=2 topic sees no failed send.
    let producer = Producer::start(&logs)?;
    producer.wait_written(100).await?;
    patch_spec(
        &client,
        json!({"spec": {"kafka": {
            "readOnlyConfig": {"num.partitions": "2"},
            // Not a Kafka config (a plugin's, say): treated as read-only, and said so.
            "clusterWideConfig": {"pier.example.plugin.setting": "x"}
        }}}),
    )
    .await?;
    let seen = watch_roll(&client, Duration::from_secs(420), async |now| {
        now.len() == 3
            && now.values().all(|(_, ready, _)| *ready)
            && uids(now)
                .iter()
                .all(|(name, uid)| start_uids.get(name) != Some(uid))
    })
    .await?;
    assert!(
        seen.values().all(|n| *n >= 2),
        "every broker was restarted: {seen:?}"
    );
    wait_settled(&client, Duration::from_secs(120)).await?;
    producer.wait_written(100).await?;
    let sent = producer.finish(&logs).await?;
    assert!(
        sent > 100,
        "the producer kept producing during the roll ({sent})"
    );
    consume_all(sent).await?;
    let (v, _) = broker_config(&client, 1, "num.partitions").await?;
    assert_eq!(v.as_deref(), Some("2"));

    // 4. Another roll (restart annotation on the cluster). Once the first broker is back,
    // that broker freezes (SIGSTOP): the others' restarts would leave partitions at
    // min.insync.replicas, so the roll blocks, then pauses at the failure threshold (2) with
    // Degraded. An operator restart keeps it paused; thawing the broker resumes the roll.
    let before = brokers(&client).await?;
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"kafka.pier.dev/restart": "2"}}})),
        )
        .await?;
    let first = wait_for(
        "the first broker of the second roll to be back",
        Duration::from_secs(180),
        Duration::from_millis(500),
        || async {
            let now = brokers(&client).await.ok()?;
            now.iter()
                .find(|(name, (uid, ready, _))| *ready && before[*name].0 != *uid)
                .map(|(name, (uid, _, _))| (name.clone(), uid.clone()))
        },
    )
    .await?;
    wait_for(
        "the roll to move past the first broker",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || async {
            let s = status(&client).await.ok()?;
            let restarting = s.rolling_upgrade?.restarting?;
            (format!("roll-broker-{restarting}") != first.0).then_some(())
        },
    )
    .await?;
    let frozen = broker_pid(&first.0, &first.1)?;
    signal(frozen, "-STOP")?;
    let paused = wait_for(
        "the roll to pause at the failure threshold",
        Duration::from_secs(240),
        Duration::from_secs(1),
        || async {
            let s = status(&client).await.ok()?;
            let r = s.rolling_upgrade.clone()?;
            let degraded = condition(&s, "Degraded")?;
            (r.paused && degraded == ("True".into(), "RollPaused".into())).then_some(r)
        },
    )
    .await;
    let paused = match paused {
        Ok(p) => p,
        Err(e) => {
            let _ = signal(frozen, "-CONT");
            return Err(e);
        }
    };
    assert!(paused.failures >= 2, "{paused:?}");
    let during = uids(&brokers(&client).await?);

    // The operator restarts: the pause and the failure count are in status, so it stays paused.
    operator.restart();
    // Several reconciles of the new operator, each of which could have resumed the roll.
    wait_for(
        "the restarted operator to reconcile",
        Duration::from_secs(120),
        Duration::from_millis(100),
        || async { (operator.reconciles() >= 2).then_some(()) },
    )
    .await?;
    let s = status(&client).await?;
    let r = s.rolling_upgrade.clone().unwrap_or_default();
    let still_paused = r.paused && r.failures >= paused.failures;
    let unchanged = uids(&brokers(&client).await?) == during;
    signal(frozen, "-CONT")?;
    assert!(
        still_paused,
        "still paused after an operator restart: {r:?}"
    );
    assert!(unchanged, "no broker restarted while paused");

    // Thawed: the roll resumes by itself and finishes; Degraded clears.
    watch_roll(&client, Duration::from_secs(420), async |now| {
        now.len() == 3
            && now.values().all(|(_, ready, _)| *ready)
            && now.iter().all(|(name, (uid, _, _))| before[name].0 != *uid)
    })
    .await?;
    wait_settled(&client, Duration::from_secs(180)).await?;
    let s = status(&client).await?;
    assert_eq!(condition(&s, "Degraded").map(|c| c.0), Some("False".into()));
    assert!(
        s.config_notices
            .iter()
            .any(|n| n.contains("pier.example.plugin.setting") && n.contains("read-only")),
        "{:?}",
        s.config_notices
    );

    // 5. The restart annotation on one broker's Pod restarts that broker only.
    let before = uids(&brokers(&client).await?);
    Api::<Pod>::namespaced(client.clone(), NS)
        .patch(
            "roll-broker-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"kafka.pier.dev/restart": "now"}}})),
        )
        .await?;
    watch_roll(&client, Duration::from_secs(180), async |now| {
        now.len() == 3
            && now.values().all(|(_, ready, _)| *ready)
            && now.get("roll-broker-2").map(|b| &b.0) != before.get("roll-broker-2")
    })
    .await?;
    wait_settled(&client, Duration::from_secs(120)).await?;
    let after = uids(&brokers(&client).await?);
    for name in ["roll-broker-0", "roll-broker-1"] {
        assert_eq!(after[name], before[name], "{name} was not restarted");
    }

    // 6. A read-only value no broker can start with: the first broker the roll restarts
    // crash-loops. The roll goes no further, the cluster says why in the broker's own words
    // (its log tail), and fixing the spec restarts that broker again at once.
    let before = uids(&brokers(&client).await?);
    patch_spec(
        &client,
        json!({"spec": {"kafka": {"readOnlyConfig": {"socket.request.max.bytes": "not-a-number"}}}}),
    )
    .await?;
    let looping = wait_for(
        "Degraded BrokerCrashLooping",
        Duration::from_secs(300),
        Duration::from_secs(1),
        || async {
            let s = status(&client).await.ok()?;
            s.conditions.into_iter().find(|c| {
                c.type_ == "Degraded" && c.status == "True" && c.reason == "BrokerCrashLooping"
            })
        },
    )
    .await?;
    assert!(
        looping.message.contains("socket.request.max.bytes"),
        "the broker's own words: {}",
        looping.message
    );
    let during = uids(&brokers(&client).await?);
    let restarted: Vec<&String> = during
        .iter()
        .filter(|(name, uid)| before.get(*name) != Some(*uid))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        restarted.len(),
        1,
        "only one broker restarted: {restarted:?}"
    );
    let crashing = restarted[0].clone();
    patch_spec(
        &client,
        json!({"spec": {"kafka": {"readOnlyConfig": {"socket.request.max.bytes": null}}}}),
    )
    .await?;
    watch_roll(&client, Duration::from_secs(300), async |now| {
        now.len() == 3
            && now.values().all(|(_, ready, _)| *ready)
            && now.get(&crashing).map(|b| &b.0) != during.get(&crashing)
    })
    .await?;
    wait_settled(&client, Duration::from_secs(180)).await?;
    let after = uids(&brokers(&client).await?);
    for (name, uid) in &before {
        if *name != crashing {
            assert_eq!(&after[name], uid, "{name} was never restarted");
        }
    }
    let s = status(&client).await?;
    assert_eq!(condition(&s, "Degraded").map(|c| c.0), Some("False".into()));

    drop(operator);
    devlet.abort();
    Ok(())
}

/// Garbage from a "broker": the admin client reports a clear error naming the address and the
/// call, and never panics.
#[tokio::test]
async fn garbage_answers_are_clear_errors() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Closes every connection as soon as a request arrives.
    let closer = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let closer_addr = closer.local_addr()?.to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = closer.accept().await {
            let mut buf = [0u8; 4];
            let _ = s.read(&mut buf).await;
        }
    });
    // Answers every request with a frame of random bytes.
    let babbler = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let babbler_addr = babbler.local_addr()?.to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = babbler.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let junk: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
                    let _ = s.write_all(&(junk.len() as i32).to_be_bytes()).await;
                    let _ = s.write_all(&junk).await;
                }
            });
        }
    });
    let quick = AdminOptions::default();
    for (addr, what) in [(&closer_addr, "closed"), (&babbler_addr, "garbage")] {
        let admin = AdminClient::new(BTreeMap::from([(1, addr.clone())]), quick.clone());
        let err = admin
            .describe_configs(&ConfigResource::Broker(1))
            .await
            .expect_err(what);
        let text = err.to_string();
        assert!(text.contains(addr.as_str()), "{what}: {text}");
    }
    Ok(())
}
