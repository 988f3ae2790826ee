//! One broker's objects: its Pod, its ConfigMap (server.properties) and its PVCs.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod,
    PodSecurityContext, PodSpec, Probe, ResourceRequirements, TCPSocketAction, Toleration, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::names::{
    self, BROKER_ID_LABEL, BROKER_ROLE_LABEL, COMPONENT_LABEL, MOUNT_PATH_ANNOTATION,
};
use super::volumes::{Layout, layout, log_dir};
use super::{PlanError, cluster_labels, owner_reference};
use crate::api::{
    KafkaCluster, Role, StorageSpec, is_image, is_mount_path, is_pier_key, quantity_units,
};

/// The node label a broker's `rack` selects.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Where the rendered server.properties is mounted.
pub const CONFIG_DIR: &str = "/etc/pier";

/// A broker with its config group merged in: what its objects are made from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EffectiveBroker {
    pub id: i32,
    pub roles: Vec<Role>,
    /// Its zone: `broker.rack`, and a node selector on `topology.kubernetes.io/zone`.
    pub rack: Option<String>,
    pub image: String,
    pub heap_opts: Option<String>,
    pub jvm_options: Vec<String>,
    pub resources: Option<ResourceRequirements>,
    /// The group's volumes, then the broker's own; never empty in a plan.
    pub storage: Vec<StorageSpec>,
    /// Where those volumes go (claims, order, leaving ones, the metadata dir): from the spec
    /// alone in [`effective_brokers`], from what exists too in a plan.
    pub layout: Layout,
    pub node_selector: BTreeMap<String, String>,
    pub affinity: Option<Affinity>,
    pub tolerations: Vec<Toleration>,
    pub priority_class_name: Option<String>,
    pub service_account_name: Option<String>,
    pub security_context: Option<PodSecurityContext>,
    /// The spec's labels and annotations, without Pier's own keys.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Per-broker dynamic config.
    pub config: BTreeMap<String, String>,
    /// Per-broker read-only config.
    pub read_only_config: BTreeMap<String, String>,
}

impl EffectiveBroker {
    pub fn is_broker(&self) -> bool {
        self.roles.contains(&Role::Broker)
    }

    pub fn is_controller(&self) -> bool {
        self.roles.contains(&Role::Controller)
    }

    /// Kafka log dirs: `<mountPath>/kafka` of every mounted volume (a subdirectory, since a
    /// fresh volume may hold `lost+found`), leaving ones included.
    pub fn log_dirs(&self) -> Vec<String> {
        self.layout
            .mounts
            .iter()
            .map(|m| log_dir(&m.mount_path))
            .collect()
    }
}

/// Every broker of the spec, sorted by id, with its config group applied.
pub fn effective_brokers(kc: &KafkaCluster) -> Result<Vec<EffectiveBroker>, PlanError> {
    let mut out = Vec::new();
    for b in &kc.spec.brokers {
        let group = match &b.config_group {
            Some(name) => Some(kc.spec.broker_config_groups.get(name).ok_or_else(|| {
                PlanError::UnknownConfigGroup {
                    id: b.id,
                    group: name.clone(),
                }
            })?),
            None => None,
        };
        let g = group.cloned().unwrap_or_default();
        let mut roles = b.roles.clone();
        roles.sort();
        roles.dedup();
        let mut node_selector = g.node_selector.clone();
        node_selector.extend(b.node_selector.clone());
        let rack = b.rack.clone().or(g.rack.clone());
        if let Some(zone) = &rack {
            node_selector.insert(ZONE_LABEL.to_string(), zone.clone());
        }
        // Pier's keys select and identify its objects: the spec cannot set them (CEL refuses
        // them; a spec that predates the rule loses them here).
        let mut labels = g.labels.clone();
        labels.extend(b.labels.clone());
        labels.retain(|k, _| !is_pier_key(k));
        let mut annotations = g.annotations.clone();
        annotations.extend(b.annotations.clone());
        annotations.retain(|k, _| !is_pier_key(k));
        let mut storage = g.storage.clone();
        storage.extend(b.storage.iter().cloned());
        let mut tolerations = g.tolerations.clone();
        tolerations.extend(b.tolerations.iter().cloned());
        out.push(EffectiveBroker {
            id: b.id,
            roles,
            rack,
            image: g
                .image
                .clone()
                .unwrap_or_else(|| kc.spec.kafka.image.clone()),
            heap_opts: g.heap_opts.clone(),
            jvm_options: g.jvm_options.clone(),
            resources: b.resources.clone().or(g.resources.clone()),
            storage,
            node_selector,
            affinity: b.affinity.clone().or(g.affinity.clone()),
            tolerations,
            priority_class_name: g.priority_class_name.clone(),
            service_account_name: g.service_account_name.clone(),
            security_context: g.security_context.clone(),
            labels,
            annotations,
            config: b.config.clone(),
            read_only_config: b.read_only_config.clone(),
            layout: Layout::default(),
        });
    }
    for b in &mut out {
        b.layout = layout(kc, b, None);
    }
    out.sort_by_key(|b| b.id);
    Ok(out)
}

