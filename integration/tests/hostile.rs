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
