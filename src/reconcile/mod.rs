//! Pure planning: from a KafkaCluster and what exists in the cluster to the objects that should
//! exist. No I/O here; the controller applies the plan.
pub mod alerts;
mod broker;
pub mod claims;
pub mod config;
pub mod cruise_control;
pub mod engine;
mod envoy;
pub mod monitoring;
pub mod names;
pub mod pods;
mod properties;
pub mod quorum;
pub mod roll;
pub mod scaling;
pub mod secret_refs;
pub mod security;
mod services;
pub mod status;
pub mod topic;
pub mod upgrade;
pub mod user;
pub mod volumes;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::api::{KafkaCluster, Role};
use crate::model::{ExternalAccess, ModelError};
use crate::xds::{EnvoyResources, translate};

pub use broker::{CONFIG_DIR, EffectiveBroker, effective_brokers};
pub use envoy::{
    ENVOY_BOOTSTRAP_TEMPLATE, ENVOY_CONFIG_DIR, XDS_TLS_DIR, envoy_bootstrap, xds_tls_sds_files,
};
pub use properties::server_properties;

/// What the controller observed besides the KafkaCluster itself.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Pod IP of each broker's Pod, by broker id, when it has one.
    pub pod_ips: BTreeMap<i32, String>,
    /// The external Service's LoadBalancer (or node) address, once the cloud assigned it.
    pub external_address: Option<String>,
    /// The KRaft cluster id already chosen (status.clusterId).
    pub cluster_id: Option<String>,
    /// Brokers removed from the spec whose objects stay because they may hold data (see
    /// [`scaling`]); Envoy keeps their listeners.
    pub retained: std::collections::BTreeSet<i32>,
    /// Those of `retained` that are draining: out of Envoy's bootstrap.
    pub draining: std::collections::BTreeSet<i32>,
    /// Each broker's claims and log dirs in use, by broker id (see [`volumes`]).
    pub volumes: BTreeMap<i32, volumes::ObservedVolumes>,
    /// resourceVersion of each referenced Secret, by name (see
    /// [`secret_refs::versions_for_plan`]): brokers reading one from their file restart when
    /// it changes.
    pub secret_versions: BTreeMap<String, String>,
    /// A KafkaUser of the cluster asks for ACLs: the brokers run the StandardAuthorizer
    /// ([`user::authorizer_properties`]).
    pub authorization: bool,
}

/// Operator settings that shape the objects.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `host:port` Envoy reaches Pier's xDS server at.
    pub xds_address: String,
    /// Kubernetes cluster DNS domain.
    pub cluster_domain: String,
    /// Envoys reach the xDS server over TLS with a client certificate (their Deployment
    /// mounts the Secret [`names::envoy_xds_tls`]).
    pub xds_tls: bool,
    /// The image the broker Pods' init container copies the JMX exporter agent from: Pier's
    /// own (see [`monitoring`]).
    pub agent_image: String,
}

/// Pier's image of this version, which holds the JMX exporter agent.
pub fn default_agent_image() -> String {
    format!("ghcr.io/pier-dev/pier:{}", env!("CARGO_PKG_VERSION"))
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            xds_address: "pier-xds.pier-system.svc:18000".into(),
            cluster_domain: "cluster.local".into(),
            xds_tls: false,
            agent_image: default_agent_image(),
        }
    }
}

/// Every object a KafkaCluster should have.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub config_maps: Vec<ConfigMap>,
    pub pods: Vec<Pod>,
    pub claims: Vec<PersistentVolumeClaim>,
    pub services: Vec<Service>,
    pub deployments: Vec<Deployment>,
    pub disruption_budgets: Vec<PodDisruptionBudget>,
    /// Input of the xDS translation, one entry per external listener.
    pub external_access: Vec<ExternalAccess>,
    /// Envoy's resources for the cluster's node group: `external_access` translated, so a
    /// model Envoy would reject fails the plan before anything is written. `None` without
    /// external listeners.
    pub xds: Option<EnvoyResources>,
    /// Brokers not created yet because their external address is still unknown.
    pub waiting_for_address: bool,
    /// Every configuration key, split into file (restart) and live (dynamic) parts.
    pub config: config::ConfigPlan,
    /// The spec's brokers with their config groups applied, by id.
    pub brokers: Vec<EffectiveBroker>,
    /// Volume removals refused (the volume holds the metadata log; it stays).
    pub volume_refusals: Vec<String>,
}

