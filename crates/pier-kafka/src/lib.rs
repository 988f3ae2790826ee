//! The Kafka admin protocol, spoken directly with the `kafka-protocol` crate. Knows nothing of
//! Kubernetes.
//!
//! - [`BrokerConnection`]: one connection to one broker (ApiVersions negotiation, framing,
//!   timeouts; a boxed byte stream chosen by [`Transport`]: plaintext or TLS with rustls,
//!   optionally SASL SCRAM/PLAIN on top) with the typed calls as methods: Metadata,
//!   CreateTopics/DeleteTopics, DescribeCluster, DescribeQuorum, DescribeConfigs,
//!   IncrementalAlterConfigs, partition reassignments (and cancelling them), ElectLeaders,
//!   UnregisterBroker, DescribeLogDirs, AlterReplicaLogDirs, Produce and Fetch, SCRAM
//!   credentials (AlterUserScramCredentials, DescribeUserScramCredentials), KRaft voter
//!   changes (AddRaftVoter, RemoveRaftVoter), feature levels (a fresh ApiVersions,
//!   UpdateFeatures), and those of the next three items (on [`AdminClient`] too):
//! - CreatePartitions: [`PartitionIncrease`] grows a topic to a total, optionally placing the
//!   new partitions; one [`TopicOutcome`] per topic.
//! - ACLs (DescribeAcls, CreateAcls, DeleteAcls): [`AclBinding`] with Kafka's codes both
//!   ways (unknown ones kept as `Unknown(code)`), [`AclFilter`] selecting them the way Kafka
//!   does; SECURITY_DISABLED when the cluster has no authorizer.
//! - Client quotas of one user (DescribeClientQuotas, AlterClientQuotas), by Kafka's keys
//!   ([`quota_keys`]).
//! - [`uuid_to_text`], [`uuid_from_text`], [`random_directory_id`]: Kafka's text form of a
//!   `Uuid` (directory and cluster ids) and directory ids generated under Kafka's rules.
//! - [`TlsConfig`], [`served_certificate`]: TLS settings from PEM; the certificate a
//!   listener serves right now (to confirm a live keystore reload).
//! - [`AdminClient`]: what the operator uses: node id → address map supplied by the caller
//!   (never the advertised addresses), one cached connection per node, a timeout per attempt,
//!   retries with exponential backoff on retriable failures only (voter changes, whose
//!   outcome is unknown once sent, only before sending), broker-specific calls sent to that
//!   broker.
//! - [`ConfigClasses`]: which broker configs are read-only, per-broker or cluster-wide, as data
//!   generated from a real broker (`config-classes/*.tsv`).
//! - [`plan_drain`]: pure planning of moving every replica off some brokers;
//!   [`plan_log_dir_moves`]: of emptying some log directories of one broker (JBOD).
//!
//! This crate has no `kube` or `k8s-openapi` dependency, so the compiler keeps it that way.
#![forbid(unsafe_code)]

mod acls;
mod admin;
mod cluster;
mod config_classes;
mod configs;
mod connection;
mod credentials;
mod error;
mod features;
mod logdirs;
mod metadata;
mod partitions;
mod quorum;
mod quotas;
mod reassign;
mod records;
mod sasl;
mod scram;
mod tls;

pub use acls::{
    AclBinding, AclFilter, AclOperation, AclPatternFilter, AclPatternType, AclPermission,
    AclResourceType, CLUSTER_RESOURCE, UnknownAclName, WILDCARD_HOST, WILDCARD_RESOURCE,
};
pub use admin::{AdminClient, AdminOptions};
pub use cluster::{ClusterBroker, ClusterDescription, METADATA_TOPIC, QuorumInfo, ReplicaState};
pub use config_classes::{
    CLUSTER_LEVEL_LISTENER_CONFIGS, ConfigClasses, LISTENER_PREFIX_ONLY, TABLE_DIR, UpdateMode,
    listener_prefixed, major_minor, needs_listener_prefix, parse_table, render_table,
    table_file_name,
};
pub use configs::{
    ConfigEntry, ConfigOp, ConfigOpKind, ConfigResource, ConfigSource, ConfigSynonym,
    DescribeConfigsOptions,
};
pub use connection::{BrokerConnection, ConnectOptions, Transport};
pub use credentials::ScramCredentialInfo;
pub use error::{KafkaError, codes};
pub use features::{
    FeatureUpdate, Features, KRAFT_VERSION_FEATURE, METADATA_VERSION_FEATURE, UpgradeType,
};
pub use logdirs::{LogDir, LogDirMove, LogDirPlan, LogDirReplica, dirs_empty, plan_log_dir_moves};
pub use metadata::{BrokerInfo, ClusterMetadata, NewTopic, PartitionInfo, TopicInfo, TopicOutcome};
pub use partitions::PartitionIncrease;
pub use quorum::{
    InvalidKafkaUuid, RaftEndpoint, is_reserved_directory_id, random_directory_id, uuid_from_text,
    uuid_to_text,
};
pub use quotas::quota_keys;
pub use reassign::{ElectionOutcome, OngoingReassignment, Reassignment, plan_drain};
pub use records::TopicRef;
pub use sasl::{SaslMechanism, SaslOptions};
pub use scram::{SCRAM_ITERATIONS, ScramMechanism, salted_password};
pub use tls::{TlsConfig, TlsOptions, certificate_serial, served_certificate, served_certificates};
