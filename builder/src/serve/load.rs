//! Reading the input tree into a snapshot, and watching it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::ServeConfig;
use super::groups::{self, Gateways};
use super::snapshot::Snapshot;
use super::state::{Published, Shared, now_secs};
use crate::xds::ResourceSet;
use crate::{Diagnostics, Inputs};

/// What one read of the input gave.
#[derive(Debug)]
pub enum Loaded {
    /// A valid config, with its warnings, what building it took, and the JSON it no longer
    /// needs.
    Good(Published, Diagnostics, Timings, Garbage),
    /// The input does not generate: its diagnostics as `generate` prints them.
    Refused(String),
}

/// How long each stage of a load took, for serve's log: where the time of a change goes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Reading the files (or taking the store's generation).
    pub read: std::time::Duration,
    /// Every stage of `generate`: parse, check, model, the resource set.
    pub generate: std::time::Duration,
    /// Typing the set into protobuf and cutting the groups' snapshots.
    pub typed: std::time::Duration,
}

/// The JSON bodies a published config does not keep ([`kept_for_health`]), freed only once
/// the config is published: freeing megabytes of JSON is not on the way to the proxies.
#[derive(Debug, Default)]
pub struct Garbage(Vec<Arc<serde_json::Value>>);

/// The fleet halts a build applies: split name -> the fingerprint it was halted at
/// ([`crate::model::halts`]).
pub type Halted = BTreeMap<String, String>;

/// Reads `config.inputs` with every stage of `generate` and types the result, reusing the
/// typed resources of `previous` (the snapshot served now) that did not change; the canaries
/// of `halted` are taken out of their splits while those are unchanged.
pub fn load(
    config: &ServeConfig,
    previous: Option<&Snapshot>,
    halted: &Halted,
    reuse: &mut crate::Reuse,
) -> Loaded {
    let started = Instant::now();
    match Inputs::read(&config.inputs) {
        Ok(inputs) => {
            let read = started.elapsed();
            let mut loaded = load_inputs(&inputs, config, previous, halted, reuse);
            if let Loaded::Good(_, _, timings, _) = &mut loaded {
                timings.read = read;
            }
            loaded
        }
        Err(e) => Loaded::Refused(e),
    }
}

/// Runs every stage of `generate` on `inputs` (read from the files, or a generation of the
/// store) and types the result, reusing the typed resources of `previous` that did not change
/// and what `reuse` kept of the last build (the parse of unchanged files, the plugin configs
/// already compiled); the canaries of `halted` are taken out of their splits while those are
/// unchanged.
pub fn load_inputs(
    inputs: &Inputs,
    config: &ServeConfig,
    previous: Option<&Snapshot>,
    halted: &Halted,
    reuse: &mut crate::Reuse,
) -> Loaded {
    let started = Instant::now();
    let (options, modules) = match &config.serve_modules {
        Some(dir) => match read_modules(dir) {
            Ok((served, bytes)) => (
                crate::Options {
                    wasm: crate::WasmModules::Served(served),
                    ..config.options.clone()
                },
                bytes,
            ),
            Err(e) => return Loaded::Refused(e),
        },
        None => (config.options.clone(), BTreeMap::new()),
    };
    let crate::Served {
        set,
        probed,
        resources,
        warnings,
        guarded,
        halted: applied,
    } = match crate::served_reusing(inputs, &options, halted, reuse) {
        Ok(r) => r,
        Err(diags) => return Loaded::Refused(diags.to_string()),
    };
    for split in &applied {
        eprintln!(
            "serve: fleet halt: the canary of split {split:?} has weight 0 in every proxy's split (until the split changes)"
        );
    }
    if config.serve_modules.is_some() {
        let missing: Vec<String> = set
            .modules
            .iter()
            .map(|m| crate::xds::resources::module_file(m))
            .filter(|file| !modules.contains_key(file))
            .collect();
        if !missing.is_empty() {
            let dir = config.serve_modules.as_deref().unwrap_or(Path::new("."));
            return Loaded::Refused(format!(
                "{}: error: --serve-modules has no {} (the mesh's filters need {}): nothing is pushed\n  hint: build the modules (cargo xtask build-wasm, or sluice build) into that folder",
                dir.display(),
                missing.join(", "),
                if missing.len() == 1 { "it" } else { "them" },
            ));
        }
    }
    let generated = Instant::now();
    // The Gateways name the groups.
    let gateways = Gateways::of(&resources, &config.options.namespace);
    reuse.restore(resources);
    match group_snapshots(&set, &gateways, previous) {
        Ok((version, typed, groups)) => {
            let (set, garbage) = kept_for_health(set);
            Loaded::Good(
                Published {
                    version,
                    gateways,
                    groups,
                    typed,
                    at: Instant::now(),
                    set: Arc::new(set),
                    probed: Arc::new(probed),
                    modules: Arc::new(modules),
                    guarded: Arc::new(guarded),
                },
                warnings,
                Timings {
                    read: std::time::Duration::ZERO,
                    generate: generated - started,
                    typed: generated.elapsed(),
                },
                garbage,
            )
        }
        // A bug of the builder, not of the input: a resource Envoy could not parse.
        Err(errors) => Loaded::Refused(format!(
            "<output>: error: the generated resources do not parse as Envoy's v3 API (a sluice bug; please report it):\n  {}",
            errors.join("\n  ")
        )),
    }
}

