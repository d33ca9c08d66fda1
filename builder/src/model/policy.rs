//! A cluster's upstream policy in sluice's own types, resolved once from the Istio
//! `trafficPolicy` (the host's merged with the subset's, port-level settings applied): the
//! connection pool, outlier detection, upstream TLS, retry budget and PROXY protocol
//! ([`ClusterPolicy`]), the load balancing (algorithm, consistent-hash key and ring, slow start,
//! locality settings: [`LoadBalancing`]) and the active health check ([`HealthCheck`]).
//!
//! Istio keeps some of these as free-form JSON or text in its input types (`consistentHash`,
//! `warmup`, `tcpKeepalive`, durations); they are read here, once, so emission
//! ([`crate::xds`]) writes Envoy fields from typed values instead of interpreting input again.
//! Values the checks ([`crate::check::native`]) refuse never reach this point; a value they let
//! through that has no meaning here resolves to "not set", as before.

use std::time::Duration;

use crate::input::istio::{ConnectionPoolSettings, LoadBalancerSettings, TrafficPolicy};
use crate::input::native::{ClientTls, hash_key, proxy_protocol_version};

/// Where TLS origination finds trusted CAs when `caCertificates` is not given (Debian's and
/// Istio's proxy image's system bundle): the server is verified unless `insecureSkipVerify`.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Istio's connect timeout when `connectionPool.tcp.connectTimeout` is unset.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How Envoy's route hashes a request for a consistent-hash cluster (Istio
/// `LoadBalancerSettings.ConsistentHashLB`, the key part).
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// A request header (lower case).
    Header(String),
    /// A cookie, created by Envoy when absent and `ttl` is set.
    Cookie {
        /// Cookie name.
        name: String,
        /// Cookie path.
        path: Option<String>,
        /// Cookie lifetime.
        ttl: Option<Duration>,
    },
    /// The client's IP address.
    SourceIp,
    /// A query parameter.
    QueryParameter(String),
}

/// How a consistent-hash cluster spreads its keys over endpoints.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub enum HashRing {
    /// Envoy `MAGLEV`, with its lookup table size (`None`: Envoy's default).
    Maglev {
        /// `maglev.tableSize`.
        table_size: Option<u64>,
    },
    /// Envoy `RING_HASH`, with its minimum ring size (`None`: Envoy's default).
    RingHash {
        /// `ringHash.minimumRingSize` (or the deprecated top-level `minimumRingSize`).
        minimum_ring_size: Option<u64>,
    },
}

/// Slow start of a round-robin or least-request cluster: a new endpoint's weight grows over a
/// window (Istio `warmupDurationSecs` or `warmup`).
#[derive(serde::Serialize, Debug, Clone, PartialEq)]
pub struct SlowStart {
    /// The ramp-up window.
    pub window: Duration,
    /// How fast the weight grows (`warmup.aggression`; Envoy's default 1.0 is linear).
    pub aggression: Option<f64>,
    /// The weight a new endpoint starts from, in percent (`warmup.minimumPercent`).
    pub min_weight_percent: Option<f64>,
}

/// The load-balancing algorithm of `loadBalancer.simple`.
#[derive(serde::Serialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LbAlgorithm {
    /// `ROUND_ROBIN`.
    RoundRobin,
    /// `RANDOM`.
    Random,
    /// `LEAST_REQUEST`, `LEAST_CONN` and unset: Istio's default.
    #[default]
    LeastRequest,
    /// `PASSTHROUGH`: forward to the endpoint the request names (Envoy `ORIGINAL_DST`).
    Passthrough,
}

/// A cluster's load balancing, resolved.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq)]
pub struct LoadBalancing {
    /// The algorithm (a consistent-hash ring, when set, replaces it).
    pub algorithm: LbAlgorithm,
    /// What a route to the cluster hashes (header, cookie, source IP, query parameter), when
    /// it hashes.
    pub hash_key: Option<HashKey>,
    /// The consistent-hash ring, when the cluster hashes.
    pub hash_ring: Option<HashRing>,
    /// Slow start, when configured.
    pub slow_start: Option<SlowStart>,
    /// Locality-aware balancing (`localityLbSetting`, unless `enabled: false`), applied for a
    /// proxy's locality by [`crate::model::locality::apply`].
    pub locality: Option<crate::model::locality::LocalityLb>,
}

