//! The accounting controller: caches, the tick, the published documents.
//!
//! Every replica keeps reflectors of pods and nodes and a watch of the
//! `carbon-intensity-data` ConfigMap; only the replica holding the Lease
//! accounts. Every `--tick`:
//!
//! 1. the interval is `[previous tick, now)` (at most 10 ticks long: a
//!    replica that was paused does not attribute the whole pause to the pods
//!    running now);
//! 2. the zones of the nodes get their intensity over the interval from the
//!    snapshot (`carbon_kube_policy::accounting::zone_intensities`), which is
//!    also recorded in the hourly history the deferral counterfactual reads;
//! 3. with Kepler configured, its per-pod joule counters are read and
//!    differenced ([`crate::kepler`]);
//! 4. every running pod is accounted by
//!    `carbon_kube_policy::accounting::account_interval`, the counters are
//!    bumped ([`crate::metrics`]) and the interval is folded into the usage
//!    and details documents;
//! 5. every `--publish-interval` both documents are written to the
//!    `carbon-kube-accounting` ConfigMap (server-side apply).
//!
//! On start the documents (and the intensity history) are read back from the
//! ConfigMap, so a restart or a new leader continues the days; the time no
//! replica accounted is not accounted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use carbon_kube_k8s::leader::LeaderSettings;
use carbon_kube_k8s::{Readiness, snapshot_from_configmap};
use carbon_kube_model::accounting::{
    ACCOUNTING_CONFIGMAP, ACCOUNTING_SHARD_LABEL, ANNOTATION_ACCOUNTING_SHARDS,
    MAX_ACCOUNTING_SHARDS, USAGE_KEY, UsageDocument, shard_count, shard_name,
};
use carbon_kube_model::accounting_details::{DETAILS_KEY, DetailsDocument};
use carbon_kube_model::{Snapshot, UnixSeconds, keys};
use carbon_kube_policy::accounting::{
    AccountingConfig, IntensityHistory, IntervalAccount, account_interval, fold_into_documents,
    zone_intensities,
};
use carbon_kube_policy::zone_map::RegionZoneMap;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};

use crate::Clock;
use crate::kepler::{Counters, KeplerSource};
use crate::metrics::AccountingMetrics;
use crate::view::{PlacedBy, node_use, pod_use};

/// Field manager of the controller's writes.
pub const FIELD_MANAGER: &str = "carbon-kube-accounting";

/// Kepler through a Prometheus query endpoint.
#[derive(Clone, Debug)]
pub struct KeplerSettings {
    /// Prometheus base URL (`http://prometheus:9090/`).
    pub url: url::Url,
    /// The instant query (see [`crate::kepler::DEFAULT_QUERY`]).
    pub query: String,
    /// Request timeout.
    pub timeout: Duration,
}

/// Everything the controller needs besides clients.
#[derive(Clone, Debug)]
pub struct AccountingSettings {
    /// Energy model and embodied coefficient.
    pub config: AccountingConfig,
    /// Time between ticks.
    pub tick: Duration,
    /// Time between ConfigMap writes.
    pub publish_interval: Duration,
    /// An intensity older than this is still used, and counted as stale.
    pub max_data_age_seconds: i64,
    /// Namespace of the snapshot ConfigMap, the accounting ConfigMap and the Lease.
    pub namespace: String,
    /// Name of the snapshot ConfigMap.
    pub snapshot_name: String,
    /// Name of the accounting ConfigMap (shard 0; the others are named
    /// after it).
    pub configmap_name: String,
    /// Most ConfigMaps the documents may be split across (1 to
    /// [`MAX_ACCOUNTING_SHARDS`]); past them the oldest days are dropped.
    pub max_shards: usize,
    /// The operator's region → zone map.
    pub region_map: RegionZoneMap,
    /// Which pods count as placed by Carbon-Kube.
    pub placed_by: PlacedBy,
    /// Kepler input; `None` models every pod.
    pub kepler: Option<KeplerSettings>,
    /// Read pods' CPU usage from the resource metrics API (metrics-server)
    /// for the modelled energy; otherwise requests at CCF's utilisation.
    pub cpu_usage_from_metrics_api: bool,
    /// Hours of intensity history kept for the deferral counterfactual.
    pub history_hours: i64,
    /// Workloads per namespace with their own series.
    pub max_workloads_per_namespace: usize,
    /// Leader election; `None` accounts at once (single replica, tests).
    pub leader: Option<LeaderSettings>,
    /// Only pods in this namespace (default: every namespace).
    pub pod_namespace: Option<String>,
}

