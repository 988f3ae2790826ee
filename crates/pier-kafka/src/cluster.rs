//! The cluster as a whole: its brokers (DescribeCluster, UnregisterBroker) and its KRaft
//! controller quorum (DescribeQuorum), in Pier's own types. Any broker answers them (it
//! forwards to the controllers). Changing the quorum is [`crate::quorum`]'s.
use std::collections::BTreeMap;

use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::describe_quorum_response::{
    Node as WireNode, ReplicaState as WireReplicaState,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeQuorumRequest, TopicName, UnregisterBrokerRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::error::codes::BROKER_ID_NOT_REGISTERED;
use super::quorum::{RaftEndpoint, uuid_to_text};
use super::{BrokerConnection, KafkaError};

/// The KRaft metadata log: the topic and partition DescribeQuorum asks about.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// A broker registered with the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterBroker {
    pub id: i32,
    /// As the broker advertises itself (Pier does not dial it).
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Registered but fenced (not serving). Only DescribeCluster v2+ (Kafka 4.0+) lists
    /// fenced brokers at all; older brokers leave them out.
    pub fenced: bool,
}

/// The cluster as DescribeCluster reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    pub cluster_id: String,
    /// The controller id the broker reports (-1 if none). Under KRaft clients cannot reach
    /// the controllers, so this is a broker that forwards to them; the quorum leader is
    /// [`QuorumInfo::leader_id`].
    pub controller_id: i32,
    /// Sorted by id.
    pub brokers: Vec<ClusterBroker>,
}

impl ClusterDescription {
    pub fn broker(&self, id: i32) -> Option<&ClusterBroker> {
        self.brokers.iter().find(|b| b.id == id)
    }
}

/// A voter's or observer's replication state in the metadata log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaState {
    pub replica_id: i32,
    /// The directory id of its metadata log dir (Kafka's text form, see
    /// [`crate::uuid_to_text`]): with the id, what names a replica of the quorum. `None` when
    /// the answer has none (DescribeQuorum before v2, or a zero id).
    pub directory_id: Option<String>,
    pub log_end_offset: i64,
    /// Milliseconds since the epoch of its last fetch from the leader; `None` if unknown.
    pub last_fetch_timestamp: Option<i64>,
    /// When it last caught up to the leader's end offset; `None` if unknown.
    pub last_caught_up_timestamp: Option<i64>,
}

/// The KRaft controller quorum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumInfo {
    /// -1 while there is no leader.
    pub leader_id: i32,
    pub leader_epoch: i32,
    pub high_watermark: i64,
    /// Sorted by id.
    pub voters: Vec<ReplicaState>,
    /// Brokers (and non-voting controllers) replicating the log; sorted by id. Kafka forgets
    /// an observer some minutes after its last fetch.
    pub observers: Vec<ReplicaState>,
    /// The listeners of each voter, by voter id, as the quorum stores them (DescribeQuorum
    /// v2; empty before). Each voter's endpoints are sorted by listener name.
    pub voter_endpoints: BTreeMap<i32, Vec<RaftEndpoint>>,
}

impl QuorumInfo {
    pub fn voter(&self, id: i32) -> Option<&ReplicaState> {
        self.voters.iter().find(|v| v.replica_id == id)
    }

    pub fn observer(&self, id: i32) -> Option<&ReplicaState> {
        self.observers.iter().find(|o| o.replica_id == id)
    }
}

impl BrokerConnection {
    /// The cluster id, the controller and every registered broker, fenced ones included where
    /// the broker supports it (DescribeCluster v2+).
    pub async fn describe_cluster(&mut self) -> Result<ClusterDescription, KafkaError> {
        let version = self.version_for::<DescribeClusterRequest>()?;
        let request = DescribeClusterRequest::default().with_include_fenced_brokers(version >= 2);
        let response = self.send(&request).await?;
        KafkaError::check(
            self.addr(),
            "DescribeCluster",
            response.error_code,
            response.error_message.as_ref(),
        )?;
        let mut brokers: Vec<ClusterBroker> = response
            .brokers
            .into_iter()
            .map(|b| ClusterBroker {
                id: b.broker_id.0,
                host: b.host.to_string(),
                port: b.port,
                rack: b.rack.map(|r| r.to_string()),
                fenced: b.is_fenced,
            })
            .collect();
        brokers.sort_by_key(|b| b.id);
        Ok(ClusterDescription {
            cluster_id: response.cluster_id.to_string(),
            controller_id: response.controller_id.0,
            brokers,
        })
    }

