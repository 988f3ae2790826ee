//! Property tests of the planner over generated clusters (1–8 brokers with any roles, config
//! groups and own volumes, 0–2 external listeners of either routing, any config values, some
//! brokers without a Pod IP yet): ports never clash, every serving broker has its own Envoy
//! listener, removing a broker touches no other broker's objects, and the same input always
//! plans the same objects. Each property runs a bounded number of cases (well under a second
//! each in a debug build).
use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::{address, socket_address::PortSpecifier};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use proptest::prelude::*;

use super::tests::example;
use super::*;
use crate::api::{BrokerConfigGroup, BrokerSpec, ExternalListener, SniSpec, StorageSpec};

/// A key Kafka does not know: rendered into server.properties whatever its value.
const FILE_KEY: &str = "com.example.text";

/// Keys of every class (read-only, cluster-wide, per-broker, unknown).
const KEYS: &[&str] = &[
    "num.partitions",
    "queued.max.requests",
    "min.insync.replicas",
    "log.retention.ms",
    "num.io.threads",
    "listener.name.internal.ssl.keystore.location",
    FILE_KEY,
];

#[derive(Debug, Clone)]
struct Input {
    kc: KafkaCluster,
    observed: Observed,
}

fn roles() -> impl Strategy<Value = Vec<Role>> {
    prop_oneof![
        Just(vec![Role::Broker]),
        Just(vec![Role::Controller]),
        Just(vec![Role::Broker, Role::Controller]),
    ]
}

/// Any text, with line breaks, backslashes, separators and spaces more often than by chance.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => any::<char>(),
            1 => prop::sample::select(&['\n', '\r', '\\', ' ', '\t', '=', ':', '#', 'é', '€', '😀'][..]),
        ],
        0..12,
    )
    .prop_map(String::from_iter)
}

fn config() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(KEYS).prop_map(String::from),
        text(),
        0..3,
    )
}

fn volume(path: &str) -> StorageSpec {
    StorageSpec {
        mount_path: path.into(),
        size: "1Gi".into(),
        ..Default::default()
    }
}

/// Labels a spec might carry, Pier's own among them (as a CRD older than its rules lets
/// through), with values that would make the Pod another broker's or another cluster's.
fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(
            &[
                "team",
                "app.kubernetes.io/version",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/component",
                "kafka.pier.dev/cluster",
                "kafka.pier.dev/broker-id",
                "kafka.pier.dev/role-broker",
            ][..],
        )
        .prop_map(String::from),
        prop::sample::select(&["other", "0", "1", "true", "broker", "basic"][..])
            .prop_map(String::from),
        0..4,
    )
}

fn broker(id: i32) -> impl Strategy<Value = BrokerSpec> {
    (
        roles(),
        prop::option::of(0..2usize),
        any::<bool>(),
        config(),
        config(),
        labels(),
    )
        .prop_map(
            move |(roles, group, own_volume, config, read_only_config, labels)| {
                BrokerSpec {
                    id,
                    roles,
                    config_group: group.map(|g| format!("g{g}")),
                    config,
                    read_only_config,
                    // Without a group a broker needs a volume of its own.
                    storage: if group.is_none() || own_volume {
                        vec![volume("/data/own")]
                    } else {
                        Vec::new()
                    },
                    labels,
                    ..Default::default()
                }
            },
        )
}

/// External listener `i`: port-per-broker (base 30000 + 1000 i, above every id) or SNI.
fn external(i: usize, sni: bool) -> ExternalListener {
    let i32_i = i32::try_from(i).unwrap_or_default();
    ExternalListener {
        name: format!("ext{i}"),
        container_port: 9094 + i32_i,
        service_type: Default::default(),
        bootstrap_port: 29092 + i32_i,
        broker_port_base: (!sni).then_some(30000 + 1000 * i32_i),
        sni: sni.then(|| SniSpec {
            domain: format!("l{i}.kafka.example.com"),
        }),
        advertised_host: None,
        protocol: Default::default(),
        client_auth: Default::default(),
        load_balancer_source_ranges: Vec::new(),
        annotations: BTreeMap::new(),
    }
}

