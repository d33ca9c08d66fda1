//! A build that reuses the last one's work ([`sluice::Reuse`]: the parse of unchanged files,
//! the plugin configs already compiled), as `sluice serve` runs on every change, gives exactly
//! what a build from nothing gives: the same resources, the same warnings, the same errors,
//! through a sequence of edits that changes, breaks, fixes, adds and removes files.
use std::path::Path;

use sluice::{Inputs, Options, Reuse, SourceFile, served, served_reusing};

/// The outcome of a build, comparable: the resource set, the probed endpoints and the
/// warnings, or the diagnostics.
/// With `reuse`, its parsed resources go back to it, as `sluice serve` gives them back.
fn outcome(
    built: Result<sluice::Served, sluice::Diagnostics>,
    reuse: Option<&mut Reuse>,
) -> Result<String, String> {
    match built {
        Ok(s) => {
            let seen = Ok(format!(
                "{:#?}\n{:#?}\n{}\n{:?}\n{:?}",
                s.set,
                s.probed,
                s.warnings,
                s.guarded,
                s.resources
                    .iter()
                    .map(|r| (&r.file, r.id(), &r.namespace))
                    .collect::<Vec<_>>()
            ));
            if let Some(reuse) = reuse {
                reuse.restore(s.resources);
            }
            seen
        }
        Err(diags) => Err(diags.to_string()),
    }
}

fn demo() -> Inputs {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo");
    Inputs::read(&[dir]).expect("the demo mesh reads")
}

fn edit(inputs: &mut Inputs, file: &str, from: &str, to: &str) {
    let f = inputs
        .files
        .iter_mut()
        .find(|f| f.name.ends_with(file))
        .unwrap_or_else(|| panic!("no {file} in the inputs"));
    assert!(f.text.contains(from), "{file} has no {from:?}");
    f.text = f.text.replacen(from, to, 1);
}

/// One build reusing `reuse`, checked against a build from nothing; returns whether it was
/// good.
fn step(what: &str, inputs: &Inputs, options: &Options, reuse: &mut Reuse) -> bool {
    let none = std::collections::BTreeMap::new();
    let reused = outcome(served_reusing(inputs, options, &none, reuse), Some(reuse));
    let fresh = outcome(served(inputs, options), None);
    assert_eq!(reused, fresh, "{what}: the reusing build differs");
    reused.is_ok()
}

