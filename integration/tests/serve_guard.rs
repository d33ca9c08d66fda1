//! The self-guarding canary with `sluice serve` (issue 29): two real Envoy 1.40 proxies fed by
//! serve, the envoy-xds bootstrap of a mesh with a guarded split streaming each proxy's stats to
//! serve (Envoy's metrics service sink).
//!
//! - Proxy `edge-a` alone sends traffic while the canary fails; its guard halts the canary.
//!   `/status` (and so `sluice status`) shows `edge-a` halted and `edge-b` not.
//! - Without `--spread-halts`, `edge-b` keeps sending to the (now healthy) canary: each proxy
//!   guards itself.
//! - With `--spread-halts`, serve takes the canary out of every proxy's split: `edge-b`, whose
//!   guard saw no failure, sends it nothing; changing the split on disk lifts the fleet halt and
//!   both proxies send to the canary again.
//!
//! Every wait polls with a generous deadline (the machine may be shared); no sleep asserts.
//! Needs the modules: `cargo xtask build-wasm`.

use std::time::Duration;

use serde_json::Value;
use sluice_integration::client::{self, NO_HEADERS};
use sluice_integration::envoy::Envoy;
use sluice_integration::serve::{ServedMesh, poll, shop_mesh_guarded, wait_listener};
use sluice_integration::upstream::{Behavior, Upstream};

const LISTENER: &str = "listener_8000";
const DEADLINE: Duration = Duration::from_secs(90);
const HALTED_GAUGE: &str = "wasmcustom.sluice.canary.split.shop-split.guard_halted";

/// `shop` split `weights` between v1 and the canary v2 (route `shop-split`), guarded.
fn guarded_mesh(v1: &Upstream, v2: &Upstream, weights: [u32; 2]) -> String {
    shop_mesh_guarded(
        v1,
        v2,
        weights,
        Some("{minRequests: 50, window: 30s, margin: 0.02}"),
    )
}

/// How many of `n` requests through `port` the canary v2 served (every answer checked).
fn canary_share(port: u16, n: usize) -> usize {
    let mut v2 = 0;
    for _ in 0..n {
        let response = client::get(port, "shop", "/", NO_HEADERS).expect("shop answers");
        match response.served_by() {
            Some("v2") => v2 += 1,
            Some("v1") => {}
            other => panic!("served by {other:?}, status {}", response.status),
        }
    }
    v2
}

/// The proxy `node`'s entry in serve's `/status`.
fn proxy(served: &ServedMesh, node: &str) -> Option<Value> {
    let status = served.status().ok()?;
    status["proxies"]
        .as_array()?
        .iter()
        .find(|p| p["id"] == node)
        .cloned()
}

/// What `node` last reported halted (`None`: no report yet).
fn reported_halted(served: &ServedMesh, node: &str) -> Option<Vec<String>> {
    let halted = proxy(served, node)?["halted"].as_array()?.clone();
    Some(
        halted
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
    )
}

