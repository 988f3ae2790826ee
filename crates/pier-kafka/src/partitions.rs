//! Adding partitions to existing topics (CreatePartitions). Any broker answers: it forwards
//! the request to the controller, as with CreateTopics.
//!
//! Kafka only ever adds partitions: asking for fewer than a topic has, or as many, fails with
//! INVALID_PARTITIONS for that topic.
use std::collections::{HashMap, HashSet};

use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::{BrokerId, CreatePartitionsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{BrokerConnection, KafkaError, TopicOutcome};

const API: &str = "CreatePartitions";

/// Grow one topic to `total` partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionIncrease {
    pub topic: String,
    /// The number of partitions the topic has afterwards (not how many to add).
    pub total: i32,
    /// The replicas (broker ids, the preferred leader first) of each NEW partition, in
    /// partition order; `None`: the controller places them.
    pub assignments: Option<Vec<Vec<i32>>>,
}

impl PartitionIncrease {
    /// Grow `topic` to `total` partitions, placed by the controller.
    pub fn new(topic: impl Into<String>, total: i32) -> Self {
        PartitionIncrease {
            topic: topic.into(),
            total,
            assignments: None,
        }
    }

    /// The replicas of each new partition, in partition order.
    pub fn with_assignments(mut self, assignments: Vec<Vec<i32>>) -> Self {
        self.assignments = Some(assignments);
        self
    }

    /// What no request can carry, checked before sending: an empty topic name, a total
    /// below 1, a new partition without replicas or with one broker twice. (Whether the
    /// number of assignments fits the partitions added is Kafka's to say, it knows the
    /// current count.)
    pub fn validate(&self) -> Result<(), String> {
        if self.topic.is_empty() {
            return Err("the topic name is empty".to_string());
        }
        if self.total < 1 {
            return Err(format!("{} partitions in total", self.total));
        }
        for (i, replicas) in self.assignments.iter().flatten().enumerate() {
            if replicas.is_empty() {
                return Err(format!("new partition #{i} has no replicas"));
            }
            let mut seen = HashSet::new();
            if let Some(twice) = replicas.iter().find(|b| !seen.insert(**b)) {
                return Err(format!(
                    "new partition #{i} names broker {twice} twice: {replicas:?}"
                ));
            }
        }
        Ok(())
    }
}

/// Every increase valid and each topic named once, else the first problem, named.
pub(crate) fn validate_increases(increases: &[PartitionIncrease]) -> Result<(), KafkaError> {
    let mut topics = HashSet::new();
    for increase in increases {
        increase.validate().map_err(|reason| {
            KafkaError::invalid_argument(API, format!("topic {}: {reason}", increase.topic))
        })?;
        if !topics.insert(increase.topic.as_str()) {
            return Err(KafkaError::invalid_argument(
                API,
                format!("topic {} is named twice", increase.topic),
            ));
        }
    }
    Ok(())
}

fn request_topic(increase: &PartitionIncrease) -> CreatePartitionsTopic {
    CreatePartitionsTopic::default()
        .with_name(TopicName(StrBytes::from_string(increase.topic.clone())))
        .with_count(increase.total)
        .with_assignments(increase.assignments.as_ref().map(|new| {
            new.iter()
                .map(|replicas| {
                    CreatePartitionsAssignment::default()
                        .with_broker_ids(replicas.iter().map(|b| BrokerId(*b)).collect())
                })
                .collect()
        }))
}

