//! The sluice plugin configs of one listener, in the filters' own types, and the two layouts
//! that carry them: the chain `sluice-router -> sluice-canary -> sluice-fault -> sluice-breaker
//! -> envoy.filters.http.router` (a filter only on listeners that use it), or the one
//! `sluice-suite` filter (`--suite`) whose config nests the same four sections.
//!
//! The trade: the suite enters the wasm VM once per callback instead of once per filter and
//! reads the internal headers once, so it costs less CPU per request (BENCHMARKS.md); the chain
//! lets you attach, reorder or replace the filters one by one.

use std::collections::{HashMap, HashSet};

use sluice_core::breaker::{Breaker, BreakerConfig};
use sluice_core::canary::{CanaryConfig, CompiledCanary, Member, Split};
use sluice_core::fault::config::{DEFAULT_MAX_ACTIVE_FAULTS, FaultConfig};
use sluice_core::fault::plan::FaultPlan;
use sluice_core::json::FromJson;
use sluice_core::router::{self, CompiledRouter, RouterConfig};
use sluice_core::suite::SuiteConfig;
use sluice_core::suite::debug::DebugConfig;
use sluice_core::wire;

use super::error::EmitError;
use crate::diag::Origin;
use crate::model::{Listener, Mesh, Target};

/// The sluice filters of the chain layout, by short name (`sluice_<name>.wasm`), in chain order.
pub const FILTERS: [&str; 4] = wire::FILTERS;

/// Every module a generated config can load: the four filters, and the suite
/// ([`SUITE`]) that replaces them with `--suite`.
pub const MODULES: [&str; 5] = wire::MODULES;

/// Short name of the one-module layout (`sluice_suite.wasm`, root_id `sluice_suite`, Envoy
/// filter and WasmPlugin `sluice-suite`).
pub const SUITE: &str = wire::SUITE;

