//! Istio traffic settings that Envoy implements natively (no sluice filter involved), in their
//! resolved form, sluice's own types: mirrors resolved to clusters, rewrites, redirects and
//! direct responses, header operations (Host and pseudo-headers turned into the authority, as
//! Istio does), CORS policies, hash keys, passthrough endpoints, gateway TLS resolved to files.
//!
//! The translation follows Istio's own (pilot's `networking/core/route` and `cluster` code):
//! mirrors become `request_mirror_policies`, rewrites `prefix_rewrite`/`regex_rewrite`/
//! `host_rewrite_literal`, redirects and direct responses replace the route action, header
//! operations become `request_headers_to_add`/`..._remove`, `corsPolicy` configures Envoy's CORS
//! filter per route, `consistentHash` becomes a hash policy on the route plus a ring-hash or
//! Maglev cluster, and `trafficPolicy.tls` an upstream TLS transport socket. The input types are
//! [`crate::input::native`], their checks [`crate::check::native`], the cluster side's resolved
//! types [`crate::model::policy`], the Envoy JSON [`crate::xds::native`].

use std::collections::BTreeMap;
use std::time::Duration;

use crate::diag::{Code, Diagnostic};
use crate::input::istio::{Destination, HttpRoute, StringMatch};
use crate::input::native::{
    CorsPolicy, HeaderOperations, Headers, HttpDirectResponse, HttpRedirect, HttpRewrite,
    ServerTlsSettings, is_redirect_code,
};
use crate::input::parse::Resource;
pub use crate::model::policy::{HashKey, HealthCheck};
use crate::position::FieldPath;

/// The health check of a host: the DestinationRule's annotation, else the ServiceEntry's
/// (invalid ones are reported by [`crate::check::native::check_health_check`]).
pub fn health_check(dr: Option<&Resource>, se: &Resource) -> Option<HealthCheck> {
    dr.into_iter()
        .chain([se])
        .find_map(|r| r.annotations.health_check.as_ref())
        .and_then(|parsed| parsed.as_ref().ok().map(HealthCheck::resolve))
}

/// A mirror resolved to its cluster.
#[derive(serde::Serialize, Debug, Clone, PartialEq)]
pub struct Mirror {
    /// `outbound|<port>|<subset>|<host>`.
    pub cluster: String,
    /// Share of requests copied, 0-100 (`None` = all).
    pub percent: Option<f64>,
}

/// `rewrite`: what a forwarding rule changes in the request.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// The new Host/`:authority`.
    pub authority: Option<String>,
    /// The new path.
    pub path: Option<PathRewrite>,
}

/// How a rewrite or redirect changes the path.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub enum PathRewrite {
    /// `rewrite.uri`: replaces the part of the path the rule matched (see
    /// [`RouteExtras::uri_matches`]).
    MatchedPrefix(String),
    /// `rewrite.uriRegexRewrite`: an RE2 substitution on the path.
    Regex {
        /// RE2 pattern.
        pattern: String,
        /// Substitution (`\1` for groups).
        substitution: String,
    },
}

/// `redirect`: the rule answers with a redirect.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `uri`: replaces the whole path.
    pub path: Option<String>,
    /// `prefixRewrite`: replaces the part of the path the rule matched.
    pub prefix_rewrite: Option<String>,
    /// `authority`.
    pub authority: Option<String>,
    /// `port`, or the listener's port for `derivePort: FROM_REQUEST_PORT`.
    pub port: Option<u32>,
    /// `scheme`.
    pub scheme: Option<String>,
    /// `redirectCode` (301, 302, 303, 307 or 308; Istio's default 301).
    pub status: u32,
}

/// `directResponse`: the rule answers by itself.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct DirectResponse {
    /// Status code (default 200).
    pub status: u32,
    /// Body.
    pub body: Option<Body>,
}

/// A direct response's body.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `body.string`.
    Text(String),
    /// `body.bytes`, base64 as written.
    Base64(String),
}

/// Header operations of a rule or destination, as Envoy applies them: Host and pseudo-headers
/// removed from the operations (Envoy refuses to touch them) and a request's Host `set` or
/// `add` turned into [`HeaderOps::authority`] (Istio's `TranslateHeadersOperations`); names in
/// lower case.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderOps {
    /// On the request sent upstream.
    pub request: HeaderChanges,
    /// On the response sent downstream.
    pub response: HeaderChanges,
    /// The Host a request `set` (else `add`) of `host` or `:authority` asks for.
    pub authority: Option<String>,
}

/// The operations on one direction's headers.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderChanges {
    /// Overwrite (or add) these headers.
    pub set: Vec<(String, String)>,
    /// Append these values.
    pub add: Vec<(String, String)>,
    /// Remove these headers.
    pub remove: Vec<String>,
}