fn fleet_halts(served: &ServedMesh) -> Vec<String> {
    served
        .status()
        .ok()
        .and_then(|s| s["fleet_halts"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|h| h["split"].as_str().map(str::to_owned))
        .collect()
}

/// Both proxies synced on every type they subscribed to.
fn synced(served: &ServedMesh, node: &str) -> bool {
    proxy(served, node).is_some_and(|p| {
        p["types"].as_object().is_some_and(|types| {
            !types.is_empty()
                && types
                    .values()
                    .all(|t| !t["acked"].is_null() && t["acked"] == t["sent"])
        })
    })
}

/// Starts serve (spreading halts or not) on the guarded 50/50 mesh and two proxies; sends
/// traffic through `edge-a` alone while the canary fails 30 % until its guard halts, then heals
/// the canary. Returns serve, the upstreams and both proxies with their ports.
fn halt_on_edge_a(spread: bool) -> (ServedMesh, Upstream, Upstream, (Envoy, u16), (Envoy, u16)) {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let files = [("shop.yaml", guarded_mesh(&v1, &v2, [50, 50]))];
    let served = if spread {
        ServedMesh::start_spreading_halts(&files)
    } else {
        ServedMesh::start(&files)
    }
    .unwrap();
    // The envoy-xds bootstrap of a mesh with a guard streams the proxy's stats to serve.
    let bootstrap = served.bootstrap("edge-a", "mesh", false).unwrap();
    assert!(
        bootstrap.contains("envoy.stat_sinks.metrics_service"),
        "{bootstrap}"
    );
    let a = served.start_envoy("edge-a", "mesh", false).unwrap();
    let b = served.start_envoy("edge-b", "mesh", true).unwrap();
    let (a_port, b_port) = (
        wait_listener(&a, LISTENER).unwrap(),
        wait_listener(&b, LISTENER).unwrap(),
    );
    poll(DEADLINE, "both proxies synced", || {
        synced(&served, "edge-a") && synced(&served, "edge-b")
    })
    .unwrap();
    // Both report over the metrics service, nothing halted yet.
    poll(DEADLINE, "both proxies report no halt", || {
        reported_halted(&served, "edge-a") == Some(vec![])
            && reported_halted(&served, "edge-b") == Some(vec![])
    })
    .unwrap();

    v2.set_behavior(Behavior::FailRandomly {
        per_million: 300_000,
        status: 503,
    });
    let mut sent = 0;
    poll(DEADLINE, "edge-a's guard halts the canary", || {
        for _ in 0..50 {
            // Failures are the point: only whether it answered at all matters here.
            let _ = client::get(a_port, "shop", "/", NO_HEADERS).expect("shop answers");
        }
        sent += 50;
        a.stat(HALTED_GAUGE) == Some(1)
    })
    .unwrap();
    eprintln!("edge-a halted the canary after {sent} requests");
    v2.set_behavior(Behavior::Ok);
    poll(DEADLINE, "serve shows edge-a's halt", || {
        reported_halted(&served, "edge-a") == Some(vec!["shop-split".to_owned()])
    })
    .unwrap();
    assert_eq!(
        reported_halted(&served, "edge-b"),
        Some(vec![]),
        "edge-b saw no failure"
    );
    assert!(served.metric("sluice_serve_halted_proxies{split=\"shop-split\"}") >= 1.0);
    (served, v1, v2, (a, a_port), (b, b_port))
}

#[test]
fn each_proxy_guards_itself_and_status_shows_who_halted() {
    let (served, _v1, v2, (_a, a_port), (_b, b_port)) = halt_on_edge_a(false);
    // The table `sluice status` prints: edge-a halted shop-split, edge-b nothing.
    let table = sluice::serve::status::render(&served.status().unwrap());
    let row = |node: &str| {
        table
            .lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_else(|| panic!("no row for {node}:\n{table}"))
            .to_owned()
    };
    assert!(row("edge-a").contains("shop-split"), "{table}");
    assert!(!row("edge-b").contains("shop-split"), "{table}");

    v2.clear_requests();
    assert_eq!(
        canary_share(a_port, 200),
        0,
        "edge-a keeps its canary halted"
    );
    // 200 requests at 50 %: all on v1 by chance has probability 2^-200.
    let on_b = canary_share(b_port, 200);
    assert!(
        on_b > 0,
        "edge-b still sends to the canary without --spread-halts"
    );
    assert!(fleet_halts(&served).is_empty(), "nothing spread");
}

#[test]
fn spread_halts_take_the_canary_out_of_every_proxy_until_the_split_changes() {
    let (served, v1, v2, (_a, a_port), (_b, b_port)) = halt_on_edge_a(true);
    poll(DEADLINE, "serve spreads edge-a's halt", || {
        fleet_halts(&served) == ["shop-split"]
    })
    .unwrap();
    poll(DEADLINE, "both proxies synced on the halted split", || {
        served.status().is_ok_and(|s| {
            s["config"]["version"].is_string()
                && proxy(&served, "edge-b")
                    .is_some_and(|p| p["types"]["ECDS"]["acked"] == p["types"]["ECDS"]["sent"])
        }) && synced(&served, "edge-a")
            && synced(&served, "edge-b")
            && served.metric("sluice_serve_fleet_halted{split=\"shop-split\"}") == 1.0
    })
    .unwrap();
    // The spread config reached edge-b (its own guard never halted): no request to v2.
    poll(DEADLINE, "edge-b stops sending to the canary", || {
        canary_share(b_port, 20) == 0
    })
    .unwrap();
    v2.clear_requests();
    assert_eq!(canary_share(b_port, 200), 0, "edge-b: the halt was spread");
    assert_eq!(canary_share(a_port, 200), 0, "edge-a: still halted");
    assert_eq!(v2.request_count(), 0);

    // The operator changes the split: the fleet halt is lifted, the guards re-armed, and both
    // proxies send to the canary again.
    served.write("shop.yaml", &guarded_mesh(&v1, &v2, [60, 40]));
    poll(DEADLINE, "the fleet halt is lifted", || {
        fleet_halts(&served).is_empty()
    })
    .unwrap();
    poll(DEADLINE, "both proxies send to the canary again", || {
        canary_share(a_port, 50) > 0 && canary_share(b_port, 50) > 0
    })
    .unwrap();
}
