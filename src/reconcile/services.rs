//! Services (headless, per broker, bootstrap, the one external Service) and the external-access
//! model handed to the xDS translation.
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::broker::{EffectiveBroker, broker_labels, port_name};
use super::names::{self, BROKER_ID_LABEL, BROKER_ROLE_LABEL, CLUSTER_LABEL, COMPONENT_LABEL};
use super::{Observed, PlanError, cluster_labels, owner_reference};
use crate::api::{ExternalListener, ExternalServiceType, KafkaCluster, Role, is_pier_key};
use crate::model::{BrokerRouting, BrokerState, ExposedBroker, ExternalAccess};

/// Idle timeout of proxied client connections: longer than Kafka clients'
/// connections.max.idle.ms (9 min), so clients close idle connections first.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// How brokers advertise one external listener.
#[derive(Debug, Clone)]
pub struct AdvertisedHost {
    model: ExternalAccess,
    host: String,
}

impl AdvertisedHost {
    /// `host:port` broker `id` advertises on this listener.
    pub fn advertised(&self, id: i32) -> Option<String> {
        self.model.advertised_address(&self.host, id)
    }
}

/// Per external listener name.
pub type ExternalHosts = BTreeMap<String, AdvertisedHost>;

/// The model of one external listener, without brokers.
fn listener_model(
    kc: &KafkaCluster,
    namespace: &str,
    l: &ExternalListener,
) -> Result<ExternalAccess, PlanError> {
    let port = |p: i32| {
        u16::try_from(p).map_err(|_| crate::model::ModelError::ZeroBootstrapPort {
            listener: l.name.clone(),
        })
    };
    let routing = match (&l.broker_port_base, &l.sni) {
        (Some(base), None) => BrokerRouting::PortPerBroker {
            base_port: port(*base)?,
        },
        (None, Some(sni)) => BrokerRouting::Sni {
            domain: sni.domain.clone(),
        },
        // The CRD's CEL rule forbids both and neither; an older CRD might not.
        _ => {
            return Err(PlanError::External(crate::model::ModelError::BadName {
                field: "listeners.external (set exactly one of brokerPortBase and sni)",
                value: l.name.clone(),
            }));
        }
    };
    Ok(ExternalAccess {
        namespace: namespace.to_string(),
        cluster: kube::ResourceExt::name_any(kc),
        listener: l.name.clone(),
        bind_address: "0.0.0.0".into(),
        bootstrap_port: port(l.bootstrap_port)?,
        routing,
        idle_timeout: IDLE_TIMEOUT,
        brokers: Vec::new(),
    })
}

/// What brokers advertise per external listener; `None` while a port-per-broker listener has
/// neither `advertisedHost` nor a LoadBalancer address yet.
pub fn advertised_external(kc: &KafkaCluster, observed: &Observed) -> Option<ExternalHosts> {
    let mut out = ExternalHosts::new();
    for l in &kc.spec.listeners.external {
        let model = listener_model(kc, "-", l).ok()?;
        let host = match (&l.sni, &l.advertised_host, &observed.external_address) {
            (Some(_), _, _) => String::new(),
            (None, Some(h), _) => h.clone(),
            (None, None, Some(h)) => h.clone(),
            (None, None, None) => return None,
        };
        out.insert(l.name.clone(), AdvertisedHost { model, host });
    }
    Some(out)
}

/// The xDS model: every external listener with the brokers that have a Pod IP.
pub fn external_access(
    kc: &KafkaCluster,
    namespace: &str,
    brokers: &[EffectiveBroker],
    observed: &Observed,
) -> Result<Vec<ExternalAccess>, PlanError> {
    let mut out = Vec::new();
    for l in &kc.spec.listeners.external {
        let mut model = listener_model(kc, namespace, l)?;
        let port = u16::try_from(l.container_port).unwrap_or_default();
        let serving = brokers
            .iter()
            .filter(|b| b.is_broker())
            .map(|b| (b.id, BrokerState::Serving));
        // A broker that left the spec but still holds data keeps its listener; while it drains
        // (clients fetch from it until its partitions have moved) it leaves bootstrap.
        let draining = observed.retained.iter().map(|id| {
            let state = if observed.draining.contains(id) {
                BrokerState::Draining
            } else {
                BrokerState::Serving
            };
            (*id, state)
        });
        model.brokers = serving
            .chain(draining)
            .filter_map(|(id, state)| {
                observed.pod_ips.get(&id).map(|ip| ExposedBroker {
                    id,
                    host: ip.clone(),
                    port,
                    state,
                })
            })
            .collect();
        out.push(model);
    }
    Ok(out)
}

fn service(
    kc: &KafkaCluster,
    namespace: &str,
    name: String,
    labels: BTreeMap<String, String>,
    spec: ServiceSpec,
) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            owner_references: owner_reference(kc).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(spec),
        ..Default::default()
    }
}

