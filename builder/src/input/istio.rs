//! The Istio `networking.istio.io` resources sluice reads, with Istio's field names and types
//! (checked against Istio's CRD schemas by a test).
//!
//! Only the fields sluice implements are modelled; any other key is collected by
//! `serde_ignored` in [`crate::input::parse`] and reported, either as "not supported yet" (Istio has it,
//! see [`UNSUPPORTED`]) or as an unknown field with a suggestion. Nothing is silently dropped.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `metadata` of a resource. Kubernetes bookkeeping fields are accepted (so `kubectl get -o yaml`
/// output can be fed in) and carry no meaning here.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Resource name (required).
    pub name: Option<String>,
    /// Namespace; `default` when absent, as `kubectl apply` would do.
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations; sluice-only settings live here (see docs).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Kubernetes bookkeeping, accepted and unused.
    pub uid: Option<serde_json::Value>,
    /// Kubernetes bookkeeping, accepted and unused.
    pub resource_version: Option<serde_json::Value>,
    /// Kubernetes bookkeeping, accepted and unused.
    pub generation: Option<serde_json::Value>,
    /// Kubernetes bookkeeping, accepted and unused.
    pub creation_timestamp: Option<serde_json::Value>,
    /// Kubernetes bookkeeping, accepted and unused.
    pub managed_fields: Option<serde_json::Value>,
}

/// One YAML document as Kubernetes shapes it.
#[derive(serde::Serialize, Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Object<S> {
    /// `networking.istio.io/v1`, `v1beta1` or `v1alpha3`.
    pub api_version: String,
    /// Resource kind.
    pub kind: String,
    /// Name and namespace.
    #[serde(default)]
    pub metadata: Metadata,
    /// The resource itself.
    pub spec: S,
    /// Status written by a cluster, accepted and unused.
    pub status: Option<serde_json::Value>,
}

/// `Gateway.spec`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// Which gateway workloads this applies to; one Envoy per generated config, so unused.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// Listening ports and the hosts each exposes.
    #[serde(default)]
    pub servers: Vec<Server>,
}

/// `Gateway.spec.servers[]`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Server {
    /// Port, protocol and name.
    pub port: Option<ServerPort>,
    /// Hosts exposed (`*`, `*.example.com`, `ns/host`).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// TLS settings; kept, the envoy target reports that it does not terminate TLS yet.
    pub tls: Option<serde_json::Value>,
    /// Server name, for metrics.
    pub name: Option<String>,
}

/// `Gateway.spec.servers[].port`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerPort {
    /// Port number.
    pub number: Option<u32>,
    /// `HTTP`, `HTTPS`, `HTTP2`, `GRPC`, `TCP`, `TLS`, ...
    pub protocol: Option<String>,
    /// Port name.
    pub name: Option<String>,
    /// Port the gateway workload really listens on.
    pub target_port: Option<u32>,
}

/// `VirtualService.spec`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    /// Hosts (authorities) these rules apply to.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Gateways (`name`, `ns/name`) and/or `mesh`; empty means `mesh`.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// HTTP rules, first match wins.
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    /// TCP rules for the hosts' non-HTTP ports (see [`crate::model::tcp`]).
    #[serde(default)]
    pub tcp: Vec<crate::input::tcp::TcpRoute>,
    /// TLS passthrough rules, routed by SNI (see [`crate::model::tcp`]).
    #[serde(default)]
    pub tls: Vec<crate::input::tcp::TlsRoute>,
    /// Visibility across namespaces; one Envoy sees everything, so unused.
    #[serde(default)]
    pub export_to: Vec<String>,
}

/// `VirtualService.spec.http[]`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    /// Rule name; the generated rule is named after it.
    pub name: Option<String>,
    /// Conditions, OR-ed; empty matches everything.
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    /// Destinations with weights.
    #[serde(default)]
    pub route: Vec<HttpRouteDestination>,
    /// Overall request timeout.
    pub timeout: Option<String>,
    /// Retry policy.
    pub retries: Option<HttpRetry>,
    /// Fault injection.
    pub fault: Option<HttpFaultInjection>,
    /// Copy requests to one other destination (see [`crate::model::native`]).
    pub mirror: Option<Destination>,
    /// Copy requests to several destinations.
    #[serde(default)]
    pub mirrors: Vec<crate::input::native::HttpMirrorPolicy>,
    /// Share of requests `mirror` copies (default 100).
    pub mirror_percentage: Option<Percent>,
    /// Deprecated integer form of `mirrorPercentage`.
    pub mirror_percent: Option<u32>,
    /// Path and authority rewrite.
    pub rewrite: Option<crate::input::native::HttpRewrite>,
    /// Answer with a redirect.
    pub redirect: Option<crate::input::native::HttpRedirect>,
    /// Answer with a fixed response.
    pub direct_response: Option<crate::input::native::HttpDirectResponse>,
    /// Header operations.
    pub headers: Option<crate::input::native::Headers>,
    /// CORS policy.
    pub cors_policy: Option<crate::input::native::CorsPolicy>,
}

