//! Istio traffic settings that Envoy implements natively (no sluice filter involved): the Istio
//! types of those fields, their checks, and their resolved form in the model.
//!
//! The translation follows Istio's own (pilot's `networking/core/route` and `cluster` code):
//! mirrors become `request_mirror_policies`, rewrites `prefix_rewrite`/`regex_rewrite`/
//! `host_rewrite_literal`, redirects and direct responses replace the route action, header
//! operations become `request_headers_to_add`/`..._remove`, `corsPolicy` configures Envoy's CORS
//! filter per route, `consistentHash` becomes a hash policy on the route plus a ring-hash or
//! Maglev cluster, and `trafficPolicy.tls` an upstream TLS transport socket. The Envoy JSON is
//! written by [`crate::xds::native`].

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::diag::{Code, Diagnostic};
use crate::istio::{Destination, HttpRoute, Percent, StringMatch};
use crate::parse::Resource;
use crate::yaml::FieldPath;

/// `HTTPRewrite`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRewrite {
    /// Replaces the matched part of the path (the whole path for exact/regex matches).
    pub uri: Option<String>,
    /// Replaces the Host/`:authority` header.
    pub authority: Option<String>,
    /// RE2 substitution on the path.
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// `RegexRewrite`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegexRewrite {
    /// RE2 pattern.
    #[serde(rename = "match")]
    pub pattern: Option<String>,
    /// Substitution (`\1` for groups).
    pub rewrite: Option<String>,
}

/// `HTTPRedirect`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRedirect {
    /// New path.
    pub uri: Option<String>,
    /// New authority.
    pub authority: Option<String>,
    /// New port.
    pub port: Option<u32>,
    /// `FROM_PROTOCOL_DEFAULT` or `FROM_REQUEST_PORT`.
    pub derive_port: Option<String>,
    /// New scheme (`http`, `https`).
    pub scheme: Option<String>,
    /// 301 (default), 302, 303, 307 or 308.
    pub redirect_code: Option<u32>,
    /// Replaces the matched prefix of the path.
    pub prefix_rewrite: Option<String>,
}

/// `HTTPDirectResponse`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpDirectResponse {
    /// Status code.
    pub status: Option<u32>,
    /// Body.
    pub body: Option<HttpBody>,
}

/// `HTTPBody`: one of `string` or `bytes` (base64).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpBody {
    /// Text body.
    pub string: Option<String>,
    /// Base64-encoded body.
    pub bytes: Option<String>,
}

/// `Headers`: operations on request and response headers.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Headers {
    /// Operations on the request sent upstream.
    pub request: Option<HeaderOperations>,
    /// Operations on the response sent downstream.
    pub response: Option<HeaderOperations>,
}

/// `Headers.HeaderOperations`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderOperations {
    /// Overwrite (or add) these headers.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append these values.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `HTTPMirrorPolicy` (an entry of `mirrors`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpMirrorPolicy {
    /// Where copies go.
    pub destination: Option<Destination>,
    /// Share of requests copied (default 100).
    pub percentage: Option<Percent>,
}

/// `CorsPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CorsPolicy {
    /// Deprecated exact origins.
    #[serde(default)]
    pub allow_origin: Vec<String>,
    /// Allowed origins.
    #[serde(default)]
    pub allow_origins: Vec<StringMatch>,
    /// `Access-Control-Allow-Methods`.
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// `Access-Control-Allow-Headers`.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// `Access-Control-Expose-Headers`.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// `Access-Control-Max-Age`.
    pub max_age: Option<String>,
    /// `Access-Control-Allow-Credentials`.
    pub allow_credentials: Option<bool>,
    /// `FORWARD` (default) or `IGNORE` preflights from origins not allowed.
    pub unmatched_preflights: Option<String>,
}

/// `ClientTLSSettings` (`trafficPolicy.tls`): TLS origination to the upstream.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientTls {
    /// `DISABLE`, `SIMPLE`, `MUTUAL` (`ISTIO_MUTUAL` needs Istio's CA: refused).
    pub mode: Option<String>,
    /// Client certificate file (MUTUAL).
    pub client_certificate: Option<String>,
    /// Client private key file (MUTUAL).
    pub private_key: Option<String>,
    /// CA bundle file that verifies the server; without it the server is not verified.
    pub ca_certificates: Option<String>,
    /// CRL file.
    pub ca_crl: Option<String>,
    /// Kubernetes secret name: resolved through the credentials directory like gateways.
    pub credential_name: Option<String>,
    /// Accepted server names.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// SNI sent to the server.
    pub sni: Option<String>,
    /// Skip server verification.
    pub insecure_skip_verify: Option<bool>,
}

