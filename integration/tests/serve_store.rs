//! `sluice serve --store`: control-plane replicas on a real 3-member etcd cluster, real Envoy
//! 1.40 proxies fed only by them, and `sluice apply`'s library.
//!
//! 1. Two replicas (`sluice serve` processes) serve what was applied, with the same versions;
//!    an Envoy whose replica is killed by PID under load fails over to the other; with one etcd
//!    member down too, the next apply reaches it through the replica left; no request fails on
//!    the way.
//! 2. With every etcd member down, a replica keeps serving its last good config to the proxies
//!    it has and to a new one, says `degraded` on /readyz and /metrics, and catches up when etcd
//!    returns.
//!
//! No fixed sleep is an assertion: every wait polls with a generous deadline.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use sluice::serve::{Running, ServeConfig};
use sluice::store::etcd::{EtcdStore, apply};
use sluice::store::{self, StoreUrl};
use sluice::{Inputs, Options};
use sluice_integration::cli::ServeProcess;
use sluice_integration::client::{self, NO_HEADERS, Request};
use sluice_integration::envoy::Envoy;
use sluice_integration::etcd::EtcdCluster;
use sluice_integration::mesh;
use sluice_integration::serve::{
    Load, poll, probed_mesh, shop_mesh, start_xds_envoy, wait_listener,
};
use sluice_integration::upstream::{Behavior, Upstream};
use sluice_integration::wasm;

const LISTENER: &str = "listener_8000";
const DEADLINE: Duration = Duration::from_secs(60);

/// `sluice apply` of `text` (as file `shop.yaml`), through the library the CLI calls.
fn apply_text(url: &StoreUrl, text: &str) -> u64 {
    let inputs = Inputs::from_text("shop.yaml", text);
    let (documents, _) =
        store::check(&inputs, &Options::default()).unwrap_or_else(|d| panic!("{d}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut store = EtcdStore::connect(url).await.expect("connect");
        apply(&mut store, &documents, true, false)
            .await
            .expect("apply")
            .generation
    })
}

/// A `sluice serve --store` replica on ports 0.
fn replica(url: &StoreUrl) -> Running {
    let localhost: SocketAddr = "127.0.0.1:0".parse().expect("address");
    Running::start(ServeConfig {
        xds_listen: localhost,
        admin_listen: localhost,
        store: Some(url.clone()),
        ..ServeConfig::new(Vec::new(), mesh::options())
    })
    .expect("serve starts")
}

/// A `sluice serve --store` replica as its own process (the CLI users run), on ports 0.
fn replica_process(url: &StoreUrl, more: &[&str]) -> ServeProcess {
    let wasm_dir = wasm::module_dir();
    let url = url.to_string();
    let mut args = vec![
        "--store",
        &url,
        "--wasm-dir",
        wasm_dir.to_str().expect("UTF-8 path"),
        "--listen-address",
        "127.0.0.1",
        "--ephemeral-ports",
    ];
    args.extend_from_slice(more);
    ServeProcess::start(&args).unwrap_or_else(|e| panic!("{e:#}"))
}

fn live(replicas: &[Option<ServeProcess>], i: usize) -> SocketAddr {
    replicas[i].as_ref().expect("running").admin
}

fn admin(admin: SocketAddr, path: &str) -> Option<(u16, String)> {
    client::send(
        &Request::get(admin.port(), path)
            .authority("127.0.0.1")
            .timeout(Duration::from_secs(10)),
    )
    .ok()
    .map(|r| (r.status, r.text()))
}

fn status(admin_address: SocketAddr) -> Value {
    admin(admin_address, "/status")
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or(Value::Null)
}

fn version(admin: SocketAddr) -> Option<String> {
    status(admin)["config"]["version"]
        .as_str()
        .map(str::to_owned)
}

fn has_proxy(admin: SocketAddr, node: &str) -> bool {
    status(admin)["proxies"]
        .as_array()
        .is_some_and(|list| list.iter().any(|p| p["id"] == node))
}

