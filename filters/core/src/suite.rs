//! The suite module's plugin config: router, canary, fault and breaker in one proxy-wasm filter.
//!
//! A [`SuiteConfig`] nests the four standalone filters' configs unchanged, so moving from the
//! four-filter chain to the one-module suite is a matter of nesting them:
//!
//! ```json
//! {"router":  {"virtualHosts": [...]},
//!  "canary":  {"afterRouter": true, "splits": [...]},
//!  "fault":   {"afterRouter": true, "faults": [...]},
//!  "breaker": {"afterRouter": true, "breakers": [...]}}
//! ```
//!
//! Only `router` is required. The sections are exactly the chain's configs, which already say
//! `"afterRouter": true`: in the suite the router section always decides the rule and the
//! split, so a section with `afterRouter: false` (which would evaluate rules of its own, or
//! read Envoy's route) is refused rather than silently reinterpreted.
//!
//! [`SuiteConfig::compile`] compiles each section with its filter's own compiler (errors are
//! prefixed by the section: `fault: faults[0] (rule "slow"): delay.fixedDelay: ...`) and then
//! links them once, so that per request nothing is looked up by name: each router rule knows
//! its canary split ([`Target::Split`]) and its fault rule ([`Route::fault_rule`]).
//! Cross-checks, which the chain could only discover per request:
//!
//! - a rule routing to a split with no `canary` section, or to a split the canary section does
//!   not define, is an error (the chain answers such requests 503 `unknown-split`);
//! - a canary split no rule routes to, and a fault naming no router rule, are warnings (legal,
//!   but that part of the config never applies; the chain behaves the same).
//!
//! What the module decides at run time without the host lives here too, rather than in the
//! cdylib: [`CompiledSuite::housekeeping_period`] and the worker's one [`timer::Timer`].

pub mod debug;
pub mod timer;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::breaker::{BreakerConfig, CompiledBreakers};
use crate::canary::{CanaryConfig, CompiledCanary};
use crate::fault::{FaultConfig, FaultPlan};
use crate::host::RequestView;
use crate::router::{CompiledRouter, Destination, RouterConfig};
use debug::{CompiledDebug, DebugConfig};

/// The suite module's plugin configuration: the four filters' configs, nested.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SuiteConfig {
    /// The router filter's config ([`RouterConfig`]): virtual hosts and their rules.
    pub router: RouterConfig,
    /// The canary filter's config ([`CanaryConfig`], `afterRouter: true`): the splits the
    /// router's rules name. Required as soon as a rule routes to a split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryConfig>,
    /// The fault filter's config ([`FaultConfig`], `afterRouter: true`): faults keyed by the
    /// router's rule names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultConfig>,
    /// The breaker filter's config ([`BreakerConfig`], `afterRouter: true`): breakers keyed by
    /// the cluster the router or canary chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerConfig>,
    /// Who may ask for an `x-sluice-explain` response header, and the rules' source positions
    /// ([`DebugConfig`]). Absent: no request is explained and none pays for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug: Option<DebugConfig>,
}

/// Where a matched rule sends the request, resolved at configure time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// This Envoy cluster.
    Cluster(&'a str),
    /// The canary split at this index of [`CompiledCanary::splits`] picks the cluster.
    Split(usize),
}

/// The router's decision for one request, linked to the other sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    /// Index into [`CompiledRouter::rules`] (the per-rule counter).
    pub rule_index: usize,
    /// The rule's name, sent to Envoy in `x-sluice-rule` (per-rule route settings).
    pub rule_name: &'a str,
    /// Where the request goes.
    pub target: Target<'a>,
    /// Index into [`FaultPlan::rules`] of this rule's fault, if it has one.
    pub fault_rule: Option<usize>,
}

/// Per router rule, what compile-time linking found.
#[derive(Debug, Clone, Copy)]
struct Link {
    split: Option<usize>,
    fault: Option<usize>,
}

