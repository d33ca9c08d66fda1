//! The sluice builder: Istio-style YAML in, Envoy configs out.
//!
//! Stages: [`parse`] (YAML with positions -> typed Istio resources) -> [`validate`] (checks of
//! each resource) -> [`model`] (cross-references, then a deterministic mesh: listeners, virtual
//! hosts, rules, clusters) -> [`emit`] (one module per target). [`generate`] runs them all and
//! returns the files, or every problem found; [`write_output`] writes the files atomically.
//!
//! ```no_run
//! let inputs = sluice::Inputs::read(&["examples/bookinfo".into()]).expect("readable");
//! let options = sluice::Options::default();
//! match sluice::generate(&inputs, &options) {
//!     Ok(output) => sluice::write_output("out".as_ref(), &output).expect("written"),
//!     Err(diags) => eprintln!("{diags}"),
//! }
//! ```

pub mod build;
pub mod diag;
pub mod emit;
pub mod istio;
pub mod locality;
pub mod model;
pub mod native;
pub mod oci;
pub mod parse;
pub mod schema;
pub mod sluice_settings;
pub mod tcp;
pub mod toolchain;
pub mod validate;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use parse::{Inputs, SourceFile};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Target {
    /// A static Envoy bootstrap (`envoy.yaml`).
    #[default]
    Envoy,
    /// Istio manifests: WasmPlugins for the sluice filters and the VirtualServices that route
    /// on their decisions (see [`emit::istio_target`]).
    Istio(emit::istio_target::IstioOptions),
    /// A docker-compose project: Envoy with the filters plus demo backends (see
    /// [`emit::compose`]).
    Compose,
}

/// Where the generated config finds the sluice .wasm modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WasmModules {
    /// Copy the modules found in `from` into `<out_dir>/wasm/` and reference them by that
    /// absolute path, so `envoy -c <out_dir>/envoy.yaml` runs from anywhere.
    Bundle {
        /// Directory holding `sluice_<filter>.wasm`.
        from: PathBuf,
        /// The output directory the files will be written to (absolute).
        out_dir: PathBuf,
    },
    /// Reference `<dir>/sluice_<filter>.wasm` as written, without copying (a relative `dir`
    /// resolves against Envoy's working directory).
    Reference(PathBuf),
}

/// Generation options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Output target.
    pub target: Target,
    /// Address the listeners bind (`0.0.0.0` by default; tests use `127.0.0.1`).
    pub listen_address: String,
    /// Admin port, always bound to 127.0.0.1.
    pub admin_port: u16,
    /// Bind every listener and the admin interface to port 0 (tests); listener names keep the
    /// input port (`listener_<port>`), which the harness resolves through the admin API.
    pub ephemeral_ports: bool,
    /// Where the wasm modules come from.
    pub wasm: WasmModules,
    /// Gateway `credentialName: NAME` reads `DIR/NAME/{tls.crt,tls.key[,ca.crt]}` (see
    /// [`model::build_with_credentials`]); `None`: such servers get no listener (a warning).
    /// DestinationRule `tls.credentialName` reads its client secret from the same layout; for
    /// the envoy and compose targets it is an error without a directory (the istio target
    /// leaves the secret to Istio).
    pub credentials_dir: Option<PathBuf>,
    /// Attach the one `sluice-suite` filter (`sluice_suite.wasm`: router, canary, fault and
    /// breaker in one module, config [`sluice_core::suite::SuiteConfig`]) instead of the chain
    /// `sluice-router -> sluice-canary -> sluice-fault -> sluice-breaker`. Routes, clusters and
    /// everything native stay the same; see [`emit::filters`].
    pub suite: bool,
    /// The proxy's own locality (`--locality REGION[/ZONE[/SUBZONE]]`): written to the
    /// bootstrap's `node.locality` and needed to apply DestinationRule `localityLbSetting`
    /// (see [`locality`]); `None`: that setting is not applied (a warning).
    pub locality: Option<locality::Locality>,
    /// How many proxies in front of this Envoy are trusted to append to `x-forwarded-for`
    /// (`--xff-trusted-hops N`, default 0). Every generated HTTP listener sets
    /// `use_remote_address: true` and `xff_num_trusted_hops: N`, so the client address Envoy
    /// resolves (its downstream remote address, the `source.address` the filters read) is the
    /// TCP peer with 0, and with N > 0 the N-th `x-forwarded-for` entry from the right, i.e. the
    /// address the outermost trusted proxy saw. A client cannot pick it by sending the header.
    /// The istio target leaves this to Istio (`meshConfig.defaultConfig.gatewayTopology`).
    pub xff_trusted_hops: u32,
    /// `--detailed-replies`: the breaker's rejections name the cluster
    /// (`x-sluice-breaker: outbound|9080|v2|ratings open`) instead of only the reason
    /// (`open`), for debugging. Off by default: no client learns internal cluster names.
    pub detailed_replies: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            target: Target::Envoy,
            listen_address: "0.0.0.0".into(),
            admin_port: 9901,
            ephemeral_ports: false,
            wasm: WasmModules::Reference(default_wasm_dir()),
            credentials_dir: None,
            locality: None,
            suite: false,
            xff_trusted_hops: 0,
            detailed_replies: false,
        }
    }
}

