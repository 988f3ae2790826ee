//! Pier's xDS control plane: translation of the external-access model into Envoy resources,
//! a snapshot cache per node group, and the ADS gRPC server (state-of-the-world and delta) that
//! streams them to Envoy. Knows nothing of Kubernetes.
pub mod translate;

pub use translate::{EnvoyResources, translate};
