//! The TCP and TLS side of Istio's traffic API: VirtualService `tcp` and `tls` routes on the
//! non-HTTP ports of services and gateways, Gateway `TLS` servers (passing TLS through, or
//! terminating it for `tcp` routes) and DestinationRule `tunnel`.
//!
//! As Istio's listener builder does (`pilot/pkg/networking/core`, TCP/TLS filter chains), a port
//! whose protocol is not HTTP gets a listener of filter chains, each ending in
//! `envoy.filters.network.tcp_proxy` to one cluster or to `weighted_clusters`. A chain is chosen
//! by Envoy's `filter_chain_match`: `server_names` (a `tls` route's `sniHosts`, read from the
//! client hello by the `tls_inspector` listener filter, the TLS itself passing through untouched)
//! and `prefix_ranges` (`destinationSubnets`). `match.port` selects the listener. A service's TCP
//! port that no VirtualService routes gets Istio's default chain to the service's cluster (for a
//! `TLS` port, matched on the service host as SNI). A terminating `TLS` server's chain carries
//! its `DownstreamTlsContext`; a destination whose DestinationRule sets `tunnel` gets the
//! tcp_proxy's `tunneling_config` (CONNECT or POST through that HTTP proxy).
//!
//! One Envoy binds a port once and sees no original destination address, so connections on a
//! port are told apart only by SNI and destination subnet: two services whose connections cannot
//! be told apart on a port are an error, not a silent choice.

use std::collections::{BTreeMap, BTreeSet};

use crate::diag::{Code, Diagnostic, Severity};
use crate::input::parse::{Kind, Resource, Spec};
pub use crate::input::tcp::{L4Route, RouteDestination, TcpRoute, TlsRoute};
use crate::input::tcp::{
    ServerKind, TCP_PROTOCOLS, is_passthrough_server, parse_subnet, protocol_of, server_kind,
};
use crate::model::credentials::CredentialSource;
use crate::model::{Listener, Mesh, Registry, Service, Target, cluster_name, server_host_matches};
use crate::position::FieldPath;

/// A resolved tunnel: Envoy's `tunneling_config`.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// `targetHost:targetPort` (IPv6 in brackets), the CONNECT authority or POST Host.
    pub hostname: String,
    /// `protocol: POST`.
    pub use_post: bool,
}

/// One filter chain of a TCP listener: which connections it takes and where they go.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct TcpChain {
    /// `<namespace>.<vs>.tcp.<i>` / `.tls.<i>`, or the cluster name of a default chain: the
    /// filter chain's name.
    pub name: String,
    /// The tcp_proxy `stat_prefix`, as Istio names it: the cluster of a single destination,
    /// `<vs>.<namespace>` for weighted clusters (Envoy counts under `tcp.<stat_prefix>.`).
    pub stat_prefix: String,
    /// Hash connections by client IP (`hash_policy: source_ip`): the destination's
    /// DestinationRule `consistentHash.useSourceIp`, as Istio's `maybeSetHashPolicy`.
    pub hash_source_ip: bool,
    /// SNI values (`filter_chain_match.server_names`); empty: any SNI, or none.
    pub server_names: Vec<String>,
    /// Destination address prefixes and lengths (`filter_chain_match.prefix_ranges`).
    pub destination_subnets: Vec<(String, u32)>,
    /// One cluster, or weighted clusters (weights > 0).
    pub target: Target,
    /// Tunnel the connection through the (single) destination, an HTTP proxy.
    pub tunnel: Option<Tunnel>,
    /// Terminate TLS on this chain (a Gateway `TLS` server in SIMPLE or MUTUAL mode).
    pub tls: Option<crate::model::native::ServerTls>,
}

/// The tunnel of a destination as Istio picks it: a subset's own `tunnel` when the destination
/// names a subset (the host's is not inherited), else the host's.
fn tunnel_of(
    dr: Option<&crate::input::istio::DestinationRuleSpec>,
    subset: &str,
) -> Option<Tunnel> {
    let dr = dr?;
    let settings = if subset.is_empty() {
        dr.traffic_policy.as_ref()?.tunnel.as_ref()?
    } else {
        dr.subsets
            .iter()
            .find(|s| s.name.as_deref() == Some(subset))?
            .traffic_policy
            .as_ref()?
            .tunnel
            .as_ref()?
    };
    let host = settings.target_host.as_deref()?;
    let port = settings.target_port?;
    let hostname = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Some(Tunnel {
        hostname,
        use_post: settings.protocol.as_deref() == Some("POST"),
    })
}