/// `connectionPool`, resolved: the limits and options Envoy's cluster takes.
#[derive(serde::Serialize, Debug, Clone, PartialEq)]
pub struct ConnectionPool {
    /// `tcp.connectTimeout` (Istio's default 10s).
    pub connect_timeout: Duration,
    /// `tcp.maxConnections` (`None`: unlimited).
    pub max_connections: Option<u64>,
    /// `http.http1MaxPendingRequests` (`None`: unlimited).
    pub max_pending_requests: Option<u64>,
    /// `http.http2MaxRequests` (`None`: unlimited).
    pub max_requests: Option<u64>,
    /// `http.maxRetries` (`None`: unlimited).
    pub max_retries: Option<u64>,
    /// `http.maxRequestsPerConnection`, when positive.
    pub max_requests_per_connection: Option<i64>,
    /// `http.idleTimeout`.
    pub idle_timeout: Option<Duration>,
    /// `tcp.tcpKeepalive`.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// `tcp.maxConnectionDuration`.
    pub max_connection_duration: Option<Duration>,
    /// `http.maxConcurrentStreams`, when positive.
    pub max_concurrent_streams: Option<i64>,
    /// `http.useClientProtocol`: speak the downstream's protocol upstream.
    pub use_client_protocol: bool,
    /// `http.h2UpgradePolicy: UPGRADE`: speak HTTP/2 upstream whatever the port's protocol.
    pub h2_upgrade: bool,
}

impl Default for ConnectionPool {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_connections: None,
            max_pending_requests: None,
            max_requests: None,
            max_retries: None,
            max_requests_per_connection: None,
            idle_timeout: None,
            tcp_keepalive: None,
            max_connection_duration: None,
            max_concurrent_streams: None,
            use_client_protocol: false,
            h2_upgrade: false,
        }
    }
}

/// `tcp.tcpKeepalive`, resolved.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpKeepalive {
    /// `probes`.
    pub probes: Option<u64>,
    /// `time`: idle time before the first probe.
    pub time: Option<Duration>,
    /// `interval`: time between probes.
    pub interval: Option<Duration>,
}

/// `outlierDetection`, resolved.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct OutlierDetection {
    /// `consecutive5xxErrors` (or the deprecated `consecutiveErrors`).
    pub consecutive_5xx: Option<i64>,
    /// `consecutiveGatewayErrors`.
    pub consecutive_gateway: Option<i64>,
    /// `interval`.
    pub interval: Option<Duration>,
    /// `baseEjectionTime`.
    pub base_ejection_time: Option<Duration>,
    /// `maxEjectionPercent`.
    pub max_ejection_percent: Option<i64>,
    /// `minHealthPercent`: Envoy's panic threshold.
    pub min_health_percent: Option<i64>,
    /// `splitExternalLocalOriginErrors`.
    pub split_local_origin_errors: bool,
    /// `consecutiveLocalOriginFailures`, when local-origin errors are split.
    pub consecutive_local_origin_failures: Option<i64>,
}

/// Files of a certificate and its private key.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// Certificate chain file.
    pub certificate_chain: String,
    /// Private key file.
    pub private_key: String,
}

/// How the upstream server is verified.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ServerVerification {
    /// CA bundle file (`caCertificates`, a secret's `ca.crt`, else [`SYSTEM_CA_BUNDLE`]).
    pub trusted_ca: String,
    /// Accepted server names (the DestinationRule's, else the ServiceEntry's).
    pub subject_alt_names: Vec<String>,
    /// CRL file.
    pub crl: Option<String>,
}

/// TLS origination to the upstream (`tls.mode` SIMPLE or MUTUAL), secrets resolved to files.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The client certificate (MUTUAL).
    pub client_certificate: Option<CertificateFiles>,
    /// Server verification; `None` with `insecureSkipVerify`.
    pub verify: Option<ServerVerification>,
    /// The SNI sent: `sni`, else the destination host when it is a name (Istio's auto SNI).
    pub sni: Option<String>,
}

/// `retryBudget`, resolved.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq)]
pub struct RetryBudget {
    /// `percent`.
    pub percent: Option<f64>,
    /// `minRetryConcurrency`.
    pub min_retry_concurrency: Option<u32>,
}

/// The PROXY protocol version written on each upstream connection.
#[derive(serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// Text header (Istio's default).
    V1,
    /// Binary header.
    V2,
}

