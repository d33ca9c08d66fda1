//! Stage 3, model: the mesh as one Envoy sees it, built from validated resources, with the
//! cross-resource checks (unknown hosts, subsets, gateways, duplicates) on the way.
//!
//! May import: [`crate::check`], [`crate::input`] and the leaves.
//!
//! Everything is ordered (`BTreeMap`, resource order for rules), so the same input always gives
//! the same model and the same bytes out. Lookups are maps keyed by host or name: building is
//! linear in the size of the input (no quadratic scans over services).

pub mod credentials;
pub mod halts;
pub mod locality;
pub mod native;
pub mod policy;
pub mod settings;
pub mod tcp;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use self::credentials::{CredentialSource, CredentialsDir};
use std::time::Duration;

use crate::check::validate::{HTTP_PROTOCOLS, to_core_match};
use crate::diag::{Code, Diagnostic, Origin, Severity, did_you_mean};
pub(crate) use crate::input::istio::server_host_matches;
use crate::input::istio::{
    DestinationRuleSpec, GatewaySpec, ServiceEntrySpec, TrafficPolicy, VirtualServiceSpec,
    WorkloadEntrySpec,
};
use crate::input::parse::{Kind, Resource, Spec};
use crate::input::yaml::FieldPath;

/// The whole mesh: listeners by port and clusters by name.
#[derive(serde::Serialize, Debug, Clone, Default)]
pub struct Mesh {
    /// One listener per port (gateway server ports and mesh service ports share a listener when
    /// they coincide: one Envoy binds a port once).
    pub listeners: BTreeMap<u32, Listener>,
    /// Clusters named like Istio's: `outbound|<port>|<subset>|<host>`.
    pub clusters: BTreeMap<String, Cluster>,
    /// The proxy's own locality (`--locality`), for the bootstrap's `node.locality`; set by
    /// [`crate::model::locality::apply`].
    pub proxy_locality: Option<crate::input::locality::Locality>,
    /// Hosts known only from Kubernetes Services (`<name>.<namespace>.svc.<domain>`): their
    /// clusters have no endpoints, which Istio's registry knows and a static config does not.
    pub service_only_hosts: BTreeSet<String>,
    /// The endpoints `sluice serve` probes (a WorkloadGroup's `probe`, a `sluice.dev/probe`
    /// annotation), by [`ProbedEndpoint::key`]. Not part of any generated config: the static
    /// targets leave health to Envoy.
    #[serde(skip)]
    pub probed: BTreeMap<String, ProbedEndpoint>,
}

/// A probe resolved from its input (Kubernetes' defaults applied, its port a number), as the
/// prober runs it: the model's own, so later stages need not read the input.
pub use crate::input::probe::{Check as ProbeCheck, Probe};

/// One endpoint the control plane probes, and the ports its result applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbedEndpoint {
    /// The workload's address.
    pub address: String,
    /// The probe, its port resolved for this endpoint.
    pub probe: Probe,
    /// The ports the workload serves at `address`: the result applies to every EDS endpoint
    /// `address:port` of these ports, in every cluster (the workload as a whole is healthy or
    /// not, as Istio treats a WorkloadEntry's health).
    pub ports: BTreeSet<u32>,
    /// Where the probe was given: `WorkloadGroup/NS/NAME`, `WorkloadEntry/NS/NAME` or
    /// `ServiceEntry/NS/NAME`.
    pub source: String,
}

impl ProbedEndpoint {
    /// `address:port` of the probe: one probe per key, whatever the number of services.
    pub fn key(&self) -> String {
        let port = match &self.probe.check {
            ProbeCheck::Http { port, .. }
            | ProbeCheck::Tcp { port }
            | ProbeCheck::Grpc { port, .. } => *port,
        };
        format!("{}:{port}", self.address)
    }
}

impl Mesh {
    /// All HTTP listeners' virtual hosts in one, as a proxy that serves every port with one
    /// filter config sees them (the istio target: one config per filter for every sidecar and
    /// gateway). A virtual host repeated on several ports is kept once (its rules are the
    /// same), and a domain already owned by an earlier virtual host is dropped from later ones
    /// (the router requires unique domains).
    pub fn merged_listener(&self) -> Listener {
        let mut merged = Listener::default();
        let mut names = BTreeSet::new();
        let mut domains = BTreeSet::new();
        for listener in self.listeners.values() {
            for vh in &listener.virtual_hosts {
                if !names.insert(vh.name.clone()) {
                    continue;
                }
                let mut vh = vh.clone();
                vh.domains.retain(|d| domains.insert(d.clone()));
                if !vh.domains.is_empty() {
                    merged.virtual_hosts.push(vh);
                }
            }
        }
        merged
    }

    /// The clusters that some HTTP rule routes to.
    pub fn routed_clusters(&self) -> BTreeSet<&str> {
        let mut routed = BTreeSet::new();
        for listener in self.listeners.values() {
            for vh in &listener.virtual_hosts {
                for rule in &vh.rules {
                    routed.extend(rule.target.clusters());
                }
            }
        }
        routed
    }
}

/// One listening port.
#[derive(serde::Serialize, Debug, Clone, Default)]
pub struct Listener {
    /// The port in the input (the emitted port may be 0 for tests).
    pub port: u32,
    /// Virtual hosts, in order; domains are unique across them.
    pub virtual_hosts: Vec<VirtualHost>,
    /// TLS termination (a Gateway HTTPS server on this port).
    pub tls: Option<crate::model::native::ServerTls>,
    /// Redirect every plain-HTTP request to HTTPS (a Gateway server's `tls.httpsRedirect`).
    pub https_redirect: bool,
    /// Gateway HTTPS servers of this port with different certificates, as Istio serves them:
    /// one filter chain each, chosen by the client's SNI. Empty when one certificate (`tls`)
    /// serves the whole port.
    pub sni_servers: Vec<SniServer>,
    /// A TCP port's filter chains (VirtualService `tcp`/`tls` routes, TLS passthrough, Istio's
    /// default TCP route; see [`crate::model::tcp`]): when non-empty the listener proxies connections
    /// and has no virtual hosts.
    pub tcp_chains: Vec<crate::model::tcp::TcpChain>,
}

/// One certificate of a port that serves several (see [`Listener::sni_servers`]).
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct SniServer {
    /// The servers' hosts without their `namespace/` prefix, sorted (Istio's SNI hosts): the
    /// chain's `server_names`, and the virtual hosts the chain routes. `*` matches any SNI.
    pub hosts: Vec<String>,
    /// The certificate and client verification of these hosts.
    pub tls: crate::model::native::ServerTls,
}

impl SniServer {
    /// Envoy `filter_chain_match.server_names`: the hosts (`*.example.com` as Envoy takes
    /// wildcards); none for a server of `*`, whose chain takes any SNI and none.
    pub fn server_names(&self) -> Vec<String> {
        if self.hosts.iter().any(|h| h == "*") {
            Vec::new()
        } else {
            self.hosts.clone()
        }
    }

    /// What the Envoy domain `domain` (`host` or `host:port`) of a virtual host becomes in this
    /// chain, as Istio intersects VirtualService and server hosts: kept when a server host
    /// covers it, narrowed to the server hosts it covers when it is the wider wildcard
    /// (`*.example.com` on a server of `a.example.com` routes `a.example.com` only), dropped
    /// when they do not meet.
    pub fn chain_domains(&self, domain: &str) -> Vec<String> {
        let (host, port) = match domain.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => (host, Some(port)),
            _ => (domain, None),
        };
        if self.hosts.iter().any(|p| server_host_matches(p, host)) {
            return vec![domain.to_owned()];
        }
        self.hosts
            .iter()
            .filter(|p| server_host_matches(host, p))
            .map(|p| match port {
                Some(port) => format!("{p}:{port}"),
                None => p.clone(),
            })
            .collect()
    }
}

impl Listener {
    /// `listener_<port>`: the name tests and the harness look listeners up by.
    pub fn name(&self) -> String {
        format!("listener_{}", self.port)
    }
}

/// A set of domains and their ordered rules.
#[derive(serde::Serialize, Debug, Clone, Default)]
pub struct VirtualHost {
    /// Name (the VirtualService or service host it comes from).
    pub name: String,
    /// Envoy domains: `host` and `host:port`, or `*`.
    pub domains: Vec<String>,
    /// Rules, first match wins.
    pub rules: Vec<Rule>,
}

/// One VirtualService `http[]` entry (or a service's default route).
#[derive(serde::Serialize, Debug, Clone)]
pub struct Rule {
    /// Unique per listener: `<namespace>.<vs>.<index>`, the route's `name`, or for a default
    /// route the cluster name.
    pub name: String,
    /// Match blocks in the router's own type.
    pub matches: Vec<sluice_core::matching::HttpMatchRequest>,
    /// Where matching requests go.
    pub target: Target,
    /// Overall timeout (Istio's default is none).
    pub timeout: Option<Duration>,
    /// Retry policy.
    pub retries: Option<RetryPolicy>,
    /// Fault injection as the fault filter's rule (keyed by this rule's name).
    pub fault: Option<sluice_core::fault::config::FaultRule>,
    /// sluice-only settings of the rule (canary stickiness, schedule, failover; fault extras).
    pub sluice: crate::model::settings::RuleSettings,
    /// What Envoy does natively on this rule's route (mirrors, rewrites, redirects, headers, CORS,
    /// hashing); see [`native`].
    pub native: crate::model::native::RouteExtras,
    /// The VirtualService `http[]` entry the rule comes from (`None` for a service's default
    /// route): an error found while emitting the rule names it.
    pub origin: Option<Origin>,
}

