//! The one place that removes Carbon-Kube's scheduling gate.
//!
//! A release is a single JSON patch that
//!
//! 1. **tests** that `spec.schedulingGates[i].name` is
//!    `carbon-kube.io/green-window`, then **removes** entry `i` (so a gate
//!    list changed underneath never loses another controller's gate);
//! 2. optionally sets the pod's node affinity for the planned zone
//!    (Kubernetes allows that while the pod is gated), guarded by a test on
//!    `metadata.resourceVersion` so a concurrent edit is never overwritten;
//! 3. records `carbon-kube.io/release-reason` and
//!    `carbon-kube.io/released-at`.
//!
//! Releases are paced by token buckets, cluster-wide and per zone (a pod
//! within the hard margin of its latest start skips pacing: deadlines are
//! sacred). A failed `test` (the pod changed, or another replica released it)
//! is a conflict, retried on the next pass from fresh state. Dry-run logs
//! what would be done and writes nothing. Each release emits an Event and
//! bumps `carbon_kube_gate_releases_total{reason}`.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use carbon_kube_model::keys;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use json_patch::{Patch, PatchOperation, RemoveOperation, TestOperation};
use k8s_openapi::api::core::v1::{Affinity, Pod};
use kube::Resource as _;
use kube::api::{Api, Patch as KubePatch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use serde_json::Value;

use crate::admission::{add, annotation_ops, gate_index, pointer};
use crate::reconcile::ANNOTATION_RELEASED_AT;

/// Field manager of the controller's writes.
pub const FIELD_MANAGER: &str = "carbon-kube-gates";

/// The release patch for `pod`: test-and-remove Carbon-Kube's gate, set
/// `affinity` if given, add `annotations`. `None` when the pod does not
/// carry the gate.
pub fn release_patch(
    pod: &Pod,
    affinity: Option<&Affinity>,
    annotations: &BTreeMap<String, String>,
) -> Option<Patch> {
    let i = gate_index(pod)?;
    let idx = i.to_string();
    let mut ops = vec![
        PatchOperation::Test(TestOperation {
            path: pointer(["spec", "schedulingGates", idx.as_str(), "name"]),
            value: Value::String(keys::SCHEDULING_GATE.to_owned()),
        }),
        PatchOperation::Remove(RemoveOperation {
            path: pointer(["spec", "schedulingGates", idx.as_str()]),
        }),
    ];
    let whole_map = pod.metadata.annotations.is_none() && !annotations.is_empty();
    if (affinity.is_some() || whole_map)
        && let Some(rv) = &pod.metadata.resource_version
    {
        ops.push(PatchOperation::Test(TestOperation {
            path: pointer(["metadata", "resourceVersion"]),
            value: Value::String(rv.clone()),
        }));
    }
    if let Some(a) = affinity {
        ops.push(add(
            pointer(["spec", "affinity"]),
            serde_json::to_value(a).unwrap_or(Value::Null),
        ));
    }
    ops.extend(annotation_ops(
        pod.metadata.annotations.as_ref(),
        annotations,
    ));
    Some(Patch(ops))
}

/// Pacing settings. A rate of 0 means unlimited.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PacingConfig {
    /// Releases per second, cluster-wide.
    pub cluster_per_second: f64,
    /// Burst, cluster-wide.
    pub cluster_burst: u32,
    /// Releases per second into one zone.
    pub zone_per_second: f64,
    /// Burst per zone.
    pub zone_burst: u32,
}

impl Default for PacingConfig {
    fn default() -> Self {
        Self {
            cluster_per_second: 10.0,
            cluster_burst: 20,
            zone_per_second: 5.0,
            zone_burst: 10,
        }
    }
}

fn quota(per_second: f64, burst: u32) -> Option<Quota> {
    if !(per_second.is_finite() && per_second > 0.0) {
        return None;
    }
    let q = Quota::with_period(Duration::from_secs_f64(1.0 / per_second))?;
    Some(q.allow_burst(NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN)))
}

/// Token buckets for releases.
pub struct Pacing {
    cluster: Option<DefaultDirectRateLimiter>,
    zones: Option<DefaultKeyedRateLimiter<String>>,
}

/// Whether a release may go now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Go.
    Go,
    /// The zone's bucket is empty; other zones may still go.
    ZoneBusy,
    /// The cluster bucket is empty until this long from now.
    ClusterBusy(Duration),
}