impl Default for AccountingSettings {
    fn default() -> Self {
        Self {
            config: AccountingConfig::default(),
            tick: Duration::from_secs(60),
            publish_interval: Duration::from_secs(300),
            max_data_age_seconds: 1800,
            namespace: keys::DEFAULT_NAMESPACE.to_owned(),
            snapshot_name: keys::SNAPSHOT_CONFIGMAP.to_owned(),
            configmap_name: ACCOUNTING_CONFIGMAP.to_owned(),
            max_shards: 8,
            region_map: RegionZoneMap::default(),
            placed_by: PlacedBy::SchedulerNames(vec![keys::SCHEDULER_NAME.to_owned()]),
            kepler: None,
            cpu_usage_from_metrics_api: false,
            history_hours: 72,
            max_workloads_per_namespace: 100,
            leader: None,
            pod_namespace: None,
        }
    }
}

/// The accounting state: documents, history, Kepler counters and metrics.
/// [`Accountant::tick`] is synchronous and takes the cached objects, so the
/// scale bench drives it without a cluster.
pub struct Accountant {
    settings: AccountingSettings,
    /// The counters.
    pub metrics: AccountingMetrics,
    /// The usage document (budgets read it).
    pub usage: UsageDocument,
    /// The details document (`carbon-kube report` reads it).
    pub details: DetailsDocument,
    history: IntensityHistory,
    kepler: Counters,
    cpu_usage: HashMap<(String, String), f64>,
    last: Option<UnixSeconds>,
    /// Shards written by the last write (or found on start).
    written_shards: usize,
}

impl Accountant {
    /// A fresh accountant.
    pub fn new(settings: AccountingSettings, metrics: AccountingMetrics) -> Self {
        Self {
            history: IntensityHistory::new(settings.history_hours),
            settings,
            metrics,
            usage: UsageDocument::default(),
            details: DetailsDocument::default(),
            kepler: Counters::default(),
            cpu_usage: HashMap::new(),
            last: None,
            written_shards: 0,
        }
    }

    /// Continues from documents read back from the ConfigMap.
    pub fn restore(&mut self, usage: UsageDocument, details: DetailsDocument) {
        let (history, bad) =
            IntensityHistory::from_document(&details.zone_history, self.settings.history_hours);
        for b in bad {
            tracing::warn!(error = %b, "ignoring a bad zone in the stored intensity history");
        }
        self.history = history;
        self.usage = usage;
        self.details = details;
    }

    /// Forgets the previous tick (after losing the lease): the next tick
    /// only starts an interval.
    pub fn pause(&mut self) {
        self.last = None;
    }

    /// Kepler's cumulative joules per pod now, to difference with the
    /// previous call's.
    pub fn kepler_deltas(
        &mut self,
        now: HashMap<(String, String), f64>,
    ) -> HashMap<(String, String), f64> {
        self.kepler.deltas(now)
    }

    /// CPU usage in cores per pod (namespace, name) for the next tick.
    pub fn set_cpu_usage(&mut self, usage: HashMap<(String, String), f64>) {
        self.cpu_usage = usage;
    }

