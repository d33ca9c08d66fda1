//! The modules reach Istio through a real registry, with the pins Istio checks.
//!
//! `sluice build --oci` packages the very modules the Envoy tests run (already shrunk, so
//! packaging keeps their bytes), `sluice generate --target istio --oci-layout` pins each
//! WasmPlugin to the layout's manifest digest, skopeo pushes every image to Debian's
//! docker-registry on a loopback port and pulls it back, and the test checks what Istio's image
//! fetcher checks: the registry's manifest digest equals the WasmPlugin's `sha256`, the last
//! layer is `application/vnd.oci.image.layer.v1.tar+gzip` holding `plugin.wasm`, and those bytes
//! are the module Envoy ran.
//!
//! The http(s) path is shown the same way: the modules served over HTTP, fetched as the Istio
//! agent fetches a WasmPlugin `url`, and checked against its `sha256` pin.
//!
//! Needs skopeo and docker-registry (Debian packages; `cargo xtask test` installs them) and the
//! modules (`cargo xtask build-wasm`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice::emit::istio_target::{IstioOptions, ModuleSource, PinSource};
use sluice_integration::{repo_root, wasm};

const TAG: &str = "registry-round-trip";
const FILTERS: [&str; 4] = wasm::FILTERS;

/// A server process (docker-registry, or the HTTP file server) on a loopback port, killed on
/// drop.
struct Registry {
    child: Child,
    port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn require(program: &str, probe: &str) {
    let runs = Command::new(program)
        .arg(probe)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        runs,
        "{program} is needed by this test and is missing\n  hint: `cargo xtask test` installs it \
         (Debian: apt-get install skopeo docker-registry)"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `GET /v2/` answers 200 once the registry serves.
fn registry_ready(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /v2/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

fn start_registry(dir: &Path) -> Registry {
    // A port picked then released can be taken by another test in between: retry a few times.
    for _ in 0..5 {
        let port = free_port();
        let config = dir.join(format!("config-{port}.yml"));
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("storage").display()
            ),
        )
        .expect("write the registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts");
        let mut registry = Registry { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if registry_ready(port) {
                return registry;
            }
            if let Ok(Some(_)) = registry.child.try_wait() {
                break; // the port was taken: try another
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Dropped here: killed before the next try.
    }
    panic!("docker-registry did not serve on a loopback port within 30 s");
}

/// skopeo with a policy of its own (the machine's /etc/containers/policy.json may be absent or
/// stricter) and plain HTTP to the loopback registry.
fn skopeo(policy: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo")
        .arg("--policy")
        .arg(policy)
        .args(args)
        .output()
        .expect("skopeo runs");
    assert!(
        out.status.success(),
        "skopeo {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn sha256_hex(bytes: &[u8]) -> String {
    sluice::oci::sha256_hex(bytes)
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("JSON")
}

/// The `plugin.wasm` inside an image pulled into the OCI layout `layout` under `reference`, as
/// Istio's fetcher finds it: the last layer, a gzip tar, the file `plugin.wasm`.
fn plugin_wasm(layout: &Path, reference: &str) -> Vec<u8> {
    let index = json_file(&layout.join("index.json"));
    let manifest_digest = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == reference)
        .and_then(|m| m["digest"].as_str())
        .unwrap_or_else(|| panic!("no {reference} in {index:#}"))
        .to_owned();
    let blob = |digest: &str| -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        std::fs::read(layout.join("blobs/sha256").join(hex)).expect("blob")
    };
    let manifest: Value = serde_json::from_slice(&blob(&manifest_digest)).expect("manifest");
    let layer = manifest["layers"]
        .as_array()
        .and_then(|l| l.last())
        .expect("a layer");
    assert_eq!(layer["mediaType"], sluice::oci::LAYER_MEDIA_TYPE);
    let gz = blob(layer["digest"].as_str().expect("digest"));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz.as_slice()));
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("entry");
        if entry.path().expect("path").as_os_str() == sluice::oci::PLUGIN_FILE_NAME {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).expect("read plugin.wasm");
            return bytes;
        }
    }
    panic!("no plugin.wasm in the last layer of {reference}");
}

/// The WasmPlugins of the demo mesh for modules from `source`, pinned with `sha256`.
fn demo_wasm_plugins(
    source: ModuleSource,
    sha256: std::collections::BTreeMap<String, String>,
) -> Vec<(String, String, String)> {
    let inputs = sluice::Inputs::read(&[repo_root().join("examples/demo")]).expect("readable");
    let output = sluice::generate(
        &inputs,
        &sluice::Options {
            target: sluice::Target::Istio(IstioOptions {
                source,
                sha256,
                ..IstioOptions::default()
            }),
            ..sluice::Options::default()
        },
    )
    .unwrap_or_else(|d| panic!("{d}"));
    wasm_plugins(&String::from_utf8_lossy(&output.files["wasmplugins.yaml"]))
}

