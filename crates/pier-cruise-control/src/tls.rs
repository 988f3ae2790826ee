//! The TLS configuration of the HTTP client: rustls with the ring provider, named here rather
//! than taken from a process-wide default, trusting either the CA certificates Pier was given or
//! the system's roots.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::Error;

/// A client configuration for `https` URLs. `ca_pem` (one or more PEM certificates) replaces the
/// system roots when given. For `http` URLs pass `https: false`: the configuration is never used
/// then, so it trusts nothing rather than reading the system's roots.
pub(crate) fn client_config(
    ca_pem: Option<&[u8]>,
    https: bool,
) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS protocol versions: {e}")))?;
    let config = match ca_pem {
        Some(pem) => builder
            .with_root_certificates(root_store(pem)?)
            .with_no_client_auth(),
        None if https => builder
            .with_root_certificates(system_roots()?)
            .with_no_client_auth(),
        None => builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    };
    Ok(config)
}

fn system_roots() -> Result<rustls::RootCertStore, Error> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(Error::Config(format!(
            "no system CA certificates found ({}); give the CA instead",
            errors.join("; ")
        )));
    }
    Ok(roots)
}

fn root_store(pem: &[u8]) -> Result<rustls::RootCertStore, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| Error::Config(format!("CA certificates: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| Error::Config(format!("CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(Error::Config(
            "CA certificates: no PEM certificate found".to_string(),
        ));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_ca_is_a_config_error() {
        for pem in [
            &b""[..],
            b"not a certificate",
            b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            assert!(
                matches!(client_config(Some(pem), true), Err(Error::Config(_))),
                "{:?}",
                String::from_utf8_lossy(pem)
            );
        }
    }

    #[test]
    fn plain_http_needs_no_roots() {
        assert!(client_config(None, false).is_ok());
    }
}
