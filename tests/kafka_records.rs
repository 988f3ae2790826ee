//! Pier's produce/fetch client against a real Kafka broker.
use std::time::Duration;

use bytes::Bytes;
use pier::kafka::{BrokerConnection, ConnectOptions};
use pier_testenv::{KafkaCluster, LogDir, wait_for};

#[tokio::test]
async fn produce_and_fetch_round_trip() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("kafka-records")?;
    let cluster = KafkaCluster::start(&logs, 1).await?;
    let addr = cluster.nodes()[0].broker_addr();
    let mut conn = BrokerConnection::connect(&addr, ConnectOptions::default()).await?;
    conn.create_topic("records", 1, 1).await?;
    let md = wait_for(
        "a leader",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let mut c = BrokerConnection::connect(&addr, ConnectOptions::default())
                .await
                .ok()?;
            let md = c.metadata(Some(&["records"])).await.ok()?;
            (md.topic("records")?.partitions.first()?.leader >= 0).then_some(md)
        },
    )
    .await?;
    let topic = md.topic_ref("records").expect("topic");
    let values: Vec<Bytes> = (0..2500).map(|i| Bytes::from(format!("v{i}"))).collect();
    assert_eq!(conn.produce(&topic, 0, &values[..1000]).await?, 0);
    assert_eq!(conn.produce(&topic, 0, &values[1000..]).await?, 1000);
    let mut got = Vec::new();
    while got.len() < values.len() {
        let (records, high) = conn.fetch(&topic, 0, got.len() as i64, 1 << 20).await?;
        assert_eq!(high, 2500);
        assert!(!records.is_empty(), "fetch makes progress");
        got.extend(records.into_iter().map(|(_, v)| v));
    }
    assert_eq!(got, values);
    Ok(())
}
