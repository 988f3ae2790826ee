//! The Alertmanager webhook notification (payload version 4), parsed with errors that say what
//! is wrong and where: not JSON, another version, a missing or mistyped field, an alert without
//! its identity (`fingerprint`, `startsAt`) or with an unknown status. One notification carries
//! the alerts of one alert group; each alert has its own status.
use std::collections::BTreeMap;

use serde::Deserialize;

/// The only payload version Pier reads.
pub const PAYLOAD_VERSION: &str = "4";

/// One webhook notification.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub receiver: String,
    /// The group's status: `firing` while any of its alerts fires.
    pub status: AlertStatus,
    pub alerts: Vec<Alert>,
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    pub version: String,
    pub group_key: String,
    /// Alerts the receiver's `max_alerts` left out of `alerts`.
    #[serde(default)]
    pub truncated_alerts: u64,
}

/// One alert of a notification.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339; with `fingerprint`, the alert's identity.
    pub starts_at: String,
    /// `0001-01-01T00:00:00Z` while firing.
    #[serde(default)]
    pub ends_at: String,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

impl Alert {
    /// The `alertname` label, or `""`.
    pub fn alertname(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

/// Whether an alert (or a group) fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// Why a request body is not a notification Pier reads (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body is not a JSON object")]
    NotAnObject,
    #[error("missing field `version`")]
    NoVersion,
    #[error("payload version {0:?} is not supported (Pier reads version \"4\")")]
    Version(String),
    #[error("{0}")]
    Notification(String),
    #[error("alert {index}: {reason}")]
    Alert { index: usize, reason: String },
}

/// Parses a webhook request body.
pub fn parse(body: &[u8]) -> Result<Notification, PayloadError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| PayloadError::NotJson(e.to_string()))?;
    let serde_json::Value::Object(mut object) = value else {
        return Err(PayloadError::NotAnObject);
    };
    match object.get("version") {
        None => return Err(PayloadError::NoVersion),
        Some(serde_json::Value::String(v)) if v == PAYLOAD_VERSION => {}
        Some(serde_json::Value::String(v)) => return Err(PayloadError::Version(v.clone())),
        Some(other) => return Err(PayloadError::Version(other.to_string())),
    }
    // Each alert on its own, so that an error names the alert.
    let alerts = match object.remove("alerts") {
        Some(serde_json::Value::Array(alerts)) => alerts,
        Some(_) => {
            return Err(PayloadError::Notification(
                "field `alerts` is not a list".into(),
            ));
        }
        None => return Err(PayloadError::Notification("missing field `alerts`".into())),
    };
    object.insert("alerts".into(), serde_json::Value::Array(Vec::new()));
    let mut notification: Notification = serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|e| PayloadError::Notification(e.to_string()))?;
    notification.alerts = alerts
        .into_iter()
        .enumerate()
        .map(|(index, alert)| {
            let alert: Alert = serde_json::from_value(alert).map_err(|e| PayloadError::Alert {
                index,
                reason: e.to_string(),
            })?;
            let empty = |reason: &str| PayloadError::Alert {
                index,
                reason: reason.to_string(),
            };
            if alert.fingerprint.trim().is_empty() {
                return Err(empty("empty `fingerprint`"));
            }
            if alert.starts_at.trim().is_empty() {
                return Err(empty("empty `startsAt`"));
            }
            Ok(alert)
        })
        .collect::<Result<_, _>>()?;
    Ok(notification)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The notification Alertmanager 0.25 sent (docs: kafka-ops.md §5).
    fn sample() -> serde_json::Value {
        json!({"receiver": "pier", "status": "firing",
         "alerts": [{"status": "firing",
                     "labels": {"alertname": "KafkaBrokerDiskLow", "namespace": "kafka", "kafkacluster": "demo", "broker_id": "2"},
                     "annotations": {"pier_action": "addDisk"},
                     "startsAt": "2026-11-26T12:16:01.533Z", "endsAt": "0001-01-01T00:00:00Z",
                     "generatorURL": "http://prometheus:19090/graph?g0.expr=x", "fingerprint": "cdd08c7788026298"}],
         "groupLabels": {"alertname": "KafkaBrokerDiskLow"},
         "commonLabels": {"alertname": "KafkaBrokerDiskLow", "namespace": "kafka"},
         "commonAnnotations": {}, "externalURL": "http://alertmanager:19095",
         "version": "4", "groupKey": "{}:{alertname=\"KafkaBrokerDiskLow\"}", "truncatedAlerts": 0})
    }

    fn parse_value(v: &serde_json::Value) -> Result<Notification, PayloadError> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn alertmanagers_notification_parses() {
        let n = parse_value(&sample()).unwrap();
        assert_eq!(n.receiver, "pier");
        assert_eq!(n.status, AlertStatus::Firing);
        assert_eq!(n.version, "4");
        assert_eq!(n.external_url, "http://alertmanager:19095");
        assert_eq!(n.group_labels["alertname"], "KafkaBrokerDiskLow");
        assert_eq!(n.truncated_alerts, 0);
        let a = &n.alerts[0];
        assert_eq!(a.status, AlertStatus::Firing);
        assert_eq!(a.fingerprint, "cdd08c7788026298");
        assert_eq!(a.starts_at, "2026-11-26T12:16:01.533Z");
        assert_eq!(a.ends_at, "0001-01-01T00:00:00Z");
        assert_eq!(a.generator_url, "http://prometheus:19090/graph?g0.expr=x");
        assert_eq!(a.alertname(), "KafkaBrokerDiskLow");
        assert_eq!(a.annotations["pier_action"], "addDisk");
    }

    #[test]
    fn optional_parts_may_be_missing_and_unknown_fields_are_ignored() {
        let mut v = sample();
        let o = v.as_object_mut().unwrap();
        for k in [
            "groupLabels",
            "commonLabels",
            "commonAnnotations",
            "externalURL",
            "truncatedAlerts",
        ] {
            o.remove(k);
        }
        o.insert("somethingNew".into(), json!(1));
        let a = v["alerts"][0].as_object_mut().unwrap();
        a.remove("annotations");
        a.remove("endsAt");
        a.remove("generatorURL");
        let n = parse_value(&v).unwrap();
        assert!(n.alerts[0].annotations.is_empty());
        let mut v = sample();
        v["alerts"] = json!([]);
        assert!(parse_value(&v).unwrap().alerts.is_empty());
    }

    #[test]
    fn not_json_or_not_an_object() {
        assert!(matches!(parse(b"{"), Err(PayloadError::NotJson(_))));
        assert!(matches!(parse(b""), Err(PayloadError::NotJson(_))));
        assert!(matches!(parse(b"\xff\xfe"), Err(PayloadError::NotJson(_))));
        assert_eq!(parse(b"[1]"), Err(PayloadError::NotAnObject));
        assert_eq!(parse(b"\"4\""), Err(PayloadError::NotAnObject));
        let e = parse(b"{\"version\": ").unwrap_err().to_string();
        assert!(e.starts_with("the body is not JSON: "), "{e}");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn only_version_4() {
        let mut v = sample();
        v["version"] = json!("3");
        let e = parse_value(&v).unwrap_err();
        assert_eq!(e, PayloadError::Version("3".into()));
        assert!(e.to_string().contains("\"3\" is not supported"), "{e}");
        v["version"] = json!(4);
        assert_eq!(parse_value(&v), Err(PayloadError::Version("4".into())));
        v.as_object_mut().unwrap().remove("version");
        assert_eq!(parse_value(&v), Err(PayloadError::NoVersion));
    }

    #[test]
    fn missing_or_mistyped_fields_are_named() {
        let mut v = sample();
        v.as_object_mut().unwrap().remove("alerts");
        assert_eq!(
            parse_value(&v).unwrap_err().to_string(),
            "missing field `alerts`"
        );
        v["alerts"] = json!({});
        assert_eq!(
            parse_value(&v).unwrap_err().to_string(),
            "field `alerts` is not a list"
        );
        let mut v = sample();
        v.as_object_mut().unwrap().remove("groupKey");
        assert!(
            parse_value(&v)
                .unwrap_err()
                .to_string()
                .contains("missing field `groupKey`")
        );
        let mut v = sample();
        v["status"] = json!("pending");
        let e = parse_value(&v).unwrap_err().to_string();
        assert!(e.contains("unknown variant `pending`"), "{e}");
        let mut v = sample();
        v["commonLabels"] = json!({"a": 1});
        assert!(matches!(
            parse_value(&v),
            Err(PayloadError::Notification(_))
        ));
    }

    #[test]
    fn an_alert_without_its_identity_or_with_an_unknown_status_is_named() {
        for (field, value, expect) in [
            ("fingerprint", None, "alert 1: missing field `fingerprint`"),
            ("startsAt", None, "alert 1: missing field `startsAt`"),
            ("labels", None, "alert 1: missing field `labels`"),
            ("status", None, "alert 1: missing field `status`"),
            (
                "fingerprint",
                Some(json!(" ")),
                "alert 1: empty `fingerprint`",
            ),
            ("startsAt", Some(json!("")), "alert 1: empty `startsAt`"),
            ("fingerprint", Some(json!(7)), "alert 1: invalid type"),
            (
                "status",
                Some(json!("active")),
                "alert 1: unknown variant `active`",
            ),
            ("labels", Some(json!(["a"])), "alert 1: invalid type"),
        ] {
            let mut v = sample();
            let second = v["alerts"][0].clone();
            v["alerts"].as_array_mut().unwrap().push(second);
            let alert = v["alerts"][1].as_object_mut().unwrap();
            match value {
                None => {
                    alert.remove(field);
                }
                Some(value) => {
                    alert.insert(field.into(), value);
                }
            }
            let e = parse_value(&v).unwrap_err();
            assert!(matches!(e, PayloadError::Alert { index: 1, .. }), "{e:?}");
            assert!(e.to_string().starts_with(expect), "{field}: {e}");
        }
    }

    #[test]
    fn resolved_alerts_parse() {
        let mut v = sample();
        v["status"] = json!("resolved");
        v["alerts"][0]["status"] = json!("resolved");
        v["alerts"][0]["endsAt"] = json!("2026-11-26T12:20:01.533Z");
        let n = parse_value(&v).unwrap();
        assert_eq!(n.alerts[0].status, AlertStatus::Resolved);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_fail_without_panicking(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse(&body);
        }

        #[test]
        fn any_alert_labels_read_or_fail_without_panicking(
            labels in proptest::collection::btree_map(
                "(namespace|kafkacluster|pier_action|pier_blocks_roll|count|broker_id|size|storage_class|mount_path|config_group|alertname)",
                "(upscale|downscale|addDisk|resizeDisk|true|1|-1|10Gi|/a|..|x y|é|\\u{1F4A5}|)",
                0..11,
            )
        ) {
            let mut v = sample();
            v["alerts"][0]["labels"] = serde_json::to_value(&labels).unwrap();
            let n = parse_value(&v).unwrap();
            if let Ok(Some(request)) = crate::alerts::contract::read(&n.alerts[0]) {
                proptest::prop_assert!(!request.cluster.namespace.is_empty());
                proptest::prop_assert!(!request.cluster.name.is_empty());
            }
        }
    }
}