impl HeaderOps {
    /// Resolves Istio's `headers`.
    pub fn resolve(h: &Headers) -> Self {
        Self {
            request: HeaderChanges::resolve(h.request.as_ref()),
            response: HeaderChanges::resolve(h.response.as_ref()),
            authority: h.request.as_ref().and_then(|ops| {
                authority_in(&ops.set)
                    .or_else(|| authority_in(&ops.add))
                    .map(str::to_owned)
            }),
        }
    }
}

impl HeaderChanges {
    fn resolve(ops: Option<&HeaderOperations>) -> Self {
        let Some(ops) = ops else {
            return Self::default();
        };
        let entries = |m: &BTreeMap<String, String>| {
            m.iter()
                .filter(|(k, _)| !is_internal_header(k))
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect()
        };
        Self {
            set: entries(&ops.set),
            add: entries(&ops.add),
            remove: ops
                .remove
                .iter()
                .filter(|n| !is_internal_header(n))
                .map(|n| n.to_ascii_lowercase())
                .collect(),
        }
    }
}

fn authority_in(m: &BTreeMap<String, String>) -> Option<&str> {
    m.iter()
        .find(|(k, _)| is_authority_header(k))
        .map(|(_, v)| v.as_str())
}

/// Istio's `isAuthorityHeader`.
fn is_authority_header(key: &str) -> bool {
    key.eq_ignore_ascii_case(":authority") || key.eq_ignore_ascii_case("host")
}

/// Istio's `isInternalHeader`: pseudo-headers and Host, which header operations never touch
/// (Envoy refuses such a config). Their `set`/`add` on requests become the Host rewrite.
fn is_internal_header(key: &str) -> bool {
    key.starts_with(':') || key.eq_ignore_ascii_case("host")
}

/// `corsPolicy`, resolved.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    /// Allowed origins: the deprecated exact `allowOrigin` first, then `allowOrigins`.
    pub allow_origins: Vec<OriginMatch>,
    /// `Access-Control-Allow-Methods`.
    pub allow_methods: Vec<String>,
    /// `Access-Control-Allow-Headers`.
    pub allow_headers: Vec<String>,
    /// `Access-Control-Expose-Headers`.
    pub expose_headers: Vec<String>,
    /// `Access-Control-Max-Age`.
    pub max_age: Option<Duration>,
    /// `Access-Control-Allow-Credentials`.
    pub allow_credentials: Option<bool>,
    /// `unmatchedPreflights: IGNORE`: preflights from origins not allowed are not forwarded.
    pub ignore_unmatched_preflights: bool,
}

/// One allowed origin.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub enum OriginMatch {
    /// The whole origin.
    Exact(String),
    /// Its beginning.
    Prefix(String),
    /// An RE2 pattern.
    Regex(String),
}

impl Cors {
    /// Resolves Istio's `corsPolicy`.
    pub fn resolve(c: &CorsPolicy) -> Self {
        let origins = c
            .allow_origin
            .iter()
            .map(|o| OriginMatch::Exact(o.clone()))
            .chain(c.allow_origins.iter().filter_map(|o| {
                if let Some(e) = &o.exact {
                    Some(OriginMatch::Exact(e.clone()))
                } else if let Some(p) = &o.prefix {
                    Some(OriginMatch::Prefix(p.clone()))
                } else {
                    o.regex.clone().map(OriginMatch::Regex)
                }
            }))
            .collect();
        Self {
            allow_origins: origins,
            allow_methods: c.allow_methods.clone(),
            allow_headers: c.allow_headers.clone(),
            expose_headers: c.expose_headers.clone(),
            max_age: c
                .max_age
                .as_deref()
                .and_then(|t| sluice_core::duration::parse(t).ok()),
            allow_credentials: c.allow_credentials,
            ignore_unmatched_preflights: c.unmatched_preflights.as_deref() == Some("IGNORE"),
        }
    }
}

/// A URI match block of a rule, as the path rewrites read it.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct UriMatch {
    /// What the block matches.
    pub path: PathMatch,
    /// `ignoreUriCase`.
    pub ignore_case: bool,
}

/// The path a URI match block matches.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// Paths starting with this.
    Prefix(String),
    /// This path.
    Exact(String),
    /// A regex (or no condition): the whole path is what matched.
    Whole,
}

impl UriMatch {
    fn resolve(m: &StringMatch, ignore_case: bool) -> Self {
        let path = if let Some(p) = &m.prefix {
            PathMatch::Prefix(p.clone())
        } else if let Some(e) = &m.exact {
            PathMatch::Exact(e.clone())
        } else {
            PathMatch::Whole
        };
        Self { path, ignore_case }
    }
}