/// Istio `StringMatch`: exactly one of `exact`, `prefix`, `regex` (`{}` means "present" in
/// header matches).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StringMatch {
    /// Exact value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2-style regex, matched against the whole value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// `VirtualService.spec.http[].match[]`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatchRequest {
    /// Name of the match, for logs.
    pub name: Option<String>,
    /// Path match.
    pub uri: Option<StringMatch>,
    /// Case-insensitive `uri` match.
    pub ignore_uri_case: Option<bool>,
    /// Method match.
    pub method: Option<StringMatch>,
    /// Authority (Host) match.
    pub authority: Option<StringMatch>,
    /// Header matches (lower-case names).
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    /// Headers that must not match.
    #[serde(default)]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Query parameter matches.
    #[serde(default)]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Local port match.
    pub port: Option<u32>,
    /// URI scheme match (`http`, `https`): Istio matches the `:scheme` pseudo-header.
    pub scheme: Option<StringMatch>,
    /// Envoy route `stat_prefix`: the rule's route statistics are kept under
    /// `vhost.<virtual host>.route.<statPrefix>.`.
    pub stat_prefix: Option<String>,
    /// Gateways (`ns/name`, `name` in the VirtualService's namespace, or `mesh`) on which this
    /// block applies, replacing the VirtualService's `gateways` for it.
    #[serde(default)]
    pub gateways: Vec<String>,
}

/// `VirtualService.spec.http[].route[]`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteDestination {
    /// Where to send.
    pub destination: Option<Destination>,
    /// Relative weight (Istio: 0-100, sum 100; sluice normalises any non-negative weights).
    pub weight: Option<i64>,
    /// Header operations applied when this destination is chosen.
    pub headers: Option<crate::input::native::Headers>,
}

/// `Destination`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// Service host (a ServiceEntry host, or its short name).
    pub host: Option<String>,
    /// Subset defined by the host's DestinationRule.
    pub subset: Option<String>,
    /// Port of the service.
    pub port: Option<PortSelector>,
}

/// `PortSelector`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortSelector {
    /// Port number.
    pub number: Option<u32>,
}

/// `HTTPRetry`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRetry {
    /// Number of retries.
    pub attempts: Option<i64>,
    /// Timeout per attempt.
    pub per_try_timeout: Option<String>,
    /// Envoy retry conditions, comma separated.
    pub retry_on: Option<String>,
    /// Retry in other localities.
    pub retry_remote_localities: Option<bool>,
    /// Avoid hosts already tried.
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Base interval of the retry back-off.
    pub backoff: Option<String>,
}

/// `HTTPFaultInjection`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpFaultInjection {
    /// Delay before forwarding.
    pub delay: Option<FaultDelay>,
    /// Abort with an error status.
    pub abort: Option<FaultAbort>,
}

/// `HTTPFaultInjection.Delay`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultDelay {
    /// Fixed delay.
    pub fixed_delay: Option<String>,
    /// Share of requests delayed, 0-100.
    pub percentage: Option<Percent>,
    /// Deprecated integer percentage.
    pub percent: Option<i64>,
}

/// `HTTPFaultInjection.Abort`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultAbort {
    /// HTTP status to answer with.
    pub http_status: Option<i64>,
    /// gRPC status name to answer with (`UNAVAILABLE`, ...), instead of `httpStatus`.
    pub grpc_status: Option<String>,
    /// Share of requests aborted, 0-100.
    pub percentage: Option<Percent>,
}

/// `Percent`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Percent {
    /// 0.0 - 100.0.
    pub value: Option<f64>,
}

