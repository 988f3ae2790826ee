//! A broker's `server.properties`: deterministic (sorted, no timestamps) so an unchanged spec
//! renders byte-identical text and nothing is rewritten or restarted.
use std::collections::BTreeMap;

use super::broker::EffectiveBroker;
use super::names;
use super::services::ExternalHosts;
use super::{PlanError, Settings};
use crate::api::{KafkaCluster, is_config_key};

/// Keys Pier derives from the spec; a user value for them would break the cluster's wiring.
pub const RESERVED_KEYS: &[&str] = &[
    "node.id",
    "broker.id",
    "process.roles",
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "inter.broker.listener.name",
    "controller.listener.names",
    "controller.quorum.voters",
    "controller.quorum.bootstrap.servers",
    "log.dirs",
    "log.dir",
    "metadata.log.dir",
];

/// Renders broker `b`'s configuration: what Pier derives plus the spec's keys that need a
/// restart (`read_only`, from [`super::config::plan_config`]).
pub fn server_properties(
    kc: &KafkaCluster,
    namespace: &str,
    b: &EffectiveBroker,
    all: &[EffectiveBroker],
    external: Option<&ExternalHosts>,
    settings: &Settings,
    read_only: &BTreeMap<String, String>,
) -> Result<String, PlanError> {
    let listeners = &kc.spec.listeners;
    let inter = listeners
        .internal
        .iter()
        .find(|l| l.used_for_inter_broker)
        .ok_or(PlanError::NoInterBrokerListener)?;
    let controller = listeners
        .internal
        .iter()
        .find(|l| l.used_for_controller)
        .ok_or(PlanError::NoControllerListener)?;
    let mut names_seen = std::collections::BTreeSet::new();
    for name in listeners
        .internal
        .iter()
        .map(|l| &l.name)
        .chain(listeners.external.iter().map(|l| &l.name))
    {
        if !names_seen.insert(name.to_uppercase()) {
            return Err(PlanError::DuplicateListenerName(name.clone()));
        }
    }
    let host = names::broker_host(kc, namespace, b.id, &settings.cluster_domain);
    // A dynamic quorum's voters are dialled at the endpoint each controller advertises (it
    // updates its voter record with it): the Pod's stable name, never the address Kafka would
    // pick (the Pod IP, which a restart changes, leaving the other voters dialling the old
    // one). A static quorum's voter list names the hosts itself.
    let dynamic = super::quorum::status_of(kc).mode == crate::api::QuorumMode::Dynamic;

    let mut bound = Vec::new();
    let mut advertised = Vec::new();
    let mut protocols = Vec::new();
    for l in &listeners.internal {
        let name = l.name.to_uppercase();
        protocols.push(format!("{name}:{}", l.protocol.kafka_name()));
        let serves = if l.used_for_controller {
            b.is_controller()
        } else {
            b.is_broker()
        };
        if serves {
            bound.push(format!("{name}://:{}", l.port));
            if !l.used_for_controller || dynamic {
                advertised.push(format!("{name}://{host}:{}", l.port));
            }
        }
    }
    for l in &listeners.external {
        let name = l.name.to_uppercase();
        protocols.push(format!("{name}:{}", l.protocol.kafka_name()));
        if b.is_broker() {
            bound.push(format!("{name}://:{}", l.container_port));
            if let Some(addr) = external
                .and_then(|e| e.get(&l.name))
                .and_then(|h| h.advertised(b.id))
            {
                advertised.push(format!("{name}://{addr}"));
            }
        }
    }
    let controller_endpoint = |id: i32| {
        format!(
            "{}:{}",
            names::broker_host(kc, namespace, id, &settings.cluster_domain),
            controller.port
        )
    };
    let quorum = super::quorum::status_of(kc);
    let controllers: Vec<i32> = all
        .iter()
        .filter(|v| v.is_controller())
        .map(|v| v.id)
        .collect();
    let finds_quorum = match quorum.mode {
        crate::api::QuorumMode::Static => (
            "controller.quorum.voters",
            controllers
                .iter()
                .map(|id| format!("{id}@{}", controller_endpoint(*id)))
                .collect::<Vec<_>>()
                .join(","),
        ),
        crate::api::QuorumMode::Dynamic => (
            "controller.quorum.bootstrap.servers",
            super::quorum::bootstrap_nodes(&quorum, &controllers)
                .into_iter()
                .map(controller_endpoint)
                .collect::<Vec<_>>()
                .join(","),
        ),
    };
    let roles = b
        .roles
        .iter()
        .map(|r| match r {
            crate::api::Role::Broker => "broker",
            crate::api::Role::Controller => "controller",
        })
        .collect::<Vec<_>>()
        .join(",");

    let mut derived: Vec<(&str, String)> = vec![
        ("node.id", b.id.to_string()),
        ("process.roles", roles),
        finds_quorum,
        ("controller.listener.names", controller.name.to_uppercase()),
        ("listeners", bound.join(",")),
        ("listener.security.protocol.map", protocols.join(",")),
        ("log.dirs", b.log_dirs().join(",")),
        ("metadata.log.dir", b.layout.metadata_dir.clone()),
    ];
    if !advertised.is_empty() {
        derived.push(("advertised.listeners", advertised.join(",")));
    }
    if b.is_broker() {
        derived.push(("inter.broker.listener.name", inter.name.to_uppercase()));
    }
    if let Some(rack) = &b.rack {
        derived.push(("broker.rack", rack.clone()));
    }
    let security = super::security::listener_properties(kc);

    let mut text = format!(
        "# Generated by Pier for broker {} of {namespace}/{}. Do not edit: change the KafkaCluster.\n",
        b.id,
        kubernetes_name(kc)
    );
    for (k, v) in derived {
        text.push_str(&format!("{k}={}\n", escape(&v)));
    }
    for (k, v) in security {
        text.push_str(&format!("{k}={}\n", escape(&v)));
    }
    if !read_only.is_empty() {
        text.push_str("# From the KafkaCluster spec (read-only keys; dynamic ones are set live)\n");
        // The spec's `rack` wins over a `broker.rack` key (one line per key).
        for (k, v) in read_only
            .iter()
            .filter(|(k, _)| b.rack.is_none() || k.as_str() != "broker.rack")
        {
            text.push_str(&format!("{k}={}\n", escape(v)));
        }
    }
    Ok(text)
}