impl Pacing {
    /// Buckets from settings.
    pub fn new(cfg: &PacingConfig) -> Self {
        Self {
            cluster: quota(cfg.cluster_per_second, cfg.cluster_burst).map(RateLimiter::direct),
            zones: quota(cfg.zone_per_second, cfg.zone_burst).map(RateLimiter::keyed),
        }
    }

    /// Takes a token from the zone's bucket, then the cluster's. An empty
    /// cluster bucket after a zone token costs that zone one token: the
    /// limits are upper bounds.
    pub fn check(&self, zone: &str) -> Pace {
        if let Some(z) = &self.zones
            && z.check_key(&zone.to_owned()).is_err()
        {
            return Pace::ZoneBusy;
        }
        if let Some(c) = &self.cluster
            && let Err(not_until) = c.check()
        {
            return Pace::ClusterBusy(not_until.wait_time_from(DefaultClock::default().now()));
        }
        Pace::Go
    }
}

/// What a release attempt did.
#[derive(Clone, Debug, PartialEq)]
pub enum Released {
    /// The gate is gone.
    Done(Box<Pod>),
    /// Dry run: nothing written.
    DryRun,
    /// Not now: pacing.
    Paced(Pace),
    /// The pod changed (or is gone, or no longer gated): try again later.
    Conflict(String),
}

/// One release to carry out.
pub struct ReleaseRequest<'a> {
    /// The pod as last seen.
    pub pod: &'a Pod,
    /// Affinity to set, if any.
    pub affinity: Option<&'a Affinity>,
    /// Annotations to add (reason, time).
    pub annotations: BTreeMap<String, String>,
    /// Pacing key (the zone, or `unknown`).
    pub zone_key: &'a str,
    /// Skip pacing (deadline imminent).
    pub urgent: bool,
}

/// Removes the gate: pacing, the guarded patch, dry-run.
pub struct Actuator {
    client: kube::Client,
    pacing: Pacing,
    dry_run: bool,
}

impl Actuator {
    /// An actuator writing with `client`.
    pub fn new(client: kube::Client, pacing: &PacingConfig, dry_run: bool) -> Self {
        Self {
            client,
            pacing: Pacing::new(pacing),
            dry_run,
        }
    }

    /// Releases one pod, if pacing allows.
    pub async fn release(&self, req: ReleaseRequest<'_>) -> Result<Released, kube::Error> {
        let pod = req.pod;
        let Some(patch) = release_patch(pod, req.affinity, &req.annotations) else {
            return Ok(Released::Conflict(
                "the pod no longer carries the gate".into(),
            ));
        };
        if !req.urgent {
            match self.pacing.check(req.zone_key) {
                Pace::Go => {}
                busy => return Ok(Released::Paced(busy)),
            }
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        if self.dry_run {
            tracing::info!(pod = %format!("{ns}/{name}"), patch = %serde_json::to_string(&patch).unwrap_or_default(), "dry run: would release");
            return Ok(Released::DryRun);
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        match api
            .patch(name, &patch_params(), &KubePatch::<()>::Json(patch))
            .await
        {
            Ok(p) => Ok(Released::Done(Box::new(p))),
            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => {
                Ok(Released::Conflict(s.message))
            }
            Err(e) => Err(e),
        }
    }
}

/// Patch parameters of the controller's writes.
pub fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

/// Annotations a release writes.
pub fn release_annotations(reason: &str, released_at: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            keys::ANNOTATION_RELEASE_REASON.to_owned(),
            reason.to_owned(),
        ),
        (ANNOTATION_RELEASED_AT.to_owned(), released_at.to_owned()),
    ])
}