/// What a published config keeps of its JSON resource set: the listeners (the groups are cut
/// by what they refer to) and the endpoints (health is written into them), whole; every other
/// resource by name and hash only (body `null`), as its typed form is in the snapshot, found by
/// that hash when health republishes. The routes, filter configs and clusters of a large mesh
/// are most of the set's memory, and a change would otherwise hold the old ones beside the new.
/// The bodies taken out are returned, to be freed after publishing.
pub fn kept_for_health(mut set: ResourceSet) -> (ResourceSet, Garbage) {
    use crate::xds::Kind;
    let mut garbage = Garbage::default();
    for (kind, resources) in &mut set.resources {
        if matches!(kind, Kind::Listener | Kind::Endpoint) {
            continue;
        }
        for resource in resources {
            garbage.0.push(std::mem::take(&mut resource.body));
        }
    }
    (set, garbage)
}

/// Each group's snapshot, by group name.
pub type GroupSnapshots = BTreeMap<String, Arc<Snapshot>>;

/// The version of `set`, its typed snapshot and each group's snapshot of it, or the resources
/// that do not type. Resources `previous` holds unchanged are not typed again.
pub fn group_snapshots(
    set: &ResourceSet,
    gateways: &Gateways,
    previous: Option<&Snapshot>,
) -> Result<(String, Arc<Snapshot>, GroupSnapshots), Vec<String>> {
    let full = Snapshot::build_reusing(set, previous)?;
    let groups = gateways
        .groups()
        .into_iter()
        .map(|g| {
            let snapshot = groups::snapshot_of(set, &full, gateways, &g);
            (g, Arc::new(snapshot))
        })
        .collect();
    Ok((full.version.clone(), Arc::new(full), groups))
}

/// `--serve-modules DIR`: every `sluice_<module>.wasm` of `DIR` (the modules a config may
/// load; those absent are skipped, and a config that needs one is refused), with the sha256
/// each filter config pins. Read with every load, so a module rebuilt in `DIR` is served, and
/// pinned, with the next change of the tree.
pub fn read_modules(
    dir: &Path,
) -> Result<(crate::ServedModules, BTreeMap<String, bytes::Bytes>), String> {
    use sha2::{Digest, Sha256};
    let mut served = crate::ServedModules::default();
    let mut bytes = BTreeMap::new();
    for module in crate::xds::filters::MODULES {
        let file = crate::xds::resources::module_file(module);
        let path = dir.join(&file);
        match std::fs::read(&path) {
            Ok(data) => {
                served
                    .sha256
                    .insert(module.to_owned(), hex::encode(Sha256::digest(&data)));
                bytes.insert(file, bytes::Bytes::from(data));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(format!(
                    "{}: error: --serve-modules: cannot read it: {e}",
                    path.display()
                ));
            }
        }
    }
    if bytes.is_empty() {
        return Err(format!(
            "{}: error: --serve-modules: no sluice_<module>.wasm in this folder\n  hint: build them (cargo xtask build-wasm, or sluice build) or name the folder that holds them",
            dir.display()
        ));
    }
    Ok((served, bytes))
}

