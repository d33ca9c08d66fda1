//! Hand-written Envoy bootstraps for tests of one filter, or of a chain of filters, without the
//! builder.
//!
//! ```no_run
//! use sluice_integration::bootstrap::Bootstrap;
//!
//! let config = Bootstrap::new()
//!     .cluster("reviews-v1", 8081)
//!     .cluster("reviews-v2", 8082)
//!     .wasm_filter("router", r#"{"rules": []}"#)
//!     .route_cluster_header()
//!     .render();
//! ```
//!
//! The rendered text is JSON (which is YAML): admin and one listener, [`LISTENER_NAME`], on
//! `127.0.0.1` port 0, an HTTP connection manager (HTTP/1.1 and h2c) with the wasm filters in the
//! order given, then `envoy.filters.http.router`. Wasm filters are configured like the builder
//! configures them: `vm_id` [`sluice_core::wire::VM_ID`], the V8 runtime, an explicit
//! `FAIL_CLOSED` failure policy, root id `sluice_<filter>`.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_core::wire;

/// The name of the one listener; read its port with
/// [`Envoy::listener_port`](crate::envoy::Envoy::listener_port).
pub const LISTENER_NAME: &str = "listener_test";

/// The `stat_prefix` of the HTTP connection manager (`http.ingress.*` stats).
pub const STAT_PREFIX: &str = "ingress";

/// Labels that `stats_tags` extracts from the filters' metric names for Prometheus, e.g.
/// `wasmcustom.sluice.router.rule.<rule>.matched` gets `rule="<rule>"`.
pub const METRIC_TAGS: [&str; 4] = wire::METRIC_TAGS;

#[derive(Debug, Clone)]
enum Routes {
    ClusterHeader,
    Cluster(String),
    Raw(Vec<Value>),
}

/// A bootstrap under construction; see the module docs.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    clusters: Vec<Value>,
    http_filters: Vec<Value>,
    routes: Routes,
    route_timeout: Option<Duration>,
    strip_internal_headers: bool,
    access_log: bool,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self::new()
    }
}

impl Bootstrap {
    /// No clusters, no filters, routes by `x-sluice-cluster`.
    pub fn new() -> Self {
        Self {
            clusters: Vec::new(),
            http_filters: Vec::new(),
            routes: Routes::ClusterHeader,
            route_timeout: None,
            strip_internal_headers: true,
            access_log: true,
        }
    }

    /// Adds a STATIC cluster `name` with one endpoint, `127.0.0.1:port`, spoken to in HTTP/1.1.
    pub fn cluster(self, name: &str, port: u16) -> Self {
        self.cluster_json(static_cluster(name, port, false))
    }

    /// Like [`Bootstrap::cluster`], spoken to in HTTP/2 (h2c), as gRPC upstreams need.
    pub fn cluster_h2(self, name: &str, port: u16) -> Self {
        self.cluster_json(static_cluster(name, port, true))
    }

    /// Adds a cluster given as Envoy JSON (e.g. with `circuit_breakers` or
    /// `outlier_detection`); start from [`static_cluster`] and edit it.
    pub fn cluster_json(mut self, cluster: Value) -> Self {
        self.clusters.push(cluster);
        self
    }

    /// Appends the sluice `filter` (`"router"`, `"canary"`, `"fault"`, `"breaker"`) with its plugin
    /// config (JSON text), using the module [`crate::wasm::module`] finds.
    ///
    /// Panics with the command that builds the module if it is missing (never a silent skip).
    pub fn wasm_filter(self, filter: &str, plugin_config_json: &str) -> Self {
        let module = crate::wasm::module(filter).unwrap_or_else(|e| panic!("{e:#}"));
        self.wasm_filter_at(filter, &module, plugin_config_json)
    }

    /// Appends the sluice `filter` loaded from the module at `module`.
    pub fn wasm_filter_at(self, filter: &str, module: &Path, plugin_config_json: &str) -> Self {
        self.http_filter_json(wasm_filter_json(filter, module, plugin_config_json))
    }

    /// Appends an HTTP filter given as Envoy JSON (`{"name": ..., "typed_config": ...}`), e.g.
    /// Envoy's own fault filter for a comparison.
    pub fn http_filter_json(mut self, filter: Value) -> Self {
        self.http_filters.push(filter);
        self
    }

    /// Routes every request to the cluster named by the `x-sluice-cluster` request header (what
    /// the router or canary filter set). The default.
    pub fn route_cluster_header(mut self) -> Self {
        self.routes = Routes::ClusterHeader;
        self
    }

    /// Routes every request to cluster `name` (for a filter tested alone).
    pub fn route_to_cluster(mut self, name: &str) -> Self {
        self.routes = Routes::Cluster(name.to_owned());
        self
    }

    /// Uses these Envoy routes (JSON `Route` objects) in the one virtual host.
    pub fn routes_json(mut self, routes: Vec<Value>) -> Self {
        self.routes = Routes::Raw(routes);
        self
    }

