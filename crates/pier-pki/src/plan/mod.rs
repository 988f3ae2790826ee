//! The renewal planner: from the current contents of a cluster's certificate Secrets, what to
//! generate, issue, rotate and write. Pure: [`plan`] reads its input and returns a [`PkiPlan`];
//! the operator reads and writes the Secrets and tells it which serial each broker serves.
//!
//! # Secrets
//! - CA private Secret (a Pier-generated CA): `ca.crt`, `ca.key` = the issuing CA; during a
//!   rotation also `ca-old.crt`, `ca-old.key` and `phase` (`trust-both`, `reissue`, `drop-old`;
//!   absent or empty = no rotation). The Secret is the only record of a rotation: a crash between
//!   two steps resumes from its `phase`.
//! - CA public Secret: `ca.crt` = the trust bundle, every trusted CA certificate (the issuing one
//!   first, the old one second during a rotation).
//! - A user-provided CA Secret: `ca.crt` (every certificate in it is trusted; the first one
//!   issues) and `ca.key` (the first certificate's PKCS#8 key). Pier never writes it; it still
//!   writes the public Secret, a copy of its `ca.crt`.
//! - Leaf Secret: `tls.crt` (leaf + issuing CA), `tls.key` (PKCS#8), `keystore.pem` (key then
//!   chain, Kafka's `ssl.keystore.type=PEM` file), `truststore.pem` (the bundles the leaf's owner
//!   trusts) and the caller's `extra` keys, verbatim.
//!
//! # Rules
//! A leaf is re-issued when its Secret is missing or unreadable, its renewal is due, its names or
//! usages differ from the request, it was not issued by the CA that issues in the current phase,
//! or any other key differs from what it should be. Every content change of a leaf Secret carries
//! a new certificate (a new serial): the operator proves that a broker reloaded the whole Secret
//! by seeing the new serial served.
//!
//! A generated CA is rotated when its renewal is due or a user forced it, in steps, at most one
//! per call, each waiting until every leaf that trusts or is issued by that CA is up to date and
//! served: `trust-both` (new CA issues nothing yet, leaves are re-issued by the old one with both
//! CAs in their truststore), `reissue` (leaves re-issued by the new CA), `drop-old` (leaves get a
//! truststore without the old CA), then back to normal (the old CA leaves the private Secret).
//!
//! Writes are ordered CA private Secrets, CA public Secrets, leaf Secrets: the caller applies
//! them in order and stops at the first failure, so that a leaf is never written before the CA
//! state it depends on.
use std::collections::BTreeMap;

use crate::cert::{
    CaMaterial, CertInfo, DAY, Issuer, LeafRequest, generate_ca, issued_by, key_matches,
    parse_bundle,
};

/// A Secret's data: key → PEM text.
pub type SecretData = BTreeMap<String, String>;

/// The CA certificate key (private, public and provided Secrets).
pub const CA_CRT: &str = "ca.crt";
/// The CA private key.
pub const CA_KEY: &str = "ca.key";
/// The previous CA certificate during a rotation.
pub const CA_OLD_CRT: &str = "ca-old.crt";
/// The previous CA private key during a rotation.
pub const CA_OLD_KEY: &str = "ca-old.key";
/// The rotation phase of a generated CA.
pub const PHASE: &str = "phase";
/// The leaf chain: leaf then issuing CA.
pub const TLS_CRT: &str = "tls.crt";
/// The leaf private key (PKCS#8).
pub const TLS_KEY: &str = "tls.key";
/// Key then chain: Kafka's PEM keystore.
pub const KEYSTORE: &str = "keystore.pem";
/// The trusted CA bundles.
pub const TRUSTSTORE: &str = "truststore.pem";

/// Which of a cluster's two CAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CaKind {
    /// Issues the brokers' and Envoy's certificates.
    Cluster,
    /// Issues the operator's and users' client certificates.
    Clients,
}

impl CaKind {
    /// Both, in the order the plan handles them.
    pub const ALL: [CaKind; 2] = [CaKind::Cluster, CaKind::Clients];

    /// `cluster` or `clients`.
    pub fn as_str(self) -> &'static str {
        match self {
            CaKind::Cluster => "cluster",
            CaKind::Clients => "clients",
        }
    }
}

impl std::fmt::Display for CaKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a CA comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// Pier generates and rotates it; `private` is its private Secret (None: not there yet).
    Generated {
        /// The private Secret's data.
        private: Option<SecretData>,
    },
    /// A user's Secret (`ca.crt`, `ca.key`) that Pier never writes; None: not found.
    Provided {
        /// The provided Secret's data.
        secret: Option<SecretData>,
    },
}

/// One CA's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaInput {
    /// The common name of a generated CA.
    pub common_name: String,
    /// Generated or provided, with the Secret's current data.
    pub source: CaSource,
    /// The public Secret's current data (None: not there yet).
    pub public: Option<SecretData>,
    /// Validity of a generated CA.
    pub validity_days: u32,
    /// A generated CA is rotated this long before it expires.
    pub renew_before_days: u32,
    /// A user asked for a rotation now (an annotation); see [`PkiPlan::forced`].
    pub force_renew: bool,
}

