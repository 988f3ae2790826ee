//! The small domain model the layers share: how one Kafka cluster's brokers are exposed to
//! clients outside Kubernetes through Envoy. The controller builds it from a KafkaCluster and
//! its broker Pods; the standalone `pier xds` builds it from a file; `xds` translates it into
//! Envoy resources. Names and addresses are derived here, in one place, so the brokers'
//! advertised addresses and Envoy's listeners can never disagree.
use std::collections::BTreeSet;
use std::time::Duration;

/// One external listener of one Kafka cluster, as Envoy serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalAccess {
    /// Namespace of the Kafka cluster (any label outside Kubernetes).
    pub namespace: String,
    /// Name of the Kafka cluster.
    pub cluster: String,
    /// Name of the external listener (a cluster may have several).
    pub listener: String,
    /// Address Envoy binds its listeners to.
    pub bind_address: String,
    /// Port of the bootstrap listener; in SNI mode the one port of everything.
    pub bootstrap_port: u16,
    pub routing: BrokerRouting,
    /// Close a proxied connection after this long without traffic in either direction.
    pub idle_timeout: Duration,
    pub brokers: Vec<ExposedBroker>,
}

/// How a client's connection finds its broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerRouting {
    /// Broker `id` has its own port `base_port + id`.
    PortPerBroker { base_port: u16 },
    /// One port; the TLS SNI name `broker-<id>.<domain>` selects the broker, and
    /// `bootstrap.<domain>` any serving broker. TLS passes through to the broker.
    Sni { domain: String },
}

/// A broker behind Envoy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposedBroker {
    pub id: i32,
    /// Where Envoy connects: an IP address (a Pod IP) or a DNS name.
    pub host: String,
    pub port: u16,
    pub state: BrokerState,
}

/// Whether a broker takes new bootstrap connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerState {
    Serving,
    /// Being emptied before removal: clients still reach it through its own listener (they
    /// fetch from it until its partitions have moved), but bootstrap no longer sends them there.
    Draining,
}

/// A model that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("{listener}: broker id {id} appears more than once")]
    DuplicateBroker { listener: String, id: i32 },
    #[error("{listener}: broker {id}: port {base} + {id} is not a valid port")]
    PortOutOfRange {
        listener: String,
        id: i32,
        base: u16,
    },
    #[error("{listener}: broker {id}'s port {port} is also the bootstrap port")]
    PortClash {
        listener: String,
        id: i32,
        port: u16,
    },
    #[error("{listener}: port {port} is used by more than one listener of the group")]
    ListenerPortClash { listener: String, port: u16 },
    #[error("{listener}: broker {id} has an empty host")]
    EmptyHost { listener: String, id: i32 },
    #[error("{listener}: broker {id} has upstream port 0")]
    ZeroPort { listener: String, id: i32 },
    #[error("{listener}: bootstrap port 0 is not a valid port")]
    ZeroBootstrapPort { listener: String },
    #[error("{listener}: SNI domain {domain:?} is not a valid DNS name")]
    BadDomain { listener: String, domain: String },
    #[error("{listener}: broker id {id} is negative")]
    NegativeId { listener: String, id: i32 },
    #[error("{field} {value:?} may contain only letters, digits, '-', '_' and '.'")]
    BadName { field: &'static str, value: String },
}

impl ExternalAccess {
    /// The Envoy node group every Envoy replica fronting this cluster belongs to.
    pub fn group(&self) -> String {
        group_name(&self.namespace, &self.cluster)
    }

    /// Prefix of every Envoy resource name of this external listener.
    pub fn resource_prefix(&self) -> String {
        format!("pier/{}/{}/{}", self.namespace, self.cluster, self.listener)
    }

    /// The port clients use for broker `id` (port-per-broker mode: base + id; SNI: the one port).
    pub fn broker_port(&self, id: i32) -> Option<u16> {
        match &self.routing {
            BrokerRouting::PortPerBroker { base_port } => u16::try_from(id)
                .ok()
                .and_then(|id| base_port.checked_add(id))
                .filter(|p| *p != 0),
            BrokerRouting::Sni { .. } => Some(self.bootstrap_port),
        }
    }

