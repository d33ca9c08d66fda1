//! The etcd store of `sluice apply` on a real 3-member etcd cluster (Debian's etcd 3.4): apply,
//! diff, prune, refusal of invalid input, whole generations for readers, optimistic
//! concurrency, and a member's crash. The control plane reads the same generations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sluice::store::etcd::{EtcdStore, Snapshot, StoreError, apply};
use sluice::store::{self, Document, StoreUrl};
use sluice::{Inputs, Options};
use sluice_integration::etcd::EtcdCluster;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn cluster() -> EtcdCluster {
    EtcdCluster::start(3).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A copy of examples/demo in a temporary folder, to edit.
fn demo_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = sluice_integration::repo_root().join("examples/demo");
    for entry in std::fs::read_dir(&demo).expect("examples/demo") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
    }
    dir
}

fn checked(dir: &Path) -> Vec<Document> {
    let inputs = Inputs::read(&[PathBuf::from(dir)]).expect("readable");
    store::check(&inputs, &Options::default())
        .unwrap_or_else(|d| panic!("{d}"))
        .0
}

fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains(from), "{file} holds {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
}

#[test]
fn apply_diff_prune_and_refusal_on_a_three_member_cluster() {
    let cluster = cluster();
    let url: StoreUrl = cluster.store_url("/apply-test").parse().expect("url");
    let dir = demo_copy();
    runtime().block_on(async {
        let mut store = EtcdStore::connect(&url).await.expect("connect");
        let docs = checked(dir.path());

        // First apply: everything is new; generation 1.
        let first = apply(&mut store, &docs, false, false).await.expect("apply");
        assert_eq!(first.generation, 1);
        assert_eq!(first.change.added.len(), docs.len());
        assert!(first.change.changed.is_empty() && first.change.removed.is_empty());

        // What the store holds builds the same Envoy resources, byte for byte, as the folder:
        // every replica reading it computes the same versions.
        let snapshot = store.snapshot().await.expect("snapshot");
        let stored = store::inputs_of(&snapshot.manifest, &snapshot.objects).expect("complete");
        let from_store = sluice::resources(&stored, &Options::default())
            .expect("valid")
            .0;
        let from_dir = sluice::resources(
            &Inputs::read(&[dir.path().into()]).expect("readable"),
            &Options::default(),
        )
        .expect("valid")
        .0;
        assert_eq!(from_store.version(), from_dir.version());

        // The same apply again changes nothing and writes no generation.
        let again = apply(&mut store, &docs, false, false).await.expect("apply");
        assert!(again.change.is_empty(), "{:?}", again.change);
        assert_eq!(again.generation, 1);

        // An edit: diff (a dry run) names it and writes nothing; apply writes generation 2.
        edit(dir.path(), "routing.yaml", "weight: 90", "weight: 70");
        edit(dir.path(), "routing.yaml", "weight: 10", "weight: 30");
        let docs = checked(dir.path());
        let diff = apply(&mut store, &docs, false, true).await.expect("diff");
        assert_eq!(diff.change.changed.len(), 1, "{:?}", diff.change);
        assert!(
            diff.change.changed[0].starts_with("VirtualService/"),
            "{:?}",
            diff.change
        );
        assert_eq!(
            store
                .snapshot()
                .await
                .expect("snapshot")
                .manifest
                .generation,
            1
        );
        let second = apply(&mut store, &docs, false, false).await.expect("apply");
        assert_eq!((second.generation, second.change.changed.len()), (2, 1));

        // A resource gone from the inputs is kept without --prune and removed with it.
        let fewer: Vec<Document> = docs[1..].to_vec();
        let kept = apply(&mut store, &fewer, false, false)
            .await
            .expect("apply");
        assert!(kept.change.is_empty() && kept.change.kept == [docs[0].key.clone()]);
        let pruned = apply(&mut store, &fewer, true, false).await.expect("apply");
        assert_eq!(pruned.change.removed, [docs[0].key.clone()]);
        assert_eq!(pruned.generation, 3);
        let snapshot = store.snapshot().await.expect("snapshot");
        assert_eq!(snapshot.manifest.resources.len(), docs.len() - 1);

        // Invalid input: every diagnostic, and the store is not touched.
        edit(dir.path(), "routing.yaml", "weight: 70", "weight: -70");
        let inputs = Inputs::read(&[dir.path().into()]).expect("readable");
        let refused = store::check(&inputs, &Options::default()).expect_err("invalid");
        let text = refused.to_string();
        assert!(
            text.contains("routing.yaml:") && text.contains("weight"),
            "{text}"
        );
        assert_eq!(
            store
                .snapshot()
                .await
                .expect("snapshot")
                .manifest
                .generation,
            3
        );

        // A member crashes: the client fails over and applies go on (2 of 3 is a quorum).
        drop(store);
        let mut cluster = cluster;
        cluster.kill(0);
        let mut store = EtcdStore::connect(&url).await.expect("connect");
        let restored = apply(&mut store, &docs, true, false)
            .await
            .expect("apply with a member down");
        assert_eq!(restored.generation, 4);
        assert_eq!(restored.change.added, [docs[0].key.clone()]);
    });
}

