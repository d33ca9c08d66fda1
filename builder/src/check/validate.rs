//! Stage 2a: checks of each resource on its own (values, ranges, durations, regexes, names).
//! Cross-resource checks (unknown hosts, subsets, gateways) happen while the model is built,
//! see [`mod@crate::model`]. Every problem is collected; nothing stops at the first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use sluice_core::matching::MatchSet;

use crate::diag::{Code, Diagnostic};
use crate::input::istio::{
    CircuitBreaker, ConnectionPoolSettings, HttpMatchRequest, HttpRetry, OutlierDetection,
    StringMatch, TrafficPolicy, WorkloadEntrySpec,
};
use crate::input::parse::{Resource, Spec};
use crate::input::yaml::FieldPath;

/// Envoy `retry_on` conditions (HTTP and gRPC) that Istio passes through.
pub const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Gateway server protocols the envoy target serves as HTTP.
pub const HTTP_PROTOCOLS: &[&str] = &["HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTPS"];

/// Checks every resource; returns all problems.
pub fn check_resources(resources: &[Resource]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for r in resources {
        crate::check::native::check_health_check(r, &mut out);
        crate::check::tcp::check(r, &mut out);
        let spec = FieldPath::root().key("spec");
        match &r.spec {
            Spec::Gateway(g) => {
                if g.servers.is_empty() {
                    out.push(r.error(
                        Code::InvalidField,
                        &spec,
                        "a Gateway needs at least one server",
                        "add `servers:` with a port and hosts",
                    ));
                }
                for (i, s) in g.servers.iter().enumerate() {
                    let at = spec.key("servers").index(i);
                    match &s.port {
                        None => out.push(r.error(
                            Code::InvalidField,
                            &at,
                            "missing `port`",
                            "add `port: {number: 80, name: http, protocol: HTTP}`",
                        )),
                        Some(p) => {
                            check_port(r, &at.key("port").key("number"), p.number, &mut out);
                            match p.protocol.as_deref() {
                                None => out.push(r.error(
                                    Code::InvalidField,
                                    &at.key("port"),
                                    "missing `protocol`",
                                    "set `protocol: HTTP`",
                                )),
                                Some(proto)
                                    if !HTTP_PROTOCOLS
                                        .contains(&proto.to_ascii_uppercase().as_str())
                                        && !crate::input::tcp::is_tcp_server_protocol(proto) =>
                                {
                                    out.push(r.error(Code::UnsupportedValue, &at.key("port").key("protocol"),
                                        format!(
                                            "protocol {proto:?} is not supported yet by sluice"
                                        ),
                                        "sluice serves HTTP, HTTP2, GRPC, HTTPS, TLS (passthrough) and TCP gateway servers",
                                    ));
                                }
                                Some(_) => {}
                            }
                        }
                    }
                    if s.hosts.is_empty() {
                        out.push(r.error(
                            Code::InvalidField,
                            &at,
                            "missing `hosts`",
                            "list the hosts this server exposes, or `\"*\"`",
                        ));
                    }
                }
            }
            Spec::VirtualService(vs) => check_virtual_service(r, vs, &mut out),
            Spec::DestinationRule(dr) => {
                if dr.host.as_deref().unwrap_or("").is_empty() {
                    out.push(r.error(
                        Code::InvalidField,
                        &spec,
                        "missing `host`",
                        "set `host:` to the service host (a ServiceEntry host)",
                    ));
                }
                if let Some(tp) = &dr.traffic_policy {
                    check_traffic_policy(r, &spec.key("trafficPolicy"), tp, &mut out);
                }
                let mut seen = BTreeMap::new();
                for (i, s) in dr.subsets.iter().enumerate() {
                    let at = spec.key("subsets").index(i);
                    match s.name.as_deref() {
                        None | Some("") => out.push(r.error(
                            Code::InvalidField,
                            &at,
                            "subset without `name`",
                            "name the subset, e.g. `name: v1`",
                        )),
                        Some(name) => {
                            if let Some(first) = seen.insert(name.to_owned(), i) {
                                out.push(r.error(Code::InvalidField, &at.key("name"), format!("duplicate subset name {name:?}"), &format!("subsets[{first}] already uses it; subset names are unique per DestinationRule")));
                            }
                        }
                    }
                    if let Some(tp) = &s.traffic_policy {
                        check_traffic_policy(r, &at.key("trafficPolicy"), tp, &mut out);
                    }
                }
            }
            Spec::ServiceEntry(se) => {
                if se.hosts.is_empty() {
                    out.push(r.error(
                        Code::InvalidField,
                        &spec,
                        "missing `hosts`",
                        "list the service's host names",
                    ));
                }
                if se.ports.is_empty() {
                    out.push(r.error(
                        Code::InvalidField,
                        &spec,
                        "missing `ports`",
                        "add `ports: [{number: 80, name: http, protocol: HTTP}]`",
                    ));
                }
                let mut numbers = BTreeSet::new();
                let names: BTreeSet<&str> =
                    se.ports.iter().filter_map(|p| p.name.as_deref()).collect();
                for (i, p) in se.ports.iter().enumerate() {
                    let at = spec.key("ports").index(i);
                    check_port(r, &at.key("number"), p.number, &mut out);
                    if let Some(n) = p.number
                        && !numbers.insert(n)
                    {
                        out.push(r.error(
                            Code::InvalidField,
                            &at.key("number"),
                            format!("duplicate port {n}"),
                            "each port number appears once",
                        ));
                    }
                    if let Some(t) = p.target_port {
                        check_port(r, &at.key("targetPort"), Some(t), &mut out);
                    }
                }
                let resolution = se.resolution.as_deref().unwrap_or("NONE");
                match resolution {
                    "NONE" | "STATIC" | "DNS" | "DNS_ROUND_ROBIN" => {}
                    "DYNAMIC_DNS" => out.push(r.error(
                        Code::UnsupportedValue,
                        &spec.key("resolution"),
                        "resolution DYNAMIC_DNS is not supported yet by sluice",
                        "use DNS or STATIC",
                    )),
                    other => out.push(r.error(
                        Code::InvalidField,
                        &spec.key("resolution"),
                        format!("unknown resolution {other:?}"),
                        "use NONE, STATIC, DNS or DNS_ROUND_ROBIN",
                    )),
                }
                if let Some(loc) = se.location.as_deref()
                    && !matches!(loc, "MESH_EXTERNAL" | "MESH_INTERNAL")
                {
                    out.push(r.error(
                        Code::InvalidField,
                        &spec.key("location"),
                        format!("unknown location {loc:?}"),
                        "use MESH_EXTERNAL or MESH_INTERNAL",
                    ));
                }
                if se.workload_selector.is_some() && !se.endpoints.is_empty() {
                    out.push(r.error(
                        Code::InvalidField,
                        &spec.key("workloadSelector"),
                        "`workloadSelector` and `endpoints` are mutually exclusive",
                        "keep one: inline endpoints, or WorkloadEntries selected by labels",
                    ));
                }
                let needs_ip = matches!(resolution, "STATIC" | "NONE");
                for (i, ep) in se.endpoints.iter().enumerate() {
                    let at = spec.key("endpoints").index(i);
                    check_endpoint(r, &at, ep, needs_ip, &mut out);
                    for (name, port) in &ep.ports {
                        if !names.contains(name.as_str()) {
                            out.push(r.error(Code::InvalidField, &at.key("ports").key(name), format!("no service port is named {name:?}"), &format!("endpoint ports map port names to endpoint ports; names here: {}", names.iter().copied().collect::<Vec<_>>().join(", "))));
                        }
                        check_port(r, &at.key("ports").key(name), Some(*port), &mut out);
                    }
                }
            }
            Spec::WorkloadEntry(we) => check_endpoint(r, &spec, we, false, &mut out),
            Spec::WorkloadGroup(group) => {
                if group
                    .template
                    .address
                    .as_deref()
                    .is_some_and(|a| !a.is_empty())
                {
                    out.push(r.error(
                        Code::InvalidField,
                        &spec.key("template").key("address"),
                        "a WorkloadGroup's template has no address: each VM brings its own",
                        "remove `address`; VMs join with `sluice register --address IP`",
                    ));
                }
                if let Some(probe) = &group.probe
                    && let Err(e) = probe.resolve()
                {
                    let mut at = spec.key("probe");
                    for part in e.field.split('.').filter(|p| !p.is_empty()) {
                        at = at.key(part);
                    }
                    let (message, hint) = match probe.port_name() {
                        Some(name) if !e.field.is_empty() && e.field.ends_with(".port") => (
                            format!(
                                "Istio's WorkloadGroup probe takes a port number, not the name {name:?}"
                            ),
                            "write the number (a name is read only in the `sluice.dev/probe` annotation)",
                        ),
                        _ => (
                            e.message,
                            "see Istio's WorkloadGroup `probe` (Kubernetes' readiness probe)",
                        ),
                    };
                    out.push(r.error(Code::InvalidField, &at, message, hint));
                }
            }
            // Read leniently: its ports were checked while parsing (crate::kube).
            Spec::Service(_) => {}
        }
    }
    out
}

