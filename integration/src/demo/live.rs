//! The demo's live step (6): the same mesh served by `sluice serve` to an Envoy that has nothing
//! on disk but its `envoy-xds` bootstrap (the modules come over HTTP from serve's admin port),
//! the ratings canary weight changed on disk, and the split moving while the same Envoy process
//! keeps serving.
//!
//! It works on a temporary copy of the mesh folder (never the user's files): the copy's
//! endpoint ports are the backends' real ports, and the weight edit goes there.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use super::{Checks, EndpointPorts, LISTENER, StepReport, describe, say};
use crate::client::{self, Request};
use crate::envoy::{Envoy, EnvoyOptions};
use crate::serve::{poll, wait_listener};

/// The ratings canary's v2 weight after the live edit (from [`super::CANARY_PERCENT`]).
pub const LIVE_PERCENT: u64 = 50;
/// Requests without a user sent before and after the edit.
pub const LIVE_REQUESTS: usize = 400;
/// How long the edit may take to reach Envoy before the step fails: generous on purpose (a
/// shared 2-core machine); the time it took is measured and printed.
pub const LIVE_DEADLINE: Duration = Duration::from_secs(20);

/// Step 6: what the live edit did.
#[derive(Debug, Clone, Default)]
pub struct LiveFacts {
    /// Served-by -> count, [`LIVE_REQUESTS`] requests before the edit.
    pub before: BTreeMap<String, u64>,
    /// The same after the edit.
    pub after: BTreeMap<String, u64>,
    /// The Envoy's pid before and after (the same process must have served both).
    pub pids: (u32, u32),
    /// `listener_manager.listener_modified` before and after (no listener rebuilt).
    pub listener_modified: (u64, u64),
    /// The canary filter's ECDS `config_reload` before and after.
    pub canary_reloads: (u64, u64),
    /// From the file written to Envoy's canary config reloaded (measured, not asserted tight).
    pub change_to_reload: Duration,
    /// How many modules Envoy fetched over HTTP from serve (`wasm.remote_load_fetch_successes`).
    pub modules_fetched: u64,
    /// The bootstrap named no module file.
    pub bootstrap_has_no_module_file: bool,
}

