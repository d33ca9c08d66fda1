//! The Envoy JSON of Istio settings Envoy implements natively (see [`crate::model::native`]): route
//! actions (mirrors, rewrites, redirects, direct responses, headers, CORS, hash policies) and
//! cluster settings (consistent hashing, slow start, panic threshold, keep-alive, TLS).
//!
//! [`super::resources`] builds each route and cluster as before and hands them here to decorate, so
//! this module only adds what the Istio fields ask for.

use serde_json::{Map, Value, json};
use sluice_core::wire;

use crate::model::native::{
    Body, Cors, HeaderChanges, HeaderOps, OriginMatch, PathMatch, PathRewrite, Redirect,
    RouteExtras, UriMatch,
};
use crate::model::policy::{HashKey, HashRing, ProxyProtocol, UpstreamTls};
use crate::model::{Cluster, Listener, Rule, Target};

const CORS_FILTER: &str = "envoy.filters.http.cors";

/// The extra HTTP filters a listener needs (before Envoy's router): the CORS filter when a rule
/// has a `corsPolicy`. It sits after the sluice filters because it reads the route they select.
pub fn http_filters(listener: &Listener) -> Vec<Value> {
    let cors = listener
        .virtual_hosts
        .iter()
        .flat_map(|vh| &vh.rules)
        .any(|r| r.native.cors.is_some());
    if !cors {
        return Vec::new();
    }
    vec![json!({
        "name": CORS_FILTER,
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"},
    })]
}

/// The Envoy routes of one rule, from its forwarding route `base`: usually one; a weighted
/// rule whose destinations carry their own `headers` gets one route per destination first
/// (matching the cluster the canary picked), then `base` as the fallback.
pub fn routes(rule: &Rule, mut base: Value) -> Vec<Value> {
    let n = &rule.native;
    if let Some(prefix) = &n.stat_prefix {
        // Istio's `statPrefix`: route stats under `vhost.<virtual host>.route.<prefix>.`.
        base["stat_prefix"] = json!(prefix);
    }
    if let Some(redirect) = &n.redirect {
        strip_action(&mut base);
        base["redirect"] = redirect_json(redirect, &n.uri_matches);
        add_headers(&mut base, n.headers.as_ref());
        return vec![base];
    }
    if let Some(direct) = &n.direct_response {
        strip_action(&mut base);
        let mut d = json!({"status": direct.status});
        match &direct.body {
            Some(Body::Text(s)) => d["body"] = json!({"inline_string": s}),
            // Proto JSON writes `bytes` in base64, as Istio's `bytes` already is.
            Some(Body::Base64(b)) => d["body"] = json!({"inline_bytes": b}),
            None => {}
        }
        base["direct_response"] = d;
        add_headers(&mut base, n.headers.as_ref());
        return vec![base];
    }
    let route_authority = n.authority();
    decorate_forwarding(n, route_authority, &mut base);
    if rule.retries.as_ref().is_some_and(|r| r.remote_localities)
        && base["route"]["retry_policy"].is_object()
    {
        // Istio's `retryRemoteLocalities`: after two attempts in a priority, retries skip the
        // priorities (localities) already tried.
        base["route"]["retry_policy"]["retry_priority"] = json!({
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": 2,
            },
        });
    }
    add_headers(&mut base, n.headers.as_ref());
    match &rule.target {
        Target::Cluster(c) if !n.passthrough_endpoints.is_empty() => {
            add_destination_headers(&mut base, n.destination_headers.get(c), route_authority);
            passthrough_routes(rule, base)
        }
        Target::Cluster(c) => {
            add_destination_headers(&mut base, n.destination_headers.get(c), route_authority);
            vec![base]
        }
        Target::Split(members) => {
            let mut out = Vec::new();
            for (cluster, _) in members {
                let Some(h) = n.destination_headers.get(cluster) else {
                    continue;
                };
                let mut r = base.clone();
                if let Some(headers) = r["match"]["headers"].as_array_mut() {
                    headers.push(json!({
                        "name": wire::CLUSTER_HEADER,
                        "string_match": {"exact": cluster},
                    }));
                }
                add_destination_headers(&mut r, Some(h), route_authority);
                out.push(r);
            }
            out.push(base);
            out
        }
    }
}