/// Which certificate a leaf's owner serves right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// It runs and serves this serial (None: it runs but what it serves is not known yet).
    Running(Option<String>),
    /// It does not run: it loads the Secret's files when it starts.
    NotRunning,
}

/// One leaf certificate's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInput {
    /// The leaf Secret's name (also how events name the certificate).
    pub secret_name: String,
    /// What the certificate must say.
    pub request: LeafRequest,
    /// The CA that issues it.
    pub issuer: CaKind,
    /// The CAs whose bundles go into `truststore.pem`, in this order.
    pub trust: Vec<CaKind>,
    /// The Secret's current data (None: not there yet).
    pub current: Option<SecretData>,
    /// More keys for the Secret, written verbatim.
    pub extra: SecretData,
    /// Validity of the certificate.
    pub validity_days: u32,
    /// It is renewed this long before it expires.
    pub renew_before_days: u32,
    /// What its owner serves.
    pub served_serial: Served,
}

/// The whole input of one plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiInput {
    /// Now, unix seconds.
    pub now: i64,
    /// The cluster CA.
    pub cluster_ca: CaInput,
    /// The clients CA.
    pub clients_ca: CaInput,
    /// Every leaf certificate of the cluster.
    pub leaves: Vec<LeafInput>,
}

/// Which Secret a write is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretRole {
    /// A generated CA's private Secret.
    CaPrivate(CaKind),
    /// A CA's public Secret (the trust bundle).
    CaPublic(CaKind),
    /// A leaf Secret, by name.
    Leaf(String),
}

/// A Secret's complete new data.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretWrite {
    /// Which Secret.
    pub role: SecretRole,
    /// Its whole data (replaces what is there).
    pub data: SecretData,
}

impl std::fmt::Debug for SecretWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretWrite")
            .field("role", &self.role)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Where a generated CA is in its rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CaPhase {
    /// No rotation.
    Normal,
    /// New and old CA trusted; the old one still issues.
    TrustBoth,
    /// New and old CA trusted; the new one issues.
    Reissue,
    /// Only the new CA trusted; the old one is still kept.
    DropOld,
}

impl CaPhase {
    /// The value of the private Secret's `phase` key (empty for normal).
    pub fn as_str(self) -> &'static str {
        match self {
            CaPhase::Normal => "",
            CaPhase::TrustBoth => "trust-both",
            CaPhase::Reissue => "reissue",
            CaPhase::DropOld => "drop-old",
        }
    }

    /// The phase a `phase` value names; None when unknown.
    pub fn parse(value: &str) -> Option<CaPhase> {
        [
            CaPhase::Normal,
            CaPhase::TrustBoth,
            CaPhase::Reissue,
            CaPhase::DropOld,
        ]
        .into_iter()
        .find(|p| p.as_str() == value.trim())
    }

    /// The step after this one.
    fn next(self) -> CaPhase {
        match self {
            CaPhase::Normal | CaPhase::DropOld => CaPhase::Normal,
            CaPhase::TrustBoth => CaPhase::Reissue,
            CaPhase::Reissue => CaPhase::DropOld,
        }
    }
}

/// A CA after the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaStatus {
    /// Which CA.
    pub kind: CaKind,
    /// A user-provided CA.
    pub provided: bool,
    /// The issuing CA's serial (None: unavailable).
    pub serial: Option<String>,
    /// The issuing CA's expiry, unix seconds.
    pub not_after: Option<i64>,
    /// The rotation phase (always normal for a provided CA).
    pub phase: CaPhase,
    /// The serials of every certificate in the trust bundle, in bundle order.
    pub trusted_serials: Vec<String>,
    /// The leaf Secret whose update (or serving) the next rotation step waits for.
    pub waiting_for: Option<String>,
}

/// A leaf after the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafStatus {
    /// The leaf Secret.
    pub secret_name: String,
    /// The serial of the certificate in the Secret after the plan's writes (None: none yet).
    pub serial: Option<String>,
    /// Its expiry, unix seconds.
    pub not_after: Option<i64>,
    /// The serial of the CA that issued it.
    pub issuer_serial: Option<String>,
    /// Its owner serves it (or does not run).
    pub served: bool,
    /// Why it is not up to date and served yet.
    pub pending_reason: Option<String>,
}

/// Every certificate's state after the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PkiStatus {
    /// Both CAs.
    pub cas: Vec<CaStatus>,
    /// Every leaf, in input order.
    pub leaves: Vec<LeafStatus>,
    /// The earliest expiry of any trusted CA certificate or leaf, unix seconds.
    pub earliest_expiry: Option<i64>,
}

