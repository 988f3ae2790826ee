//! Planning tests on the shipped examples and variations of them.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::*;
use crate::api::KafkaCluster;

pub(crate) fn example(name: &str) -> KafkaCluster {
    let path = format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut kc: KafkaCluster =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    kc.metadata.namespace = Some("kafka".into());
    kc.metadata.uid = Some("uid-1".into());
    kc
}

/// `key=value` pairs as a config map.
pub(crate) fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The basic example with other Kafka settings and brokers.
pub(crate) fn cluster(
    kafka: crate::api::KafkaSpec,
    brokers: Vec<crate::api::BrokerSpec>,
) -> KafkaCluster {
    let mut kc = example("kafkacluster-basic.yaml");
    kc.spec.kafka = kafka;
    kc.spec.brokers = brokers;
    kc
}

/// A broker with only an id and roles.
pub(crate) fn broker(id: i32, roles: &[Role]) -> crate::api::BrokerSpec {
    crate::api::BrokerSpec {
        id,
        roles: roles.to_vec(),
        ..Default::default()
    }
}

fn observed() -> Observed {
    Observed {
        pod_ips: BTreeMap::from([(0, "10.1.0.10".into()), (1, "10.1.0.11".into())]),
        external_address: Some("203.0.113.7".into()),
        cluster_id: Some("MkU3OEVBNTcwNTJENDM2Qk".into()),
        ..Observed::default()
    }
}

fn plan_of(kc: &KafkaCluster) -> Desired {
    plan(kc, &observed(), &Settings::default()).unwrap()
}

fn props(d: &Desired, id: i32) -> BTreeMap<String, String> {
    let name = format!("-broker-{id}-config");
    let cm = d
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref().unwrap().ends_with(&name))
        .unwrap_or_else(|| panic!("no ConfigMap for broker {id}"));
    cm.data.as_ref().unwrap()["server.properties"]
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn names<T: kube::Resource>(objs: &[T]) -> Vec<String> {
    objs.iter()
        .map(|o| o.meta().name.clone().unwrap())
        .collect()
}

fn pod(d: &Desired, id: i32) -> &Pod {
    d.pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(&format!("basic-broker-{id}")))
        .unwrap()
}

#[test]
fn the_basic_example_plans_every_object() {
    let d = plan_of(&example("kafkacluster-basic.yaml"));
    assert_eq!(
        names(&d.pods),
        ["basic-broker-0", "basic-broker-1", "basic-broker-2"]
    );
    assert_eq!(
        names(&d.config_maps),
        [
            "basic-broker-0-config",
            "basic-broker-1-config",
            "basic-broker-2-config",
            "basic-envoy-bootstrap"
        ]
    );
    assert_eq!(
        names(&d.claims),
        [
            "basic-broker-0-data-0",
            "basic-broker-1-data-0",
            "basic-broker-2-data-0"
        ]
    );
    assert_eq!(
        names(&d.services),
        [
            "basic-broker-0",
            "basic-broker-1",
            "basic-broker-2",
            "basic-headless",
            "basic-bootstrap",
            "basic-external"
        ]
    );
    assert_eq!(names(&d.deployments), ["basic-envoy"]);
    assert!(d.disruption_budgets.is_empty(), "one Envoy replica: no PDB");
    assert!(!d.waiting_for_address);
    for p in &d.pods {
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["kafka.pier.dev/cluster"], "basic");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "pier");
        assert!(labels.contains_key("kafka.pier.dev/broker-id"));
        assert_eq!(
            p.metadata.owner_references.as_ref().unwrap()[0].kind,
            "KafkaCluster"
        );
    }
}

#[test]
fn server_properties_wire_the_quorum_and_both_addresses() {
    let d = plan_of(&example("kafkacluster-basic.yaml"));
    let p = props(&d, 1);
    assert_eq!(p["node.id"], "1");
    assert_eq!(p["process.roles"], "broker,controller");
    assert_eq!(
        p["listeners"],
        "INTERNAL://:9092,CONTROLLER://:9093,EXTERNAL://:9094"
    );
    assert_eq!(
        p["advertised.listeners"],
        "INTERNAL://basic-broker-1.basic-headless.kafka.svc.cluster.local:9092,EXTERNAL://203.0.113.7:29101"
    );
    assert_eq!(
        p["controller.quorum.voters"],
        "0@basic-broker-0.basic-headless.kafka.svc.cluster.local:9093,\
         1@basic-broker-1.basic-headless.kafka.svc.cluster.local:9093,\
         2@basic-broker-2.basic-headless.kafka.svc.cluster.local:9093"
    );
    assert_eq!(p["controller.listener.names"], "CONTROLLER");
    assert_eq!(p["inter.broker.listener.name"], "INTERNAL");
    assert_eq!(
        p["listener.security.protocol.map"],
        "INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT,EXTERNAL:PLAINTEXT"
    );
    assert_eq!(p["log.dirs"], "/var/lib/kafka/data0/kafka");
    assert_eq!(p["default.replication.factor"], "3");
    // Dynamic keys are set live, never rendered: the file holds read-only keys only.
    assert!(!p.contains_key("min.insync.replicas"));
    assert!(!p.contains_key("log.retention.ms"));
    assert_eq!(d.config.cluster_default["min.insync.replicas"], "2");
    assert_eq!(d.config.cluster_default["log.retention.ms"], "604800000");
}