/// Who put a chain on a port, for conflict reports.
struct Owner<'a> {
    resource: &'a Resource,
    at: FieldPath,
}

/// Chains of one port, in order, with their owners.
#[derive(Default)]
struct PortChains<'a> {
    chains: Vec<(TcpChain, Owner<'a>)>,
}

impl<'a> PortChains<'a> {
    /// Adds `chain` unless an earlier chain takes the same connections: Envoy refuses two equal
    /// matches, and Istio's first rule wins. Same resource: a warning (a rule that never
    /// matches); another resource: an error (two owners of the same connections).
    fn push(&mut self, port: u32, chain: TcpChain, owner: Owner<'a>, out: &mut Vec<Diagnostic>) {
        let same = |c: &TcpChain| {
            c.server_names == chain.server_names
                && c.destination_subnets == chain.destination_subnets
        };
        if let Some((first, by)) = self.chains.iter().find(|(c, _)| same(c)) {
            let what = if chain.server_names.is_empty() {
                "every connection".to_owned()
            } else {
                format!("SNI {}", chain.server_names.join(", "))
            };
            if std::ptr::eq(by.resource, owner.resource) {
                out.push(owner.resource.diag(
                    Code::Unreachable,
                    Severity::Warning,
                    &owner.at,
                    format!(
                        "never matches on port {port}: {} above already takes {what}",
                        first.name
                    ),
                    Some("give the rule a narrower `match`, or remove it".into()),
                ));
            } else {
                out.push(owner.resource.error(Code::Conflict, &owner.at,
                    format!(
                        "port {port}: {what} is already routed by {} ({})",
                        by.resource.id(),
                        first.name
                    ),
                    "one Envoy port tells TCP connections apart only by SNI and destination subnet: give the services different ports, or route them by `tls` sniHosts",
                ));
            }
            return;
        }
        // Chain names are unique per listener: a rule on several servers of one port gets one
        // chain per server.
        let mut chain = chain;
        let base = chain.name.clone();
        let mut n = 1;
        while self.chains.iter().any(|(c, _)| c.name == chain.name) {
            chain.name = format!("{base}.{n}");
            n += 1;
        }
        self.chains.push((chain, owner));
    }
}

