//! VM registration against a real etcd, `sluice serve` and a real Envoy 1.40.
//!
//! - Over HTTP (`sluice serve --store URL --register-token-file FILE`, `POST /register` on the
//!   admin port): a wrong or missing token is refused (401) and nothing changes; the right one
//!   writes the VM's WorkloadEntry under a lease, and the VM appears in the Envoy's EDS and
//!   serves traffic; `leave` drains it, then removes it.
//! - With the CLI as a VM's service manager runs it (`sluice register` processes, stopped with
//!   SIGTERM or `--leave`): VMs join and leave under load, each leaving one drained first, its
//!   server stopped the moment the command returns, and no request fails (the route retries
//!   nothing, so a request sent to a vanished VM would).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice::serve::{Running, ServeConfig};
use sluice::store::StoreUrl;
use sluice::store::etcd::{EtcdStore, apply};
use sluice::{Inputs, Options};
use sluice_integration::cli::{RegisterProcess, sluice_binary};
use sluice_integration::client::{self, NO_HEADERS, Request};
use sluice_integration::envoy::Envoy;
use sluice_integration::etcd::EtcdCluster;
use sluice_integration::mesh;
use sluice_integration::serve::{Load, poll, start_xds_envoy, wait_listener};
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

/// `sluice apply` of `mesh`, through the library the CLI calls.
fn apply_mesh(url: &StoreUrl, mesh: &str) {
    let (documents, _) =
        sluice::store::check(&Inputs::from_text("mesh.yaml", mesh), &Options::default())
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
    let mut ports: Vec<u16> = envoy
        .cluster_hosts(CLUSTER)
        .into_iter()
        .map(|(port, _)| port)
        .collect();
    ports.sort_unstable();
    ports
}

#[test]
fn a_vm_registers_over_http_with_the_token_and_appears_in_eds() {
    let cluster = EtcdCluster::start(1).unwrap_or_else(|e| panic!("{e:#}"));
    let url: StoreUrl = cluster.store_url("/register-http").parse().expect("url");
    apply_mesh(&url, MESH);
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
    // Answered after the default drain, so the VM may stop serving once it has the answer.
    assert_eq!(answer["drainedSeconds"], json!(5.0), "{answer}");
    poll(DEADLINE, "the VM gone from Envoy's EDS", || {
        hosts(&envoy).is_empty()
    })
    .unwrap_or_else(|e| panic!("{e:#}: {:?}", hosts(&envoy)));
    drop(serve);
}

/// A VM: its server, and the `sluice register` process that keeps it registered.
struct Vm {
    server: Upstream,
    address: String,
    registration: RegisterProcess,
}

impl Vm {
    /// Starts VM number `n`'s server on `127.0.0.<n+1>` (registrations are named after the
    /// address), then registers it, as a VM's unit orders them: serving first.
    fn join(store: &str, n: u8) -> Vm {
        let ip = std::net::Ipv4Addr::new(127, 0, 0, n + 1);
        let server = Upstream::start_on(&format!("vm-{n}"), ip.into(), 0);
        let address = ip.to_string();
        let args = register_args(store, &address, &server, &[]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let registration = RegisterProcess::start(&args).unwrap_or_else(|e| panic!("{e:#}"));
        Vm {
            server,
            address,
            registration,
        }
    }
}

/// `sluice register` arguments for `vm` in the ratings-vm group.
fn register_args(store: &str, address: &str, vm: &Upstream, more: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--store",
        store,
        "--group",
        "ratings-vm",
        "--address",
        address,
        "--ttl",
        "10s",
        "--drain",
        "3s",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    args.push("--port".into());
    args.push(format!("http={}", vm.port()));
    args.extend(more.iter().map(ToString::to_string));
    args
}

#[test]
fn vms_join_and_leave_under_load_and_no_request_fails() {
    let cluster = EtcdCluster::start(1).unwrap_or_else(|e| panic!("{e:#}"));
    let store = cluster.store_url("/register-load");
    let url: StoreUrl = store.parse().expect("url");
    // No retries: a request sent to a VM that has gone fails, and the load sees it.
    let mesh = MESH.replace(
        "    - destination: {host: ratings}\n",
        "    - destination: {host: ratings}\n    retries: {attempts: 0}\n",
    );
    assert_ne!(mesh, MESH);
    apply_mesh(&url, &mesh);
    let localhost: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let serve = Running::start(ServeConfig {
        xds_listen: localhost,
        admin_listen: localhost,
        store: Some(url),
        ..ServeConfig::new(Vec::new(), mesh::options())
    })
    .expect("serve starts");
    let envoy = start_xds_envoy(&mesh, &[serve.bound.xds], "client-1").expect("Envoy starts");
    let port = wait_listener(&envoy, "listener_9080").unwrap();
    let mut vms: Vec<Vm> = (1..=3).map(|n| Vm::join(&store, n)).collect();
    let ports = |vms: &[Vm]| {
        let mut p: Vec<u16> = vms.iter().map(|v| v.server.port()).collect();
        p.sort_unstable();
        p
    };
    let want = ports(&vms);
    poll(DEADLINE, "the three VMs in Envoy's EDS", || {
        hosts(&envoy) == want
    })
    .unwrap_or_else(|e| panic!("{e:#}: {:?}", hosts(&envoy)));
    let load = Load::start(port, "ratings");

    // One joins under load: in Envoy's EDS soon after `sluice register` says it joined.
    let joining = Instant::now();
    vms.push(Vm::join(&store, 4));
    let new_port = vms[3].server.port();
    poll(DEADLINE, "the joining VM in Envoy's EDS", || {
        hosts(&envoy).contains(&new_port)
    })
    .unwrap_or_else(|e| panic!("{e:#}: {:?}", hosts(&envoy)));
    eprintln!(
        "a VM joined Envoy's EDS {:?} after it started registering",
        joining.elapsed()
    );
    poll(DEADLINE, "traffic to the joining VM", || {
        vms[3].server.request_count() > 0
    })
    .unwrap();

    // One leaves as `systemctl stop` stops it: SIGTERM, the command drains and exits, and
    // the server stops at once.
    let mut leaving = vms.remove(0);
    let status = leaving.registration.terminate().expect("it exits");
    assert!(
        status.success(),
        "{status}: {}",
        leaving.registration.output()
    );
    let output = leaving.registration.output();
    assert!(
        output.contains("draining ") && output.contains("left: "),
        "{output}"
    );
    let served = leaving.server.request_count();
    assert!(served > 0, "the leaving VM had traffic before it left");
    drop(leaving);

    // One leaves with `sluice register --leave` (its unit's ExecStop), then stops.
    let leaving = vms.remove(0);
    let run = std::process::Command::new(sluice_binary().expect("built"))
        .arg("register")
        .args(register_args(
            &store,
            &leaving.address,
            &leaving.server,
            &["--leave"],
        ))
        .output()
        .expect("sluice register --leave runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success() && stdout.contains("left: "),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    drop(leaving);

    // Traffic goes on to the two that stayed; not one request failed.
    let settle = load.sent() + 200;
    poll(DEADLINE, "more traffic after the leaves", || {
        load.sent() > settle
    })
    .unwrap();
    let (sent, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed while VMs joined and left: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let want = ports(&vms);
    poll(DEADLINE, "only the staying VMs in Envoy's EDS", || {
        hosts(&envoy) == want
    })
    .unwrap_or_else(|e| panic!("{e:#}: {:?}", hosts(&envoy)));
    eprintln!("{sent} requests, none failed, while 1 VM joined and 2 left (drained 3 s each)");
    drop(serve);
}
