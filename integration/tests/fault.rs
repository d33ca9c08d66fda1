//! The fault filter through a real Envoy 1.40 (two workers unless a test needs one): Istio
//! percentages (counts inside exact binomial bounds, p < 1e-6), timer-driven delays (latency
//! at least the delay, many concurrent delays, body held back, client disconnects cleaned up),
//! HTTP and gRPC aborts, trusted-only fault headers, the per-worker cap, debug header, config
//! rejection, and the router in front (`afterRouter`).
//!
//! Needs the modules: `cargo build --release --target wasm32-wasip1 -p sluice-fault -p sluice-router`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_integration::binomial;
use sluice_integration::bootstrap::{Bootstrap, LISTENER_NAME};
use sluice_integration::client::{self, NO_HEADERS, Request, Response};
use sluice_integration::envoy::{Envoy, EnvoyOptions};
use sluice_integration::upstream::Upstream;

const ACTIVE_FAULTS: &str = "wasmcustom.sluice.fault.active_faults";

fn rule_stat(rule: &str, what: &str) -> String {
    format!("wasmcustom.sluice.fault.rule.{rule}.{what}")
}

/// Envoy with the fault filter alone in front of one upstream, `backend`.
fn fault_envoy(upstream: &Upstream, config: &Value) -> Envoy {
    fault_envoy_with(upstream, config, 2)
}

fn fault_envoy_with(upstream: &Upstream, config: &Value, concurrency: u32) -> Envoy {
    let yaml = Bootstrap::new()
        .cluster("backend", upstream.port())
        .wasm_filter("fault", &config.to_string())
        .route_to_cluster("backend")
        .without_access_log()
        .render();
    Envoy::start_with(EnvoyOptions {
        config_yaml: yaml,
        concurrency,
        ..EnvoyOptions::default()
    })
    .unwrap()
}

fn one_rule(fault: Value) -> Value {
    let mut rule = json!({"rule": "r"});
    if let (Some(obj), Some(extra)) = (rule.as_object_mut(), fault.as_object()) {
        obj.extend(extra.clone());
    }
    json!({"faults": [rule]})
}

fn send(envoy: &Envoy, request: &Request) -> Response {
    client::send(request).unwrap_or_else(|e| panic!("request failed: {e:#}\n{}", envoy.log()))
}

/// Sends `n` GETs with `parallelism` in flight; every one must complete.
fn get_n(envoy: &Envoy, n: usize, parallelism: usize) -> Vec<Response> {
    let port = envoy.listener_port(LISTENER_NAME);
    client::send_many(vec![Request::get(port, "/"); n], parallelism)
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("request failed: {e:#}\n{}", envoy.log())))
        .collect()
}

/// Aborts at `percentage`: the count of 503s is inside the exact binomial bounds and equals
/// the filter's own counter.
fn assert_abort_rate(percentage: f64, n: usize, parallelism: usize) {
    let upstream = Upstream::start("backend");
    let envoy = fault_envoy(
        &upstream,
        &one_rule(json!({"abort": {"httpStatus": 503, "percentage": {"value": percentage}}})),
    );
    let responses = get_n(&envoy, n, parallelism);
    let aborted = responses.iter().filter(|r| r.status == 503).count() as u64;
    let served = responses.iter().filter(|r| r.status == 200).count() as u64;
    assert_eq!(
        aborted + served,
        n as u64,
        "{:?}",
        client::status_counts(&responses)
    );
    for r in responses.iter().filter(|r| r.status == 503) {
        assert_eq!(r.text(), "fault filter abort");
        assert_eq!(r.served_by(), None);
        assert_eq!(
            r.header("x-sluice-fault"),
            None,
            "debug header is off by default"
        );
    }
    binomial::assert_plausible(
        &format!("aborts at {percentage}%"),
        aborted,
        n as u64,
        percentage / 100.0,
    );
    assert_eq!(
        envoy.stat(&rule_stat("r", "aborts_injected")),
        Some(aborted)
    );
    assert_eq!(upstream.request_count() as u64, served);
}

#[test]
fn abort_at_100_percent_answers_every_request_itself() {
    assert_abort_rate(100.0, 300, 16);
}

#[test]
fn abort_at_25_percent_is_inside_binomial_bounds() {
    assert_abort_rate(25.0, 4_000, 32);
}

