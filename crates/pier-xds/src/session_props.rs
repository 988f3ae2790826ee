//! Property tests of the two protocol sessions under generated request sequences and snapshot
//! changes, and under arbitrary request bytes (the xDS requests are outside input). Bounded
//! case counts, so they run in `make test`.
use std::collections::BTreeSet;
use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;
use proptest::prelude::*;
use prost::Message;

use super::delta::DeltaSession;
use super::sotw::SotwSession;
use super::wire::{DeltaResponse, SotwResponse, WireResponse};
use super::{ResourceType, Snapshot, translate};
use crate::model::tests::per_port;

/// A few configs to move between: brokers come and go, one is DNS-only (no endpoints).
fn snapshots() -> Vec<Arc<Snapshot>> {
    let mut dns = per_port(&[0, 1]);
    for b in &mut dns.brokers {
        b.host = format!("kafka-{}.example", b.id);
    }
    [
        per_port(&[0, 1]),
        per_port(&[0]),
        per_port(&[1, 2]),
        per_port(&[]),
        dns,
    ]
    .into_iter()
    .map(|a| Arc::new(Snapshot::new(translate(&[a]).unwrap())))
    .collect()
}

fn cluster_refs(listener: &Any) -> Vec<String> {
    let Ok(l) = Listener::decode(listener.value.as_slice()) else {
        return Vec::new();
    };
    l.filter_chains
        .iter()
        .flat_map(|c| &c.filters)
        .filter_map(|f| match &f.config_type {
            Some(filter::ConfigType::TypedConfig(any)) => {
                match TcpProxy::decode(any.value.as_slice())
                    .ok()?
                    .cluster_specifier
                {
                    Some(ClusterSpecifier::Cluster(c)) => Some(c),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

fn name_of(t: ResourceType, any: &Any) -> String {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    match t {
        ResourceType::Cluster => Cluster::decode(any.value.as_slice()).map(|c| c.name),
        ResourceType::Endpoint => {
            ClusterLoadAssignment::decode(any.value.as_slice()).map(|c| c.cluster_name)
        }
        ResourceType::Listener => Listener::decode(any.value.as_slice()).map(|l| l.name),
    }
    .unwrap_or_default()
}

/// One step of a generated conversation.
#[derive(Debug, Clone)]
enum Step {
    /// The group's config changes to snapshot `i`.
    Snapshot(usize),
    /// The client answers the latest response of type `t`: ACK, or NACK if `nack`.
    Answer { t: usize, nack: bool },
    /// The client (re)subscribes to endpoints `names` (indexes into the cluster names seen).
    Endpoints(Vec<usize>),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        (0usize..5).prop_map(Step::Snapshot),
        (0usize..3, prop::bool::weighted(0.3)).prop_map(|(t, nack)| Step::Answer { t, nack }),
        prop::collection::vec(0usize..8, 0..4).prop_map(Step::Endpoints),
    ];
    prop::collection::vec(step, 1..40)
}

const B: &str = "pier/kafka/demo/external";

fn eds_name(i: usize) -> String {
    match i {
        0 => format!("{B}/bootstrap"),
        n => format!("{B}/broker-{}", n - 1),
    }
}

/// What a client that applies every response has, and which listeners it may run.
#[derive(Default)]
struct Client {
    clusters: BTreeSet<String>,
    /// Clusters used by listeners the client may run: the last ACKed listener response and
    /// every one sent since (Envoy applies a rejected update partly).
    needed: BTreeSet<String>,
    last: [Option<(String, Vec<String>)>; 3],
    nonces: Vec<u64>,
}

impl Client {
    fn saw(&mut self, t: ResourceType, nonce: &str, names: Vec<String>, refs: Vec<String>) {
        self.nonces.push(nonce.parse().unwrap());
        if t == ResourceType::Listener {
            self.needed.extend(refs.iter().cloned());
        }
        self.last[t as usize] = Some((nonce.to_string(), refs));
        let _ = names;
    }

    fn check(&self) -> Result<(), TestCaseError> {
        prop_assert!(
            self.nonces.windows(2).all(|w| w[0] < w[1]),
            "{:?}",
            self.nonces
        );
        let missing: Vec<&String> = self.needed.difference(&self.clusters).collect();
        prop_assert!(missing.is_empty(), "listeners may still use {missing:?}");
        Ok(())
    }
}

/// A response as the client decodes it from the wire.
fn decoded<M: Message + Default>(r: &impl WireResponse) -> M {
    let mut bytes = Vec::new();
    r.encode_wire(&mut bytes);
    M::decode(bytes.as_slice()).unwrap()
}

fn sotw_apply(client: &mut Client, responses: &[SotwResponse]) {
    for r in responses {
        let r: DiscoveryResponse = decoded(r);
        let t = ResourceType::from_type_url(&r.type_url).unwrap();
        let names: Vec<String> = r.resources.iter().map(|a| name_of(t, a)).collect();
        if t == ResourceType::Cluster {
            client.clusters = names.iter().cloned().collect();
        }
        let refs = if t == ResourceType::Listener {
            r.resources.iter().flat_map(cluster_refs).collect()
        } else {
            Vec::new()
        };
        client.saw(t, &r.nonce, names, refs);
    }
}

fn delta_apply(client: &mut Client, responses: &[DeltaResponse]) -> Result<(), TestCaseError> {
    for r in responses {
        let r: DeltaDiscoveryResponse = decoded(r);
        let t = ResourceType::from_type_url(&r.type_url).unwrap();
        prop_assert!(!r.nonce.is_empty());
        let names: Vec<String> = r.resources.iter().map(|x| x.name.clone()).collect();
        for n in &r.removed_resources {
            prop_assert!(!names.contains(n), "{n} both changed and removed");
        }
        if t == ResourceType::Cluster {
            client.clusters.extend(names.iter().cloned());
            for n in &r.removed_resources {
                client.clusters.remove(n);
            }
        }
        if t == ResourceType::Endpoint {
            for n in &r.removed_resources {
                prop_assert!(
                    !client.clusters.contains(n),
                    "endpoints of {n} removed while its cluster is kept"
                );
            }
        }
        let refs = if t == ResourceType::Listener {
            r.resources
                .iter()
                .filter_map(|x| x.resource.as_ref())
                .flat_map(cluster_refs)
                .collect()
        } else {
            Vec::new()
        };
        client.saw(t, &r.nonce, names, refs);
    }
    Ok(())
}

fn nack(yes: bool) -> Option<Status> {
    yes.then(|| Status {
        code: 3,
        message: "rejected".into(),
        details: vec![],
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn sotw_never_drops_a_cluster_a_listener_may_use(steps in steps()) {
        let snaps = snapshots();
        let mut s = SotwSession::new();
        let mut client = Client::default();
        let out = s.on_snapshot(snaps[0].clone());
        sotw_apply(&mut client, &out.responses);
        for t in ResourceType::ALL {
            let out = s.on_request(&DiscoveryRequest {
                type_url: t.type_url().into(),
                resource_names: if t == ResourceType::Endpoint { (0..3).map(eds_name).collect() } else { vec![] },
                ..Default::default()
            });
            sotw_apply(&mut client, &out.responses);
        }
        client.check()?;
        for step in steps {
            let out = match step {
                Step::Snapshot(i) => s.on_snapshot(snaps[i].clone()),
                Step::Answer { t, nack: n } => {
                    let t = ResourceType::ALL[t];
                    let Some((nonce, refs)) = client.last[t as usize].clone() else { continue };
                    if t == ResourceType::Listener && !n {
                        client.needed = refs.into_iter().collect();
                    }
                    s.on_request(&DiscoveryRequest {
                        type_url: t.type_url().into(),
                        response_nonce: nonce,
                        resource_names: if t == ResourceType::Endpoint { (0..3).map(eds_name).collect() } else { vec![] },
                        error_detail: nack(n),
                        ..Default::default()
                    })
                }
                Step::Endpoints(names) => s.on_request(&DiscoveryRequest {
                    type_url: ResourceType::Endpoint.type_url().into(),
                    response_nonce: client.last[1].as_ref().map(|l| l.0.clone()).unwrap_or_default(),
                    resource_names: names.into_iter().map(eds_name).collect(),
                    ..Default::default()
                }),
            };
            prop_assert!(out.refused.is_none());
            sotw_apply(&mut client, &out.responses);
            client.check()?;
        }
    }

    #[test]
    fn delta_never_drops_a_cluster_or_its_endpoints_while_a_listener_may_use_it(steps in steps()) {
        let snaps = snapshots();
        let mut s = DeltaSession::new();
        let mut client = Client::default();
        s.on_snapshot(snaps[0].clone());
        for t in ResourceType::ALL {
            let out = s.on_request(&DeltaDiscoveryRequest {
                type_url: t.type_url().into(),
                resource_names_subscribe: if t == ResourceType::Endpoint { (0..3).map(eds_name).collect() } else { vec![] },
                ..Default::default()
            });
            delta_apply(&mut client, &out.responses)?;
        }
        client.check()?;
        for step in steps {
            let out = match step {
                Step::Snapshot(i) => s.on_snapshot(snaps[i].clone()),
                Step::Answer { t, nack: n } => {
                    let t = ResourceType::ALL[t];
                    let Some((nonce, _)) = client.last[t as usize].clone() else { continue };
                    s.on_request(&DeltaDiscoveryRequest {
                        type_url: t.type_url().into(),
                        response_nonce: nonce,
                        error_detail: nack(n),
                        ..Default::default()
                    })
                }
                Step::Endpoints(names) => s.on_request(&DeltaDiscoveryRequest {
                    type_url: ResourceType::Endpoint.type_url().into(),
                    resource_names_subscribe: names.into_iter().map(eds_name).collect(),
                    ..Default::default()
                }),
            };
            prop_assert!(out.refused.is_none());
            delta_apply(&mut client, &out.responses)?;
            // Only nonces and the endpoint rule are checked here: what listeners a delta
            // client runs after partial updates is not modelled.
            prop_assert!(client.nonces.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn arbitrary_request_bytes_never_panic_a_session(
        snap in 0usize..5,
        requests in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..20),
    ) {
        let snaps = snapshots();
        let mut sotw = SotwSession::new();
        let mut delta = DeltaSession::new();
        sotw.on_snapshot(snaps[snap].clone());
        delta.on_snapshot(snaps[snap].clone());
        for (i, bytes) in requests.iter().enumerate() {
            // Raw bytes, and the same bytes with a served type so they reach the bookkeeping.
            let t = ResourceType::ALL[i % 3];
            if let Ok(mut r) = DiscoveryRequest::decode(bytes.as_slice()) {
                sotw.on_request(&r);
                r.type_url = t.type_url().into();
                sotw.on_request(&r);
            }
            if let Ok(mut r) = DeltaDiscoveryRequest::decode(bytes.as_slice()) {
                delta.on_request(&r);
                r.type_url = t.type_url().into();
                delta.on_request(&r);
            }
        }
    }
}