/// Reads the input and publishes it if valid and different; otherwise records why not and
/// keeps the last good snapshot.
pub fn reload(config: &ServeConfig, shared: &Shared) {
    let mut reuse = shared.reuse.lock().unwrap_or_else(|e| e.into_inner());
    let previous = shared.published.borrow().as_ref().map(|p| p.typed.clone());
    publish(
        load(
            config,
            previous.as_deref(),
            &shared.fleet_halted(),
            &mut reuse,
        ),
        shared,
    );
}

/// Publishes `loaded` if valid and different from what is served; otherwise records why not
/// and keeps the last good snapshot.
pub fn publish(loaded: Loaded, shared: &Shared) {
    match loaded {
        Loaded::Good(published, warnings, timings, garbage) => {
            // Freed last, whatever happens here.
            let _garbage = garbage;
            shared.lift_changed_halts(&published.guarded);
            let version = published.version.clone();
            let same = shared
                .published
                .borrow()
                .as_ref()
                .is_some_and(|p| p.version == version);
            {
                let mut inner = shared.lock();
                inner.input.version = Some(version.clone());
                inner.input.warnings = warnings.0.iter().map(|d| d.to_string()).collect();
                inner.input.error = None;
                inner.input.read_at = now_secs();
                if !same {
                    inner.metrics.snapshots += 1;
                }
            }
            if same {
                return;
            }
            eprintln!(
                "serve: config {version} loaded in {:.3} s (read {:.3}, generate {:.3}, typed {:.3}; {} warning{}; groups: {})",
                (timings.read + timings.generate + timings.typed).as_secs_f64(),
                timings.read.as_secs_f64(),
                timings.generate.as_secs_f64(),
                timings.typed.as_secs_f64(),
                warnings.0.len(),
                if warnings.0.len() == 1 { "" } else { "s" },
                published
                    .groups
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            // The current health goes with it (a new config must not forget which endpoints
            // are down); the same check again under the publishing lock.
            shared.publish_config(published, |current| {
                current.is_some_and(|p| p.version == version)
            });
        }
        Loaded::Refused(diagnostics) => {
            eprintln!(
                "serve: the input was refused; the last good config keeps serving, nothing is pushed:\n{diagnostics}"
            );
            let mut inner = shared.lock();
            inner.input.error = Some(diagnostics);
            inner.input.read_at = now_secs();
            inner.metrics.input_errors += 1;
        }
    }
}

/// Watches every input path (recursively) and reloads after `config.debounce` of quiet. The
/// watch ends when the returned watcher is dropped.
pub fn watch(
    config: ServeConfig,
    shared: Arc<Shared>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    // A fleet halt asks for a rebuild through the same debounce.
    let _ = shared.reload.set(tx.clone());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reads are cheap next to a missed change: any event, even an error, triggers one.
        let interesting = event.is_err()
            || event
                .as_ref()
                .is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_)));
        if interesting {
            let _ = tx.send(());
        }
    })?;
    for path in &config.inputs {
        watcher
            .watch(path, notify::RecursiveMode::Recursive)
            .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", path.display()))?;
    }
    // A module rebuilt in --serve-modules is a change too: served and pinned at once.
    if let Some(dir) = &config.serve_modules {
        watcher
            .watch(dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| anyhow::anyhow!("cannot watch --serve-modules {}: {e}", dir.display()))?;
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: wait until the tree has been quiet for the whole period.
            while let Ok(Some(())) = tokio::time::timeout(config.debounce, rx.recv()).await {}
            let config = config.clone();
            let shared = shared.clone();
            // Reading and modelling is CPU work: off the async workers.
            let _ = tokio::task::spawn_blocking(move || reload(&config, &shared)).await;
        }
    });
    Ok(watcher)
}
