//! The `sluice` command-line tool.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Examples:
  # Generate an Envoy bootstrap from a directory of Istio YAML, then run it from the output
  # folder (the modules are copied to OUT/wasm/ and named relative to it):
  sluice generate -f examples/bookinfo -o out/bookinfo
  cd out/bookinfo && envoy -c envoy.yaml

  # Several inputs (files and directories, read recursively: *.yaml, *.yml; - is stdin):
  sluice generate -f mesh/services.yaml -f mesh/routes/ -o out/mesh

  # Name where the modules will live on the host that runs Envoy, then ship the folder:
  sluice generate -f examples/bookinfo -o out/vm --module-dir /opt/sluice/wasm

  # Reference the .wasm modules where they are instead of copying them
  # (a relative directory resolves against Envoy's working directory):
  sluice generate -f examples/bookinfo -o out/bookinfo-ref --wasm-dir target/wasm32-wasip1/release

  # One filter, sluice-suite, instead of the four-filter chain (less CPU per request):
  sluice generate -f examples/demo -o out/demo --suite

  # Print the bootstrap instead of writing a folder:
  sluice generate -f examples/bookinfo -o - --wasm-dir /opt/sluice/wasm > envoy.yaml

Inputs are Istio networking.istio.io resources (v1, v1beta1, v1alpha3): Gateway, VirtualService,
DestinationRule, ServiceEntry (endpoints give hosts their addresses), WorkloadEntry; and
Kubernetes v1 Services (the registry of --target istio; other Kubernetes kinds are skipped).
-o writes only a new or empty folder or one sluice wrote before (.sluice-output.json), never the
current directory or a folder holding an input; it replaces only what sluice wrote there.
Every problem is reported as `file:line:col: error[SL301]: Kind/name: field.path: message` with a
hint (codes: docs/DIAGNOSTICS.md; --format json or sarif for tools). If there is any error (with
--fail-on warning: any warning), nothing is written and the exit code is 1; usage and I/O errors
exit 2. `sluice validate` runs the same checks without writing or needing the wasm modules.";

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
    Generate(Box<GenerateArgs>),
    /// Run every check `generate` runs for a target, write nothing (like `istioctl analyze`).
    #[command(after_help = VALIDATE_HELP)]
    Validate(ValidateArgs),
    /// Explain where one request goes and why: listener, virtual host, every rule tried and
    /// the matcher that failed, the matching rule's position, destination or split, fault,
    /// timeout, retries, Envoy route and cluster.
    #[command(after_help = EXPLAIN_HELP)]
    Explain(ExplainArgs),
    /// Build the four filter modules (or with --suite the one suite module) (release,
    /// wasm32-wasip1), shrink them with wasm-opt when installed, print module / size / sha256,
    /// and optionally write an OCI image layout.
    #[command(after_help = BUILD_HELP)]
    Build(BuildArgs),
    /// List, print or write the JSON Schemas of the filters' plugin configs (draft 2020-12).
    #[command(after_help = SCHEMA_HELP)]
    Schema(SchemaArgs),
    /// Print sluice's version, the git commit it was built from, the sha256 of each filter
    /// module it would use, and the Envoy version it is tested with.
    Version(VersionArgs),
    /// Validate Istio YAML and write it to the shared store (etcd) as one new generation,
    /// which every `sluice serve --store` replica then serves. Writes nothing unless all is
    /// valid; prints what changed.
    #[cfg(feature = "etcd")]
    #[command(after_help = APPLY_HELP)]
    Apply(StoreArgs),
    /// Show what `sluice apply` would change in the store (added, changed, removed), without
    /// writing anything.
    #[cfg(feature = "etcd")]
    #[command(after_help = APPLY_HELP)]
    Diff(StoreArgs),
    /// List the resources the store's current generation holds.
    #[cfg(feature = "etcd")]
    Get(GetArgs),
    /// Join a VM to a WorkloadGroup: write its WorkloadEntry to the store with a lease and keep
    /// renewing it until stopped (Ctrl-C or SIGTERM leave at once; a crash leaves when the
    /// lease lapses). `--leave` removes a registration.
    #[cfg(feature = "etcd")]
    #[command(after_help = REGISTER_HELP)]
    Register(RegisterArgs),
    /// Run a live xDS control plane: watch Istio YAML, validate it as `generate` does, and
    /// serve the Envoy resources over gRPC ADS (state of the world and delta) to Envoys that
    /// joined with `generate --target envoy-xds`.
    #[command(after_help = SERVE_HELP)]
    Serve(Box<ServeArgs>),
    /// Show what a running `sluice serve` serves: per connected proxy, its group and the
    /// version it accepted of each type, or its last NACK (like `istioctl proxy-status`).
    #[command(after_help = STATUS_HELP)]
    Status(StatusArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell).
    #[command(after_help = COMPLETION_HELP)]
    Completion {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

#[cfg(feature = "etcd")]
const APPLY_HELP: &str = "\
Examples:
  # See what would change, then apply a folder of Istio YAML to a 3-member etcd cluster:
  sluice diff  -f mesh/ --store etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379
  sluice apply -f mesh/ --store etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379

  # Make the store hold exactly the folder (remove what the folder no longer has):
  sluice apply -f mesh/ --store etcd://127.0.0.1:2379 --prune

  # One store per mesh under its own key prefix (default /sluice), the URL from the environment:
  export SLUICE_STORE=etcd://127.0.0.1:2379/mesh-a
  sluice apply -f mesh-a/ && sluice get

The store keeps whole generations: an apply writes its new resources, then switches the store
to the new generation in one transaction, so a control plane reading it sees the old mesh or
the new one, never half of it. An apply planned against a generation that another apply has
replaced meanwhile fails and changes nothing (run it again). Exit codes: 0 done (diff: also
with changes, unless --exit-code), 1 the input is invalid (nothing written) or, with diff
--exit-code, there are changes, 2 usage, I/O or store error.";

#[cfg(feature = "etcd")]
const REGISTER_HELP: &str = "\
Examples:
  # On the VM (its systemd unit runs this): join the group, stay registered while running:
  sluice register --store etcd://10.0.0.1:2379 --group ratings-vm --namespace shop \\
      --address 10.1.0.7 --label zone=a

  # Leave (e.g. before a planned shutdown): the entry drains for --drain (default 5s: proxies
  # send the VM no new requests and finish those in flight), then it is removed; stop the
  # VM's server once this returns:
  sluice register --store etcd://10.0.0.1:2379 --group ratings-vm --namespace shop \\
      --address 10.1.0.7 --leave

The entry is the group's template (ports, serviceAccount, network, locality, weight, labels)
with the VM's address and the extra labels and ports, named GROUP-ADDRESS, annotated
istio.io/autoRegistrationGroup as Istio's auto-registration does. Control planes following the
store (`sluice serve --store`) see it within a second and stop seeing it when it leaves or its
lease lapses (--ttl, default 10s). Leaving, by --leave or by stopping this command (Ctrl-C,
SIGTERM), drains first: the entry is annotated sluice.dev/draining, proxies get its endpoints
as EDS DRAINING for --drain, then it is removed; a crash removes it when the lease lapses.";
const SERVE_HELP: &str = "\
Examples:
  # Serve a directory; write the bootstrap an Envoy joins with; run that Envoy:
  sluice serve -f examples/demo &
  sluice generate -f examples/demo --target envoy-xds -o out/joiner --node-id vm-1
  envoy -c out/joiner/envoy.yaml

  # Now edit a weight in examples/demo/routing.yaml: serve validates the tree ~100 ms after the
  # last change and pushes it; the filter configs change in place over ECDS (no listener
  # rebuild, no drain). An invalid edit is refused with file:line:col diagnostics (here and in
  # `sluice status`), and the last good config keeps serving.
  sluice status

  # Incremental xDS: the same serve answers both; the bootstrap chooses.
  sluice generate -f examples/demo --target envoy-xds --delta -o out/joiner-delta

  # Proxies with nothing on disk but the bootstrap: serve the modules too (on the admin port),
  # and give the bootstrap every replica's admin address:
  sluice serve -f examples/demo --serve-modules target/wasm32-wasip1/release &
  sluice generate -f examples/demo --target envoy-xds --modules-server 127.0.0.1:18080 -o out/vm

The wasm modules are referenced by path in the filter configs serve sends (--wasm-dir, default
$SLUICE_WASM_DIR or target/wasm32-wasip1/release of this checkout): they must exist there on the
proxy's host. With --serve-modules DIR they are fetched instead: each filter config names
http://sluice-modules/modules/sluice_<module>.wasm and its sha256 (Envoy refuses other bytes),
a listener stays warming until its modules arrived and matched, Envoy caches them by sha256 (a
weight change fetches nothing), and a rebuilt module is a new listener that warms while the old
one serves. Admin port: /healthz, /readyz (200 once a valid config is loaded), /metrics
(Prometheus), /status (JSON). Versions are hashes of the content: a restarted serve gives every
proxy the versions it already has, so nothing is re-applied. Exit codes: 2 when a port cannot be
bound; an invalid input does not stop serve.";

const STATUS_HELP: &str = "\
Examples:
  sluice status
  sluice status --admin 10.0.0.5:18080 --format json | jq '.proxies[].last_nack'

Columns: NAME (node.id), CLUSTER (node.cluster), GROUP (what node.cluster selects: the Gateway
of that name, gateway/NS/NAME, with its listeners, else mesh: every port no Gateway serves),
MODE (sotw or delta), then per type: SYNCED <version> when the proxy accepted what it was sent
last, NACKED <version> when it refused it (serve does not send that version again), STALE when
a response is unanswered, - when the proxy has not asked for the type; LAST NACK is the type,
version and Envoy's reason of the last refused response.";

const COMPLETION_HELP: &str = "\
Examples:
  # bash, for this shell, then for every new one:
  source <(sluice completion bash)
  sluice completion bash > ~/.local/share/bash-completion/completions/sluice

  # zsh (a folder on $fpath), fish:
  sluice completion zsh > \"${fpath[1]}/_sluice\"
  sluice completion fish > ~/.config/fish/completions/sluice.fish";

const EXPLAIN_HELP: &str = "\
Examples:
  # Which rule takes a request, and why the rules before it did not:
  sluice explain -f examples/bookinfo --host reviews --port 9080 --path /reviews/1 -H 'end-user: jason'

  # Through a gateway, as JSON for scripts:
  sluice explain -f mesh/ --host shop.example.com --gateway edge --format json | jq .decision

The request runs through the router config `generate` would emit for that listener, compiled
and evaluated by the router filter's own code, and a split through the canary's own picking.
Exit codes: 0 explained (a 404 included), 1 the input does not generate (its diagnostics on
stderr), 2 usage or I/O error, or no listener for the request.

Online: with `generate --suite`, a VirtualService annotated `sluice.dev/debug` (header,
secretFile and/or trustedCidrs) makes the running proxy answer a request that carries that
header with `x-sluice-explain: rule=... at file:line:col; cluster=...; split=... member=...
bucket=.../10000; fault=...; breaker=...` (filters/suite/README.md).";

#[derive(clap::Args)]
struct ExplainArgs {
    /// Input YAML file or directory (repeatable).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE_OR_DIR",
        required = true
    )]
    files: Vec<PathBuf>,
    /// The request's Host (`:authority`), as the client sends it: `shop` or `shop:8000`.
    #[arg(long, value_name = "HOST")]
    host: String,
    /// The port the request arrives on (default: the port in --host, else the only listener
    /// with a virtual host for it).
    #[arg(long, value_name = "PORT")]
    port: Option<u32>,
    /// The request method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// The request path, with its query string.
    #[arg(long, default_value = "/")]
    path: String,
    /// A request header, `name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Only the ports of this Gateway (`name` or `namespace/name`).
    #[arg(long, value_name = "NAME", conflicts_with = "mesh")]
    gateway: Option<String>,
    /// Only the ports no Gateway serves (the sidecar's).
    #[arg(long)]
    mesh: bool,
    /// The client address, for a split sticky on the source address.
    #[arg(long, value_name = "IP")]
    source_address: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExplainFormat::Text)]
    format: ExplainFormat,
    #[command(flatten)]
    hosts: HostArgs,
}