/// An Envoy joining the replicas `servers` (in that order) as `node`.
fn start_envoy(mesh_text: &str, servers: &[SocketAddr], node: &str) -> Envoy {
    start_xds_envoy(mesh_text, servers, node).unwrap_or_else(|e| panic!("{e:#}"))
}

fn served_by(port: u16) -> Option<String> {
    client::get(port, "shop", "/", NO_HEADERS)
        .ok()
        .filter(|r| r.status == 200)
        .and_then(|r| r.served_by().map(str::to_owned))
}

#[test]
fn two_replicas_serve_the_same_versions_and_an_envoy_fails_over_under_load() {
    let mut cluster = EtcdCluster::start(3).unwrap_or_else(|e| panic!("{e:#}"));
    let url: StoreUrl = cluster.store_url("/replicas").parse().expect("url");
    let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
    let first = shop_mesh(&v1, &v2, [100, 0]);
    assert_eq!(apply_text(&url, &first), 1);

    let mut replicas = vec![
        Some(replica_process(&url, &[])),
        Some(replica_process(&url, &[])),
    ];
    poll(DEADLINE, "both replicas ready with one version", || {
        let (a, b) = (version(live(&replicas, 0)), version(live(&replicas, 1)));
        a.is_some() && a == b
    })
    .unwrap();
    let addresses: Vec<SocketAddr> = replicas
        .iter()
        .map(|r| r.as_ref().expect("running").xds)
        .collect();

    // One Envoy per replica order; each routes what was applied.
    let e1 = start_envoy(&first, &addresses, "proxy-1");
    let e2 = start_envoy(&first, &[addresses[1], addresses[0]], "proxy-2");
    let p1 = wait_listener(&e1, LISTENER).unwrap();
    let p2 = wait_listener(&e2, LISTENER).unwrap();
    for port in [p1, p2] {
        poll(DEADLINE, "shop served by v1", || {
            served_by(port).as_deref() == Some("shop-v1")
        })
        .unwrap();
    }

    // Kill the replica proxy-1 is attached to, by PID, under load.
    let attached = (0..2)
        .find(|i| has_proxy(live(&replicas, *i), "proxy-1"))
        .expect("proxy-1 is attached to a replica");
    let other = 1 - attached;
    let load = Load::start(p1, "shop");
    let mut killed = replicas[attached].take().expect("running");
    eprintln!("killing replica {} (pid {})", killed.xds, killed.pid());
    killed.kill();
    poll(DEADLINE, "proxy-1 reconnected to the other replica", || {
        has_proxy(live(&replicas, other), "proxy-1")
    })
    .unwrap();

    // Envoy says which replica it follows now (each replica names itself in its responses).
    let other_address = addresses[other].to_string();
    poll(
        DEADLINE,
        "control_plane.identifier names the replica left",
        || {
            e1.stats_text().is_ok_and(|text| {
                text.lines().any(|l| {
                    l.starts_with("control_plane.identifier:") && l.contains(&other_address)
                })
            })
        },
    )
    .unwrap();

    // With one etcd member down too, the next apply reaches it through the replica left.
    cluster.kill(0);
    assert_eq!(apply_text(&url, &shop_mesh(&v1, &v2, [0, 100])), 2);
    poll(DEADLINE, "proxy-1 routes the new split", || {
        served_by(p1).as_deref() == Some("shop-v2")
    })
    .unwrap();
    let (sent, failures) = load.finish();
    eprintln!(
        "failover under load: {sent} requests, {} failed",
        failures.len()
    );
    assert!(sent > 0);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        status(live(&replicas, other))["config"]["generation"],
        serde_json::json!(2)
    );
    drop((e1, e2));
}

