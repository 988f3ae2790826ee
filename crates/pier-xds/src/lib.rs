//! Pier's xDS control plane: translation of the external-access model into Envoy resources,
//! a snapshot cache per node group, and the ADS gRPC server (state-of-the-world and delta) that
//! streams them to Envoy, in plaintext or over TLS with client certificates whose identity
//! decides the node group a client may read; and [`model`], the external-access model the layers share (the
//! operator's planner builds it too). Knows nothing of Kubernetes: this crate has no `kube` or
//! `k8s-openapi` dependency, so the compiler keeps it that way.
#![forbid(unsafe_code)]

pub mod cache;
pub mod delta;
pub mod hash;
pub mod identity;
pub mod metrics;
pub mod model;
pub mod server;
pub mod session;
#[cfg(test)]
mod session_props;
pub mod snapshot;
pub mod sotw;
pub mod subscription;
pub mod tls;
pub mod translate;
pub mod wire;

pub use cache::{GroupStatus, NodeKey, NodeStatus, SnapshotCache};
pub use server::{AdsServer, Limits, node_group, serve, serve_with};
pub use snapshot::{Resource, ResourceType, Snapshot, TypeSnapshot};
pub use tls::{ClientTrust, ServerTls};
pub use translate::{EnvoyResources, translate};
