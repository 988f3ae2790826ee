//! Certificates: generating a CA, issuing leaf certificates from it, and reading certificates
//! back (serial, validity, names, issuer, fingerprint).
//!
//! Keys are ECDSA P-256, serialized as PKCS#8 (`BEGIN PRIVATE KEY`): Kafka's PEM keystore reads
//! only PKCS#8. Serials are 128 random bits. `notBefore` is one hour before `now`, so that a peer
//! whose clock runs a little behind accepts a certificate issued a moment ago. PEM produced here
//! is normalized (LF line endings, one block after another), so that comparing two PEM texts
//! compares their certificates.
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
    string::Ia5String,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::error::{PkiError, Reason, Result};

/// Seconds in a day.
pub const DAY: i64 = 86_400;
/// How far before `now` a new certificate's validity starts (clock skew between peers).
pub const BACKDATE: i64 = 3_600;

/// A CA certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CaMaterial {
    /// The CA certificate (`BEGIN CERTIFICATE`).
    pub cert_pem: String,
    /// Its private key (PKCS#8 `BEGIN PRIVATE KEY`).
    pub key_pem: String,
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaMaterial")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[elided]")
            .finish()
    }
}

/// What a leaf certificate must say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeafRequest {
    /// The subject's common name.
    pub common_name: String,
    /// DNS subjectAltNames.
    pub dns_names: Vec<String>,
    /// IP subjectAltNames.
    pub ip_addresses: Vec<IpAddr>,
    /// URI subjectAltNames (a SPIFFE identity, say).
    pub uris: Vec<String>,
    /// extendedKeyUsage serverAuth.
    pub server: bool,
    /// extendedKeyUsage clientAuth.
    pub client: bool,
}

/// An issued leaf certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct Leaf {
    /// The leaf certificate alone.
    pub cert_pem: String,
    /// The leaf followed by the CA that issued it (what a TLS peer presents).
    pub chain_pem: String,
    /// The leaf's private key, PKCS#8 (`BEGIN PRIVATE KEY`).
    pub key_pem: String,
    /// The leaf's serial, lower-case hex.
    pub serial: String,
    /// Its `notAfter`, unix seconds.
    pub not_after: i64,
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf")
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .field("chain_pem", &self.chain_pem)
            .field("key_pem", &"[elided]")
            .finish()
    }
}

/// What a certificate says, as far as Pier cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number, lower-case hex without colons or leading zero bytes.
    pub serial: String,
    /// `notBefore`, unix seconds.
    pub not_before: i64,
    /// `notAfter`, unix seconds.
    pub not_after: i64,
    /// The subject's common name, if any.
    pub subject_cn: Option<String>,
    /// The issuer's common name, if any.
    pub issuer_cn: Option<String>,
    /// DNS subjectAltNames, in certificate order.
    pub dns_names: Vec<String>,
    /// IP subjectAltNames, in certificate order.
    pub ip_addresses: Vec<IpAddr>,
    /// URI subjectAltNames, in certificate order.
    pub uris: Vec<String>,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    /// extendedKeyUsage serverAuth.
    pub server_auth: bool,
    /// extendedKeyUsage clientAuth.
    pub client_auth: bool,
    /// SHA-256 of the DER, lower-case hex.
    pub sha256: String,
    /// The certificate, re-encoded as normalized PEM.
    pub pem: String,
}

/// Generates a self-signed CA: ECDSA P-256, basicConstraints CA with pathlen 0 (it signs leaves
/// only), keyCertSign and cRLSign, a random serial, valid from `now` - 1 h for `validity_days`.
pub fn generate_ca(common_name: &str, validity_days: u32, now: i64) -> Result<CaMaterial> {
    let context = || format!("CA {common_name:?}");
    let key = new_key().map_err(|e| e.within(context()))?;
    let mut params =
        base_params(common_name, validity_days, now).map_err(|e| e.within(context()))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params
        .self_signed(&key)
        .map_err(|e| PkiError::new(context(), Reason::Generate(e.to_string())))?;
    Ok(CaMaterial {
        cert_pem: encode_pem("CERTIFICATE", cert.der()),
        key_pem: encode_pem("PRIVATE KEY", key.serialized_der()),
    })
}

/// A loaded CA that issues leaf certificates.
pub struct Issuer {
    issuer: rcgen::Issuer<'static, KeyPair>,
    info: CertInfo,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").field("info", &self.info).finish()
    }
}