#[test]
fn planning_is_deterministic() {
    let kc = example("kafkacluster-basic.yaml");
    let (a, b) = (plan_of(&kc), plan_of(&kc));
    assert_eq!(a.config_maps, b.config_maps);
    assert_eq!(a.pods, b.pods);
    assert_eq!(a.services, b.services);
    assert_eq!(a.external_access, b.external_access);
}

#[test]
fn a_per_broker_read_only_change_touches_only_that_broker() {
    let kc = example("kafkacluster-basic.yaml");
    let mut changed = kc.clone();
    changed.spec.brokers[1]
        .read_only_config
        .insert("num.partitions".into(), "2".into());
    let (a, b) = (plan_of(&kc), plan_of(&changed));
    for (x, y) in a.config_maps.iter().zip(&b.config_maps) {
        let is_broker_1 = x.metadata.name.as_deref() == Some("basic-broker-1-config");
        assert_eq!(x != y, is_broker_1, "{:?}", x.metadata.name);
    }
    assert_eq!(props(&b, 1)["num.partitions"], "2");
    for id in 0..3 {
        assert_eq!(
            restart_hash(pod(&a, id)) != restart_hash(pod(&b, id)),
            id == 1,
            "broker {id}"
        );
    }
}

#[test]
fn a_rack_pins_the_broker_to_its_zone_and_sets_broker_rack() {
    let mut kc = example("kafkacluster-basic.yaml");
    let group = kc.spec.brokers[0].config_group.clone().unwrap();
    kc.spec.broker_config_groups.get_mut(&group).unwrap().rack = Some("zone-a".into());
    kc.spec.brokers[1].rack = Some("zone-b".into());
    kc.spec.brokers[1]
        .read_only_config
        .insert("broker.rack".into(), "ignored".into());
    let d = plan_of(&kc);
    for (id, zone) in [(0, "zone-a"), (1, "zone-b")] {
        assert_eq!(props(&d, id)["broker.rack"], zone, "broker {id}");
        let selector = pod(&d, id)
            .spec
            .as_ref()
            .unwrap()
            .node_selector
            .clone()
            .unwrap_or_default();
        assert_eq!(selector["topology.kubernetes.io/zone"], zone);
    }
    let text = &d.config_maps[1].data.as_ref().unwrap()["server.properties"];
    assert_eq!(text.matches("broker.rack=").count(), 1, "{text}");
}

fn restart_hash(p: &Pod) -> &str {
    &p.metadata.annotations.as_ref().unwrap()[names::RESTART_HASH_ANNOTATION]
}

#[test]
fn dynamic_changes_never_change_files_or_restart_hashes() {
    let kc = example("kafkacluster-basic.yaml");
    let mut changed = kc.clone();
    changed.spec.brokers[1]
        .config
        .insert("log.cleaner.threads".into(), "2".into());
    changed
        .spec
        .kafka
        .cluster_wide_config
        .insert("log.retention.ms".into(), "1000".into());
    let (a, b) = (plan_of(&kc), plan_of(&changed));
    assert_eq!(a.config_maps, b.config_maps);
    assert_eq!(a.pods, b.pods);
    assert_eq!(b.config.brokers[&1].live["log.cleaner.threads"], "2");
    assert!(b.config.brokers[&0].live.is_empty());
    assert_eq!(b.config.cluster_default["log.retention.ms"], "1000");
}

#[test]
fn pod_spec_changes_and_the_restart_annotation_change_restart_hashes() {
    let kc = example("kafkacluster-basic.yaml");
    let base = plan_of(&kc);
    let mut image = kc.clone();
    image.spec.kafka.image = "apache/kafka:4.1.3".into();
    let mut heap = kc.clone();
    heap.spec
        .broker_config_groups
        .get_mut("default")
        .unwrap()
        .heap_opts = Some("-Xmx1g".into());
    let mut token = kc.clone();
    token
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(names::RESTART_ANNOTATION.into(), "2026-11-26".into());
    for changed in [image, heap, token] {
        let d = plan_of(&changed);
        for id in 0..3 {
            assert_ne!(restart_hash(pod(&base, id)), restart_hash(pod(&d, id)));
        }
    }
}

