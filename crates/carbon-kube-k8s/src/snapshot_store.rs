//! The published snapshot in ConfigMap `carbon-intensity-data`.
//!
//! Writes are read-modify-write with optimistic concurrency: the update
//! function runs on the current content, the ConfigMap is replaced with the
//! `resourceVersion` it was read at, and a conflict (HTTP 409) re-reads and
//! runs the function again. A missing ConfigMap is created.

use std::collections::BTreeMap;

use carbon_kube_model::{Snapshot, SnapshotError, keys};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};

/// How many times an update is retried after write conflicts.
pub const MAX_CONFLICT_RETRIES: usize = 8;

/// What went wrong reading or writing the snapshot ConfigMap.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The API server refused or failed a request.
    #[error("{verb} ConfigMap {namespace}/{name}: {source}")]
    Api {
        /// `get`, `create` or `replace`.
        verb: &'static str,
        /// Namespace of the ConfigMap.
        namespace: String,
        /// Name of the ConfigMap.
        name: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The ConfigMap holds no snapshot key.
    #[error("ConfigMap {namespace}/{name} has no key {key}")]
    MissingKey {
        /// Namespace of the ConfigMap.
        namespace: String,
        /// Name of the ConfigMap.
        name: String,
        /// The expected key.
        key: &'static str,
    },
    /// The snapshot inside is not a JSON object at all.
    #[error("ConfigMap {namespace}/{name}: {source}")]
    Malformed {
        /// Namespace of the ConfigMap.
        namespace: String,
        /// Name of the ConfigMap.
        name: String,
        /// What is wrong with it.
        #[source]
        source: SnapshotError,
    },
    /// Other writers kept winning.
    #[error("ConfigMap {namespace}/{name}: gave up after {attempts} write conflicts")]
    TooManyConflicts {
        /// Namespace of the ConfigMap.
        namespace: String,
        /// Name of the ConfigMap.
        name: String,
        /// Attempts made.
        attempts: usize,
    },
}

/// Decodes the snapshot held by a ConfigMap, keeping every good zone and
/// returning one error per bad zone.
pub fn snapshot_from_configmap(
    cm: &ConfigMap,
) -> Result<(Snapshot, Vec<SnapshotError>), StoreError> {
    let namespace = cm.metadata.namespace.clone().unwrap_or_default();
    let name = cm.metadata.name.clone().unwrap_or_default();
    let json = cm
        .data
        .as_ref()
        .and_then(|d| d.get(keys::SNAPSHOT_KEY))
        .ok_or_else(|| StoreError::MissingKey {
            namespace: namespace.clone(),
            name: name.clone(),
            key: keys::SNAPSHOT_KEY,
        })?;
    Snapshot::parse_lenient(json).map_err(|source| StoreError::Malformed {
        namespace,
        name,
        source,
    })
}

/// Reads and writes the snapshot ConfigMap.
#[derive(Clone)]
pub struct SnapshotStore {
    api: Api<ConfigMap>,
    namespace: String,
    name: String,
}

impl SnapshotStore {
    /// A store for ConfigMap `name` in `namespace`.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    fn api_error(&self, verb: &'static str, source: kube::Error) -> StoreError {
        StoreError::Api {
            verb,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source: Box::new(source),
        }
    }

    /// Reads the snapshot; `None` when the ConfigMap does not exist.
    pub async fn load(&self) -> Result<Option<(Snapshot, Vec<SnapshotError>)>, StoreError> {
        match self.api.get_opt(&self.name).await {
            Ok(Some(cm)) => snapshot_from_configmap(&cm).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(self.api_error("get", e)),
        }
    }

    /// Applies `update` to the current snapshot (empty when the ConfigMap is
    /// missing or unreadable) and writes the result, retrying on conflicts.
    /// `update` may run more than once. Returns the snapshot written and the
    /// number of conflicts met.
    pub async fn update<F>(&self, mut update: F) -> Result<(Snapshot, usize), StoreError>
    where
        F: FnMut(&mut Snapshot),
    {
        for attempt in 0..=MAX_CONFLICT_RETRIES {
            let current = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(|e| self.api_error("get", e))?;
            let (mut snapshot, existing) = match current {
                Some(cm) => {
                    let snapshot = match snapshot_from_configmap(&cm) {
                        Ok((s, errors)) => {
                            for e in errors {
                                tracing::warn!(error = %e, "dropping a bad zone from the published snapshot");
                            }
                            s
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "published snapshot unreadable; rewriting it");
                            Snapshot::default()
                        }
                    };
                    (snapshot, Some(cm))
                }
                None => (Snapshot::default(), None),
            };
            update(&mut snapshot);
            let json = snapshot.to_json();
            let result = match existing {
                Some(mut cm) => {
                    cm.data
                        .get_or_insert_with(BTreeMap::new)
                        .insert(keys::SNAPSHOT_KEY.to_owned(), json);
                    self.api
                        .replace(&self.name, &PostParams::default(), &cm)
                        .await
                        .map_err(|e| ("replace", e))
                }
                None => {
                    let cm = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(self.name.clone()),
                            namespace: Some(self.namespace.clone()),
                            labels: Some(BTreeMap::from([
                                (
                                    "app.kubernetes.io/name".to_owned(),
                                    "carbon-kube".to_owned(),
                                ),
                                (
                                    "app.kubernetes.io/component".to_owned(),
                                    "poller".to_owned(),
                                ),
                            ])),
                            ..ObjectMeta::default()
                        },
                        data: Some(BTreeMap::from([(keys::SNAPSHOT_KEY.to_owned(), json)])),
                        ..ConfigMap::default()
                    };
                    self.api
                        .create(&PostParams::default(), &cm)
                        .await
                        .map_err(|e| ("create", e))
                }
            };
            match result {
                Ok(_) => return Ok((snapshot, attempt)),
                Err((_, kube::Error::Api(status))) if status.code == 409 => {
                    tracing::debug!(
                        attempt,
                        "snapshot ConfigMap changed underneath us; retrying"
                    );
                    continue;
                }
                Err((verb, e)) => return Err(self.api_error(verb, e)),
            }
        }
        Err(StoreError::TooManyConflicts {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            attempts: MAX_CONFLICT_RETRIES + 1,
        })
    }
}