/// The routes of a rule whose destination is a PASSTHROUGH cluster. Envoy's `ORIGINAL_DST`
/// trusts [`crate::model::native::ORIGINAL_DST_HEADER`] blindly (any client could reach any address,
/// this Envoy's admin port included), so the forwarding route requires the header to name one
/// of the service's endpoints, and a second route answers every other request 403, saying why.
fn passthrough_routes(rule: &Rule, mut forward: Value) -> Vec<Value> {
    let endpoints: Vec<String> = rule
        .native
        .passthrough_endpoints
        .iter()
        .map(|e| escape_regex(e))
        .collect();
    let mut refuse = forward.clone();
    if let Some(headers) = forward["match"]["headers"].as_array_mut() {
        headers.push(json!({
            "name": crate::model::native::ORIGINAL_DST_HEADER,
            // Envoy's safe_regex matches the whole value.
            "string_match": {"safe_regex": {"regex": endpoints.join("|")}},
        }));
    }
    strip_action(&mut refuse);
    if let Some(o) = refuse.as_object_mut() {
        for key in [
            "request_headers_to_add",
            "request_headers_to_remove",
            "typed_per_filter_config",
        ] {
            o.remove(key);
        }
    }
    refuse["name"] = json!(format!("{}.passthrough-refused", rule.name));
    refuse["direct_response"] = json!({
        "status": 403,
        "body": {"inline_string": format!(
            "{}: {} must name an endpoint of the PASSTHROUGH service: {}\n",
            rule.name,
            crate::model::native::ORIGINAL_DST_HEADER,
            rule.native.passthrough_endpoints.join(", ")
        )},
    });
    vec![forward, refuse]
}

fn strip_action(route: &mut Value) {
    if let Some(o) = route.as_object_mut() {
        o.remove("route");
    }
}

/// Istio's redirect. `uri` replaces the whole path (`path_redirect`, as Istio documents it).
/// `prefixRewrite` replaces the prefix the rule matched: Istio writes Envoy's `prefix_rewrite`
/// on a route matching that prefix, but sluice's Envoy route matches `/` plus `x-sluice-rule`,
/// where `prefix_rewrite` would replace only the leading `/` (`/old/x` -> `/new/old/x`), so the
/// redirect uses `regex_rewrite` on the rule's own prefixes instead (the same anchored
/// alternatives as `rewrite.uri`, see [`prefix_pattern`]); the query string is kept.
fn redirect_json(r: &Redirect, uri_matches: &[UriMatch]) -> Value {
    let mut d = Map::new();
    if let Some(path) = &r.path {
        d.insert("path_redirect".into(), json!(path));
    }
    if let Some(p) = &r.prefix_rewrite {
        d.insert(
            "regex_rewrite".into(),
            json!({
                "pattern": {"regex": prefix_pattern(uri_matches)},
                "substitution": escape_substitution(p),
            }),
        );
    }
    if let Some(a) = &r.authority {
        d.insert("host_redirect".into(), json!(a));
    }
    if let Some(p) = r.port {
        d.insert("port_redirect".into(), json!(p));
    }
    if let Some(s) = &r.scheme {
        d.insert("scheme_redirect".into(), json!(s));
    }
    // Istio's default is 301, Envoy's too; written out so the config says what it does.
    d.insert(
        "response_code".into(),
        json!(redirect_response_code(r.status)),
    );
    Value::Object(d)
}

/// Envoy's `RedirectResponseCode` of a redirect status.
fn redirect_response_code(status: u32) -> &'static str {
    match status {
        302 => "FOUND",
        303 => "SEE_OTHER",
        307 => "TEMPORARY_REDIRECT",
        308 => "PERMANENT_REDIRECT",
        _ => "MOVED_PERMANENTLY",
    }
}

