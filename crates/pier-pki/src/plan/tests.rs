use super::*;
use crate::cert::{CertInfo, LeafRequest, generate_ca, issued_by, key_matches, parse_bundle};

const NOW: i64 = 1_800_000_000;

fn generated(cn: &str) -> CaInput {
    CaInput {
        common_name: cn.into(),
        source: CaSource::Generated { private: None },
        public: None,
        validity_days: 365,
        renew_before_days: 30,
        force_renew: false,
    }
}

fn request(name: &str, server: bool, client: bool) -> LeafRequest {
    LeafRequest {
        common_name: name.into(),
        dns_names: vec![format!("{name}.kafka-headless.ns.svc")],
        ip_addresses: vec![],
        uris: vec![],
        server,
        client,
    }
}

fn leaf(name: &str, issuer: CaKind, trust: &[CaKind]) -> LeafInput {
    LeafInput {
        secret_name: name.into(),
        request: request(name, issuer == CaKind::Cluster, true),
        issuer,
        trust: trust.to_vec(),
        current: None,
        extra: SecretData::new(),
        validity_days: 400,
        renew_before_days: 30,
        served_serial: Served::NotRunning,
    }
}

use CaKind::{Clients, Cluster};

/// Two brokers and Envoy (cluster CA; brokers also trust the clients CA for mTLS) and the
/// operator's client certificate (clients CA, trusting the cluster CA).
fn input() -> PkiInput {
    PkiInput {
        now: NOW,
        cluster_ca: generated("kafka cluster CA"),
        clients_ca: generated("kafka clients CA"),
        leaves: vec![
            leaf("broker-0", Cluster, &[Cluster, Clients]),
            leaf("broker-1", Cluster, &[Cluster, Clients]),
            leaf("envoy", Cluster, &[Cluster]),
            leaf("operator", Clients, &[Cluster]),
        ],
    }
}

fn ca_mut(input: &mut PkiInput, kind: CaKind) -> &mut CaInput {
    match kind {
        Cluster => &mut input.cluster_ca,
        Clients => &mut input.clients_ca,
    }
}

/// Feeds a plan's writes back into the input, as the operator would; panics on a write to a
/// user-provided CA Secret.
fn apply(input: &mut PkiInput, plan: &PkiPlan) {
    for write in &plan.writes {
        match &write.role {
            SecretRole::CaPrivate(kind) => match &mut ca_mut(input, *kind).source {
                CaSource::Generated { private } => *private = Some(write.data.clone()),
                CaSource::Provided { .. } => panic!("wrote the user-provided {kind} CA Secret"),
            },
            SecretRole::CaPublic(kind) => ca_mut(input, *kind).public = Some(write.data.clone()),
            SecretRole::Leaf(name) => {
                let leaf = input
                    .leaves
                    .iter_mut()
                    .find(|l| &l.secret_name == name)
                    .expect("a known leaf");
                leaf.current = Some(write.data.clone());
            }
        }
    }
}

/// Every running leaf owner now serves what its Secret holds.
fn serve_all(input: &mut PkiInput) {
    for leaf in &mut input.leaves {
        let serial = leaf_cert(leaf).map(|c| c.serial);
        leaf.served_serial = Served::Running(serial);
    }
}

/// Every leaf owner runs and still serves what it served before (its Secret's current serial).
fn run_all(input: &mut PkiInput) {
    serve_all(input);
}

fn leaf_cert(leaf: &LeafInput) -> Option<CertInfo> {
    CertInfo::parse(leaf.current.as_ref()?.get(TLS_CRT)?).ok()
}

fn leaf_named<'a>(input: &'a PkiInput, name: &str) -> &'a LeafInput {
    input.leaves.iter().find(|l| l.secret_name == name).unwrap()
}

fn serial_of(input: &PkiInput, name: &str) -> String {
    leaf_cert(leaf_named(input, name)).unwrap().serial
}

fn written_leaves(plan: &PkiPlan) -> Vec<String> {
    plan.writes
        .iter()
        .filter_map(|w| match &w.role {
            SecretRole::Leaf(name) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn roles(plan: &PkiPlan) -> Vec<SecretRole> {
    plan.writes.iter().map(|w| w.role.clone()).collect()
}

fn private(input: &PkiInput, kind: CaKind) -> SecretData {
    match &match kind {
        Cluster => &input.cluster_ca,
        Clients => &input.clients_ca,
    }
    .source
    {
        CaSource::Generated { private } => private.clone().unwrap(),
        CaSource::Provided { .. } => panic!("provided"),
    }
}

fn public_bundle(input: &PkiInput, kind: CaKind) -> Vec<CertInfo> {
    let public = match kind {
        Cluster => &input.cluster_ca.public,
        Clients => &input.clients_ca.public,
    };
    parse_bundle(&public.as_ref().unwrap()[CA_CRT]).unwrap()
}

fn ca_status(plan: &PkiPlan, kind: CaKind) -> &CaStatus {
    plan.status.cas.iter().find(|c| c.kind == kind).unwrap()
}

fn leaf_status<'a>(plan: &'a PkiPlan, name: &str) -> &'a LeafStatus {
    plan.status
        .leaves
        .iter()
        .find(|l| l.secret_name == name)
        .unwrap()
}

/// Plans and applies until nothing is written (every owner serving what it has), at most 10 times.
fn converge(input: &mut PkiInput) -> Vec<PkiPlan> {
    let mut plans = Vec::new();
    for _ in 0..10 {
        serve_all(input);
        let plan = plan(input);
        apply(input, &plan);
        let done = plan.writes.is_empty();
        plans.push(plan);
        if done {
            return plans;
        }
    }
    panic!("no convergence in 10 plans");
}

/// A settled cluster: both CAs generated, every leaf issued and served.
fn settled() -> PkiInput {
    let mut input = input();
    converge(&mut input);
    input
}

fn events(plan: &PkiPlan) -> String {
    plan.events.join("\n")
}

// ---------------------------------------------------------------------------------------------
// A fresh cluster, and nothing to do when nothing changed.

#[test]
fn a_fresh_cluster_gets_both_cas_and_every_leaf() {
    let mut input = input();
    let plan = plan(&input);
    assert_eq!(
        roles(&plan),
        [
            SecretRole::CaPrivate(Cluster),
            SecretRole::CaPrivate(Clients),
            SecretRole::CaPublic(Cluster),
            SecretRole::CaPublic(Clients),
            SecretRole::Leaf("broker-0".into()),
            SecretRole::Leaf("broker-1".into()),
            SecretRole::Leaf("envoy".into()),
            SecretRole::Leaf("operator".into()),
        ]
    );
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    assert!(events(&plan).contains("generated the cluster CA"));
    assert!(events(&plan).contains("generated the clients CA"));
    assert!(events(&plan).contains("issued certificate for broker-0 (new)"));
    apply(&mut input, &plan);

    let cluster = private(&input, Cluster);
    assert_eq!(
        cluster.keys().collect::<Vec<_>>(),
        [CA_CRT, CA_KEY],
        "no phase, no old CA"
    );
    assert!(key_matches(&cluster[CA_CRT], &cluster[CA_KEY]));
    let cluster_ca = CertInfo::parse(&cluster[CA_CRT]).unwrap();
    assert_eq!(cluster_ca.subject_cn.as_deref(), Some("kafka cluster CA"));
    let clients_ca = CertInfo::parse(&private(&input, Clients)[CA_CRT]).unwrap();
    assert_eq!(public_bundle(&input, Cluster), vec![cluster_ca.clone()]);
    assert_eq!(public_bundle(&input, Clients), vec![clients_ca.clone()]);

    let broker = leaf_named(&input, "broker-0").current.clone().unwrap();
    assert_eq!(
        broker.keys().collect::<Vec<_>>(),
        [KEYSTORE, TLS_CRT, TLS_KEY, TRUSTSTORE]
    );
    let chain = parse_bundle(&broker[TLS_CRT]).unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], cluster_ca);
    assert!(issued_by(&broker[TLS_CRT], &cluster[CA_CRT]));
    assert!(broker[TLS_KEY].starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(key_matches(&broker[TLS_CRT], &broker[TLS_KEY]));
    assert_eq!(
        broker[KEYSTORE],
        format!("{}{}", broker[TLS_KEY], broker[TLS_CRT])
    );
    assert_eq!(
        broker[TRUSTSTORE],
        format!("{}{}", cluster_ca.pem, clients_ca.pem)
    );
    assert_eq!(chain[0].dns_names, ["broker-0.kafka-headless.ns.svc"]);
    assert!(chain[0].server_auth && chain[0].client_auth);

    let operator = leaf_named(&input, "operator").current.clone().unwrap();
    assert!(issued_by(
        &operator[TLS_CRT],
        &private(&input, Clients)[CA_CRT]
    ));
    assert_eq!(operator[TRUSTSTORE], cluster_ca.pem);
    let op = CertInfo::parse(&operator[TLS_CRT]).unwrap();
    assert!(!op.server_auth && op.client_auth);

    let status = leaf_status(&plan, "broker-0");
    assert_eq!(status.serial.as_deref(), Some(chain[0].serial.as_str()));
    assert_eq!(
        status.issuer_serial.as_deref(),
        Some(cluster_ca.serial.as_str())
    );
    assert!(status.served, "not running: served when it starts");
    assert_eq!(
        ca_status(&plan, Cluster).serial,
        Some(cluster_ca.serial.clone())
    );
    assert_eq!(ca_status(&plan, Cluster).phase, CaPhase::Normal);
    assert_eq!(
        ca_status(&plan, Clients).trusted_serials,
        vec![clients_ca.serial.clone()]
    );
    assert!(!plan.waiting, "nothing runs, nothing rotates");
}