impl Issuer {
    /// Loads a CA: its certificate (the first in `cert_pem`) must be a CA and `key_pem` its
    /// PKCS#8 private key.
    pub fn load(ca: &CaMaterial) -> Result<Issuer> {
        let info = CertInfo::parse(&ca.cert_pem).map_err(|e| e.within("CA certificate"))?;
        if !info.is_ca {
            return Err(PkiError::new("CA certificate", Reason::NotCa));
        }
        let key = parse_key(&ca.key_pem).map_err(|e| e.within("CA private key"))?;
        if !spki_matches(&info.pem, &key)? {
            return Err(PkiError::new("CA private key", Reason::KeyMismatch));
        }
        let issuer = rcgen::Issuer::from_ca_cert_pem(&info.pem, key)
            .map_err(|e| PkiError::new("CA certificate", Reason::Certificate(e.to_string())))?;
        Ok(Issuer { issuer, info })
    }

    /// What the CA certificate says.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// Issues a leaf certificate with a new key and a random serial, valid from `now` - 1 h for
    /// `validity_days`: the request's names as subjectAltNames, digitalSignature, and
    /// serverAuth/clientAuth as asked.
    pub fn issue(&self, request: &LeafRequest, validity_days: u32, now: i64) -> Result<Leaf> {
        let context = || format!("leaf certificate {:?}", request.common_name);
        let key = new_key().map_err(|e| e.within(context()))?;
        let mut params = base_params(&request.common_name, validity_days, now)
            .map_err(|e| e.within(context()))?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if request.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if request.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        let ia5 = |what: &str, s: &str| {
            Ia5String::try_from(s).map_err(|e| {
                PkiError::new(
                    context(),
                    Reason::Generate(format!("{what} {s:?} is not ASCII: {e}")),
                )
            })
        };
        for name in &request.dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(ia5("DNS name", name)?));
        }
        for ip in &request.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        for uri in &request.uris {
            params
                .subject_alt_names
                .push(SanType::URI(ia5("URI", uri)?));
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| PkiError::new(context(), Reason::Generate(e.to_string())))?;
        let cert_pem = encode_pem("CERTIFICATE", cert.der());
        let info = CertInfo::parse(&cert_pem).map_err(|e| e.within(context()))?;
        Ok(Leaf {
            chain_pem: format!("{cert_pem}{}", self.info.pem),
            cert_pem,
            key_pem: encode_pem("PRIVATE KEY", key.serialized_der()),
            serial: info.serial,
            not_after: info.not_after,
        })
    }
}

impl CertInfo {
    /// The first certificate in `pem` (other PEM blocks, a private key say, are skipped).
    pub fn parse(pem: &str) -> Result<CertInfo> {
        parse_bundle(pem)?
            .into_iter()
            .next()
            .ok_or_else(|| PkiError::new("certificate", Reason::NoCertificate))
    }
}

/// Every certificate in `pem`, in order (other PEM blocks are skipped); an error when there is
/// none or one does not parse.
pub fn parse_bundle(pem: &str) -> Result<Vec<CertInfo>> {
    let ders = certificate_ders(pem)?;
    if ders.is_empty() {
        return Err(PkiError::new("certificate", Reason::NoCertificate));
    }
    ders.iter()
        .enumerate()
        .map(|(i, der)| {
            info_from_der(der).map_err(|reason| {
                let context = if ders.len() == 1 {
                    "certificate".to_string()
                } else {
                    format!("certificate #{}", i + 1)
                };
                PkiError::new(context, reason)
            })
        })
        .collect()
}

/// Whether the first certificate of `leaf_pem` was issued by the first certificate of `ca_pem`:
/// the issuer name is the CA's subject and the signature verifies with the CA's key. False on
/// anything unreadable.
pub fn issued_by(leaf_pem: &str, ca_pem: &str) -> bool {
    let (Ok(leaf), Ok(ca)) = (first_der(leaf_pem), first_der(ca_pem)) else {
        return false;
    };
    let (Ok((_, leaf)), Ok((_, ca))) = (
        X509Certificate::from_der(&leaf),
        X509Certificate::from_der(&ca),
    ) else {
        return false;
    };
    leaf.issuer().as_raw() == ca.subject().as_raw()
        && leaf.verify_signature(Some(ca.public_key())).is_ok()
}

/// Whether `key_pem` is the private key of the first certificate of `cert_pem`. False on
/// anything unreadable.
pub fn key_matches(cert_pem: &str, key_pem: &str) -> bool {
    let Ok(key) = parse_key(key_pem) else {
        return false;
    };
    spki_matches(cert_pem, &key).unwrap_or(false)
}

/// The certificates of `pem`, each re-encoded as normalized PEM, concatenated; an error when
/// there is none or one is not a certificate.
pub fn normalize_bundle(pem: &str) -> Result<String> {
    Ok(parse_bundle(pem)?.into_iter().map(|c| c.pem).collect())
}

/// A new ECDSA P-256 key.
fn new_key() -> Result<KeyPair> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| PkiError::new("key", Reason::Generate(e.to_string())))
}

