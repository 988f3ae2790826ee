//! Pier: a Kafka operator for Kubernetes whose Envoy front door is driven live over xDS.
pub mod admin;
pub mod api;
pub mod controller;
pub mod hash;
pub mod kafka;
pub mod listen;
pub mod model;
pub mod operator;
pub mod reconcile;
pub mod shutdown;
pub mod standalone;
pub mod xds;
