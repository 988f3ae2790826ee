//! A broker's log directories as it reports them (DescribeLogDirs): where each replica lives
//! and how big it is, for progress of replica moves and for emptying a directory.
use kafka_protocol::messages::DescribeLogDirsRequest;

use super::{BrokerConnection, KafkaError};

/// One replica in one log directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirReplica {
    pub topic: String,
    pub partition: i32,
    /// Bytes on disk.
    pub size: i64,
    /// How far it is behind its leader's log end (a future replica: behind the current one).
    pub offset_lag: i64,
    /// A copy being filled by a move between directories of this broker.
    pub future: bool,
}

/// One log directory of a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDir {
    pub path: String,
    /// The directory's Kafka error code, 0 when it is online (e.g. 56 KAFKA_STORAGE_ERROR for
    /// an offline dir).
    pub error_code: i16,
    pub replicas: Vec<LogDirReplica>,
    /// Capacity and free space (-1 when the broker does not report them).
    pub total_bytes: i64,
    pub usable_bytes: i64,
}

impl BrokerConnection {
    /// Every log directory of the broker this connection is to, with every replica in it.
    pub async fn describe_log_dirs(&mut self) -> Result<Vec<LogDir>, KafkaError> {
        let api = "DescribeLogDirs";
        // `topics: None` asks for every replica.
        let request = DescribeLogDirsRequest::default().with_topics(None);
        let response = self.send(&request).await?;
        KafkaError::check(self.addr(), api, response.error_code, None)?;
        let mut dirs: Vec<LogDir> = response
            .results
            .into_iter()
            .map(|r| {
                let mut replicas: Vec<LogDirReplica> = r
                    .topics
                    .into_iter()
                    .flat_map(|t| {
                        let topic = t.name.0.to_string();
                        t.partitions.into_iter().map(move |p| LogDirReplica {
                            topic: topic.clone(),
                            partition: p.partition_index,
                            size: p.partition_size,
                            offset_lag: p.offset_lag,
                            future: p.is_future_key,
                        })
                    })
                    .collect();
                replicas.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
                LogDir {
                    path: r.log_dir.to_string(),
                    error_code: r.error_code,
                    replicas,
                    total_bytes: r.total_bytes,
                    usable_bytes: r.usable_bytes,
                }
            })
            .collect();
        dirs.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(dirs)
    }
}
