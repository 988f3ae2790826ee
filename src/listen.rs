//! Binding and securing the operator's and `pier xds`'s listeners: TCP binding with an error
//! that says which listener, and the xDS server's TLS set up from the command line's files.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::xds::tls::{ClientTrust, ServerTls, TlsError};

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({what}): {source}")]
pub struct ListenError {
    pub addr: SocketAddr,
    pub what: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr` for the listener named `what` (e.g. "xDS", "metrics").
pub async fn bind(
    addr: SocketAddr,
    what: &'static str,
) -> Result<tokio::net::TcpListener, ListenError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError { addr, what, source })
}

/// The xDS server's TLS files (`--xds-tls-cert`, `--xds-tls-key`, `--xds-client-ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdsTlsFiles {
    /// Serving certificate chain (PEM), reloaded when it changes.
    pub cert: PathBuf,
    /// Its private key (PEM), reloaded with it.
    pub key: PathBuf,
    /// Client CAs (PEM bundle) that may vouch for any Envoy identity; without it only CAs
    /// registered per node group at runtime vouch.
    pub client_ca: Option<PathBuf>,
}

/// The xDS server's TLS from `files`; `None` serves plaintext, with a loud warning, since any
/// client that reaches `listen` can then read every node group's config.
pub fn xds_tls(
    files: Option<&XdsTlsFiles>,
    listen: SocketAddr,
) -> Result<Option<Arc<ServerTls>>, TlsError> {
    let Some(files) = files else {
        tracing::warn!(
            %listen,
            "xDS is served in PLAINTEXT without client authentication: any client that reaches \
             this port can read every Kafka cluster's Envoy config (broker addresses); set \
             --xds-tls-cert, --xds-tls-key and --xds-client-ca"
        );
        return Ok(None);
    };
    let trust = match &files.client_ca {
        Some(path) => ClientTrust::from_pem_file(path)?,
        None => ClientTrust::new(Vec::new())?,
    };
    let tls = ServerTls::new(&files.cert, &files.key, trust)?;
    tracing::info!(
        %listen,
        cert = %files.cert.display(),
        client_ca = ?files.client_ca,
        "xDS served over TLS; clients need a certificate naming their Kafka cluster"
    );
    Ok(Some(tls))
}