/// `TrafficPolicy.ProxyProtocol`: the PROXY protocol header Envoy writes at the start of each
/// upstream connection, naming the downstream client (Istio wraps the cluster's transport socket
/// in `envoy.transport_sockets.upstream_proxy_protocol`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyProtocol {
    /// `V1` (text line, Istio's default) or `V2` (binary).
    pub version: Option<String>,
}

/// `TrafficPolicy.RetryBudget`: Envoy's `circuit_breakers.thresholds[].retry_budget`, which
/// replaces the fixed `max_retries` limit of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudget {
    /// Concurrent retries allowed, as a percentage of active plus pending requests (Envoy's
    /// default: 20).
    pub percent: Option<f64>,
    /// Concurrent retries always allowed, whatever the percentage gives (Envoy's default: 3).
    pub min_retry_concurrency: Option<u32>,
    /// Istio's field; Envoy's budget counts requests active right now and has no interval.
    pub budget_interval: Option<String>,
}

/// The Envoy `ProxyProtocolConfig.Version` of an Istio `proxyProtocol.version` (unset = `V1`).
pub fn proxy_protocol_version(p: &ProxyProtocol) -> Option<&'static str> {
    match p.version.as_deref() {
        None | Some("V1") => Some("V1"),
        Some("V2") => Some("V2"),
        Some(_) => None,
    }
}

/// `TrafficPolicy.PortTrafficPolicy`: overrides for one service port.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortTrafficPolicy {
    /// The service port these settings apply to.
    pub port: Option<crate::istio::PortSelector>,
    /// Overrides the policy's `loadBalancer`.
    pub load_balancer: Option<crate::istio::LoadBalancerSettings>,
    /// Overrides the policy's `connectionPool`.
    pub connection_pool: Option<crate::istio::ConnectionPoolSettings>,
    /// Overrides the policy's `outlierDetection`.
    pub outlier_detection: Option<crate::istio::OutlierDetection>,
    /// Overrides the policy's `tls`.
    pub tls: Option<ClientTls>,
}

/// `policy` as it applies to `port`: its `portLevelSettings` entry for the port (if any)
/// replaces each field group it sets, as Istio applies port-level settings.
pub fn at_port(policy: &crate::istio::TrafficPolicy, port: u32) -> crate::istio::TrafficPolicy {
    let mut out = policy.clone();
    out.port_level_settings = Vec::new();
    if let Some(p) = policy
        .port_level_settings
        .iter()
        .find(|p| p.port.as_ref().and_then(|s| s.number) == Some(port))
    {
        if p.load_balancer.is_some() {
            out.load_balancer.clone_from(&p.load_balancer);
        }
        if p.connection_pool.is_some() {
            out.connection_pool.clone_from(&p.connection_pool);
        }
        if p.outlier_detection.is_some() {
            out.outlier_detection.clone_from(&p.outlier_detection);
        }
        if p.tls.is_some() {
            out.tls.clone_from(&p.tls);
        }
    }
    out
}

/// The annotation (on a ServiceEntry or DestinationRule) that turns on Envoy's active HTTP
/// health checking of the host's endpoints; its value is YAML:
/// `{path: /healthz, interval: 10s, timeout: 1s, unhealthyThreshold: 3, healthyThreshold: 1}`
/// (those are the defaults; only `path` is required).
pub const HEALTH_CHECK_ANNOTATION: &str = "sluice.dev/health-check";

/// The `sluice.dev/health-check` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// Path probed with GET; a 200 is healthy.
    pub path: String,
    /// Time between probes (default 10s).
    pub interval: Option<String>,
    /// Probe timeout (default 1s).
    pub timeout: Option<String>,
    /// Failed probes before a healthy endpoint is taken out (default 3).
    pub unhealthy_threshold: Option<u32>,
    /// Passed probes before an unhealthy endpoint is put back (default 1).
    pub healthy_threshold: Option<u32>,
}

fn parse_health_check(text: &str) -> Result<HealthCheck, String> {
    let docs = crate::yaml::parse_documents(text)
        .map_err(|e| format!("line {}: {}", e.pos.line, e.message))?;
    let json = docs
        .into_iter()
        .next()
        .map_or(serde_json::Value::Null, |d| d.root.to_json());
    let hc: HealthCheck = serde_json::from_value(json).map_err(|e| e.to_string())?;
    for (field, value) in [("interval", &hc.interval), ("timeout", &hc.timeout)] {
        if let Some(v) = value
            && sluice_core::duration::parse(v).is_err()
        {
            return Err(format!("{field}: invalid duration {v:?}"));
        }
    }
    if !hc.path.starts_with('/') {
        return Err(format!("path {:?} must start with '/'", hc.path));
    }
    if hc.unhealthy_threshold == Some(0) || hc.healthy_threshold == Some(0) {
        return Err("thresholds are at least 1".into());
    }
    Ok(hc)
}