/// The router plugin config of one listener.
pub fn router_config(listener: &Listener) -> RouterConfig {
    RouterConfig {
        virtual_hosts: listener
            .virtual_hosts
            .iter()
            .map(|vh| router::VirtualHost {
                name: vh.name.clone(),
                domains: vh.domains.clone(),
                rules: vh
                    .rules
                    .iter()
                    .map(|rule| router::Rule {
                        name: rule.name.clone(),
                        match_: rule.matches.clone(),
                        route: match &rule.target {
                            Target::Cluster(c) => router::Destination::Cluster(c.clone()),
                            Target::Split(_) => router::Destination::Split(rule.name.clone()),
                        },
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The canary plugin config of one listener, if any rule splits traffic. Each split is named
/// after its rule.
pub fn canary_config(listener: &Listener) -> Option<CanaryConfig> {
    let splits: Vec<Split> = listener
        .virtual_hosts
        .iter()
        .flat_map(|vh| &vh.rules)
        .filter_map(|rule| match &rule.target {
            Target::Split(members) => Some(Split {
                name: rule.name.clone(),
                members: members
                    .iter()
                    .map(|(cluster, weight)| Member {
                        cluster: cluster.clone(),
                        weight: *weight,
                    })
                    .collect(),
                sticky: rule.sluice.sticky.clone(),
                schedule: rule.sluice.schedule.clone(),
                failover: rule.sluice.failover,
                guard: rule.sluice.guard.clone(),
            }),
            Target::Cluster(_) => None,
        })
        .collect();
    (!splits.is_empty()).then(|| CanaryConfig {
        after_router: true,
        splits,
        rules: Vec::new(),
    })
}

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
            config.faults.push(fault.clone());
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
        clusters.extend(rule.target.clusters());
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
        detailed_replies: false,
    })
}

/// The suite's `debug` section of `listener`: the first `sluice.dev/debug` of its rules'
/// VirtualServices, in rule order, with its secret (the model read it from its file) and the position
/// (`file:line:col` of `http[i]`) of every rule, in the router's order (`generated` for a rule
/// no input wrote, such as a mesh service's default route). `None` without the annotation:
/// the configs then carry no position and not one byte more.
pub fn debug_config(listener: &Listener) -> Result<Option<DebugConfig>, EmitError> {
    let rules = || listener.virtual_hosts.iter().flat_map(|vh| &vh.rules);
    let Some(settings) = rules().find_map(|r| r.sluice.debug.as_ref()) else {
        return Ok(None);
    };
    let positions = rules()
        .map(|r| {
            r.origin.as_ref().map_or_else(
                || "generated".to_owned(),
                |o| format!("{}:{}:{}", o.file, o.pos.line, o.pos.col),
            )
        })
        .collect();
    Ok(Some(DebugConfig {
        header: settings.header.clone().unwrap_or_default(),
        secret: settings.secret.clone(),
        trusted_cidrs: settings.trusted_cidrs.clone(),
        positions,
    }))
}

/// The sluice plugin configs of one listener (or of the istio target's merged listener), each
/// already compiled with the filter's own code, so a config Envoy would refuse at load time is
/// refused at build time instead.
///
/// They become either the chain `sluice-router -> sluice-canary -> sluice-fault ->
/// sluice-breaker` ([`PluginConfigs::chain`]) or the one `sluice-suite` filter
/// ([`PluginConfigs::layout_reusing`] with `suite`), whose config nests these very values:
/// the two layouts decide the same way by construction.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfigs {
    /// Always present: every listener routes through the router.
    pub router: RouterConfig,
    /// When a rule splits traffic.
    pub canary: Option<CanaryConfig>,
    /// When a rule has a fault.
    pub fault: Option<FaultConfig>,
    /// When a destination has breaker settings.
    pub breaker: Option<BreakerConfig>,
    /// When a rule's VirtualService has `sluice.dev/debug`: only the suite layout reads it
    /// (the chain's filters do not explain requests).
    pub debug: Option<DebugConfig>,
}

impl PluginConfigs {
    /// The configs of `listener`, each compiled with its filter's code. `Err` names `label`
    /// (the listener, or what stands for it) and the filter that would refuse its config, and why.
    pub fn of(listener: &Listener, mesh: &Mesh, label: &str) -> Result<Self, EmitError> {
        Self::with_detail(listener, mesh, label, false)
    }

    /// [`PluginConfigs::of`] with the breaker's `detailedReplies` (`--detailed-replies`).
    pub fn with_detail(
        listener: &Listener,
        mesh: &Mesh,
        label: &str,
        detailed_replies: bool,
    ) -> Result<Self, EmitError> {
        let configs = Self::assemble(listener, mesh, detailed_replies)?;
        let refused = Refusal { listener, label };
        configs.compile_router(&refused)?;
        configs.compile_canary(&refused)?;
        configs.compile_fault(&refused)?;
        configs.compile_breaker(&refused)?;
        Ok(configs)
    }

    /// The configs of `listener`, not yet compiled.
    fn assemble(
        listener: &Listener,
        mesh: &Mesh,
        detailed_replies: bool,
    ) -> Result<Self, EmitError> {
        Ok(Self {
            router: router_config(listener),
            canary: canary_config(listener),
            fault: fault_config(listener),
            breaker: breaker_config(listener, mesh).map(|b| BreakerConfig {
                detailed_replies,
                ..b
            }),
            debug: debug_config(listener)?,
        })
    }

    fn compile_router(&self, refused: &Refusal<'_>) -> Result<(), EmitError> {
        CompiledRouter::compile(&self.router).map_err(|e| refused.by("router", &e))?;
        Ok(())
    }

    fn compile_canary(&self, refused: &Refusal<'_>) -> Result<(), EmitError> {
        if let Some(canary) = &self.canary {
            CompiledCanary::compile(canary).map_err(|e| refused.by("canary", &e))?;
        }
        Ok(())
    }

    fn compile_fault(&self, refused: &Refusal<'_>) -> Result<(), EmitError> {
        if let Some(fault) = &self.fault {
            FaultPlan::compile(fault).map_err(|e| refused.by("fault", &e))?;
        }
        Ok(())
    }

    fn compile_breaker(&self, refused: &Refusal<'_>) -> Result<(), EmitError> {
        if let Some(breaker) = &self.breaker {
            breaker.compile().map_err(|e| refused.by("breaker", &e))?;
        }
        Ok(())
    }

    /// The filters of `listener` in the layout `suite` selects, `(module, JSON config)` in
    /// chain order: the configs of [`PluginConfigs::with_detail`], with its errors, compiling
    /// only the configs `compiled` has not seen compile (a one-rule edit of a large listener
    /// compiles the filter it touched, not the others).
    pub fn layout_reusing(
        listener: &Listener,
        mesh: &Mesh,
        label: &str,
        (suite, detailed_replies): (bool, bool),
        compiled: &mut Compiled,
    ) -> Result<Vec<(&'static str, String)>, EmitError> {
        let configs = Self::assemble(listener, mesh, detailed_replies)?;
        let refused = Refusal { listener, label };
        if suite {
            let suite = configs.suite_config();
            let json = serialized(&suite)?;
            if !compiled.known(SUITE, &json) {
                configs.compile_router(&refused)?;
                configs.compile_canary(&refused)?;
                configs.compile_fault(&refused)?;
                configs.compile_breaker(&refused)?;
                compile_suite(&suite, label)?;
                read_back(&suite, &json)?;
            }
            compiled.record(SUITE, &json);
            return Ok(vec![(SUITE, json)]);
        }
        let mut filters = Vec::with_capacity(4);
        let mut add = |module: &'static str,
                       json: String,
                       check: &dyn Fn(&str) -> Result<(), EmitError>|
         -> Result<(), EmitError> {
            if !compiled.known(module, &json) {
                check(&json)?;
            }
            compiled.record(module, &json);
            filters.push((module, json));
            Ok(())
        };
        add("router", serialized(&configs.router)?, &|json| {
            configs.compile_router(&refused)?;
            read_back(&configs.router, json)
        })?;
        if let Some(canary) = &configs.canary {
            add("canary", serialized(canary)?, &|json| {
                configs.compile_canary(&refused)?;
                read_back(canary, json)
            })?;
        }
        if let Some(fault) = &configs.fault {
            add("fault", serialized(fault)?, &|json| {
                configs.compile_fault(&refused)?;
                read_back(fault, json)
            })?;
        }
        if let Some(breaker) = &configs.breaker {
            add("breaker", serialized(breaker)?, &|json| {
                configs.compile_breaker(&refused)?;
                read_back(breaker, json)
            })?;
        }
        Ok(filters)
    }

    /// The four-filter layout: `(filter, JSON config)` in chain order, only the filters in use.
    pub fn chain(&self) -> Result<Vec<(&'static str, String)>, EmitError> {
        let mut filters = vec![("router", to_json(&self.router)?)];
        if let Some(canary) = &self.canary {
            filters.push(("canary", to_json(canary)?));
        }
        if let Some(fault) = &self.fault {
            filters.push(("fault", to_json(fault)?));
        }
        if let Some(breaker) = &self.breaker {
            filters.push(("breaker", to_json(breaker)?));
        }
        Ok(filters)
    }

    /// The suite config nesting these configs, not yet compiled.
    fn suite_config(&self) -> SuiteConfig {
        SuiteConfig {
            router: self.router.clone(),
            canary: self.canary.clone(),
            fault: self.fault.clone(),
            breaker: self.breaker.clone(),
            debug: self.debug.clone(),
        }
    }
}

/// The suite's compilation of `suite` (what only holds across sections); `label` names the
/// listener in the error.
fn compile_suite(suite: &SuiteConfig, label: &str) -> Result<(), EmitError> {
    suite.compile().map_err(|e| {
        EmitError::internal(format!(
            "{label}: the suite filter would refuse this config: {e}"
        ))
    })?;
    Ok(())
}

/// Why a filter would refuse a listener's config, naming `label` and the input rule the
/// reason quotes.
struct Refusal<'a> {
    listener: &'a Listener,
    label: &'a str,
}

impl Refusal<'_> {
    fn by(&self, filter: &str, e: &dyn std::fmt::Display) -> EmitError {
        let reason = e.to_string();
        EmitError::at_input(
            culprit(self.listener, &reason),
            format!(
                "{}: the {filter} filter would refuse this config: {reason}",
                self.label
            ),
        )
    }
}