fn check_port(r: &Resource, at: &FieldPath, number: Option<u32>, out: &mut Vec<Diagnostic>) {
    match number {
        None => out.push(r.error(
            Code::InvalidField,
            at,
            "missing port number",
            "set `number:` (1-65535)",
        )),
        Some(n) if !(1..=65535).contains(&n) => {
            out.push(r.error(
                Code::InvalidField,
                at,
                format!("port {n} is out of range"),
                "ports are 1-65535",
            ));
        }
        Some(_) => {}
    }
}

fn check_endpoint(
    r: &Resource,
    at: &FieldPath,
    ep: &WorkloadEntrySpec,
    needs_ip: bool,
    out: &mut Vec<Diagnostic>,
) {
    match ep.address.as_deref() {
        None | Some("") => out.push(r.error(
            Code::InvalidField,
            at,
            "missing `address`",
            "set the endpoint's IP address (or DNS name with resolution DNS)",
        )),
        Some(a) if needs_ip && a.parse::<IpAddr>().is_err() => out.push(r.error(
            Code::InvalidField,
            &at.key("address"),
            format!("{a:?} is not an IP address"),
            "resolution STATIC needs IP addresses; use `resolution: DNS` for host names",
        )),
        Some(_) => {}
    }
}

fn check_duration(r: &Resource, at: &FieldPath, value: Option<&str>, out: &mut Vec<Diagnostic>) {
    if let Some(text) = value
        && let Err(e) = sluice_core::duration::parse(text)
    {
        out.push(r.error(
            Code::InvalidField,
            at,
            e.to_string(),
            "write a duration such as \"5s\", \"250ms\" or \"1m\"",
        ));
    }
}

