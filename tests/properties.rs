//! A broker's `server.properties` as a real JVM reads it (`java.util.Properties.load` from a
//! byte stream, as Kafka does): values with line breaks, backslashes, separators, leading
//! spaces and any Unicode read back exactly as the spec wrote them, and no value adds a key.
use std::collections::BTreeMap;

use pier::api::KafkaCluster;
use pier::reconcile::{Observed, Settings, plan};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

/// Prints every property as `key<TAB>UTF-16 code units in hex`, sorted by key.
const LOADER: &str = r#"
import java.io.*;
import java.util.*;
public class Load {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        try (InputStream in = new FileInputStream(args[0])) { p.load(in); }
        for (String k : new TreeSet<>(p.stringPropertyNames())) {
            StringBuilder sb = new StringBuilder();
            for (char c : p.getProperty(k).toCharArray()) sb.append(String.format("%04x", (int) c));
            System.out.println(k + "\t" + sb);
        }
    }
}
"#;

fn utf16_hex(s: &str) -> String {
    s.encode_utf16().map(|u| format!("{u:04x}")).collect()
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => any::<char>(),
            1 => prop::sample::select(&['\n', '\r', '\\', ' ', '\t', '\u{c}', '=', ':', '#', '!', 'é', '😀'][..]),
        ],
        0..16,
    )
    .prop_map(String::from_iter)
}

#[test]
fn a_jvm_reads_every_value_back_as_the_spec_wrote_it() -> anyhow::Result<()> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kafkacluster-basic.yaml");
    let mut kc: KafkaCluster = serde_yaml_ng::from_str(&std::fs::read_to_string(path)?)?;
    kc.metadata.namespace = Some("kafka".into());

    let mut values: Vec<String> = [
        "x\nnode.id=7",
        " leading space",
        "trailing backslash\\",
        "\\",
        "\r\n",
        "#not a comment",
        "a=b:c",
        "é€😀",
        "",
    ]
    .map(String::from)
    .to_vec();
    let mut runner = TestRunner::new(Config::default());
    let strategy = text();
    for _ in 0..300 {
        values.push(
            strategy
                .new_tree(&mut runner)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .current(),
        );
    }
    // Keys Kafka does not know are read-only: rendered into the file.
    for (i, v) in values.iter().enumerate() {
        kc.spec
            .kafka
            .read_only_config
            .insert(format!("com.example.v{i}"), v.clone());
    }
    let observed = Observed {
        pod_ips: BTreeMap::new(),
        external_address: Some("203.0.113.7".into()),
        cluster_id: Some("MkU3OEVBNTcwNTJENDM2Qk".into()),
        ..Observed::default()
    };
    let desired = plan(&kc, &observed, &Settings::default())?;
    let text = &desired.config_maps[0].data.as_ref().unwrap()["server.properties"];

    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("Load.java"), LOADER)?;
    std::fs::write(dir.path().join("server.properties"), text)?;
    let out = std::process::Command::new("java")
        .arg(dir.path().join("Load.java"))
        .arg(dir.path().join("server.properties"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "java: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: BTreeMap<String, String> = String::from_utf8(out.stdout)?
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();

    assert_eq!(
        read.get("node.id").map(String::as_str),
        Some(utf16_hex("0").as_str())
    );
    for (i, v) in values.iter().enumerate() {
        assert_eq!(
            read.get(&format!("com.example.v{i}")),
            Some(&utf16_hex(v)),
            "value {v:?} in\n{text}"
        );
    }
    // Exactly Pier's keys and the spec's: no value added one.
    let derived = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.starts_with("com.example."))
        .count();
    assert_eq!(read.len(), derived + values.len());
    Ok(())
}
