//! The cluster's certificates as Secrets: the only writer of the CA, broker, operator and
//! Envoy certificate Secrets. Reads Pier's own Secrets from the watch cache and a user's CA
//! Secret with a GET, asks each running broker which certificate it serves, plans with
//! `pier_pki::plan` (pure), writes what changed (conditionally on the version read, so a
//! stale cache can never make two CAs), and tells the caller which brokers must reload their
//! keystore live. Also builds the operator's own TLS client settings from those Secrets.
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use pier_pki::{
    CaInput, CaKind, CaSource, LeafInput, LeafRequest, PkiInput, SecretData, SecretRole, Served,
};

use super::{Context, Error, Stores, call, cluster_objects};
use crate::api::{CaStatus, CertificateStatus, KafkaCluster, TlsStatus};
use crate::kafka::{ConnectOptions, TlsConfig, TlsOptions, Transport};
use crate::reconcile::pods::pod_ready;
use crate::reconcile::security::{self, is_tls};
use crate::reconcile::{Desired, Observed, Settings, cluster_labels, names, owner_reference};

/// Set on the KafkaCluster by a user: any new value re-issues every certificate once.
pub const RENEW_CERTIFICATES_ANNOTATION: &str = "kafka.pier.dev/renew-certificates";
/// Set on the KafkaCluster by a user: any new value rotates the generated cluster CA once.
pub const RENEW_CLUSTER_CA_ANNOTATION: &str = "kafka.pier.dev/renew-cluster-ca";
/// Set on the KafkaCluster by a user: any new value rotates the generated clients CA once.
pub const RENEW_CLIENTS_CA_ANNOTATION: &str = "kafka.pier.dev/renew-clients-ca";
/// On a Secret Pier wrote: the renewal annotation value it was written for.
const RENEWED_FOR_ANNOTATION: &str = "kafka.pier.dev/renewed-for";
/// How long asking a broker for its certificate may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Handshakes that must all see the new certificate (twice Kafka's default network threads).
const PROBE_HANDSHAKES: usize = 6;

/// What the PKI did this reconcile.
#[derive(Debug, Clone, Default)]
pub struct TlsOutcome {
    pub status: TlsStatus,
    /// A renewal or rotation waits for brokers to load new files: look again soon.
    pub pending: bool,
    /// Brokers that run but do not serve their Secret's certificate yet: their keystores are
    /// reloaded live.
    pub reload: Vec<i32>,
    pub events: Vec<String>,
    pub errors: Vec<String>,
}

/// The operator's TLS settings for the cluster's listener it uses: plaintext when that
/// listener does not speak TLS, else [`operator_tls`]; `None` while its Secrets do not exist.
pub fn admin_connect(kc: &KafkaCluster, stores: &Stores) -> Option<ConnectOptions> {
    let mut options = ConnectOptions::default();
    if security::operator_listener(kc).is_some_and(|l| is_tls(l.protocol)) {
        options.transport = Transport::Tls(operator_tls(kc, stores)?);
    }
    Some(options)
}

/// The operator as a TLS client of the cluster's brokers (the cluster CA bundle, its own
/// certificate from the clients CA), from the Secrets in the cache; `None` while they do not
/// exist.
fn operator_tls(kc: &KafkaCluster, stores: &Stores) -> Option<TlsConfig> {
    let ns = kc.namespace().unwrap_or_default();
    let secrets = pier_secrets(stores, &ns, &kc.name_any());
    let trust = secrets
        .get(&names::ca_cert_secret(kc, CaKind::Cluster.as_str()))?
        .get(pier_pki::CA_CRT)?
        .clone();
    let own = secrets.get(&names::operator_tls_secret(kc))?;
    TlsConfig::new(TlsOptions {
        trust_bundle_pem: trust,
        client_cert_chain_pem: own.get(pier_pki::TLS_CRT).cloned(),
        client_key_pem: own.get(pier_pki::TLS_KEY).cloned(),
    })
    .map_err(|e| tracing::warn!(error = %e, "the operator's TLS Secrets are unusable"))
    .ok()
}