fn input() -> impl Strategy<Value = Input> {
    prop::collection::btree_set(0..300i32, 1..8)
        .prop_flat_map(|ids| {
            let n = ids.len();
            (
                ids.into_iter().map(broker).collect::<Vec<_>>(),
                prop::collection::vec(any::<bool>(), 0..3),
                prop::collection::vec(any::<bool>(), n),
                any::<bool>(),
                config(),
                config(),
            )
        })
        .prop_map(
            |(mut brokers, sni, has_ip, lb_address, read_only, cluster_wide)| {
                if !brokers.iter().any(|b| b.roles.contains(&Role::Controller)) {
                    brokers[0].roles.push(Role::Controller);
                }
                let mut kc = example("kafkacluster-basic.yaml");
                kc.spec.broker_config_groups = BTreeMap::from([
                    (
                        "g0".to_string(),
                        BrokerConfigGroup {
                            storage: vec![volume("/data/g0")],
                            ..Default::default()
                        },
                    ),
                    (
                        "g1".to_string(),
                        BrokerConfigGroup {
                            image: Some("apache/kafka:4.1.3".into()),
                            storage: vec![volume("/data/g1-0"), volume("/data/g1-1")],
                            ..Default::default()
                        },
                    ),
                ]);
                kc.spec.kafka.read_only_config = read_only;
                kc.spec.kafka.cluster_wide_config = cluster_wide;
                kc.spec.listeners.external = sni
                    .into_iter()
                    .enumerate()
                    .map(|(i, sni)| external(i, sni))
                    .collect();
                let observed = Observed {
                    pod_ips: brokers
                        .iter()
                        .zip(has_ip)
                        .filter(|(_, ip)| *ip)
                        .map(|(b, _)| (b.id, format!("10.1.{}.{}", b.id / 256, b.id % 256)))
                        .collect(),
                    external_address: lb_address.then(|| "203.0.113.7".to_string()),
                    cluster_id: Some("MkU3OEVBNTcwNTJENDM2Qk".into()),
                    ..Observed::default()
                };
                kc.spec.brokers = brokers;
                Input { kc, observed }
            },
        )
}

fn plan_of(input: &Input) -> Desired {
    match plan(&input.kc, &input.observed, &Settings::default()) {
        Ok(d) => d,
        Err(e) => panic!("a valid generated spec was refused: {e}"),
    }
}

/// Everything the controller writes or hands to the xDS server, as comparable data.
fn everything(d: &Desired) -> serde_json::Value {
    serde_json::json!({
        "configMaps": d.config_maps,
        "pods": d.pods,
        "claims": d.claims,
        "services": d.services,
        "deployments": d.deployments,
        "pdbs": d.disruption_budgets,
        "externalAccess": format!("{:?}", d.external_access),
        "xds": format!("{:?}", d.xds),
        "config": format!("{:?}", d.config),
        "brokers": format!("{:?}", d.brokers),
        "waiting": d.waiting_for_address,
    })
}

fn assert_unique<T: std::fmt::Debug>(what: &str, items: impl IntoIterator<Item = T>) {
    let mut seen = BTreeSet::new();
    for item in items {
        assert!(seen.insert(format!("{item:?}")), "{what}: {item:?} twice");
    }
}

fn listener_port(l: &Listener) -> Option<u32> {
    match l.address.as_ref()?.address.as_ref()? {
        address::Address::SocketAddress(s) => match s.port_specifier.as_ref()? {
            PortSpecifier::PortValue(p) => Some(*p),
            _ => None,
        },
        _ => None,
    }
}

