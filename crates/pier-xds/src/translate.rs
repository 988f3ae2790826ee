//! Pure translation from the external-access model of one node group to Envoy resources.
//!
//! Port-per-broker: a listener per broker (`<prefix>/broker-<id>`, port base + id) whose
//! `tcp_proxy` goes to that broker's cluster, and a bootstrap listener (`<prefix>/bootstrap`) to
//! a health-checked cluster of every serving broker. SNI: one listener (`<prefix>/sni`) with
//! `tls_inspector` and one filter chain per broker, matched on its server name; TLS passes
//! through untouched. A draining broker keeps its listener/chain and cluster but leaves the
//! bootstrap cluster. Listener-level fields never depend on the brokers, so adding or removing
//! a filter chain is an in-place update that keeps existing connections.
use std::net::IpAddr;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::UpstreamConnectionOptions;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
};
use envoy_types::pb::envoy::config::core::v3::health_check::{HealthChecker, TcpHealthCheck};
use envoy_types::pb::envoy::config::core::v3::socket_option::{SocketState, Value as SocketValue};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, HealthCheck, SocketAddress,
    SocketOption, TcpKeepalive, address, config_source::ConfigSourceSpecifier,
    socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier,
};
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};
use envoy_types::util::pack_any;

use crate::model::{
    BrokerRouting, BrokerState, ExposedBroker, ExternalAccess, ModelError, validate_group,
};

/// Everything one node group's Envoys get.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvoyResources {
    pub clusters: Vec<Cluster>,
    pub endpoints: Vec<ClusterLoadAssignment>,
    pub listeners: Vec<Listener>,
}

/// Upstream TCP keepalive, and the same values on accepted client sockets: idle 60 s, then
/// probes every 10 s, 3 misses close. Long-lived Kafka connections through load balancers
/// otherwise die silently.
const KEEPALIVE_TIME_S: u32 = 60;
const KEEPALIVE_INTERVAL_S: u32 = 10;
const KEEPALIVE_PROBES: u32 = 3;
const CONNECT_TIMEOUT_S: i64 = 5;

/// Translates every external listener of one group. Fails on a model Envoy would reject.
pub fn translate(group: &[ExternalAccess]) -> Result<EnvoyResources, ModelError> {
    validate_group(group)?;
    let mut out = EnvoyResources::default();
    for access in group {
        translate_one(access, &mut out);
    }
    Ok(out)
}

/// `<prefix>/broker-<id>`: the listener, filter chain and cluster name of one broker.
pub fn broker_resource_name(access: &ExternalAccess, id: i32) -> String {
    format!("{}/broker-{id}", access.resource_prefix())
}

/// `<prefix>/bootstrap`: the bootstrap listener and its cluster.
pub fn bootstrap_resource_name(access: &ExternalAccess) -> String {
    format!("{}/bootstrap", access.resource_prefix())
}

/// `<prefix>/sni`: the one listener of SNI mode.
pub fn sni_listener_name(access: &ExternalAccess) -> String {
    format!("{}/sni", access.resource_prefix())
}