fn internal_ports(kc: &KafkaCluster, controller: bool) -> Vec<ServicePort> {
    kc.spec
        .listeners
        .internal
        .iter()
        .filter(|l| controller || !l.used_for_controller)
        .map(|l| ServicePort {
            name: Some(port_name(&l.name)),
            port: l.port,
            target_port: Some(IntOrString::Int(l.port)),
            ..Default::default()
        })
        .collect()
}

/// A stable address per broker (ClusterIP) for in-cluster clients and tools.
pub fn broker_service(kc: &KafkaCluster, namespace: &str, b: &EffectiveBroker) -> Service {
    let selector = BTreeMap::from([
        (CLUSTER_LABEL.to_string(), kube::ResourceExt::name_any(kc)),
        (BROKER_ID_LABEL.to_string(), b.id.to_string()),
        (COMPONENT_LABEL.to_string(), "broker".to_string()),
    ]);
    service(
        kc,
        namespace,
        names::broker_service(kc, b.id),
        broker_labels(kc, b),
        ServiceSpec {
            selector: Some(selector),
            ports: Some(
                internal_ports(kc, true)
                    .into_iter()
                    .chain(super::monitoring::service_port(kc))
                    .collect(),
            ),
            ..Default::default()
        },
    )
}

/// Gives every broker Pod its DNS name (`<pod>.<headless>.<ns>.svc`), ready or not: the KRaft
/// quorum must find its voters before they are ready.
pub fn headless(kc: &KafkaCluster, namespace: &str) -> Service {
    let selector = BTreeMap::from([
        (CLUSTER_LABEL.to_string(), kube::ResourceExt::name_any(kc)),
        (COMPONENT_LABEL.to_string(), "broker".to_string()),
    ]);
    service(
        kc,
        namespace,
        names::headless_service(kc),
        cluster_labels(kc),
        ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector),
            ports: Some(internal_ports(kc, true)),
            ..Default::default()
        },
    )
}

/// In-cluster bootstrap: every Pod with the broker role.
pub fn bootstrap(kc: &KafkaCluster, namespace: &str) -> Service {
    let selector = BTreeMap::from([
        (CLUSTER_LABEL.to_string(), kube::ResourceExt::name_any(kc)),
        (BROKER_ROLE_LABEL.to_string(), "true".to_string()),
    ]);
    service(
        kc,
        namespace,
        names::bootstrap_service(kc),
        cluster_labels(kc),
        ServiceSpec {
            selector: Some(selector),
            ports: Some(internal_ports(kc, false)),
            ..Default::default()
        },
    )
}

/// The one Service in front of Envoy: each external listener's bootstrap port, plus one port
/// per broker (port-per-broker) or nothing more (SNI).
pub fn external(kc: &KafkaCluster, namespace: &str, access: &[ExternalAccess]) -> Service {
    let mut ports = Vec::new();
    let mut source_ranges = Vec::new();
    let mut annotations = BTreeMap::new();
    let mut node_port = false;
    for (i, (l, a)) in kc.spec.listeners.external.iter().zip(access).enumerate() {
        source_ranges.extend(l.load_balancer_source_ranges.iter().cloned());
        annotations.extend(
            l.annotations
                .iter()
                .filter(|(k, _)| !is_pier_key(k))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        node_port |= l.service_type == ExternalServiceType::NodePort;
        let mut add = |name: String, port: u16| {
            ports.push(ServicePort {
                name: Some(name),
                port: i32::from(port),
                target_port: Some(IntOrString::Int(i32::from(port))),
                protocol: Some("TCP".into()),
                ..Default::default()
            })
        };
        add(format!("l{i}-bootstrap"), a.bootstrap_port);
        if let BrokerRouting::PortPerBroker { .. } = a.routing {
            // By id, not spec order: reordering the spec's brokers changes nothing.
            let mut ids: Vec<i32> = kc
                .spec
                .brokers
                .iter()
                .filter(|b| b.roles.contains(&Role::Broker))
                .map(|b| b.id)
                .collect();
            ids.sort_unstable();
            for id in ids {
                if let Some(p) = a.broker_port(id) {
                    add(format!("l{i}-b{id}"), p);
                }
            }
        }
    }
    let selector = BTreeMap::from([
        (CLUSTER_LABEL.to_string(), kube::ResourceExt::name_any(kc)),
        (COMPONENT_LABEL.to_string(), "envoy".to_string()),
    ]);
    let mut svc = service(
        kc,
        namespace,
        names::external_service(kc),
        cluster_labels(kc),
        ServiceSpec {
            type_: Some(
                if node_port {
                    "NodePort"
                } else {
                    "LoadBalancer"
                }
                .into(),
            ),
            selector: Some(selector),
            ports: Some(ports),
            load_balancer_source_ranges: (!source_ranges.is_empty()).then_some(source_ranges),
            ..Default::default()
        },
    );
    if !annotations.is_empty() {
        svc.metadata.annotations = Some(annotations);
    }
    svc
}
