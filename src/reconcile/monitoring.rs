//! Broker metrics: every broker Pod runs the Prometheus JMX exporter java agent with the rules
//! Pier ships (`monitoring/jmx-exporter.yaml`) when `spec.monitoring.enabled`.
//!
//! How the pieces reach the Pod: the rules are a key of the broker's own ConfigMap, so they
//! appear at `/etc/pier/jmx-exporter.yaml` beside server.properties (no extra volume, no mount
//! nested in another); the agent jar is in Pier's image (`/opt/pier/…`), and an init container
//! of that image (`pier install-agent`) copies it into an emptyDir the Kafka container mounts at
//! [`AGENT_DIR`], so any Kafka image works unchanged. The Kafka container's command adds
//! `$PIER_METRICS_AGENT` (the `-javaagent:` option) to `KAFKA_OPTS` for the broker process only:
//! tools run in the container (`kafka-topics.sh` through `kubectl exec`) do not start a second
//! exporter on the same port.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, Pod, SecurityContext,
    ServicePort, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::broker::CONFIG_DIR;
use crate::api::KafkaCluster;

/// The exporter rules, as shipped in `monitoring/jmx-exporter.yaml`.
pub const RULES: &str = include_str!("../../monitoring/jmx-exporter.yaml");
/// Their key in the broker's ConfigMap (so the file `/etc/pier/jmx-exporter.yaml`).
pub const RULES_KEY: &str = "jmx-exporter.yaml";
/// Where Pier's image holds the agent jar (see the Dockerfile and dev/image).
pub const IMAGE_AGENT_JAR: &str = "/opt/pier/jmx_prometheus_javaagent.jar";
/// Where the Kafka container finds the agent (an emptyDir the init container fills).
pub const AGENT_DIR: &str = "/opt/pier-agent";
/// The variable holding the `-javaagent:` option, which the Kafka command adds to KAFKA_OPTS
/// of the broker process.
pub const AGENT_ENV: &str = "PIER_METRICS_AGENT";
/// The name of the metrics port on the Pod and the per-broker Service.
pub const PORT_NAME: &str = "metrics";
/// The volume and init container names.
const VOLUME: &str = "metrics-agent";
const INIT_CONTAINER: &str = "metrics-agent";

/// The agent jar's path in the Kafka container.
pub fn agent_jar() -> String {
    format!("{AGENT_DIR}/jmx_prometheus_javaagent.jar")
}

/// The JVM option that runs the exporter on `port` (all addresses) with the shipped rules.
pub fn agent_option(port: i32) -> String {
    format!(
        "-javaagent:{}=0.0.0.0:{port}:{CONFIG_DIR}/{RULES_KEY}",
        agent_jar()
    )
}

/// Adds the rules to a broker's ConfigMap when monitoring is on.
pub fn add_rules(kc: &KafkaCluster, cm: &mut ConfigMap) {
    if kc.spec.monitoring.enabled {
        cm.data
            .get_or_insert_with(BTreeMap::new)
            .insert(RULES_KEY.into(), RULES.into());
    }
}

/// Adds the exporter to a broker Pod when monitoring is on: the init container copying the
/// agent from `agent_image` (Pier's image), its emptyDir, the `-javaagent:` variable, the
/// `metrics` container port and the `prometheus.io/*` annotations. The caller rehashes.
pub fn add_exporter(kc: &KafkaCluster, pod: &mut Pod, agent_image: &str) {
    let m = &kc.spec.monitoring;
    if !m.enabled {
        return;
    }
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert("prometheus.io/scrape".into(), "true".into());
    annotations.insert("prometheus.io/port".into(), m.port.to_string());
    annotations.insert("prometheus.io/path".into(), "/metrics".into());
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    });
    let mount = VolumeMount {
        name: VOLUME.into(),
        mount_path: AGENT_DIR.into(),
        ..Default::default()
    };
    spec.init_containers
        .get_or_insert_with(Vec::new)
        .push(Container {
            name: INIT_CONTAINER.into(),
            image: Some(agent_image.to_string()),
            command: Some(vec![
                "/pier".into(),
                "install-agent".into(),
                "--from".into(),
                IMAGE_AGENT_JAR.into(),
                "--to".into(),
                AGENT_DIR.into(),
            ]),
            volume_mounts: Some(vec![mount.clone()]),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        });
    let Some(kafka) = spec.containers.iter_mut().find(|c| c.name == "kafka") else {
        return;
    };
    kafka
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .push(VolumeMount {
            read_only: Some(true),
            ..mount
        });
    kafka.env.get_or_insert_with(Vec::new).push(EnvVar {
        name: AGENT_ENV.into(),
        value: Some(agent_option(m.port)),
        ..Default::default()
    });
    kafka
        .ports
        .get_or_insert_with(Vec::new)
        .push(ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: m.port,
            ..Default::default()
        });
}