#[test]
fn abort_at_a_tenth_of_a_percent_is_honoured_exactly() {
    // 20,000 requests: ~20 expected; the bounds exclude both 0% and 0.3%.
    let (low, high) = binomial::bounds(20_000, 0.001);
    assert!(
        low > 0 && high < 60,
        "bounds {low}..{high} must be meaningful"
    );
    assert_abort_rate(0.1, 20_000, 48);
}

#[test]
fn absent_percentage_injects_nothing_as_in_istio() {
    let upstream = Upstream::start("backend");
    let envoy = fault_envoy(&upstream, &one_rule(json!({"abort": {"httpStatus": 503}})));
    let responses = get_n(&envoy, 200, 16);
    assert!(responses.iter().all(|r| r.status == 200));
    assert!(
        envoy.log().contains("abort has no percentage"),
        "{}",
        envoy.log()
    );
}

/// Delay accuracy: each request takes at least the delay; the overhead above it is printed
/// (the report's figures) and bounded generously for a shared 2-core machine.
#[test]
fn delay_holds_each_request_at_least_the_delay() {
    let upstream = Upstream::start("backend");
    let delay = Duration::from_millis(200);
    let envoy = fault_envoy(
        &upstream,
        &one_rule(json!({"match": [{"uri": {"prefix": "/slow"}}],
            "delay": {"fixedDelay": "200ms", "percentage": {"value": 100}}})),
    );
    let port = envoy.listener_port(LISTENER_NAME);
    // Baseline: the proxy's own latency on an unfaulted path, to isolate the timer's share.
    let mut baseline: Vec<Duration> = (0..30)
        .map(|_| {
            let started = Instant::now();
            assert_eq!(send(&envoy, &Request::get(port, "/fast")).status, 200);
            started.elapsed()
        })
        .collect();
    baseline.sort();
    let mut overheads = Vec::new();
    for _ in 0..30 {
        let started = Instant::now();
        let response = send(&envoy, &Request::get(port, "/slow"));
        let elapsed = started.elapsed();
        assert_eq!(response.status, 200);
        assert_eq!(response.served_by(), Some("backend"));
        assert!(
            elapsed >= delay,
            "answered after {elapsed:?}, before the 200ms delay"
        );
        assert!(
            elapsed < delay + Duration::from_secs(2),
            "answered after {elapsed:?}"
        );
        overheads.push(elapsed - delay);
    }
    overheads.sort();
    eprintln!(
        "delay accuracy (200ms, 30 sequential requests): latency above the delay min {:?}, p50 {:?}, p90 {:?}, max {:?}; unfaulted baseline p50 {:?}",
        overheads[0],
        overheads[overheads.len() / 2],
        overheads[overheads.len() * 9 / 10],
        overheads[overheads.len() - 1],
        baseline[baseline.len() / 2],
    );
    assert_eq!(envoy.stat(&rule_stat("r", "delays_injected")), Some(30));
    envoy
        .wait_for_stat(ACTIVE_FAULTS, |v| v == 0, Duration::from_secs(5))
        .unwrap();
}

#[test]
fn two_hundred_concurrent_delays_all_complete() {
    let upstream = Upstream::start("backend");
    let envoy = fault_envoy(
        &upstream,
        &one_rule(json!({"delay": {"fixedDelay": "500ms", "percentage": {"value": 100}}})),
    );
    let port = envoy.listener_port(LISTENER_NAME);
    let started = Instant::now();
    let results = client::send_many(vec![Request::get(port, "/"); 200], 200);
    let elapsed = started.elapsed();
    let ok = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.status == 200))
        .count();
    assert_eq!(ok, 200, "{}", envoy.log());
    assert!(elapsed >= Duration::from_millis(500));
    // All 200 wait together: far less than 200 sequential delays (100 s).
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    eprintln!("200 concurrent 500ms delays completed in {elapsed:?}");
    assert_eq!(envoy.stat(&rule_stat("r", "delays_injected")), Some(200));
    assert_eq!(upstream.request_count(), 200);
    envoy
        .wait_for_stat(ACTIVE_FAULTS, |v| v == 0, Duration::from_secs(5))
        .unwrap();
}

