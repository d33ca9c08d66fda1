//! Target `compose`: a docker-compose project for users with Docker.
//!
//! `docker-compose.yml` runs the official `docker.io/envoyproxy/envoy:v1.40.0` image (the Envoy
//! version sluice is tested with) on the generated `envoy.yaml`, with the config and the wasm
//! modules mounted read-only, and one small demo backend per endpoint of the input
//! (`docker.io/library/python:3.12-alpine` running `backend.py`, answering with
//! `x-served-by: <service>`). Inside compose every endpoint is addressed by its compose service
//! name, so the clusters of this `envoy.yaml` are STRICT_DNS clusters pointing at those names
//! instead of the input's IP addresses.
//!
//! As Docker and podman run it: image names are fully qualified (podman refuses short names by
//! default); every service has a healthcheck (Envoy: admin `/ready`; a backend: an HTTP GET) and
//! Envoy starts only once its backends are healthy (`depends_on: condition: service_healthy`);
//! Envoy's admin listens on all interfaces *inside* the container, because a published port
//! reaches the container's interface, not its loopback: it is reachable from the host only
//! through the published port.

use std::collections::{BTreeMap, BTreeSet};

use crate::input::options::{Options, WasmModules};
use crate::model::{Discovery, Endpoint, Mesh};

use super::envoy::{EmitError, Emitted, MODULES};

/// The Envoy image: the version sluice is tested with.
pub const ENVOY_IMAGE: &str = "docker.io/envoyproxy/envoy:v1.40.0";
/// The demo backends' image.
pub const BACKEND_IMAGE: &str = "docker.io/library/python:3.12-alpine";
/// Where the modules are mounted inside the Envoy container.
pub const WASM_MOUNT: &str = "/etc/sluice/wasm";

/// Envoy's healthcheck: `GET /ready` on the admin port answers `LIVE` once Envoy serves. The
/// image has bash but no curl, so the request goes through bash's `/dev/tcp`.
fn envoy_healthcheck(admin_port: u16) -> String {
    format!(
        "    healthcheck:\n      test: [\"CMD\", \"bash\", \"-c\", \"exec 3<>/dev/tcp/127.0.0.1/{admin_port} && printf 'GET /ready HTTP/1.0\\\\r\\\\n\\\\r\\\\n' >&3 && grep -q LIVE <&3\"]\n      interval: 5s\n      timeout: 3s\n      retries: 12\n      start_period: 5s\n"
    )
}

/// A backend's healthcheck: an HTTP GET to itself with the image's Python.
fn backend_healthcheck(port: u32) -> String {
    format!(
        "    healthcheck:\n      test: [\"CMD\", \"python\", \"-c\", \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2)\"]\n      interval: 5s\n      timeout: 3s\n      retries: 12\n      start_period: 2s\n"
    )
}

const BACKEND_SCRIPT: &str = r#"# Demo backend written by `sluice generate --target compose`: answers every request with
# 200 and `x-served-by: <name>`, so you can watch routing and canary splits.
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME, PORT = sys.argv[1], int(sys.argv[2])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        body = f"served by {NAME}: {self.command} {self.path}\n".encode()
        self.send_response(200)
        self.send_header("x-served-by", NAME)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _answer

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
"#;

/// A compose service name (DNS label): lower-case `[a-z0-9-]`, at most 63 characters.
fn service_name(text: &str) -> String {
    let mut name: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(63);
    name.trim_matches('-').to_owned()
}

/// One backend per distinct endpoint (address, port) of the mesh, named after its host and the
/// subset it alone belongs to (`reviews-v2`), else numbered (`reviews-1`).
fn backends(mesh: &Mesh) -> BTreeMap<(String, u32), String> {
    let mut owners: BTreeMap<(String, u32), (String, BTreeSet<String>)> = BTreeMap::new();
    for c in mesh.clusters.values() {
        for e in &c.endpoints {
            let entry = owners
                .entry((e.address.clone(), e.port))
                .or_insert_with(|| (c.host.clone(), BTreeSet::new()));
            if !c.subset.is_empty() {
                entry.1.insert(c.subset.clone());
            }
        }
    }
    let mut names = BTreeMap::new();
    let mut taken = BTreeSet::new();
    let mut counters: BTreeMap<String, u32> = BTreeMap::new();
    for (key, (host, subsets)) in owners {
        let short = host.split('.').next().unwrap_or(&host).to_owned();
        let mut name = match subsets.iter().collect::<Vec<_>>().as_slice() {
            [only] => service_name(&format!("{short}-{only}")),
            _ => String::new(),
        };
        while name.is_empty() || taken.contains(&name) {
            let n = counters.entry(short.clone()).or_insert(0);
            *n += 1;
            name = service_name(&format!("{short}-{n}"));
        }
        taken.insert(name.clone());
        names.insert(key, name);
    }
    names
}

