//! Regex work per request is bounded, through a real Envoy 1.40 and the router filter: a
//! config regex has at most 100 instructions (Envoy's default RE2 program size limit, in the
//! engine's units; `(?:.*){1000}z` is refused at configure time), and the matches of one
//! request share a step budget of one worst-case match on a maximal (60 KiB) header, after
//! which a match answers "no match" and `sluice.router.regex_budget_exceeded` counts it.
//!
//! Timing bounds here are generous (tests must not flake on a slow shared machine): they tell
//! "tens of milliseconds" from "seconds of worker CPU", nothing finer.
//!
//! Needs the module: `cargo xtask build-wasm`.

use std::time::{Duration, Instant};

use serde_json::json;
use sluice_integration::bootstrap::{Bootstrap, LISTENER_NAME};
use sluice_integration::client::{self, Request, Response};
use sluice_integration::envoy::Envoy;
use sluice_integration::upstream::Upstream;

const EXCEEDED: &str = "wasmcustom.sluice.router.regex_budget_exceeded";

/// The largest `.*` chain the limit admits: 31 copies (3 instructions each) and a 4-byte tail,
/// 98 instructions; every `.*` stays live on every byte, the worst case for the VM.
fn heavy(tail: &str) -> String {
    format!("(?:.*){{31}}{tail}")
}

fn router(rules: serde_json::Value) -> String {
    json!({"virtualHosts": [{"name": "all", "domains": ["*"], "rules": rules}]}).to_string()
}

fn send(envoy: &Envoy, request: Request) -> (Response, Duration) {
    let started = Instant::now();
    let response = client::send(&request.timeout(Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("request failed: {e:#}\n{}", envoy.log()));
    (response, started.elapsed())
}

#[test]
fn an_oversized_program_is_refused_at_configure_time() {
    let upstream = Upstream::start("backend");
    let config = router(json!([
        {"name": "evil", "match": [{"headers": {"x-big": {"regex": "(?:.*){1000}z"}}}],
         "route": {"cluster": "backend"}},
    ]));
    let bootstrap = Bootstrap::new()
        .cluster("backend", upstream.port())
        .wasm_filter("router", &config)
        .route_cluster_header()
        .render();
    let log = Envoy::start_expect_failure(&bootstrap);
    assert!(
        log.contains("more than 100 (Envoy's default RE2 program size limit"),
        "{log}"
    );
}

#[test]
fn a_maximal_header_answers_quickly_and_a_second_heavy_match_is_cut_short() {
    let (backend, fallback) = (Upstream::start("backend"), Upstream::start("fallback"));
    let config = router(json!([
        {"name": "first", "match": [{"headers": {"x-big": {"regex": heavy("zyyy")}}}],
         "route": {"cluster": "backend"}},
        {"name": "second", "match": [{"headers": {"x-big": {"regex": heavy("zyyx")}}}],
         "route": {"cluster": "backend"}},
        {"name": "rest", "route": {"cluster": "fallback"}},
    ]));
    let bootstrap = Bootstrap::new()
        .cluster("backend", backend.port())
        .cluster("fallback", fallback.port())
        .wasm_filter("router", &config)
        .route_cluster_header()
        .render();
    let envoy = Envoy::start(&bootstrap).unwrap_or_else(|e| panic!("{e:#}"));
    let port = envoy.listener_port(LISTENER_NAME);
    let body = "x".repeat(59 * 1024);

    // One worst-case match on a 59 KiB header: within the budget, answered, and quickly.
    let (r, took) = send(
        &envoy,
        Request::get(port, "/").header("x-big", format!("{body}zyyy")),
    );
    assert_eq!(r.served_by(), Some("backend"), "status {}", r.status);
    eprintln!("one worst-case match on 59 KiB: {took:?}");
    assert!(took < Duration::from_secs(1), "one match took {took:?}");
    assert_eq!(envoy.stat(EXCEEDED).unwrap_or(0), 0);

    // The first rule scans the whole header and fails; the second would match but the
    // request's budget is spent: no match, counted, logged, and the request falls through.
    let (r, took) = send(
        &envoy,
        Request::get(port, "/").header("x-big", format!("{body}zyyx")),
    );
    assert_eq!(r.served_by(), Some("fallback"), "status {}", r.status);
    eprintln!("a match and a cut-short one: {took:?}");
    assert!(took < Duration::from_secs(1), "two matches took {took:?}");
    assert_eq!(envoy.stat(EXCEEDED), Some(1));
    assert!(
        envoy
            .log()
            .contains("sluice-router: 1 regex match(es) exceeded the per-request budget"),
        "{}",
        envoy.log()
    );
    // The budget is per request: a short value on the next request matches the second rule.
    let (r, _) = send(&envoy, Request::get(port, "/").header("x-big", "zyyx"));
    assert_eq!(r.served_by(), Some("backend"));
    assert_eq!(envoy.stat(EXCEEDED), Some(1));
}