/// Publishes Events on pods without blocking the caller.
#[derive(Clone)]
pub struct Events {
    recorder: Option<Recorder>,
    limit: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Events {
    /// Events written with `client` as `carbon-kube-gates`; `None` writes none.
    pub fn new(client: Option<kube::Client>) -> Self {
        Self {
            recorder: client.map(|c| Recorder::new(c, "carbon-kube-gates".into())),
            limit: std::sync::Arc::new(tokio::sync::Semaphore::new(16)),
        }
    }

    /// Emits an Event on `pod` in the background.
    pub fn emit(&self, pod: &Pod, type_: EventType, reason: &str, action: &str, note: String) {
        let Some(recorder) = self.recorder.clone() else {
            return;
        };
        let reference = pod.object_ref(&());
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(truncate(note, 1000)),
            action: action.to_owned(),
            secondary: None,
        };
        let limit = self.limit.clone();
        tokio::spawn(async move {
            let _permit = limit.acquire().await;
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!(error = %e, "publishing an Event failed");
            }
        });
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{gated, pod};
    use crate::zones::{AffinityMode, affinity_for_zone};
    use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};
    use serde_json::json;

    fn apply(p: &Pod, patch: &Patch) -> Result<Pod, json_patch::PatchError> {
        let mut doc = serde_json::to_value(p).unwrap();
        json_patch::patch(&mut doc, patch)?;
        Ok(serde_json::from_value(doc).unwrap())
    }

    fn gates(p: &Pod) -> Vec<String> {
        p.spec
            .as_ref()
            .unwrap()
            .scheduling_gates
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|g| g.name)
            .collect()
    }

    #[test]
    fn removes_only_our_gate_and_tests_it_first() {
        let p = pod("job")
            .gate("example.com/quota")
            .gate(keys::SCHEDULING_GATE)
            .gate("example.com/other")
            .annotate("a", "b")
            .resource_version("42")
            .build();
        let patch = release_patch(&p, None, &release_annotations("green_window", "t")).unwrap();
        let v = serde_json::to_value(&patch).unwrap();
        assert_eq!(
            v[0],
            json!({"op": "test", "path": "/spec/schedulingGates/1/name", "value": keys::SCHEDULING_GATE})
        );
        assert_eq!(
            v[1],
            json!({"op": "remove", "path": "/spec/schedulingGates/1"})
        );
        let out = apply(&p, &patch).unwrap();
        assert_eq!(gates(&out), ["example.com/quota", "example.com/other"]);
        let a = out.metadata.annotations.unwrap();
        assert_eq!(a[keys::ANNOTATION_RELEASE_REASON], "green_window");
        assert_eq!(a["a"], "b");
    }

    #[test]
    fn a_gate_list_changed_underneath_fails_the_test_instead_of_removing_another_gate() {
        let seen = pod("job")
            .gate("example.com/quota")
            .gate(keys::SCHEDULING_GATE)
            .build();
        let patch = release_patch(&seen, None, &BTreeMap::new()).unwrap();
        // Meanwhile the other controller removed its gate: ours is now at 0.
        let now = gated(pod("job")).build();
        assert!(apply(&now, &patch).is_err());
        assert_eq!(gates(&now), [keys::SCHEDULING_GATE]);
    }

    #[test]
    fn a_pod_without_our_gate_is_never_patched() {
        let p = pod("job").gate("example.com/quota").build();
        assert!(release_patch(&p, None, &BTreeMap::new()).is_none());
    }

    #[test]
    fn affinity_is_set_in_the_same_patch_guarded_by_the_resource_version() {
        let p = gated(pod("job")).resource_version("7").build();
        let term = NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: keys::LABEL_GRID_ZONE.into(),
                operator: "In".into(),
                values: Some(vec!["DE".into()]),
            }]),
            match_fields: None,
        };
        let (aff, _) = affinity_for_zone(None, &[term], AffinityMode::Required).unwrap();
        let patch =
            release_patch(&p, Some(&aff), &release_annotations("green_window", "t")).unwrap();
        let out = apply(&p, &patch).unwrap();
        assert!(gates(&out).is_empty());
        assert_eq!(out.spec.unwrap().affinity, Some(aff));
        // A newer pod fails the resourceVersion test.
        let newer = gated(pod("job")).resource_version("8").build();
        assert!(apply(&newer, &patch).is_err());
    }

    #[test]
    fn pacing_limits_each_zone_and_the_cluster() {
        let pacing = Pacing::new(&PacingConfig {
            cluster_per_second: 0.001,
            cluster_burst: 3,
            zone_per_second: 0.001,
            zone_burst: 2,
        });
        assert_eq!(pacing.check("DE"), Pace::Go);
        assert_eq!(pacing.check("DE"), Pace::Go);
        assert_eq!(pacing.check("DE"), Pace::ZoneBusy);
        assert_eq!(pacing.check("FR"), Pace::Go);
        assert!(matches!(pacing.check("GB"), Pace::ClusterBusy(_)));
        let unlimited = Pacing::new(&PacingConfig {
            cluster_per_second: 0.0,
            cluster_burst: 1,
            zone_per_second: 0.0,
            zone_burst: 1,
        });
        for _ in 0..1000 {
            assert_eq!(unlimited.check("DE"), Pace::Go);
        }
    }
}