/// What to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PkiPlan {
    /// Secrets to write, in the order to write them; only those whose content changes.
    pub writes: Vec<SecretWrite>,
    /// The state after the writes.
    pub status: PkiStatus,
    /// What happened, one line each, for humans.
    pub events: Vec<String>,
    /// What needs a user's attention (a provided CA missing, a name that cannot be certified).
    pub errors: Vec<String>,
    /// Something is pending (a rotation, a certificate not served yet): plan again soon.
    pub waiting: bool,
    /// CAs whose `force_renew` has been acted on (or cannot be): the caller clears the request.
    pub forced: Vec<CaKind>,
}

/// Plans certificate generation, issuance, renewal and CA rotation. See the module doc.
pub fn plan(input: &PkiInput) -> PkiPlan {
    let mut out = PkiPlan::default();
    let now = input.now;
    check_settings(input, &mut out);
    // The first leaf of each Secret name (a second one is refused below).
    let mut names = std::collections::BTreeSet::new();
    let managed: Vec<&LeafInput> = input
        .leaves
        .iter()
        .filter(|l| names.insert(l.secret_name.as_str()))
        .collect();
    let mut cas: BTreeMap<CaKind, CaState> = BTreeMap::new();
    for kind in CaKind::ALL {
        let ca = ca_input(input, kind);
        let state = CaState::load(kind, ca, now, &mut out);
        cas.insert(kind, state);
    }

    // Rotation steps: decided on the states as they are, then applied together.
    let mut advance = Vec::new();
    for kind in CaKind::ALL {
        let state = &cas[&kind];
        if state.phase == CaPhase::Normal {
            continue;
        }
        let unsettled = managed
            .iter()
            .filter(|leaf| leaf.issuer == kind || leaf.trust.contains(&kind))
            .find(|leaf| {
                let eval = evaluate(leaf, &cas, now);
                !(eval.reissue.is_empty() && eval.blocked.is_none() && served(leaf))
            });
        if unsettled.is_none() {
            advance.push(kind);
        }
    }
    for kind in advance {
        let state = cas.get_mut(&kind).expect("both kinds");
        let next = state.phase.next();
        out.events.push(match next {
            CaPhase::Reissue => format!(
                "{kind} CA rotation: every certificate trusts the new CA; re-issuing certificates with the new CA"
            ),
            CaPhase::DropOld => format!(
                "{kind} CA rotation: every certificate is issued by the new CA; dropping the old CA from trust"
            ),
            _ => format!("{kind} CA rotation complete: old CA removed"),
        });
        state.phase = next;
        state.stepped = true;
        if next == CaPhase::Normal {
            state.old = None;
        }
    }
    // A rotation starts only from normal, never in the same call as another step of that CA.
    for kind in CaKind::ALL {
        let ca = ca_input(input, kind);
        let state = cas.get_mut(&kind).expect("both kinds");
        state.maybe_start_rotation(ca, now, &mut out);
    }

    // CA Secrets.
    for kind in CaKind::ALL {
        let state = &cas[&kind];
        let ca = ca_input(input, kind);
        if let (Some(desired), CaSource::Generated { private }) = (state.private_data(), &ca.source)
            && !same_private(private.as_ref(), &desired)
        {
            out.writes.push(SecretWrite {
                role: SecretRole::CaPrivate(kind),
                data: desired,
            });
        }
    }
    for kind in CaKind::ALL {
        let state = &cas[&kind];
        if let Ok(bundle) = state.bundle() {
            let desired = SecretData::from([(CA_CRT.to_string(), bundle)]);
            if ca_input(input, kind).public.as_ref() != Some(&desired) {
                out.writes.push(SecretWrite {
                    role: SecretRole::CaPublic(kind),
                    data: desired,
                });
            }
        }
    }

    // Leaves; a second leaf for one Secret is refused (two writes would fight).
    let mut seen = std::collections::BTreeSet::new();
    for leaf in &input.leaves {
        if !seen.insert(leaf.secret_name.as_str()) {
            let reason = format!(
                "two certificates for Secret {}: only the first is managed",
                leaf.secret_name
            );
            out.errors.push(reason.clone());
            out.status.leaves.push(LeafStatus {
                secret_name: leaf.secret_name.clone(),
                serial: None,
                not_after: None,
                issuer_serial: None,
                served: false,
                pending_reason: Some(reason),
            });
            continue;
        }
        let status = plan_leaf(leaf, &cas, now, &mut out);
        out.status.leaves.push(status);
    }

    // Status.
    let mut earliest: Option<i64> = None;
    let mut note = |t: i64| earliest = Some(earliest.map_or(t, |e| e.min(t)));
    for kind in CaKind::ALL {
        let state = &cas[&kind];
        let trusted = state.trusted();
        for cert in &trusted {
            note(cert.not_after);
        }
        let issuing = state.current.as_ref().map(|c| &c.info);
        out.status.cas.push(CaStatus {
            kind,
            provided: state.provided,
            serial: issuing.map(|c| c.serial.clone()),
            not_after: issuing.map(|c| c.not_after),
            phase: state.phase,
            trusted_serials: trusted.iter().map(|c| c.serial.clone()).collect(),
            waiting_for: (state.phase != CaPhase::Normal)
                .then(|| {
                    managed
                        .iter()
                        .filter(|l| l.issuer == kind || l.trust.contains(&kind))
                        .find(|l| {
                            out.status
                                .leaves
                                .iter()
                                .find(|s| s.secret_name == l.secret_name)
                                .is_some_and(|s| !s.served || s.pending_reason.is_some())
                        })
                        .map(|l| l.secret_name.clone())
                })
                .flatten(),
        });
        if state.phase != CaPhase::Normal {
            out.waiting = true;
        }
    }
    for leaf in &out.status.leaves {
        if let Some(t) = leaf.not_after {
            note(t);
        }
    }
    out.status.earliest_expiry = earliest;
    if out
        .status
        .leaves
        .iter()
        .any(|l| !l.served && l.serial.is_some())
    {
        out.waiting = true;
    }
    out.errors.dedup();
    out
}