/// A validated, linked [`SuiteConfig`].
#[derive(Debug, Clone)]
pub struct CompiledSuite {
    /// The router section, compiled.
    pub router: CompiledRouter,
    /// The canary section, compiled (`None` without splits).
    pub canary: Option<CompiledCanary>,
    /// The fault section, compiled.
    pub fault: Option<FaultPlan>,
    /// The breaker section, compiled.
    pub breaker: Option<CompiledBreakers>,
    /// The debug section, compiled.
    pub debug: Option<CompiledDebug>,
    /// Indexed like [`CompiledRouter::rules`].
    links: Vec<Link>,
    warnings: Vec<String>,
}

impl SuiteConfig {
    /// Parses the plugin configuration JSON (without compiling it).
    pub fn from_json(json: &[u8]) -> Result<Self, String> {
        crate::json::from_slice(json).map_err(|e| format!("invalid suite config: {e}"))
    }

    /// Validates every section with its filter's own rules, then links them (see the module
    /// docs). Errors start with the section: `router: `, `canary: `, `fault: ` or `breaker: `.
    pub fn compile(&self) -> Result<CompiledSuite, String> {
        let router = CompiledRouter::compile(&self.router).map_err(|e| format!("router: {e}"))?;
        // `match`es rather than `map(..).transpose()`: the closures and their Result<Option<_>>
        // moves cost the module a few hundred bytes.
        let canary = match &self.canary {
            Some(config) => {
                require_after_router("canary", config.after_router)?;
                Some(CompiledCanary::compile(config).map_err(|e| format!("canary: {e}"))?)
            }
            None => None,
        };
        let mut warnings = Vec::new();
        let fault = match &self.fault {
            Some(config) => {
                require_after_router("fault", config.after_router)?;
                warnings.extend(config.warnings().into_iter().map(|w| format!("fault: {w}")));
                Some(FaultPlan::compile(config).map_err(|e| format!("fault: {e}"))?)
            }
            None => None,
        };
        let breaker = match &self.breaker {
            Some(config) => {
                require_after_router("breaker", config.after_router)?;
                if let Some(header) = &config.cluster_header {
                    return Err(format!(
                        "breaker: clusterHeader {header:?} is not read by the suite, which knows \
                         the cluster it chose: remove it"
                    ));
                }
                Some(config.compile().map_err(|e| format!("breaker: {}", e.0))?)
            }
            None => None,
        };

        // Its errors start with `debug: ` already.
        let debug = match &self.debug {
            Some(config) => Some(config.compile(router.rules().len())?),
            None => None,
        };

        let mut links = Vec::with_capacity(router.rules().len());
        let mut split_used = vec![false; canary.as_ref().map_or(0, |c| c.splits.len())];
        for rule in router.rules() {
            let split = match &rule.destination {
                Destination::Cluster(_) => None,
                Destination::Split(name) => {
                    let Some(canary) = &canary else {
                        return Err(format!(
                            "router: rule {:?} routes to split {name:?} but there is no canary \
                             section to resolve it: add \"canary\": {{\"afterRouter\": true, \
                             \"splits\": [...]}}",
                            rule.name
                        ));
                    };
                    let index = canary.split_index(name.as_bytes()).ok_or_else(|| {
                        format!(
                            "canary: no split named {name:?}, which router rule {:?} routes to \
                             (known: {})",
                            rule.name,
                            split_names(canary)
                        )
                    })?;
                    if let Some(used) = split_used.get_mut(index) {
                        *used = true;
                    }
                    Some(index)
                }
            };
            let fault = fault.as_ref().and_then(|plan| {
                plan.rules()
                    .iter()
                    .position(|fault| fault.name == rule.name)
            });
            links.push(Link { split, fault });
        }
        if let Some(canary) = &canary {
            for (split, used) in canary.splits.iter().zip(&split_used) {
                if !used {
                    warnings.push(format!(
                        "canary: split {:?} is not routed to by any router rule, so it never \
                         applies",
                        split.name
                    ));
                }
            }
        }
        if let Some(plan) = &fault {
            for fault in plan.rules() {
                if !router.rules().iter().any(|rule| rule.name == fault.name) {
                    warnings.push(format!(
                        "fault: the fault of rule {:?} names no router rule, so it never applies",
                        fault.name
                    ));
                }
            }
        }
        Ok(CompiledSuite {
            router,
            canary,
            fault,
            breaker,
            debug,
            links,
            warnings,
        })
    }
}

