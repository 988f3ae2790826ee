//! Immutable, shareable snapshots of one node group's Envoy resources, with a content hash per
//! resource and a version per type derived from those hashes: the same resources always give the
//! same versions (also across restarts), so nothing is resent when nothing changed.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::Resource as PbResource;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use prost::Message;
use prost::bytes::Bytes;

use super::translate::EnvoyResources;

/// The resource types Pier serves, in the order ADS pushes them: clusters before their
/// endpoints, both before the listeners that use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Cluster,
    Endpoint,
    Listener,
}

impl ResourceType {
    pub const ALL: [ResourceType; 3] = [Self::Cluster, Self::Endpoint, Self::Listener];

    pub fn type_url(self) -> &'static str {
        match self {
            Self::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Self::Endpoint => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            Self::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
        }
    }

    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Short name for logs, metrics and status.
    pub fn short(self) -> &'static str {
        match self {
            Self::Cluster => "cluster",
            Self::Endpoint => "endpoint",
            Self::Listener => "listener",
        }
    }

    /// Envoy subscribes to every cluster and listener (wildcard), and to endpoints by name.
    pub fn wildcard_by_default(self) -> bool {
        !matches!(self, Self::Endpoint)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One named resource, packed and hashed, and encoded once for every stream that gets it
/// (see [`crate::wire`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub name: String,
    /// Content hash, hex: the resource's version in delta xDS.
    pub version: String,
    pub body: Any,
    /// `body` encoded: an entry of a SotW response's `resources`.
    pub wire_any: Bytes,
    /// `envoy.service.discovery.v3.Resource` (name, version, body) encoded: an entry of a
    /// delta response's `resources`.
    pub wire_delta: Bytes,
}

impl Resource {
    pub fn new(name: String, body: Any) -> Self {
        let wire_any = Bytes::from(body.encode_to_vec());
        let version = crate::hash::hex(&wire_any);
        let mut r = Self {
            name,
            version,
            body,
            wire_any,
            wire_delta: Bytes::new(),
        };
        r.wire_delta = Bytes::from(r.delta_proto().encode_to_vec());
        r
    }

    /// A resource a delta client says it has (`initial_resource_versions`): only its name and
    /// version are known, never sent.
    pub fn known_version(name: String, version: String) -> Self {
        Self {
            name,
            version,
            body: Any::default(),
            wire_any: Bytes::new(),
            wire_delta: Bytes::new(),
        }
    }

    /// This resource as a delta response carries it.
    pub fn delta_proto(&self) -> PbResource {
        PbResource {
            name: self.name.clone(),
            version: self.version.clone(),
            resource: Some(self.body.clone()),
            ..Default::default()
        }
    }
}

/// The resources of one type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeSnapshot {
    /// Hash of every (name, version) pair: the type's version_info in SotW.
    pub version: String,
    pub resources: BTreeMap<String, Arc<Resource>>,
}

impl TypeSnapshot {
    fn new(resources: impl IntoIterator<Item = Resource>) -> Self {
        let resources: BTreeMap<String, Arc<Resource>> = resources
            .into_iter()
            .map(|r| (r.name.clone(), Arc::new(r)))
            .collect();
        let mut digest = Vec::new();
        for (name, r) in &resources {
            digest.extend_from_slice(name.as_bytes());
            digest.push(0);
            digest.extend_from_slice(r.version.as_bytes());
            digest.push(0);
        }
        Self {
            version: crate::hash::hex(&digest),
            resources,
        }
    }
}

/// Everything one node group gets, at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    types: [TypeSnapshot; 3],
    /// `<clusters>-<endpoints>-<listeners>` (see [`Snapshot::version`]).
    version: String,
    /// Increases with every snapshot built in this process; tells snapshots apart in logs.
    pub serial: u64,
    /// When it was built: the start of the update → ACK latency.
    pub created: Instant,
}

impl Snapshot {
    pub fn new(resources: EnvoyResources) -> Self {
        static SERIAL: AtomicU64 = AtomicU64::new(1);
        let clusters = resources
            .clusters
            .into_iter()
            .map(|c| Resource::new(c.name.clone(), pack_any(c)));
        let endpoints = resources
            .endpoints
            .into_iter()
            .map(|e| Resource::new(e.cluster_name.clone(), pack_any(e)));
        let listeners = resources
            .listeners
            .into_iter()
            .map(|l| Resource::new(l.name.clone(), pack_any(l)));
        let types = [
            TypeSnapshot::new(clusters),
            TypeSnapshot::new(endpoints),
            TypeSnapshot::new(listeners),
        ];
        let version = types
            .iter()
            .map(|t| &t.version[..8])
            .collect::<Vec<_>>()
            .join("-");
        Self {
            types,
            version,
            serial: SERIAL.fetch_add(1, Ordering::Relaxed),
            created: Instant::now(),
        }
    }

    pub fn get(&self, t: ResourceType) -> &TypeSnapshot {
        &self.types[t.index()]
    }

    /// `<clusters>-<endpoints>-<listeners>` versions: one string for "which config is this".
    pub fn version(&self) -> String {
        self.version.clone()
    }

    /// [`Snapshot::version`] without a copy.
    pub fn version_str(&self) -> &str {
        &self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::per_port;
    use crate::translate;

    fn snap(ids: &[i32]) -> Snapshot {
        Snapshot::new(translate(&[per_port(ids)]).unwrap())
    }

    #[test]
    fn type_urls_round_trip() {
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::from_type_url(t.type_url()), Some(t));
        }
        assert_eq!(ResourceType::from_type_url("type.googleapis.com/x"), None);
        assert!(ResourceType::Cluster < ResourceType::Endpoint);
        assert!(ResourceType::Endpoint < ResourceType::Listener);
    }

    #[test]
    fn same_resources_same_versions() {
        let (a, b) = (snap(&[0, 1]), snap(&[0, 1]));
        assert_ne!(a.serial, b.serial);
        assert_eq!(a.version(), b.version());
        for t in ResourceType::ALL {
            assert_eq!(a.get(t), b.get(t));
        }
    }

    #[test]
    fn a_new_broker_changes_versions_of_what_changed_only() {
        let (a, b) = (snap(&[0, 1]), snap(&[0, 1, 2]));
        for t in ResourceType::ALL {
            assert_ne!(a.get(t).version, b.get(t).version, "{t:?}");
        }
        let name = "pier/kafka/demo/external/broker-0";
        assert_eq!(
            a.get(ResourceType::Listener).resources[name].version,
            b.get(ResourceType::Listener).resources[name].version,
            "an untouched broker's listener keeps its version"
        );
    }
}
