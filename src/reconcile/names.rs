//! Object names and labels, in one place.
use crate::api::KafkaCluster;
use kube::ResourceExt;

pub const CLUSTER_LABEL: &str = "kafka.pier.dev/cluster";
pub const BROKER_ID_LABEL: &str = "kafka.pier.dev/broker-id";
/// Any new value asks for a full rebalance of the cluster's replicas and leaders.
pub const REBALANCE_ANNOTATION: &str = "kafka.pier.dev/rebalance";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Set on Pods of brokers with the broker role: the bootstrap Service selects them.
pub const BROKER_ROLE_LABEL: &str = "kafka.pier.dev/role-broker";
/// Hash of the applied object, so an unchanged object is never written again.
pub const APPLIED_HASH_ANNOTATION: &str = "kafka.pier.dev/applied-hash";
/// On a broker Pod: hash of everything whose change needs that broker restarted (its read-only
/// configuration and its Pod spec). A plan with a different hash means a restart is due.
pub const RESTART_HASH_ANNOTATION: &str = "kafka.pier.dev/restart-hash";
/// Set by users: on the KafkaCluster, any new value restarts every broker (one at a time); on a
/// broker Pod, that broker is restarted (gated like any other restart).
pub const RESTART_ANNOTATION: &str = "kafka.pier.dev/restart";
/// Mount path a PVC belongs to.
pub const MOUNT_PATH_ANNOTATION: &str = "kafka.pier.dev/mount-path";

pub fn broker_pod(kc: &KafkaCluster, id: i32) -> String {
    format!("{}-broker-{id}", kc.name_any())
}

pub fn broker_config(kc: &KafkaCluster, id: i32) -> String {
    format!("{}-broker-{id}-config", kc.name_any())
}

pub fn broker_service(kc: &KafkaCluster, id: i32) -> String {
    broker_pod(kc, id)
}

/// The PVC of the `index`th volume of broker `id`.
pub fn broker_claim(kc: &KafkaCluster, id: i32, index: usize) -> String {
    format!("{}-broker-{id}-data-{index}", kc.name_any())
}

/// Broker `id`'s certificate and key, and the CA bundles it trusts.
pub fn broker_tls_secret(kc: &KafkaCluster, id: i32) -> String {
    format!("{}-broker-{id}-tls", kc.name_any())
}

/// The cluster CA's certificate and key (`kind` = `cluster`) or the clients CA's (`clients`),
/// when Pier generates them.
pub fn ca_secret(kc: &KafkaCluster, kind: &str) -> String {
    format!("{}-{kind}-ca", kc.name_any())
}

/// The public half of a CA: the bundle of certificates clients trust.
pub fn ca_cert_secret(kc: &KafkaCluster, kind: &str) -> String {
    format!("{}-{kind}-ca-cert", kc.name_any())
}

/// The operator's client certificate (from the clients CA) for this cluster.
pub fn operator_tls_secret(kc: &KafkaCluster) -> String {
    format!("{}-pier-operator-tls", kc.name_any())
}

pub fn headless_service(kc: &KafkaCluster) -> String {
    format!("{}-headless", kc.name_any())
}

pub fn bootstrap_service(kc: &KafkaCluster) -> String {
    format!("{}-bootstrap", kc.name_any())
}

pub fn external_service(kc: &KafkaCluster) -> String {
    format!("{}-external", kc.name_any())
}

pub fn envoy(kc: &KafkaCluster) -> String {
    format!("{}-envoy", kc.name_any())
}

pub fn envoy_bootstrap(kc: &KafkaCluster) -> String {
    format!("{}-envoy-bootstrap", kc.name_any())
}

/// The Secret with the Envoys' xDS client certificate, key and the xDS server's CA.
pub fn envoy_xds_tls(kc: &KafkaCluster) -> String {
    format!("{}-envoy-xds-tls", kc.name_any())
}

/// The broker's stable DNS name through the headless Service.
pub fn broker_host(kc: &KafkaCluster, namespace: &str, id: i32, cluster_domain: &str) -> String {
    format!(
        "{}.{}.{namespace}.svc.{cluster_domain}",
        broker_pod(kc, id),
        headless_service(kc)
    )
}
