//! What a Metadata answer says about a cluster, in Pier's own types, and the admin calls that
//! read or shape it (Metadata, CreateTopics).
use kafka_protocol::messages::{
    CreateTopicsRequest, MetadataRequest, MetadataResponse, TopicName,
    create_topics_request::CreatableTopic, metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::StrBytes;

use super::{BrokerConnection, KafkaError};

/// A broker as the cluster advertises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// One partition's replica placement and health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub index: i32,
    /// -1 when the partition has no leader (offline).
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
    pub error_code: i16,
}

/// One topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: uuid::Uuid,
    pub internal: bool,
    pub error_code: i16,
    pub partitions: Vec<PartitionInfo>,
}

/// A cluster as one broker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMetadata {
    pub cluster_id: Option<String>,
    /// -1 when the broker knows no controller.
    pub controller_id: i32,
    pub brokers: Vec<BrokerInfo>,
    pub topics: Vec<TopicInfo>,
}

impl From<MetadataResponse> for ClusterMetadata {
    fn from(r: MetadataResponse) -> Self {
        let mut brokers: Vec<BrokerInfo> = r
            .brokers
            .into_iter()
            .map(|b| BrokerInfo {
                id: b.node_id.0,
                host: b.host.to_string(),
                port: b.port,
                rack: b.rack.map(|r| r.to_string()),
            })
            .collect();
        brokers.sort_by_key(|b| b.id);
        let mut topics: Vec<TopicInfo> = r
            .topics
            .into_iter()
            .map(|t| {
                let mut partitions: Vec<PartitionInfo> = t
                    .partitions
                    .into_iter()
                    .map(|p| PartitionInfo {
                        index: p.partition_index,
                        leader: p.leader_id.0,
                        replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                        isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                        offline_replicas: p.offline_replicas.iter().map(|b| b.0).collect(),
                        error_code: p.error_code,
                    })
                    .collect();
                partitions.sort_by_key(|p| p.index);
                TopicInfo {
                    name: t.name.map(|n| n.0.to_string()).unwrap_or_default(),
                    id: t.topic_id,
                    internal: t.is_internal,
                    error_code: t.error_code,
                    partitions,
                }
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        ClusterMetadata {
            cluster_id: r.cluster_id.map(|c| c.to_string()),
            controller_id: r.controller_id.0,
            brokers,
            topics,
        }
    }
}

impl ClusterMetadata {
    /// How produce and fetch name the topic.
    pub fn topic_ref(&self, name: &str) -> Option<super::TopicRef> {
        self.topic(name).map(|t| super::TopicRef {
            name: t.name.clone(),
            id: t.id,
        })
    }

    /// The named topic, if the answer has it.
    pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.iter().find(|t| t.name == name)
    }
}

impl BrokerConnection {
    /// Reads cluster metadata: all topics when `topics` is `None`, else just those named.
    /// Never creates topics.
    pub async fn metadata(
        &mut self,
        topics: Option<&[&str]>,
    ) -> Result<ClusterMetadata, KafkaError> {
        let request = MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|n| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(n.to_string()))))
                    })
                    .collect()
            }));
        Ok(self.send(&request).await?.into())
    }

    /// Creates one topic and waits (up to the request timeout) for the controller to accept it.
    pub async fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
    ) -> Result<(), KafkaError> {
        let timeout_ms = 30_000;
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(timeout_ms)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name.to_string())))
                    .with_num_partitions(partitions)
                    .with_replication_factor(replication_factor),
            ]);
        let response = self.send(&request).await?;
        let result = response.topics.first().ok_or_else(|| KafkaError::Decode {
            addr: self.addr().to_string(),
            api: "CreateTopics".to_string(),
            message: format!("no result for topic {name}"),
        })?;
        if result.error_code != 0 {
            return Err(KafkaError::broker(
                self.addr(),
                "CreateTopics",
                result.error_code,
                result.error_message.as_ref().map(|m| m.to_string()),
            ));
        }
        Ok(())
    }
}
