//! Cruise Control (CC) as Pier's optional engine, planned without I/O: the ConfigMap
//! (`cruisecontrol.properties`, `capacity.json`, `log4j2.properties`), Deployment and Service
//! Pier runs CC with, the URL Pier reaches CC at, and the read-only broker keys that feed CC its
//! metrics.
//!
//! CC reads `capacity.json` once, at start. The Pod template carries a hash of the other two
//! files only: restarting CC loses its in-memory tasks, so a broker added to the spec must not
//! restart it; CC plans a broker missing from the file with the file's default entry (`-1`,
//! the smallest broker's capacity) until it restarts for another reason.
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use serde_json::json;

use super::broker::EffectiveBroker;
use super::names::{self, CLUSTER_LABEL, COMPONENT_LABEL};
use super::properties::escape;
use super::{PlanError, cluster_labels, owner_reference};
use crate::api::{
    CruiseControlCapacity, CruiseControlSpec, KafkaCluster, is_config_key, is_image, quantity_units,
};

/// CC's REST port (its default), on the container and the Service.
pub const PORT: i32 = 9090;
/// Where the ConfigMap is mounted in the CC container.
pub const CONFIG_DIR: &str = "/etc/cruise-control";
/// On the CC Pod template: hash of `cruisecontrol.properties` and `log4j2.properties`, so a
/// change of either restarts CC (and nothing else does).
pub const CONFIG_HASH_ANNOTATION: &str = "kafka.pier.dev/cruise-control-config-hash";
/// The broker-side plugin that produces the metrics CC samples.
pub const METRICS_REPORTER_CLASS: &str =
    "com.linkedin.kafka.cruisecontrol.metricsreporter.CruiseControlMetricsReporter";
/// The topic the metrics reporter writes and CC reads (both sides' default).
pub const METRICS_TOPIC: &str = "__CruiseControlMetrics";
/// What the readiness probe asks: CC's REST API answers (cheaply: the executor's state only).
pub const READINESS_PATH: &str = "/kafkacruisecontrol/state?substates=executor&json=true";

/// `cruisecontrol.properties` keys Pier sets and `spec.cruiseControl.config` cannot: they wire
/// CC to this cluster's brokers, to its capacity file and metrics topic, and to Pier's client
/// (which speaks plain HTTP without credentials to `/kafkacruisecontrol` on [`PORT`] and
/// executes without a review step).
pub const RESERVED_KEYS: &[&str] = &[
    "bootstrap.servers",
    "capacity.config.file",
    "metric.reporter.topic",
    "webserver.http.port",
    "webserver.http.address",
    "webserver.api.urlprefix",
    "webserver.security.enable",
    "webserver.ssl.enable",
    "two.step.verification.enabled",
];

/// Network capacity (KiB/s, each way) of a broker whose spec says nothing: about 1 Gbit/s.
const DEFAULT_NETWORK_KIB_PER_SECOND: i64 = 125_000;
/// User id of the CC container: not root (Strimzi's images run as 1001).
const RUN_AS_USER: i64 = 1001;
const COMPONENT: &str = "cruise-control";
const GOALS_PACKAGE: &str = "com.linkedin.kafka.cruisecontrol.analyzer.goals";

/// The objects Pier runs CC with.
#[derive(Debug, Clone, PartialEq)]
pub struct CruiseControlObjects {
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
}

/// Name of CC's ConfigMap, Deployment and Service.
pub fn name(kc: &KafkaCluster) -> String {
    format!("{}-cruise-control", kc.name_any())
}

/// The root URL Pier reaches CC at (for `pier_cruise_control::CruiseControl::builder`): the
/// spec's `url`, else the Service Pier deploys. `None` when CC is disabled.
pub fn url(kc: &KafkaCluster, spec: &CruiseControlSpec, namespace: &str) -> Option<String> {
    if !spec.enabled {
        return None;
    }
    Some(match &spec.url {
        Some(url) => url.clone(),
        None => format!("http://{}.{namespace}.svc:{PORT}", name(kc)),
    })
}

/// `host:port` of the cluster's in-cluster bootstrap Service on the inter-broker listener, and
/// that listener's security protocol. The Service's name resolves as soon as it exists, before
/// any broker is ready, so clients created early retry instead of failing on DNS.
fn bootstrap(kc: &KafkaCluster, namespace: &str) -> Result<(String, &'static str), PlanError> {
    let listener = kc
        .spec
        .listeners
        .internal
        .iter()
        .find(|l| l.used_for_inter_broker)
        .ok_or(PlanError::NoInterBrokerListener)?;
    Ok((
        format!(
            "{}.{namespace}.svc:{}",
            names::bootstrap_service(kc),
            listener.port
        ),
        listener.protocol.kafka_name(),
    ))
}

