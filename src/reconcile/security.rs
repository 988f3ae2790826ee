//! What TLS and SASL listeners add to a cluster (pure): the per-listener SSL/SASL keys of
//! `server.properties`, the broker TLS Secret mounted into each broker Pod, the names each
//! broker's certificate must carry, and the checks that refuse combinations Pier cannot run.
//! Issuing the certificates (`pier-pki`) and reloading them live is the controller's.
use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{SecretVolumeSource, Volume, VolumeMount};
use kube::ResourceExt;

use super::broker::EffectiveBroker;
use super::names;
use super::{Observed, PlanError, Settings};
use crate::api::{ClientAuth, KafkaCluster, SecurityProtocol};

/// Where a broker Pod finds its TLS Secret.
// Not under the config volume's /etc/pier: a mount inside a read-only volume cannot be made.
pub const TLS_DIR: &str = "/etc/pier-tls";
/// The PEM keystore (PKCS#8 key, then the certificate chain) Kafka reads.
pub const KEYSTORE_FILE: &str = "keystore.pem";
/// The PEM truststore (cluster and clients CA bundles).
pub const TRUSTSTORE_FILE: &str = "truststore.pem";
/// The Pod volume of the TLS Secret.
pub const TLS_VOLUME: &str = "tls";
/// SASL mechanism of SASL listeners.
pub const SCRAM_MECHANISM: &str = "SCRAM-SHA-512";

/// Whether the protocol encrypts.
pub fn is_tls(p: SecurityProtocol) -> bool {
    matches!(p, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
}

/// Whether the protocol authenticates with SASL.
pub fn is_sasl(p: SecurityProtocol) -> bool {
    matches!(
        p,
        SecurityProtocol::SaslSsl | SecurityProtocol::SaslPlaintext
    )
}

/// One listener's security, whether internal or external.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSecurity {
    pub name: String,
    /// The port brokers listen on (an external listener's container port).
    pub port: i32,
    pub protocol: SecurityProtocol,
    pub client_auth: ClientAuth,
    pub inter_broker: bool,
    pub controller: bool,
}

impl ListenerSecurity {
    /// Whether node `b` listens on it: the controller listener on controllers, the others on
    /// brokers.
    pub fn served_by(&self, b: &EffectiveBroker) -> bool {
        if self.controller {
            b.is_controller()
        } else {
            b.is_broker()
        }
    }
}

/// Every listener of the spec with its security settings, internal first.
pub fn listeners(kc: &KafkaCluster) -> Vec<ListenerSecurity> {
    let l = &kc.spec.listeners;
    l.internal
        .iter()
        .map(|i| ListenerSecurity {
            name: i.name.clone(),
            port: i.port,
            protocol: i.protocol,
            client_auth: i.client_auth,
            inter_broker: i.used_for_inter_broker,
            controller: i.used_for_controller,
        })
        .chain(l.external.iter().map(|e| ListenerSecurity {
            name: e.name.clone(),
            port: e.container_port,
            protocol: e.protocol,
            client_auth: e.client_auth,
            inter_broker: false,
            controller: false,
        }))
        .collect()
}

/// Whether any listener speaks TLS: the cluster then has CAs and broker certificates.
pub fn uses_tls(kc: &KafkaCluster) -> bool {
    listeners(kc).iter().any(|l| is_tls(l.protocol))
}

/// The listener the operator's admin client uses: the inter-broker one.
pub fn operator_listener(kc: &KafkaCluster) -> Option<ListenerSecurity> {
    listeners(kc).into_iter().find(|l| l.inter_broker)
}

/// Refuses what Pier cannot run, with the reason.
pub fn check(kc: &KafkaCluster) -> Result<(), PlanError> {
    for l in listeners(kc) {
        if l.client_auth == ClientAuth::Required && !is_tls(l.protocol) {
            return Err(PlanError::Security(format!(
                "listener {}: clientAuth required needs protocol SSL or SASL_SSL (it is {})",
                l.name,
                l.protocol.kafka_name()
            )));
        }
        // Brokers and controllers would need SCRAM credentials before the first start (in
        // the bootstrap metadata); mutual TLS authenticates them without that.
        if is_sasl(l.protocol) && (l.inter_broker || l.controller) {
            return Err(PlanError::Security(format!(
                "listener {}: SASL on the inter-broker or controller listener is not supported; use SSL with clientAuth required (brokers authenticate with their certificates)",
                l.name
            )));
        }
    }
    Ok(())
}

