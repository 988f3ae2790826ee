//! `KafkaUser`: one client identity of a Pier-managed cluster (its credentials, ACLs and
//! quotas), declared as a Kubernetes resource.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{ClusterRef, SecretKeyRef};

/// The finalizer that removes the user's credentials, ACLs and quotas from Kafka first.
pub const USER_FINALIZER: &str = "kafka.pier.dev/user";

/// A user of a KafkaCluster: a certificate from the cluster's clients CA or a SCRAM-SHA-512
/// credential, its ACLs and its quotas.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kafka.pier.dev",
    version = "v1alpha1",
    kind = "KafkaUser",
    plural = "kafkausers",
    shortname = "ku",
    namespaced,
    status = "KafkaUserStatus",
    derive = "PartialEq",
    doc = "A user of a Pier-managed KafkaCluster (same namespace): credentials, ACLs, quotas.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.clusterRef.name",
        description = "The KafkaCluster"
    ),
    printcolumn(
        name = "Authentication",
        type_ = "string",
        json_path = ".spec.authentication.type",
        description = "tls or scram-sha-512"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether Kafka has the user as the spec says"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.clusterRef.name == oldSelf.clusterRef.name").message("clusterRef cannot change")
)]
#[serde(rename_all = "camelCase")]
pub struct KafkaUserSpec {
    /// The KafkaCluster (same namespace) the user belongs to.
    pub cluster_ref: ClusterRef,
    /// How the user proves who it is; none: only ACLs and quotas of a principal
    /// authenticated some other way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<UserAuthentication>,
    /// What the user may do (Kafka's StandardAuthorizer, enabled on the cluster as soon as a
    /// KafkaUser has this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<UserAuthorization>,
    /// Byte rates and request share (Kafka client quotas of the user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<UserQuotas>,
}

/// The user's credential.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserAuthentication {
    #[serde(rename = "type")]
    pub type_: AuthenticationType,
    /// `scram-sha-512` only: the password, from a Secret of yours; absent: Pier generates one
    /// into the user's Secret. A changed Secret changes the credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<PasswordSource>,
}

/// The kinds of credential.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum AuthenticationType {
    /// A certificate `CN=<user>` from the cluster's clients CA, in the Secret named after the
    /// user (`user.crt`, `user.key`, `ca.crt`), renewed before it expires.
    #[serde(rename = "tls")]
    Tls,
    /// A SCRAM-SHA-512 credential (AlterUserScramCredentials).
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
}

/// Where a SCRAM password comes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PasswordSource {
    pub value_from: PasswordValueFrom,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PasswordValueFrom {
    pub secret_key_ref: SecretKeyRef,
}

/// ACLs of the user.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UserAuthorization {
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub acls: Vec<AclRule>,
}

/// One ACL rule: operations on a resource, allowed or denied, from a host.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AclRule {
    pub resource: AclResource,
    #[schemars(length(min = 1, max = 16))]
    pub operations: Vec<AclOperationName>,
    /// Allow (default) or deny.
    #[serde(default, rename = "type")]
    pub type_: AclRuleType,
    /// The client's address, `*` (default) for any.
    #[serde(default = "any_host")]
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
}

fn any_host() -> String {
    "*".into()
}

/// The resource of an ACL rule.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type == 'cluster' || has(self.name)").message("a topic, group or transactionalId resource needs a name ('*' for all)"))]
pub struct AclResource {
    #[serde(rename = "type")]
    pub type_: AclResourceKind,
    /// The resource's name (`*`: all); the cluster resource has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub name: Option<String>,
    /// `literal` (default): the name exactly; `prefixed`: every name starting with it.
    #[serde(default)]
    pub pattern_type: AclPatternKind,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AclResourceKind {
    Topic,
    Group,
    Cluster,
    TransactionalId,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum AclPatternKind {
    #[default]
    Literal,
    Prefixed,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum AclRuleType {
    #[default]
    Allow,
    Deny,
}

/// Kafka's ACL operations.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum AclOperationName {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

/// Kafka client quotas of the user; an absent field has no quota.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UserQuotas {
    /// Bytes per second the user may produce, per broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub producer_byte_rate: Option<i64>,
    /// Bytes per second the user may fetch, per broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub consumer_byte_rate: Option<i64>,
    /// Percentage of a broker's request handler and network threads' time (100 = one thread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub request_percentage: Option<i32>,
}

/// What Pier did for the user.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaUserStatus {
    /// Kafka's principal of the user (`User:<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The Secret with the user's certificate or password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The password Secret version (`<secret>@<resourceVersion>`) whose value Kafka holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_version: Option<String>,
    /// The certificate's expiry (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_not_after: Option<String>,
    /// The ACLs Kafka holds for the principal, as text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: Kafka has the user as the spec says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