/// A rule's destination.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One cluster.
    Cluster(String),
    /// Several clusters with relative weights (resolved by the canary filter).
    Split(Vec<(String, u32)>),
}

impl Target {
    /// The clusters, in order (a split's in its order; the weights are the canary's).
    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        let (one, split) = match self {
            Target::Cluster(c) => (Some(c.as_str()), &[][..]),
            Target::Split(members) => (None, members.as_slice()),
        };
        one.into_iter().chain(split.iter().map(|(c, _)| c.as_str()))
    }
}

/// Istio `HTTPRetry`, resolved.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Number of retries.
    pub attempts: u32,
    /// Per-attempt timeout.
    pub per_try_timeout: Option<Duration>,
    /// Envoy retry conditions.
    pub retry_on: Vec<String>,
    /// Status codes from `retryOn` (`retriable-status-codes`).
    pub status_codes: Vec<u32>,
    /// Skip hosts already tried (Istio's default: true).
    pub ignore_previous_hosts: bool,
    /// Base back-off interval.
    pub backoff: Option<Duration>,
    /// Retry in other priorities (localities) than the ones tried (`retryRemoteLocalities`).
    pub remote_localities: bool,
}

/// How a cluster finds its endpoints.
#[derive(serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// Fixed IP addresses.
    Static,
    /// Every address a name resolves to (Istio `DNS`).
    StrictDns,
    /// The first address (Istio `DNS_ROUND_ROBIN`).
    LogicalDns,
}

/// One endpoint of a cluster.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// IP address or DNS name.
    pub address: String,
    /// Port.
    pub port: u32,
    /// Load-balancing weight.
    pub weight: Option<u32>,
    /// The workload is leaving (`sluice.dev/draining`): EDS `DRAINING`, no new requests.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

/// An upstream cluster: one host, port and (optional) subset.
#[derive(serde::Serialize, Debug, Clone, PartialEq)]
pub struct Cluster {
    /// `outbound|<port>|<subset>|<host>`.
    pub name: String,
    /// Service host.
    pub host: String,
    /// Service port.
    pub port: u32,
    /// Subset name, empty for the whole host.
    pub subset: String,
    /// Discovery type.
    pub discovery: Discovery,
    /// Endpoints, sorted.
    pub endpoints: Vec<Endpoint>,
    /// Speak HTTP/2 upstream (port protocol HTTP2 or GRPC).
    pub http2: bool,
    /// Host policy merged with the subset's, resolved: connection pool, outlier detection,
    /// upstream TLS, retry budget, PROXY protocol.
    pub policy: policy::ClusterPolicy,
    /// The merged policy's load balancing, resolved: algorithm, consistent-hash key and ring,
    /// slow start, locality settings.
    pub load_balancing: policy::LoadBalancing,
    /// The sluice breaker guarding this cluster, if configured.
    pub breaker: Option<sluice_core::breaker::BreakerSettings>,
    /// Active health checking (`sluice.dev/health-check` on the DestinationRule, else on the
    /// ServiceEntry).
    pub health_check: Option<policy::HealthCheck>,
    /// The locality of each endpoint (`region/zone/subzone`, empty when unset), in the order
    /// of `endpoints`.
    pub endpoint_localities: Vec<String>,
    /// Endpoints grouped by locality, with weights and priorities (see
    /// [`crate::model::locality::apply`]); empty groups: one flat group.
    pub locality: crate::model::locality::ClusterLocality,
}

/// Istio's cluster name.
pub fn cluster_name(port: u32, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// One port of a registered service.
pub(crate) struct PortDef {
    number: u32,
    name: Option<String>,
    target_port: Option<u32>,
    http2: bool,
    /// The ServiceEntry port's `protocol`, upper case (empty when unset or for a Kubernetes
    /// Service, whose ports the TCP side does not route).
    protocol: String,
    /// Its index in the resource's `spec.ports`, for diagnostics.
    index: usize,
}

/// A registered service host: the resource defining it, its ports and endpoints.
pub(crate) struct Service<'a> {
    resource: &'a Resource,
    ports: Vec<PortDef>,
    discovery: Discovery,
    endpoints: Vec<Member<'a>>,
    dns_host: bool,
}

/// One endpoint of a service, and the probe `sluice serve` runs on it, if any, with where
/// that probe was given.
#[derive(Clone)]
struct Member<'a> {
    spec: &'a WorkloadEntrySpec,
    probe: Option<(crate::input::probe::ProbeInput, String)>,
    /// A WorkloadEntry annotated `sluice.dev/draining: "true"`.
    draining: bool,
}

/// The probe of a WorkloadEntry: its own `sluice.dev/probe`, else its WorkloadGroup's `probe`
/// (the group named by Istio's `istio.io/autoRegistrationGroup` annotation, which
/// `sluice register` writes, in the entry's namespace).
fn workload_probe(
    w: &Resource,
    group_probes: &BTreeMap<(&str, &str), &crate::input::probe::ProbeInput>,
) -> Option<(crate::input::probe::ProbeInput, String)> {
    if let Some(own) = crate::input::annotations::probe_input(w) {
        return Some((own, format!("WorkloadEntry/{}/{}", w.namespace, w.name)));
    }
    let group = w
        .metadata
        .annotations
        .get(crate::input::istio::AUTO_REGISTRATION_GROUP)?;
    let probe = group_probes.get(&(w.namespace.as_str(), group.as_str()))?;
    Some((
        (*probe).clone(),
        format!("WorkloadGroup/{}/{group}", w.namespace),
    ))
}

/// The one index of the mesh, built once from the resources and read by every part of the
/// model (HTTP listeners and clusters here, TCP listeners in [`tcp`]): service hosts with their
/// ports and endpoints, DestinationRules (and so subsets) by registered host, Gateways by
/// namespace and name. As Istio's push context, it resolves a host as written in a namespace
/// to its registered form.
pub(crate) struct Registry<'a> {
    /// The cluster domain of Kubernetes names (`--cluster-domain`, `cluster.local`).
    domain: String,
    services: BTreeMap<String, Service<'a>>,
    rules: BTreeMap<String, (&'a Resource, &'a DestinationRuleSpec)>,
    gateways: BTreeMap<(String, String), (&'a Resource, &'a GatewaySpec)>,
}

impl Registry<'_> {
    /// The registered form of `host` as written in `namespace`: exact, else the Kubernetes
    /// short/long name forms (`reviews` <-> `reviews.<ns>.svc.<domain>`), as Istio resolves a
    /// short name in a resource of that namespace.
    fn resolve(&self, host: &str, namespace: &str) -> Option<String> {
        if self.services.contains_key(host) {
            return Some(host.to_owned());
        }
        if !host.contains('.') {
            let long = format!("{host}.{namespace}.svc.{}", self.domain);
            if self.services.contains_key(&long) {
                return Some(long);
            }
        }
        if host.ends_with(&format!(".svc.{}", self.domain))
            && let Some(short) = host.split('.').next()
            && self.services.contains_key(short)
        {
            return Some(short.to_owned());
        }
        None
    }

    /// The FQDN of the Kubernetes Service that `host` (written in `namespace`) names, if any.
    fn kube_fqdn(&self, host: &str, namespace: &str) -> Option<String> {
        self.resolve(host, namespace).filter(|fqdn| {
            self.services
                .get(fqdn)
                .is_some_and(|s| s.resource.kind == Kind::Service)
        })
    }

    /// The Envoy domains of `host` on `port`. For a Kubernetes Service (`host` its FQDN
    /// `name.ns.svc.<domain>`), every name a client may write, as Istio's sidecar routes accept
    /// them: the FQDN, `name.ns.svc`, `name.ns`, and `name` when the routing resource is in the
    /// Service's namespace `namespace`; each bare and with `:port`. Else `host` and `host:port`.
    fn domains(&self, host: &str, namespace: &str, port: u32) -> Vec<String> {
        let is_kube = self
            .services
            .get(host)
            .is_some_and(|s| s.resource.kind == Kind::Service);
        let suffix = format!(".svc.{}", self.domain);
        let Some(name_ns) = host.strip_suffix(&suffix).filter(|_| is_kube) else {
            return domains_for(host, port);
        };
        let mut names = vec![
            host.to_owned(),
            format!("{name_ns}.svc"),
            name_ns.to_owned(),
        ];
        if let Some((name, ns)) = name_ns.split_once('.')
            && ns == namespace
        {
            names.push(name.to_owned());
        }
        names.iter().flat_map(|n| domains_for(n, port)).collect()
    }

    fn subsets(&self, host: &str) -> Vec<&str> {
        self.rules.get(host).map_or_else(Vec::new, |(_, dr)| {
            dr.subsets
                .iter()
                .filter_map(|s| s.name.as_deref())
                .collect()
        })
    }
}

/// Builds the mesh; the diagnostics are the cross-reference problems found. Gateway
/// `credentialName`s are not resolved (a server naming only a secret gets no listener).
pub fn build(resources: &[Resource]) -> (Mesh, Vec<Diagnostic>) {
    build_with_credentials(resources, None)
}

