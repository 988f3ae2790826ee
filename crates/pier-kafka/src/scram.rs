//! SCRAM (RFC 5802, RFC 7677) with SHA-256 and SHA-512, as Kafka speaks it: the client side
//! of the exchange ([`ScramClient`]: client-first, client-final with the proof, then the
//! server's signature verified) and the salted password a credential is stored as
//! ([`salted_password`], what AlterUserScramCredentials carries). HMAC, PBKDF2, digests and
//! nonces come from ring.
//!
//! Like Kafka's own client, names and passwords are used as their UTF-8 bytes (no SASLprep);
//! `=` and `,` in the user name are escaped as the RFC says; no channel binding (`n,,`).
use std::num::NonZeroU32;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};

/// The iterations Kafka accepts for a stored credential (and requires of a server).
pub const SCRAM_ITERATIONS: std::ops::RangeInclusive<u32> = 4096..=16384;

/// A SCRAM hash, with the code Kafka's credential APIs use for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    /// The SASL mechanism name (`SCRAM-SHA-256`, `SCRAM-SHA-512`).
    pub fn sasl_name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The `Mechanism` field of AlterUserScramCredentials and DescribeUserScramCredentials.
    pub fn kafka_code(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_code(code: i8) -> Option<Self> {
        match code {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramMechanism::Sha256 => hmac::HMAC_SHA256,
            ScramMechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramMechanism::Sha256 => &digest::SHA256,
            ScramMechanism::Sha512 => &digest::SHA512,
        }
    }

    fn len(self) -> usize {
        self.digest().output_len()
    }

    fn mac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac(), key), data)
            .as_ref()
            .to_vec()
    }
}

impl std::fmt::Display for ScramMechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.sasl_name())
    }
}

/// `Hi(password, salt, iterations)`: PBKDF2 with the mechanism's HMAC, as long as its hash.
pub fn salted_password(
    mechanism: ScramMechanism,
    password: &str,
    salt: &[u8],
    iterations: NonZeroU32,
) -> Vec<u8> {
    let mut out = vec![0u8; mechanism.len()];
    pbkdf2::derive(
        mechanism.pbkdf2(),
        iterations,
        salt,
        password.as_bytes(),
        &mut out,
    );
    out
}

/// `n` random bytes from the system's secure generator.
pub(crate) fn random_bytes(n: usize) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| "the system random number generator failed".to_string())?;
    Ok(out)
}

/// The client side of one SCRAM exchange: `first()` → server-first into `respond()` →
/// server-final into `verify()`.
pub(crate) struct ScramClient {
    mechanism: ScramMechanism,
    password: String,
    nonce: String,
    first_bare: String,
    /// Set by `respond`: what the server's signature must be.
    server_signature: Option<Vec<u8>>,
}

/// The GS2 header: no channel binding, no authorization identity.
const GS2_HEADER: &str = "n,,";

impl ScramClient {
    /// A client with a fresh random nonce.
    pub(crate) fn new(
        mechanism: ScramMechanism,
        username: &str,
        password: &str,
    ) -> Result<Self, String> {
        let nonce = URL_SAFE_NO_PAD.encode(random_bytes(24)?);
        Ok(Self::with_nonce(mechanism, username, password, nonce))
    }

    fn with_nonce(
        mechanism: ScramMechanism,
        username: &str,
        password: &str,
        nonce: String,
    ) -> Self {
        let name = username.replace('=', "=3D").replace(',', "=2C");
        ScramClient {
            mechanism,
            password: password.to_string(),
            first_bare: format!("n={name},r={nonce}"),
            nonce,
            server_signature: None,
        }
    }

    /// client-first-message.
    pub(crate) fn first(&self) -> Vec<u8> {
        format!("{GS2_HEADER}{}", self.first_bare).into_bytes()
    }