/// `DestinationRule.spec`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    /// The service host this rule configures.
    pub host: Option<String>,
    /// Policy for the whole host.
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named subsets selecting endpoints by labels.
    #[serde(default)]
    pub subsets: Vec<Subset>,
    /// Visibility across namespaces; unused.
    #[serde(default)]
    pub export_to: Vec<String>,
}

/// `Subset`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    /// Subset name.
    pub name: Option<String>,
    /// Endpoint labels that select the subset.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Policy overriding the host's.
    pub traffic_policy: Option<TrafficPolicy>,
}

/// `TrafficPolicy`, plus `circuitBreaker`: a sluice block (not Istio) configuring the sluice
/// breaker filter, in the shape the seeds use.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    /// Load-balancing algorithm.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool limits.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Envoy outlier detection.
    pub outlier_detection: Option<OutlierDetection>,
    /// The sluice breaker (not an Istio field).
    pub circuit_breaker: Option<CircuitBreaker>,
    /// TLS origination to the upstream (see [`crate::model::native`]).
    pub tls: Option<crate::input::native::ClientTls>,
    /// Per-port overrides (see [`crate::input::native::at_port`]).
    #[serde(default)]
    pub port_level_settings: Vec<crate::input::native::PortTrafficPolicy>,
    /// PROXY protocol header sent on each upstream connection (see [`crate::model::native`]).
    pub proxy_protocol: Option<crate::input::native::ProxyProtocol>,
    /// Cap on concurrent retries relative to active requests (see [`crate::model::native`]).
    pub retry_budget: Option<crate::input::native::RetryBudget>,
    /// Tunnel `tcp`/`tls` routes' connections through this destination (see [`crate::model::tcp`]).
    pub tunnel: Option<crate::input::tcp::TunnelSettings>,
}

/// `LoadBalancerSettings`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerSettings {
    /// `ROUND_ROBIN`, `LEAST_REQUEST`, `LEAST_CONN`, `RANDOM`, `PASSTHROUGH`, `UNSPECIFIED`.
    pub simple: Option<String>,
    /// Consistent hashing, kept for later mapping.
    pub consistent_hash: Option<serde_json::Value>,
    /// Locality settings, kept for later mapping.
    pub locality_lb_setting: Option<serde_json::Value>,
    /// Slow start, kept for later mapping.
    pub warmup_duration_secs: Option<String>,
    /// Slow start, kept for later mapping.
    pub warmup: Option<serde_json::Value>,
}

/// `ConnectionPoolSettings`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionPoolSettings {
    /// TCP limits.
    pub tcp: Option<TcpSettings>,
    /// HTTP limits.
    pub http: Option<HttpSettings>,
}

/// `ConnectionPoolSettings.TCPSettings`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpSettings {
    /// Maximum connections to the destination.
    pub max_connections: Option<i64>,
    /// TCP connect timeout.
    pub connect_timeout: Option<String>,
    /// Keep-alive settings, kept for later mapping.
    pub tcp_keepalive: Option<serde_json::Value>,
    /// Maximum connection lifetime.
    pub max_connection_duration: Option<String>,
    /// Idle timeout.
    pub idle_timeout: Option<String>,
}

/// `ConnectionPoolSettings.HTTPSettings`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpSettings {
    /// Maximum pending requests.
    pub http1_max_pending_requests: Option<i64>,
    /// Maximum active requests.
    pub http2_max_requests: Option<i64>,
    /// Requests per connection (1 disables keep-alive).
    pub max_requests_per_connection: Option<i64>,
    /// Maximum concurrent retries.
    pub max_retries: Option<i64>,
    /// Idle timeout of upstream connections.
    pub idle_timeout: Option<String>,
    /// `DEFAULT`, `DO_NOT_UPGRADE`, `UPGRADE`.
    pub h2_upgrade_policy: Option<String>,
    /// Use the downstream protocol upstream.
    pub use_client_protocol: Option<bool>,
    /// HTTP/2 concurrent streams per connection.
    pub max_concurrent_streams: Option<i64>,
}

