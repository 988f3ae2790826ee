//! ADS over TLS with client authentication. [`ServerTls`] holds the serving certificate (read
//! again when its files change on disk, so a renewed certificate needs no restart) and the
//! [`ClientTrust`]: static client CAs that may vouch for any identity, plus CAs registered per
//! node group at runtime that vouch only for certificates carrying that group's identity
//! ([`crate::identity`]). [`incoming`] accepts connections, runs each TLS handshake in its own
//! task under a timeout (a slow client never holds up others) and hands the established
//! connections to tonic as [`XdsConn`]s, whose [`PeerInfo`] carries the client's certificate
//! chain to the ADS handler.
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::metrics::{RefusalReason, XdsMetrics};
use crate::server::Limits;

/// How often the serving certificate's files are checked for a change.
pub const CERT_RELOAD_PERIOD: Duration = Duration::from_secs(1);

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("{what}: {source}")]
    Rustls {
        what: String,
        #[source]
        source: rustls::Error,
    },
    #[error("client CAs of {what}: {message}")]
    Roots { what: String, message: String },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_certificates(path, &bytes)
}

fn parse_certificates(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |message: String| TlsError::Pem {
        path: path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no CERTIFICATE in the file".into()));
    }
    Ok(certs)
}

/// A verifier of client chains against `roots`; `what` names them in errors.
fn verifier(
    what: &str,
    roots: Vec<CertificateDer<'static>>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in roots {
        store.add(cert).map_err(|source| TlsError::Rustls {
            what: format!("client CA of {what}"),
            source,
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .build()
        .map_err(|e| TlsError::Roots {
            what: what.to_string(),
            message: e.to_string(),
        })
}

/// The client CAs the xDS server trusts: static ones (`--xds-client-ca`), which may vouch for
/// any identity, and per node group ones (a KafkaCluster's cluster CA), which vouch only for
/// certificates whose identity is that group. A cheap handle: clones share the same trust.
#[derive(Clone)]
pub struct ClientTrust {
    inner: Arc<TrustInner>,
}

struct TrustInner {
    provider: Arc<CryptoProvider>,
    static_roots: Option<Arc<dyn ClientCertVerifier>>,
    groups: RwLock<HashMap<String, Arc<dyn ClientCertVerifier>>>,
}

impl std::fmt::Debug for ClientTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTrust")
            .field("static_roots", &self.inner.static_roots.is_some())
            .field("groups", &self.groups())
            .finish()
    }
}

impl ClientTrust {
    /// Trust in `static_roots` (may be empty: then only registered groups' CAs vouch).
    pub fn new(static_roots: Vec<CertificateDer<'static>>) -> Result<Self, TlsError> {
        let provider = provider();
        let static_roots = if static_roots.is_empty() {
            None
        } else {
            Some(verifier("the static roots", static_roots, &provider)?)
        };
        Ok(Self {
            inner: Arc::new(TrustInner {
                provider,
                static_roots,
                groups: RwLock::new(HashMap::new()),
            }),
        })
    }

    /// Trust in the CAs of a PEM bundle file.
    pub fn from_pem_file(path: &Path) -> Result<Self, TlsError> {
        Self::new(read_certificates(path)?)
    }

