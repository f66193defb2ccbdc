//! Waiting for the cluster to reach a state: polling with capped exponential
//! backoff and a deadline, failing with what was last observed.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::Error;
use crate::readiness::{error_chain, shorten};

const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(1);

/// The outcome of one check made by [`wait_until`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress<T> {
    /// The awaited state was reached, with the value to return.
    Done(T),
    /// Not yet; the text says what was seen (shown if the wait times out).
    Waiting(String),
}

/// Calls `check` (first at once, then with backoff from 50 ms up to 1 s) until
/// it returns [`Progress::Done`]; after `timeout`, fails with
/// [`Error::Timeout`] naming `what` and the last [`Progress::Waiting`] text.
pub async fn wait_until<T, F, Fut>(
    what: impl Into<String>,
    timeout: Duration,
    mut check: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Progress<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut delay = FIRST_DELAY;
    let mut last = "nothing observed yet".to_owned();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, check()).await {
            Ok(Progress::Done(value)) => return Ok(value),
            Ok(Progress::Waiting(seen)) => last = seen,
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.into(),
                timeout,
                last,
            });
        }
        tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
        delay = (delay * 2).min(MAX_DELAY);
    }
}

/// Waits until the object `name` exists and `condition` holds for it, and
/// returns it. On timeout the error shows the last version seen (as JSON).
pub async fn wait_for<K, C>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    condition: C,
) -> Result<K, Error>
where
    K: Resource + Clone + DeserializeOwned + Debug + serde::Serialize,
    K::DynamicType: Default,
    C: Fn(&K) -> bool,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let what = format!("{kind} {name} to reach the expected state");
    wait_until(what, timeout, || async {
        match api.get_opt(name).await {
            Ok(Some(object)) if condition(&object) => Progress::Done(object),
            Ok(Some(object)) => Progress::Waiting(shorten(
                &serde_json::to_string(&object).unwrap_or_default(),
                3000,
            )),
            Ok(None) => Progress::Waiting("not found".to_owned()),
            Err(e) => Progress::Waiting(error_chain(&e)),
        }
    })
    .await
}

/// Waits until the object `name` no longer exists.
pub async fn wait_for_deletion<K>(api: &Api<K>, name: &str, timeout: Duration) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let what = format!("{kind} {name} to be deleted");
    wait_until(what, timeout, || async {
        match api.get_opt(name).await {
            Ok(None) => Progress::Done(()),
            Ok(Some(_)) => Progress::Waiting("still exists".to_owned()),
            Err(e) => Progress::Waiting(error_chain(&e)),
        }
    })
    .await
}

/// Waits until pod `name` is bound to a node and returns the node's name. On
/// timeout the error carries the scheduler's verdict (the `PodScheduled`
/// condition, e.g. `0/3 nodes are available: ...`).
pub async fn wait_for_pod_bound(
    pods: &Api<Pod>,
    name: &str,
    timeout: Duration,
) -> Result<String, Error> {
    let what = format!("pod {name} to be bound to a node");
    wait_until(what, timeout, || async {
        match pods.get_opt(name).await {
            Ok(Some(pod)) => match pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                Some(node) => Progress::Done(node),
                None => Progress::Waiting(pod_scheduled_summary(&pod)),
            },
            Ok(None) => Progress::Waiting("pod not found".to_owned()),
            Err(e) => Progress::Waiting(error_chain(&e)),
        }
    })
    .await
}

/// Waits until pod `name` is Running with all containers ready, and returns it.
pub async fn wait_for_pod_running(
    pods: &Api<Pod>,
    name: &str,
    timeout: Duration,
) -> Result<Pod, Error> {
    let what = format!("pod {name} to be Running and Ready");
    wait_until(what, timeout, || async {
        match pods.get_opt(name).await {
            Ok(Some(pod)) if pod_is_running_and_ready(&pod) => Progress::Done(pod),
            Ok(Some(pod)) => Progress::Waiting(format!(
                "phase {:?}, node {:?}; {}",
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
                pod_scheduled_summary(&pod)
            )),
            Ok(None) => Progress::Waiting("pod not found".to_owned()),
            Err(e) => Progress::Waiting(error_chain(&e)),
        }
    })
    .await
}

/// True if the pod is in phase Running and its `Ready` condition is `True`.
pub fn pod_is_running_and_ready(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn pod_scheduled_summary(pod: &Pod) -> String {
    let condition = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
    match condition {
        Some(c) => format!(
            "PodScheduled={} reason={} message={}",
            c.status,
            c.reason.as_deref().unwrap_or(""),
            c.message.as_deref().unwrap_or("")
        ),
        None => format!(
            "no PodScheduled condition yet (schedulerName {:?})",
            pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wait_until_returns_the_value_once_done() {
        let mut calls = 0;
        let value = wait_until("three calls", Duration::from_secs(10), || {
            calls += 1;
            let n = calls;
            async move {
                if n >= 3 {
                    Progress::Done(n)
                } else {
                    Progress::Waiting(format!("call {n}"))
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_until_times_out_with_the_last_observation() {
        let err = wait_until("never", Duration::from_secs(2), || async {
            Progress::<()>::Waiting("still pending".to_owned())
        })
        .await
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("waiting for never"), "{message}");
        assert!(message.contains("still pending"), "{message}");
    }
}
