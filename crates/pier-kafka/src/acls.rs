//! ACLs as Kafka's authorizer stores them ([`AclBinding`]), filters that select them
//! ([`AclFilter`]), and the calls that read and change them (DescribeAcls, CreateAcls,
//! DeleteAcls).
//!
//! The enums carry Kafka's numeric codes both ways. A code Kafka sends that Pier has no name
//! for (a newer Kafka's operation, say) becomes an `Unknown(code)` variant rather than an
//! error, so a description never fails on someone else's ACL and such an ACL can still be
//! deleted by an exact filter; Pier never creates one ([`AclBinding::validate`]).
//!
//! Any broker answers: DescribeAcls from its own copy of the ACLs (which follows the
//! controller's a moment behind), CreateAcls and DeleteAcls forwarded to the controller. A
//! cluster without an authorizer answers SECURITY_DISABLED
//! ([`KafkaError::is_security_disabled`]).
use std::fmt;
use std::str::FromStr;

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;

use super::error::codes::SECURITY_DISABLED;
use super::{BrokerConnection, KafkaError};

const DESCRIBE: &str = "DescribeAcls";
const CREATE: &str = "CreateAcls";
const DELETE: &str = "DeleteAcls";

/// Kafka's code for "any" in filters (resource type, pattern type, operation, permission).
const ANY_CODE: i8 = 1;

/// The resource name Kafka reads as "every resource of this type" in a LITERAL ACL.
pub const WILDCARD_RESOURCE: &str = "*";
/// The host of an ACL that applies to connections from every host.
pub const WILDCARD_HOST: &str = "*";
/// The one resource name of the CLUSTER resource type.
pub const CLUSTER_RESOURCE: &str = "kafka-cluster";

/// A text that names no ACL enum value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown ACL {kind} {text:?}")]
pub struct UnknownAclName {
    /// Which enum: "resource type", "pattern type", "operation", "permission".
    pub kind: &'static str,
    pub text: String,
}

/// Upper case without `_`, `-` and spaces, so "TransactionalId", "transactional_id" and
/// "TRANSACTIONAL_ID" compare equal.
fn normalized(text: &str) -> String {
    text.chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_uppercase)
        .collect()
}

/// Defines an ACL enum with Kafka's codes and names; `Unknown(code)` holds any other code.
macro_rules! acl_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:literal {
            $($(#[$vmeta:meta])* $variant:ident = $code:literal, $text:literal;)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A code Pier has no name for, as Kafka sent it (0 is Kafka's UNKNOWN, 1 its
            /// ANY, neither valid in an ACL).
            Unknown(i8),
        }

        impl $name {
            /// Every named value, in code order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Kafka's numeric code.
            pub fn code(self) -> i8 {
                match self {
                    $($name::$variant => $code,)+
                    $name::Unknown(code) => code,
                }
            }

            /// The value with this code; a code without a name is `Unknown(code)`.
            pub fn from_code(code: i8) -> Self {
                match code {
                    $($code => $name::$variant,)+
                    other => $name::Unknown(other),
                }
            }

            /// Whether this is a value Pier has a name for.
            pub fn is_known(self) -> bool {
                !matches!(self, $name::Unknown(_))
            }

            /// Kafka's name (`UNKNOWN(<code>)` for codes without one).
            pub fn name(self) -> std::borrow::Cow<'static, str> {
                match self {
                    $($name::$variant => std::borrow::Cow::Borrowed($text),)+
                    $name::Unknown(code) => std::borrow::Cow::Owned(format!("UNKNOWN({code})")),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.name())
            }
        }

        /// Kafka's name in any case, `_` optional ("read", "DescribeConfigs",
        /// "describe_configs"); never `Unknown`.
        impl FromStr for $name {
            type Err = UnknownAclName;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                let wanted = normalized(text);
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| normalized(&v.name()) == wanted)
                    .ok_or_else(|| UnknownAclName {
                        kind: $kind,
                        text: text.to_string(),
                    })
            }
        }
    };
}

acl_enum! {
    /// What kind of resource an ACL is about.
    AclResourceType, "resource type" {
        Topic = 2, "TOPIC";
        /// A consumer group.
        Group = 3, "GROUP";
        /// The cluster itself; its one name is [`CLUSTER_RESOURCE`].
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
        DelegationToken = 6, "DELEGATION_TOKEN";
        /// A user (for CREATE_TOKENS and DESCRIBE_TOKENS on behalf of others).
        User = 7, "USER";
    }
}

acl_enum! {
    /// How an ACL's resource name matches resource names.
    AclPatternType, "pattern type" {
        /// The name itself (or every resource, for [`WILDCARD_RESOURCE`]).
        Literal = 3, "LITERAL";
        /// Every name starting with it.
        Prefixed = 4, "PREFIXED";
    }
}

acl_enum! {
    /// What an ACL allows or denies.
    AclOperation, "operation" {
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
        CreateTokens = 13, "CREATE_TOKENS";
        DescribeTokens = 14, "DESCRIBE_TOKENS";
        TwoPhaseCommit = 15, "TWO_PHASE_COMMIT";
    }
}

