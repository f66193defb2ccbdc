//! Where a cycle's snapshot goes: the ConfigMap, a file, or stdout.

use std::path::PathBuf;

use anyhow::Context;
use carbon_kube_k8s::SnapshotStore;
use carbon_kube_model::{Snapshot, UnixSeconds};
use carbon_kube_signals::ZoneFetch;

use crate::args::{Output, Settings};
use crate::cycle::{self, PollReport};

/// A publishing target. One per process, so its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Sink {
    /// The snapshot ConfigMap.
    ConfigMap {
        /// The store.
        store: SnapshotStore,
        /// See `--max-data-age`.
        max_age_seconds: i64,
    },
    /// A file (read first, so its good values are kept).
    File {
        /// The path.
        path: PathBuf,
        /// See `--max-data-age`.
        max_age_seconds: i64,
    },
    /// Standard output.
    Stdout,
}

impl Sink {
    /// Builds the sink the settings name (connecting to the cluster if needed).
    pub async fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let max_age_seconds = settings.max_data_age_seconds;
        Ok(match &settings.output {
            Output::ConfigMap { namespace, name } => {
                let client = kube::Client::try_default()
                    .await
                    .context("connecting to the cluster (use --output FILE to run without one)")?;
                Self::ConfigMap {
                    store: SnapshotStore::new(client, namespace, name),
                    max_age_seconds,
                }
            }
            Output::File(path) => Self::File {
                path: path.clone(),
                max_age_seconds,
            },
            Output::Stdout => Self::Stdout,
        })
    }

    /// Merges `fetches` into the target's current snapshot and writes it.
    pub async fn publish(
        &self,
        fetches: &[ZoneFetch],
        now: UnixSeconds,
    ) -> anyhow::Result<(Snapshot, PollReport)> {
        match self {
            Self::ConfigMap {
                store,
                max_age_seconds,
            } => {
                let mut report = None;
                let (snapshot, conflicts) = store
                    .update(|s| report = Some(cycle::apply(s, fetches, now, *max_age_seconds)))
                    .await?;
                if conflicts > 0 {
                    tracing::info!(conflicts, "snapshot written after write conflicts");
                }
                let report = report.context("snapshot update did not run")?;
                Ok((snapshot, report))
            }
            Self::File {
                path,
                max_age_seconds,
            } => {
                let mut snapshot = read_file(path).await?;
                let report = cycle::apply(&mut snapshot, fetches, now, *max_age_seconds);
                write_file(path, &snapshot).await?;
                Ok((snapshot, report))
            }
            Self::Stdout => {
                let mut snapshot = Snapshot::default();
                let report = cycle::apply(&mut snapshot, fetches, now, 0);
                println!("{}", snapshot.to_json());
                Ok((snapshot, report))
            }
        }
    }
}

async fn read_file(path: &PathBuf) -> anyhow::Result<Snapshot> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) if text.trim().is_empty() => Ok(Snapshot::default()),
        Ok(text) => match Snapshot::parse_lenient(&text) {
            Ok((snapshot, errors)) => {
                for e in errors {
                    tracing::warn!(file = %path.display(), error = %e, "dropping a bad zone from the previous snapshot");
                }
                Ok(snapshot)
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "previous snapshot unreadable; starting afresh");
                Ok(Snapshot::default())
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Snapshot::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

async fn write_file(path: &PathBuf, snapshot: &Snapshot) -> anyhow::Result<()> {
    let mut tmp = path.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    tokio::fs::write(&tmp, snapshot.to_json())
        .await
        .with_context(|| format!("writing {}", tmp.display()))?;
    tokio::fs::rename(&tmp, path)
        .await
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}