/// `count` ServiceEntries, each with `tag` in its text: more documents than one etcd
/// transaction takes, so an apply writes them in several batches.
fn many(count: usize, tag: &str) -> Vec<Document> {
    let mut text = String::new();
    for i in 0..count {
        text.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc-{i:04}, labels: {{tag: {tag}}}}}\nspec:\n  hosts: [svc-{i:04}.example]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: 10.0.{}.{}}}]\n---\n",
            i / 250,
            i % 250 + 1
        ));
    }
    store::documents(&Inputs::from_text("many.yaml", &text), "default")
}

fn assert_whole(snapshot: &Snapshot, sizes: &[usize]) {
    let n = snapshot.manifest.resources.len();
    assert!(
        sizes.contains(&n),
        "a reader saw {n} resources: half an apply"
    );
    let tags: std::collections::BTreeSet<String> =
        store::inputs_of(&snapshot.manifest, &snapshot.objects)
            .expect("every object of the generation is there")
            .files
            .iter()
            .filter_map(|f| f.text.split("tag: ").nth(1).map(|t| t[..3].to_owned()))
            .collect();
    assert!(
        tags.len() <= 1,
        "a reader saw two generations mixed: {tags:?}"
    );
}

#[test]
fn readers_see_whole_generations_and_concurrent_applies_do_not_overwrite() {
    let cluster = cluster();
    let url: StoreUrl = cluster.store_url("/generations-test").parse().expect("url");
    runtime().block_on(async {
        let mut writer = EtcdStore::connect(&url).await.expect("connect");
        let mut reader = EtcdStore::connect(&url).await.expect("connect");
        let one = many(150, "one");
        let two = many(300, "two");
        let mut seen = BTreeMap::new();
        for docs in [&one, &two, &one] {
            let write = apply(&mut writer, docs, true, false);
            let read = async {
                let mut snapshots = Vec::new();
                for _ in 0..40 {
                    snapshots.push(reader.snapshot().await.expect("snapshot"));
                    tokio::task::yield_now().await;
                }
                snapshots
            };
            let (applied, snapshots) = tokio::join!(write, read);
            applied.expect("apply");
            for s in &snapshots {
                assert_whole(s, &[0, 150, 300]);
                *seen.entry(s.manifest.generation).or_insert(0) += 1;
            }
        }
        let last = reader.snapshot().await.expect("snapshot");
        assert_eq!(
            (last.manifest.generation, last.manifest.resources.len()),
            (3, 150)
        );
        assert!(!seen.is_empty());

        // Two applies planned against the same generation: the second is refused whole.
        let base = writer.snapshot().await.expect("snapshot");
        let (a, _) = store::plan(&base.manifest, &two, true);
        let (b, _) = store::plan(&base.manifest, &many(10, "bbb"), true);
        writer
            .write(&base, &a, &two)
            .await
            .expect("first writer wins");
        let refused = reader
            .write(&base, &b, &many(10, "bbb"))
            .await
            .expect_err("conflict");
        assert!(
            matches!(
                refused,
                StoreError::Conflict {
                    planned: 4,
                    found: 4
                }
            ),
            "{refused}"
        );
        let now = reader.snapshot().await.expect("snapshot");
        assert_eq!(now.manifest.resources.len(), 300);
        assert_whole(&now, &[300]);
    });
}

