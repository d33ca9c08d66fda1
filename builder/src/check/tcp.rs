//! Checks of the TCP and TLS routes, Gateway TCP/TLS servers and DestinationRule `tunnel`
//! ([`crate::input::tcp`]), per resource.

use crate::diag::{Code, Diagnostic};
use crate::input::istio::{GatewaySpec, server_host_matches};
use crate::input::parse::{Resource, Spec};
use crate::input::tcp::{RouteDestination, TunnelSettings, parse_subnet, protocol_of, tls_mode};
use crate::position::FieldPath;

/// Checks the `tcp` and `tls` routes of a VirtualService and the TCP and passthrough servers of
/// a Gateway, on their own (cross-resource checks are in [`crate::model::tcp::build`]).
pub fn check(r: &Resource, out: &mut Vec<Diagnostic>) {
    let spec = FieldPath::root().key("spec");
    match &r.spec {
        Spec::Gateway(g) => check_gateway(r, g, &spec, out),
        Spec::VirtualService(vs) => {
            for (i, t) in vs.tcp.iter().enumerate() {
                let at = spec.key("tcp").index(i);
                for (m, block) in t.matches.iter().enumerate() {
                    let mat = at.key("match").index(m);
                    check_l4(r, &mat, &block.destination_subnets, block.port, out);
                }
                check_destinations(r, &at, &t.route, out);
            }
            for (i, t) in vs.tls.iter().enumerate() {
                let at = spec.key("tls").index(i);
                if t.matches.is_empty() {
                    out.push(r.error(Code::InvalidTcpTls, &at,
                        "a `tls` route needs a `match` with `sniHosts`",
                        "add `match: [{sniHosts: [a.example.com]}]`: TLS passthrough routes by the client's SNI",
                    ));
                }
                for (m, block) in t.matches.iter().enumerate() {
                    let mat = at.key("match").index(m);
                    check_l4(r, &mat, &block.destination_subnets, block.port, out);
                    if block.sni_hosts.is_empty() {
                        out.push(r.error(
                            Code::InvalidTcpTls,
                            &mat,
                            "missing `sniHosts`",
                            "list the SNI names this rule takes, e.g. `sniHosts: [a.example.com]`",
                        ));
                    }
                    for (s, sni) in block.sni_hosts.iter().enumerate() {
                        if !vs.hosts.iter().any(|h| server_host_matches(h, sni)) {
                            out.push(r.error(Code::InvalidTcpTls, &mat.key("sniHosts").index(s),
                                format!("SNI host {sni:?} is not one of the VirtualService's hosts"),
                                &format!(
                                    "Istio takes only SNI names its `hosts` cover ({}): add it there, or fix the spelling",
                                    vs.hosts.join(", ")
                                ),
                            ));
                        }
                    }
                }
                check_destinations(r, &at, &t.route, out);
            }
        }
        Spec::DestinationRule(dr) => {
            let policies = dr
                .traffic_policy
                .iter()
                .map(|tp| (spec.key("trafficPolicy"), tp))
                .chain(dr.subsets.iter().enumerate().filter_map(|(i, s)| {
                    let at = spec.key("subsets").index(i).key("trafficPolicy");
                    s.traffic_policy.as_ref().map(|tp| (at, tp))
                }));
            for (at, tp) in policies {
                if let Some(t) = &tp.tunnel {
                    check_tunnel(r, &at.key("tunnel"), t, out);
                }
            }
        }
        _ => {}
    }
}

fn check_tunnel(r: &Resource, at: &FieldPath, t: &TunnelSettings, out: &mut Vec<Diagnostic>) {
    match t.protocol.as_deref() {
        None | Some("CONNECT" | "POST") => {}
        Some(other) => out.push(r.error(
            Code::InvalidTcpTls,
            &at.key("protocol"),
            format!("unknown tunnel protocol {other:?}"),
            "use CONNECT or POST",
        )),
    }
    if t.target_host.as_deref().is_none_or(str::is_empty) {
        out.push(r.error(
            Code::InvalidTcpTls,
            at,
            "missing `targetHost`",
            "name the host the proxy connects to, e.g. `targetHost: db.example.com`",
        ));
    }
    match t.target_port {
        None => out.push(r.error(
            Code::InvalidTcpTls,
            at,
            "missing `targetPort`",
            "give the port the proxy connects to, e.g. `targetPort: 5432`",
        )),
        Some(p) if !(1..=65535).contains(&p) => out.push(r.error(
            Code::InvalidTcpTls,
            &at.key("targetPort"),
            format!("port {p} is out of range"),
            "use 1-65535",
        )),
        Some(_) => {}
    }
}

