//! Central health checking through real Envoy 1.40: one `sluice serve` probes the 20 endpoints
//! of a service (`sluice.dev/probe`) and tells two Envoys their health by EDS. Failing and
//! stopped endpoints are marked UNHEALTHY, traffic stops reaching them with no failed request
//! once the switch settled, and comes back when they recover; each endpoint is probed once per
//! period, not once per Envoy.
//!
//! The upstreams are in-process servers (integration/src/upstream.rs): "stopping" one closes
//! its listener and every connection (its runtime is dropped), and bringing it back binds the
//! same port again. Every wait polls with a generous deadline (a shared 2-core machine).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_integration::envoy::Envoy;
use sluice_integration::serve::{Load, ServedMesh, poll, probed_mesh, wait_listener};
use sluice_integration::upstream::{Behavior, Upstream};

const LISTENER: &str = "listener_8000";
const CLUSTER: &str = "outbound|8000||shop";
const PERIOD: Duration = Duration::from_secs(1);
const FAILURES: u32 = 2;
const DEADLINE: Duration = Duration::from_secs(60);
const ENDPOINTS: usize = 20;

/// Serve's view: probe key -> health.
fn serve_health(served: &ServedMesh) -> BTreeMap<String, String> {
    let Ok((200, body)) = served.admin_get("/endpoints") else {
        return BTreeMap::new();
    };
    let doc: Value = serde_json::from_str(&body).unwrap_or_default();
    doc["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["key"].as_str()?.to_owned(),
                e["health"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// serve's responses sent so far, by type.
fn pushes(served: &ServedMesh) -> BTreeMap<&'static str, f64> {
    ["CDS", "EDS", "LDS", "RDS", "ECDS"]
        .into_iter()
        .map(|kind| {
            (
                kind,
                served.metric(&format!("sluice_serve_pushes_total{{type=\"{kind}\"}}")),
            )
        })
        .collect()
}

fn key(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Waits until serve reports `health` for every port of `ports`; returns how long it took.
fn wait_serve(served: &ServedMesh, ports: &[u16], health: &str) -> Duration {
    let started = Instant::now();
    poll(
        DEADLINE,
        &format!("serve to report {ports:?} {health}"),
        || {
            let seen = serve_health(served);
            ports
                .iter()
                .all(|p| seen.get(&key(*p)).is_some_and(|h| h == health))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}: {:?}", serve_health(served)));
    started.elapsed()
}

/// The ports of the shop cluster's hosts whose EDS health status is UNHEALTHY in Envoy, and
/// all its hosts.
fn envoy_view(envoy: &Envoy) -> (BTreeSet<u16>, BTreeSet<u16>) {
    let hosts = envoy.cluster_hosts(CLUSTER);
    (
        hosts
            .iter()
            .filter(|(_, eds)| eds == "UNHEALTHY")
            .map(|(p, _)| *p)
            .collect(),
        hosts.iter().map(|(p, _)| *p).collect(),
    )
}

/// Waits until each Envoy has the 20 hosts, exactly `down` of them unhealthy by EDS.
fn wait_envoys(envoys: &[&Envoy], all: &[u16], down: &[u16]) {
    let want: BTreeSet<u16> = down.iter().copied().collect();
    let hosts: BTreeSet<u16> = all.iter().copied().collect();
    for envoy in envoys {
        poll(
            DEADLINE,
            &format!("Envoy to see {down:?} unhealthy by EDS"),
            || envoy_view(envoy) == (want.clone(), hosts.clone()),
        )
        .unwrap_or_else(|e| panic!("{e:#}: Envoy sees {:?}", envoy_view(envoy)));
    }
}

fn connect_failures(envoy: &Envoy) -> u64 {
    envoy
        .stat(&format!("cluster.{CLUSTER}.upstream_cx_connect_fail"))
        .unwrap_or(0)
}

/// Requests (not probes) an upstream received since its counts were last cleared.
fn traffic(upstream: &Upstream) -> usize {
    upstream
        .requests()
        .iter()
        .filter(|r| r.path != "/healthz")
        .count()
}

/// Load on both Envoys until each sent at least `n` requests; returns the failures.
fn settled_load(ports: [u16; 2], n: u64) -> Vec<String> {
    let loads = ports.map(|p| Load::start(p, "shop"));
    let deadline = Instant::now() + DEADLINE;
    while loads.iter().any(|l| l.sent() < n) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut failures = Vec::new();
    for load in loads {
        let (sent, failed) = load.finish();
        assert!(sent >= n, "only {sent} requests in {DEADLINE:?}");
        failures.extend(failed);
    }
    failures
}

#[test]
fn serve_probes_once_and_every_envoy_follows_by_eds() {
    let mut upstreams: Vec<Upstream> = (0..ENDPOINTS)
        .map(|i| Upstream::start(&format!("ep{i}")))
        .collect();
    let ports: Vec<u16> = upstreams.iter().map(Upstream::port).collect();
    let served =
        ServedMesh::start(&[("mesh.yaml", probed_mesh(&ports, PERIOD, FAILURES))]).unwrap();
    let sotw = served.start_envoy("shop-sotw", "mesh", false).unwrap();
    let delta = served.start_envoy("shop-delta", "mesh", true).unwrap();
    let envoys = [&sotw, &delta];
    let listen = [
        wait_listener(&sotw, LISTENER).unwrap(),
        wait_listener(&delta, LISTENER).unwrap(),
    ];

    // Every endpoint healthy, in serve and in both Envoys.
    wait_serve(&served, &ports, "HEALTHY");
    wait_envoys(&envoys, &ports, &[]);
    assert_eq!(
        served.metric("sluice_serve_endpoints{health=\"HEALTHY\"}"),
        ENDPOINTS as f64
    );

    // Under load from both Envoys, each endpoint is probed about once per period: by serve
    // alone (two Envoys probing too would double it), and every endpoint serves traffic.
    for u in &upstreams {
        u.clear_requests();
    }
    let started = Instant::now();
    let failures = settled_load(listen, 600);
    std::thread::sleep(PERIOD * 4);
    let elapsed = started.elapsed();
    let periods = (elapsed.as_secs_f64() / PERIOD.as_secs_f64()).ceil() as usize;
    for u in &upstreams {
        let probes = u.request_count() - traffic(u);
        assert!(
            probes >= 1 && probes <= periods + 2,
            "{}: {probes} probes in {elapsed:?} ({periods} periods)",
            u.name()
        );
        assert!(traffic(u) > 0, "{} got no traffic", u.name());
    }
    assert!(failures.is_empty(), "failed requests: {failures:?}");

    // Five fail their probes (503 to every request, probes and traffic alike): UNHEALTHY in
    // serve within about period x threshold, then in both Envoys; from then on they get no
    // request, and no request fails.
    let failing: Vec<u16> = ports[5..10].to_vec();
    let pushes_before = pushes(&served);
    for u in &upstreams[5..10] {
        u.set_behavior(Behavior::Status(503));
    }
    let took = wait_serve(&served, &failing, "UNHEALTHY");
    eprintln!(
        "5 failing endpoints UNHEALTHY in serve after {took:?} (period {PERIOD:?} x threshold {FAILURES})"
    );
    wait_envoys(&envoys, &ports, &failing);
    // Health travels by EDS alone: no cluster, listener, route or filter config was pushed.
    let pushes_after = pushes(&served);
    for kind in ["CDS", "LDS", "RDS", "ECDS"] {
        assert_eq!(
            pushes_after[kind], pushes_before[kind],
            "{kind} pushed on a health change"
        );
    }
    assert!(pushes_after["EDS"] > pushes_before["EDS"]);
    for u in &upstreams {
        u.clear_requests();
    }
    let failures = settled_load(listen, 600);
    assert!(
        failures.is_empty(),
        "failed requests after the switch: {failures:?}"
    );
    for u in &upstreams[5..10] {
        assert_eq!(traffic(u), 0, "{} got traffic while UNHEALTHY", u.name());
    }
    for u in upstreams[..5].iter().chain(&upstreams[10..]) {
        assert!(traffic(u) > 0, "{} got no traffic", u.name());
    }
    assert_eq!(
        served.metric("sluice_serve_endpoints{health=\"UNHEALTHY\"}"),
        5.0
    );
    let (_, table) = served.admin_get("/endpoints").unwrap();
    let doc: Value = serde_json::from_str(&table).unwrap();
    let row = sluice::serve::status::render_endpoints(&doc, sluice::serve::state::now_secs());
    let line = row
        .lines()
        .find(|l| l.starts_with(&key(failing[0])))
        .unwrap_or_else(|| panic!("no row for {}:\n{row}", failing[0]));
    assert!(
        line.contains(CLUSTER) && line.contains("UNHEALTHY") && line.contains("HTTP 503"),
        "{line}"
    );
    for u in &upstreams[5..10] {
        u.set_behavior(Behavior::Ok);
    }
    wait_serve(&served, &failing, "HEALTHY");
    wait_envoys(&envoys, &ports, &[]);

    // Five are stopped (listener and connections closed) under load: UNHEALTHY in serve, then
    // in both Envoys; once that settled, no request fails and no connection is attempted to
    // them.
    let stopped: Vec<u16> = ports[..5].to_vec();
    let loads = listen.map(|p| Load::start(p, "shop"));
    let gone: Vec<Upstream> = upstreams.drain(..5).collect();
    drop(gone);
    let took = wait_serve(&served, &stopped, "UNHEALTHY");
    eprintln!(
        "5 stopped endpoints UNHEALTHY in serve after {took:?} (period {PERIOD:?} x threshold {FAILURES})"
    );
    wait_envoys(&envoys, &ports, &stopped);
    for load in loads {
        let (sent, failed) = load.finish();
        eprintln!(
            "while the switch settled: {sent} requests, {} failed (the endpoints were gone before EDS said so)",
            failed.len()
        );
    }
    for u in &upstreams {
        u.clear_requests();
    }
    let connect_before = envoys.map(connect_failures);
    let failures = settled_load(listen, 600);
    assert!(
        failures.is_empty(),
        "failed requests after the switch: {failures:?}"
    );
    assert_eq!(
        envoys.map(connect_failures),
        connect_before,
        "no connection was attempted to a stopped endpoint"
    );
    assert!(upstreams.iter().all(|u| traffic(u) > 0));

    // They come back on their ports: HEALTHY again, and traffic returns to them.
    let back: Vec<Upstream> = stopped
        .iter()
        .enumerate()
        .map(|(i, port)| Upstream::start_at(&format!("ep{i}"), *port))
        .collect();
    wait_serve(&served, &stopped, "HEALTHY");
    wait_envoys(&envoys, &ports, &[]);
    let failures = settled_load(listen, 600);
    assert!(
        failures.is_empty(),
        "failed requests after the return: {failures:?}"
    );
    for u in &back {
        assert!(
            traffic(u) > 0,
            "{} got no traffic after its return",
            u.name()
        );
    }
    assert!(served.metric("sluice_serve_probes_total") >= (ENDPOINTS * 4) as f64);
}
