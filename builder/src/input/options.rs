//! What the user asked for besides the YAML: the target, where the wasm modules are, the
//! listen address, the proxy's locality, the credentials directory and the other flags of
//! `sluice generate`. The second input of the pipeline, read by every stage above it (each
//! stage reads only the fields it needs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::input::locality;

/// Kubernetes' default cluster domain (`--cluster-domain`).
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Target {
    /// A static Envoy bootstrap (`envoy.yaml`).
    #[default]
    Envoy,
    /// Istio manifests: WasmPlugins for the sluice filters and the VirtualServices that route
    /// on their decisions (see [`crate::target::istio`]).
    Istio(IstioOptions),
    /// A docker-compose project: Envoy with the filters plus demo backends (see
    /// [`crate::target::compose`]).
    Compose,
    /// The small bootstrap an Envoy needs to join `sluice serve` over ADS (see
    /// [`crate::target::envoy_xds`]): node, control-plane cluster, ADS config, admin; no
    /// listener.
    EnvoyXds(XdsBootstrap),
}

/// `sluice serve`'s default ADS address (`--xds-listen`), and the envoy-xds bootstrap's
/// default server.
pub const DEFAULT_XDS_LISTEN: &str = "127.0.0.1:18000";

/// What the `envoy-xds` target needs besides the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdsBootstrap {
    /// Every `sluice serve` ADS address, `host:port` (`--xds-server`, repeatable).
    pub servers: Vec<String>,
    /// `node.id` (`--node-id`): the proxy's name in serve's status.
    pub node_id: String,
    /// `node.cluster` (`--node-cluster`): the group the proxy joins.
    pub node_cluster: String,
    /// DELTA_GRPC (incremental xDS) instead of GRPC (state of the world).
    pub delta: bool,
    /// Every `sluice serve --serve-modules` admin address, `host:port` (`--modules-server`,
    /// repeatable): the bootstrap gets the cluster the served filter configs fetch the wasm
    /// modules through ([`crate::xds::resources::MODULES_CLUSTER`]). Empty: no such cluster
    /// (the modules are files on the proxy's host).
    pub module_servers: Vec<String>,
    /// Whether the proxy reports its canary guards' halts to serve (`--halt-reports`).
    pub halt_reports: HaltReports,
}

/// Whether an `envoy-xds` bootstrap streams the proxy's stats to serve (Envoy's metrics
/// service sink, every 5 s) so that serve sees which canaries its guards halted (`sluice
/// status`, `serve --spread-halts`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HaltReports {
    /// When the input has a guarded canary split (`sluice.dev/canary` `guard`).
    #[default]
    Auto,
    /// Always.
    On,
    /// Never: serve cannot see halts (each proxy still guards itself).
    Off,
}

impl Default for XdsBootstrap {
    fn default() -> Self {
        XdsBootstrap {
            servers: vec![DEFAULT_XDS_LISTEN.to_owned()],
            node_id: "sluice-proxy".to_owned(),
            node_cluster: "mesh".to_owned(),
            delta: false,
            module_servers: Vec::new(),
            halt_reports: HaltReports::Auto,
        }
    }
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
    /// Fetch each module over HTTP from `sluice serve --serve-modules` (Envoy's remote data
    /// source through [`crate::xds::resources::MODULES_CLUSTER`], pinned by its sha256): the
    /// proxy needs no module on its disk. Only serve writes this: it read the bytes it serves.
    Served(ServedModules),
}

/// The modules `sluice serve --serve-modules` serves, as the filter configs pin them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServedModules {
    /// Hex SHA-256 of each served module's bytes, by short name (`router`, ..., `suite`).
    pub sha256: BTreeMap<String, String>,
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
    /// [`crate::model::build_with_credentials`]); `None`: such servers get no listener (a warning).
    /// DestinationRule `tls.credentialName` reads its client secret from the same layout; for
    /// the envoy and compose targets it is an error without a directory (the istio target
    /// leaves the secret to Istio).
    pub credentials_dir: Option<PathBuf>,
    /// Attach the one `sluice-suite` filter (`sluice_suite.wasm`: router, canary, fault and
    /// breaker in one module, config [`sluice_core::suite::SuiteConfig`]) instead of the chain
    /// `sluice-router -> sluice-canary -> sluice-fault -> sluice-breaker`. Routes, clusters and
    /// everything native stay the same; see [`crate::xds::filters`].
    pub suite: bool,
    /// The proxy's own locality (`--locality REGION[/ZONE[/SUBZONE]]`): written to the
    /// bootstrap's `node.locality` and needed to apply DestinationRule `localityLbSetting`
    /// (see [`crate::model::locality`]); `None`: that setting is not applied (a warning).
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
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.into(),
            xff_trusted_hops: 0,
            detailed_replies: false,
        }
    }
}

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

/// Where the WasmPlugins fetch the modules from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSource {
    /// `oci://<registry>/sluice-<filter>:<tag>`: images written by `sluice build --oci`.
    Oci {
        /// Registry and repository prefix, e.g. `ghcr.io/acme`.
        registry: String,
        /// Image tag.
        tag: String,
    },
    /// `file://<dir>/sluice_<filter>.wasm`: modules already on every proxy's file system.
    File(String),
    /// `<base>/sluice_<filter>.wasm` over http(s): the Istio agent downloads the module and
    /// checks it against the WasmPlugin's `sha256` (the module's own digest).
    Http(String),
}

/// How the filters are attached to Istio's proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Attach {
    /// `extensions.istio.io/v1alpha1` WasmPlugin: Istio's own API for wasm; modules from OCI
    /// images, http(s) or files, fetched and verified by the Istio agent.
    #[default]
    WasmPlugin,
    /// `networking.istio.io/v1alpha3` EnvoyFilter: the filters patched into Envoy's HTTP filter
    /// chain directly, before `envoy.filters.http.router`, with an explicit `vm_id`; modules
    /// from a file on the proxy or fetched by Envoy over http(s) (no OCI).
    EnvoyFilter,
}

/// Options of the istio target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IstioOptions {
    /// WasmPlugin or EnvoyFilter resources.
    pub attach: Attach,
    /// Module location.
    pub source: ModuleSource,
    /// EnvoyFilter with an http(s) source: the Envoy cluster that reaches the module server
    /// (Envoy fetches `remote` code through a cluster, e.g. `outbound|443||downloads.example.com`
    /// of a ServiceEntry).
    pub module_cluster: Option<String>,
    /// Per filter short name, the WasmPlugin `sha256` to pin (the module's for `file://`, the
    /// image manifest's for `oci://`), when known.
    pub sha256: BTreeMap<String, String>,
    /// Istio's root namespace (mesh-wide WasmPlugins live there).
    pub root_namespace: String,
}

impl Default for IstioOptions {
    fn default() -> Self {
        Self {
            attach: Attach::WasmPlugin,
            module_cluster: None,
            source: ModuleSource::Oci {
                registry: DEFAULT_REGISTRY.into(),
                tag: env!("CARGO_PKG_VERSION").into(),
            },
            sha256: BTreeMap::new(),
            root_namespace: "istio-system".into(),
        }
    }
}

/// Registry used when `--image-registry` is not given.
pub const DEFAULT_REGISTRY: &str = "ghcr.io/sluice-proxy";
