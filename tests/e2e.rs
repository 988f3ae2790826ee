//! End to end with real brokers: a KafkaCluster becomes Kafka processes run by the dev node
//! agent, Envoy (also run by it) gets its config over xDS from the operator, and a client that
//! knows only the bootstrap address through Envoy produces and consumes.
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use pier::api::KafkaCluster;
use pier_testenv::devlet::{self, DevletOptions};
use pier_testenv::{ControlPlane, LogDir, wait_for};
use support::{Operator, read_topic, ready};

mod support;

const NS: &str = "default";

/// The one address the client knows: Envoy's bootstrap port on the LoadBalancer address.
const BOOTSTRAP: &str = "127.0.0.1:29092";

/// Produces `records` to topic e2e through Envoy with kcat (acks=all).
async fn produce(records: std::ops::Range<u32>) -> anyhow::Result<()> {
    let text: String = records.map(|i| format!("record-{i}\n")).collect();
    let out = pier_testenv::kcat(
        &["-b", BOOTSTRAP, "-P", "-t", "e2e", "-X", "acks=all"],
        Some(text.as_bytes()),
        Duration::from_secs(60),
    )
    .await?;
    anyhow::ensure!(
        out.status.success(),
        "produce through Envoy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Consumes topic e2e from the beginning through Envoy until it holds `count` records.
async fn consume_all(count: usize) -> anyhow::Result<String> {
    wait_for(
        &format!("all {count} records back through Envoy"),
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async {
            let text = read_topic(BOOTSTRAP, "e2e").await?;
            (text.lines().count() == count).then_some(text)
        },
    )
    .await
}

async fn rust_client_round_trip(n: usize) -> anyhow::Result<()> {
    use pier::kafka::BrokerConnection;
    let mut boot = BrokerConnection::connect(BOOTSTRAP, Default::default()).await?;
    boot.create_topic("e2e-rust", 3, 3).await?;
    let md = wait_for(
        "e2e-rust to have leaders",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let mut c = BrokerConnection::connect(BOOTSTRAP, Default::default())
                .await
                .ok()?;
            let md = c.metadata(Some(&["e2e-rust"])).await.ok()?;
            let t = md.topic("e2e-rust")?;
            (t.partitions.len() == 3 && t.partitions.iter().all(|p| p.leader >= 0)).then_some(md)
        },
    )
    .await?;
    let topic = md.topic_ref("e2e-rust").expect("topic");
    let mut read = std::collections::BTreeSet::new();
    for p in &md.topic("e2e-rust").expect("topic").partitions {
        let leader = md
            .brokers
            .iter()
            .find(|b| b.id == p.leader)
            .expect("leader");
        let addr = format!("{}:{}", leader.host, leader.port);
        assert!(
            addr.starts_with("127.0.0.1:291"),
            "leaders are reached through Envoy: {addr}"
        );
        let mut conn = BrokerConnection::connect(&addr, Default::default()).await?;
        let values: Vec<bytes::Bytes> = (0..n)
            .filter(|i| i % 3 == p.index as usize)
            .map(|i| bytes::Bytes::from(format!("rust-{i}")))
            .collect();
        for chunk in values.chunks(1000) {
            conn.produce(&topic, p.index, chunk).await?;
        }
        let mut offset = 0;
        while offset < values.len() as i64 {
            let (records, _) = conn.fetch(&topic, p.index, offset, 1 << 20).await?;
            anyhow::ensure!(
                !records.is_empty(),
                "fetch made no progress at offset {offset}"
            );
            offset = records.last().map(|(o, _)| o + 1).unwrap_or(offset);
            read.extend(
                records
                    .into_iter()
                    .map(|(_, v)| String::from_utf8_lossy(&v).to_string()),
            );
        }
    }
    assert_eq!(read.len(), n, "every record produced was read back");
    assert!(read.contains(&format!("rust-{}", n - 1)));
    Ok(())
}

#[tokio::test]
async fn a_client_reaches_every_broker_through_envoy() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("e2e")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();

    // The operator's xDS server and controller, in this process.
    let operator = Operator::start(client.clone(), NS).await?;
    let devlet = tokio::spawn(devlet::run(
        client.clone(),
        DevletOptions::new("dev-a", logs.data("devlet")?),
    ));

    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kafkacluster-basic.yaml");
    // The example as it is: its volumes get the devlet's (default) StorageClass.
    let kc: KafkaCluster = serde_yaml_ng::from_str(&std::fs::read_to_string(path)?)?;
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &kc)
        .await?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    wait_for(
        "3 brokers and Envoy to be Ready",
        Duration::from_secs(240),
        Duration::from_secs(1),
        || async {
            let list = pods
                .list(&ListParams::default().labels("kafka.pier.dev/cluster=basic"))
                .await
                .ok()?;
            let ready_count = list.items.iter().filter(|p| ready(p)).count();
            (ready_count == 4).then_some(())
        },
    )
    .await?;

    // A client that knows only the bootstrap address through Envoy sees 3 brokers, all
    // advertised through Envoy.
    let kcat = pier_testenv::program("kcat")?;
    let md = brokers_through_envoy(3, Duration::from_secs(120)).await?;
    let mut addrs: Vec<String> = md["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap_or("").to_string())
        .collect();
    addrs.sort();
    assert_eq!(
        addrs,
        ["127.0.0.1:29100", "127.0.0.1:29101", "127.0.0.1:29102"]
    );

    // Produce (acks=all, RF=3 by the example's defaults) and consume everything back, all
    // through Envoy.
    produce(0..10_000).await?;
    let consumed = consume_all(10_000).await?;
    assert!(consumed.lines().any(|l| l == "record-9999"));

    // The same with Pier's own Rust client: 10,000 records over 3 partitions, each written to
    // and read from its leader at the address the cluster advertises (through Envoy).
    rust_client_round_trip(10_000).await?;

    // A consumer connected through Envoy before the next change keeps consuming across it.
    let envoy_pod = pods
        .list(
            &ListParams::default()
                .labels("kafka.pier.dev/cluster=basic,app.kubernetes.io/component=envoy"),
        )
        .await?
        .items
        .remove(0);
    let envoy_ip = envoy_pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("Envoy pod IP");
    let uptime = || async {
        let info: serde_json::Value = reqwest::get(format!("http://{envoy_ip}:19901/server_info"))
            .await?
            .json()
            .await?;
        let secs = info["uptime_current_epoch"]
            .as_str()
            .unwrap_or("0s")
            .trim_end_matches('s')
            .parse::<f64>()?;
        anyhow::Ok(secs)
    };
    let uptime_before = uptime().await?;
    let mut consumer = tokio::process::Command::new(&kcat)
        // From the beginning: nothing to lose while it joins; only record-100xx lines count.
        .args([
            "-b",
            BOOTSTRAP,
            "-C",
            "-t",
            "e2e",
            "-o",
            "beginning",
            "-u",
            "-q",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = {
        use tokio::io::AsyncBufReadExt;
        tokio::io::BufReader::new(consumer.stdout.take().expect("stdout")).lines()
    };

    // Add a broker: 4 brokers through Envoy, and Envoy is the same process.
    set_brokers(
        &client,
        serde_json::json!([
            {"id": 0, "configGroup": "default"},
            {"id": 1, "configGroup": "default"},
            {"id": 2, "configGroup": "default"},
            // A broker only: the KRaft voters 0, 1, 2 stay as they are.
            {"id": 3, "configGroup": "default", "roles": ["broker"]}
        ]),
    )
    .await?;
    brokers_through_envoy(4, Duration::from_secs(180)).await?;
    let reached = pier_testenv::kcat(
        &["-b", "127.0.0.1:29103", "-L", "-J", "-m", "5"],
        None,
        Duration::from_secs(30),
    )
    .await?;
    assert!(
        reached.status.success(),
        "broker 3 is reachable on its own port through Envoy"
    );
    assert!(uptime().await? > uptime_before, "Envoy was not restarted");
    let envoy_now = pods
        .get(&envoy_pod.metadata.name.clone().unwrap_or_default())
        .await?;
    assert_eq!(envoy_now.metadata.uid, envoy_pod.metadata.uid);

    produce(10_000..10_100).await?;
    let mut seen = 0;
    while seen < 100 {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .map_err(|_| {
                anyhow::anyhow!("the consumer stopped receiving after {seen} records")
            })??;
        match line {
            Some(l) if l.starts_with("record-100") && l.len() == 12 => seen += 1,
            Some(_) => {}
            None => anyhow::bail!("the consumer ended"),
        }
    }
    assert!(
        consumer.try_wait()?.is_none(),
        "the consumer is still running"
    );
    drop(consumer);

    // Remove broker 1: the operator drains it (its replicas move to the other brokers) before
    // its Pod goes; no record is lost and no other broker restarts.
    let broker_pods = ListParams::default()
        .labels("kafka.pier.dev/cluster=basic,app.kubernetes.io/component=broker");
    let uids = |list: Vec<Pod>| -> std::collections::BTreeMap<String, Option<String>> {
        list.into_iter()
            .map(|p| (p.metadata.name.clone().unwrap_or_default(), p.metadata.uid))
            .collect()
    };
    let before = uids(pods.list(&broker_pods).await?.items);
    set_brokers(
        &client,
        serde_json::json!([
            {"id": 0, "configGroup": "default"},
            {"id": 2, "configGroup": "default"},
            {"id": 3, "configGroup": "default", "roles": ["broker"]}
        ]),
    )
    .await?;
    wait_for(
        "broker 1 drained and its Pod gone",
        Duration::from_secs(300),
        Duration::from_secs(1),
        || async {
            let list = pods.list(&broker_pods).await.ok()?;
            (list.items.len() == 3).then_some(())
        },
    )
    .await?;
    let after = uids(pods.list(&broker_pods).await?.items);
    for name in ["basic-broker-0", "basic-broker-2", "basic-broker-3"] {
        assert_eq!(after[name], before[name], "{name} was not restarted");
    }
    // Broker 1 was a KRaft voter: it left the (dynamic) quorum before its Pod went.
    let kcs: Api<KafkaCluster> = Api::namespaced(client.clone(), NS);
    wait_for(
        "voters 0 and 2 in status.quorum",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async {
            let quorum = kcs.get("basic").await.ok()?.status?.quorum?;
            let voters: Vec<i32> = quorum.voters.iter().map(|v| v.id).collect();
            (quorum.mode == pier::api::QuorumMode::Dynamic && voters == [0, 2]).then_some(())
        },
    )
    .await?;
    let everything = consume_all(10_100).await?;
    assert!(everything.lines().any(|l| l == "record-10099"));

    drop(operator);
    devlet.abort();
    Ok(())
}

/// Replaces the cluster's broker list.
async fn set_brokers(client: &kube::Client, brokers: serde_json::Value) -> anyhow::Result<()> {
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .patch(
            "basic",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"brokers": brokers}})),
        )
        .await?;
    Ok(())
}

/// Waits until metadata read through Envoy lists `count` brokers, and returns it.
async fn brokers_through_envoy(
    count: usize,
    within: Duration,
) -> anyhow::Result<serde_json::Value> {
    wait_for(
        &format!("{count} brokers through Envoy"),
        within,
        Duration::from_secs(1),
        || async {
            let out = pier_testenv::kcat(
                &["-b", BOOTSTRAP, "-L", "-J", "-m", "5"],
                None,
                Duration::from_secs(30),
            )
            .await
            .ok()?;
            let md: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (md["brokers"].as_array()?.len() == count).then_some(md)
        },
    )
    .await
}
