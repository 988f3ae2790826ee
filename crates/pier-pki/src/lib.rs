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

pub use cert::{
    BACKDATE, CaMaterial, CertInfo, DAY, Issuer, Leaf, LeafRequest, generate_ca, issued_by,
    key_matches, normalize_bundle, parse_bundle,
};
pub use error::{PkiError, Reason, Result};
