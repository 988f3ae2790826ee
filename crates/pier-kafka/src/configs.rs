//! Broker and topic configuration: DescribeConfigs and IncrementalAlterConfigs, in Pier's own
//! types. Never the legacy AlterConfigs, which replaces a resource's whole dynamic config.
//!
//! A [`ConfigResource::Broker`] or [`ConfigResource::BrokerLogger`] must be sent to that very
//! broker (any other answers INVALID_REQUEST); [`ConfigResource::BrokerDefault`] (the
//! cluster-wide default, resource name "") and topics may go to any broker.
use std::collections::BTreeMap;
use std::fmt;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{DescribeConfigsRequest, IncrementalAlterConfigsRequest};
use kafka_protocol::protocol::StrBytes;

use super::error::codes::UNKNOWN_TOPIC_OR_PARTITION;
use super::{BrokerConnection, KafkaError};

/// What a config belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConfigResource {
    /// One broker's own settings (static and per-broker dynamic).
    Broker(i32),
    /// The cluster-wide dynamic default for every broker (resource name "").
    BrokerDefault,
    Topic(String),
    /// One broker's log4j logger levels.
    BrokerLogger(i32),
}

impl ConfigResource {
    /// Kafka's resource type code.
    pub fn resource_type(&self) -> i8 {
        match self {
            ConfigResource::Broker(_) | ConfigResource::BrokerDefault => 4,
            ConfigResource::Topic(_) => 2,
            ConfigResource::BrokerLogger(_) => 8,
        }
    }

    /// Kafka's resource name.
    pub fn resource_name(&self) -> String {
        match self {
            ConfigResource::Broker(id) | ConfigResource::BrokerLogger(id) => id.to_string(),
            ConfigResource::BrokerDefault => String::new(),
            ConfigResource::Topic(name) => name.clone(),
        }
    }

    /// The broker that must answer for this resource, if it has to be a particular one.
    pub fn node(&self) -> Option<i32> {
        match self {
            ConfigResource::Broker(id) | ConfigResource::BrokerLogger(id) => Some(*id),
            ConfigResource::BrokerDefault | ConfigResource::Topic(_) => None,
        }
    }
}

impl fmt::Display for ConfigResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigResource::Broker(id) => write!(f, "broker {id}"),
            ConfigResource::BrokerDefault => write!(f, "cluster-wide broker default"),
            ConfigResource::Topic(name) => write!(f, "topic {name}"),
            ConfigResource::BrokerLogger(id) => write!(f, "loggers of broker {id}"),
        }
    }
}

/// Where a config value comes from (Kafka's `ConfigSource`, same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigSource {
    DynamicTopicConfig,
    /// Set dynamically for this broker.
    DynamicBrokerConfig,
    /// Set dynamically as the cluster-wide default.
    DynamicDefaultBrokerConfig,
    /// From `server.properties`.
    StaticBrokerConfig,
    /// Kafka's built-in default.
    DefaultConfig,
    DynamicBrokerLoggerConfig,
    ClientMetricsConfig,
    GroupConfig,
    /// A code this client does not know (0 is Kafka's own UNKNOWN).
    Unknown(i8),
}

impl ConfigSource {
    pub fn from_code(code: i8) -> Self {
        match code {
            1 => ConfigSource::DynamicTopicConfig,
            2 => ConfigSource::DynamicBrokerConfig,
            3 => ConfigSource::DynamicDefaultBrokerConfig,
            4 => ConfigSource::StaticBrokerConfig,
            5 => ConfigSource::DefaultConfig,
            6 => ConfigSource::DynamicBrokerLoggerConfig,
            7 => ConfigSource::ClientMetricsConfig,
            8 => ConfigSource::GroupConfig,
            other => ConfigSource::Unknown(other),
        }
    }

    pub fn code(self) -> i8 {
        match self {
            ConfigSource::DynamicTopicConfig => 1,
            ConfigSource::DynamicBrokerConfig => 2,
            ConfigSource::DynamicDefaultBrokerConfig => 3,
            ConfigSource::StaticBrokerConfig => 4,
            ConfigSource::DefaultConfig => 5,
            ConfigSource::DynamicBrokerLoggerConfig => 6,
            ConfigSource::ClientMetricsConfig => 7,
            ConfigSource::GroupConfig => 8,
            ConfigSource::Unknown(code) => code,
        }
    }
}

