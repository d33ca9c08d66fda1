//! Hostile requests against all four sluice filters chained in a real Envoy 1.40
//! (router -> canary -> fault -> breaker -> envoy router), two workers.
//!
//! Two properties, for every request below:
//! - the VMs survive: no trap, no panic, every filter keeps counting (a trapped VM under
//!   FAIL_CLOSED answers 503 and counts nothing), Envoy's wasm failure stats stay at 0;
//! - the client cannot force a decision: spoofed internal `x-sluice-*` headers and Envoy fault
//!   headers change neither the destination nor the faults.
//!
//! Needs the modules: `cargo xtask build-wasm` (or `cargo build --release --target
//! wasm32-wasip1 -p sluice-router -p sluice-canary -p sluice-fault -p sluice-breaker`).

use serde_json::json;
use sluice_integration::bootstrap::{Bootstrap, LISTENER_NAME};
use sluice_integration::client::{self, Request, Response};
use sluice_integration::envoy::Envoy;
use sluice_integration::upstream::Upstream;

struct Mesh {
    stable: Upstream,
    canary: Upstream,
    envoy: Envoy,
}

/// `/split/...` goes through the canary split (all weight on `canary`), `/faulty` aborts with
/// 418, the rest goes to `stable`; `end-user: jason` goes to `canary`.
fn mesh() -> Mesh {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    let router = json!({"virtualHosts": [{"name": "all", "domains": ["*"], "rules": [
        {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "route": {"cluster": "canary"}},
        {"name": "split", "match": [{"uri": {"prefix": "/split"}}], "route": {"split": "s"}},
        {"name": "faulty", "match": [{"uri": {"exact": "/faulty"}}], "route": {"cluster": "stable"}},
        {"name": "default", "route": {"cluster": "stable"}},
    ]}]});
    let canary_config = json!({"afterRouter": true, "splits": [{"name": "s", "members": [
        {"cluster": "stable", "weight": 0}, {"cluster": "canary", "weight": 100}]}]});
    let fault = json!({"afterRouter": true, "debugHeader": true, "faults": [
        {"rule": "faulty", "abort": {"httpStatus": 418, "percentage": {"value": 100}}}]});
    let breaker = json!({"afterRouter": true,
        "default": {"consecutiveErrors": 1000, "baseEjectionTime": "1s"}});
    let mut bootstrap = Bootstrap::new()
        .cluster("stable", stable.port())
        .cluster("canary", canary.port())
        .wasm_filter("router", &router.to_string())
        .wasm_filter("canary", &canary_config.to_string())
        .wasm_filter("fault", &fault.to_string())
        .wasm_filter("breaker", &breaker.to_string())
        .without_access_log()
        .to_json();
    // Let 60 KB headers through to the filters (Envoy's default limit is 60 KiB in total).
    let hcm = &mut bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"];
    hcm["max_request_headers_kb"] = json!(128);
    let config = serde_json::to_string_pretty(&bootstrap).expect("render");
    let envoy = Envoy::start(&config).unwrap_or_else(|e| panic!("{e:#}"));
    Mesh {
        stable,
        canary,
        envoy,
    }
}

impl Mesh {
    fn port(&self) -> u16 {
        self.envoy.listener_port(LISTENER_NAME)
    }

    fn send(&self, request: Request) -> Response {
        client::send(&request)
            .unwrap_or_else(|e| panic!("request failed: {e:#}\n{}", self.envoy.log()))
    }

    /// Neither VM trapped: no trap in the log, no wasm failure stat, and each filter still
    /// decides (checked by the caller through counters and destinations).
    fn assert_vms_alive(&self) {
        let log = self.envoy.log();
        for trap in [
            "panicked",
            "RuntimeError",
            "Uncaught",
            "wasm trap",
            "Failed to",
        ] {
            assert!(!log.contains(trap), "{trap:?} in the Envoy log:\n{log}");
        }
        let stats = self.envoy.stats_text().expect("stats");
        for line in stats.lines() {
            let Some((name, value)) = line.split_once(": ") else {
                continue;
            };
            if name.starts_with("wasm.")
                && (name.contains("fail") || name.contains("crash"))
                && value.trim() != "0"
            {
                panic!("{line}\n{log}");
            }
        }
    }
}

fn served(response: &Response) -> &str {
    response.served_by().unwrap_or("<none>")
}