/// A destination's header operations on its route, and its Host rewrite when the rule sets none
/// ([`RouteExtras::authority`] takes precedence, as in Istio's single and weighted
/// destinations).
fn add_destination_headers(
    route: &mut Value,
    headers: Option<&HeaderOps>,
    route_authority: Option<&str>,
) {
    add_headers(route, headers);
    if route_authority.is_none()
        && let Some(authority) = headers.and_then(|h| h.authority.as_deref())
        && route["route"].is_object()
    {
        route["route"]["host_rewrite_literal"] = json!(authority);
    }
}

fn decorate_forwarding(n: &RouteExtras, authority: Option<&str>, route: &mut Value) {
    let action = &mut route["route"];
    if let Some(a) = authority {
        action["host_rewrite_literal"] = json!(a);
    }
    match n.rewrite.as_ref().and_then(|rw| rw.path.as_ref()) {
        Some(PathRewrite::MatchedPrefix(uri)) => {
            action["regex_rewrite"] = json!({
                "pattern": {"regex": prefix_pattern(&n.uri_matches)},
                "substitution": escape_substitution(uri),
            });
        }
        Some(PathRewrite::Regex {
            pattern,
            substitution,
        }) => {
            action["regex_rewrite"] = json!({
                "pattern": {"regex": pattern},
                "substitution": substitution,
            });
        }
        None => {}
    }
    if !n.mirrors.is_empty() {
        action["request_mirror_policies"] = n
            .mirrors
            .iter()
            .map(|m| {
                let mut p = json!({"cluster": m.cluster, "trace_sampled": false});
                if let Some(pct) = m.percent {
                    p["runtime_fraction"] = json!({"default_value": fraction(pct)});
                }
                p
            })
            .collect();
    }
    if let Some(h) = &n.hash {
        action["hash_policy"] = json!([hash_policy(h)]);
    }
    if let Some(c) = &n.cors {
        route["typed_per_filter_config"] = json!({CORS_FILTER: cors_json(c)});
    }
}

/// Istio's percentage as Envoy's fraction (per million, as pilot writes it).
fn fraction(percent: f64) -> Value {
    let per_million = (percent.clamp(0.0, 100.0) * 10_000.0).round();
    // Clamped to 0..=1e6 above: the cast is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let numerator = per_million as u32;
    json!({"numerator": numerator, "denominator": "MILLION"})
}

/// The part of the path Istio's `rewrite.uri` replaces, as one anchored RE2 pattern. Istio
/// emits one Envoy route per match block with `prefix_rewrite`, which replaces the matched
/// prefix (the whole path for exact and regex matches, `/` when the block has no `uri`). sluice
/// has one Envoy route per rule, so the blocks become alternatives in order (RE2 takes the
/// first that matches, as Envoy takes the first route).
pub fn prefix_pattern(uri_matches: &[UriMatch]) -> String {
    if uri_matches.is_empty() {
        return "^/".into();
    }
    let alternatives: Vec<String> = uri_matches
        .iter()
        .map(|m| {
            let body = match &m.path {
                PathMatch::Prefix(p) => escape_regex(p),
                PathMatch::Exact(e) => format!("{}$", escape_regex(e)),
                PathMatch::Whole => ".*".into(),
            };
            if m.ignore_case {
                format!("(?i:{body})")
            } else {
                body
            }
        })
        .collect();
    format!("^(?:{})", alternatives.join("|"))
}

