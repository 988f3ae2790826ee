//! The security part of a KafkaCluster: its certificate authorities and certificates
//! (`spec.tls`), SCRAM users (`spec.sasl`), configuration values read from Secrets
//! (`configFrom`), and what status says about them.
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Days a Pier-generated CA is valid, unless the spec says otherwise.
pub const DEFAULT_CA_VALIDITY_DAYS: i32 = 1825;
/// Days a broker (or other leaf) certificate is valid, unless the spec says otherwise.
pub const DEFAULT_CERT_VALIDITY_DAYS: i32 = 365;
/// Days before expiry a certificate is renewed, unless the spec says otherwise.
pub const DEFAULT_RENEW_BEFORE_DAYS: i32 = 30;

/// The cluster's PKI. Used as soon as a listener speaks TLS (`SSL` or `SASL_SSL`): Pier then
/// keeps a cluster CA (signs the brokers' and Envoy's certificates) and a clients CA (signs
/// the operator's and users' client certificates) in Secrets, issues every broker a
/// certificate for its in-cluster and external names, and renews them live.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// The CA of the brokers' certificates; Pier generates one unless `secretRef` names yours.
    #[serde(default)]
    #[serde(rename = "clusterCA")]
    pub cluster_ca: CaSpec,
    /// The CA of client certificates (the operator's, users'); generated unless provided.
    #[serde(default)]
    #[serde(rename = "clientsCA")]
    pub clients_ca: CaSpec,
    /// Validity and renewal of the certificates Pier issues.
    #[serde(default)]
    pub certificates: CertificatesSpec,
}

/// A certificate authority.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.renewBeforeDays < self.validityDays").message("renewBeforeDays must be less than validityDays"))]
pub struct CaSpec {
    /// A Secret of yours holding `ca.crt` (every certificate in it is trusted; the first one
    /// issues) and `ca.key` (the first certificate's key). Pier never writes it: renewing it
    /// is yours (keep the old certificate in `ca.crt` while clients move).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Validity of a CA Pier generates.
    #[serde(default = "default_ca_validity")]
    #[schemars(range(min = 2, max = 36500))]
    pub validity_days: i32,
    /// A generated CA is rotated this long before it expires (old and new trusted meanwhile).
    #[serde(default = "default_renew_before")]
    #[schemars(range(min = 1, max = 36499))]
    pub renew_before_days: i32,
}

impl Default for CaSpec {
    fn default() -> Self {
        Self {
            secret_ref: None,
            validity_days: DEFAULT_CA_VALIDITY_DAYS,
            renew_before_days: DEFAULT_RENEW_BEFORE_DAYS,
        }
    }
}

/// Validity and renewal of issued certificates.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.renewBeforeDays < self.validityDays").message("renewBeforeDays must be less than validityDays"))]
pub struct CertificatesSpec {
    #[serde(default = "default_cert_validity")]
    #[schemars(range(min = 2, max = 3650))]
    pub validity_days: i32,
    /// A certificate is re-issued (and reloaded by its broker without a restart) this long
    /// before it expires.
    #[serde(default = "default_renew_before")]
    #[schemars(range(min = 1, max = 3649))]
    pub renew_before_days: i32,
}

impl Default for CertificatesSpec {
    fn default() -> Self {
        Self {
            validity_days: DEFAULT_CERT_VALIDITY_DAYS,
            renew_before_days: DEFAULT_RENEW_BEFORE_DAYS,
        }
    }
}

fn default_ca_validity() -> i32 {
    DEFAULT_CA_VALIDITY_DAYS
}

fn default_cert_validity() -> i32 {
    DEFAULT_CERT_VALIDITY_DAYS
}

fn default_renew_before() -> i32 {
    DEFAULT_RENEW_BEFORE_DAYS
}

/// A Secret in the KafkaCluster's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretRef {
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// One key of a Secret in the KafkaCluster's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretKeyRef {
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// Where a configuration value comes from (the value itself never enters the spec, a
/// ConfigMap or the Pod spec).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigValueFrom {
    pub secret_key_ref: SecretKeyRef,
}

/// Whether a TLS listener asks clients for a certificate.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema, Default,
)]
#[serde(rename_all = "camelCase")]
pub enum ClientAuth {
    /// Any client may connect (it still verifies the broker).
    #[default]
    None,
    /// Clients must present a certificate signed by the clients CA (or the cluster CA: brokers
    /// among themselves).
    Required,
}

impl ClientAuth {
    /// Kafka's `ssl.client.auth` value.
    pub fn kafka_name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Required => "required",
        }
    }
}

/// SASL/SCRAM users Pier keeps in Kafka.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SaslSpec {
    /// SCRAM-SHA-512 credentials, each password read from a Secret; a changed Secret changes
    /// the credential (new connections only; existing sessions stay). A user removed from
    /// this list loses its credential.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.all(u, self.filter(v, v.name == u.name).size() == 1)").message("SCRAM user names must differ"))]
    pub scram_users: Vec<ScramUser>,
}

/// One SCRAM-SHA-512 user.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScramUser {
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9._@-]+$"))]
    pub name: String,
    pub password_secret_ref: SecretKeyRef,
}

/// What Pier reports about the cluster's certificates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsStatus {
    /// The cluster and clients CAs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cas: Vec<CaStatus>,
    /// Each certificate Pier issued, by Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateStatus>,
    /// The earliest expiry of any of them (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earliest_expiry: Option<String>,
}

/// A CA: which one issues, which are trusted, and where a rotation stands.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaStatus {
    /// `cluster` or `clients`.
    pub kind: String,
    /// Serial (hex) of the issuing CA certificate.
    pub serial: String,
    /// Its expiry (RFC 3339).
    pub not_after: String,
    /// Serials of every trusted CA certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted: Vec<String>,
    /// Rotation step: empty when none runs, else `trust-both`, `reissue` or `drop-old`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// Whether the CA is yours (`secretRef`).
    #[serde(default)]
    pub provided: bool,
}

/// One issued certificate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    pub secret: String,
    pub serial: String,
    pub not_after: String,
    /// Whether its owner serves (has loaded) this certificate; false right after a renewal
    /// until the broker reloaded it.
    pub served: bool,
    /// Why it is not served yet, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}
