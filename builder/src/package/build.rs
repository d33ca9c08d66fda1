//! `sluice build`: the four filters (or, with `--suite`, the one suite module that `sluice
//! generate --suite` loads) compiled for `wasm32-wasip1` in release, optionally shrunk with
//! Debian's binaryen ([`optimize_module`]: unused exports dropped, `wasm-opt -Oz`), copied to one output directory and optionally packaged as
//! an OCI image layout for Istio ([`crate::package::oci`]).
//!
//! The modules land in their own directory (`target/sluice-build/` by default), never back in
//! cargo's `target/wasm32-wasip1/release/`: other tools (and the test harness) read cargo's
//! output, and rewriting a file another process may be loading would race with it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::output::Destination;
use crate::output::Output;
use crate::package::oci;
use crate::xds::filters::{FILTERS, SUITE};

/// The modules of the default layout, the four-filter chain, in chain order.
pub const CHAIN_MODULES: [&str; 4] = FILTERS;
/// The module of the one-module layout (`--suite`).
pub const SUITE_MODULES: [&str; 1] = [SUITE];

/// What to build and where to put it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// Root of the sluice checkout (holds the workspace `Cargo.toml`).
    pub repo: PathBuf,
    /// Take already built modules from this directory instead of running cargo.
    pub prebuilt: Option<PathBuf>,
    /// Where the final `sluice_<filter>.wasm` files are written.
    pub out_dir: PathBuf,
    /// Run `wasm-opt -Oz` when it is installed.
    pub optimize: bool,
    /// Also write an OCI image layout here.
    pub oci: Option<PathBuf>,
    /// Tag of the OCI images (`sluice-router:<tag>`).
    pub tag: String,
    /// Write into output folders that hold files sluice did not write (they are kept).
    pub force: bool,
    /// The modules to build, by short name (cargo package `sluice-<name>`, file
    /// `sluice_<name>.wasm`): [`CHAIN_MODULES`] or [`SUITE_MODULES`].
    pub modules: Vec<&'static str>,
}

/// One finished module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltModule {
    /// Filter short name (`router`, or `suite`).
    pub filter: &'static str,
    /// The final module.
    pub path: PathBuf,
    /// Size as cargo produced it.
    pub cargo_size: u64,
    /// Size after `wasm-opt`, when it ran.
    pub optimized_size: Option<u64>,
    /// Lower-case hex sha256 of the final module (WasmPlugin's `sha256`).
    pub sha256: String,
}

impl BuiltModule {
    /// Size of the final module.
    pub fn size(&self) -> u64 {
        self.optimized_size.unwrap_or(self.cargo_size)
    }
}

/// What a build produced.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    /// The modules, in filter-chain order.
    pub modules: Vec<BuiltModule>,
    /// Why `wasm-opt` did not run, when it did not (not installed, or not asked for).
    pub wasm_opt_skipped: Option<String>,
    /// The OCI images written, when `--oci` was given.
    pub images: Vec<oci::ImageSummary>,
}

/// The sluice checkout to build: the one this binary was compiled from when it still exists,
/// else the current directory or one of its parents.
pub fn find_repo() -> Result<PathBuf, String> {
    let compiled_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if is_sluice_checkout(&compiled_from) {
        return Ok(std::path::absolute(&compiled_from).unwrap_or(compiled_from));
    }
    let cwd = std::env::current_dir().map_err(|e| format!("cannot read the current dir: {e}"))?;
    cwd.ancestors()
        .find(|dir| is_sluice_checkout(dir))
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            format!(
                "not in a sluice checkout: neither {} nor {} or its parents hold filters/router/Cargo.toml\n  hint: run `sluice build` from the sluice repository (git clone it first), or pass --modules DIR with modules built elsewhere",
                compiled_from.display(),
                cwd.display()
            )
        })
}

fn is_sluice_checkout(dir: &Path) -> bool {
    dir.join("Cargo.toml").is_file() && dir.join("filters/router/Cargo.toml").is_file()
}

/// File name of a filter's module, as cargo names it.
pub fn module_file(filter: &str) -> String {
    sluice_core::wire::module_file(filter)
}