/// `java.util.Properties.load` as Kafka reads `server.properties`: natural lines (`\n`, `\r`),
/// comments, continuation after an odd number of trailing backslashes, the key up to the first
/// unescaped separator, leading whitespace of the value skipped, escapes decoded.
fn load_properties(text: &str) -> Vec<(String, String)> {
    let mut logical = Vec::new();
    let mut pending: Option<String> = None;
    for line in text.split(['\n', '\r']) {
        let line = match pending.take() {
            Some(mut prefix) => {
                prefix.push_str(line.trim_start_matches([' ', '\t', '\u{c}']));
                prefix
            }
            None => {
                let trimmed = line.trim_start_matches([' ', '\t', '\u{c}']);
                if trimmed.is_empty() || trimmed.starts_with(['#', '!']) {
                    continue;
                }
                trimmed.to_string()
            }
        };
        let trailing = line.len() - line.trim_end_matches('\\').len();
        if trailing % 2 == 1 {
            pending = Some(line[..line.len() - 1].to_string());
        } else {
            logical.push(line);
        }
    }
    logical.extend(pending);
    logical
        .iter()
        .map(|line| {
            let chars: Vec<char> = line.chars().collect();
            let mut i = 0;
            let mut escaped = false;
            while i < chars.len() {
                let c = chars[i];
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if matches!(c, '=' | ':' | ' ' | '\t' | '\u{c}') {
                    break;
                }
                i += 1;
            }
            let key: String = chars[..i].iter().collect();
            let mut j = i;
            while j < chars.len() && matches!(chars[j], ' ' | '\t' | '\u{c}') {
                j += 1;
            }
            if j < chars.len() && matches!(chars[j], '=' | ':') {
                j += 1;
            }
            while j < chars.len() && matches!(chars[j], ' ' | '\t' | '\u{c}') {
                j += 1;
            }
            let value: String = chars[j..].iter().collect();
            (unescape(&key), unescape(&value))
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let mut units: Vec<u16> = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        let c = if c == '\\' {
            match chars.next() {
                Some('t') => '\t',
                Some('n') => '\n',
                Some('r') => '\r',
                Some('f') => '\u{c}',
                Some('u') => {
                    let hex: String = chars.by_ref().take(4).collect();
                    units.push(u16::from_str_radix(&hex, 16).expect("\\uXXXX"));
                    continue;
                }
                Some(other) => other,
                None => continue,
            }
        } else {
            c
        };
        let mut buf = [0u16; 2];
        units.extend_from_slice(c.encode_utf16(&mut buf));
    }
    String::from_utf16(&units).expect("valid UTF-16")
}

fn config_map<'a>(d: &'a Desired, kc: &KafkaCluster, id: i32) -> Option<&'a ConfigMap> {
    let name = names::broker_config(kc, id);
    d.config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(&name))
}

fn config_text(d: &Desired, kc: &KafkaCluster, id: i32) -> Option<String> {
    config_map(d, kc, id).map(|c| c.data.as_ref().unwrap()["server.properties"].clone())
}

