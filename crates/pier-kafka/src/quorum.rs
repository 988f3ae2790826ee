//! KIP-853 quorum membership: adding and removing KRaft voters (AddRaftVoter,
//! RemoveRaftVoter), the endpoints voters listen on, and Kafka's text form of a `Uuid`
//! (directory ids, cluster ids) with the rules Kafka generates directory ids under.
//!
//! Reading the quorum (DescribeQuorum) lives with the rest of the cluster view in
//! [`crate::cluster`].
use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use kafka_protocol::messages::add_raft_voter_request::Listener;
use kafka_protocol::messages::{AddRaftVoterRequest, RemoveRaftVoterRequest};
use kafka_protocol::protocol::StrBytes;
use ring::rand::SecureRandom;

use super::{BrokerConnection, KafkaError};

/// One listener a KRaft voter is reached on, as the VotersRecord stores it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RaftEndpoint {
    /// The listener name (e.g. `CONTROLLER`); AddRaftVoter needs the leader's default
    /// controller listener among a new voter's endpoints.
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// A text that is not a Kafka `Uuid`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a Kafka Uuid (22 characters of URL-safe base64): {reason}")]
pub struct InvalidKafkaUuid {
    pub text: String,
    pub reason: String,
}

/// Kafka's Uuid text: URL-safe base64 of the 16 bytes without padding. Decoding is as
/// lenient as Kafka's (`Base64.getUrlDecoder()`): padding optional, unused low bits of the
/// last character ignored.
const KAFKA_UUID_BASE64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A Kafka `Uuid` as Kafka prints it (`Uuid.toString`): 22 characters of URL-safe base64
/// without padding, e.g. `3Db5QLSqSZieL3rJBUUegA`. This is the form of `directory.id`,
/// `cluster.id`, topic ids and `--initial-controllers`, not the hyphenated hex of RFC 4122.
pub fn uuid_to_text(u: &uuid::Uuid) -> String {
    KAFKA_UUID_BASE64.encode(u.as_bytes())
}

/// Parses Kafka's text form of a `Uuid` ([`uuid_to_text`]); like Kafka's `Uuid.fromString`
/// it also takes the padded 24-character form.
pub fn uuid_from_text(s: &str) -> Result<uuid::Uuid, InvalidKafkaUuid> {
    let invalid = |reason: String| InvalidKafkaUuid {
        text: s.to_string(),
        reason,
    };
    // Kafka's own bound, checked before decoding anything long.
    if s.len() > 24 {
        return Err(invalid(format!("{} characters, at most 24", s.len())));
    }
    let bytes = KAFKA_UUID_BASE64
        .decode(s)
        .map_err(|e| invalid(e.to_string()))?;
    let bytes: [u8; 16] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| invalid(format!("decodes to {} bytes, not 16", b.len())))?;
    Ok(uuid::Uuid::from_bytes(bytes))
}

/// Whether Kafka reserves this value as a directory id: the zero id (MIGRATING), 1
/// (UNASSIGNED), 2 (LOST), and everything else with the high 64 bits zero and the low ones
/// below 100 (`DirectoryId.reserved`).
pub fn is_reserved_directory_id(u: &uuid::Uuid) -> bool {
    let (msb, lsb) = u.as_u64_pair();
    msb == 0 && lsb < 100
}

/// A new random directory id in text form, under Kafka's rules (`DirectoryId.random`,
/// `Uuid.randomUuid`): never a reserved value ([`is_reserved_directory_id`], which covers
/// the zero id and the metadata topic id 1) and never a text starting with `-`, which the
/// Kafka tools would take for a flag. Random version-4 ids, as Java's `UUID.randomUUID`.
/// Fails only when the system's random source does.
pub fn random_directory_id() -> std::io::Result<String> {
    let rng = ring::rand::SystemRandom::new();
    loop {
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes)
            .map_err(|_| std::io::Error::other("the system random source failed"))?;
        let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
        if let Some(text) = acceptable_directory_id(&id) {
            return Ok(text);
        }
    }
}

/// `id`'s text if Kafka could have generated it as a directory id.
fn acceptable_directory_id(id: &uuid::Uuid) -> Option<String> {
    if is_reserved_directory_id(id) {
        return None;
    }
    let text = uuid_to_text(id);
    (!text.starts_with('-')).then_some(text)
}