/// Builds the TCP listeners of `mesh` (after its clusters and HTTP listeners) from the model's
/// one `registry` (hosts, their ports and protocols, subsets, DestinationRules, Gateways): a
/// TCP port's listener replaces the HTTP default routes the HTTP side gave it.
pub(crate) fn build(
    resources: &[Resource],
    registry: &Registry<'_>,
    credentials: Option<&dyn CredentialSource>,
    mesh: &mut Mesh,
    out: &mut Vec<Diagnostic>,
) {
    let services = tcp_services(registry);
    let gateways = &registry.gateways;
    let mut ports: BTreeMap<u32, PortChains<'_>> = BTreeMap::new();
    // Ports served as HTTP: HTTP gateway servers and service ports of an HTTP protocol.
    let mut http_ports: BTreeSet<u32> = BTreeSet::new();
    for (_, g) in gateways.values() {
        for s in &g.servers {
            let protocol = protocol_of(s.port.as_ref().and_then(|p| p.protocol.as_deref()));
            if crate::check::validate::HTTP_PROTOCOLS.contains(&protocol.as_str())
                && !is_passthrough_server(s)
                && let Some(number) = s.port.as_ref().and_then(|p| p.number)
            {
                http_ports.insert(number);
            }
        }
    }
    for (_, ports) in services.values() {
        for (&number, (_, protocol)) in ports {
            if !TCP_PROTOCOLS.contains(protocol) {
                http_ports.insert(number);
            }
        }
    }
    // Gateway ports that take TCP, and what each serves; the certificates of terminating
    // servers by (gateway, server index).
    let mut gateway_tcp_ports: BTreeMap<u32, ServerKind> = BTreeMap::new();
    let mut terminating: BTreeMap<(&(String, String), usize), crate::model::native::ServerTls> =
        BTreeMap::new();
    for (key, (r, g)) in gateways {
        for (i, s) in g.servers.iter().enumerate() {
            let (Some(kind), Some(number)) =
                (server_kind(s), s.port.as_ref().and_then(|p| p.number))
            else {
                continue;
            };
            if kind == ServerKind::Terminate {
                let at = FieldPath::root().key("spec").key("servers").index(i);
                // The HTTPS rules: certificate files (or a `credentialName` secret read from
                // `--credentials-dir`), client CA for MUTUAL, versions, ciphers.
                let tls = match (credentials, s.tls.as_ref()) {
                    (Some(credentials), Some(tls)) => {
                        match crate::model::resolve_credential(r, &at, tls, credentials, out) {
                            Some(tls) => Some(tls),
                            None => continue,
                        }
                    }
                    (_, tls) => tls.cloned(),
                };
                match crate::model::native::server_tls(r, &at, "HTTPS", tls.as_ref(), out) {
                    Some(crate::model::native::ServerTlsUse::Terminate(tls)) => {
                        terminating.insert((key, i), tls);
                    }
                    _ => continue,
                }
            }
            if http_ports.contains(&number) {
                out.push(
                    r.error(Code::InvalidTcpTls, &FieldPath::root()
                            .key("spec")
                            .key("servers")
                            .index(i)
                            .key("port"),
                        format!("port {number} is served both as HTTP and as TCP"),
                        "one Envoy binds a port once, with one protocol: give the TCP server another port",
                    ),
                );
                continue;
            }
            // SNI-matched servers (passthrough, terminating) share a port; plain TCP does not.
            let sni = |k: ServerKind| k != ServerKind::Tcp;
            match gateway_tcp_ports.get(&number) {
                Some(&other) if other != kind && !(sni(other) && sni(kind)) => out.push(
                    r.error(
                        Code::InvalidTcpTls,
                        &FieldPath::root()
                            .key("spec")
                            .key("servers")
                            .index(i)
                            .key("port"),
                        format!(
                            "port {number} is served both as {} and as {}",
                            other.describe(),
                            kind.describe()
                        ),
                        "one Envoy binds a port once: give the servers different ports",
                    ),
                ),
                _ => {
                    gateway_tcp_ports.entry(number).or_insert(kind);
                }
            }
        }
    }
    // Mesh TCP ports: every service port of a TCP protocol.
    let mut mesh_tcp_ports: BTreeSet<u32> = BTreeSet::new();
    for (svc, ports) in services.values() {
        for (&number, (pi, protocol)) in ports {
            if !TCP_PROTOCOLS.contains(protocol) {
                continue;
            }
            // A gateway's SNI-matched servers and a service's TCP port would share one listener,
            // the service's chain taking every connection without a known SNI: refused.
            if http_ports.contains(&number)
                || gateway_tcp_ports
                    .get(&number)
                    .is_some_and(|k| *k != ServerKind::Tcp)
            {
                out.push(svc.resource.error(Code::Conflict, &FieldPath::root().key("spec").key("ports").index(*pi).key("protocol"),
                    format!("port {number} is {protocol} here, but an HTTP or TLS port of another service or gateway server"),
                    "one Envoy binds a port once, with one protocol: give this service another port number",
                ));
                continue;
            }
            mesh_tcp_ports.insert(number);
        }
    }

    // VirtualService routes.
    let mut routed: BTreeSet<(u32, String)> = BTreeSet::new(); // (port, service host)
    for r in resources {
        let Spec::VirtualService(vs) = &r.spec else {
            continue;
        };
        if vs.tcp.is_empty() && vs.tls.is_empty() {
            continue;
        }
        let refs: Vec<String> = if vs.gateways.is_empty() {
            vec!["mesh".into()]
        } else {
            vs.gateways.clone()
        };
        // The listeners (mesh ports, gateway servers) the routes land on.
        let mut listeners: Vec<Binding> = Vec::new();
        for gref in &refs {
            if gref == "mesh" {
                for host in &vs.hosts {
                    let Some(canonical) = registry.resolve(host, &r.namespace) else {
                        continue;
                    };
                    let Some((_, ports)) = services.get(canonical.as_str()) else {
                        continue;
                    };
                    for (&number, (_, protocol)) in ports {
                        if !mesh_tcp_ports.contains(&number) {
                            continue;
                        }
                        let kind = if *protocol == "TLS" {
                            ServerKind::Passthrough
                        } else {
                            ServerKind::Tcp
                        };
                        routed.insert((number, canonical.clone()));
                        listeners.push(Binding {
                            port: number,
                            server_hosts: None,
                            kind,
                            tls: None,
                        });
                    }
                }
                continue;
            }
            let key = match gref.split_once('/') {
                Some((ns, name)) => (ns.to_owned(), name.to_owned()),
                None => (r.namespace.clone(), gref.clone()),
            };
            // An unknown gateway is reported by the HTTP side.
            let Some((_, g)) = gateways.get(&key) else {
                continue;
            };
            for (i, s) in g.servers.iter().enumerate() {
                let (Some(kind), Some(number)) =
                    (server_kind(s), s.port.as_ref().and_then(|p| p.number))
                else {
                    continue;
                };
                let tls = terminating.get(&(&key, i)).cloned();
                if kind == ServerKind::Terminate && tls.is_none() {
                    continue; // its certificate problem is reported above
                }
                if vs
                    .hosts
                    .iter()
                    .any(|h| s.hosts.iter().any(|p| server_host_matches(p, h)))
                {
                    let hosts = s
                        .hosts
                        .iter()
                        .map(|h| h.rsplit('/').next().unwrap_or(h).to_owned())
                        .collect();
                    listeners.push(Binding {
                        port: number,
                        server_hosts: Some(hosts),
                        kind,
                        tls,
                    });
                }
            }
        }
        // One binding per port and server hosts (servers of one port with other hosts keep
        // theirs: their SNI tells them apart).
        listeners.sort_by(|a, b| (a.port, &a.server_hosts).cmp(&(b.port, &b.server_hosts)));
        listeners.dedup_by(|a, b| a.port == b.port && a.server_hosts == b.server_hosts);
        let bound = !listeners.is_empty();
        let spec = FieldPath::root().key("spec");
        let lookup = Lookup { registry, mesh };
        let tcp_rules: Vec<Rule<'_>> = vs
            .tcp
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let ms = t
                    .matches
                    .iter()
                    .map(|m| Match {
                        sni: Vec::new(),
                        subnets: m.destination_subnets.clone(),
                        port: m.port,
                    })
                    .collect();
                (
                    spec.key("tcp").index(i),
                    format!("tcp.{i}"),
                    ms,
                    t.route.as_slice(),
                )
            })
            .collect();
        let tls_rules: Vec<Rule<'_>> = vs
            .tls
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let ms = t
                    .matches
                    .iter()
                    .map(|m| Match {
                        sni: m.sni_hosts.clone(),
                        subnets: m.destination_subnets.clone(),
                        port: m.port,
                    })
                    .collect();
                (
                    spec.key("tls").index(i),
                    format!("tls.{i}"),
                    ms,
                    t.route.as_slice(),
                )
            })
            .collect();
        for Binding {
            port,
            server_hosts,
            kind,
            tls,
        } in &listeners
        {
            // Istio: a gateway passthrough server takes the `tls` routes; a mesh TLS port the
            // `tls` routes, then the `tcp` ones; a TCP port the `tcp` routes.
            let rules: Vec<&Rule<'_>> = match (kind, server_hosts) {
                (ServerKind::Tcp | ServerKind::Terminate, _) => tcp_rules.iter().collect(),
                (ServerKind::Passthrough, Some(_)) => tls_rules.iter().collect(),
                (ServerKind::Passthrough, None) => tls_rules.iter().chain(&tcp_rules).collect(),
            };
            for (at, suffix, matches, route) in rules {
                let Some((target, tunnel)) = resolve_target(r, at, route, *port, &lookup, out)
                else {
                    continue;
                };
                let name = format!("{}.{}.{suffix}", r.namespace, r.name);
                let stat_prefix = match &target {
                    Target::Cluster(cluster) => cluster.clone(),
                    Target::Split(_) => format!("{}.{}", r.name, r.namespace),
                };
                let hash_source_ip = hashes_source_ip(&target, mesh);
                let any = [Match::default()];
                let blocks = if matches.is_empty() {
                    &any[..]
                } else {
                    &matches[..]
                };
                for m in blocks {
                    if m.port.is_some_and(|p| p != *port) {
                        continue;
                    }
                    // On a gateway, only the SNI names its server exposes (Istio's intersection);
                    // a terminating server's chain takes its hosts (Istio's server SNI hosts).
                    let mut server_names: Vec<String> = if *kind == ServerKind::Terminate {
                        server_hosts.clone().unwrap_or_default()
                    } else {
                        m.sni
                            .iter()
                            .flat_map(|sni| narrow(sni, server_hosts.as_deref()))
                            .collect()
                    };
                    server_names.sort();
                    server_names.dedup();
                    if !m.sni.is_empty() && server_names.is_empty() {
                        continue;
                    }
                    if server_names.iter().any(|n| n == "*") {
                        server_names.clear();
                    }
                    let mut destination_subnets: Vec<(String, u32)> = m
                        .subnets
                        .iter()
                        .filter_map(|s| parse_subnet(s).ok())
                        .collect();
                    destination_subnets.sort();
                    ports.entry(*port).or_default().push(
                        *port,
                        TcpChain {
                            name: name.clone(),
                            stat_prefix: stat_prefix.clone(),
                            hash_source_ip,
                            server_names,
                            destination_subnets,
                            target: target.clone(),
                            tunnel: tunnel.clone(),
                            tls: tls.clone(),
                        },
                        Owner {
                            resource: r,
                            at: at.clone(),
                        },
                        out,
                    );
                }
            }
        }
        if !bound {
            let field = if vs.tcp.is_empty() { "tls" } else { "tcp" };
            out.push(r.diag(Code::Unreachable, Severity::Warning,
                &spec.key(field),
                "these routes apply to no TCP port: no host of this VirtualService has a TCP or TLS port, or a TCP or passthrough server of its gateways",
                Some("give the ServiceEntry port `protocol: TCP` (TLS for `tls` routes), or bind the VirtualService to a Gateway server of that protocol".into()),
            ));
        }
    }

    // Istio's default chain for every service TCP port no VirtualService routes.
    for (host, (svc, svc_ports)) in &services {
        for (&number, (pi, protocol)) in svc_ports {
            if !mesh_tcp_ports.contains(&number) || routed.contains(&(number, (*host).to_owned())) {
                continue;
            }
            let cluster = cluster_name(number, "", host);
            let target = Target::Cluster(cluster.clone());
            let hash_source_ip = hashes_source_ip(&target, mesh);
            let server_names = if *protocol == "TLS" && !host.contains('*') {
                vec![(*host).to_owned()]
            } else {
                Vec::new()
            };
            ports.entry(number).or_default().push(
                number,
                TcpChain {
                    name: cluster.clone(),
                    stat_prefix: cluster,
                    hash_source_ip,
                    server_names,
                    destination_subnets: Vec::new(),
                    target,
                    tunnel: tunnel_of(registry.rules.get(*host).map(|(_, dr)| *dr), ""),
                    tls: None,
                },
                Owner {
                    resource: svc.resource,
                    at: FieldPath::root().key("spec").key("ports").index(*pi),
                },
                out,
            );
        }
    }

    for (port, chains) in ports {
        let tcp_chains: Vec<TcpChain> = chains.chains.into_iter().map(|(c, _)| c).collect();
        mesh.listeners.insert(
            port,
            Listener {
                port,
                tcp_chains,
                ..Listener::default()
            },
        );
    }
    // A mesh TCP port nothing routes keeps no HTTP listener either.
    for port in &mesh_tcp_ports {
        if mesh
            .listeners
            .get(port)
            .is_some_and(|l| l.tcp_chains.is_empty())
        {
            mesh.listeners.remove(port);
        }
    }
}

