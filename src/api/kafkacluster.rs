//! `KafkaCluster`: brokers with stable ids, each its own Pod, ConfigMap and PVCs.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, PodSecurityContext, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Default Kafka image (Apache Kafka 4.1, KRaft).
pub const DEFAULT_KAFKA_IMAGE: &str = "apache/kafka:4.1.2";
/// Default Envoy image.
pub const DEFAULT_ENVOY_IMAGE: &str = "envoyproxy/envoy:v1.40.0";

/// A Kafka cluster (KRaft) whose brokers Pier manages one by one, fronted by Envoy.
// Several printcolumns legitimately repeat `type_ = "string"`.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kafka.pier.dev",
    version = "v1alpha1",
    kind = "KafkaCluster",
    plural = "kafkaclusters",
    shortname = "kc",
    namespaced,
    status = "KafkaClusterStatus",
    derive = "PartialEq",
    doc = "A Kafka cluster (KRaft) whose brokers Pier manages one by one, fronted by Envoy over xDS.",
    printcolumn(
        name = "Brokers",
        type_ = "integer",
        json_path = ".status.brokerCount",
        description = "Brokers in the spec"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the cluster is ready"
    ),
    printcolumn(
        name = "Bootstrap",
        type_ = "string",
        json_path = ".status.bootstrapAddress",
        description = "External bootstrap address through Envoy"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.brokers.all(b, self.brokers.filter(c, c.id == b.id).size() == 1)").message("broker ids must be unique"),
    validation = Rule::new("self.brokers.exists(b, 'controller' in b.roles)").message("at least one broker must have the controller role"),
    validation = Rule::new("self.brokers.all(b, !has(b.configGroup) || b.configGroup in self.brokerConfigGroups)").message("every configGroup must name an entry of brokerConfigGroups"),
    validation = Rule::new("self.listeners.internal.all(l, self.listeners.internal.filter(m, m.port == l.port).size() == 1)").message("internal listener ports must differ"),
    validation = Rule::new("self.listeners.external.all(e, !self.listeners.internal.exists(i, i.port == e.containerPort) && self.listeners.external.filter(f, f.containerPort == e.containerPort).size() == 1)").message("external listener containerPorts must differ from each other and from internal listener ports"),
    validation = Rule::new("self.listeners.external.all(e, self.listeners.external.filter(f, f.bootstrapPort == e.bootstrapPort).size() == 1)").message("external listener bootstrapPorts must differ"),
    validation = crate::api::storage_rule()
)]
#[serde(rename_all = "camelCase")]
pub struct KafkaClusterSpec {
    /// The brokers, by stable id. Removing an entry removes exactly that broker.
    /// A list keyed by `id` for server-side apply, so the entries alert actions add are owned
    /// by `pier-alerts` and the others stay yours.
    #[schemars(
        length(min = 1, max = 200),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"])
    )]
    pub brokers: Vec<BrokerSpec>,
    /// Named settings that brokers refer to with `configGroup`.
    #[serde(default)]
    #[schemars(extend("maxProperties" = 32))]
    pub broker_config_groups: BTreeMap<String, BrokerConfigGroup>,
    /// Cluster-wide Kafka settings.
    #[serde(default)]
    pub kafka: KafkaSpec,
    /// Listeners inside the cluster and exposed through Envoy.
    #[serde(default)]
    pub listeners: ListenersSpec,
    /// The Envoy Deployment in front of the brokers.
    #[serde(default)]
    pub envoy: EnvoySpec,
    /// How brokers are restarted when a change needs it.
    #[serde(default)]
    pub rolling_upgrade: RollingUpgradeSpec,
    /// How replicas move: draining brokers removed from the spec, filling brokers added to it.
    #[serde(default)]
    pub rebalance: RebalanceSpec,
    /// Cruise Control as the engine of replica moves instead of Pier's own balancer (off by
    /// default).
    #[serde(default)]
    pub cruise_control: crate::api::CruiseControlSpec,
    /// Certificate authorities and certificates, used by TLS listeners.
    #[serde(default)]
    pub tls: crate::api::TlsSpec,
    /// SCRAM users, for SASL listeners.
    #[serde(default)]
    pub sasl: crate::api::SaslSpec,
    /// Broker metrics (the Prometheus JMX exporter on every broker).
    #[serde(default)]
    pub monitoring: crate::api::MonitoringSpec,
    /// What Alertmanager's alerts may do to this cluster (through `pier operator
    /// --alerts-listen`).
    #[serde(default)]
    pub alerts: crate::api::AlertsSpec,
}

