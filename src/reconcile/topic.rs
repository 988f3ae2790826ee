//! What a KafkaTopic needs done in Kafka, from its spec and what Kafka holds: pure planning
//! (create, add partitions, move replicas for a new replication factor, set and delete topic
//! configs) and the status that says where the topic stands. `controller::topics` asks Kafka
//! and carries the plan out.
use std::collections::{BTreeMap, BTreeSet};

use crate::api::{KafkaTopicSpec, is_topic_name};
use crate::kafka::{ConfigOp, NewTopic, Reassignment};
use crate::reconcile::scaling::{FOLLOWER_THROTTLED_REPLICAS, LEADER_THROTTLED_REPLICAS};

/// Topic configs Pier sets itself while replicas move: never in a spec, never removed as an
/// override the spec lacks.
pub const MANAGED_BY_MOVES: [&str; 2] = [LEADER_THROTTLED_REPLICAS, FOLLOWER_THROTTLED_REPLICAS];

/// A topic as Kafka holds it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObservedTopic {
    /// Kafka's topic id, in its text form.
    pub id: Option<String>,
    /// Replicas per partition, preferred leader first.
    pub partitions: BTreeMap<i32, Vec<i32>>,
    /// Some partition of it is being reassigned.
    pub moving: bool,
    /// Topic-level overrides (DescribeConfigs source DYNAMIC_TOPIC_CONFIG).
    pub overrides: BTreeMap<String, String>,
}

impl ObservedTopic {
    /// The largest replica count of any partition.
    pub fn replication_factor(&self) -> usize {
        self.partitions.values().map(Vec::len).max().unwrap_or(0)
    }
}

/// Everything the plan of one topic depends on.
#[derive(Debug, Clone, Copy)]
pub struct TopicInput<'a> {
    pub spec: &'a KafkaTopicSpec,
    /// The topic's name in Kafka.
    pub name: &'a str,
    pub observed: Option<&'a ObservedTopic>,
    /// Brokers that can take replicas (registered, not fenced, in the spec), with the replicas
    /// each holds now (for placement).
    pub brokers: &'a BTreeMap<i32, usize>,
    /// Topic config names Kafka knows (from any topic's description); empty when unknown.
    pub known_configs: &'a BTreeSet<String>,
    /// A reassignment runs somewhere in the cluster.
    pub cluster_moving: bool,
}

/// What to do in Kafka now, and why not more.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TopicPlan {
    pub create: Option<NewTopic>,
    /// The new partition count.
    pub add_partitions: Option<i32>,
    /// Replica moves for a new replication factor, each with the replicas it held before
    /// (throttles name them).
    pub moves: Vec<(Vec<i32>, Reassignment)>,
    /// Config changes (IncrementalAlterConfigs on the topic).
    pub config_ops: Vec<ConfigOp>,
    /// Why (part of) the spec cannot be applied; nothing it concerns changes.
    pub refused: Vec<Refusal>,
    /// Something is in progress (a move, a partition increase waiting for one).
    pub waiting: Option<String>,
}

impl TopicPlan {
    /// Whether the plan writes anything to Kafka.
    pub fn writes(&self) -> bool {
        self.create.is_some()
            || self.add_partitions.is_some()
            || !self.moves.is_empty()
            || !self.config_ops.is_empty()
    }
}

/// A part of the spec Pier will not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The condition reason.
    pub reason: &'static str,
    pub message: String,
}

/// Condition reasons of a KafkaTopic.
pub mod reasons {
    pub const READY: &str = "Ready";
    pub const CREATING: &str = "Creating";
    pub const PROGRESSING: &str = "Progressing";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const PARTITION_DECREASE_REFUSED: &str = "PartitionDecreaseRefused";
    pub const REPLICATION_FACTOR_REFUSED: &str = "ReplicationFactorRefused";
    pub const CLUSTER_NOT_FOUND: &str = "ClusterNotFound";
    pub const CLUSTER_NOT_READY: &str = "ClusterNotReady";
    pub const CONFLICT: &str = "Conflict";
    pub const KAFKA_ERROR: &str = "KafkaError";
}