/// A cluster's upstream policy, resolved (load balancing is [`LoadBalancing`]).
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq)]
pub struct ClusterPolicy {
    /// Connection limits and options.
    pub connection_pool: ConnectionPool,
    /// Outlier detection (Envoy's host ejection).
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS origination.
    pub tls: Option<UpstreamTls>,
    /// Cap on concurrent retries relative to active requests.
    pub retry_budget: Option<RetryBudget>,
    /// PROXY protocol header on each upstream connection.
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// The active health check of a cluster (`sluice.dev/health-check`), defaults applied.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path probed with GET; a 200 is healthy.
    pub path: String,
    /// Time between probes (default 10s).
    pub interval: Duration,
    /// Probe timeout (default 1s).
    pub timeout: Duration,
    /// Failed probes before a healthy endpoint is taken out (default 3).
    pub unhealthy_threshold: u32,
    /// Passed probes before an unhealthy endpoint is put back (default 1).
    pub healthy_threshold: u32,
}

impl HealthCheck {
    /// The annotation's settings with their defaults.
    pub fn resolve(hc: &crate::input::annotations::HealthCheck) -> Self {
        let or = |v: &Option<String>, default: u64| {
            duration(v.as_deref()).unwrap_or(Duration::from_secs(default))
        };
        Self {
            path: hc.path.clone(),
            interval: or(&hc.interval, 10),
            timeout: or(&hc.timeout, 1),
            unhealthy_threshold: hc.unhealthy_threshold.unwrap_or(3),
            healthy_threshold: hc.healthy_threshold.unwrap_or(1),
        }
    }
}

fn duration(text: Option<&str>) -> Option<Duration> {
    text.and_then(|t| sluice_core::duration::parse(t).ok())
}

/// The upstream policy of a cluster of `host` from its merged Istio `policy` (secrets already
/// resolved into the TLS settings, see `finish_client_tls` in [`crate::model`]).
pub fn cluster_policy(policy: &TrafficPolicy, host: &str) -> ClusterPolicy {
    ClusterPolicy {
        connection_pool: connection_pool(policy.connection_pool.as_ref()),
        outlier_detection: policy.outlier_detection.as_ref().map(|od| {
            let split = od.split_external_local_origin_errors == Some(true);
            OutlierDetection {
                consecutive_5xx: od.consecutive5xx_errors.or(od.consecutive_errors),
                consecutive_gateway: od.consecutive_gateway_errors,
                interval: duration(od.interval.as_deref()),
                base_ejection_time: duration(od.base_ejection_time.as_deref()),
                max_ejection_percent: od.max_ejection_percent,
                min_health_percent: od.min_health_percent,
                split_local_origin_errors: split,
                consecutive_local_origin_failures: od
                    .consecutive_local_origin_failures
                    .filter(|_| split),
            }
        }),
        tls: policy.tls.as_ref().and_then(|tls| upstream_tls(tls, host)),
        retry_budget: policy.retry_budget.as_ref().map(|rb| RetryBudget {
            percent: rb.percent,
            min_retry_concurrency: rb.min_retry_concurrency,
        }),
        proxy_protocol: policy
            .proxy_protocol
            .as_ref()
            .and_then(proxy_protocol_version)
            .map(|v| {
                if v == "V2" {
                    ProxyProtocol::V2
                } else {
                    ProxyProtocol::V1
                }
            }),
    }
}

/// Envoy's "unlimited" is what an unset or non-positive Istio limit means.
fn limit(v: Option<i64>) -> Option<u64> {
    v.and_then(|n| u64::try_from(n).ok()).filter(|n| *n > 0)
}

fn connection_pool(pool: Option<&ConnectionPoolSettings>) -> ConnectionPool {
    let tcp = pool.and_then(|p| p.tcp.as_ref());
    let http = pool.and_then(|p| p.http.as_ref());
    ConnectionPool {
        connect_timeout: duration(tcp.and_then(|t| t.connect_timeout.as_deref()))
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        max_connections: limit(tcp.and_then(|t| t.max_connections)),
        max_pending_requests: limit(http.and_then(|h| h.http1_max_pending_requests)),
        max_requests: limit(http.and_then(|h| h.http2_max_requests)),
        max_retries: limit(http.and_then(|h| h.max_retries)),
        max_requests_per_connection: http
            .and_then(|h| h.max_requests_per_connection)
            .filter(|n| *n > 0),
        idle_timeout: duration(http.and_then(|h| h.idle_timeout.as_deref())),
        tcp_keepalive: tcp
            .and_then(|t| t.tcp_keepalive.as_ref())
            .map(|ka| TcpKeepalive {
                probes: ka.get("probes").and_then(serde_json::Value::as_u64),
                time: duration(ka.get("time").and_then(serde_json::Value::as_str)),
                interval: duration(ka.get("interval").and_then(serde_json::Value::as_str)),
            }),
        max_connection_duration: duration(tcp.and_then(|t| t.max_connection_duration.as_deref())),
        max_concurrent_streams: http
            .and_then(|h| h.max_concurrent_streams)
            .filter(|n| *n > 0),
        use_client_protocol: http.and_then(|h| h.use_client_protocol) == Some(true),
        h2_upgrade: http.and_then(|h| h.h2_upgrade_policy.as_deref()) == Some("UPGRADE"),
    }
}