acl_enum! {
    /// Whether an ACL allows or denies (a DENY wins over any ALLOW).
    AclPermission, "permission" {
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
}

/// One ACL: `principal` may (or may not) do `operation` on the resources
/// `resource_type:resource_name` (as `pattern` matches names) from `host`.
///
/// Ordered and hashable so callers can diff wanted against actual sets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclBinding {
    pub resource_type: AclResourceType,
    /// A name, a prefix (for [`AclPatternType::Prefixed`]) or [`WILDCARD_RESOURCE`].
    pub resource_name: String,
    pub pattern: AclPatternType,
    /// `Type:name`, e.g. `User:alice`; `User:*` is every user.
    pub principal: String,
    /// An IP address, or [`WILDCARD_HOST`].
    pub host: String,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

impl AclBinding {
    /// An ACL for connections from any host.
    pub fn new(
        principal: impl Into<String>,
        permission: AclPermission,
        operation: AclOperation,
        resource_type: AclResourceType,
        resource_name: impl Into<String>,
        pattern: AclPatternType,
    ) -> Self {
        AclBinding {
            resource_type,
            resource_name: resource_name.into(),
            pattern,
            principal: principal.into(),
            host: WILDCARD_HOST.to_string(),
            operation,
            permission,
        }
    }

    /// The same ACL for connections from `host` only.
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// Why Kafka would refuse to create this ACL, checked before sending: a code Pier has no
    /// name for, an empty resource name or host, a principal that is not `Type:name`, a
    /// CLUSTER resource not named [`CLUSTER_RESOURCE`].
    pub fn validate(&self) -> Result<(), String> {
        let unknown = [
            (!self.resource_type.is_known()).then(|| self.resource_type.name()),
            (!self.pattern.is_known()).then(|| self.pattern.name()),
            (!self.operation.is_known()).then(|| self.operation.name()),
            (!self.permission.is_known()).then(|| self.permission.name()),
        ];
        if let Some(code) = unknown.into_iter().flatten().next() {
            return Err(format!("{code} is no value Pier can create an ACL with"));
        }
        if self.resource_name.is_empty() {
            return Err("the resource name is empty".to_string());
        }
        if self.resource_type == AclResourceType::Cluster
            && (self.resource_name != CLUSTER_RESOURCE || self.pattern != AclPatternType::Literal)
        {
            return Err(format!(
                "the CLUSTER resource is named {CLUSTER_RESOURCE} (LITERAL)"
            ));
        }
        match self.principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => {
                return Err(format!(
                    "principal {:?} is not of the form Type:name (e.g. User:alice)",
                    self.principal
                ));
            }
        }
        if self.host.is_empty() {
            return Err(format!("the host is empty (use {WILDCARD_HOST} for any)"));
        }
        Ok(())
    }
}

/// `User:alice ALLOW WRITE on TOPIC:orders (LITERAL) from *`.
impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} on {}:{} ({}) from {}",
            self.principal,
            self.permission,
            self.operation,
            self.resource_type,
            self.resource_name,
            self.pattern,
            self.host
        )
    }
}

/// Which pattern types (and names) an [`AclFilter`] selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AclPatternFilter {
    /// Any pattern type; a filter name selects ACLs with exactly that resource name.
    #[default]
    Any,
    /// The ACLs that apply to the filter's resource name: LITERAL ones with that name or
    /// [`WILDCARD_RESOURCE`], PREFIXED ones whose prefix starts it.
    Match,
    /// This pattern type only (and exactly the filter's name, if it has one).
    Exactly(AclPatternType),
}

impl AclPatternFilter {
    /// Kafka's code: ANY 1, MATCH 2, else the pattern type's.
    pub fn code(self) -> i8 {
        match self {
            AclPatternFilter::Any => ANY_CODE,
            AclPatternFilter::Match => 2,
            AclPatternFilter::Exactly(p) => p.code(),
        }
    }
}

impl From<AclPatternType> for AclPatternFilter {
    fn from(pattern: AclPatternType) -> Self {
        AclPatternFilter::Exactly(pattern)
    }
}

/// Selects ACLs (to describe or delete them): each `None` field (and
/// [`AclPatternFilter::Any`]) matches everything. [`AclFilter::any`] selects every ACL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AclFilter {
    pub resource_type: Option<AclResourceType>,
    pub resource_name: Option<String>,
    pub pattern: AclPatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<AclOperation>,
    pub permission: Option<AclPermission>,
}

impl AclFilter {
    /// Every ACL.
    pub fn any() -> Self {
        AclFilter::default()
    }

    /// Every ACL of one principal, e.g. `User:alice`.
    pub fn principal(principal: impl Into<String>) -> Self {
        AclFilter {
            principal: Some(principal.into()),
            ..AclFilter::default()
        }
    }

    /// Exactly this ACL.
    pub fn exact(binding: &AclBinding) -> Self {
        AclFilter {
            resource_type: Some(binding.resource_type),
            resource_name: Some(binding.resource_name.clone()),
            pattern: AclPatternFilter::Exactly(binding.pattern),
            principal: Some(binding.principal.clone()),
            host: Some(binding.host.clone()),
            operation: Some(binding.operation),
            permission: Some(binding.permission),
        }
    }

