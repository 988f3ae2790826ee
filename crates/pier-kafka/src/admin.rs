//! [`AdminClient`]: the Kafka admin calls the operator makes, over one cached connection per
//! node, with a timeout per attempt and retries with exponential backoff.
//!
//! The caller says where each node is (`node id → host:port`, e.g. from Pod IPs) and keeps
//! that map current with [`AdminClient::set_nodes`]; the addresses brokers advertise in
//! Metadata are never dialled. Over TLS each node's certificate is verified against the name
//! [`AdminClient::set_server_names`] gives for it (its DNS name while its IP is dialled), else
//! against the host of its address; [`AdminClient::set_connect_options`] swaps transport and
//! SASL credentials (a renewed client certificate, a new CA bundle, a new password). Calls about one broker (its configs, its loggers) go to that
//! broker; every other call goes to any node, trying the nodes in turn, starting with the one
//! that answered last.
//!
//! Only failures that may pass are retried ([`KafkaError::is_retriable`]): connection
//! failures, timeouts, broken connections and the Kafka error codes the protocol marks
//! retriable. Anything else (a malformed answer, an unsupported version, INVALID_REQUEST,
//! POLICY_VIOLATION, an unknown code, …) is returned at once. Calls whose outcome is unknown
//! after a retriable failure (adding or removing a KRaft voter) are sent again only when the
//! request never reached a connection (`Resend::UnsentOnly`).
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::acls::validate_bindings;
use super::error::codes::UNKNOWN_TOPIC_OR_PARTITION;
use super::partitions::validate_increases;
use super::quorum::directory_id_arg;
use super::{
    AclBinding, AclFilter, BrokerConnection, ClusterDescription, ClusterMetadata, ConfigEntry,
    ConfigOp, ConfigResource, ConnectOptions, DescribeConfigsOptions, ElectionOutcome,
    FeatureUpdate, Features, KafkaError, LogDir, NewTopic, OngoingReassignment, PartitionIncrease,
    QuorumInfo, RaftEndpoint, Reassignment, ScramCredentialInfo, ScramMechanism, TopicOutcome,
};

/// Timeouts and retries of an [`AdminClient`].
#[derive(Debug, Clone)]
pub struct AdminOptions {
    /// Client id, connect timeout, transport and SASL, as the client starts with
    /// ([`AdminClient::set_connect_options`] replaces them). Its `request_timeout` is replaced
    /// by `call_timeout`.
    pub connect: ConnectOptions,
    /// One attempt on one node: connecting (if needed), the request and its answer.
    pub call_timeout: Duration,
    /// Rounds per call; a round of an "any node" call tries every node once.
    pub max_attempts: u32,
    /// Wait before the second round; doubles per round up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// No round starts (and no attempt runs) past this time after the call began.
    pub deadline: Duration,
}

impl Default for AdminOptions {
    fn default() -> Self {
        AdminOptions {
            connect: ConnectOptions::default(),
            call_timeout: Duration::from_secs(30),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(3),
            deadline: Duration::from_secs(60),
        }
    }
}

/// Which node(s) may answer a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Any,
    Node(i32),
}

impl Target {
    fn for_resource(resource: &ConfigResource) -> Self {
        resource.node().map_or(Target::Any, Target::Node)
    }
}

/// Which failures of a call may be followed by sending the request again (to the next node,
/// or in a later round).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// Every retriable failure: the call is safe to repeat.
    Retriable,
    /// Only retriable failures before the request was handed to a connection (connecting,
    /// TLS, SASL, version negotiation). For calls whose effect may still happen after a
    /// failure (a timeout, a raft leader that lost leadership while the change was pending):
    /// sending them again blindly could apply them twice or race a change already committing.
    UnsentOnly,
}

/// A failed attempt, and whether its request had been handed to the connection.
#[derive(Debug)]
struct Failure {
    error: KafkaError,
    sent: bool,
}

impl Failure {
    fn may_resend(&self, resend: Resend) -> bool {
        self.error.is_retriable() && (resend == Resend::Retriable || !self.sent)
    }
}

/// One node's address, the TLS name to verify for it, and its cached connection (`None`
/// until first used, or after a failure left it unusable).
#[derive(Debug)]
struct Slot {
    node: i32,
    addr: String,
    server_name: Option<String>,
    conn: tokio::sync::Mutex<Option<BrokerConnection>>,
}

#[derive(Debug, Default)]
struct State {
    slots: BTreeMap<i32, Arc<Slot>>,
    /// The node that last answered an "any node" call.
    preferred: Option<i32>,
    /// TLS names by node id (nodes without one verify the host of their address).
    server_names: BTreeMap<i32, String>,
    /// How connections are opened now.
    connect: ConnectOptions,
}

impl State {
    /// Slots for these nodes, keeping each node's connection when its address and name did
    /// not change.
    fn rebuild(&mut self, nodes: Vec<(i32, String)>) {
        let mut old = std::mem::take(&mut self.slots);
        for (node, addr) in nodes {
            let server_name = self.server_names.get(&node).cloned();
            let slot = match old.remove(&node) {
                Some(slot) if slot.addr == addr && slot.server_name == server_name => slot,
                _ => Arc::new(Slot {
                    node,
                    addr,
                    server_name,
                    conn: tokio::sync::Mutex::new(None),
                }),
            };
            self.slots.insert(node, slot);
        }
        if self.preferred.is_some_and(|p| !self.slots.contains_key(&p)) {
            self.preferred = None;
        }
    }

    fn addrs(&self) -> Vec<(i32, String)> {
        self.slots
            .iter()
            .map(|(id, slot)| (*id, slot.addr.clone()))
            .collect()
    }
}

/// The Kafka admin client Pier's operator uses. Cheap to share (`&self` everywhere); calls
/// to different nodes run in parallel, calls to one node take turns on its connection.
#[derive(Debug)]
pub struct AdminClient {
    options: AdminOptions,
    state: Mutex<State>,
}

/// A call on one connection, as the retry machinery runs it.
type Attempt<'c, T> = BoxFuture<'c, Result<T, KafkaError>>;

impl AdminClient {
    /// A client for the nodes at these addresses (`node id → host:port`). Connects lazily.
    pub fn new(nodes: impl IntoIterator<Item = (i32, String)>, options: AdminOptions) -> Self {
        let client = AdminClient {
            state: Mutex::new(State {
                connect: options.connect.clone(),
                ..State::default()
            }),
            options,
        };
        client.set_nodes(nodes);
        client
    }

    /// Replaces the node addresses. Connections of removed nodes and of nodes whose address
    /// changed are dropped (a call running on one finishes first); the others are kept.
    pub fn set_nodes(&self, nodes: impl IntoIterator<Item = (i32, String)>) {
        self.lock().rebuild(nodes.into_iter().collect());
    }

    /// Replaces the names TLS verifies per node id (e.g. each broker's DNS name while its
    /// Pod IP is dialled); a node without one verifies the host of its address. Connections
    /// of nodes whose name changed are dropped. No effect on plaintext connections.
    pub fn set_server_names(&self, names: impl IntoIterator<Item = (i32, String)>) {
        let mut state = self.lock();
        state.server_names = names.into_iter().collect();
        let nodes = state.addrs();
        state.rebuild(nodes);
    }

    /// The TLS names per node id.
    pub fn server_names(&self) -> BTreeMap<i32, String> {
        self.lock().server_names.clone()
    }

    /// Replaces how connections are opened (transport, SASL, client id, connect timeout).
    /// When they differ from the current ones, every cached connection is dropped (a call
    /// running on one finishes first), so the next call uses the new ones.
    pub fn set_connect_options(&self, connect: ConnectOptions) {
        let mut state = self.lock();
        if state.connect == connect {
            return;
        }
        state.connect = connect;
        let nodes = state.addrs();
        state.slots.clear();
        state.rebuild(nodes);
    }