fn check_non_negative(r: &Resource, at: &FieldPath, v: Option<i64>, out: &mut Vec<Diagnostic>) {
    if let Some(n) = v
        && n < 0
    {
        out.push(r.error(
            Code::InvalidField,
            at,
            format!("{n} is negative"),
            "use 0 or a positive number",
        ));
    }
}

fn check_virtual_service(
    r: &Resource,
    vs: &crate::input::istio::VirtualServiceSpec,
    out: &mut Vec<Diagnostic>,
) {
    let spec = FieldPath::root().key("spec");
    if vs.hosts.is_empty() {
        out.push(r.error(
            Code::InvalidField,
            &spec,
            "missing `hosts`",
            "list the hosts (authorities) these routes serve",
        ));
    }
    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        out.push(r.error(
            Code::InvalidField,
            &spec,
            "no `http` routes",
            "add `http:` with at least one `route` (or `tcp:` / `tls:` for a TCP port)",
        ));
    }
    for (i, h) in vs.http.iter().enumerate() {
        let at = spec.key("http").index(i);
        crate::check::native::check_route(r, &at, h, out);
        if h.route.is_empty() && !crate::input::native::answers_locally(h) {
            out.push(r.error(
                Code::InvalidField,
                &at,
                "missing `route`",
                "add `route: [{destination: {host: ...}}]`",
            ));
        }
        for (m, block) in h.matches.iter().enumerate() {
            check_match(r, &at.key("match").index(m), block, out);
        }
        let mut sum: i64 = 0;
        for (d, dest) in h.route.iter().enumerate() {
            let dat = at.key("route").index(d);
            match &dest.destination {
                None => out.push(r.error(
                    Code::InvalidField,
                    &dat,
                    "missing `destination`",
                    "add `destination: {host: ...}`",
                )),
                Some(dd) if dd.host.as_deref().unwrap_or("").is_empty() => {
                    out.push(r.error(
                        Code::InvalidField,
                        &dat.key("destination"),
                        "missing `host`",
                        "name the destination service host",
                    ));
                }
                Some(dd) => {
                    if let Some(p) = &dd.port {
                        check_port(
                            r,
                            &dat.key("destination").key("port").key("number"),
                            p.number,
                            out,
                        );
                    }
                }
            }
            if let Some(w) = dest.weight {
                if w < 0 {
                    out.push(r.error(
                        Code::InvalidWeights,
                        &dat.key("weight"),
                        format!("weight {w} is negative"),
                        "weights are non-negative; they are shares of the total",
                    ));
                } else {
                    sum = sum.saturating_add(w);
                }
            }
        }
        if h.route.len() > 1 && sum == 0 && h.route.iter().all(|d| d.weight.is_none_or(|w| w >= 0))
        {
            out.push(r.error(
                Code::InvalidWeights,
                &at.key("route"),
                "the weights are all zero (or missing), so no destination gets traffic",
                "give each destination a `weight`, e.g. 90 and 10",
            ));
        }
        let weights: Vec<Option<i64>> = h.route.iter().map(|d| d.weight).collect();
        if let Some(d) = weights_not_100(r, &at.key("route"), &weights) {
            out.push(d);
        }
        check_duration(r, &at.key("timeout"), h.timeout.as_deref(), out);
        if let Some(retries) = &h.retries {
            check_retries(r, &at.key("retries"), retries, out);
        }
        // `fault` is checked by the fault filter's own rules: crate::model::settings::check.
    }
}