/// The DNS name each broker Pod is verified against (certificates carry no Pod IPs); brokers
/// leaving the spec included.
pub fn server_names(kc: &KafkaCluster, pods: &[Pod], settings: &Settings) -> BTreeMap<i32, String> {
    let ns = kc.namespace().unwrap_or_default();
    pods.iter()
        .filter_map(|p| p.labels().get(names::BROKER_ID_LABEL)?.parse().ok())
        .chain(kc.spec.brokers.iter().map(|b| b.id))
        .map(|id| {
            (
                id,
                names::broker_host(kc, &ns, id, &settings.cluster_domain),
            )
        })
        .collect()
}

/// Plans and writes the cluster's certificates; `None` when no listener uses TLS.
pub async fn converge(
    kc: &KafkaCluster,
    ctx: &Context,
    stores: &Stores,
    desired: &Desired,
    observed: &Observed,
    pods: &[Pod],
) -> Result<Option<TlsOutcome>, Error> {
    // Envoys dialing xDS over TLS need a client certificate from the cluster CA even when
    // no Kafka listener speaks TLS.
    let envoy_tls = ctx.settings.xds_tls && !kc.spec.listeners.external.is_empty();
    let kafka_tls = security::uses_tls(kc);
    if !kafka_tls && !envoy_tls {
        return Ok(None);
    }
    let ns = kc.namespace().unwrap_or_default();
    let name = kc.name_any();
    let cached = cached_secrets(stores, &ns, &name);
    let renew_token = kc.annotations().get(RENEW_CERTIFICATES_ANNOTATION).cloned();
    let mut errors = Vec::new();

    let cluster_ca = ca_input(kc, ctx, CaKind::Cluster, &cached, &mut errors).await?;
    let clients_ca = ca_input(kc, ctx, CaKind::Clients, &cached, &mut errors).await?;

    let certs = &kc.spec.tls.certificates;
    let validity = u32::try_from(certs.validity_days).unwrap_or(1);
    let renew_before = u32::try_from(certs.renew_before_days).unwrap_or(0);
    // A renewal asked for by annotation: the Secret is planned as if it did not exist, once.
    let current = |secret: &str| {
        let s = cached.get(secret)?;
        let renewed_for = s.annotations().get(RENEWED_FOR_ANNOTATION);
        if renew_token.is_some() && renewed_for != renew_token.as_ref() {
            return None;
        }
        Some(secret_data(s))
    };
    // Brokers are asked over TLS whatever listener the admin client uses: a cluster may
    // speak TLS on its external listeners only.
    let tls_config = operator_tls(kc, stores);
    let mut leaves = Vec::new();
    for b in desired.brokers.iter().filter(|_| kafka_tls) {
        let secret = names::broker_tls_secret(kc, b.id);
        let cert_names = security::broker_certificate_names(kc, &ns, b, observed, &ctx.settings);
        let served = served(kc, &ctx.settings, pods, b, tls_config.as_ref()).await;
        leaves.push(LeafInput {
            secret_name: secret.clone(),
            request: LeafRequest {
                common_name: cert_names.common_name,
                dns_names: cert_names.dns_names,
                ip_addresses: cert_names.ip_addresses,
                uris: Vec::new(),
                server: true,
                // Brokers present it to each other and to the quorum.
                client: true,
            },
            issuer: CaKind::Cluster,
            trust: vec![CaKind::Cluster, CaKind::Clients],
            current: current(&secret),
            extra: SecretData::new(),
            validity_days: validity,
            renew_before_days: renew_before,
            served_serial: served,
        });
    }
    let operator_secret = names::operator_tls_secret(kc);
    if envoy_tls {
        let secret = names::envoy_xds_tls(kc);
        let server_ca = ctx
            .xds_server_ca
            .get()
            .map(|path| (path, std::fs::read_to_string(path)));
        match server_ca {
            Some((_, Ok(ca))) => leaves.push(LeafInput {
                secret_name: secret.clone(),
                request: LeafRequest {
                    common_name: format!("{name}-envoy"),
                    uris: vec![crate::xds::identity::spiffe_uri(&ns, &name)],
                    client: true,
                    ..Default::default()
                },
                issuer: CaKind::Cluster,
                trust: Vec::new(),
                current: current(&secret),
                extra: SecretData::from([("xds-ca.crt".to_string(), ca)]),
                validity_days: validity,
                renew_before_days: renew_before,
                // Envoy reads the files again when they change (file-based SDS).
                served_serial: Served::NotRunning,
            }),
            Some((path, Err(e))) => errors.push(format!(
                "xDS over TLS: cannot read the xDS server CA {}: {e}",
                path.display()
            )),
            None => errors.push(
                "xDS over TLS: the operator has no --xds-server-ca, so the Envoys cannot verify the xDS server".into(),
            ),
        }
    }
    if kafka_tls {
        leaves.push(LeafInput {
            secret_name: operator_secret.clone(),
            request: LeafRequest {
                common_name: "pier-operator".into(),
                client: true,
                ..Default::default()
            },
            issuer: CaKind::Clients,
            trust: vec![CaKind::Cluster],
            current: current(&operator_secret),
            extra: SecretData::new(),
            validity_days: validity,
            renew_before_days: renew_before,
            // Read again for every new connection.
            served_serial: Served::NotRunning,
        });
    }

    let input = PkiInput {
        now: k8s_openapi::jiff::Timestamp::now().as_second(),
        cluster_ca,
        clients_ca,
        leaves,
    };
    let plan = pier_pki::plan(&input);
    errors.extend(plan.errors.iter().cloned());

    for write in &plan.writes {
        let (secret, public) = match &write.role {
            SecretRole::CaPrivate(kind) => (names::ca_secret(kc, kind.as_str()), false),
            SecretRole::CaPublic(kind) => (names::ca_cert_secret(kc, kind.as_str()), true),
            SecretRole::Leaf(secret) => (secret.clone(), false),
        };
        // The renewal annotation a Secret was written for: a leaf written now is fresh; a
        // CA private Secret records the annotation once its forced rotation started (or when
        // it is created, so a new cluster with the annotation does not rotate at once).
        let existing = cached.get(&secret);
        let renewed_for = match &write.role {
            SecretRole::Leaf(_) => renew_token.clone(),
            SecretRole::CaPrivate(kind) if plan.forced.contains(kind) || existing.is_none() => {
                kc.annotations().get(ca_annotation(*kind)).cloned()
            }
            SecretRole::CaPrivate(_) | SecretRole::CaPublic(_) => None,
        };
        write_secret(
            kc,
            ctx,
            &ns,
            &secret,
            &write.data,
            existing,
            renewed_for,
            public,
        )
        .await?;
    }

    // The cluster CA vouches, at Pier's xDS server, for this cluster's Envoys only.
    if let Some(trust) = ctx.xds_trust.get() {
        let written = plan.writes.iter().find_map(|w| match w.role {
            SecretRole::CaPublic(CaKind::Cluster) => w.data.get(pier_pki::CA_CRT).cloned(),
            _ => None,
        });
        let bundle = written.or_else(|| {
            cached
                .get(&names::ca_cert_secret(kc, CaKind::Cluster.as_str()))
                .and_then(|s| secret_data(s).get(pier_pki::CA_CRT).cloned())
        });
        if let Some(pem) = bundle {
            let group = crate::model::group_name(&ns, &name);
            if let Err(e) = trust.set_group_roots_pem(&group, &pem) {
                errors.push(format!("the cluster CA cannot vouch for its Envoys: {e}"));
            }
        }
    }
    // Nodes that do not serve their Secret's certificate: brokers reload it live; a
    // controller-only node cannot be reached with the admin protocol (KIP-919), so it is
    // restarted (by the health-gated roll) to load it.
    let mut reload = Vec::new();
    let mut restart = Vec::new();
    for l in plan.status.leaves.iter().filter(|l| !l.served) {
        let Some(b) = desired
            .brokers
            .iter()
            .find(|b| names::broker_tls_secret(kc, b.id) == l.secret_name)
        else {
            continue;
        };
        if b.is_broker() {
            reload.push(b.id);
        } else if let Some(serial) = &l.serial {
            restart.push((b.id, serial.clone()));
        }
    }
    request_restarts(kc, ctx, pods, &restart).await?;
    let status = TlsStatus {
        cas: plan
            .status
            .cas
            .iter()
            .map(|c| CaStatus {
                kind: c.kind.as_str().into(),
                serial: c.serial.clone().unwrap_or_default(),
                not_after: c.not_after.map(rfc3339).unwrap_or_default(),
                trusted: c.trusted_serials.clone(),
                phase: c.phase.as_str().into(),
                provided: c.provided,
            })
            .collect(),
        certificates: plan
            .status
            .leaves
            .iter()
            .map(|l| CertificateStatus {
                secret: l.secret_name.clone(),
                serial: l.serial.clone().unwrap_or_default(),
                not_after: l.not_after.map(rfc3339).unwrap_or_default(),
                served: l.served,
                pending: l.pending_reason.clone(),
            })
            .collect(),
        earliest_expiry: plan.status.earliest_expiry.map(rfc3339),
    };
    if let Some(earliest) = plan.status.earliest_expiry {
        ctx.certificate_expiry
            .get_or_create(&super::ClusterLabels {
                namespace: ns.clone(),
                cluster: name.clone(),
            })
            .set(earliest);
    }
    Ok(Some(TlsOutcome {
        status,
        pending: plan.waiting
            || !reload.is_empty()
            || !restart.is_empty()
            || !plan.writes.is_empty(),
        reload,
        events: plan.events.clone(),
        errors,
    }))
}