    /// How connections are opened now.
    pub fn connect_options(&self) -> ConnectOptions {
        self.lock().connect.clone()
    }

    /// The current node addresses.
    pub fn nodes(&self) -> BTreeMap<i32, String> {
        self.lock().addrs().into_iter().collect()
    }

    pub fn options(&self) -> &AdminOptions {
        &self.options
    }

    /// Cluster metadata (all topics, or just those named) from any node. Its broker
    /// addresses are the advertised ones.
    pub async fn metadata(&self, topics: Option<&[&str]>) -> Result<ClusterMetadata, KafkaError> {
        let topics: Option<Vec<String>> = topics.map(|t| t.iter().map(|s| s.to_string()).collect());
        self.call("Metadata", Target::Any, |c| {
            let topics = topics.clone();
            Box::pin(async move {
                let names: Option<Vec<&str>> = topics
                    .as_ref()
                    .map(|t| t.iter().map(String::as_str).collect());
                c.metadata(names.as_deref()).await
            })
        })
        .await
    }

    /// The cluster id, controller and registered brokers (fenced ones included on Kafka 4+).
    pub async fn describe_cluster(&self) -> Result<ClusterDescription, KafkaError> {
        self.call("DescribeCluster", Target::Any, |c| {
            Box::pin(c.describe_cluster())
        })
        .await
    }

    /// The KRaft controller quorum.
    pub async fn describe_quorum(&self) -> Result<QuorumInfo, KafkaError> {
        self.call("DescribeQuorum", Target::Any, |c| {
            Box::pin(c.describe_quorum())
        })
        .await
    }

    /// Adds a voter to the KRaft quorum (AddRaftVoter, sent to any broker, which forwards it
    /// to the active controller). `directory_id` is the new voter's metadata dir id in
    /// Kafka's text form (as DescribeQuorum shows it for the observer); `listeners` must
    /// include the leader's default controller listener name; `cluster_id` `None` skips
    /// Kafka's check; the broker waits up to `timeout_ms` (capped below the call timeout).
    ///
    /// **Not retried once sent.** REQUEST_TIMED_OUT (another change pending, the voter
    /// lagging or unreachable, or the commit not done in time), NOT_LEADER_OR_FOLLOWER (the
    /// leader changed while the change was pending), a timeout or a connection lost after
    /// sending all leave the outcome unknown: the voter may still be added. Read
    /// [`AdminClient::describe_quorum`] before trying again. Only failures before the request
    /// was sent (connecting, TLS, SASL) move on to another node or a later round. Kafka's
    /// own refusals keep their code and message: DUPLICATE_VOTER (the id is a voter, with any
    /// directory id), UNSUPPORTED_VERSION (kraft.version 0: a static quorum),
    /// INCONSISTENT_CLUSTER_ID, INVALID_REQUEST.
    pub async fn add_raft_voter(
        &self,
        cluster_id: Option<&str>,
        voter_id: i32,
        directory_id: &str,
        listeners: &[RaftEndpoint],
        timeout_ms: i32,
    ) -> Result<(), KafkaError> {
        let api = "AddRaftVoter";
        directory_id_arg(api, directory_id)?;
        self.call_with(api, Target::Any, Resend::UnsentOnly, |c| {
            let cluster_id = cluster_id.map(str::to_string);
            let (directory_id, listeners) = (directory_id.to_string(), listeners.to_vec());
            Box::pin(async move {
                c.add_raft_voter(
                    cluster_id.as_deref(),
                    voter_id,
                    &directory_id,
                    &listeners,
                    timeout_ms,
                )
                .await
            })
        })
        .await
    }

    /// Removes the voter with this id and directory id from the KRaft quorum
    /// (RemoveRaftVoter, sent to any broker, which forwards it). Removing the leader is
    /// allowed: it commits the change, then resigns (expect a new leader). VOTER_NOT_FOUND
    /// when no voter has both (or it is the last voter).
    ///
    /// **Not retried once sent**, for the reasons given at [`AdminClient::add_raft_voter`]:
    /// after REQUEST_TIMED_OUT, NOT_LEADER_OR_FOLLOWER, a timeout or a lost connection the
    /// voter may still be removed; read [`AdminClient::describe_quorum`] before trying again.
    pub async fn remove_raft_voter(
        &self,
        cluster_id: Option<&str>,
        voter_id: i32,
        directory_id: &str,
    ) -> Result<(), KafkaError> {
        let api = "RemoveRaftVoter";
        directory_id_arg(api, directory_id)?;
        self.call_with(api, Target::Any, Resend::UnsentOnly, |c| {
            let cluster_id = cluster_id.map(str::to_string);
            let directory_id = directory_id.to_string();
            Box::pin(async move {
                c.remove_raft_voter(cluster_id.as_deref(), voter_id, &directory_id)
                    .await
            })
        })
        .await
    }

    /// Feature levels (finalized, supported, epoch) as the answering node knows them, from a
    /// new ApiVersions request. A node may show an update a moment after the controller
    /// accepted it; compare [`Features::finalized_epoch`] or wait for the level.
    pub async fn features(&self) -> Result<Features, KafkaError> {
        self.call("ApiVersions", Target::Any, |c| Box::pin(c.features()))
            .await
    }

    /// Changes finalized feature levels (UpdateFeatures, sent to any broker, which forwards
    /// it). All or nothing: Kafka's refusal (INVALID_UPDATE_VERSION with its reason) is the
    /// error. Send only the features meant to change. With `validate_only` nothing changes.
    /// Retried like other calls: asking again for the level already finalized is no change.
    pub async fn update_features(
        &self,
        updates: &[FeatureUpdate],
        validate_only: bool,
    ) -> Result<(), KafkaError> {
        self.call("UpdateFeatures", Target::Any, |c| {
            let updates = updates.to_vec();
            Box::pin(async move { c.update_features(&updates, validate_only).await })
        })
        .await
    }

    /// Every config of one resource, sorted by name, without synonyms; a broker's (or its
    /// loggers') from that broker, the cluster-wide default's and topics' from any node.
    pub async fn describe_configs(
        &self,
        resource: &ConfigResource,
    ) -> Result<Vec<ConfigEntry>, KafkaError> {
        self.describe_configs_with(resource, &DescribeConfigsOptions::default())
            .await
    }

    /// Like [`AdminClient::describe_configs`], as `options` ask (some keys only, synonyms).
    pub async fn describe_configs_with(
        &self,
        resource: &ConfigResource,
        options: &DescribeConfigsOptions,
    ) -> Result<Vec<ConfigEntry>, KafkaError> {
        self.call("DescribeConfigs", Target::for_resource(resource), |c| {
            let (resource, options) = (resource.clone(), options.clone());
            Box::pin(async move { c.describe_configs_with(&resource, &options).await })
        })
        .await
    }

    /// Some configs of many topics in one request, by topic (topics deleted meanwhile are
    /// left out).
    pub async fn describe_topic_configs(
        &self,
        topics: &[String],
        keys: &[String],
    ) -> Result<BTreeMap<String, Vec<ConfigEntry>>, KafkaError> {
        self.call("DescribeConfigs", Target::Any, |c| {
            let (topics, keys) = (topics.to_vec(), keys.to_vec());
            Box::pin(async move { c.describe_topic_configs(&topics, &keys).await })
        })
        .await
    }

