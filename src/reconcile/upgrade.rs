//! Kafka versions and `metadata.version`, planned without I/O: which version each node runs
//! (its image's tag, or `spec.kafka.version`), when the cluster's metadata.version is raised
//! (once every node runs the new release and the cluster is settled; to the release's latest
//! production level or the spec's pin), and which version changes are refused (a node on a
//! release that cannot read the metadata.version the cluster already finalized).
//!
//! The roll itself is the rolling restart's ([`super::roll`]): a new image is a restart like
//! any other, controllers first and the active controller last.
use std::fmt;

use super::EffectiveBroker;
use crate::api::KafkaCluster;

/// `metadata.version` feature levels Pier knows, by name: Kafka's `MetadataVersion`
/// (server-common), 3.3-IV3 (the minimum of 4.x) to 4.1-IV1.
pub const METADATA_VERSIONS: &[(i16, &str)] = &[
    (7, "3.3-IV3"),
    (8, "3.4-IV0"),
    (9, "3.5-IV0"),
    (10, "3.5-IV1"),
    (11, "3.5-IV2"),
    (12, "3.6-IV0"),
    (13, "3.6-IV1"),
    (14, "3.6-IV2"),
    (15, "3.7-IV0"),
    (16, "3.7-IV1"),
    (17, "3.7-IV2"),
    (18, "3.7-IV3"),
    (19, "3.7-IV4"),
    (20, "3.8-IV0"),
    (21, "3.9-IV0"),
    (22, "4.0-IV0"),
    (23, "4.0-IV1"),
    (24, "4.0-IV2"),
    (25, "4.0-IV3"),
    (26, "4.1-IV0"),
    (27, "4.1-IV1"),
];

/// The latest production `metadata.version` level of each release (what
/// `kafka-features.sh upgrade --release-version X` sets).
const RELEASE_LEVELS: &[((u32, u32), i16)] = &[
    ((3, 3), 7),
    ((3, 4), 8),
    ((3, 5), 11),
    ((3, 6), 14),
    ((3, 7), 19),
    ((3, 8), 20),
    ((3, 9), 21),
    ((4, 0), 25),
    ((4, 1), 27),
];

/// The feature name of the metadata version.
pub const METADATA_VERSION_FEATURE: &str = "metadata.version";

/// A Kafka release version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KafkaVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KafkaVersion {
    /// `4.1.2`, `4.1` (patch 0), `4.1.2-rc1` (the suffix ignored).
    pub fn parse(text: &str) -> Option<Self> {
        let end = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let mut parts = text[..end].split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            major,
            minor,
            patch,
        })
    }

    /// The release's latest production metadata.version level, if Pier knows the release.
    pub fn metadata_level(self) -> Option<i16> {
        RELEASE_LEVELS
            .iter()
            .find(|(mm, _)| *mm == (self.major, self.minor))
            .map(|(_, level)| *level)
    }

    /// Whether this release formats a dynamic quorum (KIP-853): 4.0 and later.
    pub fn dynamic_quorum(self) -> bool {
        self.major >= 4
    }
}

impl fmt::Display for KafkaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The tag of an image reference (`repo/kafka:4.1.2` → `4.1.2`; `""` without one), digest
/// dropped.
pub fn image_tag(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    // A ':' followed by a '/' belongs to a registry port, not a tag.
    no_digest
        .rsplit_once(':')
        .map(|(_, t)| t)
        .filter(|t| !t.contains('/'))
        .unwrap_or("")
}

/// The Kafka version a node runs: its image's tag when that is a version, else
/// `spec.kafka.version`; `None` when neither says.
pub fn node_version(kc: &KafkaCluster, b: &EffectiveBroker) -> Option<KafkaVersion> {
    KafkaVersion::parse(image_tag(&b.image)).or_else(|| {
        kc.spec
            .kafka
            .version
            .as_deref()
            .and_then(KafkaVersion::parse)
    })
}

/// The level of a metadata.version name (`4.0-IV3`) or of a release (`4.0`: its latest
/// production level).
pub fn metadata_level(name: &str) -> Option<i16> {
    if name.contains("-IV") {
        METADATA_VERSIONS
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(level, _)| *level)
    } else {
        KafkaVersion::parse(name).and_then(KafkaVersion::metadata_level)
    }
}