    /// Accounts `[previous tick, now)` for `pods` on `nodes`; the first call
    /// only records `now`. `measured` holds Kepler's joules per pod over the
    /// interval.
    pub fn tick<'a>(
        &mut self,
        pods: impl Iterator<Item = &'a Pod>,
        nodes: impl Iterator<Item = &'a Node>,
        snapshot: &Snapshot,
        measured: &HashMap<(String, String), f64>,
        now: UnixSeconds,
    ) -> Option<IntervalAccount> {
        let last = self.last.replace(now)?;
        let longest = i64::try_from(self.settings.tick.as_secs())
            .unwrap_or(60)
            .max(1)
            * 10;
        let from = last.max(now - longest);
        if now <= from {
            return None;
        }
        let nodes: Vec<_> = nodes
            .map(|n| node_use(n, &self.settings.region_map))
            .collect();
        let mut pods: Vec<_> = pods
            .filter_map(|p| pod_use(p, &self.settings.placed_by))
            .collect();
        let usage = std::mem::take(&mut self.cpu_usage);
        for p in &mut pods {
            let key = (p.namespace.clone(), p.name.clone());
            p.measured_joules = measured.get(&key).copied();
            p.cpu_usage_cores = usage.get(&key).copied();
        }
        let zones: BTreeSet<_> = nodes.iter().filter_map(|n| n.zone.clone()).collect();
        let intensities = zone_intensities(
            snapshot,
            &zones,
            from,
            now,
            self.settings.max_data_age_seconds,
        );
        let account = account_interval(
            &self.settings.config,
            &nodes,
            &pods,
            &intensities,
            &self.history,
            from,
            now,
        );
        for (z, i) in &intensities {
            self.history.observe(z, from, now, i.g_per_kwh);
        }
        self.metrics.observe(&account);
        fold_into_documents(&account, &mut self.usage, &mut self.details);
        self.usage.generated_at = now;
        self.details.generated_at = now;
        Some(account)
    }

    /// The ConfigMaps holding both documents, each at most
    /// [`MAX_CONFIGMAP_BYTES`] of data. Namespaces are packed in name order
    /// into shard 0 (the accounting ConfigMap itself) and, when they do not
    /// fit, into shards `1..` ([`shard_name`]), up to
    /// `settings.max_shards`; shard 0 also carries the unallocated capacity
    /// and the intensity history, and the shard count
    /// ([`ANNOTATION_ACCOUNTING_SHARDS`]). Shards written before and no
    /// longer needed are returned empty, so readers never count a namespace
    /// twice. Only when even `max_shards` shards are too small are the
    /// oldest days dropped, from the details document first (the report's
    /// savings), then from the usage document (budgets read the current
    /// period, the newest days), and counted in
    /// `carbon_kube_accounting_trimmed_days_total{document}`. Shard 0 is
    /// last, so a reader that sees it sees the shards it names.
    pub fn configmaps(&mut self) -> Vec<ConfigMap> {
        self.details.zone_history = self.history.to_document();
        let max_shards = self.settings.max_shards.clamp(1, MAX_ACCOUNTING_SHARDS);
        let shards = loop {
            if let Some(shards) = self.pack(max_shards) {
                break shards;
            }
            let document = if drop_oldest_day(&mut self.details.namespaces, |d| d.day_start) {
                "details"
            } else if drop_oldest_day(&mut self.usage.namespaces, |d| d.day_start) {
                "usage"
            } else {
                // Nothing left to drop: only the cluster-wide parts remain
                // (bounded: the hourly history and one entry per day).
                let (u, d) = self.encode_part(&BTreeSet::new(), true);
                break vec![(BTreeSet::new(), u, d)];
            };
            self.metrics.trimmed(document);
            tracing::warn!(
                document,
                max_shards,
                "the accounting documents exceed {max_shards} ConfigMaps; dropped their oldest day"
            );
        };
        let used = shards.len();
        let written = self.written_shards.max(used);
        self.written_shards = used;
        let mut out: Vec<ConfigMap> = (0..written)
            .map(|i| {
                let (usage, details) = match shards.get(i) {
                    Some((_, u, d)) if !u.is_empty() => (u.clone(), d.clone()),
                    // Emptied: no namespaces, written now.
                    _ => self.encode_part(&BTreeSet::new(), false),
                };
                self.shard_configmap(i, used, usage, details)
            })
            .collect();
        // Shard 0 last.
        out.rotate_left(1);
        out
    }

    /// The documents restricted to `namespaces` (and, for shard 0, the
    /// cluster-wide parts), encoded.
    fn encode_part(&self, namespaces: &BTreeSet<String>, first: bool) -> (String, String) {
        let usage = UsageDocument {
            generated_at: self.usage.generated_at,
            namespaces: self
                .usage
                .namespaces
                .iter()
                .filter(|(k, _)| namespaces.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let details = DetailsDocument {
            generated_at: self.details.generated_at,
            namespaces: self
                .details
                .namespaces
                .iter()
                .filter(|(k, _)| namespaces.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            unallocated: if first {
                self.details.unallocated.clone()
            } else {
                Vec::new()
            },
            zone_history: if first {
                self.details.zone_history.clone()
            } else {
                BTreeMap::new()
            },
        };
        (
            serde_json::to_string(&usage).unwrap_or_default(),
            serde_json::to_string(&details).unwrap_or_default(),
        )
    }

    /// Packs the namespaces into at most `max_shards` shards of at most
    /// [`MAX_CONFIGMAP_BYTES`]: `(namespaces, usage JSON, details JSON)` per
    /// shard, or `None` when they do not fit.
    fn pack(&self, max_shards: usize) -> Option<Vec<(BTreeSet<String>, String, String)>> {
        // Each namespace's share of the encoded documents: `"name":[...],`
        // in both (exact up to a comma).
        let entry = |name: &str| -> usize {
            let key = serde_json::to_string(name).map_or(0, |k| k.len()) + 2;
            let usage = self
                .usage
                .namespaces
                .get(name)
                .map_or(0, |d| serde_json::to_string(d).map_or(0, |j| j.len()) + key);
            let details = self
                .details
                .namespaces
                .get(name)
                .map_or(0, |d| serde_json::to_string(d).map_or(0, |j| j.len()) + key);
            usage + details
        };
        let names: BTreeSet<&String> = self
            .usage
            .namespaces
            .keys()
            .chain(self.details.namespaces.keys())
            .collect();
        let (u0, d0) = self.encode_part(&BTreeSet::new(), true);
        let (ue, de) = self.encode_part(&BTreeSet::new(), false);
        let mut shards: Vec<(BTreeSet<String>, usize)> =
            vec![(BTreeSet::new(), u0.len() + d0.len())];
        for name in names {
            let size = entry(name);
            let last = shards.last_mut()?;
            if last.1 + size > MAX_CONFIGMAP_BYTES && !last.0.is_empty() {
                if shards.len() == max_shards {
                    return None;
                }
                shards.push((BTreeSet::new(), ue.len() + de.len()));
            }
            let last = shards.last_mut()?;
            if last.1 + size > MAX_CONFIGMAP_BYTES {
                return None;
            }
            last.0.insert(name.clone());
            last.1 += size;
        }
        let mut out = Vec::with_capacity(shards.len());
        for (i, (names, _)) in shards.into_iter().enumerate() {
            let (usage, details) = self.encode_part(&names, i == 0);
            if usage.len() + details.len() > MAX_CONFIGMAP_BYTES {
                return None;
            }
            out.push((names, usage, details));
        }
        Some(out)
    }

    fn shard_configmap(
        &self,
        index: usize,
        shards: usize,
        usage: String,
        details: String,
    ) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(shard_name(&self.settings.configmap_name, index)),
                namespace: Some(self.settings.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (
                        "app.kubernetes.io/managed-by".to_owned(),
                        "carbon-kube-accounting".to_owned(),
                    ),
                    (ACCOUNTING_SHARD_LABEL.to_owned(), index.to_string()),
                ])),
                annotations: (index == 0).then(|| {
                    BTreeMap::from([(ANNOTATION_ACCOUNTING_SHARDS.to_owned(), shards.to_string())])
                }),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([
                (USAGE_KEY.to_owned(), usage),
                (DETAILS_KEY.to_owned(), details),
            ])),
            ..ConfigMap::default()
        }
    }

    /// Remembers how many shards were written before (read back on start),
    /// so the next write empties those no longer needed.
    pub fn set_written_shards(&mut self, shards: usize) {
        self.written_shards = shards;
    }
}

