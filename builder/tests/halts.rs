//! Fleet halts (`sluice serve --spread-halts`, issue 29) in the model: which splits a halt can
//! be tied to (their fingerprints), and a halt taking the canary out of its split while the
//! split is unchanged (`sluice::model::halts`).
use sluice::Inputs;
use sluice::model::halts::{apply, guarded};
use sluice::model::{Mesh, Rule, Target};

fn rules(mesh: &Mesh) -> impl Iterator<Item = &Rule> {
    mesh.listeners
        .values()
        .flat_map(|l| &l.virtual_hosts)
        .flat_map(|vh| &vh.rules)
}

fn mesh(weights: [u32; 2], guard: &str) -> Mesh {
    let text = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: shop}}
spec:
  hosts: [shop]
  ports: [{{number: 8000, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, labels: {{version: v1}}}}
  - {{address: 127.0.0.2, labels: {{version: v2}}}}
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
      shop-split: {{{guard}}}
spec:
  hosts: [shop]
  http:
  - name: shop-split
    route:
    - destination: {{host: shop, subset: v1}}
      weight: {}
    - destination: {{host: shop, subset: v2}}
      weight: {}
",
        weights[0], weights[1]
    );
    sluice::model(
        &Inputs::from_text("mesh.yaml", &text),
        &sluice::Options::default(),
    )
    .unwrap_or_else(|d| panic!("{d}"))
    .mesh
}

fn split(mesh: &Mesh) -> Vec<(String, u32)> {
    rules(mesh)
        .find_map(|r| match &r.target {
            Target::Split(m) => Some(m.clone()),
            Target::Cluster(_) => None,
        })
        .expect("a split")
}

const GUARD: &str = "guard: {minRequests: 50}";

#[test]
fn only_guarded_splits_have_a_fingerprint_and_it_follows_the_split() {
    let guarded_90 = guarded(&mesh([90, 10], GUARD));
    assert_eq!(guarded_90.keys().collect::<Vec<_>>(), ["shop-split"]);
    assert_eq!(guarded_90, guarded(&mesh([90, 10], GUARD)), "stable");
    assert_ne!(guarded_90, guarded(&mesh([80, 20], GUARD)), "weights");
    assert_ne!(
        guarded_90,
        guarded(&mesh([90, 10], "guard: {minRequests: 60}")),
        "guard"
    );
    assert!(guarded(&mesh([90, 10], "sticky: {header: end-user}")).is_empty());
}

#[test]
fn a_halt_zeroes_the_canary_while_the_split_is_unchanged() {
    let before = mesh([90, 10], GUARD);
    let halted = guarded(&before);
    let mut m = before.clone();
    assert_eq!(apply(&mut m, &halted), ["shop-split"]);
    let members = split(&m);
    assert_eq!(members.iter().map(|(_, w)| *w).collect::<Vec<_>>(), [90, 0]);
    assert!(members[1].0.contains("|v2|"), "{members:?}");

    // The operator changed the split: the halt lapses.
    let mut changed = mesh([80, 20], GUARD);
    assert!(apply(&mut changed, &halted).is_empty());
    assert_eq!(
        split(&changed).iter().map(|(_, w)| *w).collect::<Vec<_>>(),
        [80, 20]
    );
}

#[test]
fn a_canary_taking_everything_leaves_the_baseline_all_of_it() {
    let mut m = mesh([0, 100], GUARD);
    let halted = guarded(&m);
    assert_eq!(apply(&mut m, &halted), ["shop-split"]);
    assert_eq!(
        split(&m).iter().map(|(_, w)| *w).collect::<Vec<_>>(),
        [1, 0]
    );
}