    /// Sets and deletes configs of one resource (IncrementalAlterConfigs; never the legacy
    /// AlterConfigs). A broker's go to that broker, the rest to any node. With
    /// `validate_only` the broker only checks the change.
    pub async fn incremental_alter_configs(
        &self,
        resource: &ConfigResource,
        ops: &[ConfigOp],
        validate_only: bool,
    ) -> Result<(), KafkaError> {
        self.call(
            "IncrementalAlterConfigs",
            Target::for_resource(resource),
            |c| {
                let (resource, ops) = (resource.clone(), ops.to_vec());
                Box::pin(async move {
                    c.incremental_alter_configs(&resource, &ops, validate_only)
                        .await
                })
            },
        )
        .await
    }

    /// Partitions whose reassignment is in progress, with the replicas being added and removed.
    pub async fn list_partition_reassignments(
        &self,
    ) -> Result<Vec<OngoingReassignment>, KafkaError> {
        self.call("ListPartitionReassignments", Target::Any, |c| {
            Box::pin(c.list_partition_reassignments())
        })
        .await
    }

    /// Cancels the reassignments of these partitions (each reverts to its original replicas);
    /// a partition that is no longer moving is no error.
    pub async fn cancel_partition_reassignments(
        &self,
        partitions: &[(String, i32)],
    ) -> Result<(), KafkaError> {
        self.call("AlterPartitionReassignments", Target::Any, |c| {
            let partitions = partitions.to_vec();
            Box::pin(async move { c.cancel_partition_reassignments(&partitions).await })
        })
        .await
    }

    /// Removes a broker gone for good from the cluster metadata; `false` if it was not
    /// registered.
    pub async fn unregister_broker(&self, id: i32) -> Result<bool, KafkaError> {
        self.call("UnregisterBroker", Target::Any, |c| {
            Box::pin(c.unregister_broker(id))
        })
        .await
    }

    /// The log directories of one broker, asked of that broker.
    pub async fn describe_log_dirs(&self, broker: i32) -> Result<Vec<LogDir>, KafkaError> {
        self.call("DescribeLogDirs", Target::Node(broker), |c| {
            Box::pin(c.describe_log_dirs())
        })
        .await
    }

    /// Moves replicas of one broker into other log directories of that broker, asked of that
    /// broker: `(destination dir, topic, partition)`. Per-partition failures are in the
    /// outcomes (not retried); asking again for the same destination does not restart a
    /// running copy, so a retry of the whole call is harmless.
    pub async fn alter_replica_log_dirs(
        &self,
        broker: i32,
        moves: &[(String, String, i32)],
    ) -> Result<Vec<(String, i32, Result<(), KafkaError>)>, KafkaError> {
        self.call("AlterReplicaLogDirs", Target::Node(broker), |c| {
            let moves = moves.to_vec();
            Box::pin(async move { c.alter_replica_log_dirs(&moves).await })
        })
        .await
    }

    /// Starts moving partitions to the given replicas (resubmitting the same target on a
    /// retry is harmless).
    pub async fn alter_partition_reassignments(
        &self,
        moves: &[Reassignment],
    ) -> Result<(), KafkaError> {
        self.call("AlterPartitionReassignments", Target::Any, |c| {
            let moves = moves.to_vec();
            Box::pin(async move { c.alter_partition_reassignments(&moves).await })
        })
        .await
    }

    /// Moves leadership to the preferred replica for the given partitions (`None`: all).
    /// Per-partition failures are in the outcomes (not retried); ELECTION_NOT_NEEDED is a
    /// success.
    pub async fn elect_leaders(
        &self,
        partitions: Option<&[(String, i32)]>,
    ) -> Result<Vec<ElectionOutcome>, KafkaError> {
        let partitions: Option<Vec<(String, i32)>> = partitions.map(<[_]>::to_vec);
        self.call("ElectLeaders", Target::Any, |c| {
            let partitions = partitions.clone();
            Box::pin(async move { c.elect_leaders(partitions.as_deref()).await })
        })
        .await
    }

    /// Moves leadership of every partition to its preferred replica; the first partition
    /// that failed (ELECTION_NOT_NEEDED is no failure) is the error.
    pub async fn elect_preferred_leaders(&self) -> Result<(), KafkaError> {
        self.elect_leaders(None)
            .await?
            .into_iter()
            .try_for_each(|o| o.result)
    }

    /// Creates topics: one outcome per topic, in the order given. Topics that failed with a
    /// retriable error are retried on their own (so one that was created by an attempt that
    /// timed out may end as TOPIC_ALREADY_EXISTS).
    pub async fn create_topics(
        &self,
        topics: &[NewTopic],
    ) -> Result<Vec<TopicOutcome>, KafkaError> {
        self.topic_call(
            "CreateTopics",
            topics,
            |t| &t.name,
            |c, batch| Box::pin(async move { c.create_topics(&batch).await }),
        )
        .await
    }

    /// Creates one topic.
    pub async fn create_topic(&self, topic: &NewTopic) -> Result<(), KafkaError> {
        let mut outcomes = self.create_topics(std::slice::from_ref(topic)).await?;
        match outcomes.pop() {
            Some(o) => o.result,
            None => Err(KafkaError::malformed(
                "any node",
                "CreateTopics",
                format!("no result for topic {}", topic.name),
            )),
        }
    }

