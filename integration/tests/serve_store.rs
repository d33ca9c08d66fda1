//! `sluice serve --store`: control-plane replicas on a real 3-member etcd cluster, real Envoy
//! 1.40 proxies fed only by them, and `sluice apply`'s library.
//!
//! 1. Two replicas serve what was applied, with the same versions; an Envoy whose replica is
//!    killed under load fails over to the other and gets the next apply from it; no request
//!    fails on the way.
//! 2. With every etcd member down, a replica keeps serving its last good config to the proxies
//!    it has and to a new one, says `degraded` on /readyz and /metrics, and catches up when etcd
//!    returns.
//!
//! No fixed sleep is an assertion: every wait polls with a generous deadline.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use sluice::serve::{Running, ServeConfig};
use sluice::store::etcd::{EtcdStore, apply};
use sluice::store::{self, StoreUrl};
use sluice::{Inputs, Options, Target, XdsBootstrap};
use sluice_integration::client::{self, NO_HEADERS, Request};
use sluice_integration::envoy::{Envoy, EnvoyOptions};
use sluice_integration::etcd::EtcdCluster;
use sluice_integration::mesh;
use sluice_integration::serve::{Load, poll, shop_mesh, wait_listener};
use sluice_integration::upstream::Upstream;

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

fn live(replicas: &[Option<Running>], i: usize) -> &Running {
    replicas[i].as_ref().expect("running")
}

fn admin(running: &Running, path: &str) -> Option<(u16, String)> {
    client::send(
        &Request::get(running.bound.admin.port(), path)
            .authority("127.0.0.1")
            .timeout(Duration::from_secs(10)),
    )
    .ok()
    .map(|r| (r.status, r.text()))
}

fn status(running: &Running) -> Value {
    admin(running, "/status")
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or(Value::Null)
}

fn version(running: &Running) -> Option<String> {
    status(running)["config"]["version"]
        .as_str()
        .map(str::to_owned)
}

fn has_proxy(running: &Running, node: &str) -> bool {
    status(running)["proxies"]
        .as_array()
        .is_some_and(|list| list.iter().any(|p| p["id"] == node))
}

/// An Envoy joining the replicas `servers` (in that order) as `node`, with the `envoy-xds`
/// bootstrap `sluice generate` writes.
fn start_envoy(mesh_text: &str, servers: &[SocketAddr], node: &str) -> Envoy {
    let options = Options {
        target: Target::EnvoyXds(XdsBootstrap {
            servers: servers.iter().map(ToString::to_string).collect(),
            node_id: node.to_owned(),
            node_cluster: "mesh".to_owned(),
            delta: false,
            module_servers: Vec::new(),
        }),
        ..mesh::options()
    };
    let output = sluice::generate(&Inputs::from_text("shop.yaml", mesh_text), &options)
        .unwrap_or_else(|d| panic!("{d}"));
    let config_yaml = String::from_utf8(output.files["envoy.yaml"].clone()).expect("UTF-8");
    Envoy::start_with(EnvoyOptions {
        config_yaml,
        ..EnvoyOptions::default()
    })
    .expect("Envoy starts")
}

fn served_by(port: u16) -> Option<String> {
    client::get(port, "shop", "/", NO_HEADERS)
        .ok()
        .filter(|r| r.status == 200)
        .and_then(|r| r.served_by().map(str::to_owned))
}

#[test]
fn two_replicas_serve_the_same_versions_and_an_envoy_fails_over_under_load() {
    let cluster = EtcdCluster::start(3).unwrap_or_else(|e| panic!("{e:#}"));
    let url: StoreUrl = cluster.store_url("/replicas").parse().expect("url");
    let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
    let first = shop_mesh(&v1, &v2, [100, 0]);
    assert_eq!(apply_text(&url, &first), 1);

    let mut replicas = vec![Some(replica(&url)), Some(replica(&url))];
    poll(DEADLINE, "both replicas ready with one version", || {
        let (a, b) = (version(live(&replicas, 0)), version(live(&replicas, 1)));
        a.is_some() && a == b
    })
    .unwrap();
    let addresses: Vec<SocketAddr> = replicas
        .iter()
        .map(|r| r.as_ref().expect("running").bound.xds)
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

    // Kill the replica proxy-1 is attached to, under load.
    let attached = (0..2)
        .find(|i| has_proxy(live(&replicas, *i), "proxy-1"))
        .expect("proxy-1 is attached to a replica");
    let other = 1 - attached;
    let load = Load::start(p1, "shop");
    replicas[attached].take().expect("running").stop();
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

    // The next apply reaches it through the replica that is left.
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
        admin(&serve, "/readyz").is_some_and(|(code, _)| code == 200)
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
        admin(&serve, "/readyz")
            .is_some_and(|(code, body)| code == 503 && body.contains("degraded"))
    })
    .unwrap();
    let (_, metrics) = admin(&serve, "/metrics").expect("metrics");
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
        admin(&serve, "/readyz").is_some_and(|(code, _)| code == 200)
    })
    .unwrap();
    apply_text(&url, &shop_mesh(&v1, &v2, [0, 100]));
    for port in [p1, p2] {
        poll(DEADLINE, "the new split", || {
            served_by(port).as_deref() == Some("shop-v2")
        })
        .unwrap();
    }
    let (_, metrics) = admin(&serve, "/metrics").expect("metrics");
    assert!(
        metrics.contains("sluice_serve_store_degraded 0"),
        "{metrics}"
    );
}