#[test]
fn brokers_get_no_service_account_token_and_older_pods_are_not_restarted_for_it() {
    let kc = example("kafkacluster-basic.yaml");
    let d = plan_of(&kc);
    let planned = pod(&d, 0);
    let spec = planned.spec.as_ref().unwrap();
    assert_eq!(spec.automount_service_account_token, Some(false));
    // A Pod rendered before: the same but for the automount field.
    let mut older = planned.clone();
    older.spec.as_mut().unwrap().automount_service_account_token = None;
    let props = &d.config_maps[1].data.as_ref().unwrap()["server.properties"];
    assert_eq!(
        broker::restart_hash(&kc, &older, props),
        broker::restart_hash(&kc, planned, props)
    );
}

#[test]
fn removing_a_broker_removes_only_its_objects() {
    let kc = example("kafkacluster-basic.yaml");
    let mut smaller = kc.clone();
    smaller.spec.brokers.retain(|b| b.id != 1);
    let (a, b) = (plan_of(&kc), plan_of(&smaller));
    assert_eq!(names(&b.pods), ["basic-broker-0", "basic-broker-2"]);
    assert!(!names(&b.services).contains(&"basic-broker-1".to_string()));
    // The survivors' Pods are unchanged except for the quorum they are told about, which
    // lives in their ConfigMap: the Pod objects themselves only differ by config hash.
    assert_eq!(pod(&a, 0).spec, pod(&b, 0).spec);
    let ext = b
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("basic-external"))
        .unwrap();
    let ports: Vec<i32> = ext
        .spec
        .as_ref()
        .unwrap()
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, [29092, 29100, 29102]);
}

#[test]
fn brokers_wait_for_the_load_balancer_address() {
    let kc = example("kafkacluster-basic.yaml");
    let mut obs = observed();
    obs.external_address = None;
    let d = plan(&kc, &obs, &Settings::default()).unwrap();
    assert!(d.waiting_for_address);
    assert!(d.pods.is_empty());
    assert_eq!(
        names(&d.deployments),
        ["basic-envoy"],
        "Envoy and its Service come first"
    );
    assert!(names(&d.services).contains(&"basic-external".to_string()));
}

#[test]
fn the_xds_model_lists_brokers_with_a_pod_ip() {
    let d = plan_of(&example("kafkacluster-basic.yaml"));
    assert_eq!(d.external_access.len(), 1);
    let a = &d.external_access[0];
    assert_eq!(a.group(), "kafka/basic");
    let ids: Vec<(i32, &str, u16)> = a
        .brokers
        .iter()
        .map(|b| (b.id, b.host.as_str(), b.port))
        .collect();
    assert_eq!(ids, [(0, "10.1.0.10", 9094), (1, "10.1.0.11", 9094)]);
    let resources = crate::xds::translate(&d.external_access).unwrap();
    assert_eq!(
        resources.listeners.len(),
        3,
        "two brokers with IPs plus bootstrap"
    );
}

#[test]
fn brokers_that_left_the_spec_keep_their_listener_and_draining_ones_leave_bootstrap() {
    let kc = example("kafkacluster-basic.yaml");
    let mut o = observed();
    o.pod_ips.insert(7, "10.1.0.17".into());
    o.pod_ips.insert(8, "10.1.0.18".into());
    o.retained = [7, 8].into();
    o.draining = [8].into();
    let d = plan(&kc, &o, &Settings::default()).unwrap();
    let states: Vec<(i32, crate::model::BrokerState)> = d.external_access[0]
        .brokers
        .iter()
        .map(|b| (b.id, b.state))
        .collect();
    use crate::model::BrokerState::{Draining, Serving};
    assert_eq!(
        states,
        [(0, Serving), (1, Serving), (7, Serving), (8, Draining)]
    );
    // Their objects are not planned: the controller keeps what exists.
    assert!(
        !names(&d.pods)
            .iter()
            .any(|n| n.ends_with("-7") || n.ends_with("-8"))
    );
}

#[test]
fn jbod_brokers_mount_every_volume_and_list_them_in_log_dirs() {
    let kc = example("kafkacluster-jbod.yaml");
    let d = plan(&kc, &observed(), &Settings::default()).unwrap();
    let claims = names(&d.claims);
    assert_eq!(
        claims
            .iter()
            .filter(|c| c.starts_with("jbod-broker-0-"))
            .count(),
        2
    );
    assert_eq!(
        claims
            .iter()
            .filter(|c| c.starts_with("jbod-broker-100-"))
            .count(),
        1
    );
    let p0 = props(&d, 0);
    assert_eq!(
        p0["log.dirs"],
        "/var/lib/kafka/data0/kafka,/var/lib/kafka/data1/kafka"
    );
    assert_eq!(p0["process.roles"], "broker");
    assert!(p0["controller.quorum.voters"].starts_with("100@jbod-broker-100."));
    assert!(p0["advertised.listeners"].ends_with("EXTERNAL://kafka.example.com:29100"));
    let pod0 = d
        .pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("jbod-broker-0"))
        .unwrap();
    let mounts: Vec<&str> = pod0.spec.as_ref().unwrap().containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(
        mounts,
        [
            "/etc/pier",
            "/var/lib/kafka/data0",
            "/var/lib/kafka/data1",
            "/opt/pier-agent"
        ]
    );
    let c = props(&d, 100);
    assert_eq!(c["process.roles"], "controller");
    assert_eq!(c["listeners"], "CONTROLLER://:9093");
    assert!(!c.contains_key("advertised.listeners"));
    let p1 = props(&d, 1);
    assert_eq!(p1["queued.max.requests"], "1000");
    assert!(!props(&d, 2).contains_key("queued.max.requests"));
    assert!(!p1.contains_key("num.io.threads"), "dynamic: applied live");
    assert_eq!(d.config.brokers[&1].live["num.io.threads"], "16");
    // Only volumes marked deleteClaimOnRemoval are owned (and so garbage-collected).
    let owned: Vec<bool> = d
        .claims
        .iter()
        .filter(|c| {
            c.metadata
                .name
                .as_deref()
                .unwrap()
                .starts_with("jbod-broker-0-")
        })
        .map(|c| c.metadata.owner_references.is_some())
        .collect();
    assert_eq!(owned, [false, true]);
    // Controllers are not exposed externally.
    let a = &d.external_access[0];
    assert!(a.brokers.iter().all(|b| b.id < 100));
}

