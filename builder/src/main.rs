//! The `sluice` command-line tool.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Examples:
  # Generate an Envoy bootstrap from a directory of Istio YAML, then run it:
  sluice generate -f examples/bookinfo -o out/bookinfo
  envoy -c out/bookinfo/envoy.yaml

  # Several inputs (files and directories, read recursively: *.yaml, *.yml):
  sluice generate -f mesh/services.yaml -f mesh/routes/ -o out/mesh

  # Reference the .wasm modules where they are instead of copying them
  # (a relative directory resolves against Envoy's working directory):
  sluice generate -f examples/bookinfo -o envoy-configs/bookinfo --wasm-dir target/wasm32-wasip1/release

  # One filter, sluice-suite, instead of the four-filter chain (less CPU per request):
  sluice generate -f examples/demo -o out/demo --suite

Inputs are Istio networking.istio.io resources (v1, v1beta1, v1alpha3): Gateway, VirtualService,
DestinationRule, ServiceEntry (endpoints give hosts their addresses), WorkloadEntry.
Every problem is reported as `file:line:col: error: Kind/name: field.path: message` with a hint;
if there is any error, nothing is written and the exit code is 1.";

/// sluice: Istio-style traffic rules compiled into configs for Envoy with the sluice filters.
#[derive(Parser)]
#[command(name = "sluice", version, about, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate Istio YAML and generate configs for a target.
    #[command(after_help = AFTER_HELP)]
    Generate(GenerateArgs),
    /// Build the four filter modules (or with --suite the one suite module) (release,
    /// wasm32-wasip1), shrink them with wasm-opt when installed, print module / size / sha256,
    /// and optionally write an OCI image layout.
    #[command(after_help = BUILD_HELP)]
    Build(BuildArgs),
    /// Print or write the JSON Schemas of the filters' plugin configs (draft 2020-12).
    #[command(after_help = SCHEMA_HELP)]
    Schema(SchemaArgs),
}

const SCHEMA_HELP: &str = "\
Examples:
  # Write docs/schemas/sluice-{router,canary,fault,breaker,suite}.schema.json:
  sluice schema --out docs/schemas

  # Print one filter's schema:
  sluice schema canary

The schemas are generated from the types the filters deserialize: unknown fields are refused
(additionalProperties: false), as the filters refuse them.";

#[derive(clap::Args)]
struct SchemaArgs {
    /// The filter whose schema to print or write (default with --out: all five).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(sluice::schema::CONFIGS))]
    filter: Option<String>,
    /// Write sluice-<filter>.schema.json files into DIR instead of printing.
    #[arg(long, value_name = "DIR", required_unless_present = "filter")]
    out: Option<PathBuf>,
}

const BUILD_HELP: &str = "\
Examples:
  # Build the modules into target/sluice-build/ and print their sizes and sha256:
  sluice build

  # Also package them for Istio as an OCI image layout, then push one image:
  sluice build --oci out/oci --tag 0.1.0
  skopeo copy oci:out/oci:sluice-router-0.1.0 docker://registry.example.com/sluice-router:0.1.0
  #   or: oras cp --from-oci-layout out/oci:sluice-router-0.1.0 registry.example.com/sluice-router:0.1.0

  # Package modules built elsewhere (no cargo run):
  sluice build --modules target/wasm32-wasip1/release --oci out/oci

  # The one-module layout of `sluice generate --suite`: sluice_suite.wasm, image sluice-suite:
  sluice build --suite --oci out/oci --tag 0.1.0

Each image has one gzip-tar layer holding plugin.wasm (the \"compat\" variant Istio's fetcher
reads). wasm-opt comes from Debian's binaryen package; without it the modules are used as cargo
built them. Must run inside a sluice checkout unless --modules is given.";

