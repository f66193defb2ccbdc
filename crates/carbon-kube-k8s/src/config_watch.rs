//! Watching one named ConfigMap (the carbon snapshot, the runtime
//! overrides `carbon-kube-config`): every version goes to a callback, and
//! its absence (not there at the first list, or deleted) too, as `None`.
//!
//! The callback decides what a version means (parse, validate, keep the
//! previous value on a bad one); this only keeps the watch alive (watch
//! errors are logged and retried with backoff) and marks the readiness
//! check once the first list is done.

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event, watcher};

use crate::Readiness;

/// Watches the ConfigMap `namespace/name` until the stream ends, calling
/// `apply` with each version, or `None` when it is absent after the first
/// list or deleted. Sets readiness `check` after the first list.
pub async fn watch_configmap(
    client: kube::Client,
    namespace: &str,
    name: &str,
    readiness: Readiness,
    check: &'static str,
    mut apply: impl FnMut(Option<&ConfigMap>),
) {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api, cfg).default_backoff();
    futures::pin_mut!(stream);
    let mut seen = false;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => seen = false,
            Ok(Event::InitApply(cm) | Event::Apply(cm)) => {
                seen = true;
                apply(Some(&cm));
            }
            Ok(Event::InitDone) => {
                if !seen {
                    apply(None);
                }
                readiness.set(check, true);
            }
            Ok(Event::Delete(_)) => {
                seen = false;
                apply(None);
            }
            Err(e) => {
                tracing::warn!(error = %e, configmap = name, "ConfigMap watch failed; retrying");
            }
        }
    }
}