/// A directory id for a request: the text must parse and must not be a reserved value
/// (the leader refuses the zero id with INVALID_REQUEST; better to say why before sending).
pub(crate) fn directory_id_arg(api: &str, directory_id: &str) -> Result<uuid::Uuid, KafkaError> {
    let id = uuid_from_text(directory_id)
        .map_err(|e| KafkaError::invalid_argument(api, format!("directory id: {e}")))?;
    if is_reserved_directory_id(&id) {
        return Err(KafkaError::invalid_argument(
            api,
            format!("directory id {directory_id} is a reserved value, not a real directory"),
        ));
    }
    Ok(id)
}

impl BrokerConnection {
    /// Adds a voter to the KRaft quorum (AddRaftVoter v0; a broker forwards it to the active
    /// controller). `cluster_id` `None` skips Kafka's cluster id check. The broker waits up to
    /// `timeout_ms`, capped below this connection's request timeout so it answers first.
    /// A REQUEST_TIMED_OUT or NOT_LEADER_OR_FOLLOWER answer leaves the outcome unknown: see
    /// [`crate::AdminClient::add_raft_voter`].
    pub async fn add_raft_voter(
        &mut self,
        cluster_id: Option<&str>,
        voter_id: i32,
        directory_id: &str,
        listeners: &[RaftEndpoint],
        timeout_ms: i32,
    ) -> Result<(), KafkaError> {
        let api = "AddRaftVoter";
        let directory_id = directory_id_arg(api, directory_id)?;
        if listeners.is_empty() {
            return Err(KafkaError::invalid_argument(
                api,
                format!("voter {voter_id} needs at least one listener"),
            ));
        }
        let request = AddRaftVoterRequest::default()
            .with_cluster_id(cluster_id.map(|c| StrBytes::from_string(c.to_string())))
            .with_timeout_ms(timeout_ms.clamp(1, self.operation_timeout_ms()))
            .with_voter_id(voter_id)
            .with_voter_directory_id(directory_id)
            .with_listeners(
                listeners
                    .iter()
                    .map(|l| {
                        Listener::default()
                            .with_name(StrBytes::from_string(l.name.clone()))
                            .with_host(StrBytes::from_string(l.host.clone()))
                            .with_port(l.port)
                    })
                    .collect(),
            );
        let response = self.send(&request).await?;
        KafkaError::check(
            self.addr(),
            api,
            response.error_code,
            response.error_message.as_ref(),
        )
    }