    /// The SNI name of broker `id`, in SNI mode.
    pub fn broker_sni(&self, id: i32) -> Option<String> {
        match &self.routing {
            BrokerRouting::Sni { domain } => Some(format!("broker-{id}.{domain}")),
            BrokerRouting::PortPerBroker { .. } => None,
        }
    }

    /// The SNI name of the bootstrap route, in SNI mode.
    pub fn bootstrap_sni(&self) -> Option<String> {
        match &self.routing {
            BrokerRouting::Sni { domain } => Some(format!("bootstrap.{domain}")),
            BrokerRouting::PortPerBroker { .. } => None,
        }
    }

    /// The address a broker advertises to external clients: `advertised_host:port`, or in SNI
    /// mode its own name and the shared port.
    pub fn advertised_address(&self, advertised_host: &str, id: i32) -> Option<String> {
        let port = self.broker_port(id)?;
        let host = self
            .broker_sni(id)
            .unwrap_or_else(|| advertised_host.to_string());
        Some(format!("{host}:{port}"))
    }

    /// Every port Envoy listens on for this external listener.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports = vec![self.bootstrap_port];
        if let BrokerRouting::PortPerBroker { .. } = self.routing {
            ports.extend(self.brokers.iter().filter_map(|b| self.broker_port(b.id)));
        }
        ports
    }

    /// Checks what Envoy would otherwise reject or serve wrongly.
    pub fn validate(&self) -> Result<(), ModelError> {
        for (field, value) in [
            ("namespace", &self.namespace),
            ("cluster", &self.cluster),
            ("listener", &self.listener),
        ] {
            if value.is_empty()
                || !value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(ModelError::BadName {
                    field,
                    value: value.clone(),
                });
            }
        }
        let listener = self.resource_prefix();
        if self.bootstrap_port == 0 {
            return Err(ModelError::ZeroBootstrapPort { listener });
        }
        if let BrokerRouting::Sni { domain } = &self.routing
            && !is_dns_name(domain)
        {
            return Err(ModelError::BadDomain {
                listener,
                domain: domain.clone(),
            });
        }
        let mut ids = BTreeSet::new();
        for b in &self.brokers {
            let id = b.id;
            if id < 0 {
                return Err(ModelError::NegativeId { listener, id });
            }
            if !ids.insert(id) {
                return Err(ModelError::DuplicateBroker { listener, id });
            }
            if b.host.trim().is_empty() {
                return Err(ModelError::EmptyHost { listener, id });
            }
            if b.port == 0 {
                return Err(ModelError::ZeroPort { listener, id });
            }
            if let BrokerRouting::PortPerBroker { base_port } = self.routing {
                let port = self.broker_port(id).ok_or(ModelError::PortOutOfRange {
                    listener: listener.clone(),
                    id,
                    base: base_port,
                })?;
                if port == self.bootstrap_port {
                    return Err(ModelError::PortClash { listener, id, port });
                }
            }
        }
        Ok(())
    }
}

/// `<namespace>/<cluster>`: the node group of a Kafka cluster's Envoys.
pub fn group_name(namespace: &str, cluster: &str) -> String {
    format!("{namespace}/{cluster}")
}

