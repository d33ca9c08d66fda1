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

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};
use sluice_core::metrics;
use sluice_core::router::{CompiledRouter, Destination};
use sluice_core::wire;
use sluice_glue::{HostRequest, log};

/// The module's entry point. Private: the SDK's `_initialize` export is found by Envoy through
/// its `#[no_mangle]` symbol, not through Rust visibility.
mod entry {
    use super::{LogLevel, RootContext, RouterRoot};

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(RouterRoot::default()) });
    }}
}

/// Log prefix of this filter.
const FILTER: &str = "sluice-router";
/// Body of the 404 sent when no rule matches.
const NO_MATCH_BODY: &[u8] = b"route not found";
/// Response header marking a 404 as the router's (vs. an upstream's).
const NO_MATCH_HEADER: (&str, &str) = ("x-sluice-router", "no-match");

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
        let Some(json) = sluice_glue::plugin_config(FILTER, plugin_configuration_size) else {
            return false;
        };
        let router = match CompiledRouter::from_json(&json) {
            Ok(router) => router,
            Err(reason) => {
                log(LogLevel::Error, &format!("sluice-router: {reason}"));
                return false;
            }
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
        let Some(decision) = configured.router.decide(&HostRequest) else {
            return respond_no_match(configured.no_match);
        };
        let (set, value, remove) = match decision.destination {
            Destination::Cluster(cluster) => (wire::CLUSTER_HEADER, cluster, wire::SPLIT_HEADER),
            Destination::Split(split) => (wire::SPLIT_HEADER, split, wire::CLUSTER_HEADER),
        };
        // Replacing drops every client-sent copy (Envoy's setCopy removes all values of the
        // name first); the third internal header is removed. Three host calls cover all of
        // wire::INTERNAL_HEADERS, so no client picks its own destination.
        const _: () = assert!(
            wire::INTERNAL_HEADERS.len() == 3,
            "strip the new internal header"
        );
        let headers = MapType::HttpRequestHeaders;
        let _ = hostcalls::set_map_value(headers, wire::RULE_HEADER, Some(decision.rule_name));
        let _ = hostcalls::set_map_value(headers, set, Some(value));
        let _ = hostcalls::remove_map_value(headers, remove);
        // ABI 0.2.1 modules (this SDK) already make Envoy re-pick the route when headers change;
        // newer ABIs need this explicit call. Hosts without it answer NotFound: nothing to do.
        let _ = hostcalls::call_foreign_function("clear_route_cache", None);
        if let Some(Some(id)) = configured.rule_matched.get(decision.rule_index) {
            let _ = hostcalls::increment_metric(*id, 1);
        }
        Action::Continue
    }
}

/// Answers 404 like Istio's "no route" and stops the filter chain.
fn respond_no_match(counter: Option<u32>) -> Action {
    if let Some(id) = counter {
        let _ = hostcalls::increment_metric(id, 1);
    }
    let _ = hostcalls::send_http_response(
        404,
        vec![NO_MATCH_HEADER, ("content-type", "text/plain")],
        Some(NO_MATCH_BODY),
    );
    Action::Pause
}

/// Defines one of the router's counters (a refusal is logged, and the counter skipped).
fn define_counter(name: &str) -> Option<u32> {
    sluice_glue::define(FILTER, MetricType::Counter, name)
}