/// Runs step 6; `Err` only for what keeps it from starting.
pub(super) fn run(
    mesh: &Path,
    wasm_dir: &Path,
    ports: &EndpointPorts,
    out: &mut dyn Write,
) -> Result<(StepReport, Option<LiveFacts>)> {
    const TITLE: &str = "live: sluice serve, the canary weight changed on disk";
    say(
        out,
        &format!(
            "\n==> 6. live: sluice serve feeds an Envoy that has only its bootstrap; ratings v2 {}% -> {LIVE_PERCENT}% on disk",
            super::CANARY_PERCENT
        ),
    );
    let copy = tempfile::Builder::new()
        .prefix("sluice-demo-live-")
        .tempdir()
        .context("create the live step's folder")?;
    copy_mesh(mesh, copy.path(), ports)?;
    let Some(routing) = canary_file(copy.path())? else {
        return Ok((
            skipped(
                TITLE,
                "no file of the mesh holds the ratings canary's 90/10 weights",
            ),
            None,
        ));
    };

    let localhost = "127.0.0.1:0".parse().expect("an address");
    let options = sluice::Options {
        listen_address: "127.0.0.1".into(),
        ephemeral_ports: true,
        ..sluice::Options::default()
    };
    let serve = sluice::serve::Running::start(sluice::serve::ServeConfig {
        xds_listen: localhost,
        admin_listen: localhost,
        serve_modules: Some(wasm_dir.to_path_buf()),
        debounce: Duration::from_millis(100),
        ..sluice::serve::ServeConfig::new(vec![copy.path().to_path_buf()], options.clone())
    })?;
    let (xds, admin) = (serve.bound.xds, serve.bound.admin);
    say(
        out,
        &format!(
            "    sluice serve -f {} --serve-modules {}: ADS on {xds}, admin and modules on http://{admin}",
            copy.path().display(),
            wasm_dir.display()
        ),
    );
    let inputs = sluice::Inputs::read(&[copy.path().to_path_buf()]).map_err(|e| anyhow!(e))?;
    let bootstrap = sluice::generate(
        &inputs,
        &sluice::Options {
            target: sluice::Target::EnvoyXds(sluice::XdsBootstrap {
                servers: vec![xds.to_string()],
                node_id: "demo-live".into(),
                node_cluster: "mesh".into(),
                delta: false,
                module_servers: vec![admin.to_string()],
                ..sluice::XdsBootstrap::default()
            }),
            ..options
        },
    )
    .map_err(|d| anyhow!("the envoy-xds bootstrap does not generate:\n{d}"))?;
    let yaml = bootstrap
        .files
        .get("envoy.yaml")
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .ok_or_else(|| anyhow!("the envoy-xds target wrote no envoy.yaml"))?;
    let envoy = Envoy::start_with(EnvoyOptions {
        config_yaml: yaml.clone(),
        ..EnvoyOptions::default()
    })?;
    let port = wait_listener(&envoy, LISTENER)?;
    let mut facts = LiveFacts {
        bootstrap_has_no_module_file: !yaml.contains(".wasm"),
        ..LiveFacts::default()
    };
    facts.modules_fetched = stat(&envoy, "wasm.remote_load_fetch_successes");
    say(
        out,
        &format!(
            "    Envoy pid {} (bootstrap: {} lines, no module file) fetched {} modules from serve; {LISTENER} on 127.0.0.1:{port}",
            envoy.pid(),
            yaml.lines().count(),
            facts.modules_fetched
        ),
    );

    let pid = envoy.pid();
    let modified = stat(&envoy, "listener_manager.listener_modified");
    let reloads = canary_reloads(&envoy);
    facts.before = served(port, LIVE_REQUESTS);
    say(
        out,
        &format!(
            "    before: {LIVE_REQUESTS} x GET ratings/ -> {}",
            describe(&facts.before)
        ),
    );

    let text = std::fs::read_to_string(&routing)?;
    let edited = edit_weights(&text).ok_or_else(|| anyhow!("the 90/10 weights moved"))?;
    let changed = Instant::now();
    // Written aside and renamed: serve never reads half a file.
    let aside = routing.with_extension("yaml.tmp");
    std::fs::write(&aside, edited)?;
    std::fs::rename(&aside, &routing)?;
    say(
        out,
        &format!(
            "    edited {} (the copy): weight 90 -> {}, 10 -> {LIVE_PERCENT}",
            routing.display(),
            100 - LIVE_PERCENT
        ),
    );
    let reloaded = poll(LIVE_DEADLINE, "Envoy's canary config reloaded", || {
        canary_reloads(&envoy) > reloads
    });
    facts.change_to_reload = changed.elapsed();
    let mut checks = Checks::default();
    checks.expect(reloaded.is_ok(), || {
        format!("the edit did not reach Envoy within {LIVE_DEADLINE:?}")
    });
    facts.after = served(port, LIVE_REQUESTS);
    facts.pids = (pid, envoy.pid());
    facts.listener_modified = (modified, stat(&envoy, "listener_manager.listener_modified"));
    facts.canary_reloads = (reloads, canary_reloads(&envoy));
    say(
        out,
        &format!(
            "    after:  {LIVE_REQUESTS} x GET ratings/ -> {} (the edit reached Envoy in {:.0} ms; same pid {}: {})",
            describe(&facts.after),
            facts.change_to_reload.as_secs_f64() * 1000.0,
            pid,
            facts.pids.0 == facts.pids.1
        ),
    );

    let n = LIVE_REQUESTS as u64;
    let share = |counts: &BTreeMap<String, u64>| counts.get("ratings-v2").copied().unwrap_or(0);
    let total = |counts: &BTreeMap<String, u64>| {
        counts.get("ratings-v1").copied().unwrap_or(0) + share(counts)
    };
    checks.expect(
        total(&facts.before) == n && total(&facts.after) == n,
        || {
            format!(
                "every request should be served by ratings v1 or v2: before {}, after {}",
                describe(&facts.before),
                describe(&facts.after)
            )
        },
    );
    checks.plausible(
        "before the edit: requests to ratings-v2",
        share(&facts.before),
        n,
        super::CANARY_PERCENT,
    );
    checks.plausible(
        "after the edit: requests to ratings-v2",
        share(&facts.after),
        n,
        LIVE_PERCENT,
    );
    checks.expect(facts.pids.0 == facts.pids.1, || {
        format!(
            "Envoy restarted: pid {} then {}",
            facts.pids.0, facts.pids.1
        )
    });
    checks.expect(
        facts.listener_modified.0 == facts.listener_modified.1,
        || {
            format!(
                "a listener was rebuilt: listener_modified {} -> {}",
                facts.listener_modified.0, facts.listener_modified.1
            )
        },
    );
    checks.expect(facts.modules_fetched >= 1, || {
        "Envoy fetched no module from serve".to_owned()
    });
    checks.expect(facts.bootstrap_has_no_module_file, || {
        "the bootstrap names a module file".to_owned()
    });
    let summary = vec![
        format!(
            "ratings v2 share {:.1}% -> {:.1}% (weights 10% -> {LIVE_PERCENT}%), {LIVE_REQUESTS} requests each: {} | {}",
            100.0 * share(&facts.before) as f64 / n as f64,
            100.0 * share(&facts.after) as f64 / n as f64,
            describe(&facts.before),
            describe(&facts.after)
        ),
        format!(
            "same Envoy pid {}, no listener rebuilt, canary config reloaded in place (ECDS {} -> {}), {:.0} ms from the edit",
            pid,
            facts.canary_reloads.0,
            facts.canary_reloads.1,
            facts.change_to_reload.as_secs_f64() * 1000.0
        ),
        format!(
            "modules fetched over HTTP from serve: {} (the proxy's disk holds only its bootstrap)",
            facts.modules_fetched
        ),
    ];
    drop(envoy);
    serve.stop();
    Ok((
        StepReport {
            number: 6,
            title: TITLE,
            verdict: checks.verdict(),
            summary,
        },
        Some(facts),
    ))
}