/// Replica moves. A broker removed from the spec is drained (its replicas move to the others)
/// before its Pod goes; a broker added to it is filled once Ready.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceSpec {
    /// Replication throttle in bytes per second, set on the moving replicas only (leader and
    /// follower) while a move runs, and removed when it ends.
    #[serde(default = "default_throttle")]
    #[schemars(range(min = 1048576))]
    pub throttle_bytes_per_second: i64,
    /// Move replicas onto brokers added to the spec once they are Ready, until replica and
    /// leader counts are within one of the mean. The annotation `kafka.pier.dev/rebalance`
    /// (any new value) asks for a full rebalance at any time.
    #[serde(default = "default_true")]
    pub on_broker_add: bool,
}

/// 50 MiB/s: fast enough to move data in reasonable time, slow enough to leave clients room.
fn default_throttle() -> i64 {
    50 * 1024 * 1024
}

fn default_true() -> bool {
    true
}

impl Default for RebalanceSpec {
    fn default() -> Self {
        Self {
            throttle_bytes_per_second: default_throttle(),
            on_broker_add: true,
        }
    }
}

/// Rolling restarts: one broker at a time, only while the cluster is healthy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpgradeSpec {
    /// Failed health gates (and restarted brokers not back in time) tolerated before the roll
    /// pauses with a Degraded condition; it resumes by itself once the cluster is healthy.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 1000))]
    pub failure_threshold: i32,
    /// How long a restarted broker may take to be back: running, unfenced and in the ISR of
    /// all its partitions. Longer counts as a failure.
    #[serde(default = "default_broker_ready_timeout")]
    #[schemars(range(min = 10, max = 86400))]
    pub broker_ready_timeout_seconds: i32,
}

fn default_failure_threshold() -> i32 {
    3
}

fn default_broker_ready_timeout() -> i32 {
    600
}

impl Default for RollingUpgradeSpec {
    fn default() -> Self {
        Self {
            failure_threshold: default_failure_threshold(),
            broker_ready_timeout_seconds: default_broker_ready_timeout(),
        }
    }
}

/// The roles of a KRaft node.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Broker,
    Controller,
}

fn default_roles() -> Vec<Role> {
    vec![Role::Broker, Role::Controller]
}

/// One broker (KRaft node).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BrokerSpec {
    /// Stable node id (node.id); never reused for another broker.
    #[schemars(range(min = 0, max = 65535))]
    pub id: i32,
    /// KRaft roles: broker, controller, or both (the default).
    #[serde(default = "default_roles")]
    #[schemars(length(min = 1, max = 2))]
    pub roles: Vec<Role>,
    /// Name of an entry of brokerConfigGroups this broker takes its settings from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub config_group: Option<String>,
    /// The zone this broker runs in (overrides its config group's): its Pod is scheduled only
    /// on nodes labelled `topology.kubernetes.io/zone=<rack>`, and Kafka's `broker.rack` says
    /// so, so that Kafka and Pier's balancer spread each partition's replicas over zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
    )]
    pub rack: Option<String>,
    /// Per-broker dynamic Kafka configuration (applied live).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256))]
    #[x_kube(validation = crate::api::config_keys_rule())]
    pub config: BTreeMap<String, String>,
    /// Per-broker read-only Kafka configuration (needs a restart of this broker).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256))]
    #[x_kube(validation = crate::api::config_keys_rule())]
    pub read_only_config: BTreeMap<String, String>,
    /// Per-broker configuration values read from Secrets (passwords): dynamic keys are set
    /// live and set again when the Secret changes, read-only ones reach the broker through
    /// the mounted Secret (a change restarts it). Never written into a ConfigMap.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = crate::api::config_keys_rule())]
    pub config_from: BTreeMap<String, crate::api::ConfigValueFrom>,
    /// Extra volumes of this broker, added to its config group's. Every broker needs at least
    /// one volume, its own or its group's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["mountPath"])
    )]
    #[x_kube(validation = crate::api::unique_mount_paths_rule())]
    pub storage: Vec<StorageSpec>,
    /// Resources of the Kafka container (overrides the config group's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Extra labels of this broker's Pod (not Pier's own: `kafka.pier.dev/…`,
    /// `app.kubernetes.io/{name,instance,managed-by,component}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = crate::api::no_pier_keys_rule())]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations of this broker's Pod (not in Pier's prefix `kafka.pier.dev/`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = crate::api::no_pier_keys_rule())]
    pub annotations: BTreeMap<String, String>,
}