    /// `roots` vouch, from the next handshake on, for certificates with `group`'s identity;
    /// they replace the group's earlier roots. Empty `roots` remove the group.
    pub fn set_group_roots(
        &self,
        group: &str,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<(), TlsError> {
        if roots.is_empty() {
            self.remove_group(group);
            return Ok(());
        }
        let v = verifier(&format!("node group {group}"), roots, &self.inner.provider)?;
        let mut groups = self.inner.groups.write().unwrap_or_else(|p| p.into_inner());
        groups.insert(group.to_string(), v);
        Ok(())
    }

    /// [`ClientTrust::set_group_roots`] with the CAs of a PEM bundle (e.g. a CA Secret's
    /// `ca.crt`).
    pub fn set_group_roots_pem(&self, group: &str, pem: &str) -> Result<(), TlsError> {
        let what = format!("CA bundle of node group {group}");
        self.set_group_roots(group, parse_certificates(Path::new(&what), pem.as_bytes())?)
    }

    /// The group's CAs vouch for nobody any more.
    pub fn remove_group(&self, group: &str) {
        let mut groups = self.inner.groups.write().unwrap_or_else(|p| p.into_inner());
        groups.remove(group);
    }

    /// Groups with registered CAs, sorted.
    pub fn groups(&self) -> Vec<String> {
        let groups = self.inner.groups.read().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<String> = groups.keys().cloned().collect();
        names.sort();
        names
    }

    fn group_verifier(&self, group: &str) -> Option<Arc<dyn ClientCertVerifier>> {
        let groups = self.inner.groups.read().unwrap_or_else(|p| p.into_inner());
        groups.get(group).cloned()
    }

    /// Verifies a client chain: against the static roots, else against the roots of the group
    /// the leaf's identity names (and no other group's).
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let unknown_issuer =
            || rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let static_error = match &self.inner.static_roots {
            Some(v) => match v.verify_client_cert(end_entity, intermediates, now) {
                Ok(verified) => return Ok(verified),
                Err(e) => e,
            },
            None => unknown_issuer(),
        };
        let group_verifier = crate::identity::certificate_identity(end_entity)
            .ok()
            .and_then(|id| self.group_verifier(&id.group));
        match group_verifier {
            Some(v) => v.verify_client_cert(end_entity, intermediates, now),
            None => Err(static_error),
        }
    }
}

/// [`ClientTrust`] as rustls' client certificate verifier: a certificate is required.
#[derive(Debug)]
struct TrustVerifier {
    trust: ClientTrust,
    schemes: Vec<SignatureScheme>,
}