fn ca_input(input: &PkiInput, kind: CaKind) -> &CaInput {
    match kind {
        CaKind::Cluster => &input.cluster_ca,
        CaKind::Clients => &input.clients_ca,
    }
}

/// A CA certificate as read, with what it says and whether it can sign.
struct Loaded {
    /// The certificate and key as found (verbatim, so that rewriting them changes nothing).
    material: CaMaterial,
    info: CertInfo,
    /// The signer, or why there is none.
    issuer: Result<Issuer, String>,
}

impl Loaded {
    fn generated(material: CaMaterial, context: &str) -> Result<Loaded, String> {
        let issuer = Issuer::load(&material).map_err(|e| e.within(context).to_string())?;
        Ok(Loaded {
            info: issuer.info().clone(),
            material,
            issuer: Ok(issuer),
        })
    }
}

/// One CA during the plan.
struct CaState {
    kind: CaKind,
    provided: bool,
    phase: CaPhase,
    /// The CA in `ca.crt` (generated) or the first certificate of a provided `ca.crt`; None when
    /// unavailable, with the reason in `unavailable`.
    current: Option<Loaded>,
    /// The previous CA during a rotation.
    old: Option<Loaded>,
    /// A provided CA's whole bundle.
    provided_bundle: Vec<CertInfo>,
    unavailable: Option<String>,
    /// Generated (or regenerated) in this plan: no rotation on top.
    fresh: bool,
    /// A rotation step was taken in this plan: no other step of this CA.
    stepped: bool,
}

impl CaState {
    fn load(kind: CaKind, ca: &CaInput, now: i64, out: &mut PkiPlan) -> CaState {
        let mut state = CaState {
            kind,
            provided: matches!(ca.source, CaSource::Provided { .. }),
            phase: CaPhase::Normal,
            current: None,
            old: None,
            provided_bundle: Vec::new(),
            unavailable: None,
            fresh: false,
            stepped: false,
        };
        match &ca.source {
            CaSource::Provided { secret } => state.load_provided(secret.as_ref(), out),
            CaSource::Generated { private } => state.load_generated(private.as_ref(), ca, now, out),
        }
        state
    }

    fn load_provided(&mut self, secret: Option<&SecretData>, out: &mut PkiPlan) {
        let kind = self.kind;
        let context = format!("{kind} CA Secret (user-provided)");
        let Some(secret) = secret else {
            let reason = format!("{context} not found");
            out.errors.push(reason.clone());
            self.unavailable = Some(reason);
            return;
        };
        let bundle = match secret.get(CA_CRT) {
            None => Err(format!("{context} has no key {CA_CRT}")),
            Some(pem) => parse_bundle(pem)
                .map_err(|e| e.within(format!("{context} key {CA_CRT}")).to_string()),
        };
        let bundle = match bundle {
            Ok(bundle) => bundle,
            Err(reason) => {
                out.errors.push(reason.clone());
                self.unavailable = Some(reason);
                return;
            }
        };
        let first = bundle[0].clone();
        let key = secret.get(CA_KEY).cloned().unwrap_or_default();
        let issuer = if secret.contains_key(CA_KEY) {
            Issuer::load(&CaMaterial {
                cert_pem: first.pem.clone(),
                key_pem: key.clone(),
            })
            .map_err(|e| e.within(&context).to_string())
        } else {
            Err(format!("{context} has no key {CA_KEY}: it cannot issue"))
        };
        self.current = Some(Loaded {
            material: CaMaterial {
                cert_pem: first.pem.clone(),
                key_pem: key,
            },
            info: first,
            issuer,
        });
        self.provided_bundle = bundle;
    }

