//! Names every component agrees on: annotations, labels, the scheduling gate,
//! and the ConfigMap the poller publishes.

/// ConfigMap holding the published snapshot.
pub const SNAPSHOT_CONFIGMAP: &str = "carbon-intensity-data";
/// Key of the snapshot JSON inside [`SNAPSHOT_CONFIGMAP`].
pub const SNAPSHOT_KEY: &str = "carbon-intensity.json";
/// Default namespace of Carbon-Kube's objects.
pub const DEFAULT_NAMESPACE: &str = "carbon-kube";
/// ConfigMap with runtime overrides of thresholds and weights.
pub const CONFIG_CONFIGMAP: &str = "carbon-kube-config";

/// Node label naming the node's grid zone explicitly (wins over cloud region).
pub const LABEL_GRID_ZONE: &str = "carbon-kube.io/grid-zone";
/// Node label with the cloud region.
pub const LABEL_REGION: &str = "topology.kubernetes.io/region";
/// Node label with the cloud availability zone.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// Pod annotation: per-pod carbon threshold in g/kWh.
pub const ANNOTATION_MAX_INTENSITY: &str = "carbon-kube.io/max-intensity";
/// Pod annotation: `"true"` opts the pod out of carbon-aware decisions.
pub const ANNOTATION_OPT_OUT: &str = "carbon-kube.io/opt-out";
/// Pod annotation: RFC 3339 time by which the pod must have finished.
pub const ANNOTATION_DEADLINE: &str = "carbon-kube.io/deadline";
/// Pod annotation: how long after creation the pod may wait (e.g. `6h`).
pub const ANNOTATION_MAX_DELAY: &str = "carbon-kube.io/max-delay";
/// Pod annotation: how long the pod is expected to run (e.g. `2h`).
pub const ANNOTATION_EXPECTED_DURATION: &str = "carbon-kube.io/expected-duration";
/// Pod annotation written by the gate controller: planned release time.
pub const ANNOTATION_PLANNED_RELEASE: &str = "carbon-kube.io/planned-release";
/// Pod annotation written by the gate controller: why it was released.
pub const ANNOTATION_RELEASE_REASON: &str = "carbon-kube.io/release-reason";
/// Pod annotation written by the gate controller when it removes the gate:
/// the release time (RFC 3339). The accounting controller reads it to find
/// how long a pod was deferred.
pub const ANNOTATION_RELEASED_AT: &str = "carbon-kube.io/released-at";
/// Pod annotation a person sets to release a gated pod at once.
pub const ANNOTATION_RELEASE_NOW: &str = "carbon-kube.io/release-now";
/// Namespace label opting every pod in the namespace into deferral.
pub const LABEL_NAMESPACE_DEFER: &str = "carbon-kube.io/defer";
/// The scheduling gate Carbon-Kube owns.
pub const SCHEDULING_GATE: &str = "carbon-kube.io/green-window";
/// Scheduler name of Carbon-Kube's kube-scheduler profile.
pub const SCHEDULER_NAME: &str = "carbon-kube";
/// Pod annotation or namespace label opting pods into migration: `"true"`
/// (ReplicaSet and eligible Job pods) or `"statefulset"` (also StatefulSet
/// members).
pub const MIGRATE: &str = "carbon-kube.io/migrate";
/// Annotation the migrator writes on a pod's owner (ReplicaSet, StatefulSet,
/// Job): its recent moves and the move in flight, as JSON. Restart-safe
/// state: the migrator keeps nothing that matters in memory.
pub const ANNOTATION_MIGRATIONS: &str = "carbon-kube.io/migrations";
/// Label the migrator puts on a pod's owner (value `"true"`) while one of
/// the owner's moves has a replacement that has not landed yet, and removes
/// once every replacement landed (or timed out). The gate webhook watches
/// only owners with it, so its cache stays small.
pub const LABEL_MIGRATION_PENDING: &str = "carbon-kube.io/migration-pending";
/// Pod annotation the gate webhook writes on the replacement of a migrated
/// pod it steered: the evicted pod's uid (the migrator measures that pod's
/// landing).
pub const ANNOTATION_REPLACES: &str = "carbon-kube.io/replaces";
/// Pod annotation the gate webhook writes on a replacement it steered: the
/// zone and nodes it prefers, and why.
pub const ANNOTATION_STEERED: &str = "carbon-kube.io/steered";
/// Pod annotation a Job pod may set: RFC 3339 time of its last checkpoint
/// (work before it is not lost by a move).
pub const ANNOTATION_LAST_CHECKPOINT: &str = "carbon-kube.io/last-checkpoint";
/// Karmada `PropagationPolicy` or `ClusterPropagationPolicy` annotation:
/// `"true"` lets `carbon-kube cluster-score karmada` set the policy's
/// `spec.placement.replicaScheduling` static cluster weights from the member
/// clusters' carbon scores. Policies without it are never touched.
pub const KARMADA_CARBON_WEIGHTS: &str = "carbon-kube.io/carbon-weights";
/// Annotation `carbon-kube cluster-score karmada` writes on a policy it
/// manages: each cluster's score and weight, and why.
pub const ANNOTATION_CARBON_WEIGHTS_REASON: &str = "carbon-kube.io/carbon-weights-reason";
