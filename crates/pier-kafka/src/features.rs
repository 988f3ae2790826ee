//! Cluster feature levels (`metadata.version`, `kraft.version`, …): reading them from a fresh
//! ApiVersions answer and changing them with UpdateFeatures.
use std::collections::BTreeMap;

use kafka_protocol::messages::update_features_request::FeatureUpdateKey;
use kafka_protocol::messages::{ApiVersionsRequest, UpdateFeaturesRequest};
use kafka_protocol::protocol::StrBytes;

use super::{BrokerConnection, KafkaError};

/// The feature Kafka's metadata format is versioned by.
pub const METADATA_VERSION_FEATURE: &str = "metadata.version";
/// The feature telling a static (0, or absent) from a dynamic (1) KRaft quorum.
pub const KRAFT_VERSION_FEATURE: &str = "kraft.version";

/// Feature levels as one node knows them (ApiVersions v3+).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Features {
    /// Finalized (cluster-wide) level per feature. Kafka leaves out features at level 0, so
    /// an absent feature is at level 0 (e.g. `kraft.version` of a static quorum).
    pub finalized: BTreeMap<String, i16>,
    /// `(min, max)` level this node supports per feature.
    pub supported: BTreeMap<String, (i16, i16)>,
    /// Epoch (metadata offset) of the finalized levels; -1 when the node does not know them.
    /// A node that has not caught up with an update yet shows a lower epoch.
    pub finalized_epoch: i64,
}

impl Features {
    /// The finalized level of `feature`, 0 when absent.
    pub fn level(&self, feature: &str) -> i16 {
        self.finalized.get(feature).copied().unwrap_or(0)
    }
}

/// How UpdateFeatures may move a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i8)]
pub enum UpgradeType {
    /// Only to a level at or above the current one.
    Upgrade = 1,
    /// Down, as long as no metadata is lost (for `metadata.version`: no level in between
    /// changed the metadata format).
    SafeDowngrade = 2,
    /// Down, losing metadata; Kafka 4.0 and 4.1 refuse it for `metadata.version`.
    UnsafeDowngrade = 3,
}

/// One change of UpdateFeatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureUpdate {
    pub feature: String,
    /// The new finalized level; below 1 disables the feature.
    pub max_version_level: i16,
    pub upgrade_type: UpgradeType,
}

impl FeatureUpdate {
    pub fn upgrade(feature: &str, level: i16) -> Self {
        FeatureUpdate {
            feature: feature.to_string(),
            max_version_level: level,
            upgrade_type: UpgradeType::Upgrade,
        }
    }

    pub fn safe_downgrade(feature: &str, level: i16) -> Self {
        FeatureUpdate {
            feature: feature.to_string(),
            max_version_level: level,
            upgrade_type: UpgradeType::SafeDowngrade,
        }
    }
}

impl BrokerConnection {
    /// Feature levels from a new ApiVersions request: the answer the connection negotiated
    /// with is not reused, it predates any UpdateFeatures since.
    pub async fn features(&mut self) -> Result<Features, KafkaError> {
        let api = "ApiVersions";
        let version = self.version_for::<ApiVersionsRequest>()?;
        if version < 3 {
            return Err(KafkaError::UnsupportedVersion {
                addr: self.addr().to_string(),
                api: format!("{api} with feature levels"),
                ours: "3..".to_string(),
                theirs: format!("..{version}"),
            });
        }
        let response = self
            .round_trip(&super::connection::api_versions_request(), version)
            .await?;
        KafkaError::check(self.addr(), api, response.error_code, None)?;
        Ok(Features {
            finalized: response
                .finalized_features
                .iter()
                .map(|f| (f.name.to_string(), f.max_version_level))
                .collect(),
            supported: response
                .supported_features
                .iter()
                .map(|f| (f.name.to_string(), (f.min_version, f.max_version)))
                .collect(),
            finalized_epoch: response.finalized_features_epoch,
        })
    }