/// The health check of a host: the DestinationRule's annotation, else the ServiceEntry's
/// (invalid ones are reported by [`check_health_check`]).
pub fn health_check(dr: Option<&Resource>, se: &Resource) -> Option<HealthCheck> {
    dr.into_iter()
        .chain([se])
        .find_map(|r| r.metadata.annotations.get(HEALTH_CHECK_ANNOTATION))
        .and_then(|text| parse_health_check(text).ok())
}

/// Reports a `sluice.dev/health-check` annotation that does not parse, or sits on a kind that
/// has no endpoints.
pub fn check_health_check(r: &Resource, out: &mut Vec<Diagnostic>) {
    let Some(text) = r.metadata.annotations.get(HEALTH_CHECK_ANNOTATION) else {
        return;
    };
    let at = FieldPath::root()
        .key("metadata")
        .key("annotations")
        .key(HEALTH_CHECK_ANNOTATION);
    if !matches!(
        r.spec,
        crate::parse::Spec::ServiceEntry(_) | crate::parse::Spec::DestinationRule(_)
    ) {
        out.push(r.error(
            Code::InvalidHttpAction,
            &at,
            format!("`{HEALTH_CHECK_ANNOTATION}` belongs on a ServiceEntry or DestinationRule"),
            "move it to the resource of the host whose endpoints are probed",
        ));
        return;
    }
    if let Err(e) = parse_health_check(text) {
        out.push(r.error(Code::InvalidHttpAction, &at,
            format!("invalid health check: {e}"),
            "e.g. {path: /healthz, interval: 10s, timeout: 1s, unhealthyThreshold: 3, healthyThreshold: 1}",
        ));
    }
}

/// A mirror resolved to its cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    /// `outbound|<port>|<subset>|<host>`.
    pub cluster: String,
    /// Share of requests copied, 0-100 (`None` = all).
    pub percent: Option<f64>,
}

/// How Envoy's route hashes a request for a consistent-hash cluster (Istio
/// `LoadBalancerSettings.ConsistentHashLB`, the key part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// A request header.
    Header(String),
    /// A cookie, created by Envoy when absent and `ttl` is set.
    Cookie {
        /// Cookie name.
        name: String,
        /// Cookie path.
        path: Option<String>,
        /// Cookie lifetime (Envoy text form).
        ttl: Option<String>,
    },
    /// The client's IP address.
    SourceIp,
    /// A query parameter.
    QueryParameter(String),
}

/// Everything native about one rule, resolved: what the Envoy route does besides forwarding.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteExtras {
    /// Copies of the requests to other clusters.
    pub mirrors: Vec<Mirror>,
    /// Path/authority rewrite.
    pub rewrite: Option<HttpRewrite>,
    /// Answer with a redirect instead of forwarding.
    pub redirect: Option<HttpRedirect>,
    /// Answer directly instead of forwarding.
    pub direct_response: Option<HttpDirectResponse>,
    /// Route-level header operations.
    pub headers: Option<Headers>,
    /// Per-destination header operations, by cluster (empty ones omitted).
    pub destination_headers: BTreeMap<String, Headers>,
    /// CORS policy for Envoy's CORS filter.
    pub cors: Option<CorsPolicy>,
    /// Hash policy for consistent-hash destinations.
    pub hash: Option<HashKey>,
    /// URI match blocks of the rule, for the prefix rewrite of `rewrite.uri`.
    pub uri_matches: Vec<(StringMatch, bool)>,
    /// The destination is a `PASSTHROUGH` cluster: the `ip:port` endpoints of its service, the
    /// only values a client may name in [`ORIGINAL_DST_HEADER`] (empty otherwise).
    pub passthrough_endpoints: Vec<String>,
    /// Envoy route `stat_prefix`, from the match blocks' `statPrefix`.
    pub stat_prefix: Option<String>,
}

/// The request header an Envoy `ORIGINAL_DST` cluster reads its destination from
/// (`original_dst_lb_config.use_http_header`), for DestinationRule `PASSTHROUGH`.
pub const ORIGINAL_DST_HEADER: &str = "x-envoy-original-dst-host";

/// Whether `cluster` is a DestinationRule `loadBalancer.simple: PASSTHROUGH` cluster: Envoy
/// `ORIGINAL_DST` forwarding to the endpoint the request names (see [`ORIGINAL_DST_HEADER`]).
pub fn is_passthrough(cluster: &crate::model::Cluster) -> bool {
    cluster
        .policy
        .load_balancer
        .as_ref()
        .and_then(|lb| lb.simple.as_deref())
        == Some("PASSTHROUGH")
}