/// The annotation that asks for a rotation of a CA.
fn ca_annotation(kind: CaKind) -> &'static str {
    match kind {
        CaKind::Cluster => RENEW_CLUSTER_CA_ANNOTATION,
        CaKind::Clients => RENEW_CLIENTS_CA_ANNOTATION,
    }
}

/// A CA's input: Pier's private Secret from the cache, or the user's Secret by GET.
async fn ca_input(
    kc: &KafkaCluster,
    ctx: &Context,
    kind: CaKind,
    cached: &BTreeMap<String, Secret>,
    errors: &mut Vec<String>,
) -> Result<CaInput, Error> {
    let ns = kc.namespace().unwrap_or_default();
    let spec = match kind {
        CaKind::Cluster => &kc.spec.tls.cluster_ca,
        CaKind::Clients => &kc.spec.tls.clients_ca,
    };
    let private = cached.get(&names::ca_secret(kc, kind.as_str()));
    let source = match &spec.secret_ref {
        Some(r) => {
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
            let secret = call(format!("reading Secret {}", r.name), api.get_opt(&r.name)).await?;
            if secret.is_none() {
                errors.push(format!(
                    "the {kind} CA Secret {:?} (spec.tls.{kind}CA.secretRef) does not exist",
                    r.name
                ));
            }
            CaSource::Provided {
                secret: secret.as_ref().map(secret_data),
            }
        }
        None => CaSource::Generated {
            private: private.map(secret_data),
        },
    };
    let token = kc.annotations().get(ca_annotation(kind));
    let force_renew = token.is_some()
        && private.is_some_and(|p| p.annotations().get(RENEWED_FOR_ANNOTATION) != token);
    Ok(CaInput {
        common_name: format!("{} {kind} CA ({ns})", kc.name_any()),
        source,
        public: cached
            .get(&names::ca_cert_secret(kc, kind.as_str()))
            .map(secret_data),
        validity_days: u32::try_from(spec.validity_days).unwrap_or(1),
        renew_before_days: u32::try_from(spec.renew_before_days).unwrap_or(0),
        force_renew,
    })
}

