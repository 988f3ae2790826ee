//! SCRAM credentials stored in the cluster (AlterUserScramCredentials,
//! DescribeUserScramCredentials; any broker answers, it forwards to the controller).
//!
//! Kafka stores a credential as salt, iterations and `Hi(password, salt, iterations)`, which
//! the client computes: Pier picks a random salt per upsert, so the password itself never
//! crosses the wire. One user per request, as Kafka requires (both mechanisms of one user in
//! one request fail with DUPLICATE_RESOURCE). New credentials apply to new connections.
use std::collections::BTreeMap;
use std::num::NonZeroU32;

use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::error::codes::RESOURCE_NOT_FOUND;
use super::scram::{SCRAM_ITERATIONS, ScramMechanism, random_bytes, salted_password};
use super::{BrokerConnection, KafkaError};

const ALTER: &str = "AlterUserScramCredentials";
const DESCRIBE: &str = "DescribeUserScramCredentials";

/// Bytes of random salt per credential.
const SALT_BYTES: usize = 32;

/// One stored credential of a user, as Kafka describes it (never the secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScramCredentialInfo {
    pub mechanism: ScramMechanism,
    pub iterations: i32,
}

impl BrokerConnection {
    /// Creates or replaces `user`'s credential for `mechanism` (iterations in 4096..=16384).
    pub async fn upsert_scram_credential(
        &mut self,
        user: &str,
        mechanism: ScramMechanism,
        password: &str,
        iterations: u32,
    ) -> Result<(), KafkaError> {
        let invalid = |message: String| KafkaError::Encode {
            api: ALTER.to_string(),
            message,
        };
        if user.is_empty() {
            return Err(invalid("the user name is empty".to_string()));
        }
        let rounds = NonZeroU32::new(iterations)
            .filter(|_| SCRAM_ITERATIONS.contains(&iterations))
            .ok_or_else(|| {
                invalid(format!(
                    "{iterations} iterations, Kafka accepts {SCRAM_ITERATIONS:?}"
                ))
            })?;
        let salt = random_bytes(SALT_BYTES).map_err(invalid)?;
        let salted = salted_password(mechanism, password, &salt, rounds);
        let upsertion = ScramCredentialUpsertion::default()
            .with_name(StrBytes::from_string(user.to_string()))
            .with_mechanism(mechanism.kafka_code())
            .with_iterations(rounds.get() as i32)
            .with_salt(Bytes::from(salt))
            .with_salted_password(Bytes::from(salted));
        let request = AlterUserScramCredentialsRequest::default().with_upsertions(vec![upsertion]);
        let response = self.send(&request).await?;
        self.check_alter(user, response)
    }

    /// Deletes `user`'s credential for `mechanism`; one that does not exist fails with
    /// RESOURCE_NOT_FOUND.
    pub async fn delete_scram_credential(
        &mut self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<(), KafkaError> {
        let deletion = ScramCredentialDeletion::default()
            .with_name(StrBytes::from_string(user.to_string()))
            .with_mechanism(mechanism.kafka_code());
        let request = AlterUserScramCredentialsRequest::default().with_deletions(vec![deletion]);
        let response = self.send(&request).await?;
        self.check_alter(user, response)
    }

    fn check_alter(
        &self,
        user: &str,
        response: AlterUserScramCredentialsResponse,
    ) -> Result<(), KafkaError> {
        let result = response
            .results
            .into_iter()
            .find(|r| r.user.as_str() == user)
            .ok_or_else(|| {
                KafkaError::malformed(self.addr(), ALTER, format!("no result for user {user}"))
            })?;
        KafkaError::check(
            self.addr(),
            ALTER,
            result.error_code,
            result.error_message.as_ref(),
        )
    }

    /// The SCRAM credentials of these users (`None`: of every user), by user, sorted by
    /// mechanism. Named users without any credential are left out.
    pub async fn describe_scram_credentials(
        &mut self,
        users: Option<&[String]>,
    ) -> Result<BTreeMap<String, Vec<ScramCredentialInfo>>, KafkaError> {
        let request = DescribeUserScramCredentialsRequest::default().with_users(users.map(|u| {
            u.iter()
                .map(|n| UserName::default().with_name(StrBytes::from_string(n.clone())))
                .collect()
        }));
        let response = self.send(&request).await?;
        KafkaError::check(
            self.addr(),
            DESCRIBE,
            response.error_code,
            response.error_message.as_ref(),
        )?;
        let mut out = BTreeMap::new();
        for result in response.results {
            if result.error_code == RESOURCE_NOT_FOUND {
                continue;
            }
            let user = result.user.to_string();
            if result.error_code != 0 {
                let message = result
                    .error_message
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                return Err(KafkaError::broker(
                    self.addr(),
                    DESCRIBE,
                    result.error_code,
                    Some(format!("user {user}: {message}")),
                ));
            }
            let mut infos: Vec<ScramCredentialInfo> = result
                .credential_infos
                .iter()
                .filter_map(|c| {
                    Some(ScramCredentialInfo {
                        mechanism: ScramMechanism::from_kafka_code(c.mechanism)?,
                        iterations: c.iterations,
                    })
                })
                .collect();
            infos.sort_by_key(|c| c.mechanism);
            out.insert(user, infos);
        }
        Ok(out)
    }
}