/// The name of a metadata.version level, where Pier knows it.
pub fn metadata_name(level: i16) -> Option<&'static str> {
    METADATA_VERSIONS
        .iter()
        .find(|(l, _)| *l == level)
        .map(|(_, name)| *name)
}

/// `4.0-IV3 (level 25)`, or the bare level where Pier does not know its name.
pub fn describe_level(level: i16) -> String {
    match metadata_name(level) {
        Some(name) => format!("{name} (level {level})"),
        None => format!("level {level}"),
    }
}

/// A version change the cluster cannot take: a node would run a release older than the
/// metadata.version the cluster finalized.
pub fn refused_version(
    kc: &KafkaCluster,
    brokers: &[EffectiveBroker],
    finalized_level: Option<i16>,
) -> Option<String> {
    let finalized = finalized_level?;
    let too_old: Vec<String> = brokers
        .iter()
        .filter_map(|b| {
            let v = node_version(kc, b)?;
            let max = v.metadata_level()?;
            (max < finalized).then(|| format!("broker {} ({v})", b.id))
        })
        .collect();
    (!too_old.is_empty()).then(|| {
        format!(
            "downgrade refused: the cluster's metadata.version is {}, newer than what {} can run; \
             Kafka cannot lower it safely once raised (a metadata.version is lowered only by \
             hand, with kafka-features.sh downgrade, where Kafka allows it)",
            describe_level(finalized),
            too_old.join(", ")
        )
    })
}

/// Everything the metadata.version decision is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataInput {
    /// The version of each node of the spec (`None`: unknown).
    pub versions: Vec<Option<KafkaVersion>>,
    /// Every node runs its spec (Pods ready, no restart due, no roll, no replica moves).
    pub settled: bool,
    /// The finalized level Kafka reports (`None`: not read).
    pub finalized: Option<i16>,
    /// The highest level the answering node supports.
    pub supported_max: Option<i16>,
    /// `spec.kafka.metadataVersion`.
    pub pin: Option<String>,
}

/// What to do about metadata.version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataStep {
    /// At the target already (or no target known).
    Current,
    /// Raise it now (UpdateFeatures, upgrade).
    Raise { from: i16, to: i16 },
    /// A raise is due but waits: why.
    Wait(String),
}

/// Plans the metadata.version raise after an upgrade.
pub fn plan_metadata(input: &MetadataInput) -> MetadataStep {
    let Some(finalized) = input.finalized else {
        return MetadataStep::Current;
    };
    // The release every node runs: the oldest among them.
    let mut oldest: Option<KafkaVersion> = None;
    for v in &input.versions {
        match v {
            Some(v) => oldest = Some(oldest.map_or(*v, |o| o.min(*v))),
            None => return MetadataStep::Current,
        }
    }
    let Some(release_level) = oldest.and_then(KafkaVersion::metadata_level) else {
        return MetadataStep::Current;
    };
    let target = match &input.pin {
        Some(pin) => match metadata_level(pin) {
            Some(level) => level.min(release_level),
            None => {
                return MetadataStep::Wait(format!(
                    "spec.kafka.metadataVersion {pin:?} is not a metadata.version Pier knows"
                ));
            }
        },
        None => release_level,
    };
    let target = input.supported_max.map_or(target, |max| target.min(max));
    if target <= finalized {
        return MetadataStep::Current;
    }
    if !input.settled {
        return MetadataStep::Wait(format!(
            "metadata.version {} is raised to {} once every node runs the new version and the cluster is settled",
            describe_level(finalized),
            describe_level(target)
        ));
    }
    MetadataStep::Raise {
        from: finalized,
        to: target,
    }
}