/// Settings shared by the brokers that name this group.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BrokerConfigGroup {
    /// The zone of the group's brokers (see the broker's `rack`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
    )]
    pub rack: Option<String>,
    /// Kafka image (default: spec.kafka.image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = crate::api::image_rule())]
    pub image: Option<String>,
    /// JVM heap options, e.g. "-Xms1g -Xmx1g" (KAFKA_HEAP_OPTS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heap_opts: Option<String>,
    /// Further JVM options (KAFKA_JVM_PERFORMANCE_OPTS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jvm_options: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Volumes of every broker of this group; their mount paths become log.dirs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["mountPath"])
    )]
    #[x_kube(validation = crate::api::unique_mount_paths_rule())]
    pub storage: Vec<StorageSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// Labels of the group's broker Pods (not Pier's own).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = crate::api::no_pier_keys_rule())]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the group's broker Pods (not in Pier's prefix).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = crate::api::no_pier_keys_rule())]
    pub annotations: BTreeMap<String, String>,
}

/// A persistent volume of a broker (one PVC each).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Where the volume is mounted; also a Kafka log dir (`<mountPath>/kafka`).
    #[schemars(length(min = 2, max = 200))]
    #[x_kube(
        validation = Rule::new("self.startsWith('/')").message("mountPath must be absolute"),
        validation = crate::api::mount_path_rule()
    )]
    pub mount_path: String,
    /// Requested size, a Kubernetes quantity, e.g. "10Gi". Growing it expands the PVC when its
    /// StorageClass allows expansion; PVCs never shrink.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = crate::api::size_rule())]
    pub size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Default [ReadWriteOnce].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    /// Delete the PVC when its broker or the cluster is removed (default: keep the data).
    #[serde(default)]
    pub delete_claim_on_removal: bool,
}

/// Cluster-wide Kafka settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSpec {
    /// Kafka image of every broker unless its config group says otherwise.
    #[serde(default = "default_kafka_image")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = crate::api::image_rule())]
    pub image: String,
    /// KRaft cluster id; generated once if absent and then kept in status.clusterId.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// The Kafka version the image runs, e.g. `4.1.2`, for images whose tag is not a version
    /// (default: the image's tag). Changing the image to a newer version upgrades the cluster:
    /// nodes restart one by one (controllers first, the active controller last), then
    /// `metadata.version` is raised once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 32),
        regex(pattern = r"^[0-9]+\.[0-9]+(\.[0-9]+)?$")
    )]
    pub version: Option<String>,
    /// Pins `metadata.version` (e.g. `4.0-IV3`, or a release such as `4.0`): Pier raises it
    /// up to this level and no further. Default: the latest production level of the version
    /// every node runs. Pier never lowers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 3, max = 16),
        regex(pattern = r"^[0-9]+\.[0-9]+(-IV[0-9]+)?$")
    )]
    pub metadata_version: Option<String>,
    /// Read-only broker configuration of every broker (a change restarts brokers one by one).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256))]
    #[x_kube(validation = crate::api::config_keys_rule())]
    pub read_only_config: BTreeMap<String, String>,
    /// Cluster-wide dynamic configuration (applied live to the cluster default).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256))]
    #[x_kube(validation = crate::api::config_keys_rule())]
    pub cluster_wide_config: BTreeMap<String, String>,
    /// Configuration values of every broker read from Secrets (passwords): cluster-wide keys
    /// are set live as the cluster default, per-broker keys live on each broker, read-only
    /// keys through the mounted Secret; set again when the Secret changes. Never written into
    /// a ConfigMap.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = crate::api::config_keys_rule())]
    pub config_from: BTreeMap<String, crate::api::ConfigValueFrom>,
}