/// Which certificate broker `b` serves: `NotRunning` without a ready Pod (it loads its files
/// when it starts), else the serial it presents on its first TLS listener, internal or
/// external, at its Pod IP (`None` when it cannot be asked).
async fn served(
    kc: &KafkaCluster,
    settings: &Settings,
    pods: &[Pod],
    b: &crate::reconcile::EffectiveBroker,
    tls: Option<&TlsConfig>,
) -> Served {
    let Some(pod) = super::live_config::broker_pod(kc, pods, b.id) else {
        return Served::NotRunning;
    };
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
    let (Some(ip), true) = (
        ip,
        pod_ready(pod) && pod.metadata.deletion_timestamp.is_none(),
    ) else {
        return Served::NotRunning;
    };
    let Some(tls) = tls else {
        return Served::Running(None);
    };
    let port = security::listeners(kc)
        .into_iter()
        .find(|l| is_tls(l.protocol) && l.served_by(b))
        .map(|l| l.port);
    let Some(port) = port else {
        return Served::Running(None);
    };
    let ns = kc.namespace().unwrap_or_default();
    let host = names::broker_host(kc, &ns, b.id, &settings.cluster_domain);
    // Kafka reloads each network thread's TLS context in turn and hands connections to the
    // threads in turn: a reload is done when several handshakes in a row see one certificate.
    match crate::kafka::served_certificates(
        &format!("{ip}:{port}"),
        Some(&host),
        tls,
        PROBE_TIMEOUT,
        PROBE_HANDSHAKES,
    )
    .await
    {
        Ok(certs) => {
            let serials: std::collections::BTreeSet<Option<String>> = certs
                .iter()
                .map(|der| crate::kafka::certificate_serial(der).map(|s| serial_hex(&s)))
                .collect();
            match serials.into_iter().collect::<Vec<_>>().as_slice() {
                [one] => Served::Running(one.clone()),
                _ => Served::Running(None),
            }
        }
        Err(e) => {
            tracing::debug!(broker = b.id, error = %e, "cannot ask the broker for its certificate");
            Served::Running(None)
        }
    }
}