/// [`build`], resolving each Gateway server's `tls.credentialName: NAME` to the files of a
/// Kubernetes TLS secret laid out in `credentials_dir`: `NAME/tls.crt`, `NAME/tls.key` and, for
/// MUTUAL / OPTIONAL_MUTUAL, `NAME/ca.crt` (the secret's key names, as `kubectl get secret -o
/// yaml` shows them). Files are checked now, so a missing one is an error at `credentialName`
/// rather than an Envoy that refuses its config. DestinationRule `tls.credentialName`s are
/// resolved from the same directory: MUTUAL reads `NAME/tls.crt`, `NAME/tls.key` and, if
/// present, `NAME/ca.crt`; SIMPLE reads `NAME/ca.crt`.
pub fn build_with_credentials(
    resources: &[Resource],
    credentials_dir: Option<&Path>,
) -> (Mesh, Vec<Diagnostic>) {
    build_in(resources, credentials_dir, DEFAULT_CLUSTER_DOMAIN)
}

pub use crate::input::options::DEFAULT_CLUSTER_DOMAIN;

/// [`build_with_credentials`] for a cluster whose Kubernetes names end in `.svc.<domain>`.
pub fn build_in(
    resources: &[Resource],
    credentials_dir: Option<&Path>,
    domain: &str,
) -> (Mesh, Vec<Diagnostic>) {
    let source = credentials_dir.map(CredentialsDir::new);
    build_from(
        resources,
        source.as_ref().map(|s| s as &dyn CredentialSource),
        domain,
    )
}

/// Builds the mesh of a cluster whose Kubernetes names end in `.svc.<domain>`, reading the
/// secrets `credentialName`s name from `credentials` (`None`: no secret store; a Gateway server
/// naming only a secret gets no listener, a warning).
pub fn build_from(
    resources: &[Resource],
    credentials: Option<&dyn CredentialSource>,
    domain: &str,
) -> (Mesh, Vec<Diagnostic>) {
    let mut out = Vec::new();
    check_duplicates(resources, &mut out);
    let registry = register(resources, domain, &mut out);
    let mut mesh = Mesh::default();
    build_clusters(&registry, credentials, &mut mesh, &mut out);
    mesh.service_only_hosts = registry
        .services
        .iter()
        .filter(|(_, svc)| svc.resource.kind == Kind::Service)
        .map(|(host, _)| host.clone())
        .collect();
    build_listeners(resources, &registry, credentials, &mut mesh, &mut out);
    crate::model::tcp::build(resources, &registry, credentials, &mut mesh, &mut out);
    (mesh, out)
}

/// A Gateway server's `tls` with `credentialName` replaced by the secret's files in
/// `credentials` (see [`build_with_credentials`]); `None` when a file is missing (reported).
/// Explicit file paths win over the secret, as in Istio.
pub(crate) fn resolve_credential(
    r: &Resource,
    at: &FieldPath,
    tls: &serde_json::Value,
    credentials: &dyn CredentialSource,
    out: &mut Vec<Diagnostic>,
) -> Option<serde_json::Value> {
    let Some(name) = tls.get("credentialName").and_then(|v| v.as_str()) else {
        return Some(tls.clone());
    };
    if tls.get("serverCertificate").is_some() || tls.get("privateKey").is_some() {
        return Some(tls.clone());
    }
    let mutual = matches!(
        tls.get("mode").and_then(|v| v.as_str()),
        Some("MUTUAL" | "OPTIONAL_MUTUAL")
    );
    let mut files = vec![("serverCertificate", "tls.crt"), ("privateKey", "tls.key")];
    if mutual && tls.get("caCertificates").is_none() {
        files.push(("caCertificates", "ca.crt"));
    }
    let mut resolved = tls.clone();
    let mut missing = Vec::new();
    for (field, key) in files {
        let file = credentials.secret_file(name, key);
        if !file.present {
            missing.push(file.looked_at);
        }
        if let Some(map) = resolved.as_object_mut() {
            map.insert(field.into(), file.path.into());
            map.remove("credentialName");
        }
    }
    if !missing.is_empty() {
        out.push(r.error(Code::MissingCredential, &at.key("tls").key("credentialName"),
            format!(
                "secret {name:?} not found in the credentials directory: missing {}",
                missing.join(", ")
            ),
            &format!(
                "put the secret's files in {}/ (tls.crt, tls.key{}), e.g. from `kubectl get secret {name} -o yaml`",
                credentials.secret_location(name),
                if mutual { ", ca.crt" } else { "" }
            ),
        ));
        return None;
    }
    Some(resolved)
}

fn check_duplicates(resources: &[Resource], out: &mut Vec<Diagnostic>) {
    let mut seen: BTreeMap<(Kind, &str, &str), &Resource> = BTreeMap::new();
    for r in resources {
        if let Some(first) = seen.insert((r.kind, &r.namespace, &r.name), r) {
            out.push(r.error(
                Code::Conflict,
                &FieldPath::root().key("metadata").key("name"),
                format!(
                    "duplicate {} name {:?} in namespace {:?}",
                    r.kind, r.name, r.namespace
                ),
                &format!(
                    "already defined at {}:{}; rename one",
                    first.file, first.root.pos
                ),
            ));
        }
    }
}

fn register<'a>(
    resources: &'a [Resource],
    domain: &str,
    out: &mut Vec<Diagnostic>,
) -> Registry<'a> {
    let mut registry = Registry {
        domain: domain.to_owned(),
        services: BTreeMap::new(),
        rules: BTreeMap::new(),
        gateways: BTreeMap::new(),
    };
    let workloads: Vec<(&Resource, &WorkloadEntrySpec)> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::WorkloadEntry(w) => Some((r, w)),
            _ => None,
        })
        .collect();
    // The labels each WorkloadGroup gives the entries its VMs register (`sluice register`).
    let groups: Vec<(&str, BTreeMap<&str, &str>)> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::WorkloadGroup(g) => Some((
                r.namespace.as_str(),
                g.metadata
                    .labels
                    .iter()
                    .chain(&g.template.labels)
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
            )),
            _ => None,
        })
        .collect();
    let group_probes: BTreeMap<(&str, &str), &crate::input::probe::ProbeInput> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::WorkloadGroup(g) => {
                Some(((r.namespace.as_str(), r.name.as_str()), g.probe.as_ref()?))
            }
            _ => None,
        })
        .collect();
    for r in resources {
        match &r.spec {
            Spec::ServiceEntry(se) => register_service(
                r,
                se,
                &workloads,
                &groups,
                &group_probes,
                &mut registry,
                out,
            ),
            Spec::Service(svc) => register_kube_service(r, svc, &mut registry, out),
            Spec::Gateway(g) => {
                registry
                    .gateways
                    .insert((r.namespace.clone(), r.name.clone()), (r, g));
            }
            _ => {}
        }
    }
    for r in resources {
        let Spec::DestinationRule(dr) = &r.spec else {
            continue;
        };
        let Some(host) = dr.host.as_deref().filter(|h| !h.is_empty()) else {
            continue; // reported by validate
        };
        let at = FieldPath::root().key("spec").key("host");
        match registry.resolve(host, &r.namespace) {
            None => out.push(r.error(
                Code::UnknownHost,
                &at,
                format!("no ServiceEntry defines host {host:?}"),
                &unknown_host_hint(host, &registry),
            )),
            Some(canonical) => {
                if let Some((first, _)) = registry.rules.get(&canonical) {
                    out.push(r.error(
                        Code::Conflict,
                        &at,
                        format!("host {host:?} already has DestinationRule/{}", first.name),
                        "merge the two DestinationRules: one per host",
                    ));
                } else {
                    registry.rules.insert(canonical, (r, dr));
                }
            }
        }
    }
    registry
}

fn unknown_host_hint(host: &str, registry: &Registry<'_>) -> String {
    match did_you_mean(host, registry.services.keys().map(String::as_str)) {
        Some(s) => format!("did you mean {s:?}?"),
        None => "add a ServiceEntry with this host, its ports and endpoints".into(),
    }
}