/// `$SLUICE_WASM_DIR`, else `<repo>/target/wasm32-wasip1/release` of this source tree.
pub fn default_wasm_dir() -> PathBuf {
    std::env::var_os("SLUICE_WASM_DIR").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target/wasm32-wasip1/release")
        },
        PathBuf::from,
    )
}

/// Generated files: relative path -> bytes, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// The files.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Warnings (things the target cannot express yet); generation still succeeded.
    pub warnings: Diagnostics,
}

/// Runs every stage. On any error returns all diagnostics (errors and warnings) and no files.
pub fn generate(inputs: &Inputs, options: &Options) -> Result<Output, Diagnostics> {
    let (resources, mut diags) = parse::parse(inputs);
    diags.extend(validate::check_resources(&resources));
    diags.extend(sluice_settings::check(&resources, inputs));
    diags.extend(locality::check(&resources, options.locality.as_ref()));
    let (mut mesh, model_diags) =
        model::build_with_credentials(&resources, options.credentials_dir.as_deref());
    diags.extend(model_diags);
    if matches!(options.target, Target::Istio(_)) {
        diags.extend(model::check_match_gateways_for_istio(&resources));
    } else {
        diags.extend(model::check_client_credentials(
            &resources,
            options.credentials_dir.as_deref(),
        ));
    }
    locality::apply(&mut mesh, options.locality.as_ref());
    let mut diags = Diagnostics(diags);
    diags.sort();
    if diags.has_errors() {
        return Err(diags);
    }
    let emitted = match &options.target {
        Target::Envoy => emit::envoy::emit(&mesh, options),
        Target::Istio(istio) => emit::istio_target::emit(
            &resources,
            &mesh,
            istio,
            options.suite,
            options.detailed_replies,
        ),
        Target::Compose => emit::compose::emit(&mesh, options),
    };
    match emitted {
        Ok(e) => Ok(Output {
            files: e.files,
            warnings: diags,
        }),
        Err(errors) => {
            diags.0.extend(errors.into_iter().map(|message| Diagnostic {
                file: "<output>".into(),
                pos: yaml::Pos::default(),
                severity: Severity::Error,
                resource: String::new(),
                path: yaml::FieldPath::root(),
                message,
                hint: None,
            }));
            Err(diags)
        }
    }
}

/// Writes `output` to `dir` atomically: into a temporary sibling directory first, then renamed
/// over `dir`, so a reader never sees a half-written output directory.
pub fn write_output(dir: &Path, output: &Output) -> std::io::Result<()> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)?;
    let base = dir
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    let pid = std::process::id();
    let staging = parent.join(format!(".{base}.sluice-new-{pid}"));
    let retired = parent.join(format!(".{base}.sluice-old-{pid}"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir(&staging)?;
    for (rel, bytes) in &output.files {
        let path = staging.join(rel);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::write(&path, bytes)?;
    }
    if dir.exists() {
        std::fs::rename(dir, &retired)?;
        if let Err(e) = std::fs::rename(&staging, dir) {
            // Put the previous output back rather than leave nothing.
            let _ = std::fs::rename(&retired, dir);
            return Err(e);
        }
        std::fs::remove_dir_all(&retired)?;
    } else {
        std::fs::rename(&staging, dir)?;
    }
    Ok(())
}