/// `--halt-reports`.
#[derive(Clone, Copy, ValueEnum)]
enum HaltReportsArg {
    /// When the input has a guarded canary split.
    Auto,
    /// Always.
    On,
    /// Never (each proxy still guards itself; serve cannot see its halts).
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExplainFormat {
    /// For people.
    Text,
    /// One JSON document on stdout.
    Json,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .filter(|(n, _)| !n.trim().is_empty())
        .ok_or_else(|| format!("{text:?}: expected `name: value`"))?;
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Input YAML file or directory (repeatable), watched for changes.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE_OR_DIR",
        required_unless_present = "store"
    )]
    files: Vec<PathBuf>,
    /// Serve the mesh in the etcd store (`sluice apply` writes it) instead of files:
    /// etcd://HOST:PORT[,HOST:PORT...][/PREFIX]. Every replica following one store serves the
    /// same versions; while etcd is unreachable a replica keeps serving its last good config.
    #[cfg(feature = "etcd")]
    #[arg(long, value_name = "URL", conflicts_with = "files")]
    store: Option<sluice::store::StoreUrl>,
    /// Where the gRPC ADS server listens (the bootstrap's --xds-server).
    #[arg(long, value_name = "ADDR", default_value = sluice::serve::DEFAULT_XDS_LISTEN)]
    xds_listen: std::net::SocketAddr,
    /// Where the admin HTTP server listens (/healthz /readyz /metrics /status).
    #[arg(long, value_name = "ADDR", default_value = sluice::serve::DEFAULT_ADMIN_LISTEN)]
    admin_listen: std::net::SocketAddr,
    /// Quiet time after a change on disk before the tree is read again, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    debounce_ms: u64,
    /// The folder of sluice_<filter>.wasm on the proxies' hosts, as the filter configs name it.
    /// Default: $SLUICE_WASM_DIR, else target/wasm32-wasip1/release of this checkout.
    #[arg(long, value_name = "DIR")]
    wasm_dir: Option<PathBuf>,
    /// Serve DIR/sluice_<module>.wasm (this host's folder) over HTTP on the admin port, at
    /// /modules/sluice_<module>.wasm, and make the filter configs fetch them from there
    /// (Envoy's remote data source, pinned by each module's sha256) instead of naming a file
    /// on the proxy's host: a proxy then needs nothing on disk but its bootstrap
    /// (generate --target envoy-xds --modules-server ADMIN_ADDR). Off by default.
    #[arg(long, value_name = "DIR", conflicts_with = "wasm_dir")]
    serve_modules: Option<PathBuf>,
    /// Address the served listeners bind.
    #[arg(long, default_value = "0.0.0.0")]
    listen_address: String,
    /// Serve listeners on port 0 (for tests; they keep their names, listener_<port>).
    #[arg(long, hide = true)]
    ephemeral_ports: bool,
    /// Attach the one sluice-suite filter instead of the four-filter chain (as generate --suite).
    #[arg(long)]
    suite: bool,
    /// Resolve credentialName secrets in DIR (as generate --credentials-dir).
    #[arg(long, value_name = "DIR")]
    credentials_dir: Option<PathBuf>,
    /// The proxies' locality, REGION[/ZONE[/SUBZONE]] (as generate --locality).
    #[arg(long, value_name = "REGION[/ZONE[/SUBZONE]]", value_parser = parse_locality)]
    locality: Option<sluice::locality::Locality>,
    /// Proxies in front trusted to append to x-forwarded-for (as generate --xff-trusted-hops).
    #[arg(long, value_name = "N", default_value_t = 0)]
    xff_trusted_hops: u32,
    #[command(flatten)]
    hosts: HostArgs,
    /// Accept VM registrations over HTTP (`POST /register` on the admin port) from callers
    /// that send `Authorization: Bearer TOKEN` with the token in FILE; needs --store.
    #[cfg(feature = "etcd")]
    #[arg(long, value_name = "FILE", requires = "store")]
    register_token_file: Option<PathBuf>,
    /// With --store, the replicas share health checking: each endpoint is probed by one live
    /// replica. A replica that stops renewing its lease for DURATION (it died) hands its
    /// endpoints to the others.
    #[cfg(feature = "etcd")]
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    fleet_ttl: std::time::Duration,
    /// When one proxy's canary guard halts a split's canary, take that canary out of every
    /// proxy's split (weight 0, schedule stopped) until the split changes in the files. Off:
    /// each proxy guards itself. Either way `sluice status` shows which proxies halted what
    /// (they report over Envoy's metrics service: the envoy-xds bootstrap of a mesh with a
    /// guard adds the sink). Not with --store yet (a halt would reach one replica's proxies).
    #[cfg_attr(feature = "etcd", arg(long, conflicts_with = "store"))]
    #[cfg_attr(not(feature = "etcd"), arg(long))]
    spread_halts: bool,
}