    /// Deletes topics by name: one outcome per name, in the order given; a topic that does not
    /// exist fails with UNKNOWN_TOPIC_OR_PARTITION (not retried).
    pub async fn delete_topics(&self, names: &[&str]) -> Result<Vec<TopicOutcome>, KafkaError> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        self.topic_call(
            "DeleteTopics",
            &names,
            |n| n,
            |c, batch| {
                Box::pin(async move {
                    let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
                    c.delete_topics(&refs).await
                })
            },
        )
        .await
    }

    /// Creates or replaces `user`'s SCRAM credential for `mechanism`, salted on this side
    /// with a fresh random salt (iterations in 4096..=16384); any node forwards it. Applies to
    /// new connections.
    pub async fn upsert_user_scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
        password: &str,
        iterations: u32,
    ) -> Result<(), KafkaError> {
        self.call("AlterUserScramCredentials", Target::Any, |c| {
            let (user, password) = (user.to_string(), password.to_string());
            Box::pin(async move {
                c.upsert_scram_credential(&user, mechanism, &password, iterations)
                    .await
            })
        })
        .await
    }

    /// Deletes `user`'s SCRAM credential for `mechanism`; one that does not exist fails with
    /// RESOURCE_NOT_FOUND (also when a retry follows an attempt that deleted it).
    pub async fn delete_user_scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<(), KafkaError> {
        self.call("AlterUserScramCredentials", Target::Any, |c| {
            let user = user.to_string();
            Box::pin(async move { c.delete_scram_credential(&user, mechanism).await })
        })
        .await
    }

    /// The SCRAM credentials (mechanism, iterations) of these users (`None`: every user), by
    /// user; named users without credentials are left out.
    pub async fn describe_user_scram_credentials(
        &self,
        users: Option<&[&str]>,
    ) -> Result<BTreeMap<String, Vec<ScramCredentialInfo>>, KafkaError> {
        let users: Option<Vec<String>> = users.map(|u| u.iter().map(|s| s.to_string()).collect());
        self.call("DescribeUserScramCredentials", Target::Any, |c| {
            let users = users.clone();
            Box::pin(async move { c.describe_scram_credentials(users.as_deref()).await })
        })
        .await
    }

    /// Grows topics to the given partition totals (CreatePartitions, any node, forwarded to
    /// the controller): one outcome per topic, in the order given. Invalid increases
    /// ([`PartitionIncrease::validate`], a topic named twice) fail before anything is sent.
    /// Topics that failed with a retriable error are retried on their own, so one grown by
    /// an attempt that timed out may end as INVALID_PARTITIONS ("already has N partitions");
    /// compare with Metadata. Shrinking is INVALID_PARTITIONS, a topic that does not exist
    /// UNKNOWN_TOPIC_OR_PARTITION (neither retried).
    pub async fn create_partitions(
        &self,
        increases: &[PartitionIncrease],
    ) -> Result<Vec<TopicOutcome>, KafkaError> {
        validate_increases(increases)?;
        self.topic_call(
            "CreatePartitions",
            increases,
            |i| &i.topic,
            |c, batch| Box::pin(async move { c.create_partitions(&batch).await }),
        )
        .await
    }

    /// The ACLs `filter` selects, sorted (from any node, whose copy of the ACLs may lag the
    /// controller's by a moment after a change). SECURITY_DISABLED
    /// ([`KafkaError::is_security_disabled`]) when the cluster has no authorizer.
    pub async fn describe_acls(&self, filter: &AclFilter) -> Result<Vec<AclBinding>, KafkaError> {
        self.call("DescribeAcls", Target::Any, |c| {
            let filter = filter.clone();
            Box::pin(async move { c.describe_acls(&filter).await })
        })
        .await
    }

    /// Creates ACLs (any node, forwarded to the controller); creating one that exists is no
    /// change, so retries are harmless. Invalid ones ([`AclBinding::validate`]) fail before
    /// anything is sent; the first ACL Kafka refused is the error, named in its message.
    pub async fn create_acls(&self, bindings: &[AclBinding]) -> Result<(), KafkaError> {
        validate_bindings(bindings)?;
        self.call("CreateAcls", Target::Any, |c| {
            let bindings = bindings.to_vec();
            Box::pin(async move { c.create_acls(&bindings).await })
        })
        .await
    }

    /// Deletes the ACLs the filters select (any node, forwarded to the controller) and
    /// returns them, sorted. A retry after an attempt whose answer was lost returns only what
    /// was left to delete. Beware: [`AclFilter::any`] selects every ACL of the cluster.
    pub async fn delete_acls(&self, filters: &[AclFilter]) -> Result<Vec<AclBinding>, KafkaError> {
        self.call("DeleteAcls", Target::Any, |c| {
            let filters = filters.to_vec();
            Box::pin(async move { c.delete_acls(&filters).await })
        })
        .await
    }

    /// The client quotas of `user` itself by key ([`quota_keys`](crate::quota_keys)), empty
    /// when none is set (from any node, whose copy may lag the controller's by a moment after
    /// a change).
    pub async fn describe_client_quotas(
        &self,
        user: &str,
    ) -> Result<BTreeMap<String, f64>, KafkaError> {
        self.call("DescribeClientQuotas", Target::Any, |c| {
            let user = user.to_string();
            Box::pin(async move { c.describe_client_quotas(&user).await })
        })
        .await
    }

    /// Sets the quotas in `set` and removes those in `remove` for `user` itself, all or
    /// nothing (any node, forwarded to the controller; repeating it is no change, so retries
    /// are harmless). Unknown keys fail with INVALID_REQUEST; see
    /// [`BrokerConnection::alter_client_quotas`] for what fails before sending.
    pub async fn alter_client_quotas(
        &self,
        user: &str,
        set: &BTreeMap<String, f64>,
        remove: &[String],
    ) -> Result<(), KafkaError> {
        self.call("AlterClientQuotas", Target::Any, |c| {
            let (user, set, remove) = (user.to_string(), set.clone(), remove.to_vec());
            Box::pin(async move { c.alter_client_quotas(&user, &set, &remove).await })
        })
        .await
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent after every statement; a panic elsewhere cannot tear it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The nodes to try, in order.
    fn candidates(&self, api: &str, target: Target) -> Result<Vec<Arc<Slot>>, KafkaError> {
        let state = self.lock();
        match target {
            Target::Node(node) => {
                state
                    .slots
                    .get(&node)
                    .map(|s| vec![s.clone()])
                    .ok_or_else(|| KafkaError::UnknownNode {
                        api: api.to_string(),
                        node,
                    })
            }
            Target::Any => {
                if state.slots.is_empty() {
                    return Err(KafkaError::NoNodes {
                        api: api.to_string(),
                    });
                }
                // The preferred node first, then the others in id order after it.
                let start = state.preferred.unwrap_or(i32::MIN);
                let (before, after): (Vec<_>, Vec<_>) =
                    state.slots.values().cloned().partition(|s| s.node < start);
                Ok(after.into_iter().chain(before).collect())
            }
        }
    }

    /// Runs `f` until it succeeds, fails for good, or the retries are used up.
    async fn call<T, F>(&self, api: &str, target: Target, f: F) -> Result<T, KafkaError>
    where
        F: for<'c> Fn(&'c mut BrokerConnection) -> Attempt<'c, T> + Sync,
        T: Send,
    {
        self.call_with(api, target, Resend::Retriable, f).await
    }

    /// Like [`AdminClient::call`], sending the request again only after the failures
    /// `resend` allows.
    async fn call_with<T, F>(
        &self,
        api: &str,
        target: Target,
        resend: Resend,
        f: F,
    ) -> Result<T, KafkaError>
    where
        F: for<'c> Fn(&'c mut BrokerConnection) -> Attempt<'c, T> + Sync,
        T: Send,
    {
        let mut retry = Retry::new(&self.options);
        loop {
            match self.round(api, target, resend, &f, &retry).await {
                Ok(v) => return Ok(v),
                Err(failure) => {
                    // Every node asked refused the connection: nobody listens (brokers down or
                    // starting), which a backoff of a second does not change. Retrying would
                    // only make a caller asking each of many down brokers in turn wait for
                    // every one's backoffs (a thousand brokers, minutes).
                    if failure.error.is_refused()
                        || !failure.may_resend(resend)
                        || !retry.again(api, &failure.error).await
                    {
                        return Err(failure.error);
                    }
                }
            }
        }
    }

    /// One round: every candidate node once, until one answers or one fails for good (or,
    /// under [`Resend::UnsentOnly`], fails after its request was sent).
    async fn round<T, F>(
        &self,
        api: &str,
        target: Target,
        resend: Resend,
        f: &F,
        retry: &Retry,
    ) -> Result<T, Failure>
    where
        F: for<'c> Fn(&'c mut BrokerConnection) -> Attempt<'c, T> + Sync,
        T: Send,
    {
        let mut last: Option<Failure> = None;
        let candidates = self
            .candidates(api, target)
            .map_err(|error| Failure { error, sent: false })?;
        for slot in candidates {
            let Some(remaining) = retry.remaining() else {
                break;
            };
            let after = remaining.min(self.options.call_timeout);
            match self.attempt(&slot, api, after, f).await {
                Ok(v) => {
                    if target == Target::Any {
                        self.lock().preferred = Some(slot.node);
                    }
                    return Ok(v);
                }
                Err(failure) if failure.may_resend(resend) && target == Target::Any => {
                    tracing::debug!(api, node = slot.node, error = %failure.error, "trying the next Kafka node");
                    // A refusal is the round's error only if every node refused.
                    if last.as_ref().is_none_or(|l| l.error.is_refused()) {
                        last = Some(failure);
                    }
                }
                Err(failure) => return Err(failure),
            }
        }
        Err(last.unwrap_or_else(|| Failure {
            error: KafkaError::Timeout {
                addr: "any node".to_string(),
                api: api.to_string(),
                after: self.options.deadline,
            },
            sent: false,
        }))
    }

    /// One attempt on one node, on its cached connection (connecting if there is none or it
    /// is broken). A connection interrupted by the timeout is dropped, never reused. The
    /// failure says whether `f` had started, i.e. whether the request may have been sent.
    async fn attempt<T, F>(
        &self,
        slot: &Slot,
        api: &str,
        after: Duration,
        f: &F,
    ) -> Result<T, Failure>
    where
        F: for<'c> Fn(&'c mut BrokerConnection) -> Attempt<'c, T> + Sync,
        T: Send,
    {
        let sent = AtomicBool::new(false);
        let work = async {
            let mut cached = slot.conn.lock().await;
            let mut conn = match cached.take() {
                Some(c) if !c.is_broken() => c,
                _ => {
                    let options = ConnectOptions {
                        request_timeout: self.options.call_timeout,
                        ..self.connect_options()
                    };
                    BrokerConnection::connect_named(
                        &slot.addr,
                        slot.server_name.as_deref(),
                        options,
                    )
                    .await?
                }
            };
            sent.store(true, Ordering::SeqCst);
            let result = f(&mut conn).await;
            if !conn.is_broken() {
                *cached = Some(conn);
            }
            result
        };
        let result = tokio::time::timeout(after, work).await;
        let sent = sent.load(Ordering::SeqCst);
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(error)) => Err(Failure { error, sent }),
            Err(_) => Err(Failure {
                error: KafkaError::Timeout {
                    addr: slot.addr.clone(),
                    api: api.to_string(),
                    after,
                },
                sent,
            }),
        }
    }

    /// A per-topic call: topics that failed with a retriable error are sent again on their
    /// own; topics that succeeded or failed for good keep their outcome. A whole-call failure
    /// is the result only while no topic has an outcome yet.
    async fn topic_call<I, N, F>(
        &self,
        api: &str,
        items: &[I],
        name: N,
        send: F,
    ) -> Result<Vec<TopicOutcome>, KafkaError>
    where
        I: Clone + Send + Sync,
        N: Fn(&I) -> &str,
        F: for<'c> Fn(&'c mut BrokerConnection, Vec<I>) -> Attempt<'c, Vec<TopicOutcome>> + Sync,
    {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let retriable =
            |e: &KafkaError| e.is_retriable() && e.code() != Some(UNKNOWN_TOPIC_OR_PARTITION);
        let mut settled: HashMap<String, Result<(), KafkaError>> = HashMap::new();
        let mut pending: Vec<I> = items.to_vec();
        let mut answered = false;
        let mut retry = Retry::new(&self.options);
        loop {
            let batch = pending.clone();
            let round = self
                .round(
                    api,
                    Target::Any,
                    Resend::Retriable,
                    &|c| send(c, batch.clone()),
                    &retry,
                )
                .await
                .map_err(|failure| failure.error);
            let err = match round {
                Ok(outcomes) => {
                    answered = true;
                    let mut again = None;
                    for o in outcomes {
                        if let Err(e) = &o.result
                            && retriable(e)
                        {
                            again.get_or_insert_with(|| e.clone());
                        }
                        settled.insert(o.name, o.result);
                    }
                    pending.retain(|i| match settled.get(name(i)) {
                        Some(Err(e)) => retriable(e),
                        Some(Ok(())) => false,
                        None => true,
                    });
                    match again {
                        None if pending.is_empty() => break,
                        None => KafkaError::malformed(
                            "any node",
                            api,
                            "the answer left out some topics",
                        ),
                        Some(e) => e,
                    }
                }
                Err(e) if !answered => {
                    if retry.again(api, &e).await {
                        continue;
                    }
                    return Err(e);
                }
                Err(e) => {
                    for i in &pending {
                        settled.insert(name(i).to_string(), Err(e.clone()));
                    }
                    e
                }
            };
            if !retry.again(api, &err).await {
                break;
            }
        }
        Ok(items
            .iter()
            .map(|i| {
                let name = name(i).to_string();
                let result = settled.remove(&name).unwrap_or_else(|| {
                    Err(KafkaError::malformed(
                        "any node",
                        api,
                        format!("no result for topic {name}"),
                    ))
                });
                TopicOutcome { name, result }
            })
            .collect())
    }
}

