//! Pier: a Kafka operator for Kubernetes whose Envoy front door is driven live over xDS.
//!
//! The layers that know nothing of Kubernetes are crates of their own (`crates/pier-xds` with
//! the shared `model`, `crates/pier-kafka`, `crates/pier-balance`), re-exported here.
#![forbid(unsafe_code)]

pub mod admin;
pub mod alerts;
pub mod api;
pub mod controller;
pub mod listen;
pub mod operator;
pub mod random;
pub mod reconcile;
pub mod shutdown;
pub mod standalone;

pub use pier_balance as balance;
pub use pier_kafka as kafka;
pub use pier_xds as xds;
pub use pier_xds::{hash, model};
