//! What a KafkaUser needs in Kafka (pure): its principal, the names no user may take, its
//! ACLs as Kafka's bindings and the difference to what Kafka holds, its quotas and their
//! difference; and what authorization adds to a cluster's `server.properties` (the
//! StandardAuthorizer, super users, principal mapping). `controller::users` asks Kafka and
//! carries the changes out.
use std::collections::{BTreeMap, BTreeSet};

use crate::api::{
    AclOperationName, AclPatternKind, AclResourceKind, AclRuleType, ClientAuth, KafkaCluster,
    KafkaUser, SecurityProtocol, UserQuotas,
};
use crate::kafka::{
    AclBinding, AclFilter, AclOperation, AclPatternType, AclPermission, AclResourceType,
    CLUSTER_RESOURCE, quota_keys,
};
use crate::reconcile::security::{self, is_tls};

/// Kafka's authorizer of KRaft clusters.
pub const STANDARD_AUTHORIZER: &str = "org.apache.kafka.metadata.authorizer.StandardAuthorizer";
/// The common name of the operator's client certificate (see `controller::pki`).
pub const OPERATOR_CN: &str = "pier-operator";

/// Kafka's principal of a KafkaUser: its name, for a certificate (`CN=<name>`, mapped by
/// [`authorizer_properties`]' rules) and for SCRAM alike.
pub fn principal(user: &KafkaUser) -> String {
    format!("User:{}", user_name(user))
}

/// The user's name in Kafka: the resource's name.
pub fn user_name(user: &KafkaUser) -> &str {
    user.metadata.name.as_deref().unwrap_or_default()
}

/// The Secret (by name, in the user's namespace) the user's credential is read from or
/// written to: the password Secret it references, else its own Secret (named after it: the
/// generated password, or its certificate). A change of it is a change of the user.
pub fn credential_secret(user: &KafkaUser) -> Option<&str> {
    let auth = user.spec.authentication.as_ref()?;
    Some(match &auth.password {
        Some(p) => p.value_from.secret_key_ref.name.as_str(),
        None => user_name(user),
    })
}

/// The principal every broker of `cluster` authenticates as (its certificates' common names
/// `<cluster>-broker-<id>` are mapped to it).
pub fn broker_principal_name(cluster: &str) -> String {
    format!("{cluster}-broker")
}

/// Why `name` cannot be a user of `cluster`: it would be the operator, the brokers or the
/// anonymous principal, all super users.
pub fn reserved_name(cluster: &str, name: &str) -> Option<String> {
    let brokers = broker_principal_name(cluster);
    let is_broker = name == brokers
        || name
            .strip_prefix(&format!("{brokers}-"))
            .is_some_and(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()));
    let reserved = name == OPERATOR_CN
        || is_broker
        || name.eq_ignore_ascii_case("anonymous")
        || name == format!("{cluster}-envoy");
    reserved.then(|| {
        format!(
            "the name {name:?} is reserved: Pier's operator, the brokers and ANONYMOUS are super users of cluster {cluster}"
        )
    })
}

/// Whether any of `users` (of one cluster) asks for ACLs: the cluster then runs the
/// StandardAuthorizer.
pub fn authorization_wanted<'a>(users: impl IntoIterator<Item = &'a KafkaUser>) -> bool {
    users.into_iter().any(|u| u.spec.authorization.is_some())
}