/// A listener a VirtualService's `tcp`/`tls` routes land on.
struct Binding {
    port: u32,
    /// The gateway server's hosts (`ns/` dropped); `None` on the mesh.
    server_hosts: Option<Vec<String>>,
    kind: ServerKind,
    /// The certificate of a terminating server.
    tls: Option<crate::model::native::ServerTls>,
}

/// A `tcp` or `tls` rule in one shape: its field path, name suffix, match blocks, destinations.
type Rule<'a> = (FieldPath, String, Vec<Match>, &'a [RouteDestination]);

/// A `tcp` or `tls` match block in one shape.
#[derive(serde::Serialize, Default)]
struct Match {
    sni: Vec<String>,
    subnets: Vec<String>,
    port: Option<u32>,
}

/// The SNI names of `sni` a gateway server of `server_hosts` serves, as Istio intersects them:
/// `sni` itself when a server host covers it, else the server hosts a wildcard `sni` covers
/// (`*.example.com` on a server of `a.example.com` takes `a.example.com`); on the mesh
/// (`None`), `sni` itself.
fn narrow(sni: &str, server_hosts: Option<&[String]>) -> Vec<String> {
    let Some(hosts) = server_hosts else {
        return vec![sni.to_owned()];
    };
    if hosts.iter().any(|h| covers(h, sni)) {
        return vec![sni.to_owned()];
    }
    hosts.iter().filter(|h| covers(sni, h)).cloned().collect()
}