/// The keys every node's `server.properties` gets for the listeners' security (the same on
/// every node: a broker uses the controller listener's keys as a client of the quorum).
pub fn listener_properties(kc: &KafkaCluster) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let keystore = format!("{TLS_DIR}/{KEYSTORE_FILE}");
    let truststore = format!("{TLS_DIR}/{TRUSTSTORE_FILE}");
    for l in listeners(kc) {
        let prefix = format!("listener.name.{}.", l.name.to_lowercase());
        if is_tls(l.protocol) {
            out.push((format!("{prefix}ssl.keystore.type"), "PEM".into()));
            out.push((format!("{prefix}ssl.keystore.location"), keystore.clone()));
            out.push((format!("{prefix}ssl.truststore.type"), "PEM".into()));
            out.push((
                format!("{prefix}ssl.truststore.location"),
                truststore.clone(),
            ));
            out.push((
                format!("{prefix}ssl.client.auth"),
                l.client_auth.kafka_name().into(),
            ));
        }
        if is_sasl(l.protocol) {
            out.push((
                format!("{prefix}sasl.enabled.mechanisms"),
                SCRAM_MECHANISM.into(),
            ));
            out.push((
                format!("{prefix}scram-sha-512.sasl.jaas.config"),
                "org.apache.kafka.common.security.scram.ScramLoginModule required;".into(),
            ));
        }
    }
    if uses_tls(kc) {
        // A renewed certificate may drop a name (an external listener removed, another
        // advertised host): Kafka refuses such a live reload unless told the change is meant.
        // Pier is the only issuer of these keystores.
        out.push(("ssl.allow.san.changes".into(), "true".into()));
    }
    out
}

/// Keys of [`listener_properties`] that reload a broker's keystore and truststore when set
/// again to the same value (Kafka rebuilds the SSL engine when the files changed): one per
/// TLS listener the node serves.
pub fn reload_keys(kc: &KafkaCluster, b: &EffectiveBroker) -> Vec<(String, String)> {
    listeners(kc)
        .into_iter()
        .filter(|l| is_tls(l.protocol) && l.served_by(b))
        .flat_map(|l| {
            let prefix = format!("listener.name.{}.", l.name.to_lowercase());
            [
                (
                    format!("{prefix}ssl.keystore.location"),
                    format!("{TLS_DIR}/{KEYSTORE_FILE}"),
                ),
                (
                    format!("{prefix}ssl.truststore.location"),
                    format!("{TLS_DIR}/{TRUSTSTORE_FILE}"),
                ),
            ]
        })
        .collect()
}

/// The broker TLS Secret's volume and mount, when the cluster uses TLS.
pub fn tls_volume(kc: &KafkaCluster, b: &EffectiveBroker) -> Option<(Volume, VolumeMount)> {
    uses_tls(kc).then(|| {
        (
            Volume {
                name: TLS_VOLUME.into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(names::broker_tls_secret(kc, b.id)),
                    // The key is for Kafka's eyes only.
                    default_mode: Some(0o400),
                    ..Default::default()
                }),
                ..Default::default()
            },
            VolumeMount {
                name: TLS_VOLUME.into(),
                mount_path: TLS_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
        )
    })
}

/// Names (and addresses) a broker's certificate carries: every name a client may reach it
/// by, inside the cluster and through Envoy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateNames {
    pub common_name: String,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
}