/// What authorization adds to every node's `server.properties`: the StandardAuthorizer; as
/// super users the operator, the brokers (one principal for all: their certificates' names
/// are mapped to it, so adding a broker changes nothing here), and ANONYMOUS when the
/// inter-broker or controller listener does not authenticate clients (every connection there
/// is ANONYMOUS, brokers included); certificate subjects `CN=<name>` mapped to `<name>`.
pub fn authorizer_properties(kc: &KafkaCluster) -> Vec<(String, String)> {
    let cluster = kc.metadata.name.as_deref().unwrap_or_default();
    let brokers = broker_principal_name(cluster);
    let mut supers = vec![format!("User:{OPERATOR_CN}"), format!("User:{brokers}")];
    if anonymous_internally(kc) {
        supers.push("User:ANONYMOUS".into());
    }
    vec![
        ("authorizer.class.name".into(), STANDARD_AUTHORIZER.into()),
        ("super.users".into(), supers.join(";")),
        ("allow.everyone.if.no.acl.found".into(), "false".into()),
        (
            "ssl.principal.mapping.rules".into(),
            format!(
                "RULE:^CN={}-([0-9]+)$/{brokers}/,RULE:^CN=([^,]+)$/$1/,DEFAULT",
                regex_escape(&brokers)
            ),
        ),
    ]
}

/// Whether the inter-broker or controller listener lets clients in unauthenticated.
pub fn anonymous_internally(kc: &KafkaCluster) -> bool {
    security::listeners(kc)
        .iter()
        .filter(|l| l.inter_broker || l.controller)
        .any(|l| {
            l.protocol == SecurityProtocol::Plaintext
                || (is_tls(l.protocol)
                    && l.client_auth != ClientAuth::Required
                    && !security::is_sasl(l.protocol))
        })
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = ".^$*+?()[]{}|\\/".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

/// The ACLs the spec asks for, one binding per operation.
pub fn desired_acls(user: &KafkaUser) -> BTreeSet<AclBinding> {
    let principal = principal(user);
    let Some(authz) = &user.spec.authorization else {
        return BTreeSet::new();
    };
    let mut out = BTreeSet::new();
    for rule in &authz.acls {
        let (resource_type, name) = match rule.resource.type_ {
            AclResourceKind::Topic => (AclResourceType::Topic, rule.resource.name.clone()),
            AclResourceKind::Group => (AclResourceType::Group, rule.resource.name.clone()),
            AclResourceKind::TransactionalId => {
                (AclResourceType::TransactionalId, rule.resource.name.clone())
            }
            AclResourceKind::Cluster => {
                (AclResourceType::Cluster, Some(CLUSTER_RESOURCE.to_string()))
            }
        };
        let pattern = match (rule.resource.type_, rule.resource.pattern_type) {
            (AclResourceKind::Cluster, _) | (_, AclPatternKind::Literal) => AclPatternType::Literal,
            (_, AclPatternKind::Prefixed) => AclPatternType::Prefixed,
        };
        let permission = match rule.type_ {
            AclRuleType::Allow => AclPermission::Allow,
            AclRuleType::Deny => AclPermission::Deny,
        };
        for op in &rule.operations {
            out.insert(
                AclBinding::new(
                    principal.clone(),
                    permission,
                    operation(*op),
                    resource_type,
                    name.clone().unwrap_or_else(|| "*".into()),
                    pattern,
                )
                .with_host(rule.host.clone()),
            );
        }
    }
    out
}

fn operation(op: AclOperationName) -> AclOperation {
    match op {
        AclOperationName::All => AclOperation::All,
        AclOperationName::Read => AclOperation::Read,
        AclOperationName::Write => AclOperation::Write,
        AclOperationName::Create => AclOperation::Create,
        AclOperationName::Delete => AclOperation::Delete,
        AclOperationName::Alter => AclOperation::Alter,
        AclOperationName::Describe => AclOperation::Describe,
        AclOperationName::ClusterAction => AclOperation::ClusterAction,
        AclOperationName::DescribeConfigs => AclOperation::DescribeConfigs,
        AclOperationName::AlterConfigs => AclOperation::AlterConfigs,
        AclOperationName::IdempotentWrite => AclOperation::IdempotentWrite,
    }
}

/// What to create and what to delete so that Kafka holds exactly `desired` for the principal.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AclChanges {
    pub create: Vec<AclBinding>,
    /// Exact filters of bindings Kafka holds and the spec does not.
    pub delete: Vec<AclFilter>,
}

impl AclChanges {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty()
    }
}

