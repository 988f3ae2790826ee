//! TLS to Kafka brokers (rustls with the ring provider; no openssl): [`TlsOptions`] as PEM
//! text, built once into a [`TlsConfig`] (one `rustls::ClientConfig`, shared by every
//! connection), the handshake a [`Transport::Tls`](crate::Transport) connection starts with,
//! and [`served_certificate`], which reports the certificate a listener serves right now.
//!
//! Brokers are dialled at addresses (Pod IPs) their certificates need not name, so the name
//! verified is given per connection (a DNS name from the broker's certificate); without one,
//! the host part of the address is verified (an IP SAN, or a DNS name).
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::KafkaError;
use super::connection::connect_tcp;

/// What a TLS connection trusts and presents, as PEM text.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// One or more CA certificates; a broker's chain must end in one of them.
    pub trust_bundle_pem: String,
    /// Our certificate, then its intermediates (mutual TLS when set, with the key).
    pub client_cert_chain_pem: Option<String>,
    /// The private key of `client_cert_chain_pem` (PKCS#8; PKCS#1 and SEC1 are accepted too).
    pub client_key_pem: Option<String>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field(
                "trust_bundle_pem",
                &format!("{} bytes", self.trust_bundle_pem.len()),
            )
            .field("client_cert", &self.client_cert_chain_pem.is_some())
            .field(
                "client_key",
                &self.client_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// [`TlsOptions`] checked and built into a client configuration. Cheap to clone; equal when
/// built from equal options.
#[derive(Clone)]
pub struct TlsConfig {
    options: TlsOptions,
    config: Arc<rustls::ClientConfig>,
    /// The same without session resumption, for [`served_certificate`]: a resumed session
    /// carries no certificate (rustls would report the one of the session resumed), so a
    /// probe of what is served always does a full handshake. (Kafka 4.1 was not seen to
    /// resume across a keystore reload anyway: the reload makes a new SSL context.)
    fresh: Arc<rustls::ClientConfig>,
}

impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        self.options == other.options
    }
}

impl Eq for TlsConfig {}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TlsConfig").field(&self.options).finish()
    }
}