/// Pier's Secrets of the cluster in the cache, by name.
fn cached_secrets(stores: &Stores, ns: &str, cluster: &str) -> BTreeMap<String, Secret> {
    cluster_objects::<Secret>(stores, ns, cluster)
        .into_iter()
        .map(|s| (s.name_any(), s))
        .collect()
}

/// Pier's Secrets of the cluster as text, by name.
fn pier_secrets(stores: &Stores, ns: &str, cluster: &str) -> BTreeMap<String, SecretData> {
    cached_secrets(stores, ns, cluster)
        .into_iter()
        .map(|(n, s)| (n, secret_data(&s)))
        .collect()
}

/// A Secret's keys as text (PEM); keys that are not UTF-8 are left out.
fn secret_data(s: &Secret) -> SecretData {
    s.data
        .iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
        .collect()
}

/// Creates the Secret, or replaces its data if nobody changed it since the cache saw it (a
/// conflict fails the reconcile, which plans again from fresh state).
#[allow(clippy::too_many_arguments)]
async fn write_secret(
    kc: &KafkaCluster,
    ctx: &Context,
    ns: &str,
    name: &str,
    data: &SecretData,
    existing: Option<&Secret>,
    renewed_for: Option<String>,
    public: bool,
) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut labels = cluster_labels(kc);
    labels.insert(
        names::COMPONENT_LABEL.into(),
        if public { "ca-cert" } else { "tls" }.into(),
    );
    let annotations = renewed_for
        .map(|t| BTreeMap::from([(RENEWED_FOR_ANNOTATION.to_string(), t)]))
        .unwrap_or_default();
    let bytes: BTreeMap<String, ByteString> = data
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
        .collect();
    match existing {
        None => {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(ns.into()),
                    labels: Some(labels),
                    annotations: Some(annotations),
                    owner_references: owner_reference(kc).map(|o| vec![o]),
                    ..Default::default()
                },
                data: Some(bytes),
                type_: Some("Opaque".into()),
                ..Default::default()
            };
            call(
                format!("creating Secret {name}"),
                api.create(&PostParams::default(), &secret),
            )
            .await?;
        }
        Some(old) => {
            // Keys the plan dropped are removed (a merge patch keeps absent keys).
            let mut patch_data = serde_json::Map::new();
            for key in old.data.iter().flatten().map(|(k, _)| k) {
                if !bytes.contains_key(key) {
                    patch_data.insert(key.clone(), serde_json::Value::Null);
                }
            }
            for (k, v) in &bytes {
                patch_data.insert(k.clone(), serde_json::to_value(v)?);
            }
            let mut meta = serde_json::json!({
                "resourceVersion": old.resource_version(),
                "labels": labels,
            });
            if !annotations.is_empty() {
                meta["annotations"] = serde_json::to_value(&annotations)?;
            }
            let patch = serde_json::json!({"metadata": meta, "data": patch_data});
            call(
                format!("updating Secret {name}"),
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await?;
        }
    }
    ctx.wrote();
    tracing::info!(secret = %name, "certificate Secret written");
    Ok(())
}

