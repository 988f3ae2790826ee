//! The alert contract: what an Alertmanager alert asks Pier to do, read from its labels (then
//! its annotations; a label wins over an annotation of the same name; an empty value counts as
//! absent, as in Prometheus).
//!
//! | name | meaning |
//! | --- | --- |
//! | `namespace`, `kafkacluster` | the KafkaCluster the alert is for |
//! | `pier_action` | `upscale`, `downscale`, `addDisk`, `resizeDisk`, or the name of an action declared in `spec.alerts.actions` |
//! | `config_group` | upscale: the config group of the new brokers; addDisk/resizeDisk: every broker of this group (without `broker_id`) |
//! | `count` | upscale: how many brokers, 1 to 10 (default 1) |
//! | `broker_id` | downscale: this broker (default: the least-loaded one); addDisk/resizeDisk: this broker only |
//! | `size` | addDisk/resizeDisk (required): a Kubernetes quantity, e.g. `100Gi` |
//! | `storage_class` | addDisk: the StorageClass of the new volume |
//! | `mount_path` | addDisk: where the volume is mounted; resizeDisk: which volume (absolute path) |
//! | `pier_blocks_roll` | `"true"`: while it fires, rolling restarts of the cluster pause |
//!
//! An alert with neither `pier_action` nor `pier_blocks_roll` is not for Pier and is ignored;
//! one with either must name its cluster.
use std::collections::BTreeMap;

use crate::alerts::payload::{Alert, AlertStatus, Notification};
use crate::api::VolumeTarget;
use crate::reconcile::alerts::{ActionRequest, AlertRequest, ClusterKey};

pub const NAMESPACE: &str = "namespace";
pub const KAFKACLUSTER: &str = "kafkacluster";
pub const ACTION: &str = "pier_action";
pub const BLOCKS_ROLL: &str = "pier_blocks_roll";
pub const CONFIG_GROUP: &str = "config_group";
pub const COUNT: &str = "count";
pub const BROKER_ID: &str = "broker_id";
pub const SIZE: &str = "size";
pub const STORAGE_CLASS: &str = "storage_class";
pub const MOUNT_PATH: &str = "mount_path";
/// The most brokers one upscale alert may ask for.
pub const MAX_UPSCALE_COUNT: u32 = 10;

/// An alert that is for Pier but does not follow the contract (HTTP 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("alert {alertname:?} (fingerprint {fingerprint}): {problem}")]
pub struct ContractError {
    pub alertname: String,
    pub fingerprint: String,
    pub problem: ContractProblem,
}

/// What is wrong with an alert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractProblem {
    #[error(
        "no `{0}` label: an alert with `pier_action` or `pier_blocks_roll` names its KafkaCluster with the labels `namespace` and `kafkacluster`"
    )]
    NoCluster(&'static str),
    #[error("`{name}` is {value:?}: {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("`{name}` is required for {action}")]
    Missing {
        name: &'static str,
        action: &'static str,
    },
    #[error("{action} needs `broker_id` (one broker) or `config_group` (all brokers of the group)")]
    NoVolumeTarget { action: &'static str },
}

/// A notification's alerts as requests, in order; alerts not for Pier are counted as ignored.
/// The first alert that breaks the contract fails the whole notification.
pub fn requests(notification: &Notification) -> Result<Requests, ContractError> {
    let mut out = Requests::default();
    for alert in &notification.alerts {
        match read(alert)? {
            Some(request) => out.requests.push(request),
            None => out.ignored += 1,
        }
    }
    Ok(out)
}

/// What a notification asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requests {
    pub requests: Vec<AlertRequest>,
    /// Alerts with neither `pier_action` nor `pier_blocks_roll`.
    pub ignored: usize,
}