    fn load_generated(
        &mut self,
        private: Option<&SecretData>,
        ca: &CaInput,
        now: i64,
        out: &mut PkiPlan,
    ) {
        let kind = self.kind;
        let context = format!("{kind} CA private Secret");
        let read = |crt: &str, key: &str| -> Result<Loaded, String> {
            let data = private.ok_or_else(|| format!("{context} not found"))?;
            let (Some(cert_pem), Some(key_pem)) = (data.get(crt), data.get(key)) else {
                return Err(format!("{context} lacks {crt} or {key}"));
            };
            Loaded::generated(
                CaMaterial {
                    cert_pem: cert_pem.clone(),
                    key_pem: key_pem.clone(),
                },
                &format!("{context} keys {crt}/{key}"),
            )
        };
        match read(CA_CRT, CA_KEY) {
            Ok(current) => self.current = Some(current),
            Err(reason) => {
                if private.is_some() {
                    out.errors.push(format!(
                        "{reason}: generating a new {kind} CA; every certificate it issued is re-issued"
                    ));
                }
                match generate_ca(&ca.common_name, ca.validity_days, now)
                    .map_err(|e| e.to_string())
                    .and_then(|m| Loaded::generated(m, &context))
                {
                    Ok(new) => {
                        out.events.push(format!(
                            "generated the {kind} CA (serial {})",
                            new.info.serial
                        ));
                        self.current = Some(new);
                        self.fresh = true;
                    }
                    Err(e) => {
                        let reason = format!("generating the {kind} CA: {e}");
                        out.errors.push(reason.clone());
                        self.unavailable = Some(reason);
                    }
                }
                return;
            }
        }
        let Some(data) = private else { return };
        let value = data.get(PHASE).map(String::as_str).unwrap_or_default();
        let old = read(CA_OLD_CRT, CA_OLD_KEY);
        let phase = match CaPhase::parse(value) {
            Some(phase) => phase,
            None => {
                let resume = if old.is_ok() {
                    CaPhase::TrustBoth
                } else {
                    CaPhase::Normal
                };
                out.errors.push(format!(
                    "{context}: unknown phase {value:?}, resuming at {:?}",
                    resume.as_str()
                ));
                resume
            }
        };
        if phase == CaPhase::Normal {
            return;
        }
        match old {
            Ok(old) => {
                self.old = Some(old);
                self.phase = phase;
            }
            Err(reason) => out.errors.push(format!(
                "{reason}: the {kind} CA rotation ({}) lost its old CA; continuing with the new CA only",
                phase.as_str()
            )),
        }
    }

    /// Starts a rotation of a generated CA in normal phase when its renewal is due or forced.
    fn maybe_start_rotation(&mut self, ca: &CaInput, now: i64, out: &mut PkiPlan) {
        let kind = self.kind;
        if self.provided {
            if ca.force_renew {
                out.events.push(format!(
                    "{kind} CA renewal requested, but the CA is user-provided: replace its Secret to renew it"
                ));
                out.forced.push(kind);
            }
            return;
        }
        let Some(current) = &self.current else {
            return;
        };
        if self.fresh || self.stepped || self.phase != CaPhase::Normal {
            if ca.force_renew {
                out.events.push(format!(
                    "{kind} CA renewal requested: {}",
                    if self.fresh {
                        "the CA was just generated"
                    } else if self.phase == CaPhase::Normal {
                        "a rotation just completed"
                    } else {
                        "a rotation is already under way"
                    }
                ));
                out.forced.push(kind);
            }
            return;
        }
        let window = renew_window(ca.validity_days, ca.renew_before_days);
        let due = current.info.not_after - window <= now;
        if !due && !ca.force_renew {
            return;
        }
        let new = match generate_ca(&ca.common_name, ca.validity_days, now)
            .map_err(|e| e.to_string())
            .and_then(|m| Loaded::generated(m, &format!("new {kind} CA")))
        {
            Ok(new) => new,
            Err(e) => {
                out.errors
                    .push(format!("{kind} CA rotation cannot start: {e}"));
                return;
            }
        };
        let why = if due {
            match days(current.info.not_after - now).as_str() {
                "expired" => "the CA has expired".to_string(),
                left => format!("the CA expires in {left}"),
            }
        } else {
            "forced".to_string()
        };
        out.events.push(format!(
            "{kind} CA rotation: trusting new and old CA (new serial {}, {why})",
            new.info.serial
        ));
        if ca.force_renew {
            out.forced.push(kind);
        }
        self.old = self.current.replace(new);
        self.phase = CaPhase::TrustBoth;
    }

    /// The CA that issues leaves in this phase: the old one while both are trusted and the old
    /// one still issues.
    fn signer(&self) -> Result<&Loaded, String> {
        let signer = match self.phase {
            CaPhase::TrustBoth => self.old.as_ref(),
            _ => self.current.as_ref(),
        };
        signer.ok_or_else(|| self.unavailable_reason())
    }

    fn unavailable_reason(&self) -> String {
        self.unavailable
            .clone()
            .unwrap_or_else(|| format!("the {} CA is unavailable", self.kind))
    }