/// Runs this checkout's `sluice` CLI (as the README's users run it) with `args`.
fn sluice(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["run", "--quiet", "-p", "sluice", "--"])
        .args(args)
        .current_dir(sluice_integration::repo_root())
        .output()
        .expect("cargo run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_applies_diffs_and_lists() {
    let cluster = cluster();
    let url = cluster.store_url("/cli-test");
    let dir = demo_copy();
    let path = dir.path().to_str().expect("UTF-8 path");

    let (code, out, err) = sluice(&["apply", "-f", path, "--store", &url]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("+ VirtualService/default/ratings"), "{out}");
    assert!(
        out.contains("now at generation 1: 6 added, 0 changed, 0 removed"),
        "{out}"
    );

    let (code, out, _) = sluice(&["get", "--store", &url, "virtualservice"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("generation 1") && out.contains("ratings"),
        "{out}"
    );
    assert!(!out.contains("DestinationRule"), "a kind filter: {out}");

    edit(dir.path(), "routing.yaml", "weight: 90", "weight: 80");
    edit(dir.path(), "routing.yaml", "weight: 10", "weight: 20");
    let (code, out, err) = sluice(&["diff", "-f", path, "--store", &url, "--exit-code"]);
    assert_eq!(code, 1, "changes, with --exit-code: {out}{err}");
    assert!(
        out.contains("~ VirtualService/default/ratings") && out.contains("1 changed"),
        "{out}"
    );

    edit(dir.path(), "routing.yaml", "weight: 80", "weight: -80");
    let (code, out, err) = sluice(&["apply", "-f", path, "--store", &url]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("routing.yaml:") && err.contains("the store was not changed"),
        "{err}"
    );
    let (_, out, _) = sluice(&["get", "--store", &url]);
    assert!(out.contains("generation 1 "), "nothing was written: {out}");

    let (code, _, err) = sluice(&["get", "--store", "etcd://127.0.0.1:1"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("etcd at etcd://127.0.0.1:1/sluice") && err.contains("hint:"),
        "{err}"
    );
}

/// The next event within a generous deadline (a slow shared machine is not a failure).
async fn next_event(
    events: &mut tokio::sync::mpsc::Receiver<sluice::store::etcd::Followed>,
) -> sluice::store::etcd::Followed {
    tokio::time::timeout(std::time::Duration::from_secs(60), events.recv())
        .await
        .expect("an event within 60 s")
        .expect("the follower runs")
}

#[test]
fn a_follower_sees_each_generation_rides_out_an_outage_and_catches_up() {
    use sluice::store::etcd::{Followed, follow};
    let mut cluster = cluster();
    let url: StoreUrl = cluster.store_url("/follow-test").parse().expect("url");
    let dir = demo_copy();
    runtime().block_on(async {
        let (tx, mut events) = tokio::sync::mpsc::channel(16);
        let follower = tokio::spawn(follow(url.clone(), tx));
        // An empty store: generation 0, no resources.
        match next_event(&mut events).await {
            Followed::Generation {
                generation: 0,
                inputs,
                ..
            } => assert!(inputs.files.is_empty()),
            other => panic!("{other:?}"),
        }
        let mut store = EtcdStore::connect(&url).await.expect("connect");
        apply(&mut store, &checked(dir.path()), false, false)
            .await
            .expect("apply");
        match next_event(&mut events).await {
            Followed::Generation {
                generation: 1,
                inputs,
                ..
            } => {
                assert_eq!(inputs.files.len(), checked(dir.path()).len());
                sluice::resources(&inputs, &Options::default()).expect("servable");
            }
            other => panic!("{other:?}"),
        }
        drop(store);

        // Every member down: one Degraded report, no generation, and the follower keeps trying.
        cluster.kill_all();
        match next_event(&mut events).await {
            Followed::Degraded(why) => assert!(why.contains("etcd at"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Back up; a change applied after the restart reaches the follower.
        tokio::task::spawn_blocking(move || {
            cluster.restart().expect("restart");
            cluster
        })
        .await
        .map(|restarted| {
            // Keep the cluster alive until the end of the test.
            std::mem::forget(restarted);
        })
        .expect("restart");
        match next_event(&mut events).await {
            Followed::Recovered => {}
            other => panic!("{other:?}"),
        }
        edit(dir.path(), "routing.yaml", "weight: 90", "weight: 60");
        edit(dir.path(), "routing.yaml", "weight: 10", "weight: 40");
        let mut store = EtcdStore::connect(&url).await.expect("connect");
        apply(&mut store, &checked(dir.path()), false, false)
            .await
            .expect("apply");
        match next_event(&mut events).await {
            Followed::Generation { generation: 2, .. } => {}
            other => panic!("{other:?}"),
        }
        drop(events);
        follower.abort();
    });
}

#[test]
fn registrations_live_as_long_as_their_lease_and_leave_at_once() {
    use sluice::store::Registration;
    use sluice::store::etcd::{Followed, follow};
    use std::time::Duration;
    let cluster = cluster();
    let url: StoreUrl = cluster.store_url("/register-test").parse().expect("url");
    runtime().block_on(async {
        let (tx, mut events) = tokio::sync::mpsc::channel(16);
        let follower = tokio::spawn(follow(url.clone(), tx));
        assert!(matches!(
            next_event(&mut events).await,
            Followed::Generation { registrations: 0, .. }
        ));
        let vm = |address: &str| Registration {
            group: "ratings-vm".into(),
            namespace: "shop".into(),
            address: address.into(),
            labels: [("zone".to_owned(), "a".to_owned())].into(),
            ports: BTreeMap::new(),
        };
        let mut store = EtcdStore::connect(&url).await.expect("connect");
        let service = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ratings, namespace: shop}\nspec:\n  hosts: [ratings.shop]\n  ports: [{number: 9080, name: http, protocol: HTTP}]\n  resolution: STATIC\n  workloadSelector: {labels: {app: ratings}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: ratings-vm, namespace: shop}\nspec:\n  metadata: {labels: {app: ratings}}\n  template: {ports: {http: 9080}, serviceAccount: ratings, labels: {version: v3}}\n  probe: {httpGet: {port: 9080, path: /healthz}, periodSeconds: 5}\n";
        // The group and the service go through `sluice apply`'s checks like any resource.
        let (docs, _) = store::check(&Inputs::from_text("ratings.yaml", service), &Options::default())
            .unwrap_or_else(|d| panic!("{d}"));
        apply(&mut store, &docs, false, false).await.expect("apply");
        let group = store
            .workload_group("shop", "ratings-vm")
            .await
            .expect("read")
            .expect("the group is in the store");
        assert!(matches!(
            next_event(&mut events).await,
            Followed::Generation { generation: 1, registrations: 0, .. }
        ));

        // A VM that keeps renewing stays; its entry carries the group's template, and it
        // becomes an endpoint of the service that selects its labels.
        let steady = vm("10.1.0.7");
        let lease = store
            .register("shop", &steady.name(), &steady.workload_entry(&group), Duration::from_secs(2))
            .await
            .expect("register");
        let mut keeper = EtcdStore::connect(&url).await.expect("connect");
        let keeping = tokio::spawn(async move { keeper.keep_alive(lease, Duration::from_secs(2)).await });
        match next_event(&mut events).await {
            Followed::Generation { registrations: 1, inputs, .. } => {
                let registered = inputs.files.last().expect("the registration");
                let text = &registered.text;
                assert!(registered.name.contains("shop/ratings-vm-10-1-0-7"), "{}", registered.name);
                for expected in ["\"address\": \"10.1.0.7\"", "\"serviceAccount\": \"ratings\"", "\"app\": \"ratings\"", "\"version\": \"v3\"", "\"zone\": \"a\"", "\"http\": 9080"] {
                    assert!(text.contains(expected), "{expected} in {text}");
                }
                let set = sluice::resources(&inputs, &Options::default())
                    .unwrap_or_else(|d| panic!("{d}"))
                    .0;
                let endpoints = serde_json::json!(set.of(sluice::xds::Kind::Endpoint)
                    .iter()
                    .map(|r| serde_json::Value::clone(&r.body))
                    .collect::<Vec<_>>())
                .to_string();
                assert!(endpoints.contains("10.1.0.7"), "the VM is an endpoint: {endpoints}");
            }
            other => panic!("{other:?}"),
        }

        // A VM that stops renewing (a crash) is gone once its 2 s lease lapses.
        let crashed = vm("10.1.0.8");
        store
            .register("shop", &crashed.name(), &crashed.workload_entry(&group), Duration::from_secs(2))
            .await
            .expect("register");
        assert!(matches!(next_event(&mut events).await, Followed::Generation { registrations: 2, .. }));
        let started = std::time::Instant::now();
        assert!(matches!(next_event(&mut events).await, Followed::Generation { registrations: 1, .. }));
        let lapsed = started.elapsed();
        eprintln!("a registration without renewals lapsed after {lapsed:?} (lease 2 s)");
        assert!(lapsed >= Duration::from_secs(1), "the lease held until it lapsed: {lapsed:?}");

        // The renewing one is still there, and --leave removes it at once.
        assert!(!keeping.is_finished());
        assert!(store.deregister("shop", &steady.name(), Some(lease)).await.expect("leave"));
        assert!(matches!(next_event(&mut events).await, Followed::Generation { registrations: 0, .. }));
        assert!(!store.deregister("shop", &steady.name(), None).await.expect("leave again"));
        keeping.abort();
        drop(events);
        follower.abort();
    });
}

#[test]
fn a_watch_from_a_compacted_revision_relists_the_newest_generation() {
    let cluster = cluster();
    let url: StoreUrl = cluster.store_url("/compaction-test").parse().expect("url");
    let dir = demo_copy();
    runtime().block_on(async {
        let mut store = EtcdStore::connect(&url).await.expect("connect");
        apply(&mut store, &checked(dir.path()), false, false)
            .await
            .expect("apply");
        let behind = store.snapshot().await.expect("snapshot");
        assert_eq!(behind.manifest.generation, 1);
        // Two more generations, then etcd's history is compacted past the watcher's revision.
        for (from, to) in [("weight: 90", "weight: 80"), ("weight: 80", "weight: 70")] {
            edit(dir.path(), "routing.yaml", from, to);
            apply(&mut store, &checked(dir.path()), false, false)
                .await
                .expect("apply");
        }
        let mut raw = etcd_client::Client::connect([cluster.endpoint(1)], None)
            .await
            .expect("connect");
        let latest = raw
            .get("/compaction-test/current", None)
            .await
            .expect("get")
            .header()
            .expect("header")
            .revision();
        raw.compact(
            latest,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .expect("compact");
        // The watch from the old revision does not hang: it reports the compaction at once ...
        let woke = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            store.wait_for_change(behind.revision),
        )
        .await
        .expect("a compacted watch returns at once")
        .expect("watch");
        assert!(woke >= latest, "woke at {woke}, compacted at {latest}");
        // ... and the relist reads the newest generation, whole.
        let now = store.snapshot().await.expect("snapshot");
        assert_eq!(now.manifest.generation, 3);
        let inputs = store::inputs_of(&now.manifest, &now.objects).expect("complete");
        assert!(inputs.files.iter().any(|f| f.text.contains("weight: 70")));
    });
}

/// The serve replicas' fleet (`sluice::store::fleet`): replicas join under leases, each
/// endpoint has one owner among the live ones, a replica that stops renewing leaves with its
/// health reports, and its endpoints pass to the replicas left. Fleet keys never make a mesh
/// follower relist.
#[test]
fn the_fleet_hands_a_dead_replicas_endpoints_to_the_others() {
    use sluice::store::etcd::{Followed, follow};
    use sluice::store::fleet::{HealthReport, owner};
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};
    let cluster = cluster();
    let url: StoreUrl = cluster.store_url("/fleet-test").parse().expect("url");
    runtime().block_on(async {
        let (tx, mut events) = tokio::sync::mpsc::channel(16);
        let follower = tokio::spawn(follow(url.clone(), tx));
        assert!(matches!(
            next_event(&mut events).await,
            Followed::Generation { generation: 0, .. }
        ));

        let ttl = Duration::from_secs(2);
        let mut a = EtcdStore::connect(&url).await.expect("connect");
        let mut b = EtcdStore::connect(&url).await.expect("connect");
        let lease_a = a.join_fleet("serve-a", ttl).await.expect("a joins");
        let lease_b = b.join_fleet("serve-b", ttl).await.expect("b joins");
        let mut keeper = EtcdStore::connect(&url).await.expect("connect");
        let keep_a = tokio::spawn(async move { keeper.keep_alive(lease_a, ttl).await });

        let fleet = a.fleet().await.expect("fleet");
        let both: BTreeSet<String> = ["serve-a", "serve-b"].map(str::to_owned).into();
        assert_eq!(fleet.replicas, both);
        // Each replica reports the endpoints it owns.
        let endpoints: Vec<String> = (0..40).map(|i| format!("10.1.0.{i}:8080")).collect();
        for endpoint in &endpoints {
            let by = owner(endpoint, &fleet.replicas).expect("owner");
            let (store, lease) = if by == "serve-a" {
                (&mut a, lease_a)
            } else {
                (&mut b, lease_b)
            };
            let report = HealthReport {
                health: "HEALTHY".into(),
                by: by.to_owned(),
                probes: 1,
                changed_unix_ms: 1,
                last_error: None,
            };
            store
                .report_health(lease, endpoint, &report)
                .await
                .expect("report");
        }
        let fleet = a.fleet().await.expect("fleet");
        assert_eq!(fleet.health.len(), endpoints.len());
        let b_owned = fleet.health.values().filter(|r| r.by == "serve-b").count();
        assert!(b_owned > 0 && b_owned < endpoints.len(), "{b_owned}");

        // serve-b dies (stops renewing): within its TTL (plus etcd's lease check) it is gone,
        // and so are its reports; serve-a, renewed, stays and owns every endpoint.
        let started = Instant::now();
        loop {
            let fleet = a.fleet().await.expect("fleet");
            if !fleet.replicas.contains("serve-b") {
                assert_eq!(fleet.replicas, ["serve-a".to_owned()].into());
                assert_eq!(fleet.health.len(), endpoints.len() - b_owned);
                for endpoint in &endpoints {
                    assert_eq!(owner(endpoint, &fleet.replicas), Some("serve-a"));
                }
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "serve-b's lease never lapsed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!(
            "a dead replica left the fleet {:.1} s after its last renewal (TTL {ttl:?})",
            started.elapsed().as_secs_f64()
        );
        // A waiter sees the next fleet change.
        let revision = a.fleet().await.expect("fleet").revision;
        let kept = a.fleet().await.expect("fleet").health;
        let (endpoint, _) = kept.iter().next().expect("serve-a's reports stay");
        a.withdraw_health(endpoint).await.expect("withdraw");
        tokio::time::timeout(Duration::from_secs(60), a.wait_for_fleet_change(revision))
            .await
            .expect("a change within 60 s")
            .expect("watch");

        // None of this was a mesh change: the follower reported nothing more.
        assert!(
            events.try_recv().is_err(),
            "fleet keys made the follower relist"
        );
        keep_a.abort();
        drop(events);
        follower.abort();
    });
}
