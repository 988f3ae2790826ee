//! SASL authentication of a broker connection (SASL_PLAINTEXT and SASL_SSL listeners):
//! SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN, with [`SaslOptions`] in [`ConnectOptions`].
//!
//! The order is Kafka's own client's: ApiVersions (a SASL listener answers it before
//! authentication), then SaslHandshake v1 naming the mechanism, then SaslAuthenticate rounds
//! carrying the mechanism's messages; only then any other request. A refusal is
//! [`KafkaError::Authentication`] with the broker's reason, never retried; the broker closes
//! the connection after it. When the broker limits the session (`connections.max.reauth.ms`)
//! the connection reports itself broken shortly before the session ends, so the admin client
//! opens (and authenticates) a new one instead of re-authenticating in place.
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;

use super::scram::{ScramClient, ScramMechanism};
use super::{BrokerConnection, KafkaError};

/// A SASL mechanism Pier speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaslMechanism {
    ScramSha512,
    ScramSha256,
    /// The password in the clear: only over TLS.
    Plain,
}

impl SaslMechanism {
    /// The name SaslHandshake carries.
    pub fn name(self) -> &'static str {
        match self.scram() {
            Some(m) => m.sasl_name(),
            None => "PLAIN",
        }
    }

    /// The SCRAM hash, for the SCRAM mechanisms.
    pub fn scram(self) -> Option<ScramMechanism> {
        match self {
            SaslMechanism::ScramSha512 => Some(ScramMechanism::Sha512),
            SaslMechanism::ScramSha256 => Some(ScramMechanism::Sha256),
            SaslMechanism::Plain => None,
        }
    }
}

/// Who to authenticate as. `Debug` does not print the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslOptions {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for SaslOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslOptions")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How long before the broker's session limit a connection stops being used.
const REAUTH_MARGIN: Duration = Duration::from_secs(5);

impl BrokerConnection {
    /// SaslHandshake, then the mechanism's SaslAuthenticate rounds. Returns when the broker
    /// accepted us (and, for SCRAM, proved it knows the credential).
    pub(crate) async fn authenticate(&mut self, sasl: &SaslOptions) -> Result<(), KafkaError> {
        let mechanism = sasl.mechanism.name();
        let refused = |addr: &str, message: String| KafkaError::Authentication {
            addr: addr.to_string(),
            mechanism: mechanism.to_string(),
            message,
        };
        let handshake =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
        // v1 (Kafka 1.0+): the mechanism's messages then travel in SaslAuthenticate requests.
        if self.version_for::<SaslHandshakeRequest>()? < 1 {
            return Err(refused(
                self.addr(),
                "the broker lacks SaslHandshake v1".to_string(),
            ));
        }
        let response = self.send(&handshake).await?;
        if response.error_code != 0 {
            let enabled: Vec<String> = response.mechanisms.iter().map(|m| m.to_string()).collect();
            let name = match KafkaError::broker(self.addr(), "", response.error_code, None) {
                KafkaError::Broker { name, .. } => name,
                _ => String::new(),
            };
            return Err(refused(
                self.addr(),
                format!(
                    "SaslHandshake answered error code {} ({name}); the listener enables {}",
                    response.error_code,
                    enabled.join(", ")
                ),
            ));
        }
        let lifetime_ms = match sasl.mechanism.scram() {
            None => {
                let mut message = vec![0u8];
                message.extend_from_slice(sasl.username.as_bytes());
                message.push(0);
                message.extend_from_slice(sasl.password.as_bytes());
                self.sasl_round(mechanism, message).await?.1
            }
            Some(scram) => {
                let mut client = ScramClient::new(scram, &sasl.username, &sasl.password)
                    .map_err(|m| refused(self.addr(), m))?;
                let (server_first, _) = self.sasl_round(mechanism, client.first()).await?;
                let last = client
                    .respond(&server_first)
                    .map_err(|m| refused(self.addr(), m))?;
                let (server_final, lifetime_ms) = self.sasl_round(mechanism, last).await?;
                client
                    .verify(&server_final)
                    .map_err(|m| refused(self.addr(), m))?;
                lifetime_ms
            }
        };
        if lifetime_ms > 0 {
            let lifetime = Duration::from_millis(lifetime_ms.unsigned_abs());
            self.set_usable_until(Instant::now() + lifetime.saturating_sub(REAUTH_MARGIN));
        }
        tracing::debug!(addr = %self.addr(), mechanism, user = %sasl.username, lifetime_ms, "authenticated to Kafka");
        Ok(())
    }

    /// One SaslAuthenticate round: the broker's answer and the session lifetime it grants.
    async fn sasl_round(
        &mut self,
        mechanism: &str,
        auth_bytes: Vec<u8>,
    ) -> Result<(Vec<u8>, i64), KafkaError> {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(auth_bytes));
        let response = self.send(&request).await?;
        if response.error_code != 0 {
            let reason = response
                .error_message
                .map(|m| m.to_string())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| {
                    KafkaError::broker(self.addr(), "SaslAuthenticate", response.error_code, None)
                        .to_string()
                });
            // The broker closes the connection after a failed authentication.
            self.mark_broken();
            return Err(KafkaError::Authentication {
                addr: self.addr().to_string(),
                mechanism: mechanism.to_string(),
                message: reason,
            });
        }
        Ok((response.auth_bytes.to_vec(), response.session_lifetime_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_printed() {
        let options = SaslOptions {
            mechanism: SaslMechanism::ScramSha512,
            username: "pier".into(),
            password: "hunter2".into(),
        };
        let printed = format!("{options:?}");
        assert!(
            printed.contains("pier") && !printed.contains("hunter2"),
            "{printed}"
        );
    }

    #[test]
    fn mechanism_names_are_kafkas() {
        assert_eq!(SaslMechanism::ScramSha512.name(), "SCRAM-SHA-512");
        assert_eq!(SaslMechanism::ScramSha256.name(), "SCRAM-SHA-256");
        assert_eq!(SaslMechanism::Plain.name(), "PLAIN");
    }
}
