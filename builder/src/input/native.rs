//! The Istio types of the settings Envoy implements natively (no sluice filter involved):
//! rewrites, redirects, direct responses, header operations, mirrors, CORS, client and server
//! TLS, PROXY protocol, retry budgets, port-level policies, and the typed reading of
//! `consistentHash`. Their checks are [`crate::check::native`], their resolved form
//! [`crate::model::native`], their Envoy JSON [`crate::xds::native`].

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::input::istio::{Destination, HttpRoute, Percent, StringMatch};

/// `HTTPRewrite`.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Deserialize)]
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
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegexRewrite {
    /// RE2 pattern.
    #[serde(rename = "match")]
    pub pattern: Option<String>,
    /// Substitution (`\1` for groups).
    pub rewrite: Option<String>,
}

/// `HTTPRedirect`.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Deserialize)]
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
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpDirectResponse {
    /// Status code.
    pub status: Option<u32>,
    /// Body.
    pub body: Option<HttpBody>,
}

/// `HTTPBody`: one of `string` or `bytes` (base64).
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpBody {
    /// Text body.
    pub string: Option<String>,
    /// Base64-encoded body.
    pub bytes: Option<String>,
}

/// `Headers`: operations on request and response headers.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Headers {
    /// Operations on the request sent upstream.
    pub request: Option<HeaderOperations>,
    /// Operations on the response sent downstream.
    pub response: Option<HeaderOperations>,
}

/// `Headers.HeaderOperations`.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Deserialize)]
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
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpMirrorPolicy {
    /// Where copies go.
    pub destination: Option<Destination>,
    /// Share of requests copied (default 100).
    pub percentage: Option<Percent>,
}

/// `CorsPolicy`.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Deserialize)]
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
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Deserialize)]
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
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyProtocol {
    /// `V1` (text line, Istio's default) or `V2` (binary).
    pub version: Option<String>,
}

/// `TrafficPolicy.RetryBudget`: Envoy's `circuit_breakers.thresholds[].retry_budget`, which
/// replaces the fixed `max_retries` limit of the cluster.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Deserialize)]
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
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortTrafficPolicy {
    /// The service port these settings apply to.
    pub port: Option<crate::input::istio::PortSelector>,
    /// Overrides the policy's `loadBalancer`.
    pub load_balancer: Option<crate::input::istio::LoadBalancerSettings>,
    /// Overrides the policy's `connectionPool`.
    pub connection_pool: Option<crate::input::istio::ConnectionPoolSettings>,
    /// Overrides the policy's `outlierDetection`.
    pub outlier_detection: Option<crate::input::istio::OutlierDetection>,
    /// Overrides the policy's `tls`.
    pub tls: Option<ClientTls>,
}

/// `policy` as it applies to `port`: its `portLevelSettings` entry for the port (if any)
/// replaces each field group it sets, as Istio applies port-level settings.
pub fn at_port(
    policy: &crate::input::istio::TrafficPolicy,
    port: u32,
) -> crate::input::istio::TrafficPolicy {
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

/// The key part of Istio's `LoadBalancerSettings.ConsistentHashLB`, read from its JSON (the
/// checks refuse a `consistentHash` without one; the model resolves it into
/// [`crate::model::policy::HashKey`]).
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
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

/// Whether the route answers locally (and so needs no `route`).
pub fn answers_locally(h: &HttpRoute) -> bool {
    h.redirect.is_some() || h.direct_response.is_some()
}

/// The consistent-hash key of a `loadBalancer.consistentHash` value (kept as JSON in
/// [`crate::input::istio::LoadBalancerSettings`]).
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

/// Whether `code` is a redirect status Istio's `redirectCode` takes (301, 302, 303, 307, 308).
pub fn is_redirect_code(code: u32) -> bool {
    matches!(code, 301 | 302 | 303 | 307 | 308)
}

/// `ServerTLSSettings` of a Gateway server, as far as sluice reads it.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Deserialize)]
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
