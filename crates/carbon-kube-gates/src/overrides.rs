//! Runtime overrides of the deferral settings: the controller watches the
//! `carbon-kube-config` ConfigMap (the extender's, read with the shared codec
//! `carbon_kube_policy::overrides`) and lays its `deferral.*` keys over the
//! flags on every pass, until the override's `validUntil`; after it, or when
//! the ConfigMap is deleted, the flags apply again.
//!
//! A bad override (unreadable value, unknown `deferral.*` key, value out of
//! range) is rejected whole and logged with every field path; the previous
//! override stays, as in the extender.

use std::sync::{Arc, RwLock};

use carbon_kube_k8s::Readiness;
use carbon_kube_model::UnixSeconds;
use carbon_kube_policy::deferral::DeferralConfig;
use carbon_kube_policy::overrides::RuntimeOverrides;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use tokio::sync::Notify;

/// The override in force (validated against the flags), if any.
pub type OverrideState = Arc<RwLock<Option<RuntimeOverrides>>>;

/// Reads one version of the ConfigMap's data: `Ok(None)` when it has no
/// deferral keys, `Err` with every problem otherwise.
pub fn read_overrides(
    data: Option<&std::collections::BTreeMap<String, String>>,
    base: &DeferralConfig,
    path_prefix: &str,
) -> Result<Option<RuntimeOverrides>, carbon_kube_policy::placement::ConfigErrors> {
    let empty = std::collections::BTreeMap::new();
    let o = RuntimeOverrides::from_string_map(data.unwrap_or(&empty), path_prefix)?;
    o.check_section("deferral.", path_prefix)?;
    o.deferral.apply(base, path_prefix)?;
    Ok((!o.deferral.is_empty()).then_some(o))
}

/// The deferral settings for a pass at `now`: the flags, with the override
/// laid on top unless it has expired. The second value says whether the
/// override applied.
pub fn effective_deferral(
    base: &DeferralConfig,
    overrides: Option<&RuntimeOverrides>,
    now: UnixSeconds,
) -> (DeferralConfig, bool) {
    match overrides.filter(|o| !o.is_expired(now)) {
        // Validated when read; a failure here cannot happen, but falls back.
        Some(o) => o
            .deferral
            .apply(base, "")
            .map_or_else(|_| (base.clone(), false), |d| (d, true)),
        None => (base.clone(), false),
    }
}

/// Watches the overrides ConfigMap into `state`. Sets readiness entry
/// `overrides` after the first list (informational: the controller does not
/// wait for it; until then the flags apply).
pub async fn watch_overrides(
    client: kube::Client,
    namespace: String,
    name: String,
    base: DeferralConfig,
    state: OverrideState,
    readiness: Readiness,
    changed: Arc<Notify>,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api, cfg).default_backoff();
    futures::pin_mut!(stream);
    let prefix = format!("ConfigMap {name}: ");
    let set = |o: Option<RuntimeOverrides>| {
        *state.write().unwrap_or_else(|e| e.into_inner()) = o;
    };
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                match read_overrides(cm.data.as_ref(), &base, &prefix) {
                    Ok(o) => {
                        tracing::info!(
                            deferral = ?o.as_ref().map(|o| &o.deferral),
                            valid_until = ?o.as_ref().and_then(|o| o.valid_until),
                            "deferral overrides updated"
                        );
                        set(o);
                    }
                    Err(e) => tracing::error!(
                        error = %e,
                        "rejected runtime override; keeping the previous settings"
                    ),
                }
            }
            Ok(watcher::Event::Delete(_)) => {
                tracing::info!(%name, "overrides ConfigMap deleted; back to the flags");
                set(None);
            }
            Ok(watcher::Event::Init) => {}
            Ok(watcher::Event::InitDone) => readiness.set("overrides", true),
            Err(e) => tracing::warn!(error = %e, "overrides watch failed; retrying"),
        }
        changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(entries: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn an_override_applies_until_it_expires() {
        let base = DeferralConfig::default();
        let o = read_overrides(
            Some(&data(&[
                ("deferral.minSavingFraction", "0.25"),
                ("threshold", "300"),
                ("validUntil", "2026-12-07T18:00:00Z"),
            ])),
            &base,
            "",
        )
        .unwrap()
        .unwrap();
        let until = o.valid_until.unwrap();
        let (d, applied) = effective_deferral(&base, Some(&o), until);
        assert!(applied);
        assert_eq!(d.min_saving_fraction, 0.25);
        assert_eq!(d.capacity_headroom, base.capacity_headroom);
        let (d, applied) = effective_deferral(&base, Some(&o), until + 1);
        assert!(!applied);
        assert_eq!(d, base);
        // No deferral keys: nothing for the controller.
        assert_eq!(
            read_overrides(Some(&data(&[("threshold", "300")])), &base, "").unwrap(),
            None
        );
    }

    #[test]
    fn bad_deferral_keys_are_rejected_with_their_paths() {
        let base = DeferralConfig::default();
        let e = read_overrides(
            Some(&data(&[
                ("deferral.minSavingFracton", "0.2"),
                ("deferral.capacityHeadroom", "2"),
            ])),
            &base,
            "cm: ",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("cm: deferral.minSavingFracton: unknown setting"),
            "{e}"
        );
        let e = read_overrides(
            Some(&data(&[("deferral.capacityHeadroom", "2")])),
            &base,
            "cm: ",
        )
        .unwrap_err();
        assert_eq!(e.0[0].path, "cm: deferral.capacityHeadroom");
    }
}