/// The endpoints a request to PASSTHROUGH `cluster` may name, as `ip:port` (how Envoy reads
/// [`ORIGINAL_DST_HEADER`]); empty for any other cluster.
pub fn passthrough_endpoints(cluster: &crate::model::Cluster) -> Vec<String> {
    if !is_passthrough(cluster) {
        return Vec::new();
    }
    cluster
        .endpoints
        .iter()
        .map(|e| match e.address.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{}", e.port),
            _ => format!("{}:{}", e.address, e.port),
        })
        .collect()
}

impl RouteExtras {
    /// True when the rule answers by itself (redirect or direct response): it has no
    /// destination, so nothing is forwarded.
    pub fn answers_locally(&self) -> bool {
        self.redirect.is_some() || self.direct_response.is_some()
    }
}

/// A placeholder cluster value the router sends for rules that answer locally: Envoy's
/// redirect and direct-response routes never read `x-sluice-cluster`, but every sluice rule has
/// a destination in the router's config.
pub const NO_UPSTREAM: &str = "sluice-local-response";

/// Whether the route answers locally (and so needs no `route`).
pub fn answers_locally(h: &HttpRoute) -> bool {
    h.redirect.is_some() || h.direct_response.is_some()
}

/// Resolves the native extras of `h`. `resolve` turns a mirror destination into its cluster
/// name (reporting unknown hosts itself); `hash_of` gives the consistent-hash key of a cluster.
pub fn route_extras(
    h: &HttpRoute,
    target_clusters: &[String],
    mut resolve: impl FnMut(&FieldPath, &Destination) -> Option<String>,
    hash_of: impl Fn(&str) -> Option<HashKey>,
    at: &FieldPath,
) -> RouteExtras {
    let mut mirrors = Vec::new();
    if let Some(d) = &h.mirror
        && let Some(cluster) = resolve(&at.key("mirror"), d)
    {
        let percent = h
            .mirror_percentage
            .as_ref()
            .and_then(|p| p.value)
            .or(h.mirror_percent.map(f64::from));
        mirrors.push(Mirror { cluster, percent });
    }
    for (i, m) in h.mirrors.iter().enumerate() {
        if let Some(d) = &m.destination
            && let Some(cluster) = resolve(&at.key("mirrors").index(i).key("destination"), d)
        {
            mirrors.push(Mirror {
                cluster,
                percent: m.percentage.as_ref().and_then(|p| p.value),
            });
        }
    }
    let destination_headers = h
        .route
        .iter()
        .zip(target_clusters)
        .filter_map(|(d, cluster)| Some((cluster.clone(), d.headers.clone()?)))
        .collect();
    // Istio hashes only when every destination agrees on the key (a weighted route with mixed
    // policies has no single hash policy).
    let hashes: Vec<Option<HashKey>> = target_clusters.iter().map(|c| hash_of(c)).collect();
    let hash = match hashes.split_first() {
        Some((first, rest)) if rest.iter().all(|h| h == first) => first.clone(),
        _ => None,
    };
    RouteExtras {
        mirrors,
        rewrite: h.rewrite.clone(),
        redirect: h.redirect.clone(),
        direct_response: h.direct_response.clone(),
        headers: h.headers.clone(),
        destination_headers,
        cors: h.cors_policy.clone(),
        hash,
        uri_matches: h
            .matches
            .iter()
            .filter_map(|m| Some((m.uri.clone()?, m.ignore_uri_case.unwrap_or(false))))
            .collect(),
        passthrough_endpoints: Vec::new(),
        stat_prefix: h.matches.iter().find_map(|m| m.stat_prefix.clone()),
    }
}

/// The consistent-hash key of a `loadBalancer.consistentHash` value (kept as JSON in
/// [`crate::istio::LoadBalancerSettings`]).
pub fn hash_key(consistent_hash: &serde_json::Value) -> Option<HashKey> {
    let s = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    if let Some(h) = consistent_hash.get("httpHeaderName").and_then(s) {
        return Some(HashKey::Header(h.to_ascii_lowercase()));
    }
    if let Some(c) = consistent_hash.get("httpCookie") {
        return Some(HashKey::Cookie {
            name: c.get("name").and_then(s)?,
            path: c.get("path").and_then(s),
            ttl: c.get("ttl").and_then(s),
        });
    }
    if consistent_hash
        .get("useSourceIp")
        .and_then(serde_json::Value::as_bool)
        == Some(true)
    {
        return Some(HashKey::SourceIp);
    }
    consistent_hash
        .get("httpQueryParameterName")
        .and_then(s)
        .map(HashKey::QueryParameter)
}

/// The consistent-hash key of a cluster's load-balancer policy, if it hashes.
pub fn cluster_hash(cluster: &crate::model::Cluster) -> Option<HashKey> {
    cluster
        .policy
        .load_balancer
        .as_ref()
        .and_then(|lb| lb.consistent_hash.as_ref())
        .and_then(hash_key)
}