#[test]
fn bad_specs_are_plan_errors() {
    let mut kc = example("kafkacluster-basic.yaml");
    kc.spec.brokers[0].config_group = Some("nope".into());
    assert!(matches!(
        plan_of_err(&kc),
        PlanError::UnknownConfigGroup { id: 0, .. }
    ));

    let mut kc = example("kafkacluster-basic.yaml");
    kc.spec.brokers[2]
        .config
        .insert("node.id".into(), "7".into());
    let e = plan_of_err(&kc);
    assert_eq!(
        e,
        PlanError::ReservedKey {
            section: "broker 2: config".into(),
            key: "node.id".into()
        }
    );
    assert!(e.to_string().contains("set by Pier"));

    let mut kc = example("kafkacluster-basic.yaml");
    for b in &mut kc.spec.brokers {
        b.roles = vec![crate::api::Role::Broker];
    }
    assert_eq!(plan_of_err(&kc), PlanError::NoController);

    let mut kc = example("kafkacluster-basic.yaml");
    kc.spec.listeners.external[0].name = "internal".into();
    assert!(matches!(
        plan_of_err(&kc),
        PlanError::DuplicateListenerName(_)
    ));

    let mut kc = example("kafkacluster-basic.yaml");
    kc.spec.listeners.external[0].broker_port_base = Some(29090);
    assert!(
        matches!(plan_of_err(&kc), PlanError::External(_)),
        "29090 + 2 is the bootstrap port"
    );

    let kc = example("kafkacluster-basic.yaml");
    let mut obs = observed();
    obs.cluster_id = None;
    assert_eq!(
        plan(&kc, &obs, &Settings::default()).unwrap_err(),
        PlanError::NoClusterId
    );
}

fn plan_of_err(kc: &KafkaCluster) -> PlanError {
    plan(kc, &observed(), &Settings::default()).unwrap_err()
}

