//! The migrator's reservation: the webhook steers the replacement of a
//! migrated pod to the zone the migrator planned for it.
//!
//! Before evicting a pod, the migrator records the move on the pod's owner
//! (ReplicaSet, StatefulSet or Job: the `carbon-kube.io/migrations`
//! annotation, `carbon_kube_model::migration`) with the target zone's node
//! labels, the planned nodes and `reserveUntil` (decision time + its landing
//! timeout), and labels the owner `carbon-kube.io/migration-pending=true`
//! until the replacement landed. The webhook watches only the labelled
//! owners' metadata (a label-selected metadata watch: a small cache, no
//! pod templates), and when one of them creates a pod while a move is
//! reserved ([`plan_steering`]) it adds to the pod:
//!
//! - a **preferred** node affinity for the target zone (weight 100 per
//!   selector term) and for the planned nodes (weights 100, 50, 25, …), the
//!   same shape as the gate controller's release preference. Preferred,
//!   never required: when the zone is full the pod lands elsewhere (the
//!   migrator then counts the landing `elsewhere`); it never waits;
//! - `carbon-kube.io/replaces` (the evicted pod's uid: the migrator measures
//!   this pod's landing) and `carbon-kube.io/steered` (where to and why).
//!
//! **One replacement per move.** Each reserved move is claimed by the first
//! pod the owner creates after it (a StatefulSet: the pod with the evicted
//! pod's name); the claim is kept in memory until the reservation ends, so
//! later pods (a scale-up) are not steered. With several webhook replicas,
//! each replica holds its own claims: at most one steered pod per move per
//! replica. A restarted webhook has no claims: at most one more pod per
//! reserved move. A creation rejected after admission uses the claim up.
//! Server-side dry runs are steered but claim nothing.
//!
//! **Fail open.** No steering (and the pod is admitted as it is otherwise)
//! when the owner caches have not listed yet, the owner is not labelled or
//! not in the cache, its record is unreadable, or no move is reserved.
//! Counted in `carbon_kube_gates_webhook_steering_total{result}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use carbon_kube_model::migration::{MoveRecord, OwnerState};
use carbon_kube_model::{UnixSeconds, keys};
use futures::StreamExt as _;
use json_patch::PatchOperation;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ObjectMeta};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt as _, watcher};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::Value;

use crate::admission::{add, annotation_ops, pointer};
use crate::zones::{AffinityMode, affinity_for_zone, prefer_nodes, selector_terms};

/// What the webhook adds to a replacement it steers.
#[derive(Clone, Debug, PartialEq)]
pub struct Steer {
    /// The move (the evicted pod's uid) the pod replaces.
    pub move_uid: String,
    /// Until when the move is reserved (unix seconds).
    pub reserve_until: UnixSeconds,
    /// The JSON patch operations (affinity, annotations).
    pub ops: Vec<PatchOperation>,
    /// Where to and why (also the `carbon-kube.io/steered` annotation).
    pub note: String,
}

/// Why a pod was not steered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SteerSkip {
    /// Not created by a ReplicaSet, StatefulSet or Job, or already bound.
    NotAReplacement,
    /// The owner caches have not listed yet.
    NotSynced,
    /// The owner has no pending move (not labelled, not cached).
    NoPendingMove,
    /// The owner's record is unreadable.
    BadRecord(String),
    /// Moves are pending, but none is reserved for this pod (expired,
    /// already claimed by an earlier pod, or a StatefulSet pod of another
    /// name).
    NoReservedMove,
    /// The reserved move names neither zone labels nor nodes.
    EmptyPlan,
}

impl SteerSkip {
    /// The `result` label of `carbon_kube_gates_webhook_steering_total`.
    pub fn metric_label(&self) -> Option<&'static str> {
        match self {
            Self::NotAReplacement | Self::NoPendingMove => None,
            Self::NotSynced => Some("not_synced"),
            Self::BadRecord(_) => Some("bad_record"),
            Self::NoReservedMove => Some("no_reserved_move"),
            Self::EmptyPlan => Some("empty_plan"),
        }
    }
}

/// The steering decision for one pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Steering {
    /// Steer it.
    Steer(Steer),
    /// Leave it.
    Skip(SteerSkip),
}