/// `spec.url` and `spec.sha256` of each WasmPlugin, by `metadata.name`.
fn wasm_plugins(yaml: &str) -> Vec<(String, String, String)> {
    sluice::yaml::parse_documents(yaml)
        .expect("YAML")
        .into_iter()
        .map(|doc| doc.root.to_json())
        .filter(|doc| doc["kind"] == "WasmPlugin")
        .map(|doc| {
            (
                doc["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                doc["spec"]["url"].as_str().unwrap_or_default().to_owned(),
                doc["spec"]["sha256"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

#[test]
fn images_pushed_and_pulled_through_a_registry_match_the_wasm_plugin_pins() {
    require("skopeo", "--version");
    require("docker-registry", "--version");
    let modules: PathBuf = wasm::module_dir();
    for filter in FILTERS {
        wasm::module(filter).unwrap_or_else(|e| panic!("{e:#}"));
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = tmp.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .expect("write the policy");

    // sluice build --modules <the modules Envoy runs> --oci <layout> --tag TAG
    let layout = tmp.path().join("oci");
    let report = sluice::build::build(
        &sluice::build::BuildOptions {
            repo: repo_root(),
            prebuilt: Some(modules.clone()),
            out_dir: tmp.path().join("modules"),
            optimize: true,
            oci: Some(layout.clone()),
            tag: TAG.into(),
            force: false,
            modules: sluice::build::CHAIN_MODULES.to_vec(),
        },
        &mut |_| {},
    )
    .unwrap_or_else(|e| panic!("sluice build: {e}"));
    for module in &report.modules {
        let ran = std::fs::read(modules.join(sluice::build::module_file(module.filter)))
            .expect("the module Envoy ran");
        assert_eq!(
            std::fs::read(&module.path).expect("packaged module"),
            ran,
            "{}: packaging changed the bytes of an already shrunk module",
            module.filter
        );
    }

    // The registry, and the WasmPlugins pinned from the layout, pulling from that registry.
    let registry = start_registry(tmp.path());
    let registry_host = format!("127.0.0.1:{}", registry.port);
    let source = ModuleSource::Oci {
        registry: registry_host.clone(),
        tag: TAG.into(),
    };
    let (sha256, missing) =
        sluice::emit::istio_target::pins(&source, &PinSource::OciLayout(layout.clone()), &FILTERS);
    assert!(missing.is_empty(), "{missing:?}");
    let plugins = demo_wasm_plugins(source, sha256);
    assert!(plugins.len() >= 3, "{plugins:?}");

    for (name, url, pin) in plugins {
        let filter = name.strip_prefix("sluice-").expect("sluice-<filter>");
        let image = format!("{registry_host}/{name}:{TAG}");
        assert_eq!(url, format!("oci://{image}"));
        assert_eq!(pin.len(), 64, "{name}: pinned");
        skopeo(
            &policy,
            &[
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                &format!("oci:{}:{name}-{TAG}", layout.display()),
                &format!("docker://{image}"),
            ],
        );
        // What the registry serves under the tag is the manifest the pin names.
        let raw = skopeo(
            &policy,
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{image}"),
            ],
        );
        assert_eq!(
            sha256_hex(&raw),
            pin,
            "{name}: registry digest != WasmPlugin sha256"
        );
        // Pulled back, it holds the module Envoy ran, as Istio's fetcher reads it.
        let pulled = tmp.path().join(format!("pulled-{filter}"));
        skopeo(
            &policy,
            &[
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                &format!("docker://{image}"),
                &format!("oci:{}:{name}", pulled.display()),
            ],
        );
        let ran = std::fs::read(modules.join(sluice::build::module_file(filter))).expect("module");
        assert_eq!(plugin_wasm(&pulled, &name), ran, "{name}: plugin.wasm");
    }
}

#[test]
fn modules_served_over_http_match_the_wasm_plugin_pins() {
    require("curl", "--version");
    let modules: PathBuf = wasm::module_dir();
    for filter in FILTERS {
        wasm::module(filter).unwrap_or_else(|e| panic!("{e:#}"));
    }
    // A plain HTTP server on the modules' folder, as a web server or a bucket would be.
    let port = free_port();
    let server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&modules)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    // Killed on drop, also when an assertion fails.
    let _server = Registry {
        child: server,
        port,
    };
    let base = format!("http://127.0.0.1:{port}");
    let source = ModuleSource::Http(base.clone());
    let (sha256, missing) =
        sluice::emit::istio_target::pins(&source, &PinSource::Modules(modules.clone()), &FILTERS);
    assert!(missing.is_empty(), "{missing:?}");
    let plugins = demo_wasm_plugins(source, sha256);
    assert!(plugins.len() >= 3, "{plugins:?}");
    let tmp = tempfile::tempdir().expect("tempdir");
    for (name, url, pin) in plugins {
        let filter = name.strip_prefix("sluice-").expect("sluice-<filter>");
        assert_eq!(url, format!("{base}/sluice_{filter}.wasm"));
        let fetched = tmp.path().join(format!("{filter}.wasm"));
        let curl = Command::new("curl")
            .args([
                "-sSf",
                "--retry",
                "20",
                "--retry-connrefused",
                "--retry-delay",
                "1",
                "-o",
            ])
            .arg(&fetched)
            .arg(&url)
            .output()
            .expect("curl runs");
        assert!(
            curl.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&curl.stderr)
        );
        let bytes = std::fs::read(&fetched).expect("fetched");
        assert_eq!(sha256_hex(&bytes), pin, "{name}: the pin Istio checks");
        let ran = std::fs::read(modules.join(sluice::build::module_file(filter))).expect("module");
        assert_eq!(bytes, ran, "{name}: the module Envoy ran");
    }
}