    /// Removes a broker's registration from the cluster metadata (UnregisterBroker; any broker
    /// forwards it to the controller). Only for brokers gone for good: a live broker that is
    /// unregistered keeps running and registers again on its next start. `false` when it was
    /// not registered (already unregistered: doing it again is harmless).
    pub async fn unregister_broker(&mut self, id: i32) -> Result<bool, KafkaError> {
        let request = UnregisterBrokerRequest::default().with_broker_id(BrokerId(id));
        let response = self.send(&request).await?;
        if response.error_code == BROKER_ID_NOT_REGISTERED {
            return Ok(false);
        }
        KafkaError::check(
            self.addr(),
            "UnregisterBroker",
            response.error_code,
            response.error_message.as_ref(),
        )?;
        Ok(true)
    }

    /// The state of the KRaft quorum (`__cluster_metadata` partition 0), in DescribeQuorum
    /// v2 (directory ids, voter endpoints) where the broker speaks it.
    pub async fn describe_quorum(&mut self) -> Result<QuorumInfo, KafkaError> {
        let api = "DescribeQuorum";
        let request = DescribeQuorumRequest::default().with_topics(vec![
            TopicData::default()
                .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
                .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
        ]);
        let response = self.send(&request).await?;
        KafkaError::check(
            self.addr(),
            api,
            response.error_code,
            response.error_message.as_ref(),
        )?;
        let voter_endpoints = endpoints(response.nodes);
        let partition = response
            .topics
            .into_iter()
            .find(|t| t.topic_name.0.as_str() == METADATA_TOPIC)
            .and_then(|t| t.partitions.into_iter().find(|p| p.partition_index == 0))
            .ok_or_else(|| {
                KafkaError::malformed(
                    self.addr(),
                    api,
                    format!("no {METADATA_TOPIC}-0 in the answer"),
                )
            })?;
        KafkaError::check(
            self.addr(),
            api,
            partition.error_code,
            partition.error_message.as_ref(),
        )?;
        Ok(QuorumInfo {
            leader_id: partition.leader_id.0,
            leader_epoch: partition.leader_epoch,
            high_watermark: partition.high_watermark,
            voters: replicas(partition.current_voters),
            observers: replicas(partition.observers),
            voter_endpoints,
        })
    }
}

fn replicas(wire: Vec<WireReplicaState>) -> Vec<ReplicaState> {
    let known = |t: i64| (t >= 0).then_some(t);
    let mut out: Vec<ReplicaState> = wire
        .into_iter()
        .map(|r| ReplicaState {
            replica_id: r.replica_id.0,
            directory_id: (!r.replica_directory_id.is_nil())
                .then(|| uuid_to_text(&r.replica_directory_id)),
            log_end_offset: r.log_end_offset,
            last_fetch_timestamp: known(r.last_fetch_timestamp),
            last_caught_up_timestamp: known(r.last_caught_up_timestamp),
        })
        .collect();
    out.sort_by_key(|r| r.replica_id);
    out
}