fn by_name<'a, T: kube::Resource>(objs: &'a [T], name: &str) -> Option<&'a T> {
    objs.iter().find(|o| o.meta().name.as_deref() == Some(name))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn ports_never_clash(input in input()) {
        let d = plan_of(&input);
        for pod in &d.pods {
            let ports = pod.spec.as_ref().unwrap().containers[0].ports.clone().unwrap_or_default();
            assert_unique("container port", ports.iter().map(|p| p.container_port));
            assert_unique("container port name", ports.iter().map(|p| p.name.clone()));
        }
        for s in &d.services {
            let ports = s.spec.as_ref().unwrap().ports.clone().unwrap_or_default();
            assert_unique("service port", ports.iter().map(|p| p.port));
            assert_unique("service port name", ports.iter().map(|p| p.name.clone()));
        }
        for dep in &d.deployments {
            let pod = dep.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
            let ports = pod.containers[0].ports.clone().unwrap_or_default();
            assert_unique("Envoy port", ports.iter().map(|p| p.container_port));
        }
        if let Some(xds) = &d.xds {
            assert_unique("Envoy listener", xds.listeners.iter().map(|l| l.name.clone()));
            assert_unique("Envoy listener port", xds.listeners.iter().map(listener_port));
            assert_unique("Envoy cluster", xds.clusters.iter().map(|c| c.name.clone()));
        }
    }

    #[test]
    fn every_serving_broker_has_one_envoy_listener(input in input()) {
        let d = plan_of(&input);
        let serving: BTreeSet<i32> = input.kc.spec.brokers.iter()
            .filter(|b| b.roles.contains(&Role::Broker))
            .map(|b| b.id)
            .filter(|id| input.observed.pod_ips.contains_key(id))
            .collect();
        let Some(xds) = &d.xds else {
            prop_assert!(input.kc.spec.listeners.external.is_empty());
            return Ok(());
        };
        prop_assert_eq!(d.external_access.len(), input.kc.spec.listeners.external.len());
        let mut expected_listeners = 0;
        for (l, access) in input.kc.spec.listeners.external.iter().zip(&d.external_access) {
            let prefix = access.resource_prefix();
            let mine: Vec<&Listener> = xds.listeners.iter()
                .filter(|x| x.name.starts_with(&format!("{prefix}/")))
                .collect();
            if l.sni.is_some() {
                // One listener; one filter chain per serving broker plus bootstrap.
                prop_assert_eq!(mine.len(), 1);
                prop_assert_eq!(mine[0].filter_chains.len(), serving.len() + 1);
                expected_listeners += 1;
            } else {
                let brokers: BTreeSet<i32> = mine.iter()
                    .filter_map(|x| x.name.strip_prefix(&format!("{prefix}/broker-")))
                    .map(|id| id.parse().unwrap())
                    .collect();
                prop_assert_eq!(&brokers, &serving);
                prop_assert_eq!(mine.len(), serving.len() + 1, "plus bootstrap");
                for id in &serving {
                    let name = format!("{prefix}/broker-{id}");
                    let port = xds.listeners.iter().find(|x| x.name == name).and_then(listener_port);
                    prop_assert_eq!(port, access.broker_port(*id).map(u32::from));
                }
                expected_listeners += serving.len() + 1;
            }
        }
        prop_assert_eq!(xds.listeners.len(), expected_listeners);
    }

    #[test]
    fn removing_a_broker_changes_no_other_brokers_objects(
        input in input(),
        pick in any::<prop::sample::Index>(),
    ) {
        let gone = input.kc.spec.brokers[pick.index(input.kc.spec.brokers.len())].clone();
        let mut smaller = input.clone();
        smaller.kc.spec.brokers.retain(|b| b.id != gone.id);
        prop_assume!(smaller.kc.spec.brokers.iter().any(|b| b.roles.contains(&Role::Controller)));
        smaller.observed.pod_ips.remove(&gone.id);
        let (a, b) = (plan_of(&input), plan_of(&smaller));
        let kc = &input.kc;
        prop_assert!(by_name(&b.pods, &names::broker_pod(kc, gone.id)).is_none());
        prop_assert!(by_name(&b.services, &names::broker_service(kc, gone.id)).is_none());
        prop_assert!(config_map(&b, kc, gone.id).is_none());
        let gone_prefix = format!("{}-", names::broker_pod(kc, gone.id));
        prop_assert!(b.claims.iter().all(|c| !c.metadata.name.as_deref().unwrap().starts_with(&gone_prefix)));
        for other in smaller.kc.spec.brokers.iter().map(|b| b.id) {
            let pod = names::broker_pod(kc, other);
            prop_assert_eq!(by_name(&a.pods, &pod), by_name(&b.pods, &pod), "Pod of broker {}", other);
            let svc = names::broker_service(kc, other);
            prop_assert_eq!(by_name(&a.services, &svc), by_name(&b.services, &svc));
            let claims = |d: &Desired| d.claims.iter()
                .filter(|c| c.metadata.name.as_deref().unwrap().starts_with(&format!("{pod}-data-")))
                .cloned()
                .collect::<Vec<_>>();
            prop_assert_eq!(claims(&a), claims(&b));
            // Only the static voter list, which restarts nobody (it is not in the restart
            // hash), changes when a controller goes.
            let without_voters = |d: &Desired| config_text(d, kc, other).map(|t| t.lines()
                .filter(|l| !(gone.roles.contains(&Role::Controller) && l.starts_with("controller.quorum.voters=")))
                .map(str::to_string)
                .collect::<Vec<_>>());
            prop_assert_eq!(without_voters(&a), without_voters(&b), "ConfigMap of broker {}", other);
        }
    }

    #[test]
    fn planning_is_deterministic_and_idempotent(
        (input, shuffled) in input().prop_flat_map(|i| {
            let brokers = i.kc.spec.brokers.clone();
            (Just(i), Just(brokers).prop_shuffle())
        }),
    ) {
        let first = everything(&plan_of(&input));
        prop_assert_eq!(&first, &everything(&plan_of(&input)));
        // The spec's order of brokers means nothing.
        let mut reordered = input.clone();
        reordered.kc.spec.brokers = shuffled;
        prop_assert_eq!(&first, &everything(&plan_of(&reordered)));
        // The next reconcile sees the KafkaCluster as the apiserver stores it: the same objects
        // are planned, so their applied hashes match and nothing is written again.
        let mut stored = input.clone();
        stored.kc = serde_json::from_value(serde_json::to_value(&input.kc).unwrap()).unwrap();
        prop_assert_eq!(&first, &everything(&plan_of(&stored)));
    }

    #[test]
    fn server_properties_read_back_as_the_spec_says(input in input(), value in text()) {
        let mut input = input;
        input.kc.spec.kafka.read_only_config.insert(FILE_KEY.into(), value.clone());
        input.kc.spec.kafka.cluster_wide_config.remove(FILE_KEY);
        for b in &mut input.kc.spec.brokers {
            b.config.remove(FILE_KEY);
            b.read_only_config.remove(FILE_KEY);
        }
        let d = plan_of(&input);
        for b in &input.kc.spec.brokers {
            let Some(text) = config_text(&d, &input.kc, b.id) else { continue };
            prop_assert!(text.is_ascii(), "Kafka reads server.properties as ISO-8859-1");
            let props = load_properties(&text);
            let values = |key: &str| props.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect::<Vec<_>>();
            prop_assert_eq!(values("node.id"), vec![b.id.to_string()]);
            prop_assert_eq!(values(FILE_KEY), vec![value.clone()]);
            let expected: BTreeSet<&str> = ["node.id", "process.roles", "controller.quorum.voters",
                "controller.listener.names", "listeners", "listener.security.protocol.map",
                "log.dirs"].into_iter().collect();
            let keys: BTreeSet<&str> = props.iter().map(|(k, _)| k.as_str()).collect();
            prop_assert!(keys.is_superset(&expected), "{:?}", keys);
            prop_assert_eq!(keys.len(), props.len(), "every key once");
        }
    }
}