/// Checks of the native fields of one `http[]` route.
pub fn check_route(r: &Resource, at: &FieldPath, h: &HttpRoute, out: &mut Vec<Diagnostic>) {
    // Istio has one Envoy route per match block; sluice has one per rule, so one prefix.
    let mut prefixes = h
        .matches
        .iter()
        .enumerate()
        .filter_map(|(i, m)| Some((i, m.stat_prefix.as_deref()?)));
    if let Some((_, first)) = prefixes.next()
        && let Some((i, other)) = prefixes.find(|(_, p)| p != &first)
    {
        out.push(r.error(Code::InvalidHttpAction, &at.key("match").index(i).key("statPrefix"),
            format!("statPrefix {other:?} differs from {first:?} in an earlier match block of this rule"),
            "sluice keeps one Envoy route (and so one stat prefix) per rule: use one statPrefix, or split the rule",
        ));
    }
    let locally = [
        ("redirect", h.redirect.is_some()),
        ("directResponse", h.direct_response.is_some()),
    ];
    let answering: Vec<&str> = locally
        .iter()
        .filter(|(_, s)| *s)
        .map(|(n, _)| *n)
        .collect();
    if answering.len() > 1 {
        out.push(r.error(
            Code::InvalidHttpAction,
            at,
            "`redirect` and `directResponse` are exclusive",
            "keep one: a rule answers in one way",
        ));
    }
    if let Some(first) = answering.first() {
        for (field, set) in [
            ("route", !h.route.is_empty()),
            ("mirror", h.mirror.is_some() || !h.mirrors.is_empty()),
            ("rewrite", h.rewrite.is_some()),
            ("retries", h.retries.is_some()),
        ] {
            if set {
                out.push(r.error(
                    Code::InvalidHttpAction,
                    &at.key(field),
                    format!("`{field}` cannot be combined with `{first}`"),
                    &format!("a `{first}` rule answers the client itself and forwards nothing"),
                ));
            }
        }
    }
    if h.mirror.is_some() && !h.mirrors.is_empty() {
        out.push(r.error(
            Code::InvalidHttpAction,
            &at.key("mirrors"),
            "`mirror` and `mirrors` are exclusive",
            "list every mirror under `mirrors`",
        ));
    }
    if let Some(p) = h.mirror_percentage.as_ref().and_then(|p| p.value)
        && !(0.0..=100.0).contains(&p)
    {
        out.push(r.error(
            Code::InvalidHttpAction,
            &at.key("mirrorPercentage").key("value"),
            format!("{p} is not a percentage"),
            "use a value from 0 to 100",
        ));
    }
    if let Some(p) = h.mirror_percent
        && p > 100
    {
        out.push(r.error(
            Code::InvalidHttpAction,
            &at.key("mirrorPercent"),
            format!("{p} is not a percentage"),
            "use a value from 0 to 100",
        ));
    }
    if let Some(rw) = &h.rewrite {
        if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
            out.push(r.error(
                Code::InvalidHttpAction,
                &at.key("rewrite"),
                "`uri` and `uriRegexRewrite` are exclusive",
                "keep one of them",
            ));
        }
        if let Some(rr) = &rw.uri_regex_rewrite {
            let rat = at.key("rewrite").key("uriRegexRewrite");
            match rr.pattern.as_deref() {
                None => out.push(r.error(
                    Code::InvalidHttpAction,
                    &rat,
                    "missing `match`",
                    "give the RE2 pattern",
                )),
                Some(p) => {
                    if let Err(e) = sluice_core::matching::compile_regex(p, false) {
                        out.push(r.error(
                            Code::InvalidHttpAction,
                            &rat.key("match"),
                            format!("invalid regex: {e}"),
                            "use RE2 syntax",
                        ));
                    }
                }
            }
            if rr.rewrite.is_none() {
                out.push(r.error(
                    Code::InvalidHttpAction,
                    &rat,
                    "missing `rewrite`",
                    "give the substitution",
                ));
            }
        }
    }
    if let Some(rd) = &h.redirect {
        let rat = at.key("redirect");
        if let Some(code) = rd.redirect_code
            && redirect_code(code).is_none()
        {
            out.push(r.error(
                Code::InvalidHttpAction,
                &rat.key("redirectCode"),
                format!("redirect code {code} is not one Envoy sends"),
                "use 301, 302, 303, 307 or 308",
            ));
        }
        if rd.uri.is_some() && rd.prefix_rewrite.is_some() {
            out.push(r.error(
                Code::InvalidHttpAction,
                &rat,
                "`uri` and `prefixRewrite` are exclusive",
                "keep one of them",
            ));
        }
        if rd.port.is_some() && rd.derive_port.is_some() {
            out.push(r.error(
                Code::InvalidHttpAction,
                &rat,
                "`port` and `derivePort` are exclusive",
                "keep one",
            ));
        }
        if let Some(d) = rd.derive_port.as_deref()
            && !matches!(d, "FROM_PROTOCOL_DEFAULT" | "FROM_REQUEST_PORT")
        {
            out.push(r.error(
                Code::InvalidHttpAction,
                &rat.key("derivePort"),
                format!("unknown derivePort {d:?}"),
                "use FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT",
            ));
        }
    }
    if let Some(dr) = &h.direct_response {
        let dat = at.key("directResponse");
        match dr.status {
            None => out.push(r.error(
                Code::InvalidHttpAction,
                &dat,
                "missing `status`",
                "give the HTTP status",
            )),
            Some(s) if !(200..=599).contains(&s) => out.push(r.error(
                Code::InvalidHttpAction,
                &dat.key("status"),
                format!("status {s} is outside 200-599"),
                "Envoy answers directly with a status from 200 to 599",
            )),
            Some(_) => {}
        }
        if let Some(b) = &dr.body
            && b.string.is_some() == b.bytes.is_some()
        {
            out.push(r.error(
                Code::InvalidHttpAction,
                &dat.key("body"),
                "give exactly one of `string` and `bytes`",
                "`bytes` is base64",
            ));
        }
    }
    if let Some(c) = &h.cors_policy {
        let cat = at.key("corsPolicy");
        for (i, o) in c.allow_origins.iter().enumerate() {
            let n = [&o.exact, &o.prefix, &o.regex]
                .iter()
                .filter(|v| v.is_some())
                .count();
            if n != 1 {
                out.push(r.error(
                    Code::InvalidHttpAction,
                    &cat.key("allowOrigins").index(i),
                    "give exactly one of `exact`, `prefix`, `regex`",
                    "e.g. {exact: https://example.com}",
                ));
            }
            if let Some(re) = &o.regex
                && let Err(e) = sluice_core::matching::compile_regex(re, false)
            {
                out.push(r.error(
                    Code::InvalidHttpAction,
                    &cat.key("allowOrigins").index(i).key("regex"),
                    format!("invalid regex: {e}"),
                    "use RE2 syntax",
                ));
            }
        }
        if let Some(u) = c.unmatched_preflights.as_deref()
            && !matches!(u, "UNSPECIFIED" | "FORWARD" | "IGNORE")
        {
            out.push(r.error(
                Code::InvalidHttpAction,
                &cat.key("unmatchedPreflights"),
                format!("unknown value {u:?}"),
                "use FORWARD or IGNORE",
            ));
        }
        if let Some(t) = c.max_age.as_deref()
            && sluice_core::duration::parse(t).is_err()
        {
            out.push(r.error(
                Code::InvalidHttpAction,
                &cat.key("maxAge"),
                format!("invalid duration {t:?}"),
                "use e.g. 24h or 600s",
            ));
        }
    }
}

