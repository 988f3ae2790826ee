//! What a valid spec looks like beyond its types, in one place: the CEL rules the CRD carries and
//! the same checks in Rust for the planner (a CRD installed before a rule existed, or a spec
//! written while it was older, must not slip through).
use kube::core::{Message, Rule};

/// Label and annotation key prefix Pier owns.
pub const PIER_KEY_PREFIX: &str = "kafka.pier.dev/";

/// The `app.kubernetes.io/` labels Pier sets on its objects (selectors depend on them).
pub const PIER_APP_LABELS: &[&str] = &[
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/component",
];

/// Whether a label or annotation key belongs to Pier: users cannot set it through the spec.
pub fn is_pier_key(key: &str) -> bool {
    key.starts_with(PIER_KEY_PREFIX) || PIER_APP_LABELS.contains(&key)
}

/// The CEL rule refusing Pier's keys in a map of labels or annotations.
pub fn no_pier_keys_rule() -> Rule {
    let app = PIER_APP_LABELS
        .iter()
        .map(|k| format!("'{k}'"))
        .collect::<Vec<_>>()
        .join(", ");
    Rule::new(format!(
        "self.all(k, !k.startsWith('{PIER_KEY_PREFIX}') && !(k in [{app}]))"
    ))
    .message(Message::Message(format!(
        "labels and annotations starting with {PIER_KEY_PREFIX} and the keys {} are set by Pier",
        PIER_APP_LABELS.join(", ")
    )))
}

/// Longest Kafka config key accepted (Kafka's own are below 100 characters).
pub const MAX_CONFIG_KEY_LEN: usize = 200;

/// Whether `key` has the shape of a Kafka config key: letters, digits, `.`, `_` and `-`, starting
/// with a letter or digit (`num.io.threads`, `listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config`,
/// plugin keys such as `confluent.metrics.reporter.bootstrap.servers`). Nothing a properties file
/// would read differently: no whitespace, line breaks, `=`, `:`, `#`, `!` or `\`.
pub fn is_config_key(key: &str) -> bool {
    let mut chars = key.chars();
    key.len() <= MAX_CONFIG_KEY_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The CEL rule for a map of Kafka configuration (the same grammar as [`is_config_key`]).
pub fn config_keys_rule() -> Rule {
    Rule::new(format!(
        "self.all(k, size(k) <= {MAX_CONFIG_KEY_LEN} && k.matches('^[a-zA-Z0-9][a-zA-Z0-9._-]*$'))"
    ))
    .message(
        "config keys are Kafka config names: letters, digits, '.', '_' and '-', starting with a letter or digit",
    )
}

/// Longest image reference accepted.
pub const MAX_IMAGE_LEN: usize = 512;

/// Whether `image` can be a container image reference: not empty, no whitespace or control
/// characters (the registry resolves the rest).
pub fn is_image(image: &str) -> bool {
    !image.is_empty()
        && image.len() <= MAX_IMAGE_LEN
        && !image.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The CEL rule for an image reference.
pub fn image_rule() -> Rule {
    Rule::new(r"self.matches('^[^\\s\\x00-\\x1f\\x7f]+$')")
        .message("image must be a container image reference: not empty, without whitespace")
}

/// The CEL rule for a volume size: a positive Kubernetes quantity.
pub fn size_rule() -> Rule {
    Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))")
        .message("size must be a positive Kubernetes quantity, e.g. 10Gi or 500M")
}

/// Whether `path` can be a volume's mount path and, with `/kafka` appended, one entry of
/// Kafka's comma-separated `log.dirs`: absolute, no comma, whitespace or control characters.
pub fn is_mount_path(path: &str) -> bool {
    path.len() >= 2
        && path.starts_with('/')
        && !path
            .chars()
            .any(|c| c == ',' || c.is_whitespace() || c.is_control())
}

/// The CEL rule for a mount path (besides being absolute): what [`is_mount_path`] refuses.
pub fn mount_path_rule() -> Rule {
    Rule::new(r"!self.contains(',') && !self.matches('[\\s\\x00-\\x1f\\x7f]')").message(
        "mountPath must not contain commas or whitespace (it becomes an entry of log.dirs)",
    )
}

/// The CEL rule for a list of volumes: each mounted somewhere else.
pub fn unique_mount_paths_rule() -> Rule {
    Rule::new("self.all(s, self.filter(t, t.mountPath == s.mountPath).size() == 1)")
        .message("the mountPaths of a storage list must differ")
}

/// The CEL rule making every broker have storage, its own or its config group's.
pub fn storage_rule() -> Rule {
    Rule::new(
        "self.brokers.all(b, (has(b.storage) && size(b.storage) > 0) || \
         (has(b.configGroup) && has(self.brokerConfigGroups) && b.configGroup in self.brokerConfigGroups && \
         has(self.brokerConfigGroups[b.configGroup].storage) && size(self.brokerConfigGroups[b.configGroup].storage) > 0))",
    )
    .message(
        "every broker needs storage (its own or its configGroup's): without a volume its data and KRaft metadata would be lost on every restart",
    )
}