fn check_retries(r: &Resource, at: &FieldPath, retries: &HttpRetry, out: &mut Vec<Diagnostic>) {
    check_non_negative(r, &at.key("attempts"), retries.attempts, out);
    check_duration(
        r,
        &at.key("perTryTimeout"),
        retries.per_try_timeout.as_deref(),
        out,
    );
    check_duration(r, &at.key("backoff"), retries.backoff.as_deref(), out);
    if let Some(on) = &retries.retry_on {
        for cond in on.split(',').map(str::trim) {
            let numeric = cond.parse::<u16>().is_ok_and(|c| (100..600).contains(&c));
            if !numeric && !RETRY_ON.contains(&cond) {
                let hint = match crate::diag::did_you_mean(cond, RETRY_ON.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!(
                        "use Envoy retry conditions ({}) or HTTP status codes",
                        RETRY_ON.join(", ")
                    ),
                };
                out.push(r.error(
                    Code::InvalidField,
                    &at.key("retryOn"),
                    format!("unknown retry condition {cond:?}"),
                    &hint,
                ));
            }
        }
    }
}

fn check_match(r: &Resource, at: &FieldPath, block: &HttpMatchRequest, out: &mut Vec<Diagnostic>) {
    let mut one_of = |field: &FieldPath, m: &StringMatch| {
        let set = usize::from(m.exact.is_some())
            + usize::from(m.prefix.is_some())
            + usize::from(m.regex.is_some());
        if set > 1 {
            out.push(r.error(
                Code::InvalidField,
                field,
                "set only one of `exact`, `prefix`, `regex`",
                "a StringMatch is a oneof",
            ));
        }
    };
    for (name, m) in [
        ("uri", &block.uri),
        ("method", &block.method),
        ("authority", &block.authority),
        ("scheme", &block.scheme),
    ] {
        if let Some(m) = m {
            one_of(&at.key(name), m);
        }
    }
    for (name, map) in [
        ("headers", &block.headers),
        ("withoutHeaders", &block.without_headers),
        ("queryParams", &block.query_params),
    ] {
        for (k, m) in map {
            one_of(&at.key(name).key(k), m);
        }
    }
    if block.scheme.is_some() && block.headers.contains_key(SCHEME_HEADER) {
        out.push(r.error(
            Code::InvalidField,
            &at.key("scheme"),
            "`scheme` and a `:scheme` entry in `headers` match the same pseudo-header",
            "keep `scheme`",
        ));
    }
    if let Some(prefix) = &block.stat_prefix
        && (prefix.is_empty() || prefix.contains(|c: char| c.is_whitespace() || c == ':'))
    {
        out.push(r.error(
            Code::InvalidField,
            &at.key("statPrefix"),
            format!("statPrefix {prefix:?} is no usable stat name"),
            "a non-empty name without spaces or `:` (it becomes part of Envoy's stat names)",
        ));
    }
    if let Some(p) = block.port {
        check_port(r, &at.key("port"), Some(p), out);
    }
    // Compile with the router's own engine, so the builder refuses exactly what the filter would.
    // A port out of range was reported just above: the engine would report it a second time.
    if let Ok(mut core) = to_core_match(block)
        && let Err(e) = {
            core.port = core.port.filter(|p| (1..=65535).contains(p));
            MatchSet::compile(std::slice::from_ref(&core))
        }
    {
        // The engine names the field inside the block (`match[0].uri.regex: ...`): move it into
        // the diagnostic's path so the position points at the field itself.
        let (path, message) = match e
            .strip_prefix("match[0].")
            .and_then(|rest| rest.split_once(": "))
        {
            Some((field, message)) => (
                field.split('.').fold(at.clone(), |p, k| p.key(k)),
                message.to_owned(),
            ),
            None => (at.clone(), e),
        };
        let hint = if path.to_string().ends_with("regex") {
            "fix the match; regexes are RE2-style, anchored at both ends, ASCII-only classes"
        } else {
            "fix the match (Istio HTTPMatchRequest: uri, scheme, method, authority, headers, \
             queryParams, withoutHeaders, port, ignoreUriCase)"
        };
        out.push(r.error(Code::InvalidField, &path, message, hint));
    }
}