/// One alert's request; `None` when the alert is not for Pier.
pub fn read(alert: &Alert) -> Result<Option<AlertRequest>, ContractError> {
    let error = |problem| ContractError {
        alertname: alert.alertname().to_string(),
        fingerprint: alert.fingerprint.clone(),
        problem,
    };
    let params = Params {
        labels: &alert.labels,
        annotations: &alert.annotations,
    };
    let action = params.get(ACTION);
    let blocks_roll = params.get(BLOCKS_ROLL);
    if action.is_none() && blocks_roll.is_none() {
        return Ok(None);
    }
    let namespace = params
        .get(NAMESPACE)
        .ok_or_else(|| error(ContractProblem::NoCluster(NAMESPACE)))?;
    let name = params
        .get(KAFKACLUSTER)
        .ok_or_else(|| error(ContractProblem::NoCluster(KAFKACLUSTER)))?;
    let blocks_roll = match blocks_roll {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) => {
            return Err(error(ContractProblem::Invalid {
                name: BLOCKS_ROLL,
                value: v.to_string(),
                expected: "expected \"true\" or \"false\"",
            }));
        }
    };
    let action = action
        .map(|name| params.action(name))
        .transpose()
        .map_err(error)?;
    Ok(Some(AlertRequest {
        cluster: ClusterKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        },
        fingerprint: alert.fingerprint.clone(),
        starts_at: alert.starts_at.clone(),
        alertname: alert.alertname().to_string(),
        firing: alert.status == AlertStatus::Firing,
        blocks_roll,
        action,
        labels: alert.labels.clone(),
        annotations: alert.annotations.clone(),
    }))
}

/// An alert's labels, then its annotations.
struct Params<'a> {
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
}

impl<'a> Params<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        [self.labels, self.annotations]
            .into_iter()
            .find_map(|m| m.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()))
    }

    fn action(&self, name: &str) -> Result<ActionRequest, ContractProblem> {
        Ok(match name {
            "upscale" => ActionRequest::Upscale {
                config_group: self.get(CONFIG_GROUP).map(str::to_string),
                count: match self.get(COUNT) {
                    None => 1,
                    Some(v) => v
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_UPSCALE_COUNT).contains(n))
                        .ok_or_else(|| invalid(COUNT, v, "expected a whole number from 1 to 10"))?,
                },
            },
            "downscale" => ActionRequest::Downscale {
                broker: self.broker_id()?,
            },
            "addDisk" => ActionRequest::AddDisk {
                target: self.volume_target("addDisk")?,
                size: self.size("addDisk")?,
                storage_class: self.storage_class()?,
                mount_path: self.mount_path()?,
            },
            "resizeDisk" => ActionRequest::ResizeDisk {
                target: self.volume_target("resizeDisk")?,
                mount_path: self.mount_path()?,
                size: self.size("resizeDisk")?,
            },
            declared => {
                let valid = declared.len() <= 63
                    && declared.starts_with(|c: char| c.is_ascii_alphabetic())
                    && declared
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !valid {
                    return Err(invalid(
                        ACTION,
                        declared,
                        "expected upscale, downscale, addDisk, resizeDisk or a declared action's name (a letter, then letters, digits, '_' or '-', at most 63)",
                    ));
                }
                ActionRequest::Declared {
                    name: declared.to_string(),
                }
            }
        })
    }

    fn broker_id(&self) -> Result<Option<i32>, ContractProblem> {
        self.get(BROKER_ID)
            .map(|v| {
                v.parse::<i32>().ok().filter(|id| *id >= 0).ok_or_else(|| {
                    invalid(BROKER_ID, v, "expected a broker id (a whole number >= 0)")
                })
            })
            .transpose()
    }

    fn volume_target(&self, action: &'static str) -> Result<VolumeTarget, ContractProblem> {
        if let Some(id) = self.broker_id()? {
            return Ok(VolumeTarget::Broker(id));
        }
        match self.get(CONFIG_GROUP) {
            Some(group) => Ok(VolumeTarget::ConfigGroup(group.to_string())),
            None => Err(ContractProblem::NoVolumeTarget { action }),
        }
    }

    fn size(&self, action: &'static str) -> Result<String, ContractProblem> {
        let size = self
            .get(SIZE)
            .ok_or(ContractProblem::Missing { name: SIZE, action })?;
        match crate::api::quantity_units(size) {
            Some(units) if units > 0 => Ok(size.to_string()),
            _ => Err(invalid(
                SIZE,
                size,
                "expected a positive Kubernetes quantity such as 100Gi",
            )),
        }
    }

    fn storage_class(&self) -> Result<Option<String>, ContractProblem> {
        self.get(STORAGE_CLASS)
            .map(|v| {
                let valid = v.len() <= 253
                    && v.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && v.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && v.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
                    });
                if valid {
                    Ok(v.to_string())
                } else {
                    Err(invalid(
                        STORAGE_CLASS,
                        v,
                        "expected a StorageClass name (lowercase letters, digits, '-' and '.')",
                    ))
                }
            })
            .transpose()
    }

    fn mount_path(&self) -> Result<Option<String>, ContractProblem> {
        self.get(MOUNT_PATH)
            .map(|v| {
                let valid = v.starts_with('/')
                    && !v.contains('\0')
                    && !v.split('/').any(|part| part == "..");
                if valid {
                    Ok(v.to_string())
                } else {
                    Err(invalid(
                        MOUNT_PATH,
                        v,
                        "expected an absolute path without '..'",
                    ))
                }
            })
            .transpose()
    }
}