/// The names of broker `b`'s certificate: its Pod's DNS name through the headless Service,
/// its own Service, the bootstrap Service (each with the shorter forms a client in the
/// namespace may use), and per external listener the SNI names (`broker-<id>.<domain>`,
/// `bootstrap.<domain>`) or the advertised host (an IP address as such).
pub fn broker_certificate_names(
    kc: &KafkaCluster,
    namespace: &str,
    b: &EffectiveBroker,
    observed: &Observed,
    settings: &Settings,
) -> CertificateNames {
    let domain = &settings.cluster_domain;
    let mut dns = BTreeSet::new();
    let mut ips = BTreeSet::new();
    let pod = names::broker_pod(kc, b.id);
    let headless = names::headless_service(kc);
    dns.insert(names::broker_host(kc, namespace, b.id, domain));
    dns.insert(format!("{pod}.{headless}.{namespace}.svc"));
    for service in [
        names::broker_service(kc, b.id),
        names::bootstrap_service(kc),
    ] {
        dns.insert(format!("{service}.{namespace}.svc.{domain}"));
        dns.insert(format!("{service}.{namespace}.svc"));
        dns.insert(format!("{service}.{namespace}"));
        dns.insert(service);
    }
    if b.is_broker() {
        for l in &kc.spec.listeners.external {
            let host = match (&l.sni, &l.advertised_host, &observed.external_address) {
                (Some(sni), _, _) => {
                    dns.insert(format!("broker-{}.{}", b.id, sni.domain));
                    dns.insert(format!("bootstrap.{}", sni.domain));
                    None
                }
                (None, Some(h), _) | (None, None, Some(h)) => Some(h.clone()),
                (None, None, None) => None,
            };
            match host.as_deref().map(str::parse::<IpAddr>) {
                Some(Ok(ip)) => {
                    ips.insert(ip);
                }
                Some(Err(_)) => {
                    dns.insert(host.unwrap_or_default());
                }
                None => {}
            }
        }
    }
    CertificateNames {
        common_name: format!("{}-broker-{}", kc.name_any(), b.id),
        dns_names: dns.into_iter().collect(),
        ip_addresses: ips.into_iter().collect(),
    }
}