#[test]
fn an_unchanged_input_plans_nothing() {
    let mut input = input();
    let first = plan(&input);
    apply(&mut input, &first);
    let second = plan(&input);
    assert!(second.writes.is_empty(), "{:?}", second.writes);
    assert!(second.events.is_empty(), "{:?}", second.events);
    assert!(second.errors.is_empty());
    assert!(!second.waiting);
    assert_eq!(second.status.leaves, first.status.leaves);
    assert_eq!(second.status.cas, first.status.cas);
    // And again, now that every broker runs and serves its certificate.
    serve_all(&mut input);
    let third = plan(&input);
    assert!(third.writes.is_empty(), "{:?}", third.writes);
    assert!(!third.waiting);
    assert!(third.status.leaves.iter().all(|l| l.served));
}

#[test]
fn an_empty_phase_is_normal_and_not_rewritten() {
    let mut input = settled();
    if let CaSource::Generated { private: Some(p) } = &mut input.cluster_ca.source {
        p.insert(PHASE.into(), String::new());
    }
    assert!(plan(&input).writes.is_empty());
}

#[test]
fn a_stale_old_ca_in_normal_phase_is_removed_without_touching_leaves() {
    let mut input = settled();
    let stale = generate_ca("stale", 10, NOW).unwrap();
    if let CaSource::Generated { private: Some(p) } = &mut input.cluster_ca.source {
        p.insert(CA_OLD_CRT.into(), stale.cert_pem);
        p.insert(CA_OLD_KEY.into(), stale.key_pem);
    }
    let plan = plan(&input);
    assert_eq!(roles(&plan), [SecretRole::CaPrivate(Cluster)]);
    assert_eq!(
        plan.writes[0].data.keys().collect::<Vec<_>>(),
        [CA_CRT, CA_KEY]
    );
}

// ---------------------------------------------------------------------------------------------
// Leaves: when they are (re)issued.

#[test]
fn a_missing_leaf_secret_is_issued_alone() {
    let mut input = settled();
    input.leaves[1].current = None;
    let plan = plan(&input);
    assert_eq!(written_leaves(&plan), ["broker-1"]);
    assert_eq!(plan.writes.len(), 1);
    assert!(events(&plan).contains("issued certificate for broker-1 (new)"));
}

#[test]
fn a_new_leaf_in_a_settled_cluster_is_issued_alone() {
    let mut input = settled();
    input
        .leaves
        .push(leaf("broker-2", Cluster, &[Cluster, Clients]));
    let plan = plan(&input);
    assert_eq!(roles(&plan), [SecretRole::Leaf("broker-2".into())]);
}

#[test]
fn an_unreadable_leaf_is_reissued_never_a_panic() {
    for bad in [
        "",
        "garbage",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ] {
        let mut input = settled();
        input.leaves[0]
            .current
            .as_mut()
            .unwrap()
            .insert(TLS_CRT.into(), bad.into());
        let plan = plan(&input);
        assert_eq!(written_leaves(&plan), ["broker-0"], "{bad:?}");
        assert!(
            events(&plan).contains("tls.crt unreadable"),
            "{bad:?}: {:?}",
            plan.events
        );
    }
    let mut input = settled();
    input.leaves[0].current.as_mut().unwrap().remove(TLS_CRT);
    assert!(events(&plan(&input)).contains("tls.crt missing"));
}

#[test]
fn a_wrong_or_missing_key_or_a_stale_keystore_reissues() {
    let other = leaf_named(&settled(), "envoy").current.clone().unwrap();
    type Edit = Box<dyn Fn(&mut SecretData)>;
    let edits: Vec<(Edit, &str)> = vec![
        (
            Box::new(move |d: &mut SecretData| {
                d.insert(TLS_KEY.into(), other[TLS_KEY].clone());
            }),
            "tls.key missing or not the certificate's key",
        ),
        (
            Box::new(|d: &mut SecretData| {
                d.remove(TLS_KEY);
            }),
            "tls.key missing",
        ),
        (
            Box::new(|d: &mut SecretData| {
                d.insert(KEYSTORE.into(), "old".into());
            }),
            "keystore.pem out of date",
        ),
        (
            Box::new(|d: &mut SecretData| {
                d.remove(KEYSTORE);
            }),
            "keystore.pem out of date",
        ),
    ];
    for (edit, reason) in edits {
        let mut input = settled();
        let before = serial_of(&input, "broker-0");
        edit(input.leaves[0].current.as_mut().unwrap());
        let plan = plan(&input);
        assert_eq!(written_leaves(&plan), ["broker-0"]);
        assert!(
            events(&plan).contains(reason),
            "{reason}: {:?}",
            plan.events
        );
        apply(&mut input, &plan);
        assert_ne!(serial_of(&input, "broker-0"), before);
    }
}