/// Validates every external listener of one group, and that no two of them share a port.
pub fn validate_group(listeners: &[ExternalAccess]) -> Result<(), ModelError> {
    let mut used = BTreeSet::new();
    for l in listeners {
        l.validate()?;
        for port in l.ports() {
            if !used.insert((l.bind_address.clone(), port)) {
                return Err(ModelError::ListenerPortClash {
                    listener: l.resource_prefix(),
                    port,
                });
            }
        }
    }
    Ok(())
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn access(routing: BrokerRouting, ids: &[i32]) -> ExternalAccess {
        ExternalAccess {
            namespace: "kafka".into(),
            cluster: "demo".into(),
            listener: "external".into(),
            bind_address: "0.0.0.0".into(),
            bootstrap_port: 29092,
            routing,
            idle_timeout: Duration::from_secs(3600),
            brokers: ids
                .iter()
                .map(|id| ExposedBroker {
                    id: *id,
                    host: format!("10.0.0.{id}"),
                    port: 9094,
                    state: BrokerState::Serving,
                })
                .collect(),
        }
    }

    pub(crate) fn per_port(ids: &[i32]) -> ExternalAccess {
        access(BrokerRouting::PortPerBroker { base_port: 29100 }, ids)
    }

    pub(crate) fn sni(ids: &[i32]) -> ExternalAccess {
        access(
            BrokerRouting::Sni {
                domain: "kafka.example.com".into(),
            },
            ids,
        )
    }

    #[test]
    fn names_and_addresses_derive_from_one_place() {
        let a = per_port(&[0, 1, 2]);
        assert_eq!(a.group(), "kafka/demo");
        assert_eq!(a.resource_prefix(), "pier/kafka/demo/external");
        assert_eq!(a.broker_port(2), Some(29102));
        assert_eq!(a.broker_sni(2), None);
        assert_eq!(
            a.advertised_address("lb.example.com", 1).as_deref(),
            Some("lb.example.com:29101")
        );
        assert_eq!(a.ports(), vec![29092, 29100, 29101, 29102]);

        let s = sni(&[0, 1]);
        assert_eq!(s.broker_port(1), Some(29092));
        assert_eq!(
            s.broker_sni(1).as_deref(),
            Some("broker-1.kafka.example.com")
        );
        assert_eq!(
            s.bootstrap_sni().as_deref(),
            Some("bootstrap.kafka.example.com")
        );
        assert_eq!(
            s.advertised_address("ignored", 1).as_deref(),
            Some("broker-1.kafka.example.com:29092")
        );
        assert_eq!(s.ports(), vec![29092]);
    }

    #[test]
    fn valid_models_pass() {
        assert_eq!(per_port(&[0, 1, 2]).validate(), Ok(()));
        assert_eq!(sni(&[5, 7]).validate(), Ok(()));
        assert_eq!(per_port(&[]).validate(), Ok(()));
    }

    #[test]
    fn invalid_models_are_named() {
        let mut a = per_port(&[1, 1]);
        assert!(matches!(
            a.validate(),
            Err(ModelError::DuplicateBroker { id: 1, .. })
        ));

        a = per_port(&[-1]);
        assert!(matches!(
            a.validate(),
            Err(ModelError::NegativeId { id: -1, .. })
        ));

        a = access(BrokerRouting::PortPerBroker { base_port: 65530 }, &[10]);
        assert!(matches!(
            a.validate(),
            Err(ModelError::PortOutOfRange { id: 10, .. })
        ));

        a = access(BrokerRouting::PortPerBroker { base_port: 29090 }, &[2]);
        let err = a.validate().unwrap_err();
        assert!(matches!(err, ModelError::PortClash { port: 29092, .. }));
        assert!(err.to_string().contains("bootstrap port"), "{err}");

        a = per_port(&[1]);
        a.brokers[0].host = " ".into();
        assert!(matches!(a.validate(), Err(ModelError::EmptyHost { .. })));

        a = per_port(&[1]);
        a.brokers[0].port = 0;
        assert!(matches!(a.validate(), Err(ModelError::ZeroPort { .. })));

        a = per_port(&[1]);
        a.bootstrap_port = 0;
        assert!(matches!(
            a.validate(),
            Err(ModelError::ZeroBootstrapPort { .. })
        ));

        for bad in ["", "-x.com", "a..b", "spa ce.com", "under_score.com"] {
            a = access(BrokerRouting::Sni { domain: bad.into() }, &[1]);
            assert!(
                matches!(a.validate(), Err(ModelError::BadDomain { .. })),
                "{bad}"
            );
        }

        a = per_port(&[1]);
        a.cluster = "a/b".into();
        assert!(matches!(
            a.validate(),
            Err(ModelError::BadName {
                field: "cluster",
                ..
            })
        ));
    }

    #[test]
    fn listeners_of_one_group_must_not_share_ports() {
        let a = per_port(&[0, 1]);
        let mut b = per_port(&[0]);
        b.listener = "other".into();
        b.bootstrap_port = 30000;
        b.routing = BrokerRouting::PortPerBroker { base_port: 29101 };
        let err = validate_group(&[a.clone(), b.clone()]).unwrap_err();
        assert_eq!(
            err,
            ModelError::ListenerPortClash {
                listener: "pier/kafka/demo/other".into(),
                port: 29101
            }
        );
        b.routing = BrokerRouting::PortPerBroker { base_port: 30100 };
        assert_eq!(validate_group(&[a, b]), Ok(()));
    }
}