fn escape_regex(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_punctuation() && c != '/' && c != '_' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// RE2's `GlobalReplace` reads `\N` in the substitution: a literal backslash must be doubled.
fn escape_substitution(s: &str) -> String {
    s.replace('\\', "\\\\")
}

fn hash_policy(h: &HashKey) -> Value {
    match h {
        HashKey::Header(name) => json!({"header": {"header_name": name}}),
        HashKey::Cookie { name, path, ttl } => {
            let mut c = json!({"name": name});
            if let Some(p) = path {
                c["path"] = json!(p);
            }
            if let Some(t) = ttl {
                c["ttl"] = json!(sluice_core::duration::format(*t));
            }
            json!({"cookie": c})
        }
        HashKey::SourceIp => json!({"connection_properties": {"source_ip": true}}),
        HashKey::QueryParameter(name) => json!({"query_parameter": {"name": name}}),
    }
}

fn cors_json(c: &Cors) -> Value {
    let origins: Vec<Value> = c
        .allow_origins
        .iter()
        .map(|o| match o {
            OriginMatch::Exact(e) => json!({"exact": e}),
            OriginMatch::Prefix(p) => json!({"prefix": p}),
            OriginMatch::Regex(r) => json!({"safe_regex": {"regex": r}}),
        })
        .collect();
    let mut p = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": origins,
    });
    for (key, list) in [
        ("allow_methods", &c.allow_methods),
        ("allow_headers", &c.allow_headers),
        ("expose_headers", &c.expose_headers),
    ] {
        if !list.is_empty() {
            p[key] = json!(list.join(","));
        }
    }
    if let Some(d) = c.max_age {
        p["max_age"] = json!(d.as_secs().to_string());
    }
    if let Some(b) = c.allow_credentials {
        p["allow_credentials"] = json!(b);
    }
    if c.ignore_unmatched_preflights {
        p["forward_not_matching_preflights"] = json!(false);
    }
    p
}

/// Appends `headers`' operations to an Envoy route (`set` overwrites, `add` appends, as Istio
/// maps them).
fn add_headers(route: &mut Value, headers: Option<&HeaderOps>) {
    let Some(h) = headers else { return };
    for (ops, to_add, to_remove) in [
        (
            &h.request,
            "request_headers_to_add",
            "request_headers_to_remove",
        ),
        (
            &h.response,
            "response_headers_to_add",
            "response_headers_to_remove",
        ),
    ] {
        let added = header_values(ops);
        if !added.is_empty() {
            push_all(route, to_add, added);
        }
        if !ops.remove.is_empty() {
            push_all(
                route,
                to_remove,
                ops.remove.iter().map(|n| json!(n)).collect(),
            );
        }
    }
}

fn header_values(ops: &HeaderChanges) -> Vec<Value> {
    let entry = |k: &String, v: &String, action: &str| json!({"header": {"key": k, "value": v}, "append_action": action});
    ops.set
        .iter()
        .map(|(k, v)| entry(k, v, "OVERWRITE_IF_EXISTS_OR_ADD"))
        .chain(
            ops.add
                .iter()
                .map(|(k, v)| entry(k, v, "APPEND_IF_EXISTS_OR_ADD")),
        )
        .collect()
}

fn push_all(route: &mut Value, key: &str, values: Vec<Value>) {
    match route.get_mut(key).and_then(Value::as_array_mut) {
        Some(list) => list.extend(values),
        None => route[key] = Value::Array(values),
    }
}

