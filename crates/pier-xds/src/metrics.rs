//! Prometheus metrics of the xDS server.
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub group: String,
}

/// Why a stream was refused or cut: a fixed set, never a client's string.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum RefusalReason {
    UnknownGroup,
    TooManyStreams,
    TooManyWaiting,
    FirstRequestTimeout,
    BadNode,
    SubscriptionLimit,
    /// TLS: the client presented no certificate (refused in the handshake).
    NoCertificate,
    /// TLS: the client's certificate names no Pier identity (see `crate::identity`).
    UnknownIdentity,
    /// TLS: the node group asked for is not the one the client's certificate names.
    GroupMismatch,
    /// TLS: the client's certificate chain is not trusted (refused in the handshake).
    Untrusted,
    /// TLS: too many handshakes in progress; the connection was closed before its handshake.
    TooManyHandshakes,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub reason: RefusalReason,
}

type HistogramFamily = Family<TypeLabels, Histogram, fn() -> Histogram>;

/// Counters and histograms the server updates as streams come and go.
#[derive(Debug)]
pub struct XdsMetrics {
    pub connected_streams: Family<GroupLabels, Gauge>,
    pub snapshot_updates: Family<GroupLabels, Counter>,
    /// When each group's current snapshot was set, in seconds since the Unix epoch.
    pub snapshot_set_time: Family<GroupLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub responses: Family<TypeLabels, Counter>,
    pub acks: Family<TypeLabels, Counter>,
    pub nacks: Family<TypeLabels, Counter>,
    pub ack_latency: HistogramFamily,
    pub refused_streams: Family<RefusalLabels, Counter>,
    /// The series of each type (index: `ResourceType as usize`), looked up once.
    per_type: [TypeSeries; 3],
}

/// One resource type's series of the families above, shared with them: every stream counts
/// a response and an ACK per type and update, which then costs an atomic add, not a label
/// lookup under the family's lock.
#[derive(Debug, Clone)]
pub(crate) struct TypeSeries {
    pub responses: Counter,
    pub acks: Counter,
    pub nacks: Counter,
    pub ack_latency: Histogram,
}

impl Default for XdsMetrics {
    fn default() -> Self {
        fn latency() -> Histogram {
            // 1 ms … ~33 s
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        }
        let responses: Family<TypeLabels, Counter> = Family::default();
        let acks: Family<TypeLabels, Counter> = Family::default();
        let nacks: Family<TypeLabels, Counter> = Family::default();
        let ack_latency: HistogramFamily = Family::new_with_constructor(latency);
        // Every type's series exists from the start, at zero: a counter with no sample is
        // absent from a scrape, so `increase(pier_xds_nacks_total[5m]) > 0` could not tell
        // "none" from "not scraped", and the first NACK would be a series appearing, not an
        // increase.
        let per_type = super::ResourceType::ALL.map(|t| {
            let labels = Self::type_labels(t);
            TypeSeries {
                responses: responses.get_or_create(&labels).clone(),
                acks: acks.get_or_create(&labels).clone(),
                nacks: nacks.get_or_create(&labels).clone(),
                ack_latency: ack_latency.get_or_create(&labels).clone(),
            }
        });
        Self {
            connected_streams: Family::default(),
            snapshot_updates: Family::default(),
            snapshot_set_time: Family::default(),
            responses,
            acks,
            nacks,
            ack_latency,
            refused_streams: Family::default(),
            per_type,
        }
    }
}

impl XdsMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pier_xds_connected_streams",
            "Open ADS streams per node group",
            self.connected_streams.clone(),
        );
        registry.register(
            "pier_xds_snapshot_updates",
            "Snapshots that changed a node group's config",
            self.snapshot_updates.clone(),
        );
        registry.register(
            "pier_xds_snapshot_set_timestamp_seconds",
            "When each node group's current snapshot was set (Unix time): the start of its fan-out",
            self.snapshot_set_time.clone(),
        );
        registry.register(
            "pier_xds_responses",
            "Discovery responses sent, per type",
            self.responses.clone(),
        );
        registry.register(
            "pier_xds_acks",
            "ACKs received, per type",
            self.acks.clone(),
        );
        registry.register(
            "pier_xds_nacks",
            "NACKs (rejected configs) received, per type",
            self.nacks.clone(),
        );
        registry.register(
            "pier_xds_ack_latency_seconds",
            "From a snapshot being built to an Envoy ACKing it, per type",
            self.ack_latency.clone(),
        );
        registry.register(
            "pier_xds_refused_streams",
            "Streams refused or ended by a limit, per reason",
            self.refused_streams.clone(),
        );
    }

    pub(crate) fn refused(&self, reason: RefusalReason) {
        self.refused_streams
            .get_or_create(&RefusalLabels { reason })
            .inc();
    }

    #[cfg(test)]
    fn text(&self) -> String {
        let mut registry = Registry::default();
        self.register(&mut registry);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// The series of type `t`.
    pub(crate) fn of_type(&self, t: super::ResourceType) -> &TypeSeries {
        &self.per_type[t as usize]
    }

    pub(crate) fn type_labels(t: super::ResourceType) -> TypeLabels {
        TypeLabels {
            r#type: t.short().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_and_nacks_exist_at_zero_before_any_envoy() {
        let text = XdsMetrics::default().text();
        for t in ["cluster", "endpoint", "listener"] {
            for family in ["pier_xds_acks_total", "pier_xds_nacks_total"] {
                let line = format!("{family}{{type=\"{t}\"}} 0");
                assert!(text.contains(&line), "{line} in\n{text}");
            }
        }
    }
}
