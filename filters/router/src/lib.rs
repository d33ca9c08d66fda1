//! sluice router filter: proxy-wasm glue around [`sluice_core::router`].
//!
//! Per request it picks the first matching rule of the virtual host (Istio `HTTPMatchRequest`
//! semantics, [`sluice_core::matching`]), replaces every client copy of the internal headers
//! ([`sluice_core::wire::INTERNAL_HEADERS`]) and writes the decision to
//! `x-sluice-rule` plus `x-sluice-cluster` (a concrete cluster, which Envoy's route reads through
//! `cluster_header`) or `x-sluice-split` (for the canary filter). When nothing matches it answers
//! 404 `route not found` with `x-sluice-router: no-match`, as Istio's sidecar answers `NR`.
//!
//! Host calls go through `proxy_wasm::hostcalls` rather than the context traits, whose helpers
//! `unwrap()` host errors: a failed call here degrades (a header treated as absent, a counter not
//! bumped), it never traps the VM. Header values are read as bytes, never as `String` (the SDK's
//! String getters panic on non-UTF-8 values).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use sluice_core::metrics;
use sluice_core::router::{CompiledRouter, Destination};
use sluice_core::wire;
use sluice_glue::router::{respond_no_match, write_internal_headers};
use sluice_glue::{HostRequest, count, log};

sluice_glue::root_context!(RouterRoot);

/// Log prefix of this filter.
const FILTER: &str = sluice_core::wire::ROUTER_FILTER;

/// The configured router and the ids of its counters, shared by the worker's HTTP contexts.
struct Configured {
    router: CompiledRouter,
    /// Counter id per rule, indexed like [`CompiledRouter::rules`]; `None` if the host refused it.
    rule_matched: Vec<Option<u32>>,
    no_match: Option<u32>,
}

/// The root context: parses and compiles the plugin configuration.
#[derive(Default)]
struct RouterRoot {
    configured: Option<Rc<Configured>>,
}

impl Context for RouterRoot {}

impl RootContext for RouterRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let Some(router) =
            sluice_glue::parse_config(FILTER, plugin_configuration_size, CompiledRouter::from_json)
        else {
            return false;
        };
        // Metrics are defined here, once per configuration, never on the request path.
        let rule_matched = router
            .rules()
            .iter()
            .map(|rule| define_counter(&rule.metric_name))
            .collect();
        let no_match = define_counter(metrics::ROUTER_NO_MATCH);
        log(
            LogLevel::Info,
            &format!(
                "sluice-router: configured with {} rules",
                router.rules().len()
            ),
        );
        self.configured = Some(Rc::new(Configured {
            router,
            rule_matched,
            no_match,
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RouterHttp {
            configured: self.configured.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Per-request context.
struct RouterHttp {
    configured: Option<Rc<Configured>>,
}

impl Context for RouterHttp {}

impl HttpContext for RouterHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(configured) = &self.configured else {
            // Unreachable in Envoy (a refused configuration creates no contexts): fail closed.
            return respond_no_match(None);
        };
        // Deciding before stripping the client's internal headers is safe: no rule may match
        // on them (CompiledRouter::compile refuses it).
        let decision = configured.router.decide(&HostRequest);
        sluice_glue::report_regex_budget(FILTER);
        let Some(decision) = decision else {
            return respond_no_match(configured.no_match);
        };
        let (set, value, remove) = match decision.destination {
            Destination::Cluster(cluster) => (wire::CLUSTER_HEADER, cluster, wire::SPLIT_HEADER),
            Destination::Split(split) => (wire::SPLIT_HEADER, split, wire::CLUSTER_HEADER),
        };
        // The rule header, `set` and `remove` cover all of wire::INTERNAL_HEADERS: no client
        // picks its own destination.
        write_internal_headers(Some(decision.rule_name), (set, value), Some(remove));
        count(
            configured
                .rule_matched
                .get(decision.rule_index)
                .copied()
                .flatten(),
        );
        Action::Continue
    }
}

/// Defines one of the router's counters (a refusal is logged, and the counter skipped).
fn define_counter(name: &str) -> Option<u32> {
    sluice_glue::define(FILTER, MetricType::Counter, name)
}
