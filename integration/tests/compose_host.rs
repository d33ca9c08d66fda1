//! The compose target's project, run as Docker would run it but as host processes (no container
//! can run on the project's machines): the generated `backend.py` of each service under
//! `python3`, and Envoy on the generated `envoy.yaml` with the container paths mapped: the wasm
//! mount to the modules' folder, each service's DNS name and port to the loopback port its
//! backend process listens on, the listeners and admin to port 0. Requests then go where the
//! mesh says, answered by the compose project's own backends.
//!
//! Needs python3 (the harness's prerequisite) and the modules (`cargo xtask build-wasm`).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_integration::client;
use sluice_integration::envoy::{Envoy, EnvoyOptions};
use sluice_integration::{repo_root, wasm};

/// The generated backends, killed on drop.
struct Backends(Vec<Child>);

impl Drop for Backends {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Every `(address, port_value)` endpoint of the bootstrap's clusters.
fn endpoints(bootstrap: &mut Value) -> Vec<&mut Value> {
    let mut found = Vec::new();
    for cluster in bootstrap["static_resources"]["clusters"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        for locality in cluster["load_assignment"]["endpoints"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            for endpoint in locality["lb_endpoints"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                found.push(&mut endpoint["endpoint"]["address"]["socket_address"]);
            }
        }
    }
    found
}

#[test]
fn the_compose_projects_envoy_and_backends_route_as_the_mesh_says() {
    let modules = wasm::module_dir();
    for filter in wasm::FILTERS {
        wasm::module(filter).unwrap_or_else(|e| panic!("{e:#}"));
    }
    let inputs =
        sluice::Inputs::read(&[repo_root().join("examples/bookinfo")]).expect("readable example");
    let output = sluice::generate(
        &inputs,
        &sluice::Options {
            target: sluice::Target::Compose,
            wasm: sluice::WasmModules::Reference(modules.clone()),
            ..sluice::Options::default()
        },
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let project = tempfile::tempdir().expect("tempdir");
    sluice::write_output(project.path(), &output).expect("written");

    // Each compose service (`name:` + `command: [python, /srv/backend.py, NAME, PORT]`) runs as
    // a host process on a port of its own.
    let compose = std::fs::read_to_string(project.path().join("docker-compose.yml")).expect("yml");
    let docs = sluice::yaml::parse_documents(&compose).expect("compose YAML");
    let services = docs[0].root.to_json()["services"].clone();
    let mut host_port: BTreeMap<(String, u64), u16> = BTreeMap::new();
    let mut backends = Backends(Vec::new());
    for (name, service) in services.as_object().expect("services") {
        let command: Vec<&str> = service["command"]
            .as_array()
            .expect("command")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if name == "envoy" {
            continue;
        }
        assert_eq!(command[..2], ["python", "/srv/backend.py"], "{name}");
        let container_port: u64 = command[3].parse().expect("port");
        let port = free_port();
        let child = Command::new("python3")
            .arg(project.path().join("backend.py"))
            .arg(command[2])
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the generated backend");
        backends.0.push(child);
        host_port.insert((name.clone(), container_port), port);
    }
    assert!(host_port.len() >= 6, "{host_port:?}");
    for port in host_port.values() {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "a backend did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // The compose project's envoy.yaml, with the container's paths and names mapped.
    let text = std::fs::read_to_string(project.path().join("envoy.yaml")).expect("envoy.yaml");
    let mount = format!("{}/", sluice::emit::compose::WASM_MOUNT);
    assert!(text.contains(&mount), "the modules load from the mount");
    let text = text.replace(&mount, &format!("{}/", modules.display()));
    let mut bootstrap = sluice::yaml::parse_documents(&text).expect("YAML")[0]
        .root
        .to_json();
    assert_eq!(
        bootstrap["admin"]["address"]["socket_address"]["address"], "0.0.0.0",
        "admin reachable through the published port"
    );
    bootstrap["admin"]["address"]["socket_address"] =
        serde_json::json!({"address": "127.0.0.1", "port_value": 0});
    for listener in bootstrap["static_resources"]["listeners"]
        .as_array_mut()
        .expect("listeners")
    {
        listener["address"]["socket_address"]["address"] = "127.0.0.1".into();
        listener["address"]["socket_address"]["port_value"] = 0.into();
    }
    for address in endpoints(&mut bootstrap) {
        let name = address["address"].as_str().expect("a DNS name").to_owned();
        let port = address["port_value"].as_u64().expect("a port");
        let mapped = host_port
            .get(&(name.clone(), port))
            .unwrap_or_else(|| panic!("no compose service {name}:{port}"));
        *address = serde_json::json!({"address": "127.0.0.1", "port_value": mapped});
    }
    let envoy = Envoy::start_with(EnvoyOptions {
        config_yaml: bootstrap.to_string(),
        ..EnvoyOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let port = envoy.listener_port("listener_9080");

    // bookinfo: jason -> reviews v2, everyone else -> v1, each answered by its own backend.
    for (user, served_by) in [("jason", "reviews-v2"), ("someone", "reviews-v1")] {
        for _ in 0..5 {
            let response = client::get(port, "reviews", "/reviews/1", &[("end-user", user)])
                .expect("a response");
            assert_eq!(response.status, 200, "{user}");
            assert_eq!(
                response.header("x-served-by"),
                Some(served_by.as_bytes()),
                "{user}"
            );
        }
    }
}