/// The read-only keys broker `b` needs for CC: its metrics reporter, writing to
/// [`METRICS_TOPIC`] (created by the reporter with the cluster's default partitions and
/// replication factor, so adding brokers changes none of these keys and restarts nothing).
/// Empty when CC or `metricsReporter` is disabled or `b` has no broker role (controllers host no replicas). Also
/// with an external CC (`url`): it samples the same topic. Merge into the broker's read-only
/// configuration with [`add_broker_config`].
pub fn broker_config(
    kc: &KafkaCluster,
    spec: &CruiseControlSpec,
    namespace: &str,
    b: &EffectiveBroker,
) -> Result<BTreeMap<String, String>, PlanError> {
    if !spec.enabled || !spec.metrics_reporter || !b.is_broker() {
        return Ok(BTreeMap::new());
    }
    let (servers, protocol) = bootstrap(kc, namespace)?;
    Ok([
        ("metric.reporters", METRICS_REPORTER_CLASS),
        (
            "cruise.control.metrics.reporter.bootstrap.servers",
            servers.as_str(),
        ),
        (
            "cruise.control.metrics.reporter.security.protocol",
            protocol,
        ),
        // CPU use relative to the container's limit, not the node's.
        ("cruise.control.metrics.reporter.kubernetes.mode", "true"),
        ("cruise.control.metrics.topic", METRICS_TOPIC),
        ("cruise.control.metrics.topic.auto.create", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect())
}

/// Adds [`broker_config`]'s keys to a broker's read-only configuration: the reporter class is
/// appended to a `metric.reporters` the spec already has; for every other key the spec's value
/// wins (a user tuning the reporter means it).
pub fn add_broker_config(read_only: &mut BTreeMap<String, String>, cc: BTreeMap<String, String>) {
    for (key, value) in cc {
        match read_only.get_mut(&key) {
            Some(reporters) if key == "metric.reporters" => {
                let listed = reporters.split(',').any(|r| r.trim() == value);
                if !listed {
                    if reporters.trim().is_empty() {
                        *reporters = value;
                    } else {
                        reporters.push(',');
                        reporters.push_str(&value);
                    }
                }
            }
            Some(_) => {}
            None => {
                read_only.insert(key, value);
            }
        }
    }
}

/// CC's objects when Pier runs it: `None` when CC is disabled or the spec points at an
/// external one (`url`).
pub fn plan(
    kc: &KafkaCluster,
    spec: &CruiseControlSpec,
    namespace: &str,
    brokers: &[EffectiveBroker],
) -> Result<Option<CruiseControlObjects>, PlanError> {
    if !spec.enabled || spec.url.is_some() {
        return Ok(None);
    }
    check(spec)?;
    let properties = properties(kc, spec, namespace)?;
    let capacity = capacity_json(&spec.capacity, brokers)?;
    let log4j = LOG4J2_PROPERTIES.to_string();
    let config_hash = crate::hash::hex(format!("{properties}\0{log4j}").as_bytes());
    Ok(Some(CruiseControlObjects {
        config_map: config_map(kc, namespace, properties, capacity, log4j),
        deployment: deployment(kc, spec, namespace, config_hash),
        service: service(kc, namespace),
    }))
}

/// What the CRD's rules say about `spec.cruiseControl`, checked again (the CRD may predate a
/// rule), plus the keys Pier reserves.
fn check(spec: &CruiseControlSpec) -> Result<(), PlanError> {
    if !is_image(&spec.image) {
        return Err(PlanError::InvalidImage {
            field: "spec.cruiseControl.image".into(),
            image: spec.image.clone(),
        });
    }
    let section = || "spec.cruiseControl.config".to_string();
    for key in spec.config.keys() {
        if !is_config_key(key) {
            return Err(PlanError::InvalidConfigKey {
                section: section(),
                key: key.clone(),
            });
        }
        if RESERVED_KEYS.contains(&key.as_str()) {
            return Err(PlanError::ReservedKey {
                section: section(),
                key: key.clone(),
            });
        }
    }
    let quantities = spec
        .resources
        .iter()
        .flat_map(|r| r.requests.iter().chain(&r.limits).flatten());
    for (resource, q) in quantities {
        if quantity_units(&q.0).is_none() {
            return Err(PlanError::InvalidResourceQuantity {
                field: "spec.cruiseControl.resources".into(),
                resource: resource.clone(),
                quantity: q.0.clone(),
            });
        }
    }
    Ok(())
}

/// The capacity goals CC plans with: disk and replica counts always; CPU and network only when
/// the spec gives their capacity, since a guessed one would refuse or distort proposals.
struct Goals {
    /// Must hold in every proposal.
    hard: Vec<String>,
    /// Optimized for when a request names no goals, by priority; includes the hard ones.
    default: Vec<String>,
    /// Every goal a request may name.
    supported: Vec<String>,
    /// Checked by CC's anomaly detector (self-healing stays off: Pier decides about moves).
    anomaly_detection: Vec<String>,
}

fn goals(capacity: &CruiseControlCapacity) -> Goals {
    let cpu = capacity.cpu_cores.is_some();
    let nw_in = capacity.network_in_kib_per_second.is_some();
    let nw_out = capacity.network_out_kib_per_second.is_some();
    let full = |goal: &str| format!("{GOALS_PACKAGE}.{goal}");
    let pick = |list: &[(&str, bool)]| -> Vec<String> {
        list.iter()
            .filter(|(_, used)| *used)
            .map(|(goal, _)| full(goal))
            .collect()
    };
    // Brokers without `broker.rack` count as racks of their own (CC falls back to the host),
    // so rack awareness only keeps a partition's replicas on distinct brokers; the
    // distribution variant still allows more replicas than racks.
    let hard = [
        ("RackAwareDistributionGoal", true),
        ("ReplicaCapacityGoal", true),
        ("DiskCapacityGoal", true),
        ("NetworkInboundCapacityGoal", nw_in),
        ("NetworkOutboundCapacityGoal", nw_out),
        ("CpuCapacityGoal", cpu),
    ];
    let soft = [
        ("ReplicaDistributionGoal", true),
        ("PotentialNwOutGoal", nw_out),
        ("DiskUsageDistributionGoal", true),
        ("NetworkInboundUsageDistributionGoal", nw_in),
        ("NetworkOutboundUsageDistributionGoal", nw_out),
        ("CpuUsageDistributionGoal", cpu),
        ("TopicReplicaDistributionGoal", true),
        ("LeaderReplicaDistributionGoal", true),
        // Assumes equal inbound capacities, which only a cluster-wide value guarantees.
        ("LeaderBytesInDistributionGoal", nw_in),
    ];
    let mut default = pick(&hard);
    default.extend(pick(&soft));
    let mut supported = default.clone();
    supported.push(full("PreferredLeaderElectionGoal"));
    Goals {
        hard: pick(&hard),
        default,
        supported,
        anomaly_detection: pick(&hard[..3]),
    }
}

/// `cruisecontrol.properties`: Pier's keys ([`RESERVED_KEYS`] and defaults for a small KRaft
/// cluster), then the spec's over the defaults; sorted, so an unchanged spec renders the same
/// text and CC is not restarted.
pub fn properties(
    kc: &KafkaCluster,
    spec: &CruiseControlSpec,
    namespace: &str,
) -> Result<String, PlanError> {
    let (servers, protocol) = bootstrap(kc, namespace)?;
    let goals = goals(&spec.capacity);
    let mut keys: BTreeMap<String, String> = [
        // Wiring (reserved).
        ("bootstrap.servers", servers),
        (
            "capacity.config.file",
            format!("{CONFIG_DIR}/capacity.json"),
        ),
        ("metric.reporter.topic", METRICS_TOPIC.into()),
        ("webserver.http.port", PORT.to_string()),
        ("webserver.http.address", "0.0.0.0".into()),
        ("webserver.api.urlprefix", "/kafkacruisecontrol/*".into()),
        ("webserver.security.enable", "false".into()),
        ("webserver.ssl.enable", "false".into()),
        ("two.step.verification.enabled", "false".into()),
        // Defaults the spec may change.
        ("security.protocol", protocol.into()),
        // KRaft: no ZooKeeper to find failed brokers or topic configs in.
        ("kafka.broker.failure.detection.enable", "true".into()),
        (
            "topic.config.provider.class",
            "com.linkedin.kafka.cruisecontrol.config.KafkaAdminTopicConfigProvider".into(),
        ),
        (
            "metric.sampler.class",
            "com.linkedin.kafka.cruisecontrol.monitor.sampling.CruiseControlMetricsReporterSampler"
                .into(),
        ),
        (
            "sample.store.class",
            "com.linkedin.kafka.cruisecontrol.monitor.sampling.KafkaSampleStore".into(),
        ),
        (
            "partition.metric.sample.store.topic",
            "__KafkaCruiseControlPartitionMetricSamples".into(),
        ),
        (
            "broker.metric.sample.store.topic",
            "__KafkaCruiseControlModelTrainingSamples".into(),
        ),
        // One 5-minute partition window (CC's default is five): proposals are possible about
        // 5 minutes after a start instead of 25. Broker windows only train CC's CPU model.
        ("metric.sampling.interval.ms", "120000".into()),
        ("partition.metrics.window.ms", "300000".into()),
        ("num.partition.metrics.windows", "1".into()),
        ("min.samples.per.partition.metrics.window", "1".into()),
        ("broker.metrics.window.ms", "300000".into()),
        ("num.broker.metrics.windows", "20".into()),
        ("min.samples.per.broker.metrics.window", "1".into()),
        ("hard.goals", goals.hard.join(",")),
        ("default.goals", goals.default.join(",")),
        ("goals", goals.supported.join(",")),
        ("anomaly.detection.goals", goals.anomaly_detection.join(",")),
        ("self.healing.enabled", "false".into()),
        // Its default path is relative to a working directory that may be read-only.
        ("webserver.accesslog.enabled", "false".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // `check` refuses reserved keys; skipping them here too keeps the wiring even unchecked.
    keys.extend(
        spec.config
            .iter()
            .filter(|(k, _)| !RESERVED_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    let mut text = format!(
        "# Generated by Pier for {namespace}/{}. Do not edit: change spec.cruiseControl.\n",
        kc.name_any()
    );
    for (k, v) in keys {
        text.push_str(&format!("{k}={}\n", escape(&v)));
    }
    Ok(text)
}

/// One broker's capacity in CC's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BrokerCapacity {
    /// MiB (CC's "MB" is 2^20 bytes).
    disk_mib: u128,
    cpu_cores: u32,
    nw_in_kib: i64,
    nw_out_kib: i64,
}

fn broker_capacity(
    capacity: &CruiseControlCapacity,
    b: &EffectiveBroker,
) -> Result<BrokerCapacity, PlanError> {
    const MIB: u128 = 1 << 20;
    let disk_bytes = match &capacity.disk {
        Some(disk) => quantity_units(disk).ok_or_else(|| PlanError::InvalidResourceQuantity {
            field: "spec.cruiseControl.capacity".into(),
            resource: "disk".into(),
            quantity: disk.clone(),
        })?,
        None => b.storage.iter().try_fold(0u128, |sum, s| {
            quantity_units(&s.size)
                .map(|bytes| sum.saturating_add(bytes))
                .ok_or_else(|| PlanError::InvalidStorageSize {
                    id: b.id,
                    mount_path: s.mount_path.clone(),
                    size: s.size.clone(),
                })
        })?,
    };
    Ok(BrokerCapacity {
        // At least 1: a zero capacity would make every replica on it a violation.
        disk_mib: (disk_bytes / MIB).max(1),
        cpu_cores: match capacity.cpu_cores {
            Some(cores) => u32::try_from(cores).unwrap_or(1).max(1),
            None => container_cores(b.resources.as_ref()),
        },
        nw_in_kib: capacity
            .network_in_kib_per_second
            .unwrap_or(DEFAULT_NETWORK_KIB_PER_SECOND),
        nw_out_kib: capacity
            .network_out_kib_per_second
            .unwrap_or(DEFAULT_NETWORK_KIB_PER_SECOND),
    })
}

/// Whole cores of a container: its CPU limit, else its request, rounded up; 1 without either.
/// At most 32767 (CC reads `num.cores` as a Java short).
fn container_cores(resources: Option<&ResourceRequirements>) -> u32 {
    let cpu = |map: &Option<BTreeMap<String, Quantity>>| {
        map.as_ref()
            .and_then(|m| m.get("cpu"))
            .and_then(|q| quantity_units(&q.0))
    };
    resources
        .and_then(|r| cpu(&r.limits).or_else(|| cpu(&r.requests)))
        .map_or(1, |cores| {
            u32::try_from(cores.clamp(1, i16::MAX as u128)).unwrap_or(1)
        })
}

/// `capacity.json` in CC's `brokerCapacities` format: one entry per broker with the broker role
/// (DISK in MiB summed over its volumes, CPU as `num.cores`, NW_IN and NW_OUT in KiB/s), and
/// the default entry `-1` that CC uses for brokers it does not find, the smallest of each.
pub fn capacity_json(
    capacity: &CruiseControlCapacity,
    brokers: &[EffectiveBroker],
) -> Result<String, PlanError> {
    let mut entries = Vec::new();
    let mut smallest: Option<BrokerCapacity> = None;
    for b in brokers.iter().filter(|b| b.is_broker()) {
        let c = broker_capacity(capacity, b)?;
        smallest = Some(match smallest {
            None => c,
            Some(s) => BrokerCapacity {
                disk_mib: s.disk_mib.min(c.disk_mib),
                cpu_cores: s.cpu_cores.min(c.cpu_cores),
                nw_in_kib: s.nw_in_kib.min(c.nw_in_kib),
                nw_out_kib: s.nw_out_kib.min(c.nw_out_kib),
            },
        });
        entries.push(capacity_entry(
            &b.id.to_string(),
            c,
            "From the KafkaCluster spec.",
        ));
    }
    let default = smallest.unwrap_or(BrokerCapacity {
        disk_mib: 1,
        cpu_cores: 1,
        nw_in_kib: DEFAULT_NETWORK_KIB_PER_SECOND,
        nw_out_kib: DEFAULT_NETWORK_KIB_PER_SECOND,
    });
    entries.insert(
        0,
        capacity_entry(
            "-1",
            default,
            "Brokers not listed (added since Cruise Control started): the smallest broker's capacity.",
        ),
    );
    // A `serde_json::Value` always serializes; the fallback only satisfies the types.
    Ok(serde_json::to_string_pretty(&json!({ "brokerCapacities": entries })).unwrap_or_default())
}

fn capacity_entry(id: &str, c: BrokerCapacity, doc: &str) -> serde_json::Value {
    // CC reads every number as a string.
    json!({
        "brokerId": id,
        "capacity": {
            "DISK": c.disk_mib.to_string(),
            "CPU": { "num.cores": c.cpu_cores.to_string() },
            "NW_IN": c.nw_in_kib.to_string(),
            "NW_OUT": c.nw_out_kib.to_string(),
        },
        "doc": format!("{doc} DISK in MiB, CPU in cores, NW_IN and NW_OUT in KiB/s."),
    })
}

/// CC logs to the console only, at INFO (CC 2.5 uses log4j2).
const LOG4J2_PROPERTIES: &str = "\
rootLogger.level=INFO
rootLogger.appenderRef.console.ref=STDOUT
appender.console.type=Console
appender.console.name=STDOUT
appender.console.layout.type=PatternLayout
appender.console.layout.pattern=[%d] %p %m (%c)%n
";

fn labels(kc: &KafkaCluster) -> BTreeMap<String, String> {
    let mut labels = cluster_labels(kc);
    labels.insert(COMPONENT_LABEL.into(), COMPONENT.into());
    labels
}

fn selector(kc: &KafkaCluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CLUSTER_LABEL.to_string(), kc.name_any()),
        (COMPONENT_LABEL.to_string(), COMPONENT.to_string()),
    ])
}

fn metadata(kc: &KafkaCluster, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name(kc)),
        namespace: Some(namespace.to_string()),
        labels: Some(labels(kc)),
        owner_references: owner_reference(kc).map(|o| vec![o]),
        ..Default::default()
    }
}