/// Adds the native cluster settings of `c`'s traffic policy to its Envoy cluster.
pub fn decorate_cluster(c: &Cluster, cluster: &mut Value) {
    let policy = &c.policy;
    let pool = &policy.connection_pool;
    match &c.load_balancing.hash_ring {
        Some(HashRing::Maglev { table_size }) => {
            cluster["lb_policy"] = json!("MAGLEV");
            if let Some(size) = table_size {
                cluster["maglev_lb_config"] = json!({"table_size": size});
            }
        }
        Some(HashRing::RingHash { minimum_ring_size }) => {
            cluster["lb_policy"] = json!("RING_HASH");
            if let Some(size) = minimum_ring_size {
                cluster["ring_hash_lb_config"] = json!({"minimum_ring_size": size});
            }
        }
        None => {}
    }
    // Slow start: Envoy has it for round robin and least request only, as Istio applies it.
    if let Some(s) = &c.load_balancing.slow_start {
        let mut slow = json!({"slow_start_window": sluice_core::duration::format(s.window)});
        if let Some(a) = s.aggression {
            slow["aggression"] =
                json!({"default_value": a, "runtime_key": "sluice.slow_start.aggression"});
        }
        if let Some(m) = s.min_weight_percent {
            slow["min_weight_percent"] = json!({"value": m});
        }
        match cluster["lb_policy"].as_str() {
            Some("ROUND_ROBIN") => {
                cluster["round_robin_lb_config"] = json!({"slow_start_config": slow});
            }
            Some("LEAST_REQUEST") => {
                cluster["least_request_lb_config"] = json!({"slow_start_config": slow});
            }
            _ => {}
        }
    }
    if let Some(od) = &policy.outlier_detection {
        if let Some(p) = od.min_health_percent {
            cluster["common_lb_config"] = json!({"healthy_panic_threshold": {"value": p}});
        }
        if od.split_local_origin_errors {
            let o = &mut cluster["outlier_detection"];
            o["split_external_local_origin_errors"] = json!(true);
            if let Some(n) = od.consecutive_local_origin_failures {
                o["consecutive_local_origin_failure"] = json!(n);
                o["enforcing_consecutive_local_origin_failure"] = json!(100);
            }
        }
    }
    if let Some(ka) = &pool.tcp_keepalive {
        let mut k = Map::new();
        if let Some(p) = ka.probes {
            k.insert("keepalive_probes".into(), json!(p));
        }
        for (envoy, d) in [
            ("keepalive_time", ka.time),
            ("keepalive_interval", ka.interval),
        ] {
            if let Some(d) = d {
                k.insert(envoy.into(), json!(d.as_secs().max(1)));
            }
        }
        cluster["upstream_connection_options"] = json!({"tcp_keepalive": k});
    }
    if let Some(d) = pool.max_connection_duration {
        protocol_options(c, cluster)["common_http_protocol_options"]["max_connection_duration"] =
            json!(sluice_core::duration::format(d));
    }
    if let Some(hc) = &c.health_check {
        // Probes carry the service host, as real requests do (not Envoy's default, the cluster
        // name, which is no valid authority).
        let mut http = json!({"path": hc.path, "host": c.host});
        if c.http2 {
            http["codec_client_type"] = json!("HTTP2");
        }
        let interval = sluice_core::duration::format(hc.interval);
        cluster["health_checks"] = json!([{
            // Envoy probes a cluster that has had no traffic only every 60s by default: an
            // endpoint whose first probe failed would stay out that long. Probe at `interval`.
            "no_traffic_interval": interval,
            "interval": interval,
            "timeout": sluice_core::duration::format(hc.timeout),
            "unhealthy_threshold": hc.unhealthy_threshold,
            "healthy_threshold": hc.healthy_threshold,
            "http_health_check": http,
        }]);
    }
    if let Some(tls) = &policy.tls {
        cluster["transport_socket"] = upstream_tls(c, tls);
    }
    if let Some(rb) = &policy.retry_budget {
        let mut budget = Map::new();
        if let Some(p) = rb.percent {
            budget.insert("budget_percent".into(), json!({"value": p}));
        }
        if let Some(n) = rb.min_retry_concurrency {
            budget.insert("min_retry_concurrency".into(), json!(n));
        }
        // Envoy then ignores the threshold's `max_retries` (`connectionPool.http.maxRetries`).
        cluster["circuit_breakers"]["thresholds"][0]["retry_budget"] = Value::Object(budget);
    }
    if let Some(version) = policy.proxy_protocol {
        wrap_in_proxy_protocol(
            cluster,
            match version {
                ProxyProtocol::V1 => "V1",
                ProxyProtocol::V2 => "V2",
            },
        );
    }
    upstream_protocol(c, cluster);
    locality_endpoints(c, cluster);
    if crate::model::native::is_passthrough(c) {
        passthrough_cluster(cluster);
    }
}

/// Istio's `proxyProtocol`: the cluster's transport socket (TLS, else plain) wrapped in
/// `upstream_proxy_protocol`, so the PROXY header naming the downstream client goes first on
/// each upstream connection, before any TLS handshake.
fn wrap_in_proxy_protocol(cluster: &mut Value, version: &str) {
    let inner = match cluster["transport_socket"].take() {
        Value::Null => json!({
            "name": "envoy.transport_sockets.raw_buffer",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"},
        }),
        socket => socket,
    };
    cluster["transport_socket"] = json!({
        "name": "envoy.transport_sockets.upstream_proxy_protocol",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport",
            "config": {"version": version},
            "transport_socket": inner,
        },
    });
}