#[test]
fn with_xds_tls_envoy_dials_with_its_client_certificate() {
    let text = envoy_bootstrap("pier-xds.pier-system.svc:18000", true);
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let cluster = &yaml["static_resources"]["clusters"][0];
    assert_eq!(cluster["name"].as_str(), Some("pier_xds"));
    let tls = &cluster["transport_socket"]["typed_config"];
    assert_eq!(
        tls["@type"].as_str(),
        Some("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext")
    );
    assert_eq!(tls["sni"].as_str(), Some("pier-xds.pier-system.svc"));
    let common = &tls["common_tls_context"];
    // The certificate and the CA come through file-based SDS, watched: renewals need no restart.
    let cert_sds = &common["tls_certificate_sds_secret_configs"][0];
    assert_eq!(
        cert_sds["sds_config"]["path_config_source"]["path"].as_str(),
        Some("/etc/envoy/xds-tls-certificate.yaml")
    );
    let validation = &common["combined_validation_context"];
    let ca_sds = &validation["validation_context_sds_secret_config"];
    assert_eq!(
        ca_sds["sds_config"]["path_config_source"]["path"].as_str(),
        Some("/etc/envoy/xds-tls-ca.yaml")
    );
    // The CA alone is not enough: the server's certificate must name the host Envoy dials.
    let san = &validation["default_validation_context"]["match_typed_subject_alt_names"][0];
    assert_eq!(san["san_type"].as_str(), Some("DNS"));
    assert_eq!(
        san["matcher"]["exact"].as_str(),
        Some("pier-xds.pier-system.svc")
    );
    let files: BTreeMap<&str, serde_yaml_ng::Value> = xds_tls_sds_files()
        .iter()
        .map(|(name, text)| (*name, serde_yaml_ng::from_str(text).unwrap()))
        .collect();
    let cert = &files["xds-tls-certificate.yaml"]["resources"][0];
    assert_eq!(cert["name"], cert_sds["name"]);
    let pair = &cert["tls_certificate"];
    assert_eq!(
        pair["certificate_chain"]["filename"].as_str(),
        Some("/etc/pier/xds-tls/tls.crt")
    );
    assert_eq!(
        pair["private_key"]["filename"].as_str(),
        Some("/etc/pier/xds-tls/tls.key")
    );
    assert_eq!(
        pair["watched_directory"]["path"].as_str(),
        Some("/etc/pier/xds-tls")
    );
    let ca = &files["xds-tls-ca.yaml"]["resources"][0];
    assert_eq!(ca["name"], ca_sds["name"]);
    assert_eq!(
        ca["validation_context"]["trusted_ca"]["filename"].as_str(),
        Some("/etc/pier/xds-tls/xds-ca.crt")
    );
    assert_eq!(
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"]["address"]
            .as_str(),
        Some("pier-xds.pier-system.svc")
    );

    let kc = example("kafkacluster-basic.yaml");
    let settings = Settings {
        xds_tls: true,
        ..Settings::default()
    };
    let d = plan(&kc, &observed(), &settings).unwrap();
    let bootstrap = d
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("basic-envoy-bootstrap"))
        .unwrap();
    let data = bootstrap.data.as_ref().unwrap();
    assert!(data["bootstrap.yaml"].contains("UpstreamTlsContext"));
    for (name, text) in xds_tls_sds_files() {
        assert_eq!(data[name], text, "{name} is in the ConfigMap");
    }
    let pod = d.deployments[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "xds-tls")
        .unwrap();
    assert_eq!(
        volume.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("basic-envoy-xds-tls")
    );
    let mount = pod.containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "xds-tls")
        .unwrap();
    assert_eq!(mount.mount_path, "/etc/pier/xds-tls");
    assert_eq!(mount.read_only, Some(true));

    // Without TLS the Pod mounts no such Secret.
    let plain = plan_of(&kc);
    let pod = plain.deployments[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert!(
        pod.volumes
            .as_ref()
            .unwrap()
            .iter()
            .all(|v| v.name != "xds-tls")
    );
}

#[test]
fn the_envoy_bootstrap_points_at_the_operator() {
    let text = envoy_bootstrap("pier-xds.pier-system.svc:18000", false);
    assert!(text.contains("address: pier-xds.pier-system.svc, port_value: 18000"));
    assert!(!text.contains("transport_socket"), "plaintext by default");
    assert!(
        text.contains("address: 127.0.0.1, port_value: 19901"),
        "admin stays on localhost"
    );
    let d = plan_of(&example("kafkacluster-basic.yaml"));
    let dep = &d.deployments[0];
    let args = dep
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap();
    assert!(
        args.windows(2)
            .any(|w| w[0] == "--service-cluster" && w[1] == "kafka/basic")
    );
    let template = &dep.spec.as_ref().unwrap().template;
    assert!(
        template.metadata.as_ref().unwrap().annotations.is_none(),
        "no config hash in the Envoy pod template"
    );
}

#[test]
fn a_key_with_a_line_break_is_refused_and_values_are_escaped() {
    // The key would have written a second node.id line into server.properties.
    for section in ["readOnly", "clusterWide", "broker"] {
        let mut kc = example("kafkacluster-basic.yaml");
        let key = "x\nnode.id".to_string();
        match section {
            "readOnly" => kc.spec.kafka.read_only_config.insert(key, "7".into()),
            "clusterWide" => kc.spec.kafka.cluster_wide_config.insert(key, "7".into()),
            _ => kc.spec.brokers[1].read_only_config.insert(key, "7".into()),
        };
        assert!(
            matches!(plan_of_err(&kc), PlanError::InvalidConfigKey { key, .. } if key == "x\nnode.id"),
            "{section}"
        );
    }
    let mut kc = example("kafkacluster-basic.yaml");
    kc.spec
        .kafka
        .read_only_config
        .insert("com.example.text".into(), " a\nnode.id=7\\ é".into());
    let d = plan_of(&kc);
    let text = &d.config_maps[0].data.as_ref().unwrap()["server.properties"];
    assert_eq!(
        text.lines().filter(|l| l.starts_with("node.id=")).count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("com.example.text=\\ a\\nnode.id=7\\\\ \\u00E9\n"),
        "{text}"
    );
}

