//! The Envoy Deployment in front of the brokers, its bootstrap ConfigMap and its
//! PodDisruptionBudget. The Pod template holds no config hash: Envoy's Kafka config comes over
//! xDS, so broker changes never roll Envoy. With `Settings::xds_tls` Envoy dials xDS over TLS
//! with the client certificate of the Secret [`names::envoy_xds_tls`], mounted at
//! [`XDS_TLS_DIR`].
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe, SecretVolumeSource, TCPSocketAction,
    Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::names::{self, COMPONENT_LABEL};
use super::{Settings, cluster_labels, owner_reference};
use crate::api::{KafkaCluster, is_pier_key};

/// `envoy/bootstrap.yaml`, the one bootstrap every Pier-driven Envoy uses.
pub const ENVOY_BOOTSTRAP_TEMPLATE: &str = include_str!("../../envoy/bootstrap.yaml");

/// Where the Envoy container finds its xDS client certificate (`tls.crt`, `tls.key`) and the
/// CA of the xDS server's certificate (`xds-ca.crt`).
pub const XDS_TLS_DIR: &str = "/etc/pier/xds-tls";

/// Where the Envoy container finds its bootstrap ConfigMap's files.
pub const ENVOY_CONFIG_DIR: &str = "/etc/envoy";

/// SDS secret names of the xDS client certificate and of the xDS server's CA.
const CLIENT_CERT_SECRET: &str = "pier_xds_client_certificate";
const SERVER_CA_SECRET: &str = "pier_xds_server_ca";