/// Checks every key of every configuration section of the spec, read-only or dynamic: Kafka's
/// key grammar (a key is written verbatim into `server.properties`, so a line break in it would
/// add a line of its own) and no key Pier derives.
pub fn check_config_keys(kc: &KafkaCluster) -> Result<(), PlanError> {
    let mut sections = vec![
        (
            "spec.kafka.readOnlyConfig".to_string(),
            &kc.spec.kafka.read_only_config,
        ),
        (
            "spec.kafka.clusterWideConfig".to_string(),
            &kc.spec.kafka.cluster_wide_config,
        ),
    ];
    for b in &kc.spec.brokers {
        sections.push((format!("broker {}: config", b.id), &b.config));
        sections.push((
            format!("broker {}: readOnlyConfig", b.id),
            &b.read_only_config,
        ));
    }
    // Keys read from Secrets obey the same rules.
    let mut from_keys = vec![(
        "spec.kafka.configFrom".to_string(),
        kc.spec.kafka.config_from.keys().collect::<Vec<_>>(),
    )];
    for b in &kc.spec.brokers {
        from_keys.push((
            format!("broker {}: configFrom", b.id),
            b.config_from.keys().collect(),
        ));
    }
    let sections = sections
        .into_iter()
        .map(|(s, keys)| (s, keys.keys().collect::<Vec<_>>()))
        .chain(from_keys);
    for (section, keys) in sections {
        for key in keys {
            if !is_config_key(key) {
                return Err(PlanError::InvalidConfigKey {
                    section,
                    key: key.clone(),
                });
            }
            if RESERVED_KEYS.contains(&key.as_str()) {
                return Err(PlanError::ReservedKey {
                    section,
                    key: key.clone(),
                });
            }
        }
    }
    Ok(())
}

fn kubernetes_name(kc: &KafkaCluster) -> String {
    kube::ResourceExt::name_any(kc)
}

/// A value as `java.util.Properties.load` reads it back unchanged: backslashes and line breaks
/// escaped (a raw line break would start a new key), a leading space escaped (leading
/// whitespace is skipped), and everything outside printable ASCII as `\uXXXX` (Kafka reads the
/// file as ISO-8859-1).
pub(super) fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{c}' => out.push_str("\\f"),
            ' ' if i == 0 => out.push_str("\\ "),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
        }
    }
    out
}