/// The pod's controller, when it is a kind the migrator moves pods of:
/// (kind, name, uid).
pub fn migrating_owner(pod: &Pod) -> Option<(&str, &str, &str)> {
    pod.metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|o| o.controller == Some(true))
        .filter(|o| matches!(o.kind.as_str(), "ReplicaSet" | "StatefulSet" | "Job"))
        .map(|o| (o.kind.as_str(), o.name.as_str(), o.uid.as_str()))
}

/// Decides whether `pod`, created by an owner of `owner_kind` whose
/// `carbon-kube.io/migrations` annotation is `record`, replaces a reserved
/// move, and builds the patch. `claimed` says whether a move (by the
/// evicted pod's uid) already has its replacement. Pure.
pub fn plan_steering(
    pod: &Pod,
    owner_kind: &str,
    record: Option<&str>,
    claimed: impl Fn(&str) -> bool,
    now: UnixSeconds,
) -> Steering {
    let state = match OwnerState::parse(record) {
        Ok(s) => s,
        Err(e) => return Steering::Skip(SteerSkip::BadRecord(e.to_string())),
    };
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let chosen = state.reserved(now).find(|m| {
        !claimed(&m.uid)
            // A StatefulSet recreates the pod under the same name.
            && (owner_kind != "StatefulSet" || m.pod == name)
    });
    let Some(m) = chosen else {
        return Steering::Skip(SteerSkip::NoReservedMove);
    };
    match steer_patch(pod, m) {
        Some((ops, note)) => Steering::Steer(Steer {
            move_uid: m.uid.clone(),
            reserve_until: m.reserve_until.unwrap_or(now),
            ops,
            note,
        }),
        None => Steering::Skip(SteerSkip::EmptyPlan),
    }
}

/// The affinity and annotation operations that steer `pod` to `m`'s
/// target, and the note; `None` when the move names nothing to prefer.
fn steer_patch(pod: &Pod, m: &MoveRecord) -> Option<(Vec<PatchOperation>, String)> {
    let spec = pod.spec.as_ref()?;
    let terms = selector_terms(&m.zone_selector);
    let current = spec.affinity.as_ref();
    let with_zone = affinity_for_zone(current, &terms, AffinityMode::Preferred).map(|(a, _)| a);
    let affinity = prefer_nodes(with_zone.as_ref().or(current), &m.nodes).or(with_zone)?;
    let mut labels = Vec::new();
    if !m.zone_selector.grid_zone_values.is_empty() {
        labels.push(format!(
            "{} in {}",
            keys::LABEL_GRID_ZONE,
            m.zone_selector.grid_zone_values.join(",")
        ));
    }
    if !m.zone_selector.region_values.is_empty() {
        labels.push(format!(
            "{} in {}",
            keys::LABEL_REGION,
            m.zone_selector.region_values.join(",")
        ));
    }
    let mut note = format!("prefers zone {}", m.to);
    if !labels.is_empty() {
        note.push_str(&format!(" ({})", labels.join("; ")));
    }
    if !m.nodes.is_empty() {
        note.push_str(&format!(" and nodes {}", m.nodes.join(",")));
    }
    note.push_str(&format!(
        ": replaces {} (uid {}), moved {} → {} by the migrator; preferred, not required (if {} has no room the pod lands elsewhere)",
        m.pod, m.uid, m.from, m.to, m.to
    ));
    let mut ops = vec![add(
        pointer(["spec", "affinity"]),
        serde_json::to_value(&affinity).unwrap_or(Value::Null),
    )];
    let annotations = BTreeMap::from([
        (keys::ANNOTATION_REPLACES.to_owned(), m.uid.clone()),
        (keys::ANNOTATION_STEERED.to_owned(), note.clone()),
    ]);
    ops.extend(annotation_ops(
        pod.metadata.annotations.as_ref(),
        &annotations,
    ));
    Some((ops, note))
}

/// Label set with one `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// The result.
    pub result: String,
}

/// `carbon_kube_gates_webhook_steering_total{result}`.
#[derive(Clone, Default)]
pub struct ReservationMetrics {
    steering: Family<ResultLabels, Counter>,
}

impl ReservationMetrics {
    /// Registers the metric in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "carbon_kube_gates_webhook_steering",
            "Pods created by an owner with a pending migration, by result: steered (to the migrator's planned zone), no_reserved_move, not_synced, bad_record, empty_plan",
            m.steering.clone(),
        );
        m
    }

    fn count(&self, result: &str) {
        self.steering
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }
}

