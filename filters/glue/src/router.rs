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
/// given) and `set` are written, `remove` (when given) is removed. Envoy's setCopy removes
/// every value of the name first, so with the rule header, `set` and `remove` covering all of
/// [`wire::INTERNAL_HEADERS`], no client picks its own destination. The suite passes no
/// `remove`: in its layout nothing reads the header it would remove (`x-sluice-split`, no
/// canary filter follows) and the routes strip every internal header before the upstream.
///
/// No `clear_route_cache` foreign call: these modules export `proxy_abi_version_0_2_1`
/// (proxy-wasm 0.2.5), and Envoy clears the route cache itself whenever a module of ABI 0.2.1
/// or older replaces or removes a request header (only newer ABIs must ask, per Envoy's
/// changelog). `set` is always written, so every decision re-picks the route. If a future SDK
/// raises the ABI, the routing tests through Envoy fail (`router.rs`
/// `routes_by_end_user_header_like_bookinfo` and
/// `client_cannot_pick_its_destination_with_internal_headers`, `canary.rs`, `suite.rs`):
/// the call must then come back here, once per decision.
pub fn write_internal_headers(rule: Option<&str>, set: (&str, &str), remove: Option<&str>) {
    const _: () = assert!(
        wire::INTERNAL_HEADERS.len() == 3,
        "strip the new internal header"
    );
    let headers = MapType::HttpRequestHeaders;
    if let Some(rule) = rule {
        let _ = hostcalls::set_map_value(headers, wire::RULE_HEADER, Some(rule));
    }
    let _ = hostcalls::set_map_value(headers, set.0, Some(set.1));
    if let Some(remove) = remove {
        let _ = hostcalls::remove_map_value(headers, remove);
    }
}