impl BrokerConnection {
    /// Adds partitions to topics, waiting (up to the request timeout) for the controller;
    /// one outcome per topic, in the order given (INVALID_PARTITIONS for a topic that has as
    /// many partitions or more, UNKNOWN_TOPIC_OR_PARTITION for one that does not exist).
    /// Fails as a whole only for invalid arguments (nothing sent) or without a usable
    /// answer.
    pub async fn create_partitions(
        &mut self,
        increases: &[PartitionIncrease],
    ) -> Result<Vec<TopicOutcome>, KafkaError> {
        validate_increases(increases)?;
        if increases.is_empty() {
            return Ok(Vec::new());
        }
        let request = CreatePartitionsRequest::default()
            .with_timeout_ms(self.operation_timeout_ms())
            .with_validate_only(false)
            .with_topics(increases.iter().map(request_topic).collect());
        let response = self.send(&request).await?;
        let mut results: HashMap<String, (i16, Option<StrBytes>)> = response
            .results
            .into_iter()
            .map(|r| (r.name.0.to_string(), (r.error_code, r.error_message)))
            .collect();
        Ok(increases
            .iter()
            .map(|increase| {
                let name = &increase.topic;
                let result = match results.remove(name) {
                    Some((0, _)) => Ok(()),
                    Some((code, message)) => {
                        let message = match message.filter(|m| !m.is_empty()) {
                            Some(m) => format!("topic {name}: {m}"),
                            None => format!("topic {name}"),
                        };
                        Err(KafkaError::broker(self.addr(), API, code, Some(message)))
                    }
                    None => Err(KafkaError::malformed(
                        self.addr(),
                        API,
                        format!("no result for topic {name}"),
                    )),
                };
                TopicOutcome {
                    name: name.clone(),
                    result,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::testing::fake_broker;
    use crate::{ConnectOptions, codes};
    use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
    use kafka_protocol::messages::{ApiKey, CreatePartitionsResponse};
    use std::time::Duration;

    #[test]
    fn increases_are_checked_before_sending() {
        assert_eq!(PartitionIncrease::new("t", 5).validate(), Ok(()));
        assert_eq!(
            PartitionIncrease::new("t", 3)
                .with_assignments(vec![vec![1, 2], vec![3]])
                .validate(),
            Ok(())
        );
        for (increase, reason) in [
            (PartitionIncrease::new("", 3), "topic name is empty"),
            (PartitionIncrease::new("t", 0), "0 partitions"),
            (PartitionIncrease::new("t", -1), "-1 partitions"),
            (
                PartitionIncrease::new("t", 3).with_assignments(vec![vec![1], vec![]]),
                "#1 has no replicas",
            ),
            (
                PartitionIncrease::new("t", 3).with_assignments(vec![vec![1, 2, 1]]),
                "broker 1 twice",
            ),
        ] {
            let err = increase.validate().unwrap_err();
            assert!(err.contains(reason), "{increase:?}: {err}");
            let err = validate_increases(&[increase]).unwrap_err();
            assert!(matches!(err, KafkaError::InvalidArgument { .. }), "{err}");
        }
        let err = validate_increases(&[
            PartitionIncrease::new("t", 3),
            PartitionIncrease::new("u", 3),
            PartitionIncrease::new("t", 4),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("topic t is named twice"), "{err}");
        assert!(validate_increases(&[]).is_ok());
    }

    #[test]
    fn the_request_carries_totals_and_new_replicas_only() {
        let t = request_topic(&PartitionIncrease::new("orders", 5));
        assert_eq!((t.name.0.as_str(), t.count), ("orders", 5));
        assert_eq!(t.assignments, None, "null: the controller places them");
        let t = request_topic(
            &PartitionIncrease::new("orders", 4).with_assignments(vec![vec![2, 1], vec![3, 2]]),
        );
        let replicas: Vec<Vec<i32>> = t
            .assignments
            .unwrap()
            .iter()
            .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
            .collect();
        assert_eq!(replicas, [vec![2, 1], vec![3, 2]]);
    }

    #[tokio::test]
    async fn outcomes_follow_the_request_order_and_name_the_topic() {
        let broker = fake_broker(&[(ApiKey::CreatePartitions, 3)], |req| {
            let r: CreatePartitionsRequest = req.decode();
            assert!(r.timeout_ms > 0 && r.timeout_ms < 2000, "{}", r.timeout_ms);
            assert!(!r.validate_only);
            // Answered in reverse, one topic missing.
            let results = r
                .topics
                .iter()
                .rev()
                .filter(|t| t.name.0.as_str() != "lost")
                .map(|t| {
                    let (code, message) = match t.name.0.as_str() {
                        "shrink" => (
                            codes::INVALID_PARTITIONS,
                            Some(StrBytes::from_static_str(
                                "Topic currently has 5 partitions, which is higher than the requested 3.",
                            )),
                        ),
                        _ => (0, None),
                    };
                    CreatePartitionsTopicResult::default()
                        .with_name(t.name.clone())
                        .with_error_code(code)
                        .with_error_message(message)
                })
                .collect();
            req.respond(&CreatePartitionsResponse::default().with_results(results))
        })
        .await;
        let options = ConnectOptions {
            request_timeout: Duration::from_secs(2),
            ..ConnectOptions::default()
        };
        let mut conn = BrokerConnection::connect(&broker.addr, options)
            .await
            .unwrap();
        let out = conn
            .create_partitions(&[
                PartitionIncrease::new("grow", 5),
                PartitionIncrease::new("shrink", 3),
                PartitionIncrease::new("lost", 2),
            ])
            .await
            .unwrap();
        let names: Vec<&str> = out.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["grow", "shrink", "lost"]);
        assert!(out[0].result.is_ok());
        let err = out[1].result.as_ref().unwrap_err();
        assert_eq!(err.code(), Some(codes::INVALID_PARTITIONS));
        let text = err.to_string();
        for part in [
            "CreatePartitions",
            "InvalidPartitions",
            "topic shrink",
            "higher than",
        ] {
            assert!(text.contains(part), "{text}");
        }
        assert!(matches!(out[2].result, Err(KafkaError::Decode { .. })));
        assert_eq!(conn.create_partitions(&[]).await.unwrap().len(), 0);
        assert_eq!(broker.requests(), 1);
    }
}
