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
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetArg {
    /// A static Envoy bootstrap, OUT_DIR/envoy.yaml.
    Envoy,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Generate(args) => generate(args),
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
    let wasm = match args.wasm_dir {
        Some(dir) => sluice::WasmModules::Reference(dir),
        None => sluice::WasmModules::Bundle {
            from: sluice::default_wasm_dir(),
            out_dir: out_dir.clone(),
        },
    };
    let options = sluice::Options {
        target: match args.target {
            TargetArg::Envoy => sluice::Target::Envoy,
        },
        listen_address: args.listen_address,
        admin_port: args.admin_port,
        ephemeral_ports: args.ephemeral_ports,
        wasm,
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