#[derive(clap::Args)]
struct BuildArgs {
    /// Write an OCI image layout (one image per filter, named sluice-<filter>) into DIR.
    #[arg(long, value_name = "DIR")]
    oci: Option<PathBuf>,
    /// Image tag; the layout's reference names are sluice-<filter>-<TAG>.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    tag: String,
    /// Where the final modules go (default: target/sluice-build/ of the checkout).
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Take modules already built in DIR instead of running cargo.
    #[arg(long, value_name = "DIR")]
    modules: Option<PathBuf>,
    /// Do not run wasm-opt even when it is installed.
    #[arg(long)]
    no_wasm_opt: bool,
    /// Build and package the one-module layout instead: sluice_suite.wasm (image sluice-suite),
    /// the module `sluice generate --suite` loads.
    #[arg(long)]
    suite: bool,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// Input YAML file or directory (repeatable).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE_OR_DIR",
        required = true
    )]
    files: Vec<PathBuf>,
    /// Output directory; replaced atomically, and left untouched when there are errors.
    #[arg(short = 'o', long = "out", value_name = "OUT_DIR")]
    out: PathBuf,
    /// What to generate.
    #[arg(long, value_enum, default_value_t = TargetArg::Envoy)]
    target: TargetArg,
    /// Address the listeners bind.
    #[arg(long, default_value = "0.0.0.0")]
    listen_address: String,
    /// Envoy admin port (always bound to 127.0.0.1).
    #[arg(long, default_value_t = 9901)]
    admin_port: u16,
    /// Reference DIR/sluice_<filter>.wasm instead of copying the modules into OUT_DIR/wasm/.
    /// Default: copy from $SLUICE_WASM_DIR, else from target/wasm32-wasip1/release of the
    /// source tree sluice was built from.
    #[arg(long, value_name = "DIR")]
    wasm_dir: Option<PathBuf>,
    /// Bind all listeners and the admin interface to port 0 (for tests).
    #[arg(long)]
    ephemeral_ports: bool,
    /// Resolve Gateway `tls.credentialName: NAME` to DIR/NAME/tls.crt, tls.key (and ca.crt for
    /// MUTUAL): the key names of a Kubernetes TLS secret. Without it, such servers get no
    /// listener (a warning). DestinationRule `tls.credentialName` reads the client secret the
    /// same way (tls.crt, tls.key for MUTUAL; ca.crt verifies the server) and needs it.
    #[arg(long, value_name = "DIR")]
    credentials_dir: Option<PathBuf>,
    /// The proxy's own locality, REGION[/ZONE[/SUBZONE]] (e.g. us-east/zone-a): written to the
    /// bootstrap's node.locality, and what DestinationRule localityLbSetting (distribute,
    /// failover) is applied against; without it that setting is not applied (a warning).
    #[arg(long, value_name = "REGION[/ZONE[/SUBZONE]]", value_parser = parse_locality)]
    locality: Option<sluice::locality::Locality>,
    /// istio target: registry the WasmPlugins pull from, oci://<REGISTRY>/sluice-<filter>:<TAG>.
    #[arg(long, value_name = "REGISTRY", default_value = sluice::emit::istio_target::DEFAULT_REGISTRY)]
    image_registry: String,
    /// istio target: image tag.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    tag: String,
    /// istio target: load file://DIR/sluice_<filter>.wasm (a path on the proxies) instead of OCI images.
    #[arg(long, value_name = "DIR")]
    module_path: Option<String>,
    /// istio target: Istio's root namespace, where the mesh-wide WasmPlugins go.
    #[arg(long, default_value = "istio-system")]
    root_namespace: String,
    /// Attach ONE filter, sluice-suite (sluice_suite.wasm: router, canary, fault and breaker in
    /// one module, their four configs nested in one), instead of the chain sluice-router ->
    /// sluice-canary -> sluice-fault -> sluice-breaker; routes and clusters stay the same.
    /// Faster: Envoy enters the wasm VM once per callback instead of once per filter, and the
    /// internal headers are read once (see BENCHMARKS.md). The default four-filter layout lets
    /// you attach, reorder or replace filters one by one. Every target: envoy and compose load
    /// sluice_suite.wasm, istio writes one WasmPlugin sluice-suite.
    #[arg(long)]
    suite: bool,
    /// Proxies in front of this Envoy trusted to append to x-forwarded-for (envoy and compose
    /// targets). Every HTTP listener sets use_remote_address: true and xff_num_trusted_hops: N:
    /// with 0 (the default) the client is the TCP peer and a client-sent x-forwarded-for is not
    /// believed; with N the client is the N-th x-forwarded-for entry from the right (the
    /// address the outermost trusted proxy saw). Fault trustedCidrs and canary sticky
    /// sourceAddress read this client address.
    #[arg(long, value_name = "N", default_value_t = 0)]
    xff_trusted_hops: u32,
    /// Breaker rejections name the cluster (x-sluice-breaker: outbound|9080|v2|ratings open)
    /// instead of only the reason (x-sluice-breaker: open). For debugging: by default no client
    /// learns internal cluster names (they are always in the logs and metrics).
    #[arg(long)]
    detailed_replies: bool,
}

fn parse_locality(text: &str) -> Result<sluice::locality::Locality, String> {
    sluice::locality::Locality::parse(text)
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetArg {
    /// A static Envoy bootstrap, OUT_DIR/envoy.yaml.
    Envoy,
    /// Istio manifests: WasmPlugins + VirtualServices routing on the filters' decisions.
    Istio,
    /// docker-compose.yml with Envoy, the modules and demo backends.
    Compose,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Generate(args) => generate(args),
        Command::Build(args) => build(args),
        Command::Schema(args) => schema(args),
    }
}