/// Unix seconds as RFC 3339.
fn rfc3339(secs: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Asks the roll to restart each controller-only node of `nodes` (id, serial of the
/// certificate it must load) with the Pod restart annotation, once per certificate.
async fn request_restarts(
    kc: &KafkaCluster,
    ctx: &Context,
    pods: &[Pod],
    nodes: &[(i32, String)],
) -> Result<(), Error> {
    for (id, serial) in nodes {
        let Some(pod) = super::live_config::broker_pod(kc, pods, *id) else {
            continue;
        };
        let token = format!("certificate {serial}");
        if pod.metadata.deletion_timestamp.is_some()
            || pod.annotations().get(names::RESTART_ANNOTATION) == Some(&token)
        {
            continue;
        }
        let api: Api<Pod> =
            Api::namespaced(ctx.client.clone(), &kc.namespace().unwrap_or_default());
        let patch =
            serde_json::json!({"metadata": {"annotations": {names::RESTART_ANNOTATION: token}}});
        call(
            format!("asking for a restart of {}", pod.name_any()),
            api.patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            ),
        )
        .await?;
        ctx.wrote();
        tracing::info!(
            node = id,
            "controller-only node restarts to load its new certificate"
        );
    }
    Ok(())
}

/// Makes brokers load their renewed certificate Secret: the same keystore and truststore
/// locations set again on each of `brokers` (Kafka rebuilds a listener's SSL engine when the
/// files changed since it loaded them; unchanged files make this a no-op). Repeated while
/// the broker does not serve the Secret's certificate (the kubelet updates mounted Secrets a
/// while after they change).
pub async fn reload(
    kc: &KafkaCluster,
    admin: &crate::kafka::AdminClient,
    desired: &Desired,
    brokers: &[i32],
) {
    let reachable = admin.nodes();
    for b in desired.brokers.iter().filter(|b| brokers.contains(&b.id)) {
        if !reachable.contains_key(&b.id) {
            continue;
        }
        // The value the broker has is set again (what its file says; the same path anywhere
        // the Pod's files are where the Pod spec mounts them).
        let resource = crate::kafka::ConfigResource::Broker(b.id);
        let current: BTreeMap<String, String> = match admin.describe_configs(&resource).await {
            Ok(entries) => entries
                .into_iter()
                .filter_map(|e| Some((e.name, e.value?)))
                .collect(),
            Err(e) => {
                tracing::debug!(broker = b.id, error = %e, "cannot read the broker's store locations");
                continue;
            }
        };
        let ops: Vec<crate::kafka::ConfigOp> = security::reload_keys(kc, b)
            .iter()
            .map(|(k, planned)| crate::kafka::ConfigOp::set(k, current.get(k).unwrap_or(planned)))
            .collect();
        if ops.is_empty() {
            continue;
        }
        match admin
            .incremental_alter_configs(&resource, &ops, false)
            .await
        {
            Ok(()) => tracing::info!(broker = b.id, "asked the broker to reload its certificate"),
            Err(e) => {
                tracing::warn!(broker = b.id, error = %e, "cannot make the broker reload its certificate")
            }
        }
    }
}

/// A serial's bytes as the PKI writes serials: lower-case hex without leading zero bytes.
pub fn serial_hex(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    pier_pki::normalize_serial(&hex)
}
