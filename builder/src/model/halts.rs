//! Fleet halts (`sluice serve --spread-halts`, issue 29): a canary that one proxy's guard
//! halted, taken out of every proxy's split by the control plane.
//!
//! The guard itself runs in each Envoy and halts only that Envoy's canary. When serve spreads a
//! halt, the next build takes the model as the input gives it and, for each halted split whose
//! config is still the one that was halted, gives the canary member weight 0 and drops the
//! schedule: no proxy sends it a new request, and sticky users pinned to it map to the
//! baseline (its buckets are gone), as on the proxy that halted. The halt is tied to the
//! split's [`fingerprint`]: once the operator changes the split (weights, members, stickiness,
//! schedule or guard), the fingerprint differs, the halt lapses and the changed split is
//! served as written, which is how a guard re-arms.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::{Mesh, Rule, Target};

/// The fingerprint of every guarded split of `mesh`, by split name (the rule's name, which the
/// canary filter's metrics carry): what a fleet halt is tied to.
pub fn guarded(mesh: &Mesh) -> BTreeMap<String, String> {
    rules(mesh)
        .filter(|rule| rule.sluice.guard.is_some())
        .filter_map(|rule| Some((rule.name.clone(), fingerprint(rule)?)))
        .collect()
}

/// A short hash of everything that makes `rule`'s split what it is (`None`: the rule does not
/// split). The same split gives the same fingerprint on every listener and every build.
pub fn fingerprint(rule: &Rule) -> Option<String> {
    let Target::Split(members) = &rule.target else {
        return None;
    };
    let settings = &rule.sluice;
    let canonical = serde_json::json!([
        members,
        settings.sticky,
        settings.schedule,
        settings.failover,
        settings.guard,
    ]);
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    Some(hex::encode(&digest[..8]))
}

/// Takes the canary out of each split of `halted` (split name -> the fingerprint it was halted
/// at) whose fingerprint is still that one; returns the names of the splits halted. A split
/// that changed, or that no longer exists, is left as the input gives it.
pub fn apply(mesh: &mut Mesh, halted: &BTreeMap<String, String>) -> Vec<String> {
    if halted.is_empty() {
        return Vec::new();
    }
    let mut applied = Vec::new();
    for rule in mesh
        .listeners
        .values_mut()
        .flat_map(|l| &mut l.virtual_hosts)
        .flat_map(|vh| &mut vh.rules)
    {
        let Some(at) = halted.get(&rule.name) else {
            continue;
        };
        if fingerprint(rule).as_ref() != Some(at) {
            continue;
        }
        if halt(rule) && !applied.contains(&rule.name) {
            applied.push(rule.name.clone());
        }
    }
    applied
}

/// Gives `rule`'s guarded canary weight 0 and no schedule; the baseline keeps its relative
/// weights (or, if they were all 0, its first member takes everything). `false`: the rule has
/// no guarded split.
fn halt(rule: &mut Rule) -> bool {
    let (Target::Split(members), Some(guard)) = (&mut rule.target, &rule.sluice.guard) else {
        return false;
    };
    let canary = match &guard.canary {
        Some(cluster) => members.iter().position(|(c, _)| c == cluster),
        None => members.len().checked_sub(1),
    };
    let Some(canary) = canary else {
        return false;
    };
    members[canary].1 = 0;
    if members.iter().all(|(_, w)| *w == 0)
        && let Some(baseline) = (0..members.len()).find(|&i| i != canary)
    {
        members[baseline].1 = 1;
    }
    rule.sluice.schedule = None;
    true
}

fn rules(mesh: &Mesh) -> impl Iterator<Item = &Rule> {
    mesh.listeners
        .values()
        .flat_map(|l| &l.virtual_hosts)
        .flat_map(|vh| &vh.rules)
}