    /// Changes finalized feature levels (UpdateFeatures v1+; a broker forwards it to the
    /// controller). With `validate_only` the controller only checks the change. Kafka applies
    /// all or nothing: the first refused feature fails the request (INVALID_UPDATE_VERSION,
    /// with Kafka's reason as the message).
    pub async fn update_features(
        &mut self,
        updates: &[FeatureUpdate],
        validate_only: bool,
    ) -> Result<(), KafkaError> {
        let api = "UpdateFeatures";
        let version = self.version_for::<UpdateFeaturesRequest>()?;
        if version < 1 {
            // v0 has neither upgrade types nor validate-only.
            return Err(KafkaError::UnsupportedVersion {
                addr: self.addr().to_string(),
                api: api.to_string(),
                ours: "1..2".to_string(),
                theirs: format!("..{version}"),
            });
        }
        let request = UpdateFeaturesRequest::default()
            .with_timeout_ms(self.operation_timeout_ms())
            .with_validate_only(validate_only)
            .with_feature_updates(
                updates
                    .iter()
                    .map(|u| {
                        FeatureUpdateKey::default()
                            .with_feature(StrBytes::from_string(u.feature.clone()))
                            .with_max_version_level(u.max_version_level)
                            .with_upgrade_type(u.upgrade_type as i8)
                    })
                    .collect(),
            );
        let response = self.round_trip(&request, version).await?;
        KafkaError::check(
            self.addr(),
            api,
            response.error_code,
            response.error_message.as_ref(),
        )?;
        // v0 and v1 also answer per feature (v2 only at the top).
        for result in &response.results {
            KafkaError::check(
                self.addr(),
                &format!("{api} of {}", result.feature.as_str()),
                result.error_code,
                result.error_message.as_ref(),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConnectOptions;
    use crate::connection::testing::{fake_broker, fake_broker_with_api_versions};
    use crate::error::codes;
    use kafka_protocol::messages::api_versions_response::{
        FinalizedFeatureKey, SupportedFeatureKey,
    };
    use kafka_protocol::messages::update_features_response::UpdatableFeatureResult;
    use kafka_protocol::messages::{ApiKey, UpdateFeaturesResponse};
    use std::time::Duration;

    fn quick() -> ConnectOptions {
        ConnectOptions {
            request_timeout: Duration::from_millis(800),
            ..ConnectOptions::default()
        }
    }

    #[tokio::test]
    async fn features_come_from_a_fresh_api_versions_answer() {
        // The n-th ApiVersions answer finalizes metadata.version 20 + n at epoch 100 + n.
        let broker = fake_broker_with_api_versions(
            &[],
            |n, answer| {
                answer
                    .with_finalized_features_epoch(100 + n as i64)
                    .with_finalized_features(vec![
                        FinalizedFeatureKey::default()
                            .with_name(StrBytes::from_static_str(METADATA_VERSION_FEATURE))
                            .with_min_version_level(1)
                            .with_max_version_level(20 + n as i16),
                        FinalizedFeatureKey::default()
                            .with_name(StrBytes::from_static_str(KRAFT_VERSION_FEATURE))
                            .with_min_version_level(1)
                            .with_max_version_level(1),
                    ])
                    .with_supported_features(vec![
                        SupportedFeatureKey::default()
                            .with_name(StrBytes::from_static_str(METADATA_VERSION_FEATURE))
                            .with_min_version(7)
                            .with_max_version(27),
                    ])
            },
            |_| panic!("only ApiVersions"),
        )
        .await;
        let mut conn = BrokerConnection::connect(&broker.addr, quick())
            .await
            .unwrap();
        let first = conn.features().await.unwrap();
        assert_eq!(
            first.level(METADATA_VERSION_FEATURE),
            21,
            "not the connect-time answer"
        );
        assert_eq!(first.finalized_epoch, 101);
        assert_eq!(first.level(KRAFT_VERSION_FEATURE), 1);
        assert_eq!(first.level("group.version"), 0, "absent is level 0");
        assert_eq!(first.supported[METADATA_VERSION_FEATURE], (7, 27));
        let second = conn.features().await.unwrap();
        assert_eq!(
            (
                second.level(METADATA_VERSION_FEATURE),
                second.finalized_epoch
            ),
            (22, 102)
        );
        assert_eq!(broker.api_versions_requests(), 3);
    }

    #[tokio::test]
    async fn features_need_api_versions_v3() {
        let broker = fake_broker_with_api_versions(
            &[],
            |_, answer| {
                let mut answer = answer;
                for k in &mut answer.api_keys {
                    if k.api_key == ApiKey::ApiVersions as i16 {
                        k.max_version = 2;
                    }
                }
                answer
            },
            |_| panic!("only ApiVersions"),
        )
        .await;
        let mut conn = BrokerConnection::connect(&broker.addr, quick())
            .await
            .unwrap();
        let err = conn.features().await.unwrap_err();
        assert!(
            matches!(err, KafkaError::UnsupportedVersion { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("feature levels"), "{err}");
    }

    #[tokio::test]
    async fn update_features_sends_types_levels_and_validate_only() {
        let broker = fake_broker(&[(ApiKey::UpdateFeatures, 2)], |req| {
            assert_eq!(req.version, 2);
            let r: UpdateFeaturesRequest = req.decode();
            assert!(r.validate_only);
            assert!(r.timeout_ms > 0 && r.timeout_ms < 800, "{}", r.timeout_ms);
            let sent: Vec<(String, i16, i8)> = r
                .feature_updates
                .iter()
                .map(|u| (u.feature.to_string(), u.max_version_level, u.upgrade_type))
                .collect();
            assert_eq!(
                sent,
                [
                    ("metadata.version".to_string(), 27, 1),
                    ("group.version".to_string(), 0, 2),
                    ("transaction.version".to_string(), 1, 3),
                ]
            );
            req.respond(&UpdateFeaturesResponse::default())
        })
        .await;
        let mut conn = BrokerConnection::connect(&broker.addr, quick())
            .await
            .unwrap();
        let updates = [
            FeatureUpdate::upgrade(METADATA_VERSION_FEATURE, 27),
            FeatureUpdate::safe_downgrade("group.version", 0),
            FeatureUpdate {
                feature: "transaction.version".into(),
                max_version_level: 1,
                upgrade_type: UpgradeType::UnsafeDowngrade,
            },
        ];
        conn.update_features(&updates, true).await.unwrap();
        assert_eq!(broker.requests(), 1);
    }

    fn refused(top: i16, per_feature: i16) -> UpdateFeaturesResponse {
        let message = |code: i16| (code != 0).then(|| StrBytes::from_static_str("might delete"));
        UpdateFeaturesResponse::default()
            .with_error_code(top)
            .with_error_message(message(top))
            .with_results(vec![
                UpdatableFeatureResult::default()
                    .with_feature(StrBytes::from_static_str("metadata.version"))
                    .with_error_code(per_feature)
                    .with_error_message(message(per_feature)),
            ])
    }

    #[tokio::test]
    async fn update_features_checks_top_level_and_per_feature_errors() {
        for (version, top, per_feature, names_feature) in [
            (2, codes::INVALID_UPDATE_VERSION, 0, false),
            (1, 0, codes::INVALID_UPDATE_VERSION, true),
            (
                1,
                codes::INVALID_UPDATE_VERSION,
                codes::INVALID_UPDATE_VERSION,
                false,
            ),
        ] {
            let broker = fake_broker(&[(ApiKey::UpdateFeatures, version)], move |req| {
                assert_eq!(req.version, version);
                req.respond(&refused(top, per_feature))
            })
            .await;
            let mut conn = BrokerConnection::connect(&broker.addr, quick())
                .await
                .unwrap();
            let err = conn
                .update_features(
                    &[FeatureUpdate::safe_downgrade("metadata.version", 21)],
                    false,
                )
                .await
                .unwrap_err();
            assert_eq!(err.code(), Some(codes::INVALID_UPDATE_VERSION), "{err}");
            assert_eq!(err.broker_message(), Some("might delete"));
            assert!(err.to_string().contains("UpdateFeatures"), "{err}");
            assert_eq!(
                err.to_string().contains("of metadata.version"),
                names_feature,
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn update_features_needs_v1() {
        let broker = fake_broker(&[(ApiKey::UpdateFeatures, 0)], |_| {
            panic!("nothing may be sent")
        })
        .await;
        let mut conn = BrokerConnection::connect(&broker.addr, quick())
            .await
            .unwrap();
        let err = conn
            .update_features(&[FeatureUpdate::upgrade("metadata.version", 27)], false)
            .await
            .unwrap_err();
        assert!(
            matches!(err, KafkaError::UnsupportedVersion { .. }),
            "{err}"
        );
        assert_eq!(broker.requests(), 0);
    }
}