#[test]
fn pier_labels_and_annotations_win_over_the_specs() {
    let mut kc = example("kafkacluster-basic.yaml");
    let group = kc.spec.broker_config_groups.get_mut("default").unwrap();
    for key in [
        "app.kubernetes.io/instance",
        "kafka.pier.dev/cluster",
        "kafka.pier.dev/broker-id",
        "kafka.pier.dev/role-broker",
    ] {
        group.labels.insert(key.into(), "other".into());
    }
    group.labels.insert("team".into(), "data".into());
    group
        .annotations
        .insert(names::RESTART_HASH_ANNOTATION.into(), "x".into());
    group
        .annotations
        .insert(names::RESTART_ANNOTATION.into(), "x".into());
    kc.spec.brokers[1]
        .labels
        .insert("kafka.pier.dev/broker-id".into(), "0".into());
    kc.spec.brokers.push(crate::api::BrokerSpec {
        id: 9,
        roles: vec![crate::api::Role::Controller],
        config_group: Some("default".into()),
        ..Default::default()
    });
    kc.spec
        .envoy
        .annotations
        .insert("kafka.pier.dev/x".into(), "y".into());
    kc.spec.listeners.external[0]
        .annotations
        .insert("kafka.pier.dev/x".into(), "y".into());
    let d = plan_of(&kc);
    let base = plan_of(&example("kafkacluster-basic.yaml"));
    for id in [0, 1, 2, 9] {
        let p = d
            .pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(&format!("basic-broker-{id}")))
            .unwrap();
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/instance"], "basic");
        assert_eq!(labels["kafka.pier.dev/cluster"], "basic");
        assert_eq!(labels["kafka.pier.dev/broker-id"], id.to_string());
        assert_eq!(labels["team"], "data");
        assert_eq!(
            labels.get("kafka.pier.dev/role-broker").is_some(),
            id != 9,
            "a controller-only node never joins the bootstrap Service"
        );
        let annotations = p.metadata.annotations.as_ref().unwrap();
        assert!(!annotations.contains_key(names::RESTART_ANNOTATION));
        assert_ne!(annotations[names::RESTART_HASH_ANNOTATION], "x");
    }
    assert_eq!(d.deployments, base.deployments);
    let external = |d: &Desired| {
        d.services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some("basic-external"))
            .cloned()
            .unwrap()
    };
    assert_eq!(external(&d), external(&base));
}

#[test]
fn the_reserved_keys_cover_every_label_pier_sets() {
    let d = plan_of(&example("kafkacluster-jbod.yaml"));
    let metas = d
        .pods
        .iter()
        .map(|o| &o.metadata)
        .chain(d.config_maps.iter().map(|o| &o.metadata))
        .chain(d.claims.iter().map(|o| &o.metadata))
        .chain(d.services.iter().map(|o| &o.metadata))
        .chain(d.deployments.iter().map(|o| &o.metadata));
    for meta in metas {
        for key in meta
            .labels
            .iter()
            .flatten()
            .chain(meta.annotations.iter().flatten())
            .map(|(k, _)| k)
            // The conventional scrape annotations of the metrics port (monitoring.rs): Pier
            // sets them over the spec's, which may still name them.
            .filter(|k| !k.starts_with("prometheus.io/"))
        {
            assert!(crate::api::is_pier_key(key), "{key} on {:?}", meta.name);
        }
    }
}

#[test]
fn images_sizes_and_storage_are_checked() {
    let mut kc = example("kafkacluster-basic.yaml");
    kc.spec.kafka.image = String::new();
    assert_eq!(
        plan_of_err(&kc),
        PlanError::InvalidImage {
            field: "spec.kafka.image".into(),
            image: String::new()
        }
    );
    let mut kc = example("kafkacluster-basic.yaml");
    kc.spec
        .broker_config_groups
        .get_mut("default")
        .unwrap()
        .image = Some("a b".into());
    assert!(matches!(
        plan_of_err(&kc),
        PlanError::InvalidImage { field, .. } if field == "spec.brokerConfigGroups.default.image"
    ));
    let mut kc = example("kafkacluster-basic.yaml");
    kc.spec.envoy.image = "envoy\n".into();
    assert!(matches!(plan_of_err(&kc), PlanError::InvalidImage { .. }));

    for size in ["1Gb", "0", ""] {
        let mut kc = example("kafkacluster-basic.yaml");
        kc.spec
            .broker_config_groups
            .get_mut("default")
            .unwrap()
            .storage[0]
            .size = size.into();
        assert_eq!(
            plan_of_err(&kc),
            PlanError::InvalidStorageSize {
                id: 0,
                mount_path: "/var/lib/kafka/data0".into(),
                size: size.into()
            }
        );
    }

    let mut kc = example("kafkacluster-basic.yaml");
    kc.spec.brokers[1].resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
        requests: Some(BTreeMap::from([(
            "cpu".to_string(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("500m".into()),
        )])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Gb".into()),
        )])),
        ..Default::default()
    });
    assert_eq!(
        plan_of_err(&kc),
        PlanError::InvalidResourceQuantity {
            field: "broker 1: resources".into(),
            resource: "memory".into(),
            quantity: "1Gb".into()
        }
    );

    // A comma would split log.dirs; the group's volume and the broker's own share one Pod.
    for (own, path) in [(false, "/a,/b"), (true, "/var/lib/kafka/data0/")] {
        let mut kc = example("kafkacluster-basic.yaml");
        let volume = crate::api::StorageSpec {
            mount_path: path.into(),
            size: "1Gi".into(),
            ..Default::default()
        };
        if own {
            kc.spec.brokers[1].storage.push(volume);
        } else {
            kc.spec
                .broker_config_groups
                .get_mut("default")
                .unwrap()
                .storage[0] = volume;
        }
        assert_eq!(
            plan_of_err(&kc),
            PlanError::InvalidMountPath {
                id: if own { 1 } else { 0 },
                mount_path: path.into()
            }
        );
    }

    let mut kc = example("kafkacluster-basic.yaml");
    kc.spec.brokers[2].config_group = None;
    assert_eq!(plan_of_err(&kc), PlanError::NoStorage { id: 2 });
    kc.spec.brokers[2].storage = vec![crate::api::StorageSpec {
        mount_path: "/data".into(),
        size: "1.5Gi".into(),
        ..Default::default()
    }];
    let d = plan_of(&kc);
    assert_eq!(props(&d, 2)["log.dirs"], "/data/kafka");
}