#[derive(clap::Args)]
struct StatusArgs {
    /// The admin address of `sluice serve` (its --admin-listen).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:18080")]
    admin: String,
    /// table (for people) or json (the /status document, or /endpoints with --endpoints).
    #[arg(long, value_enum, default_value_t = StatusFormat::Table)]
    format: StatusFormat,
    /// Every probed endpoint (central health checking) instead of the proxies: its
    /// clusters, health, the replica probing it, probes run, last change and last error.
    #[arg(long)]
    endpoints: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum StatusFormat {
    /// One line per proxy.
    Table,
    /// The /status document.
    Json,
}

#[derive(clap::Args)]
struct VersionArgs {
    /// Where the modules are (default: $SLUICE_WASM_DIR, else target/wasm32-wasip1/release of
    /// the checkout sluice was built from).
    #[arg(long, value_name = "DIR")]
    wasm_dir: Option<PathBuf>,
}

const VALIDATE_HELP: &str = "\
Examples:
  # Check a directory of Istio YAML for the envoy target (no wasm modules needed):
  sluice validate -f examples/bookinfo

  # The checks of another target, and of the one-filter layout:
  sluice validate -f mesh/ --target istio --suite

  # In CI: fail on warnings too, and upload SARIF for code scanning:
  sluice validate -f mesh/ --fail-on warning --format sarif > sluice.sarif

  # JSON for scripts: {\"diagnostics\": [...], \"summary\": {\"errors\": N, \"warnings\": M}}
  sluice validate -f mesh/ --format json | jq '.summary'

Every check of `sluice generate` runs, the target's included, but no .wasm module is read and
nothing is written. Text diagnostics go to stderr as `file:line:col: error[SL301]: Kind/name:
field.path: message` with a hint, then `validate: N errors, M warnings`; json and sarif print one
document on stdout. Codes: docs/DIAGNOSTICS.md.
Exit codes: 0 clean (below --fail-on), 1 a diagnostic at or above --fail-on (default error),
2 usage or I/O error. Text is coloured on a terminal unless NO_COLOR is set (see --color).";

/// How short hosts resolve, shared by generate, validate and explain.
#[derive(clap::Args)]
struct HostArgs {
    /// The namespace of resources that name none (as `kubectl apply -n NS`): a short host
    /// (`reviews`) in them means `reviews.NS.svc.<cluster domain>`, as Istio resolves it.
    #[arg(long, value_name = "NS", default_value = "default")]
    namespace: String,
    /// The cluster's DNS domain: a Kubernetes Service `reviews` in namespace `bookinfo` is
    /// the host `reviews.bookinfo.svc.DOMAIN` (and Istio's clusters are named after it).
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
}

/// Where the shared store is (`apply`, `diff`, `get`).
#[cfg(feature = "etcd")]
#[derive(clap::Args)]
struct StoreArg {
    /// The store: etcd://HOST:PORT[,HOST:PORT...][/PREFIX] (every member of the cluster; the
    /// key prefix defaults to /sluice).
    #[arg(long, value_name = "URL", env = "SLUICE_STORE")]
    store: sluice::store::StoreUrl,
}

#[cfg(feature = "etcd")]
#[derive(clap::Args)]
struct StoreArgs {
    /// Input YAML file or directory (repeatable).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE_OR_DIR",
        required = true
    )]
    files: Vec<PathBuf>,
    #[command(flatten)]
    store: StoreArg,
    /// Also remove what the store holds and the inputs do not (without it, such resources
    /// are kept and listed).
    #[arg(long)]
    prune: bool,
    /// diff: exit 1 when the store would change (as `git diff --exit-code`).
    #[arg(long)]
    exit_code: bool,
    #[command(flatten)]
    hosts: HostArgs,
    #[command(flatten)]
    report: ReportArgs,
}

