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
    assert!(compose.contains("image: docker.io/envoyproxy/envoy:v1.40.0"));
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

/// Where xtask installs podman-compose (`pip install --target`): `$SLUICE_PODMAN_COMPOSE_DIR`,
/// else `<repo>/.tools/podman-compose`.
fn podman_compose_dir() -> PathBuf {
    std::env::var_os("SLUICE_PODMAN_COMPOSE_DIR")
        .map_or_else(|| repo().join(".tools/podman-compose"), PathBuf::from)
}

/// `config` of both compose implementations on the generated project, as each normalises it.
fn normalised_configs(dir: &Path) -> Vec<(&'static str, String)> {
    let docker = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("docker-compose is needed: {e}\nhint: cargo xtask test installs it")
        });
    let podman_dir = podman_compose_dir();
    let podman = Command::new("python3")
        .args(["-m", "podman_compose", "-f", "docker-compose.yml", "config"])
        .env("PYTHONPATH", &podman_dir)
        .current_dir(dir)
        .output()
        .expect("python3 runs");
    let mut configs = Vec::new();
    for (name, out) in [("docker-compose", docker), ("podman-compose", podman)] {
        assert!(
            out.status.success(),
            "{name} config refused the project:\n{}\nhint: cargo xtask test installs docker-compose, podman and podman-compose (into {})",
            String::from_utf8_lossy(&out.stderr),
            podman_dir.display()
        );
        configs.push((name, String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    configs
}

/// The project as Docker and podman run it: fully qualified images, read-only mounts, a
/// healthcheck on every service, Envoy waiting for healthy backends, the admin reachable
/// through its published port.
#[test]
fn docker_compose_and_podman_compose_accept_the_project_as_written() {
    let output = generate();
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("compose");
    sluice::write_output(&out, &output).expect("written");
    for (name, config) in normalised_configs(&out) {
        let docs = sluice::yaml::parse_documents(&config)
            .unwrap_or_else(|e| panic!("{name}: {e:?}\n{config}"));
        let services = docs[0].root.to_json()["services"].clone();
        let services = services.as_object().expect("services");
        assert!(services.len() >= 7, "{name}: {services:?}");
        for (service, spec) in services {
            let image = spec["image"].as_str().unwrap_or_default();
            assert!(
                image.starts_with("docker.io/"),
                "{name}: {service}: image {image:?} is not fully qualified"
            );
            assert!(
                spec["healthcheck"]["test"].is_array(),
                "{name}: {service}: no healthcheck"
            );
            let volumes = serde_json::to_string(&spec["volumes"]).expect("JSON");
            assert!(
                volumes.contains(":ro") || volumes.contains("\"read_only\":true"),
                "{name}: {service}: mounts not read-only: {volumes}"
            );
        }
        let depends = services["envoy"]["depends_on"]
            .as_object()
            .unwrap_or_else(|| panic!("{name}: envoy depends_on is not a map"));
        assert!(depends.len() >= 6, "{name}: {depends:?}");
        for (backend, condition) in depends {
            assert_eq!(
                condition["condition"], "service_healthy",
                "{name}: envoy waits for {backend}"
            );
        }
    }
    let envoy = String::from_utf8(output.files["envoy.yaml"].clone()).expect("utf-8");
    let bootstrap = sluice::yaml::parse_documents(&envoy).expect("YAML")[0]
        .root
        .to_json();
    assert_eq!(
        bootstrap["admin"]["address"]["socket_address"]["address"], "0.0.0.0",
        "a published port reaches the container's interface, not its loopback"
    );
}