    /// Removes the voter with this id and directory id from the KRaft quorum (RemoveRaftVoter
    /// v0; a broker forwards it). Both must match a current voter, else VOTER_NOT_FOUND.
    /// Outcome unknown on REQUEST_TIMED_OUT or NOT_LEADER_OR_FOLLOWER, as for adding.
    pub async fn remove_raft_voter(
        &mut self,
        cluster_id: Option<&str>,
        voter_id: i32,
        directory_id: &str,
    ) -> Result<(), KafkaError> {
        let api = "RemoveRaftVoter";
        let directory_id = directory_id_arg(api, directory_id)?;
        let request = RemoveRaftVoterRequest::default()
            .with_cluster_id(cluster_id.map(|c| StrBytes::from_string(c.to_string())))
            .with_voter_id(voter_id)
            .with_voter_directory_id(directory_id);
        let response = self.send(&request).await?;
        KafkaError::check(
            self.addr(),
            api,
            response.error_code,
            response.error_message.as_ref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConnectOptions;
    use crate::connection::testing::fake_broker;
    use crate::error::codes;
    use kafka_protocol::messages::{AddRaftVoterResponse, ApiKey, RemoveRaftVoterResponse};
    use proptest::prelude::*;
    use std::time::Duration;

    /// Printed by Kafka 4.1.2's `org.apache.kafka.common.Uuid` (msb, lsb, toString).
    const KAFKA_VECTORS: [(u64, u64, &str); 5] = [
        (
            0x0123456789abcdef,
            0xfedcba9876543210,
            "ASNFZ4mrze_-3LqYdlQyEA",
        ),
        (
            0xdc36f940b4aa4998,
            0x9e2f7ac905451e80,
            "3Db5QLSqSZieL3rJBUUegA",
        ),
        (0, 0, "AAAAAAAAAAAAAAAAAAAAAA"),
        (0, 1, "AAAAAAAAAAAAAAAAAAAAAQ"),
        (u64::MAX, u64::MAX, "_____________________w"),
    ];

    #[test]
    fn text_form_matches_kafka() {
        for (msb, lsb, text) in KAFKA_VECTORS {
            let u = uuid::Uuid::from_u64_pair(msb, lsb);
            assert_eq!(uuid_to_text(&u), text);
            assert_eq!(uuid_from_text(text).unwrap(), u, "{text}");
        }
    }

    #[test]
    fn parsing_is_as_lenient_as_kafka_and_no_more() {
        let u = uuid_from_text("3Db5QLSqSZieL3rJBUUegA").unwrap();
        // Kafka accepts the padded form and ignores the unused low bits of the last char.
        assert_eq!(uuid_from_text("3Db5QLSqSZieL3rJBUUegA==").unwrap(), u);
        assert_eq!(uuid_from_text("3Db5QLSqSZieL3rJBUUegB").unwrap(), u);
        for bad in [
            "",
            "3Db5QLSqSZieL3rJBUUeg",
            "3Db5QLSqSZieL3rJBUUegAAA",
            "3Db5QLSqSZieL3rJBUUegA==AA",
            "3Db5QLSqSZieL3rJBUUe+A",
            "3Db5QLSqSZieL3rJBUUe/A",
            "dc36f940-b4aa-4998-9e2f-7ac905451e80",
            "3Db5QLSqSZieL3rJBUUeg!",
        ] {
            let err = uuid_from_text(bad).expect_err(bad);
            assert_eq!(err.text, bad);
            assert!(err.to_string().contains("not a Kafka Uuid"), "{err}");
        }
    }

    #[test]
    fn reserved_directory_ids_are_the_low_hundred() {
        let id = |msb, lsb| uuid::Uuid::from_u64_pair(msb, lsb);
        assert!(is_reserved_directory_id(&id(0, 0)));
        assert!(is_reserved_directory_id(&id(0, 2)));
        assert!(is_reserved_directory_id(&id(0, 99)));
        assert!(!is_reserved_directory_id(&id(0, 100)));
        assert!(!is_reserved_directory_id(&id(1, 0)));
        assert_eq!(acceptable_directory_id(&id(0, 1)), None);
        // 0xf8 as the first byte: base64 starts with '-' (62).
        let dash = uuid::Uuid::from_u64_pair(0xf800_0000_0000_0000, 1);
        assert!(uuid_to_text(&dash).starts_with('-'));
        assert_eq!(acceptable_directory_id(&dash), None);
        assert!(acceptable_directory_id(&id(0, 100)).is_some());
    }

    #[test]
    fn random_directory_ids_follow_kafkas_rules() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            let text = random_directory_id().unwrap();
            assert_eq!(text.len(), 22);
            assert!(!text.starts_with('-'), "{text}");
            let u = uuid_from_text(&text).unwrap();
            assert!(!is_reserved_directory_id(&u));
            assert_eq!(u.get_version_num(), 4);
            assert!(seen.insert(text));
        }
    }

    proptest! {
        #[test]
        fn text_roundtrips(bytes in any::<[u8; 16]>()) {
            let u = uuid::Uuid::from_bytes(bytes);
            let text = uuid_to_text(&u);
            prop_assert_eq!(text.len(), 22);
            prop_assert_eq!(uuid_from_text(&text).unwrap(), u);
        }

        #[test]
        fn any_text_parses_or_fails_cleanly(s in "\\PC{0,30}") {
            let _ = uuid_from_text(&s);
        }
    }

    fn quick() -> ConnectOptions {
        ConnectOptions {
            request_timeout: Duration::from_millis(800),
            ..ConnectOptions::default()
        }
    }

    const DIR: &str = "3Db5QLSqSZieL3rJBUUegA";

    fn endpoint(name: &str, port: u16) -> RaftEndpoint {
        RaftEndpoint {
            name: name.into(),
            host: "ctl-4.example".into(),
            port,
        }
    }

    #[tokio::test]
    async fn add_raft_voter_puts_every_field_on_the_wire() {
        let broker = fake_broker(&[(ApiKey::AddRaftVoter, 0)], |req| {
            assert_eq!(req.key, ApiKey::AddRaftVoter as i16);
            let r: AddRaftVoterRequest = req.decode();
            let cluster = r.cluster_id.as_ref().map(|c| c.to_string());
            let listeners: Vec<(String, String, u16)> = r
                .listeners
                .iter()
                .map(|l| (l.name.to_string(), l.host.to_string(), l.port))
                .collect();
            let expected = [
                ("CONTROLLER".to_string(), "ctl-4.example".to_string(), 9093),
                ("REPLICATION".to_string(), "ctl-4.example".to_string(), 9094),
            ];
            assert_eq!(listeners, expected);
            assert_eq!(r.voter_id, 4);
            assert_eq!(uuid_to_text(&r.voter_directory_id), DIR);
            match req.index {
                0 => {
                    assert_eq!(cluster.as_deref(), Some("cid"));
                    assert_eq!(r.timeout_ms, 250);
                }
                _ => {
                    assert_eq!(cluster, None, "None skips the cluster id check");
                    // Capped below the connection's timeout (800 ms): 3/4 of it.
                    assert_eq!(r.timeout_ms, 600);
                }
            }
            req.respond(&AddRaftVoterResponse::default())
        })
        .await;
        let mut conn = BrokerConnection::connect(&broker.addr, quick())
            .await
            .unwrap();
        let listeners = [endpoint("CONTROLLER", 9093), endpoint("REPLICATION", 9094)];
        conn.add_raft_voter(Some("cid"), 4, DIR, &listeners, 250)
            .await
            .unwrap();
        conn.add_raft_voter(None, 4, DIR, &listeners, 60_000)
            .await
            .unwrap();
        assert_eq!(broker.requests(), 2);
    }

