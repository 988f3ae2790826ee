//! Status of the KRaft controller quorum and of the cluster's Kafka version: what Pier chose
//! once (quorum mode, the initial controllers' directory ids) and what Kafka last said.
use serde::{Deserialize, Serialize};

/// How the controller quorum's membership is configured.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema, Default,
)]
pub enum QuorumMode {
    /// `controller.quorum.voters` on every node (clusters created before Pier formatted
    /// dynamic quorums): membership cannot change.
    #[default]
    Static,
    /// KIP-853 (`kraft.version` 1): nodes find the quorum through
    /// `controller.quorum.bootstrap.servers`; Pier adds and removes voters.
    Dynamic,
}

/// A voter of the quorum: a node id and the directory id of its metadata log dir.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuorumVoter {
    pub id: i32,
    /// Kafka Uuid (URL-safe base64); absent where Kafka did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_id: Option<String>,
}

/// The controller quorum.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuorumStatus {
    pub mode: QuorumMode,
    /// Dynamic: the controllers the cluster was formatted with (`--initial-controllers`),
    /// directory ids chosen by Pier. Kept because every initial controller must be formatted
    /// with the same list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub initial_controllers: Vec<QuorumVoter>,
    /// Dynamic: Kafka reported the initial voters; nodes formatted from now on (new ones, or
    /// an initial controller whose disk was replaced) join as observers
    /// (`--no-initial-controllers`) and Pier adds them.
    #[serde(default)]
    pub formed: bool,
    /// The voters as Kafka last reported them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voters: Vec<QuorumVoter>,
    /// The quorum leader (active controller) Kafka last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<i32>,
    /// The membership change being made or waited for, or why none can be made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The Kafka version the cluster runs and its `metadata.version`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaVersionStatus {
    /// The version every node runs, once they all run the same one (from their images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
    /// The finalized `metadata.version` level Kafka last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_version_level: Option<i32>,
    /// Its name (e.g. `4.1-IV1`), where Pier knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_version: Option<String>,
    /// What the upgrade waits for, or why metadata.version is not raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
