//! Moving partition replicas and leadership: AlterPartitionReassignments,
//! ListPartitionReassignments (with cancelling) and ElectLeaders (preferred), and the pure planning of "move
//! every replica off these brokers".
use std::collections::BTreeMap;

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ElectLeadersRequest,
    ListPartitionReassignmentsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::error::codes::{ELECTION_NOT_NEEDED, NO_REASSIGNMENT_IN_PROGRESS};
use super::{BrokerConnection, ClusterMetadata, KafkaError};

/// What a preferred-leader election did for one partition. A partition whose preferred
/// replica already leads (ELECTION_NOT_NEEDED) counts as a success.
#[derive(Debug, Clone)]
pub struct ElectionOutcome {
    pub topic: String,
    pub partition: i32,
    pub result: Result<(), KafkaError>,
}

/// A partition whose reassignment is in progress (ListPartitionReassignments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    pub topic: String,
    pub partition: i32,
    /// Every replica while the move runs: the targets plus those being removed.
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// A partition and the replicas it should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
}

/// Moves every replica on `leaving` to the remaining brokers, keeping each partition's
/// replication factor and replacing a leaving replica with the least-loaded broker that does
/// not hold the partition yet. Fails if too few brokers remain.
pub fn plan_drain(md: &ClusterMetadata, leaving: &[i32]) -> Result<Vec<Reassignment>, String> {
    let remaining: Vec<i32> = md
        .brokers
        .iter()
        .map(|b| b.id)
        .filter(|id| !leaving.contains(id))
        .collect();
    let mut load: BTreeMap<i32, usize> = remaining.iter().map(|id| (*id, 0)).collect();
    for t in &md.topics {
        for p in &t.partitions {
            for r in &p.replicas {
                if let Some(n) = load.get_mut(r) {
                    *n += 1;
                }
            }
        }
    }
    let mut out = Vec::new();
    for t in &md.topics {
        for p in &t.partitions {
            if !p.replicas.iter().any(|r| leaving.contains(r)) {
                continue;
            }
            let mut replicas = p.replicas.clone();
            for i in 0..replicas.len() {
                if !leaving.contains(&replicas[i]) {
                    continue;
                }
                // The least-loaded remaining broker that does not hold this partition yet.
                let pick = load
                    .iter()
                    .filter(|(id, _)| !replicas.contains(id))
                    .min_by_key(|(id, n)| (**n, **id))
                    .map(|(id, _)| *id)
                    .ok_or_else(|| {
                        format!(
                            "{}-{}: not enough brokers left for {} replicas",
                            t.name,
                            p.index,
                            p.replicas.len()
                        )
                    })?;
                replicas[i] = pick;
                *load.entry(pick).or_default() += 1;
            }
            out.push(Reassignment {
                topic: t.name.clone(),
                partition: p.index,
                replicas,
            });
        }
    }
    Ok(out)
}

impl BrokerConnection {
    /// Starts moving partitions to the given replicas. Per-partition errors are reported.
    pub async fn alter_partition_reassignments(
        &mut self,
        moves: &[Reassignment],
    ) -> Result<(), KafkaError> {
        let entries = moves
            .iter()
            .map(|m| (m.topic.as_str(), m.partition, Some(m.replicas.as_slice())));
        self.reassign("AlterPartitionReassignments", entries, &[])
            .await
    }