    /// Every trusted certificate, in bundle order.
    fn trusted(&self) -> Vec<&CertInfo> {
        if self.provided {
            return self.provided_bundle.iter().collect();
        }
        let mut trusted: Vec<&CertInfo> = self.current.iter().map(|c| &c.info).collect();
        if matches!(self.phase, CaPhase::TrustBoth | CaPhase::Reissue) {
            trusted.extend(self.old.iter().map(|c| &c.info));
        }
        trusted
    }

    /// The trust bundle (normalized PEM), or why it is unknown.
    fn bundle(&self) -> Result<String, String> {
        if self.current.is_none() {
            return Err(self.unavailable_reason());
        }
        Ok(self.trusted().iter().map(|c| c.pem.as_str()).collect())
    }

    /// A generated CA's private Secret data; None for a provided or unavailable one.
    fn private_data(&self) -> Option<SecretData> {
        if self.provided {
            return None;
        }
        let current = self.current.as_ref()?;
        let mut data = SecretData::from([
            (CA_CRT.to_string(), current.material.cert_pem.clone()),
            (CA_KEY.to_string(), current.material.key_pem.clone()),
        ]);
        if self.phase != CaPhase::Normal
            && let Some(old) = &self.old
        {
            data.insert(CA_OLD_CRT.into(), old.material.cert_pem.clone());
            data.insert(CA_OLD_KEY.into(), old.material.key_pem.clone());
            data.insert(PHASE.into(), self.phase.as_str().into());
        }
        Some(data)
    }
}