    /// client-final-message (with the proof) for the server-first-message.
    pub(crate) fn respond(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| "server-first-message is not UTF-8".to_string())?;
        let attr = |key: char| attribute(server_first, key);
        if let Some(e) = attr('e') {
            return Err(format!("server refused: {e}"));
        }
        let nonce = attr('r').ok_or("server-first-message has no nonce")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("server nonce does not extend ours".to_string());
        }
        let salt = STANDARD
            .decode(attr('s').ok_or("server-first-message has no salt")?)
            .map_err(|e| format!("server salt is not base64: {e}"))?;
        let iterations: u32 = attr('i')
            .ok_or("server-first-message has no iteration count")?
            .parse()
            .map_err(|_| "server iteration count is not a number".to_string())?;
        if !SCRAM_ITERATIONS.contains(&iterations) {
            return Err(format!(
                "server asks for {iterations} iterations, outside {SCRAM_ITERATIONS:?}"
            ));
        }
        Ok(self.respond_with(server_first, nonce, &salt, iterations))
    }

    fn respond_with(
        &mut self,
        server_first: &str,
        nonce: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Vec<u8> {
        let m = self.mechanism;
        let iterations = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
        let salted = salted_password(m, &self.password, salt, iterations);
        let client_key = m.mac(&salted, b"Client Key");
        let stored_key = digest::digest(m.digest(), &client_key);
        let without_proof = format!("c={},r={nonce}", STANDARD.encode(GS2_HEADER));
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let signature = m.mac(stored_key.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = m.mac(&salted, b"Server Key");
        self.server_signature = Some(m.mac(&server_key, auth_message.as_bytes()));
        format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes()
    }

    /// Checks the server-final-message: the server proved it knows the credential.
    pub(crate) fn verify(&self, server_final: &[u8]) -> Result<(), String> {
        let server_final = std::str::from_utf8(server_final)
            .map_err(|_| "server-final-message is not UTF-8".to_string())?;
        if let Some(e) = attribute(server_final, 'e') {
            return Err(format!("server refused: {e}"));
        }
        let expected = self
            .server_signature
            .as_ref()
            .ok_or("server-final-message before the exchange")?;
        let got = STANDARD
            .decode(attribute(server_final, 'v').ok_or("server-final-message has no signature")?)
            .map_err(|e| format!("server signature is not base64: {e}"))?;
        // Compared in full (no early exit), like a MAC should be.
        let differs = expected.len() != got.len()
            || expected
                .iter()
                .zip(&got)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                != 0;
        if differs {
            return Err("the server's signature does not verify".to_string());
        }
        Ok(())
    }
}

/// The value of `key=` in a SCRAM message (`k=v,k=v`).
fn attribute(message: &str, key: char) -> Option<&str> {
    message.split(',').find_map(|part| {
        let mut chars = part.chars();
        (chars.next() == Some(key) && chars.next() == Some('=')).then(|| &part[2..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3.
    #[test]
    fn rfc7677_sha256_test_vector() {
        let mut client = ScramClient::with_nonce(
            ScramMechanism::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".to_string(),
        );
        assert_eq!(client.first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let last = client.respond(server_first).unwrap();
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        client
            .verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        let err = client
            .verify(b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
        let err = client.verify(b"e=invalid-proof").unwrap_err();
        assert!(err.contains("invalid-proof"), "{err}");
    }

    /// A server side written from the RFC's definitions, to check the SHA-512 client against.
    fn server_final(
        m: ScramMechanism,
        password: &str,
        salt: &[u8],
        iterations: u32,
        auth_message: &str,
        proof: &[u8],
    ) -> Result<Vec<u8>, String> {
        let salted = salted_password(m, password, salt, NonZeroU32::new(iterations).unwrap());
        let stored_key = digest::digest(m.digest(), &m.mac(&salted, b"Client Key"));
        let signature = m.mac(stored_key.as_ref(), auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        if digest::digest(m.digest(), &client_key).as_ref() != stored_key.as_ref() {
            return Err("invalid proof".into());
        }
        let server_key = m.mac(&salted, b"Server Key");
        Ok(format!(
            "v={}",
            STANDARD.encode(m.mac(&server_key, auth_message.as_bytes()))
        )
        .into_bytes())
    }

    fn exchange(
        m: ScramMechanism,
        user: &str,
        client_pw: &str,
        server_pw: &str,
    ) -> Result<(), String> {
        let mut client = ScramClient::new(m, user, client_pw)?;
        let first = String::from_utf8(client.first()).unwrap();
        let first_bare = first.strip_prefix("n,,").unwrap();
        let client_nonce = attribute(first_bare, 'r').unwrap().to_string();
        let salt = random_bytes(16)?;
        let server_first = format!("r={client_nonce}srv,s={},i=4096", STANDARD.encode(&salt));
        let last = String::from_utf8(client.respond(server_first.as_bytes())?).unwrap();
        let (without_proof, proof) = last.rsplit_once(",p=").unwrap();
        let auth = format!("{first_bare},{server_first},{without_proof}");
        let fin = server_final(
            m,
            server_pw,
            &salt,
            4096,
            &auth,
            &STANDARD.decode(proof).unwrap(),
        )?;
        client.verify(&fin)
    }

    #[test]
    fn sha512_exchange_is_self_consistent() {
        exchange(ScramMechanism::Sha512, "pier,admin=x", "s3cret", "s3cret").unwrap();
        let err = exchange(ScramMechanism::Sha512, "pier", "wrong", "s3cret").unwrap_err();
        assert_eq!(err, "invalid proof");
        assert_eq!(
            salted_password(ScramMechanism::Sha512, "p", b"s", NonZeroU32::MIN).len(),
            64
        );
    }

    #[test]
    fn user_names_are_escaped_and_nonces_random() {
        let a = ScramClient::new(ScramMechanism::Sha512, "a=b,c", "p").unwrap();
        let b = ScramClient::new(ScramMechanism::Sha512, "a=b,c", "p").unwrap();
        let first = String::from_utf8(a.first()).unwrap();
        assert!(first.starts_with("n,,n=a=3Db=2Cc,r="), "{first}");
        assert_ne!(a.first(), b.first());
    }

    #[test]
    fn hostile_server_first_messages_are_refused() {
        let mut client = ScramClient::with_nonce(ScramMechanism::Sha256, "u", "p", "abc".into());
        for (message, expect) in [
            ("r=xyz1,s=AAAA,i=4096", "does not extend"),
            ("r=abc,s=AAAA,i=4096", "does not extend"),
            ("r=abcd,s=!!,i=4096", "not base64"),
            ("r=abcd,s=AAAA,i=100", "iterations"),
            ("r=abcd,s=AAAA,i=99999999", "iterations"),
            ("r=abcd,s=AAAA", "no iteration"),
            ("e=unknown-user", "unknown-user"),
        ] {
            let err = client.respond(message.as_bytes()).unwrap_err();
            assert!(err.contains(expect), "{message}: {err}");
        }
        assert!(client.verify(b"v=AAAA").is_err(), "no exchange yet");
    }
}