#[cfg(feature = "etcd")]
#[derive(clap::Args)]
struct GetArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Only resources of this kind (VirtualService, DestinationRule, ...).
    kind: Option<String>,
}

#[cfg(feature = "etcd")]
#[derive(clap::Args)]
struct RegisterArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The WorkloadGroup to join (it must be in the store: `sluice apply` it first).
    #[arg(long, value_name = "NAME")]
    group: String,
    /// The group's namespace.
    #[arg(long, value_name = "NS", default_value = "default")]
    namespace: String,
    /// This VM's address, as proxies reach it.
    #[arg(long, value_name = "IP")]
    address: String,
    /// A port beyond the group's template (repeatable).
    #[arg(long = "port", value_name = "NAME=NUMBER", value_parser = parse_port)]
    ports: Vec<(String, u32)>,
    /// A label beyond the group's (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// How long the registration outlives this process if it dies without leaving.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    ttl: std::time::Duration,
    /// Remove the registration and exit (after the drain).
    #[arg(long)]
    leave: bool,
    /// On leaving (--leave, Ctrl-C, SIGTERM): how long the entry stays draining before it is
    /// removed: proxies get the VM as EDS DRAINING, send it no new requests and finish those
    /// in flight. Keep the VM serving until this command exits. 0s removes it at once.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    drain: std::time::Duration,
}

#[cfg(feature = "etcd")]
fn parse_port(text: &str) -> Result<(String, u32), String> {
    let (name, number) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=NUMBER, e.g. http=8080"))?;
    let number: u32 = number
        .parse()
        .ok()
        .filter(|n| (1..=65535).contains(n))
        .ok_or_else(|| format!("{text:?}: the port must be a number from 1 to 65535"))?;
    Ok((name.to_owned(), number))
}

#[cfg(feature = "etcd")]
fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?}: expected KEY=VALUE, e.g. zone=a"))
}

#[cfg(feature = "etcd")]
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    sluice_core::duration::parse(text).map_err(|e| format!("{text:?}: {e}"))
}

#[derive(clap::Args)]
struct ValidateArgs {
    /// Input YAML file or directory (repeatable).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE_OR_DIR",
        required = true
    )]
    files: Vec<PathBuf>,
    /// Whose checks to run: the target's own (e.g. istio refuses per-gateway match blocks).
    #[arg(long, value_enum, default_value_t = TargetArg::Envoy)]
    target: TargetArg,
    /// Check the one-filter layout (sluice-suite), as `generate --suite`.
    #[arg(long)]
    suite: bool,
    /// Resolve `credentialName` secrets in DIR, as `generate --credentials-dir` (missing files
    /// are errors; without it, the warnings and errors `generate` gives without it).
    #[arg(long, value_name = "DIR")]
    credentials_dir: Option<PathBuf>,
    /// The proxy's locality, as `generate --locality`.
    #[arg(long, value_name = "REGION[/ZONE[/SUBZONE]]", value_parser = parse_locality)]
    locality: Option<sluice::locality::Locality>,
    #[command(flatten)]
    hosts: HostArgs,
    #[command(flatten)]
    report: ReportArgs,
}

/// How diagnostics are shown and when they fail the run (`generate` and `validate`).
#[derive(clap::Args)]
struct ReportArgs {
    /// Diagnostics format: text (stderr), or one json or SARIF 2.1.0 document on stdout.
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    format: FormatArg,
    /// Fail (exit 1; generate writes nothing) on errors only, or on warnings too.
    #[arg(long, value_enum, value_name = "SEVERITY", default_value_t = FailOn::Error)]
    fail_on: FailOn,
    /// Colour text diagnostics: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = ColorArg::Auto)]
    color: ColorArg,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    /// `file:line:col: error[SL301]: Kind/name: field.path: message` and a hint, on stderr.
    Text,
    /// `{"diagnostics": [...], "summary": {"errors": N, "warnings": M}}` on stdout.
    Json,
    /// SARIF 2.1.0 (code scanning) on stdout.
    Sarif,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FailOn {
    /// Errors fail the run (the default).
    Error,
    /// Warnings fail it too.
    Warning,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ColorArg {
    /// On when stderr is a terminal and NO_COLOR is unset or empty.
    Auto,
    /// Always, even in a pipe.
    Always,
    /// Never.
    Never,
}

impl ReportArgs {
    /// True when `diags` reach the `--fail-on` threshold.
    fn fails(&self, diags: &sluice::Diagnostics) -> bool {
        diags.has_errors() || (self.fail_on == FailOn::Warning && diags.warnings().next().is_some())
    }

    /// Whether text goes out in colour: sluice's own diagnostics only, never in a pipe.
    fn color(&self) -> bool {
        match self.color {
            ColorArg::Always => true,
            ColorArg::Never => false,
            ColorArg::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::io::stderr().is_terminal()
            }
        }
    }

    /// Prints `diags` in the chosen format: text and `summary` (when not empty) on stderr,
    /// json and sarif as one document on stdout (the summary is in the document).
    fn print(&self, diags: &sluice::Diagnostics, summary: &str) {
        let document = match self.format {
            FormatArg::Text => {
                eprint!("{}", diags.render(self.color()));
                if !summary.is_empty() {
                    eprintln!("{summary}");
                }
                return;
            }
            FormatArg::Json => sluice::report::json(diags),
            FormatArg::Sarif => sluice::report::sarif(diags),
        };
        match serde_json::to_string_pretty(&document) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("error: cannot render the diagnostics: {e}"),
        }
    }
}

