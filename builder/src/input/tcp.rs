//! The Istio types of the TCP and TLS side of the traffic API: VirtualService `tcp` and `tls`
//! routes, DestinationRule `tunnel`, and the reading of a Gateway server's protocol and TLS
//! mode. Checks are [`crate::check::tcp`], the filter chains [`crate::model::tcp`], their Envoy
//! listeners [`crate::xds::tcp`].

use std::net::IpAddr;

use serde::Deserialize;

use crate::input::istio::{Destination, Server};

/// Port protocols Istio proxies as opaque TCP (its `IsTCP` protocols; MONGO, MYSQL and REDIS
/// without their protocol filters, as Istio's default). `HTTPS` service ports stay HTTP in
/// sluice (it has no traffic capture to sniff them); an `HTTPS` gateway server is TCP only in
/// TLS `PASSTHROUGH` mode.
pub const TCP_PROTOCOLS: &[&str] = &["TCP", "TLS", "MONGO", "MYSQL", "REDIS"];

/// `VirtualService.spec.tcp[]`: conditions are [`L4MatchAttributes`]; none matches every
/// connection.
pub type TcpRoute = L4Route<L4MatchAttributes>;

/// `VirtualService.spec.tls[]`: conditions are [`TlsMatchAttributes`]; at least one, each naming
/// `sniHosts`.
pub type TlsRoute = L4Route<TlsMatchAttributes>;

/// A `tcp[]` or `tls[]` route of a VirtualService: the two differ only in their match type.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L4Route<M> {
    /// Conditions, OR-ed.
    #[serde(default, rename = "match")]
    pub matches: Vec<M>,
    /// Destinations with weights.
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// `L4MatchAttributes` (`sourceLabels`, `sourceNamespace` and `gateways` are refused).
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L4MatchAttributes {
    /// Destination IPs or CIDRs (`10.0.0.1`, `10.0.0.0/24`): Envoy's `prefix_ranges`.
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    /// The port the connection came in on (selects the listener).
    pub port: Option<u32>,
}

/// `TLSMatchAttributes` (`sourceLabels`, `sourceNamespace` and `gateways` are refused).
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsMatchAttributes {
    /// SNI values (`a.example.com`, `*.example.com`): Envoy's `server_names`.
    #[serde(default)]
    pub sni_hosts: Vec<String>,
    /// Destination IPs or CIDRs.
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    /// The port the connection came in on (selects the listener).
    pub port: Option<u32>,
}

/// `RouteDestination` of a `tcp` or `tls` route.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteDestination {
    /// Where to send.
    pub destination: Option<Destination>,
    /// Relative weight; 0 or unset among several destinations gets no connections.
    pub weight: Option<i64>,
}

/// DestinationRule `trafficPolicy.tunnel`: the destination is an HTTP proxy, and a `tcp`/`tls`
/// route's connection is carried in a CONNECT (or POST) request to `targetHost:targetPort`.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TunnelSettings {
    /// `CONNECT` (default) or `POST`.
    pub protocol: Option<String>,
    /// Host the proxy connects to.
    pub target_host: Option<String>,
    /// Port the proxy connects to.
    pub target_port: Option<u32>,
}

/// Whether a Gateway server passes TLS through (`tls.mode` PASSTHROUGH or AUTO_PASSTHROUGH):
/// such a server is routed by SNI, never by HTTP routes.
pub fn is_passthrough_server(s: &Server) -> bool {
    matches!(tls_mode(s), Some("PASSTHROUGH" | "AUTO_PASSTHROUGH"))
}

/// The server's `tls.mode`, if it sets one.
pub(crate) fn tls_mode(s: &Server) -> Option<&str> {
    s.tls.as_ref()?.get("mode")?.as_str()
}

/// A port protocol upper-cased as Istio compares it (`""` when unset).
pub(crate) fn protocol_of(p: Option<&str>) -> String {
    p.unwrap_or("").to_ascii_uppercase()
}

/// Whether a Gateway server protocol is one the TCP side serves (the HTTP side refuses the rest).
pub fn is_tcp_server_protocol(protocol: &str) -> bool {
    TCP_PROTOCOLS.contains(&protocol.to_ascii_uppercase().as_str())
}

/// What a Gateway server routes with.
#[derive(serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerKind {
    /// VirtualService `tcp` routes.
    Tcp,
    /// VirtualService `tls` routes, by SNI, TLS untouched.
    Passthrough,
    /// A `TLS` server terminating TLS (SIMPLE, MUTUAL): VirtualService `tcp` routes on the
    /// decrypted stream, the chain matched on the server's hosts as SNI.
    Terminate,
}

impl ServerKind {
    /// How a diagnostic names the kind.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            ServerKind::Tcp => "plain TCP",
            ServerKind::Passthrough => "TLS passthrough",
            ServerKind::Terminate => "terminated TLS",
        }
    }
}

/// What server `s` routes with; `None` for one the TCP side does not serve (HTTP, or a refused
/// TLS mode).
pub(crate) fn server_kind(s: &Server) -> Option<ServerKind> {
    let protocol = protocol_of(s.port.as_ref().and_then(|p| p.protocol.as_deref()));
    match (protocol.as_str(), tls_mode(s)) {
        ("HTTPS" | "TLS", Some("PASSTHROUGH")) => Some(ServerKind::Passthrough),
        ("TLS", Some("AUTO_PASSTHROUGH" | "ISTIO_MUTUAL")) => None, // refused
        ("TLS", _) => Some(ServerKind::Terminate),
        (p, _) if TCP_PROTOCOLS.contains(&p) => Some(ServerKind::Tcp),
        _ => None,
    }
}

/// Parses `10.0.0.0/24` or `10.0.0.1` (a /32 or /128) into Envoy's `CidrRange` parts.
pub(crate) fn parse_subnet(text: &str) -> Result<(String, u32), String> {
    let (ip, len) = match text.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (text, None),
    };
    let addr: IpAddr = ip
        .parse()
        .map_err(|_| format!("{ip:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => match l.parse::<u32>() {
            Ok(n) if n <= max => n,
            _ => return Err(format!("prefix length {l:?} is not 0-{max}")),
        },
    };
    Ok((addr.to_string(), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_to_cidr_ranges() {
        assert_eq!(parse_subnet("10.0.0.0/8"), Ok(("10.0.0.0".into(), 8)));
        assert_eq!(parse_subnet("192.168.0.7"), Ok(("192.168.0.7".into(), 32)));
        assert_eq!(parse_subnet("fd00::/8"), Ok(("fd00::".into(), 8)));
        assert!(parse_subnet("10.0.0.0/33").is_err());
        assert!(parse_subnet("db.internal").is_err());
    }
}