#[test]
fn claims_carry_the_planned_size() {
    let mut kc = example("kafkacluster-basic.yaml");
    kc.spec
        .broker_config_groups
        .get_mut("default")
        .unwrap()
        .storage[0]
        .size = "20Gi".into();
    let d = plan_of(&kc);
    for c in &d.claims {
        let requests = c.spec.as_ref().unwrap().resources.as_ref().unwrap();
        assert_eq!(
            requests.requests.as_ref().unwrap()["storage"].0,
            "20Gi",
            "{:?}",
            c.metadata.name
        );
    }
}

#[test]
fn the_plan_carries_envoys_resources_and_refuses_what_envoy_would_reject() {
    let d = plan_of(&example("kafkacluster-basic.yaml"));
    let xds = d.xds.as_ref().expect("Envoy's resources");
    assert_eq!(xds, &crate::xds::translate(&d.external_access).unwrap());

    let mut kc = example("kafkacluster-basic.yaml");
    kc.spec.listeners.external.clear();
    assert!(plan_of(&kc).xds.is_none());

    // Port 65535 + broker 2 does not exist: refused before anything is written.
    let mut kc = example("kafkacluster-basic.yaml");
    kc.spec.listeners.external[0].broker_port_base = Some(65534);
    assert!(matches!(
        plan_of_err(&kc),
        PlanError::External(crate::model::ModelError::PortOutOfRange { id: 2, .. })
    ));
}

#[test]
fn cruise_control_is_planned_only_when_enabled() {
    let off = plan_of(&example("kafkacluster-basic.yaml"));
    assert!(
        !names(&off.deployments)
            .iter()
            .any(|n| n.contains("cruise-control"))
    );
    assert!(!props(&off, 0).contains_key("metric.reporters"));

    let mut kc = example("kafkacluster-basic.yaml");
    kc.spec.cruise_control.enabled = true;
    let on = plan_of(&kc);
    for objs in [
        names(&on.deployments),
        names(&on.services),
        names(&on.config_maps),
    ] {
        assert!(
            objs.contains(&"basic-cruise-control".to_string()),
            "{objs:?}"
        );
    }
    assert_eq!(
        props(&on, 0).get("metric.reporters").map(String::as_str),
        Some(cruise_control::METRICS_REPORTER_CLASS)
    );
    assert_ne!(restart_hash(pod(&on, 0)), restart_hash(pod(&off, 0)));

    // Without the reporter the brokers' files are untouched.
    kc.spec.cruise_control.metrics_reporter = false;
    let quiet = plan_of(&kc);
    assert_eq!(props(&quiet, 0), props(&off, 0));
    assert_eq!(restart_hash(pod(&quiet, 0)), restart_hash(pod(&off, 0)));

    // A CC the user runs: nothing deployed, the reporter still set.
    kc.spec.cruise_control.metrics_reporter = true;
    kc.spec.cruise_control.url = Some("http://cc.example:9090".into());
    let external = plan_of(&kc);
    assert!(
        !names(&external.deployments)
            .iter()
            .any(|n| n.contains("cruise-control"))
    );
    assert!(props(&external, 0).contains_key("metric.reporters"));

    // CC's own spec errors are plan errors (InvalidSpec).
    kc.spec.cruise_control.url = None;
    kc.spec
        .cruise_control
        .config
        .insert("bootstrap.servers".into(), "elsewhere:9092".into());
    assert!(matches!(
        plan(&kc, &observed(), &Settings::default()),
        Err(PlanError::ReservedKey { .. })
    ));
}

/// The basic example as a new cluster Pier formatted for a dynamic quorum (status.quorum).
fn dynamic(formed: bool) -> KafkaCluster {
    let mut kc = example("kafkacluster-basic.yaml");
    let initial = (0..3)
        .map(|id| crate::api::QuorumVoter {
            id,
            directory_id: Some(format!("dir{id}AAAAAAAAAAAAAAAAAA")),
        })
        .collect();
    kc.status = Some(crate::api::KafkaClusterStatus {
        quorum: Some(crate::api::QuorumStatus {
            mode: crate::api::QuorumMode::Dynamic,
            initial_controllers: initial,
            formed,
            ..Default::default()
        }),
        ..Default::default()
    });
    kc
}