/// The retry budget of one call.
struct Retry {
    start: Instant,
    rounds: u32,
    backoff: Duration,
    options: AdminOptions,
}

impl Retry {
    fn new(options: &AdminOptions) -> Self {
        Retry {
            start: Instant::now(),
            rounds: 1,
            backoff: options.initial_backoff,
            options: options.clone(),
        }
    }

    /// Time left before the deadline, if any.
    fn remaining(&self) -> Option<Duration> {
        self.options
            .deadline
            .checked_sub(self.start.elapsed())
            .filter(|d| !d.is_zero())
    }

    /// Whether another round fits in the budget.
    fn can_retry(&self) -> bool {
        self.rounds < self.options.max_attempts
            && self.remaining().is_some_and(|r| r > self.backoff)
    }

    /// Waits before the next round if `err` is worth retrying and the budget allows.
    async fn again(&mut self, api: &str, err: &KafkaError) -> bool {
        if !err.is_retriable() || !self.can_retry() {
            return false;
        }
        tracing::debug!(api, round = self.rounds, backoff = ?self.backoff, error = %err, "retrying Kafka call");
        tokio::time::sleep(self.backoff).await;
        self.rounds += 1;
        self.backoff = (self.backoff * 2).min(self.options.max_backoff);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::testing::{FakeBroker, Reply, fake_broker};
    use crate::error::codes;
    use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
    use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
    use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
    use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
    use kafka_protocol::messages::{
        AddRaftVoterResponse, ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse,
        DeleteTopicsResponse, DescribeClusterResponse, DescribeConfigsRequest,
        DescribeConfigsResponse, RemoveRaftVoterResponse, TopicName, UpdateFeaturesResponse,
    };
    use kafka_protocol::protocol::StrBytes;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn quick() -> AdminOptions {
        AdminOptions {
            call_timeout: Duration::from_millis(500),
            max_attempts: 4,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            deadline: Duration::from_secs(5),
            ..AdminOptions::default()
        }
    }

    fn cluster(error_code: i16) -> DescribeClusterResponse {
        DescribeClusterResponse::default()
            .with_error_code(error_code)
            .with_cluster_id(StrBytes::from_static_str("c"))
            .with_brokers(vec![
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(1))
                    .with_host(StrBytes::from_static_str("advertised-only"))
                    .with_port(1),
            ])
    }

    /// A fake broker answering DescribeCluster with these error codes in turn (0 after them).
    async fn cluster_broker(codes: &'static [i16]) -> FakeBroker {
        fake_broker(&[(ApiKey::DescribeCluster, 2)], move |req| {
            req.respond(&cluster(codes.get(req.index).copied().unwrap_or(0)))
        })
        .await
    }