#[test]
fn client_disconnect_during_delay_leaves_nothing_behind() {
    let upstream = Upstream::start("backend");
    let envoy = fault_envoy(
        &upstream,
        &one_rule(json!({"delay": {"fixedDelay": "3s", "percentage": {"value": 100}}})),
    );
    let port = envoy.listener_port(LISTENER_NAME);
    let started = Instant::now();
    let requests = vec![Request::get(port, "/").timeout(Duration::from_millis(300)); 20];
    let results = client::send_many(requests, 20);
    assert!(
        results.iter().all(Result::is_err),
        "the clients must give up"
    );
    // Disconnected streams free their slots at once, long before the delay would end.
    envoy
        .wait_for_stat(ACTIVE_FAULTS, |v| v == 0, Duration::from_millis(2_000))
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    // And no forgotten stream is resumed to the upstream when the deadline passes.
    std::thread::sleep(Duration::from_millis(3_500).saturating_sub(started.elapsed()));
    assert_eq!(upstream.request_count(), 0);
    // The filter still works afterwards (the timer was not left in a bad state).
    let response = send(
        &envoy,
        &Request::get(port, "/").timeout(Duration::from_secs(10)),
    );
    assert_eq!(response.status, 200);
}

#[test]
fn request_body_is_held_until_the_delay_ends() {
    let upstream = Upstream::start("backend");
    let envoy = fault_envoy(
        &upstream,
        &one_rule(json!({"delay": {"fixedDelay": "300ms", "percentage": {"value": 100}}})),
    );
    let port = envoy.listener_port(LISTENER_NAME);
    let body = vec![b'x'; 64 * 1024];
    let started = Instant::now();
    let response = send(
        &envoy,
        &Request::new("POST", port, "/upload").body(body.clone()),
    );
    assert_eq!(response.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.len(), body.len());
}

#[test]
fn delay_then_abort_when_both_fire() {
    let upstream = Upstream::start("backend");
    let envoy = fault_envoy(
        &upstream,
        &json!({"debugHeader": true, "faults": [{"rule": "r",
            "delay": {"fixedDelay": "250ms", "percentage": {"value": 100}},
            "abort": {"httpStatus": 429, "percentage": {"value": 100}}}]}),
    );
    let port = envoy.listener_port(LISTENER_NAME);
    let started = Instant::now();
    let response = send(&envoy, &Request::get(port, "/"));
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(response.status, 429);
    assert_eq!(
        response.header_str("x-sluice-fault"),
        Some("delay=250ms, abort=429")
    );
    assert_eq!(upstream.request_count(), 0);
    assert_eq!(envoy.stat(&rule_stat("r", "aborts_injected")), Some(1));
    assert_eq!(envoy.stat(&rule_stat("r", "delays_injected")), Some(1));
}

#[test]
fn debug_header_names_the_fault_only_when_enabled() {
    let upstream = Upstream::start("backend");
    let envoy = fault_envoy(
        &upstream,
        &json!({"debugHeader": true, "faults": [
            {"rule": "slow", "match": [{"uri": {"prefix": "/slow"}}],
             "delay": {"fixedDelay": "50ms", "percentage": {"value": 100}}},
            {"rule": "broken", "match": [{"uri": {"prefix": "/broken"}}],
             "abort": {"httpStatus": 503, "percentage": {"value": 100}}}
        ]}),
    );
    let port = envoy.listener_port(LISTENER_NAME);
    let slow = send(&envoy, &Request::get(port, "/slow"));
    assert_eq!(slow.served_by(), Some("backend"));
    assert_eq!(slow.header_str("x-sluice-fault"), Some("delay=50ms"));
    let broken = send(&envoy, &Request::get(port, "/broken"));
    assert_eq!(broken.status, 503);
    assert_eq!(broken.header_str("x-sluice-fault"), Some("abort=503"));
    let plain = send(&envoy, &Request::get(port, "/other"));
    assert_eq!(plain.served_by(), Some("backend"));
    assert_eq!(plain.header("x-sluice-fault"), None);
}