/// The pseudo-header Istio's `match.scheme` reads.
const SCHEME_HEADER: &str = ":scheme";

/// Converts a parsed Istio match block to the router's type (one JSON shape, one meaning).
/// `scheme` becomes a `:scheme` header match, as Istio translates it for Envoy.
pub fn to_core_match(
    block: &HttpMatchRequest,
) -> Result<sluice_core::matching::HttpMatchRequest, String> {
    fn sm(m: &StringMatch) -> Result<sluice_core::matching::StringMatch, String> {
        serde_json::to_value(m)
            .and_then(serde_json::from_value)
            .map_err(|e| e.to_string())
    }
    fn map(
        m: &BTreeMap<String, StringMatch>,
    ) -> Result<BTreeMap<String, sluice_core::matching::StringMatch>, String> {
        m.iter().map(|(k, v)| Ok((k.clone(), sm(v)?))).collect()
    }
    Ok(sluice_core::matching::HttpMatchRequest {
        name: block.name.clone(),
        uri: block.uri.as_ref().map(sm).transpose()?,
        ignore_uri_case: block.ignore_uri_case.unwrap_or(false),
        headers: {
            let mut headers = map(&block.headers)?;
            if let Some(scheme) = &block.scheme {
                headers.insert(SCHEME_HEADER.to_owned(), sm(scheme)?);
            }
            headers
        },
        without_headers: map(&block.without_headers)?,
        query_params: map(&block.query_params)?,
        method: block.method.as_ref().map(sm).transpose()?,
        authority: block.authority.as_ref().map(sm).transpose()?,
        port: block.port,
    })
}