    fn dead_addr() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    }

    /// The operator shares one client between tasks and spawns its calls.
    #[test]
    fn the_client_is_shareable_and_its_calls_can_be_spawned() {
        fn shareable<T: Send + Sync>() {}
        fn spawnable<T: Send>(_: T) {}
        shareable::<AdminClient>();
        let admin = AdminClient::new([], AdminOptions::default());
        let resource = ConfigResource::Broker(1);
        spawnable(admin.metadata(None));
        spawnable(admin.describe_cluster());
        spawnable(admin.describe_quorum());
        spawnable(admin.describe_configs(&resource));
        spawnable(admin.incremental_alter_configs(&resource, &[], true));
        spawnable(admin.list_partition_reassignments());
        spawnable(admin.alter_partition_reassignments(&[]));
        spawnable(admin.elect_leaders(None));
        spawnable(admin.elect_preferred_leaders());
        spawnable(admin.create_topics(&[]));
        spawnable(admin.delete_topics(&[]));
        spawnable(admin.describe_log_dirs(1));
        spawnable(admin.alter_replica_log_dirs(1, &[]));
        spawnable(admin.add_raft_voter(None, 1, "3Db5QLSqSZieL3rJBUUegA", &[], 1000));
        spawnable(admin.remove_raft_voter(None, 1, "3Db5QLSqSZieL3rJBUUegA"));
        spawnable(admin.features());
        spawnable(admin.update_features(&[], true));
        spawnable(admin.create_partitions(&[]));
        spawnable(admin.describe_acls(&AclFilter::any()));
        spawnable(admin.create_acls(&[]));
        spawnable(admin.delete_acls(&[]));
        spawnable(admin.describe_client_quotas("u"));
        spawnable(admin.alter_client_quotas("u", &BTreeMap::new(), &[]));
    }

    #[tokio::test]
    async fn retriable_codes_are_retried_until_success() {
        let broker = cluster_broker(&[codes::NOT_CONTROLLER, codes::REQUEST_TIMED_OUT]).await;
        let admin = AdminClient::new([(1, broker.addr.clone())], quick());
        let d = admin.describe_cluster().await.unwrap();
        assert_eq!(d.brokers[0].host, "advertised-only");
        assert_eq!(broker.requests(), 3);
        assert_eq!(
            broker.connections(),
            1,
            "a Kafka error keeps the connection"
        );
    }

    #[tokio::test]
    async fn refused_connections_are_not_retried() {
        // Addresses where nothing listens: a port bound, then released.
        let refusing = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let slow = AdminOptions {
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(2),
            ..quick()
        };
        let admin = AdminClient::new([(1, refusing()), (2, refusing())], slow.clone());
        let started = Instant::now();
        let err = admin.describe_log_dirs(1).await.unwrap_err();
        assert!(err.is_refused(), "{err}");
        let err = admin.describe_cluster().await.unwrap_err();
        assert!(err.is_refused(), "every node refused: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no backoff: {:?}",
            started.elapsed()
        );
        // One node answering with a retriable error: the round's error is that one, retried.
        let broker = cluster_broker(&[codes::NOT_CONTROLLER]).await;
        let admin = AdminClient::new([(1, refusing()), (2, broker.addr.clone())], quick());
        admin.describe_cluster().await.unwrap();
        assert_eq!(broker.requests(), 2);
    }

    #[tokio::test]
    async fn non_retriable_codes_fail_at_once() {
        for code in [codes::INVALID_REQUEST, codes::POLICY_VIOLATION, 9999] {
            let codes: &'static [i16] = Box::leak(Box::new([code]));
            let broker = cluster_broker(codes).await;
            let admin = AdminClient::new([(1, broker.addr.clone())], quick());
            let err = admin.describe_cluster().await.unwrap_err();
            assert_eq!(err.code(), Some(code));
            assert!(err.to_string().contains(&broker.addr), "{err}");
            assert_eq!(broker.requests(), 1, "no retry for {code}");
        }
    }

    #[tokio::test]
    async fn retries_are_bounded() {
        let always: &'static [i16] = &[codes::NOT_CONTROLLER; 100];
        let broker = cluster_broker(always).await;
        let admin = AdminClient::new([(1, broker.addr.clone())], quick());
        let err = admin.describe_cluster().await.unwrap_err();
        assert_eq!(err.code(), Some(codes::NOT_CONTROLLER));
        assert_eq!(broker.requests(), 4, "max_attempts");
    }

    #[tokio::test]
    async fn a_broken_connection_is_replaced() {
        let broker = fake_broker(&[(ApiKey::DescribeCluster, 2)], |req| {
            if req.index == 0 {
                Reply::Close
            } else {
                req.respond(&cluster(0))
            }
        })
        .await;
        let admin = AdminClient::new([(1, broker.addr.clone())], quick());
        admin.describe_cluster().await.unwrap();
        assert_eq!(broker.connections(), 2);
        admin.describe_cluster().await.unwrap();
        assert_eq!(broker.connections(), 2, "the good connection is cached");
    }

    #[tokio::test]
    async fn malformed_answers_fail_at_once() {
        let broker = fake_broker(&[(ApiKey::DescribeCluster, 2)], |req| {
            let Reply::Body(full) = req.respond(&cluster(0)) else {
                unreachable!()
            };
            Reply::Body(full[..full.len() - 4].to_vec())
        })
        .await;
        let admin = AdminClient::new([(1, broker.addr.clone())], quick());
        let err = admin.describe_cluster().await.unwrap_err();
        assert!(matches!(err, KafkaError::Decode { .. }), "{err}");
        assert!(err.to_string().contains("DescribeCluster"), "{err}");
        assert_eq!(broker.requests(), 1);
    }

    #[tokio::test]
    async fn a_silent_broker_times_out_per_call() {
        let broker = fake_broker(&[(ApiKey::DescribeCluster, 2)], |_| Reply::Silent).await;
        let options = AdminOptions {
            call_timeout: Duration::from_millis(100),
            max_attempts: 2,
            ..quick()
        };
        let admin = AdminClient::new([(1, broker.addr.clone())], options);
        let started = std::time::Instant::now();
        let err = admin.describe_cluster().await.unwrap_err();
        assert!(matches!(err, KafkaError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(broker.requests(), 2);
        assert_eq!(
            broker.connections(),
            2,
            "a timed-out connection is not reused"
        );
    }

    #[tokio::test]
    async fn any_node_calls_skip_dead_nodes_and_stick_to_the_live_one() {
        let live = cluster_broker(&[]).await;
        let admin = AdminClient::new([(1, dead_addr()), (2, live.addr.clone())], quick());
        admin.describe_cluster().await.unwrap();
        admin.describe_cluster().await.unwrap();
        assert_eq!(live.requests(), 2);
        assert_eq!(admin.lock().preferred, Some(2));
    }

    fn configs_broker(
        id: i32,
        seen: Arc<AtomicUsize>,
    ) -> impl Fn(&crate::connection::testing::Received) -> Reply {
        move |req| {
            let r: DescribeConfigsRequest = req.decode();
            let name = r.resources[0].resource_name.to_string();
            seen.fetch_add(1, Ordering::SeqCst);
            // Like Kafka: a broker resource is answered only by that broker.
            let code = if name.is_empty() || name == id.to_string() {
                0
            } else {
                codes::INVALID_REQUEST
            };
            req.respond(&DescribeConfigsResponse::default().with_results(vec![
                DescribeConfigsResult::default()
                    .with_error_code(code)
                    .with_resource_type(4)
                    .with_resource_name(StrBytes::from_string(name)),
            ]))
        }
    }

    #[tokio::test]
    async fn broker_resources_go_to_their_broker() {
        let (seen1, seen2) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let b1 = fake_broker(
            &[(ApiKey::DescribeConfigs, 4)],
            configs_broker(1, seen1.clone()),
        )
        .await;
        let b2 = fake_broker(
            &[(ApiKey::DescribeConfigs, 4)],
            configs_broker(2, seen2.clone()),
        )
        .await;
        let admin = AdminClient::new([(1, b1.addr.clone()), (2, b2.addr.clone())], quick());
        admin
            .describe_configs(&ConfigResource::Broker(2))
            .await
            .unwrap();
        admin
            .describe_configs(&ConfigResource::Broker(1))
            .await
            .unwrap();
        admin
            .describe_configs(&ConfigResource::Broker(2))
            .await
            .unwrap();
        assert_eq!(
            (seen1.load(Ordering::SeqCst), seen2.load(Ordering::SeqCst)),
            (1, 2)
        );
        admin
            .describe_configs(&ConfigResource::BrokerDefault)
            .await
            .unwrap();
        assert_eq!(
            seen1.load(Ordering::SeqCst) + seen2.load(Ordering::SeqCst),
            4
        );
        let err = admin
            .describe_configs(&ConfigResource::Broker(3))
            .await
            .unwrap_err();
        assert!(
            matches!(err, KafkaError::UnknownNode { node: 3, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_dead_target_broker_fails_after_the_retries_with_its_address() {
        let live = cluster_broker(&[]).await;
        let dead = dead_addr();
        let admin = AdminClient::new([(1, live.addr.clone()), (2, dead.clone())], quick());
        let err = admin
            .describe_configs(&ConfigResource::Broker(2))
            .await
            .unwrap_err();
        assert!(matches!(err, KafkaError::Connect { .. }), "{err}");
        assert!(err.to_string().contains(&dead), "{err}");
        assert_eq!(live.requests(), 0, "never asked another broker");
    }

    #[tokio::test]
    async fn set_nodes_drops_connections_whose_address_changed() {
        let a = cluster_broker(&[]).await;
        let b = cluster_broker(&[]).await;
        let admin = AdminClient::new([(1, a.addr.clone())], quick());
        admin.describe_cluster().await.unwrap();
        admin.set_nodes([(1, a.addr.clone())]);
        admin.describe_cluster().await.unwrap();
        assert_eq!(a.connections(), 1, "same address: connection kept");
        admin.set_nodes([(1, b.addr.clone())]);
        admin.describe_cluster().await.unwrap();
        assert_eq!((a.requests(), b.requests()), (2, 1));
        assert_eq!(admin.nodes(), BTreeMap::from([(1, b.addr.clone())]));
        admin.set_nodes([]);
        let err = admin.describe_cluster().await.unwrap_err();
        assert!(matches!(err, KafkaError::NoNodes { .. }), "{err}");
    }

    #[tokio::test]
    async fn new_names_or_connect_options_replace_the_cached_connections() {
        let a = cluster_broker(&[]).await;
        let b = cluster_broker(&[]).await;
        let admin = AdminClient::new([(1, a.addr.clone()), (2, b.addr.clone())], quick());
        admin
            .describe_configs(&ConfigResource::Broker(1))
            .await
            .ok();
        admin
            .describe_configs(&ConfigResource::Broker(2))
            .await
            .ok();
        assert_eq!((a.connections(), b.connections()), (1, 1));

        admin.set_server_names([(2, "kafka-2.example".to_string())]);
        assert_eq!(
            admin.server_names(),
            BTreeMap::from([(2, "kafka-2.example".to_string())])
        );
        admin
            .describe_configs(&ConfigResource::Broker(1))
            .await
            .ok();
        admin
            .describe_configs(&ConfigResource::Broker(2))
            .await
            .ok();
        assert_eq!(
            (a.connections(), b.connections()),
            (1, 2),
            "only the renamed node reconnects"
        );
        admin.set_nodes([(1, a.addr.clone()), (2, b.addr.clone())]);
        admin
            .describe_configs(&ConfigResource::Broker(2))
            .await
            .ok();
        assert_eq!(b.connections(), 2, "set_nodes keeps the names");

        admin.set_connect_options(admin.connect_options());
        admin
            .describe_configs(&ConfigResource::Broker(1))
            .await
            .ok();
        assert_eq!(a.connections(), 1, "same options: connections kept");
        admin.set_connect_options(ConnectOptions {
            client_id: "pier-2".into(),
            ..admin.connect_options()
        });
        admin
            .describe_configs(&ConfigResource::Broker(1))
            .await
            .ok();
        admin
            .describe_configs(&ConfigResource::Broker(2))
            .await
            .ok();
        assert_eq!((a.connections(), b.connections()), (2, 3));
        assert_eq!(admin.connect_options().client_id, "pier-2");
    }

    #[tokio::test]
    async fn topics_with_retriable_errors_are_retried_alone() {
        let broker = fake_broker(&[(ApiKey::CreateTopics, 7)], |req| {
            let r: CreateTopicsRequest = req.decode();
            assert!(r.timeout_ms > 0 && r.timeout_ms < 500, "{}", r.timeout_ms);
            let names: Vec<String> = r.topics.iter().map(|t| t.name.0.to_string()).collect();
            let results = names
                .iter()
                .map(|n| {
                    let code = match (n.as_str(), req.index) {
                        ("a", 0) => codes::REQUEST_TIMED_OUT,
                        ("a", _) => 0,
                        ("b", _) => codes::TOPIC_ALREADY_EXISTS,
                        _ => {
                            assert_eq!(req.index, 0, "c is not sent again");
                            0
                        }
                    };
                    CreatableTopicResult::default()
                        .with_name(TopicName(StrBytes::from_string(n.clone())))
                        .with_error_code(code)
                })
                .collect();
            req.respond(&CreateTopicsResponse::default().with_topics(results))
        })
        .await;
        let admin = AdminClient::new([(1, broker.addr.clone())], quick());
        let topics: Vec<NewTopic> = ["a", "b", "c"]
            .iter()
            .map(|n| NewTopic::new(*n, 1, 1))
            .collect();
        let out = admin.create_topics(&topics).await.unwrap();
        assert_eq!(broker.requests(), 2);
        let names: Vec<&str> = out.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(out[0].result.is_ok());
        let b = out[1].result.as_ref().unwrap_err();
        assert_eq!(b.code(), Some(codes::TOPIC_ALREADY_EXISTS));
        assert!(b.to_string().contains("topic b"), "{b}");
        assert!(out[2].result.is_ok());
    }

    #[tokio::test]
    async fn deleting_an_unknown_topic_is_not_retried() {
        let broker = fake_broker(&[(ApiKey::DeleteTopics, 6)], |req| {
            req.respond(&DeleteTopicsResponse::default().with_responses(vec![
                DeletableTopicResult::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("gone"))))
                    .with_error_code(codes::UNKNOWN_TOPIC_OR_PARTITION),
            ]))
        })
        .await;
        let admin = AdminClient::new([(1, broker.addr.clone())], quick());
        let out = admin.delete_topics(&["gone"]).await.unwrap();
        assert_eq!(
            out[0].result.as_ref().unwrap_err().code(),
            Some(codes::UNKNOWN_TOPIC_OR_PARTITION)
        );
        assert_eq!(broker.requests(), 1);
    }

    #[tokio::test]
    async fn a_topic_call_with_no_answer_at_all_is_an_error() {
        let admin = AdminClient::new([(1, dead_addr())], quick());
        let err = admin.delete_topics(&["t"]).await.unwrap_err();
        assert!(matches!(err, KafkaError::Connect { .. }), "{err}");
    }

    const DIR: &str = "3Db5QLSqSZieL3rJBUUegA";

    fn controller_endpoint() -> Vec<RaftEndpoint> {
        vec![RaftEndpoint {
            name: "CONTROLLER".into(),
            host: "ctl-4".into(),
            port: 9093,
        }]
    }

    /// A fake broker answering AddRaftVoter and RemoveRaftVoter with these error codes in
    /// turn (0 after them), or never answering when `silent`.
    async fn voter_broker(codes: &'static [i16], silent: bool) -> FakeBroker {
        fake_broker(
            &[(ApiKey::AddRaftVoter, 0), (ApiKey::RemoveRaftVoter, 0)],
            move |req| {
                if silent {
                    return Reply::Silent;
                }
                let code = codes.get(req.index).copied().unwrap_or(0);
                let message = (code != 0).then(|| StrBytes::from_static_str("pending"));
                if req.key == ApiKey::AddRaftVoter as i16 {
                    req.respond(
                        &AddRaftVoterResponse::default()
                            .with_error_code(code)
                            .with_error_message(message),
                    )
                } else {
                    req.respond(
                        &RemoveRaftVoterResponse::default()
                            .with_error_code(code)
                            .with_error_message(message),
                    )
                }
            },
        )
        .await
    }

    #[tokio::test]
    async fn voter_changes_are_not_sent_again_once_their_outcome_is_unknown() {
        for code in [codes::REQUEST_TIMED_OUT, codes::NOT_LEADER_OR_FOLLOWER] {
            let codes: &'static [i16] = Box::leak(Box::new([code, code]));
            let (a, b) = (
                voter_broker(codes, false).await,
                voter_broker(codes, false).await,
            );
            let admin = AdminClient::new([(1, a.addr.clone()), (2, b.addr.clone())], quick());
            let err = admin
                .add_raft_voter(None, 4, DIR, &controller_endpoint(), 1000)
                .await
                .unwrap_err();
            assert_eq!(err.code(), Some(code), "{err}");
            assert_eq!(err.broker_message(), Some("pending"));
            assert!(
                err.is_retriable(),
                "the caller decides, after reading the quorum"
            );
            assert_eq!(a.requests() + b.requests(), 1, "sent once, to one node");
            let err = admin.remove_raft_voter(None, 4, DIR).await.unwrap_err();
            assert_eq!(err.code(), Some(code), "{err}");
            assert_eq!(a.requests() + b.requests(), 2);
        }

        // No answer at all: the same.
        let silent = voter_broker(&[], true).await;
        let other = voter_broker(&[], false).await;
        let options = AdminOptions {
            call_timeout: Duration::from_millis(200),
            ..quick()
        };
        let admin = AdminClient::new([(1, silent.addr.clone()), (2, other.addr.clone())], options);
        let err = admin.remove_raft_voter(None, 4, DIR).await.unwrap_err();
        assert!(matches!(err, KafkaError::Timeout { .. }), "{err}");
        assert_eq!((silent.requests(), other.requests()), (1, 0));
    }

    #[tokio::test]
    async fn voter_changes_move_on_from_nodes_that_never_got_them() {
        let live = voter_broker(&[], false).await;
        let admin = AdminClient::new([(1, dead_addr()), (2, live.addr.clone())], quick());
        admin
            .add_raft_voter(Some("cid"), 4, DIR, &controller_endpoint(), 1000)
            .await
            .unwrap();
        admin.remove_raft_voter(Some("cid"), 4, DIR).await.unwrap();
        assert_eq!(live.requests(), 2);

        // Kafka's refusals are final and keep their code.
        let refusing = voter_broker(&[codes::DUPLICATE_VOTER], false).await;
        let admin = AdminClient::new([(1, refusing.addr.clone())], quick());
        let err = admin
            .add_raft_voter(None, 4, DIR, &controller_endpoint(), 1000)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(codes::DUPLICATE_VOTER));
        assert_eq!(refusing.requests(), 1);
    }

    #[tokio::test]
    async fn a_bad_directory_id_fails_before_connecting() {
        let admin = AdminClient::new([(1, dead_addr())], quick());
        let err = admin
            .add_raft_voter(None, 4, "0000-not-base64", &controller_endpoint(), 1000)
            .await
            .unwrap_err();
        assert!(matches!(err, KafkaError::InvalidArgument { .. }), "{err}");
        let err = admin
            .remove_raft_voter(None, 4, "AAAAAAAAAAAAAAAAAAAAAA")
            .await
            .unwrap_err();
        assert!(matches!(err, KafkaError::InvalidArgument { .. }), "{err}");
    }

    #[tokio::test]
    async fn feature_updates_are_retried_like_other_calls() {
        let broker = fake_broker(&[(ApiKey::UpdateFeatures, 2)], |req| {
            let code = if req.index == 0 {
                codes::REQUEST_TIMED_OUT
            } else {
                0
            };
            req.respond(&UpdateFeaturesResponse::default().with_error_code(code))
        })
        .await;
        let admin = AdminClient::new([(1, broker.addr.clone())], quick());
        admin
            .update_features(&[FeatureUpdate::upgrade("metadata.version", 27)], false)
            .await
            .unwrap();
        assert_eq!(broker.requests(), 2);
    }

    #[tokio::test]
    async fn features_are_read_from_any_node() {
        let broker = crate::connection::testing::fake_broker_with_api_versions(
            &[],
            |n, answer| answer.with_finalized_features_epoch(n as i64),
            |_| panic!("only ApiVersions"),
        )
        .await;
        let admin = AdminClient::new([(1, dead_addr()), (2, broker.addr.clone())], quick());
        assert_eq!(admin.features().await.unwrap().finalized_epoch, 1);
        assert_eq!(admin.features().await.unwrap().finalized_epoch, 2);
        assert_eq!(broker.connections(), 1, "the connection is kept");
    }

    #[tokio::test]
    async fn acl_calls_retry_retriable_codes_only() {
        use kafka_protocol::messages::DescribeAclsResponse;
        // NOT_CONTROLLER, then an answer; then SECURITY_DISABLED, final.
        let broker = fake_broker(&[(ApiKey::DescribeAcls, 3)], |req| {
            let code = match req.index {
                0 => codes::NOT_CONTROLLER,
                1 => 0,
                _ => codes::SECURITY_DISABLED,
            };
            req.respond(&DescribeAclsResponse::default().with_error_code(code))
        })
        .await;
        let admin = AdminClient::new([(1, broker.addr.clone())], quick());
        assert_eq!(admin.describe_acls(&AclFilter::any()).await.unwrap(), []);
        assert_eq!(broker.requests(), 2);
        let err = admin.describe_acls(&AclFilter::any()).await.unwrap_err();
        assert!(err.is_security_disabled(), "{err}");
        assert_eq!(broker.requests(), 3, "SECURITY_DISABLED is not retried");
    }

    #[tokio::test]
    async fn invalid_acls_and_increases_fail_before_connecting() {
        use crate::{AclOperation, AclPatternType, AclPermission, AclResourceType};
        let admin = AdminClient::new([(1, dead_addr())], quick());
        let nameless = AclBinding::new(
            "User:alice",
            AclPermission::Allow,
            AclOperation::Read,
            AclResourceType::Topic,
            "",
            AclPatternType::Literal,
        );
        let err = admin.create_acls(&[nameless]).await.unwrap_err();
        assert!(matches!(err, KafkaError::InvalidArgument { .. }), "{err}");
        let err = admin
            .create_partitions(&[PartitionIncrease::new("t", 0)])
            .await
            .unwrap_err();
        assert!(matches!(err, KafkaError::InvalidArgument { .. }), "{err}");
        assert!(admin.create_partitions(&[]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn partition_increases_with_retriable_errors_are_retried_alone() {
        use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
        use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
        let broker = fake_broker(&[(ApiKey::CreatePartitions, 3)], |req| {
            let r: CreatePartitionsRequest = req.decode();
            let results = r
                .topics
                .iter()
                .map(|t| {
                    let code = match (t.name.0.as_str(), req.index) {
                        ("a", 0) => codes::REQUEST_TIMED_OUT,
                        ("a", _) => 0,
                        _ => {
                            assert_eq!(req.index, 0, "b is not sent again");
                            codes::INVALID_PARTITIONS
                        }
                    };
                    CreatePartitionsTopicResult::default()
                        .with_name(t.name.clone())
                        .with_error_code(code)
                })
                .collect();
            req.respond(&CreatePartitionsResponse::default().with_results(results))
        })
        .await;
        let admin = AdminClient::new([(1, broker.addr.clone())], quick());
        let out = admin
            .create_partitions(&[
                PartitionIncrease::new("a", 4),
                PartitionIncrease::new("b", 1),
            ])
            .await
            .unwrap();
        assert_eq!(broker.requests(), 2);
        assert!(out[0].result.is_ok());
        assert_eq!(
            out[1].result.as_ref().unwrap_err().code(),
            Some(codes::INVALID_PARTITIONS)
        );
    }
}
