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