/// Istio's PASSTHROUGH cluster (`ORIGINAL_DST`, `CLUSTER_PROVIDED`, no endpoints), reading the
/// destination from [`crate::model::native::ORIGINAL_DST_HEADER`]. Without traffic capture the
/// connection's own destination is this Envoy, and Envoy uses it only when a listener filter
/// restored it (sluice adds none), so a request without the header gets no host (503), never a
/// loop. Which values the header may carry is the routes' business: see [`routes`].
fn passthrough_cluster(cluster: &mut Value) {
    cluster["type"] = json!("ORIGINAL_DST");
    cluster["lb_policy"] = json!("CLUSTER_PROVIDED");
    cluster["original_dst_lb_config"] = json!({
        "use_http_header": true,
        "http_header_name": crate::model::native::ORIGINAL_DST_HEADER,
    });
    if let Some(o) = cluster.as_object_mut() {
        // Settings of the load balancers and endpoint lists an ORIGINAL_DST cluster has not.
        for key in [
            "load_assignment",
            "dns_lookup_family",
            "health_checks",
            "round_robin_lb_config",
            "least_request_lb_config",
            "ring_hash_lb_config",
            "maglev_lb_config",
        ] {
            o.remove(key);
        }
    }
}

/// The `HttpProtocolOptions` of `cluster`, created with the port's protocol when absent.
fn protocol_options<'a>(c: &Cluster, cluster: &'a mut Value) -> &'a mut Value {
    let key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    let options = &mut cluster["typed_extension_protocol_options"][key];
    if options.is_null() {
        *options = json!({
            "@type": format!("type.googleapis.com/{key}"),
            "explicit_http_config": if c.http2 {
                json!({"http2_protocol_options": {}})
            } else {
                json!({"http_protocol_options": {}})
            },
        });
    }
    options
}

/// `connectionPool.http` `maxConcurrentStreams`, `useClientProtocol` and `h2UpgradePolicy`, in
/// Istio's order (pilot's `applyConnectionPool`, then `applyH2Upgrade`): the stream limit goes
/// on an HTTP2/GRPC port's explicit HTTP/2 options; `useClientProtocol` replaces them with
/// `use_downstream_protocol_config`; `UPGRADE` then makes the cluster HTTP/2 whatever came
/// before. Both replacements start from fresh HTTP/2 options, as Istio's do, so the stream limit
/// only survives on an HTTP2/GRPC port without them. `DEFAULT` is Istio's mesh default
/// (`DO_NOT_UPGRADE`): the port's protocol decides.
fn upstream_protocol(c: &Cluster, cluster: &mut Value) {
    let pool = &c.policy.connection_pool;
    if let Some(n) = pool.max_concurrent_streams
        && c.http2
    {
        protocol_options(c, cluster)["explicit_http_config"]["http2_protocol_options"]["max_concurrent_streams"] =
            json!(n);
    }
    if pool.use_client_protocol {
        let options = protocol_options(c, cluster);
        if let Some(o) = options.as_object_mut() {
            o.remove("explicit_http_config");
        }
        options["use_downstream_protocol_config"] =
            json!({"http_protocol_options": {}, "http2_protocol_options": {}});
    }
    if pool.h2_upgrade {
        let options = protocol_options(c, cluster);
        if let Some(o) = options.as_object_mut() {
            o.remove("use_downstream_protocol_config");
        }
        options["explicit_http_config"] = json!({"http2_protocol_options": {}});
    }
}

/// Envoy's `core.Locality` of `l`, without empty parts.
fn locality_json(l: &crate::model::locality::Locality) -> Value {
    let mut out = Map::new();
    for (key, v) in [
        ("region", &l.region),
        ("zone", &l.zone),
        ("sub_zone", &l.subzone),
    ] {
        if !v.is_empty() {
            out.insert(key.into(), json!(v));
        }
    }
    Value::Object(out)
}