/// Whether host pattern `pattern` (`*`, `*.suffix`, exact) takes every name `host` (a name or a
/// wildcard) stands for.
fn covers(pattern: &str, host: &str) -> bool {
    if pattern == "*" || pattern == host {
        return true;
    }
    match (pattern.strip_prefix('*'), host.strip_prefix('*')) {
        // `*.example.com` covers `a.example.com` and `*.a.example.com`, not `*.com`.
        (Some(suffix), _) => host.ends_with(suffix) && host.len() > suffix.len(),
        (None, _) => false,
    }
}

/// Whether a single-destination target's cluster hashes on the client IP (its merged policy:
/// a subset's `loadBalancer` replaces the host's, as in Istio's `maybeSetHashPolicy`).
fn hashes_source_ip(target: &Target, mesh: &Mesh) -> bool {
    let Target::Cluster(cluster) = target else {
        return false;
    };
    mesh.clusters
        .get(cluster)
        .and_then(crate::model::native::cluster_hash)
        == Some(crate::model::policy::HashKey::SourceIp)
}

/// What destinations resolve against: the registry (hosts, their ports and subsets, the
/// DestinationRules' tunnels) and the clusters.
struct Lookup<'a> {
    registry: &'a Registry<'a>,
    mesh: &'a Mesh,
}

