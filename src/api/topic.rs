//! `KafkaTopic`: one topic of a Pier-managed cluster, declared as a Kubernetes resource.
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The finalizer that deletes the topic in Kafka before the resource goes.
pub const TOPIC_FINALIZER: &str = "kafka.pier.dev/topic";

/// Longest topic name Kafka accepts.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// A topic of a KafkaCluster: created, grown and configured by Pier; deleted with the resource
/// unless `deletionPolicy: retain`.
// Several printcolumns legitimately repeat `type_ = "string"`.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kafka.pier.dev",
    version = "v1alpha1",
    kind = "KafkaTopic",
    plural = "kafkatopics",
    shortname = "kt",
    namespaced,
    status = "KafkaTopicStatus",
    derive = "PartialEq",
    doc = "A topic of a Pier-managed KafkaCluster (same namespace).",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.clusterRef.name",
        description = "The KafkaCluster"
    ),
    printcolumn(
        name = "Partitions",
        type_ = "integer",
        json_path = ".status.partitions",
        description = "Partitions in Kafka"
    ),
    printcolumn(
        name = "RF",
        type_ = "integer",
        json_path = ".status.replicationFactor",
        description = "Replication factor in Kafka"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether Kafka's topic is as the spec says"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("!has(oldSelf.topicName) || (has(self.topicName) && self.topicName == oldSelf.topicName)").message("topicName cannot change (a new topic needs a new KafkaTopic)"),
    validation = Rule::new("self.clusterRef.name == oldSelf.clusterRef.name").message("clusterRef cannot change")
)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTopicSpec {
    /// The KafkaCluster (same namespace) the topic belongs to.
    pub cluster_ref: ClusterRef,
    /// The topic's name in Kafka; `metadata.name` when absent (topic names may hold `_` and
    /// capitals, which resource names cannot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    #[x_kube(validation = Rule::new("self != '.' && self != '..'").message("topicName cannot be '.' or '..'"))]
    pub topic_name: Option<String>,
    /// Partitions. Raising it adds partitions (keys then map to other partitions); lowering it
    /// is refused (Kafka cannot remove partitions).
    #[schemars(range(min = 1, max = 100000))]
    pub partitions: i32,
    /// Replicas per partition. A change moves replicas (throttled, like a rebalance).
    #[schemars(range(min = 1, max = 32))]
    pub replication_factor: i16,
    /// Topic-level configuration (`retention.ms`, `cleanup.policy`, …). Keys absent here are
    /// Kafka's defaults: an override set in Kafka some other way is removed.
    #[serde(default)]
    #[schemars(extend("maxProperties" = 128))]
    #[x_kube(validation = crate::api::config_keys_rule())]
    pub config: BTreeMap<String, String>,
    /// What deleting the KafkaTopic does to the topic in Kafka.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// A KafkaCluster in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ClusterRef {
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// What deleting the resource does in Kafka.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum DeletionPolicy {
    /// The topic and its data are deleted.
    #[default]
    Delete,
    /// The topic stays in Kafka, unmanaged.
    Retain,
}

/// What Pier saw of the topic in Kafka.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTopicStatus {
    /// The topic's name in Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
    /// Kafka's topic id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    /// Partitions in Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Replication factor in Kafka (the largest of any partition while replicas move).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i32>,
    /// The topic existed before this resource and was taken over.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
    /// The spec generation Kafka's topic matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: Kafka's topic is as the spec says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl KafkaTopic {
    /// The topic's name in Kafka.
    pub fn topic_name(&self) -> &str {
        self.spec
            .topic_name
            .as_deref()
            .or(self.metadata.name.as_deref())
            .unwrap_or_default()
    }
}

/// Whether `name` is a topic name Kafka accepts (`.`, `..` and over 249 characters are not).
pub fn is_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOPIC_NAME_LEN
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(is_topic_name("orders"));
        assert!(is_topic_name("Orders_v2.eu-west"));
        assert!(!is_topic_name(""));
        assert!(!is_topic_name("."));
        assert!(!is_topic_name(".."));
        assert!(!is_topic_name("a b"));
        assert!(!is_topic_name("a/b"));
        assert!(is_topic_name(&"a".repeat(249)));
        assert!(!is_topic_name(&"a".repeat(250)));
    }

    #[test]
    fn the_name_defaults_to_the_resource_name() {
        let mut t = KafkaTopic::new(
            "orders",
            KafkaTopicSpec {
                cluster_ref: ClusterRef { name: "c".into() },
                topic_name: None,
                partitions: 1,
                replication_factor: 1,
                config: BTreeMap::new(),
                deletion_policy: DeletionPolicy::Delete,
            },
        );
        assert_eq!(t.topic_name(), "orders");
        t.spec.topic_name = Some("Orders_V2".into());
        assert_eq!(t.topic_name(), "Orders_V2");
    }
}