fn default_kafka_image() -> String {
    DEFAULT_KAFKA_IMAGE.to_string()
}

impl Default for KafkaSpec {
    fn default() -> Self {
        Self {
            image: default_kafka_image(),
            cluster_id: None,
            version: None,
            metadata_version: None,
            read_only_config: BTreeMap::new(),
            cluster_wide_config: BTreeMap::new(),
            config_from: BTreeMap::new(),
        }
    }
}

/// Listener security protocols.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema, Default,
)]
pub enum SecurityProtocol {
    #[default]
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
    #[serde(rename = "SSL")]
    Ssl,
    #[serde(rename = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[serde(rename = "SASL_SSL")]
    SaslSsl,
}

impl SecurityProtocol {
    /// The name Kafka's listener.security.protocol.map uses.
    pub fn kafka_name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }
}

/// All listeners.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListenersSpec {
    /// Listeners inside Kubernetes. Default: `internal` on 9092 (inter-broker) and
    /// `controller` on 9093 (KRaft).
    #[serde(default = "default_internal_listeners")]
    #[schemars(length(min = 1, max = 8))]
    pub internal: Vec<InternalListener>,
    /// Listeners exposed through Envoy and one LoadBalancer (or NodePort) Service.
    #[serde(default)]
    #[schemars(length(max = 4))]
    pub external: Vec<ExternalListener>,
}

impl Default for ListenersSpec {
    fn default() -> Self {
        Self {
            internal: default_internal_listeners(),
            external: Vec::new(),
        }
    }
}

fn default_internal_listeners() -> Vec<InternalListener> {
    vec![
        InternalListener {
            name: "internal".into(),
            port: 9092,
            protocol: SecurityProtocol::Plaintext,
            client_auth: crate::api::ClientAuth::None,
            used_for_inter_broker: true,
            used_for_controller: false,
        },
        InternalListener {
            name: "controller".into(),
            port: 9093,
            protocol: SecurityProtocol::Plaintext,
            client_auth: crate::api::ClientAuth::None,
            used_for_inter_broker: false,
            used_for_controller: true,
        },
    ]
}

/// A listener reachable inside the cluster (headless Service names).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InternalListener {
    /// Listener name (upper-cased in Kafka's config).
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z][a-z0-9-]*$"))]
    pub name: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    #[serde(default)]
    pub protocol: SecurityProtocol,
    /// With `SSL` or `SASL_SSL`: whether clients must present a certificate.
    #[serde(default, skip_serializing_if = "is_default")]
    pub client_auth: crate::api::ClientAuth,
    /// Brokers replicate over this listener (exactly one should say so).
    #[serde(default)]
    pub used_for_inter_broker: bool,
    /// The KRaft controller quorum uses this listener.
    #[serde(default)]
    pub used_for_controller: bool,
}

/// How the external listener's Service is exposed.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema, Default,
)]
pub enum ExternalServiceType {
    #[default]
    LoadBalancer,
    NodePort,
}