/// Largest data one accounting ConfigMap is given (the API server refuses
/// objects over 1 MiB; the rest is metadata headroom).
pub const MAX_CONFIGMAP_BYTES: usize = 900 * 1024;

/// Drops the oldest day of every namespace that has it (namespaces left
/// without days are removed); false when there was nothing to drop.
fn drop_oldest_day<T>(
    namespaces: &mut BTreeMap<String, Vec<T>>,
    day: impl Fn(&T) -> UnixSeconds,
) -> bool {
    let Some(oldest) = namespaces
        .values()
        .filter_map(|d| d.first().map(&day))
        .min()
    else {
        return false;
    };
    for days in namespaces.values_mut() {
        days.retain(|d| day(d) != oldest);
    }
    namespaces.retain(|_, d| !d.is_empty());
    true
}

/// The ConfigMaps of every shard: `base` first, then the shards its
/// [`ANNOTATION_ACCOUNTING_SHARDS`] names, by name (a missing one is
/// skipped: not written yet). `Ok(None)` when `base` does not exist.
/// Parse them with [`documents_from_configmaps`].
pub async fn read_shard_configmaps(
    api: &Api<ConfigMap>,
    base: &str,
) -> Result<Option<Vec<ConfigMap>>, kube::Error> {
    let Some(first) = api.get_opt(base).await? else {
        return Ok(None);
    };
    let count = shards_of(&first);
    let mut maps = vec![first];
    for i in 1..count {
        if let Some(cm) = api.get_opt(&shard_name(base, i)).await? {
            maps.push(cm);
        }
    }
    Ok(Some(maps))
}