/// The clusters of a rule's destinations on listener `port`: one, or several with weights > 0.
fn resolve_target(
    r: &Resource,
    at: &FieldPath,
    route: &[RouteDestination],
    port: u32,
    lookup: &Lookup<'_>,
    out: &mut Vec<Diagnostic>,
) -> Option<(Target, Option<Tunnel>)> {
    let Lookup { registry, mesh } = lookup;
    let mut members = Vec::new();
    for (d, dest) in route.iter().enumerate() {
        let dat = at.key("route").index(d).key("destination");
        let dd = dest.destination.as_ref()?;
        let host = dd.host.as_deref()?;
        let Some(canonical) = registry.resolve(host, &r.namespace) else {
            out.push(r.error(
                Code::UnknownHost,
                &dat.key("host"),
                format!("unknown destination host {host:?}: no ServiceEntry defines it"),
                "add a ServiceEntry with this host, its ports and endpoints",
            ));
            return None;
        };
        let svc_ports: BTreeSet<u32> = registry
            .services
            .get(&canonical)
            .map(|svc| svc.ports.iter().map(|p| p.number).collect())
            .unwrap_or_default();
        let number = match dd.port.as_ref().and_then(|p| p.number) {
            Some(n) if svc_ports.contains(&n) => n,
            Some(n) => {
                let have: Vec<String> = svc_ports.iter().map(u32::to_string).collect();
                out.push(r.error(
                    Code::UnknownPort,
                    &dat.key("port").key("number"),
                    format!("host {host:?} has no port {n}"),
                    &format!("its ports: {}", have.join(", ")),
                ));
                return None;
            }
            None if svc_ports.len() == 1 => svc_ports.first().copied()?,
            None if svc_ports.contains(&port) => port,
            None => {
                out.push(r.error(
                    Code::UnknownPort,
                    &dat,
                    format!("host {host:?} has several ports; which one?"),
                    "set `port: {number: ...}` on the destination",
                ));
                return None;
            }
        };
        let subset = dd.subset.as_deref().unwrap_or("");
        let cluster = cluster_name(number, subset, &canonical);
        if !mesh.clusters.contains_key(&cluster) {
            let known = registry.subsets(&canonical);
            out.push(r.error(
                Code::UnknownSubset,
                &dat.key("subset"),
                format!("unknown subset {subset:?} of host {host:?}"),
                &if known.is_empty() {
                    format!(
                        "add a DestinationRule for host {canonical:?} defining subset {subset:?}"
                    )
                } else {
                    format!("subsets of {canonical:?}: {}", known.join(", "))
                },
            ));
            return None;
        }
        let weight =
            u32::try_from(dest.weight.unwrap_or(0).clamp(0, i64::from(u32::MAX))).unwrap_or(0);
        let tunnel = tunnel_of(registry.rules.get(&canonical).map(|(_, dr)| *dr), subset);
        members.push((cluster, weight, tunnel));
    }
    if members.len() > 1 {
        // Istio drops destinations of weight 0 (Envoy's weighted_clusters wants a total > 0).
        members.retain(|(_, w, _)| *w > 0);
    }
    match members.as_slice() {
        [] => None,
        [(cluster, _, tunnel)] => Some((Target::Cluster(cluster.clone()), tunnel.clone())),
        many => {
            if let Some((cluster, _, _)) = many.iter().find(|(_, _, t)| t.is_some()) {
                // Envoy tunnels a tcp_proxy, not one of its weighted clusters; Istio would drop
                // the tunnel silently here.
                out.push(r.error(Code::InvalidTcpTls, &at.key("route"),
                    format!("{cluster} tunnels (its DestinationRule sets `tunnel`): it cannot be one of weighted destinations"),
                    "route to the tunnelling destination alone, or drop `tunnel` from its DestinationRule",
                ));
                return None;
            }
            let split = many.iter().map(|(c, w, _)| (c.clone(), *w)).collect();
            Some((Target::Split(split), None))
        }
    }
}

