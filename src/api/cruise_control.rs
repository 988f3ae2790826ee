//! `spec.cruiseControl`: Cruise Control (CC) as Pier's optional engine for replica moves, either
//! deployed by Pier next to the brokers or reached at a URL the user runs it at.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Default Cruise Control image: Strimzi's Kafka image, which carries CC 2.5 (built for Kafka
/// 4.x) under `/opt/cruise-control/libs`. CC publishes no image of its own, so which image runs
/// is the user's choice (`image`, and `command` for another layout); this one is not exercised
/// by Pier's tests, which use a stand-in.
pub const DEFAULT_CRUISE_CONTROL_IMAGE: &str = "quay.io/strimzi/kafka:0.48.0-kafka-4.1.0";

/// Cruise Control for this cluster. Disabled by default: Pier then moves replicas itself.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CruiseControlSpec {
    /// Use Cruise Control for draining, filling and rebalancing brokers. Enabling it also adds
    /// CC's metrics reporter to every broker unless `metricsReporter` is off.
    #[serde(default)]
    pub enabled: bool,
    /// Add CC's metrics reporter to every broker (`metric.reporters`, a rolling restart). Its
    /// jar must be on the brokers' classpath; turn this off for brokers without it (CC then
    /// has no metrics of its own and needs another source).
    #[serde(default = "default_true")]
    pub metrics_reporter: bool,
    /// Image of the Cruise Control Deployment Pier runs (unused with `url`).
    #[serde(default = "default_image")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = crate::api::image_rule())]
    pub image: String,
    /// Command of the Cruise Control container, for an image with another layout than the
    /// default's. Its configuration is mounted at `/etc/cruise-control` (`cruisecontrol.properties`,
    /// `capacity.json`, `log4j2.properties`). Default: CC's main class on
    /// `/opt/cruise-control/libs/*` and `/opt/kafka/libs/*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub command: Vec<String>,
    /// Extra `cruisecontrol.properties` keys, over Pier's defaults. The keys that wire CC to
    /// this cluster and to Pier (bootstrap servers, capacity file, web server address, port,
    /// security and TLS, two-step verification, metrics topic) are Pier's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256))]
    #[x_kube(validation = crate::api::config_keys_rule())]
    pub config: BTreeMap<String, String>,
    /// Capacity of each broker as CC plans with it (`capacity.json`).
    #[serde(default)]
    pub capacity: CruiseControlCapacity,
    /// What Pier does while Cruise Control is not ready (not deployed yet, starting, or without
    /// enough metric windows, which takes minutes after a start).
    #[serde(default)]
    pub fallback: CruiseControlFallback,
    /// Resources of the Cruise Control container. Default: 200m CPU and 768Mi memory requested,
    /// 768Mi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Root URL of a Cruise Control the user runs, e.g. `http://cruise-control.kafka.svc:9090`
    /// (without `/kafkacruisecontrol`). When set, Pier deploys none and uses this one; the
    /// brokers still get the metrics reporter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new(r"self.matches('^https?://[^\\s/?#]+(/[^\\s?#]*)?$')").message("url must be an http:// or https:// URL without query or fragment"))]
    pub url: Option<String>,
}

fn default_true() -> bool {
    true
}

fn default_image() -> String {
    DEFAULT_CRUISE_CONTROL_IMAGE.to_string()
}

impl Default for CruiseControlSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            metrics_reporter: true,
            image: default_image(),
            command: Vec::new(),
            config: BTreeMap::new(),
            capacity: CruiseControlCapacity::default(),
            fallback: CruiseControlFallback::default(),
            resources: None,
            url: None,
        }
    }
}

/// Per-broker capacity in `capacity.json`. Each unset value comes from the broker's spec where
/// it can (disk: the sum of its volumes' sizes; CPU: its container's CPU limit, else request,
/// rounded up to whole cores, else 1) or is a default (network: 125000 KiB/s each way, about
/// 1 Gbit/s). CC's CPU and network capacity goals are used only for values set here: a guessed
/// capacity would make them refuse or distort proposals.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CruiseControlCapacity {
    /// Disk of every broker, a Kubernetes quantity (e.g. "500Gi"), instead of the sum of its
    /// volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = crate::api::size_rule())]
    pub disk: Option<String>,
    /// CPU cores of every broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32767))]
    pub cpu_cores: Option<i32>,
    /// Inbound network capacity of every broker in KiB/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub network_in_kib_per_second: Option<i64>,
    /// Outbound network capacity of every broker in KiB/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub network_out_kib_per_second: Option<i64>,
}

/// What Pier does about a replica move while Cruise Control is not ready.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema, Default,
)]
pub enum CruiseControlFallback {
    /// Wait for Cruise Control, saying so in status: moves happen only the way CC plans them.
    #[default]
    Wait,
    /// Move replicas with Pier's own balancer meanwhile; CC takes over for later moves.
    BuiltIn,
}