impl ClientCertVerifier for TrustVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Group CAs come and go; an empty list lets the client send the certificate it has.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.trust.verify(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.trust.inner.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.trust.inner.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// The serving certificate, replaced when its files change.
#[derive(Debug)]
struct ServingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServingCert {
    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// When the leaf certificate of `key` expires (Unix seconds).
fn not_after(key: &CertifiedKey) -> Option<i64> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(key.cert.first()?.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// The xDS server's TLS: serving certificate files, client trust and the rustls config.
pub struct ServerTls {
    cert_path: PathBuf,
    key_path: PathBuf,
    serving: Arc<ServingCert>,
    /// The files' bytes last looked at, to notice a change.
    seen: std::sync::Mutex<(Vec<u8>, Vec<u8>)>,
    trust: ClientTrust,
    acceptor: tokio_rustls::TlsAcceptor,
    /// When the serving certificate in use expires (Unix seconds).
    expiry: prometheus_client::metrics::gauge::Gauge,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the serving certificate chain and key (PEM files) and trusts `trust` for clients;
    /// every client must present a certificate.
    pub fn new(
        cert_path: &Path,
        key_path: &Path,
        trust: ClientTrust,
    ) -> Result<Arc<Self>, TlsError> {
        Self::build(cert_path, key_path, trust, true, vec![b"h2".to_vec()])
    }

    /// An HTTPS server's TLS (HTTP/2 and HTTP/1.1, for [`ServerTls::acceptor`]): with
    /// `client_roots`, every client must present a certificate they signed (mTLS); without,
    /// none is asked for.
    pub fn https(
        cert_path: &Path,
        key_path: &Path,
        client_roots: Option<Vec<CertificateDer<'static>>>,
    ) -> Result<Arc<Self>, TlsError> {
        let require = client_roots.is_some();
        let trust = ClientTrust::new(client_roots.unwrap_or_default())?;
        let alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::build(cert_path, key_path, trust, require, alpn)
    }

    fn build(
        cert_path: &Path,
        key_path: &Path,
        trust: ClientTrust,
        require_client_cert: bool,
        alpn: Vec<Vec<u8>>,
    ) -> Result<Arc<Self>, TlsError> {
        let (cert_bytes, key_bytes) = read_pair(cert_path, key_path)?;
        let key = certified_key(cert_path, key_path, &cert_bytes, &key_bytes, &trust)?;
        let serving = Arc::new(ServingCert {
            current: RwLock::new(Arc::new(key)),
        });
        let provider = trust.inner.provider.clone();
        let verifier = Arc::new(TrustVerifier {
            schemes: provider
                .signature_verification_algorithms
                .supported_schemes(),
            trust: trust.clone(),
        });
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls {
                what: "TLS versions".into(),
                source,
            })?;
        let builder = if require_client_cert {
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_cert_resolver(serving.clone());
        config.alpn_protocols = alpn;
        let expiry = prometheus_client::metrics::gauge::Gauge::default();
        expiry.set(not_after(&serving.current()).unwrap_or(0));
        Ok(Arc::new(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            serving,
            seen: std::sync::Mutex::new((cert_bytes, key_bytes)),
            trust,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            expiry,
        }))
    }

    /// Registers `pier_xds_serving_certificate_expiry_timestamp_seconds`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "pier_xds_serving_certificate_expiry_timestamp_seconds",
            "When the xDS server's certificate in use expires (Unix time)",
            self.expiry.clone(),
        );
    }

    /// Accepts TLS connections: handshakes with the current serving certificate.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor.clone()
    }

    /// The client trust, to register and remove node groups' CAs.
    pub fn trust(&self) -> &ClientTrust {
        &self.trust
    }

    /// The serving certificate chain now in use.
    pub fn serving_chain(&self) -> Vec<CertificateDer<'static>> {
        self.serving.current().cert.clone()
    }

    /// Reads the files again; if they changed and form a valid pair, new handshakes use them.
    /// `Ok(true)`: replaced. A half-written pair (certificate renewed, key not yet) fails and
    /// is tried again once either file changes again.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (cert_bytes, key_bytes) = read_pair(&self.cert_path, &self.key_path)?;
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.0 == cert_bytes && seen.1 == key_bytes {
                return Ok(false);
            }
            *seen = (cert_bytes.clone(), key_bytes.clone());
        }
        let key = certified_key(
            &self.cert_path,
            &self.key_path,
            &cert_bytes,
            &key_bytes,
            &self.trust,
        )?;
        let key = Arc::new(key);
        let expires = not_after(&key);
        *self
            .serving
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = key;
        self.expiry.set(expires.unwrap_or(0));
        Ok(true)
    }

    /// Reloads the serving certificate whenever its files change, until dropped.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(CERT_RELOAD_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.reload() {
                Ok(true) => tracing::info!(
                    cert = %self.cert_path.display(),
                    expires = self.expiry.get(),
                    "xDS serving certificate reloaded; new connections get it"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot reload the xDS serving certificate; the previous one keeps serving"
                ),
            }
        }
    }
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    Ok((read(cert_path)?, read(key_path)?))
}

fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    cert_bytes: &[u8],
    key_bytes: &[u8],
    trust: &ClientTrust,
) -> Result<CertifiedKey, TlsError> {
    let chain = parse_certificates(cert_path, cert_bytes)?;
    let key = PrivateKeyDer::from_pem_slice(key_bytes).map_err(|e| TlsError::Pem {
        path: key_path.to_path_buf(),
        message: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, &trust.inner.provider).map_err(|source| TlsError::Rustls {
        what: format!("{} with {}", cert_path.display(), key_path.display()),
        source,
    })
}

/// What the ADS handler knows of a connection's client.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// The client's certificate chain (leaf first) on a TLS connection; `None` in plaintext.
    pub certificates: Option<Arc<[CertificateDer<'static>]>>,
}

/// An accepted xDS connection, plaintext or TLS.
pub struct XdsConn(Conn);

enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl XdsConn {
    pub fn plain(stream: TcpStream) -> Self {
        Self(Conn::Plain(stream))
    }

    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match &self.0 {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }
}

impl tonic::transport::server::Connected for XdsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match &self.0 {
            Conn::Plain(s) => PeerInfo {
                remote: s.peer_addr().ok(),
                certificates: None,
            },
            Conn::Tls(s) => {
                let (tcp, session) = s.get_ref();
                PeerInfo {
                    remote: tcp.peer_addr().ok(),
                    certificates: Some(
                        session
                            .peer_certificates()
                            .unwrap_or_default()
                            .iter()
                            .map(|c| c.clone().into_owned())
                            .collect(),
                    ),
                }
            }
        }
    }
}

