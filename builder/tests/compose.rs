//! `sluice generate --target compose`: the compose file passes `docker-compose config`, every
//! backend is a compose service the STRICT_DNS clusters point at, and the modules are bundled.
//! (No Docker engine here: the project is checked, not run.)

use std::path::{Path, PathBuf};
use std::process::Command;

use sluice::{Inputs, Options, Target, WasmModules};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn generate() -> sluice::Output {
    let inputs = Inputs::read(&[repo().join("examples/bookinfo")]).expect("readable example");
    sluice::generate(
        &inputs,
        &Options {
            target: Target::Compose,
            wasm: WasmModules::Reference(sluice::default_wasm_dir()),
            ..Options::default()
        },
    )
    .unwrap_or_else(|d| panic!("{d}\nhint: cargo build --release --target wasm32-wasip1 -p sluice-router -p sluice-canary"))
}

#[test]
fn docker_compose_config_accepts_the_project() {
    let output = generate();
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("compose");
    sluice::write_output(&out, &output).expect("written");
    let result = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .current_dir(&out)
        .output()
        .unwrap_or_else(|e| {
            panic!("docker-compose is needed: {e}\nhint: apt-get install docker-compose (cargo xtask test does it)")
        });
    assert!(
        result.status.success(),
        "docker-compose config:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

#[test]
fn clusters_point_at_the_backend_services_by_dns_name() {
    let output = generate();
    let compose = String::from_utf8(output.files["docker-compose.yml"].clone()).expect("utf-8");
    let envoy = String::from_utf8(output.files["envoy.yaml"].clone()).expect("utf-8");
    assert!(compose.contains("image: envoyproxy/envoy:v1.40.0"));
    assert!(
        !envoy.contains("type: STATIC"),
        "every cluster resolves compose names"
    );
    for backend in ["reviews-v1", "reviews-v2", "reviews-v3"] {
        assert!(
            compose.contains(&format!("\n  {backend}:\n")),
            "{backend} service"
        );
        assert!(
            envoy.contains(&format!("address: {backend}\n")),
            "{backend} endpoint"
        );
    }
    assert!(envoy.contains("/etc/sluice/wasm/sluice_router.wasm"));
    assert!(output.files.contains_key("wasm/sluice_router.wasm"));
    assert!(output.files.contains_key("backend.py"));
}