fn schema(args: SchemaArgs) -> ExitCode {
    let Some(dir) = args.out else {
        // clap guarantees a filter when --out is absent, and only known names.
        let filter = args.filter.unwrap_or_default();
        return match sluice::schema::schema(&filter) {
            Some(schema) => {
                print!("{}", sluice::schema::render(&schema));
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("error: unknown filter {filter:?}");
                ExitCode::from(2)
            }
        };
    };
    let written = match &args.filter {
        Some(filter) => match sluice::schema::schema(filter) {
            Some(schema) => std::fs::create_dir_all(&dir).and_then(|()| {
                let path = dir.join(sluice::schema::file_name(filter));
                std::fs::write(&path, sluice::schema::render(&schema)).map(|()| vec![path])
            }),
            None => {
                eprintln!("error: unknown filter {filter:?}");
                return ExitCode::from(2);
            }
        },
        None => sluice::schema::write_all(&dir),
    };
    match written {
        Ok(paths) => {
            for path in paths {
                eprintln!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", dir.display());
            ExitCode::from(2)
        }
    }
}

fn build(args: BuildArgs) -> ExitCode {
    let repo = match (&args.modules, sluice::build::find_repo()) {
        (_, Ok(repo)) => repo,
        (Some(_), Err(_)) => PathBuf::from("."),
        (None, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let options = sluice::build::BuildOptions {
        out_dir: args
            .out_dir
            .unwrap_or_else(|| repo.join("target/sluice-build")),
        repo,
        prebuilt: args.modules,
        optimize: !args.no_wasm_opt,
        oci: args.oci,
        tag: args.tag,
        modules: if args.suite {
            sluice::build::SUITE_MODULES.to_vec()
        } else {
            sluice::build::CHAIN_MODULES.to_vec()
        },
    };
    match sluice::build::build(&options, &mut |line| eprintln!("==> {line}")) {
        Ok(report) => {
            print!("{}", sluice::build::table(&report));
            eprintln!("modules in {}", options.out_dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// The istio target's options; `sha256` pins each module found in the wasm directory.
fn istio_options(args: &GenerateArgs) -> sluice::emit::istio_target::IstioOptions {
    use sluice::emit::istio_target::{IstioOptions, ModuleSource};
    let source = match &args.module_path {
        Some(dir) => ModuleSource::File(dir.clone()),
        None => ModuleSource::Oci {
            registry: args.image_registry.clone(),
            tag: args.tag.clone(),
        },
    };
    let dir = args
        .wasm_dir
        .clone()
        .unwrap_or_else(sluice::default_wasm_dir);
    let mut sha256 = std::collections::BTreeMap::new();
    for filter in sluice::emit::envoy::MODULES {
        let Ok(wasm) = std::fs::read(dir.join(format!("sluice_{filter}.wasm"))) else {
            continue;
        };
        let digest = match &source {
            ModuleSource::File(_) => sluice::oci::sha256_hex(&wasm),
            // Istio checks an OCI image against its manifest digest; the layout is
            // deterministic, so this is the digest `sluice build --oci --tag TAG` writes.
            ModuleSource::Oci { tag, .. } => {
                let name = format!("sluice-{filter}");
                match sluice::oci::image_layout(
                    &[sluice::oci::Module {
                        name: &name,
                        wasm: &wasm,
                    }],
                    tag,
                ) {
                    Ok(layout) => layout
                        .images
                        .first()
                        .map(|i| i.manifest_digest.trim_start_matches("sha256:").to_owned())
                        .unwrap_or_default(),
                    Err(_) => continue,
                }
            }
        };
        sha256.insert(filter.to_string(), digest);
    }
    IstioOptions {
        source,
        sha256,
        root_namespace: args.root_namespace.clone(),
    }
}

fn generate(args: GenerateArgs) -> ExitCode {
    let inputs = match sluice::Inputs::read(&args.files) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let out_dir = std::path::absolute(&args.out).unwrap_or_else(|_| args.out.clone());
    let wasm = match args.wasm_dir.clone() {
        Some(dir) => sluice::WasmModules::Reference(dir),
        None => sluice::WasmModules::Bundle {
            from: sluice::default_wasm_dir(),
            out_dir: out_dir.clone(),
        },
    };
    let options = sluice::Options {
        target: match args.target {
            TargetArg::Envoy => sluice::Target::Envoy,
            TargetArg::Istio => sluice::Target::Istio(istio_options(&args)),
            TargetArg::Compose => sluice::Target::Compose,
        },
        listen_address: args.listen_address,
        admin_port: args.admin_port,
        ephemeral_ports: args.ephemeral_ports,
        wasm,
        credentials_dir: args.credentials_dir.clone(),
        locality: args.locality.clone(),
        suite: args.suite,
        xff_trusted_hops: args.xff_trusted_hops,
        detailed_replies: args.detailed_replies,
    };
    match sluice::generate(&inputs, &options) {
        Ok(output) => {
            eprint!("{}", output.warnings);
            if let Err(e) = sluice::write_output(&out_dir, &output) {
                eprintln!("error: cannot write {}: {e}", out_dir.display());
                return ExitCode::from(2);
            }
            eprintln!(
                "wrote {} file(s) to {}",
                output.files.len(),
                out_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(diags) => {
            eprint!("{diags}");
            ExitCode::from(1)
        }
    }
}
