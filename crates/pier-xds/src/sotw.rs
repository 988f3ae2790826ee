//! The state-of-the-world ADS protocol for one stream, without I/O: requests and snapshots go
//! in, responses (in push order) and ACK/NACK events come out.
//!
//! Rules kept here (xds_protocol.rst): every response has a version and a fresh nonce; a request
//! whose nonce is not the latest one sent for its type is stale and ignored; ACK and NACK are
//! told apart by `error_detail`; clusters and listeners are wildcard unless named; a response is
//! sent only when what the client subscribed to changed (never the same version again after a
//! NACK); pushes go clusters → endpoints → listeners. Clusters a listener update drops are
//! held (see `subscription`): they stay in the cluster responses, with their endpoints, until
//! the client ACKs the listener update; the version of a response with held clusters ends in
//! `+held`.
//!
//! Endpoints are sent when they changed, when the client subscribes to more of them, and after a
//! cluster it has was updated in place (Envoy warms the new cluster only once its endpoints
//! arrive again, and its EDS request then names nothing new). A cluster that is only added
//! is answered by the client's EDS request naming it, so an update sends endpoints once.
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;

use super::session::{Output, StreamEvent};
use super::subscription::{Reply, StreamState};
use super::wire::SotwResponse;
use super::{ResourceType, Snapshot};

/// One SotW ADS stream.
#[derive(Debug, Default)]
pub struct SotwSession {
    state: StreamState,
    /// Send type t on the next chance even if the client has what it should.
    force: [bool; 3],
}

impl SotwSession {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new snapshot for this stream's group: push what changed.
    pub fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Output<SotwResponse> {
        self.state.set_snapshot(snapshot);
        let mut out = Output::default();
        for t in ResourceType::ALL {
            self.push(t, &mut out);
        }
        self.check_applied(&mut out.events);
        out
    }

    /// A request from the client.
    pub fn on_request(&mut self, req: &DiscoveryRequest) -> Output<SotwResponse> {
        let mut out = Output::default();
        let Some(t) = ResourceType::from_type_url(&req.type_url) else {
            tracing::debug!(type_url = %req.type_url, "ignoring request for a type Pier does not serve");
            return out;
        };
        let error = req.error_detail.as_ref().map(|s| s.message.as_str());
        let reply = self
            .state
            .reply(t, &req.response_nonce, error, &mut out.events);
        if reply == Reply::Stale {
            return out;
        }
        let st = self.state.get_mut(t);
        let change = match st.sub.set(t, &req.resource_names) {
            Ok(change) => change,
            Err(refused) => {
                out.refused = Some(refused);
                return out;
            }
        };
        // The client forgets what it unsubscribed from: a later subscription is answered, and
        // a smaller one needs no response.
        for name in &change.removed {
            st.has.remove(name);
        }
        // A request without a nonce starts (or restarts) a subscription: always answer it.
        if change.grew() || reply == Reply::Initial {
            self.force[t as usize] = true;
        }
        self.push(t, &mut out);
        if t == ResourceType::Listener
            && reply == Reply::Ack
            && !self.state.held().is_empty()
            && self.listeners_settled()
        {
            self.push(ResourceType::Cluster, &mut out);
        }
        self.check_applied(&mut out.events);
        out
    }

    fn pending(&self, t: ResourceType) -> bool {
        self.force[t as usize] || self.state.differs(t)
    }

    fn listeners_settled(&self) -> bool {
        self.state
            .listeners_settled(self.pending(ResourceType::Listener))
    }

    fn check_applied(&mut self, events: &mut Vec<StreamEvent>) {
        let pending = ResourceType::ALL.map(|t| self.pending(t));
        self.state.check_applied(pending, events);
    }