/// Leaves out of a Pod spec, for its restart hash, what changes with Pier's version alone: the
/// agent's init container image.
pub fn unhashed(spec: &mut k8s_openapi::api::core::v1::PodSpec) {
    for c in spec.init_containers.iter_mut().flatten() {
        if c.name == INIT_CONTAINER {
            c.image = None;
        }
    }
}

/// The `metrics` port of a broker's Service, when monitoring is on.
pub fn service_port(kc: &KafkaCluster) -> Option<ServicePort> {
    let m = &kc.spec.monitoring;
    m.enabled.then(|| ServicePort {
        name: Some(PORT_NAME.into()),
        port: m.port,
        target_port: Some(IntOrString::String(PORT_NAME.into())),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::tests::example;
    use crate::reconcile::{Observed, Settings, plan};

    fn planned(kc: &KafkaCluster) -> crate::reconcile::Desired {
        let observed = Observed {
            cluster_id: Some("MkU3OEVBNTcwNTJENDM2Qk".into()),
            external_address: Some("203.0.113.7".into()),
            ..Observed::default()
        };
        plan(kc, &observed, &Settings::default()).unwrap()
    }

    fn kafka(pod: &Pod) -> &Container {
        pod.spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .find(|c| c.name == "kafka")
            .unwrap()
    }

    #[test]
    fn brokers_run_the_exporter_by_default() {
        let kc = example("kafkacluster-basic.yaml");
        let d = planned(&kc);
        assert!(!d.pods.is_empty());
        for pod in &d.pods {
            let a = pod.metadata.annotations.as_ref().unwrap();
            assert_eq!(a["prometheus.io/scrape"], "true");
            assert_eq!(a["prometheus.io/port"], "9404");
            assert_eq!(a["prometheus.io/path"], "/metrics");
            let spec = pod.spec.as_ref().unwrap();
            let init = &spec.init_containers.as_ref().unwrap()[0];
            assert_eq!(
                init.image.as_deref(),
                Some(Settings::default().agent_image.as_str())
            );
            let cmd = init.command.as_ref().unwrap().join(" ");
            assert!(
                cmd.contains(IMAGE_AGENT_JAR) && cmd.contains(AGENT_DIR),
                "{cmd}"
            );
            let c = kafka(pod);
            let port = c
                .ports
                .as_ref()
                .unwrap()
                .iter()
                .find(|p| p.name.as_deref() == Some("metrics"))
                .unwrap();
            assert_eq!(port.container_port, 9404);
            let env = c.env.as_ref().unwrap();
            let agent = env.iter().find(|e| e.name == AGENT_ENV).unwrap();
            assert_eq!(
                agent.value.as_deref(),
                Some(
                    "-javaagent:/opt/pier-agent/jmx_prometheus_javaagent.jar=0.0.0.0:9404:/etc/pier/jmx-exporter.yaml"
                )
            );
            // The broker process alone gets the agent.
            let script = c.command.as_ref().unwrap().join(" ");
            assert!(
                script.contains(&format!("KAFKA_OPTS=\"${{KAFKA_OPTS:-}} ${{{AGENT_ENV}:-}}\" exec /opt/kafka/bin/kafka-server-start.sh")),
                "{script}"
            );
            assert!(
                c.volume_mounts
                    .as_ref()
                    .unwrap()
                    .iter()
                    .any(|m| m.mount_path == AGENT_DIR && m.read_only == Some(true))
            );
            assert!(
                spec.volumes
                    .as_ref()
                    .unwrap()
                    .iter()
                    .any(|v| v.name == VOLUME && v.empty_dir.is_some())
            );
        }
        for cm in d
            .config_maps
            .iter()
            .filter(|c| c.metadata.name.as_deref().unwrap().contains("-broker-"))
        {
            assert_eq!(cm.data.as_ref().unwrap()[RULES_KEY], RULES);
        }
        let broker_services: Vec<_> = d
            .services
            .iter()
            .filter(|s| s.metadata.name.as_deref().unwrap().contains("-broker-"))
            .collect();
        assert!(!broker_services.is_empty());
        for s in broker_services {
            let ports = s.spec.as_ref().unwrap().ports.as_ref().unwrap();
            let p = ports
                .iter()
                .find(|p| p.name.as_deref() == Some("metrics"))
                .unwrap();
            assert_eq!(
                (p.port, p.target_port.clone()),
                (9404, Some(IntOrString::String("metrics".into())))
            );
        }
    }

    #[test]
    fn the_port_is_the_specs_and_off_means_nothing_is_added() {
        let mut kc = example("kafkacluster-basic.yaml");
        kc.spec.monitoring.port = 9500;
        let on = planned(&kc);
        let pod = &on.pods[0];
        assert_eq!(
            pod.metadata.annotations.as_ref().unwrap()["prometheus.io/port"],
            "9500"
        );
        assert!(kafka(pod).env.as_ref().unwrap().iter().any(|e| {
            e.value
                .as_deref()
                .is_some_and(|v| v.contains("=0.0.0.0:9500:"))
        }));

        kc.spec.monitoring.enabled = false;
        let off = planned(&kc);
        let pod = &off.pods[0];
        let a = pod.metadata.annotations.as_ref().unwrap();
        assert!(!a.contains_key("prometheus.io/scrape"));
        assert!(pod.spec.as_ref().unwrap().init_containers.is_none());
        let c = kafka(pod);
        assert!(!c.env.as_ref().unwrap().iter().any(|e| e.name == AGENT_ENV));
        assert!(
            !c.ports
                .as_ref()
                .unwrap()
                .iter()
                .any(|p| p.name.as_deref() == Some("metrics"))
        );
        assert!(
            off.config_maps
                .iter()
                .all(|c| !c.data.as_ref().unwrap().contains_key(RULES_KEY))
        );
        assert!(off.services.iter().all(|s| {
            !s.spec
                .as_ref()
                .unwrap()
                .ports
                .iter()
                .flatten()
                .any(|p| p.name.as_deref() == Some("metrics"))
        }));
        // Turning monitoring off or on restarts the brokers (their Pod changes).
        assert_ne!(
            on.pods[0].metadata.annotations.as_ref().unwrap()
                [super::super::names::RESTART_HASH_ANNOTATION],
            a[super::super::names::RESTART_HASH_ANNOTATION]
        );
    }

    #[test]
    fn a_new_pier_image_does_not_restart_brokers() {
        let kc = example("kafkacluster-basic.yaml");
        let observed = Observed {
            cluster_id: Some("MkU3OEVBNTcwNTJENDM2Qk".into()),
            external_address: Some("203.0.113.7".into()),
            ..Observed::default()
        };
        let hash = |image: &str| {
            let settings = Settings {
                agent_image: image.into(),
                ..Settings::default()
            };
            let d = plan(&kc, &observed, &settings).unwrap();
            let pod = &d.pods[0];
            assert_eq!(
                pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0]
                    .image
                    .as_deref(),
                Some(image)
            );
            pod.metadata.annotations.as_ref().unwrap()[super::super::names::RESTART_HASH_ANNOTATION]
                .clone()
        };
        assert_eq!(
            hash("ghcr.io/pier-dev/pier:0.1.0"),
            hash("registry.example/pier:0.2.0")
        );
    }

    #[test]
    fn the_shipped_rules_are_explicit_and_lowercase() {
        let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(RULES).unwrap();
        assert_eq!(
            rules["lowercaseOutputName"],
            serde_yaml_ng::Value::Bool(true)
        );
        let list = rules["rules"].as_sequence().unwrap();
        assert!(list.len() >= 10);
        for r in list {
            let pattern = r["pattern"].as_str().unwrap();
            assert!(
                !pattern.starts_with(".*") && r["name"].as_str().is_some(),
                "no catch-all rules: {pattern}"
            );
        }
    }
}
