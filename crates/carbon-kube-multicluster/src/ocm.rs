//! Open Cluster Management's `AddOnPlacementScore`
//! (`cluster.open-cluster-management.io/v1alpha1`, namespaced, status
//! subresource): the kind, its status as serde types, and what Carbon-Kube
//! reads from and writes to it.
//!
//! OCM's add-on pattern: each managed cluster's score lives on the hub in
//! the cluster's namespace (named after the managed cluster), and a
//! `Placement` selects it by object name (`addOn.resourceName`) and score
//! name (`addOn.scoreName`). Scores are integers in −100..=100; after
//! `status.validUntil` the placement controller ignores them.

use carbon_kube_model::UnixSeconds;
use carbon_kube_policy::cluster_score::{ClusterScore, Publication, Published};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde::{Deserialize, Serialize};

/// API group of the kind.
pub const GROUP: &str = "cluster.open-cluster-management.io";
/// API version of the kind.
pub const VERSION: &str = "v1alpha1";
/// The kind.
pub const KIND: &str = "AddOnPlacementScore";
/// Default object name (a `Placement`'s `addOn.resourceName`).
pub const DEFAULT_RESOURCE_NAME: &str = "carbon-kube";
/// Default score name inside it (a `Placement`'s `addOn.scoreName`).
pub const DEFAULT_SCORE_NAME: &str = "carbonScore";
/// The condition Carbon-Kube sets on the object.
pub const CONDITION_TYPE: &str = "CarbonDataFresh";

/// The kind as a dynamic resource (`addonplacementscores`).
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, KIND),
        "addonplacementscores",
    )
}

/// One score (`status.scores[]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreItem {
    /// Score name.
    pub name: String,
    /// Value, −100..=100.
    pub value: i32,
}

/// A `metav1.Condition`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
}

/// `status` of an `AddOnPlacementScore`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Scores.
    #[serde(default)]
    pub scores: Vec<ScoreItem>,
    /// Expiry of the scores (RFC 3339); `None`: never.
    #[serde(default)]
    pub valid_until: Option<String>,
}

/// What is wrong with a score object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScoreError {
    /// `status` does not have the expected shape.
    #[error("{namespace}/{name}: status is not an AddOnPlacementScore status: {message}")]
    BadStatus {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// What serde said.
        message: String,
    },
    /// `status.validUntil` is not an RFC 3339 time.
    #[error("{namespace}/{name}: status.validUntil {value:?} is not an RFC 3339 time")]
    BadValidUntil {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The value.
        value: String,
    },
    /// The object has no score of that name.
    #[error("{namespace}/{name}: no score named {score:?} in status.scores")]
    NoScore {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The score name looked for.
        score: String,
    },
}

/// The object's status (empty when it has none).
pub fn status_of(obj: &DynamicObject) -> Result<Status, ScoreError> {
    match obj.data.get("status") {
        None | Some(serde_json::Value::Null) => Ok(Status::default()),
        Some(v) => Status::deserialize(v).map_err(|e| ScoreError::BadStatus {
            namespace: obj.metadata.namespace.clone().unwrap_or_default(),
            name: obj.metadata.name.clone().unwrap_or_default(),
            message: e.to_string(),
        }),
    }
}

/// RFC 3339 as unix seconds.
pub fn parse_time(value: &str) -> Option<UnixSeconds> {
    value
        .parse::<jiff::Timestamp>()
        .ok()
        .map(jiff::Timestamp::as_second)
}

/// Unix seconds as RFC 3339 (`2026-12-07T22:00:00Z`).
pub fn format_time(t: UnixSeconds) -> String {
    jiff::Timestamp::from_second(t)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

/// The score `score_name` as published in `obj`: its value and expiry.
pub fn published(obj: &DynamicObject, score_name: &str) -> Result<Published, ScoreError> {
    let namespace = || obj.metadata.namespace.clone().unwrap_or_default();
    let name = || obj.metadata.name.clone().unwrap_or_default();
    let status = status_of(obj)?;
    let value = status
        .scores
        .iter()
        .find(|s| s.name == score_name)
        .map(|s| s.value)
        .ok_or_else(|| ScoreError::NoScore {
            namespace: namespace(),
            name: name(),
            score: score_name.to_owned(),
        })?;
    let valid_until = match status.valid_until.as_deref() {
        None => None,
        Some(v) => Some(parse_time(v).ok_or_else(|| ScoreError::BadValidUntil {
            namespace: namespace(),
            name: name(),
            value: v.to_owned(),
        })?),
    };
    Ok(Published { value, valid_until })
}

/// The status to write for `publication`: our score set (other scores kept),
/// `validUntil`, and the [`CONDITION_TYPE`] condition (its transition time
/// kept while its status does not change).
pub fn status_for(
    previous: &Status,
    score_name: &str,
    publication: &Publication,
    score: &ClusterScore,
    now: UnixSeconds,
) -> Status {
    let mut scores: Vec<ScoreItem> = previous
        .scores
        .iter()
        .filter(|s| s.name != score_name)
        .cloned()
        .collect();
    scores.push(ScoreItem {
        name: score_name.to_owned(),
        value: publication.value,
    });
    let (status, reason) = match score.neutral {
        None => ("True", "Scored"),
        Some(_) => ("False", "NoUsableCarbonData"),
    };
    let last_transition_time = previous
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_TYPE && c.status == status)
        .map_or_else(|| format_time(now), |c| c.last_transition_time.clone());
    let mut conditions: Vec<Condition> = previous
        .conditions
        .iter()
        .filter(|c| c.type_ != CONDITION_TYPE)
        .cloned()
        .collect();
    conditions.push(Condition {
        type_: CONDITION_TYPE.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: format!("{}; {}", publication.explain(), score.explain()),
        last_transition_time,
    });
    Status {
        conditions,
        scores,
        valid_until: publication.valid_until.map(format_time),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(status: serde_json::Value) -> DynamicObject {
        let mut o = DynamicObject::new("carbon-kube", &api_resource()).within("cluster-a");
        o.data = serde_json::json!({ "status": status });
        o
    }

    #[test]
    fn reads_the_published_score() {
        let o = obj(serde_json::json!({
            "scores": [{"name": "other", "value": 3}, {"name": "carbonScore", "value": -42}],
            "validUntil": "2026-12-07T22:10:00Z",
        }));
        let p = published(&o, "carbonScore").unwrap();
        assert_eq!(p.value, -42);
        assert_eq!(p.valid_until, parse_time("2026-12-07T22:10:00Z"));
        assert_eq!(format_time(p.valid_until.unwrap()), "2026-12-07T22:10:00Z");
    }

    #[test]
    fn bad_objects_are_named() {
        let e = published(&obj(serde_json::json!({"scores": []})), "carbonScore").unwrap_err();
        assert_eq!(
            e.to_string(),
            "cluster-a/carbon-kube: no score named \"carbonScore\" in status.scores"
        );
        let e = published(
            &obj(serde_json::json!({"scores": [{"name": "carbonScore", "value": 1}], "validUntil": "soon"})),
            "carbonScore",
        )
        .unwrap_err();
        assert!(matches!(e, ScoreError::BadValidUntil { .. }), "{e}");
        let e = published(&obj(serde_json::json!({"scores": "high"})), "carbonScore").unwrap_err();
        assert!(matches!(e, ScoreError::BadStatus { .. }), "{e}");
    }
}
