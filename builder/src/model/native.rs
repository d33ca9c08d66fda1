//! Istio traffic settings that Envoy implements natively (no sluice filter involved), in their
//! resolved form: mirrors resolved to clusters, hash keys, passthrough endpoints, gateway TLS
//! resolved to files, active health checks.
//!
//! The translation follows Istio's own (pilot's `networking/core/route` and `cluster` code):
//! mirrors become `request_mirror_policies`, rewrites `prefix_rewrite`/`regex_rewrite`/
//! `host_rewrite_literal`, redirects and direct responses replace the route action, header
//! operations become `request_headers_to_add`/`..._remove`, `corsPolicy` configures Envoy's CORS
//! filter per route, `consistentHash` becomes a hash policy on the route plus a ring-hash or
//! Maglev cluster, and `trafficPolicy.tls` an upstream TLS transport socket. The input types are
//! [`crate::input::native`], their checks [`crate::check::native`], the Envoy JSON
//! [`crate::xds::native`].

use std::collections::BTreeMap;

use crate::diag::{Code, Diagnostic};
pub use crate::input::annotations::HealthCheck;
use crate::input::istio::{Destination, HttpRoute, StringMatch};
pub use crate::input::native::HashKey;
use crate::input::native::{
    CorsPolicy, Headers, HttpDirectResponse, HttpRedirect, HttpRewrite, ServerTlsSettings,
};
use crate::input::parse::Resource;
use crate::position::FieldPath;

/// The health check of a host: the DestinationRule's annotation, else the ServiceEntry's
/// (invalid ones are reported by [`crate::check::native::check_health_check`]).
pub fn health_check(dr: Option<&Resource>, se: &Resource) -> Option<HealthCheck> {
    dr.into_iter()
        .chain([se])
        .find_map(|r| r.annotations.health_check.as_ref())
        .and_then(|parsed| parsed.as_ref().ok().cloned())
}

/// A mirror resolved to its cluster.
#[derive(serde::Serialize, Debug, Clone, PartialEq)]
pub struct Mirror {
    /// `outbound|<port>|<subset>|<host>`.
    pub cluster: String,
    /// Share of requests copied, 0-100 (`None` = all).
    pub percent: Option<f64>,
}

/// Everything native about one rule, resolved: what the Envoy route does besides forwarding.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq)]
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
