//! The seeds' examples (`examples/ecommerce/`, verbatim from the seed "Traffic Management -
//! Advanced Routing and Load Balancing") and Istio's bookinfo fault-injection task, generated
//! by the builder and run through a real Envoy 1.40.
//!
//! The example files are read as checked in; only `common/services.yaml` (the endpoints, which
//! the seed does not have) is replaced by ServiceEntries pointing at in-process upstreams with
//! the same labels. Shares are asserted with binomial bounds (p < 1e-6).
//!
//! Needs the modules: `cargo xtask build-wasm` (router, canary, fault, breaker).

use std::path::Path;
use std::time::{Duration, Instant};

use sluice::Inputs;
use sluice_integration::binomial::assert_plausible;
use sluice_integration::client::{self, Request, Response};
use sluice_integration::envoy::Envoy;
use sluice_integration::mesh;
use sluice_integration::upstream::Upstream;

const HOST: &str = "ecommerce.example.com";
/// The seed's gateway listens on port 80.
const LISTENER: &str = "listener_80";

fn example(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The frontend's two versions (v1 is also the `standard` tier, v2 `premium`, as in
/// `common/services.yaml`) and the backend.
struct Backends {
    v1: Upstream,
    v2: Upstream,
    backend: Upstream,
}

impl Backends {
    fn start() -> Self {
        Self {
            v1: Upstream::start("frontend-v1"),
            v2: Upstream::start("frontend-v2"),
            backend: Upstream::start("backend"),
        }
    }

    fn services(&self) -> String {
        format!(
            "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ecommerce-frontend}}
spec:
  hosts: [ecommerce-frontend]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{app: ecommerce-frontend, version: v1, tier: standard}}}}
  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{app: ecommerce-frontend, version: v2, tier: premium}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ecommerce-backend}}
spec:
  hosts: [ecommerce-backend]
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{app: ecommerce-backend}}}}
",
            self.v1.port(),
            self.v2.port(),
            self.backend.port()
        )
    }

    /// Envoy running `examples/ecommerce/<variant>.yaml` with the common files.
    fn start_variant(&self, variant: &str) -> Envoy {
        let mut inputs = Inputs::from_text("services.yaml", &self.services());
        for path in [
            "ecommerce/common/destination-rules.yaml",
            "ecommerce/common/gateway.yaml",
            &format!("ecommerce/{variant}.yaml"),
        ] {
            inputs.files.push(sluice::SourceFile {
                name: path.to_owned(),
                text: example(path),
            });
        }
        start(&inputs)
    }
}

fn start(inputs: &Inputs) -> Envoy {
    mesh::start(inputs).unwrap_or_else(|e| panic!("{e:#}"))
}

/// `n` GETs, 8 at a time: the seed's DestinationRule allows 10 pending requests
/// (`http1MaxPendingRequests: 10`), and more in flight would overflow into 503s.
fn many(envoy: &Envoy, authority: &str, headers: &[(&str, &str)], n: usize) -> Vec<Response> {
    let request = headers.iter().fold(
        Request::get(envoy.listener_port(LISTENER), "/").authority(authority),
        |r, (name, value)| r.header(name, value),
    );
    client::send_many(vec![request; n], 8)
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{e:#}\n{}", envoy.log())))
        .collect()
}

fn count_served(responses: &[Response], name: &str) -> u64 {
    responses
        .iter()
        .filter(|r| r.status == 200 && r.served_by() == Some(name))
        .count() as u64
}

fn assert_split(variant: &str, v2_share: f64) {
    let b = Backends::start();
    let envoy = b.start_variant(variant);
    let responses = many(&envoy, HOST, &[], 1000);
    let (v1, v2) = (
        count_served(&responses, "frontend-v1"),
        count_served(&responses, "frontend-v2"),
    );
    assert_eq!(v1 + v2, 1000, "every request is served by v1 or v2");
    assert_plausible(&format!("{variant}: requests to v2"), v2, 1000, v2_share);
}

#[test]
fn canary_90_10() {
    assert_split("scenario-canary-90-10", 0.1);
}

#[test]
fn canary_75_25() {
    assert_split("scenario-canary-75-25", 0.25);
}

#[test]
fn header_based_canary_sends_canary_true_to_v2() {
    let b = Backends::start();
    let envoy = b.start_variant("header-based-canary");
    let canary = many(&envoy, HOST, &[("canary", "true")], 50);
    assert_eq!(count_served(&canary, "frontend-v2"), 50);
    let others = many(&envoy, HOST, &[("canary", "false")], 50);
    assert_eq!(count_served(&others, "frontend-v1"), 50);
    let plain = many(&envoy, HOST, &[], 50);
    assert_eq!(count_served(&plain, "frontend-v1"), 50);
}

#[test]
fn ab_testing_premium_standard_and_an_even_split() {
    let b = Backends::start();
    let envoy = b.start_variant("ab-testing");
    // premium = the v2 endpoint (tier: premium), standard = the v1 endpoint.
    let premium = many(&envoy, HOST, &[("user-type", "premium")], 50);
    assert_eq!(
        count_served(&premium, "frontend-v2"),
        50,
        "{:?}",
        client::status_counts(&premium)
    );
    let standard = many(&envoy, HOST, &[("user-type", "standard")], 50);
    assert_eq!(count_served(&standard, "frontend-v1"), 50);
    let rest = many(&envoy, HOST, &[], 1000);
    let v2 = count_served(&rest, "frontend-v2");
    assert_eq!(v2 + count_served(&rest, "frontend-v1"), 1000);
    assert_plausible("A/B: requests to v2", v2, 1000, 0.5);
}

#[test]
fn abort_25_percent_with_500() {
    let b = Backends::start();
    let envoy = b.start_variant("fault-injection-abort");
    let faulted = many(&envoy, HOST, &[("fault-injection", "abort")], 1000);
    let aborted = faulted.iter().filter(|r| r.status == 500).count() as u64;
    let served = count_served(&faulted, "frontend-v1") + count_served(&faulted, "frontend-v2");
    assert_eq!(
        aborted + served,
        1000,
        "a request is either aborted or served"
    );
    assert_plausible("aborted requests", aborted, 1000, 0.25);
    // The injected aborts are not upstream errors: the seed's circuitBreaker (3 consecutive
    // errors) must not open on them, so the requests without the header all succeed.
    let plain = many(&envoy, HOST, &[], 100);
    assert_eq!(
        count_served(&plain, "frontend-v1") + count_served(&plain, "frontend-v2"),
        100,
        "{}",
        envoy.log()
    );
}

/// Sends `n` requests from `threads` threads (each one at a time: the seed's DestinationRule
/// allows only 10 pending requests) and returns how long each took.
fn timed(
    envoy: &Envoy,
    authority: &str,
    headers: &[(&str, &str)],
    n: usize,
    threads: usize,
) -> Vec<Duration> {
    let port = envoy.listener_port(LISTENER);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..n)
                        .step_by(threads)
                        .map(|_| {
                            let start = Instant::now();
                            let r = client::get(port, authority, "/", headers).expect("a response");
                            assert_eq!(r.status, 200);
                            start.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("no panic"))
            .collect()
    })
}