/// Whether the spec can be planned at all: its name and config keys (what the CRD checks, and
/// what only Kafka knows: its topic config names).
pub fn invalid_spec(input: &TopicInput<'_>) -> Option<Refusal> {
    let refuse = |message: String| {
        Some(Refusal {
            reason: reasons::INVALID_SPEC,
            message,
        })
    };
    if !is_topic_name(input.name) {
        return refuse(format!(
            "{:?} is not a Kafka topic name (letters, digits, '.', '_' and '-', at most 249, not '.' or '..')",
            input.name
        ));
    }
    if input.spec.partitions < 1 || input.spec.replication_factor < 1 {
        return refuse("partitions and replicationFactor must be at least 1".into());
    }
    let managed: Vec<&str> = input
        .spec
        .config
        .keys()
        .map(String::as_str)
        .filter(|k| MANAGED_BY_MOVES.contains(k))
        .collect();
    if !managed.is_empty() {
        return refuse(format!(
            "{} {} set by Pier while replicas move, not in a spec",
            managed.join(", "),
            if managed.len() == 1 { "is" } else { "are" }
        ));
    }
    if !input.known_configs.is_empty() {
        let unknown: Vec<&str> = input
            .spec
            .config
            .keys()
            .map(String::as_str)
            .filter(|k| !input.known_configs.contains(*k))
            .collect();
        if !unknown.is_empty() {
            return refuse(format!(
                "unknown topic config {}: Kafka's topic configs are {}",
                unknown.join(", "),
                input
                    .known_configs
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    None
}

/// Plans one reconcile of a topic.
pub fn plan(input: &TopicInput<'_>) -> TopicPlan {
    let mut out = TopicPlan::default();
    if let Some(r) = invalid_spec(input) {
        out.refused.push(r);
        return out;
    }
    let spec = input.spec;
    let rf = usize::try_from(spec.replication_factor).unwrap_or(0);
    let Some(observed) = input.observed else {
        if !input.brokers.is_empty() && rf > input.brokers.len() {
            out.refused.push(too_few_brokers(rf, input.brokers.len()));
            return out;
        }
        out.create = Some(NewTopic {
            name: input.name.to_string(),
            partitions: spec.partitions,
            replication_factor: spec.replication_factor,
            configs: spec
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        });
        return out;
    };

    out.config_ops = config_ops(spec, observed);

    let have = i32::try_from(observed.partitions.len()).unwrap_or(i32::MAX);
    if spec.partitions < have {
        out.refused.push(Refusal {
            reason: reasons::PARTITION_DECREASE_REFUSED,
            message: format!(
                "partitions cannot go down from {have} to {} (Kafka cannot remove partitions)",
                spec.partitions
            ),
        });
    }

    let off_rf = observed.partitions.values().any(|r| r.len() != rf);
    if observed.moving {
        out.waiting = Some("replicas of the topic are moving".into());
        return out;
    }
    if off_rf {
        if rf > input.brokers.len() {
            out.refused.push(too_few_brokers(rf, input.brokers.len()));
        } else if input.cluster_moving {
            out.waiting = Some("waiting for the replica moves in flight in the cluster".into());
            return out;
        } else {
            out.moves = replica_moves(input.name, &observed.partitions, rf, input.brokers);
            // New partitions come with the new factor once the moves are done.
            return out;
        }
    }
    if spec.partitions > have {
        out.add_partitions = Some(spec.partitions);
    }
    out
}

fn too_few_brokers(rf: usize, brokers: usize) -> Refusal {
    Refusal {
        reason: reasons::REPLICATION_FACTOR_REFUSED,
        message: format!("replicationFactor {rf} needs {rf} brokers; the cluster has {brokers}"),
    }
}

/// Sets what differs, deletes overrides the spec does not name (never the throttles of moves).
fn config_ops(spec: &KafkaTopicSpec, observed: &ObservedTopic) -> Vec<ConfigOp> {
    let mut ops: Vec<ConfigOp> = spec
        .config
        .iter()
        .filter(|(k, v)| observed.overrides.get(*k) != Some(*v))
        .map(|(k, v)| ConfigOp::set(k.clone(), v.clone()))
        .collect();
    ops.extend(
        observed
            .overrides
            .keys()
            .filter(|k| !spec.config.contains_key(*k) && !MANAGED_BY_MOVES.contains(&k.as_str()))
            .map(|k| ConfigOp::delete(k.clone())),
    );
    ops
}

/// New replica lists for every partition whose replica count is not `rf`: a raise keeps the
/// current replicas (the leader stays first) and adds the brokers holding the fewest replicas;
/// a cut drops replicas from the end (never the preferred leader).
pub fn replica_moves(
    topic: &str,
    partitions: &BTreeMap<i32, Vec<i32>>,
    rf: usize,
    brokers: &BTreeMap<i32, usize>,
) -> Vec<(Vec<i32>, Reassignment)> {
    let mut load: BTreeMap<i32, usize> = brokers.clone();
    let mut moves = Vec::new();
    for (partition, replicas) in partitions {
        if replicas.len() == rf {
            continue;
        }
        let mut target: Vec<i32> = replicas
            .iter()
            .copied()
            .filter(|b| brokers.contains_key(b))
            .collect();
        // A replica on a broker that is gone is replaced, not kept.
        target.truncate(rf);
        while target.len() < rf {
            let Some((&next, _)) = load
                .iter()
                .filter(|(b, _)| !target.contains(b))
                .min_by_key(|(b, n)| (**n, **b))
            else {
                break;
            };
            target.push(next);
            *load.entry(next).or_default() += 1;
        }
        for dropped in replicas.iter().filter(|b| !target.contains(b)) {
            if let Some(n) = load.get_mut(dropped) {
                *n = n.saturating_sub(1);
            }
        }
        if target.len() == rf && &target != replicas {
            moves.push((
                replicas.clone(),
                Reassignment {
                    topic: topic.to_string(),
                    partition: *partition,
                    replicas: target,
                },
            ));
        }
    }
    moves
}

/// Where the topic stands, for the Ready condition: `(ready, reason, message)`.
pub fn readiness(input: &TopicInput<'_>, plan: &TopicPlan) -> (bool, &'static str, String) {
    if let Some(r) = plan.refused.first() {
        return (false, r.reason, r.message.clone());
    }
    let Some(observed) = input.observed else {
        return (false, reasons::CREATING, "creating the topic".into());
    };
    if let Some(w) = &plan.waiting {
        return (false, reasons::PROGRESSING, w.clone());
    }
    let mut doing = Vec::new();
    if let Some(n) = plan.add_partitions {
        doing.push(format!(
            "adding partitions: {} to {n}",
            observed.partitions.len()
        ));
    }
    if !plan.moves.is_empty() {
        doing.push(format!(
            "moving replicas of {} partitions for replication factor {}",
            plan.moves.len(),
            input.spec.replication_factor
        ));
    }
    if !plan.config_ops.is_empty() {
        let keys: Vec<&str> = plan.config_ops.iter().map(|o| o.key.as_str()).collect();
        doing.push(format!("changing config {}", keys.join(", ")));
    }
    if doing.is_empty() {
        (true, reasons::READY, "the topic is as the spec says".into())
    } else {
        (false, reasons::PROGRESSING, doing.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ClusterRef, DeletionPolicy};

    fn spec(partitions: i32, rf: i16, config: &[(&str, &str)]) -> KafkaTopicSpec {
        KafkaTopicSpec {
            cluster_ref: ClusterRef { name: "c".into() },
            topic_name: None,
            partitions,
            replication_factor: rf,
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            deletion_policy: DeletionPolicy::Delete,
        }
    }

    fn brokers(ids: &[(i32, usize)]) -> BTreeMap<i32, usize> {
        ids.iter().copied().collect()
    }

    fn topic(partitions: &[&[i32]], overrides: &[(&str, &str)]) -> ObservedTopic {
        ObservedTopic {
            id: Some("id".into()),
            partitions: partitions
                .iter()
                .enumerate()
                .map(|(i, r)| (i as i32, r.to_vec()))
                .collect(),
            moving: false,
            overrides: overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn known() -> BTreeSet<String> {
        ["retention.ms", "cleanup.policy", "min.insync.replicas"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn input<'a>(
        spec: &'a KafkaTopicSpec,
        observed: Option<&'a ObservedTopic>,
        brokers: &'a BTreeMap<i32, usize>,
        known: &'a BTreeSet<String>,
    ) -> TopicInput<'a> {
        TopicInput {
            spec,
            name: "orders",
            observed,
            brokers,
            known_configs: known,
            cluster_moving: false,
        }
    }

    #[test]
    fn a_missing_topic_is_created_with_its_config() {
        let s = spec(6, 3, &[("retention.ms", "1000")]);
        let b = brokers(&[(0, 0), (1, 0), (2, 0)]);
        let k = known();
        let p = plan(&input(&s, None, &b, &k));
        let t = p.create.clone().expect("created");
        assert_eq!((t.partitions, t.replication_factor), (6, 3));
        assert_eq!(t.configs, vec![("retention.ms".into(), "1000".into())]);
        assert!(p.writes());
        let (ready, reason, _) = readiness(&input(&s, None, &b, &k), &p);
        assert!(!ready);
        assert_eq!(reason, reasons::CREATING);
    }

    #[test]
    fn a_factor_above_the_broker_count_is_refused_before_creating() {
        let s = spec(1, 3, &[]);
        let b = brokers(&[(0, 0), (1, 0)]);
        let k = known();
        let p = plan(&input(&s, None, &b, &k));
        assert!(p.create.is_none());
        assert_eq!(p.refused[0].reason, reasons::REPLICATION_FACTOR_REFUSED);
    }

    #[test]
    fn a_topic_as_specified_needs_nothing() {
        let s = spec(2, 2, &[("retention.ms", "1000")]);
        let o = topic(&[&[0, 1], &[1, 2]], &[("retention.ms", "1000")]);
        let b = brokers(&[(0, 1), (1, 2), (2, 1)]);
        let k = known();
        let i = input(&s, Some(&o), &b, &k);
        let p = plan(&i);
        assert_eq!(p, TopicPlan::default());
        assert!(!p.writes());
        assert!(readiness(&i, &p).0);
    }

    #[test]
    fn partitions_grow_and_never_shrink() {
        let b = brokers(&[(0, 1), (1, 1)]);
        let k = known();
        let o = topic(&[&[0], &[1]], &[]);
        let more = spec(5, 1, &[]);
        assert_eq!(
            plan(&input(&more, Some(&o), &b, &k)).add_partitions,
            Some(5)
        );
        let fewer = spec(1, 1, &[("retention.ms", "5")]);
        let p = plan(&input(&fewer, Some(&o), &b, &k));
        assert_eq!(p.add_partitions, None);
        assert_eq!(p.refused[0].reason, reasons::PARTITION_DECREASE_REFUSED);
        assert!(p.refused[0].message.contains("from 2 to 1"));
        // The rest of the spec still applies.
        assert_eq!(p.config_ops, vec![ConfigOp::set("retention.ms", "5")]);
    }

    #[test]
    fn config_is_set_changed_and_removed_back_to_the_default() {
        let s = spec(
            1,
            1,
            &[("retention.ms", "2000"), ("cleanup.policy", "compact")],
        );
        let o = topic(
            &[&[0]],
            &[
                ("retention.ms", "1000"),
                ("min.insync.replicas", "2"),
                (LEADER_THROTTLED_REPLICAS, "0:0"),
            ],
        );
        let b = brokers(&[(0, 1)]);
        let k = known();
        let p = plan(&input(&s, Some(&o), &b, &k));
        assert_eq!(
            p.config_ops,
            vec![
                ConfigOp::set("cleanup.policy", "compact"),
                ConfigOp::set("retention.ms", "2000"),
                ConfigOp::delete("min.insync.replicas"),
            ]
        );
    }

    #[test]
    fn unknown_or_pier_owned_config_keys_are_refused_and_nothing_happens() {
        let b = brokers(&[(0, 0)]);
        let k = known();
        let s = spec(1, 1, &[("retention.msec", "1")]);
        let p = plan(&input(&s, None, &b, &k));
        assert!(!p.writes());
        assert_eq!(p.refused[0].reason, reasons::INVALID_SPEC);
        assert!(p.refused[0].message.contains("retention.msec"));
        let s = spec(1, 1, &[(FOLLOWER_THROTTLED_REPLICAS, "*")]);
        let p = plan(&input(&s, None, &b, &k));
        assert!(!p.writes());
        assert!(p.refused[0].message.contains("set by Pier"));
        // Kafka's names unknown yet: Kafka judges at creation.
        let none = BTreeSet::new();
        let s = spec(1, 1, &[("retention.msec", "1")]);
        assert!(plan(&input(&s, None, &b, &none)).create.is_some());
    }

    #[test]
    fn a_bad_name_is_refused() {
        let s = spec(1, 1, &[]);
        let b = brokers(&[(0, 0)]);
        let k = known();
        let mut i = input(&s, None, &b, &k);
        i.name = "a/b";
        let p = plan(&i);
        assert!(!p.writes());
        assert_eq!(p.refused[0].reason, reasons::INVALID_SPEC);
    }

    #[test]
    fn raising_the_factor_adds_the_least_loaded_brokers_keeping_the_leader_first() {
        let s = spec(3, 3, &[]);
        let o = topic(&[&[0], &[1], &[2]], &[]);
        let b = brokers(&[(0, 10), (1, 1), (2, 1), (3, 0)]);
        let k = known();
        let p = plan(&input(&s, Some(&o), &b, &k));
        assert_eq!(p.moves.len(), 3);
        for (from, m) in &p.moves {
            assert_eq!(m.replicas.len(), 3);
            assert_eq!(m.replicas[0], from[0], "leader stays first");
            let unique: BTreeSet<_> = m.replicas.iter().collect();
            assert_eq!(unique.len(), 3);
        }
        // Broker 0 is the most loaded: only the partition it leads has it.
        let with_0 = p
            .moves
            .iter()
            .filter(|(_, m)| m.replicas.contains(&0))
            .count();
        assert_eq!(with_0, 1);
        // Partitions wait for the moves.
        let more = spec(6, 3, &[]);
        let p = plan(&input(&more, Some(&o), &b, &k));
        assert_eq!(p.add_partitions, None);
        assert!(!p.moves.is_empty());
    }

    #[test]
    fn cutting_the_factor_drops_replicas_from_the_end() {
        let moves = replica_moves(
            "t",
            &[(0, vec![2, 0, 1]), (1, vec![0, 1, 2])].into(),
            1,
            &brokers(&[(0, 2), (1, 2), (2, 2)]),
        );
        assert_eq!(moves[0].1.replicas, vec![2]);
        assert_eq!(moves[1].1.replicas, vec![0]);
    }

    #[test]
    fn a_replica_on_a_gone_broker_is_replaced() {
        let moves = replica_moves(
            "t",
            &[(0, vec![5, 0])].into(),
            3,
            &brokers(&[(0, 1), (1, 0), (2, 0)]),
        );
        assert_eq!(moves[0].1.replicas, vec![0, 1, 2]);
    }

    #[test]
    fn moves_wait_for_moves_in_flight() {
        let s = spec(1, 2, &[]);
        let b = brokers(&[(0, 1), (1, 0)]);
        let k = known();
        let mut o = topic(&[&[0]], &[]);
        let mut i = input(&s, Some(&o), &b, &k);
        i.cluster_moving = true;
        let p = plan(&i);
        assert!(p.moves.is_empty());
        assert!(p.waiting.is_some());
        o.moving = true;
        let p = plan(&input(&s, Some(&o), &b, &k));
        assert!(p.moves.is_empty());
        assert_eq!(
            readiness(&input(&s, Some(&o), &b, &k), &p).1,
            reasons::PROGRESSING
        );
    }

    #[test]
    fn a_factor_above_the_brokers_is_refused_for_an_existing_topic_too() {
        let s = spec(2, 4, &[]);
        let o = topic(&[&[0], &[1]], &[]);
        let b = brokers(&[(0, 1), (1, 1)]);
        let k = known();
        let p = plan(&input(&s, Some(&o), &b, &k));
        assert!(p.moves.is_empty());
        assert_eq!(p.refused[0].reason, reasons::REPLICATION_FACTOR_REFUSED);
    }
}