const SCHEMA_HELP: &str = "\
Examples:
  # List the schemas:
  sluice schema

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
    #[arg(long, value_name = "DIR")]
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
    /// Write into --out-dir or --oci folders that hold files sluice did not write (they are
    /// kept; files of the same name are replaced).
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// Input YAML file or directory (repeatable; folders are read recursively, `-` reads
    /// standard input). sluice's own output is never read back as input.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE_OR_DIR",
        required = true
    )]
    files: Vec<PathBuf>,
    /// Output folder: a new or empty one, or one sluice wrote before (it holds
    /// .sluice-output.json, the list of what sluice wrote: those files are replaced, other files
    /// are kept). Never the current directory or a folder holding an input. `-` prints the
    /// single file of the envoy target (envoy.yaml, modules referenced where they are) or the
    /// istio target (one multi-document YAML) to standard output. Nothing is written when
    /// there is any error.
    #[arg(short = 'o', long = "out", value_name = "OUT_DIR")]
    out: PathBuf,
    /// Write into an existing folder that holds files sluice did not write: sluice's files are
    /// added beside them (a file of the same name is replaced), the others are kept.
    #[arg(long)]
    force: bool,
    /// envoy target: where the modules copied to OUT_DIR/wasm/ will be on the host that runs
    /// Envoy, as the config names them (e.g. /etc/sluice/wasm). Default `wasm`: relative to
    /// Envoy's working directory, so run Envoy from the output folder
    /// (`cd OUT_DIR && envoy -c envoy.yaml`), wherever it was copied.
    #[arg(long, value_name = "DIR", conflicts_with = "wasm_dir")]
    module_dir: Option<PathBuf>,
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
    #[command(flatten)]
    hosts: HostArgs,
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
    /// istio target: how the filters attach to Istio's proxies. `wasmplugin` (default): Istio's
    /// WasmPlugin API; modules from OCI images, http(s) or files, fetched and checked by the
    /// Istio agent; use it unless you need what it cannot say. `envoyfilter`: EnvoyFilter
    /// patches that insert the filters right before envoy.filters.http.router on outbound
    /// sidecars and gateways, with an explicit vm_id; for meshes that pin an Istio release or
    /// policy without WasmPlugin, or that need the exact chain position; modules from a file
    /// mounted on every proxy (--module-path) or fetched by Envoy (--module-url with
    /// --module-cluster and --wasm-dir), not from OCI images. Both write the same rewritten
    /// VirtualServices, which route on the filters' decisions.
    #[arg(long, value_enum, default_value_t = AttachArg::Wasmplugin)]
    attach: AttachArg,
    /// istio target, --attach envoyfilter --module-url: the Envoy cluster through which Envoy
    /// fetches the modules (e.g. 'outbound|443||downloads.example.com' of a ServiceEntry).
    #[arg(long, value_name = "CLUSTER", requires = "module_url")]
    module_cluster: Option<String>,
    /// istio target: load BASE/sluice_<filter>.wasm over http(s) (the Istio agent downloads it
    /// and checks the sha256 pin; give --wasm-dir with the modules you serve to pin them).
    #[arg(long, value_name = "BASE_URL", conflicts_with = "module_path")]
    module_url: Option<String>,
    /// istio target: pin each WasmPlugin to the manifest digest of its image in this OCI image
    /// layout (what `sluice build --oci DIR --tag TAG` wrote; the same digest a registry reports
    /// after `skopeo copy`). Without it (or --wasm-dir), no pin is written.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["module_path", "module_url"])]
    oci_layout: Option<PathBuf>,
    /// istio target: Istio's root namespace, where the mesh-wide WasmPlugins go.
    #[arg(long, default_value = "istio-system")]
    root_namespace: String,
    #[command(flatten)]
    report: ReportArgs,
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
    /// envoy-xds target: a `sluice serve` ADS address, HOST:PORT (repeatable: every replica).
    #[arg(long, value_name = "HOST:PORT", default_value = sluice::serve::DEFAULT_XDS_LISTEN)]
    xds_server: Vec<String>,
    /// envoy-xds target: node.id, the proxy's name in `sluice status`.
    #[arg(long, value_name = "ID", default_value = "sluice-proxy")]
    node_id: String,
    /// envoy-xds target: node.cluster, the group whose config the proxy gets.
    #[arg(long, value_name = "NAME", default_value = "mesh")]
    node_cluster: String,
    /// envoy-xds target: incremental xDS (DELTA_GRPC) instead of state of the world (GRPC).
    #[arg(long)]
    delta: bool,
    /// envoy-xds target: the admin address (--admin-listen) of a `sluice serve --serve-modules`,
    /// HOST:PORT (repeatable: every replica). The bootstrap gets the cluster sluice-modules the
    /// served filter configs fetch the wasm modules through, so the proxy needs no module file.
    #[arg(long, value_name = "HOST:PORT")]
    modules_server: Vec<String>,
    /// envoy-xds target: stream the proxy's stats to serve (Envoy's metrics service sink, every
    /// 5 s) so serve sees which canaries its guards halted (`sluice status`, serve
    /// --spread-halts). auto: when the input has a guarded split.
    #[arg(long, value_enum, value_name = "WHEN", default_value = "auto")]
    halt_reports: HaltReportsArg,
}

fn parse_locality(text: &str) -> Result<sluice::locality::Locality, String> {
    sluice::locality::Locality::parse(text)
}