type Meta<K> = PartialObjectMeta<K>;

/// The webhook's view of the owners with a pending move, and its claims.
#[derive(Clone)]
pub struct Reservations {
    replicasets: Store<Meta<ReplicaSet>>,
    statefulsets: Store<Meta<StatefulSet>>,
    jobs: Store<Meta<Job>>,
    synced: Arc<[AtomicBool; 3]>,
    /// Claimed moves (evicted pod uid) → end of their reservation.
    claims: Arc<Mutex<HashMap<String, UnixSeconds>>>,
    metrics: ReservationMetrics,
}

/// The writers of the [`Reservations`] caches (fed by [`Reservations::watch`]
/// or, in tests, by hand).
pub struct ReservationWriters {
    /// Labelled ReplicaSets.
    pub replicasets: Writer<Meta<ReplicaSet>>,
    /// Labelled StatefulSets.
    pub statefulsets: Writer<Meta<StatefulSet>>,
    /// Labelled Jobs.
    pub jobs: Writer<Meta<Job>>,
}

/// The label selector of the owner watches.
pub fn pending_selector() -> String {
    format!("{}=true", keys::LABEL_MIGRATION_PENDING)
}

impl Reservations {
    /// Empty caches and their writers.
    pub fn new(metrics: ReservationMetrics) -> (Self, ReservationWriters) {
        let (replicasets, rs) = reflector::store();
        let (statefulsets, sts) = reflector::store();
        let (jobs, j) = reflector::store();
        (
            Self {
                replicasets,
                statefulsets,
                jobs,
                synced: Arc::new([
                    AtomicBool::new(false),
                    AtomicBool::new(false),
                    AtomicBool::new(false),
                ]),
                claims: Arc::default(),
                metrics,
            },
            ReservationWriters {
                replicasets: rs,
                statefulsets: sts,
                jobs: j,
            },
        )
    }

    /// Starts the three label-selected metadata watches (all namespaces).
    pub fn watch(
        &self,
        client: &kube::Client,
        writers: ReservationWriters,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            tokio::spawn(reflect(
                Api::<Meta<ReplicaSet>>::all(client.clone()),
                writers.replicasets,
                self.clone(),
                0,
            )),
            tokio::spawn(reflect(
                Api::<Meta<StatefulSet>>::all(client.clone()),
                writers.statefulsets,
                self.clone(),
                1,
            )),
            tokio::spawn(reflect(
                Api::<Meta<Job>>::all(client.clone()),
                writers.jobs,
                self.clone(),
                2,
            )),
        ]
    }

    /// Marks every cache as listed (what the watches do after their first
    /// list; for callers that feed the writers themselves).
    pub fn mark_synced(&self) {
        for s in self.synced.iter() {
            s.store(true, Ordering::Relaxed);
        }
    }

    fn is_synced(&self) -> bool {
        self.synced.iter().all(|s| s.load(Ordering::Relaxed))
    }

    /// The metadata of the labelled owner `kind` `namespace/name`.
    fn owner(&self, kind: &str, namespace: &str, name: &str) -> Option<ObjectMeta> {
        match kind {
            "ReplicaSet" => self
                .replicasets
                .get(&ObjectRef::new(name).within(namespace))
                .map(|m| m.metadata.clone()),
            "StatefulSet" => self
                .statefulsets
                .get(&ObjectRef::new(name).within(namespace))
                .map(|m| m.metadata.clone()),
            "Job" => self
                .jobs
                .get(&ObjectRef::new(name).within(namespace))
                .map(|m| m.metadata.clone()),
            _ => None,
        }
    }

    /// Decides for `pod`, being created in `namespace`, claims the move it
    /// replaces (unless `dry_run`), logs and counts.
    pub fn steer(&self, pod: &Pod, namespace: &str, now: UnixSeconds, dry_run: bool) -> Steering {
        let out = self.decide(pod, namespace, now, dry_run);
        let who = format!(
            "{namespace}/{}",
            pod.metadata
                .name
                .as_deref()
                .or(pod.metadata.generate_name.as_deref())
                .unwrap_or("<unnamed>")
        );
        match &out {
            Steering::Steer(s) => {
                self.metrics.count("steered");
                tracing::info!(pod = %who, replaces = %s.move_uid, "steering the replacement of a migrated pod: {}", s.note);
            }
            Steering::Skip(skip) => {
                if let Some(label) = skip.metric_label() {
                    self.metrics.count(label);
                }
                match skip {
                    SteerSkip::BadRecord(e) => tracing::warn!(
                        pod = %who,
                        error = %e,
                        "the owner's {} annotation is unreadable; not steering (admitted as is)",
                        keys::ANNOTATION_MIGRATIONS
                    ),
                    SteerSkip::NotSynced => tracing::debug!(
                        pod = %who,
                        "owner caches not listed yet; not steering"
                    ),
                    _ => {}
                }
            }
        }
        out
    }

    fn decide(&self, pod: &Pod, namespace: &str, now: UnixSeconds, dry_run: bool) -> Steering {
        let bound = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        let Some((kind, name, uid)) = migrating_owner(pod).filter(|_| !bound) else {
            return Steering::Skip(SteerSkip::NotAReplacement);
        };
        if !self.is_synced() {
            return Steering::Skip(SteerSkip::NotSynced);
        }
        let Some(meta) = self
            .owner(kind, namespace, name)
            .filter(|m| m.uid.as_deref() == Some(uid))
        else {
            return Steering::Skip(SteerSkip::NoPendingMove);
        };
        let record = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(keys::ANNOTATION_MIGRATIONS))
            .map(String::as_str);
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        claims.retain(|_, until| *until > now);
        let out = plan_steering(pod, kind, record, |m| claims.contains_key(m), now);
        if let Steering::Steer(s) = &out
            && !dry_run
        {
            claims.insert(s.move_uid.clone(), s.reserve_until);
        }
        out
    }
}