fn skipped(title: &'static str, why: &str) -> StepReport {
    StepReport {
        number: 6,
        title,
        verdict: super::Verdict::Skipped(why.to_owned()),
        summary: Vec::new(),
    }
}

fn stat(envoy: &Envoy, name: &str) -> u64 {
    envoy.stat(name).unwrap_or(0)
}

/// The canary filter's ECDS reloads on the listener. With modules served its config's name
/// carries the module's digest (`listener_9080/sluice-canary@<digest>`): every such name counts.
fn canary_reloads(envoy: &Envoy) -> u64 {
    let name = format!("extension_config_discovery.http_filter.{LISTENER}/sluice-canary");
    envoy
        .stats_text()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(&name))
        .filter_map(|l| l.split_once(".config_reload: "))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum()
}

/// Requests to ratings without a user: served-by -> count (`<error>`, `<envoy:STATUS>` for
/// what no backend served).
fn served(port: u16, n: usize) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    let requests = vec![Request::get(port, "/").authority("ratings"); n];
    for result in client::send_many(requests, client::DEFAULT_PARALLELISM) {
        let who = match result {
            Ok(r) => r
                .served_by()
                .map_or_else(|| format!("<envoy:{}>", r.status), str::to_owned),
            Err(_) => "<error>".to_owned(),
        };
        *counts.entry(who).or_insert(0) += 1;
    }
    counts
}

/// Copies the mesh's YAML files (a file, or a folder and its subfolders) into `to`, each
/// ServiceEntry endpoint port replaced by its backend's real port (`http: 9103` ->
/// `http: 41234`), as the tour's model adjustment does for the static config.
fn copy_mesh(mesh: &Path, to: &Path, ports: &EndpointPorts) -> Result<()> {
    if mesh.is_file() {
        let name = mesh
            .file_name()
            .ok_or_else(|| anyhow!("{}", mesh.display()))?;
        let text = std::fs::read_to_string(mesh)?;
        std::fs::write(to.join(name), with_ports(&text, ports))?;
        return Ok(());
    }
    for entry in std::fs::read_dir(mesh).with_context(|| format!("read {}", mesh.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .ok_or_else(|| anyhow!("{}", path.display()))?;
        if path.is_dir() {
            std::fs::create_dir(to.join(name))?;
            copy_mesh(&path, &to.join(name), ports)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let text = std::fs::read_to_string(&path)?;
            std::fs::write(to.join(name), with_ports(&text, ports))?;
        }
    }
    Ok(())
}

/// `text` with every `NAME: PORT` of an endpoint port map (a port the backends took over)
/// rewritten to the backend's port.
fn with_ports(text: &str, ports: &EndpointPorts) -> String {
    let mut out = text.to_owned();
    for ((_, written), real) in ports {
        for end in ["}", "\n", ","] {
            out = out.replace(&format!(": {written}{end}"), &format!(": {real}{end}"));
        }
    }
    out
}

/// The file holding the ratings canary (`ratings-canary` with weights 90 and 10).
fn canary_file(dir: &Path) -> Result<Option<std::path::PathBuf>> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            let text = std::fs::read_to_string(&path)?;
            if text.contains("name: ratings-canary") && edit_weights(&text).is_some() {
                return Ok(Some(path));
            }
        }
    }
    Ok(None)
}

/// `text` with the ratings canary's `weight: 90` / `weight: 10` set to the live split; `None`
/// when they are not there.
fn edit_weights(text: &str) -> Option<String> {
    let start = text.find("name: ratings-canary")?;
    let (head, tail) = text.split_at(start);
    if !tail.contains("weight: 90") || !tail.contains("weight: 10") {
        return None;
    }
    let tail = tail
        .replacen("weight: 90", &format!("weight: {}", 100 - LIVE_PERCENT), 1)
        .replacen("weight: 10", &format!("weight: {LIVE_PERCENT}"), 1);
    Some(format!("{head}{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weight_edit_touches_only_the_canary_rule() {
        let text = "- name: other\n  weight: 90\n- name: ratings-canary\n  route:\n  - weight: 90\n  - weight: 10\n";
        let edited = edit_weights(text).unwrap();
        assert_eq!(
            edited,
            "- name: other\n  weight: 90\n- name: ratings-canary\n  route:\n  - weight: 50\n  - weight: 50\n"
        );
        assert!(edit_weights("- name: ratings-canary\n  weight: 100\n").is_none());
    }

    #[test]
    fn endpoint_ports_are_rewritten_in_the_copy() {
        let ports: EndpointPorts = [(("127.0.0.1".to_owned(), 9103), 40001)].into();
        assert_eq!(
            with_ports("ports: {http: 9103}\n  - {number: 9080}\n", &ports),
            "ports: {http: 40001}\n  - {number: 9080}\n"
        );
    }

    #[test]
    fn a_mesh_without_the_canary_is_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "kind: VirtualService\n").unwrap();
        assert!(canary_file(dir.path()).unwrap().is_none());
    }
}