#[derive(Clone, Copy, ValueEnum)]
enum AttachArg {
    /// WasmPlugin resources (extensions.istio.io/v1alpha1).
    Wasmplugin,
    /// EnvoyFilter resources (networking.istio.io/v1alpha3).
    Envoyfilter,
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetArg {
    /// A static Envoy bootstrap, OUT_DIR/envoy.yaml.
    Envoy,
    /// Istio manifests: WasmPlugins + VirtualServices routing on the filters' decisions.
    Istio,
    /// docker-compose.yml with Envoy, the modules and demo backends.
    Compose,
    /// The small bootstrap that joins `sluice serve` over ADS (no listener: they are served):
    /// see --xds-server, --node-id, --node-cluster, --delta.
    EnvoyXds,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Generate(args) => generate(*args),
        Command::Validate(args) => validate(args),
        Command::Explain(args) => explain(args),
        Command::Build(args) => build(args),
        Command::Schema(args) => schema(args),
        Command::Version(args) => version(args),
        #[cfg(feature = "etcd")]
        Command::Apply(args) => store_apply(args, false),
        #[cfg(feature = "etcd")]
        Command::Diff(args) => store_apply(args, true),
        #[cfg(feature = "etcd")]
        Command::Get(args) => store_get(args),
        #[cfg(feature = "etcd")]
        Command::Register(args) => register(args),
        Command::Serve(args) => serve(*args),
        Command::Status(args) => status(args),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "sluice", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

fn schema(args: SchemaArgs) -> ExitCode {
    let Some(dir) = args.out else {
        let Some(filter) = args.filter else {
            println!("the filters' plugin-config schemas (sluice schema NAME prints one):");
            for filter in sluice::schema::CONFIGS {
                println!("  {filter:<8} {}", sluice::schema::file_name(filter));
            }
            println!("write them all: sluice schema --out DIR");
            return ExitCode::SUCCESS;
        };
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
    // The default folder lies in the checkout's target/, which belongs to the build.
    let force = args.force || args.out_dir.is_none();
    let options = sluice::build::BuildOptions {
        force,
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

/// The istio target's options. The WasmPlugins' `sha256` pins come from exactly what will be
/// shipped: the OCI layout `sluice build --oci` wrote (`--oci-layout`), or the modules in
/// `--wasm-dir`; with neither, no pin is written (and a note says so) rather than a pin computed
/// from bytes that may not be the ones pushed.
fn istio_options(args: &GenerateArgs) -> Result<sluice::emit::istio_target::IstioOptions, String> {
    use sluice::emit::istio_target::{Attach, IstioOptions, ModuleSource, PinSource};
    let source = match (&args.module_path, &args.module_url) {
        (Some(dir), _) => ModuleSource::File(dir.clone()),
        (None, Some(base)) => ModuleSource::Http(base.clone()),
        (None, None) => ModuleSource::Oci {
            registry: args.image_registry.clone(),
            tag: args.tag.clone(),
        },
    };
    let attach = match args.attach {
        AttachArg::Wasmplugin => Attach::WasmPlugin,
        AttachArg::Envoyfilter => Attach::EnvoyFilter,
    };
    if attach == Attach::EnvoyFilter {
        match &source {
            ModuleSource::Oci { .. } => {
                return Err("--attach envoyfilter cannot load OCI images (only Istio's WasmPlugin pulls images)\n  hint: give --module-path DIR (the modules mounted on every proxy) or --module-url BASE --module-cluster CLUSTER --wasm-dir DIR (Envoy fetches them), or use --attach wasmplugin".into());
            }
            ModuleSource::Http(_) if args.module_cluster.is_none() || args.wasm_dir.is_none() => {
                return Err("--attach envoyfilter with --module-url needs --module-cluster (the Envoy cluster that reaches the module server) and --wasm-dir (the modules served, for the sha256 Envoy requires)\n  hint: e.g. --module-cluster 'outbound|443||downloads.example.com' --wasm-dir out/modules".into());
            }
            _ => {}
        }
    }
    let pin_source = match (&args.oci_layout, &args.wasm_dir) {
        (Some(dir), _) => Some(PinSource::OciLayout(dir.clone())),
        (None, Some(dir)) => Some(PinSource::Modules(dir.clone())),
        (None, None) => None,
    };
    let filters: &[&str] = if args.suite {
        &sluice::build::SUITE_MODULES
    } else {
        &sluice::build::CHAIN_MODULES
    };
    let sha256 = match &pin_source {
        None => {
            eprintln!(
                "note: the modules carry no sha256 pin: give --oci-layout DIR (what `sluice build --oci DIR` wrote) or --wasm-dir DIR (the modules you ship) to pin exactly those bytes"
            );
            Default::default()
        }
        Some(pin_source) => {
            let (pins, missing) = sluice::emit::istio_target::pins(&source, pin_source, filters);
            if !missing.is_empty() {
                return Err(format!(
                    "cannot pin the modules: {}\n  hint: build them first (`sluice build --oci DIR --tag {}`), or leave out --oci-layout/--wasm-dir to write no pins",
                    missing.join("; "),
                    args.tag
                ));
            }
            pins
        }
    };
    Ok(IstioOptions {
        attach,
        module_cluster: args.module_cluster.clone(),
        source,
        sha256,
        root_namespace: args.root_namespace.clone(),
    })
}

fn generate(args: GenerateArgs) -> ExitCode {
    let to_stdout = args.out.as_os_str() == "-";
    if to_stdout && args.report.format != FormatArg::Text {
        eprintln!(
            "error: -o - prints the config on standard output, where --format json/sarif would print the diagnostics too\n  hint: keep --format text with -o -, or run `sluice validate --format ...` for the report"
        );
        return ExitCode::from(2);
    }
    if to_stdout && matches!(args.target, TargetArg::Compose) {
        eprintln!(
            "error: -o - prints one file, and the compose target writes a project of several\n  hint: give an output folder, e.g. -o out/compose"
        );
        return ExitCode::from(2);
    }
    // The destination is checked before anything is read or generated: a refused folder costs
    // nothing and changes nothing.
    let destination = if to_stdout {
        None
    } else {
        match sluice::output::Destination::check(&args.out, &args.files, args.force) {
            Ok(destination) => Some(destination),
            Err(refusal) => {
                eprintln!("error: {refusal}");
                return ExitCode::from(2);
            }
        }
    };
    let inputs = match read_inputs(&args.files) {
        Ok(inputs) => inputs,
        Err(code) => return code,
    };
    let wasm = match (&args.wasm_dir, &args.module_dir) {
        (Some(dir), _) => sluice::WasmModules::Reference(dir.clone()),
        // One file on stdout: the modules are referenced where they are, not copied.
        (None, Some(dir)) if to_stdout => sluice::WasmModules::Reference(dir.clone()),
        (None, None) if to_stdout => sluice::WasmModules::Reference(
            std::path::absolute(sluice::default_wasm_dir())
                .unwrap_or_else(|_| sluice::default_wasm_dir()),
        ),
        (None, module_dir) => sluice::WasmModules::Bundle {
            from: sluice::default_wasm_dir(),
            module_dir: module_dir
                .clone()
                .unwrap_or_else(|| sluice::DEFAULT_MODULE_DIR.into()),
        },
    };
    let options = sluice::Options {
        target: match args.target {
            TargetArg::Envoy => sluice::Target::Envoy,
            TargetArg::Istio => match istio_options(&args) {
                Ok(istio) => sluice::Target::Istio(istio),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            },
            TargetArg::Compose => sluice::Target::Compose,
            TargetArg::EnvoyXds => sluice::Target::EnvoyXds(sluice::XdsBootstrap {
                servers: args.xds_server.clone(),
                node_id: args.node_id.clone(),
                node_cluster: args.node_cluster.clone(),
                delta: args.delta,
                module_servers: args.modules_server.clone(),
                halt_reports: match args.halt_reports {
                    HaltReportsArg::Auto => sluice::HaltReports::Auto,
                    HaltReportsArg::On => sluice::HaltReports::On,
                    HaltReportsArg::Off => sluice::HaltReports::Off,
                },
            }),
        },
        listen_address: args.listen_address,
        admin_port: args.admin_port,
        ephemeral_ports: args.ephemeral_ports,
        wasm,
        credentials_dir: args.credentials_dir.clone(),
        locality: args.locality.clone(),
        suite: args.suite,
        namespace: args.hosts.namespace.clone(),
        cluster_domain: args.hosts.cluster_domain.clone(),
        xff_trusted_hops: args.xff_trusted_hops,
        detailed_replies: args.detailed_replies,
    };
    match sluice::generate(&inputs, &options) {
        Ok(output) if args.report.fails(&output.warnings) => {
            let summary = format!("{}; nothing was written", output.warnings.counts(true));
            args.report.print(&output.warnings, &summary);
            ExitCode::from(1)
        }
        Ok(output) => {
            args.report.print(&output.warnings, "");
            let Some(destination) = destination else {
                print!("{}", sluice::single_document(&output));
                return ExitCode::SUCCESS;
            };
            if let Err(e) = destination.write(&output) {
                eprintln!(
                    "error: cannot write {}: {e}\n  nothing was changed",
                    destination.dir.display()
                );
                return ExitCode::from(2);
            }
            eprintln!(
                "wrote {} file(s) to {}",
                output.files.len(),
                destination.dir.display()
            );
            if matches!(args.target, TargetArg::Envoy) && args.wasm_dir.is_none() {
                match &args.module_dir {
                    None => eprintln!(
                        "run it from the output folder (the modules are referenced as wasm/...): cd {} && envoy -c envoy.yaml",
                        args.out.display()
                    ),
                    Some(dir) => eprintln!(
                        "copy {}/wasm/ to {} on the host that runs Envoy (the config names the modules there)",
                        args.out.display(),
                        dir.display()
                    ),
                }
            }
            ExitCode::SUCCESS
        }
        Err(diags) => {
            let summary = format!("{}; nothing was written", diags.counts(false));
            args.report.print(&diags, &summary);
            ExitCode::from(1)
        }
    }
}

fn version(args: VersionArgs) -> ExitCode {
    let dir = args.wasm_dir.unwrap_or_else(sluice::default_wasm_dir);
    println!("sluice {}", env!("CARGO_PKG_VERSION"));
    println!("commit {}", env!("SLUICE_GIT_COMMIT"));
    println!("tested with Envoy {}", sluice::TESTED_ENVOY_VERSION);
    println!("modules in {}:", dir.display());
    for filter in sluice::emit::envoy::MODULES {
        let file = sluice::build::module_file(filter);
        match std::fs::read(dir.join(&file)) {
            Ok(bytes) => println!(
                "  {file:<22} {:>9} B  sha256 {}",
                bytes.len(),
                sluice::oci::sha256_hex(&bytes)
            ),
            Err(_) => println!("  {file:<22} not built (sluice build, or --wasm-dir DIR)"),
        }
    }
    ExitCode::SUCCESS
}

/// The `-f` inputs, with a note for each file or folder passed over (sluice's own output); on
/// a read error, the message and exit code 2.
fn read_inputs(files: &[PathBuf]) -> Result<sluice::Inputs, ExitCode> {
    match sluice::Inputs::read(files) {
        Ok(inputs) => {
            for line in &inputs.skipped {
                eprintln!("note: skipped {line}");
            }
            Ok(inputs)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(2))
        }
    }
}

#[cfg(feature = "etcd")]
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// `sluice apply` (and with `dry_run`, `sluice diff`): validate, then plan and write one
/// generation.
#[cfg(feature = "etcd")]
fn store_apply(args: StoreArgs, dry_run: bool) -> ExitCode {
    let inputs = match read_inputs(&args.files) {
        Ok(inputs) => inputs,
        Err(code) => return code,
    };
    let options = sluice::Options {
        namespace: args.hosts.namespace,
        cluster_domain: args.hosts.cluster_domain,
        ..sluice::Options::default()
    };
    let verb = if dry_run { "diff" } else { "apply" };
    let documents = match sluice::store::check(&inputs, &options) {
        Ok((documents, warnings)) => {
            if !warnings.0.is_empty() {
                args.report
                    .print(&warnings, &format!("{verb}: {}", warnings.counts(true)));
            }
            if args.report.fails(&warnings) {
                return ExitCode::from(1);
            }
            documents
        }
        Err(diags) => {
            args.report.print(
                &diags,
                &format!("{verb}: {}; the store was not changed", diags.counts(true)),
            );
            return ExitCode::from(1);
        }
    };
    let url = args.store.store;
    let applied = runtime().block_on(async {
        let mut store = sluice::store::etcd::EtcdStore::connect(&url).await?;
        sluice::store::etcd::apply(&mut store, &documents, args.prune, dry_run).await
    });
    let applied = match applied {
        Ok(applied) => applied,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for line in applied.change.lines() {
        println!("{line}");
    }
    let change = &applied.change;
    if dry_run {
        println!(
            "diff against {url} generation {}: {}",
            applied.generation,
            change.summary()
        );
        if args.exit_code && !change.is_empty() {
            return ExitCode::from(1);
        }
    } else if change.is_empty() {
        println!(
            "apply: {url} unchanged at generation {}: {}",
            applied.generation,
            change.summary()
        );
    } else {
        println!(
            "apply: {url} now at generation {}: {}",
            applied.generation,
            change.summary()
        );
    }
    ExitCode::SUCCESS
}

/// `sluice register`: join (and stay until stopped), or `--leave`.
#[cfg(feature = "etcd")]
fn register(args: RegisterArgs) -> ExitCode {
    use sluice::store::etcd::EtcdStore;
    let registration = sluice::store::Registration {
        group: args.group.clone(),
        namespace: args.namespace.clone(),
        address: args.address.clone(),
        labels: args.labels.into_iter().collect(),
        ports: args.ports.into_iter().collect(),
    };
    let name = registration.name();
    let url = args.store.store;
    let ttl = args.ttl;
    let result: Result<(), String> = runtime().block_on(async {
        let mut store = EtcdStore::connect(&url).await.map_err(|e| e.to_string())?;
        if args.leave {
            if !args.drain.is_zero() {
                println!("draining {}/{name} for {:?}", args.namespace, args.drain);
            }
            let left = store
                .leave(&args.namespace, &name, None, args.drain)
                .await
                .map_err(|e| e.to_string())?;
            if left {
                println!("left: {}/{name} removed from {url}", args.namespace);
            } else {
                println!("{}/{name} was not registered in {url}", args.namespace);
            }
            return Ok(());
        }
        let group = store
            .workload_group(&args.namespace, &args.group)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "no WorkloadGroup {}/{} in {url}'s current generation\n  hint: `sluice apply` a WorkloadGroup named {} (namespace {}) first",
                    args.namespace, args.group, args.group, args.namespace
                )
            })?;
        let entry = registration.workload_entry(&group);
        loop {
            let lease = store
                .register(&args.namespace, &name, &entry, ttl)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "registered {}/{name} ({}) in {url} with a {ttl:?} lease; Ctrl-C leaves",
                args.namespace, args.address
            );
            let mut keeper = EtcdStore::connect(&url).await.map_err(|e| e.to_string())?;
            tokio::select! {
                kept = keeper.keep_alive(lease, ttl) => {
                    // The lease lapsed (etcd was unreachable longer than the ttl): join again.
                    eprintln!("warning: {}; registering again", kept.err().map(|e| e.to_string()).unwrap_or_default());
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                () = stop_signal() => {
                    if !args.drain.is_zero() {
                        println!("draining {}/{name} for {:?}", args.namespace, args.drain);
                    }
                    let leaving = store.leave(&args.namespace, &name, Some(lease), args.drain);
                    tokio::pin!(leaving);
                    // The lease is renewed while the entry drains, however long the drain.
                    let left = tokio::select! {
                        left = &mut leaving => left,
                        _ = keeper.keep_alive(lease, ttl) => leaving.await,
                    };
                    left.map_err(|e| e.to_string())?;
                    println!("left: {}/{name} removed from {url}", args.namespace);
                    return Ok(());
                }
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Ctrl-C or SIGTERM (what `systemctl stop` sends).
#[cfg(feature = "etcd")]
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `sluice get`: the current generation's resources, one line each.
#[cfg(feature = "etcd")]
fn store_get(args: GetArgs) -> ExitCode {
    let url = args.store.store;
    let snapshot = runtime().block_on(async {
        let mut store = sluice::store::etcd::EtcdStore::connect(&url).await?;
        store.snapshot().await
    });
    let snapshot = match snapshot {
        Ok(snapshot) => snapshot,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let manifest = &snapshot.manifest;
    println!(
        "{url} generation {} (etcd revision {})",
        manifest.generation, snapshot.revision
    );
    println!("{:<18} {:<16} {:<32} SOURCE", "KIND", "NAMESPACE", "NAME");
    for (key, entry) in &manifest.resources {
        let mut parts = key.splitn(3, '/');
        let (kind, namespace, name) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        if args
            .kind
            .as_deref()
            .is_some_and(|k| !k.eq_ignore_ascii_case(kind))
        {
            continue;
        }
        println!(
            "{kind:<18} {namespace:<16} {name:<32} {}:{}",
            entry.source, entry.line
        );
    }
    ExitCode::SUCCESS
}

fn validate(args: ValidateArgs) -> ExitCode {
    let inputs = match read_inputs(&args.files) {
        Ok(inputs) => inputs,
        Err(code) => return code,
    };
    let options = sluice::Options {
        target: match args.target {
            TargetArg::Envoy => sluice::Target::Envoy,
            // The WasmPlugins' sha256 pins come from the modules, which validation does not read.
            TargetArg::Istio => sluice::Target::Istio(Default::default()),
            TargetArg::Compose => sluice::Target::Compose,
            TargetArg::EnvoyXds => sluice::Target::EnvoyXds(Default::default()),
        },
        credentials_dir: args.credentials_dir,
        locality: args.locality,
        suite: args.suite,
        namespace: args.hosts.namespace,
        cluster_domain: args.hosts.cluster_domain,
        ..sluice::Options::default()
    };
    let diags = sluice::validate(&inputs, &options);
    args.report
        .print(&diags, &format!("validate: {}", diags.counts(true)));
    if args.report.fails(&diags) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn explain(args: ExplainArgs) -> ExitCode {
    use sluice::explain::{self, Error, Scope};
    let inputs = match read_inputs(&args.files) {
        Ok(inputs) => inputs,
        Err(code) => return code,
    };
    let options = sluice::Options {
        wasm: sluice::WasmModules::NotRead,
        namespace: args.hosts.namespace,
        cluster_domain: args.hosts.cluster_domain,
        ..sluice::Options::default()
    };
    let request = explain::Request {
        host: args.host,
        port: args.port,
        method: args.method,
        path: args.path,
        headers: args.headers,
        scope: match (args.gateway, args.mesh) {
            (Some(g), _) => Scope::Gateway(g),
            (None, true) => Scope::Mesh,
            (None, false) => Scope::Any,
        },
        source_address: args.source_address,
    };
    match explain::explain(&inputs, &options, &request) {
        Ok(e) => {
            match args.format {
                ExplainFormat::Text => print!("{}", explain::to_text(&e)),
                ExplainFormat::Json => match serde_json::to_string_pretty(&e) {
                    Ok(json) => println!("{json}"),
                    Err(err) => {
                        eprintln!("error: {err}");
                        return ExitCode::from(2);
                    }
                },
            }
            ExitCode::SUCCESS
        }
        Err(Error::Invalid(diags)) => {
            eprintln!("{diags}");
            eprintln!(
                "explain: the input does not generate ({})",
                diags.counts(true)
            );
            ExitCode::from(1)
        }
        Err(Error::Request(why)) => {
            eprintln!("error: {why}");
            ExitCode::from(2)
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    #[cfg(feature = "etcd")]
    let register_token = match &args.register_token_file {
        None => None,
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
            Ok(_) => {
                eprintln!(
                    "error: --register-token-file {}: the file is empty\n  hint: write a long random token into it, e.g. `openssl rand -hex 32 > {}`",
                    path.display(),
                    path.display()
                );
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("error: --register-token-file {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let config = sluice::serve::ServeConfig {
        inputs: args.files,
        options: sluice::Options {
            listen_address: args.listen_address,
            ephemeral_ports: args.ephemeral_ports,
            wasm: sluice::WasmModules::Reference(args.wasm_dir.unwrap_or_else(|| {
                std::path::absolute(sluice::default_wasm_dir())
                    .unwrap_or_else(|_| sluice::default_wasm_dir())
            })),
            credentials_dir: args.credentials_dir,
            locality: args.locality,
            suite: args.suite,
            namespace: args.hosts.namespace,
            cluster_domain: args.hosts.cluster_domain,
            xff_trusted_hops: args.xff_trusted_hops,
            ..sluice::Options::default()
        },
        xds_listen: args.xds_listen,
        admin_listen: args.admin_listen,
        debounce: std::time::Duration::from_millis(args.debounce_ms),
        serve_modules: args
            .serve_modules
            .map(|dir| std::path::absolute(&dir).unwrap_or(dir)),
        spread_halts: args.spread_halts,
        #[cfg(feature = "etcd")]
        store: args.store,
        #[cfg(feature = "etcd")]
        register_token,
        #[cfg(feature = "etcd")]
        fleet_ttl: args.fleet_ttl,
    };
    // Before the runtime's threads exist: see the module's note (peak RSS of the fan-out).
    sluice::serve::malloc::one_arena();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(sluice::serve::run(
        config,
        |bound| {
            eprintln!(
                "serve: ADS on {}, admin on http://{} (/healthz /readyz /metrics /status)",
                bound.xds, bound.admin
            );
        },
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    ));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn status(args: StatusArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let path = if args.endpoints {
        "/endpoints"
    } else {
        "/status"
    };
    match runtime.block_on(sluice::serve::status::fetch_path(&args.admin, path)) {
        Ok(doc) => {
            match args.format {
                StatusFormat::Table if args.endpoints => print!(
                    "{}",
                    sluice::serve::status::render_endpoints(&doc, sluice::serve::state::now_secs())
                ),
                StatusFormat::Table => print!("{}", sluice::serve::status::render(&doc)),
                StatusFormat::Json => {
                    println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default())
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