/// How many shards shard 0 (`cm`) says there are.
pub fn shards_of(cm: &ConfigMap) -> usize {
    shard_count(
        cm.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_ACCOUNTING_SHARDS))
            .map(String::as_str),
    )
}

/// The merged documents of several shards' ConfigMaps (any order).
pub fn documents_from_configmaps(
    maps: &[ConfigMap],
) -> Result<(UsageDocument, DetailsDocument), String> {
    let mut usages = Vec::with_capacity(maps.len());
    let mut details = Vec::with_capacity(maps.len());
    for cm in maps {
        let (u, d) = documents_from_configmap(cm).map_err(|e| {
            format!(
                "ConfigMap {}: {e}",
                cm.metadata.name.as_deref().unwrap_or("?")
            )
        })?;
        usages.push(u);
        details.push(d);
    }
    Ok((
        UsageDocument::merge_shards(usages),
        DetailsDocument::merge_shards(details),
    ))
}

/// Reads the documents from the accounting ConfigMap; a missing key or
/// ConfigMap gives an empty document, an unreadable one an error naming it.
pub fn documents_from_configmap(
    cm: &ConfigMap,
) -> Result<(UsageDocument, DetailsDocument), String> {
    let data = cm.data.as_ref();
    let usage = match data.and_then(|d| d.get(USAGE_KEY)) {
        Some(s) => serde_json::from_str(s).map_err(|e| format!("{USAGE_KEY}: {e}"))?,
        None => UsageDocument::default(),
    };
    let details = match data.and_then(|d| d.get(DETAILS_KEY)) {
        Some(s) => serde_json::from_str(s).map_err(|e| format!("{DETAILS_KEY}: {e}"))?,
        None => DetailsDocument::default(),
    };
    Ok((usage, details))
}

async fn reflect<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    readiness: Readiness,
    name: &'static str,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default().any_semantic()),
    )
    .default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::InitDone) => readiness.set(name, true),
            Ok(_) => {}
            Err(e) => tracing::warn!(cache = name, error = %e, "watch failed; retrying"),
        }
    }
}