fn require_after_router(section: &str, after_router: bool) -> Result<(), String> {
    if after_router {
        Ok(())
    } else {
        Err(format!(
            "{section}: afterRouter must be true in the suite (its router section decides the \
             rule and split; the section is the chained filter's config)"
        ))
    }
}

fn split_names(canary: &CompiledCanary) -> String {
    crate::canary::quoted_names(&mut canary.splits.iter().map(|s| s.name.as_str()))
}

impl CompiledSuite {
    /// Parses, validates and links the plugin configuration JSON: what the suite module's
    /// `on_configure` runs, and what the builder runs on what it emits.
    pub fn from_json(json: &[u8]) -> Result<Self, String> {
        SuiteConfig::from_json(json)?.compile()
    }

    /// Legal but probably unintended settings, for the module to log as warnings.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Routes one request: the first matching rule of its virtual host, linked to its split
    /// and fault. `None` when nothing matches (the module answers 404, as the router filter).
    pub fn route(&self, req: &impl RequestView) -> Option<Route<'_>> {
        let decision = self.router.decide(req)?;
        let link = self.links.get(decision.rule_index)?;
        let target = match (decision.destination, link.split) {
            (Destination::Cluster(cluster), _) => Target::Cluster(cluster),
            (Destination::Split(_), Some(index)) => Target::Split(index),
            // compile() links every split rule or fails.
            (Destination::Split(_), None) => return None,
        };
        Some(Route {
            rule_index: decision.rule_index,
            rule_name: decision.rule_name,
            target,
            fault_rule: link.fault,
        })
    }

    /// The period of the worker's housekeeping: breaker gauges every
    /// [`timer::GAUGE_REFRESH`], canary schedules at their own pace, whichever is shorter;
    /// `None` when there is neither.
    pub fn housekeeping_period(&self) -> Option<Duration> {
        [
            self.breaker.as_ref().map(|_| timer::GAUGE_REFRESH),
            self.canary
                .as_ref()
                .and_then(crate::canary::schedule_period),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MockHost;

    const ROUTER: &str = r#"{"virtualHosts": [{"name": "shop", "domains": ["shop"], "rules": [
        {"name": "testers", "match": [{"headers": {"x-tester": {"exact": "yes"}}}],
         "route": {"cluster": "v2"}},
        {"name": "broken", "match": [{"headers": {"x-fault": {"exact": "abort"}}}],
         "route": {"cluster": "v1"}},
        {"name": "rollout", "route": {"split": "rollout"}}]}]}"#;
    const CANARY: &str = r#"{"afterRouter": true, "splits": [{"name": "rollout", "members": [
        {"cluster": "v1", "weight": 90}, {"cluster": "v2", "weight": 10}]}]}"#;
    const FAULT: &str = r#"{"afterRouter": true, "faults": [{"rule": "broken",
        "abort": {"httpStatus": 555, "percentage": {"value": 100}}}]}"#;
    const BREAKER: &str =
        r#"{"afterRouter": true, "breakers": [{"cluster": "v2", "consecutiveErrors": 3}]}"#;

    fn suite(
        router: &str,
        canary: Option<&str>,
        fault: Option<&str>,
        breaker: Option<&str>,
    ) -> String {
        let mut json = format!(r#"{{"router": {router}"#);
        for (name, section) in [("canary", canary), ("fault", fault), ("breaker", breaker)] {
            if let Some(section) = section {
                json.push_str(&format!(r#", "{name}": {section}"#));
            }
        }
        json.push('}');
        json
    }

    fn compile(json: &str) -> Result<CompiledSuite, String> {
        CompiledSuite::from_json(json.as_bytes())
    }

    #[test]
    fn links_rules_to_their_split_and_fault() {
        let suite = compile(&suite(ROUTER, Some(CANARY), Some(FAULT), Some(BREAKER))).unwrap();
        assert!(suite.warnings().is_empty(), "{:?}", suite.warnings());
        let get = |host: MockHost| {
            suite
                .route(&host)
                .map(|r| (r.rule_name, r.target, r.fault_rule))
        };
        assert_eq!(
            get(MockHost::request("GET", "shop", "/").with("x-tester", "yes")),
            Some(("testers", Target::Cluster("v2"), None))
        );
        assert_eq!(
            get(MockHost::request("GET", "shop", "/").with("x-fault", "abort")),
            Some(("broken", Target::Cluster("v1"), Some(0)))
        );
        assert_eq!(
            get(MockHost::request("GET", "shop", "/")),
            Some(("rollout", Target::Split(0), None))
        );
        assert_eq!(get(MockHost::request("GET", "elsewhere", "/")), None);
        assert!(suite.breaker.unwrap().policy_for("v2").is_some());
    }

    #[test]
    fn housekeeping_runs_for_breakers_and_schedules_at_the_shorter_period() {
        let period = |canary: Option<&str>, breaker: Option<&str>| {
            compile(&suite(ROUTER, canary, None, breaker))
                .unwrap()
                .housekeeping_period()
        };
        assert_eq!(period(Some(CANARY), None), None);
        assert_eq!(
            period(Some(CANARY), Some(BREAKER)),
            Some(timer::GAUGE_REFRESH)
        );
        // A 1 s hold is checked every 250 ms, sooner than the gauges.
        let scheduled = r#"{"afterRouter": true, "splits": [{"name": "rollout", "members": [
            {"cluster": "v1"}, {"cluster": "v2"}], "schedule": {"steps": [
            {"weights": [90, 10], "hold": "1s"}, {"weights": [50, 50], "hold": "1s"}]}}]}"#;
        let quarter = Some(Duration::from_millis(250));
        assert_eq!(period(Some(scheduled), None), quarter);
        assert_eq!(period(Some(scheduled), Some(BREAKER)), quarter);
    }

    #[test]
    fn sections_serialize_exactly_as_the_standalone_configs() {
        let config =
            SuiteConfig::from_json(suite(ROUTER, Some(CANARY), Some(FAULT), None).as_bytes())
                .unwrap();
        let value = serde_json::to_value(&config).unwrap();
        let alone: CanaryConfig = serde_json::from_str(CANARY).unwrap();
        assert_eq!(value["canary"], serde_json::to_value(&alone).unwrap());
        assert!(
            value.get("breaker").is_none(),
            "absent sections are skipped"
        );
        let back: SuiteConfig = serde_json::from_value(value).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn only_the_router_is_required() {
        let router = r#"{"virtualHosts": [{"name": "a", "domains": ["*"], "rules": [
            {"name": "all", "route": {"cluster": "c"}}]}]}"#;
        let suite = compile(&suite(router, None, None, None)).unwrap();
        assert!(suite.canary.is_none() && suite.fault.is_none() && suite.breaker.is_none());
        let route = suite.route(&MockHost::request("GET", "x", "/")).unwrap();
        assert_eq!(route.target, Target::Cluster("c"));
    }

    #[test]
    fn a_split_without_a_canary_section_is_refused() {
        let err = compile(&suite(ROUTER, None, None, None)).unwrap_err();
        assert!(
            err.starts_with("router: rule \"rollout\" routes to split \"rollout\""),
            "{err}"
        );
        assert!(err.contains("no canary section"), "{err}");
    }

    #[test]
    fn a_split_the_canary_does_not_define_is_refused() {
        let canary = r#"{"afterRouter": true, "splits": [{"name": "other", "members": [
            {"cluster": "v1", "weight": 100}]}]}"#;
        let err = compile(&suite(ROUTER, Some(canary), None, None)).unwrap_err();
        assert_eq!(
            err,
            "canary: no split named \"rollout\", which router rule \"rollout\" routes to \
             (known: \"other\")"
        );
    }

    #[test]
    fn unused_splits_and_faults_of_unknown_rules_are_warnings() {
        let canary = r#"{"afterRouter": true, "splits": [
            {"name": "rollout", "members": [{"cluster": "v1", "weight": 100}]},
            {"name": "spare", "members": [{"cluster": "v1", "weight": 100}]}]}"#;
        let fault = r#"{"afterRouter": true, "faults": [{"rule": "ghost",
            "delay": {"fixedDelay": "1s", "percentage": {"value": 100}}}]}"#;
        let suite = compile(&suite(ROUTER, Some(canary), Some(fault), None)).unwrap();
        assert_eq!(suite.warnings().len(), 2, "{:?}", suite.warnings());
        assert!(suite.warnings()[0].starts_with("canary: split \"spare\""));
        assert!(suite.warnings()[1].starts_with("fault: the fault of rule \"ghost\""));
    }

    #[test]
    fn section_errors_name_the_section() {
        let bad_fault = r#"{"afterRouter": true, "faults": [{"rule": "broken",
            "abort": {"httpStatus": 99, "percentage": {"value": 100}}}]}"#;
        let err = compile(&suite(ROUTER, Some(CANARY), Some(bad_fault), None)).unwrap_err();
        assert!(
            err.starts_with("fault: faults[0] (rule \"broken\"): abort."),
            "{err}"
        );

        let bad_breaker = r#"{"afterRouter": true, "breakers": []}"#;
        let err = compile(&suite(ROUTER, Some(CANARY), None, Some(bad_breaker))).unwrap_err();
        assert!(err.starts_with("breaker: no breakers"), "{err}");

        let bad_canary = r#"{"afterRouter": true, "splits": [{"name": "rollout", "members": [
            {"cluster": "v1", "weight": 1}]}, {"name": "rollout", "members": [
            {"cluster": "v1", "weight": 1}]}]}"#;
        let err = compile(&suite(ROUTER, Some(bad_canary), None, None)).unwrap_err();
        assert!(err.starts_with("canary: splits[1]"), "{err}");

        let bad_router = r#"{"virtualHosts": []}"#;
        let err = compile(&suite(bad_router, None, None, None)).unwrap_err();
        assert!(err.starts_with("router: "), "{err}");
    }

    #[test]
    fn sections_must_be_the_chained_configs() {
        let alone =
            r#"{"splits": [{"name": "rollout", "members": [{"cluster": "v1", "weight": 1}]}]}"#;
        let err = compile(&suite(ROUTER, Some(alone), None, None)).unwrap_err();
        assert!(err.starts_with("canary: afterRouter must be true"), "{err}");
        let err = compile(&suite(
            ROUTER,
            Some(CANARY),
            Some(r#"{"faults": []}"#),
            None,
        ))
        .unwrap_err();
        assert!(err.starts_with("fault: afterRouter must be true"), "{err}");
        let header =
            r#"{"afterRouter": true, "clusterHeader": "x-c", "default": {"consecutiveErrors": 3}}"#;
        let err = compile(&suite(ROUTER, Some(CANARY), None, Some(header))).unwrap_err();
        assert!(err.starts_with("breaker: clusterHeader \"x-c\""), "{err}");
    }

    #[test]
    fn the_debug_section_is_checked_against_the_router_rules() {
        let with_debug = |debug: &str| {
            let mut json = suite(ROUTER, Some(CANARY), None, None);
            json.pop();
            compile(&format!(r#"{json}, "debug": {debug}}}"#))
        };
        let ok = with_debug(
            r#"{"header": "x-sluice-debug", "secret": "0123456789abcdef",
                "positions": ["vs.yaml:1:1", "vs.yaml:2:1", "vs.yaml:3:1"]}"#,
        )
        .unwrap();
        let debug = ok.debug.as_ref().unwrap();
        assert_eq!(debug.position(2), Some("vs.yaml:3:1"));
        let err = with_debug(
            r#"{"header": "x-sluice-debug", "secret": "0123456789abcdef",
                "positions": ["vs.yaml:1:1"]}"#,
        )
        .unwrap_err();
        assert!(
            err.starts_with("debug: positions: 1 given for 3 router rules"),
            "{err}"
        );
        let err = with_debug(r#"{"header": "x-sluice-debug"}"#).unwrap_err();
        assert!(err.starts_with("debug: needs a secret"), "{err}");
        assert!(
            compile(&suite(ROUTER, Some(CANARY), None, None))
                .unwrap()
                .debug
                .is_none()
        );
    }

    #[test]
    fn unknown_sections_and_fields_are_refused() {
        let err = compile(&format!(r#"{{"router": {ROUTER}, "canaries": {{}}}}"#)).unwrap_err();
        assert!(
            err.starts_with("invalid suite config: unknown field `canaries`"),
            "{err}"
        );
        let err = compile(r#"{"canary": {"afterRouter": true, "splits": []}}"#).unwrap_err();
        assert!(err.contains("missing field `router`"), "{err}");
    }
}