/// Checks of `trafficPolicy.tls` and the native load-balancer settings.
pub fn check_policy(
    r: &Resource,
    at: &FieldPath,
    tp: &crate::istio::TrafficPolicy,
    out: &mut Vec<Diagnostic>,
) {
    let mut ports = std::collections::BTreeSet::new();
    for (i, p) in tp.port_level_settings.iter().enumerate() {
        let pat = at.key("portLevelSettings").index(i);
        match p.port.as_ref().and_then(|s| s.number) {
            None => out.push(r.error(
                Code::InvalidHttpAction,
                &pat,
                "missing `port: {number: ...}`",
                "name the service port these settings apply to",
            )),
            Some(n) if !ports.insert(n) => out.push(r.error(
                Code::InvalidHttpAction,
                &pat.key("port"),
                format!("port {n} already has settings"),
                "merge the two entries",
            )),
            Some(_) => {}
        }
        let as_policy = crate::istio::TrafficPolicy {
            load_balancer: p.load_balancer.clone(),
            tls: p.tls.clone(),
            ..Default::default()
        };
        check_policy(r, &pat, &as_policy, out);
    }
    if let Some(tls) = &tp.tls {
        let tat = at.key("tls");
        match tls.mode.as_deref().unwrap_or("DISABLE") {
            "DISABLE" | "SIMPLE" => {}
            "MUTUAL" => {
                for (field, v) in [
                    ("clientCertificate", &tls.client_certificate),
                    ("privateKey", &tls.private_key),
                ] {
                    if v.is_none() && tls.credential_name.is_none() {
                        out.push(r.error(
                            Code::InvalidHttpAction,
                            &tat,
                            format!("MUTUAL needs `{field}`"),
                            "give the file paths of the client certificate and key",
                        ));
                    }
                }
            }
            "ISTIO_MUTUAL" => out.push(r.error(
                Code::InvalidHttpAction,
                &tat.key("mode"),
                "ISTIO_MUTUAL needs Istio's certificate authority, which sluice does not run",
                "use MUTUAL with certificate files",
            )),
            other => out.push(r.error(
                Code::InvalidHttpAction,
                &tat.key("mode"),
                format!("unknown TLS mode {other:?}"),
                "use DISABLE, SIMPLE or MUTUAL",
            )),
        }
        if tls.credential_name.is_some() {
            // Istio's validation: the secret carries the certificates, so files are exclusive.
            let files = [
                ("clientCertificate", &tls.client_certificate),
                ("privateKey", &tls.private_key),
                ("caCertificates", &tls.ca_certificates),
            ];
            for (field, _) in files.iter().filter(|(_, v)| v.is_some()) {
                out.push(r.error(Code::InvalidHttpAction, &tat.key(field),
                    format!("`{field}` cannot be combined with `credentialName`"),
                    "the secret holds the certificates (DIR/<credentialName>/tls.crt, tls.key, ca.crt with `--credentials-dir DIR`): keep one of them",
                ));
            }
        }
    }
    if let Some(pp) = &tp.proxy_protocol
        && proxy_protocol_version(pp).is_none()
    {
        out.push(r.error(
            Code::InvalidHttpAction,
            &at.key("proxyProtocol").key("version"),
            format!(
                "unknown PROXY protocol version {:?}",
                pp.version.as_deref().unwrap_or_default()
            ),
            "use V1 (text) or V2 (binary)",
        ));
    }
    if let Some(rb) = &tp.retry_budget {
        let rat = at.key("retryBudget");
        if let Some(p) = rb.percent
            && !(0.0..=100.0).contains(&p)
        {
            out.push(r.error(
                Code::InvalidHttpAction,
                &rat.key("percent"),
                format!("{p} is not a percentage"),
                "use a value from 0 to 100 (Envoy's default is 20)",
            ));
        }
        if rb.budget_interval.is_some() {
            out.push(r.diag(Code::Ignored, crate::diag::Severity::Warning,
                &rat.key("budgetInterval"),
                "ignored: Envoy's retry budget counts the requests active at each moment and has no interval",
                Some("remove `budgetInterval`; `percent` and `minRetryConcurrency` apply".into()),
            ));
        }
        if let Some(n) = tp
            .connection_pool
            .as_ref()
            .and_then(|c| c.http.as_ref())
            .and_then(|h| h.max_retries)
        {
            out.push(r.diag(Code::Ignored, crate::diag::Severity::Warning,
                &at.key("connectionPool").key("http").key("maxRetries"),
                format!("maxRetries {n} has no effect: Envoy ignores the retry limit of a cluster with a retry budget"),
                Some("remove `maxRetries`, or the `retryBudget` if a fixed limit is what you want".into()),
            ));
        }
    }
    if let Some(ch) = tp
        .load_balancer
        .as_ref()
        .and_then(|l| l.consistent_hash.as_ref())
        && hash_key(ch).is_none()
    {
        out.push(r.error(Code::InvalidHttpAction, &at.key("loadBalancer").key("consistentHash"),
            "no hash key",
            "give one of httpHeaderName, httpCookie {name, ttl}, useSourceIp, httpQueryParameterName",
        ));
    }
}