/// Whether a private Secret already holds `desired` (an empty `phase` is no phase).
fn same_private(current: Option<&SecretData>, desired: &SecretData) -> bool {
    let Some(current) = current else {
        return false;
    };
    let strip = |d: &SecretData| -> SecretData {
        d.iter()
            .filter(|(k, v)| !(k.as_str() == PHASE && v.trim().is_empty()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    strip(current) == strip(desired)
}

/// Settings that work but surely are not what the user meant, as errors.
fn check_settings(input: &PkiInput, out: &mut PkiPlan) {
    let window = |what: String, validity: u32, renew: u32| {
        (renew >= validity).then(|| {
            format!(
                "{what}: renewBeforeDays ({renew}) is not less than validityDays ({validity}): renewed one day after issuance"
            )
        })
    };
    for kind in CaKind::ALL {
        let ca = ca_input(input, kind);
        if matches!(ca.source, CaSource::Generated { .. }) {
            out.errors.extend(window(
                format!("{kind} CA"),
                ca.validity_days,
                ca.renew_before_days,
            ));
        }
    }
    for leaf in &input.leaves {
        let name = &leaf.secret_name;
        out.errors.extend(window(
            format!("certificate {name}"),
            leaf.validity_days,
            leaf.renew_before_days,
        ));
        for key in [TLS_CRT, TLS_KEY, KEYSTORE, TRUSTSTORE] {
            if leaf.extra.contains_key(key) {
                out.errors.push(format!(
                    "Secret {name}: extra key {key} ignored: Pier writes it"
                ));
            }
        }
    }
}

/// Seconds before expiry at which a certificate is renewed: `renew_before_days`, but always less
/// than the validity, so that a fresh certificate is never due at once.
fn renew_window(validity_days: u32, renew_before_days: u32) -> i64 {
    i64::from(renew_before_days.min(validity_days.max(1) - 1)) * DAY
}

fn days(seconds: i64) -> String {
    if seconds <= 0 {
        "expired".to_string()
    } else {
        let d = seconds / DAY;
        if d == 1 {
            "1 day".to_string()
        } else {
            format!("{d} days")
        }
    }
}

/// Whether the leaf Secret's current certificate is what its owner serves.
fn served(leaf: &LeafInput) -> bool {
    let serial = leaf
        .current
        .as_ref()
        .and_then(|d| d.get(TLS_CRT))
        .and_then(|pem| CertInfo::parse(pem).ok())
        .map(|c| c.serial);
    served_serial(leaf, serial.as_deref())
}

fn served_serial(leaf: &LeafInput, serial: Option<&str>) -> bool {
    match &leaf.served_serial {
        Served::NotRunning => true,
        Served::Running(running) => {
            serial.is_some() && running.as_deref().map(normalize_serial).as_deref() == serial
        }
    }
}

/// A serial as [`CertInfo::serial`] writes it: lower-case hex without colons or leading zero
/// bytes (`"00:AB:01"` → `"ab01"`), whichever way the caller formatted it.
pub fn normalize_serial(serial: &str) -> String {
    let hex: String = serial
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let hex = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex
    };
    let mut rest = hex.as_str();
    while rest.len() > 2 && rest.starts_with("00") {
        rest = &rest[2..];
    }
    rest.to_string()
}

/// What a leaf Secret should hold besides its certificate, and whether the current one does.
struct Evaluation {
    /// The current certificate, when readable.
    current: Option<CertInfo>,
    /// Why it must be re-issued (empty: it need not).
    reissue: Vec<String>,
    /// Why nothing can be decided or issued (a CA unavailable).
    blocked: Option<String>,
    /// The expected truststore.
    truststore: String,
}

fn evaluate(leaf: &LeafInput, cas: &BTreeMap<CaKind, CaState>, now: i64) -> Evaluation {
    let current = leaf
        .current
        .as_ref()
        .and_then(|d| d.get(TLS_CRT))
        .and_then(|pem| parse_bundle(pem).ok());
    let mut eval = Evaluation {
        current: current.as_ref().and_then(|c| c.first().cloned()),
        reissue: Vec::new(),
        blocked: None,
        truststore: String::new(),
    };
    let mut trust = Vec::new();
    for kind in &leaf.trust {
        if !trust.contains(kind) {
            trust.push(*kind);
        }
    }
    for kind in trust {
        match cas[&kind].bundle() {
            Ok(bundle) => eval.truststore.push_str(&bundle),
            Err(reason) => {
                eval.blocked = Some(reason);
                return eval;
            }
        }
    }
    let issuing = match cas[&leaf.issuer].signer() {
        Ok(signer) => signer,
        Err(reason) => {
            eval.blocked = Some(reason);
            return eval;
        }
    };
    let Some(data) = &leaf.current else {
        eval.reissue.push("new".into());
        return eval;
    };
    let Some(chain) = current else {
        eval.reissue.push(match data.get(TLS_CRT) {
            None => format!("{TLS_CRT} missing"),
            Some(pem) => match parse_bundle(pem) {
                Err(e) => format!("{TLS_CRT} unreadable: {e}"),
                Ok(_) => format!("{TLS_CRT} unreadable"),
            },
        });
        return eval;
    };
    let cert = &chain[0];
    let reasons = &mut eval.reissue;
    let window = renew_window(leaf.validity_days, leaf.renew_before_days);
    if cert.not_after - window <= now {
        reasons.push(format!(
            "renewal due: {}",
            match days(cert.not_after - now).as_str() {
                "expired" => "expired".to_string(),
                left => format!("expires in {left}"),
            }
        ));
    }
    let request = &leaf.request;
    if cert.subject_cn.as_deref() != Some(request.common_name.as_str()) {
        reasons.push(format!("new common name {}", request.common_name));
    }
    let wanted = sans(&request.dns_names, &request.ip_addresses, &request.uris);
    let has = sans(&cert.dns_names, &cert.ip_addresses, &cert.uris);
    let added: Vec<_> = wanted
        .iter()
        .filter(|s| !has.contains(s))
        .cloned()
        .collect();
    let removed: Vec<_> = has
        .iter()
        .filter(|s| !wanted.contains(s))
        .cloned()
        .collect();
    if !added.is_empty() {
        reasons.push(format!(
            "new SAN{} {}",
            if added.len() > 1 { "s" } else { "" },
            added.join(", ")
        ));
    }
    if !removed.is_empty() {
        reasons.push(format!("SAN removed: {}", removed.join(", ")));
    }
    if (cert.server_auth, cert.client_auth) != (request.server, request.client) {
        reasons.push("key usages changed".into());
    }
    let kind = leaf.issuer;
    if !issued_by(&cert.pem, &issuing.info.pem) {
        reasons.push(match cas[&kind].phase {
            CaPhase::Normal => format!("not issued by the current {kind} CA"),
            CaPhase::TrustBoth => format!("{kind} CA rotation: not issued by the old CA"),
            _ => format!("{kind} CA rotation: re-issuing with the new CA"),
        });
    } else if chain.len() != 2 || chain[1].pem != issuing.info.pem {
        reasons.push(format!("{TLS_CRT} is not the leaf and its CA"));
    }
    let key = data.get(TLS_KEY);
    if !key.is_some_and(|k| k.contains("BEGIN PRIVATE KEY") && key_matches(&cert.pem, k)) {
        reasons.push(format!("{TLS_KEY} missing or not the certificate's key"));
    }
    let keystore = key.zip(data.get(TLS_CRT)).map(|(k, c)| keystore(k, c));
    if keystore.is_none() || data.get(KEYSTORE) != keystore.as_ref() {
        reasons.push(format!("{KEYSTORE} out of date"));
    }
    if data.get(TRUSTSTORE) != Some(&eval.truststore) {
        reasons.push(trust_reason(leaf, data.get(TRUSTSTORE), cas));
    }
    let managed = [TLS_CRT, TLS_KEY, KEYSTORE, TRUSTSTORE];
    let mut stale: Vec<&str> = data
        .keys()
        .filter(|k| !managed.contains(&k.as_str()) && !leaf.extra.contains_key(*k))
        .map(String::as_str)
        .collect();
    stale.extend(
        leaf.extra
            .iter()
            .filter(|(k, v)| data.get(*k) != Some(*v) && !managed.contains(&k.as_str()))
            .map(|(k, _)| k.as_str()),
    );
    if !stale.is_empty() {
        stale.sort_unstable();
        reasons.push(format!("keys changed: {}", stale.join(", ")));
    }
    eval
}

/// Why a truststore changed, phrased after the rotation that changed it: the first CA whose
/// bundle the current truststore lacks.
fn trust_reason(
    leaf: &LeafInput,
    current: Option<&String>,
    cas: &BTreeMap<CaKind, CaState>,
) -> String {
    let current = current.map(String::as_str).unwrap_or_default();
    for kind in &leaf.trust {
        let state = &cas[kind];
        if state.bundle().is_ok_and(|b| current.contains(&b)) {
            continue;
        }
        match state.phase {
            CaPhase::TrustBoth | CaPhase::Reissue => {
                return format!("{kind} CA rotation: trusting new and old CA");
            }
            CaPhase::DropOld => return format!("{kind} CA rotation: old CA dropped from trust"),
            CaPhase::Normal => {}
        }
    }
    "trust bundle changed".to_string()
}

/// SANs as comparable strings, sorted and deduplicated.
fn sans(dns: &[String], ips: &[std::net::IpAddr], uris: &[String]) -> Vec<String> {
    let mut all: Vec<String> = dns
        .iter()
        .cloned()
        .chain(ips.iter().map(ToString::to_string))
        .chain(uris.iter().cloned())
        .collect();
    all.sort();
    all.dedup();
    all
}

/// Kafka's PEM keystore: the key, then the chain.
fn keystore(key_pem: &str, chain_pem: &str) -> String {
    let mut out = key_pem.to_string();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(chain_pem);
    out
}

fn plan_leaf(
    leaf: &LeafInput,
    cas: &BTreeMap<CaKind, CaState>,
    now: i64,
    out: &mut PkiPlan,
) -> LeafStatus {
    let eval = evaluate(leaf, cas, now);
    let name = &leaf.secret_name;
    let current_issuer = |cert: &CertInfo| {
        cas.values()
            .flat_map(|s| s.current.iter().chain(s.old.iter()))
            .map(|l| &l.info)
            .chain(cas.values().flat_map(|s| s.provided_bundle.iter()))
            .find(|ca| issued_by(&cert.pem, &ca.pem))
            .map(|ca| ca.serial.clone())
    };
    let keep = |pending: Option<String>| {
        let cert = eval.current.as_ref();
        let is_served = served_serial(leaf, cert.map(|c| c.serial.as_str()));
        let pending = pending.or_else(|| {
            (!is_served).then(|| match (&leaf.served_serial, cert) {
                (Served::Running(Some(running)), Some(c)) => {
                    format!("serves serial {running}, the Secret holds {}", c.serial)
                }
                (_, Some(c)) => format!("waiting to see serial {} served", c.serial),
                (_, None) => "no certificate yet".to_string(),
            })
        });
        LeafStatus {
            secret_name: name.clone(),
            serial: cert.map(|c| c.serial.clone()),
            not_after: cert.map(|c| c.not_after),
            issuer_serial: cert.and_then(current_issuer),
            served: is_served && cert.is_some(),
            pending_reason: pending,
        }
    };
    if let Some(reason) = &eval.blocked {
        return keep(Some(format!("cannot issue: {reason}")));
    }
    if eval.reissue.is_empty() {
        return keep(None);
    }
    let signer = match cas[&leaf.issuer].signer() {
        Ok(signer) => signer,
        Err(reason) => return keep(Some(format!("cannot issue: {reason}"))),
    };
    let issued = signer
        .issuer
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|issuer| {
            issuer
                .issue(&leaf.request, leaf.validity_days, now)
                .map_err(|e| e.to_string())
        });
    let issued = match issued {
        Ok(issued) => issued,
        Err(e) => {
            let reason = format!("cannot issue the certificate for {name}: {e}");
            out.errors.push(reason.clone());
            return keep(Some(reason));
        }
    };
    let mut data = leaf.extra.clone();
    data.insert(
        KEYSTORE.into(),
        keystore(&issued.key_pem, &issued.chain_pem),
    );
    data.insert(TLS_CRT.into(), issued.chain_pem);
    data.insert(TLS_KEY.into(), issued.key_pem);
    data.insert(TRUSTSTORE.into(), eval.truststore.clone());
    out.events.push(format!(
        "issued certificate for {name} ({})",
        eval.reissue.join("; ")
    ));
    out.writes.push(SecretWrite {
        role: SecretRole::Leaf(name.clone()),
        data,
    });
    let is_served = served_serial(leaf, Some(&issued.serial));
    LeafStatus {
        secret_name: name.clone(),
        pending_reason: (!is_served)
            .then(|| format!("waiting to see serial {} served", issued.serial)),
        serial: Some(issued.serial),
        not_after: Some(issued.not_after),
        issuer_serial: Some(signer.info.serial.clone()),
        served: is_served,
    }
}

#[cfg(test)]
mod tests;