/// The SPIFFE-style identity in the certificate of a cluster's Envoys; Pier's xDS server
/// serves them only their own cluster's group.
pub fn envoy_identity(kc: &KafkaCluster, namespace: &str) -> String {
    format!(
        "spiffe://pier.dev/ns/{namespace}/kafkacluster/{}",
        kc.name_any()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{InternalListener, SniSpec};
    use crate::reconcile::effective_brokers;
    use crate::reconcile::tests::example;

    fn tls_cluster() -> KafkaCluster {
        let mut kc = example("kafkacluster-basic.yaml");
        for l in &mut kc.spec.listeners.internal {
            l.protocol = SecurityProtocol::Ssl;
            l.client_auth = ClientAuth::Required;
        }
        kc
    }

    #[test]
    fn plaintext_clusters_get_nothing() {
        let kc = example("kafkacluster-basic.yaml");
        assert!(!uses_tls(&kc));
        assert!(listener_properties(&kc).is_empty());
        let b = &effective_brokers(&kc).unwrap()[0];
        assert!(tls_volume(&kc, b).is_none());
        assert!(reload_keys(&kc, b).is_empty());
        check(&kc).unwrap();
    }

    #[test]
    fn tls_listeners_read_pem_files_from_the_mounted_secret() {
        let kc = tls_cluster();
        let props: std::collections::BTreeMap<_, _> =
            listener_properties(&kc).into_iter().collect();
        let name = kc.spec.listeners.internal[0].name.to_lowercase();
        assert_eq!(
            props[&format!("listener.name.{name}.ssl.keystore.location")],
            "/etc/pier-tls/keystore.pem"
        );
        assert_eq!(
            props[&format!("listener.name.{name}.ssl.keystore.type")],
            "PEM"
        );
        assert_eq!(
            props[&format!("listener.name.{name}.ssl.client.auth")],
            "required"
        );
        assert_eq!(props["ssl.allow.san.changes"], "true");
        let b = &effective_brokers(&kc).unwrap()[0];
        let (volume, mount) = tls_volume(&kc, b).unwrap();
        assert_eq!(
            volume.secret.unwrap().secret_name.unwrap(),
            names::broker_tls_secret(&kc, b.id)
        );
        assert_eq!(mount.mount_path, TLS_DIR);
        // Both stores of every TLS listener the node serves.
        assert_eq!(
            reload_keys(&kc, b).len(),
            2 * kc.spec.listeners.internal.len()
        );
        // A broker-only node does not listen on the controller listener.
        let controller = listeners(&kc).into_iter().find(|l| l.controller).unwrap();
        let broker_only = EffectiveBroker {
            roles: vec![crate::api::Role::Broker],
            ..b.clone()
        };
        assert!(controller.served_by(b));
        assert!(!controller.served_by(&broker_only));
        assert_eq!(
            reload_keys(&kc, &broker_only).len(),
            2 * (kc.spec.listeners.internal.len() - 1)
        );
    }

    #[test]
    fn sasl_listeners_enable_scram() {
        let mut kc = example("kafkacluster-basic.yaml");
        kc.spec.listeners.internal.push(InternalListener {
            name: "clients".into(),
            port: 9095,
            protocol: SecurityProtocol::SaslPlaintext,
            client_auth: ClientAuth::None,
            used_for_inter_broker: false,
            used_for_controller: false,
        });
        check(&kc).unwrap();
        let props: std::collections::BTreeMap<_, _> =
            listener_properties(&kc).into_iter().collect();
        assert_eq!(
            props["listener.name.clients.sasl.enabled.mechanisms"],
            "SCRAM-SHA-512"
        );
        assert!(props.contains_key("listener.name.clients.scram-sha-512.sasl.jaas.config"));
        assert!(!uses_tls(&kc));
    }

    #[test]
    fn refuses_client_auth_without_tls_and_sasl_between_brokers() {
        let mut kc = example("kafkacluster-basic.yaml");
        kc.spec.listeners.internal[0].client_auth = ClientAuth::Required;
        let e = check(&kc).unwrap_err().to_string();
        assert!(e.contains("clientAuth required needs protocol SSL"), "{e}");
        let mut kc = example("kafkacluster-basic.yaml");
        let inter = kc
            .spec
            .listeners
            .internal
            .iter_mut()
            .find(|l| l.used_for_inter_broker)
            .unwrap();
        inter.protocol = SecurityProtocol::SaslSsl;
        let e = check(&kc).unwrap_err().to_string();
        assert!(e.contains("SASL on the inter-broker"), "{e}");
    }

    #[test]
    fn broker_certificates_carry_every_name_clients_use() {
        let mut kc = tls_cluster();
        kc.spec.listeners.external[0].sni = Some(SniSpec {
            domain: "kafka.example.com".into(),
        });
        kc.spec.listeners.external[0].broker_port_base = None;
        let b = &effective_brokers(&kc).unwrap()[0];
        let names =
            broker_certificate_names(&kc, "ns", b, &Observed::default(), &Settings::default());
        let c = kc.name_any();
        let id = b.id;
        for want in [
            format!("{c}-broker-{id}.{c}-headless.ns.svc.cluster.local"),
            format!("{c}-broker-{id}.ns.svc"),
            format!("{c}-bootstrap.ns.svc.cluster.local"),
            format!("{c}-bootstrap"),
            format!("broker-{id}.kafka.example.com"),
            "bootstrap.kafka.example.com".to_string(),
        ] {
            assert!(names.dns_names.contains(&want), "{want} in {names:?}");
        }
        assert_eq!(names.common_name, format!("{c}-broker-{id}"));
    }

    #[test]
    fn an_advertised_ip_is_an_ip_address_name() {
        let mut kc = tls_cluster();
        let l = &mut kc.spec.listeners.external[0];
        l.sni = None;
        l.broker_port_base = Some(30000);
        l.advertised_host = None;
        let b = &effective_brokers(&kc).unwrap()[0];
        let observed = Observed {
            external_address: Some("203.0.113.7".into()),
            ..Default::default()
        };
        let names = broker_certificate_names(&kc, "ns", b, &observed, &Settings::default());
        assert_eq!(
            names.ip_addresses,
            vec!["203.0.113.7".parse::<IpAddr>().unwrap()]
        );
    }
}