/// The bootstrap ConfigMap's files besides the bootstrap when xDS is served over TLS: SDS
/// resources (file name, content) that read the certificate files in [`XDS_TLS_DIR`] and
/// watch that directory, so Envoy uses a renewed Secret without a restart.
pub fn xds_tls_sds_files() -> [(&'static str, String); 2] {
    const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
    [
        (
            "xds-tls-certificate.yaml",
            format!(
                r#"resources:
- "@type": {SECRET}
  name: {CLIENT_CERT_SECRET}
  tls_certificate:
    certificate_chain: {{filename: {XDS_TLS_DIR}/tls.crt}}
    private_key: {{filename: {XDS_TLS_DIR}/tls.key}}
    watched_directory: {{path: {XDS_TLS_DIR}}}
"#
            ),
        ),
        (
            "xds-tls-ca.yaml",
            format!(
                r#"resources:
- "@type": {SECRET}
  name: {SERVER_CA_SECRET}
  validation_context:
    trusted_ca: {{filename: {XDS_TLS_DIR}/xds-ca.crt}}
    watched_directory: {{path: {XDS_TLS_DIR}}}
"#
            ),
        ),
    ]
}

/// The bootstrap pointed at Pier's xDS server at `xds_address` (`host:port`); with `tls`, over
/// TLS with the client certificate in [`XDS_TLS_DIR`] (through [`xds_tls_sds_files`], in
/// [`ENVOY_CONFIG_DIR`]), verifying that the server's certificate names `host`.
pub fn envoy_bootstrap(xds_address: &str, tls: bool) -> String {
    let (host, port) = xds_address
        .rsplit_once(':')
        .unwrap_or((xds_address, "18000"));
    let text = ENVOY_BOOTSTRAP_TEMPLATE.replace(
        "address: 127.0.0.1, port_value: 18000",
        &format!("address: {host}, port_value: {port}"),
    );
    if !tls {
        return text;
    }
    // The xDS cluster is the template's last; its transport socket goes before its endpoints.
    let socket = format!(
        r#"    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: {host}
        common_tls_context:
          alpn_protocols: [h2]
          tls_certificate_sds_secret_configs:
          - name: {CLIENT_CERT_SECRET}
            sds_config:
              path_config_source: {{path: {ENVOY_CONFIG_DIR}/xds-tls-certificate.yaml}}
              resource_api_version: V3
          combined_validation_context:
            default_validation_context:
              match_typed_subject_alt_names:
              - san_type: DNS
                matcher: {{exact: {host}}}
            validation_context_sds_secret_config:
              name: {SERVER_CA_SECRET}
              sds_config:
                path_config_source: {{path: {ENVOY_CONFIG_DIR}/xds-tls-ca.yaml}}
                resource_api_version: V3
"#
    );
    text.replacen(
        "    load_assignment:\n      cluster_name: pier_xds",
        &format!("{socket}    load_assignment:\n      cluster_name: pier_xds"),
        1,
    )
}

fn envoy_labels(kc: &KafkaCluster) -> BTreeMap<String, String> {
    let mut labels = cluster_labels(kc);
    labels.insert(COMPONENT_LABEL.into(), "envoy".into());
    labels
}

pub fn bootstrap_config_map(kc: &KafkaCluster, namespace: &str, settings: &Settings) -> ConfigMap {
    let mut data = BTreeMap::from([(
        "bootstrap.yaml".to_string(),
        envoy_bootstrap(&settings.xds_address, settings.xds_tls),
    )]);
    if settings.xds_tls {
        data.extend(
            xds_tls_sds_files()
                .into_iter()
                .map(|(name, text)| (name.to_string(), text)),
        );
    }
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(names::envoy_bootstrap(kc)),
            namespace: Some(namespace.to_string()),
            labels: Some(envoy_labels(kc)),
            owner_references: owner_reference(kc).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

pub fn deployment(kc: &KafkaCluster, namespace: &str, settings: &Settings) -> Deployment {
    let spec = &kc.spec.envoy;
    let labels = envoy_labels(kc);
    let selector = BTreeMap::from([
        (names::CLUSTER_LABEL.to_string(), kc.name_any()),
        (COMPONENT_LABEL.to_string(), "envoy".to_string()),
    ]);
    let group = crate::model::group_name(namespace, &kc.name_any());
    let mut ports: Vec<ContainerPort> = Vec::new();
    for (i, l) in kc.spec.listeners.external.iter().enumerate() {
        ports.push(ContainerPort {
            name: Some(format!("l{i}-bootstrap")),
            container_port: l.bootstrap_port,
            ..Default::default()
        });
    }
    let probe_port = kc.spec.listeners.external.first().map(|l| l.bootstrap_port);
    let mut mounts = vec![VolumeMount {
        name: "bootstrap".into(),
        mount_path: ENVOY_CONFIG_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    }];
    let mut volumes = vec![Volume {
        name: "bootstrap".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: names::envoy_bootstrap(kc),
            ..Default::default()
        }),
        ..Default::default()
    }];
    if settings.xds_tls {
        mounts.push(VolumeMount {
            name: "xds-tls".into(),
            mount_path: XDS_TLS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "xds-tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names::envoy_xds_tls(kc)),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let annotations: BTreeMap<String, String> = spec
        .annotations
        .iter()
        .filter(|(k, _)| !is_pier_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Deployment {
        metadata: ObjectMeta {
            name: Some(names::envoy(kc)),
            namespace: Some(namespace.to_string()),
            labels: Some(labels.clone()),
            owner_references: owner_reference(kc).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "envoy".into(),
                        image: Some(spec.image.clone()),
                        args: Some(vec![
                            "-c".into(),
                            format!("{ENVOY_CONFIG_DIR}/bootstrap.yaml"),
                            "--service-node".into(),
                            "$(POD_NAME)".into(),
                            "--service-cluster".into(),
                            group,
                            // Removed listeners drain this long before they close.
                            "--drain-time-s".into(),
                            "30".into(),
                        ]),
                        env: Some(vec![EnvVar {
                            name: "POD_NAME".into(),
                            value_from: Some(EnvVarSource {
                                field_ref: Some(ObjectFieldSelector {
                                    field_path: "metadata.name".into(),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }]),
                        ports: Some(ports),
                        resources: spec.resources.clone(),
                        volume_mounts: Some(mounts),
                        // Envoy opens its listeners once it has its config over xDS.
                        readiness_probe: probe_port.map(|port| Probe {
                            tcp_socket: Some(TCPSocketAction {
                                port: IntOrString::Int(port),
                                host: None,
                            }),
                            period_seconds: Some(5),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    volumes: Some(volumes),
                    termination_grace_period_seconds: Some(45),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// minAvailable from the spec, else 1 when there is more than one replica.
pub fn disruption_budget(kc: &KafkaCluster, namespace: &str) -> Option<PodDisruptionBudget> {
    let spec = &kc.spec.envoy;
    let min_available = match &spec.pod_disruption_budget {
        Some(p) => p.min_available,
        None if spec.replicas > 1 => 1,
        None => return None,
    };
    Some(PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(names::envoy(kc)),
            namespace: Some(namespace.to_string()),
            labels: Some(envoy_labels(kc)),
            owner_references: owner_reference(kc).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(min_available)),
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([
                    (names::CLUSTER_LABEL.to_string(), kc.name_any()),
                    (COMPONENT_LABEL.to_string(), "envoy".to_string()),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}
