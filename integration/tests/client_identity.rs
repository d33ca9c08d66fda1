//! The client address the filters act on, through a real Envoy 1.40 on builder-generated
//! configs: every generated HTTP listener sets `use_remote_address: true` and
//! `xff_num_trusted_hops` from `--xff-trusted-hops` (default 0), so Envoy's downstream remote
//! address (the `source.address` property fault `trustedCidrs` and canary sticky
//! `sourceAddress` read) is the TCP peer, not whatever a client writes in `x-forwarded-for`.
//! With N trusted hops it is the N-th `x-forwarded-for` entry from the right.
//!
//! Needs the modules: `cargo xtask build-wasm` (router, canary, fault, breaker).

use std::collections::BTreeSet;

use sluice_integration::client::{self, Request};
use sluice_integration::envoy::Envoy;
use sluice_integration::mesh;
use sluice_integration::upstream::Upstream;

const LISTENER: &str = "listener_9080";
const ABORTS: &str = "wasmcustom.sluice.fault.header.aborts_injected";

/// `shop` v1 / v2; header faults trusted from 10.0.0.0/8 only (the `broken` rule's fault puts
/// the fault filter in the chain); a 50/50 split sticky on the client address.
fn shop_mesh(v1: &Upstream, v2: &Upstream) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: shop}}
spec:
  hosts: [shop]
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {v1}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {v2}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: shop}}
spec:
  host: shop
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: shop
  annotations:
    sluice.dev/canary: |
      rollout:
        sticky: {{sourceAddress: true}}
    sluice.dev/fault: |
      headerFaults: {{trustedCidrs: [10.0.0.0/8]}}
spec:
  hosts: [shop]
  http:
  - name: broken
    match: [{{headers: {{x-fault: {{exact: abort}}}}}}]
    fault: {{abort: {{httpStatus: 555, percentage: {{value: 100}}}}}}
    route: [{{destination: {{host: shop, subset: v1}}}}]
  - name: rollout
    route:
    - {{destination: {{host: shop, subset: v1}}, weight: 50}}
    - {{destination: {{host: shop, subset: v2}}, weight: 50}}
",
        v1 = v1.port(),
        v2 = v2.port()
    )
}

fn start(hops: u32) -> (Envoy, Upstream, Upstream) {
    let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
    let options = sluice::Options {
        xff_trusted_hops: hops,
        ..mesh::options()
    };
    let text = shop_mesh(&v1, &v2);
    let yaml = mesh::envoy_yaml_with(&sluice::Inputs::from_text("mesh.yaml", &text), &options)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(yaml.contains("use_remote_address: true"), "{yaml}");
    assert!(
        yaml.contains(&format!("xff_num_trusted_hops: {hops}")),
        "{yaml}"
    );
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e:#}\n{yaml}"));
    (envoy, v1, v2)
}

fn send(envoy: &Envoy, xff: &str, abort: bool) -> client::Response {
    let mut request = Request::get(envoy.listener_port(LISTENER), "/")
        .authority("shop")
        .header("x-forwarded-for", xff);
    if abort {
        request = request.header("x-envoy-fault-abort-request", "418");
    }
    client::send(&request).unwrap_or_else(|e| panic!("GET xff {xff}: {e:#}\n{}", envoy.log()))
}

/// The members that served one request per `x-forwarded-for` value.
fn members(envoy: &Envoy, xffs: &[String]) -> BTreeSet<String> {
    xffs.iter()
        .map(|xff| {
            let r = send(envoy, xff, false);
            assert_eq!(r.status, 200, "xff {xff}");
            r.served_by().unwrap_or_default().to_owned()
        })
        .collect()
}

#[test]
fn a_spoofed_x_forwarded_for_is_not_the_client() {
    let (envoy, _v1, _v2) = start(0);
    // From 127.0.0.1 claiming 10.1.2.3 (trusted for fault headers): not obeyed.
    for xff in ["10.1.2.3", "192.0.2.7, 10.1.2.3"] {
        let r = send(&envoy, xff, true);
        assert_eq!(r.status, 200, "xff {xff}: the fault header was obeyed");
        assert!(r.served_by().is_some(), "xff {xff}");
    }
    assert_eq!(envoy.stat(ABORTS), Some(0));
    // 40 different claimed addresses, one real one: one sticky member for all of them (if the
    // claims were the key, all 40 on one member of a 50/50 split has probability 2^-39).
    let xffs: Vec<String> = (0..40).map(|i| format!("10.9.{i}.1")).collect();
    let served = members(&envoy, &xffs);
    assert_eq!(
        served.len(),
        1,
        "the sticky key followed the XFF: {served:?}"
    );
}

#[test]
fn with_one_trusted_hop_the_entry_that_proxy_appended_is_the_client() {
    let (envoy, _v1, _v2) = start(1);
    // The trusted proxy appended 192.0.2.7 (the rightmost entry): that is the client, and the
    // 10.1.2.3 its client wrote on the left is not believed.
    let r = send(&envoy, "10.1.2.3, 192.0.2.7", true);
    assert_eq!(
        r.status, 200,
        "a spoofed entry left of the trusted one was obeyed"
    );
    assert_eq!(envoy.stat(ABORTS), Some(0));
    // A client the trusted proxy saw at 10.1.2.3 is trusted for fault headers.
    let r = send(&envoy, "192.0.2.7, 10.1.2.3", true);
    assert_eq!(
        r.status, 418,
        "the trusted entry 10.1.2.3 was not the client"
    );
    assert_eq!(envoy.stat(ABORTS), Some(1));
    // The sticky key is that entry: different clients spread over both members, and each
    // stays on its own whatever it writes to the left.
    let xffs: Vec<String> = (0..40).map(|i| format!("10.9.{i}.1")).collect();
    let served = members(&envoy, &xffs);
    assert_eq!(
        served.len(),
        2,
        "clients behind the proxy share one key: {served:?}"
    );
    for xff in xffs.iter().take(10) {
        let first = members(&envoy, std::slice::from_ref(xff));
        let spoofed: Vec<String> = (0..5).map(|i| format!("172.16.0.{i}, {xff}")).collect();
        let again = members(&envoy, &spoofed);
        assert_eq!(first, again, "{xff}: the left entries moved the client");
    }
}