    fn push(&mut self, t: ResourceType, out: &mut Output<SotwResponse>) {
        let Some(snapshot) = self.state.snapshot().cloned() else {
            return;
        };
        if !self.state.get(t).sub.requested() {
            return;
        }
        if t == ResourceType::Cluster {
            let settled = self.listeners_settled();
            self.state.update_hold(settled);
        }
        // Most pushes (one per ACK) find nothing to send: tell so without building the map.
        if !self.force[t as usize] && !self.state.differs(t) {
            return;
        }
        let desired = self.state.desired(t);
        let st = self.state.get(t);
        let mut version = snapshot.get(t).version.clone();
        if t == ResourceType::Cluster && desired.keys().any(|n| self.state.is_held(t, n)) {
            version.push_str("+held");
        }
        if t == ResourceType::Cluster {
            let eds = &self.state.get(ResourceType::Endpoint).sub;
            let updated_in_place = desired.iter().any(|(n, r)| {
                st.has.get(n).is_some_and(|old| old.version != r.version) && eds.contains(n)
            });
            if updated_in_place {
                self.force[ResourceType::Endpoint as usize] = true;
            }
        }
        let nonce = self.state.next_nonce();
        out.responses.push(SotwResponse {
            version_info: version.clone(),
            resources: desired.values().cloned().collect(),
            type_url: t.type_url(),
            nonce: nonce.clone(),
        });
        self.state.sent(t, nonce, version, desired, &mut out.events);
        self.force[t as usize] = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::per_port;
    use crate::translate;
    use envoy_types::pb::google::rpc::Status;

    fn snap(ids: &[i32]) -> Arc<Snapshot> {
        Arc::new(Snapshot::new(translate(&[per_port(ids)]).unwrap()))
    }

    fn req(t: ResourceType, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: t.type_url().into(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn ack(r: &SotwResponse, names: &[&str]) -> DiscoveryRequest {
        let t = ResourceType::from_type_url(r.type_url).unwrap();
        req(t, names, &r.version_info, &r.nonce)
    }

    fn nack(r: &SotwResponse, message: &str) -> DiscoveryRequest {
        let t = ResourceType::from_type_url(r.type_url).unwrap();
        DiscoveryRequest {
            error_detail: Some(Status {
                code: 3,
                message: message.into(),
                details: vec![],
            }),
            ..req(t, &[], "", &r.nonce)
        }
    }

    fn names_of(r: &SotwResponse) -> Vec<String> {
        use envoy_types::pb::envoy::config::cluster::v3::Cluster;
        use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
        use envoy_types::pb::envoy::config::listener::v3::Listener;
        use prost::Message;
        // From the bodies as the client decodes them.
        r.to_proto()
            .resources
            .iter()
            .map(
                |a| match ResourceType::from_type_url(&a.type_url).unwrap() {
                    ResourceType::Cluster => Cluster::decode(a.value.as_slice()).unwrap().name,
                    ResourceType::Endpoint => {
                        ClusterLoadAssignment::decode(a.value.as_slice())
                            .unwrap()
                            .cluster_name
                    }
                    ResourceType::Listener => Listener::decode(a.value.as_slice()).unwrap().name,
                },
            )
            .collect()
    }

    fn types_of(out: &Output<SotwResponse>) -> Vec<ResourceType> {
        out.responses
            .iter()
            .map(|r| ResourceType::from_type_url(r.type_url).unwrap())
            .collect()
    }

    const B: &str = "pier/kafka/demo/external";

    /// A session that went through Envoy's start-up dance: CDS, EDS (names), LDS, all ACKed.
    fn started(ids: &[i32]) -> (SotwSession, Vec<String>) {
        let mut s = SotwSession::new();
        assert!(
            s.on_request(&req(ResourceType::Cluster, &[], "", ""))
                .responses
                .is_empty()
        );
        let out = s.on_snapshot(snap(ids));
        assert_eq!(types_of(&out), [ResourceType::Cluster]);
        let cds = &out.responses[0];
        let clusters = names_of(cds);
        s.on_request(&ack(cds, &[]));
        let eds_names: Vec<&str> = clusters.iter().map(String::as_str).collect();
        let out = s.on_request(&req(ResourceType::Endpoint, &eds_names, "", ""));
        assert_eq!(types_of(&out), [ResourceType::Endpoint]);
        s.on_request(&ack(&out.responses[0], &eds_names));
        let out = s.on_request(&req(ResourceType::Listener, &[], "", ""));
        assert_eq!(types_of(&out), [ResourceType::Listener]);
        let acked = s.on_request(&ack(&out.responses[0], &[]));
        assert!(acked.responses.is_empty());
        (s, clusters)
    }

    #[test]
    fn startup_answers_each_type_once_and_acks_are_events() {
        let mut s = SotwSession::new();
        let out = s.on_request(&req(ResourceType::Cluster, &[], "", ""));
        assert!(out.responses.is_empty(), "nothing to say before a snapshot");
        let out = s.on_snapshot(snap(&[0, 1]));
        let cds = out.responses[0].clone();
        assert_eq!(cds.nonce, "1");
        assert!(!cds.version_info.is_empty());
        assert_eq!(names_of(&cds).len(), 3);
        let out = s.on_request(&ack(&cds, &[]));
        assert!(out.responses.is_empty());
        assert!(matches!(
            &out.events[..],
            [StreamEvent::Acked { type_: ResourceType::Cluster, version, .. }] if *version == cds.version_info
        ));
        let (_, clusters) = started(&[0, 1]);
        assert_eq!(
            clusters,
            [
                format!("{B}/bootstrap"),
                format!("{B}/broker-0"),
                format!("{B}/broker-1")
            ]
        );
    }

    #[test]
    fn an_empty_snapshot_is_still_answered() {
        let mut s = SotwSession::new();
        s.on_snapshot(snap(&[]));
        let out = s.on_request(&req(ResourceType::Listener, &[], "", ""));
        assert_eq!(out.responses.len(), 1);
        assert_eq!(names_of(&out.responses[0]), [format!("{B}/bootstrap")]);
    }

    #[test]
    fn updates_go_clusters_then_endpoints_then_listeners() {
        let (mut s, _) = started(&[0, 1]);
        let out = s.on_snapshot(snap(&[0, 1, 2]));
        assert_eq!(
            types_of(&out),
            [
                ResourceType::Cluster,
                ResourceType::Endpoint,
                ResourceType::Listener
            ]
        );
        let nonces: Vec<u64> = out
            .responses
            .iter()
            .map(|r| r.nonce.parse().unwrap())
            .collect();
        assert!(nonces.windows(2).all(|w| w[0] < w[1]), "fresh nonces");
        assert!(names_of(&out.responses[2]).contains(&format!("{B}/broker-2")));
    }

    #[test]
    fn an_unchanged_snapshot_sends_nothing() {
        let (mut s, _) = started(&[0, 1]);
        assert!(s.on_snapshot(snap(&[0, 1])).responses.is_empty());
    }

    #[test]
    fn stale_nonces_are_ignored() {
        let (mut s, _) = started(&[0]);
        let out = s.on_snapshot(snap(&[0, 1]));
        let lds = out.responses[2].clone();
        let stale = DiscoveryRequest {
            error_detail: Some(Status {
                code: 3,
                message: "old".into(),
                details: vec![],
            }),
            ..req(ResourceType::Listener, &[], "", "1")
        };
        let out = s.on_request(&stale);
        assert!(out.responses.is_empty() && out.events.is_empty());
        let out = s.on_request(&ack(&lds, &[]));
        assert_eq!(out.events.len(), 1);
    }

    #[test]
    fn a_nack_is_reported_and_the_same_config_is_not_resent() {
        let (mut s, _) = started(&[0]);
        let bad = snap(&[0, 1]);
        let out = s.on_snapshot(bad.clone());
        let lds = out.responses[2].clone();
        let out = s.on_request(&nack(&lds, "two listeners on one port"));
        assert!(out.responses.is_empty(), "no resend loop");
        assert_eq!(
            out.events,
            [StreamEvent::Nacked {
                type_: ResourceType::Listener,
                version: lds.version_info.clone(),
                error: "two listeners on one port".into(),
                snapshot: Some(bad.version()),
            }]
        );
        assert!(s.on_snapshot(snap(&[0, 1])).responses.is_empty());
        let out = s.on_snapshot(snap(&[0, 1, 2]));
        assert!(
            types_of(&out).contains(&ResourceType::Listener),
            "a fix is pushed"
        );
    }

    #[test]
    fn clusters_dropped_with_a_listener_are_removed_after_the_listener_update() {
        let (mut s, _) = started(&[0, 1]);
        let out = s.on_snapshot(snap(&[0]));
        // Clusters: the held set is what Envoy already has, so nothing is sent for them yet.
        assert_eq!(
            types_of(&out),
            [ResourceType::Endpoint, ResourceType::Listener]
        );
        assert!(!names_of(&out.responses[1]).contains(&format!("{B}/broker-1")));
        let lds = out.responses[1].clone();
        let out = s.on_request(&ack(&lds, &[]));
        assert_eq!(types_of(&out), [ResourceType::Cluster]);
        assert!(!names_of(&out.responses[0]).contains(&format!("{B}/broker-1")));
        assert!(!out.responses[0].version_info.ends_with("+held"));
    }

    #[test]
    fn held_clusters_are_sent_when_other_clusters_change_too() {
        let (mut s, _) = started(&[0, 1]);
        let mut access = per_port(&[0, 2]);
        access.brokers[1].id = 2;
        let out = s.on_snapshot(Arc::new(Snapshot::new(translate(&[access]).unwrap())));
        assert_eq!(
            types_of(&out),
            [
                ResourceType::Cluster,
                ResourceType::Endpoint,
                ResourceType::Listener
            ]
        );
        let cds = &out.responses[0];
        assert!(names_of(cds).contains(&format!("{B}/broker-1")), "held");
        assert!(names_of(cds).contains(&format!("{B}/broker-2")), "added");
        assert!(cds.version_info.ends_with("+held"));
        assert!(s.on_request(&ack(cds, &[])).responses.is_empty());
        let out = s.on_request(&ack(&out.responses[2], &[]));
        assert_eq!(types_of(&out), [ResourceType::Cluster]);
        assert!(!names_of(&out.responses[0]).contains(&format!("{B}/broker-1")));
    }

    #[test]
    fn named_subscriptions_get_only_what_they_name_and_growth_is_answered() {
        let mut s = SotwSession::new();
        s.on_snapshot(snap(&[0, 1]));
        let one = format!("{B}/broker-0");
        let out = s.on_request(&req(ResourceType::Endpoint, &[&one], "", ""));
        assert_eq!(names_of(&out.responses[0]), std::slice::from_ref(&one));
        let two = format!("{B}/broker-1");
        let out = s.on_request(&ack(&out.responses[0], &[&one, &two]));
        assert_eq!(names_of(&out.responses[0]), [one.clone(), two]);
        // After naming, an empty list unsubscribes from everything: nothing to send for that.
        let last = out.responses[0].clone();
        let out = s.on_request(&ack(&last, &[]));
        assert!(out.responses.is_empty());
        // Subscribing again is answered.
        let out = s.on_request(&ack(&last, &[&one]));
        assert_eq!(names_of(&out.responses[0]), std::slice::from_ref(&one));
    }

    #[test]
    fn a_nacked_listener_update_keeps_the_held_clusters() {
        let (mut s, _) = started(&[0, 1]);
        let out = s.on_snapshot(snap(&[0]));
        let lds = out.responses[1].clone();
        let out = s.on_request(&nack(&lds, "bad address"));
        assert!(
            out.responses.is_empty(),
            "Envoy keeps the old listeners: the clusters they use stay"
        );
        // The next config keeps holding them until its listeners are ACKed.
        let out = s.on_snapshot(snap(&[0, 2]));
        let cds = &out.responses[0];
        assert_eq!(types_of(&out)[0], ResourceType::Cluster);
        assert!(names_of(cds).contains(&format!("{B}/broker-1")), "held");
        assert!(cds.version_info.ends_with("+held"));
        let lds = out.responses.last().unwrap().clone();
        for r in &out.responses[..out.responses.len() - 1] {
            s.on_request(&ack(r, &[]));
        }
        let out = s.on_request(&ack(&lds, &[]));
        assert_eq!(types_of(&out), [ResourceType::Cluster]);
        assert!(!names_of(&out.responses[0]).contains(&format!("{B}/broker-1")));
    }

    #[test]
    fn an_update_sends_endpoints_once() {
        let (mut s, clusters) = started(&[0, 1]);
        // Removing a broker: endpoints once (the bootstrap cluster's members changed) …
        let out = s.on_snapshot(snap(&[0]));
        assert_eq!(
            types_of(&out),
            [ResourceType::Endpoint, ResourceType::Listener]
        );
        let eds = out.responses[0].clone();
        let all: Vec<&str> = clusters.iter().map(String::as_str).collect();
        assert!(s.on_request(&ack(&eds, &all)).responses.is_empty());
        let out = s.on_request(&ack(&out.responses[1], &[]));
        assert_eq!(types_of(&out), [ResourceType::Cluster]);
        assert!(
            s.on_request(&ack(&out.responses[0], &[]))
                .responses
                .is_empty()
        );
        // … and Envoy unsubscribing from the removed cluster's endpoints needs no response.
        let left: Vec<&str> = all
            .iter()
            .copied()
            .filter(|n| !n.ends_with("/broker-1"))
            .collect();
        let out = s.on_request(&ack(&eds, &left));
        assert!(out.responses.is_empty());
        assert!(
            out.events
                .iter()
                .any(|e| matches!(e, StreamEvent::Applied { .. })),
            "in sync"
        );

        // Updating a cluster in place resends its endpoints (Envoy warms it with them) …
        let mut a = per_port(&[0]);
        a.brokers[0].host = "10.0.0.9".into();
        a.idle_timeout = std::time::Duration::from_secs(1);
        let out = s.on_snapshot(Arc::new(Snapshot::new(translate(&[a]).unwrap())));
        assert_eq!(
            types_of(&out),
            [ResourceType::Endpoint, ResourceType::Listener],
            "endpoint-only and listener-only changes"
        );
        // … adding one does not: the client's EDS request naming it is answered.
        let (mut s, clusters) = started(&[0]);
        let out = s.on_snapshot(snap(&[0, 1]));
        assert_eq!(
            types_of(&out),
            [
                ResourceType::Cluster,
                ResourceType::Endpoint,
                ResourceType::Listener
            ]
        );
        let eds = out.responses[1].clone();
        assert_eq!(
            names_of(&eds),
            clusters,
            "only what changed among the subscribed: the bootstrap cluster's members"
        );
    }

    #[test]
    fn unknown_types_are_ignored() {
        let mut s = SotwSession::new();
        s.on_snapshot(snap(&[0]));
        let r = DiscoveryRequest {
            type_url: "type.googleapis.com/envoy.config.route.v3.RouteConfiguration".into(),
            ..Default::default()
        };
        let out = s.on_request(&r);
        assert!(out.responses.is_empty() && out.events.is_empty());
    }
}