fn register_service<'a>(
    r: &'a Resource,
    se: &'a ServiceEntrySpec,
    workloads: &[(&'a Resource, &'a WorkloadEntrySpec)],
    groups: &[(&str, BTreeMap<&str, &str>)],
    group_probes: &BTreeMap<(&str, &str), &crate::input::probe::ProbeInput>,
    registry: &mut Registry<'a>,
    out: &mut Vec<Diagnostic>,
) {
    let resolution = se.resolution.as_deref().unwrap_or("NONE");
    let discovery = match resolution {
        "DNS" => Discovery::StrictDns,
        "DNS_ROUND_ROBIN" => Discovery::LogicalDns,
        _ => Discovery::Static,
    };
    let service_probe = crate::input::annotations::probe_input(r)
        .map(|p| (p, format!("ServiceEntry/{}/{}", r.namespace, r.name)));
    let endpoints: Vec<Member<'_>> = match &se.workload_selector {
        Some(sel) => workloads
            .iter()
            .filter(|(w, spec)| {
                w.namespace == r.namespace
                    && sel
                        .labels
                        .iter()
                        .all(|(k, v)| spec.labels.get(k) == Some(v))
            })
            .map(|(w, spec)| Member {
                spec,
                probe: workload_probe(w, group_probes).or_else(|| service_probe.clone()),
                draining: crate::input::annotations::is_draining(w),
            })
            .collect(),
        None => se
            .endpoints
            .iter()
            .map(|spec| Member {
                spec,
                probe: service_probe.clone(),
                draining: false,
            })
            .collect(),
    };
    let dns_host = endpoints.is_empty() && discovery != Discovery::Static;
    // A selector a WorkloadGroup's entries will carry: its endpoints are the VMs that register
    // (none yet is a service with no endpoint so far, not a mistake).
    let registering = se.workload_selector.as_ref().is_some_and(|sel| {
        groups.iter().any(|(ns, labels)| {
            *ns == r.namespace
                && sel
                    .labels
                    .iter()
                    .all(|(k, v)| labels.get(k.as_str()) == Some(&v.as_str()))
        })
    });
    if endpoints.is_empty() && !dns_host && !registering {
        let at = FieldPath::root()
            .key("spec")
            .key(if se.workload_selector.is_some() {
                "workloadSelector"
            } else {
                "hosts"
            });
        let hint = if se.workload_selector.is_some() {
            "no WorkloadEntry (and no WorkloadGroup) in this namespace carries the selector's labels"
        } else {
            "add `endpoints:` with addresses, or use `resolution: DNS` to resolve the hosts"
        };
        out.push(r.error(
            Code::NoEndpoints,
            &at,
            format!("hosts {:?} have no endpoints", se.hosts),
            hint,
        ));
    }
    for (i, host) in se.hosts.iter().enumerate() {
        if let Some(first) = registry.services.get(host) {
            out.push(r.error(
                Code::Conflict,
                &FieldPath::root().key("spec").key("hosts").index(i),
                format!(
                    "host {host:?} is already defined by ServiceEntry/{}",
                    first.resource.name
                ),
                "define each host in one ServiceEntry",
            ));
            continue;
        }
        let ports = se
            .ports
            .iter()
            .enumerate()
            .filter_map(|(index, p)| {
                Some(PortDef {
                    number: p.number?,
                    protocol: crate::input::tcp::protocol_of(p.protocol.as_deref()),
                    index,
                    name: p.name.clone(),
                    target_port: p.target_port,
                    http2: matches!(
                        p.protocol
                            .as_deref()
                            .map(str::to_ascii_uppercase)
                            .as_deref(),
                        Some("HTTP2" | "GRPC")
                    ),
                })
            })
            .collect();
        registry.services.insert(
            host.clone(),
            Service {
                resource: r,
                ports,
                discovery,
                endpoints: endpoints.clone(),
                dns_host,
            },
        );
    }
}

/// A Kubernetes Service as Istio's registry sees it: host `<name>.<namespace>.svc.<domain>`,
/// its ports; no endpoints (the cluster's endpoints are Istio's business; the envoy and compose
/// targets refuse such a host, see [`Mesh::service_only_hosts`]).
fn register_kube_service<'a>(
    r: &'a Resource,
    svc: &'a crate::input::kube::ServiceSpec,
    registry: &mut Registry<'a>,
    out: &mut Vec<Diagnostic>,
) {
    let host = format!("{}.{}.svc.{}", r.name, r.namespace, registry.domain);
    if let Some(first) = registry.services.get(&host) {
        out.push(r.error(
            Code::Conflict,
            &FieldPath::root().key("metadata").key("name"),
            format!(
                "host {host:?} is already defined by {}",
                first.resource.id()
            ),
            "define each host once: a Kubernetes Service or a ServiceEntry",
        ));
        return;
    }
    if svc.ports.is_empty() {
        out.push(r.error(
            Code::InvalidField,
            &FieldPath::root().key("spec").key("ports"),
            format!(
                "Service {:?} has no ports: nothing can be routed to it",
                r.name
            ),
            "add `ports: [{name: http, port: 9080}]`",
        ));
        return;
    }
    let ports = svc
        .ports
        .iter()
        .enumerate()
        .map(|(index, p)| PortDef {
            number: p.port,
            protocol: String::new(),
            index,
            name: p.name.clone(),
            target_port: p.target_port,
            http2: p.http2(),
        })
        .collect();
    registry.services.insert(
        host,
        Service {
            resource: r,
            ports,
            discovery: Discovery::Static,
            endpoints: Vec::new(),
            dns_host: false,
        },
    );
}

/// The policy of one cluster: the host's, then the subset's per field group, each with its
/// `portLevelSettings` for `port` applied first (Istio's merge order).
fn merge_policy(
    host: Option<&TrafficPolicy>,
    subset: Option<&TrafficPolicy>,
    port: u32,
) -> TrafficPolicy {
    let host = host
        .map(|h| crate::input::native::at_port(h, port))
        .unwrap_or_default();
    let Some(sub) = subset.map(|s| crate::input::native::at_port(s, port)) else {
        return host;
    };
    TrafficPolicy {
        load_balancer: sub.load_balancer.clone().or(host.load_balancer),
        connection_pool: sub.connection_pool.clone().or(host.connection_pool),
        outlier_detection: sub.outlier_detection.clone().or(host.outlier_detection),
        circuit_breaker: sub.circuit_breaker.clone().or(host.circuit_breaker),
        tls: sub.tls.clone().or(host.tls),
        port_level_settings: Vec::new(),
        proxy_protocol: sub.proxy_protocol.clone().or(host.proxy_protocol),
        retry_budget: sub.retry_budget.clone().or(host.retry_budget),
        tunnel: sub.tunnel.clone().or(host.tunnel),
    }
}

/// The files of a DestinationRule client secret `tls.credentialName: NAME`, laid out in the
/// credentials directory like the Gateway's (the keys of a Kubernetes TLS secret).
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
struct ClientSecret {
    /// `NAME/tls.crt` and `NAME/tls.key`: the client certificate (MUTUAL).
    certificate: Option<(String, String)>,
    /// `NAME/ca.crt`: verifies the server.
    ca: Option<String>,
}

/// Reads secret `name` from `dir` as Istio reads a DestinationRule client secret: MUTUAL needs
/// `tls.crt` and `tls.key` (`ca.crt` is optional, the system bundle verifies the server
/// without it); SIMPLE needs `ca.crt`, the only thing it can take from a secret. `Err`: the
/// missing files and the names of the ones expected.
fn client_secret(
    name: &str,
    mutual: bool,
    credentials: &dyn CredentialSource,
) -> Result<ClientSecret, (Vec<String>, &'static str)> {
    let file = |key: &str| {
        let file = credentials.secret_file(name, key);
        (file.present, file.path)
    };
    let (crt, key, ca) = (file("tls.crt"), file("tls.key"), file("ca.crt"));
    let (required, expected): (Vec<&(bool, String)>, _) = if mutual {
        (vec![&crt, &key], "tls.crt, tls.key and optionally ca.crt")
    } else {
        (vec![&ca], "ca.crt")
    };
    let missing: Vec<String> = required
        .iter()
        .filter(|(present, _)| !present)
        .map(|(_, p)| p.clone())
        .collect();
    if !missing.is_empty() {
        return Err((missing, expected));
    }
    Ok(ClientSecret {
        certificate: mutual.then(|| (crt.1.clone(), key.1.clone())),
        ca: ca.0.then_some(ca.1),
    })
}

/// Every `tls` block of a DestinationRule, with its path: the host's, its port-level ones, and
/// the same for each subset.
fn client_tls_blocks(
    dr: &DestinationRuleSpec,
) -> Vec<(FieldPath, &crate::input::native::ClientTls)> {
    fn of_policy<'a>(
        at: &FieldPath,
        tp: Option<&'a TrafficPolicy>,
        found: &mut Vec<(FieldPath, &'a crate::input::native::ClientTls)>,
    ) {
        let Some(tp) = tp else { return };
        if let Some(tls) = &tp.tls {
            found.push((at.key("tls"), tls));
        }
        for (i, p) in tp.port_level_settings.iter().enumerate() {
            if let Some(tls) = &p.tls {
                found.push((at.key("portLevelSettings").index(i).key("tls"), tls));
            }
        }
    }
    let mut blocks = Vec::new();
    let spec = FieldPath::root().key("spec");
    of_policy(
        &spec.key("trafficPolicy"),
        dr.traffic_policy.as_ref(),
        &mut blocks,
    );
    for (i, s) in dr.subsets.iter().enumerate() {
        of_policy(
            &spec.key("subsets").index(i).key("trafficPolicy"),
            s.traffic_policy.as_ref(),
            &mut blocks,
        );
    }
    blocks
}

/// Reports DestinationRule `tls.credentialName`s that `credentials_dir` does not resolve (MUTUAL
/// needs `NAME/tls.crt` and `NAME/tls.key`, SIMPLE `NAME/ca.crt`), so no cluster goes out
/// with a certificate missing. For the targets whose Envoy config sluice writes; the istio
/// target hands DestinationRules to Istio, which reads the secret itself.
pub fn check_client_credentials(
    resources: &[Resource],
    credentials_dir: Option<&Path>,
) -> Vec<Diagnostic> {
    let source = credentials_dir.map(CredentialsDir::new);
    check_client_credentials_in(
        resources,
        source.as_ref().map(|s| s as &dyn CredentialSource),
    )
}

/// [`check_client_credentials`] against any secret store (`None`: none configured).
pub fn check_client_credentials_in(
    resources: &[Resource],
    credentials: Option<&dyn CredentialSource>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for r in resources {
        let Spec::DestinationRule(dr) = &r.spec else {
            continue;
        };
        for (at, tls) in client_tls_blocks(dr) {
            let Some(name) = tls.credential_name.as_deref() else {
                continue;
            };
            let mutual = match tls.mode.as_deref() {
                Some("MUTUAL") => true,
                Some("SIMPLE") => false,
                _ => continue, // DISABLE uses no secret; other modes are reported by validate
            };
            let at = at.key("credentialName");
            let Some(credentials) = credentials else {
                out.push(r.error(Code::MissingCredential, &at,
                    format!("secret {name:?} needs `--credentials-dir`: sluice reads secrets from files"),
                    &format!(
                        "pass `--credentials-dir DIR` with DIR/{name}/{}, or give the file paths instead",
                        if mutual { "tls.crt and tls.key (ca.crt to verify the server)" } else { "ca.crt" }
                    ),
                ));
                continue;
            };
            if let Err((missing, expected)) = client_secret(name, mutual, credentials) {
                out.push(r.error(Code::MissingCredential, &at,
                    format!(
                        "secret {name:?} not found in the credentials directory: missing {}",
                        missing.join(", ")
                    ),
                    &format!(
                        "put the secret's files in {}/ ({expected}), e.g. from `kubectl get secret {name} -o yaml`",
                        credentials.secret_location(name)
                    ),
                ));
            }
        }
    }
    out
}

