//! The documentation's hand-written Envoy bootstrap (`docs/minimal-envoy.yaml`, quoted in
//! README.md) runs through a real Envoy and does what it says, and the README quotes it as it is.

use sluice_integration::client;
use sluice_integration::envoy::{Envoy, EnvoyOptions};
use sluice_integration::upstream::Upstream;
use sluice_integration::{repo_root, wasm};

fn minimal_bootstrap() -> String {
    std::fs::read_to_string(repo_root().join("docs/minimal-envoy.yaml"))
        .expect("docs/minimal-envoy.yaml is readable")
}

#[test]
fn the_minimal_bootstrap_routes_with_the_router_filter() {
    if let Err(e) = wasm::module("router") {
        panic!("{e:#}");
    }
    let backend = Upstream::start("backend");
    // Same file, with the fixed ports swapped for the harness's: admin and listener on port 0,
    // the backend on the in-process upstream's port.
    let text = minimal_bootstrap();
    for port in ["port_value: 9901", "port_value: 10000", "port_value: 8080"] {
        assert_eq!(text.matches(port).count(), 1, "{port} appears once");
    }
    let config = text
        .replace("port_value: 9901", "port_value: 0")
        .replace("port_value: 10000", "port_value: 0")
        .replace(
            "port_value: 8080",
            &format!("port_value: {}", backend.port()),
        );
    let envoy = Envoy::start_with(EnvoyOptions {
        config_yaml: config,
        // The module path in the file is relative to the repository root, as documented.
        working_dir: Some(repo_root()),
        ..EnvoyOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let port = envoy.listener_port("main");

    let jason =
        client::get(port, "example", "/", &[("end-user", "jason")]).expect("request as jason");
    assert_eq!(jason.status, 200);
    assert_eq!(jason.header("x-served-by"), Some(b"backend".as_slice()));

    let anonymous = client::get(port, "example", "/", client::NO_HEADERS).expect("request");
    assert_eq!(anonymous.status, 404, "no rule matches: the router's 404");
    assert_eq!(
        backend.request_count(),
        1,
        "only jason's request reached the backend"
    );
}

#[test]
fn the_readme_quotes_the_minimal_bootstrap_verbatim() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let bootstrap = minimal_bootstrap();
    assert!(
        readme.contains(&format!("```yaml\n{bootstrap}```")),
        "README.md must quote docs/minimal-envoy.yaml verbatim in a ```yaml block"
    );
}

/// The README's quick start, as a user types it: every `sluice ...` line and the Envoy line of
/// the block after the `quickstart` marker run in a fresh folder holding the repository's
/// `examples/` (the `cargo install` / `cargo xtask` lines are what this test run already did:
/// `sluice` is this checkout's builder, Envoy the provisioned one). Envoy runs in
/// `--mode validate`, which loads the config and the modules from the output folder.
#[test]
fn the_readme_quick_start_runs_as_written() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::process::Command;
    for filter in ["router", "canary"] {
        wasm::module(filter).unwrap_or_else(|e| panic!("{e:#}"));
    }
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let marker = readme
        .find("<!-- quickstart:")
        .expect("README.md marks its quick start with <!-- quickstart: ... -->");
    let block = &readme[marker..];
    let start = block
        .find("```sh\n")
        .expect("a ```sh block after the marker")
        + 6;
    let end = block[start..].find("```").expect("a closed block") + start;
    let lines: Vec<&str> = block[start..end]
        .lines()
        .map(|line| line.split("  #").next().unwrap_or(line).trim())
        .filter(|line| line.starts_with("sluice ") || line.contains("envoy -c"))
        .collect();
    assert!(
        lines.len() >= 3,
        "the quick start names sluice and envoy: {lines:?}"
    );

    let work = tempfile::tempdir().expect("tempdir");
    symlink(root.join("examples"), work.path().join("examples")).expect("examples");
    let envoy_dir = work.path().join(".tools/envoy/envoy/_bin");
    std::fs::create_dir_all(&envoy_dir).expect("mkdir");
    let envoy = sluice_integration::envoy::binary().unwrap_or_else(|e| panic!("{e:#}"));
    symlink(&envoy, envoy_dir.join("envoy")).expect("envoy");
    // `sluice` on PATH: this checkout's builder.
    let bin = work.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let wrapper = bin.join("sluice");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec cargo run --quiet --manifest-path '{}' -p sluice -- \"$@\"\n",
            root.join("Cargo.toml").display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for line in lines {
        let line = if line.contains("envoy -c") {
            format!("{line} --mode validate --disable-hot-restart")
        } else {
            line.to_owned()
        };
        let run = Command::new("bash")
            .args(["-euc", &line])
            .current_dir(work.path())
            .env("PATH", &path)
            .output()
            .expect("bash runs");
        assert!(
            run.status.success(),
            "README quick start: `{line}` failed:\n{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
    }
    assert!(
        work.path()
            .join("out/bookinfo/wasm/sluice_router.wasm")
            .is_file()
    );
}