fn translate_one(access: &ExternalAccess, out: &mut EnvoyResources) {
    let mut brokers: Vec<&ExposedBroker> = access.brokers.iter().collect();
    brokers.sort_by_key(|b| b.id);
    let serving: Vec<&ExposedBroker> = brokers
        .iter()
        .copied()
        .filter(|b| b.state == BrokerState::Serving)
        .collect();

    let bootstrap = bootstrap_resource_name(access);
    for b in &brokers {
        let name = broker_resource_name(access, b.id);
        push_cluster(out, &name, &[b], false);
    }
    push_cluster(out, &bootstrap, &serving, true);

    match &access.routing {
        BrokerRouting::PortPerBroker { .. } => {
            for b in &brokers {
                let name = broker_resource_name(access, b.id);
                // validate() guarantees the port exists.
                let port = access.broker_port(b.id).unwrap_or_default();
                out.listeners.push(listener(
                    access,
                    &name,
                    port,
                    vec![proxy_chain(access, &name, &name, None)],
                    Vec::new(),
                ));
            }
            out.listeners.push(listener(
                access,
                &bootstrap,
                access.bootstrap_port,
                vec![proxy_chain(access, &bootstrap, &bootstrap, None)],
                Vec::new(),
            ));
        }
        BrokerRouting::Sni { .. } => {
            let mut chains: Vec<FilterChain> = brokers
                .iter()
                .map(|b| {
                    let name = broker_resource_name(access, b.id);
                    proxy_chain(access, &name, &name, access.broker_sni(b.id))
                })
                .collect();
            chains.push(proxy_chain(
                access,
                &bootstrap,
                &bootstrap,
                access.bootstrap_sni(),
            ));
            let inspector = ListenerFilter {
                name: "envoy.filters.listener.tls_inspector".into(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
                    TlsInspector::default(),
                ))),
                ..Default::default()
            };
            out.listeners.push(listener(
                access,
                &sni_listener_name(access),
                access.bootstrap_port,
                chains,
                vec![inspector],
            ));
        }
    }
}