/// The TLS a cluster of `host` originates, for modes SIMPLE and MUTUAL (others originate none).
fn upstream_tls(tls: &ClientTls, host: &str) -> Option<UpstreamTls> {
    let mutual = match tls.mode.as_deref() {
        Some("MUTUAL") => true,
        Some("SIMPLE") => false,
        _ => return None,
    };
    let client_certificate = match (&tls.client_certificate, &tls.private_key) {
        (Some(cert), Some(key)) if mutual => Some(CertificateFiles {
            certificate_chain: cert.clone(),
            private_key: key.clone(),
        }),
        _ => None,
    };
    let verify = (tls.insecure_skip_verify != Some(true)).then(|| ServerVerification {
        trusted_ca: tls
            .ca_certificates
            .clone()
            .unwrap_or_else(|| SYSTEM_CA_BUNDLE.to_owned()),
        subject_alt_names: tls.subject_alt_names.clone(),
        crl: tls.ca_crl.clone(),
    });
    // Istio sends the destination host as SNI when none is set (auto SNI); a name, not an IP.
    let sni = tls.sni.clone().or_else(|| {
        (host.chars().any(|ch| ch.is_ascii_alphabetic()) && !host.contains('*'))
            .then(|| host.to_owned())
    });
    Some(UpstreamTls {
        client_certificate,
        verify,
        sni,
    })
}

/// The load balancing of `policy` (its `loadBalancer`, port-level settings already applied).
pub fn load_balancing(policy: &TrafficPolicy) -> LoadBalancing {
    let Some(lb) = &policy.load_balancer else {
        return LoadBalancing::default();
    };
    let algorithm = match lb.simple.as_deref() {
        Some("ROUND_ROBIN") => LbAlgorithm::RoundRobin,
        Some("RANDOM") => LbAlgorithm::Random,
        Some("PASSTHROUGH") => LbAlgorithm::Passthrough,
        _ => LbAlgorithm::LeastRequest, // Istio's default, and its mapping of LEAST_CONN
    };
    LoadBalancing {
        algorithm,
        hash_key: lb
            .consistent_hash
            .as_ref()
            .and_then(hash_key)
            .map(resolve_hash_key),
        hash_ring: hash_ring(lb),
        slow_start: slow_start(lb),
        locality: crate::input::locality::setting(policy)
            .and_then(crate::model::locality::LocalityLb::resolve),
    }
}

fn resolve_hash_key(key: crate::input::native::HashKey) -> HashKey {
    use crate::input::native::HashKey as Input;
    match key {
        Input::Header(name) => HashKey::Header(name),
        Input::Cookie { name, path, ttl } => HashKey::Cookie {
            name,
            path,
            ttl: duration(ttl.as_deref()),
        },
        Input::SourceIp => HashKey::SourceIp,
        Input::QueryParameter(name) => HashKey::QueryParameter(name),
    }
}

fn hash_ring(lb: &LoadBalancerSettings) -> Option<HashRing> {
    let ch = lb.consistent_hash.as_ref()?;
    Some(match ch.get("maglev") {
        Some(maglev) => HashRing::Maglev {
            table_size: maglev.get("tableSize").and_then(serde_json::Value::as_u64),
        },
        None => HashRing::RingHash {
            minimum_ring_size: ch
                .get("ringHash")
                .and_then(|r| r.get("minimumRingSize"))
                .or_else(|| ch.get("minimumRingSize"))
                .and_then(serde_json::Value::as_u64),
        },
    })
}

fn slow_start(lb: &LoadBalancerSettings) -> Option<SlowStart> {
    let warmup = lb.warmup.as_ref();
    let window = duration(lb.warmup_duration_secs.as_deref()).or_else(|| {
        duration(
            warmup
                .and_then(|w| w.get("duration"))
                .and_then(serde_json::Value::as_str),
        )
    })?;
    Some(SlowStart {
        window,
        aggression: warmup
            .and_then(|w| w.get("aggression"))
            .and_then(serde_json::Value::as_f64),
        min_weight_percent: warmup
            .and_then(|w| w.get("minimumPercent"))
            .and_then(serde_json::Value::as_f64),
    })
}
