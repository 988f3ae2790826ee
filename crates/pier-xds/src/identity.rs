//! Who an Envoy is, from its client certificate: the one URI SAN
//! `spiffe://pier.dev/ns/<namespace>/kafkacluster/<name>` names the KafkaCluster whose node
//! group ([`crate::model::group_name`]) it may read. Formatting and parsing that URI live here
//! only; whoever issues Envoy certificates calls [`spiffe_uri`].
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The SPIFFE trust domain of Pier's identities.
pub const TRUST_DOMAIN: &str = "pier.dev";

/// The identity URI of the Envoys of KafkaCluster `name` in `namespace`.
pub fn spiffe_uri(namespace: &str, name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/kafkacluster/{name}")
}

/// `(namespace, name)` of a Pier identity URI; `None` for any other URI.
pub fn parse_spiffe_uri(uri: &str) -> Option<(&str, &str)> {
    let path = uri.strip_prefix("spiffe://")?.strip_prefix(TRUST_DOMAIN)?;
    let mut parts = path.strip_prefix('/')?.split('/');
    let (ns_key, namespace, kind, name) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    (parts.next().is_none()
        && ns_key == "ns"
        && kind == "kafkacluster"
        && valid(namespace)
        && valid(name))
    .then_some((namespace, name))
}

/// The identity a certificate carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The identity URI, as written in the certificate.
    pub uri: String,
    /// The node group it may read.
    pub group: String,
}

/// Why a certificate names no usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate does not parse: {0}")]
    Parse(String),
    #[error(
        "the certificate has no URI SAN of the form {}",
        spiffe_uri("<namespace>", "<name>")
    )]
    None,
    #[error("the certificate names more than one Pier identity ({0} and {1})")]
    Ambiguous(String, String),
}

/// The Pier identity in a DER certificate's URI SANs: exactly one, else an error.
pub fn certificate_identity(der: &[u8]) -> Result<Identity, IdentityError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::Parse(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Parse(e.to_string()))?;
    let mut found: Option<Identity> = None;
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        let GeneralName::URI(uri) = name else {
            continue;
        };
        let Some((namespace, cluster)) = parse_spiffe_uri(uri) else {
            continue;
        };
        let id = Identity {
            uri: uri.to_string(),
            group: crate::model::group_name(namespace, cluster),
        };
        match &found {
            Some(other) if other.group != id.group => {
                return Err(IdentityError::Ambiguous(other.uri.clone(), id.uri));
            }
            Some(_) => {}
            None => found = Some(id),
        }
    }
    found.ok_or(IdentityError::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uri_round_trips_to_the_group() {
        let uri = spiffe_uri("kafka", "demo");
        assert_eq!(uri, "spiffe://pier.dev/ns/kafka/kafkacluster/demo");
        assert_eq!(parse_spiffe_uri(&uri), Some(("kafka", "demo")));
    }

    #[test]
    fn other_uris_are_no_identity() {
        for uri in [
            "spiffe://example.org/ns/kafka/kafkacluster/demo",
            "spiffe://pier.dev/ns/kafka/sa/demo",
            "spiffe://pier.dev/ns/kafka/kafkacluster/demo/extra",
            "spiffe://pier.dev/ns/kafka/kafkacluster/",
            "spiffe://pier.dev/ns//kafkacluster/demo",
            "spiffe://pier.devx/ns/kafka/kafkacluster/demo",
            "spiffe://pier.dev/ns/Kafka/kafkacluster/demo",
            "spiffe://pier.dev/ns/ka fka/kafkacluster/demo",
            "https://pier.dev/ns/kafka/kafkacluster/demo",
            "",
        ] {
            assert_eq!(parse_spiffe_uri(uri), None, "{uri}");
        }
    }

    fn cert_with_uris(uris: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["envoy".to_string()]).unwrap();
        for uri in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI((*uri).try_into().unwrap()));
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_certificate_names_its_group() {
        let der = cert_with_uris(&["https://example.org/x", &spiffe_uri("kafka", "demo")]);
        let id = certificate_identity(&der).unwrap();
        assert_eq!(id.group, "kafka/demo");
        assert_eq!(id.uri, spiffe_uri("kafka", "demo"));

        let same_twice = cert_with_uris(&[&spiffe_uri("a", "b"), &spiffe_uri("a", "b")]);
        assert_eq!(certificate_identity(&same_twice).unwrap().group, "a/b");
    }

    #[test]
    fn no_identity_or_two_are_errors() {
        assert_eq!(
            certificate_identity(&cert_with_uris(&[])),
            Err(IdentityError::None)
        );
        assert_eq!(
            certificate_identity(&cert_with_uris(&["spiffe://other.org/ns/a/kafkacluster/b"])),
            Err(IdentityError::None)
        );
        let two = cert_with_uris(&[&spiffe_uri("a", "b"), &spiffe_uri("a", "c")]);
        assert!(matches!(
            certificate_identity(&two),
            Err(IdentityError::Ambiguous(..))
        ));
        assert!(matches!(
            certificate_identity(b"not a certificate"),
            Err(IdentityError::Parse(_))
        ));
    }
}