/// A service's ports by number: (index in `spec.ports`, upper-case protocol).
type PortProtocols<'r> = BTreeMap<u32, (usize, &'r str)>;

/// The ServiceEntry hosts of the registry, each with its ports by number: (index in
/// `spec.ports`, upper-case protocol). A port number listed twice keeps its last entry (the
/// duplicate is reported by the checks). Kubernetes Services are left to the HTTP side: their
/// ports carry no `protocol` the TCP side reads.
fn tcp_services<'r, 'a>(
    registry: &'r Registry<'a>,
) -> BTreeMap<&'r str, (&'r Service<'a>, PortProtocols<'r>)> {
    registry
        .services
        .iter()
        .filter(|(_, svc)| svc.resource.kind == Kind::ServiceEntry)
        .map(|(host, svc)| {
            let ports = svc
                .ports
                .iter()
                .map(|p| (p.number, (p.index, p.protocol.as_str())))
                .collect();
            (host.as_str(), (svc, ports))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_names_are_the_intersection_with_the_server_hosts() {
        let hosts = |h: &[&str]| h.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let any = hosts(&["*"]);
        assert_eq!(narrow("*.example.com", Some(&any)), ["*.example.com"]);
        assert_eq!(narrow("a.example.com", Some(&any)), ["a.example.com"]);
        let wild = hosts(&["*.example.com"]);
        assert_eq!(narrow("a.example.com", Some(&wild)), ["a.example.com"]);
        assert_eq!(narrow("*.a.example.com", Some(&wild)), ["*.a.example.com"]);
        let two = hosts(&["a.example.com", "b.other.com"]);
        assert_eq!(narrow("*.example.com", Some(&two)), ["a.example.com"]);
        assert!(narrow("c.example.com", Some(&two)).is_empty());
        assert_eq!(narrow("*.com", Some(&wild)), ["*.example.com"]);
        assert_eq!(narrow("x.org", None), ["x.org"]);
    }
}