/// `OutlierDetection`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Deprecated alias of `consecutive5xxErrors`.
    pub consecutive_errors: Option<i64>,
    /// Consecutive 5xx before ejection.
    pub consecutive5xx_errors: Option<i64>,
    /// Consecutive 502/503/504 before ejection.
    pub consecutive_gateway_errors: Option<i64>,
    /// Consecutive locally-originated failures.
    pub consecutive_local_origin_failures: Option<i64>,
    /// Analysis interval.
    pub interval: Option<String>,
    /// Minimum ejection time.
    pub base_ejection_time: Option<String>,
    /// Maximum share of hosts ejected.
    pub max_ejection_percent: Option<i64>,
    /// Panic threshold.
    pub min_health_percent: Option<i64>,
    /// Split local-origin errors.
    pub split_external_local_origin_errors: Option<bool>,
}

/// `trafficPolicy.circuitBreaker`: sluice's breaker (an Envoy/Istio circuit breaker ejects hosts;
/// this one opens for the whole destination and half-opens to probe).
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    /// Consecutive failures that open the breaker.
    pub consecutive_errors: Option<i64>,
    /// Consecutive 5xx that open the breaker (alias the seeds' readers may use).
    pub consecutive5xx_errors: Option<i64>,
    /// Window over which failures count.
    pub interval: Option<String>,
    /// How long the breaker stays open before probing.
    pub base_ejection_time: Option<String>,
    /// Upper bound on the share of destinations open at once.
    pub max_ejection_percent: Option<i64>,
}

/// `ServiceEntry.spec`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    /// Hosts of the service.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Virtual IPs; unused (sluice routes by authority).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Service ports.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// `MESH_EXTERNAL` or `MESH_INTERNAL`.
    pub location: Option<String>,
    /// `NONE`, `STATIC`, `DNS`, `DNS_ROUND_ROBIN`.
    pub resolution: Option<String>,
    /// Inline endpoints.
    #[serde(default)]
    pub endpoints: Vec<WorkloadEntrySpec>,
    /// Selects WorkloadEntries by labels.
    pub workload_selector: Option<WorkloadSelector>,
    /// Visibility across namespaces; unused.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// Names the upstream certificate must carry when a DestinationRule originates TLS without
    /// `subjectAltNames` of its own (Istio's fallback).
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

/// `ServicePort`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Port number.
    pub number: Option<u32>,
    /// Protocol.
    pub protocol: Option<String>,
    /// Port name (endpoints map names to their own ports).
    pub name: Option<String>,
    /// Default endpoint port.
    pub target_port: Option<u32>,
}

/// `WorkloadSelector`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Labels a WorkloadEntry must carry.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `WorkloadGroup.spec`: the template of the WorkloadEntries its VMs register
/// (`sluice register`), and how the control plane probes them.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadGroupSpec {
    /// Labels and annotations every entry of the group gets.
    #[serde(default)]
    pub metadata: WorkloadGroupMetadata,
    /// The entries' spec, without an address (each VM brings its own).
    #[serde(default)]
    pub template: WorkloadEntrySpec,
    /// The readiness probe the control plane runs against each entry.
    pub probe: Option<crate::input::probe::ProbeInput>,
}

/// `WorkloadGroup.spec.metadata`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
pub struct WorkloadGroupMetadata {
    /// Labels of every entry.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations of every entry.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// Istio's annotation of a WorkloadEntry that auto-registration created: the WorkloadGroup it
/// came from (`sluice register` writes it too); the group's `probe` applies to the entry.
pub const AUTO_REGISTRATION_GROUP: &str = "istio.io/autoRegistrationGroup";

/// `WorkloadEntry.spec`, also the shape of `ServiceEntry.spec.endpoints[]`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEntrySpec {
    /// IP address or DNS name.
    pub address: Option<String>,
    /// Port name -> endpoint port.
    #[serde(default)]
    pub ports: BTreeMap<String, u32>,
    /// Labels (subsets select on them).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Load-balancing weight.
    pub weight: Option<u32>,
    /// Network; unused.
    pub network: Option<String>,
    /// Locality; unused until locality load balancing is mapped.
    pub locality: Option<String>,
    /// Service account; unused without mTLS.
    pub service_account: Option<String>,
}