fn push_cluster(out: &mut EnvoyResources, name: &str, members: &[&ExposedBroker], checked: bool) {
    let assignment = ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: members
                .iter()
                .map(|b| LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket_address(&b.host, b.port)),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    // Pod IPs come over EDS, so a broker moving to a new Pod only touches endpoints. A DNS name
    // (standalone mode) needs Envoy's resolver: STRICT_DNS with the assignment inline.
    let all_ips = members.iter().all(|b| b.host.parse::<IpAddr>().is_ok());
    let mut cluster = Cluster {
        name: name.to_string(),
        connect_timeout: Some(seconds(CONNECT_TIMEOUT_S)),
        upstream_connection_options: Some(UpstreamConnectionOptions {
            tcp_keepalive: Some(TcpKeepalive {
                keepalive_probes: Some(UInt32Value {
                    value: KEEPALIVE_PROBES,
                }),
                keepalive_time: Some(UInt32Value {
                    value: KEEPALIVE_TIME_S,
                }),
                keepalive_interval: Some(UInt32Value {
                    value: KEEPALIVE_INTERVAL_S,
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    if all_ips {
        cluster.cluster_discovery_type =
            Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
        cluster.eds_cluster_config = Some(EdsClusterConfig {
            eds_config: Some(ads_config_source()),
            service_name: String::new(),
        });
        out.endpoints.push(assignment);
    } else {
        cluster.cluster_discovery_type =
            Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32));
        cluster.load_assignment = Some(assignment);
    }
    if checked {
        cluster.health_checks = vec![HealthCheck {
            timeout: Some(seconds(2)),
            interval: Some(seconds(5)),
            // Without traffic Envoy would otherwise probe only once a minute.
            no_traffic_interval: Some(seconds(5)),
            unhealthy_threshold: Some(UInt32Value { value: 2 }),
            healthy_threshold: Some(UInt32Value { value: 1 }),
            health_checker: Some(HealthChecker::TcpHealthCheck(TcpHealthCheck::default())),
            ..Default::default()
        }];
    }
    out.clusters.push(cluster);
}

fn listener(
    access: &ExternalAccess,
    name: &str,
    port: u16,
    filter_chains: Vec<FilterChain>,
    listener_filters: Vec<ListenerFilter>,
) -> Listener {
    Listener {
        name: name.to_string(),
        stat_prefix: stat_name(name),
        address: Some(socket_address(&access.bind_address, port)),
        filter_chains,
        listener_filters,
        socket_options: keepalive_socket_options(),
        ..Default::default()
    }
}

fn proxy_chain(
    access: &ExternalAccess,
    chain_name: &str,
    cluster: &str,
    server_name: Option<String>,
) -> FilterChain {
    let proxy = TcpProxy {
        stat_prefix: stat_name(chain_name),
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
        idle_timeout: Some(PbDuration {
            seconds: i64::try_from(access.idle_timeout.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(access.idle_timeout.subsec_nanos()).unwrap_or(0),
        }),
        ..Default::default()
    };
    FilterChain {
        name: chain_name.to_string(),
        filter_chain_match: server_name.map(|sni| FilterChainMatch {
            server_names: vec![sni],
            ..Default::default()
        }),
        filters: vec![Filter {
            name: "envoy.filters.network.tcp_proxy".into(),
            config_type: Some(filter::ConfigType::TypedConfig(pack_any(proxy))),
        }],
        ..Default::default()
    }
}

fn keepalive_socket_options() -> Vec<SocketOption> {
    // Linux values: SOL_SOCKET/SO_KEEPALIVE, IPPROTO_TCP/TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT.
    let opt = |description: &str, level: i64, name: i64, value: i64| SocketOption {
        description: description.into(),
        level,
        name,
        state: SocketState::StatePrebind as i32,
        value: Some(SocketValue::IntValue(value)),
        ..Default::default()
    };
    vec![
        opt("SO_KEEPALIVE", 1, 9, 1),
        opt("TCP_KEEPIDLE", 6, 4, i64::from(KEEPALIVE_TIME_S)),
        opt("TCP_KEEPINTVL", 6, 5, i64::from(KEEPALIVE_INTERVAL_S)),
        opt("TCP_KEEPCNT", 6, 6, i64::from(KEEPALIVE_PROBES)),
    ]
}

fn ads_config_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

fn socket_address(host: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn seconds(s: i64) -> PbDuration {
    PbDuration {
        seconds: s,
        nanos: 0,
    }
}

/// Envoy stat names use '.' as separator; keep resource names readable in stats.
fn stat_name(name: &str) -> String {
    name.replace(['/', '.'], "_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{per_port, sni};
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use prost::Message;

    fn port_of(l: &Listener) -> u32 {
        match l.address.as_ref().and_then(|a| a.address.as_ref()) {
            Some(address::Address::SocketAddress(s)) => match s.port_specifier {
                Some(PortSpecifier::PortValue(p)) => p,
                _ => 0,
            },
            _ => 0,
        }
    }

    fn tcp_proxy_cluster(chain: &FilterChain) -> String {
        let Some(filter::ConfigType::TypedConfig(any)) = &chain.filters[0].config_type else {
            panic!("no typed config")
        };
        let proxy = TcpProxy::decode(any.value.as_slice()).unwrap();
        match proxy.cluster_specifier {
            Some(ClusterSpecifier::Cluster(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    fn endpoint_count(r: &EnvoyResources, cluster: &str) -> usize {
        r.endpoints
            .iter()
            .find(|e| e.cluster_name == cluster)
            .map(|e| e.endpoints.iter().map(|l| l.lb_endpoints.len()).sum())
            .unwrap_or_else(|| panic!("no endpoints for {cluster}"))
    }

    #[test]
    fn port_per_broker_gives_a_listener_and_cluster_per_broker_plus_bootstrap() {
        let r = translate(&[per_port(&[0, 1, 2])]).unwrap();
        let names: Vec<&str> = r.listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "pier/kafka/demo/external/broker-0",
                "pier/kafka/demo/external/broker-1",
                "pier/kafka/demo/external/broker-2",
                "pier/kafka/demo/external/bootstrap",
            ]
        );
        let ports: Vec<u32> = r.listeners.iter().map(port_of).collect();
        assert_eq!(ports, [29100, 29101, 29102, 29092]);
        for l in &r.listeners {
            assert_eq!(l.filter_chains.len(), 1);
            assert_eq!(
                tcp_proxy_cluster(&l.filter_chains[0]),
                l.name,
                "proxies to its namesake"
            );
            assert!(
                l.socket_options
                    .iter()
                    .any(|o| o.description == "SO_KEEPALIVE")
            );
        }
        assert_eq!(r.clusters.len(), 4);
        assert_eq!(r.endpoints.len(), 4, "IP upstreams come over EDS");
        assert_eq!(endpoint_count(&r, "pier/kafka/demo/external/broker-1"), 1);
        assert_eq!(endpoint_count(&r, "pier/kafka/demo/external/bootstrap"), 3);
        let bootstrap = r
            .clusters
            .iter()
            .find(|c| c.name.ends_with("/bootstrap"))
            .unwrap();
        assert_eq!(
            bootstrap.health_checks.len(),
            1,
            "bootstrap cluster is health-checked"
        );
        assert!(r.clusters.iter().all(|c| {
            c.upstream_connection_options
                .as_ref()
                .and_then(|o| o.tcp_keepalive.as_ref())
                .is_some()
        }));
    }

    #[test]
    fn a_draining_broker_keeps_its_route_but_leaves_bootstrap() {
        let mut a = per_port(&[0, 1, 2]);
        a.brokers[1].state = BrokerState::Draining;
        let r = translate(&[a]).unwrap();
        assert!(r.listeners.iter().any(|l| l.name.ends_with("/broker-1")));
        assert!(r.clusters.iter().any(|c| c.name.ends_with("/broker-1")));
        assert_eq!(endpoint_count(&r, "pier/kafka/demo/external/bootstrap"), 2);
    }

    #[test]
    fn sni_uses_one_listener_with_a_chain_per_broker() {
        let r = translate(&[sni(&[0, 1])]).unwrap();
        assert_eq!(r.listeners.len(), 1);
        let l = &r.listeners[0];
        assert_eq!(l.name, "pier/kafka/demo/external/sni");
        assert_eq!(port_of(l), 29092);
        assert_eq!(l.listener_filters.len(), 1);
        assert_eq!(
            l.listener_filters[0].name,
            "envoy.filters.listener.tls_inspector"
        );
        let chains: Vec<(Vec<String>, String)> = l
            .filter_chains
            .iter()
            .map(|c| {
                (
                    c.filter_chain_match.clone().unwrap().server_names,
                    tcp_proxy_cluster(c),
                )
            })
            .collect();
        assert_eq!(
            chains,
            [
                (
                    vec!["broker-0.kafka.example.com".to_string()],
                    "pier/kafka/demo/external/broker-0".to_string()
                ),
                (
                    vec!["broker-1.kafka.example.com".to_string()],
                    "pier/kafka/demo/external/broker-1".to_string()
                ),
                (
                    vec!["bootstrap.kafka.example.com".to_string()],
                    "pier/kafka/demo/external/bootstrap".to_string()
                ),
            ]
        );
        assert!(
            l.filter_chains.iter().all(|c| c.transport_socket.is_none()),
            "passthrough"
        );
    }

    #[test]
    fn listener_level_fields_do_not_depend_on_the_brokers() {
        let one = translate(&[sni(&[0])]).unwrap().listeners.remove(0);
        let mut three = translate(&[sni(&[0, 1, 2])]).unwrap().listeners.remove(0);
        three.filter_chains = one.filter_chains.clone();
        assert_eq!(
            one, three,
            "only filter chains differ, so Envoy updates in place"
        );
    }

    #[test]
    fn translation_is_deterministic_and_order_independent() {
        let a = per_port(&[2, 0, 1]);
        let b = per_port(&[0, 1, 2]);
        assert_eq!(
            translate(&[a]).unwrap(),
            translate(std::slice::from_ref(&b)).unwrap()
        );
        let x = translate(std::slice::from_ref(&b)).unwrap();
        let y = translate(&[b]).unwrap();
        assert_eq!(
            x.listeners[0].encode_to_vec(),
            y.listeners[0].encode_to_vec(),
            "byte-identical encodings keep versions stable"
        );
    }

    #[test]
    fn dns_upstreams_use_strict_dns_with_inline_endpoints() {
        let mut a = per_port(&[0]);
        a.brokers[0].host = "kafka-0.example.internal".into();
        let r = translate(&[a]).unwrap();
        let c = r
            .clusters
            .iter()
            .find(|c| c.name.ends_with("/broker-0"))
            .unwrap();
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32))
        );
        assert!(c.load_assignment.is_some());
        assert!(
            !r.endpoints
                .iter()
                .any(|e| e.cluster_name.ends_with("/broker-0"))
        );
    }

    #[test]
    fn invalid_models_are_refused() {
        assert!(translate(&[per_port(&[1, 1])]).is_err());
        let a = per_port(&[0]);
        let mut b = per_port(&[0]);
        b.listener = "second".into();
        assert!(matches!(
            translate(&[a, b]),
            Err(ModelError::ListenerPortClash { .. })
        ));
    }

    #[test]
    fn idle_timeout_reaches_tcp_proxy() {
        let mut a = per_port(&[0]);
        a.idle_timeout = std::time::Duration::from_millis(1500);
        let r = translate(&[a]).unwrap();
        let Some(filter::ConfigType::TypedConfig(any)) =
            &r.listeners[0].filter_chains[0].filters[0].config_type
        else {
            panic!()
        };
        let proxy = TcpProxy::decode(any.value.as_slice()).unwrap();
        assert_eq!(
            proxy.idle_timeout,
            Some(PbDuration {
                seconds: 1,
                nanos: 500_000_000
            })
        );
    }
}

#[cfg(test)]
mod properties {
    //! Properties of the translation over generated models (bounded case counts, so they run
    //! in `make test`).
    use std::collections::{BTreeMap, BTreeSet};

    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use proptest::prelude::*;
    use prost::Message;

    use super::*;

    fn broker() -> impl Strategy<Value = ExposedBroker> {
        (
            0i32..40,
            prop_oneof![
                (1u8..250).prop_map(|n| format!("10.0.0.{n}")),
                (0u8..9).prop_map(|n| format!("kafka-{n}.example")),
            ],
            1u16..=65535,
            any::<bool>(),
        )
            .prop_map(|(id, host, port, draining)| ExposedBroker {
                id,
                host,
                port,
                state: if draining {
                    BrokerState::Draining
                } else {
                    BrokerState::Serving
                },
            })
    }

    fn access(index: usize) -> impl Strategy<Value = ExternalAccess> {
        (
            prop_oneof![
                (20000u16..40000).prop_map(|base_port| BrokerRouting::PortPerBroker { base_port }),
                Just(BrokerRouting::Sni {
                    domain: "kafka.example.com".into()
                }),
            ],
            10000u16..20000,
            prop::collection::vec(broker(), 0..8),
            prop_oneof![Just("0.0.0.0"), Just("127.0.0.2")],
        )
            .prop_map(move |(routing, bootstrap_port, brokers, bind)| {
                // Distinct broker ids (a duplicate is a refused model, tested elsewhere).
                let mut seen = BTreeSet::new();
                let brokers = brokers.into_iter().filter(|b| seen.insert(b.id)).collect();
                ExternalAccess {
                    namespace: "ns".into(),
                    cluster: "kafka".into(),
                    listener: format!("l{index}"),
                    bind_address: bind.into(),
                    bootstrap_port,
                    routing,
                    idle_timeout: std::time::Duration::from_secs(60),
                    brokers,
                }
            })
    }

    fn group() -> impl Strategy<Value = Vec<ExternalAccess>> {
        prop::collection::vec(Just(()), 1..4)
            .prop_flat_map(|v| (0..v.len()).map(access).collect::<Vec<_>>())
    }

    fn address(l: &Listener) -> (String, u32) {
        match l.address.as_ref().and_then(|a| a.address.as_ref()) {
            Some(address::Address::SocketAddress(s)) => match s.port_specifier {
                Some(PortSpecifier::PortValue(p)) => (s.address.clone(), p),
                _ => (s.address.clone(), 0),
            },
            _ => (String::new(), 0),
        }
    }

    fn proxied_cluster(chain: &FilterChain) -> Option<String> {
        let Some(filter::ConfigType::TypedConfig(any)) = &chain.filters.first()?.config_type else {
            return None;
        };
        match TcpProxy::decode(any.value.as_slice())
            .ok()?
            .cluster_specifier
        {
            Some(ClusterSpecifier::Cluster(c)) => Some(c),
            _ => None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn valid_models_translate_to_consistent_resources(group in group()) {
            let Ok(r) = translate(&group) else {
                // Refused models are refused by validation, never by the translation itself.
                prop_assert!(validate_group(&group).is_err());
                return Ok(());
            };
            // Unique (address, port) per listener, unique names per type.
            let addresses: BTreeSet<(String, u32)> = r.listeners.iter().map(address).collect();
            prop_assert_eq!(addresses.len(), r.listeners.len());
            let clusters: BTreeMap<&str, &Cluster> =
                r.clusters.iter().map(|c| (c.name.as_str(), c)).collect();
            prop_assert_eq!(clusters.len(), r.clusters.len());
            let eds: BTreeSet<&str> = r.endpoints.iter().map(|e| e.cluster_name.as_str()).collect();
            prop_assert_eq!(eds.len(), r.endpoints.len());

            // Every chain goes to a cluster that exists; every EDS cluster has its endpoints.
            let mut routed: BTreeSet<String> = BTreeSet::new();
            for l in &r.listeners {
                for chain in &l.filter_chains {
                    let c = proxied_cluster(chain);
                    prop_assert!(c.as_deref().is_some_and(|c| clusters.contains_key(c)), "{:?}", c);
                    routed.extend(c);
                }
            }
            for c in &r.clusters {
                let is_eds = c.cluster_discovery_type
                    == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
                prop_assert_eq!(is_eds, eds.contains(c.name.as_str()), "{}", c.name);
            }

            for access in &group {
                let port_per_broker = matches!(access.routing, BrokerRouting::PortPerBroker { .. });
                // One listener per broker (port per broker) or one in all (SNI), plus bootstrap.
                let own: Vec<&Listener> = r
                    .listeners
                    .iter()
                    .filter(|l| l.name.starts_with(&format!("{}/", access.resource_prefix())))
                    .collect();
                let expected = if port_per_broker { access.brokers.len() + 1 } else { 1 };
                prop_assert_eq!(own.len(), expected);
                // Every broker, serving or draining, is reachable by its own route.
                for b in &access.brokers {
                    prop_assert!(routed.contains(&broker_resource_name(access, b.id)));
                }
                // Bootstrap reaches exactly the serving brokers.
                let serving = access
                    .brokers
                    .iter()
                    .filter(|b| b.state == BrokerState::Serving)
                    .count();
                let bootstrap = bootstrap_resource_name(access);
                let members = match r.endpoints.iter().find(|e| e.cluster_name == bootstrap) {
                    Some(e) => e.endpoints.iter().map(|l| l.lb_endpoints.len()).sum::<usize>(),
                    None => clusters[bootstrap.as_str()]
                        .load_assignment
                        .as_ref()
                        .map(|a| a.endpoints.iter().map(|l| l.lb_endpoints.len()).sum())
                        .unwrap_or(0),
                };
                prop_assert_eq!(members, serving);
            }
        }

        #[test]
        fn translation_is_deterministic_whatever_the_broker_order(group in group(), seed in any::<u64>()) {
            let Ok(a) = translate(&group) else { return Ok(()); };
            let mut shuffled = group.clone();
            for (i, access) in shuffled.iter_mut().enumerate() {
                let n = access.brokers.len();
                if n > 1 {
                    access.brokers.rotate_left((seed as usize + i) % n);
                    access.brokers.reverse();
                }
            }
            let b = translate(&shuffled).unwrap();
            prop_assert_eq!(&a, &b);
            let bytes = |r: &EnvoyResources| -> Vec<Vec<u8>> {
                r.clusters.iter().map(|c| c.encode_to_vec())
                    .chain(r.endpoints.iter().map(|e| e.encode_to_vec()))
                    .chain(r.listeners.iter().map(|l| l.encode_to_vec()))
                    .collect()
            };
            prop_assert_eq!(bytes(&a), bytes(&b));
        }
    }
}