/// The upstream TLS of a cluster as Envoy gets it: a `credentialName` replaced by the secret's
/// files (unresolved ones were reported by [`check_client_credentials`]), and, as Istio does,
/// the ServiceEntry's `subjectAltNames` verifying the server when the DestinationRule names
/// none.
fn finish_client_tls(
    mut policy: TrafficPolicy,
    credentials: Option<&dyn CredentialSource>,
    service_sans: &[String],
) -> TrafficPolicy {
    let Some(tls) = policy.tls.as_mut() else {
        return policy;
    };
    let mutual = match tls.mode.as_deref() {
        Some("MUTUAL") => true,
        Some("SIMPLE") => false,
        _ => return policy,
    };
    if let (Some(name), Some(credentials)) = (tls.credential_name.take(), credentials)
        && let Ok(secret) = client_secret(&name, mutual, credentials)
    {
        if let Some((cert, key)) = secret.certificate {
            tls.client_certificate = Some(cert);
            tls.private_key = Some(key);
        }
        tls.ca_certificates = secret.ca;
    }
    if tls.subject_alt_names.is_empty() {
        tls.subject_alt_names = service_sans.to_vec();
    }
    policy
}

fn build_clusters(
    registry: &Registry<'_>,
    credentials: Option<&dyn CredentialSource>,
    mesh: &mut Mesh,
    out: &mut Vec<Diagnostic>,
) {
    for (host, svc) in &registry.services {
        let dr = registry.rules.get(host);
        let host_policy = dr.and_then(|(_, d)| d.traffic_policy.as_ref());
        let service_sans: &[String] = match &svc.resource.spec {
            Spec::ServiceEntry(se) => &se.subject_alt_names,
            _ => &[],
        };
        let policy_of = |subset: Option<&TrafficPolicy>, port: u32| {
            finish_client_tls(
                merge_policy(host_policy, subset, port),
                credentials,
                service_sans,
            )
        };
        // The clusters made for this host, for the PASSTHROUGH check (a scan of every cluster
        // of the mesh per host would be quadratic).
        let mut made: Vec<String> = Vec::new();
        for port in &svc.ports {
            let endpoint_for = |m: &Member<'_>| -> Option<Endpoint> {
                let ep = m.spec;
                let number = port
                    .name
                    .as_ref()
                    .and_then(|n| ep.ports.get(n).copied())
                    .or(port.target_port)
                    .unwrap_or(port.number);
                Some(Endpoint {
                    address: ep.address.clone()?,
                    port: number,
                    weight: ep.weight,
                    draining: m.draining,
                })
            };
            let all: Vec<(Endpoint, &WorkloadEntrySpec)> = if svc.dns_host {
                vec![]
            } else {
                svc.endpoints
                    .iter()
                    .filter_map(|m| Some((endpoint_for(m)?, m.spec)))
                    .collect()
            };
            // EDS carries health; DNS clusters keep their hosts inline, so only the endpoints
            // of static services are probed.
            if svc.discovery == Discovery::Static {
                for m in &svc.endpoints {
                    record_probe(m, &svc.ports, endpoint_for(m), &mut mesh.probed);
                }
            }
            let dns_endpoint = || Endpoint {
                address: host.clone(),
                port: port.target_port.unwrap_or(port.number),
                weight: None,
                draining: false,
            };
            let mut make =
                |subset: &str, labels: Option<&BTreeMap<String, String>>, policy: TrafficPolicy| {
                    let mut located: Vec<(Endpoint, String)> = if svc.dns_host {
                        vec![(dns_endpoint(), String::new())]
                    } else {
                        all.iter()
                            .filter(|(_, spec)| {
                                labels.is_none_or(|l| {
                                    l.iter().all(|(k, v)| spec.labels.get(k) == Some(v))
                                })
                            })
                            .map(|(e, spec)| (e.clone(), spec.locality.clone().unwrap_or_default()))
                            .collect()
                    };
                    located.sort();
                    let (endpoints, endpoint_localities): (Vec<Endpoint>, Vec<String>) =
                        located.into_iter().unzip();
                    let empty = endpoints.is_empty();
                    let name = cluster_name(port.number, subset, host);
                    made.push(name.clone());
                    mesh.clusters.insert(
                        name.clone(),
                        Cluster {
                            name,
                            host: host.clone(),
                            port: port.number,
                            subset: subset.to_owned(),
                            discovery: svc.discovery,
                            endpoints,
                            http2: port.http2,
                            breaker: crate::model::settings::cluster_breaker(
                                dr.map(|(r, _)| *r),
                                subset,
                                &policy,
                            ),
                            load_balancing: policy::load_balancing(&policy),
                            policy: policy::cluster_policy(&policy, host),
                            health_check: crate::model::native::health_check(
                                dr.map(|(r, _)| *r),
                                svc.resource,
                            ),
                            endpoint_localities,
                            locality: crate::model::locality::ClusterLocality::default(),
                        },
                    );
                    empty
                };
            make("", None, policy_of(None, port.number));
            if let Some((dr_res, dr)) = dr {
                for (i, s) in dr.subsets.iter().enumerate() {
                    let Some(name) = s.name.as_deref() else {
                        continue;
                    };
                    let empty = make(
                        name,
                        Some(&s.labels),
                        policy_of(s.traffic_policy.as_ref(), port.number),
                    );
                    if empty && !svc.dns_host && !svc.endpoints.is_empty() {
                        out.push(
                            dr_res.diag(
                                Code::Unreachable,
                                Severity::Warning,
                                &FieldPath::root()
                                    .key("spec")
                                    .key("subsets")
                                    .index(i)
                                    .key("labels"),
                                format!("subset {name:?} selects no endpoint of {host:?}"),
                                Some(
                                    "check the labels against the ServiceEntry endpoints' labels"
                                        .into(),
                                ),
                            ),
                        );
                    }
                }
            }
        }
        let clusters = made.iter().filter_map(|name| mesh.clusters.get(name));
        check_passthrough(host, svc, dr.map(|(r, _)| *r), clusters, out);
    }
}

/// Records that `member`, served at `endpoint`, is probed (its probe's named port resolved as
/// the endpoint's port of that name). A probe that does not resolve was reported by the checks.
fn record_probe(
    member: &Member<'_>,
    ports: &[PortDef],
    endpoint: Option<Endpoint>,
    probed: &mut BTreeMap<String, ProbedEndpoint>,
) {
    let (Some((input, source)), Some(endpoint)) = (&member.probe, endpoint) else {
        return;
    };
    let named = |name: &str| {
        member.spec.ports.get(name).copied().or_else(|| {
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.target_port.unwrap_or(p.number))
        })
    };
    let Ok(probe) = input.resolve_with(&named) else {
        return;
    };
    let found = ProbedEndpoint {
        address: endpoint.address,
        probe,
        ports: BTreeSet::new(),
        source: source.clone(),
    };
    probed
        .entry(found.key())
        .or_insert(found)
        .ports
        .insert(endpoint.port);
}

/// PASSTHROUGH forwards to the `ip:port` a request names, checked against the service's
/// endpoints: they must be IP addresses (Envoy's `ORIGINAL_DST` takes no DNS names).
/// `clusters` are the host's.
fn check_passthrough<'a>(
    host: &str,
    svc: &Service<'_>,
    dr: Option<&Resource>,
    clusters: impl Iterator<Item = &'a Cluster>,
    out: &mut Vec<Diagnostic>,
) {
    let Some(dr) = dr else { return };
    // The first by name, as the mesh orders clusters.
    let Some(first) = clusters
        .filter(|c| crate::model::native::is_passthrough(c))
        .min_by(|a, b| a.name.cmp(&b.name))
    else {
        return;
    };
    let named = first
        .endpoints
        .iter()
        .find(|e| e.address.parse::<std::net::IpAddr>().is_err());
    if svc.dns_host || named.is_some() {
        let what = named.map_or_else(|| host.to_owned(), |e| e.address.clone());
        out.push(dr.error(
            Code::NoEndpoints,
            &FieldPath::root().key("spec").key("host"),
            format!(
                "PASSTHROUGH needs IP endpoints, but {what:?} of ServiceEntry/{} is a DNS name",
                svc.resource.name
            ),
            "give the ServiceEntry endpoints IP addresses, or use another load balancer",
        ));
    }
}

/// A VirtualService bound to a listener for some of its hosts.
struct Binding<'a> {
    resource: &'a Resource,
    vs: &'a VirtualServiceSpec,
    hosts: BTreeSet<String>,
    /// The VirtualService's gateways (`ns/name`, or `mesh`) that put it on this listener, for
    /// the match blocks' own `gateways`.
    gateways: BTreeSet<String>,
}