#[test]
fn with_etcd_down_a_replica_keeps_serving_says_degraded_and_catches_up() {
    let mut cluster = EtcdCluster::start(3).unwrap_or_else(|e| panic!("{e:#}"));
    let url: StoreUrl = cluster.store_url("/degraded").parse().expect("url");
    let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
    let first = shop_mesh(&v1, &v2, [100, 0]);
    apply_text(&url, &first);
    let serve = replica(&url);
    poll(DEADLINE, "ready", || {
        admin(serve.bound.admin, "/readyz").is_some_and(|(code, _)| code == 200)
    })
    .unwrap();
    let e1 = start_envoy(&first, &[serve.bound.xds], "proxy-1");
    let p1 = wait_listener(&e1, LISTENER).unwrap();
    poll(DEADLINE, "v1", || {
        served_by(p1).as_deref() == Some("shop-v1")
    })
    .unwrap();

    // Every etcd member down: degraded, and the last good config keeps serving.
    cluster.kill_all();
    poll(DEADLINE, "/readyz says degraded", || {
        admin(serve.bound.admin, "/readyz")
            .is_some_and(|(code, body)| code == 503 && body.contains("degraded"))
    })
    .unwrap();
    let (_, metrics) = admin(serve.bound.admin, "/metrics").expect("metrics");
    assert!(
        metrics.contains("sluice_serve_store_degraded 1"),
        "{metrics}"
    );
    // An apply meanwhile fails with a clear error and changes nothing.
    let refused = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            match EtcdStore::connect(&url).await {
                Err(e) => e.to_string(),
                Ok(mut store) => {
                    let docs = store::documents(&Inputs::from_text("shop.yaml", &first), "default");
                    apply(&mut store, &docs, true, false)
                        .await
                        .expect_err("etcd is down")
                        .to_string()
                }
            }
        });
    assert!(
        refused.contains("etcd at") && refused.contains("hint:"),
        "{refused}"
    );
    assert_eq!(served_by(p1).as_deref(), Some("shop-v1"));
    // A proxy that joins now gets the last good config too.
    let e2 = start_envoy(&first, &[serve.bound.xds], "proxy-2");
    let p2 = wait_listener(&e2, LISTENER).unwrap();
    poll(DEADLINE, "the new proxy routes", || {
        served_by(p2).as_deref() == Some("shop-v1")
    })
    .unwrap();

    // etcd back: ready again, and an apply reaches both proxies.
    cluster.restart().unwrap_or_else(|e| panic!("{e:#}"));
    poll(DEADLINE, "/readyz ready again", || {
        admin(serve.bound.admin, "/readyz").is_some_and(|(code, _)| code == 200)
    })
    .unwrap();
    apply_text(&url, &shop_mesh(&v1, &v2, [0, 100]));
    for port in [p1, p2] {
        poll(DEADLINE, "the new split", || {
            served_by(port).as_deref() == Some("shop-v2")
        })
        .unwrap();
    }
    poll(DEADLINE, "the degraded gauge back to 0", || {
        admin(serve.bound.admin, "/metrics")
            .is_some_and(|(_, metrics)| metrics.contains("sluice_serve_store_degraded 0"))
    })
    .unwrap();
}

/// Replica `admin`'s `/endpoints`: probe key -> (health, the replica that probes it).
fn endpoints(admin_address: SocketAddr) -> BTreeMap<String, (String, String)> {
    let doc: Value = admin(admin_address, "/endpoints")
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or(Value::Null);
    doc["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["key"].as_str()?.to_owned(),
                (
                    e["health"].as_str()?.to_owned(),
                    e["probed_by"].as_str()?.to_owned(),
                ),
            ))
        })
        .collect()
}