#[test]
fn a_leaf_is_renewed_exactly_when_its_window_opens() {
    let mut input = input();
    input.cluster_ca.validity_days = 1000;
    input.clients_ca.validity_days = 1000;
    converge(&mut input);
    let not_after = leaf_cert(&input.leaves[0]).unwrap().not_after;
    let window = 30 * DAY;
    let mut before = input.clone();
    before.now = not_after - window - 1;
    let plan_before = plan(&before);
    assert!(plan_before.writes.is_empty(), "{:?}", plan_before.events);
    let mut at = input.clone();
    at.now = not_after - window;
    let plan_at = plan(&at);
    // Every leaf was issued at the same `now` with the same validity: all are due.
    assert_eq!(
        written_leaves(&plan_at),
        ["broker-0", "broker-1", "envoy", "operator"]
    );
    assert!(
        events(&plan_at)
            .contains("issued certificate for broker-0 (renewal due: expires in 30 days)"),
        "{:?}",
        plan_at.events
    );
    let mut expired = input.clone();
    expired.now = not_after + 1;
    let plan_expired = plan(&expired);
    assert!(events(&plan_expired).contains("renewal due: expired"));
    // The renewed leaf starts a new validity from now.
    let mut renewed = at.clone();
    apply(&mut renewed, &plan_at);
    assert_eq!(
        leaf_cert(&renewed.leaves[0]).unwrap().not_after,
        at.now + 400 * DAY
    );
    assert!(plan(&renewed).writes.is_empty());
}

#[test]
fn a_renewal_window_as_long_as_the_validity_never_loops() {
    let mut input = input();
    for leaf in &mut input.leaves {
        leaf.validity_days = 10;
        leaf.renew_before_days = 30;
    }
    input.cluster_ca.validity_days = 20;
    input.cluster_ca.renew_before_days = 90;
    let plans = converge(&mut input);
    assert_eq!(
        plans.len(),
        2,
        "{:?}",
        plans.iter().map(|p| &p.events).collect::<Vec<_>>()
    );
    let errors = &plans[1].errors;
    assert_eq!(errors.len(), 5, "{errors:?}");
    assert_eq!(
        errors[0],
        "cluster CA: renewBeforeDays (90) is not less than validityDays (20): renewed one day after issuance"
    );
    assert!(
        errors[1].starts_with("certificate broker-0: renewBeforeDays (30)"),
        "{errors:?}"
    );
    // Renewed one day before expiry (the window shrinks to validity - 1 day).
    let not_after = leaf_cert(&input.leaves[0]).unwrap().not_after;
    input.now = not_after - DAY;
    assert_eq!(written_leaves(&plan(&input)).len(), 4);
}

#[test]
fn a_new_san_reissues_and_says_which() {
    let mut input = settled();
    input.leaves[1]
        .request
        .dns_names
        .push("broker-1.kafka.example.com".into());
    let plan = plan(&input);
    assert_eq!(written_leaves(&plan), ["broker-1"]);
    assert_eq!(
        plan.events,
        ["issued certificate for broker-1 (new SAN broker-1.kafka.example.com)"]
    );
    let mut after = input.clone();
    apply(&mut after, &plan);
    assert_eq!(
        leaf_cert(&after.leaves[1]).unwrap().dns_names,
        [
            "broker-1.kafka-headless.ns.svc",
            "broker-1.kafka.example.com"
        ]
    );
    assert!(super::plan(&after).writes.is_empty());
}

#[test]
fn removed_sans_ips_uris_cn_and_usages_each_reissue() {
    type Edit = fn(&mut LeafRequest);
    let cases: [(Edit, &str); 6] = [
        (
            |r| r.dns_names.clear(),
            "SAN removed: broker-0.kafka-headless.ns.svc",
        ),
        (
            |r| r.ip_addresses.push("10.1.2.3".parse().unwrap()),
            "new SAN 10.1.2.3",
        ),
        (
            |r| r.uris.push("spiffe://pier/ns/ns/kafkacluster/kafka".into()),
            "new SAN spiffe://pier/ns/ns/kafkacluster/kafka",
        ),
        (
            |r| r.common_name = "kafka-0".into(),
            "new common name kafka-0",
        ),
        (|r| r.client = false, "key usages changed"),
        (|r| r.server = false, "key usages changed"),
    ];
    for (edit, reason) in cases {
        let mut input = settled();
        edit(&mut input.leaves[0].request);
        let plan = plan(&input);
        assert_eq!(written_leaves(&plan), ["broker-0"], "{reason}");
        assert!(
            events(&plan).contains(reason),
            "{reason}: {:?}",
            plan.events
        );
        apply(&mut input, &plan);
        assert!(super::plan(&input).writes.is_empty(), "{reason}");
    }
}

#[test]
fn san_order_and_duplicates_do_not_reissue() {
    let mut input = settled();
    let r = &mut input.leaves[0].request;
    r.dns_names.push(r.dns_names[0].clone());
    r.dns_names.reverse();
    assert!(plan(&input).writes.is_empty());
}

#[test]
fn extra_keys_pass_through_and_any_change_carries_a_new_serial() {
    let mut input = settled();
    let before = serial_of(&input, "broker-0");
    input.leaves[0]
        .extra
        .insert("other-ca.crt".into(), "some CA text".into());
    let plan1 = plan(&input);
    assert_eq!(written_leaves(&plan1), ["broker-0"]);
    assert!(events(&plan1).contains("keys changed: other-ca.crt"));
    assert_eq!(plan1.writes[0].data["other-ca.crt"], "some CA text");
    apply(&mut input, &plan1);
    let after = serial_of(&input, "broker-0");
    assert_ne!(after, before);
    assert!(plan(&input).writes.is_empty());
    // Changed value, then removed: each a new serial.
    input.leaves[0]
        .extra
        .insert("other-ca.crt".into(), "changed".into());
    let plan2 = plan(&input);
    apply(&mut input, &plan2);
    assert_ne!(serial_of(&input, "broker-0"), after);
    input.leaves[0].extra.clear();
    let plan3 = plan(&input);
    assert!(events(&plan3).contains("keys changed: other-ca.crt"));
    assert!(!plan3.writes[0].data.contains_key("other-ca.crt"));
}

#[test]
fn extra_keys_never_override_the_managed_ones() {
    let mut input = input();
    input.leaves[0]
        .extra
        .insert(TLS_CRT.into(), "not a certificate".into());
    let mut plans = converge(&mut input);
    let last = plans.pop().unwrap();
    assert!(last.writes.is_empty());
    assert_eq!(
        last.errors,
        ["Secret broker-0: extra key tls.crt ignored: Pier writes it"]
    );
    assert!(leaf_cert(&input.leaves[0]).is_some());
}

#[test]
fn a_second_leaf_for_one_secret_is_refused() {
    let mut input = input();
    let mut twin = leaf("broker-0", Clients, &[]);
    twin.request.dns_names = vec!["twin.example".into()];
    input.leaves.push(twin);
    let plans = converge(&mut input);
    let first = &plans[0];
    assert_eq!(
        written_leaves(first),
        ["broker-0", "broker-1", "envoy", "operator"]
    );
    assert_eq!(
        first.errors,
        ["two certificates for Secret broker-0: only the first is managed"]
    );
    assert_eq!(first.status.leaves.len(), 5);
    assert!(first.status.leaves[4].pending_reason.is_some());
    assert_eq!(plans.len(), 2, "the first one wins, no flapping");
    // The refused twin (issued by the clients CA) holds no rotation back.
    input.clients_ca.force_renew = true;
    let mut phases = Vec::new();
    for _ in 0..4 {
        serve_all(&mut input);
        let p = plan(&input);
        input.clients_ca.force_renew = false;
        phases.push(ca_status(&p, Clients).phase);
        apply(&mut input, &p);
    }
    assert_eq!(
        phases,
        [
            CaPhase::TrustBoth,
            CaPhase::Reissue,
            CaPhase::DropOld,
            CaPhase::Normal
        ]
    );
    assert!(issued_by(
        &leaf_named(&input, "broker-0").current.as_ref().unwrap()[TLS_CRT],
        &private(&input, Cluster)[CA_CRT]
    ));
}