    #[tokio::test]
    async fn voter_change_errors_keep_kafkas_code_and_message() {
        let broker = fake_broker(
            &[(ApiKey::AddRaftVoter, 0), (ApiKey::RemoveRaftVoter, 0)],
            |req| {
                let message = Some(StrBytes::from_static_str("said the leader"));
                if req.key == ApiKey::AddRaftVoter as i16 {
                    req.respond(
                        &AddRaftVoterResponse::default()
                            .with_error_code(codes::DUPLICATE_VOTER)
                            .with_error_message(message),
                    )
                } else {
                    let r: RemoveRaftVoterRequest = req.decode();
                    assert_eq!(r.voter_id, 3);
                    assert_eq!(r.cluster_id.map(|c| c.to_string()).as_deref(), Some("cid"));
                    assert_eq!(uuid_to_text(&r.voter_directory_id), DIR);
                    req.respond(
                        &RemoveRaftVoterResponse::default()
                            .with_error_code(codes::VOTER_NOT_FOUND)
                            .with_error_message(message),
                    )
                }
            },
        )
        .await;
        let mut conn = BrokerConnection::connect(&broker.addr, quick())
            .await
            .unwrap();
        let err = conn
            .add_raft_voter(None, 3, DIR, &[endpoint("CONTROLLER", 9093)], 1000)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(codes::DUPLICATE_VOTER));
        assert_eq!(err.broker_message(), Some("said the leader"));
        assert!(err.to_string().contains("AddRaftVoter"), "{err}");
        assert!(err.to_string().contains("DuplicateVoter"), "{err}");
        let err = conn
            .remove_raft_voter(Some("cid"), 3, DIR)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(codes::VOTER_NOT_FOUND));
        assert!(err.to_string().contains("RemoveRaftVoter"), "{err}");
        assert!(!conn.is_broken());
    }

    #[tokio::test]
    async fn bad_arguments_are_refused_before_sending() {
        let broker = fake_broker(
            &[(ApiKey::AddRaftVoter, 0), (ApiKey::RemoveRaftVoter, 0)],
            |_| panic!("nothing may be sent"),
        )
        .await;
        let mut conn = BrokerConnection::connect(&broker.addr, quick())
            .await
            .unwrap();
        let ok = [endpoint("CONTROLLER", 9093)];
        for (dir, listeners, expect) in [
            ("not-a-uuid", &ok[..], "not a Kafka Uuid"),
            ("AAAAAAAAAAAAAAAAAAAAAA", &ok[..], "reserved"),
            (DIR, &[][..], "at least one listener"),
        ] {
            let err = conn
                .add_raft_voter(None, 4, dir, listeners, 1000)
                .await
                .unwrap_err();
            assert!(matches!(err, KafkaError::InvalidArgument { .. }), "{err}");
            assert!(err.to_string().contains(expect), "{err}");
        }
        let err = conn
            .remove_raft_voter(None, 4, "AAAAAAAAAAAAAAAAAAAAAQ")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
        assert_eq!(broker.requests(), 0);
    }

    #[tokio::test]
    async fn a_broker_without_voter_changes_is_unsupported() {
        let broker = fake_broker(&[(ApiKey::DescribeQuorum, 1)], |_| {
            panic!("nothing may be sent")
        })
        .await;
        let mut conn = BrokerConnection::connect(&broker.addr, quick())
            .await
            .unwrap();
        let err = conn.remove_raft_voter(None, 4, DIR).await.unwrap_err();
        assert!(
            matches!(err, KafkaError::UnsupportedVersion { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("RemoveRaftVoter"), "{err}");
    }
}