    /// Partitions whose reassignment is still in progress, sorted by topic and partition.
    pub async fn list_partition_reassignments(
        &mut self,
    ) -> Result<Vec<OngoingReassignment>, KafkaError> {
        let request = ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(self.operation_timeout_ms());
        let response = self.send(&request).await?;
        KafkaError::check(
            self.addr(),
            "ListPartitionReassignments",
            response.error_code,
            response.error_message.as_ref(),
        )?;
        let ids = |v: Vec<BrokerId>| v.into_iter().map(|b| b.0).collect::<Vec<i32>>();
        let mut out: Vec<OngoingReassignment> = response
            .topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name.0.to_string();
                t.partitions.into_iter().map(move |p| OngoingReassignment {
                    topic: name.clone(),
                    partition: p.partition_index,
                    replicas: ids(p.replicas),
                    adding: ids(p.adding_replicas),
                    removing: ids(p.removing_replicas),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }

    /// Cancels the reassignments of the given partitions: Kafka reverts each to its original
    /// replicas. A partition that is no longer moving (NO_REASSIGNMENT_IN_PROGRESS) is fine.
    pub async fn cancel_partition_reassignments(
        &mut self,
        partitions: &[(String, i32)],
    ) -> Result<(), KafkaError> {
        let entries = partitions.iter().map(|(t, p)| (t.as_str(), *p, None));
        self.reassign(
            "AlterPartitionReassignments (cancel)",
            entries,
            &[NO_REASSIGNMENT_IN_PROGRESS],
        )
        .await
    }

    /// One AlterPartitionReassignments call: per partition the new replicas, or `None` to
    /// cancel; the first per-partition error not in `fine` fails the call.
    async fn reassign<'a>(
        &mut self,
        api: &str,
        entries: impl Iterator<Item = (&'a str, i32, Option<&'a [i32]>)>,
        fine: &[i16],
    ) -> Result<(), KafkaError> {
        let mut topics: BTreeMap<&str, Vec<ReassignablePartition>> = BTreeMap::new();
        for (topic, partition, replicas) in entries {
            topics.entry(topic).or_default().push(
                ReassignablePartition::default()
                    .with_partition_index(partition)
                    .with_replicas(replicas.map(|r| r.iter().map(|b| BrokerId(*b)).collect())),
            );
        }
        let request = AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(self.operation_timeout_ms())
            .with_topics(
                topics
                    .into_iter()
                    .map(|(name, partitions)| {
                        ReassignableTopic::default()
                            .with_name(TopicName(StrBytes::from_string(name.to_string())))
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        let response = self.send(&request).await?;
        KafkaError::check(
            self.addr(),
            api,
            response.error_code,
            response.error_message.as_ref(),
        )?;
        for t in response.responses {
            for p in t.partitions {
                if p.error_code != 0 && !fine.contains(&p.error_code) {
                    let message = Some(format!(
                        "{}-{}: {}",
                        t.name.0,
                        p.partition_index,
                        p.error_message.map(|m| m.to_string()).unwrap_or_default()
                    ));
                    return Err(KafkaError::broker(self.addr(), api, p.error_code, message));
                }
            }
        }
        Ok(())
    }

    /// Moves leadership of the given partitions (`None`: every partition) to their preferred
    /// replica (the first of the replica list). One outcome per partition the controller
    /// answered for, sorted; fails as a whole only when there is no usable answer.
    pub async fn elect_leaders(
        &mut self,
        partitions: Option<&[(String, i32)]>,
    ) -> Result<Vec<ElectionOutcome>, KafkaError> {
        let api = "ElectLeaders";
        let topic_partitions = partitions.map(|ps| {
            let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for (topic, partition) in ps {
                by_topic.entry(topic).or_default().push(*partition);
            }
            by_topic
                .into_iter()
                .map(|(topic, partitions)| {
                    TopicPartitions::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partitions(partitions)
                })
                .collect()
        });
        // Election type 0 is PREFERRED, the only kind v0 knows.
        let request = ElectLeadersRequest::default()
            .with_election_type(0)
            .with_topic_partitions(topic_partitions)
            .with_timeout_ms(self.operation_timeout_ms());
        let response = self.send(&request).await?;
        KafkaError::check(self.addr(), api, response.error_code, None)?;
        let mut out = Vec::new();
        for t in response.replica_election_results {
            let topic = t.topic.0.to_string();
            for p in t.partition_result {
                let result = match p.error_code {
                    0 | ELECTION_NOT_NEEDED => Ok(()),
                    code => {
                        let message = match p.error_message {
                            Some(m) if !m.is_empty() => {
                                format!("{topic}-{}: {}", p.partition_id, m.as_str())
                            }
                            _ => format!("{topic}-{}", p.partition_id),
                        };
                        Err(KafkaError::broker(self.addr(), api, code, Some(message)))
                    }
                };
                out.push(ElectionOutcome {
                    topic: topic.clone(),
                    partition: p.partition_id,
                    result,
                });
            }
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BrokerInfo, PartitionInfo, TopicInfo};

    fn md(brokers: &[i32], partitions: &[&[i32]]) -> ClusterMetadata {
        ClusterMetadata {
            cluster_id: None,
            controller_id: brokers[0],
            brokers: brokers
                .iter()
                .map(|id| BrokerInfo {
                    id: *id,
                    host: "h".into(),
                    port: 9092,
                    rack: None,
                })
                .collect(),
            topics: vec![TopicInfo {
                name: "t".into(),
                id: uuid::Uuid::nil(),
                internal: false,
                error_code: 0,
                partitions: partitions
                    .iter()
                    .enumerate()
                    .map(|(i, r)| PartitionInfo {
                        index: i as i32,
                        leader: r[0],
                        replicas: r.to_vec(),
                        isr: r.to_vec(),
                        offline_replicas: vec![],
                        error_code: 0,
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn draining_moves_only_the_leaving_replicas_to_the_least_loaded_brokers() {
        let m = md(&[0, 1, 2, 3], &[&[0, 1, 2], &[1, 2, 3], &[2, 3, 0]]);
        let plan = plan_drain(&m, &[1]).unwrap();
        assert_eq!(plan.len(), 2, "only partitions with a replica on broker 1");
        assert_eq!(
            plan[0],
            Reassignment {
                topic: "t".into(),
                partition: 0,
                replicas: vec![0, 3, 2]
            }
        );
        assert_eq!(plan[1].replicas[1..], [2, 3]);
        assert!(!plan[1].replicas.contains(&1));
        for r in &plan {
            let mut unique = r.replicas.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), 3, "replication factor kept: {r:?}");
        }
    }

    #[test]
    fn draining_fails_when_too_few_brokers_remain() {
        let m = md(&[0, 1, 2], &[&[0, 1, 2]]);
        let err = plan_drain(&m, &[1]).unwrap_err();
        assert!(err.contains("not enough brokers"), "{err}");
    }
}