#[test]
fn header_triggered_delay_50_percent_5s() {
    let b = Backends::start();
    let envoy = b.start_variant("fault-injection-delay");
    // 40 requests, 8 in flight: about half wait 5 s (about 15 s in all).
    let times = timed(&envoy, HOST, &[("fault-injection", "delay")], 40, 8);
    let delayed = times
        .iter()
        .filter(|t| **t >= Duration::from_secs(5))
        .count() as u64;
    assert_plausible("delayed requests", delayed, 40, 0.5);
    let plain = timed(&envoy, HOST, &[], 5, 5);
    assert!(
        plain.iter().all(|t| *t < Duration::from_secs(5)),
        "requests without the header are not delayed: {plain:?}"
    );
}

/// Istio's bookinfo fault-injection task: `ratings` for user jason.
fn bookinfo(ratings: &Upstream, fault: &str) -> Inputs {
    Inputs::from_text(
        "bookinfo.yaml",
        &format!(
            "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings}}
spec:
  hosts: [ratings]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: ratings}}
spec:
  host: ratings
  subsets: [{{name: v1, labels: {{version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings}}
spec:
  hosts: [ratings]
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      {fault}
    route:
    - destination:
        host: ratings
        subset: v1
  - route:
    - destination:
        host: ratings
        subset: v1
",
            ratings.port()
        ),
    )
}

#[test]
fn bookinfo_jason_gets_a_7s_delay() {
    let ratings = Upstream::start("ratings-v1");
    let envoy = start(&bookinfo(
        &ratings,
        "delay: {percentage: {value: 100.0}, fixedDelay: 7s}",
    ));
    let jason = timed(&envoy, "ratings", &[("end-user", "jason")], 2, 2);
    assert!(
        jason.iter().all(|t| *t >= Duration::from_secs(7)),
        "{jason:?}"
    );
    let others = timed(&envoy, "ratings", &[("end-user", "alice")], 2, 2);
    assert!(
        others.iter().all(|t| *t < Duration::from_secs(7)),
        "{others:?}"
    );
}

#[test]
fn bookinfo_jason_gets_a_500() {
    let ratings = Upstream::start("ratings-v1");
    let envoy = start(&bookinfo(
        &ratings,
        "abort: {percentage: {value: 100.0}, httpStatus: 500}",
    ));
    let port = envoy.listener_port(LISTENER);
    let jason = client::get_many(port, "ratings", "/", &[("end-user", "jason")], 20)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(jason.iter().all(|r| r.status == 500));
    assert_eq!(ratings.request_count(), 0);
    let others = client::get_many(port, "ratings", "/", &[("end-user", "alice")], 20)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(count_served(&others, "ratings-v1"), 20);
}