/// Two replicas on one store share the probing of 20 endpoints (each probed by one replica,
/// both serving every endpoint's health); a replica killed by PID hands its endpoints to the
/// other within the fleet's TTL, which then finds a failure among them and takes the endpoint
/// out of its Envoy's traffic.
#[test]
fn replicas_share_the_probing_and_a_dead_replicas_endpoints_keep_being_probed() {
    const PERIOD: Duration = Duration::from_secs(1);
    let cluster = EtcdCluster::start(3).unwrap_or_else(|e| panic!("{e:#}"));
    let url: StoreUrl = cluster.store_url("/fleet").parse().expect("url");
    let upstreams: Vec<Upstream> = (0..20)
        .map(|i| Upstream::start(&format!("ep{i}")))
        .collect();
    let ports: Vec<u16> = upstreams.iter().map(Upstream::port).collect();
    let mesh_text = probed_mesh(&ports, PERIOD, 2);
    apply_text(&url, &mesh_text);
    let ttl = ["--fleet-ttl", "2s"];
    let mut replicas = vec![
        Some(replica_process(&url, &ttl)),
        Some(replica_process(&url, &ttl)),
    ];

    // Both replicas serve all 20 HEALTHY, agree on who probes each, and each probes some.
    let mut owners = BTreeMap::new();
    poll(
        DEADLINE,
        "both replicas agree on 20 healthy endpoints",
        || {
            let (a, b) = (endpoints(live(&replicas, 0)), endpoints(live(&replicas, 1)));
            owners = a
                .values()
                .map(|(_, by)| by.clone())
                .fold(BTreeMap::new(), |mut m, by| {
                    *m.entry(by).or_insert(0) += 1;
                    m
                });
            a.len() == 20 && a == b && a.values().all(|(h, _)| h == "HEALTHY") && owners.len() == 2
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}: {:?}", endpoints(live(&replicas, 0))));
    eprintln!("endpoints per replica: {owners:?}");

    // Each endpoint is probed about once per period in all, not once per replica.
    for u in &upstreams {
        u.clear_requests();
    }
    let started = std::time::Instant::now();
    std::thread::sleep(PERIOD * 5);
    let periods = (started.elapsed().as_secs_f64() / PERIOD.as_secs_f64()).ceil() as usize;
    for u in &upstreams {
        let probes = u.request_count();
        assert!(
            (1..=periods + 2).contains(&probes),
            "{}: {probes} probes in {periods} periods",
            u.name()
        );
    }

    // An Envoy on replica 0; replica 1 is killed by PID.
    let envoy = start_envoy(
        &mesh_text,
        &[replicas[0].as_ref().expect("running").xds],
        "proxy-1",
    );
    let port = wait_listener(&envoy, LISTENER).unwrap();
    poll(DEADLINE, "the Envoy routes", || served_by(port).is_some()).unwrap();
    let survivor_name = endpoints(live(&replicas, 0))
        .values()
        .map(|(_, by)| by.clone())
        .find(|by| by.contains(&replicas[0].as_ref().expect("running").xds.to_string()))
        .expect("replica 0 probes some endpoints");
    let orphans: Vec<usize> = endpoints(live(&replicas, 0))
        .iter()
        .filter(|(_, (_, by))| *by != survivor_name)
        .filter_map(|(key, _)| ports.iter().position(|p| key.ends_with(&format!(":{p}"))))
        .collect();
    assert!(!orphans.is_empty());
    replicas[1].take().expect("running").kill();
    let killed = std::time::Instant::now();
    poll(DEADLINE, "replica 0 probes every endpoint", || {
        endpoints(live(&replicas, 0))
            .values()
            .all(|(health, by)| *by == survivor_name && health == "HEALTHY")
    })
    .unwrap_or_else(|e| panic!("{e:#}: {:?}", endpoints(live(&replicas, 0))));
    eprintln!(
        "the dead replica's {} endpoints taken over {:.1} s after the kill (TTL 2 s)",
        orphans.len(),
        killed.elapsed().as_secs_f64()
    );

    // One of them fails now: the survivor finds it and its Envoy stops sending to it.
    let failing = &upstreams[orphans[0]];
    failing.set_behavior(Behavior::Status(503));
    let failing_key = format!("127.0.0.1:{}", failing.port());
    poll(DEADLINE, "the survivor marks it UNHEALTHY", || {
        endpoints(live(&replicas, 0))
            .get(&failing_key)
            .is_some_and(|(health, _)| health == "UNHEALTHY")
    })
    .unwrap();
    let mut in_a_row = 0;
    poll(DEADLINE, "50 requests in a row succeed", || {
        in_a_row = if served_by(port).is_some() {
            in_a_row + 1
        } else {
            0
        };
        in_a_row >= 50
    })
    .unwrap();
    failing.clear_requests();
    for _ in 0..100 {
        assert!(
            served_by(port).is_some(),
            "a request failed after the switch"
        );
    }
    let reached = failing
        .requests()
        .iter()
        .filter(|r| r.path != "/healthz")
        .count();
    assert_eq!(reached, 0, "the UNHEALTHY endpoint still got traffic");
    drop(envoy);
}