#[test]
fn spoofed_internal_headers_decide_nothing() {
    let mesh = mesh();
    let port = mesh.port();
    // Every internal header, once and repeated, with values that would pick `canary`, a fault
    // or an unknown split if any filter trusted them.
    let spoofs: &[(&str, &[u8])] = &[
        ("x-sluice-cluster", b"canary"),
        ("x-sluice-split", b"s"),
        ("x-sluice-split", b"no-such-split"),
        ("x-sluice-rule", b"faulty"),
        ("x-sluice-rule", b"jason"),
        ("x-envoy-fault-abort-request", b"503"),
        ("x-envoy-fault-abort-request-percentage", b"100"),
        ("x-envoy-fault-delay-request", b"2000"),
        ("x-envoy-fault-delay-request-percentage", b"100"),
        ("x-envoy-fault-abort-grpc-request", b"14"),
    ];
    for (name, value) in spoofs {
        for copies in [1, 20] {
            let mut request = Request::get(port, "/plain");
            for _ in 0..copies {
                request = request.header(name, value);
            }
            let response = mesh.send(request);
            assert_eq!(response.status, 200, "{name}: {value:?} x{copies}");
            assert_eq!(served(&response), "stable", "{name}: {value:?} x{copies}");
            assert_eq!(response.header("x-sluice-fault"), None, "{name}");
        }
    }
    // All at once.
    let mut request = Request::get(port, "/plain");
    for (name, value) in spoofs {
        request = request.header(name, value);
    }
    assert_eq!(served(&mesh.send(request)), "stable");

    // A spoofed cluster cannot undo a real decision either.
    let response = mesh.send(
        Request::get(port, "/split/x")
            .header("x-sluice-cluster", "stable")
            .header("x-sluice-split", "missing"),
    );
    assert_eq!(served(&response), "canary");
    let faulty = mesh.send(Request::get(port, "/faulty").header("x-sluice-rule", "default"));
    assert_eq!(faulty.status, 418);

    // No internal header reached an upstream.
    for upstream in [&mesh.stable, &mesh.canary] {
        for request in upstream.requests() {
            for internal in sluice_core::wire::INTERNAL_HEADERS {
                assert!(
                    !request.has_header(internal),
                    "{internal} leaked to {}",
                    upstream.name()
                );
            }
        }
    }
    let plain_requests = spoofs.len() * 2 + 1;
    assert_eq!(mesh.stable.request_count(), plain_requests);
    assert_eq!(
        mesh.envoy
            .stat("wasmcustom.sluice.router.rule.default.matched"),
        Some(plain_requests as u64)
    );
    mesh.assert_vms_alive();
}

#[test]
fn malformed_and_huge_requests_never_trap_a_vm() {
    let mesh = mesh();
    let port = mesh.port();
    let huge = vec![b'a'; 60 * 1024];
    let mut huge_non_utf8 = vec![0xffu8; 30 * 1024];
    huge_non_utf8.extend_from_slice(b"jason");
    let long_path = format!("/{}", "a/".repeat(4000));
    let long_query = format!("/?{}", "k=v&".repeat(2000));
    let requests: Vec<(Request, &str)> = vec![
        // Non-UTF-8 values in a header a rule reads (exact match) and in others.
        (
            Request::get(port, "/").header("end-user", b"\xff\xfe\xfd".as_slice()),
            "stable",
        ),
        (
            Request::get(port, "/").header("end-user", b"jason\xff".as_slice()),
            "stable",
        ),
        (
            Request::get(port, "/").header("x-other", b"\x80\x81\xc3\x28".as_slice()),
            "stable",
        ),
        (
            Request::get(port, "/").header("cookie", b"a=\xff; b=\xfe".as_slice()),
            "stable",
        ),
        // Huge values.
        (
            Request::get(port, "/").header("end-user", huge.as_slice()),
            "stable",
        ),
        (
            Request::get(port, "/").header("end-user", huge_non_utf8.as_slice()),
            "stable",
        ),
        (
            Request::get(port, "/split/big").header("x-big", huge.as_slice()),
            "canary",
        ),
        // Odd paths and query strings.
        (Request::get(port, "//"), "stable"),
        (Request::get(port, "//split//"), "stable"),
        (Request::get(port, "/%00"), "stable"),
        (Request::get(port, "/faulty%00"), "stable"),
        (Request::get(port, "/?&&="), "stable"),
        (Request::get(port, "/?=&=&a==b&&"), "stable"),
        (Request::get(port, "/split/%ff%fe?%zz=%"), "canary"),
        (Request::get(port, "/..%2f..%2fetc/passwd"), "stable"),
        (Request::get(port, &long_path), "stable"),
        (Request::get(port, &long_query), "stable"),
        (Request::get(port, "*").authority("a"), "<any>"),
        (Request::get(port, "/").authority("weird..:99999"), "<any>"),
        (Request::get(port, "/split").authority("[::1]:0"), "<any>"),
    ];
    for (i, (request, expected)) in requests.into_iter().enumerate() {
        let response = mesh.send(request);
        if expected == "<any>" {
            // Envoy itself may refuse these (400/404); what matters is the VMs below.
            continue;
        }
        assert_eq!(response.status, 200, "request {i}");
        assert_eq!(served(&response), expected, "request {i}");
    }
    // Many copies of a header a rule reads: the router sees one value (Envoy joins or takes
    // the first); either way it must not be "jason" unless a copy says so, and must not trap.
    let mut repeated = Request::get(port, "/");
    // 90 copies: under Envoy's default limit of 100 headers, so the filters see them all.
    for i in 0..90 {
        repeated = repeated.header("end-user", format!("user-{i}"));
    }
    assert_eq!(served(&mesh.send(repeated)), "stable");

    // Then normal traffic is still decided by every filter on both workers.
    let responses = client::send_many(vec![Request::get(port, "/split/after"); 64], 8);
    for response in responses {
        let response = response.unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.envoy.log()));
        assert_eq!(served(&response), "canary");
    }
    let faulty = client::send_many(vec![Request::get(port, "/faulty"); 16], 8);
    for response in faulty {
        assert_eq!(response.expect("sent").status, 418);
    }
    mesh.assert_vms_alive();
}