fn endpoints(nodes: Vec<WireNode>) -> BTreeMap<i32, Vec<RaftEndpoint>> {
    let mut out: BTreeMap<i32, Vec<RaftEndpoint>> = BTreeMap::new();
    for node in nodes {
        let listeners = out.entry(node.node_id.0).or_default();
        listeners.extend(node.listeners.into_iter().map(|l| RaftEndpoint {
            name: l.name.to_string(),
            host: l.host.to_string(),
            port: l.port,
        }));
        listeners.sort();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConnectOptions;
    use crate::connection::testing::{Reply, fake_broker};
    use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
    use kafka_protocol::messages::describe_quorum_response::{
        Listener as WireListener, PartitionData as WirePartition, TopicData as WireTopic,
    };
    use kafka_protocol::messages::{
        ApiKey, BrokerId, DescribeClusterResponse, DescribeQuorumResponse,
    };
    use std::time::Duration;

    fn quick() -> ConnectOptions {
        ConnectOptions {
            request_timeout: Duration::from_millis(500),
            ..ConnectOptions::default()
        }
    }

    fn cluster_answer() -> DescribeClusterResponse {
        let broker = |id: i32, fenced: bool| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(id))
                .with_host(StrBytes::from_string(format!("b{id}")))
                .with_port(9092)
                .with_is_fenced(fenced)
        };
        DescribeClusterResponse::default()
            .with_cluster_id(StrBytes::from_static_str("abc"))
            .with_controller_id(BrokerId(2))
            .with_brokers(vec![broker(3, true), broker(1, false)])
    }

    #[tokio::test]
    async fn describe_cluster_asks_for_fenced_brokers_from_v2() {
        for max in [1, 2] {
            let broker = fake_broker(&[(ApiKey::DescribeCluster, max)], |req| {
                let r: DescribeClusterRequest = req.decode();
                assert_eq!(r.include_fenced_brokers, req.version >= 2);
                let mut answer = cluster_answer();
                if req.version < 2 {
                    answer.brokers.retain(|b| !b.is_fenced);
                }
                req.respond(&answer)
            })
            .await;
            let mut conn = BrokerConnection::connect(&broker.addr, quick())
                .await
                .unwrap();
            let d = conn.describe_cluster().await.unwrap();
            assert_eq!(d.cluster_id, "abc");
            assert_eq!(d.controller_id, 2);
            let ids: Vec<(i32, bool)> = d.brokers.iter().map(|b| (b.id, b.fenced)).collect();
            if max >= 2 {
                assert_eq!(ids, [(1, false), (3, true)]);
            } else {
                assert_eq!(ids, [(1, false)]);
            }
        }
    }

    /// Directory ids of the replicas in [`quorum_answer`], as Kafka prints them.
    const DIR_1: &str = "ASNFZ4mrze_-3LqYdlQyEA";
    const DIR_2: &str = "3Db5QLSqSZieL3rJBUUegA";

    /// An answer in `version`: what Kafka sends in v2 (directory ids, voter nodes) is left out
    /// before, as Kafka does.
    fn quorum_answer(partition_error: i16, version: i16) -> DescribeQuorumResponse {
        let dir = |text: &str| {
            if version >= 2 {
                crate::uuid_from_text(text).unwrap()
            } else {
                uuid::Uuid::nil()
            }
        };
        let replica = |id: i32, ts: i64, dir_id| {
            WireReplicaState::default()
                .with_replica_id(BrokerId(id))
                .with_replica_directory_id(dir_id)
                .with_log_end_offset(100)
                .with_last_fetch_timestamp(ts)
                .with_last_caught_up_timestamp(ts)
        };
        let listener = |name: &'static str, host: &'static str| {
            WireListener::default()
                .with_name(StrBytes::from_static_str(name))
                .with_host(StrBytes::from_static_str(host))
                .with_port(9093)
        };
        let nodes = if version >= 2 {
            vec![
                WireNode::default()
                    .with_node_id(BrokerId(2))
                    .with_listeners(vec![listener("CONTROLLER", "c2")]),
                WireNode::default()
                    .with_node_id(BrokerId(1))
                    .with_listeners(vec![listener("SSL", "c1"), listener("CONTROLLER", "c1")]),
            ]
        } else {
            vec![]
        };
        DescribeQuorumResponse::default()
            .with_nodes(nodes)
            .with_topics(vec![
                WireTopic::default()
                    .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
                    .with_partitions(vec![
                        WirePartition::default()
                            .with_error_code(partition_error)
                            .with_error_message(
                                (partition_error != 0).then(|| StrBytes::from_static_str("moved")),
                            )
                            .with_leader_id(BrokerId(2))
                            .with_leader_epoch(7)
                            .with_high_watermark(100)
                            .with_current_voters(vec![
                                replica(2, 5, dir(DIR_2)),
                                replica(1, -1, dir(DIR_1)),
                            ])
                            // An observer that has no directory id (a zero one).
                            .with_observers(vec![replica(4, 6, uuid::Uuid::nil())]),
                    ]),
            ])
    }

    #[tokio::test]
    async fn describe_quorum_reads_the_metadata_partition() {
        for max in [1, 2] {
            let broker = fake_broker(&[(ApiKey::DescribeQuorum, max)], move |req| {
                assert_eq!(req.version, max, "the highest version both speak");
                let r: DescribeQuorumRequest = req.decode();
                assert_eq!(r.topics[0].topic_name.0.as_str(), METADATA_TOPIC);
                assert_eq!(r.topics[0].partitions[0].partition_index, 0);
                req.respond(&quorum_answer(0, req.version))
            })
            .await;
            let mut conn = BrokerConnection::connect(&broker.addr, quick())
                .await
                .unwrap();
            let q = conn.describe_quorum().await.unwrap();
            assert_eq!((q.leader_id, q.leader_epoch, q.high_watermark), (2, 7, 100));
            let voters: Vec<i32> = q.voters.iter().map(|v| v.replica_id).collect();
            assert_eq!(voters, [1, 2]);
            assert_eq!(q.voter(1).unwrap().last_fetch_timestamp, None);
            assert_eq!(q.voter(2).unwrap().last_caught_up_timestamp, Some(5));
            assert_eq!(q.observers[0].replica_id, 4);
            assert_eq!(q.observer(4).unwrap().directory_id, None, "zero is no id");
            let dirs: Vec<Option<&str>> =
                q.voters.iter().map(|v| v.directory_id.as_deref()).collect();
            if max >= 2 {
                assert_eq!(dirs, [Some(DIR_1), Some(DIR_2)]);
                let endpoint = |name: &str, host: &str| RaftEndpoint {
                    name: name.into(),
                    host: host.into(),
                    port: 9093,
                };
                assert_eq!(
                    q.voter_endpoints,
                    BTreeMap::from([
                        (1, vec![endpoint("CONTROLLER", "c1"), endpoint("SSL", "c1")]),
                        (2, vec![endpoint("CONTROLLER", "c2")]),
                    ])
                );
            } else {
                assert_eq!(dirs, [None, None], "v1 has no directory ids");
                assert!(q.voter_endpoints.is_empty(), "v1 has no nodes");
            }
        }
    }

    #[tokio::test]
    async fn describe_quorum_partition_errors_are_kafka_errors() {
        let broker = fake_broker(&[(ApiKey::DescribeQuorum, 2)], |req| {
            req.respond(&quorum_answer(6, req.version))
        })
        .await;
        let mut conn = BrokerConnection::connect(&broker.addr, quick())
            .await
            .unwrap();
        let err = conn.describe_quorum().await.unwrap_err();
        assert_eq!(err.code(), Some(6));
        assert!(err.is_retriable(), "NOT_LEADER_OR_FOLLOWER");
        assert!(err.to_string().contains("DescribeQuorum"), "{err}");
        assert!(err.to_string().contains("moved"), "{err}");
    }

    #[tokio::test]
    async fn a_broker_closing_mid_answer_is_an_io_error() {
        let broker = fake_broker(&[(ApiKey::DescribeCluster, 2)], |req| {
            let Reply::Body(full) = req.respond(&cluster_answer()) else {
                unreachable!()
            };
            Reply::Partial {
                announced: full.len() as i32,
                bytes: full[..full.len() / 2].to_vec(),
            }
        })
        .await;
        let mut conn = BrokerConnection::connect(&broker.addr, quick())
            .await
            .unwrap();
        let err = conn.describe_cluster().await.unwrap_err();
        assert!(matches!(err, KafkaError::Io { .. }), "{err}");
        assert!(err.to_string().contains("DescribeCluster"), "{err}");
        assert!(err.to_string().contains(&broker.addr), "{err}");
        assert!(err.is_retriable());
        assert!(conn.is_broken());
    }
}