/// Another name (or level) that sets the same config, highest precedence first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSynonym {
    pub name: String,
    pub value: Option<String>,
    pub source: ConfigSource,
}

/// One config of a resource as the broker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    /// `None` when unset or sensitive.
    pub value: Option<String>,
    /// For a broker: this exact name cannot be updated dynamically.
    pub read_only: bool,
    pub source: ConfigSource,
    pub sensitive: bool,
    /// Only when asked for ([`DescribeConfigsOptions::include_synonyms`]).
    pub synonyms: Vec<ConfigSynonym>,
}

/// What DescribeConfigs should return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribeConfigsOptions {
    /// Only these keys; `None` for all.
    pub keys: Option<Vec<String>>,
    pub include_synonyms: bool,
}

impl DescribeConfigsOptions {
    /// Every key, with synonyms.
    pub fn with_synonyms() -> Self {
        DescribeConfigsOptions {
            keys: None,
            include_synonyms: true,
        }
    }

    /// Only the given keys.
    pub fn keys<S: AsRef<str>>(keys: &[S]) -> Self {
        DescribeConfigsOptions {
            keys: Some(keys.iter().map(|k| k.as_ref().to_string()).collect()),
            include_synonyms: false,
        }
    }
}

/// One change of an IncrementalAlterConfigs call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigOp {
    pub key: String,
    pub op: ConfigOpKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOpKind {
    /// Sets the value at this resource's level.
    Set(String),
    /// Removes the value at this resource's level (the next level down applies again).
    Delete,
    /// Adds an entry to a list config (e.g. a topic's throttled replicas) unless present.
    Append(String),
}

impl ConfigOp {
    pub fn set(key: impl Into<String>, value: impl Into<String>) -> Self {
        ConfigOp {
            key: key.into(),
            op: ConfigOpKind::Set(value.into()),
        }
    }

    pub fn delete(key: impl Into<String>) -> Self {
        ConfigOp {
            key: key.into(),
            op: ConfigOpKind::Delete,
        }
    }

    pub fn append(key: impl Into<String>, value: impl Into<String>) -> Self {
        ConfigOp {
            key: key.into(),
            op: ConfigOpKind::Append(value.into()),
        }
    }
}

const DESCRIBE: &str = "DescribeConfigs";