/// Status text of a finalized level.
pub fn level_name(level: i16) -> Option<String> {
    metadata_name(level).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Option<KafkaVersion> {
        KafkaVersion::parse(text)
    }

    #[test]
    fn versions_parse_from_tags() {
        assert_eq!(image_tag("apache/kafka:4.1.2"), "4.1.2");
        assert_eq!(image_tag("registry:5000/kafka"), "");
        assert_eq!(image_tag("registry:5000/kafka:4.0.2@sha256:ab"), "4.0.2");
        assert_eq!(
            v("4.1.2"),
            Some(KafkaVersion {
                major: 4,
                minor: 1,
                patch: 2
            })
        );
        assert_eq!(v("4.1"), v("4.1.0"));
        assert_eq!(v("4.1.2-rc1"), v("4.1.2"));
        assert_eq!(v("latest"), None);
        assert_eq!(v("4"), None);
        assert_eq!(v("4.1.2.3"), None);
        assert!(v("4.0.2") < v("4.1.0"));
        assert_eq!(v("4.0.2").unwrap().to_string(), "4.0.2");
    }

    #[test]
    fn levels_by_name_and_release() {
        assert_eq!(metadata_level("4.1-IV1"), Some(27));
        assert_eq!(metadata_level("4.0"), Some(25));
        assert_eq!(metadata_level("4.0.2"), Some(25));
        assert_eq!(metadata_level("4.0-IV1"), Some(23));
        assert_eq!(metadata_level("9.9"), None);
        assert_eq!(metadata_name(27), Some("4.1-IV1"));
        assert_eq!(metadata_name(99), None);
        assert!(v("4.0.0").unwrap().dynamic_quorum());
        assert!(!v("3.9.1").unwrap().dynamic_quorum());
        // Levels are listed in order, once each.
        assert!(METADATA_VERSIONS.windows(2).all(|w| w[0].0 + 1 == w[1].0));
    }

    fn input(versions: &[&str], finalized: i16) -> MetadataInput {
        MetadataInput {
            versions: versions.iter().map(|t| v(t)).collect(),
            settled: true,
            finalized: Some(finalized),
            supported_max: None,
            pin: None,
        }
    }

    #[test]
    fn raises_once_every_node_runs_the_new_release() {
        let all_new = input(&["4.1.2", "4.1.2", "4.1.2"], 25);
        assert_eq!(
            plan_metadata(&all_new),
            MetadataStep::Raise { from: 25, to: 27 }
        );
        // One node still on 4.0: 4.0's level, which the cluster has.
        assert_eq!(
            plan_metadata(&input(&["4.1.2", "4.0.2", "4.1.2"], 25)),
            MetadataStep::Current
        );
        // At the target: nothing.
        assert_eq!(plan_metadata(&input(&["4.1.2"], 27)), MetadataStep::Current);
        // A node of unknown version: never guessed.
        let mut unknown = all_new.clone();
        unknown.versions.push(None);
        assert_eq!(plan_metadata(&unknown), MetadataStep::Current);
        // Not read from Kafka: nothing.
        let mut unread = all_new.clone();
        unread.finalized = None;
        assert_eq!(plan_metadata(&unread), MetadataStep::Current);
    }

    #[test]
    fn waits_until_settled() {
        let mut rolling = input(&["4.1.2", "4.1.2"], 25);
        rolling.settled = false;
        let MetadataStep::Wait(why) = plan_metadata(&rolling) else {
            panic!("must wait")
        };
        assert!(why.contains("4.0-IV3 (level 25)"), "{why}");
        assert!(why.contains("4.1-IV1 (level 27)"), "{why}");
    }

    #[test]
    fn pins_and_support_cap_the_target() {
        let mut pinned = input(&["4.1.2"], 25);
        pinned.pin = Some("4.1-IV0".into());
        assert_eq!(
            plan_metadata(&pinned),
            MetadataStep::Raise { from: 25, to: 26 }
        );
        pinned.pin = Some("4.0".into());
        assert_eq!(plan_metadata(&pinned), MetadataStep::Current);
        // A pin above the release: the release's level.
        let mut above = input(&["4.0.2"], 24);
        above.pin = Some("4.1-IV1".into());
        assert_eq!(
            plan_metadata(&above),
            MetadataStep::Raise { from: 24, to: 25 }
        );
        pinned.pin = Some("4.7-IV9".into());
        assert!(matches!(plan_metadata(&pinned), MetadataStep::Wait(_)));
        let mut capped = input(&["4.1.2"], 25);
        capped.supported_max = Some(26);
        assert_eq!(
            plan_metadata(&capped),
            MetadataStep::Raise { from: 25, to: 26 }
        );
        // Never lowered.
        let mut lower = input(&["4.1.2"], 27);
        lower.pin = Some("4.0-IV3".into());
        assert_eq!(plan_metadata(&lower), MetadataStep::Current);
    }
}
