//! The Alertmanager webhook's HTTP side: the notification Alertmanager posts ([`payload`]),
//! what its alerts ask of Pier ([`contract`]), declared actions' templated merge patches
//! ([`template`]) and the authenticated HTTP server that hands a whole notification's requests
//! to an [`server::AlertSink`] ([`server`]). Planning what the requests lead to is
//! `crate::reconcile::alerts`; recording and applying them is the controller's sink. Nothing
//! here knows Kubernetes.
pub mod contract;
pub mod payload;
pub mod server;
pub mod template;

pub use contract::{ContractError, ContractProblem};
pub use payload::{Notification, PayloadError};
pub use server::{AlertSink, AlertsServerConfig, RecordSummary, SinkError};
pub use template::TemplateError;
