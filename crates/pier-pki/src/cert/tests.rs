use super::*;

const NOW: i64 = 1_800_000_000;

fn ca(cn: &str) -> CaMaterial {
    generate_ca(cn, 365, NOW).expect("CA")
}

fn request() -> LeafRequest {
    LeafRequest {
        common_name: "broker-2".into(),
        dns_names: vec![
            "broker-2.kafka.example.com".into(),
            "kafka-2.kafka-headless.ns.svc".into(),
        ],
        ip_addresses: vec!["10.0.0.7".parse().unwrap(), "fd00::7".parse().unwrap()],
        uris: vec!["spiffe://pier/ns/ns/kafkacluster/kafka".into()],
        server: true,
        client: true,
    }
}

#[test]
fn a_generated_ca_is_a_p256_ca_backdated_an_hour() {
    let ca = ca("kafka cluster CA");
    assert!(ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(ca.key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let info = CertInfo::parse(&ca.cert_pem).unwrap();
    assert!(info.is_ca);
    assert_eq!(info.subject_cn.as_deref(), Some("kafka cluster CA"));
    assert_eq!(info.issuer_cn.as_deref(), Some("kafka cluster CA"));
    assert_eq!(info.not_before, NOW - BACKDATE);
    assert_eq!(info.not_after, NOW + 365 * DAY);
    assert!(issued_by(&ca.cert_pem, &ca.cert_pem), "self-signed");
    assert!(key_matches(&ca.cert_pem, &ca.key_pem));
    let der = first_der(&ca.cert_pem).unwrap();
    let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
    let bc = x509.basic_constraints().unwrap().unwrap().value;
    assert_eq!(bc.path_len_constraint, Some(0));
    let ku = x509.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    assert_eq!(
        x509.public_key().algorithm.algorithm,
        x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
    );
}

#[test]
fn serials_are_random_and_at_least_64_bits() {
    let a = CertInfo::parse(&ca("a").cert_pem).unwrap();
    let b = CertInfo::parse(&ca("a").cert_pem).unwrap();
    assert_ne!(a.serial, b.serial);
    assert_eq!(a.serial.len(), 32, "{}", a.serial);
    assert!(
        a.serial
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_ne!(a.sha256, b.sha256);
    assert_eq!(a.sha256.len(), 64);
}

#[test]
fn an_issued_leaf_carries_the_request() {
    let ca = ca("cluster CA");
    let issuer = Issuer::load(&ca).unwrap();
    let leaf = issuer.issue(&request(), 90, NOW).unwrap();
    let info = CertInfo::parse(&leaf.cert_pem).unwrap();
    assert_eq!(info.subject_cn.as_deref(), Some("broker-2"));
    assert_eq!(info.issuer_cn.as_deref(), Some("cluster CA"));
    assert_eq!(info.dns_names, request().dns_names);
    assert_eq!(info.ip_addresses, request().ip_addresses);
    assert_eq!(info.uris, request().uris);
    assert!(info.server_auth && info.client_auth && !info.is_ca);
    assert_eq!(info.not_before, NOW - BACKDATE);
    assert_eq!(info.not_after, NOW + 90 * DAY);
    assert_eq!(leaf.serial, info.serial);
    assert_eq!(leaf.not_after, info.not_after);
    assert!(leaf.key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(key_matches(&leaf.cert_pem, &leaf.key_pem));
    assert!(issued_by(&leaf.cert_pem, &ca.cert_pem));
    let chain = parse_bundle(&leaf.chain_pem).unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0], info);
    assert_eq!(chain[1].pem, ca.cert_pem);
    let der = first_der(&leaf.cert_pem).unwrap();
    let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(x509.key_usage().unwrap().unwrap().value.digital_signature());
}

#[test]
fn usages_follow_the_request() {
    let issuer = Issuer::load(&ca("c")).unwrap();
    for (server, client) in [(true, false), (false, true), (false, false)] {
        let leaf = issuer
            .issue(
                &LeafRequest {
                    server,
                    client,
                    ..request()
                },
                1,
                NOW,
            )
            .unwrap();
        let info = CertInfo::parse(&leaf.cert_pem).unwrap();
        assert_eq!((info.server_auth, info.client_auth), (server, client));
    }
}

#[test]
fn two_leaves_for_one_request_differ_in_serial_and_key() {
    let issuer = Issuer::load(&ca("c")).unwrap();
    let a = issuer.issue(&request(), 30, NOW).unwrap();
    let b = issuer.issue(&request(), 30, NOW).unwrap();
    assert_ne!(a.serial, b.serial);
    assert_ne!(a.key_pem, b.key_pem);
    assert!(!key_matches(&a.cert_pem, &b.key_pem));
}

#[test]
fn another_ca_did_not_issue_a_leaf() {
    let (a, b) = (ca("same name"), ca("same name"));
    let leaf = Issuer::load(&a)
        .unwrap()
        .issue(&request(), 30, NOW)
        .unwrap();
    assert!(issued_by(&leaf.cert_pem, &a.cert_pem));
    assert!(
        !issued_by(&leaf.cert_pem, &b.cert_pem),
        "same name, other key"
    );
    assert!(!issued_by(&leaf.cert_pem, "garbage"));
    assert!(!issued_by("garbage", &a.cert_pem));
}

#[test]
fn loading_refuses_a_mismatched_key_a_non_ca_and_bad_pem() {
    let (a, b) = (ca("a"), ca("b"));
    let mismatched = CaMaterial {
        cert_pem: a.cert_pem.clone(),
        key_pem: b.key_pem.clone(),
    };
    assert_eq!(
        Issuer::load(&mismatched).unwrap_err().reason,
        Reason::KeyMismatch
    );
    let leaf = Issuer::load(&a)
        .unwrap()
        .issue(&request(), 30, NOW)
        .unwrap();
    let not_ca = CaMaterial {
        cert_pem: leaf.cert_pem.clone(),
        key_pem: leaf.key_pem.clone(),
    };
    assert_eq!(Issuer::load(&not_ca).unwrap_err().reason, Reason::NotCa);
    let bad = CaMaterial {
        cert_pem: "not pem".into(),
        key_pem: a.key_pem.clone(),
    };
    let err = Issuer::load(&bad).unwrap_err();
    assert_eq!(err.reason, Reason::NoCertificate);
    assert!(err.to_string().starts_with("CA certificate"), "{err}");
    let no_key = CaMaterial {
        cert_pem: a.cert_pem.clone(),
        key_pem: String::new(),
    };
    assert!(matches!(
        Issuer::load(&no_key).unwrap_err().reason,
        Reason::Key(_)
    ));
}

#[test]
fn a_sec1_key_is_refused_with_the_conversion_to_run() {
    let a = ca("a");
    // The same DER relabelled: the label alone decides, and the message says what to do.
    let der = pem::parse(&a.key_pem).unwrap();
    let sec1 = encode_pem("EC PRIVATE KEY", der.contents());
    let err = Issuer::load(&CaMaterial {
        cert_pem: a.cert_pem.clone(),
        key_pem: sec1,
    })
    .unwrap_err();
    assert!(err.to_string().contains("openssl pkcs8 -topk8"), "{err}");
}

#[test]
fn bad_pem_is_an_error_never_a_panic() {
    for bad in [
        "",
        "hello",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nMIIB\n",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ] {
        assert!(CertInfo::parse(bad).is_err(), "{bad:?}");
        assert!(parse_bundle(bad).is_err(), "{bad:?}");
        assert!(!key_matches(bad, bad));
        assert!(!issued_by(bad, bad));
    }
    let a = ca("a");
    let truncated = &a.cert_pem[..a.cert_pem.len() / 2];
    assert!(CertInfo::parse(truncated).is_err());
    assert!(!key_matches(
        &a.cert_pem,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    ));
}

#[test]
fn a_bundle_error_names_the_certificate() {
    let a = ca("a");
    let bad = format!(
        "{}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        a.cert_pem
    );
    let err = parse_bundle(&bad).unwrap_err();
    assert_eq!(err.context, "certificate #2");
    assert!(
        err.within("Secret kafka-ca key ca.crt")
            .to_string()
            .starts_with("Secret kafka-ca key ca.crt: certificate #2: invalid X.509")
    );
}

#[test]
fn parse_skips_keys_and_reads_bundles_in_order() {
    let (a, b) = (ca("a"), ca("b"));
    let keystore = format!("{}{}{}", a.key_pem, a.cert_pem, b.cert_pem);
    assert_eq!(
        CertInfo::parse(&keystore).unwrap().subject_cn.as_deref(),
        Some("a")
    );
    let all = parse_bundle(&keystore).unwrap();
    let names: Vec<_> = all.iter().map(|c| c.subject_cn.clone().unwrap()).collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn normalizing_drops_crlf_and_surrounding_text() {
    let (a, b) = (ca("a"), ca("b"));
    let messy = format!(
        "# cluster CA\r\n{}\r\n\r\nsome comment\n{}",
        a.cert_pem.replace('\n', "\r\n"),
        b.cert_pem
    );
    assert_eq!(
        normalize_bundle(&messy).unwrap(),
        format!("{}{}", a.cert_pem, b.cert_pem)
    );
    assert!(normalize_bundle("no certificate").is_err());
}

#[test]
fn a_name_that_is_not_ascii_is_an_error() {
    let issuer = Issuer::load(&ca("c")).unwrap();
    let err = issuer
        .issue(
            &LeafRequest {
                dns_names: vec!["bröker.example".into()],
                ..request()
            },
            30,
            NOW,
        )
        .unwrap_err();
    assert!(err.to_string().contains("bröker.example"), "{err}");
}

#[test]
fn time_out_of_range_is_an_error() {
    assert!(matches!(
        generate_ca("c", 30, i64::MAX / 2).unwrap_err().reason,
        Reason::Time(_)
    ));
}

#[test]
fn zero_validity_days_still_yields_a_day() {
    let info = CertInfo::parse(&generate_ca("c", 0, NOW).unwrap().cert_pem).unwrap();
    assert_eq!(info.not_after, NOW + DAY);
}

#[test]
fn debug_never_prints_private_keys() {
    let a = ca("a");
    let leaf = Issuer::load(&a)
        .unwrap()
        .issue(&request(), 30, NOW)
        .unwrap();
    assert!(!format!("{a:?}").contains("PRIVATE KEY"));
    assert!(!format!("{leaf:?}").contains("PRIVATE KEY"));
}