/// A private key from PEM (PKCS#8).
fn parse_key(key_pem: &str) -> Result<KeyPair> {
    let blocks = pem::parse_many(key_pem)
        .map_err(|e| PkiError::new("private key", Reason::Pem(e.to_string())))?;
    let Some(block) = blocks.iter().find(|b| b.tag().ends_with("PRIVATE KEY")) else {
        return Err(PkiError::new(
            "private key",
            Reason::Key("no PRIVATE KEY block".into()),
        ));
    };
    if block.tag() != "PRIVATE KEY" {
        return Err(PkiError::new(
            "private key",
            Reason::Key(format!(
                "a `{}` block; convert it with `openssl pkcs8 -topk8 -nocrypt`",
                block.tag()
            )),
        ));
    }
    KeyPair::try_from(block.contents())
        .map_err(|e| PkiError::new("private key", Reason::Key(e.to_string())))
}

/// Whether the first certificate of `cert_pem` carries `key`'s public key.
fn spki_matches(cert_pem: &str, key: &KeyPair) -> Result<bool> {
    let der = first_der(cert_pem)?;
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|e| PkiError::new("certificate", Reason::Certificate(e.to_string())))?;
    Ok(cert.public_key().raw == key.subject_public_key_info().as_slice())
}

/// The parameters every certificate shares: subject CN, validity, a random serial.
fn base_params(common_name: &str, validity_days: u32, now: i64) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let not_after = now.saturating_add(i64::from(validity_days.max(1)) * DAY);
    params.not_before = datetime(now.saturating_sub(BACKDATE))?;
    params.not_after = datetime(not_after)?;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

fn datetime(unix: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|_| PkiError::new("validity", Reason::Time(unix)))
}

/// 128 random bits, positive, with the second-highest bit set so that the DER integer is always
/// 16 bytes (and its hex 32 digits).
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::new("serial", Reason::Generate("no randomness".into())))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Normalized PEM: LF line endings, 64 columns, a trailing newline.
fn encode_pem(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// The DER of every `CERTIFICATE` block.
fn certificate_ders(pem: &str) -> Result<Vec<Vec<u8>>> {
    let blocks = pem::parse_many(pem)
        .map_err(|e| PkiError::new("certificate", Reason::Pem(e.to_string())))?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect())
}

fn first_der(pem: &str) -> Result<Vec<u8>> {
    certificate_ders(pem)?
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::new("certificate", Reason::NoCertificate))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn info_from_der(der: &[u8]) -> std::result::Result<CertInfo, Reason> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| Reason::Certificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(Reason::Certificate(format!(
            "{} trailing bytes after the certificate",
            rest.len()
        )));
    }
    let invalid = |e: x509_parser::error::X509Error| Reason::Certificate(e.to_string());
    let cn = |name: &x509_parser::x509::X509Name<'_>| {
        name.iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string)
    };
    let (mut dns_names, mut ip_addresses, mut uris) = (Vec::new(), Vec::new(), Vec::new());
    if let Some(san) = cert.subject_alternative_name().map_err(invalid)? {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns_names.push((*d).to_string()),
                GeneralName::URI(u) => uris.push((*u).to_string()),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => {
                        let octets: [u8; 4] = (*bytes).try_into().unwrap_or_default();
                        ip_addresses.push(IpAddr::from(octets));
                    }
                    16 => {
                        let octets: [u8; 16] = (*bytes).try_into().unwrap_or_default();
                        ip_addresses.push(IpAddr::from(octets));
                    }
                    n => {
                        return Err(Reason::Certificate(format!(
                            "an IP subjectAltName of {n} bytes"
                        )));
                    }
                },
                _ => {}
            }
        }
    }
    let eku = cert.extended_key_usage().map_err(invalid)?;
    let (server_auth, client_auth) = eku.map_or((false, false), |e| {
        (
            e.value.server_auth || e.value.any,
            e.value.client_auth || e.value.any,
        )
    });
    let is_ca = cert
        .basic_constraints()
        .map_err(invalid)?
        .is_some_and(|bc| bc.value.ca);
    let serial = cert.raw_serial();
    let serial = match serial.iter().position(|b| *b != 0) {
        Some(first) => hex(&serial[first..]),
        None => "0".to_string(),
    };
    Ok(CertInfo {
        serial,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        subject_cn: cn(cert.subject()),
        issuer_cn: cn(cert.issuer()),
        dns_names,
        ip_addresses,
        uris,
        is_ca,
        server_auth,
        client_auth,
        sha256: hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref()),
        pem: encode_pem("CERTIFICATE", der),
    })
}

#[cfg(test)]
mod tests;