/// Envoy's `RedirectResponseCode` for an HTTP status.
pub fn redirect_code(code: u32) -> Option<&'static str> {
    Some(match code {
        301 => "MOVED_PERMANENTLY",
        302 => "FOUND",
        303 => "SEE_OTHER",
        307 => "TEMPORARY_REDIRECT",
        308 => "PERMANENT_REDIRECT",
        _ => return None,
    })
}

/// `ServerTLSSettings` of a Gateway server, as far as sluice reads it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTlsSettings {
    /// Answer plain HTTP with a 301 to HTTPS (on an HTTP server).
    pub https_redirect: Option<bool>,
    /// `SIMPLE`, `MUTUAL` (`PASSTHROUGH`, `AUTO_PASSTHROUGH`, `ISTIO_MUTUAL` are refused).
    pub mode: Option<String>,
    /// Server certificate chain file.
    pub server_certificate: Option<String>,
    /// Private key file.
    pub private_key: Option<String>,
    /// CA bundle that verifies client certificates (MUTUAL).
    pub ca_certificates: Option<String>,
    /// Kubernetes secret name: sluice has no secret store, so a server that only names a secret
    /// gets no listener (a warning); give the files instead.
    pub credential_name: Option<String>,
    /// Accepted client certificate names (MUTUAL).
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// `TLSV1_0` .. `TLSV1_3`.
    pub min_protocol_version: Option<String>,
    /// `TLSV1_0` .. `TLSV1_3`.
    pub max_protocol_version: Option<String>,
    /// OpenSSL cipher suite names.
    #[serde(default)]
    pub cipher_suites: Vec<String>,
}