/// Whether `selector` selects an object with `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn services_select_exactly_the_pods_they_are_for(input in input()) {
        let d = plan_of(&input);
        let kc = &input.kc;
        let pods: BTreeMap<i32, &BTreeMap<String, String>> = d.pods.iter()
            .map(|p| {
                let name = p.metadata.name.as_deref().unwrap();
                let id = name.rsplit('-').next().unwrap().parse().unwrap();
                (id, p.metadata.labels.as_ref().unwrap())
            })
            .collect();
        let selected = |service: &str| -> BTreeSet<i32> {
            let selector = by_name(&d.services, service).unwrap().spec.as_ref().unwrap()
                .selector.clone().unwrap();
            pods.iter().filter(|(_, l)| selects(&selector, l)).map(|(id, _)| *id).collect()
        };
        let all: BTreeSet<i32> = pods.keys().copied().collect();
        let brokers: BTreeSet<i32> = kc.spec.brokers.iter()
            .filter(|b| b.roles.contains(&Role::Broker))
            .map(|b| b.id)
            .filter(|id| all.contains(id))
            .collect();
        prop_assert_eq!(selected(&names::headless_service(kc)), all.clone());
        prop_assert_eq!(selected(&names::bootstrap_service(kc)), brokers);
        for id in &all {
            prop_assert_eq!(selected(&names::broker_service(kc, *id)), BTreeSet::from([*id]));
            prop_assert_eq!(pods[id].get("app.kubernetes.io/instance").map(String::as_str), Some("basic"));
        }
        for dep in &d.deployments {
            let selector = dep.spec.as_ref().unwrap().selector.match_labels.clone().unwrap();
            prop_assert!(pods.values().all(|l| !selects(&selector, l)), "Envoy selects no broker");
        }
    }
}

#[test]
fn the_reader_reads_javas_escapes() {
    let props = load_properties("# c\n a = b\\\n   c\nk\\:x:\\ v\\u00E9\\n\n! c\nlast\\\\\n");
    assert_eq!(
        props,
        [
            ("a".to_string(), "bc".to_string()),
            ("k:x".to_string(), " vé\n".to_string()),
            ("last\\".to_string(), String::new()),
        ]
    );
}