fn invalid(name: &'static str, value: &str, expected: &'static str) -> ContractProblem {
    ContractProblem::Invalid {
        name,
        value: value.to_string(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Alert {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Alert {
            status: AlertStatus::Firing,
            labels: map(labels),
            annotations: map(annotations),
            starts_at: "2026-11-26T12:16:01.533Z".into(),
            ends_at: "0001-01-01T00:00:00Z".into(),
            generator_url: String::new(),
            fingerprint: "cdd08c7788026298".into(),
        }
    }

    const CLUSTER: [(&str, &str); 3] = [
        ("alertname", "KafkaDiskLow"),
        ("namespace", "kafka"),
        ("kafkacluster", "demo"),
    ];

    fn with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        CLUSTER.iter().chain(extra).copied().collect()
    }

    fn action(extra: &[(&str, &str)]) -> Result<Option<ActionRequest>, ContractProblem> {
        read(&alert(&with(extra), &[]))
            .map(|r| r.and_then(|r| r.action))
            .map_err(|e| e.problem)
    }

    fn problem(extra: &[(&str, &str)]) -> ContractProblem {
        action(extra).unwrap_err()
    }

    #[test]
    fn an_alert_for_someone_else_is_ignored_even_without_cluster_labels() {
        assert_eq!(read(&alert(&[("alertname", "X")], &[])), Ok(None));
        assert_eq!(read(&alert(&CLUSTER, &[("summary", "disk")])), Ok(None));
        // Empty values are absent values.
        assert_eq!(
            read(&alert(
                &[("pier_action", ""), ("pier_blocks_roll", " ")],
                &[]
            )),
            Ok(None)
        );
    }

    #[test]
    fn the_request_carries_the_alerts_identity() {
        let mut a = alert(&with(&[("pier_action", "downscale")]), &[("runbook", "x")]);
        a.status = AlertStatus::Resolved;
        let r = read(&a).unwrap().unwrap();
        assert_eq!(
            r.cluster,
            ClusterKey {
                namespace: "kafka".into(),
                name: "demo".into()
            }
        );
        assert_eq!(r.fingerprint, "cdd08c7788026298");
        assert_eq!(r.starts_at, "2026-11-26T12:16:01.533Z");
        assert_eq!(r.alertname, "KafkaDiskLow");
        assert!(!r.firing);
        assert!(!r.blocks_roll);
        assert_eq!(r.action, Some(ActionRequest::Downscale { broker: None }));
        assert_eq!(r.labels["pier_action"], "downscale");
        assert_eq!(r.annotations["runbook"], "x");
    }

    #[test]
    fn an_alert_for_pier_must_name_its_cluster() {
        let e = read(&alert(
            &[
                ("alertname", "A"),
                ("pier_action", "upscale"),
                ("kafkacluster", "demo"),
            ],
            &[],
        ))
        .unwrap_err();
        assert_eq!(e.problem, ContractProblem::NoCluster("namespace"));
        let text = e.to_string();
        assert!(text.contains("\"A\""), "{text}");
        assert!(text.contains("cdd08c7788026298"), "{text}");
        let e = read(&alert(
            &[("pier_blocks_roll", "true"), ("namespace", "kafka")],
            &[],
        ))
        .unwrap_err();
        assert_eq!(e.problem, ContractProblem::NoCluster("kafkacluster"));
    }

    #[test]
    fn blocks_roll() {
        let r = |v: &str| read(&alert(&with(&[("pier_blocks_roll", v)]), &[]));
        let ok = r("true").unwrap().unwrap();
        assert!(ok.blocks_roll);
        assert_eq!(ok.action, None);
        assert!(r("True").unwrap().unwrap().blocks_roll);
        assert!(!r("false").unwrap().unwrap().blocks_roll);
        assert!(matches!(
            r("yes").unwrap_err().problem,
            ContractProblem::Invalid {
                name: "pier_blocks_roll",
                ..
            }
        ));
        // With an action too.
        let both = read(&alert(
            &with(&[("pier_blocks_roll", "true"), ("pier_action", "upscale")]),
            &[],
        ))
        .unwrap()
        .unwrap();
        assert!(both.blocks_roll);
        assert!(both.action.is_some());
    }

    #[test]
    fn upscale() {
        assert_eq!(
            action(&[("pier_action", "upscale")]),
            Ok(Some(ActionRequest::Upscale {
                config_group: None,
                count: 1
            }))
        );
        assert_eq!(
            action(&[
                ("pier_action", "upscale"),
                ("count", "10"),
                ("config_group", "big")
            ]),
            Ok(Some(ActionRequest::Upscale {
                config_group: Some("big".into()),
                count: 10
            }))
        );
        for bad in ["0", "11", "-1", "two", "1.5", "99999999999"] {
            assert!(
                matches!(
                    problem(&[("pier_action", "upscale"), ("count", bad)]),
                    ContractProblem::Invalid { name: "count", .. }
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn downscale() {
        assert_eq!(
            action(&[("pier_action", "downscale"), ("broker_id", "3")]),
            Ok(Some(ActionRequest::Downscale { broker: Some(3) }))
        );
        for bad in ["-1", "x", "3.0", "2147483648"] {
            assert!(
                matches!(
                    problem(&[("pier_action", "downscale"), ("broker_id", bad)]),
                    ContractProblem::Invalid {
                        name: "broker_id",
                        ..
                    }
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn add_disk() {
        assert_eq!(
            action(&[
                ("pier_action", "addDisk"),
                ("broker_id", "2"),
                ("config_group", "ignored-when-a-broker-is-named"),
                ("size", "100Gi"),
                ("storage_class", "fast-ssd"),
                ("mount_path", "/kafka/data-2"),
            ]),
            Ok(Some(ActionRequest::AddDisk {
                target: VolumeTarget::Broker(2),
                size: "100Gi".into(),
                storage_class: Some("fast-ssd".into()),
                mount_path: Some("/kafka/data-2".into()),
            }))
        );
        assert_eq!(
            action(&[
                ("pier_action", "addDisk"),
                ("config_group", "default"),
                ("size", "1.5Ti")
            ]),
            Ok(Some(ActionRequest::AddDisk {
                target: VolumeTarget::ConfigGroup("default".into()),
                size: "1.5Ti".into(),
                storage_class: None,
                mount_path: None,
            }))
        );
        assert_eq!(
            problem(&[("pier_action", "addDisk"), ("size", "1Gi")]),
            ContractProblem::NoVolumeTarget { action: "addDisk" }
        );
        assert_eq!(
            problem(&[("pier_action", "addDisk"), ("broker_id", "1")]),
            ContractProblem::Missing {
                name: "size",
                action: "addDisk"
            }
        );
        for (name, bad) in [
            ("size", "0"),
            ("size", "-1Gi"),
            ("size", "lots"),
            ("size", "10GB"),
            ("storage_class", "Fast"),
            ("storage_class", "a_b"),
            ("storage_class", "-a"),
            ("mount_path", "relative/path"),
            ("mount_path", "/kafka/../etc"),
        ] {
            let mut params = vec![
                ("pier_action", "addDisk"),
                ("broker_id", "1"),
                ("size", "1Gi"),
            ];
            params.retain(|(k, _)| *k != name);
            params.push((name, bad));
            match problem(&params) {
                ContractProblem::Invalid { name: n, value, .. } => {
                    assert_eq!((n, value.as_str()), (name, bad));
                }
                other => panic!("{name}={bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn resize_disk() {
        assert_eq!(
            action(&[
                ("pier_action", "resizeDisk"),
                ("config_group", "default"),
                ("size", "200Gi"),
                ("mount_path", "/kafka/data"),
            ]),
            Ok(Some(ActionRequest::ResizeDisk {
                target: VolumeTarget::ConfigGroup("default".into()),
                mount_path: Some("/kafka/data".into()),
                size: "200Gi".into(),
            }))
        );
        assert_eq!(
            problem(&[("pier_action", "resizeDisk"), ("broker_id", "0")]),
            ContractProblem::Missing {
                name: "size",
                action: "resizeDisk"
            }
        );
        assert_eq!(
            problem(&[("pier_action", "resizeDisk"), ("size", "2Gi")]),
            ContractProblem::NoVolumeTarget {
                action: "resizeDisk"
            }
        );
    }

    #[test]
    fn any_other_name_is_a_declared_action() {
        assert_eq!(
            action(&[("pier_action", "raiseRetention")]),
            Ok(Some(ActionRequest::Declared {
                name: "raiseRetention".into()
            }))
        );
        assert_eq!(
            action(&[("pier_action", "add-disk")]),
            Ok(Some(ActionRequest::Declared {
                name: "add-disk".into()
            }))
        );
        for bad in ["1up", "a b", "a.b", &"x".repeat(64)] {
            assert!(
                matches!(
                    problem(&[("pier_action", bad)]),
                    ContractProblem::Invalid {
                        name: "pier_action",
                        ..
                    }
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn annotations_fill_in_and_labels_win() {
        // Everything from annotations.
        let a = alert(
            &[("alertname", "A")],
            &[
                ("namespace", "kafka"),
                ("kafkacluster", "demo"),
                ("pier_action", "upscale"),
                ("count", "3"),
            ],
        );
        let r = read(&a).unwrap().unwrap();
        assert_eq!(r.cluster.name, "demo");
        assert_eq!(
            r.action,
            Some(ActionRequest::Upscale {
                config_group: None,
                count: 3
            })
        );
        // A label beats an annotation of the same name; an empty label does not.
        let a = alert(
            &with(&[
                ("pier_action", "upscale"),
                ("count", "2"),
                ("config_group", ""),
            ]),
            &[("count", "5"), ("config_group", "g")],
        );
        assert_eq!(
            read(&a).unwrap().unwrap().action,
            Some(ActionRequest::Upscale {
                config_group: Some("g".into()),
                count: 2
            })
        );
    }

    #[test]
    fn a_notification_fails_on_its_first_bad_alert_and_counts_ignored_ones() {
        let good = alert(&with(&[("pier_action", "upscale")]), &[]);
        let other = alert(&[("alertname", "NotOurs")], &[]);
        let mut bad = alert(&with(&[("pier_action", "upscale"), ("count", "0")]), &[]);
        bad.fingerprint = "bad0".into();
        let mut n = crate::alerts::payload::Notification {
            receiver: "pier".into(),
            status: AlertStatus::Firing,
            alerts: vec![good.clone(), other.clone(), good],
            group_labels: BTreeMap::new(),
            common_labels: BTreeMap::new(),
            common_annotations: BTreeMap::new(),
            external_url: String::new(),
            version: "4".into(),
            group_key: "{}".into(),
            truncated_alerts: 0,
        };
        let r = requests(&n).unwrap();
        assert_eq!((r.requests.len(), r.ignored), (2, 1));
        n.alerts.insert(1, bad);
        assert_eq!(requests(&n).unwrap_err().fingerprint, "bad0");
    }
}