/// A listener for clients outside Kubernetes, through Envoy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.brokerPortBase) != has(self.sni)").message("set exactly one of brokerPortBase and sni"))]
pub struct ExternalListener {
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z][a-z0-9-]*$"))]
    pub name: String,
    /// The brokers' port for this listener (Envoy connects here).
    #[schemars(range(min = 1, max = 65535))]
    pub container_port: i32,
    #[serde(default, rename = "type")]
    pub service_type: ExternalServiceType,
    /// The port clients bootstrap from.
    #[schemars(range(min = 1, max = 65535))]
    pub bootstrap_port: i32,
    /// Port per broker: broker <id> is reached on brokerPortBase + id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub broker_port_base: Option<i32>,
    /// SNI routing on the bootstrap port: broker-<id>.<domain> (TLS passthrough).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<SniSpec>,
    /// Host brokers advertise (default: the LoadBalancer's address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised_host: Option<String>,
    #[serde(default)]
    pub protocol: SecurityProtocol,
    /// With `SSL` or `SASL_SSL`: whether clients must present a certificate (signed by the
    /// clients CA). Envoy passes TLS through, so the broker checks it.
    #[serde(default, skip_serializing_if = "is_default")]
    pub client_auth: crate::api::ClientAuth,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancer_source_ranges: Vec<String>,
    /// Annotations of the LoadBalancer Service (not in Pier's prefix).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = crate::api::no_pier_keys_rule())]
    pub annotations: BTreeMap<String, String>,
}

/// SNI routing settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SniSpec {
    /// DNS domain of the broker names; a wildcard record should point at the LoadBalancer.
    #[schemars(length(min = 1, max = 200))]
    pub domain: String,
}

/// The Envoy Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvoySpec {
    #[serde(default = "default_envoy_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    #[serde(default = "default_envoy_image")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = crate::api::image_rule())]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Annotations of the Envoy Pods (not in Pier's prefix).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = crate::api::no_pier_keys_rule())]
    pub annotations: BTreeMap<String, String>,
    /// minAvailable of the Envoy PodDisruptionBudget (default 1 when replicas > 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_disruption_budget: Option<PodDisruptionBudgetSpec>,
}

fn default_envoy_replicas() -> i32 {
    2
}

fn default_envoy_image() -> String {
    DEFAULT_ENVOY_IMAGE.to_string()
}

impl Default for EnvoySpec {
    fn default() -> Self {
        Self {
            replicas: default_envoy_replicas(),
            image: default_envoy_image(),
            resources: None,
            annotations: BTreeMap::new(),
            pod_disruption_budget: None,
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    #[schemars(range(min = 0))]
    pub min_available: i32,
}

/// Observed state, written by Pier.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub broker_count: i32,
    /// Per broker, by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<BrokerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// `host:port` of the first external listener's bootstrap through Envoy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xds: Option<XdsStatus>,
    /// Keys of the spec that are not applied the way their section suggests (unknown keys are
    /// treated as read-only; read-only keys in a dynamic section need a restart).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_notices: Vec<String>,
    /// The rolling restart in progress, if any; kept here so an operator restart resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_upgrade: Option<RollingUpgradeStatus>,
    /// The replica move in progress (a drain or a rebalance), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_moves: Option<ReplicaMovesStatus>,
    /// The brokers replicas were last spread over; a broker added since then is filled by a
    /// rebalance once every broker is Ready (`rebalance.onBrokerAdd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalanced_brokers: Option<Vec<i32>>,
    /// The last value of the `kafka.pier.dev/rebalance` annotation acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance_requested: Option<String>,
    /// The cluster's CAs and certificates, when a listener uses TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::api::TlsStatus>,
    /// Which version of each referenced Secret was last applied live (`configFrom` dynamic
    /// keys, SCRAM users): what → `<secret>@<resourceVersion>`. Versions, never values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub applied_secrets: BTreeMap<String, String>,
    /// Alert actions taken or refused, and the roll-blocking alerts firing now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<crate::api::AlertsStatus>,
    /// The KRaft controller quorum: its mode (chosen once), voters, the change in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<crate::api::QuorumStatus>,
    /// The Kafka version running and the cluster's `metadata.version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_version: Option<crate::api::KafkaVersionStatus>,
}

/// What a replica move is for.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema, Default,
)]
pub enum ReplicaMoveKind {
    /// Emptying brokers removed from the spec.
    #[default]
    Drain,
    /// Spreading replicas and leaders evenly (after brokers were added, or on request).
    Rebalance,
}