/// A gateway reference of a VirtualService in `namespace` as Istio resolves it: `mesh`, else
/// `ns/name` (a bare name is in the VirtualService's namespace).
fn canonical_gateway(gref: &str, namespace: &str) -> String {
    if gref == "mesh" || gref.contains('/') {
        gref.to_owned()
    } else {
        format!("{namespace}/{gref}")
    }
}

/// Checks the `gateways` of each match block: known gateways, and ones the VirtualService is
/// bound to (Istio attaches a VirtualService by its top-level `gateways` only, so a block
/// naming another gateway never applies).
fn check_match_gateways(
    registry: &Registry<'_>,
    r: &Resource,
    vs: &VirtualServiceSpec,
    refs: &BTreeSet<String>,
    out: &mut Vec<Diagnostic>,
) {
    for (i, h) in vs.http.iter().enumerate() {
        for (mi, m) in h.matches.iter().enumerate() {
            for (gi, g) in m.gateways.iter().enumerate() {
                let at = FieldPath::root()
                    .key("spec")
                    .key("http")
                    .index(i)
                    .key("match")
                    .index(mi)
                    .key("gateways")
                    .index(gi);
                let canonical = canonical_gateway(g, &r.namespace);
                if canonical != "mesh"
                    && let Some((ns, name)) = canonical.split_once('/')
                    && !registry
                        .gateways
                        .contains_key(&(ns.to_owned(), name.to_owned()))
                {
                    let names = registry.gateways.keys().map(|(_, n)| n.as_str());
                    let hint = match did_you_mean(name, names) {
                        Some(s) => format!("did you mean {s:?}?"),
                        None => {
                            "name a Gateway of the VirtualService's `gateways`, or `mesh`".into()
                        }
                    };
                    out.push(r.error(
                        Code::UnknownGateway,
                        &at,
                        format!(
                            "unknown gateway {g:?} (looked for Gateway/{name} in namespace {ns:?})"
                        ),
                        &hint,
                    ));
                } else if !refs.contains(&canonical) {
                    out.push(r.diag(Code::Unreachable, Severity::Warning,
                        &at,
                        format!("gateway {g:?} is not in the VirtualService's `gateways`: this match block applies nowhere"),
                        Some(format!("add {g:?} to spec.gateways (Istio binds a VirtualService by its top-level gateways only)")),
                    ));
                }
            }
        }
    }
}

/// The istio target's limit on `match.gateways`: its one sluice router config serves every
/// gateway and sidecar (see [`Mesh::merged_listener`]), so a match block cannot be
/// kept to some of them; each such block is an error there.
pub fn check_match_gateways_for_istio(resources: &[Resource]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for r in resources {
        let Spec::VirtualService(vs) = &r.spec else {
            continue;
        };
        for (i, h) in vs.http.iter().enumerate() {
            for (mi, m) in h.matches.iter().enumerate() {
                if m.gateways.is_empty() {
                    continue;
                }
                out.push(r.error(Code::TargetCannotExpress, &FieldPath::root()
                        .key("spec")
                        .key("http")
                        .index(i)
                        .key("match")
                        .index(mi)
                        .key("gateways"),
                    "the istio target has one sluice router config for every gateway, so a match block cannot apply on some of them only",
                    "bind a separate VirtualService to each gateway (its `gateways`), or use the envoy target",
                ));
            }
        }
    }
    out
}

/// `h` as it applies on a listener reached through `gateways`: the match blocks whose own
/// `gateways` name none of them are dropped (Istio's `sourceMatchHTTP`); `None` when every
/// block is dropped, and so the whole rule (Istio emits no route for it there). A block naming
/// only some of the gateways that share this port is kept, with a warning: one listener
/// cannot tell them apart.
fn rule_on_gateways<'h>(
    r: &Resource,
    at: &FieldPath,
    h: &'h crate::input::istio::HttpRoute,
    gateways: &BTreeSet<String>,
    port: u32,
    out: &mut Vec<Diagnostic>,
) -> Option<std::borrow::Cow<'h, crate::input::istio::HttpRoute>> {
    if h.matches.iter().all(|m| m.gateways.is_empty()) {
        return Some(std::borrow::Cow::Borrowed(h));
    }
    let mut kept = h.clone();
    kept.matches.clear();
    for (mi, m) in h.matches.iter().enumerate() {
        let named: BTreeSet<String> = m
            .gateways
            .iter()
            .map(|g| canonical_gateway(g, &r.namespace))
            .collect();
        if named.is_empty() || gateways.iter().all(|g| named.contains(g)) {
            kept.matches.push(m.clone());
        } else if gateways.iter().any(|g| named.contains(g)) {
            let others: Vec<&str> = gateways
                .iter()
                .filter(|g| !named.contains(*g))
                .map(String::as_str)
                .collect();
            out.push(r.diag(Code::Unreachable, Severity::Warning,
                &at.key("match").index(mi).key("gateways"),
                format!(
                    "port {port} is also served for {}: one Envoy listener cannot tell the gateways apart, so this block applies there too",
                    others.join(", ")
                ),
                Some("give the gateways different ports to keep the block to the ones it names".into()),
            ));
            kept.matches.push(m.clone());
        }
    }
    (!kept.matches.is_empty()).then_some(std::borrow::Cow::Owned(kept))
}

/// Adds Gateway server `s` (terminating with `tls`) to its port's certificates: merged into the
/// entry with the same certificate, else a new SNI-selected entry. A host already served with
/// another certificate on this port is an error (Envoy would refuse two chains matching one
/// SNI); returns false then.
fn add_sni_server(
    r: &Resource,
    at: &FieldPath,
    s: &crate::input::istio::Server,
    tls: crate::model::native::ServerTls,
    servers: &mut Vec<SniServer>,
    out: &mut Vec<Diagnostic>,
) -> bool {
    let hosts: BTreeSet<String> = s
        .hosts
        .iter()
        .map(|h| h.rsplit('/').next().unwrap_or(h).to_owned())
        .collect();
    for (hi, host) in s.hosts.iter().enumerate() {
        let sni = host.rsplit('/').next().unwrap_or(host);
        if let Some(other) = servers
            .iter()
            .find(|o| o.tls != tls && o.hosts.iter().any(|h| h == sni))
        {
            out.push(r.error(Code::Conflict, &at.key("hosts").index(hi),
                format!(
                    "host {sni:?} is already served with another certificate on port {}",
                    s.port.as_ref().and_then(|p| p.number).unwrap_or_default()
                ),
                &format!(
                    "one certificate per SNI host: serve {sni:?} from one server (the other has certificate {})",
                    other.tls.certificate
                ),
            ));
            return false;
        }
    }
    match servers.iter_mut().find(|o| o.tls == tls) {
        Some(same) => {
            let merged: BTreeSet<String> = same.hosts.drain(..).chain(hosts).collect();
            same.hosts = merged.into_iter().collect();
        }
        None => servers.push(SniServer {
            hosts: hosts.into_iter().collect(),
            tls,
        }),
    }
    true
}