#[test]
fn a_tampered_truststore_reissues_with_a_new_serial() {
    let mut input = settled();
    let before = serial_of(&input, "envoy");
    input.leaves[2]
        .current
        .as_mut()
        .unwrap()
        .insert(TRUSTSTORE.into(), String::new());
    let plan = plan(&input);
    assert_eq!(written_leaves(&plan), ["envoy"]);
    assert!(events(&plan).contains("trust bundle changed"));
    apply(&mut input, &plan);
    assert_ne!(serial_of(&input, "envoy"), before);
}

#[test]
fn a_leaf_trusting_a_kind_twice_gets_its_bundle_once() {
    let mut input = input();
    input.leaves[2].trust = vec![Cluster, Cluster];
    converge(&mut input);
    let envoy = leaf_named(&input, "envoy").current.clone().unwrap();
    assert_eq!(parse_bundle(&envoy[TRUSTSTORE]).unwrap().len(), 1);
}

#[test]
fn a_leaf_trusting_nothing_gets_an_empty_truststore() {
    let mut input = input();
    input.leaves[2].trust.clear();
    converge(&mut input);
    assert_eq!(
        leaf_named(&input, "envoy").current.as_ref().unwrap()[TRUSTSTORE],
        ""
    );
}

#[test]
fn a_leaf_not_issued_by_the_current_ca_is_reissued() {
    let mut input = settled();
    // Another cluster CA's leaf in broker-0's Secret (same names, other key).
    let mut other = input.clone();
    other.cluster_ca.source = CaSource::Generated { private: None };
    other.leaves[0].current = None;
    let other_plan = plan(&other);
    apply(&mut other, &other_plan);
    input.leaves[0].current = other.leaves[0].current.clone();
    let plan = plan(&input);
    assert_eq!(written_leaves(&plan), ["broker-0"]);
    assert!(events(&plan).contains("not issued by the current cluster CA"));
}

#[test]
fn a_name_that_cannot_be_certified_is_an_error_and_the_others_go_on() {
    let mut input = input();
    input.leaves[1].request.dns_names = vec!["bröker.example".into()];
    let plan = plan(&input);
    assert_eq!(written_leaves(&plan), ["broker-0", "envoy", "operator"]);
    assert_eq!(plan.errors.len(), 1, "{:?}", plan.errors);
    assert!(plan.errors[0].contains("broker-1") && plan.errors[0].contains("bröker.example"));
    let status = leaf_status(&plan, "broker-1");
    assert!(status.serial.is_none() && !status.served);
    assert!(
        status
            .pending_reason
            .as_ref()
            .unwrap()
            .contains("bröker.example")
    );
}

// ---------------------------------------------------------------------------------------------
// Served or not.

#[test]
fn served_means_the_running_owner_serves_the_secrets_serial() {
    let mut input = settled();
    let serial = serial_of(&input, "broker-0");
    input.leaves[0].served_serial = Served::Running(Some(serial.to_uppercase()));
    input.leaves[1].served_serial = Served::Running(Some("abcd".into()));
    input.leaves[2].served_serial = Served::Running(None);
    input.leaves[3].served_serial = Served::NotRunning;
    let plan = plan(&input);
    assert!(plan.writes.is_empty());
    assert!(leaf_status(&plan, "broker-0").served);
    assert!(leaf_status(&plan, "broker-0").pending_reason.is_none());
    let b1 = leaf_status(&plan, "broker-1");
    assert!(!b1.served);
    assert_eq!(
        b1.pending_reason.as_deref(),
        Some(
            format!(
                "serves serial abcd, the Secret holds {}",
                serial_of(&input, "broker-1")
            )
            .as_str()
        )
    );
    assert!(!leaf_status(&plan, "envoy").served);
    assert!(leaf_status(&plan, "operator").served);
    assert!(plan.waiting, "a running owner serves an old certificate");
}

#[test]
fn a_new_certificate_is_pending_until_served() {
    let mut input = settled();
    run_all(&mut input);
    input.leaves[0].request.dns_names.push("new.example".into());
    let plan1 = plan(&input);
    let status = leaf_status(&plan1, "broker-0");
    assert!(!status.served);
    assert!(
        status
            .pending_reason
            .as_ref()
            .unwrap()
            .starts_with("waiting to see serial")
    );
    assert!(plan1.waiting);
    apply(&mut input, &plan1);
    // The broker has not reloaded yet: nothing to write, still waiting.
    let plan2 = plan(&input);
    assert!(plan2.writes.is_empty());
    assert!(plan2.waiting);
    serve_all(&mut input);
    let plan3 = plan(&input);
    assert!(!plan3.waiting);
    assert!(leaf_status(&plan3, "broker-0").served);
}

#[test]
fn serials_compare_whatever_their_format() {
    assert_eq!(normalize_serial("00:AB:01"), "ab01");
    assert_eq!(normalize_serial("ab01"), "ab01");
    assert_eq!(normalize_serial("0x"), "0x");
    assert_eq!(normalize_serial("fff"), "0fff");
    assert_eq!(normalize_serial("00"), "00");
    let mut input = settled();
    let serial = serial_of(&input, "broker-0");
    let colons: Vec<String> = serial
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8(c.to_vec()).unwrap().to_uppercase())
        .collect();
    input.leaves[0].served_serial = Served::Running(Some(format!("00:{}", colons.join(":"))));
    assert!(leaf_status(&plan(&input), "broker-0").served);
}

// ---------------------------------------------------------------------------------------------
// Status.

#[test]
fn earliest_expiry_is_the_first_certificate_to_expire() {
    let mut input = input();
    input.leaves[2].validity_days = 40;
    input.clients_ca.validity_days = 100;
    let plans = converge(&mut input);
    let first = &plans[0];
    assert_eq!(first.status.earliest_expiry, Some(NOW + 40 * DAY));
    input.leaves.remove(2);
    assert_eq!(plan(&input).status.earliest_expiry, Some(NOW + 100 * DAY));
    assert_eq!(
        ca_status(&plan(&input), Clients).not_after,
        Some(NOW + 100 * DAY)
    );
}

// ---------------------------------------------------------------------------------------------
// User-provided CAs.

fn provided(ca: &crate::CaMaterial) -> CaInput {
    CaInput {
        source: CaSource::Provided {
            secret: Some(SecretData::from([
                (CA_CRT.to_string(), ca.cert_pem.clone()),
                (CA_KEY.to_string(), ca.key_pem.clone()),
            ])),
        },
        ..generated("ignored")
    }
}

fn provided_secret(input: &mut PkiInput, kind: CaKind) -> &mut Option<SecretData> {
    match &mut ca_mut(input, kind).source {
        CaSource::Provided { secret } => secret,
        CaSource::Generated { .. } => panic!("generated"),
    }
}