/// Hostile upstreams: one with nothing listening, one resetting every connection, both behind
/// Envoy retries (`connect-failure,reset,5xx`, 2 retries). The breaker trips after 3 failed
/// requests and then rejects fast, so upstream attempts stay bounded by 3 requests x 3 attempts
/// however many requests arrive (no retry storm), and the resetting one recovers once it
/// answers again.
#[test]
fn dead_and_resetting_upstreams_trip_the_breaker_without_a_retry_storm() {
    use sluice_integration::upstream::Behavior;
    use std::time::{Duration, Instant};

    let dead_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr").port()
    }; // closed again: nothing listens there
    let resetting = Upstream::start("resetting");
    resetting.set_behavior(Behavior::Reset);
    let retry = json!({"retry_on": "connect-failure,reset,5xx", "num_retries": 2});
    let routes = vec![
        json!({"match": {"prefix": "/dead"}, "route": {"cluster": "dead", "retry_policy": retry}}),
        json!({"match": {"prefix": "/"}, "route": {"cluster": "resetting", "retry_policy": retry}}),
    ];
    let config = Bootstrap::new()
        .cluster("dead", dead_port)
        .cluster("resetting", resetting.port())
        .routes_json(routes)
        .wasm_filter(
            "breaker",
            r#"{"breakers": [
                {"cluster": "dead", "consecutiveErrors": 3, "interval": "1h", "baseEjectionTime": "60s"},
                {"cluster": "resetting", "consecutiveErrors": 3, "interval": "1h",
                 "baseEjectionTime": "1s", "maxEjectionTime": "2s"}]}"#,
        )
        .render();
    let envoy = Envoy::start(&config).unwrap_or_else(|e| panic!("{e:#}"));
    let port = envoy.listener_port(LISTENER_NAME);
    let send = |path: &str| {
        client::send(&Request::get(port, path).timeout(Duration::from_secs(20)))
            .unwrap_or_else(|e| panic!("{path}: {e:#}\n{}", envoy.log()))
    };
    let reject_header = sluice_core::wire::BREAKER_REJECT_HEADER;

    for (path, cluster) in [("/dead", "dead"), ("/", "resetting")] {
        let responses: Vec<Response> = (0..30).map(|_| send(path)).collect();
        for (i, r) in responses.iter().enumerate() {
            assert!(r.status >= 500, "{cluster} request {i}: {}", r.status);
        }
        let rejected = responses
            .iter()
            .filter(|r| r.header(reject_header).is_some())
            .count();
        assert!(
            rejected >= 26,
            "{cluster}: only {rejected} of 30 rejected by the breaker"
        );
        let attempts = envoy
            .stat(&format!("cluster.{cluster}.upstream_rq_total"))
            .unwrap_or(0)
            + envoy
                .stat(&format!("cluster.{cluster}.upstream_cx_connect_fail"))
                .unwrap_or(0);
        // 3 admitted requests x (1 try + 2 retries), plus at most one half-open probe of the
        // resetting cluster (1 s ejection) with its retries.
        assert!(
            attempts <= 12,
            "{cluster}: {attempts} upstream attempts for 30 requests"
        );
        assert!(
            attempts >= 3,
            "{cluster}: the upstream was never tried ({attempts})"
        );
    }
    assert!(resetting.request_count() <= 12);

    // Recovery: the resetting upstream answers again; after the ejection time a probe gets
    // through and closes the breaker.
    resetting.set_behavior(Behavior::Ok);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = send("/");
        if r.status == 200 {
            assert_eq!(r.served_by(), Some("resetting"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never recovered\n{}",
            envoy.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for _ in 0..10 {
        assert_eq!(send("/").status, 200);
    }
    // The dead one stays open: its ejection (60 s) is not over, nothing more was tried.
    assert!(send("/dead").header(reject_header).is_some());
    let log = envoy.log();
    assert!(!log.contains("panicked"), "{log}");
}

/// A slow upstream (slower than the route timeout) trips a breaker that counts timeouts, and
/// recovers once it answers in time; a flapping upstream (one failure, one success, ...) never
/// makes three *consecutive* errors, so it is never ejected — and nothing is retried behind the
/// client's back: the upstream sees exactly the requests sent.
#[test]
fn slow_and_flapping_upstreams_follow_the_documented_breaker_semantics() {
    use sluice_integration::upstream::Behavior;
    use std::time::{Duration, Instant};

    let slow = Upstream::start("slow");
    slow.set_behavior(Behavior::Delay(Duration::from_secs(3)));
    let flapping = Upstream::start("flapping");
    let routes = vec![
        json!({"match": {"prefix": "/slow"}, "route": {"cluster": "slow", "timeout": "0.3s"}}),
        json!({"match": {"prefix": "/"}, "route": {"cluster": "flapping"}}),
    ];
    let config = Bootstrap::new()
        .cluster("slow", slow.port())
        .cluster("flapping", flapping.port())
        .routes_json(routes)
        .wasm_filter(
            "breaker",
            r#"{"breakers": [
                {"cluster": "slow", "consecutiveErrors": 3, "interval": "1h",
                 "baseEjectionTime": "1s", "maxEjectionTime": "2s", "countAs": ["timeout"]},
                {"cluster": "flapping", "consecutiveErrors": 3, "interval": "1h",
                 "baseEjectionTime": "60s", "countAs": ["5xx"]}]}"#,
        )
        .render();
    let envoy = Envoy::start(&config).unwrap_or_else(|e| panic!("{e:#}"));
    let port = envoy.listener_port(LISTENER_NAME);
    let send = |path: &str| {
        client::send(&Request::get(port, path).timeout(Duration::from_secs(20)))
            .unwrap_or_else(|e| panic!("{path}: {e:#}\n{}", envoy.log()))
    };
    let reject_header = sluice_core::wire::BREAKER_REJECT_HEADER;

    // Slow: three route timeouts (504), then the breaker answers without trying the upstream.
    for i in 0..3 {
        let r = send("/slow");
        assert_eq!(r.status, 504, "timeout {i}");
        assert!(
            r.header(reject_header).is_none(),
            "request {i} was admitted"
        );
    }
    for i in 0..10 {
        let r = send("/slow");
        assert_eq!(r.status, 503, "rejected {i}");
        assert!(
            r.header(reject_header).is_some(),
            "rejected {i} by the breaker"
        );
    }
    assert_eq!(
        envoy.stat("cluster.slow.upstream_rq_timeout"),
        Some(3),
        "only the three admitted requests reached the slow upstream"
    );
    // Recovery: once the upstream is fast again, a probe after the ejection time closes it.
    slow.set_behavior(Behavior::Ok);
    let deadline = Instant::now() + Duration::from_secs(30);
    while send("/slow").status != 200 {
        assert!(
            Instant::now() < deadline,
            "never recovered\n{}",
            envoy.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for _ in 0..5 {
        assert_eq!(send("/slow").served_by(), Some("slow"));
    }

    // Flapping: fail, succeed, fail, succeed... never three errors in a row.
    for i in 0..20 {
        flapping.set_behavior(Behavior::FailNext {
            count: 1,
            status: 503,
        });
        assert_eq!(send("/").status, 503, "flap {i}: the upstream's own 503");
        let ok = send("/");
        assert_eq!(ok.status, 200, "flap {i}: admitted and served");
        assert_eq!(ok.served_by(), Some("flapping"));
    }
    assert_eq!(flapping.request_count(), 40, "no retry, no rejection");
    // Three in a row do trip it.
    flapping.set_behavior(Behavior::FailNext {
        count: 3,
        status: 503,
    });
    for _ in 0..3 {
        assert_eq!(send("/").status, 503);
    }
    let r = send("/");
    assert!(r.header(reject_header).is_some(), "open after 3 in a row");
    assert_eq!(flapping.request_count(), 43);
    let log = envoy.log();
    assert!(!log.contains("panicked"), "{log}");
}