fn build_listeners(
    resources: &[Resource],
    registry: &Registry<'_>,
    credentials: Option<&dyn CredentialSource>,
    mesh: &mut Mesh,
    out: &mut Vec<Diagnostic>,
) {
    // Gateway servers that get a listener, and warnings for those that cannot.
    let mut gateway_ports = BTreeSet::new();
    let mut gateway_tls: BTreeMap<u32, Vec<SniServer>> = BTreeMap::new();
    let mut https_redirect_ports = BTreeSet::new();
    for (r, g) in registry.gateways.values() {
        for (i, s) in g.servers.iter().enumerate() {
            let Some(port) = s.port.as_ref() else {
                continue;
            };
            let Some(number) = port.number else { continue };
            let protocol = port.protocol.as_deref().unwrap_or("").to_ascii_uppercase();
            // A passthrough server routes by SNI, not HTTP: see crate::model::tcp.
            if HTTP_PROTOCOLS.contains(&protocol.as_str())
                && !crate::input::tcp::is_passthrough_server(s)
            {
                let at = FieldPath::root().key("spec").key("servers").index(i);
                let tls = match (credentials, s.tls.as_ref()) {
                    (Some(credentials), Some(tls)) if protocol == "HTTPS" => {
                        match resolve_credential(r, &at, tls, credentials, out) {
                            Some(tls) => Some(tls),
                            None => continue,
                        }
                    }
                    (_, tls) => tls.cloned(),
                };
                match crate::model::native::server_tls(r, &at, &protocol, tls.as_ref(), out) {
                    None => continue,
                    Some(crate::model::native::ServerTlsUse::None) => {}
                    Some(crate::model::native::ServerTlsUse::HttpsRedirect) => {
                        https_redirect_ports.insert(number);
                    }
                    Some(crate::model::native::ServerTlsUse::Terminate(tls)) => {
                        let servers = gateway_tls.entry(number).or_default();
                        if !add_sni_server(r, &at, s, tls, servers, out) {
                            continue;
                        }
                    }
                }
                gateway_ports.insert(number);
            }
        }
    }

    // Which VirtualService hosts land on which listener.
    let mut bindings: BTreeMap<u32, Vec<Binding<'_>>> = BTreeMap::new();
    for r in resources {
        let Spec::VirtualService(vs) = &r.spec else {
            continue;
        };
        let spec = FieldPath::root().key("spec");
        let mut per_port: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
        let mut port_gateways: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
        let refs: Vec<String> = if vs.gateways.is_empty() {
            vec!["mesh".into()]
        } else {
            vs.gateways.clone()
        };
        check_match_gateways(
            registry,
            r,
            vs,
            &refs
                .iter()
                .map(|g| canonical_gateway(g, &r.namespace))
                .collect(),
            out,
        );
        // Unknown hosts, ports and subsets are reported even for a VirtualService that binds to
        // no listener (identical reports from the per-listener pass below are deduplicated).
        let mut destinations_ok = true;
        for (i, h) in vs.http.iter().enumerate() {
            let at = spec.key("http").index(i);
            destinations_ok &= resolve_target(registry, r, &at, h, None, out).is_some();
        }
        let mut exposed = vec![false; vs.hosts.len()];
        for (gi, gref) in refs.iter().enumerate() {
            if gref == "mesh" {
                for (hi, host) in vs.hosts.iter().enumerate() {
                    let ports = mesh_ports(registry, r, vs, host);
                    if ports.is_empty() && destinations_ok {
                        out.push(r.error(Code::UnknownPort, &spec.key("hosts").index(hi),
                            format!("cannot tell which mesh port serves host {host:?}"),
                            "make the host a ServiceEntry host, or give the routes' destinations a `port`",
                        ));
                    }
                    for p in ports {
                        per_port.entry(p).or_default().insert(host.clone());
                        port_gateways.entry(p).or_default().insert("mesh".into());
                    }
                    if let Some(e) = exposed.get_mut(hi) {
                        *e = true;
                    }
                }
                continue;
            }
            let (ns, name) = match gref.split_once('/') {
                Some((ns, name)) => (ns.to_owned(), name.to_owned()),
                None => (r.namespace.clone(), gref.clone()),
            };
            let Some((_, gw)) = registry.gateways.get(&(ns.clone(), name.clone())) else {
                let names: Vec<&str> = registry.gateways.keys().map(|(_, n)| n.as_str()).collect();
                let hint = match did_you_mean(&name, names.iter().copied()) {
                    Some(s) => format!("did you mean {s:?}?"),
                    None => {
                        "define the Gateway, or use `mesh` for service-to-service traffic".into()
                    }
                };
                out.push(r.error(
                    Code::UnknownGateway,
                    &spec.key("gateways").index(gi),
                    format!(
                        "unknown gateway {gref:?} (looked for Gateway/{name} in namespace {ns:?})"
                    ),
                    &hint,
                ));
                exposed.iter_mut().for_each(|e| *e = true); // don't pile up a second error
                continue;
            };
            for server in &gw.servers {
                let Some(number) = server.port.as_ref().and_then(|p| p.number) else {
                    continue;
                };
                for (hi, host) in vs.hosts.iter().enumerate() {
                    if server.hosts.iter().any(|p| server_host_matches(p, host)) {
                        if let Some(e) = exposed.get_mut(hi) {
                            *e = true;
                        }
                        if gateway_ports.contains(&number) {
                            per_port.entry(number).or_default().insert(host.clone());
                            port_gateways
                                .entry(number)
                                .or_default()
                                .insert(format!("{ns}/{name}"));
                        }
                    }
                }
            }
        }
        for (hi, host) in vs.hosts.iter().enumerate() {
            if !exposed.get(hi).copied().unwrap_or(true) {
                out.push(r.error(Code::HostNotExposed, &spec.key("hosts").index(hi),
                    format!("host {host:?} is not exposed by any server of the VirtualService's gateways"),
                    "add the host to a Gateway server's `hosts`, or fix the spelling",
                ));
            }
        }
        for (port, hosts) in per_port {
            // `tcp`/`tls` routes only: the HTTP side keeps the hosts' default routes
            // (crate::model::tcp routes the TCP ports).
            if vs.http.is_empty() && !(vs.tcp.is_empty() && vs.tls.is_empty()) {
                continue;
            }
            bindings.entry(port).or_default().push(Binding {
                resource: r,
                vs,
                hosts,
                gateways: port_gateways.remove(&port).unwrap_or_default(),
            });
        }
    }

    let mut ports: BTreeSet<u32> = gateway_ports;
    for svc in registry.services.values() {
        ports.extend(svc.ports.iter().map(|p| p.number));
    }
    ports.extend(bindings.keys().copied());
    for port in ports {
        let mut listener = Listener {
            port,
            virtual_hosts: Vec::new(),
            tls: None,
            https_redirect: https_redirect_ports.contains(&port),
            sni_servers: Vec::new(),
            tcp_chains: Vec::new(),
        };
        match gateway_tls.get(&port).map_or(&[][..], Vec::as_slice) {
            [] => {}
            // One certificate: one chain for any SNI (and clients that send none).
            [only] => listener.tls = Some(only.tls.clone()),
            several => listener.sni_servers = several.to_vec(),
        }
        // Who routes each host on this port, and where (file:line:col of its `hosts` entry):
        // a second VirtualService for it is refused naming both, rather than merged in an
        // order the user may not expect as Istio merges them (istio#23073, istio#37500).
        let mut domain_owner: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut rule_owner: BTreeMap<String, String> = BTreeMap::new();
        for b in bindings.get(&port).map_or(&[][..], Vec::as_slice) {
            let spec = FieldPath::root().key("spec");
            let mut domains = Vec::new();
            for host in &b.hosts {
                let hi = b.vs.hosts.iter().position(|h| h == host).unwrap_or(0);
                // A Kubernetes Service's host is owned under its FQDN, whichever alias is
                // written (`reviews`, `reviews.ns`, ... are one service).
                let key = registry
                    .kube_fqdn(host, &b.resource.namespace)
                    .unwrap_or_else(|| host.clone());
                let at = spec.key("hosts").index(hi);
                if let Some((owner, owner_at)) = domain_owner.get(&key) {
                    if *owner == b.resource.id() {
                        continue; // another alias of a host this VirtualService lists
                    }
                    out.push(b.resource.error(Code::Conflict, &at,
                        format!("host {host:?} on port {port} is already routed by {owner} ({owner_at})"),
                        "route one host from one VirtualService per port (merge their `http` rules)",
                    ));
                    continue;
                }
                let origin = b.resource.origin(&at);
                domain_owner.insert(
                    key.clone(),
                    (b.resource.id(), format!("{}:{}", origin.file, origin.pos)),
                );
                domains.extend(registry.domains(&key, &b.resource.namespace, port));
            }
            if domains.is_empty() {
                continue;
            }
            let mut rules = Vec::new();
            for (i, h) in b.vs.http.iter().enumerate() {
                let at = spec.key("http").index(i);
                let name = h
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{}.{}.{i}", b.resource.namespace, b.resource.name));
                if let Some(owner) = rule_owner.insert(name.clone(), b.resource.id()) {
                    out.push(b.resource.error(
                        Code::Conflict,
                        &at.key("name"),
                        format!("rule name {name:?} is already used on port {port} by {owner}"),
                        "rule names are unique per listener (they key metrics and faults)",
                    ));
                }
                let Some(h) = rule_on_gateways(b.resource, &at, h, &b.gateways, port, out) else {
                    continue;
                };
                let h = h.as_ref();
                let target = if crate::input::native::answers_locally(h) {
                    Target::Cluster(crate::model::native::NO_UPSTREAM.into())
                } else if let Some(t) =
                    resolve_target(registry, b.resource, &at, h, Some(port), out)
                {
                    t
                } else {
                    continue;
                };
                let native = native_extras(registry, mesh, b.resource, &at, h, &target, port, out);
                let fault = h
                    .fault
                    .as_ref()
                    .map(|f| crate::input::annotations::fault_rule(&name, f));
                rules.push(Rule {
                    name,
                    matches: h
                        .matches
                        .iter()
                        .filter_map(|m| to_core_match(m).ok())
                        .collect(),
                    target,
                    timeout: h
                        .timeout
                        .as_deref()
                        .and_then(|t| sluice_core::duration::parse(t).ok()),
                    retries: Some(retry_policy(
                        h.retries.as_ref().unwrap_or(&istio_default_retries()),
                    )),
                    fault,
                    sluice: crate::model::settings::rule_settings(b.resource, i),
                    native,
                    origin: Some(b.resource.origin(&at)),
                });
            }
            listener.virtual_hosts.push(VirtualHost {
                name: format!("{}.{}", b.resource.namespace, b.resource.name),
                domains,
                rules,
            });
        }
        // Mesh services on this port that no VirtualService routes: Istio's default route.
        for (host, svc) in &registry.services {
            if !svc.ports.iter().any(|p| p.number == port) || domain_owner.contains_key(host) {
                continue;
            }
            let cluster = cluster_name(port, "", host);
            let hash = mesh
                .clusters
                .get(&cluster)
                .and_then(crate::model::native::cluster_hash);
            let passthrough_endpoints = mesh
                .clusters
                .get(&cluster)
                .map(crate::model::native::passthrough_endpoints)
                .unwrap_or_default();
            listener.virtual_hosts.push(VirtualHost {
                name: format!("{host}:{port}"),
                domains: registry.domains(host, &svc.resource.namespace, port),
                rules: vec![Rule {
                    name: cluster.clone(),
                    matches: Vec::new(),
                    target: Target::Cluster(cluster),
                    timeout: None,
                    retries: Some(retry_policy(&istio_default_retries())),
                    fault: None,
                    sluice: crate::model::settings::RuleSettings::default(),
                    native: crate::model::native::RouteExtras {
                        hash,
                        passthrough_endpoints,
                        ..Default::default()
                    },
                    origin: None,
                }],
            });
        }
        if !listener.virtual_hosts.is_empty() {
            mesh.listeners.insert(port, listener);
        }
    }
}

fn domains_for(host: &str, port: u32) -> Vec<String> {
    if host == "*" {
        vec!["*".into()]
    } else {
        vec![host.to_owned(), format!("{host}:{port}")]
    }
}