/// What the CRD's rules say about brokers, checked again: images, storage and its sizes (the
/// CRD may predate a rule).
pub fn check(kc: &KafkaCluster, brokers: &[EffectiveBroker]) -> Result<(), PlanError> {
    let mut images = vec![("spec.kafka.image".to_string(), &kc.spec.kafka.image)];
    images.extend(kc.spec.broker_config_groups.iter().filter_map(|(name, g)| {
        g.image
            .as_ref()
            .map(|i| (format!("spec.brokerConfigGroups.{name}.image"), i))
    }));
    images.push(("spec.envoy.image".to_string(), &kc.spec.envoy.image));
    for (field, image) in images {
        if !is_image(image) {
            return Err(PlanError::InvalidImage {
                field,
                image: image.clone(),
            });
        }
    }
    // The CRD cannot check these (CEL's cost estimate of Kubernetes' unbounded resource maps is
    // far over budget): an invalid one would fail every apply of the Pod or Deployment.
    let mut resources = vec![("spec.envoy.resources".to_string(), &kc.spec.envoy.resources)];
    resources.extend(
        brokers
            .iter()
            .map(|b| (format!("broker {}: resources", b.id), &b.resources)),
    );
    for (field, r) in resources {
        let Some(r) = r else { continue };
        for (resource, q) in r.requests.iter().chain(&r.limits).flatten() {
            if quantity_units(&q.0).is_none() {
                return Err(PlanError::InvalidResourceQuantity {
                    field,
                    resource: resource.clone(),
                    quantity: q.0.clone(),
                });
            }
        }
    }
    for b in brokers {
        if b.storage.is_empty() {
            return Err(PlanError::NoStorage { id: b.id });
        }
        let mut mounted = std::collections::BTreeSet::new();
        for s in &b.storage {
            // The group's volumes and the broker's own share one Pod and one log.dirs.
            if !is_mount_path(&s.mount_path) || !mounted.insert(s.mount_path.trim_end_matches('/'))
            {
                return Err(PlanError::InvalidMountPath {
                    id: b.id,
                    mount_path: s.mount_path.clone(),
                });
            }
            if quantity_units(&s.size).is_none_or(|units| units == 0) {
                return Err(PlanError::InvalidStorageSize {
                    id: b.id,
                    mount_path: s.mount_path.clone(),
                    size: s.size.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Labels of a broker's objects.
pub fn broker_labels(kc: &KafkaCluster, b: &EffectiveBroker) -> BTreeMap<String, String> {
    let mut labels = cluster_labels(kc);
    labels.insert(COMPONENT_LABEL.into(), "broker".into());
    labels.insert(BROKER_ID_LABEL.into(), b.id.to_string());
    labels
}

/// The ConfigMap holding the broker's server.properties.
pub fn config_map(
    kc: &KafkaCluster,
    namespace: &str,
    b: &EffectiveBroker,
    properties: &str,
) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(names::broker_config(kc, b.id)),
            namespace: Some(namespace.to_string()),
            labels: Some(broker_labels(kc, b)),
            owner_references: owner_reference(kc).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "server.properties".to_string(),
            properties.to_string(),
        )])),
        ..Default::default()
    }
}

/// One PVC per volume. Owned by the KafkaCluster (so deleted with it) only when the volume
/// says `deleteClaimOnRemoval`; otherwise the data outlives the cluster.
pub fn claims(
    kc: &KafkaCluster,
    namespace: &str,
    b: &EffectiveBroker,
) -> Vec<PersistentVolumeClaim> {
    b.storage
        .iter()
        .filter_map(|s| {
            let claim = b.layout.mounts.iter().find(|m| {
                !m.leaving
                    && m.mount_path.trim_end_matches('/') == s.mount_path.trim_end_matches('/')
            })?;
            let mut labels = broker_labels(kc, b);
            labels.insert(COMPONENT_LABEL.into(), "broker-storage".into());
            Some(PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim.claim.clone()),
                    namespace: Some(namespace.to_string()),
                    labels: Some(labels),
                    annotations: Some(BTreeMap::from([(
                        MOUNT_PATH_ANNOTATION.to_string(),
                        s.mount_path.clone(),
                    )])),
                    owner_references: if s.delete_claim_on_removal {
                        owner_reference(kc).map(|o| vec![o])
                    } else {
                        None
                    },
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(if s.access_modes.is_empty() {
                        vec!["ReadWriteOnce".to_string()]
                    } else {
                        s.access_modes.clone()
                    }),
                    storage_class_name: s.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_string(),
                            Quantity(s.size.clone()),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
        })
        .collect()
}