#[test]
fn grpc_aborts_reach_a_grpc_client_as_a_status() {
    let upstream = Upstream::start("backend");
    let yaml = Bootstrap::new()
        .cluster_h2("backend", upstream.port())
        .wasm_filter(
            "fault",
            &json!({"faults": [
                {"rule": "grpc-named", "match": [{"uri": {"prefix": "/pkg.Named/"}}],
                 "abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 100}}},
                {"rule": "http-mapped", "match": [{"uri": {"prefix": "/pkg.Mapped/"}}],
                 "abort": {"httpStatus": 404, "percentage": {"value": 100}}}
            ]})
            .to_string(),
        )
        .route_to_cluster("backend")
        .render();
    let envoy = Envoy::start(&yaml).unwrap();
    let port = envoy.listener_port(LISTENER_NAME);
    let named = client::grpc(port, "svc", "/pkg.Named/Call", b"hi", NO_HEADERS).unwrap();
    assert_eq!(named.status, 200, "gRPC errors travel with HTTP 200");
    assert_eq!(named.grpc_status(), Some(14));
    assert_eq!(
        named
            .header("grpc-message")
            .or_else(|| named.trailer("grpc-message")),
        Some(&b"fault filter abort"[..])
    );
    let mapped = client::grpc(port, "svc", "/pkg.Mapped/Call", b"hi", NO_HEADERS).unwrap();
    assert_eq!(mapped.status, 200);
    assert_eq!(
        mapped.grpc_status(),
        Some(12),
        "HTTP 404 maps to UNIMPLEMENTED as in Envoy"
    );
    // A plain HTTP request to the gRPC-coded rule gets the matching HTTP status.
    let plain = send(&envoy, &Request::get(port, "/pkg.Named/Call").h2c());
    assert_eq!(plain.status, 503);
    assert_eq!(upstream.request_count(), 0);
}

#[test]
fn fault_headers_are_ignored_from_untrusted_clients() {
    let upstream = Upstream::start("backend");
    let envoy = fault_envoy(
        &upstream,
        &json!({"headerFaults": {"trustedCidrs": ["10.0.0.0/8", "::1/128"]}}),
    );
    let port = envoy.listener_port(LISTENER_NAME);
    let started = Instant::now();
    let response = send(
        &envoy,
        &Request::get(port, "/")
            .header("x-envoy-fault-abort-request", "418")
            .header("x-envoy-fault-delay-request", "2000"),
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.served_by(), Some("backend"));
    assert!(started.elapsed() < Duration::from_millis(1_500));
    assert_eq!(
        envoy.stat("wasmcustom.sluice.fault.header.aborts_injected"),
        Some(0)
    );
}

#[test]
fn fault_headers_from_trusted_clients_apply_when_enabled() {
    let upstream = Upstream::start("backend");
    let envoy = fault_envoy(
        &upstream,
        &json!({"headerFaults": {"trustedCidrs": ["127.0.0.0/8"], "abort": false,
                                 "maxDelay": "400ms"}}),
    );
    let port = envoy.listener_port(LISTENER_NAME);
    // Abort headers are disabled: ignored. The delay header applies, clamped to maxDelay.
    let started = Instant::now();
    let response = send(
        &envoy,
        &Request::get(port, "/")
            .header("x-envoy-fault-abort-request", "418")
            .header("x-envoy-fault-delay-request", "60000"),
    );
    let elapsed = started.elapsed();
    assert_eq!(response.status, 200);
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(5),
        "maxDelay must clamp: {elapsed:?}"
    );
    assert_eq!(
        envoy.stat("wasmcustom.sluice.fault.header.delays_injected"),
        Some(1)
    );

    let upstream2 = Upstream::start("backend");
    let envoy2 = fault_envoy(
        &upstream2,
        &json!({"headerFaults": {"trustedCidrs": ["127.0.0.1"]}}),
    );
    let port2 = envoy2.listener_port(LISTENER_NAME);
    let aborted = send(
        &envoy2,
        &Request::get(port2, "/").header("x-envoy-fault-abort-request", "418"),
    );
    assert_eq!(aborted.status, 418);
    let grpc = client::grpc(
        port2,
        "svc",
        "/pkg.S/M",
        b"",
        &[("x-envoy-fault-abort-grpc-request", "5")],
    )
    .unwrap();
    assert_eq!(grpc.grpc_status(), Some(5));
    assert_eq!(upstream2.request_count(), 0);
}