fn env_of(p: &Pod, name: &str) -> Option<String> {
    p.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

#[test]
fn a_dynamic_quorum_is_found_through_bootstrap_servers_and_formatted_once() {
    let d = plan_of(&dynamic(false));
    let p = props(&d, 1);
    assert!(!p.contains_key("controller.quorum.voters"));
    // Voters are dialled at the name they advertise, which a restart keeps.
    assert_eq!(
        p["advertised.listeners"],
        "INTERNAL://basic-broker-1.basic-headless.kafka.svc.cluster.local:9092,\
         CONTROLLER://basic-broker-1.basic-headless.kafka.svc.cluster.local:9093,\
         EXTERNAL://203.0.113.7:29101"
    );
    assert_eq!(
        p["controller.quorum.bootstrap.servers"],
        "basic-broker-0.basic-headless.kafka.svc.cluster.local:9093,\
         basic-broker-1.basic-headless.kafka.svc.cluster.local:9093,\
         basic-broker-2.basic-headless.kafka.svc.cluster.local:9093"
    );
    let flags = env_of(pod(&d, 1), quorum::FORMAT_ARGS_ENV).unwrap();
    assert_eq!(
        flags,
        "--initial-controllers \
         0@basic-broker-0.basic-headless.kafka.svc.cluster.local:9093:dir0AAAAAAAAAAAAAAAAAA,\
         1@basic-broker-1.basic-headless.kafka.svc.cluster.local:9093:dir1AAAAAAAAAAAAAAAAAA,\
         2@basic-broker-2.basic-headless.kafka.svc.cluster.local:9093:dir2AAAAAAAAAAAAAAAAAA"
    );
    let command = pod(&d, 1).spec.as_ref().unwrap().containers[0]
        .command
        .clone()
        .unwrap()
        .join(" ");
    assert!(
        command.contains("-c /etc/pier/server.properties ${KAFKA_STORAGE_FORMAT_ARGS:-} &&"),
        "{command}"
    );
    // Once formed, later formats join as observers, and no Pod restarts for that.
    let formed = plan_of(&dynamic(true));
    assert_eq!(
        env_of(pod(&formed, 1), quorum::FORMAT_ARGS_ENV).as_deref(),
        Some("--no-initial-controllers")
    );
    assert_eq!(
        pod(&d, 1).annotations()[names::RESTART_HASH_ANNOTATION],
        pod(&formed, 1).annotations()[names::RESTART_HASH_ANNOTATION]
    );
    // A static quorum's Pods keep the command they always had.
    let static_pod = pod(&plan_of(&example("kafkacluster-basic.yaml")), 1).clone();
    assert_eq!(env_of(&static_pod, quorum::FORMAT_ARGS_ENV), None);
    let static_command = static_pod.spec.unwrap().containers[0]
        .command
        .clone()
        .unwrap()
        .join(" ");
    assert!(!static_command.contains("KAFKA_STORAGE_FORMAT_ARGS"));
}

#[test]
fn adding_a_controller_restarts_no_other_node() {
    let kc = dynamic(true);
    let mut bigger = kc.clone();
    let mut controller = broker(3, &[Role::Controller]);
    controller.config_group = Some("default".into());
    bigger.spec.brokers.push(controller);
    let (a, b) = (plan_of(&kc), plan_of(&bigger));
    for id in 0..3 {
        assert_eq!(
            pod(&a, id).annotations()[names::RESTART_HASH_ANNOTATION],
            pod(&b, id).annotations()[names::RESTART_HASH_ANNOTATION],
            "node {id}"
        );
    }
    assert!(props(&b, 0)["controller.quorum.bootstrap.servers"].contains("basic-broker-3."));
    assert_eq!(
        env_of(pod(&b, 3), quorum::FORMAT_ARGS_ENV).as_deref(),
        Some("--no-initial-controllers")
    );
}

#[test]
fn a_release_older_than_the_finalized_metadata_version_is_refused() {
    let mut kc = example("kafkacluster-basic.yaml");
    kc.spec.kafka.image = "apache/kafka:4.0.2".into();
    let status = |level: i32| crate::api::KafkaClusterStatus {
        kafka_version: Some(crate::api::KafkaVersionStatus {
            metadata_version_level: Some(level),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Still at 4.0's level: going back to 4.0 is fine.
    kc.status = Some(status(25));
    assert!(plan(&kc, &observed(), &Settings::default()).is_ok());
    // Raised to 4.1-IV1: refused, naming the level and the brokers.
    kc.status = Some(status(27));
    let err = plan(&kc, &observed(), &Settings::default()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("downgrade refused"), "{text}");
    assert!(text.contains("4.1-IV1 (level 27)"), "{text}");
    assert!(text.contains("broker 0 (4.0.2)"), "{text}");
}
