//! The one error type of the crate: what went wrong, and where (which Secret, which key, which
//! certificate), so that the message alone tells an operator what to fix.

/// A failure with its context: `"clients CA Secret key ca.key: private key is not PKCS#8 ..."`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{context}: {reason}")]
pub struct PkiError {
    /// Where: the Secret and key, or the certificate being generated.
    pub context: String,
    /// What.
    pub reason: Reason,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// The text holds no `BEGIN CERTIFICATE` block.
    #[error("no PEM certificate found")]
    NoCertificate,
    /// The text is not PEM (bad base64, unbalanced markers).
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// A `CERTIFICATE` block whose DER is not an X.509 certificate.
    #[error("invalid X.509 certificate: {0}")]
    Certificate(String),
    /// The private key could not be read.
    #[error(
        "invalid private key (PKCS#8 `BEGIN PRIVATE KEY` with an ECDSA P-256/P-384, RSA or Ed25519 key expected): {0}"
    )]
    Key(String),
    /// The private key is not the certificate's.
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    /// A CA was expected.
    #[error("the certificate is not a CA (basicConstraints CA:TRUE missing)")]
    NotCa,
    /// rcgen refused to build a certificate (an invalid name, say).
    #[error("cannot generate the certificate: {0}")]
    Generate(String),
    /// A time outside what X.509 can hold.
    #[error("time {0} (unix seconds) is out of range")]
    Time(i64),
}

impl PkiError {
    /// An error at `context`.
    pub fn new(context: impl Into<String>, reason: Reason) -> Self {
        Self {
            context: context.into(),
            reason,
        }
    }

    /// The same error, with an outer context prefixed: `"<outer>: <context>"`.
    #[must_use]
    pub fn within(mut self, outer: impl AsRef<str>) -> Self {
        self.context = format!("{}: {}", outer.as_ref(), self.context);
        self
    }
}

/// This crate's results.
pub type Result<T, E = PkiError> = std::result::Result<T, E>;