/// Why no plan can be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("the KafkaCluster has no namespace")]
    NoNamespace,
    #[error("broker {id}: configGroup {group:?} does not exist")]
    UnknownConfigGroup { id: i32, group: String },
    #[error("no internal listener is marked usedForInterBroker")]
    NoInterBrokerListener,
    #[error("no internal listener is marked usedForController")]
    NoControllerListener,
    #[error("no broker has the controller role")]
    NoController,
    #[error("no cluster id: it must be generated and stored first")]
    NoClusterId,
    #[error("listener name {0:?} is used twice (names are compared upper-cased)")]
    DuplicateListenerName(String),
    #[error("{section}: {key:?} is set by Pier and cannot be configured")]
    ReservedKey { section: String, key: String },
    #[error(
        "{section}: {key:?} is not a Kafka config key (letters, digits, '.', '_' and '-', starting with a letter or digit)"
    )]
    InvalidConfigKey { section: String, key: String },
    /// A node would run a release older than the cluster's finalized metadata.version.
    #[error("{0}")]
    VersionRefused(String),
    #[error("{field}: {image:?} is not a container image reference")]
    InvalidImage { field: String, image: String },
    #[error(
        "broker {id}: volume {mount_path}: size {size:?} is not a positive Kubernetes quantity"
    )]
    InvalidStorageSize {
        id: i32,
        mount_path: String,
        size: String,
    },
    #[error("{field}: {resource} {quantity:?} is not a Kubernetes quantity")]
    InvalidResourceQuantity {
        field: String,
        resource: String,
        quantity: String,
    },
    #[error(
        "broker {id}: mountPath {mount_path:?} must be absolute, without commas or whitespace, and used once"
    )]
    InvalidMountPath { id: i32, mount_path: String },
    #[error(
        "broker {id} has no storage: give it or its configGroup a volume (without one its data would be lost on every restart)"
    )]
    NoStorage { id: i32 },
    #[error("external access: {0}")]
    External(#[from] ModelError),
    #[error("{0}")]
    Security(String),
}