impl TlsConfig {
    /// Parses the PEM and builds the client configuration: TLS 1.2 and 1.3, certificate
    /// verification against the trust bundle only (no system roots).
    pub fn new(options: TlsOptions) -> Result<Self, KafkaError> {
        let invalid = |message: String| KafkaError::TlsConfig { message };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(options.trust_bundle_pem.as_bytes()) {
            let cert = cert.map_err(|e| invalid(format!("trust bundle: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| invalid(format!("trust bundle: {e}")))?;
        }
        if roots.is_empty() {
            return Err(invalid(
                "trust bundle holds no PEM certificate (BEGIN CERTIFICATE)".to_string(),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&options.client_cert_chain_pem, &options.client_key_pem) {
            (None, None) => builder.with_no_client_auth(),
            (Some(chain), Some(key)) => {
                let chain = CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| invalid(format!("client certificate chain: {e}")))?;
                if chain.is_empty() {
                    return Err(invalid(
                        "client certificate chain holds no PEM certificate".to_string(),
                    ));
                }
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                    .map_err(|e| invalid(format!("client key: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| invalid(format!("client certificate and key: {e}")))?
            }
            _ => {
                return Err(invalid(
                    "a client certificate needs its key and a key its certificate".to_string(),
                ));
            }
        };
        let mut fresh = config.clone();
        fresh.resumption = rustls::client::Resumption::disabled();
        Ok(TlsConfig {
            options,
            config: Arc::new(config),
            fresh: Arc::new(fresh),
        })
    }

    pub(crate) fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    pub fn options(&self) -> &TlsOptions {
        &self.options
    }

    /// Whether we present a client certificate.
    pub fn is_mutual(&self) -> bool {
        self.options.client_cert_chain_pem.is_some()
    }
}

/// The name to verify for a broker at `addr` (`host:port`, `[v6]:port`): `server_name` if
/// given, else the host part of the address.
pub(crate) fn server_name(
    addr: &str,
    server_name: Option<&str>,
) -> Result<ServerName<'static>, KafkaError> {
    let name = match server_name {
        Some(name) => name,
        None => {
            let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
            host.trim_start_matches('[').trim_end_matches(']')
        }
    };
    ServerName::try_from(name.to_string()).map_err(|e| KafkaError::TlsConfig {
        message: format!("server name {name:?} for {addr}: {e}"),
    })
}

/// TCP, then the TLS handshake, verifying `name`; both within `within`.
pub(crate) async fn connect_tls(
    addr: &str,
    name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
    within: Duration,
) -> Result<TlsStream<TcpStream>, KafkaError> {
    let tcp = connect_tcp(addr, within).await?;
    let connector = TlsConnector::from(config);
    match timeout(within, connector.connect(name, tcp)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(KafkaError::io(addr, "TLS handshake", e)),
        Err(_) => Err(KafkaError::Timeout {
            addr: addr.to_string(),
            api: "TLS handshake".to_string(),
            after: within,
        }),
    }
}

/// The leaf certificate (DER) the TLS listener at `addr` serves now, verified against `tls`'s
/// trust bundle and `server_name` (default: the host of `addr`). A new connection and a full
/// handshake (never a resumed session) each time. Only the handshake is done: the listener may
/// require a client certificate (`tls` may carry one) or SASL after it.
///
/// Kafka holds one TLS context per listener and network thread (`num.network.threads`),
/// reloads them one after the other, and hands new connections to the threads in turn: to
/// confirm a keystore reload, see the new certificate on at least `num.network.threads`
/// consecutive handshakes (one is not enough: the next may still get the old one).
pub async fn served_certificate(
    addr: &str,
    server_name: Option<&str>,
    tls: &TlsConfig,
    within: Duration,
) -> Result<Vec<u8>, KafkaError> {
    let name = self::server_name(addr, server_name)?;
    let stream = connect_tls(addr, name, tls.fresh.clone(), within).await?;
    let (_, session) = stream.get_ref();
    session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.as_ref().to_vec())
        .ok_or_else(|| KafkaError::malformed(addr, "TLS handshake", "no server certificate"))
}

/// The leaf certificates of `handshakes` consecutive [`served_certificate`] handshakes, in
/// order. With `handshakes` >= the broker's `num.network.threads` on an otherwise quiet
/// listener, every network thread's TLS context answered once: all equal to the certificate
/// just written means the reload reached all of them.
pub async fn served_certificates(
    addr: &str,
    server_name: Option<&str>,
    tls: &TlsConfig,
    within: Duration,
    handshakes: usize,
) -> Result<Vec<Vec<u8>>, KafkaError> {
    let mut out = Vec::with_capacity(handshakes);
    for _ in 0..handshakes {
        out.push(served_certificate(addr, server_name, tls, within).await?);
    }
    Ok(out)
}

/// The serial number of a DER X.509 certificate: its magnitude, big-endian, without leading
/// zero bytes (so it compares equal however the issuer padded it). `None` if `der` is not a
/// certificate.
pub fn certificate_serial(der: &[u8]) -> Option<Vec<u8>> {
    const SEQUENCE: u8 = 0x30;
    const INTEGER: u8 = 0x02;
    const VERSION: u8 = 0xa0;
    let (tag, certificate, _) = der_element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, mut tbs, _) = der_element(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    let (mut tag, mut serial, rest) = der_element(tbs)?;
    if tag == VERSION {
        tbs = rest;
        (tag, serial, _) = der_element(tbs)?;
    }
    if tag != INTEGER || serial.is_empty() {
        return None;
    }
    while serial.len() > 1 && serial[0] == 0 {
        serial = &serial[1..];
    }
    Some(serial.to_vec())
}

/// One DER element: (tag, contents, what follows). Single-byte tags, definite lengths.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, after) = rest.split_at(n);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return None;
    }
    let (contents, after) = rest.split_at(len);
    Some((tag, contents, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_verified_is_the_given_one_or_the_host_of_the_address() {
        let dns = |s: &str| ServerName::try_from(s.to_string()).unwrap();
        assert_eq!(
            server_name("10.0.0.7:9093", Some("broker-1.kafka.svc")).unwrap(),
            dns("broker-1.kafka.svc")
        );
        assert_eq!(server_name("10.0.0.7:9093", None).unwrap(), dns("10.0.0.7"));
        assert_eq!(server_name("[fd00::7]:9093", None).unwrap(), dns("fd00::7"));
        assert_eq!(
            server_name("kafka-0.kafka:9093", None).unwrap(),
            dns("kafka-0.kafka")
        );
        let err = server_name("10.0.0.7:9093", Some("not a name!")).unwrap_err();
        assert!(matches!(err, KafkaError::TlsConfig { .. }), "{err}");
    }

    #[test]
    fn bad_pem_is_a_clear_error() {
        let err = TlsConfig::new(TlsOptions::default()).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        let err = TlsConfig::new(TlsOptions {
            trust_bundle_pem:
                "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".to_string(),
            ..TlsOptions::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("trust bundle"), "{err}");
        assert!(!err.is_retriable());
    }

    #[test]
    fn the_key_is_never_printed() {
        let options = TlsOptions {
            trust_bundle_pem: "ca".into(),
            client_cert_chain_pem: Some("cert".into()),
            client_key_pem: Some("SECRET KEY".into()),
        };
        let printed = format!("{options:?}");
        assert!(!printed.contains("SECRET"), "{printed}");
    }

    #[test]
    fn serials_are_read_from_der() {
        // SEQUENCE { SEQUENCE { [0] { INTEGER 2 }, INTEGER 0x00 0x8f 0x01, ... } }
        let tbs = [
            0x30, 0x0a, 0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x03, 0x00, 0x8f, 0x01,
        ];
        let mut cert = vec![0x30, tbs.len() as u8];
        cert.extend_from_slice(&tbs);
        assert_eq!(certificate_serial(&cert), Some(vec![0x8f, 0x01]));
        // Version 1 certificates have no [0].
        let v1 = [0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x05];
        assert_eq!(certificate_serial(&v1), Some(vec![0x05]));
        assert_eq!(certificate_serial(&[]), None);
        assert_eq!(
            certificate_serial(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(certificate_serial(&cert[..cert.len() - 1]), None);
    }
}