fn check_traffic_policy(
    r: &Resource,
    at: &FieldPath,
    tp: &TrafficPolicy,
    out: &mut Vec<Diagnostic>,
) {
    if let Some(lb) = &tp.load_balancer
        && let Some(simple) = lb.simple.as_deref()
    {
        match simple {
            // PASSTHROUGH: the request names its endpoint (see `native::ORIGINAL_DST_HEADER`).
            "UNSPECIFIED" | "ROUND_ROBIN" | "LEAST_CONN" | "LEAST_REQUEST" | "RANDOM"
            | "PASSTHROUGH" => {}
            other => out.push(r.error(
                Code::InvalidField,
                &at.key("loadBalancer").key("simple"),
                format!("unknown load balancer {other:?}"),
                "use ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM or PASSTHROUGH",
            )),
        }
    }
    crate::check::native::check_policy(r, at, tp, out);
    if let Some(cp) = &tp.connection_pool {
        check_pool(r, &at.key("connectionPool"), cp, out);
    }
    if let Some(od) = &tp.outlier_detection {
        check_outlier(r, &at.key("outlierDetection"), od, out);
    }
    if let Some(cb) = &tp.circuit_breaker {
        check_breaker(r, &at.key("circuitBreaker"), cb, out);
    }
}

fn check_pool(
    r: &Resource,
    at: &FieldPath,
    cp: &ConnectionPoolSettings,
    out: &mut Vec<Diagnostic>,
) {
    if let Some(tcp) = &cp.tcp {
        let t = at.key("tcp");
        check_non_negative(r, &t.key("maxConnections"), tcp.max_connections, out);
        check_duration(
            r,
            &t.key("connectTimeout"),
            tcp.connect_timeout.as_deref(),
            out,
        );
        check_duration(r, &t.key("idleTimeout"), tcp.idle_timeout.as_deref(), out);
        check_duration(
            r,
            &t.key("maxConnectionDuration"),
            tcp.max_connection_duration.as_deref(),
            out,
        );
    }
    if let Some(http) = &cp.http {
        let h = at.key("http");
        check_non_negative(
            r,
            &h.key("http1MaxPendingRequests"),
            http.http1_max_pending_requests,
            out,
        );
        check_non_negative(r, &h.key("http2MaxRequests"), http.http2_max_requests, out);
        check_non_negative(
            r,
            &h.key("maxRequestsPerConnection"),
            http.max_requests_per_connection,
            out,
        );
        check_non_negative(r, &h.key("maxRetries"), http.max_retries, out);
        check_non_negative(
            r,
            &h.key("maxConcurrentStreams"),
            http.max_concurrent_streams,
            out,
        );
        check_duration(r, &h.key("idleTimeout"), http.idle_timeout.as_deref(), out);
        if let Some(p) = http.h2_upgrade_policy.as_deref()
            && !matches!(p, "DEFAULT" | "DO_NOT_UPGRADE" | "UPGRADE")
        {
            out.push(r.error(
                Code::InvalidField,
                &h.key("h2UpgradePolicy"),
                format!("unknown h2UpgradePolicy {p:?}"),
                "use DEFAULT, DO_NOT_UPGRADE or UPGRADE",
            ));
        }
    }
}