pub fn acl_changes(desired: &BTreeSet<AclBinding>, current: &BTreeSet<AclBinding>) -> AclChanges {
    AclChanges {
        create: desired.difference(current).cloned().collect(),
        delete: current.difference(desired).map(AclFilter::exact).collect(),
    }
}

/// Kafka's quota keys and values the spec asks for.
pub fn desired_quotas(quotas: Option<&UserQuotas>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Some(q) = quotas else {
        return out;
    };
    if let Some(v) = q.producer_byte_rate {
        out.insert(quota_keys::PRODUCER_BYTE_RATE.to_string(), v as f64);
    }
    if let Some(v) = q.consumer_byte_rate {
        out.insert(quota_keys::CONSUMER_BYTE_RATE.to_string(), v as f64);
    }
    if let Some(v) = q.request_percentage {
        out.insert(quota_keys::REQUEST_PERCENTAGE.to_string(), f64::from(v));
    }
    out
}

/// Quotas to set (differing or missing) and keys to remove (held, not wanted).
pub fn quota_changes(
    desired: &BTreeMap<String, f64>,
    current: &BTreeMap<String, f64>,
) -> (BTreeMap<String, f64>, Vec<String>) {
    let set = desired
        .iter()
        .filter(|(k, v)| {
            current
                .get(*k)
                .is_none_or(|c| (c - **v).abs() > f64::EPSILON)
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let remove = current
        .keys()
        .filter(|k| !desired.contains_key(*k))
        .cloned()
        .collect();
    (set, remove)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AclResource, AclRule, ClusterRef, KafkaUserSpec, UserAuthorization};

    fn user(name: &str, acls: Vec<AclRule>) -> KafkaUser {
        KafkaUser::new(
            name,
            KafkaUserSpec {
                cluster_ref: ClusterRef { name: "c".into() },
                authentication: None,
                authorization: Some(UserAuthorization { acls }),
                quotas: None,
            },
        )
    }

    #[test]
    fn a_user_reads_the_secret_it_references_or_its_own() {
        use crate::api::{
            AuthenticationType, PasswordSource, PasswordValueFrom, UserAuthentication,
        };
        let mut u = user("app", vec![]);
        assert!(credential_secret(&u).is_none(), "no credential, no Secret");
        u.spec.authentication = Some(UserAuthentication {
            type_: AuthenticationType::Tls,
            password: None,
        });
        assert_eq!(credential_secret(&u), Some("app"));
        u.spec.authentication = Some(UserAuthentication {
            type_: AuthenticationType::ScramSha512,
            password: None,
        });
        assert_eq!(credential_secret(&u), Some("app"), "the generated password");
        u.spec.authentication = Some(UserAuthentication {
            type_: AuthenticationType::ScramSha512,
            password: Some(PasswordSource {
                value_from: PasswordValueFrom {
                    secret_key_ref: crate::api::SecretKeyRef {
                        name: "app-password".into(),
                        key: "pw".into(),
                    },
                },
            }),
        });
        assert_eq!(credential_secret(&u), Some("app-password"));
    }

    fn rule(
        kind: AclResourceKind,
        name: Option<&str>,
        pattern: AclPatternKind,
        ops: &[AclOperationName],
        type_: AclRuleType,
    ) -> AclRule {
        AclRule {
            resource: AclResource {
                type_: kind,
                name: name.map(str::to_string),
                pattern_type: pattern,
            },
            operations: ops.to_vec(),
            type_,
            host: "*".into(),
        }
    }

    #[test]
    fn one_binding_per_operation_with_the_users_principal() {
        let u = user(
            "alice",
            vec![
                rule(
                    AclResourceKind::Topic,
                    Some("orders"),
                    AclPatternKind::Literal,
                    &[AclOperationName::Write, AclOperationName::Describe],
                    AclRuleType::Allow,
                ),
                rule(
                    AclResourceKind::Group,
                    Some("app-"),
                    AclPatternKind::Prefixed,
                    &[AclOperationName::Read],
                    AclRuleType::Deny,
                ),
                rule(
                    AclResourceKind::Cluster,
                    None,
                    AclPatternKind::Prefixed,
                    &[AclOperationName::IdempotentWrite],
                    AclRuleType::Allow,
                ),
            ],
        );
        let acls = desired_acls(&u);
        assert_eq!(acls.len(), 4);
        assert!(acls.iter().all(|b| b.principal == "User:alice"));
        let cluster = acls
            .iter()
            .find(|b| b.resource_type == AclResourceType::Cluster)
            .unwrap();
        assert_eq!(cluster.resource_name, CLUSTER_RESOURCE);
        assert_eq!(
            cluster.pattern,
            AclPatternType::Literal,
            "the cluster is literal"
        );
        let group = acls
            .iter()
            .find(|b| b.resource_type == AclResourceType::Group)
            .unwrap();
        assert_eq!(
            (group.pattern, group.permission),
            (AclPatternType::Prefixed, AclPermission::Deny)
        );
        assert!(acls.iter().all(|b| b.validate().is_ok()));
    }

    #[test]
    fn no_authorization_no_acls() {
        let mut u = user("bob", vec![]);
        u.spec.authorization = None;
        assert!(desired_acls(&u).is_empty());
        assert!(!authorization_wanted([&u]));
        u.spec.authorization = Some(UserAuthorization::default());
        assert!(authorization_wanted([&u]));
    }

    #[test]
    fn acl_changes_create_the_missing_and_delete_the_extra_exactly() {
        let b = |op| {
            AclBinding::new(
                "User:a",
                AclPermission::Allow,
                op,
                AclResourceType::Topic,
                "t",
                AclPatternType::Literal,
            )
        };
        let desired: BTreeSet<_> = [b(AclOperation::Read), b(AclOperation::Write)].into();
        let current: BTreeSet<_> = [b(AclOperation::Write), b(AclOperation::Delete)].into();
        let c = acl_changes(&desired, &current);
        assert_eq!(c.create, vec![b(AclOperation::Read)]);
        assert_eq!(c.delete, vec![AclFilter::exact(&b(AclOperation::Delete))]);
        assert!(acl_changes(&desired, &desired).is_empty());
    }

    #[test]
    fn quotas_set_what_differs_and_remove_what_is_not_wanted() {
        let desired = desired_quotas(Some(&UserQuotas {
            producer_byte_rate: Some(102400),
            consumer_byte_rate: None,
            request_percentage: Some(50),
        }));
        assert_eq!(desired.len(), 2);
        let current: BTreeMap<String, f64> = [
            (quota_keys::PRODUCER_BYTE_RATE.to_string(), 102400.0),
            (quota_keys::CONSUMER_BYTE_RATE.to_string(), 1.0),
        ]
        .into();
        let (set, remove) = quota_changes(&desired, &current);
        assert_eq!(
            set,
            [(quota_keys::REQUEST_PERCENTAGE.to_string(), 50.0)].into()
        );
        assert_eq!(remove, vec![quota_keys::CONSUMER_BYTE_RATE.to_string()]);
        let (set, remove) = quota_changes(&desired, &desired);
        assert!(set.is_empty() && remove.is_empty());
        assert!(desired_quotas(None).is_empty());
    }

    #[test]
    fn super_user_names_are_reserved() {
        for name in [
            "pier-operator",
            "c-broker",
            "c-broker-0",
            "c-broker-12",
            "anonymous",
            "c-envoy",
        ] {
            assert!(reserved_name("c", name).is_some(), "{name}");
        }
        for name in ["alice", "c-broker-x", "c-brokers", "d-broker-0"] {
            assert!(reserved_name("c", name).is_none(), "{name}");
        }
    }

    #[test]
    fn the_mapping_rules_give_brokers_one_principal_and_users_their_name() {
        let rules = regex_escape("my.c-broker");
        assert_eq!(rules, "my\\.c-broker");
    }
}
