//! VM registration over HTTP (`sluice serve --store URL --register-token-file FILE`, `POST
//! /register` on the admin port) against a real etcd and a real Envoy 1.40: a wrong or missing
//! token is refused (401) and nothing changes; the right one writes the VM's WorkloadEntry
//! under a lease, and the VM appears in the Envoy's EDS and serves traffic; `leave` removes it.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use sluice::serve::{Running, ServeConfig};
use sluice::store::StoreUrl;
use sluice::store::etcd::{EtcdStore, apply};
use sluice::{Inputs, Options};
use sluice_integration::client::{self, NO_HEADERS, Request};
use sluice_integration::envoy::Envoy;
use sluice_integration::etcd::EtcdCluster;
use sluice_integration::mesh;
use sluice_integration::serve::{poll, start_xds_envoy, wait_listener};
use sluice_integration::upstream::Upstream;

const TOKEN: &str = "0b3f1c5e9a7d4e2f8c6b1a0d9e8f7a6b";
const DEADLINE: Duration = Duration::from_secs(60);
const CLUSTER: &str = "outbound|9080||ratings";

const MESH: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings}
spec:
  hosts: [ratings]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: ratings-vm}
spec:
  metadata: {labels: {app: ratings}}
  template: {ports: {http: 9080}, serviceAccount: ratings}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
";

/// `sluice apply` of [`MESH`], through the library the CLI calls.
fn apply_mesh(url: &StoreUrl) {
    let (documents, _) =
        sluice::store::check(&Inputs::from_text("mesh.yaml", MESH), &Options::default())
            .unwrap_or_else(|d| panic!("{d}"));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let mut store = EtcdStore::connect(url).await.expect("connect");
            apply(&mut store, &documents, true, false)
                .await
                .expect("apply");
        });
}

/// POST `/register` with `body` and, if any, the bearer `token`: status and JSON answer.
fn post(admin: SocketAddr, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut request = Request::new("POST", admin.port(), "/register")
        .authority("127.0.0.1")
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(Duration::from_secs(30));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = client::send(&request).expect("the admin port answers");
    let doc = serde_json::from_str(&response.text()).unwrap_or(Value::Null);
    (response.status, doc)
}

/// The ports of the hosts Envoy has in the ratings cluster.
fn hosts(envoy: &Envoy) -> Vec<u16> {
    envoy
        .cluster_hosts(CLUSTER)
        .into_iter()
        .map(|(port, _)| port)
        .collect()
}

#[test]
fn a_vm_registers_over_http_with_the_token_and_appears_in_eds() {
    let cluster = EtcdCluster::start(1).unwrap_or_else(|e| panic!("{e:#}"));
    let url: StoreUrl = cluster.store_url("/register-http").parse().expect("url");
    apply_mesh(&url);
    let localhost: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let serve = Running::start(ServeConfig {
        xds_listen: localhost,
        admin_listen: localhost,
        store: Some(url),
        register_token: Some(TOKEN.to_owned()),
        ..ServeConfig::new(Vec::new(), mesh::options())
    })
    .expect("serve starts");
    let admin = serve.bound.admin;
    let envoy = start_xds_envoy(MESH, &[serve.bound.xds], "client-1").expect("Envoy starts");
    let port = wait_listener(&envoy, "listener_9080").unwrap();
    poll(DEADLINE, "the ratings cluster in Envoy", || {
        envoy
            .admin_get("/clusters?format=json")
            .is_ok_and(|(_, t)| t.contains(CLUSTER))
    })
    .unwrap();

    let vm = Upstream::start("ratings-vm-1");
    let body = json!({
        "group": "ratings-vm",
        "address": "127.0.0.1",
        "ports": {"http": vm.port()},
        "labels": {"zone": "a"},
        "ttlSeconds": 10,
    });

    // A wrong token, and none: 401, nothing written.
    let (status, answer) = post(admin, Some("not-the-token"), &body);
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("Bearer")),
        "{answer}"
    );
    assert_eq!(post(admin, None, &body).0, 401);
    std::thread::sleep(Duration::from_secs(1));
    assert!(hosts(&envoy).is_empty(), "no endpoint: {:?}", hosts(&envoy));

    // A group the store lacks: 404, with the fix.
    let (status, answer) = post(
        admin,
        Some(TOKEN),
        &json!({"group": "nope", "address": "127.0.0.1"}),
    );
    assert_eq!(status, 404, "{answer}");

    // The right token: the VM's entry, under a lease; Envoy gets it by EDS and sends it traffic.
    let (status, answer) = post(admin, Some(TOKEN), &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["name"], "ratings-vm-127-0-0-1");
    assert_eq!(answer["ttlSeconds"], 10);
    poll(DEADLINE, "the VM in Envoy's EDS", || {
        hosts(&envoy) == [vm.port()]
    })
    .unwrap_or_else(|e| panic!("{e:#}: {:?}", hosts(&envoy)));
    poll(DEADLINE, "traffic to the VM", || {
        client::get(port, "ratings", "/", NO_HEADERS)
            .is_ok_and(|r| r.status == 200 && r.served_by() == Some("ratings-vm-1"))
    })
    .unwrap();

    // Leaving removes it at once (no lease to wait for).
    let (status, answer) = post(
        admin,
        Some(TOKEN),
        &json!({"group": "ratings-vm", "address": "127.0.0.1", "leave": true}),
    );
    assert_eq!((status, &answer["left"]), (200, &json!(true)), "{answer}");
    poll(DEADLINE, "the VM gone from Envoy's EDS", || {
        hosts(&envoy).is_empty()
    })
    .unwrap_or_else(|e| panic!("{e:#}: {:?}", hosts(&envoy)));
    drop(serve);
}