fn check_gateway(r: &Resource, g: &GatewaySpec, spec: &FieldPath, out: &mut Vec<Diagnostic>) {
    for (i, s) in g.servers.iter().enumerate() {
        let at = spec.key("servers").index(i);
        let protocol = protocol_of(s.port.as_ref().and_then(|p| p.protocol.as_deref()));
        match tls_mode(s) {
            Some("AUTO_PASSTHROUGH") => out.push(r.error(Code::TargetCannotExpress, &at.key("tls").key("mode"),
                "TLS mode AUTO_PASSTHROUGH is not supported by the envoy target",
                "AUTO_PASSTHROUGH routes by Istio's SNI naming of clusters (outbound_.PORT_.SUBSET_.HOST), which only istiod's endpoints serve; use PASSTHROUGH with VirtualService `tls` routes",
            )),
            Some("PASSTHROUGH") if !matches!(protocol.as_str(), "HTTPS" | "TLS") => {
                out.push(r.error(Code::InvalidTcpTls, &at.key("tls").key("mode"),
                    format!("PASSTHROUGH on a {protocol} server"),
                    "TLS passthrough needs `protocol: TLS` (or HTTPS)",
                ));
            }
            Some("PASSTHROUGH") => {}
            // Checked (with the certificate files) when the listener is built.
            _ => {}
        }
    }
}

fn check_l4(
    r: &Resource,
    at: &FieldPath,
    subnets: &[String],
    port: Option<u32>,
    out: &mut Vec<Diagnostic>,
) {
    for (s, subnet) in subnets.iter().enumerate() {
        if let Err(e) = parse_subnet(subnet) {
            out.push(r.error(
                Code::InvalidTcpTls,
                &at.key("destinationSubnets").index(s),
                format!("invalid subnet {subnet:?}: {e}"),
                "use an IP address or CIDR, e.g. 10.0.0.0/24",
            ));
        }
    }
    if let Some(p) = port
        && !(1..=65535).contains(&p)
    {
        out.push(r.error(
            Code::InvalidTcpTls,
            &at.key("port"),
            format!("port {p} is out of range"),
            "use 1-65535",
        ));
    }
}

fn check_destinations(
    r: &Resource,
    at: &FieldPath,
    route: &[RouteDestination],
    out: &mut Vec<Diagnostic>,
) {
    if route.is_empty() {
        out.push(r.error(
            Code::InvalidTcpTls,
            at,
            "missing `route`",
            "add `route: [{destination: {host: ...}}]`",
        ));
    }
    let mut sum: i64 = 0;
    for (d, dest) in route.iter().enumerate() {
        let dat = at.key("route").index(d);
        if dest
            .destination
            .as_ref()
            .and_then(|dd| dd.host.as_deref())
            .is_none_or(str::is_empty)
        {
            out.push(r.error(
                Code::InvalidTcpTls,
                &dat,
                "missing `destination.host`",
                "add `destination: {host: ...}`",
            ));
        }
        match dest.weight {
            Some(w) if w < 0 => out.push(r.error(
                Code::InvalidWeights,
                &dat.key("weight"),
                format!("weight {w} is negative"),
                "weights are non-negative; they are shares of the total",
            )),
            Some(w) => sum = sum.saturating_add(w),
            None => {}
        }
    }
    if route.len() > 1 && sum == 0 && route.iter().all(|d| d.weight.is_none_or(|w| w >= 0)) {
        out.push(r.error(
            Code::InvalidWeights,
            &at.key("route"),
            "the weights are all zero (or missing), so no destination gets connections",
            "give each destination a `weight`, e.g. 90 and 10",
        ));
    }
    let weights: Vec<Option<i64>> = route.iter().map(|d| d.weight).collect();
    if let Some(d) = crate::check::validate::weights_not_100(r, &at.key("route"), &weights) {
        out.push(d);
    }
}