impl AsyncRead for XdsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for XdsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The refusal a failed handshake counts as, if it is about the client's certificate.
fn handshake_refusal(e: &io::Error) -> Option<RefusalReason> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::NoCertificatesPresented => Some(RefusalReason::NoCertificate),
        rustls::Error::InvalidCertificate(_) => Some(RefusalReason::Untrusted),
        _ => None,
    }
}

/// Connections accepted on `listener`, with `TCP_NODELAY` (a response that follows another
/// must not wait for the client's delayed ACK): with `tls`, each after its handshake, run in a
/// task of its own within `limits.tls_handshake_timeout`, at most `limits.max_tls_handshakes`
/// at once (a failed one is logged, counted when it is about the client certificate, and
/// dropped); without, as they come. The stream ends, and the listener closes, when the stream
/// is dropped.
pub fn incoming(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<ServerTls>>,
    limits: &Limits,
    metrics: Arc<XdsMetrics>,
) -> impl Stream<Item = io::Result<XdsConn>> + use<> {
    let (tx, rx) = mpsc::channel::<io::Result<XdsConn>>(64);
    let handshake_timeout = limits.tls_handshake_timeout;
    let handshakes = Arc::new(tokio::sync::Semaphore::new(limits.max_tls_handshakes));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = tx.closed() => break,
            };
            let (tcp, remote) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(error = %e, "xDS accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            let Some(tls) = &tls else {
                if tx.send(Ok(XdsConn::plain(tcp))).await.is_err() {
                    break;
                }
                continue;
            };
            let Ok(slot) = handshakes.clone().try_acquire_owned() else {
                metrics.refused(RefusalReason::TooManyHandshakes);
                tracing::debug!(%remote, "too many TLS handshakes in progress; connection closed");
                continue;
            };
            let (acceptor, tx, metrics) = (tls.acceptor.clone(), tx.clone(), metrics.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let handshake = tokio::select! {
                    done = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)) => done,
                    _ = tx.closed() => return,
                };
                match handshake {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(XdsConn(Conn::Tls(Box::new(stream))))).await;
                    }
                    Ok(Err(e)) => match handshake_refusal(&e) {
                        Some(reason) => {
                            metrics.refused(reason);
                            tracing::warn!(%remote, error = %e, "xDS client refused in the TLS handshake");
                        }
                        None => tracing::info!(%remote, error = %e, "xDS TLS handshake failed"),
                    },
                    Err(_) => {
                        tracing::info!(%remote, timeout = ?handshake_timeout, "xDS TLS handshake timed out")
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::spiffe_uri;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};

    struct Ca(CertifiedIssuer<'static, KeyPair>);

    impl Ca {
        fn new(name: &str) -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap());
            Ca(issuer.unwrap())
        }

        fn der(&self) -> CertificateDer<'static> {
            self.0.der().clone()
        }

        fn client(&self, uri: Option<&str>) -> CertificateDer<'static> {
            self.leaf(uri, false).der
        }

        /// A client certificate, or a server certificate for "localhost".
        fn leaf(&self, uri: Option<&str>, server: bool) -> Leaf {
            let name = if server { "localhost" } else { "envoy" };
            let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
            if let Some(uri) = uri {
                params
                    .subject_alt_names
                    .push(SanType::URI(uri.try_into().unwrap()));
            }
            params.extended_key_usages.push(if server {
                rcgen::ExtendedKeyUsagePurpose::ServerAuth
            } else {
                rcgen::ExtendedKeyUsagePurpose::ClientAuth
            });
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.0).unwrap();
            Leaf {
                der: cert.der().clone(),
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            }
        }
    }

    struct Leaf {
        der: CertificateDer<'static>,
        cert_pem: String,
        key_pem: String,
    }

    fn ok(trust: &ClientTrust, cert: &CertificateDer<'_>) -> bool {
        trust.verify(cert, &[], UnixTime::now()).is_ok()
    }

    #[test]
    fn static_roots_vouch_for_any_identity() {
        let ca = Ca::new("static");
        let trust = ClientTrust::new(vec![ca.der()]).unwrap();
        assert!(ok(&trust, &ca.client(Some(&spiffe_uri("a", "b")))));
        assert!(ok(&trust, &ca.client(Some(&spiffe_uri("c", "d")))));
        assert!(ok(&trust, &ca.client(None)));
        assert!(!ok(&trust, &Ca::new("other").client(None)));
    }

    #[test]
    fn a_group_ca_vouches_only_for_its_own_group() {
        let (static_ca, demo_ca, other_ca) = (Ca::new("static"), Ca::new("demo"), Ca::new("other"));
        let trust = ClientTrust::new(vec![static_ca.der()]).unwrap();
        let demo = demo_ca.client(Some(&spiffe_uri("kafka", "demo")));
        assert!(!ok(&trust, &demo), "no roots for kafka/demo yet");

        trust
            .set_group_roots("kafka/demo", vec![demo_ca.der()])
            .unwrap();
        trust
            .set_group_roots_pem("kafka/other", &other_ca.0.pem())
            .unwrap();
        assert_eq!(trust.groups(), ["kafka/demo", "kafka/other"]);
        assert!(ok(&trust, &demo));
        // demo's CA signing a certificate for another group, or for no group: not trusted.
        assert!(!ok(
            &trust,
            &demo_ca.client(Some(&spiffe_uri("kafka", "other")))
        ));
        assert!(!ok(&trust, &demo_ca.client(None)));
        // other's CA for its own group is fine.
        assert!(ok(
            &trust,
            &other_ca.client(Some(&spiffe_uri("kafka", "other")))
        ));

        // A clone shares the trust; removal takes effect at once.
        trust.clone().remove_group("kafka/demo");
        assert!(!ok(&trust, &demo));
        trust.set_group_roots("kafka/other", vec![]).unwrap();
        assert!(trust.groups().is_empty());
    }

    #[test]
    fn without_static_roots_only_groups_vouch() {
        let demo_ca = Ca::new("demo");
        let trust = ClientTrust::new(vec![]).unwrap();
        let demo = demo_ca.client(Some(&spiffe_uri("kafka", "demo")));
        assert!(!ok(&trust, &demo));
        trust
            .set_group_roots("kafka/demo", vec![demo_ca.der()])
            .unwrap();
        assert!(ok(&trust, &demo));
    }

    #[test]
    fn bad_roots_are_errors() {
        let trust = ClientTrust::new(vec![]).unwrap();
        let garbage = CertificateDer::from(b"not a certificate".to_vec());
        assert!(trust.set_group_roots("kafka/demo", vec![garbage]).is_err());
        assert!(
            parse_certificates(Path::new("x.pem"), b"no pem here")
                .unwrap_err()
                .to_string()
                .contains("no CERTIFICATE")
        );
    }

    /// A TLS client of `addr` with `client` (certificate, key PEM), trusting `server_ca`.
    async fn handshake(
        addr: SocketAddr,
        server_ca: &Ca,
        client: Option<&Leaf>,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let mut roots = RootCertStore::empty();
        roots.add(server_ca.der()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match client {
            Some(leaf) => builder
                .with_client_auth_cert(
                    vec![leaf.der.clone()],
                    PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await?;
        // TLS 1.3: the server judges the client's certificate after the client finished; a
        // refusal shows on the first read.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tls.write_all(b"x").await?;
        let mut buf = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(300), tls.read(&mut buf)).await {
            Ok(Err(e)) => Err(e),
            Ok(Ok(0)) => Err(io::Error::other("closed by the server")),
            _ => Ok(tls),
        }
    }

    #[tokio::test]
    async fn handshakes_run_apart_and_time_out() {
        use futures::StreamExt;
        use tokio::io::AsyncReadExt;
        use tonic::transport::server::Connected;
        let (server_ca, client_ca) = (Ca::new("server"), Ca::new("clients"));
        let server = server_ca.leaf(None, true);
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert_path, &server.cert_pem).unwrap();
        std::fs::write(&key_path, &server.key_pem).unwrap();
        let trust = ClientTrust::new(vec![client_ca.der()]).unwrap();
        let tls = ServerTls::new(&cert_path, &key_path, trust).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            tls_handshake_timeout: Duration::from_secs(2),
            ..Limits::default()
        };
        let metrics = Arc::new(XdsMetrics::default());
        let mut conns = Box::pin(incoming(listener, Some(tls), &limits, metrics.clone()));

        // A client that connects and never says hello holds up no one...
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let client = client_ca.leaf(Some(&crate::identity::spiffe_uri("kafka", "demo")), false);
        let accepted = tokio::spawn(async move { conns.next().await.map(|c| (c, conns)) });
        let in_time = Duration::from_secs(1);
        let done = tokio::time::timeout(in_time, handshake(addr, &server_ca, Some(&client))).await;
        let _tls = done.expect("not held up by the silent client").unwrap();
        let (conn, mut conns) = accepted.await.unwrap().unwrap();
        let peer = conn.unwrap().connect_info();
        assert_eq!(
            peer.certificates.unwrap()[0],
            client.der,
            "the handler sees the chain"
        );
        // ...and is closed after the handshake timeout.
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");

        // No certificate, or one from an unknown CA: refused in the handshake and counted.
        assert!(handshake(addr, &server_ca, None).await.is_err());
        let rogue = Ca::new("rogue").leaf(None, false);
        assert!(handshake(addr, &server_ca, Some(&rogue)).await.is_err());
        let counted = |reason| {
            metrics
                .refused_streams
                .get(&crate::metrics::RefusalLabels { reason })
                .map(|c| c.get())
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while counted(RefusalReason::Untrusted).is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "refusals not counted"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(counted(RefusalReason::NoCertificate), Some(1));
        assert_eq!(counted(RefusalReason::Untrusted), Some(1));
        drop(conns.next());
    }

    #[tokio::test]
    async fn in_the_handshake_a_group_ca_vouches_for_its_group_only() {
        let (server_ca, demo_ca) = (Ca::new("server"), Ca::new("demo"));
        let server = server_ca.leaf(None, true);
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert_path, &server.cert_pem).unwrap();
        std::fs::write(&key_path, &server.key_pem).unwrap();
        // No static roots: only what the operator registers vouches.
        let trust = ClientTrust::new(vec![]).unwrap();
        let tls = ServerTls::new(&cert_path, &key_path, trust.clone()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(XdsMetrics::default());
        let _conns = incoming(listener, Some(tls), &Limits::default(), metrics);
        let uri = crate::identity::spiffe_uri;
        let demo = demo_ca.leaf(Some(&uri("kafka", "demo")), false);
        let other = demo_ca.leaf(Some(&uri("kafka", "other")), false);

        assert!(handshake(addr, &server_ca, Some(&demo)).await.is_err());
        trust
            .set_group_roots("kafka/demo", vec![demo_ca.der()])
            .unwrap();
        assert!(handshake(addr, &server_ca, Some(&demo)).await.is_ok());
        assert!(
            handshake(addr, &server_ca, Some(&other)).await.is_err(),
            "demo's CA cannot vouch for kafka/other"
        );
        trust.remove_group("kafka/demo");
        assert!(handshake(addr, &server_ca, Some(&demo)).await.is_err());
    }
}