/// Plans every object of `kc`.
pub fn plan(
    kc: &KafkaCluster,
    observed: &Observed,
    settings: &Settings,
) -> Result<Desired, PlanError> {
    let namespace = kc.namespace().ok_or(PlanError::NoNamespace)?;
    let mut brokers = effective_brokers(kc)?;
    let mut volume_refusals = Vec::new();
    for b in &mut brokers {
        b.layout = volumes::layout(kc, b, observed.volumes.get(&b.id));
        volume_refusals.extend(b.layout.refused.clone());
    }
    if !brokers.iter().any(|b| b.roles.contains(&Role::Controller)) {
        return Err(PlanError::NoController);
    }
    properties::check_config_keys(kc)?;
    security::check(kc)?;
    broker::check(kc, &brokers)?;
    let finalized = kc
        .status
        .as_ref()
        .and_then(|s| s.kafka_version.as_ref())
        .and_then(|v| v.metadata_version_level)
        .and_then(|l| i16::try_from(l).ok());
    if let Some(why) = upgrade::refused_version(kc, &brokers, finalized) {
        return Err(PlanError::VersionRefused(why));
    }
    let cluster_id = kc
        .spec
        .kafka
        .cluster_id
        .clone()
        .or_else(|| observed.cluster_id.clone())
        .ok_or(PlanError::NoClusterId)?;
    // Ports are checked for every broker of the spec, not only those already running.
    let mut every_broker = observed.clone();
    for b in &brokers {
        every_broker
            .pod_ips
            .entry(b.id)
            .or_insert_with(|| "0.0.0.0".into());
    }
    translate(&services::external_access(
        kc,
        &namespace,
        &brokers,
        &every_broker,
    )?)?;
    let external_access = services::external_access(kc, &namespace, &brokers, observed)?;
    let xds = if external_access.is_empty() {
        None
    } else {
        Some(translate(&external_access)?)
    };

    let mut desired = Desired {
        external_access,
        xds,
        config: config::plan_config(kc, &brokers),
        ..Desired::default()
    };
    // Cruise Control: its metrics reporter in every broker's file, its objects when Pier runs it.
    let cruise_control = &kc.spec.cruise_control;
    for b in &brokers {
        let keys = cruise_control::broker_config(kc, cruise_control, &namespace, b)?;
        if let Some(c) = desired.config.brokers.get_mut(&b.id) {
            cruise_control::add_broker_config(&mut c.file, keys);
        }
    }
    if let Some(cc) = cruise_control::plan(kc, cruise_control, &namespace, &brokers)? {
        desired.config_maps.push(cc.config_map);
        desired.deployments.push(cc.deployment);
        desired.services.push(cc.service);
    }
    let external_hosts = services::advertised_external(kc, observed);
    let quorum_status = quorum::status_of(kc);
    let controller_port = kc
        .spec
        .listeners
        .internal
        .iter()
        .find(|l| l.used_for_controller)
        .ok_or(PlanError::NoControllerListener)?
        .port;
    // Brokers advertise their external address; without it they would need a restart later.
    desired.waiting_for_address =
        !kc.spec.listeners.external.is_empty() && external_hosts.is_none();
    for b in &brokers {
        if !desired.waiting_for_address {
            let mut read_only = desired
                .config
                .brokers
                .get(&b.id)
                .map(|c| c.file.clone())
                .unwrap_or_default();
            if observed.authorization {
                // A key the spec sets itself wins.
                for (k, v) in user::authorizer_properties(kc) {
                    read_only.entry(k).or_insert(v);
                }
            }
            let props = server_properties(
                kc,
                &namespace,
                b,
                &brokers,
                external_hosts.as_ref(),
                settings,
                &read_only,
            )?;
            let mut cm = broker::config_map(kc, &namespace, b, &props);
            monitoring::add_rules(kc, &mut cm);
            desired.config_maps.push(cm);
            let format_args = quorum::format_args(&quorum_status, b.id, |id| {
                format!(
                    "{}:{controller_port}",
                    names::broker_host(kc, &namespace, id, &settings.cluster_domain)
                )
            });
            let mut pod = broker::pod(
                kc,
                &namespace,
                b,
                &cluster_id,
                &props,
                format_args.as_deref(),
            );
            monitoring::add_exporter(kc, &mut pod, &settings.agent_image);
            if let Some(c) = desired.config.brokers.get(&b.id) {
                secret_refs::mount(&mut pod, &c.file_from, &observed.secret_versions);
            }
            broker::rehash(kc, &mut pod, &props);
            desired.pods.push(pod);
        }
        desired.claims.extend(broker::claims(kc, &namespace, b));
        desired
            .services
            .push(services::broker_service(kc, &namespace, b));
    }
    desired.services.push(services::headless(kc, &namespace));
    desired.services.push(services::bootstrap(kc, &namespace));
    if !kc.spec.listeners.external.is_empty() {
        desired
            .services
            .push(services::external(kc, &namespace, &desired.external_access));
        desired
            .config_maps
            .push(envoy::bootstrap_config_map(kc, &namespace, settings));
        desired
            .deployments
            .push(envoy::deployment(kc, &namespace, settings));
        desired
            .disruption_budgets
            .extend(envoy::disruption_budget(kc, &namespace));
    }
    desired.brokers = brokers;
    desired.volume_refusals = volume_refusals;
    Ok(desired)
}

/// The owner reference every object of `kc` carries (the PVCs only when they are to be deleted
/// with their broker).
pub fn owner_reference(kc: &KafkaCluster) -> Option<OwnerReference> {
    kc.controller_owner_ref(&())
}

/// Labels of every object of a cluster.
pub fn cluster_labels(kc: &KafkaCluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "kafka".to_string()),
        ("app.kubernetes.io/instance".to_string(), kc.name_any()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "pier".to_string(),
        ),
        (names::CLUSTER_LABEL.to_string(), kc.name_any()),
    ])
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
pub(crate) mod tests;