fn config_map(
    kc: &KafkaCluster,
    namespace: &str,
    properties: String,
    capacity: String,
    log4j: String,
) -> ConfigMap {
    ConfigMap {
        metadata: metadata(kc, namespace),
        data: Some(BTreeMap::from([
            ("cruisecontrol.properties".to_string(), properties),
            ("capacity.json".to_string(), capacity),
            ("log4j2.properties".to_string(), log4j),
        ])),
        ..Default::default()
    }
}

/// The default command: CC's main class from the default image's layout. The classpath
/// wildcards are expanded by `java`, not a shell.
fn default_command() -> Vec<String> {
    [
        "java",
        "-XX:MaxRAMPercentage=75.0",
        "-Djava.awt.headless=true",
        &format!("-Dlog4j2.configurationFile=file:{CONFIG_DIR}/log4j2.properties"),
        "-cp",
        "/opt/cruise-control/libs/*:/opt/kafka/libs/*",
        "com.linkedin.kafka.cruisecontrol.KafkaCruiseControlMain",
        &format!("{CONFIG_DIR}/cruisecontrol.properties"),
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_string());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), q("200m")),
            ("memory".to_string(), q("768Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), q("768Mi"))])),
        ..Default::default()
    }
}

fn deployment(
    kc: &KafkaCluster,
    spec: &CruiseControlSpec,
    namespace: &str,
    config_hash: String,
) -> Deployment {
    let command = if spec.command.is_empty() {
        default_command()
    } else {
        spec.command.clone()
    };
    Deployment {
        metadata: metadata(kc, namespace),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(selector(kc)),
                ..Default::default()
            },
            // Never two CCs at once: both would sample, and each could start executions.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(kc)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_string(),
                        config_hash,
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: COMPONENT.into(),
                        image: Some(spec.image.clone()),
                        command: Some(command),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".into()),
                            container_port: PORT,
                            ..Default::default()
                        }]),
                        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
                        volume_mounts: Some(vec![
                            VolumeMount {
                                name: "config".into(),
                                mount_path: CONFIG_DIR.into(),
                                read_only: Some(true),
                                ..Default::default()
                            },
                            // The JVM's scratch space; the root filesystem is read-only.
                            VolumeMount {
                                name: "tmp".into(),
                                mount_path: "/tmp".into(),
                                ..Default::default()
                            },
                        ]),
                        // Ready once the REST API answers; whether CC has enough metrics to
                        // plan is Pier's client's question, not Kubernetes'. No liveness
                        // probe: a restart would lose CC's tasks.
                        readiness_probe: Some(Probe {
                            http_get: Some(HTTPGetAction {
                                path: Some(READINESS_PATH.into()),
                                port: IntOrString::Int(PORT),
                                ..Default::default()
                            }),
                            initial_delay_seconds: Some(10),
                            period_seconds: Some(10),
                            timeout_seconds: Some(5),
                            failure_threshold: Some(3),
                            ..Default::default()
                        }),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            read_only_root_filesystem: Some(true),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".into()]),
                                add: None,
                            }),
                            ..Default::default()
                        }),
                        termination_message_policy: Some("FallbackToLogsOnError".into()),
                        ..Default::default()
                    }],
                    volumes: Some(vec![
                        Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: name(kc),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "tmp".into(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Default::default()
                        },
                    ]),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS_USER),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    // CC talks to Kafka only, never to the Kubernetes API.
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(30),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn service(kc: &KafkaCluster, namespace: &str) -> Service {
    Service {
        metadata: metadata(kc, namespace),
        spec: Some(ServiceSpec {
            selector: Some(selector(kc)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: PORT,
                target_port: Some(IntOrString::Int(PORT)),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;
    use crate::api::{CruiseControlFallback, Role, StorageSpec};
    use crate::reconcile::effective_brokers;
    use crate::reconcile::tests::example;

    fn enabled() -> CruiseControlSpec {
        CruiseControlSpec {
            enabled: true,
            ..CruiseControlSpec::default()
        }
    }

    fn objects(kc: &KafkaCluster, spec: &CruiseControlSpec) -> CruiseControlObjects {
        let brokers = effective_brokers(kc).unwrap();
        plan(kc, spec, "kafka", &brokers).unwrap().unwrap()
    }

    fn basic() -> CruiseControlObjects {
        objects(&example("kafkacluster-basic.yaml"), &enabled())
    }

    fn data(o: &CruiseControlObjects, key: &str) -> String {
        o.config_map.data.as_ref().unwrap()[key].clone()
    }

    /// `cruisecontrol.properties` as key → value (values as written, escaped).
    fn props(o: &CruiseControlObjects) -> BTreeMap<String, String> {
        data(o, "cruisecontrol.properties")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    fn capacity(o: &CruiseControlObjects) -> serde_json::Value {
        serde_json::from_str(&data(o, "capacity.json")).unwrap()
    }

    /// broker id → its capacity object.
    fn capacities(o: &CruiseControlObjects) -> BTreeMap<String, serde_json::Value> {
        capacity(o)["brokerCapacities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["brokerId"].as_str().unwrap().to_string(),
                    e["capacity"].clone(),
                )
            })
            .collect()
    }

    fn broker(id: i32, roles: Vec<Role>, sizes: &[&str]) -> EffectiveBroker {
        EffectiveBroker {
            id,
            roles,
            storage: sizes
                .iter()
                .enumerate()
                .map(|(i, size)| StorageSpec {
                    mount_path: format!("/data{i}"),
                    size: size.to_string(),
                    ..StorageSpec::default()
                })
                .collect(),
            ..EffectiveBroker::default()
        }
    }

    fn cpu(limit: Option<&str>, request: Option<&str>) -> Option<ResourceRequirements> {
        let map = |v: Option<&str>| {
            v.map(|v| BTreeMap::from([("cpu".to_string(), Quantity(v.to_string()))]))
        };
        Some(ResourceRequirements {
            limits: map(limit),
            requests: map(request),
            ..ResourceRequirements::default()
        })
    }

    #[test]
    fn disabled_plans_nothing_and_adds_nothing_to_brokers() {
        let kc = example("kafkacluster-basic.yaml");
        let brokers = effective_brokers(&kc).unwrap();
        let spec = CruiseControlSpec::default();
        assert!(!spec.enabled);
        assert_eq!(plan(&kc, &spec, "kafka", &brokers), Ok(None));
        assert_eq!(url(&kc, &spec, "kafka"), None);
        assert!(
            broker_config(&kc, &spec, "kafka", &brokers[0])
                .unwrap()
                .is_empty()
        );
        // A URL alone does not enable CC.
        let spec = CruiseControlSpec {
            url: Some("http://cc.example:9090".into()),
            ..CruiseControlSpec::default()
        };
        assert_eq!(url(&kc, &spec, "kafka"), None);
    }

    #[test]
    fn an_external_url_deploys_nothing_but_brokers_still_report() {
        let kc = example("kafkacluster-basic.yaml");
        let brokers = effective_brokers(&kc).unwrap();
        let spec = CruiseControlSpec {
            url: Some("https://cc.example.com:8443/proxy".into()),
            ..enabled()
        };
        assert_eq!(plan(&kc, &spec, "kafka", &brokers), Ok(None));
        assert_eq!(
            url(&kc, &spec, "kafka").as_deref(),
            Some("https://cc.example.com:8443/proxy")
        );
        assert_eq!(
            broker_config(&kc, &spec, "kafka", &brokers[0]).unwrap()["metric.reporters"],
            METRICS_REPORTER_CLASS
        );
    }

    #[test]
    fn the_url_of_the_deployed_cc_is_its_service() {
        let kc = example("kafkacluster-basic.yaml");
        assert_eq!(
            url(&kc, &enabled(), "kafka").as_deref(),
            Some("http://basic-cruise-control.kafka.svc:9090")
        );
        let o = basic();
        let svc = o.service.spec.as_ref().unwrap();
        assert_eq!(
            o.service.metadata.name.as_deref(),
            Some("basic-cruise-control")
        );
        assert_eq!(svc.ports.as_ref().unwrap()[0].port, PORT);
        // The Service selects the Deployment's Pods.
        let pod_labels = o
            .deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        for (k, v) in svc.selector.as_ref().unwrap() {
            assert_eq!(pod_labels.get(k), Some(v), "{k}");
        }
        assert_eq!(
            o.deployment.spec.as_ref().unwrap().selector.match_labels,
            svc.selector
        );
    }

    #[test]
    fn every_object_is_named_labelled_and_owned() {
        let o = basic();
        for meta in [
            &o.config_map.metadata,
            &o.deployment.metadata,
            &o.service.metadata,
        ] {
            assert_eq!(meta.name.as_deref(), Some("basic-cruise-control"));
            assert_eq!(meta.namespace.as_deref(), Some("kafka"));
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels[names::CLUSTER_LABEL], "basic");
            assert_eq!(labels[COMPONENT_LABEL], "cruise-control");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "pier");
            let owners = meta.owner_references.as_ref().unwrap();
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "KafkaCluster");
            assert_eq!(owners[0].controller, Some(true));
        }
    }

    #[test]
    fn properties_wire_cc_to_the_bootstrap_service_and_pier() {
        let p = props(&basic());
        assert_eq!(p["bootstrap.servers"], "basic-bootstrap.kafka.svc:9092");
        assert_eq!(p["security.protocol"], "PLAINTEXT");
        assert_eq!(
            p["capacity.config.file"],
            "/etc/cruise-control/capacity.json"
        );
        assert_eq!(p["webserver.http.port"], "9090");
        assert_eq!(p["webserver.http.address"], "0.0.0.0");
        assert_eq!(p["webserver.api.urlprefix"], "/kafkacruisecontrol/*");
        assert_eq!(p["webserver.security.enable"], "false");
        assert_eq!(p["two.step.verification.enabled"], "false");
        assert_eq!(p["metric.reporter.topic"], METRICS_TOPIC);
        assert_eq!(p["kafka.broker.failure.detection.enable"], "true");
        assert!(p["topic.config.provider.class"].ends_with("KafkaAdminTopicConfigProvider"));
        assert!(p["metric.sampler.class"].ends_with("CruiseControlMetricsReporterSampler"));
        assert_eq!(p["num.partition.metrics.windows"], "1");
        assert_eq!(p["partition.metrics.window.ms"], "300000");
        assert_eq!(p["self.healing.enabled"], "false");
        // Left to CC, which picks min(2, brokers): a 1-broker cluster must work.
        assert!(!p.contains_key("sample.store.topic.replication.factor"));
        for key in RESERVED_KEYS {
            assert!(p.contains_key(*key), "{key}");
        }
    }

    #[test]
    fn properties_follow_the_inter_broker_listener() {
        let mut kc = example("kafkacluster-basic.yaml");
        for l in &mut kc.spec.listeners.internal {
            if l.used_for_inter_broker {
                l.port = 19092;
                l.protocol = crate::api::SecurityProtocol::SaslPlaintext;
            }
        }
        let p = props(&objects(&kc, &enabled()));
        assert_eq!(p["bootstrap.servers"], "basic-bootstrap.kafka.svc:19092");
        assert_eq!(p["security.protocol"], "SASL_PLAINTEXT");

        for l in &mut kc.spec.listeners.internal {
            l.used_for_inter_broker = false;
        }
        let brokers = effective_brokers(&kc).unwrap();
        assert_eq!(
            plan(&kc, &enabled(), "kafka", &brokers),
            Err(PlanError::NoInterBrokerListener)
        );
        assert_eq!(
            broker_config(&kc, &enabled(), "kafka", &brokers[0]),
            Err(PlanError::NoInterBrokerListener)
        );
    }

    #[test]
    fn the_specs_config_overrides_defaults_and_is_escaped() {
        let kc = example("kafkacluster-basic.yaml");
        let spec = CruiseControlSpec {
            config: BTreeMap::from([
                ("num.partition.metrics.windows".into(), "5".into()),
                ("client.id".into(), "cc\nbootstrap.servers=evil:1".into()),
            ]),
            ..enabled()
        };
        let o = objects(&kc, &spec);
        let p = props(&o);
        assert_eq!(p["num.partition.metrics.windows"], "5");
        assert_eq!(p["client.id"], r"cc\nbootstrap.servers=evil:1");
        assert_eq!(p["bootstrap.servers"], "basic-bootstrap.kafka.svc:9092");
        let text = data(&o, "cruisecontrol.properties");
        assert!(text.starts_with("# Generated by Pier for kafka/basic."));
        assert_eq!(text.matches("\nbootstrap.servers=").count(), 1);
    }

    #[test]
    fn reserved_and_malformed_keys_are_refused() {
        let kc = example("kafkacluster-basic.yaml");
        let brokers = effective_brokers(&kc).unwrap();
        for key in RESERVED_KEYS {
            let spec = CruiseControlSpec {
                config: BTreeMap::from([(key.to_string(), "x".into())]),
                ..enabled()
            };
            assert_eq!(
                plan(&kc, &spec, "kafka", &brokers),
                Err(PlanError::ReservedKey {
                    section: "spec.cruiseControl.config".into(),
                    key: key.to_string()
                })
            );
        }
        let spec = CruiseControlSpec {
            config: BTreeMap::from([("a=b".into(), "x".into())]),
            ..enabled()
        };
        assert!(matches!(
            plan(&kc, &spec, "kafka", &brokers),
            Err(PlanError::InvalidConfigKey { .. })
        ));
        let spec = CruiseControlSpec {
            image: "two words".into(),
            ..enabled()
        };
        assert!(matches!(
            plan(&kc, &spec, "kafka", &brokers),
            Err(PlanError::InvalidImage { .. })
        ));
        let spec = CruiseControlSpec {
            resources: cpu(Some("lots"), None),
            ..enabled()
        };
        assert!(matches!(
            plan(&kc, &spec, "kafka", &brokers),
            Err(PlanError::InvalidResourceQuantity { .. })
        ));
    }

    #[test]
    fn goals_use_cpu_and_network_only_when_their_capacity_is_given() {
        let p = props(&basic());
        for key in ["hard.goals", "default.goals", "goals"] {
            assert!(!p[key].contains("Cpu"), "{key}");
            assert!(!p[key].contains("Network"), "{key}");
            assert!(p[key].contains("DiskCapacityGoal"), "{key}");
        }
        let spec = CruiseControlSpec {
            capacity: CruiseControlCapacity {
                cpu_cores: Some(4),
                network_in_kib_per_second: Some(50_000),
                network_out_kib_per_second: Some(50_000),
                ..CruiseControlCapacity::default()
            },
            ..enabled()
        };
        let p = props(&objects(&example("kafkacluster-basic.yaml"), &spec));
        assert!(p["hard.goals"].contains("CpuCapacityGoal"));
        assert!(p["hard.goals"].contains("NetworkInboundCapacityGoal"));
        assert!(p["default.goals"].contains("LeaderBytesInDistributionGoal"));
        assert!(p["goals"].ends_with("PreferredLeaderElectionGoal"));
        // CC refuses a configuration whose hard or anomaly goals are not default goals, or
        // whose default goals are not supported goals.
        for capacity in [CruiseControlCapacity::default(), spec.capacity] {
            let g = goals(&capacity);
            assert!(g.hard.iter().all(|x| g.default.contains(x)));
            assert!(g.anomaly_detection.iter().all(|x| g.default.contains(x)));
            assert!(g.default.iter().all(|x| g.supported.contains(x)));
            assert!(g.supported.iter().all(|x| x.starts_with(GOALS_PACKAGE)));
        }
    }

    #[test]
    fn capacity_has_one_entry_per_broker_and_a_default() {
        let c = capacities(&basic());
        assert_eq!(c.keys().collect::<Vec<_>>(), ["-1", "0", "1", "2"]);
        assert_eq!(c["0"]["DISK"], "1024"); // 1Gi
        assert_eq!(c["0"]["CPU"]["num.cores"], "1");
        assert_eq!(c["0"]["NW_IN"], "125000");
        assert_eq!(c["0"]["NW_OUT"], "125000");
        assert_eq!(c["-1"], c["0"]);
    }

    #[test]
    fn capacity_sums_a_brokers_volumes_and_skips_controllers() {
        // jbod: brokers 0-2 have two 10Gi volumes, controllers 100-102 one of 1Gi.
        let c = capacities(&objects(&example("kafkacluster-jbod.yaml"), &enabled()));
        assert_eq!(c.keys().collect::<Vec<_>>(), ["-1", "0", "1", "2"]);
        for id in ["0", "1", "2"] {
            assert_eq!(c[id]["DISK"], "20480", "{id}");
        }

        let brokers = [
            broker(0, vec![Role::Broker], &["1Gi", "512Mi", "1.5Gi"]),
            broker(1, vec![Role::Broker, Role::Controller], &["100Gi"]),
            broker(2, vec![Role::Controller], &["1Gi"]),
            broker(3, vec![Role::Broker], &["1000M"]),
        ];
        let json: serde_json::Value = serde_json::from_str(
            &capacity_json(&CruiseControlCapacity::default(), &brokers).unwrap(),
        )
        .unwrap();
        let disk: BTreeMap<&str, &str> = json["brokerCapacities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["brokerId"].as_str().unwrap(),
                    e["capacity"]["DISK"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            disk,
            BTreeMap::from([
                ("-1", "953"), // the smallest broker's
                ("0", "3072"),
                ("1", "102400"),
                ("3", "953"), // 10^9 bytes, in whole MiB
            ])
        );
    }

    #[test]
    fn capacity_overrides_and_cpu_from_the_container() {
        let mut b0 = broker(0, vec![Role::Broker], &["10Gi"]);
        b0.resources = cpu(Some("1500m"), Some("500m"));
        let mut b1 = broker(1, vec![Role::Broker], &["10Gi"]);
        b1.resources = cpu(None, Some("3"));
        let b2 = broker(2, vec![Role::Broker], &["10Gi"]);
        let brokers = [b0, b1, b2];
        let parse = |c: &CruiseControlCapacity| -> BTreeMap<String, serde_json::Value> {
            let json: serde_json::Value =
                serde_json::from_str(&capacity_json(c, &brokers).unwrap()).unwrap();
            json["brokerCapacities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["brokerId"].as_str().unwrap().to_string(),
                        e["capacity"].clone(),
                    )
                })
                .collect()
        };
        let c = parse(&CruiseControlCapacity::default());
        assert_eq!(c["0"]["CPU"]["num.cores"], "2"); // the limit, rounded up
        assert_eq!(c["1"]["CPU"]["num.cores"], "3"); // the request without a limit
        assert_eq!(c["2"]["CPU"]["num.cores"], "1"); // neither
        assert_eq!(c["-1"]["CPU"]["num.cores"], "1");

        let c = parse(&CruiseControlCapacity {
            disk: Some("500Gi".into()),
            cpu_cores: Some(8),
            network_in_kib_per_second: Some(10_000),
            network_out_kib_per_second: Some(20_000),
        });
        for id in ["-1", "0", "1", "2"] {
            assert_eq!(c[id]["DISK"], "512000", "{id}");
            assert_eq!(c[id]["CPU"]["num.cores"], "8", "{id}");
            assert_eq!(c[id]["NW_IN"], "10000", "{id}");
            assert_eq!(c[id]["NW_OUT"], "20000", "{id}");
        }

        let bad = CruiseControlCapacity {
            disk: Some("lots".into()),
            ..CruiseControlCapacity::default()
        };
        assert_eq!(
            capacity_json(&bad, &brokers),
            Err(PlanError::InvalidResourceQuantity {
                field: "spec.cruiseControl.capacity".into(),
                resource: "disk".into(),
                quantity: "lots".into()
            })
        );
        let bad_volume = [broker(5, vec![Role::Broker], &["1Gi", "x"])];
        assert!(matches!(
            capacity_json(&CruiseControlCapacity::default(), &bad_volume),
            Err(PlanError::InvalidStorageSize { id: 5, .. })
        ));
    }

    #[test]
    fn capacity_without_brokers_still_has_a_default() {
        let only_controllers = [broker(100, vec![Role::Controller], &["1Gi"])];
        let json: serde_json::Value = serde_json::from_str(
            &capacity_json(&CruiseControlCapacity::default(), &only_controllers).unwrap(),
        )
        .unwrap();
        let entries = json["brokerCapacities"].as_array().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0]["brokerId"], "-1");
    }

    #[test]
    fn the_deployment_mounts_the_config_and_probes_the_state_endpoint() {
        let o = basic();
        let d = o.deployment.spec.as_ref().unwrap();
        assert_eq!(d.replicas, Some(1));
        assert_eq!(
            d.strategy.as_ref().unwrap().type_.as_deref(),
            Some("Recreate")
        );
        let pod = d.template.spec.as_ref().unwrap();
        let config_volume = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| {
                v.config_map.as_ref().map(|c| c.name.as_str())
                    == o.config_map.metadata.name.as_deref()
            })
            .expect("the ConfigMap is a volume");
        let c = &pod.containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some(crate::api::DEFAULT_CRUISE_CONTROL_IMAGE)
        );
        let mount = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == config_volume.name)
            .expect("the ConfigMap is mounted");
        assert_eq!(mount.mount_path, CONFIG_DIR);
        // The files CC is pointed at are the ConfigMap's.
        let command = c.command.as_ref().unwrap();
        assert_eq!(
            command.last().map(String::as_str),
            Some("/etc/cruise-control/cruisecontrol.properties")
        );
        assert!(
            command
                .iter()
                .any(|a| a == "com.linkedin.kafka.cruisecontrol.KafkaCruiseControlMain")
        );
        for file in o.config_map.data.as_ref().unwrap().keys() {
            let path = format!("{CONFIG_DIR}/{file}");
            assert!(
                command.iter().any(|a| a.contains(&path)) || props(&o).values().any(|v| v == &path),
                "{file} is used"
            );
        }
        let probe = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert!(
            probe
                .path
                .as_deref()
                .unwrap()
                .starts_with("/kafkacruisecontrol/state")
        );
        assert_eq!(probe.port, IntOrString::Int(PORT));
        assert!(c.liveness_probe.is_none());
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, PORT);
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert!(psc.run_as_user.is_some_and(|u| u != 0));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(c.resources, Some(default_resources()));
    }

    #[test]
    fn the_specs_image_command_and_resources_are_used() {
        let spec = CruiseControlSpec {
            image: "registry.example/cc:2.5.146".into(),
            command: vec!["/opt/cc/start.sh".into()],
            resources: cpu(Some("2"), None),
            ..enabled()
        };
        let o = objects(&example("kafkacluster-basic.yaml"), &spec);
        let c = &o.deployment.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some("registry.example/cc:2.5.146"));
        assert_eq!(
            c.command.as_deref(),
            Some(&["/opt/cc/start.sh".to_string()][..])
        );
        assert_eq!(c.resources, spec.resources);
    }

    fn config_hash(o: &CruiseControlObjects) -> String {
        o.deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    }

    #[test]
    fn the_pod_restarts_for_properties_but_not_for_capacity() {
        let mut kc = example("kafkacluster-basic.yaml");
        let before = basic();
        assert_eq!(config_hash(&before), config_hash(&basic()), "deterministic");

        // A broker more changes capacity.json only.
        kc.spec.brokers.push(crate::api::BrokerSpec {
            id: 3,
            config_group: Some("default".into()),
            roles: vec![Role::Broker],
            ..Default::default()
        });
        let grown = objects(&kc, &enabled());
        assert_ne!(
            data(&grown, "capacity.json"),
            data(&before, "capacity.json")
        );
        assert_eq!(config_hash(&grown), config_hash(&before));

        let spec = CruiseControlSpec {
            config: BTreeMap::from([("num.broker.metrics.windows".into(), "10".into())]),
            ..enabled()
        };
        assert_ne!(config_hash(&objects(&kc, &spec)), config_hash(&before));
    }

    #[test]
    fn broker_config_turns_on_the_metrics_reporter_on_brokers_only() {
        let kc = example("kafkacluster-jbod.yaml");
        let brokers = effective_brokers(&kc).unwrap();
        let broker = brokers.iter().find(|b| b.id == 0).unwrap();
        let controller = brokers.iter().find(|b| b.id == 100).unwrap();
        let c = broker_config(&kc, &enabled(), "kafka", broker).unwrap();
        assert_eq!(
            c,
            BTreeMap::from([
                ("metric.reporters".into(), METRICS_REPORTER_CLASS.into()),
                (
                    "cruise.control.metrics.reporter.bootstrap.servers".into(),
                    "jbod-bootstrap.kafka.svc:9092".into()
                ),
                (
                    "cruise.control.metrics.reporter.security.protocol".into(),
                    "PLAINTEXT".into()
                ),
                (
                    "cruise.control.metrics.reporter.kubernetes.mode".into(),
                    "true".into()
                ),
                ("cruise.control.metrics.topic".into(), METRICS_TOPIC.into()),
                (
                    "cruise.control.metrics.topic.auto.create".into(),
                    "true".into()
                ),
            ])
        );
        for key in c.keys() {
            assert!(crate::api::is_config_key(key), "{key}");
        }
        // CC reads the topic the reporters write.
        assert_eq!(
            props(&objects(&kc, &enabled()))["metric.reporter.topic"],
            c["cruise.control.metrics.topic"]
        );
        assert!(
            broker_config(&kc, &enabled(), "kafka", controller)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn broker_config_joins_the_specs_reporters_and_keeps_its_values() {
        let kc = example("kafkacluster-basic.yaml");
        let brokers = effective_brokers(&kc).unwrap();
        let cc = broker_config(&kc, &enabled(), "kafka", &brokers[0]).unwrap();

        let mut empty = BTreeMap::new();
        add_broker_config(&mut empty, cc.clone());
        assert_eq!(empty, cc);

        let mut spec = BTreeMap::from([
            (
                "metric.reporters".to_string(),
                "org.example.Reporter".to_string(),
            ),
            (
                "cruise.control.metrics.reporter.kubernetes.mode".to_string(),
                "false".to_string(),
            ),
        ]);
        add_broker_config(&mut spec, cc.clone());
        assert_eq!(
            spec["metric.reporters"],
            format!("org.example.Reporter,{METRICS_REPORTER_CLASS}")
        );
        assert_eq!(
            spec["cruise.control.metrics.reporter.kubernetes.mode"],
            "false"
        );
        assert_eq!(
            spec["cruise.control.metrics.reporter.bootstrap.servers"],
            "basic-bootstrap.kafka.svc:9092"
        );
        // Idempotent: a second merge adds nothing.
        let once = spec.clone();
        add_broker_config(&mut spec, cc);
        assert_eq!(spec, once);
    }

    #[test]
    fn the_schema_carries_the_crd_rules() {
        let schema = serde_json::to_string(&schemars::schema_for!(CruiseControlSpec)).unwrap();
        assert!(schema.contains("x-kubernetes-validations"), "{schema}");
        assert!(schema.contains("url must be an http"), "{schema}");
        assert!(
            schema.contains("image must be a container image reference"),
            "{schema}"
        );
        assert!(
            schema.contains("size must be a positive Kubernetes quantity"),
            "{schema}"
        );
        assert!(schema.contains("BuiltIn"), "{schema}");
    }

    #[test]
    fn the_spec_reads_from_yaml_with_defaults() {
        let spec: CruiseControlSpec = serde_yaml_ng::from_str("{}").unwrap();
        assert_eq!(spec, CruiseControlSpec::default());
        assert_eq!(spec.fallback, CruiseControlFallback::Wait);
        let spec: CruiseControlSpec = serde_yaml_ng::from_str(
            "enabled: true\nfallback: BuiltIn\nurl: http://cc:9090\ncapacity: {cpuCores: 2, networkInKibPerSecond: 1000, disk: 1Ti}\nconfig: {num.partition.metrics.windows: \"3\"}\n",
        )
        .unwrap();
        assert!(spec.enabled);
        assert_eq!(spec.fallback, CruiseControlFallback::BuiltIn);
        assert_eq!(spec.url.as_deref(), Some("http://cc:9090"));
        assert_eq!(spec.capacity.cpu_cores, Some(2));
        assert_eq!(spec.capacity.network_in_kib_per_second, Some(1000));
        assert_eq!(spec.capacity.disk.as_deref(), Some("1Ti"));
        // Serialized back, defaults and empty fields stay out.
        let yaml = serde_yaml_ng::to_string(&CruiseControlSpec::default()).unwrap();
        assert!(!yaml.contains("url"), "{yaml}");
        assert!(!yaml.contains("command"), "{yaml}");
    }
}
