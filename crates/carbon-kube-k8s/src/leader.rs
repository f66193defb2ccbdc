//! Leader election for the controllers (gate controller, migrator,
//! accounting controller, cluster score publisher): one
//! `Lease` through `kube-lease-manager`, or "always the leader" when a
//! component runs as a single replica.

use std::time::Duration;

use anyhow::Context as _;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Leader election through a `coordination.k8s.io/v1` Lease.
#[derive(Clone, Debug)]
pub struct LeaderSettings {
    /// Name of the `Lease`.
    pub lease_name: String,
    /// Its namespace.
    pub namespace: String,
    /// This replica's identity.
    pub identity: String,
    /// Lease validity after the last renewal, seconds.
    pub duration_seconds: u64,
    /// Renew this long before expiry, seconds.
    pub grace_seconds: u64,
}

impl LeaderSettings {
    /// Settings for `component`'s Lease `lease_name` in `namespace`:
    /// renewed a third of `duration_seconds` before expiry; the identity is
    /// `identity` (e.g. `--identity`, `$POD_NAME`), else [`default_identity`].
    pub fn new(
        component: &str,
        lease_name: &str,
        namespace: &str,
        identity: Option<&str>,
        duration_seconds: u64,
    ) -> Self {
        Self {
            lease_name: lease_name.to_owned(),
            namespace: namespace.to_owned(),
            identity: identity.map_or_else(|| default_identity(component), str::to_owned),
            duration_seconds,
            grace_seconds: (duration_seconds / 3).max(1),
        }
    }
}

/// `$HOSTNAME` (the pod's name in Kubernetes), else `component`, plus the
/// process id: unique per replica and per restart.
pub fn default_identity(component: &str) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| component.to_owned());
    format!("{host}-{}", std::process::id())
}

/// Keeps the election running; [`LeaseGuard::release`] gives the lease up.
pub struct LeaseGuard {
    /// Keeps the "always the leader" channel open when there is no lease.
    _always: Option<watch::Sender<bool>>,
    task: Option<JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>>,
}

impl LeaseGuard {
    /// Drops the leadership receiver, which makes the lease manager release
    /// the lease, and waits up to 5 s for it to do so.
    pub async fn release(self, leader: watch::Receiver<bool>) {
        drop(leader);
        if let Some(task) = self.task {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// Starts the election: the receiver says whether this replica leads now.
/// Without `settings` it always leads.
pub async fn elect(
    client: kube::Client,
    settings: Option<&LeaderSettings>,
) -> anyhow::Result<(watch::Receiver<bool>, LeaseGuard)> {
    let Some(l) = settings else {
        let (tx, rx) = watch::channel(true);
        return Ok((
            rx,
            LeaseGuard {
                _always: Some(tx),
                task: None,
            },
        ));
    };
    let manager = LeaseManagerBuilder::new(client, &l.lease_name)
        .with_namespace(&l.namespace)
        .with_identity(&l.identity)
        .with_duration(l.duration_seconds)
        .with_grace(l.grace_seconds)
        .build()
        .await
        .with_context(|| {
            format!(
                "setting up the leader lease {}/{}",
                l.namespace, l.lease_name
            )
        })?;
    let (rx, task) = manager.watch().await;
    Ok((
        rx,
        LeaseGuard {
            _always: None,
            task: Some(task),
        },
    ))
}