/// Keeps the latest good snapshot (a malformed ConfigMap keeps the last
/// good one, which then goes stale by age and is counted as such).
async fn watch_snapshot(
    client: kube::Client,
    namespace: String,
    name: String,
    state: Arc<RwLock<Arc<Snapshot>>>,
    readiness: Readiness,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api, cfg).default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                match snapshot_from_configmap(&cm) {
                    Ok((s, errors)) => {
                        for e in errors {
                            tracing::warn!(error = %e, "ignoring a bad zone in the snapshot");
                        }
                        *state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(s);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "snapshot unreadable; keeping the last good one");
                    }
                }
            }
            Ok(watcher::Event::InitDone) => readiness.set("snapshot", true),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "snapshot watch failed; retrying"),
        }
    }
}

/// Writes the shards in order (shard 0 last); stops at the first failure.
async fn publish_all(client: &kube::Client, maps: &[ConfigMap]) -> Result<(), String> {
    for cm in maps {
        publish(client, cm).await.map_err(|e| {
            format!(
                "ConfigMap {}: {e}",
                cm.metadata.name.as_deref().unwrap_or("?")
            )
        })?;
    }
    Ok(())
}

async fn publish(client: &kube::Client, cm: &ConfigMap) -> Result<(), kube::Error> {
    let ns = cm.metadata.namespace.clone().unwrap_or_default();
    let name = cm.metadata.name.clone().unwrap_or_default();
    let mut body = serde_json::to_value(cm).unwrap_or_default();
    if let Some(o) = body.as_object_mut() {
        o.insert("apiVersion".into(), "v1".into());
        o.insert("kind".into(), "ConfigMap".into());
    }
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map(|_| ())
}