/// Caches the labelled owners' metadata (`Api<PartialObjectMeta<K>>` asks
/// for metadata only).
async fn reflect<K>(api: Api<Meta<K>>, writer: Writer<Meta<K>>, r: Reservations, index: usize)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let cfg = watcher::Config::default().labels(&pending_selector());
    let stream = reflector::reflector(
        writer,
        watcher(api, cfg).modify(|m| m.metadata.managed_fields = None),
    )
    .default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::InitDone) => r.synced[index].store(true, Ordering::Relaxed),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                kind = K::kind(&()).as_ref(),
                error = %e,
                "watch of owners with a pending migration failed; retrying (pods are not steered meanwhile only if it never listed)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::pod;
    use carbon_kube_model::ZoneId;
    use carbon_kube_model::migration::Landing;
    use carbon_kube_model::migration::ZoneSelector;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::core::PartialObjectMetaExt as _;
    use serde_json::json;

    const NOW: i64 = 1_777_716_000;

    fn mv(uid: &str, pod_name: &str, at: i64) -> MoveRecord {
        MoveRecord {
            at,
            pod: pod_name.into(),
            uid: uid.into(),
            from: ZoneId::parse("DE").unwrap(),
            to: ZoneId::parse("FR").unwrap(),
            nodes: vec!["fr-1".into(), "fr-2".into()],
            zone_selector: ZoneSelector {
                grid_zone_values: vec!["FR".into()],
                region_values: Vec::new(),
            },
            reserve_until: Some(at + 600),
            net_grams: 10.0,
            evicted: true,
            landed: None,
        }
    }

    fn record(moves: Vec<MoveRecord>) -> String {
        OwnerState { moves }.to_json()
    }

    fn owned(name: &str, kind: &str, owner: &str) -> Pod {
        let mut p = pod(name).build();
        p.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: owner.into(),
            uid: format!("{owner}-uid"),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        p
    }

    fn apply(pod: &Pod, ops: &[PatchOperation]) -> Pod {
        let mut doc = serde_json::to_value(pod).unwrap();
        json_patch::patch(&mut doc, ops).unwrap();
        serde_json::from_value(doc).unwrap()
    }

    #[test]
    fn a_replacement_gets_preferred_zone_and_node_affinity_and_says_why() {
        let p = owned("web-x", "ReplicaSet", "web");
        let rec = record(vec![mv("old-1", "web-a", NOW - 5)]);
        let Steering::Steer(s) = plan_steering(&p, "ReplicaSet", Some(&rec), |_| false, NOW) else {
            panic!("not steered")
        };
        assert_eq!(s.move_uid, "old-1");
        let out = apply(&p, &s.ops);
        let na = out.spec.unwrap().affinity.unwrap().node_affinity.unwrap();
        // Preferred only: never makes the pod unschedulable.
        assert!(
            na.required_during_scheduling_ignored_during_execution
                .is_none()
        );
        let pref = serde_json::to_value(
            na.preferred_during_scheduling_ignored_during_execution
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            pref,
            json!([
                {"weight": 100, "preference": {"matchExpressions": [
                    {"key": keys::LABEL_GRID_ZONE, "operator": "In", "values": ["FR"]}]}},
                {"weight": 100, "preference": {"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": ["fr-1"]}]}},
                {"weight": 50, "preference": {"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": ["fr-2"]}]}}
            ])
        );
        let a = out.metadata.annotations.unwrap();
        assert_eq!(a[keys::ANNOTATION_REPLACES], "old-1");
        let why = &a[keys::ANNOTATION_STEERED];
        assert!(why.contains("prefers zone FR"), "{why}");
        assert!(why.contains("replaces web-a"), "{why}");
        assert!(why.contains("moved DE → FR"), "{why}");
    }

    #[test]
    fn existing_affinity_and_annotations_are_kept() {
        let mut p = owned("web-x", "ReplicaSet", "web");
        p.metadata.annotations = Some(BTreeMap::from([("team".into(), "shop".into())]));
        p.spec.as_mut().unwrap().affinity = Some(
            serde_json::from_value(json!({"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]}]},
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 7, "preference": {"matchExpressions": [
                        {"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}))
            .unwrap(),
        );
        let rec = record(vec![mv("old-1", "web-a", NOW - 5)]);
        let Steering::Steer(s) = plan_steering(&p, "ReplicaSet", Some(&rec), |_| false, NOW) else {
            panic!("not steered")
        };
        let out = apply(&p, &s.ops);
        let na = out.spec.unwrap().affinity.unwrap().node_affinity.unwrap();
        assert_eq!(
            na.required_during_scheduling_ignored_during_execution
                .unwrap()
                .node_selector_terms
                .len(),
            1
        );
        let pref = na
            .preferred_during_scheduling_ignored_during_execution
            .unwrap();
        assert_eq!(pref[0].weight, 7);
        assert_eq!(pref.len(), 4);
        let a = out.metadata.annotations.unwrap();
        assert_eq!(a["team"], "shop");
        assert_eq!(a[keys::ANNOTATION_REPLACES], "old-1");
    }

    #[test]
    fn only_reserved_unclaimed_moves_are_steered_to() {
        let p = owned("web-x", "ReplicaSet", "web");
        let skip = |rec: &str, claimed: &dyn Fn(&str) -> bool| match plan_steering(
            &p,
            "ReplicaSet",
            Some(rec),
            claimed,
            NOW,
        ) {
            Steering::Skip(s) => s,
            Steering::Steer(s) => panic!("steered to {}", s.move_uid),
        };
        // No record, an expired reservation, a landed move, a claimed move.
        assert_eq!(skip(&record(vec![]), &|_| false), SteerSkip::NoReservedMove);
        assert_eq!(
            skip(&record(vec![mv("old", "web-a", NOW - 600)]), &|_| false),
            SteerSkip::NoReservedMove
        );
        let mut landed = mv("old", "web-a", NOW - 5);
        landed.landed = Some(Landing::Planned);
        assert_eq!(
            skip(&record(vec![landed]), &|_| false),
            SteerSkip::NoReservedMove
        );
        let mut old_format = mv("old", "web-a", NOW - 5);
        old_format.reserve_until = None;
        assert_eq!(
            skip(&record(vec![old_format]), &|_| false),
            SteerSkip::NoReservedMove
        );
        assert_eq!(
            skip(&record(vec![mv("old", "web-a", NOW - 5)]), &|u| u == "old"),
            SteerSkip::NoReservedMove
        );
        // Unreadable: fail open.
        assert!(matches!(
            plan_steering(&p, "ReplicaSet", Some("{nope"), |_| false, NOW),
            Steering::Skip(SteerSkip::BadRecord(_))
        ));
        // Nothing to prefer.
        let mut empty = mv("old", "web-a", NOW - 5);
        empty.nodes.clear();
        empty.zone_selector = ZoneSelector::default();
        assert_eq!(skip(&record(vec![empty]), &|_| false), SteerSkip::EmptyPlan);
        // Two moves: the oldest unclaimed one first.
        let two = record(vec![mv("a", "web-a", NOW - 9), mv("b", "web-b", NOW - 5)]);
        let Steering::Steer(s) = plan_steering(&p, "ReplicaSet", Some(&two), |u| u == "a", NOW)
        else {
            panic!()
        };
        assert_eq!(s.move_uid, "b");
    }

    #[test]
    fn a_statefulset_pod_replaces_only_the_move_of_its_name() {
        let rec = record(vec![mv("old", "db-1", NOW - 5)]);
        let other = owned("db-2", "StatefulSet", "db");
        assert!(matches!(
            plan_steering(&other, "StatefulSet", Some(&rec), |_| false, NOW),
            Steering::Skip(SteerSkip::NoReservedMove)
        ));
        let same = owned("db-1", "StatefulSet", "db");
        assert!(matches!(
            plan_steering(&same, "StatefulSet", Some(&rec), |_| false, NOW),
            Steering::Steer(_)
        ));
    }

    fn labelled_rs(name: &str, annotation: &str) -> Meta<ReplicaSet> {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            uid: Some(format!("{name}-uid")),
            labels: Some(BTreeMap::from([(
                keys::LABEL_MIGRATION_PENDING.to_owned(),
                "true".to_owned(),
            )])),
            annotations: Some(BTreeMap::from([(
                keys::ANNOTATION_MIGRATIONS.to_owned(),
                annotation.to_owned(),
            )])),
            ..ObjectMeta::default()
        }
        .into_response_partial::<ReplicaSet>()
    }

    #[test]
    fn one_replacement_per_move_and_fail_open_until_synced() {
        let mut registry = Registry::default();
        let (r, mut w) = Reservations::new(ReservationMetrics::register(&mut registry));
        w.replicasets
            .apply_watcher_event(&watcher::Event::Apply(labelled_rs(
                "web",
                &record(vec![mv("old", "web-a", NOW - 5)]),
            )));
        w.replicasets
            .apply_watcher_event(&watcher::Event::Apply(labelled_rs("bad", "{nope")));
        let p = owned("web-x", "ReplicaSet", "web");
        // Not listed yet: nothing.
        assert_eq!(
            r.steer(&p, "shop", NOW, false),
            Steering::Skip(SteerSkip::NotSynced)
        );
        r.mark_synced();
        // A dry run is steered but claims nothing.
        assert!(matches!(r.steer(&p, "shop", NOW, true), Steering::Steer(_)));
        assert!(matches!(
            r.steer(&p, "shop", NOW, false),
            Steering::Steer(_)
        ));
        // The next pod of the same owner (a scale-up) is not steered.
        let next = owned("web-y", "ReplicaSet", "web");
        assert_eq!(
            r.steer(&next, "shop", NOW + 1, false),
            Steering::Skip(SteerSkip::NoReservedMove)
        );
        // Owners without the label (not cached), in other namespaces, with
        // another uid, or pods of other kinds: nothing.
        let plain = owned("api-x", "ReplicaSet", "api");
        assert_eq!(
            r.steer(&plain, "shop", NOW, false),
            Steering::Skip(SteerSkip::NoPendingMove)
        );
        assert_eq!(
            r.steer(&p, "elsewhere", NOW, false),
            Steering::Skip(SteerSkip::NoPendingMove)
        );
        let ds = owned("agent-x", "DaemonSet", "web");
        assert_eq!(
            r.steer(&ds, "shop", NOW, false),
            Steering::Skip(SteerSkip::NotAReplacement)
        );
        let bad = owned("bad-x", "ReplicaSet", "bad");
        assert!(matches!(
            r.steer(&bad, "shop", NOW, false),
            Steering::Skip(SteerSkip::BadRecord(_))
        ));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "carbon_kube_gates_webhook_steering_total{result=\"steered\"} 2",
            "carbon_kube_gates_webhook_steering_total{result=\"not_synced\"} 1",
            "carbon_kube_gates_webhook_steering_total{result=\"no_reserved_move\"} 1",
            "carbon_kube_gates_webhook_steering_total{result=\"bad_record\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