fn edits_give_what_a_fresh_build_gives(options: &Options) {
    let mut reuse = Reuse::default();
    let mut inputs = demo();
    assert!(step("first build", &inputs, options, &mut reuse));
    assert!(step("same input again", &inputs, options, &mut reuse));

    edit(&mut inputs, "routing.yaml", "weight: 90", "weight: 70");
    edit(&mut inputs, "routing.yaml", "weight: 10", "weight: 30");
    assert!(step("canary weight changed", &inputs, options, &mut reuse));

    // A cluster's resources are kept only while the cluster is as it was: one host's clusters
    // change beside unchanged ones, then one endpoint moves.
    edit(
        &mut inputs,
        "destination-rules.yaml",
        "  host: reviews\n",
        "  host: reviews\n  trafficPolicy: {connectionPool: {tcp: {maxConnections: 7}}}\n",
    );
    assert!(step(
        "one host's connection pool",
        &inputs,
        options,
        &mut reuse
    ));
    edit(
        &mut inputs,
        "services.yaml",
        "address: 127.0.0.1",
        "address: 127.0.0.2",
    );
    assert!(step("an endpoint moved", &inputs, options, &mut reuse));
    edit(
        &mut inputs,
        "services.yaml",
        "address: 127.0.0.2",
        "address: 127.0.0.1",
    );
    edit(
        &mut inputs,
        "destination-rules.yaml",
        "maxConnections: 7",
        "maxConnections: 8",
    );
    assert!(step(
        "the endpoint back, the pool changed again",
        &inputs,
        options,
        &mut reuse
    ));
    edit(
        &mut inputs,
        "destination-rules.yaml",
        "  trafficPolicy: {connectionPool: {tcp: {maxConnections: 8}}}\n",
        "",
    );

    edit(
        &mut inputs,
        "routing.yaml",
        "subset: v2}\n      weight: 30",
        "subset: v9}\n      weight: 30",
    );
    assert!(!step("an unknown subset", &inputs, options, &mut reuse));
    edit(&mut inputs, "routing.yaml", "subset: v9}", "subset: v2}");
    assert!(step("the subset fixed", &inputs, options, &mut reuse));

    // A route table is kept only while what it is written from is as it was: each edit below
    // changes one rule's route (its timeout, its retries, a destination's headers, the clusters
    // of its split) while its weights and every other rule stay.
    let canary = "  - name: ratings-canary\n    route:\n";
    edit(
        &mut inputs,
        "routing.yaml",
        canary,
        "  - name: ratings-canary\n    timeout: 3s\n    route:\n",
    );
    assert!(step(
        "a timeout on the canary",
        &inputs,
        options,
        &mut reuse
    ));
    edit(
        &mut inputs,
        "routing.yaml",
        "    timeout: 3s\n",
        "    retries: {attempts: 2, retryOn: 5xx}\n",
    );
    assert!(step("retries instead", &inputs, options, &mut reuse));
    edit(&mut inputs, "routing.yaml", "attempts: 2", "attempts: 3");
    assert!(step("another retry count", &inputs, options, &mut reuse));
    edit(
        &mut inputs,
        "routing.yaml",
        "      weight: 30",
        "      weight: 30\n      headers: {request: {set: {x-version: v2}}}",
    );
    assert!(step(
        "a destination's headers",
        &inputs,
        options,
        &mut reuse
    ));
    edit(
        &mut inputs,
        "routing.yaml",
        "{host: ratings, subset: v2}\n      weight: 30",
        "{host: reviews, subset: v2}\n      weight: 30",
    );
    assert!(step("the split's clusters", &inputs, options, &mut reuse));
    edit(
        &mut inputs,
        "routing.yaml",
        "{host: reviews, subset: v2}\n      weight: 30\n      headers: {request: {set: {x-version: v2}}}",
        "{host: ratings, subset: v2}\n      weight: 30",
    );
    edit(
        &mut inputs,
        "routing.yaml",
        "    retries: {attempts: 3, retryOn: 5xx}\n",
        "",
    );
    assert!(step("the canary as it was", &inputs, options, &mut reuse));

    let services = inputs
        .files
        .iter()
        .position(|f| f.name.ends_with("services.yaml"))
        .expect("services.yaml");
    let kept = inputs.files[services].text.clone();
    inputs.files[services].text = format!("{kept}\n  bad: [unclosed\n");
    assert!(!step("a YAML syntax error", &inputs, options, &mut reuse));
    inputs.files[services].text = kept;
    assert!(step("syntax fixed", &inputs, options, &mut reuse));

    inputs.files.push(SourceFile {
        name: "extra.yaml".into(),
        text: "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: extra}
spec:
  hosts: [extra]
  ports: [{number: 8000, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.9}
"
        .into(),
    });
    assert!(step("a service added", &inputs, options, &mut reuse));

    // Findings of the per-resource checks of a file that did not change are its own, kept from
    // the build that checked it: a shadowed rule (SL904, a warning), then a validation error,
    // each while another file changes.
    inputs.files.last_mut().expect("extra.yaml").text.push_str(
        "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: extra}
spec:
  hosts: [extra]
  http:
  - route: [{destination: {host: extra}}]
    timeout: 5s
  - match: [{headers: {end-user: {exact: a}}}]
    route: [{destination: {host: extra}}]
",
    );
    assert!(step("a shadowed rule", &inputs, options, &mut reuse));
    edit(&mut inputs, "routing.yaml", "weight: 70", "weight: 60");
    edit(&mut inputs, "routing.yaml", "weight: 30", "weight: 40");
    assert!(step(
        "another file changed beside the shadowed rule",
        &inputs,
        options,
        &mut reuse
    ));
    edit(&mut inputs, "extra.yaml", "timeout: 5s", "timeout: soon");
    assert!(!step("an invalid timeout", &inputs, options, &mut reuse));
    edit(&mut inputs, "routing.yaml", "weight: 60", "weight: 70");
    edit(&mut inputs, "routing.yaml", "weight: 40", "weight: 30");
    assert!(!step(
        "another file changed beside the invalid timeout",
        &inputs,
        options,
        &mut reuse
    ));
    edit(&mut inputs, "extra.yaml", "timeout: soon", "timeout: 5s");
    assert!(step("the timeout fixed", &inputs, options, &mut reuse));
    inputs.files.pop();
    assert!(step("the service removed", &inputs, options, &mut reuse));

    edit(&mut inputs, "routing.yaml", "weight: 70", "weight: 90");
    edit(&mut inputs, "routing.yaml", "weight: 30", "weight: 10");
    assert!(step(
        "back to the first input",
        &inputs,
        options,
        &mut reuse
    ));
}

/// A gateway's route tables: one per certificate (SNI), and the redirect to HTTPS, each
/// changed while the weights of its canary change too.
fn gateway_edits_give_what_a_fresh_build_gives(options: &Options) {
    let mut reuse = Reuse::default();
    let mut inputs = demo();
    inputs.files.push(SourceFile {
        name: "edge.yaml".into(),
        text: "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [shop.example.com]
    tls: {mode: SIMPLE, serverCertificate: /certs/shop.crt, privateKey: /certs/shop.key}
  - port: {number: 443, name: https-admin, protocol: HTTPS}
    hosts: [admin.example.com]
    tls: {mode: SIMPLE, serverCertificate: /certs/admin.crt, privateKey: /certs/admin.key}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [shop.example.com, admin.example.com]
    tls: {httpsRedirect: false}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge}
spec:
  hosts: [shop.example.com, admin.example.com]
  gateways: [edge]
  http:
  - name: edge-split
    route:
    - {destination: {host: ratings, subset: v1}, weight: 80, headers: {request: {set: {x-v: one}}}}
    - {destination: {host: ratings, subset: v2}, weight: 20, headers: {request: {set: {x-v: two}}}}
"
        .into(),
    });
    assert!(step("a gateway", &inputs, options, &mut reuse));
    let edge = |inputs: &mut Inputs, from: &str, to: &str| edit(inputs, "edge.yaml", from, to);
    let weights = |inputs: &mut Inputs, from: (u32, u32), to: (u32, u32)| {
        edge(
            inputs,
            &format!("weight: {}", from.0),
            &format!("weight: {}", to.0),
        );
        edge(
            inputs,
            &format!("weight: {}", from.1),
            &format!("weight: {}", to.1),
        );
    };
    weights(&mut inputs, (80, 20), (70, 30));
    assert!(step("its weights", &inputs, options, &mut reuse));
    edge(&mut inputs, "httpsRedirect: false", "httpsRedirect: true");
    weights(&mut inputs, (70, 30), (60, 40));
    assert!(step("the redirect to HTTPS", &inputs, options, &mut reuse));
    // The virtual hosts stay, but move from one certificate's chain to the other's.
    edge(
        &mut inputs,
        "hosts: [shop.example.com]\n    tls",
        "hosts: [shop.example.com, admin.example.com]\n    tls",
    );
    edge(
        &mut inputs,
        "hosts: [admin.example.com]",
        "hosts: [ops.example.com]",
    );
    weights(&mut inputs, (60, 40), (50, 50));
    assert!(step("a certificate's hosts", &inputs, options, &mut reuse));
    edge(
        &mut inputs,
        "hosts: [shop.example.com, admin.example.com]\n  gateways",
        "hosts: [shop.example.com]\n  gateways",
    );
    assert!(step(
        "the virtual service's hosts",
        &inputs,
        options,
        &mut reuse
    ));
    // The routes of a split whose destinations set headers follow the split's order.
    let (v1, v2) = (
        "- {destination: {host: ratings, subset: v1}, weight: 50, headers: {request: {set: {x-v: one}}}}",
        "- {destination: {host: ratings, subset: v2}, weight: 50, headers: {request: {set: {x-v: two}}}}",
    );
    edge(
        &mut inputs,
        "kind: VirtualService\nmetadata: {name: edge}",
        "kind: VirtualService\nmetadata: {name: edge-routes}",
    );
    assert!(step(
        "the virtual service renamed",
        &inputs,
        options,
        &mut reuse
    ));
    edge(&mut inputs, v1, "FIRST");
    edge(&mut inputs, v2, v1);
    edge(&mut inputs, "FIRST", v2);
    assert!(step("the split's order", &inputs, options, &mut reuse));
}

#[test]
fn a_reusing_build_equals_a_fresh_one_for_a_gateway() {
    gateway_edits_give_what_a_fresh_build_gives(&Options::default());
}

#[test]
fn a_reusing_build_equals_a_fresh_one_in_the_chain_layout() {
    edits_give_what_a_fresh_build_gives(&Options::default());
}

#[test]
fn a_reusing_build_equals_a_fresh_one_in_the_suite_layout() {
    edits_give_what_a_fresh_build_gives(&Options {
        suite: true,
        ..Options::default()
    });
}