/// Pier's entries from an answer's, sorted by name.
fn entries(configs: Vec<DescribeConfigsResourceResult>) -> Vec<ConfigEntry> {
    let mut entries: Vec<ConfigEntry> = configs
        .into_iter()
        .map(|c| ConfigEntry {
            name: c.name.to_string(),
            value: c.value.map(|v| v.to_string()),
            read_only: c.read_only,
            source: ConfigSource::from_code(c.config_source),
            sensitive: c.is_sensitive,
            synonyms: c
                .synonyms
                .into_iter()
                .map(|s| ConfigSynonym {
                    name: s.name.to_string(),
                    value: s.value.map(|v| v.to_string()),
                    source: ConfigSource::from_code(s.source),
                })
                .collect(),
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries
}
const ALTER: &str = "IncrementalAlterConfigs";

impl BrokerConnection {
    /// Every config of one resource, sorted by name, without synonyms. This must be the
    /// resource's broker for [`ConfigResource::Broker`] and [`ConfigResource::BrokerLogger`].
    pub async fn describe_configs(
        &mut self,
        resource: &ConfigResource,
    ) -> Result<Vec<ConfigEntry>, KafkaError> {
        self.describe_configs_with(resource, &DescribeConfigsOptions::default())
            .await
    }

    /// The configs of one resource, sorted by name, as `options` ask (some keys only,
    /// synonyms).
    pub async fn describe_configs_with(
        &mut self,
        resource: &ConfigResource,
        options: &DescribeConfigsOptions,
    ) -> Result<Vec<ConfigEntry>, KafkaError> {
        let request = DescribeConfigsRequest::default()
            .with_include_synonyms(options.include_synonyms)
            .with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(resource.resource_type())
                    .with_resource_name(StrBytes::from_string(resource.resource_name()))
                    .with_configuration_keys(options.keys.as_ref().map(|keys| {
                        keys.iter()
                            .map(|k| StrBytes::from_string(k.clone()))
                            .collect()
                    })),
            ]);
        let response = self.send(&request).await?;
        let result = self.resource_result(DESCRIBE, resource, response.results, |r| {
            (
                r.resource_type,
                r.resource_name.as_str(),
                r.error_code,
                r.error_message.as_ref(),
            )
        })?;
        Ok(entries(result.configs))
    }

    /// Some configs (all when `keys` is empty) of many topics in one request, by topic. A
    /// topic deleted meanwhile is left out; any other error of a topic fails the call (the answer would be incomplete).
    pub async fn describe_topic_configs(
        &mut self,
        topics: &[String],
        keys: &[String],
    ) -> Result<BTreeMap<String, Vec<ConfigEntry>>, KafkaError> {
        let topic_type = ConfigResource::Topic(String::new()).resource_type();
        let request = DescribeConfigsRequest::default().with_resources(
            topics
                .iter()
                .map(|t| {
                    DescribeConfigsResource::default()
                        .with_resource_type(topic_type)
                        .with_resource_name(StrBytes::from_string(t.clone()))
                        // No keys: all of them (null, as Kafka reads an empty list
                        // differently across versions).
                        .with_configuration_keys((!keys.is_empty()).then(|| {
                            keys.iter()
                                .map(|k| StrBytes::from_string(k.clone()))
                                .collect()
                        }))
                })
                .collect(),
        );
        let response = self.send(&request).await?;
        let mut out = BTreeMap::new();
        for r in response.results {
            let topic = r.resource_name.to_string();
            match r.error_code {
                0 => {
                    out.insert(topic, entries(r.configs));
                }
                UNKNOWN_TOPIC_OR_PARTITION => {}
                code => {
                    let resource = ConfigResource::Topic(topic);
                    return Err(self.resource_error(DESCRIBE, &resource, code, r.error_message));
                }
            }
        }
        Ok(out)
    }

    /// Sets and deletes configs of one resource, leaving every other config as it is. With
    /// `validate_only` the broker checks the change without applying it. This must be the
    /// resource's broker for [`ConfigResource::Broker`] and [`ConfigResource::BrokerLogger`].
    pub async fn incremental_alter_configs(
        &mut self,
        resource: &ConfigResource,
        ops: &[ConfigOp],
        validate_only: bool,
    ) -> Result<(), KafkaError> {
        let request = IncrementalAlterConfigsRequest::default()
            .with_validate_only(validate_only)
            .with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(resource.resource_type())
                    .with_resource_name(StrBytes::from_string(resource.resource_name()))
                    .with_configs(
                        ops.iter()
                            .map(|op| {
                                let (code, value) = match &op.op {
                                    ConfigOpKind::Set(v) => {
                                        (0, Some(StrBytes::from_string(v.clone())))
                                    }
                                    ConfigOpKind::Delete => (1, None),
                                    ConfigOpKind::Append(v) => {
                                        (2, Some(StrBytes::from_string(v.clone())))
                                    }
                                };
                                AlterableConfig::default()
                                    .with_name(StrBytes::from_string(op.key.clone()))
                                    .with_config_operation(code)
                                    .with_value(value)
                            })
                            .collect(),
                    ),
            ]);
        let response = self.send(&request).await?;
        self.resource_result(ALTER, resource, response.responses, |r| {
            (
                r.resource_type,
                r.resource_name.as_str(),
                r.error_code,
                r.error_message.as_ref(),
            )
        })?;
        Ok(())
    }

    /// The answer's entry for `resource` (`fields` gives an entry's type, name, error code and
    /// message), or the error it carries, or a malformed-answer error when there is none.
    fn resource_result<T>(
        &self,
        api: &str,
        resource: &ConfigResource,
        results: Vec<T>,
        fields: impl Fn(&T) -> (i8, &str, i16, Option<&StrBytes>),
    ) -> Result<T, KafkaError> {
        let name = resource.resource_name();
        let result = results
            .into_iter()
            .find(|r| {
                let (type_, n, _, _) = fields(r);
                type_ == resource.resource_type() && n == name
            })
            .ok_or_else(|| {
                KafkaError::malformed(self.addr(), api, format!("no result for {resource}"))
            })?;
        let (_, _, code, message) = fields(&result);
        if code != 0 {
            return Err(self.resource_error(api, resource, code, message.cloned()));
        }
        Ok(result)
    }

    fn resource_error(
        &self,
        api: &str,
        resource: &ConfigResource,
        code: i16,
        message: Option<StrBytes>,
    ) -> KafkaError {
        let message = match message {
            Some(m) if !m.is_empty() => format!("{resource}: {}", m.as_str()),
            _ => resource.to_string(),
        };
        KafkaError::broker(self.addr(), api, code, Some(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConnectOptions;
    use crate::connection::testing::{Reply, fake_broker};
    use kafka_protocol::messages::describe_configs_response::{
        DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
    };
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    use kafka_protocol::messages::{
        ApiKey, DescribeConfigsResponse, IncrementalAlterConfigsResponse,
    };
    use std::time::Duration;

    fn quick() -> ConnectOptions {
        ConnectOptions {
            request_timeout: Duration::from_millis(500),
            ..ConnectOptions::default()
        }
    }

    fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_string())
    }

    fn describe_answer(error_code: i16) -> DescribeConfigsResponse {
        DescribeConfigsResponse::default().with_results(vec![
            DescribeConfigsResult::default()
                .with_error_code(error_code)
                .with_error_message((error_code != 0).then(|| s("odd")))
                .with_resource_type(4)
                .with_resource_name(s("2"))
                .with_configs(vec![
                    DescribeConfigsResourceResult::default()
                        .with_name(s("num.io.threads"))
                        .with_value(Some(s("8")))
                        .with_config_source(2)
                        .with_synonyms(vec![
                            DescribeConfigsSynonym::default()
                                .with_name(s("num.io.threads"))
                                .with_value(Some(s("8")))
                                .with_source(2),
                            DescribeConfigsSynonym::default()
                                .with_name(s("num.io.threads"))
                                .with_value(Some(s("2")))
                                .with_source(4),
                        ]),
                    DescribeConfigsResourceResult::default()
                        .with_name(s("log.dirs"))
                        .with_value(Some(s("/data")))
                        .with_read_only(true)
                        .with_config_source(42),
                    DescribeConfigsResourceResult::default()
                        .with_name(s("ssl.key.password"))
                        .with_value(None)
                        .with_is_sensitive(true)
                        .with_config_source(5),
                ]),
        ])
    }

    #[tokio::test]
    async fn describe_configs_maps_entries_sources_and_synonyms() {
        let broker = fake_broker(&[(ApiKey::DescribeConfigs, 4)], |req| {
            let r: DescribeConfigsRequest = req.decode();
            assert!(r.include_synonyms);
            assert_eq!(r.resources[0].resource_type, 4);
            assert_eq!(r.resources[0].resource_name.as_str(), "2");
            assert_eq!(r.resources[0].configuration_keys, None);
            req.respond(&describe_answer(0))
        })
        .await;
        let mut conn = BrokerConnection::connect(&broker.addr, quick())
            .await
            .unwrap();
        let entries = conn
            .describe_configs_with(
                &ConfigResource::Broker(2),
                &DescribeConfigsOptions::with_synonyms(),
            )
            .await
            .unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["log.dirs", "num.io.threads", "ssl.key.password"]);
        assert!(entries[0].read_only);
        assert_eq!(entries[0].source, ConfigSource::Unknown(42));
        assert_eq!(entries[1].source, ConfigSource::DynamicBrokerConfig);
        assert_eq!(entries[1].synonyms.len(), 2);
        assert_eq!(
            entries[1].synonyms[1].source,
            ConfigSource::StaticBrokerConfig
        );
        assert_eq!(entries[1].synonyms[1].value.as_deref(), Some("2"));
        assert!(entries[2].sensitive);
        assert_eq!(entries[2].value, None);
    }

    #[tokio::test]
    async fn an_unknown_error_code_is_a_clear_final_error() {
        let broker = fake_broker(&[(ApiKey::DescribeConfigs, 4)], |req| {
            req.respond(&describe_answer(9999))
        })
        .await;
        let mut conn = BrokerConnection::connect(&broker.addr, quick())
            .await
            .unwrap();
        let err = conn
            .describe_configs(&ConfigResource::Broker(2))
            .await
            .unwrap_err();
        let text = err.to_string();
        for part in [
            broker.addr.as_str(),
            "DescribeConfigs",
            "9999",
            "broker 2: odd",
        ] {
            assert!(text.contains(part), "{text}");
        }
        assert!(!err.is_retriable());
        assert!(
            !conn.is_broken(),
            "a well-formed answer keeps the connection"
        );
    }

    #[tokio::test]
    async fn an_answer_for_another_resource_is_malformed() {
        let broker = fake_broker(&[(ApiKey::DescribeConfigs, 4)], |req| {
            req.respond(&describe_answer(0))
        })
        .await;
        let mut conn = BrokerConnection::connect(&broker.addr, quick())
            .await
            .unwrap();
        let err = conn
            .describe_configs(&ConfigResource::Broker(3))
            .await
            .unwrap_err();
        assert!(matches!(err, KafkaError::Decode { .. }), "{err}");
        assert!(err.to_string().contains("no result for broker 3"), "{err}");
    }

    #[tokio::test]
    async fn a_truncated_answer_is_a_decode_error() {
        let broker = fake_broker(&[(ApiKey::DescribeConfigs, 4)], |req| {
            let Reply::Body(full) = req.respond(&describe_answer(0)) else {
                unreachable!()
            };
            Reply::Body(full[..full.len() - 10].to_vec())
        })
        .await;
        let mut conn = BrokerConnection::connect(&broker.addr, quick())
            .await
            .unwrap();
        let err = conn
            .describe_configs(&ConfigResource::Broker(2))
            .await
            .unwrap_err();
        assert!(matches!(err, KafkaError::Decode { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("malformed DescribeConfigs response"),
            "{err}"
        );
        assert!(err.to_string().contains(&broker.addr), "{err}");
    }

    #[tokio::test]
    async fn incremental_alter_sends_set_and_delete_and_reports_kafkas_message() {
        let broker = fake_broker(&[(ApiKey::IncrementalAlterConfigs, 1)], |req| {
            let r: IncrementalAlterConfigsRequest = req.decode();
            assert!(r.validate_only);
            let res = &r.resources[0];
            assert_eq!((res.resource_type, res.resource_name.as_str()), (4, ""));
            let ops: Vec<(String, i8, Option<String>)> = res
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        c.config_operation,
                        c.value.as_ref().map(|v| v.to_string()),
                    )
                })
                .collect();
            assert_eq!(
                ops,
                [
                    ("a".to_string(), 0, Some("1".to_string())),
                    ("b".to_string(), 1, None)
                ]
            );
            req.respond(&IncrementalAlterConfigsResponse::default().with_responses(vec![
                AlterConfigsResourceResponse::default()
                    .with_resource_type(4)
                    .with_resource_name(s(""))
                    .with_error_code(42)
                    .with_error_message(Some(s(
                        "Cannot update these configs at default cluster level, broker id must be specified: Set(a)",
                    ))),
            ]))
        })
        .await;
        let mut conn = BrokerConnection::connect(&broker.addr, quick())
            .await
            .unwrap();
        let err = conn
            .incremental_alter_configs(
                &ConfigResource::BrokerDefault,
                &[ConfigOp::set("a", "1"), ConfigOp::delete("b")],
                true,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(42));
        assert!(!err.is_retriable());
        let text = err.to_string();
        assert!(text.contains("IncrementalAlterConfigs"), "{text}");
        assert!(text.contains("InvalidRequest"), "{text}");
        assert!(text.contains("broker id must be specified"), "{text}");
    }

    #[test]
    fn resources_name_themselves_as_kafka_does() {
        assert_eq!(ConfigResource::BrokerDefault.resource_name(), "");
        assert_eq!(ConfigResource::BrokerDefault.resource_type(), 4);
        assert_eq!(ConfigResource::Broker(3).resource_name(), "3");
        assert_eq!(ConfigResource::Broker(3).node(), Some(3));
        assert_eq!(ConfigResource::BrokerLogger(3).resource_type(), 8);
        assert_eq!(ConfigResource::Topic("t".into()).resource_type(), 2);
        assert_eq!(ConfigResource::Topic("t".into()).node(), None);
        for code in 0..10 {
            assert_eq!(ConfigSource::from_code(code).code(), code);
        }
    }
}