fn check_outlier(r: &Resource, at: &FieldPath, od: &OutlierDetection, out: &mut Vec<Diagnostic>) {
    check_non_negative(r, &at.key("consecutiveErrors"), od.consecutive_errors, out);
    check_non_negative(
        r,
        &at.key("consecutive5xxErrors"),
        od.consecutive5xx_errors,
        out,
    );
    check_non_negative(
        r,
        &at.key("consecutiveGatewayErrors"),
        od.consecutive_gateway_errors,
        out,
    );
    check_duration(r, &at.key("interval"), od.interval.as_deref(), out);
    check_duration(
        r,
        &at.key("baseEjectionTime"),
        od.base_ejection_time.as_deref(),
        out,
    );
    for (name, v) in [
        ("maxEjectionPercent", od.max_ejection_percent),
        ("minHealthPercent", od.min_health_percent),
    ] {
        if let Some(p) = v
            && !(0..=100).contains(&p)
        {
            out.push(r.error(
                Code::InvalidField,
                &at.key(name),
                format!("{p} is out of range"),
                "percentages are 0-100",
            ));
        }
    }
}

fn check_breaker(r: &Resource, at: &FieldPath, cb: &CircuitBreaker, out: &mut Vec<Diagnostic>) {
    check_non_negative(r, &at.key("consecutiveErrors"), cb.consecutive_errors, out);
    check_non_negative(
        r,
        &at.key("consecutive5xxErrors"),
        cb.consecutive5xx_errors,
        out,
    );
    check_duration(r, &at.key("interval"), cb.interval.as_deref(), out);
    check_duration(
        r,
        &at.key("baseEjectionTime"),
        cb.base_ejection_time.as_deref(),
        out,
    );
    if let Some(p) = cb.max_ejection_percent
        && !(0..=100).contains(&p)
    {
        out.push(r.error(
            Code::InvalidField,
            &at.key("maxEjectionPercent"),
            format!("{p} is out of range"),
            "percentages are 0-100",
        ));
    }
}

/// The warning for several destinations whose weights do not sum to 100 (e.g. 70 + 20).
///
/// Istio's validation (`validateHTTPRouteDestinations` / `validateRouteDestinations` in
/// istio/istio pkg/config/validation) once rejected such a route with "total destination weight
/// N != 100"; current Istio rejects only a total of 0 with several destinations (checked above
/// as an error) and treats weights as relative: each destination receives weight / total of the
/// traffic, as Envoy's weighted clusters do. sluice does the same, so this is a warning: the
/// split is probably not what the author meant. `None` when the weights are fine, negative
/// (reported on their own) or all zero (an error of its own).
pub(crate) fn weights_not_100(
    r: &Resource,
    at: &FieldPath,
    weights: &[Option<i64>],
) -> Option<Diagnostic> {
    if weights.len() < 2 || weights.iter().any(|w| w.is_some_and(|w| w < 0)) {
        return None;
    }
    let total: i64 = weights.iter().map(|w| w.unwrap_or(0)).sum();
    if total == 0 || total == 100 {
        return None;
    }
    let shares: Vec<String> = weights
        .iter()
        .map(|w| {
            // Shown to one decimal; exact enough to tell 77.8 % from 70 %.
            #[allow(clippy::cast_precision_loss)]
            let share = w.unwrap_or(0) as f64 * 100.0 / total as f64;
            format!("{share:.1} %")
        })
        .collect();
    Some(r.diag(
        Code::WeightsNot100,
        crate::diag::Severity::Warning,
        at,
        format!(
            "the weights sum to {total}, not 100: current Istio accepts this and splits by \
             relative weight, as sluice does, so the destinations get {} of the traffic; \
             older Istio releases rejected it (\"total destination weight {total} != 100\")",
            shares.join(", ")
        ),
        Some("make the weights sum to 100 so the percentages are the ones written".into()),
    ))
}
