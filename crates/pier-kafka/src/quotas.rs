//! Client quotas of one user (DescribeClientQuotas, AlterClientQuotas). Any broker answers:
//! DescribeClientQuotas from its own copy of the metadata (a moment behind the controller),
//! AlterClientQuotas forwarded to the controller.
//!
//! Only the quotas of the user entity alone (`user=<name>`) are read and changed, not those of
//! a user together with a client id, nor the `<default>` user's.
use std::collections::BTreeMap;

use kafka_protocol::messages::alter_client_quotas_request::{self, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::{AlterClientQuotasRequest, DescribeClientQuotasRequest};
use kafka_protocol::protocol::StrBytes;

use super::{BrokerConnection, KafkaError};

const DESCRIBE: &str = "DescribeClientQuotas";
const ALTER: &str = "AlterClientQuotas";

/// Kafka's entity type of a user's quotas.
const USER_ENTITY: &str = "user";
/// DescribeClientQuotas match type: the entity name given, exactly.
const MATCH_EXACT: i8 = 0;

/// The quota keys Kafka knows for users.
pub mod quota_keys {
    /// Bytes per second a user may produce, per broker.
    pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
    /// Bytes per second a user may fetch, per broker.
    pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
    /// Percent of one request handler and network thread a user may keep busy, per broker.
    pub const REQUEST_PERCENTAGE: &str = "request_percentage";
    /// Partitions per second a user may create or delete (topic and partition creations and
    /// deletions).
    pub const CONTROLLER_MUTATION_RATE: &str = "controller_mutation_rate";
    /// All of the above.
    pub const ALL: [&str; 4] = [
        PRODUCER_BYTE_RATE,
        CONSUMER_BYTE_RATE,
        REQUEST_PERCENTAGE,
        CONTROLLER_MUTATION_RATE,
    ];
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn user_arg(api: &str, user: &str) -> Result<(), KafkaError> {
    if user.is_empty() {
        return Err(KafkaError::invalid_argument(api, "the user name is empty"));
    }
    Ok(())
}

fn describe_request(user: &str) -> DescribeClientQuotasRequest {
    DescribeClientQuotasRequest::default()
        .with_components(vec![
            ComponentData::default()
                .with_entity_type(StrBytes::from_static_str(USER_ENTITY))
                .with_match_type(MATCH_EXACT)
                .with_match(Some(text(user))),
        ])
        // Strict: the user entity alone, not (user, client-id) pairs naming it.
        .with_strict(true)
}

/// The operations of one alteration, or why none can be sent: an empty key, a key both set
/// and removed, a value that is not a finite number ≥ 0.
fn alter_ops(set: &BTreeMap<String, f64>, remove: &[String]) -> Result<Vec<OpData>, String> {
    let mut ops = Vec::new();
    for (key, value) in set {
        if key.is_empty() {
            return Err("a quota key is empty".to_string());
        }
        if !value.is_finite() || *value < 0.0 {
            return Err(format!("{key} = {value}: not a finite number ≥ 0"));
        }
        if remove.contains(key) {
            return Err(format!("{key} is both set and removed"));
        }
        ops.push(
            OpData::default()
                .with_key(text(key))
                .with_value(*value)
                .with_remove(false),
        );
    }
    for key in remove {
        if key.is_empty() {
            return Err("a quota key is empty".to_string());
        }
        ops.push(OpData::default().with_key(text(key)).with_remove(true));
    }
    Ok(ops)
}

impl BrokerConnection {
    /// The quotas set for `user` itself, by key (empty when none is set).
    pub async fn describe_client_quotas(
        &mut self,
        user: &str,
    ) -> Result<BTreeMap<String, f64>, KafkaError> {
        user_arg(DESCRIBE, user)?;
        let response = self.send(&describe_request(user)).await?;
        KafkaError::check(
            self.addr(),
            DESCRIBE,
            response.error_code,
            response.error_message.as_ref(),
        )?;
        let mut quotas = BTreeMap::new();
        for entry in response.entries.into_iter().flatten() {
            // Strict matching leaves only this entity; checked so that a broker answering
            // otherwise cannot lend someone else's quotas to this user.
            let this_user = matches!(entry.entity.as_slice(), [e]
                if e.entity_type.as_str() == USER_ENTITY
                    && e.entity_name.as_deref() == Some(user));
            if !this_user {
                continue;
            }
            for value in entry.values {
                quotas.insert(value.key.to_string(), value.value);
            }
        }
        Ok(quotas)
    }

    /// Sets the quotas in `set` and removes those named in `remove` for `user` itself, in one
    /// request (all or nothing); keys not named keep their value. Kafka refuses unknown keys
    /// and values of the wrong kind (INVALID_REQUEST); a key both set and removed, an empty
    /// key or a value that is not a finite number ≥ 0 fail before sending. Nothing to change
    /// sends nothing.
    pub async fn alter_client_quotas(
        &mut self,
        user: &str,
        set: &BTreeMap<String, f64>,
        remove: &[String],
    ) -> Result<(), KafkaError> {
        user_arg(ALTER, user)?;
        let ops = alter_ops(set, remove).map_err(|reason| {
            KafkaError::invalid_argument(ALTER, format!("user {user}: {reason}"))
        })?;
        if ops.is_empty() {
            return Ok(());
        }
        let entity = alter_client_quotas_request::EntityData::default()
            .with_entity_type(StrBytes::from_static_str(USER_ENTITY))
            .with_entity_name(Some(text(user)));
        let request = AlterClientQuotasRequest::default()
            .with_validate_only(false)
            .with_entries(vec![
                alter_client_quotas_request::EntryData::default()
                    .with_entity(vec![entity])
                    .with_ops(ops),
            ]);
        let response = self.send(&request).await?;
        let entry = response
            .entries
            .into_iter()
            .find(|e| {
                e.entity.iter().any(|d| {
                    d.entity_type.as_str() == USER_ENTITY && d.entity_name.as_deref() == Some(user)
                })
            })
            .ok_or_else(|| {
                KafkaError::malformed(self.addr(), ALTER, format!("no result for user {user}"))
            })?;
        if entry.error_code != 0 {
            let message = entry
                .error_message
                .filter(|m| !m.is_empty())
                .map_or_else(|| format!("user {user}"), |m| format!("user {user}: {m}"));
            return Err(KafkaError::broker(
                self.addr(),
                ALTER,
                entry.error_code,
                Some(message),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::testing::fake_broker;
    use crate::{ConnectOptions, codes};
    use kafka_protocol::messages::describe_client_quotas_response::{
        EntityData, EntryData, ValueData,
    };
    use kafka_protocol::messages::{
        AlterClientQuotasResponse, ApiKey, DescribeClientQuotasResponse,
        alter_client_quotas_response,
    };
    use std::time::Duration;

    fn set(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn the_keys_are_kafkas() {
        assert_eq!(
            quota_keys::ALL,
            [
                "producer_byte_rate",
                "consumer_byte_rate",
                "request_percentage",
                "controller_mutation_rate"
            ]
        );
    }

    #[test]
    fn describe_asks_for_the_user_entity_alone() {
        let r = describe_request("alice");
        assert!(r.strict);
        assert_eq!(r.components.len(), 1);
        let c = &r.components[0];
        assert_eq!(
            (c.entity_type.as_str(), c.match_type, c._match.as_deref()),
            ("user", 0, Some("alice"))
        );
    }

    #[test]
    fn ops_set_then_remove_and_refuse_contradictions() {
        let ops = alter_ops(
            &set(&[("request_percentage", 50.0), ("producer_byte_rate", 1024.0)]),
            &["consumer_byte_rate".to_string()],
        )
        .unwrap();
        let got: Vec<(&str, f64, bool)> = ops
            .iter()
            .map(|o| (o.key.as_str(), o.value, o.remove))
            .collect();
        assert_eq!(
            got,
            [
                ("producer_byte_rate", 1024.0, false),
                ("request_percentage", 50.0, false),
                ("consumer_byte_rate", 0.0, true),
            ]
        );
        assert_eq!(alter_ops(&BTreeMap::new(), &[]).unwrap().len(), 0);
        for (s, r, reason) in [
            (
                set(&[("a", 1.0)]),
                vec!["a".to_string()],
                "both set and removed",
            ),
            (set(&[("", 1.0)]), vec![], "empty"),
            (set(&[]), vec![String::new()], "empty"),
            (set(&[("a", f64::NAN)]), vec![], "finite"),
            (set(&[("a", f64::INFINITY)]), vec![], "finite"),
            (set(&[("a", -1.0)]), vec![], "≥ 0"),
        ] {
            let err = alter_ops(&s, &r).unwrap_err();
            assert!(err.contains(reason), "{s:?} {r:?}: {err}");
        }
    }

    fn quick() -> ConnectOptions {
        ConnectOptions {
            request_timeout: Duration::from_secs(2),
            ..ConnectOptions::default()
        }
    }

    #[tokio::test]
    async fn describe_keeps_only_this_users_own_quotas() {
        let broker = fake_broker(&[(ApiKey::DescribeClientQuotas, 1)], |req| {
            if req.index == 1 {
                return req.respond(&DescribeClientQuotasResponse::default().with_entries(None));
            }
            if req.index == 2 {
                return req.respond(
                    &DescribeClientQuotasResponse::default()
                        .with_error_code(codes::INVALID_REQUEST)
                        .with_error_message(Some(StrBytes::from_static_str("bad"))),
                );
            }
            let entity = |pairs: &[(&'static str, Option<&'static str>)]| {
                pairs
                    .iter()
                    .map(|(t, n)| {
                        EntityData::default()
                            .with_entity_type(StrBytes::from_static_str(t))
                            .with_entity_name(n.map(StrBytes::from_static_str))
                    })
                    .collect()
            };
            let value = |k: &'static str, v: f64| {
                ValueData::default()
                    .with_key(StrBytes::from_static_str(k))
                    .with_value(v)
            };
            req.respond(
                &DescribeClientQuotasResponse::default().with_entries(Some(vec![
                    EntryData::default()
                        .with_entity(entity(&[("user", Some("alice"))]))
                        .with_values(vec![
                            value("producer_byte_rate", 1024.0),
                            value("request_percentage", 25.0),
                        ]),
                    EntryData::default()
                        .with_entity(entity(&[("user", Some("alice")), ("client-id", Some("x"))]))
                        .with_values(vec![value("producer_byte_rate", 1.0)]),
                    EntryData::default()
                        .with_entity(entity(&[("user", Some("bob"))]))
                        .with_values(vec![value("consumer_byte_rate", 2.0)]),
                ])),
            )
        })
        .await;
        let mut conn = BrokerConnection::connect(&broker.addr, quick())
            .await
            .unwrap();
        let quotas = conn.describe_client_quotas("alice").await.unwrap();
        assert_eq!(
            quotas,
            set(&[("producer_byte_rate", 1024.0), ("request_percentage", 25.0)])
        );
        assert!(
            conn.describe_client_quotas("alice")
                .await
                .unwrap()
                .is_empty()
        );
        let err = conn.describe_client_quotas("alice").await.unwrap_err();
        assert_eq!(err.code(), Some(codes::INVALID_REQUEST));
        let err = conn.describe_client_quotas("").await.unwrap_err();
        assert!(matches!(err, KafkaError::InvalidArgument { .. }), "{err}");
        assert_eq!(broker.requests(), 3);
    }

    #[tokio::test]
    async fn alter_sends_one_entry_and_names_the_user_in_errors() {
        let broker = fake_broker(&[(ApiKey::AlterClientQuotas, 1)], |req| {
            let r: AlterClientQuotasRequest = req.decode();
            assert!(!r.validate_only);
            assert_eq!(r.entries.len(), 1);
            let entry = &r.entries[0];
            let user = entry.entity[0].entity_name.clone();
            assert_eq!(entry.entity[0].entity_type.as_str(), "user");
            let (code, message) = if entry.ops.iter().any(|o| o.key.as_str() == "bogus") {
                (
                    codes::INVALID_REQUEST,
                    Some(StrBytes::from_static_str("Invalid configuration key bogus")),
                )
            } else {
                (0, None)
            };
            req.respond(&AlterClientQuotasResponse::default().with_entries(vec![
                alter_client_quotas_response::EntryData::default()
                    .with_error_code(code)
                    .with_error_message(message)
                    .with_entity(vec![
                        alter_client_quotas_response::EntityData::default()
                            .with_entity_type(StrBytes::from_static_str("user"))
                            .with_entity_name(user),
                    ]),
            ]))
        })
        .await;
        let mut conn = BrokerConnection::connect(&broker.addr, quick())
            .await
            .unwrap();
        conn.alter_client_quotas(
            "alice",
            &set(&[("producer_byte_rate", 1024.0)]),
            &["request_percentage".to_string()],
        )
        .await
        .unwrap();
        let err = conn
            .alter_client_quotas("alice", &set(&[("bogus", 1.0)]), &[])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(codes::INVALID_REQUEST));
        assert!(
            err.to_string()
                .contains("user alice: Invalid configuration key bogus"),
            "{err}"
        );
        conn.alter_client_quotas("alice", &BTreeMap::new(), &[])
            .await
            .unwrap();
        let err = conn
            .alter_client_quotas("alice", &set(&[("a", 1.0)]), &["a".to_string()])
            .await
            .unwrap_err();
        assert!(matches!(err, KafkaError::InvalidArgument { .. }), "{err}");
        assert!(err.to_string().contains("user alice"), "{err}");
        assert_eq!(
            broker.requests(),
            2,
            "nothing sent for no change or a contradiction"
        );
    }
}
