//! Resizing broker volumes: a PersistentVolumeClaim is created once (its spec is immutable but
//! for its size), so a changed `size` in the spec is a resize of the existing claim. Kubernetes
//! only grows volumes, and only when their StorageClass allows it; anything else is refused
//! and said so, never attempted.
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;

use crate::api::quantity_units;

/// What to do with one existing claim whose planned size may differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resize {
    /// Sizes are equal (or cannot be compared: nothing to do).
    Keep,
    /// Request the bigger size.
    Expand { claim: String, size: String },
    /// Cannot be done; the message says why.
    Refuse { claim: String, why: String },
}

fn requested(claim: &PersistentVolumeClaim) -> Option<String> {
    claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .map(|q| q.0.clone())
}

/// The claim's StorageClass name, if it names one.
pub fn storage_class(claim: &PersistentVolumeClaim) -> Option<String> {
    claim.spec.as_ref()?.storage_class_name.clone()
}

/// Compares the planned claim with the existing one. `expandable` says whether the existing
/// claim's StorageClass allows volume expansion (`None`: unknown, e.g. no class named).
pub fn plan_resize(
    planned: &PersistentVolumeClaim,
    existing: &PersistentVolumeClaim,
    expandable: Option<bool>,
) -> Resize {
    let claim = existing.name_any();
    let (Some(want), Some(have)) = (requested(planned), requested(existing)) else {
        return Resize::Keep;
    };
    let (Some(want_bytes), Some(have_bytes)) = (quantity_units(&want), quantity_units(&have))
    else {
        return Resize::Keep;
    };
    if want_bytes == have_bytes {
        return Resize::Keep;
    }
    if want_bytes < have_bytes {
        return Resize::Refuse {
            claim: claim.clone(),
            why: format!(
                "volume {claim} cannot shrink from {have} to {want}: Kubernetes volumes only grow; \
                 it keeps {have}"
            ),
        };
    }
    match expandable {
        Some(true) => Resize::Expand { claim, size: want },
        Some(false) => Resize::Refuse {
            claim: claim.clone(),
            why: format!(
                "volume {claim} cannot grow from {have} to {want}: its StorageClass {} does not \
                 allow volume expansion",
                storage_class(existing).unwrap_or_default()
            ),
        },
        None => Resize::Refuse {
            claim: claim.clone(),
            why: format!(
                "volume {claim} cannot grow from {have} to {want}: it names no StorageClass \
                 that allows volume expansion"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, VolumeResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn claim(size: &str) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("c".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some("fast".into()),
                resources: Some(VolumeResourceRequirements {
                    requests: Some([("storage".to_string(), Quantity(size.into()))].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn equal_sizes_in_other_units_are_kept() {
        assert_eq!(
            plan_resize(&claim("1024Mi"), &claim("1Gi"), Some(true)),
            Resize::Keep
        );
    }

    #[test]
    fn growth_expands_only_where_the_class_allows_it() {
        assert_eq!(
            plan_resize(&claim("2Gi"), &claim("1Gi"), Some(true)),
            Resize::Expand {
                claim: "c".into(),
                size: "2Gi".into()
            }
        );
        assert!(matches!(
            plan_resize(&claim("2Gi"), &claim("1Gi"), Some(false)),
            Resize::Refuse { why, .. } if why.contains("does not allow volume expansion")
        ));
    }

    #[test]
    fn shrinking_is_refused() {
        assert!(matches!(
            plan_resize(&claim("1Gi"), &claim("2Gi"), Some(true)),
            Resize::Refuse { why, .. } if why.contains("cannot shrink") && why.contains("keeps 2Gi")
        ));
    }
}
