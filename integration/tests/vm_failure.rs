//! What happens when a wasm VM fails, through a real Envoy 1.40.
//!
//! - Every config the builder generates names its `failure_policy` explicitly (Envoy's default
//!   has changed between versions, so an implicit one is a config that means different things
//!   on different Envoys).
//! - A module that traps at request time shows the configured policy, never a hang:
//!   FAIL_CLOSED answers 503, FAIL_OPEN passes the request on, FAIL_RELOAD builds a new VM.
//!
//! The trapping module is the smallest honest proxy-wasm module: a few bytes of WebAssembly
//! encoded below (no toolchain), exporting the ABI 0.2.1 entry points, whose
//! `proxy_on_request_headers` executes `unreachable`, exactly what a Rust panic compiles to
//! with `panic = "abort"`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use sluice::{Inputs, Options, WasmModules};
use sluice_integration::bootstrap::{Bootstrap, LISTENER_NAME, wasm_filter_json};
use sluice_integration::client::{self, Request, Response};
use sluice_integration::envoy::Envoy;
use sluice_integration::repo_root;
use sluice_integration::upstream::Upstream;

// ---------------------------------------------------------------------------------------------
// failure_policy in generated configs
// ---------------------------------------------------------------------------------------------

/// Every wasm filter block of an emitted Envoy YAML (the text from one `envoy.filters.http.wasm`
/// typed config to the next filter), as (root_id, failure_policy) pairs.
fn wasm_filters(yaml: &str) -> Vec<(String, Option<String>)> {
    let mut filters = Vec::new();
    let blocks: Vec<&str> = yaml
        .split("envoy.extensions.filters.http.wasm.v3.Wasm")
        .skip(1)
        .collect();
    for block in blocks {
        let field = |name: &str| {
            block
                .lines()
                .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        filters.push((
            field("root_id:").unwrap_or_default(),
            field("failure_policy:"),
        ));
    }
    filters
}

#[test]
fn every_generated_wasm_filter_names_its_failure_policy() {
    let examples = repo_root().join("examples");
    let mut inputs_dirs: Vec<PathBuf> = vec![examples.join("bookinfo")];
    // The ecommerce scenarios are one file each on top of `common/`.
    let ecommerce = examples.join("ecommerce");
    let mut scenarios: Vec<PathBuf> = std::fs::read_dir(&ecommerce)
        .expect("examples/ecommerce")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    scenarios.sort();
    let options = Options {
        wasm: WasmModules::Reference("wasm".into()),
        ..Options::default()
    };
    let mut checked = 0;
    for scenario in scenarios
        .iter()
        .map(|s| vec![ecommerce.join("common"), s.clone()])
    {
        inputs_dirs.push(scenario[1].clone());
        let inputs = Inputs::read(&scenario).expect("read");
        let output = sluice::generate(&inputs, &options)
            .unwrap_or_else(|d| panic!("{}: {d}", scenario[1].display()));
        checked += assert_policies(&scenario[1], &output.files["envoy.yaml"]);
    }
    let bookinfo = Inputs::read(&[examples.join("bookinfo")]).expect("read");
    let output = sluice::generate(&bookinfo, &options).unwrap_or_else(|d| panic!("{d}"));
    checked += assert_policies(&examples.join("bookinfo"), &output.files["envoy.yaml"]);

    // The checked-in configs as well (they are what users copy).
    for entry in std::fs::read_dir(repo_root().join("envoy-configs")).expect("envoy-configs") {
        let path = entry.expect("entry").path().join("envoy.yaml");
        if let Ok(bytes) = std::fs::read(&path) {
            checked += assert_policies(&path, &bytes);
        }
    }
    assert!(checked >= 20, "only {checked} wasm filters seen");
}

fn assert_policies(what: &Path, yaml: &[u8]) -> usize {
    let yaml = String::from_utf8_lossy(yaml);
    let filters = wasm_filters(&yaml);
    assert!(!filters.is_empty(), "{}: no wasm filter", what.display());
    for (root_id, policy) in &filters {
        assert!(
            root_id.starts_with("sluice_"),
            "{}: {root_id}",
            what.display()
        );
        assert!(
            matches!(
                policy.as_deref(),
                Some("FAIL_CLOSED" | "FAIL_OPEN" | "FAIL_RELOAD")
            ),
            "{}: {root_id} has failure_policy {policy:?}",
            what.display()
        );
    }
    filters.len()
}

// ---------------------------------------------------------------------------------------------
// A module that traps
// ---------------------------------------------------------------------------------------------

const I32: u8 = 0x7f;

fn leb(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn section(id: u8, items: &[Vec<u8>], out: &mut Vec<u8>) {
    let mut body = Vec::new();
    leb(items.len(), &mut body);
    for item in items {
        body.extend_from_slice(item);
    }
    out.push(id);
    leb(body.len(), out);
    out.extend(body);
}

fn name(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    leb(text.len(), &mut out);
    out.extend_from_slice(text.as_bytes());
    out
}

/// A proxy-wasm (ABI 0.2.1) module whose every `proxy_on_request_headers` traps.
fn trapping_module() -> Vec<u8> {
    // (params, has an i32 result)
    let types: [(&[u8], bool); 6] = [
        (&[], false),             // 0: abi marker
        (&[I32], true),           // 1: malloc, on_done
        (&[I32, I32], false),     // 2: on_context_create
        (&[I32, I32], true),      // 3: on_vm_start, on_configure
        (&[I32, I32, I32], true), // 4: on_request_headers
        (&[I32], false),          // 5: on_delete, on_log
    ];
    const CONST_1: &[u8] = &[0x41, 0x01];
    const CONST_1024: &[u8] = &[0x41, 0x80, 0x08];
    const UNREACHABLE: &[u8] = &[0x00];
    // (export name, type, body without the final `end`)
    let functions: [(&str, usize, &[u8]); 9] = [
        ("proxy_abi_version_0_2_1", 0, &[]),
        // One page of memory; every allocation gets the same scratch area (the module never
        // reads what Envoy copies in).
        ("proxy_on_memory_allocate", 1, CONST_1024),
        ("proxy_on_context_create", 2, &[]),
        ("proxy_on_vm_start", 3, CONST_1),
        ("proxy_on_configure", 3, CONST_1),
        ("proxy_on_request_headers", 4, UNREACHABLE),
        ("proxy_on_done", 1, CONST_1),
        ("proxy_on_delete", 5, &[]),
        ("proxy_on_log", 5, &[]),
    ];
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    let type_items: Vec<Vec<u8>> = types
        .iter()
        .map(|(params, result)| {
            let mut t = vec![0x60];
            leb(params.len(), &mut t);
            t.extend_from_slice(params);
            if *result {
                t.extend_from_slice(&[1, I32]);
            } else {
                t.push(0);
            }
            t
        })
        .collect();
    section(1, &type_items, &mut module);
    let func_items: Vec<Vec<u8>> = functions
        .iter()
        .map(|(_, ty, _)| {
            let mut f = Vec::new();
            leb(*ty, &mut f);
            f
        })
        .collect();
    section(3, &func_items, &mut module);
    section(5, &[vec![0x00, 0x01]], &mut module); // memory: min 1 page, no max
    let mut exports = vec![[name("memory"), vec![0x02, 0x00]].concat()];
    for (index, (export, _, _)) in functions.iter().enumerate() {
        let mut e = name(export);
        e.push(0x00);
        leb(index, &mut e);
        exports.push(e);
    }
    section(7, &exports, &mut module);
    let code_items: Vec<Vec<u8>> = functions
        .iter()
        .map(|(_, _, body)| {
            let mut code = vec![0x00]; // no locals
            code.extend_from_slice(body);
            code.push(0x0b); // end
            let mut item = Vec::new();
            leb(code.len(), &mut item);
            item.extend(code);
            item
        })
        .collect();
    section(10, &code_items, &mut module);
    module
}

struct Trapping {
    upstream: Upstream,
    envoy: Envoy,
    _dir: tempfile::TempDir,
}

/// Envoy with the trapping module as its only wasm filter, under `policy`.
fn trapping_envoy(policy: &str) -> Trapping {
    let dir = tempfile::tempdir().expect("tempdir");
    let module = dir.path().join("trap.wasm");
    std::fs::write(&module, trapping_module()).expect("write module");
    let upstream = Upstream::start("backend");
    let mut filter = wasm_filter_json("trap", &module, "{}");
    filter["typed_config"]["config"]["failure_policy"] = json!(policy);
    let bootstrap: Value = Bootstrap::new()
        .cluster("backend", upstream.port())
        .route_to_cluster("backend")
        .http_filter_json(filter)
        .to_json();
    let config = serde_json::to_string_pretty(&bootstrap).expect("render");
    let envoy = Envoy::start(&config).unwrap_or_else(|e| panic!("{e:#}"));
    Trapping {
        upstream,
        envoy,
        _dir: dir,
    }
}

impl Trapping {
    /// Sends `n` requests one by one; each must complete (no hang) within the client timeout.
    fn send(&self, n: usize) -> Vec<Response> {
        let port = self.envoy.listener_port(LISTENER_NAME);
        (0..n)
            .map(|i| {
                client::send(&Request::get(port, "/").timeout(Duration::from_secs(20)))
                    .unwrap_or_else(|e| {
                        panic!("request {i} failed or hung: {e:#}\n{}", self.envoy.log())
                    })
            })
            .collect()
    }

    fn stats(&self, part: &str) -> String {
        let text = self.envoy.stats_text().expect("stats");
        text.lines()
            .filter(|l| l.contains(part))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[test]
fn the_trapping_module_really_traps() {
    let t = trapping_envoy("FAIL_CLOSED");
    let _ = t.send(1);
    let log = t.envoy.log();
    assert!(
        log.contains("unreachable"),
        "no trap in the Envoy log:\n{log}"
    );
}

#[test]
fn fail_closed_answers_503_and_never_reaches_the_upstream() {
    let t = trapping_envoy("FAIL_CLOSED");
    let responses = t.send(12);
    for (i, r) in responses.iter().enumerate() {
        assert_eq!(
            r.status,
            503,
            "request {i}: {}\n{}",
            r.text(),
            t.stats("wasm")
        );
    }
    assert_eq!(t.upstream.request_count(), 0);
}

#[test]
fn fail_open_passes_requests_through() {
    let t = trapping_envoy("FAIL_OPEN");
    let responses = t.send(12);
    // The request that traps a worker's VM fails (503, wasm_fail_stream); Envoy runs two
    // workers, so at most two such. After that the filter is skipped on that worker.
    let trapped = responses.iter().filter(|r| r.status == 503).count();
    assert!(
        (1..=2).contains(&trapped),
        "{trapped} requests failed:\n{}",
        t.stats("wasm")
    );
    for (i, r) in responses
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status != 503)
    {
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.served_by(), Some("backend"));
    }
    assert_eq!(t.upstream.request_count(), 12 - trapped);
}

#[test]
fn fail_reload_builds_a_new_vm() {
    let t = trapping_envoy("FAIL_RELOAD");
    // Envoy reloads a failed VM on the next request once its back-off (1 s base) is over;
    // requests within the back-off are refused. Keep sending until a reload is counted.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    let reloads = loop {
        for r in t.send(1) {
            sent += 1;
            // Each request meets a VM that traps (or is backing off): refused, never forwarded.
            assert_eq!(r.status, 503, "{}\n{}", r.text(), t.stats("wasm"));
        }
        let reloads = t
            .envoy
            .stat("wasm.sluice_trap.vm_reload_success")
            .unwrap_or(0);
        if reloads >= 2 || std::time::Instant::now() > deadline {
            break reloads;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stats = t.stats("wasm");
    assert!(reloads >= 2, "no VM reload after {sent} requests:\n{stats}");
    assert_eq!(
        t.envoy.stat("wasm.sluice_trap.vm_reload_failure"),
        Some(0),
        "{stats}"
    );
    assert_eq!(t.upstream.request_count(), 0);
}
