//! The router's replies and header writes, shared by the router filter and the suite.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, MapType};
use sluice_core::wire;

use crate::count;

/// Body of the 404 sent when no rule matches.
const NO_MATCH_BODY: &[u8] = b"route not found";
/// Response header marking a 404 as the router's (vs. an upstream's).
const NO_MATCH_HEADER: (&str, &str) = ("x-sluice-router", "no-match");

/// Answers 404 like Istio's "no route" (`NR`), counts it, and stops the filter chain.
pub fn respond_no_match(counter: Option<u32>) -> Action {
    count(counter);
    let _ = hostcalls::send_http_response(
        404,
        vec![NO_MATCH_HEADER, ("content-type", "text/plain")],
        Some(NO_MATCH_BODY),
    );
    Action::Pause
}

/// Replaces every client copy of the internal headers with a decision: `x-sluice-rule` (when
/// given) and `set` are written, `remove` is removed, and the route cache cleared. Envoy's
/// setCopy removes every value of the name first, so with the rule header, `set` and `remove`
/// covering all of [`wire::INTERNAL_HEADERS`], no client picks its own destination.
pub fn write_internal_headers(rule: Option<&str>, set: (&str, &str), remove: &str) {
    const _: () = assert!(
        wire::INTERNAL_HEADERS.len() == 3,
        "strip the new internal header"
    );
    let headers = MapType::HttpRequestHeaders;
    if let Some(rule) = rule {
        let _ = hostcalls::set_map_value(headers, wire::RULE_HEADER, Some(rule));
    }
    let _ = hostcalls::set_map_value(headers, set.0, Some(set.1));
    let _ = hostcalls::remove_map_value(headers, remove);
    crate::clear_route_cache();
}