/// The plugin configs the filters' code compiled (and read back) in the last build, by module
/// and JSON, kept by [`crate::Reuse`]: a config whose JSON compiled before is not compiled
/// again, as a filter's compilation depends on its config alone. Holds the configs of the
/// last build and of the one running, nothing older.
#[derive(Debug, Default)]
pub struct Compiled {
    last: HashMap<&'static str, HashSet<String>>,
    this: HashMap<&'static str, HashSet<String>>,
}

impl Compiled {
    /// Starts a build: what the last one compiled is what this one may reuse.
    pub fn begin(&mut self) {
        self.last = std::mem::take(&mut self.this);
    }

    fn known(&self, module: &'static str, json: &str) -> bool {
        [&self.last, &self.this]
            .iter()
            .any(|seen| seen.get(module).is_some_and(|jsons| jsons.contains(json)))
    }

    fn record(&mut self, module: &'static str, json: &str) {
        let this = self.this.entry(module).or_default();
        if this.contains(json) {
            return;
        }
        // Moved from the last build's set when it is there: a large config is not copied.
        let kept = self
            .last
            .get_mut(module)
            .and_then(|last| last.take(json))
            .unwrap_or_else(|| json.to_owned());
        this.insert(kept);
    }
}

/// The config as JSON, as the builder writes it.
fn serialized<T: serde::Serialize>(config: &T) -> Result<String, EmitError> {
    serde_json::to_string(config).map_err(|e| EmitError::internal(e.to_string()))
}

/// The config as JSON, read back with the reader the filter itself uses
/// (`sluice_core::json::from_slice`): every config the builder emits is one the filter's
/// `on_configure` reads, to the same value (so every builder test also checks that).
fn to_json<T: serde::Serialize + FromJson + PartialEq>(config: &T) -> Result<String, EmitError> {
    let json = serialized(config)?;
    read_back(config, &json)?;
    Ok(json)
}

/// Checks that the filter reads `json` back to `config` ([`to_json`]).
fn read_back<T: FromJson + PartialEq>(config: &T, json: &str) -> Result<(), EmitError> {
    match sluice_core::json::from_slice::<T>(json.as_bytes()) {
        Ok(read) if read == *config => Ok(()),
        Ok(_) => Err(EmitError::internal(format!(
            "internal error: the filter would read this config with other values: {json}"
        ))),
        Err(e) => Err(EmitError::internal(format!(
            "the filter would refuse this config: {e}: {json}"
        ))),
    }
}

/// The input rule a filter's refusal names: the origin of the listener's rule whose name the
/// reason quotes (the longest, so `a.b` wins over `a`); `None` when it names none.
fn culprit(listener: &Listener, reason: &str) -> Option<Origin> {
    listener
        .virtual_hosts
        .iter()
        .flat_map(|vh| &vh.rules)
        .filter(|r| r.origin.is_some() && reason.contains(r.name.as_str()))
        .max_by_key(|r| r.name.len())
        .and_then(|r| r.origin.clone())
}