/// With one worker the cap is exact: 5 of 20 concurrent requests are delayed, the other 15
/// overflow and pass at once.
#[test]
fn active_faults_are_capped_per_worker() {
    let upstream = Upstream::start("backend");
    let envoy = fault_envoy_with(
        &upstream,
        &json!({"maxActiveFaults": 5, "faults": [{"rule": "r",
            "delay": {"fixedDelay": "1500ms", "percentage": {"value": 100}}}]}),
        1,
    );
    let port = envoy.listener_port(LISTENER_NAME);
    let requests: Vec<Request> = (0..20)
        .map(|i| Request::get(port, &format!("/{i}")))
        .collect();
    let timed: Vec<(Duration, u16)> = std::thread::scope(|scope| {
        let handles: Vec<_> = requests
            .into_iter()
            .map(|request| {
                scope.spawn(move || {
                    let started = Instant::now();
                    let response = client::send(&request).map(|r| r.status);
                    (started.elapsed(), response.unwrap_or(0))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(timed.iter().all(|(_, status)| *status == 200), "{timed:?}");
    let delayed = timed
        .iter()
        .filter(|(elapsed, _)| *elapsed >= Duration::from_millis(1_500))
        .count();
    assert_eq!(delayed, 5, "{timed:?}");
    assert_eq!(
        envoy.stat("wasmcustom.sluice.fault.faults_overflow"),
        Some(15)
    );
    assert_eq!(envoy.stat(&rule_stat("r", "delays_injected")), Some(5));
    envoy
        .wait_for_stat(ACTIVE_FAULTS, |v| v == 0, Duration::from_secs(5))
        .unwrap();
}

#[test]
fn alone_it_ignores_and_strips_a_client_rule_header() {
    let upstream = Upstream::start("backend");
    let yaml = Bootstrap::new()
        .cluster("backend", upstream.port())
        .wasm_filter(
            "fault",
            &json!({"faults": [{"rule": "jason",
                "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                "abort": {"httpStatus": 503, "percentage": {"value": 100}}}]})
            .to_string(),
        )
        .route_to_cluster("backend")
        .forward_internal_headers()
        .render();
    let envoy = Envoy::start(&yaml).unwrap();
    let port = envoy.listener_port(LISTENER_NAME);
    let spoofed = send(
        &envoy,
        &Request::get(port, "/").header("x-sluice-rule", "jason"),
    );
    assert_eq!(spoofed.status, 200);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].has_header("x-sluice-rule"));
    let jason = send(&envoy, &Request::get(port, "/").header("end-user", "jason"));
    assert_eq!(jason.status, 503);
}

#[test]
fn after_the_router_it_faults_the_rule_the_router_matched() {
    let v1 = Upstream::start("reviews-v1");
    let router = json!({"virtualHosts": [{"name": "all", "domains": ["*"], "rules": [
        {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "route": {"cluster": "reviews-v1"}},
        {"name": "default", "route": {"cluster": "reviews-v1"}}
    ]}]});
    let fault = json!({"afterRouter": true, "faults": [{"rule": "jason",
        "abort": {"httpStatus": 500, "percentage": {"value": 100}}}]});
    let yaml = Bootstrap::new()
        .cluster("reviews-v1", v1.port())
        .wasm_filter("router", &router.to_string())
        .wasm_filter("fault", &fault.to_string())
        .route_cluster_header()
        .render();
    let envoy = Envoy::start(&yaml).unwrap();
    let port = envoy.listener_port(LISTENER_NAME);
    let jason = send(&envoy, &Request::get(port, "/").header("end-user", "jason"));
    assert_eq!(jason.status, 500);
    let other = send(&envoy, &Request::get(port, "/").header("end-user", "bob"));
    assert_eq!(other.served_by(), Some("reviews-v1"));
    // A client cannot pick the faulted rule: the router overwrites x-sluice-rule.
    let spoofed = send(
        &envoy,
        &Request::get(port, "/").header("x-sluice-rule", "jason"),
    );
    assert_eq!(spoofed.served_by(), Some("reviews-v1"));
    assert_eq!(envoy.stat(&rule_stat("jason", "aborts_injected")), Some(1));
}

#[test]
fn bad_configs_are_refused_with_the_reason_in_envoys_log() {
    let upstream = Upstream::start("backend");
    for (fault, reason) in [
        (
            json!({"abort": {"httpStatus": 600, "percentage": {"value": 100}}}),
            "faults[0] (rule \\\"r\\\"): abort.httpStatus: HTTP status 600 is not in range 200-599",
        ),
        (
            json!({"abort": {"grpcStatus": "UNAVAILABEL", "percentage": {"value": 1}}}),
            "abort.grpcStatus: gRPC status \\\"UNAVAILABEL\\\" is not supported",
        ),
        (
            json!({"delay": {"fixedDelay": "5", "percentage": {"value": 1}}}),
            "delay.fixedDelay: invalid duration",
        ),
    ] {
        let yaml = Bootstrap::new()
            .cluster("backend", upstream.port())
            .wasm_filter("fault", &one_rule(fault).to_string())
            .route_to_cluster("backend")
            .render();
        let log = Envoy::start_expect_failure(&yaml);
        let unescaped = reason.replace("\\\"", "\"");
        assert!(
            log.contains(&unescaped) || log.contains(reason),
            "missing {unescaped:?} in:\n{log}"
        );
    }
}