/// Replaces the cluster's single endpoint group by one `locality_lb_endpoints` per locality
/// (see [`crate::locality`]), and turns on locality-weighted balancing when the cluster's
/// `localityLbSetting` asks for it.
fn locality_endpoints(c: &Cluster, cluster: &mut Value) {
    let plan = &c.locality;
    if plan.groups.is_empty() {
        return;
    }
    let flat = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"].take();
    let flat = flat.as_array().cloned().unwrap_or_default();
    let groups: Vec<Value> = plan
        .groups
        .iter()
        .map(|g| {
            let mut group = json!({
                "locality": locality_json(&g.locality),
                "lb_endpoints": g.endpoints.iter().filter_map(|i| flat.get(*i)).collect::<Vec<_>>(),
                "load_balancing_weight": g.weight,
            });
            if g.priority > 0 {
                group["priority"] = json!(g.priority);
            }
            group
        })
        .collect();
    cluster["load_assignment"]["endpoints"] = Value::Array(groups);
    if plan.weighted {
        cluster["common_lb_config"]["locality_weighted_lb_config"] = json!({});
    }
}

/// The bootstrap's `node` fields beyond listeners and clusters: the proxy's `node.locality`
/// (`--locality`), which Envoy's priority and locality load balancing are relative to.
pub fn node(mesh: &crate::model::Mesh) -> Option<Value> {
    mesh.proxy_locality
        .as_ref()
        .map(|l| json!({"locality": locality_json(l)}))
}

fn upstream_tls(c: &Cluster, tls: &UpstreamTls) -> Value {
    let mut common = Map::new();
    if let Some(cert) = &tls.client_certificate {
        common.insert(
            "tls_certificates".into(),
            json!([{"certificate_chain": {"filename": cert.certificate_chain}, "private_key": {"filename": cert.private_key}}]),
        );
    }
    if let Some(verify) = &tls.verify {
        let mut v = json!({"trusted_ca": {"filename": verify.trusted_ca}});
        if !verify.subject_alt_names.is_empty() {
            v["match_typed_subject_alt_names"] = verify
                .subject_alt_names
                .iter()
                .map(|san| {
                    // A SPIFFE identity (`spiffe://...`, what ServiceEntry subjectAltNames
                    // usually hold) is a URI SAN; anything else a DNS name.
                    let san_type = if san.contains("://") { "URI" } else { "DNS" };
                    json!({"san_type": san_type, "matcher": {"exact": san}})
                })
                .collect();
        }
        if let Some(crl) = &verify.crl {
            v["crl"] = json!({"filename": crl});
        }
        common.insert("validation_context".into(), v);
    }
    if c.http2 {
        common.insert("alpn_protocols".into(), json!(["h2"]));
    }
    let mut ctx = json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": common,
    });
    if let Some(sni) = &tls.sni {
        ctx["sni"] = json!(sni);
    }
    json!({"name": "envoy.transport_sockets.tls", "typed_config": ctx})
}

