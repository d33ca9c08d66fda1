//! The fault and breaker plugin configs of one listener, in the filters' own types
//! ([`sluice_core::fault::config::FaultConfig`], [`sluice_core::breaker::BreakerConfig`]), and
//! their place in the chain: `sluice-router -> sluice-canary -> sluice-fault -> sluice-breaker ->
//! envoy.filters.http.router`. A filter appears only on listeners that use it.

use serde_json::Value;
use sluice_core::breaker::{Breaker, BreakerConfig};
use sluice_core::fault::config::{DEFAULT_MAX_ACTIVE_FAULTS, FaultConfig};
use sluice_core::fault::plan::FaultPlan;

use crate::model::{Listener, Mesh, Target};
use crate::sluice_settings;

/// The fault filter's config of `listener`: one fault per rule that has one, keyed by the rule
/// name (the router's `x-sluice-rule`); `None` when no rule on the listener has a fault.
///
/// The extras come from the rules' VirtualServices (`sluice.dev/fault`). Several
/// VirtualServices share a listener's one filter, so they combine: the largest
/// `maxActiveFaults`, `debugHeader` if any asks for it, the first `headerFaults` in rule order.
pub fn fault_config(listener: &Listener) -> Option<FaultConfig> {
    let mut config = FaultConfig {
        after_router: true,
        ..FaultConfig::default()
    };
    let mut max_active: Option<u32> = None;
    for rule in listener.virtual_hosts.iter().flat_map(|vh| &vh.rules) {
        let extras = &rule.sluice.fault_extras;
        if let Some(n) = extras.max_active_faults {
            max_active = Some(max_active.map_or(n, |m| m.max(n)));
        }
        config.debug_header |= extras.debug_header.unwrap_or(false);
        if config.header_faults.is_none() {
            config.header_faults.clone_from(&extras.header_faults);
        }
        if let Some(fault) = &rule.fault {
            config
                .faults
                .push(sluice_settings::fault_rule(&rule.name, fault));
        }
    }
    config.max_active_faults = max_active.unwrap_or(DEFAULT_MAX_ACTIVE_FAULTS);
    (!config.faults.is_empty()).then_some(config)
}

/// The breaker filter's config of `listener`: one breaker per cluster its rules send to that
/// has breaker settings; `None` when there is none.
pub fn breaker_config(listener: &Listener, mesh: &Mesh) -> Option<BreakerConfig> {
    let mut clusters = std::collections::BTreeSet::new();
    for rule in listener.virtual_hosts.iter().flat_map(|vh| &vh.rules) {
        match &rule.target {
            Target::Cluster(c) => {
                clusters.insert(c.as_str());
            }
            Target::Split(members) => clusters.extend(members.iter().map(|(c, _)| c.as_str())),
        }
    }
    let breakers: Vec<Breaker> = clusters
        .into_iter()
        .filter_map(|name| {
            let settings = mesh.clusters.get(name)?.breaker.clone()?;
            Some(Breaker::new(name, settings))
        })
        .collect();
    (!breakers.is_empty()).then_some(BreakerConfig {
        after_router: true,
        cluster_header: None,
        breakers,
        default: None,
    })
}

/// The fault and breaker filters of `listener`, compiled with the filters' own code first, so a
/// config Envoy would refuse is refused here. `wasm_filter(name, json)` builds the Envoy filter.
pub fn chain_filters(
    listener: &Listener,
    mesh: &Mesh,
    wasm_filter: impl Fn(&str, String) -> Value,
    used: &mut std::collections::BTreeSet<&'static str>,
) -> Result<Vec<Value>, String> {
    let name = listener.name();
    let mut filters = Vec::new();
    if let Some(fault) = fault_config(listener) {
        FaultPlan::compile(&fault)
            .map_err(|e| format!("{name}: the fault filter would refuse this config: {e}"))?;
        let json = serde_json::to_string(&fault).map_err(|e| e.to_string())?;
        filters.push(wasm_filter("fault", json));
        used.insert("fault");
    }
    if let Some(breaker) = breaker_config(listener, mesh) {
        breaker
            .compile()
            .map_err(|e| format!("{name}: the breaker filter would refuse this config: {e}"))?;
        let json = serde_json::to_string(&breaker).map_err(|e| e.to_string())?;
        filters.push(wasm_filter("breaker", json));
        used.insert("breaker");
    }
    Ok(filters)
}
