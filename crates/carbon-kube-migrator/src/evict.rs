//! The one place that evicts pods.
//!
//! Evictions go only through the Eviction API (`POST
//! pods/{name}/eviction` with a `policy/v1` `Eviction` whose delete options
//! carry a uid precondition, so a pod recreated under the same name is never
//! evicted by mistake). PodDisruptionBudgets are always respected: the API
//! server answers 429 when a budget forbids the eviction, which is a normal
//! answer here ([`Evicted::BlockedByBudget`]), retried on a later cycle,
//! never by kube's built-in retry loop (the client passed in must be built
//! with `default_retry = false`, or a blocked eviction hangs for minutes).
//! Dry-run evicts nothing. Nothing else in Carbon-Kube deletes pods.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::Eviction;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, Preconditions};
use kube::api::{Api, ObjectMeta, PostParams};

/// What became of an eviction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evicted {
    /// Accepted: the pod is being deleted and its controller will replace it.
    Done,
    /// Refused by a PodDisruptionBudget (HTTP 429), with the API's message.
    BlockedByBudget(String),
    /// The pod is gone, or is another pod under the same name.
    Gone,
    /// Dry run: nothing was sent.
    DryRun,
    /// Any other failure, with the error.
    Failed(String),
}

/// The eviction actuator.
#[derive(Clone)]
pub struct Evictor {
    client: kube::Client,
    dry_run: bool,
}

impl Evictor {
    /// An actuator using `client`, which must not retry 429s by itself
    /// (build it from a `kube::Config` with `default_retry = false`).
    pub fn new(client: kube::Client, dry_run: bool) -> Self {
        Self { client, dry_run }
    }

    /// Whether this actuator only pretends.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Evicts `pod`, if it is still the pod with `pod`'s uid.
    pub async fn evict(&self, pod: &Pod) -> Evicted {
        if self.dry_run {
            return Evicted::DryRun;
        }
        let (Some(name), Some(namespace)) = (
            pod.metadata.name.as_deref(),
            pod.metadata.namespace.as_deref(),
        ) else {
            return Evicted::Gone;
        };
        let body = Eviction {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            delete_options: Some(DeleteOptions {
                preconditions: Some(Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteOptions::default()
            }),
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match api
            .create_subresource::<_, serde_json::Value>(
                "eviction",
                name,
                &PostParams::default(),
                &body,
            )
            .await
        {
            Ok(_) => Evicted::Done,
            Err(kube::Error::Api(s)) if s.code == 429 => Evicted::BlockedByBudget(s.message),
            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Evicted::Gone,
            Err(e) => Evicted::Failed(e.to_string()),
        }
    }
}