/// A Kubernetes quantity (`10Gi`, `500M`, `1.5Gi`, `1e9`) in whole units, rounded up as
/// Kubernetes rounds storage; `None` for what is not a quantity or is negative.
pub fn quantity_units(q: &str) -> Option<u128> {
    let (sign, rest) = match q.as_bytes().first()? {
        b'+' => (1, &q[1..]),
        b'-' => (-1, &q[1..]),
        _ => (1, q),
    };
    let number_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return None;
    }
    let (binary, decimal): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        s if s.starts_with(['e', 'E']) => {
            let exp = &s[1..];
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            (0, exp.parse().ok()?)
        }
        _ => return None,
    };
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let mantissa: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    if sign < 0 && mantissa != 0 {
        return None;
    }
    let scale = decimal.checked_sub(i32::try_from(fraction.len()).ok()?)?;
    let value = mantissa.checked_mul(1u128.checked_shl(binary)?)?;
    if scale >= 0 {
        value.checked_mul(10u128.checked_pow(u32::try_from(scale).ok()?)?)
    } else {
        let divisor = 10u128.checked_pow(scale.unsigned_abs());
        // A divisor beyond u128 makes any value round up to one unit (or stay zero).
        Some(match divisor {
            Some(d) => value.div_ceil(d),
            None => u128::from(value > 0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_follow_kafkas_names() {
        for ok in [
            "num.io.threads",
            "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config",
            "listener.name.internal.ssl.keystore.location",
            "confluent.metrics.reporter.bootstrap.servers",
            "0abc",
            "X",
        ] {
            assert!(is_config_key(ok), "{ok}");
        }
        for bad in [
            "",
            "x\nnode.id",
            " num.io.threads",
            "a=b",
            "a:b",
            "#comment",
            "!x",
            ".x",
            "-x",
            "a\\b",
            "ключ",
            &"a".repeat(MAX_CONFIG_KEY_LEN + 1),
        ] {
            assert!(!is_config_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn every_key_kafka_knows_is_a_config_key() {
        let table = include_str!("../../crates/pier-kafka/src/config-classes/kafka-4.1.tsv");
        let keys: Vec<&str> = table
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split('\t').next())
            .collect();
        assert!(keys.len() > 300, "{}", keys.len());
        for key in keys {
            assert!(is_config_key(key), "{key}");
            // With a listener prefix, as per-listener SSL/SASL settings are written.
            let prefixed = format!("listener.name.sasl_ssl.scram-sha-512.{key}");
            assert!(is_config_key(&prefixed), "{prefixed}");
        }
    }

    #[test]
    fn pier_keys_are_its_prefix_and_its_app_labels() {
        assert!(is_pier_key("kafka.pier.dev/cluster"));
        assert!(is_pier_key("kafka.pier.dev/anything"));
        assert!(is_pier_key("app.kubernetes.io/instance"));
        assert!(!is_pier_key("app.kubernetes.io/version"));
        assert!(!is_pier_key("team"));
        assert!(
            no_pier_keys_rule()
                .rule
                .contains("'app.kubernetes.io/instance'")
        );
    }

    #[test]
    fn mount_paths_are_absolute_log_dir_entries() {
        assert!(is_mount_path("/var/lib/kafka/data0"));
        for bad in ["", "/", "data", "/a,/b", "/a b", "/a\n"] {
            assert!(!is_mount_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn images_are_non_empty_without_whitespace() {
        assert!(is_image("apache/kafka:4.1.2"));
        assert!(is_image("registry:5000/kafka@sha256:abcd"));
        for bad in ["", " ", "apache/kafka 4.1", "kafka\n", "a\tb", "a\u{7f}"] {
            assert!(!is_image(bad), "{bad:?}");
        }
    }

    #[test]
    fn quantities_parse_as_kubernetes_does() {
        let gi = 1u128 << 30;
        for (q, units) in [
            ("1Gi", gi),
            ("10Gi", 10 * gi),
            ("1.5Gi", gi * 3 / 2),
            (".5Ki", 512),
            ("500M", 500_000_000),
            ("1e3", 1000),
            ("1E+3", 1000),
            ("12e-1", 2),
            ("1", 1),
            ("1.", 1),
            ("+2k", 2000),
            ("100m", 1),
            ("0", 0),
            ("-0", 0),
            ("1n", 1),
        ] {
            assert_eq!(quantity_units(q), Some(units), "{q}");
        }
        for bad in [
            "", "1Gb", "Gi", "1 Gi", "-1Gi", "1..2", "1.2.3", "1e", "1e+", "1ee3", "1GiB",
            "1.5e3Gi", "+", ".", "1ki",
        ] {
            assert_eq!(quantity_units(bad), None, "{bad:?}");
        }
    }
}