/// TLS termination and HTTPS redirection of a gateway listener.
pub fn decorate_listener(listener: &Listener, value: &mut Value) {
    if listener.https_redirect
        && let Some(hosts) = value["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
            ["virtual_hosts"]
            .as_array_mut()
    {
        for vh in hosts {
            // Envoy answers plain-HTTP requests with a 301 to https://, as Istio's httpsRedirect.
            vh["require_tls"] = json!("ALL");
        }
    }
    if let Some(tls) = &listener.tls {
        value["filter_chains"][0]["transport_socket"] = downstream_tls(tls, HTTP_ALPN);
    }
    if !listener.sni_servers.is_empty() {
        sni_chains(listener, value);
    }
}

/// Istio's filter chains for a port serving several certificates: one per certificate, matched
/// on the client's SNI (`server_names`), with its own certificate and only the virtual hosts
/// (and domains) of its servers, so a request cannot reach another server's routes through a
/// connection made for this one (Envoy answers 404). No chain matches an unknown SNI, so that
/// handshake fails, as on an Istio gateway. The TLS inspector reads the SNI first.
fn sni_chains(listener: &Listener, value: &mut Value) {
    let template = value["filter_chains"][0].clone();
    let chains: Vec<Value> = listener
        .sni_servers
        .iter()
        .map(|server| {
            let mut chain = template.clone();
            let names = server.server_names();
            if !names.is_empty() {
                chain["filter_chain_match"] = json!({"server_names": names});
            }
            chain["transport_socket"] = downstream_tls(&server.tls, HTTP_ALPN);
            if let Some(hosts) =
                chain["filters"][0]["typed_config"]["route_config"]["virtual_hosts"].as_array_mut()
            {
                // Envoy wants each domain once per route table: the first virtual host keeps it.
                let mut seen = std::collections::BTreeSet::new();
                hosts.retain_mut(|vh| {
                    let domains: Vec<String> = vh["domains"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or_default()
                        .iter()
                        .filter_map(Value::as_str)
                        .flat_map(|d| server.chain_domains(d))
                        .filter(|d| seen.insert(d.clone()))
                        .collect();
                    vh["domains"] = json!(domains);
                    !domains.is_empty()
                });
            }
            chain
        })
        .collect();
    value["filter_chains"] = Value::Array(chains);
    value["listener_filters"] = json!([{
        "name": "envoy.filters.listener.tls_inspector",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"},
    }]);
}

/// The ALPN an HTTP listener offers: HTTP/2 first, HTTP/1.1 for the rest.
const HTTP_ALPN: &[&str] = &["h2", "http/1.1"];

/// The `transport_socket` terminating TLS with `tls`: the server's certificate, client
/// verification for MUTUAL / OPTIONAL_MUTUAL, protocol versions and ciphers. `alpn` is what the
/// server offers: [`HTTP_ALPN`] on an HTTP listener, none on a TCP chain (its stream is not
/// HTTP).
pub(crate) fn downstream_tls(tls: &crate::model::native::ServerTls, alpn: &[&str]) -> Value {
    let mut common = json!({
        "tls_certificates": [{
            "certificate_chain": {"filename": tls.certificate},
            "private_key": {"filename": tls.private_key},
        }],
    });
    if !alpn.is_empty() {
        common["alpn_protocols"] = json!(alpn);
    }
    let mut params = Map::new();
    if let Some(v) = &tls.min_version {
        params.insert("tls_minimum_protocol_version".into(), json!(v));
    }
    if let Some(v) = &tls.max_version {
        params.insert("tls_maximum_protocol_version".into(), json!(v));
    }
    if !tls.cipher_suites.is_empty() {
        params.insert("cipher_suites".into(), json!(tls.cipher_suites));
    }
    if !params.is_empty() {
        common["tls_params"] = Value::Object(params);
    }
    let mut context = json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
    });
    if let Some(ca) = &tls.client_ca {
        let mut validation = json!({"trusted_ca": {"filename": ca}});
        if !tls.subject_alt_names.is_empty() {
            validation["match_typed_subject_alt_names"] = tls
                .subject_alt_names
                .iter()
                .map(|san| json!({"san_type": "DNS", "matcher": {"exact": san}}))
                .collect();
        }
        common["validation_context"] = validation;
        if tls.require_client_certificate {
            context["require_client_certificate"] = json!(true);
        }
    }
    context["common_tls_context"] = common;
    json!({"name": "envoy.transport_sockets.tls", "typed_config": context})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> UriMatch {
        UriMatch {
            path: PathMatch::Prefix(p.into()),
            ignore_case: false,
        }
    }

    #[test]
    fn rewrite_patterns_follow_the_match_blocks() {
        assert_eq!(prefix_pattern(&[]), "^/");
        assert_eq!(prefix_pattern(&[prefix("/ratings")]), "^(?:/ratings)");
        let exact = UriMatch {
            path: PathMatch::Exact("/a.b".into()),
            ignore_case: true,
        };
        assert_eq!(
            prefix_pattern(&[prefix("/x"), exact]),
            r"^(?:/x|(?i:/a\.b$))"
        );
    }

    #[test]
    fn percentages_are_per_million() {
        assert_eq!(fraction(12.5)["numerator"], 125_000);
        assert_eq!(fraction(100.0)["numerator"], 1_000_000);
        assert_eq!(fraction(0.0001)["numerator"], 1);
    }
}