/// Writes `docker-compose.yml`, `envoy.yaml`, `backend.py`, `README.txt` and the modules.
pub fn emit(mesh: &Mesh, options: &Options) -> Result<Emitted, Vec<EmitError>> {
    let names = backends(mesh);
    let mut compose_mesh = mesh.clone();
    for c in compose_mesh.clusters.values_mut() {
        c.discovery = Discovery::StrictDns;
        c.endpoints = c
            .endpoints
            .iter()
            .map(|e| Endpoint {
                address: names
                    .get(&(e.address.clone(), e.port))
                    .cloned()
                    .unwrap_or_else(|| e.address.clone()),
                port: e.port,
                weight: e.weight,
            })
            .collect();
    }
    // Every other option (the filter layout among them) carries over to the bootstrap.
    let envoy_options = Options {
        target: crate::input::options::Target::Envoy,
        listen_address: "0.0.0.0".into(),
        ephemeral_ports: false,
        wasm: WasmModules::Reference(WASM_MOUNT.into()),
        ..options.clone()
    };
    let envoy = super::envoy::emit(&compose_mesh, &envoy_options)?;
    let mut files = envoy.files;
    let envoy_yaml = files
        .get("envoy.yaml")
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    // Admin inside the container listens on all interfaces so `ports:` can publish it.
    let envoy_yaml = admin_on_all_interfaces(&envoy_yaml);
    files.insert("envoy.yaml".into(), envoy_yaml.clone().into_bytes());

    let mut errors = Vec::new();
    let source_dir = match &options.wasm {
        WasmModules::Bundle { from, .. } => Some(from.clone()),
        WasmModules::Reference(dir) => Some(dir.clone()),
        WasmModules::NotRead | WasmModules::Served(_) => None,
    };
    for filter in MODULES {
        let Some(source_dir) = &source_dir else {
            break; // validation: the modules are not read
        };
        let file = sluice_core::wire::module_file(filter);
        if !envoy_yaml.contains(&format!("{WASM_MOUNT}/{file}")) {
            continue;
        }
        match std::fs::read(source_dir.join(&file)) {
            Ok(bytes) => {
                files.insert(format!("wasm/{file}"), bytes);
            }
            Err(e) => errors.push(EmitError::module_unreadable(
                filter,
                &source_dir.join(&file),
                &e,
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let mut yaml = String::from(
        "# Generated by `sluice generate --target compose`. Do not edit: change the Istio YAML and regenerate.\n# Checked with `docker-compose config`; run it with `docker compose up`.\nservices:\n",
    );
    yaml.push_str(&format!("  envoy:\n    image: {ENVOY_IMAGE}\n"));
    yaml.push_str(
        "    command: [\"envoy\", \"-c\", \"/etc/envoy/envoy.yaml\", \"--log-level\", \"info\"]\n",
    );
    yaml.push_str(&format!(
        "    volumes:\n      - ./envoy.yaml:/etc/envoy/envoy.yaml:ro\n      - ./wasm:{WASM_MOUNT}:ro\n"
    ));
    let mut ports: Vec<u32> = mesh.listeners.keys().copied().collect();
    ports.push(u32::from(options.admin_port));
    yaml.push_str("    ports:\n");
    for p in &ports {
        yaml.push_str(&format!("      - \"{p}:{p}\"\n"));
    }
    yaml.push_str(&envoy_healthcheck(options.admin_port));
    let backend_names: BTreeSet<(&String, u32)> = names
        .iter()
        .map(|((_, port), name)| (name, *port))
        .collect();
    if !backend_names.is_empty() {
        yaml.push_str("    depends_on:\n");
        for (name, _) in &backend_names {
            yaml.push_str(&format!(
                "      {name}:\n        condition: service_healthy\n"
            ));
        }
    }
    for (name, port) in &backend_names {
        yaml.push_str(&format!(
            "  {name}:\n    image: {BACKEND_IMAGE}\n    command: [\"python\", \"/srv/backend.py\", \"{name}\", \"{port}\"]\n    volumes:\n      - ./backend.py:/srv/backend.py:ro\n    expose:\n      - \"{port}\"\n"
        ));
        yaml.push_str(&backend_healthcheck(*port));
    }
    files.insert("docker-compose.yml".into(), yaml.into_bytes());
    files.insert("backend.py".into(), BACKEND_SCRIPT.as_bytes().to_vec());
    let first_port = mesh.listeners.keys().next().copied().unwrap_or(80);
    files.insert(
        "README.txt".into(),
        format!(
            "Generated by `sluice generate --target compose`.\n\n\
             docker compose up            # Envoy {ENVOY_IMAGE} + one demo backend per endpoint\n\
             curl -si localhost:{first_port}/ -H 'host: <a host of your VirtualServices>'\n\n\
             Each backend answers with `x-served-by: <its service name>`. Envoy's admin is on\n\
             localhost:{admin} through the published port (inside the container it listens on all\n\
             interfaces; a published port does not reach the container's loopback). envoy.yaml is\n\
             the envoy target's bootstrap with every cluster turned into STRICT_DNS on the\n\
             backends' compose service names; wasm/ holds the modules it loads. Envoy starts once\n\
             every backend's healthcheck passes.\n\
             sluice's tests check this project with `docker-compose config` and `podman-compose\n\
             config` and run its envoy.yaml and backends as host processes; they do not run\n\
             containers.\n",
            admin = options.admin_port
        )
        .into_bytes(),
    );
    Ok(Emitted { files })
}

/// The bootstrap with the admin's address set to `0.0.0.0` (the envoy target binds it to
/// loopback). Edited on the parsed document, so the YAML's quoting cannot hide it.
fn admin_on_all_interfaces(envoy_yaml: &str) -> String {
    let Ok(documents) = crate::input::yaml::parse_documents(envoy_yaml) else {
        return envoy_yaml.to_owned();
    };
    let Some(document) = documents.first() else {
        return envoy_yaml.to_owned();
    };
    let mut bootstrap = document.root.to_json();
    bootstrap["admin"]["address"]["socket_address"]["address"] = "0.0.0.0".into();
    let header: String = envoy_yaml
        .lines()
        .take_while(|line| line.starts_with('#'))
        .map(|line| format!("{line}\n"))
        .collect();
    format!("{header}{}", super::yaml_out::to_yaml(&bootstrap))
}
