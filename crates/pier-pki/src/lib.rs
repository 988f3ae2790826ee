//! Pier's PKI: the cluster and clients CAs of a KafkaCluster, the leaf certificates they issue
//! (brokers, Envoy, the operator's and users' clients), and the renewal planner that decides,
//! from the Secrets' current contents, what to issue, rotate and write.
//!
//! Pure: knows nothing of Kubernetes or Kafka and does no I/O. The operator reads the Secrets,
//! calls [`plan`], writes what the plan says, and reports whether brokers serve the new
//! certificates. Randomness (keys, serials) is the only thing that is not a function of the input.
#![forbid(unsafe_code)]

mod cert;
mod error;
mod plan;

pub use cert::{
    BACKDATE, CaMaterial, CertInfo, DAY, Issuer, Leaf, LeafRequest, generate_ca, issued_by,
    key_matches, normalize_bundle, parse_bundle,
};
pub use error::{PkiError, Reason, Result};
pub use plan::{
    CA_CRT, CA_KEY, CA_OLD_CRT, CA_OLD_KEY, CaInput, CaKind, CaPhase, CaSource, CaStatus, KEYSTORE,
    LeafInput, LeafStatus, PHASE, PkiInput, PkiPlan, PkiStatus, SecretData, SecretRole,
    SecretWrite, Served, TLS_CRT, TLS_KEY, TRUSTSTORE, normalize_serial, plan,
};