/// Istio fields sluice does not implement yet, as path patterns (`*` = any index or key). A key
/// matching one is reported "not supported yet" rather than "unknown field".
pub const UNSUPPORTED: &[&str] = &[
    "spec.servers.*.bind",
    "spec.servers.*.defaultEndpoint",
    "spec.tcp.*.match.*.sourceLabels",
    "spec.tcp.*.match.*.sourceNamespace",
    "spec.tcp.*.match.*.gateways",
    "spec.tcp.*.match.*.sourceSubnet",
    "spec.tls.*.match.*.sourceLabels",
    "spec.tls.*.match.*.sourceNamespace",
    "spec.tls.*.match.*.gateways",
    "spec.http.*.delegate",
    "spec.http.*.mirror_percent",
    "spec.http.*.match.*.sourceLabels",
    "spec.http.*.match.*.sourceNamespace",
    "spec.http.*.fault.delay.exponentialDelay",
    "spec.http.*.fault.abort.http2Error",
    "spec.workloadSelector",
    // Traffic policies, at host or subset level (`**` = any prefix).
    "**.connectionPool.http.http2KeepAlive",
    "**.loadBalancer.zoneAwareLbSetting",
    "**.outlierDetection.outlierDetectionHttpErrorCodes",
];

/// Every field name the model above accepts, for "did you mean" hints on unknown fields.
pub const KNOWN_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "spec",
    "status",
    "name",
    "namespace",
    "labels",
    "annotations",
    "selector",
    "servers",
    "port",
    "hosts",
    "tls",
    "number",
    "protocol",
    "targetPort",
    "gateways",
    "http",
    "exportTo",
    "match",
    "route",
    "timeout",
    "retries",
    "fault",
    "exact",
    "prefix",
    "regex",
    "uri",
    "ignoreUriCase",
    "method",
    "authority",
    "headers",
    "withoutHeaders",
    "queryParams",
    "destination",
    "weight",
    "host",
    "subset",
    "attempts",
    "perTryTimeout",
    "retryOn",
    "retryRemoteLocalities",
    "retryIgnorePreviousHosts",
    "backoff",
    "delay",
    "abort",
    "fixedDelay",
    "percentage",
    "percent",
    "httpStatus",
    "grpcStatus",
    "value",
    "trafficPolicy",
    "subsets",
    "loadBalancer",
    "connectionPool",
    "outlierDetection",
    "circuitBreaker",
    "simple",
    "consistentHash",
    "localityLbSetting",
    "warmupDurationSecs",
    "warmup",
    "tcp",
    "maxConnections",
    "connectTimeout",
    "tcpKeepalive",
    "maxConnectionDuration",
    "idleTimeout",
    "http1MaxPendingRequests",
    "http2MaxRequests",
    "maxRequestsPerConnection",
    "maxRetries",
    "h2UpgradePolicy",
    "useClientProtocol",
    "maxConcurrentStreams",
    "consecutiveErrors",
    "consecutive5xxErrors",
    "consecutiveGatewayErrors",
    "consecutiveLocalOriginFailures",
    "interval",
    "baseEjectionTime",
    "maxEjectionPercent",
    "minHealthPercent",
    "splitExternalLocalOriginErrors",
    "addresses",
    "ports",
    "location",
    "resolution",
    "endpoints",
    "workloadSelector",
    "subjectAltNames",
    "address",
    "network",
    "locality",
    "serviceAccount",
    "mirror",
    "mirrors",
    "mirrorPercentage",
    "mirrorPercent",
    "rewrite",
    "uriRegexRewrite",
    "redirect",
    "derivePort",
    "statPrefix",
    "scheme",
    "redirectCode",
    "prefixRewrite",
    "directResponse",
    "status",
    "body",
    "string",
    "bytes",
    "request",
    "response",
    "set",
    "add",
    "remove",
    "corsPolicy",
    "allowOrigin",
    "allowOrigins",
    "allowMethods",
    "allowHeaders",
    "exposeHeaders",
    "maxAge",
    "allowCredentials",
    "unmatchedPreflights",
    "mode",
    "clientCertificate",
    "privateKey",
    "caCertificates",
    "caCrl",
    "credentialName",
    "sni",
    "insecureSkipVerify",
    "portLevelSettings",
    "proxyProtocol",
    "version",
    "retryBudget",
    "minRetryConcurrency",
    "budgetInterval",
    "destinationSubnets",
    "sniHosts",
    "tunnel",
    "targetHost",
    "targetPort",
];

/// Host pattern match as Istio applies gateway server hosts: `*`, `*.suffix`, exact; an
/// optional `namespace/` prefix is ignored.
pub fn server_host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.rsplit('/').next().unwrap_or(pattern);
    if pattern == "*" || pattern == host || host == "*" {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return host.ends_with(suffix) || host.strip_prefix('*') == Some(suffix);
    }
    false
}