/// The shell command the Kafka container runs: format the log dirs once (KRaft needs it), then
/// start the node, with the metrics agent's option (when set, see [`super::monitoring`]) added
/// to the node's KAFKA_OPTS only. Works with the Apache Kafka image's scripts. Nodes of a
/// dynamic quorum pass their format flags from [`super::quorum::FORMAT_ARGS_ENV`] (word-split
/// on purpose); a static quorum's command stays as it always was, so its Pods do not restart.
pub fn kafka_command(dynamic_quorum: bool) -> Vec<String> {
    let props = format!("{CONFIG_DIR}/server.properties");
    let agent = super::monitoring::AGENT_ENV;
    let flags = if dynamic_quorum {
        format!(" ${{{}:-}}", super::quorum::FORMAT_ARGS_ENV)
    } else {
        String::new()
    };
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!(
            "/opt/kafka/bin/kafka-storage.sh format --ignore-formatted -t \"$KAFKA_CLUSTER_ID\" -c {props}{flags} && KAFKA_OPTS=\"${{KAFKA_OPTS:-}} ${{{agent}:-}}\" exec /opt/kafka/bin/kafka-server-start.sh {props}"
        ),
    ]
}

/// The broker's Pod. `format_args`: its `kafka-storage.sh format` flags in a dynamic quorum
/// ([`super::quorum::format_args`]).
pub fn pod(
    kc: &KafkaCluster,
    namespace: &str,
    b: &EffectiveBroker,
    cluster_id: &str,
    properties: &str,
    format_args: Option<&str>,
) -> Pod {
    // The spec's labels first: Pier's win.
    let mut labels = b.labels.clone();
    labels.extend(broker_labels(kc, b));
    if b.is_broker() {
        labels.insert(BROKER_ROLE_LABEL.into(), "true".into());
    }
    let annotations = b.annotations.clone();

    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: names::broker_config(kc, b.id),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "config".into(),
        mount_path: CONFIG_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    }];
    for m in &b.layout.mounts {
        volumes.push(Volume {
            name: m.volume.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: m.claim.clone(),
                read_only: None,
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: m.volume.clone(),
            mount_path: m.mount_path.clone(),
            ..Default::default()
        });
    }

    if let Some((volume, mount)) = super::security::tls_volume(kc, b) {
        volumes.push(volume);
        mounts.push(mount);
    }

    let listeners = &kc.spec.listeners;
    let mut ports: Vec<ContainerPort> = Vec::new();
    for l in &listeners.internal {
        let serves = if l.used_for_controller {
            b.is_controller()
        } else {
            b.is_broker()
        };
        if serves {
            ports.push(ContainerPort {
                name: Some(port_name(&l.name)),
                container_port: l.port,
                ..Default::default()
            });
        }
    }
    if b.is_broker() {
        for l in &listeners.external {
            ports.push(ContainerPort {
                name: Some(port_name(&l.name)),
                container_port: l.container_port,
                ..Default::default()
            });
        }
    }
    // Ready once the node accepts connections on its main port.
    let probe_port = ports.first().map(|p| p.container_port).unwrap_or(9092);

    let mut env = vec![EnvVar {
        name: "KAFKA_CLUSTER_ID".into(),
        value: Some(cluster_id.to_string()),
        ..Default::default()
    }];
    if let Some(flags) = format_args {
        env.push(EnvVar {
            name: super::quorum::FORMAT_ARGS_ENV.into(),
            value: Some(flags.to_string()),
            ..Default::default()
        });
    }
    if let Some(heap) = &b.heap_opts {
        env.push(EnvVar {
            name: "KAFKA_HEAP_OPTS".into(),
            value: Some(heap.clone()),
            ..Default::default()
        });
    }
    if !b.jvm_options.is_empty() {
        env.push(EnvVar {
            name: "KAFKA_JVM_PERFORMANCE_OPTS".into(),
            value: Some(b.jvm_options.join(" ")),
            ..Default::default()
        });
    }

    let mut pod = Pod {
        metadata: ObjectMeta {
            name: Some(names::broker_pod(kc, b.id)),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: owner_reference(kc).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            // Nothing in it talks to the Kubernetes API: no ServiceAccount token to leak.
            automount_service_account_token: Some(false),
            hostname: Some(names::broker_pod(kc, b.id)),
            subdomain: Some(names::headless_service(kc)),
            containers: vec![Container {
                name: "kafka".into(),
                image: Some(b.image.clone()),
                // A broker that fails to start says why in its Pod status (the end of its log),
                // which Pier reports as BrokerCrashLooping.
                termination_message_policy: Some("FallbackToLogsOnError".into()),
                command: Some(kafka_command(format_args.is_some())),
                env: Some(env),
                ports: Some(ports),
                resources: b.resources.clone(),
                volume_mounts: Some(mounts),
                readiness_probe: Some(Probe {
                    tcp_socket: Some(TCPSocketAction {
                        port: IntOrString::Int(probe_port),
                        host: None,
                    }),
                    period_seconds: Some(5),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            volumes: Some(volumes),
            node_selector: (!b.node_selector.is_empty()).then(|| b.node_selector.clone()),
            affinity: b.affinity.clone(),
            tolerations: (!b.tolerations.is_empty()).then(|| b.tolerations.clone()),
            priority_class_name: b.priority_class_name.clone(),
            service_account_name: b.service_account_name.clone(),
            security_context: b.security_context.clone(),
            // Kafka's controlled shutdown moves leadership away first; give it time.
            termination_grace_period_seconds: Some(120),
            restart_policy: Some("Always".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let hash = restart_hash(kc, &pod, properties);
    pod.annotations_mut()
        .insert(names::RESTART_HASH_ANNOTATION.into(), hash);
    pod
}

/// Recomputes the restart hash of a Pod amended after [`pod`] (the Secrets its file reads,
/// [`super::secret_refs::mount`]).
pub(super) fn rehash(kc: &KafkaCluster, pod: &mut Pod, properties: &str) {
    pod.annotations_mut().remove(names::RESTART_HASH_ANNOTATION);
    let hash = restart_hash(kc, pod, properties);
    pod.annotations_mut()
        .insert(names::RESTART_HASH_ANNOTATION.into(), hash);
}

/// What a broker's restart hash covers: its Pod (image, resources, JVM options, volumes,
/// labels…), its `server.properties` (read-only configuration only: dynamic keys are applied
/// live and never rendered) and the cluster's restart annotation. Not where a node finds the
/// quorum (`controller.quorum.voters` or `controller.quorum.bootstrap.servers`): adding or
/// removing a controller changes it on every node, and membership changes are made live
/// (KIP-853) or not at all (static quorum); restarted nodes read the current list. Not the
/// format flags either: they matter only to an empty disk, and change once the quorum forms.
pub(super) fn restart_hash(kc: &KafkaCluster, pod: &Pod, properties: &str) -> String {
    // Brokers rendered before Pier turned off the token automount are not restarted for it:
    // their next restart for another reason drops the token.
    let mut hashed = pod.clone();
    if let Some(spec) = hashed.spec.as_mut() {
        spec.automount_service_account_token = None;
        // The image the metrics agent is copied from is Pier's own, whose tag changes with
        // every Pier release: upgrading Pier does not roll the brokers for it (a broker keeps
        // the agent it copied until it restarts for another reason).
        super::monitoring::unhashed(spec);
        for c in &mut spec.containers {
            if let Some(env) = c.env.as_mut() {
                env.retain(|e| e.name != super::quorum::FORMAT_ARGS_ENV);
            }
        }
    }
    let mut input = serde_json::to_vec(&hashed).unwrap_or_default();
    // `metadata.log.dir` naming the first log dir says what Kafka does without it: brokers
    // rendered before Pier wrote it explicitly are not restarted for it.
    let first_dir = properties
        .lines()
        .find_map(|l| l.strip_prefix("log.dirs="))
        .and_then(|v| v.split(',').next())
        .map(|d| format!("metadata.log.dir={d}"));
    for line in properties.lines() {
        let finds_quorum = line.starts_with("controller.quorum.voters=")
            || line.starts_with("controller.quorum.bootstrap.servers=");
        if !finds_quorum && Some(line) != first_dir.as_deref() {
            input.extend_from_slice(line.as_bytes());
            input.push(b'\n');
        }
    }
    if let Some(token) = kc.annotations().get(names::RESTART_ANNOTATION) {
        input.extend_from_slice(b"\0restart=");
        input.extend_from_slice(token.as_bytes());
    }
    crate::hash::hex(&input)
}

/// Container port names are at most 15 characters.
pub fn port_name(listener: &str) -> String {
    listener.chars().take(15).collect()
}