#[test]
fn a_provided_ca_issues_and_is_never_written() {
    let user = generate_ca("user CA", 3650, NOW - 100 * DAY).unwrap();
    let mut input = input();
    input.cluster_ca = provided(&user);
    input.cluster_ca.force_renew = true;
    input.now = NOW + 3000 * DAY; // far into its renewal window: Pier still never touches it
    let plan1 = plan(&input);
    assert!(
        !roles(&plan1).contains(&SecretRole::CaPrivate(Cluster)),
        "{:?}",
        roles(&plan1)
    );
    assert!(roles(&plan1).contains(&SecretRole::CaPublic(Cluster)));
    assert_eq!(plan1.forced, [Cluster]);
    assert!(events(&plan1).contains("user-provided"));
    apply(&mut input, &plan1); // panics on any write to the provided Secret
    assert_eq!(
        input.cluster_ca.public.as_ref().unwrap()[CA_CRT],
        user.cert_pem
    );
    let broker = leaf_named(&input, "broker-0").current.clone().unwrap();
    assert!(issued_by(&broker[TLS_CRT], &user.cert_pem));
    assert!(broker[TRUSTSTORE].starts_with(&user.cert_pem));
    let status = ca_status(&plan1, Cluster);
    assert!(status.provided);
    assert_eq!(status.phase, CaPhase::Normal);
    // Whatever happens next, no write to it either.
    for _ in 0..3 {
        serve_all(&mut input);
        let next = plan(&input);
        assert!(!roles(&next).contains(&SecretRole::CaPrivate(Cluster)));
        apply(&mut input, &next);
    }
    assert!(plan(&input).writes.is_empty());
}

#[test]
fn a_provided_bundle_is_trusted_whole_and_copied_to_the_public_secret() {
    let (a, b) = (
        generate_ca("user A", 365, NOW).unwrap(),
        generate_ca("user B", 365, NOW).unwrap(),
    );
    let mut input = input();
    input.clients_ca = provided(&a);
    provided_secret(&mut input, Clients)
        .as_mut()
        .unwrap()
        .insert(
            CA_CRT.into(),
            format!("{}\r\n{}", a.cert_pem.replace('\n', "\r\n"), b.cert_pem),
        );
    converge(&mut input);
    let bundle = format!("{}{}", a.cert_pem, b.cert_pem);
    assert_eq!(input.clients_ca.public.as_ref().unwrap()[CA_CRT], bundle);
    let broker = leaf_named(&input, "broker-0").current.clone().unwrap();
    assert!(broker[TRUSTSTORE].ends_with(&bundle));
    let operator = leaf_named(&input, "operator").current.clone().unwrap();
    assert!(
        issued_by(&operator[TLS_CRT], &a.cert_pem),
        "the first certificate issues"
    );
    let plan = plan(&input);
    assert_eq!(ca_status(&plan, Clients).trusted_serials.len(), 2);
}

#[test]
fn a_missing_provided_ca_is_an_error_and_no_leaf_is_issued() {
    let mut input = input();
    input.cluster_ca.source = CaSource::Provided { secret: None };
    let plan = plan(&input);
    assert_eq!(plan.errors, ["cluster CA Secret (user-provided) not found"]);
    // The operator's leaf trusts the cluster CA: blocked too. Nothing but the clients CA written.
    assert_eq!(
        roles(&plan),
        [
            SecretRole::CaPrivate(Clients),
            SecretRole::CaPublic(Clients)
        ]
    );
    for leaf in &plan.status.leaves {
        assert!(
            leaf.pending_reason
                .as_ref()
                .unwrap()
                .contains("cluster CA Secret (user-provided) not found"),
            "{leaf:?}"
        );
        assert!(leaf.serial.is_none());
    }
    assert_eq!(ca_status(&plan, Cluster).serial, None);
}

#[test]
fn a_provided_ca_that_turns_unreadable_leaves_the_leaves_alone() {
    let user = generate_ca("user CA", 365, NOW).unwrap();
    let mut input = input();
    input.cluster_ca = provided(&user);
    converge(&mut input);
    for bad in [
        SecretData::new(),
        SecretData::from([(CA_CRT.to_string(), "garbage".to_string())]),
    ] {
        let mut broken = input.clone();
        *provided_secret(&mut broken, Cluster) = Some(bad.clone());
        broken.leaves[0]
            .request
            .dns_names
            .push("new.example".into());
        let plan = plan(&broken);
        assert!(plan.writes.is_empty(), "{bad:?}: {:?}", plan.writes);
        assert_eq!(plan.errors.len(), 1, "{:?}", plan.errors);
        assert!(plan.errors[0].starts_with("cluster CA Secret (user-provided)"));
        let status = leaf_status(&plan, "broker-0");
        assert!(
            status
                .pending_reason
                .as_ref()
                .unwrap()
                .starts_with("cannot issue")
        );
        assert_eq!(status.serial, Some(serial_of(&input, "broker-0")), "kept");
    }
}

#[test]
fn a_provided_ca_without_a_usable_key_trusts_but_cannot_issue() {
    let user = generate_ca("user CA", 365, NOW).unwrap();
    let other = generate_ca("other", 365, NOW).unwrap();
    for key in [
        None,
        Some(other.key_pem.clone()),
        Some("garbage".to_string()),
    ] {
        let mut input = input();
        input.clients_ca = provided(&user);
        let secret = provided_secret(&mut input, Clients).as_mut().unwrap();
        match &key {
            None => {
                secret.remove(CA_KEY);
            }
            Some(k) => {
                secret.insert(CA_KEY.into(), k.clone());
            }
        }
        let plan = plan(&input);
        // Brokers trust the clients CA and are issued by the cluster CA: fine.
        assert_eq!(
            written_leaves(&plan),
            ["broker-0", "broker-1", "envoy"],
            "{key:?}"
        );
        assert_eq!(plan.errors.len(), 1, "{key:?}: {:?}", plan.errors);
        assert!(plan.errors[0].contains("operator"), "{:?}", plan.errors);
        assert!(
            plan.errors[0].contains("clients CA Secret (user-provided)"),
            "{:?}",
            plan.errors
        );
        assert!(leaf_status(&plan, "operator").pending_reason.is_some());
    }
}