/// Everything native about one rule, resolved: what the Envoy route does besides forwarding.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq)]
pub struct RouteExtras {
    /// Copies of the requests to other clusters.
    pub mirrors: Vec<Mirror>,
    /// Path/authority rewrite.
    pub rewrite: Option<Rewrite>,
    /// Answer with a redirect instead of forwarding.
    pub redirect: Option<Redirect>,
    /// Answer directly instead of forwarding.
    pub direct_response: Option<DirectResponse>,
    /// Route-level header operations.
    pub headers: Option<HeaderOps>,
    /// Per-destination header operations, by cluster (destinations without `headers` omitted).
    pub destination_headers: BTreeMap<String, HeaderOps>,
    /// CORS policy for Envoy's CORS filter.
    pub cors: Option<Cors>,
    /// Hash policy for consistent-hash destinations.
    pub hash: Option<HashKey>,
    /// URI match blocks of the rule, for the prefix rewrite of `rewrite.uri`.
    pub uri_matches: Vec<UriMatch>,
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
    cluster.load_balancing.algorithm == crate::model::policy::LbAlgorithm::Passthrough
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

    /// The Host a forwarding rule sets for every destination, as Istio orders it:
    /// `rewrite.authority`, else a `host` / `:authority` entry of the rule's `headers.request`.
    pub fn authority(&self) -> Option<&str> {
        self.rewrite
            .as_ref()
            .and_then(|rw| rw.authority.as_deref())
            .or_else(|| self.headers.as_ref()?.authority.as_deref())
    }
}

/// A placeholder cluster value the router sends for rules that answer locally: Envoy's
/// redirect and direct-response routes never read `x-sluice-cluster`, but every sluice rule has
/// a destination in the router's config.
pub const NO_UPSTREAM: &str = "sluice-local-response";

fn rewrite(rw: &HttpRewrite) -> Rewrite {
    let path = if let Some(uri) = &rw.uri {
        Some(PathRewrite::MatchedPrefix(uri.clone()))
    } else {
        rw.uri_regex_rewrite.as_ref().map(|rr| PathRewrite::Regex {
            pattern: rr.pattern.clone().unwrap_or_default(),
            substitution: rr.rewrite.clone().unwrap_or_default(),
        })
    };
    Rewrite {
        authority: rw.authority.clone(),
        path,
    }
}

/// The redirect of a rule on `listener_port`. Envoy cannot copy the request's port into a
/// redirect; Istio knows the port each route is generated for and writes it
/// (`FROM_REQUEST_PORT`). `FROM_PROTOCOL_DEFAULT` sets no port, as Istio leaves Envoy's
/// `port_redirect` unset.
fn redirect(r: &HttpRedirect, listener_port: u32) -> Redirect {
    let port = if r.derive_port.as_deref() == Some("FROM_REQUEST_PORT") {
        Some(listener_port)
    } else {
        r.port
    };
    Redirect {
        path: r.uri.clone(),
        prefix_rewrite: r.prefix_rewrite.clone(),
        authority: r.authority.clone(),
        port,
        scheme: r.scheme.clone(),
        // Istio's default is 301, Envoy's too.
        status: r
            .redirect_code
            .filter(|c| is_redirect_code(*c))
            .unwrap_or(301),
    }
}

fn direct_response(d: &HttpDirectResponse) -> DirectResponse {
    DirectResponse {
        status: d.status.unwrap_or(200),
        body: d.body.as_ref().and_then(|b| {
            b.string
                .clone()
                .map(Body::Text)
                .or_else(|| b.bytes.clone().map(Body::Base64))
        }),
    }
}

/// Resolves the native extras of `h` on a listener of `listener_port`. `resolve` turns a mirror
/// destination into its cluster name (reporting unknown hosts itself); `hash_of` gives the
/// consistent-hash key of a cluster.
pub fn route_extras(
    h: &HttpRoute,
    target_clusters: &[String],
    mut resolve: impl FnMut(&FieldPath, &Destination) -> Option<String>,
    hash_of: impl Fn(&str) -> Option<HashKey>,
    at: &FieldPath,
    listener_port: u32,
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
        .filter_map(|(d, cluster)| Some((cluster.clone(), HeaderOps::resolve(d.headers.as_ref()?))))
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
        rewrite: h.rewrite.as_ref().map(rewrite),
        redirect: h.redirect.as_ref().map(|r| redirect(r, listener_port)),
        direct_response: h.direct_response.as_ref().map(direct_response),
        headers: h.headers.as_ref().map(HeaderOps::resolve),
        destination_headers,
        cors: h.cors_policy.as_ref().map(Cors::resolve),
        hash,
        uri_matches: h
            .matches
            .iter()
            .filter_map(|m| {
                Some(UriMatch::resolve(
                    m.uri.as_ref()?,
                    m.ignore_uri_case.unwrap_or(false),
                ))
            })
            .collect(),
        passthrough_endpoints: Vec::new(),
        stat_prefix: h.matches.iter().find_map(|m| m.stat_prefix.clone()),
    }
}

/// The consistent-hash key of a cluster's load-balancer policy, if it hashes.
pub fn cluster_hash(cluster: &crate::model::Cluster) -> Option<HashKey> {
    cluster.load_balancing.hash_key.clone()
}

/// TLS termination of a gateway listener, resolved to files.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
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
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
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