/// Runs the build; `progress` receives one line per step.
///
/// The output folders (`out_dir`, and `oci` when given) follow `sluice generate -o`'s rules
/// ([`crate::output`]): they are checked before anything is built, and nothing sluice did not
/// write there is deleted or overwritten.
pub fn build(
    options: &BuildOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<BuildReport, String> {
    let modules_destination = Destination::check(&options.out_dir, &[], options.force)
        .map_err(|refusal| refusal.to_string())?;
    let oci_destination = match &options.oci {
        Some(dir) => Some(
            Destination::check(dir, &[], options.force).map_err(|refusal| refusal.to_string())?,
        ),
        None => None,
    };
    let source_dir = match &options.prebuilt {
        Some(dir) => dir.clone(),
        None => {
            cargo_build(&options.repo, &options.modules, progress)?;
            options.repo.join("target/wasm32-wasip1/release")
        }
    };
    let mut report = BuildReport::default();
    let wasm_opt_available = options.optimize && wasm_opt_version().is_some();
    report.wasm_opt_skipped = if !options.optimize {
        Some("--no-wasm-opt".into())
    } else if !wasm_opt_available {
        Some("wasm-opt not found (apt-get install binaryen to shrink the modules further)".into())
    } else {
        None
    };
    // Modules are shrunk in a scratch folder, then written to the output folder all at once.
    let scratch = std::env::temp_dir().join(format!("sluice-build-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)
        .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    let shrunk = shrink_all(options, &source_dir, &scratch, wasm_opt_available, progress);
    let _ = std::fs::remove_dir_all(&scratch);
    let built = shrunk?;
    let mut files = Output::default();
    for (filter, cargo_size, optimized_size, bytes) in &built {
        let file = module_file(filter);
        report.modules.push(BuiltModule {
            filter,
            path: modules_destination.dir.join(&file),
            cargo_size: *cargo_size,
            optimized_size: *optimized_size,
            sha256: oci::sha256_hex(bytes),
        });
        files.files.insert(file, bytes.clone());
    }
    modules_destination
        .write(&files)
        .map_err(|e| format!("cannot write {}: {e}", modules_destination.dir.display()))?;
    if let Some(destination) = &oci_destination {
        progress(&format!(
            "writing OCI image layout {}",
            destination.dir.display()
        ));
        report.images = write_oci_layout(destination, &built, &options.tag)?;
    }
    Ok(report)
}

/// One built module: filter, size as cargo built it, size after shrinking (when it ran), bytes.
type Built = (&'static str, u64, Option<u64>, Vec<u8>);

/// Reads each module from `source_dir` and shrinks it into `scratch` when binaryen is there.
fn shrink_all(
    options: &BuildOptions,
    source_dir: &Path,
    scratch: &Path,
    wasm_opt_available: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Built>, String> {
    let mut built = Vec::new();
    for &filter in &options.modules {
        let file = module_file(filter);
        let source = source_dir.join(&file);
        let cargo_bytes = std::fs::read(&source).map_err(|e| {
            format!(
                "cannot read {}: {e}\n  hint: cargo build --release --target wasm32-wasip1 -p sluice-{filter}",
                source.display()
            )
        })?;
        if !wasm_opt_available {
            built.push((filter, cargo_bytes.len() as u64, None, cargo_bytes));
            continue;
        }
        let target = scratch.join(&file);
        match optimize_module(&source, &target)? {
            Shrink::Shrunk => progress(&format!("wasm-metadce + wasm-opt -Oz {file}")),
            Shrink::AlreadyShrunk => progress(&format!(
                "{file} is shrunk already (no unused SDK exports): packaged as it is"
            )),
        }
        let bytes =
            std::fs::read(&target).map_err(|e| format!("cannot read {}: {e}", target.display()))?;
        built.push((
            filter,
            cargo_bytes.len() as u64,
            Some(bytes.len() as u64),
            bytes,
        ));
    }
    Ok(built)
}

fn cargo_build(
    repo: &Path,
    modules: &[&str],
    progress: &mut dyn FnMut(&str),
) -> Result<(), String> {
    progress(&crate::package::toolchain::ensure(repo, &[])?);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(repo)
        .args(["build", "--release", "--target", "wasm32-wasip1"]);
    for filter in modules {
        command.args(["-p", &sluice_core::wire::filter_name(filter)]);
    }
    let packages = match modules {
        [one] => one.to_string(),
        many => format!("{{{}}}", many.join(",")),
    };
    progress(&format!(
        "cargo build --release --target wasm32-wasip1 -p sluice-{packages} (in {})",
        repo.display()
    ));
    // cargo's own progress goes straight to the user's terminal (inherited stderr).
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo build failed ({status})"))
    }
}

/// `wasm-opt --version`, or `None` when it is not installed.
pub fn wasm_opt_version() -> Option<String> {
    let out = Command::new("wasm-opt").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// WebAssembly features rustc 1.95 enables for wasm32-wasip1; binaryen 108 (Debian 12) must be
/// told, or it refuses the module.
pub const WASM_FEATURES: [&str; 6] = [
    "--enable-bulk-memory",
    "--enable-sign-ext",
    "--enable-nontrapping-float-to-int",
    "--enable-mutable-globals",
    "--enable-multivalue",
    "--enable-reference-types",
];

/// The exports Envoy calls an HTTP filter's module through (proxy-wasm ABI 0.2.1), kept by
/// [`optimize_module`].
pub const HTTP_FILTER_EXPORTS: [&str; 17] = [
    "memory",
    "_initialize",
    "proxy_abi_version_0_2_1",
    "proxy_on_memory_allocate",
    "proxy_on_vm_start",
    "proxy_on_configure",
    "proxy_on_tick",
    "proxy_on_context_create",
    "proxy_on_request_headers",
    "proxy_on_request_body",
    "proxy_on_request_trailers",
    "proxy_on_response_headers",
    "proxy_on_response_body",
    "proxy_on_response_trailers",
    "proxy_on_log",
    "proxy_on_done",
    "proxy_on_delete",
];

/// The SDK's exports no sluice module is called through, dropped by [`optimize_module`]:
/// network-filter callbacks (the modules are HTTP filters), the answers to HTTP/gRPC callouts,
/// shared queues and foreign functions (none is ever started). Envoy skips a callback a module
/// does not export.
pub const UNUSED_EXPORTS: [&str; 12] = [
    "proxy_on_new_connection",
    "proxy_on_downstream_data",
    "proxy_on_downstream_connection_close",
    "proxy_on_upstream_data",
    "proxy_on_upstream_connection_close",
    "proxy_on_http_call_response",
    "proxy_on_grpc_receive_initial_metadata",
    "proxy_on_grpc_receive",
    "proxy_on_grpc_receive_trailing_metadata",
    "proxy_on_grpc_close",
    "proxy_on_queue_ready",
    "proxy_on_foreign_function",
];

/// Shrinks one module with binaryen, `input` to `output` (they may be the same file; `output`
/// is replaced by a rename, never written through, so a reader never sees half a module and
/// cargo's hard-linked copy in `deps/` stays its original):
/// 1. the SDK's exports no HTTP filter is called through ([`UNUSED_EXPORTS`]) are dropped with
///    `wasm-metadce`, and with them the dispatch code only they reach (about 9-10 KB a
///    module). An export in neither list (a new SDK callback) is an error: it must be
///    classified, never dropped silently;
/// 2. `wasm-opt -Oz`.
///
/// Idempotent: a module that no longer exports any of [`UNUSED_EXPORTS`] went through both steps
/// already (cargo's modules always export them), so it is copied unchanged and
/// [`Shrink::AlreadyShrunk`] says so. Shrinking it again would change its bytes, and with them
/// every sha256 pin computed from the first result.
pub fn optimize_module(input: &Path, output: &Path) -> Result<Shrink, String> {
    let exports = exports_of(input)?;
    if let Some(unknown) = exports.iter().find(|name| {
        !HTTP_FILTER_EXPORTS.contains(&name.as_str()) && !UNUSED_EXPORTS.contains(&name.as_str())
    }) {
        return Err(format!(
            "{} exports {unknown:?}, which sluice does not know\n  hint: add it to \
             HTTP_FILTER_EXPORTS (Envoy calls it) or UNUSED_EXPORTS in builder/src/package/build.rs",
            input.display()
        ));
    }
    if let Some(missing) = HTTP_FILTER_EXPORTS
        .iter()
        .find(|name| !exports.iter().any(|e| e == *name))
    {
        return Err(format!(
            "{} does not export {missing}: not a proxy-wasm HTTP filter built by this SDK",
            input.display()
        ));
    }
    if !exports
        .iter()
        .any(|name| UNUSED_EXPORTS.contains(&name.as_str()))
    {
        if input != output {
            let bytes = std::fs::read(input)
                .map_err(|e| format!("cannot read {}: {e}", input.display()))?;
            write_atomically(output, &bytes)?;
        }
        return Ok(Shrink::AlreadyShrunk);
    }
    let graph = serde_json::Value::Array(
        HTTP_FILTER_EXPORTS
            .iter()
            .map(|name| {
                serde_json::json!({"name": format!("export:{name}"), "export": name, "root": true})
            })
            .collect(),
    );
    let graph_file = output.with_extension("metadce.json");
    let trimmed = output.with_extension("trim.wasm");
    let staging = output.with_extension("wasm.tmp");
    std::fs::write(&graph_file, graph.to_string())
        .map_err(|e| format!("cannot write {}: {e}", graph_file.display()))?;
    let outcome = binaryen(
        Command::new("wasm-metadce")
            .args(WASM_FEATURES)
            .arg(input)
            .arg("--graph-file")
            .arg(&graph_file)
            .arg("-o")
            .arg(&trimmed),
    )
    .and_then(|_| {
        binaryen(
            Command::new("wasm-opt")
                .arg("-Oz")
                .args(WASM_FEATURES)
                .arg(&trimmed)
                .arg("-o")
                .arg(&staging),
        )
    })
    .and_then(|_| {
        std::fs::rename(&staging, output)
            .map_err(|e| format!("cannot move {} into place: {e}", staging.display()))
    });
    for leftover in [&graph_file, &trimmed, &staging] {
        let _ = std::fs::remove_file(leftover);
    }
    outcome.map(|()| Shrink::Shrunk)
}

/// What [`optimize_module`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shrink {
    /// Exports trimmed and `wasm-opt -Oz` run.
    Shrunk,
    /// The module was shrunk before (it exports none of [`UNUSED_EXPORTS`]): copied unchanged.
    AlreadyShrunk,
}

/// The names a module exports, from binaryen's text form (`wasm-dis`).
fn exports_of(module: &Path) -> Result<Vec<String>, String> {
    let text = binaryen(Command::new("wasm-dis").args(WASM_FEATURES).arg(module))?;
    Ok(text
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("(export \""))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect())
}

/// Runs a binaryen tool; its stdout on success, its stderr in the error.
fn binaryen(command: &mut Command) -> Result<String, String> {
    let shown = format!("{command:?}");
    let out = command
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}\n  hint: apt-get install binaryen"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes through a temporary sibling and a rename, so a reader never sees half a module.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let staging = path.with_extension("wasm.tmp");
    std::fs::write(&staging, bytes)
        .and_then(|()| std::fs::rename(&staging, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Writes the OCI image layout of `modules` (image names `sluice-<filter>`) into `destination`.
fn write_oci_layout(
    destination: &Destination,
    modules: &[Built],
    tag: &str,
) -> Result<Vec<oci::ImageSummary>, String> {
    let names: Vec<String> = modules
        .iter()
        .map(|(filter, ..)| sluice_core::wire::filter_name(filter))
        .collect();
    let inputs: Vec<oci::Module<'_>> = modules
        .iter()
        .zip(&names)
        .map(|((.., wasm), name)| oci::Module { name, wasm })
        .collect();
    let layout = oci::image_layout(&inputs, tag).map_err(|e| format!("cannot pack: {e}"))?;
    let files = Output {
        files: layout.files,
        ..Output::default()
    };
    destination
        .write(&files)
        .map_err(|e| format!("cannot write {}: {e}", destination.dir.display()))?;
    Ok(layout.images)
}

/// The summary table: module, size (before -> after wasm-opt), sha256.
pub fn table(report: &BuildReport) -> String {
    let mut out = format!("{:<20} {:>22}  {}\n", "module", "size (bytes)", "sha256");
    for m in &report.modules {
        let size = match m.optimized_size {
            Some(after) => format!("{} -> {}", m.cargo_size, after),
            None => m.cargo_size.to_string(),
        };
        out.push_str(&format!(
            "{:<20} {:>22}  {}\n",
            module_file(m.filter),
            size,
            m.sha256
        ));
    }
    if let Some(why) = &report.wasm_opt_skipped {
        out.push_str(&format!("wasm-opt skipped: {why}\n"));
    }
    for image in &report.images {
        out.push_str(&format!(
            "image {:<16} ref {:<24} manifest {}\n",
            image.name, image.reference, image.manifest_digest
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module in binaryen's text form exporting `exports`, each its own function that
    /// calls a helper of its own (so dropping an export shows as dropped code too).
    fn assembled(dir: &Path, exports: &[&str]) -> PathBuf {
        let mut wat = String::from("(module\n (memory $m 1)\n (export \"memory\" (memory $m))\n");
        for (i, name) in exports.iter().filter(|n| **n != "memory").enumerate() {
            wat.push_str(&format!(
                " (func $helper{i} (result i32) (i32.const {i}))\n \
                 (func $f{i} (result i32) (i32.add (call $helper{i}) (i32.const 1)))\n \
                 (export \"{name}\" (func $f{i}))\n"
            ));
        }
        wat.push(')');
        let text = dir.join("module.wat");
        std::fs::write(&text, wat).unwrap();
        let module = dir.join("module.wasm");
        binaryen(Command::new("wasm-as").arg(&text).arg("-o").arg(&module))
            .expect("binaryen installed (cargo xtask test installs it)");
        module
    }

    #[test]
    fn optimize_drops_exactly_the_unused_exports_and_their_code() {
        let dir = tempfile::tempdir().unwrap();
        let mut all: Vec<&str> = HTTP_FILTER_EXPORTS.to_vec();
        all.extend(UNUSED_EXPORTS);
        let module = assembled(dir.path(), &all);
        let before = std::fs::metadata(&module).unwrap().len();
        let out = dir.path().join("out.wasm");
        assert_eq!(optimize_module(&module, &out).unwrap(), Shrink::Shrunk);
        let mut kept = exports_of(&out).unwrap();
        kept.sort();
        let mut wanted: Vec<String> = HTTP_FILTER_EXPORTS.iter().map(|e| e.to_string()).collect();
        wanted.sort();
        assert_eq!(kept, wanted);
        assert!(std::fs::metadata(&out).unwrap().len() < before);
        // Nothing left behind next to the output.
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(files, ["module.wasm", "module.wat", "out.wasm"]);
    }

    /// Shrinking a shrunk module changes nothing: same bytes, in place or to another file, so
    /// pins computed from the first result stay true.
    #[test]
    fn shrinking_twice_gives_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut all: Vec<&str> = HTTP_FILTER_EXPORTS.to_vec();
        all.extend(UNUSED_EXPORTS);
        let module = assembled(dir.path(), &all);
        let once = dir.path().join("once.wasm");
        optimize_module(&module, &once).unwrap();
        let first = std::fs::read(&once).unwrap();
        let twice = dir.path().join("twice.wasm");
        assert_eq!(
            optimize_module(&once, &twice).unwrap(),
            Shrink::AlreadyShrunk
        );
        assert_eq!(std::fs::read(&twice).unwrap(), first);
        assert_eq!(
            optimize_module(&once, &once).unwrap(),
            Shrink::AlreadyShrunk
        );
        assert_eq!(std::fs::read(&once).unwrap(), first);
    }

    #[test]
    fn optimize_refuses_an_export_it_does_not_know_and_a_missing_callback() {
        let dir = tempfile::tempdir().unwrap();
        let mut exports: Vec<&str> = HTTP_FILTER_EXPORTS.to_vec();
        exports.push("proxy_on_something_new");
        let module = assembled(dir.path(), &exports);
        let error = optimize_module(&module, &dir.path().join("out.wasm")).unwrap_err();
        assert!(
            error.contains("exports \"proxy_on_something_new\", which sluice does not know"),
            "{error}"
        );
        let without_log: Vec<&str> = HTTP_FILTER_EXPORTS
            .iter()
            .copied()
            .filter(|e| *e != "proxy_on_log")
            .collect();
        let module = assembled(dir.path(), &without_log);
        let error = optimize_module(&module, &dir.path().join("out.wasm")).unwrap_err();
        assert!(error.contains("does not export proxy_on_log"), "{error}");
        assert!(!dir.path().join("out.wasm").exists());
    }

    #[test]
    fn finds_the_checkout_it_was_compiled_from() {
        let repo = find_repo().unwrap();
        assert!(
            repo.join("filters/canary/Cargo.toml").is_file(),
            "{}",
            repo.display()
        );
    }

    #[test]
    fn table_shows_sizes_before_and_after_and_the_digest() {
        let report = BuildReport {
            modules: vec![BuiltModule {
                filter: "router",
                path: PathBuf::from("x"),
                cargo_size: 1000,
                optimized_size: Some(900),
                sha256: "ab".repeat(32),
            }],
            wasm_opt_skipped: None,
            images: Vec::new(),
        };
        let table = table(&report);
        assert!(table.contains("sluice_router.wasm"), "{table}");
        assert!(table.contains("1000 -> 900"), "{table}");
        assert!(table.contains(&"ab".repeat(32)), "{table}");
    }
}