/// Runs the controller until `shutdown` resolves.
pub async fn run_accounting(
    client: kube::Client,
    settings: AccountingSettings,
    metrics: AccountingMetrics,
    readiness: Readiness,
    clock: Clock,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    for name in ["pods", "nodes", "snapshot"] {
        readiness.register(name);
    }
    let kepler = match &settings.kepler {
        Some(k) => Some(KeplerSource::new(&k.url, &k.query, k.timeout)?),
        None => None,
    };
    let (pods, pod_writer): (Store<Pod>, _) = reflector::store();
    let (nodes, node_writer): (Store<Node>, _) = reflector::store();
    let snapshot = Arc::new(RwLock::new(Arc::new(Snapshot::default())));
    let pod_api = match &settings.pod_namespace {
        Some(ns) => Api::<Pod>::namespaced(client.clone(), ns),
        None => Api::<Pod>::all(client.clone()),
    };
    let tasks = vec![
        tokio::spawn(reflect(pod_api, pod_writer, readiness.clone(), "pods")),
        tokio::spawn(reflect(
            Api::<Node>::all(client.clone()),
            node_writer,
            readiness.clone(),
            "nodes",
        )),
        tokio::spawn(watch_snapshot(
            client.clone(),
            settings.namespace.clone(),
            settings.snapshot_name.clone(),
            snapshot.clone(),
            readiness.clone(),
        )),
    ];
    let (mut leader, lease) =
        carbon_kube_k8s::leader::elect(client.clone(), settings.leader.as_ref()).await?;
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), &settings.namespace);
    let tick = settings.tick;
    let publish_every = settings.publish_interval;
    let cm_name = settings.configmap_name.clone();
    let mut acc = Accountant::new(settings, metrics);
    let mut restored = false;
    let mut last_publish: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(tick) => {},
            res = leader.changed() => {
                if res.is_err() {
                    tracing::error!("leader election stopped; exiting");
                    break;
                }
            },
        }
        let is_leader = *leader.borrow();
        acc.metrics.leader.set(i64::from(is_leader));
        if !is_leader || !readiness.waiting().is_empty() {
            acc.pause();
            restored = false;
            continue;
        }
        if !restored {
            // A new leader continues the published days, from every shard.
            match read_shard_configmaps(&cm_api, &cm_name).await {
                Ok(Some(maps)) => {
                    acc.set_written_shards(shards_of(&maps[0]));
                    match documents_from_configmaps(&maps) {
                        Ok((u, d)) => acc.restore(u, d),
                        Err(e) => {
                            tracing::warn!(error = %e, "accounting ConfigMap unreadable; starting new documents (it is overwritten at the next publish)")
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading the accounting ConfigMaps failed; retrying");
                    continue;
                }
            }
            restored = true;
        }
        let measured = match &kepler {
            Some(k) => match k.fetch().await {
                Ok((now, skipped)) => {
                    acc.metrics.kepler_query(true);
                    if skipped > 0 {
                        tracing::debug!(
                            skipped,
                            "Kepler samples without pod labels or a valid value"
                        );
                    }
                    acc.kepler_deltas(now)
                }
                Err(e) => {
                    acc.metrics.kepler_query(false);
                    tracing::warn!(error = %e, "Kepler query failed; this interval is modelled");
                    HashMap::new()
                }
            },
            None => HashMap::new(),
        };
        if acc.settings.cpu_usage_from_metrics_api {
            match crate::usage::fetch(&client, acc.settings.pod_namespace.as_deref()).await {
                Ok(u) => acc.set_cpu_usage(u),
                Err(e) => {
                    tracing::warn!(error = %e, "reading pod CPU usage from metrics.k8s.io failed; this interval uses requests")
                }
            }
        }
        let snap = snapshot.read().unwrap_or_else(|e| e.into_inner()).clone();
        let now = clock();
        let pod_state = pods.state();
        let node_state = nodes.state();
        if let Some(a) = acc.tick(
            pod_state.iter().map(|p| p.as_ref()),
            node_state.iter().map(|n| n.as_ref()),
            &snap,
            &measured,
            now,
        ) {
            tracing::debug!(
                pods = a.pods.len(),
                from = a.from,
                to = a.to,
                "accounted an interval"
            );
            if last_publish.is_none_or(|t| t.elapsed() >= publish_every) {
                let maps = acc.configmaps();
                match publish_all(&client, &maps).await {
                    Ok(()) => {
                        acc.metrics.publish(true);
                        last_publish = Some(Instant::now());
                    }
                    Err(e) => {
                        acc.metrics.publish(false);
                        tracing::warn!(error = %e, "writing the accounting ConfigMap failed; retrying next tick");
                    }
                }
            }
        }
    }
    if *leader.borrow() && acc.last.is_some() {
        let maps = acc.configmaps();
        if let Err(e) = publish_all(&client, &maps).await {
            tracing::warn!(error = %e, "final write of the accounting ConfigMap failed");
        }
    }
    lease.release(leader).await;
    for t in tasks {
        t.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use carbon_kube_model::accounting::DayUsage;
    use carbon_kube_model::accounting_details::DayDetails;

    /// 300 namespaces × 35 days: about 3 MiB of documents.
    fn big(max_shards: usize) -> (Accountant, prometheus_client::registry::Registry) {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = AccountingMetrics::register(&mut registry, 10);
        let settings = AccountingSettings {
            max_shards,
            ..AccountingSettings::default()
        };
        let mut acc = Accountant::new(settings, metrics);
        for n in 0..300 {
            let ns = format!("namespace-{n:04}");
            let days = (0..35).map(|d| d * 86_400);
            acc.usage.namespaces.insert(
                ns.clone(),
                days.clone()
                    .map(|day_start| DayUsage {
                        day_start,
                        operational_grams: 1.5 + f64::from(n) / 7.0,
                        energy_joules: 123_456.789 * f64::from(n),
                        ..DayUsage::default()
                    })
                    .collect(),
            );
            acc.details.namespaces.insert(
                ns,
                days.map(|day_start| DayDetails {
                    day_start,
                    modelled_joules: 98_765.432_1 * f64::from(n),
                    ..DayDetails::default()
                })
                .collect(),
            );
        }
        acc.details.unallocated = vec![DayUsage {
            day_start: 0,
            idle_grams: 3.0,
            ..DayUsage::default()
        }];
        (acc, registry)
    }

    fn size(cm: &ConfigMap) -> usize {
        cm.data.as_ref().unwrap().values().map(String::len).sum()
    }

    fn metrics_text(registry: &prometheus_client::registry::Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    /// Issue 17: ~50 namespaces × 35 days filled the one ConfigMap. Now the
    /// namespaces spread over labelled shards and nothing is lost.
    #[test]
    fn many_namespaces_spread_over_shards_and_read_back_whole() {
        let (mut acc, registry) = big(8);
        let (usage, details) = (acc.usage.clone(), acc.details.clone());
        let maps = acc.configmaps();
        assert!(maps.len() > 1 && maps.len() <= 8, "{} shards", maps.len());
        println!(
            "300 namespaces x 35 days: {} shards of {:?} KiB",
            maps.len(),
            maps.iter().map(|m| size(m) / 1024).collect::<Vec<_>>()
        );
        // Shard 0, the ConfigMap everything else knows, is written last and
        // names the count.
        let first = maps.last().unwrap();
        assert_eq!(first.metadata.name.as_deref(), Some(ACCOUNTING_CONFIGMAP));
        assert_eq!(shards_of(first), maps.len());
        for (i, cm) in maps.iter().enumerate() {
            assert!(size(cm) <= MAX_CONFIGMAP_BYTES, "shard {i}: {}", size(cm));
            let label = &cm.metadata.labels.as_ref().unwrap()[ACCOUNTING_SHARD_LABEL];
            assert_eq!(
                cm.metadata.name.clone().unwrap(),
                shard_name(ACCOUNTING_CONFIGMAP, label.parse().unwrap())
            );
        }
        let (u, d) = documents_from_configmaps(&maps).unwrap();
        // Every day of every namespace (floats through JSON: to 1e-12).
        let days = |m: &BTreeMap<String, Vec<DayUsage>>| -> Vec<(String, i64, f64)> {
            m.iter()
                .flat_map(|(k, v)| {
                    v.iter()
                        .map(move |d| (k.clone(), d.day_start, d.total_grams()))
                })
                .collect()
        };
        let (got, want) = (days(&u.namespaces), days(&usage.namespaces));
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!(
                g.0 == w.0 && g.1 == w.1 && (g.2 - w.2).abs() <= 1e-12 * w.2.abs(),
                "{g:?} {w:?}"
            );
        }
        assert_eq!(
            d.namespaces.values().map(Vec::len).sum::<usize>(),
            details.namespaces.values().map(Vec::len).sum::<usize>()
        );
        assert_eq!(
            d.namespaces.keys().collect::<Vec<_>>(),
            details.namespaces.keys().collect::<Vec<_>>()
        );
        assert_eq!(d.unallocated, details.unallocated, "from shard 0");
        assert!(!metrics_text(&registry).contains("trimmed_days_total{"));

        // Fewer namespaces later: the shards no longer needed are written
        // empty, so no reader counts a namespace twice.
        let before = maps.len();
        acc.usage
            .namespaces
            .retain(|k, _| k.as_str() < "namespace-0010");
        acc.details
            .namespaces
            .retain(|k, _| k.as_str() < "namespace-0010");
        let maps = acc.configmaps();
        assert_eq!(maps.len(), before, "the old shards are rewritten");
        assert_eq!(shards_of(maps.last().unwrap()), 1);
        let (u, _) = documents_from_configmaps(&maps).unwrap();
        assert_eq!(u.namespaces.len(), 10);
        assert_eq!(acc.configmaps().len(), 1, "then only shard 0");
    }

    #[test]
    fn past_the_shard_limit_the_oldest_days_go_details_first() {
        let (mut acc, registry) = big(1);
        let maps = acc.configmaps();
        assert_eq!(maps.len(), 1);
        assert!(size(&maps[0]) <= MAX_CONFIGMAP_BYTES, "{}", size(&maps[0]));
        let (usage, details) = documents_from_configmaps(&maps).unwrap();
        // The details went first; the usage keeps the newest days.
        assert!(details.namespaces.is_empty());
        let days = &usage.namespaces["namespace-0000"];
        assert_eq!(days.last().unwrap().day_start, 34 * 86_400);
        assert!(days.len() < 35 && !days.is_empty(), "{}", days.len());
        let text = metrics_text(&registry);
        assert!(
            text.contains("carbon_kube_accounting_trimmed_days_total{document=\"details\"} 35"),
            "{text}"
        );
    }
}