/// Ports of the mesh listeners a mesh-bound host lands on: the service's ports, or for a host
/// that is not a service, the ports its routes send to.
fn mesh_ports(
    registry: &Registry<'_>,
    r: &Resource,
    vs: &VirtualServiceSpec,
    host: &str,
) -> BTreeSet<u32> {
    if let Some(canonical) = registry.resolve(host, &r.namespace)
        && let Some(svc) = registry.services.get(&canonical)
    {
        return svc.ports.iter().map(|p| p.number).collect();
    }
    let mut ports = BTreeSet::new();
    for h in &vs.http {
        for d in h.route.iter().filter_map(|d| d.destination.as_ref()) {
            if let Some(n) = d.port.as_ref().and_then(|p| p.number) {
                ports.insert(n);
            } else if let Some(svc) = d
                .host
                .as_deref()
                .and_then(|h| registry.resolve(h, &r.namespace))
                .and_then(|c| registry.services.get(&c))
                && let [only] = svc.ports.as_slice()
            {
                ports.insert(only.number);
            }
        }
    }
    ports
}

fn resolve_target(
    registry: &Registry<'_>,
    r: &Resource,
    at: &FieldPath,
    h: &crate::input::istio::HttpRoute,
    listener_port: Option<u32>,
    out: &mut Vec<Diagnostic>,
) -> Option<Target> {
    let mut members = Vec::new();
    let mut ok = true;
    for (d, dest) in h.route.iter().enumerate() {
        // Built only for a diagnostic: most destinations resolve, and a path is allocations.
        let dat = || at.key("route").index(d).key("destination");
        let Some(dd) = dest.destination.as_ref() else {
            ok = false;
            continue;
        };
        let Some(host) = dd.host.as_deref() else {
            ok = false;
            continue;
        };
        let Some(canonical) = registry.resolve(host, &r.namespace) else {
            out.push(r.error(
                Code::UnknownHost,
                &dat().key("host"),
                format!("unknown destination host {host:?}: no ServiceEntry or Kubernetes Service defines it"),
                &unknown_host_hint(host, registry),
            ));
            ok = false;
            continue;
        };
        let Some(svc) = registry.services.get(&canonical) else {
            ok = false;
            continue;
        };
        let port = match dd.port.as_ref().and_then(|p| p.number) {
            Some(n) if svc.ports.iter().any(|p| p.number == n) => n,
            Some(n) => {
                let have: Vec<String> = svc.ports.iter().map(|p| p.number.to_string()).collect();
                out.push(r.error(
                    Code::UnknownPort,
                    &dat().key("port").key("number"),
                    format!("host {host:?} has no port {n}"),
                    &format!("its ports: {}", have.join(", ")),
                ));
                ok = false;
                continue;
            }
            None => match svc.ports.as_slice() {
                [only] => only.number,
                many if many.iter().any(|p| Some(p.number) == listener_port) => {
                    listener_port.unwrap_or_default()
                }
                // Checking destinations without a listener: the port is chosen per listener.
                [first, ..] if listener_port.is_none() => first.number,
                _ => {
                    out.push(r.error(
                        Code::UnknownPort,
                        &dat(),
                        format!("host {host:?} has several ports; which one?"),
                        "set `port: {number: ...}` on the destination",
                    ));
                    ok = false;
                    continue;
                }
            },
        };
        let subset = dd.subset.as_deref().unwrap_or("");
        if !subset.is_empty() {
            let known = registry.subsets(&canonical);
            if !known.contains(&subset) {
                let hint = if registry.rules.contains_key(&canonical) {
                    // The full list beats a guess: subset names are short (v1, v3) and close.
                    format!("subsets of {canonical:?}: {}", known.join(", "))
                } else {
                    format!(
                        "add a DestinationRule for host {canonical:?} defining subset {subset:?}"
                    )
                };
                out.push(r.error(
                    Code::UnknownSubset,
                    &dat().key("subset"),
                    format!("unknown subset {subset:?} of host {host:?}"),
                    &hint,
                ));
                ok = false;
                continue;
            }
        }
        let weight = dest.weight.unwrap_or(0).clamp(0, i64::from(u32::MAX));
        members.push((
            cluster_name(port, subset, &canonical),
            u32::try_from(weight).unwrap_or(0),
        ));
    }
    if !ok {
        return None;
    }
    match members.as_slice() {
        [] => None,
        [(cluster, _)] => Some(Target::Cluster(cluster.clone())),
        _ => Some(Target::Split(members)),
    }
}

/// Istio's retry policy for a route that sets no `retries` (pilot's `DefaultRetryPolicy`: 2
/// attempts on connect-failure, refused-stream, unavailable, cancelled and 503, skipping hosts
/// already tried).
fn istio_default_retries() -> crate::input::istio::HttpRetry {
    crate::input::istio::HttpRetry {
        attempts: Some(2),
        ..Default::default()
    }
}

/// The native extras of a rule, resolved: mirrors to clusters (unknown ones reported), the
/// destinations' consistent-hash keys, rewrites, redirects, headers and CORS in the model's
/// own types.
#[allow(clippy::too_many_arguments)]
fn native_extras(
    registry: &Registry<'_>,
    mesh: &Mesh,
    r: &Resource,
    at: &FieldPath,
    h: &crate::input::istio::HttpRoute,
    target: &Target,
    listener_port: u32,
    out: &mut Vec<Diagnostic>,
) -> crate::model::native::RouteExtras {
    let clusters: Vec<String> = target.clusters().map(str::to_owned).collect();
    let resolve = |dat: &FieldPath, d: &crate::input::istio::Destination| {
        let single = crate::input::istio::HttpRoute {
            route: vec![crate::input::istio::HttpRouteDestination {
                destination: Some(d.clone()),
                ..Default::default()
            }],
            ..Default::default()
        };
        // Reported at `<mirror>.route[0].destination`: strip that suffix back off.
        let mut found = Vec::new();
        let t = resolve_target(registry, r, dat, &single, Some(listener_port), &mut found);
        let prefix = dat.key("route").index(0).key("destination");
        for mut diag in found {
            if let Some(rest) = diag.path.0.get(prefix.0.len()..)
                && diag.path.0.starts_with(&prefix.0)
            {
                diag.path = FieldPath(dat.0.iter().chain(rest).cloned().collect());
            }
            out.push(diag);
        }
        match t {
            Some(Target::Cluster(c)) => Some(c),
            _ => None,
        }
    };
    let hash_of = |cluster: &str| {
        mesh.clusters
            .get(cluster)
            .and_then(crate::model::native::cluster_hash)
    };
    let mut extras =
        crate::model::native::route_extras(h, &clusters, resolve, hash_of, at, listener_port);
    match target {
        Target::Cluster(c) => {
            extras.passthrough_endpoints = mesh
                .clusters
                .get(c)
                .map(crate::model::native::passthrough_endpoints)
                .unwrap_or_default();
        }
        Target::Split(members) => {
            // The destination of a PASSTHROUGH cluster is named by the request, so it cannot
            // share a request with weighted clusters that are not.
            if let Some((c, _)) = members.iter().find(|(c, _)| {
                mesh.clusters
                    .get(c)
                    .is_some_and(crate::model::native::is_passthrough)
            }) {
                out.push(r.error(Code::InvalidField, &at.key("route"),
                    format!("{c} load-balances PASSTHROUGH: it cannot be one of weighted destinations"),
                    "route to it alone (the request names its endpoint), or drop PASSTHROUGH from its DestinationRule",
                ));
            }
        }
    }
    extras
}

fn retry_policy(r: &crate::input::istio::HttpRetry) -> RetryPolicy {
    let mut retry_on = Vec::new();
    let mut status_codes = Vec::new();
    // Istio's default conditions when `retryOn` is absent.
    let on = r
        .retry_on
        .as_deref()
        .unwrap_or("connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes");
    for cond in on.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        match cond.parse::<u32>() {
            Ok(code) => status_codes.push(code),
            Err(_) => retry_on.push(cond.to_owned()),
        }
    }
    if r.retry_on.is_none() {
        status_codes.push(503);
    }
    if !status_codes.is_empty() && !retry_on.iter().any(|c| c == "retriable-status-codes") {
        retry_on.push("retriable-status-codes".into());
    }
    RetryPolicy {
        attempts: u32::try_from(r.attempts.unwrap_or(0).max(0)).unwrap_or(u32::MAX),
        per_try_timeout: r
            .per_try_timeout
            .as_deref()
            .and_then(|t| sluice_core::duration::parse(t).ok()),
        retry_on,
        status_codes,
        ignore_previous_hosts: r.retry_ignore_previous_hosts.unwrap_or(true),
        remote_localities: r.retry_remote_localities == Some(true),
        backoff: r
            .backoff
            .as_deref()
            .and_then(|t| sluice_core::duration::parse(t).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_host_patterns() {
        assert!(server_host_matches("*", "a.example.com"));
        assert!(server_host_matches("*.example.com", "a.example.com"));
        assert!(!server_host_matches("*.example.com", "example.org"));
        assert!(server_host_matches("ns/a.example.com", "a.example.com"));
        assert!(!server_host_matches("b.example.com", "a.example.com"));
    }

    #[test]
    fn istio_cluster_names() {
        assert_eq!(
            cluster_name(9080, "v2", "reviews"),
            "outbound|9080|v2|reviews"
        );
        assert_eq!(cluster_name(80, "", "a"), "outbound|80||a");
    }
}