    /// Sets the route timeout (Envoy's default is 15 s), e.g. short for a hanging upstream.
    pub fn route_timeout(mut self, timeout: Duration) -> Self {
        self.route_timeout = Some(timeout);
        self
    }

    /// Lets the internal `x-sluice-*` request headers reach the upstreams. By default the route
    /// configuration removes them, as generated configs do; a test of what a filter decided
    /// can instead read them from [`crate::upstream::Upstream::requests`].
    pub fn forward_internal_headers(mut self) -> Self {
        self.strip_internal_headers = false;
        self
    }

    /// Turns off the access log (one line a request in Envoy's log, which tests print when
    /// they fail), e.g. for tests sending very many requests.
    pub fn without_access_log(mut self) -> Self {
        self.access_log = false;
        self
    }

    /// The bootstrap as JSON text (valid YAML), for [`crate::envoy::Envoy::start`].
    pub fn render(&self) -> String {
        serde_json::to_string_pretty(&self.to_json()).unwrap_or_else(|e| panic!("render: {e}"))
    }

    /// The bootstrap as a JSON value, for a test that needs to edit something else.
    pub fn to_json(&self) -> Value {
        let mut route_action = match &self.routes {
            Routes::ClusterHeader => json!({"cluster_header": wire::CLUSTER_HEADER}),
            Routes::Cluster(name) => json!({"cluster": name}),
            Routes::Raw(_) => Value::Null,
        };
        if let (Some(timeout), Some(action)) = (self.route_timeout, route_action.as_object_mut()) {
            action.insert("timeout".into(), json!(duration(timeout)));
        }
        let routes = match &self.routes {
            Routes::Raw(routes) => Value::Array(routes.clone()),
            _ => json!([{"match": {"prefix": "/"}, "route": route_action}]),
        };
        let mut route_config = json!({
            "name": "local_route",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
        });
        if self.strip_internal_headers {
            route_config["request_headers_to_remove"] = json!(wire::INTERNAL_HEADERS);
        }
        let mut http_filters = self.http_filters.clone();
        http_filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }));
        let mut hcm = json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": STAT_PREFIX,
            "codec_type": "AUTO",
            // As the builder writes it: the client address is the TCP peer.
            "use_remote_address": true,
            "route_config": route_config,
            "http_filters": http_filters,
        });
        if self.access_log {
            hcm["access_log"] = json!([{
                "name": "envoy.access_loggers.stdout",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                    "log_format": {"text_format_source": {"inline_string":
                        "[access] %REQ(:METHOD)% %REQ(:AUTHORITY)%%REQ(:PATH)% %PROTOCOL% -> %RESPONSE_CODE% flags=%RESPONSE_FLAGS% cluster=%UPSTREAM_CLUSTER% upstream=%UPSTREAM_HOST% %DURATION%ms details=%RESPONSE_CODE_DETAILS%\n"}},
                },
            }]);
        }
        json!({
            "admin": {"address": loopback(0)},
            "stats_config": {"stats_tags": stats_tags()},
            "static_resources": {
                "listeners": [{
                    "name": LISTENER_NAME,
                    "address": loopback(0),
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": hcm,
                    }]}],
                }],
                "clusters": self.clusters,
            },
        })
    }
}

/// A STATIC cluster `name` with the one endpoint `127.0.0.1:port`, HTTP/1.1 or h2c.
pub fn static_cluster(name: &str, port: u16, http2: bool) -> Value {
    let mut cluster = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": loopback(port)}}]}],
        },
    });
    if http2 {
        cluster["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        });
    }
    cluster
}

/// The HTTP filter entry of sluice `filter` as the builder writes it: the
/// `envoy.extensions.filters.http.wasm.v3.Wasm` filter with its plugin config as a
/// `google.protobuf.StringValue`.
pub fn wasm_filter_json(filter: &str, module: &Path, plugin_config_json: &str) -> Value {
    let root_id = wire::root_id(filter);
    json!({
        "name": wire::filter_name(filter),
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": root_id,
                "root_id": root_id,
                "vm_config": {
                    "vm_id": wire::VM_ID,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": module.to_string_lossy()}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": plugin_config_json,
                },
                "failure_policy": "FAIL_CLOSED",
            },
        },
    })
}

/// `stats_tags` turning `wasmcustom.sluice.<filter>.<...>.<tag>.<value>.<...>` into a tag per
/// entry of [`METRIC_TAGS`] (Envoy removes the first capture group from the tag-extracted name
/// and uses the second as the value). Names are sanitised to `[A-Za-z0-9_-]`, so no value
/// contains a dot.
pub fn stats_tags() -> Value {
    Value::Array(
        METRIC_TAGS
            .iter()
            .map(|tag| {
                json!({
                    "tag_name": tag,
                    "regex": wire::stats_tag_regex(tag),
                })
            })
            .collect(),
    )
}

fn loopback(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

fn duration(d: Duration) -> String {
    format!("{}.{:09}s", d.as_secs(), d.subsec_nanos())
}