    /// Only ACLs on these resources (`name` `None`: any name of this type).
    pub fn with_resource(
        mut self,
        resource_type: AclResourceType,
        name: Option<&str>,
        pattern: AclPatternFilter,
    ) -> Self {
        self.resource_type = Some(resource_type);
        self.resource_name = name.map(str::to_string);
        self.pattern = pattern;
        self
    }

    /// Only ACLs of this principal.
    pub fn with_principal(mut self, principal: impl Into<String>) -> Self {
        self.principal = Some(principal.into());
        self
    }

    /// Only ACLs for this host (an address or [`WILDCARD_HOST`] itself).
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Only ACLs about this operation.
    pub fn with_operation(mut self, operation: AclOperation) -> Self {
        self.operation = Some(operation);
        self
    }

    /// Only ALLOW or only DENY ACLs.
    pub fn with_permission(mut self, permission: AclPermission) -> Self {
        self.permission = Some(permission);
        self
    }

    /// Whether Kafka would select `binding` with this filter (the rules of Kafka's
    /// `AclBindingFilter.matches`).
    pub fn matches(&self, binding: &AclBinding) -> bool {
        let equal = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        self.resource_type
            .is_none_or(|t| t == binding.resource_type)
            && self.pattern_matches(binding)
            && equal(&self.principal, &binding.principal)
            && equal(&self.host, &binding.host)
            && self.operation.is_none_or(|o| o == binding.operation)
            && self.permission.is_none_or(|p| p == binding.permission)
    }

    fn pattern_matches(&self, binding: &AclBinding) -> bool {
        let name = self.resource_name.as_deref();
        match self.pattern {
            AclPatternFilter::Any => name.is_none_or(|n| n == binding.resource_name),
            AclPatternFilter::Exactly(p) => {
                p == binding.pattern && name.is_none_or(|n| n == binding.resource_name)
            }
            AclPatternFilter::Match => match (name, binding.pattern) {
                (None, _) => true,
                (Some(n), AclPatternType::Literal) => {
                    n == binding.resource_name || binding.resource_name == WILDCARD_RESOURCE
                }
                (Some(n), AclPatternType::Prefixed) => n.starts_with(&binding.resource_name),
                (Some(_), AclPatternType::Unknown(_)) => false,
            },
        }
    }
}

/// Like an ACL: `User:alice ANY ANY on TOPIC:ANY (ANY) from ANY`, with `ANY` for each field
/// that matches everything.
impl fmt::Display for AclFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn or_any<T: fmt::Display>(value: &Option<T>) -> String {
            value
                .as_ref()
                .map_or_else(|| "ANY".to_string(), T::to_string)
        }
        let pattern = match self.pattern {
            AclPatternFilter::Any => "ANY".to_string(),
            AclPatternFilter::Match => "MATCH".to_string(),
            AclPatternFilter::Exactly(p) => p.to_string(),
        };
        write!(
            f,
            "{} {} {} on {}:{} ({}) from {}",
            or_any(&self.principal),
            or_any(&self.permission),
            or_any(&self.operation),
            or_any(&self.resource_type),
            or_any(&self.resource_name),
            pattern,
            or_any(&self.host)
        )
    }
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn any_code<T>(value: Option<T>, code: impl Fn(T) -> i8) -> i8 {
    value.map_or(ANY_CODE, code)
}

fn describe_request(filter: &AclFilter) -> DescribeAclsRequest {
    DescribeAclsRequest::default()
        .with_resource_type_filter(any_code(filter.resource_type, AclResourceType::code))
        .with_resource_name_filter(filter.resource_name.as_deref().map(text))
        .with_pattern_type_filter(filter.pattern.code())
        .with_principal_filter(filter.principal.as_deref().map(text))
        .with_host_filter(filter.host.as_deref().map(text))
        .with_operation(any_code(filter.operation, AclOperation::code))
        .with_permission_type(any_code(filter.permission, AclPermission::code))
}

fn delete_filter(filter: &AclFilter) -> DeleteAclsFilter {
    DeleteAclsFilter::default()
        .with_resource_type_filter(any_code(filter.resource_type, AclResourceType::code))
        .with_resource_name_filter(filter.resource_name.as_deref().map(text))
        .with_pattern_type_filter(filter.pattern.code())
        .with_principal_filter(filter.principal.as_deref().map(text))
        .with_host_filter(filter.host.as_deref().map(text))
        .with_operation(any_code(filter.operation, AclOperation::code))
        .with_permission_type(any_code(filter.permission, AclPermission::code))
}

fn creation(binding: &AclBinding) -> AclCreation {
    AclCreation::default()
        .with_resource_type(binding.resource_type.code())
        .with_resource_name(text(&binding.resource_name))
        .with_resource_pattern_type(binding.pattern.code())
        .with_principal(text(&binding.principal))
        .with_host(text(&binding.host))
        .with_operation(binding.operation.code())
        .with_permission_type(binding.permission.code())
}