/// Durable state and progress of a replica move; an operator restart resumes it (the moves
/// themselves live in Kafka).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaMovesStatus {
    pub kind: ReplicaMoveKind,
    /// The brokers drained (Drain) or added (Rebalance).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<i32>,
    /// When the move started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Partitions moved or to move.
    #[serde(default)]
    pub partitions_total: i32,
    /// Partitions still to move or moving.
    #[serde(default)]
    pub partitions_left: i32,
    /// Bytes still on the drained brokers, as their DescribeLogDirs reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_left: Option<i64>,
    /// A guess from the progress so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_seconds_left: Option<i64>,
    /// Brokers on which Pier set replication throttle rates (removed when the move ends).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throttled_brokers: Vec<i32>,
    /// Topics on which Pier set throttled-replica lists (removed when the move ends).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throttled_topics: Vec<String>,
    /// What the move waits for, if it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The Cruise Control operation doing this move (`spec.cruiseControl`): the request, CC's
    /// task id, submissions so far. Kept so a restarted operator (or a restarted CC) picks the
    /// task up again instead of starting over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cruise_control: Option<pier_cruise_control::Operation>,
    /// Why the Cruise Control operation failed; no further submission until the move changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cruise_control_failure: Option<String>,
}

/// Durable state of a rolling restart.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpgradeStatus {
    /// The broker Pier restarted last and waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarting: Option<i32>,
    /// When that restart began (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_started_at: Option<String>,
    /// Failed health gates and late brokers since the roll last made progress.
    #[serde(default)]
    pub failures: i32,
    /// When the last failure was counted (RFC 3339); a failing gate counts once per 10 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_at: Option<String>,
    /// The failure threshold was reached: no broker is restarted until the cluster is healthy.
    #[serde(default)]
    pub paused: bool,
    /// Why the roll is waiting, blocked or paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where a broker is in its life: Pending (no Ready Pod yet), Running, Draining (removed from
/// the spec; its replicas are moving to the other brokers), Removed (drained; its Pod and
/// registration are going).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema, Default,
)]
pub enum BrokerPhase {
    #[default]
    Pending,
    Running,
    Draining,
    Removed,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    pub id: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Hash of what needs a restart to change (read-only config and Pod spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_hash: Option<String>,
    #[serde(default)]
    pub phase: BrokerPhase,
    /// Whether the broker runs its current configuration: InSync, Pending (no Pod yet),
    /// RestartPending, Restarting, DynamicConfigPending or DynamicConfigFailed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_state: Option<String>,
    /// Why the live (dynamic) configuration could not be applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_error: Option<String>,
    /// Volumes that left the spec and are still being emptied (replicas moving to the
    /// broker's other log dirs) before the broker restarts without them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_removal: Option<VolumeRemovalStatus>,
    /// The log dirs this broker is known to have. A log dir not among them was added: with
    /// `spec.rebalance.onBrokerAdd` replicas are spread onto it once, then it is recorded here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_log_dirs: Vec<String>,
}

/// A broker's volumes being emptied.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRemovalStatus {
    /// The leaving log dirs (`<mountPath>/kafka`).
    pub dirs: Vec<String>,
    /// Replicas (and copies in flight) still in them, as DescribeLogDirs last said.
    pub partitions_left: i32,
    /// Bytes still in them.
    #[serde(default)]
    pub bytes_left: i64,
    /// Why the replicas cannot be moved, if they cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct XdsStatus {
    /// Version of the node group's current xDS snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_version: Option<String>,
    /// Every connected Envoy of the group ACKed that version.
    #[serde(default)]
    pub all_acked: bool,
    /// The latest rejection of that version, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}