#[test]
fn a_user_rotating_a_provided_ca_gets_leaves_reissued_by_the_new_one() {
    let old = generate_ca("user CA 1", 365, NOW).unwrap();
    let new = generate_ca("user CA 2", 365, NOW).unwrap();
    let mut input = input();
    input.cluster_ca = provided(&old);
    converge(&mut input);
    // The user's overlap: new first (issues), old second (still trusted).
    *provided_secret(&mut input, Cluster) = Some(SecretData::from([
        (
            CA_CRT.to_string(),
            format!("{}{}", new.cert_pem, old.cert_pem),
        ),
        (CA_KEY.to_string(), new.key_pem.clone()),
    ]));
    let plan1 = plan(&input);
    assert_eq!(
        roles(&plan1),
        [
            SecretRole::CaPublic(Cluster),
            SecretRole::Leaf("broker-0".into()),
            SecretRole::Leaf("broker-1".into()),
            SecretRole::Leaf("envoy".into()),
            SecretRole::Leaf("operator".into()),
        ]
    );
    assert!(events(&plan1).contains("not issued by the current cluster CA"));
    apply(&mut input, &plan1);
    let broker = leaf_named(&input, "broker-0").current.clone().unwrap();
    assert!(issued_by(&broker[TLS_CRT], &new.cert_pem));
    assert!(broker[TRUSTSTORE].starts_with(&format!("{}{}", new.cert_pem, old.cert_pem)));
    // The operator's leaf (clients CA) only got the new trust bundle.
    assert!(events(&plan1).contains("issued certificate for operator (trust bundle changed)"));
    // The user drops the old one: truststores shrink, each with a new serial.
    *provided_secret(&mut input, Cluster) = Some(SecretData::from([
        (CA_CRT.to_string(), new.cert_pem.clone()),
        (CA_KEY.to_string(), new.key_pem.clone()),
    ]));
    let plan2 = plan(&input);
    assert_eq!(
        written_leaves(&plan2),
        ["broker-0", "broker-1", "envoy", "operator"]
    );
    apply(&mut input, &plan2);
    assert!(plan(&input).writes.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Generated CA rotation.

/// The cluster CA's current and old certificates from its private Secret.
fn cluster_cas(input: &PkiInput) -> (CertInfo, Option<CertInfo>) {
    let p = private(input, Cluster);
    (
        CertInfo::parse(&p[CA_CRT]).unwrap(),
        p.get(CA_OLD_CRT).map(|c| CertInfo::parse(c).unwrap()),
    )
}

fn issuer_serial(input: &PkiInput, name: &str) -> String {
    let (new, old) = cluster_cas(input);
    let cert = &leaf_named(input, name).current.as_ref().unwrap()[TLS_CRT];
    if issued_by(cert, &new.pem) {
        new.serial
    } else if old.as_ref().is_some_and(|o| issued_by(cert, &o.pem)) {
        old.unwrap().serial
    } else {
        panic!("{name} issued by neither cluster CA")
    }
}

fn truststore_serials(input: &PkiInput, name: &str) -> Vec<String> {
    let store = &leaf_named(input, name).current.as_ref().unwrap()[TRUSTSTORE];
    if store.is_empty() {
        return vec![];
    }
    parse_bundle(store)
        .unwrap()
        .into_iter()
        .map(|c| c.serial)
        .collect()
}

#[test]
fn a_cluster_ca_rotation_walks_every_step_waiting_for_served_certificates() {
    let mut input = settled();
    run_all(&mut input);
    let (original, _) = cluster_cas(&input);
    let clients_serial = CertInfo::parse(&private(&input, Clients)[CA_CRT])
        .unwrap()
        .serial;
    // Within the renewal window of the cluster CA (365 days, renewed 30 before), not of the
    // leaves (400 days) nor, yet, of the clients CA: only the cluster CA rotates.
    input.now = original.not_after - 30 * DAY;
    input.clients_ca.renew_before_days = 29;

    // 1. trust-both: a new CA issues nothing yet; every leaf related to the cluster CA is
    //    re-issued by the old one with both CAs trusted.
    let p1 = plan(&input);
    assert!(
        events(&p1).contains("cluster CA rotation: trusting new and old CA"),
        "{:?}",
        p1.events
    );
    assert_eq!(
        roles(&p1),
        [
            SecretRole::CaPrivate(Cluster),
            SecretRole::CaPublic(Cluster),
            SecretRole::Leaf("broker-0".into()),
            SecretRole::Leaf("broker-1".into()),
            SecretRole::Leaf("envoy".into()),
            SecretRole::Leaf("operator".into()),
        ]
    );
    assert_eq!(ca_status(&p1, Cluster).phase, CaPhase::TrustBoth);
    assert_eq!(
        ca_status(&p1, Cluster).waiting_for.as_deref(),
        Some("broker-0")
    );
    assert_eq!(ca_status(&p1, Clients).waiting_for, None);
    assert!(p1.waiting);
    let before: Vec<String> = ["broker-0", "broker-1", "envoy", "operator"]
        .iter()
        .map(|n| serial_of(&input, n))
        .collect();
    apply(&mut input, &p1);
    let (new, old) = cluster_cas(&input);
    let old = old.unwrap();
    assert_eq!(old, original);
    assert_ne!(new.serial, original.serial);
    assert_eq!(private(&input, Cluster)[PHASE], "trust-both");
    assert_eq!(
        public_bundle(&input, Cluster)
            .iter()
            .map(|c| c.serial.clone())
            .collect::<Vec<_>>(),
        [new.serial.clone(), old.serial.clone()]
    );
    assert_eq!(ca_status(&p1, Cluster).serial, Some(new.serial.clone()));
    assert_eq!(
        ca_status(&p1, Cluster).trusted_serials,
        [new.serial.clone(), old.serial.clone()]
    );
    for (i, name) in ["broker-0", "broker-1", "envoy"].iter().enumerate() {
        assert_eq!(
            issuer_serial(&input, name),
            old.serial,
            "{name} issued by the old CA"
        );
        assert_ne!(serial_of(&input, name), before[i], "{name}: a new serial");
        assert_eq!(
            truststore_serials(&input, name)[..2],
            [new.serial.clone(), old.serial.clone()]
        );
    }
    assert_eq!(
        truststore_serials(&input, "operator"),
        [new.serial.clone(), old.serial.clone()]
    );
    assert_ne!(serial_of(&input, "operator"), before[3]);

    // Not served yet: no step, nothing written, the status says what it waits for.
    let wait = plan(&input);
    assert!(wait.writes.is_empty(), "{:?}", wait.events);
    assert_eq!(ca_status(&wait, Cluster).phase, CaPhase::TrustBoth);
    assert_eq!(
        ca_status(&wait, Cluster).waiting_for.as_deref(),
        Some("broker-0")
    );
    assert!(wait.waiting);
    // All but one served: still no step.
    serve_all(&mut input);
    input.leaves[3].served_serial = Served::Running(Some(before[3].clone()));
    let wait = plan(&input);
    assert!(wait.writes.is_empty());
    assert_eq!(
        ca_status(&wait, Cluster).waiting_for.as_deref(),
        Some("operator")
    );

    // 2. reissue: all served → leaves issued by the cluster CA are re-issued by the new one;
    //    the operator's (clients CA) is untouched.
    serve_all(&mut input);
    let p2 = plan(&input);
    assert!(
        events(&p2).contains("re-issuing certificates with the new CA"),
        "{:?}",
        p2.events
    );
    assert_eq!(
        roles(&p2),
        [
            SecretRole::CaPrivate(Cluster),
            SecretRole::Leaf("broker-0".into()),
            SecretRole::Leaf("broker-1".into()),
            SecretRole::Leaf("envoy".into()),
        ]
    );
    assert!(
        events(&p2).contains(
            "issued certificate for broker-0 (cluster CA rotation: re-issuing with the new CA)"
        ),
        "{:?}",
        p2.events
    );
    apply(&mut input, &p2);
    assert_eq!(private(&input, Cluster)[PHASE], "reissue");
    for name in ["broker-0", "broker-1", "envoy"] {
        assert_eq!(issuer_serial(&input, name), new.serial, "{name}");
        assert_eq!(
            truststore_serials(&input, name)[..2],
            [new.serial.clone(), old.serial.clone()]
        );
    }
    let wait = plan(&input);
    assert!(wait.writes.is_empty());
    assert_eq!(ca_status(&wait, Cluster).phase, CaPhase::Reissue);

    // 3. drop-old: every leaf trusting the cluster CA gets a truststore without the old one.
    serve_all(&mut input);
    let p3 = plan(&input);
    assert!(
        events(&p3).contains("dropping the old CA"),
        "{:?}",
        p3.events
    );
    assert_eq!(
        roles(&p3),
        [
            SecretRole::CaPrivate(Cluster),
            SecretRole::CaPublic(Cluster),
            SecretRole::Leaf("broker-0".into()),
            SecretRole::Leaf("broker-1".into()),
            SecretRole::Leaf("envoy".into()),
            SecretRole::Leaf("operator".into()),
        ]
    );
    apply(&mut input, &p3);
    assert_eq!(private(&input, Cluster)[PHASE], "drop-old");
    assert!(
        private(&input, Cluster).contains_key(CA_OLD_KEY),
        "kept until the end"
    );
    assert_eq!(public_bundle(&input, Cluster), vec![new.clone()]);
    assert_eq!(
        truststore_serials(&input, "envoy"),
        vec![new.serial.clone()]
    );
    assert_eq!(
        truststore_serials(&input, "operator"),
        vec![new.serial.clone()]
    );
    assert_eq!(
        truststore_serials(&input, "broker-0"),
        [new.serial.clone(), clients_serial.clone()]
    );
    for name in ["broker-0", "broker-1", "envoy"] {
        assert_eq!(issuer_serial(&input, name), new.serial);
    }
    assert!(plan(&input).writes.is_empty());

    // 4. normal: the old CA leaves the private Secret; no leaf changes.
    serve_all(&mut input);
    let p4 = plan(&input);
    assert!(
        events(&p4).contains("cluster CA rotation complete"),
        "{:?}",
        p4.events
    );
    assert_eq!(roles(&p4), [SecretRole::CaPrivate(Cluster)]);
    assert_eq!(
        p4.writes[0].data.keys().collect::<Vec<_>>(),
        [CA_CRT, CA_KEY]
    );
    assert_eq!(ca_status(&p4, Cluster).phase, CaPhase::Normal);
    assert_eq!(ca_status(&p4, Cluster).waiting_for, None);
    assert!(!p4.waiting);
    apply(&mut input, &p4);
    let done = plan(&input);
    assert!(
        done.writes.is_empty() && done.events.is_empty(),
        "{:?}",
        done.events
    );
    assert!(!done.waiting);
    assert_eq!(
        ca_status(&done, Cluster).trusted_serials,
        vec![new.serial.clone()]
    );
    // The clients CA never moved.
    assert_eq!(
        CertInfo::parse(&private(&input, Clients)[CA_CRT])
            .unwrap()
            .serial,
        clients_serial
    );
}

#[test]
fn a_rotation_takes_one_step_per_plan_even_with_nothing_to_wait_for() {
    let mut input = input();
    input.leaves.clear();
    let p0 = plan(&input);
    apply(&mut input, &p0);
    input.cluster_ca.force_renew = true;
    let mut phases = Vec::new();
    for _ in 0..5 {
        let p = plan(&input);
        if p.forced.contains(&Cluster) {
            input.cluster_ca.force_renew = false;
        }
        phases.push(ca_status(&p, Cluster).phase);
        apply(&mut input, &p);
    }
    assert_eq!(
        phases,
        [
            CaPhase::TrustBoth,
            CaPhase::Reissue,
            CaPhase::DropOld,
            CaPhase::Normal,
            CaPhase::Normal
        ]
    );
}

#[test]
fn a_forced_rotation_starts_once_and_is_reported_for_clearing() {
    let mut input = settled();
    input.clients_ca.force_renew = true;
    let p1 = plan(&input);
    assert_eq!(p1.forced, [Clients]);
    assert!(events(&p1).contains("clients CA rotation: trusting new and old CA (new serial"));
    assert!(events(&p1).contains("forced"));
    assert_eq!(ca_status(&p1, Clients).phase, CaPhase::TrustBoth);
    assert_eq!(ca_status(&p1, Cluster).phase, CaPhase::Normal);
    // Brokers trust the clients CA: re-issued with both clients CAs in their truststores. The
    // operator's leaf is issued by the clients CA but does not trust it: nothing changes for it
    // until the new CA issues.
    assert_eq!(written_leaves(&p1), ["broker-0", "broker-1"]);
    assert!(
        events(&p1).contains(
            "issued certificate for broker-0 (clients CA rotation: trusting new and old CA)"
        ),
        "{:?}",
        p1.events
    );
    apply(&mut input, &p1);
    let new_serial = ca_status(&p1, Clients).serial.clone();
    // The annotation is still there (the caller has not cleared it yet): no second rotation.
    let mut phases = Vec::new();
    for _ in 0..3 {
        serve_all(&mut input);
        let p = plan(&input);
        assert_eq!(p.forced, [Clients], "still acknowledged");
        assert!(
            !events(&p).contains("trusting new and old CA"),
            "{:?}",
            p.events
        );
        assert_eq!(ca_status(&p, Clients).serial, new_serial);
        phases.push(ca_status(&p, Clients).phase);
        apply(&mut input, &p);
    }
    assert_eq!(
        phases,
        [CaPhase::Reissue, CaPhase::DropOld, CaPhase::Normal]
    );
    // A request still there once the rotation is over is a new request (the caller clears it
    // when `forced` names the CA).
    serve_all(&mut input);
    let again = plan(&input);
    assert_eq!(ca_status(&again, Clients).phase, CaPhase::TrustBoth);
    assert_ne!(ca_status(&again, Clients).serial, new_serial);
    input.clients_ca.force_renew = false;
    let cleared = plan(&input);
    assert!(cleared.writes.is_empty() && cleared.forced.is_empty());
}

#[test]
fn both_cas_rotate_at_once_independently() {
    let mut input = settled();
    input.cluster_ca.force_renew = true;
    input.clients_ca.force_renew = true;
    let p1 = plan(&input);
    assert_eq!(p1.forced, [Cluster, Clients]);
    assert_eq!(ca_status(&p1, Cluster).phase, CaPhase::TrustBoth);
    assert_eq!(ca_status(&p1, Clients).phase, CaPhase::TrustBoth);
    input.cluster_ca.force_renew = false;
    input.clients_ca.force_renew = false;
    apply(&mut input, &p1);
    let operator = leaf_named(&input, "operator").current.clone().unwrap();
    let old_clients = CertInfo::parse(&private(&input, Clients)[CA_OLD_CRT]).unwrap();
    assert!(issued_by(&operator[TLS_CRT], &old_clients.pem));
    let mut phases = Vec::new();
    for _ in 0..4 {
        serve_all(&mut input);
        let p = plan(&input);
        phases.push((ca_status(&p, Cluster).phase, ca_status(&p, Clients).phase));
        apply(&mut input, &p);
    }
    assert_eq!(
        phases,
        [
            (CaPhase::Reissue, CaPhase::Reissue),
            (CaPhase::DropOld, CaPhase::DropOld),
            (CaPhase::Normal, CaPhase::Normal),
            (CaPhase::Normal, CaPhase::Normal),
        ]
    );
    serve_all(&mut input);
    assert!(plan(&input).writes.is_empty());
    let clients = private(&input, Clients);
    let operator = leaf_named(&input, "operator").current.clone().unwrap();
    assert!(issued_by(&operator[TLS_CRT], &clients[CA_CRT]));
}

#[test]
fn a_crash_after_the_ca_write_resumes_from_the_secrets_phase() {
    // Walk a rotation; at each step, lose every write but the CA private Secret's (a crash right
    // after it) and plan again: the same phase, the same CAs, the public Secret and the leaves
    // re-planned for it.
    let mut input = settled();
    input.cluster_ca.force_renew = true;
    for expected in [
        CaPhase::TrustBoth,
        CaPhase::Reissue,
        CaPhase::DropOld,
        CaPhase::Normal,
    ] {
        serve_all(&mut input);
        let p = plan(&input);
        input.cluster_ca.force_renew = false;
        assert_eq!(ca_status(&p, Cluster).phase, expected);
        let mut crashed = input.clone();
        let ca_writes = PkiPlan {
            writes: p
                .writes
                .iter()
                .filter(|w| matches!(w.role, SecretRole::CaPrivate(_)))
                .cloned()
                .collect(),
            ..PkiPlan::default()
        };
        apply(&mut crashed, &ca_writes);
        let resumed = plan(&crashed);
        assert_eq!(ca_status(&resumed, Cluster).phase, expected, "{expected:?}");
        assert_eq!(
            ca_status(&resumed, Cluster).serial,
            ca_status(&p, Cluster).serial
        );
        assert_eq!(
            ca_status(&resumed, Cluster).trusted_serials,
            ca_status(&p, Cluster).trusted_serials
        );
        assert!(
            !roles(&resumed)
                .iter()
                .any(|r| matches!(r, SecretRole::CaPrivate(_))),
            "{expected:?}: no CA step on resume: {:?}",
            resumed.events
        );
        assert_eq!(written_leaves(&resumed), written_leaves(&p), "{expected:?}");
        assert_eq!(
            roles(&resumed).contains(&SecretRole::CaPublic(Cluster)),
            roles(&p).contains(&SecretRole::CaPublic(Cluster)),
            "{expected:?}"
        );
        apply(&mut crashed, &resumed);
        input = crashed;
    }
    serve_all(&mut input);
    assert!(plan(&input).writes.is_empty());
}

#[test]
fn a_crash_before_the_ca_write_loses_nothing() {
    // The first step's CA write lost: a new rotation simply starts again.
    let mut input = settled();
    input.cluster_ca.force_renew = true;
    let lost = plan(&input);
    let again = plan(&input);
    assert_eq!(ca_status(&again, Cluster).phase, CaPhase::TrustBoth);
    assert_ne!(
        ca_status(&again, Cluster).serial,
        ca_status(&lost, Cluster).serial
    );
    assert_eq!(roles(&again), roles(&lost));
}

#[test]
fn an_unknown_phase_resumes_at_trust_both_and_a_lost_old_ca_ends_the_rotation() {
    let mut input = settled();
    input.cluster_ca.force_renew = true;
    let p = plan(&input);
    input.cluster_ca.force_renew = false;
    apply(&mut input, &p);
    serve_all(&mut input);

    let mut unknown = input.clone();
    if let CaSource::Generated { private: Some(d) } = &mut unknown.cluster_ca.source {
        d.insert(PHASE.into(), "half-way".into());
    }
    let p = plan(&unknown);
    assert!(
        p.errors[0].contains("unknown phase \"half-way\""),
        "{:?}",
        p.errors
    );
    // Resumed at trust-both, which is settled: the next step is taken.
    assert_eq!(ca_status(&p, Cluster).phase, CaPhase::Reissue);

    let mut lost = input.clone();
    if let CaSource::Generated { private: Some(d) } = &mut lost.cluster_ca.source {
        d.remove(CA_OLD_KEY);
    }
    let p = plan(&lost);
    assert!(p.errors[0].contains("lost its old CA"), "{:?}", p.errors);
    assert_eq!(ca_status(&p, Cluster).phase, CaPhase::Normal);
    assert_eq!(
        p.writes[0].data.keys().collect::<Vec<_>>(),
        [CA_CRT, CA_KEY]
    );
    // Leaves issued by the (now dropped) old CA are re-issued by the new one.
    apply(&mut lost, &p);
    let new = private(&lost, Cluster);
    for name in ["broker-0", "envoy"] {
        let leaf = leaf_named(&lost, name).current.clone().unwrap();
        assert!(issued_by(&leaf[TLS_CRT], &new[CA_CRT]));
    }
}

#[test]
fn an_unreadable_generated_ca_is_regenerated_and_said_so() {
    for edit in [
        |d: &mut SecretData| {
            d.insert(CA_CRT.into(), "garbage".into());
        },
        |d: &mut SecretData| {
            d.remove(CA_KEY);
        },
    ] {
        let mut input = settled();
        let before = CertInfo::parse(&private(&input, Cluster)[CA_CRT]).unwrap();
        if let CaSource::Generated { private: Some(d) } = &mut input.cluster_ca.source {
            edit(d);
        }
        let p = plan(&input);
        assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
        assert!(
            p.errors[0].starts_with("cluster CA private Secret"),
            "{:?}",
            p.errors
        );
        assert!(p.errors[0].contains("generating a new cluster CA"));
        apply(&mut input, &p);
        let after = CertInfo::parse(&private(&input, Cluster)[CA_CRT]).unwrap();
        assert_ne!(after.serial, before.serial);
        assert_eq!(written_leaves(&p).len(), 4);
        let broker = leaf_named(&input, "broker-0").current.clone().unwrap();
        assert!(issued_by(&broker[TLS_CRT], &after.pem));
    }
}

#[test]
fn a_rotation_never_starts_while_one_runs_even_when_the_new_ca_is_due() {
    let mut input = settled();
    input.cluster_ca.force_renew = true;
    let p = plan(&input);
    input.cluster_ca.force_renew = false;
    apply(&mut input, &p);
    let new_serial = ca_status(&p, Cluster).serial.clone();
    // Long after: both CAs are past their renewal windows, brokers still serve old serials.
    input.now = NOW + 364 * DAY;
    run_all(&mut input);
    for leaf in &mut input.leaves {
        leaf.served_serial = Served::Running(Some("00".into()));
    }
    let p = plan(&input);
    assert_eq!(ca_status(&p, Cluster).phase, CaPhase::TrustBoth);
    assert_eq!(ca_status(&p, Cluster).serial, new_serial);
    assert!(
        !events(&p).contains("cluster CA rotation: trusting new and old CA (new serial"),
        "{:?}",
        p.events
    );
    // The clients CA, due too and in normal phase, does start its own.
    assert!(events(&p).contains("clients CA rotation: trusting new and old CA (new serial"));
    assert!(
        events(&p).contains(
            "issued certificate for broker-0 (clients CA rotation: trusting new and old CA)"
        ),
        "{:?}",
        p.events
    );
}

#[test]
fn a_leaf_renewed_during_trust_both_is_issued_by_the_old_ca() {
    let mut input = settled();
    input.cluster_ca.force_renew = true;
    let p = plan(&input);
    input.cluster_ca.force_renew = false;
    apply(&mut input, &p);
    input.leaves[0]
        .request
        .dns_names
        .push("more.example".into());
    let p = plan(&input);
    assert_eq!(written_leaves(&p), ["broker-0"]);
    apply(&mut input, &p);
    let (_, old) = cluster_cas(&input);
    assert_eq!(issuer_serial(&input, "broker-0"), old.unwrap().serial);
}