/// The broker's error about `subject` (an ACL or a filter), saying plainly when the cluster
/// has no authorizer.
fn acl_error(
    addr: &str,
    api: &str,
    code: i16,
    message: Option<&StrBytes>,
    subject: Option<&str>,
) -> KafkaError {
    let mut parts: Vec<String> = Vec::new();
    if let Some(subject) = subject {
        parts.push(subject.to_string());
    }
    if code == SECURITY_DISABLED {
        parts.push("the cluster has no authorizer (authorizer.class.name is not set)".to_string());
    }
    if let Some(m) = message.filter(|m| !m.is_empty()) {
        parts.push(m.to_string());
    }
    KafkaError::broker(addr, api, code, Some(parts.join(": ")))
}

/// Sorted, without duplicates.
fn sorted(mut bindings: Vec<AclBinding>) -> Vec<AclBinding> {
    bindings.sort();
    bindings.dedup();
    bindings
}

impl BrokerConnection {
    /// The ACLs `filter` selects, sorted. SECURITY_DISABLED when the cluster has no
    /// authorizer.
    pub async fn describe_acls(
        &mut self,
        filter: &AclFilter,
    ) -> Result<Vec<AclBinding>, KafkaError> {
        let response = self.send(&describe_request(filter)).await?;
        if response.error_code != 0 {
            return Err(acl_error(
                self.addr(),
                DESCRIBE,
                response.error_code,
                response.error_message.as_ref(),
                Some(&format!("filter {filter}")),
            ));
        }
        let mut out = Vec::new();
        for resource in response.resources {
            for acl in resource.acls {
                out.push(AclBinding {
                    resource_type: AclResourceType::from_code(resource.resource_type),
                    resource_name: resource.resource_name.to_string(),
                    pattern: AclPatternType::from_code(resource.pattern_type),
                    principal: acl.principal.to_string(),
                    host: acl.host.to_string(),
                    operation: AclOperation::from_code(acl.operation),
                    permission: AclPermission::from_code(acl.permission_type),
                });
            }
        }
        Ok(sorted(out))
    }

    /// Creates ACLs (one that exists already is no error). Invalid ones
    /// ([`AclBinding::validate`]) fail before anything is sent. The first ACL Kafka refused
    /// is the error, named in its message (with how many others failed); the rest may have
    /// been created.
    pub async fn create_acls(&mut self, bindings: &[AclBinding]) -> Result<(), KafkaError> {
        validate_bindings(bindings)?;
        if bindings.is_empty() {
            return Ok(());
        }
        let request =
            CreateAclsRequest::default().with_creations(bindings.iter().map(creation).collect());
        let response = self.send(&request).await?;
        if response.results.len() != bindings.len() {
            return Err(KafkaError::malformed(
                self.addr(),
                CREATE,
                format!(
                    "{} results for {} ACLs",
                    response.results.len(),
                    bindings.len()
                ),
            ));
        }
        let failed: Vec<(&AclBinding, i16, Option<StrBytes>)> = bindings
            .iter()
            .zip(response.results)
            .filter(|(_, r)| r.error_code != 0)
            .map(|(b, r)| (b, r.error_code, r.error_message))
            .collect();
        match failed.first() {
            None => Ok(()),
            Some((binding, code, message)) => {
                let mut subject = format!("ACL {binding}");
                if failed.len() > 1 {
                    subject = format!("{subject} (and {} more ACLs)", failed.len() - 1);
                }
                Err(acl_error(
                    self.addr(),
                    CREATE,
                    *code,
                    message.as_ref(),
                    Some(&subject),
                ))
            }
        }
    }

    /// Deletes the ACLs the filters select and returns them, sorted (an ACL two filters
    /// select once). A filter or an ACL Kafka refused is the error, named in its message.
    /// Beware: [`AclFilter::any`] selects every ACL of the cluster.
    pub async fn delete_acls(
        &mut self,
        filters: &[AclFilter],
    ) -> Result<Vec<AclBinding>, KafkaError> {
        if filters.is_empty() {
            return Ok(Vec::new());
        }
        let request =
            DeleteAclsRequest::default().with_filters(filters.iter().map(delete_filter).collect());
        let response = self.send(&request).await?;
        if response.filter_results.len() != filters.len() {
            return Err(KafkaError::malformed(
                self.addr(),
                DELETE,
                format!(
                    "{} results for {} filters",
                    response.filter_results.len(),
                    filters.len()
                ),
            ));
        }
        let mut deleted = Vec::new();
        for (filter, result) in filters.iter().zip(response.filter_results) {
            if result.error_code != 0 {
                return Err(acl_error(
                    self.addr(),
                    DELETE,
                    result.error_code,
                    result.error_message.as_ref(),
                    Some(&format!("filter {filter}")),
                ));
            }
            for acl in result.matching_acls {
                let binding = AclBinding {
                    resource_type: AclResourceType::from_code(acl.resource_type),
                    resource_name: acl.resource_name.to_string(),
                    pattern: AclPatternType::from_code(acl.pattern_type),
                    principal: acl.principal.to_string(),
                    host: acl.host.to_string(),
                    operation: AclOperation::from_code(acl.operation),
                    permission: AclPermission::from_code(acl.permission_type),
                };
                if acl.error_code != 0 {
                    return Err(acl_error(
                        self.addr(),
                        DELETE,
                        acl.error_code,
                        acl.error_message.as_ref(),
                        Some(&format!("ACL {binding}")),
                    ));
                }
                deleted.push(binding);
            }
        }
        Ok(sorted(deleted))
    }
}

