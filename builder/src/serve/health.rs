//! Central health checking in serve (glue): one [`Prober`] probes the endpoints the published
//! config names ([`crate::model::Mesh::probed`]), and each change of health publishes the config
//! again with the new health in its EDS resources ([`super::state::Published::with_health`]):
//! every proxy gets the result by EDS, and only by EDS.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::state::Shared;
use crate::model::ProbedEndpoint;
use crate::probe::run::{Prober, Target};
use crate::probe::tracker::Health;

/// The prober's targets for `probed`.
pub(super) fn targets<'a>(probed: impl IntoIterator<Item = &'a ProbedEndpoint>) -> Vec<Target> {
    probed
        .into_iter()
        .map(|p| Target {
            address: p.address.clone(),
            probe: p.probe.clone(),
        })
        .collect()
}

/// Keeps `prober`'s targets those of the published config and publishes each health change,
/// until the task is aborted.
pub async fn run(shared: Arc<Shared>, prober: Arc<Prober>) {
    let mut published = shared.published.subscribe();
    // A config published before this task started counts as a change.
    published.mark_changed();
    let mut changes = prober.changes();
    let mut probing: Option<Arc<BTreeMap<String, ProbedEndpoint>>> = None;
    let mut last: BTreeMap<String, Health> = BTreeMap::new();
    loop {
        tokio::select! {
            changed = published.changed() => {
                if changed.is_err() {
                    return;
                }
                let probed = published.borrow_and_update().as_ref().map(|p| p.probed.clone());
                let Some(probed) = probed else { continue };
                // This task's own publications carry the same map: nothing to change.
                let same = probing
                    .as_ref()
                    .is_some_and(|p| Arc::ptr_eq(p, &probed) || **p == *probed);
                if !same {
                    prober.set_targets(targets(probed.values()));
                    probing = Some(probed);
                }
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                changes.borrow_and_update();
                let health = prober.health_by_key();
                log_changes(&prober, &last, &health);
                shared.publish_health(health.clone());
                last = health;
            }
        }
    }
}

/// One log line per endpoint whose health moved from `last` to `now`, with why.
pub(super) fn log_changes(
    prober: &Prober,
    last: &BTreeMap<String, Health>,
    now: &BTreeMap<String, Health>,
) {
    for (key, h) in now {
        if last.get(key) != Some(h) {
            let why = prober
                .status()
                .into_iter()
                .find(|s| &s.key == key)
                .and_then(|s| s.last_error)
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            eprintln!("serve: endpoint {key} is {}{why}", h.eds_name());
        }
    }
}
