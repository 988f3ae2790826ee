//! What a Metadata answer says about a cluster, in Pier's own types, and the admin calls that
//! read or shape it (Metadata, CreateTopics, DeleteTopics).
//!
//! The broker addresses in a Metadata answer are the advertised ones; Pier's
//! [`AdminClient`](super::AdminClient) never dials them, it is told where each node is.
use std::collections::HashMap;

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, MetadataRequest, MetadataResponse, TopicName,
    metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::StrBytes;

use super::{BrokerConnection, KafkaError};

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker's `num.partitions`.
    pub partitions: i32,
    /// -1: the broker's `default.replication.factor`.
    pub replication_factor: i16,
    /// Topic configs set at creation, e.g. `min.insync.replicas`.
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    pub fn new(name: impl Into<String>, partitions: i32, replication_factor: i16) -> Self {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor,
            configs: Vec::new(),
        }
    }

    /// Adds a topic config.
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.push((key.into(), value.into()));
        self
    }
}

/// What happened to one topic of a CreateTopics or DeleteTopics call.
#[derive(Debug, Clone)]
pub struct TopicOutcome {
    pub name: String,
    pub result: Result<(), KafkaError>,
}

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
        let topic = NewTopic::new(name, partitions, replication_factor);
        let mut outcomes = self.create_topics(std::slice::from_ref(&topic)).await?;
        match outcomes.pop() {
            Some(outcome) => outcome.result,
            None => Err(KafkaError::malformed(
                self.addr(),
                "CreateTopics",
                format!("no result for topic {name}"),
            )),
        }
    }

    /// Creates topics; one outcome per requested topic, in the order given. Fails as a whole
    /// only when there is no usable answer.
    pub async fn create_topics(
        &mut self,
        topics: &[NewTopic],
    ) -> Result<Vec<TopicOutcome>, KafkaError> {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(self.operation_timeout_ms())
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        CreatableTopic::default()
                            .with_name(topic_name(&t.name))
                            .with_num_partitions(t.partitions)
                            .with_replication_factor(t.replication_factor)
                            .with_configs(
                                t.configs
                                    .iter()
                                    .map(|(k, v)| {
                                        CreatableTopicConfig::default()
                                            .with_name(StrBytes::from_string(k.clone()))
                                            .with_value(Some(StrBytes::from_string(v.clone())))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let response = self.send(&request).await?;
        let results = response
            .topics
            .into_iter()
            .map(|r| {
                let message = r.error_message.map(|m| m.to_string());
                (r.name.0.to_string(), (r.error_code, message))
            })
            .collect();
        Ok(self.outcomes("CreateTopics", topics.iter().map(|t| &t.name), results))
    }

    /// Deletes topics by name; one outcome per name, in the order given (a topic that does
    /// not exist is UNKNOWN_TOPIC_OR_PARTITION). Fails as a whole only when there is no usable
    /// answer.
    pub async fn delete_topics(&mut self, names: &[&str]) -> Result<Vec<TopicOutcome>, KafkaError> {
        let mut request =
            DeleteTopicsRequest::default().with_timeout_ms(self.operation_timeout_ms());
        if self.version_for::<DeleteTopicsRequest>()? >= 6 {
            request.topics = names
                .iter()
                .map(|n| DeleteTopicState::default().with_name(Some(topic_name(n))))
                .collect();
        } else {
            request.topic_names = names.iter().map(|n| topic_name(n)).collect();
        }
        let response = self.send(&request).await?;
        let results = response
            .responses
            .into_iter()
            .filter_map(|r| {
                let message = r.error_message.map(|m| m.to_string());
                Some((r.name?.0.to_string(), (r.error_code, message)))
            })
            .collect();
        Ok(self.outcomes("DeleteTopics", names.iter(), results))
    }

    /// Matches per-topic (code, message) answers to the requested names.
    fn outcomes<'a, S: AsRef<str> + 'a>(
        &self,
        api: &str,
        requested: impl Iterator<Item = S>,
        mut results: HashMap<String, (i16, Option<String>)>,
    ) -> Vec<TopicOutcome> {
        requested
            .map(|name| {
                let name = name.as_ref();
                let result = match results.remove(name) {
                    Some((0, _)) => Ok(()),
                    Some((code, message)) => {
                        let message = match message {
                            Some(m) if !m.is_empty() => format!("topic {name}: {m}"),
                            _ => format!("topic {name}"),
                        };
                        Err(KafkaError::broker(self.addr(), api, code, Some(message)))
                    }
                    None => Err(KafkaError::malformed(
                        self.addr(),
                        api,
                        format!("no result for topic {name}"),
                    )),
                };
                TopicOutcome {
                    name: name.to_string(),
                    result,
                }
            })
            .collect()
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}