/// Every binding valid, else the first invalid one, named.
pub(crate) fn validate_bindings(bindings: &[AclBinding]) -> Result<(), KafkaError> {
    for binding in bindings {
        binding.validate().map_err(|reason| {
            KafkaError::invalid_argument(CREATE, format!("ACL {binding}: {reason}"))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::testing::fake_broker;
    use crate::{ConnectOptions, codes};
    use kafka_protocol::messages::create_acls_response::AclCreationResult;
    use kafka_protocol::messages::delete_acls_response::{
        DeleteAclsFilterResult, DeleteAclsMatchingAcl,
    };
    use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
    use kafka_protocol::messages::{
        ApiKey, CreateAclsResponse, DeleteAclsResponse, DescribeAclsResponse,
    };
    use std::collections::{BTreeSet, HashSet};

    use AclOperation as Op;
    use AclPatternType as Pat;
    use AclPermission as Perm;
    use AclResourceType as Res;

    fn alice_writes_orders() -> AclBinding {
        AclBinding::new(
            "User:alice",
            Perm::Allow,
            Op::Write,
            Res::Topic,
            "orders",
            Pat::Literal,
        )
    }

    fn on(resource: &str, pattern: AclPatternType) -> AclBinding {
        AclBinding::new(
            "User:bob",
            Perm::Allow,
            Op::Read,
            Res::Topic,
            resource,
            pattern,
        )
    }

    #[test]
    fn codes_are_kafkas_and_round_trip() {
        let expected: &[(i8, &str)] = &[
            (2, "TOPIC"),
            (3, "GROUP"),
            (4, "CLUSTER"),
            (5, "TRANSACTIONAL_ID"),
            (6, "DELEGATION_TOKEN"),
            (7, "USER"),
        ];
        let got: Vec<(i8, String)> = Res::ALL.iter().map(|r| (r.code(), r.to_string())).collect();
        let expected: Vec<(i8, String)> =
            expected.iter().map(|(c, n)| (*c, n.to_string())).collect();
        assert_eq!(got, expected);
        assert_eq!(
            [
                Op::All,
                Op::Read,
                Op::Write,
                Op::Create,
                Op::Delete,
                Op::Alter,
                Op::Describe
            ]
            .map(Op::code),
            [2, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(
            [
                Op::ClusterAction,
                Op::DescribeConfigs,
                Op::AlterConfigs,
                Op::IdempotentWrite
            ]
            .map(Op::code),
            [9, 10, 11, 12]
        );
        assert_eq!((Pat::Literal.code(), Pat::Prefixed.code()), (3, 4));
        assert_eq!((Perm::Deny.code(), Perm::Allow.code()), (2, 3));
        for code in i8::MIN..=i8::MAX {
            assert_eq!(Res::from_code(code).code(), code);
            assert_eq!(Pat::from_code(code).code(), code);
            assert_eq!(Op::from_code(code).code(), code);
            assert_eq!(Perm::from_code(code).code(), code);
        }
        for r in Res::ALL {
            assert_eq!(Res::from_code(r.code()), *r);
        }
        for o in Op::ALL {
            assert_eq!(Op::from_code(o.code()), *o);
            assert_eq!(o.to_string().parse::<Op>(), Ok(*o));
        }
    }

    #[test]
    fn unknown_codes_are_kept_not_named_and_never_panic() {
        for code in [0, 1, 16, 99, -1, i8::MIN, i8::MAX] {
            let op = Op::from_code(code);
            assert_eq!(op, Op::Unknown(code));
            assert!(!op.is_known());
            assert_eq!(op.to_string(), format!("UNKNOWN({code})"));
        }
        assert_eq!(
            Res::from_code(1),
            Res::Unknown(1),
            "ANY is no resource type"
        );
        assert_eq!(
            Pat::from_code(2),
            Pat::Unknown(2),
            "MATCH is no pattern type"
        );
        assert_eq!(Perm::from_code(0), Perm::Unknown(0));
        assert!(Res::Topic.is_known() && Perm::Deny.is_known());
    }

    #[test]
    fn names_parse_in_any_case_with_or_without_underscores() {
        assert_eq!("topic".parse(), Ok(Res::Topic));
        assert_eq!("TransactionalId".parse(), Ok(Res::TransactionalId));
        assert_eq!("transactional_id".parse(), Ok(Res::TransactionalId));
        assert_eq!("DESCRIBE_CONFIGS".parse(), Ok(Op::DescribeConfigs));
        assert_eq!("IdempotentWrite".parse(), Ok(Op::IdempotentWrite));
        assert_eq!("prefixed".parse(), Ok(Pat::Prefixed));
        assert_eq!("Deny".parse(), Ok(Perm::Deny));
        let err = "UNKNOWN(9)".parse::<Op>().unwrap_err();
        assert_eq!(err.to_string(), "unknown ACL operation \"UNKNOWN(9)\"");
        assert!(
            "any".parse::<Perm>().is_err(),
            "ANY is a filter, not a value"
        );
        assert!("match".parse::<Pat>().is_err());
        assert!("".parse::<Res>().is_err());
    }

    #[test]
    fn a_binding_displays_like_kafkas_tools_say_it() {
        assert_eq!(
            alice_writes_orders().to_string(),
            "User:alice ALLOW WRITE on TOPIC:orders (LITERAL) from *"
        );
        let deny = AclBinding::new(
            "User:bob",
            Perm::Deny,
            Op::DescribeConfigs,
            Res::Group,
            "app-",
            Pat::Prefixed,
        )
        .with_host("10.0.0.7");
        assert_eq!(
            deny.to_string(),
            "User:bob DENY DESCRIBE_CONFIGS on GROUP:app- (PREFIXED) from 10.0.0.7"
        );
        let odd = AclBinding {
            operation: Op::Unknown(42),
            ..alice_writes_orders()
        };
        assert!(odd.to_string().contains("UNKNOWN(42) on"), "{odd}");
    }

    #[test]
    fn bindings_compare_by_value_so_sets_can_be_diffed() {
        let wanted: BTreeSet<AclBinding> =
            [alice_writes_orders(), on("logs-", Pat::Prefixed)].into();
        let actual: BTreeSet<AclBinding> = [
            alice_writes_orders(),
            alice_writes_orders().with_host("10.0.0.1"),
        ]
        .into();
        let missing: Vec<_> = wanted.difference(&actual).collect();
        let extra: Vec<_> = actual.difference(&wanted).collect();
        assert_eq!(missing, [&on("logs-", Pat::Prefixed)]);
        assert_eq!(extra, [&alice_writes_orders().with_host("10.0.0.1")]);
        let hashed: HashSet<AclBinding> = [alice_writes_orders(), alice_writes_orders()].into();
        assert_eq!(hashed.len(), 1);
    }

    #[test]
    fn validation_refuses_what_kafka_would() {
        assert_eq!(alice_writes_orders().validate(), Ok(()));
        let cluster = AclBinding::new(
            "User:op",
            Perm::Allow,
            Op::Alter,
            Res::Cluster,
            CLUSTER_RESOURCE,
            Pat::Literal,
        );
        assert_eq!(cluster.validate(), Ok(()));
        let bad = [
            (
                AclBinding {
                    operation: Op::Unknown(1),
                    ..alice_writes_orders()
                },
                "UNKNOWN(1)",
            ),
            (
                AclBinding {
                    pattern: Pat::Unknown(2),
                    ..alice_writes_orders()
                },
                "UNKNOWN(2)",
            ),
            (
                AclBinding {
                    resource_name: String::new(),
                    ..alice_writes_orders()
                },
                "resource name is empty",
            ),
            (
                AclBinding {
                    principal: "alice".into(),
                    ..alice_writes_orders()
                },
                "Type:name",
            ),
            (
                AclBinding {
                    principal: "User:".into(),
                    ..alice_writes_orders()
                },
                "Type:name",
            ),
            (
                AclBinding {
                    host: String::new(),
                    ..alice_writes_orders()
                },
                "host is empty",
            ),
            (
                AclBinding {
                    resource_name: "other".into(),
                    ..cluster.clone()
                },
                "kafka-cluster",
            ),
        ];
        for (binding, reason) in bad {
            let err = binding.validate().unwrap_err();
            assert!(err.contains(reason), "{binding}: {err}");
            let err = validate_bindings(&[alice_writes_orders(), binding.clone()]).unwrap_err();
            assert!(matches!(err, KafkaError::InvalidArgument { .. }), "{err}");
            assert!(err.to_string().contains(&binding.to_string()), "{err}");
        }
    }

    #[test]
    fn filters_build_kafkas_any_codes() {
        let r = describe_request(&AclFilter::any());
        assert_eq!(
            (
                r.resource_type_filter,
                r.pattern_type_filter,
                r.operation,
                r.permission_type
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(
            (&r.resource_name_filter, &r.principal_filter, &r.host_filter),
            (&None, &None, &None)
        );
        let r = describe_request(&AclFilter::principal("User:alice"));
        assert_eq!(r.principal_filter.as_deref(), Some("User:alice"));
        assert_eq!((r.resource_type_filter, r.operation), (1, 1));

        let exact = AclFilter::exact(&alice_writes_orders());
        let d = delete_filter(&exact);
        assert_eq!(
            (
                d.resource_type_filter,
                d.pattern_type_filter,
                d.operation,
                d.permission_type
            ),
            (2, 3, 4, 3)
        );
        assert_eq!(d.resource_name_filter.as_deref(), Some("orders"));
        assert_eq!(d.host_filter.as_deref(), Some("*"));
        let m = AclFilter::any().with_resource(Res::Group, Some("g"), AclPatternFilter::Match);
        assert_eq!(
            (
                delete_filter(&m).pattern_type_filter,
                delete_filter(&m).resource_type_filter
            ),
            (2, 3)
        );
        let c = creation(&alice_writes_orders().with_host("10.1.1.1"));
        assert_eq!(
            (
                c.resource_type,
                c.resource_pattern_type,
                c.operation,
                c.permission_type
            ),
            (2, 3, 4, 3)
        );
        assert_eq!(
            (
                c.principal.as_str(),
                c.host.as_str(),
                c.resource_name.as_str()
            ),
            ("User:alice", "10.1.1.1", "orders")
        );
    }

    #[test]
    fn filters_match_like_kafka() {
        let alice = alice_writes_orders();
        assert!(AclFilter::any().matches(&alice));
        assert!(AclFilter::principal("User:alice").matches(&alice));
        assert!(!AclFilter::principal("User:bob").matches(&alice));
        assert!(AclFilter::exact(&alice).matches(&alice));
        for other in [
            alice.clone().with_host("10.0.0.1"),
            AclBinding {
                permission: Perm::Deny,
                ..alice.clone()
            },
            AclBinding {
                operation: Op::Read,
                ..alice.clone()
            },
            AclBinding {
                pattern: Pat::Prefixed,
                ..alice.clone()
            },
            AclBinding {
                resource_type: Res::Group,
                ..alice.clone()
            },
            AclBinding {
                resource_name: "orders2".into(),
                ..alice.clone()
            },
        ] {
            assert!(!AclFilter::exact(&alice).matches(&other), "{other}");
            assert!(
                AclFilter::principal("User:alice").matches(&other),
                "{other}"
            );
        }

        let topic =
            |name: &str, pattern| AclFilter::any().with_resource(Res::Topic, Some(name), pattern);
        let (literal, prefix, wildcard) = (
            on("orders-eu", Pat::Literal),
            on("orders-", Pat::Prefixed),
            on(WILDCARD_RESOURCE, Pat::Literal),
        );
        // MATCH: what applies to the name.
        let m = topic("orders-eu", AclPatternFilter::Match);
        assert!(m.matches(&literal) && m.matches(&prefix) && m.matches(&wildcard));
        assert!(!m.matches(&on("orders-us", Pat::Literal)));
        assert!(!m.matches(&on("orders-eu-1", Pat::Prefixed)));
        // ANY: exactly the name, any pattern type.
        let a = topic("orders-", AclPatternFilter::Any);
        assert!(a.matches(&prefix) && a.matches(&on("orders-", Pat::Literal)));
        assert!(!a.matches(&literal) && !a.matches(&wildcard));
        // A pattern type: that one only.
        let p = topic("orders-", Pat::Prefixed.into());
        assert!(p.matches(&prefix) && !p.matches(&on("orders-", Pat::Literal)));
        let every_prefixed = AclFilter {
            pattern: AclPatternFilter::Exactly(Pat::Prefixed),
            ..AclFilter::any()
        };
        assert!(every_prefixed.matches(&prefix) && !every_prefixed.matches(&literal));
        // Other filter fields.
        assert!(
            AclFilter::any()
                .with_operation(Op::Read)
                .with_permission(Perm::Allow)
                .with_principal("User:bob")
                .with_host("*")
                .matches(&literal)
        );
        assert!(!AclFilter::any().with_host("10.0.0.1").matches(&literal));
    }

    #[test]
    fn a_filter_displays_any_for_open_fields() {
        assert_eq!(
            AclFilter::principal("User:alice").to_string(),
            "User:alice ANY ANY on ANY:ANY (ANY) from ANY"
        );
        assert_eq!(
            AclFilter::exact(&alice_writes_orders()).to_string(),
            alice_writes_orders().to_string()
        );
        let m = AclFilter::any().with_resource(Res::Topic, Some("t"), AclPatternFilter::Match);
        assert_eq!(m.to_string(), "ANY ANY ANY on TOPIC:t (MATCH) from ANY");
    }

    fn quick() -> ConnectOptions {
        ConnectOptions {
            request_timeout: std::time::Duration::from_secs(2),
            ..ConnectOptions::default()
        }
    }

    #[tokio::test]
    async fn describe_reads_every_resource_sorted_and_names_a_missing_authorizer() {
        let broker = fake_broker(&[(ApiKey::DescribeAcls, 3)], |req| {
            let r: DescribeAclsRequest = req.decode();
            if req.index == 1 {
                return req.respond(
                    &DescribeAclsResponse::default()
                        .with_error_code(codes::SECURITY_DISABLED)
                        .with_error_message(Some(StrBytes::from_static_str(
                            "No Authorizer is configured.",
                        ))),
                );
            }
            assert_eq!(r.principal_filter.as_deref(), Some("User:alice"));
            let acl = |op: i8, perm: i8| {
                AclDescription::default()
                    .with_principal(StrBytes::from_static_str("User:alice"))
                    .with_host(StrBytes::from_static_str("*"))
                    .with_operation(op)
                    .with_permission_type(perm)
            };
            req.respond(&DescribeAclsResponse::default().with_resources(vec![
                DescribeAclsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("orders"))
                    .with_pattern_type(3)
                    .with_acls(vec![acl(4, 3), acl(99, 2)]),
                DescribeAclsResource::default()
                    .with_resource_type(3)
                    .with_resource_name(StrBytes::from_static_str("app-"))
                    .with_pattern_type(4)
                    .with_acls(vec![acl(3, 3)]),
            ]))
        })
        .await;
        let mut conn = BrokerConnection::connect(&broker.addr, quick())
            .await
            .unwrap();
        let acls = conn
            .describe_acls(&AclFilter::principal("User:alice"))
            .await
            .unwrap();
        let expected = sorted(vec![
            alice_writes_orders(),
            AclBinding {
                operation: Op::Unknown(99),
                permission: Perm::Deny,
                ..alice_writes_orders()
            },
            AclBinding::new(
                "User:alice",
                Perm::Allow,
                Op::Read,
                Res::Group,
                "app-",
                Pat::Prefixed,
            ),
        ]);
        assert_eq!(acls, expected);

        let err = conn.describe_acls(&AclFilter::any()).await.unwrap_err();
        assert!(err.is_security_disabled(), "{err}");
        let text = err.to_string();
        for part in [
            "DescribeAcls",
            "no authorizer",
            "authorizer.class.name",
            "No Authorizer",
        ] {
            assert!(text.contains(part), "{text}");
        }
        assert!(!err.is_retriable());
    }

    #[tokio::test]
    async fn create_names_the_refused_acl() {
        let broker = fake_broker(&[(ApiKey::CreateAcls, 3)], |req| {
            let r: CreateAclsRequest = req.decode();
            let results = r
                .creations
                .iter()
                .map(|c| {
                    let code = if c.principal.as_str() == "User:bob" {
                        codes::SECURITY_DISABLED
                    } else {
                        0
                    };
                    AclCreationResult::default().with_error_code(code)
                })
                .collect();
            req.respond(&CreateAclsResponse::default().with_results(results))
        })
        .await;
        let mut conn = BrokerConnection::connect(&broker.addr, quick())
            .await
            .unwrap();
        conn.create_acls(&[alice_writes_orders()]).await.unwrap();
        conn.create_acls(&[]).await.unwrap();
        assert_eq!(broker.requests(), 1, "nothing to create, nothing sent");
        let bob = on("logs", Pat::Literal);
        let err = conn
            .create_acls(&[alice_writes_orders(), bob.clone(), on("x", Pat::Prefixed)])
            .await
            .unwrap_err();
        assert!(err.is_security_disabled(), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("ACL {bob} (and 1 more ACLs)")),
            "{text}"
        );
        assert!(text.contains("no authorizer"), "{text}");

        let invalid = AclBinding {
            principal: "bob".into(),
            ..bob
        };
        let err = conn.create_acls(&[invalid]).await.unwrap_err();
        assert!(matches!(err, KafkaError::InvalidArgument { .. }), "{err}");
        assert_eq!(broker.requests(), 2, "an invalid ACL is not sent");
    }

    #[tokio::test]
    async fn delete_returns_what_the_filters_matched() {
        let broker = fake_broker(&[(ApiKey::DeleteAcls, 3)], |req| {
            let r: DeleteAclsRequest = req.decode();
            let matching = |name: &'static str, code: i16| {
                DeleteAclsMatchingAcl::default()
                    .with_error_code(code)
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str(name))
                    .with_pattern_type(3)
                    .with_principal(StrBytes::from_static_str("User:bob"))
                    .with_host(StrBytes::from_static_str("*"))
                    .with_operation(3)
                    .with_permission_type(3)
            };
            let results =
                r.filters
                    .iter()
                    .map(|f| match f.resource_name_filter.as_deref() {
                        None => DeleteAclsFilterResult::default()
                            .with_matching_acls(vec![matching("a", 0), matching("b", 0)]),
                        Some("b") => DeleteAclsFilterResult::default()
                            .with_matching_acls(vec![matching("b", 0)]),
                        Some("bad-filter") => DeleteAclsFilterResult::default()
                            .with_error_code(codes::INVALID_REQUEST)
                            .with_error_message(Some(StrBytes::from_static_str("nope"))),
                        Some(_) => DeleteAclsFilterResult::default()
                            .with_matching_acls(vec![matching("c", codes::INVALID_REQUEST)]),
                    })
                    .collect();
            req.respond(&DeleteAclsResponse::default().with_filter_results(results))
        })
        .await;
        let mut conn = BrokerConnection::connect(&broker.addr, quick())
            .await
            .unwrap();
        let by_name = |name: &str| {
            AclFilter::any().with_resource(Res::Topic, Some(name), Pat::Literal.into())
        };
        let deleted = conn
            .delete_acls(&[AclFilter::principal("User:bob"), by_name("b")])
            .await
            .unwrap();
        assert_eq!(deleted, [on("a", Pat::Literal), on("b", Pat::Literal)]);

        let err = conn
            .delete_acls(&[by_name("bad-filter")])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(codes::INVALID_REQUEST));
        assert!(
            err.to_string()
                .contains("filter ANY ANY ANY on TOPIC:bad-filter"),
            "{err}"
        );
        assert!(err.to_string().contains("nope"), "{err}");
        let err = conn.delete_acls(&[by_name("c")]).await.unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("ACL {}", on("c", Pat::Literal))),
            "{err}"
        );
        assert_eq!(conn.delete_acls(&[]).await.unwrap(), []);
        assert_eq!(broker.requests(), 3);
    }
}