/// TLS termination of a gateway listener, resolved to files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// Certificate chain file.
    pub certificate: String,
    /// Private key file.
    pub private_key: String,
    /// Client CA bundle (MUTUAL and OPTIONAL_MUTUAL).
    pub client_ca: Option<String>,
    /// MUTUAL: refuse clients without a certificate (OPTIONAL_MUTUAL verifies one if sent).
    pub require_client_certificate: bool,
    /// Accepted client certificate names.
    pub subject_alt_names: Vec<String>,
    /// Envoy `tls_minimum_protocol_version`.
    pub min_version: Option<String>,
    /// Envoy `tls_maximum_protocol_version`.
    pub max_version: Option<String>,
    /// Envoy `cipher_suites`.
    pub cipher_suites: Vec<String>,
}

/// What a Gateway server asks of its listener's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerTlsUse {
    /// Plain HTTP.
    None,
    /// Plain HTTP that redirects every request to HTTPS.
    HttpsRedirect,
    /// Terminate TLS.
    Terminate(ServerTls),
}

/// Resolves a Gateway server's `tls` (reporting what sluice cannot do). `None`: the server gets
/// no listener.
pub fn server_tls(
    r: &Resource,
    at: &FieldPath,
    protocol: &str,
    tls: Option<&serde_json::Value>,
    out: &mut Vec<Diagnostic>,
) -> Option<ServerTlsUse> {
    let tat = at.key("tls");
    let settings: ServerTlsSettings = match tls {
        None => ServerTlsSettings::default(),
        Some(v) => match serde_json::from_value(v.clone()) {
            Ok(s) => s,
            Err(e) => {
                out.push(r.error(
                    Code::InvalidHttpAction,
                    &tat,
                    format!("invalid tls: {e}"),
                    "see Istio's ServerTLSSettings",
                ));
                return None;
            }
        },
    };
    if protocol != "HTTPS" {
        if settings.https_redirect == Some(true) {
            return Some(ServerTlsUse::HttpsRedirect);
        }
        return Some(ServerTlsUse::None);
    }
    let mode = settings.mode.as_deref().unwrap_or("SIMPLE");
    let mutual = match mode {
        "SIMPLE" => false,
        "MUTUAL" | "OPTIONAL_MUTUAL" => true,
        other => {
            out.push(r.error(
                Code::TargetCannotExpress,
                &tat.key("mode"),
                format!("TLS mode {other} is not supported by the envoy target"),
                "use SIMPLE or MUTUAL with certificate files (sluice terminates TLS)",
            ));
            return None;
        }
    };
    let (Some(certificate), Some(private_key)) = (
        settings.server_certificate.clone(),
        settings.private_key.clone(),
    ) else {
        if settings.credential_name.is_some() {
            // The seeds name secrets; refusing them would refuse the seeds, so warn instead.
            out.push(r.diag(Code::Ignored, crate::diag::Severity::Warning,
                &tat.key("credentialName"),
                "`credentialName` names a Kubernetes secret, which the envoy target cannot read without `--credentials-dir`: this server gets no listener",
                Some("pass `--credentials-dir DIR` with DIR/<credentialName>/tls.crt and tls.key (and ca.crt for MUTUAL), or give `serverCertificate` and `privateKey` file paths".into()),
            ));
        } else {
            out.push(r.error(
                Code::InvalidHttpAction,
                &tat,
                "an HTTPS server needs a certificate",
                "give `serverCertificate` and `privateKey` file paths",
            ));
        }
        return None;
    };
    let client_ca = if mutual {
        let ca = settings.ca_certificates.clone();
        if ca.is_none() {
            out.push(r.error(
                Code::InvalidHttpAction,
                &tat,
                "MUTUAL needs `caCertificates` to verify clients",
                "give the CA bundle file path",
            ));
            return None;
        }
        ca
    } else {
        None
    };
    let version = |v: &Option<String>, field: &str, out: &mut Vec<Diagnostic>| match v.as_deref() {
        None | Some("TLS_AUTO") => None,
        Some(v @ ("TLSV1_0" | "TLSV1_1" | "TLSV1_2" | "TLSV1_3")) => Some(v.to_owned()),
        Some(other) => {
            out.push(r.error(
                Code::InvalidHttpAction,
                &tat.key(field),
                format!("unknown TLS version {other:?}"),
                "use TLSV1_0, TLSV1_1, TLSV1_2 or TLSV1_3",
            ));
            None
        }
    };
    Some(ServerTlsUse::Terminate(ServerTls {
        certificate,
        private_key,
        client_ca,
        require_client_certificate: mode == "MUTUAL",
        subject_alt_names: settings.subject_alt_names.clone(),
        min_version: version(&settings.min_protocol_version, "minProtocolVersion", out),
        max_version: version(&settings.max_protocol_version, "maxProtocolVersion", out),
        cipher_suites: settings.cipher_suites.clone(),
    }))
}
