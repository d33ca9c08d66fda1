//! The router filter through a real Envoy 1.40: Istio `HTTPMatchRequest` semantics, virtual
//! hosts, first-match order, 404 on no match, internal-header hygiene, robustness on non-UTF-8
//! values, config rejection and per-rule counters.
//!
//! Every test hand-writes its plugin config (builder-driven routing is tested by the builder).
//! Needs the module: `cargo build --release --target wasm32-wasip1 -p sluice-router`.

use std::net::TcpListener;

use serde_json::json;
use sluice_integration::bootstrap::{Bootstrap, LISTENER_NAME};
use sluice_integration::client::{self, NO_HEADERS, Request, Response};
use sluice_integration::envoy::Envoy;
use sluice_integration::upstream::Upstream;

/// Test upstreams, one per cluster, each answering with its own name in `x-served-by`.
struct Backends {
    upstreams: Vec<Upstream>,
}

impl Backends {
    fn start(names: &[&str]) -> Self {
        Self {
            upstreams: names.iter().map(|name| Upstream::start(name)).collect(),
        }
    }

    /// A bootstrap with one cluster per upstream (cluster name = upstream name), the router
    /// with `config`, and the Envoy route reading `x-sluice-cluster`.
    fn bootstrap(&self, config: &serde_json::Value) -> Bootstrap {
        self.upstreams
            .iter()
            .fold(Bootstrap::new(), |b, u| b.cluster(u.name(), u.port()))
            .wasm_filter("router", &config.to_string())
            .route_cluster_header()
    }

    fn envoy(&self, config: &serde_json::Value) -> Envoy {
        Envoy::start(&self.bootstrap(config).render()).unwrap()
    }

    fn upstream(&self, name: &str) -> &Upstream {
        self.upstreams
            .iter()
            .find(|u| u.name() == name)
            .unwrap_or_else(|| panic!("no upstream {name}"))
    }
}

/// One virtual host for every domain with these rules.
fn any_host(rules: serde_json::Value) -> serde_json::Value {
    json!({"virtualHosts": [{"name": "all", "domains": ["*"], "rules": rules}]})
}

fn send(envoy: &Envoy, request: Request) -> Response {
    client::send(&request).unwrap_or_else(|e| panic!("request failed: {e:#}\n{}", envoy.log()))
}

/// Which upstream served a GET (None: Envoy answered itself).
fn served(envoy: &Envoy, authority: &str, path: &str, headers: &[(&str, &[u8])]) -> Option<String> {
    let port = envoy.listener_port(LISTENER_NAME);
    let response = client::get(port, authority, path, headers).unwrap();
    response.served_by().map(str::to_owned)
}

fn served_method(envoy: &Envoy, method: &str, path: &str) -> Option<String> {
    let port = envoy.listener_port(LISTENER_NAME);
    let response = send(envoy, Request::new(method, port, path).authority("reviews"));
    response.served_by().map(str::to_owned)
}

/// Extra request headers, values as bytes.
type Headers<'a> = &'a [(&'a str, &'a [u8])];

const NONE: Headers = &[];

#[test]
fn routes_by_end_user_header_like_bookinfo() {
    let backends = Backends::start(&["reviews-v1", "reviews-v2"]);
    let envoy = backends.envoy(&any_host(json!([
        {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "route": {"cluster": "reviews-v2"}},
        {"name": "default", "route": {"cluster": "reviews-v1"}},
    ])));
    let jason: &[(&str, &[u8])] = &[("end-user", b"jason")];
    for _ in 0..5 {
        assert_eq!(
            served(&envoy, "reviews", "/reviews/0", jason).as_deref(),
            Some("reviews-v2")
        );
    }
    let bob: &[(&str, &[u8])] = &[("end-user", b"bob")];
    assert_eq!(
        served(&envoy, "reviews", "/reviews/0", bob).as_deref(),
        Some("reviews-v1")
    );
    assert_eq!(
        served(&envoy, "reviews", "/reviews/0", NONE).as_deref(),
        Some("reviews-v1")
    );
    // Header values are case-sensitive, as in Istio.
    let upper: &[(&str, &[u8])] = &[("end-user", b"Jason")];
    assert_eq!(
        served(&envoy, "reviews", "/", upper).as_deref(),
        Some("reviews-v1")
    );
    // Over h2c too (same filter, different codec).
    let port = envoy.listener_port(LISTENER_NAME);
    let h2 = send(
        &envoy,
        Request::get(port, "/")
            .authority("reviews")
            .header("end-user", "jason")
            .h2c(),
    );
    assert_eq!(h2.served_by(), Some("reviews-v2"));
}

#[test]
fn uri_exact_prefix_regex_and_ignore_uri_case() {
    let backends = Backends::start(&["exact", "prefix", "regex", "nocase", "default"]);
    let envoy = backends.envoy(&any_host(json!([
        {"name": "exact", "match": [{"uri": {"exact": "/productpage"}}], "route": {"cluster": "exact"}},
        {"name": "prefix", "match": [{"uri": {"prefix": "/api/v1/"}}], "route": {"cluster": "prefix"}},
        {"name": "regex", "match": [{"uri": {"regex": "/reviews/[0-9]+"}}], "route": {"cluster": "regex"}},
        {"name": "nocase", "match": [{"uri": {"prefix": "/Login"}, "ignoreUriCase": true}],
         "route": {"cluster": "nocase"}},
        {"name": "nocase-exact", "match": [{"uri": {"exact": "/Home"}, "ignoreUriCase": true}],
         "route": {"cluster": "nocase"}},
        {"name": "nocase-regex", "match": [{"uri": {"regex": "/Item/[a-z]+"}, "ignoreUriCase": true}],
         "route": {"cluster": "nocase"}},
        {"name": "default", "route": {"cluster": "default"}},
    ])));
    for (path, want) in [
        ("/productpage", "exact"),
        ("/productpage?u=normal", "exact"), // the query string is not part of the uri
        ("/productpage/x", "default"),
        ("/ProductPage", "default"), // case-sensitive without ignoreUriCase
        ("/api/v1/users", "prefix"),
        ("/api/v2/users", "default"),
        ("/reviews/42", "regex"),
        ("/reviews/42?x=1", "regex"),
        ("/reviews/42/extra", "default"), // a regex is a full match
        ("/x/reviews/42", "default"),
        ("/login", "nocase"),
        ("/LOGIN/form", "nocase"),
        ("/logout", "default"),
        ("/HOME", "nocase"),
        ("/home/x", "default"),
        ("/ITEM/AbC", "nocase"),
        ("/item/abc1", "default"),
    ] {
        assert_eq!(
            served(&envoy, "reviews", path, NONE).as_deref(),
            Some(want),
            "{path}"
        );
    }
}

#[test]
fn header_regex_presence_and_without_headers() {
    let backends = Backends::start(&["regex", "present", "not-debug", "default"]);
    let envoy = backends.envoy(&any_host(json!([
        {"name": "regex", "match": [{"headers": {"cookie": {"regex": ".*user=(jason|alice).*"}}}],
         "route": {"cluster": "regex"}},
        {"name": "present", "match": [{"headers": {"x-canary": {}}}], "route": {"cluster": "present"}},
        // Istio's other spelling of presence for header matchers.
        {"name": "present-star", "match": [{"headers": {"x-star": {"regex": "*"}}}],
         "route": {"cluster": "present"}},
        {"name": "not-debug", "match": [{"uri": {"prefix": "/svc"}, "withoutHeaders": {"x-debug": {}}}],
         "route": {"cluster": "not-debug"}},
        {"name": "default", "route": {"cluster": "default"}},
    ])));
    let cases: &[(&str, Headers, &str)] = &[
        ("/", &[("cookie", b"a=1; user=jason; b=2")], "regex"),
        ("/", &[("cookie", b"user=alice")], "regex"),
        ("/", &[("cookie", b"user=bob")], "default"),
        ("/", &[("x-canary", b"")], "present"),
        ("/", &[("x-canary", b"anything")], "present"),
        ("/", &[("x-star", b"")], "present"),
        ("/svc/a", &[], "not-debug"),
        ("/svc/a", &[("x-debug", b"1")], "default"),
        (
            "/svc/a",
            &[("x-debug", b"1"), ("x-canary", b"1")],
            "present",
        ),
    ];
    for (path, headers, want) in cases {
        assert_eq!(
            served(&envoy, "reviews", path, headers).as_deref(),
            Some(*want),
            "{path} {headers:?}"
        );
    }
}

/// The filters' own regex engine (sluice_core::regex) through Envoy, on what it implements by
/// itself: a class with a counted repetition inside an alternation on a header, a POSIX class,
/// a scoped `(?i:...)` on a uri, `\d{2,4}`, and the full-match rule. Each case fails if one of
/// those is wrong (a bound off by one, the flag leaking out of its group, a partial match).
#[test]
fn own_regex_engine_classes_counts_alternation_and_flags() {
    let backends = Backends::start(&["version", "users", "default"]);
    let envoy = backends.envoy(&any_host(json!([
        {"name": "version",
         "match": [{"headers": {"x-version": {"regex": "v(1|2)\\.[0-9]{1,3}(-rc[[:digit:]])?|canary-[a-f]{4}"}}}],
         "route": {"cluster": "version"}},
        {"name": "users", "match": [{"uri": {"regex": "/api/(?i:users)/\\d{2,4}"}}],
         "route": {"cluster": "users"}},
        {"name": "default", "route": {"cluster": "default"}},
    ])));
    let cases: &[(&str, Headers, &str)] = &[
        ("/", &[("x-version", b"v1.2")], "version"),
        ("/", &[("x-version", b"v2.100-rc3")], "version"),
        ("/", &[("x-version", b"canary-beef")], "version"),
        ("/", &[("x-version", b"v3.1")], "default"),
        ("/", &[("x-version", b"v1.1000")], "default"),
        ("/", &[("x-version", b"v1.")], "default"),
        ("/", &[("x-version", b"v1.2-rc")], "default"),
        ("/", &[("x-version", b"canary-bee")], "default"),
        ("/", &[("x-version", b"canary-beefs")], "default"),
        ("/", &[("x-version", b"v1.2\xff")], "default"),
        ("/api/USERS/123", &[], "users"),
        ("/api/users/1234?page=2", &[], "users"),
        ("/api/users/1", &[], "default"),
        ("/api/users/12345", &[], "default"),
        ("/API/users/12", &[], "default"), // the flag covers only its group
    ];
    for (path, headers, want) in cases {
        assert_eq!(
            served(&envoy, "reviews", path, headers).as_deref(),
            Some(*want),
            "{path} {headers:?}"
        );
    }
}

#[test]
fn query_params_and_method() {
    let backends = Backends::start(&["v2", "debug", "delete", "default"]);
    let envoy = backends.envoy(&any_host(json!([
        {"name": "v2", "match": [{"queryParams": {"version": {"exact": "v2"}}}], "route": {"cluster": "v2"}},
        {"name": "debug", "match": [{"queryParams": {"debug": {}, "id": {"regex": "[0-9]+"}}}],
         "route": {"cluster": "debug"}},
        {"name": "delete", "match": [{"method": {"exact": "DELETE"}}], "route": {"cluster": "delete"}},
        {"name": "default", "route": {"cluster": "default"}},
    ])));
    for (path, want) in [
        ("/p?version=v2", "v2"),
        ("/p?a=1&version=v2", "v2"),
        ("/p?version=v%32", "default"), // not percent-decoded, as Envoy's own matcher
        ("/p?version=v21", "default"),
        ("/p?version=v1&version=v2", "default"), // the first value counts, as in Envoy
        ("/p?debug&id=12", "debug"),             // no '=': present with an empty value
        ("/p?debug=1&id=12x", "default"),
        ("/p?id=12", "default"),
    ] {
        assert_eq!(
            served(&envoy, "reviews", path, NONE).as_deref(),
            Some(want),
            "{path}"
        );
    }
    assert_eq!(
        served_method(&envoy, "DELETE", "/p").as_deref(),
        Some("delete")
    );
    assert_eq!(
        served_method(&envoy, "POST", "/p").as_deref(),
        Some("default")
    );
    assert_eq!(
        served_method(&envoy, "DELETE", "/p?version=v2").as_deref(),
        Some("v2")
    );
}

#[test]
fn authority_selects_the_virtual_host_like_envoy() {
    let backends = Backends::start(&["exact", "port", "suffix", "longer", "prefix", "any", "auth"]);
    let rule = |name: &str| json!([{"name": name, "route": {"cluster": name}}]);
    let envoy = backends.envoy(&json!({"virtualHosts": [
        {"name": "any", "domains": ["*"], "rules": rule("any")},
        {"name": "prefix", "domains": ["api.*"], "rules": rule("prefix")},
        {"name": "suffix", "domains": ["*.example.com"], "rules": rule("suffix")},
        {"name": "longer", "domains": ["*.eu.example.com"], "rules": rule("longer")},
        {"name": "exact", "domains": ["reviews", "reviews.default.svc.cluster.local"], "rules": [
            {"name": "auth", "match": [{"authority": {"regex": "reviews:90[0-9]0"}}],
             "route": {"cluster": "auth"}},
            {"name": "exact", "route": {"cluster": "exact"}}]},
        {"name": "port", "domains": ["reviews:8443"], "rules": rule("port")},
    ]}));
    for (authority, want) in [
        ("reviews", "exact"),
        ("REVIEWS.default.svc.cluster.local", "exact"), // case-insensitive
        ("reviews:8443", "port"),                       // a listed port wins
        ("reviews:9080", "auth"), // port stripped to find the host; authority match sees it
        ("a.example.com", "suffix"),
        ("a.eu.example.com", "longer"), // longest suffix wins
        ("api.example.com", "suffix"),  // suffix before prefix
        ("api.internal", "prefix"),
        ("example.com", "any"), // '*.example.com' needs at least one character
        ("ratings", "any"),
    ] {
        assert_eq!(
            served(&envoy, authority, "/", NONE).as_deref(),
            Some(want),
            "{authority}"
        );
    }
}

#[test]
fn first_matching_rule_wins_in_order() {
    let backends = Backends::start(&["first", "second", "third"]);
    let envoy = backends.envoy(&any_host(json!([
        {"name": "first", "match": [{"uri": {"prefix": "/a"}, "headers": {"x-tier": {"exact": "gold"}}}],
         "route": {"cluster": "first"}},
        // Two blocks OR-ed: either the path or the header.
        {"name": "second", "match": [{"uri": {"prefix": "/a/b"}}, {"headers": {"x-tier": {}}}],
         "route": {"cluster": "second"}},
        {"name": "third", "match": [{"uri": {"prefix": "/"}}], "route": {"cluster": "third"}},
    ])));
    let gold: &[(&str, &[u8])] = &[("x-tier", b"gold")];
    let silver: &[(&str, &[u8])] = &[("x-tier", b"silver")];
    // Both "first" and "second" match: the earlier wins.
    assert_eq!(served(&envoy, "h", "/a/b", gold).as_deref(), Some("first"));
    assert_eq!(
        served(&envoy, "h", "/a/b", silver).as_deref(),
        Some("second")
    );
    assert_eq!(served(&envoy, "h", "/a/b", NONE).as_deref(), Some("second"));
    assert_eq!(served(&envoy, "h", "/z", silver).as_deref(), Some("second"));
    assert_eq!(served(&envoy, "h", "/a/c", NONE).as_deref(), Some("third"));
}

#[test]
fn no_match_answers_404_like_istio_and_counts_it() {
    let backends = Backends::start(&["reviews-v1"]);
    let envoy = backends.envoy(&json!({"virtualHosts": [
        {"name": "reviews", "domains": ["reviews"], "rules": [
            {"name": "only-get", "match": [{"method": {"exact": "GET"}}], "route": {"cluster": "reviews-v1"}}]},
    ]}));
    let port = envoy.listener_port(LISTENER_NAME);
    // No virtual host for the authority, then no rule in the virtual host.
    let unknown_host = client::get(port, "ratings", "/", NO_HEADERS).unwrap();
    let no_rule = send(&envoy, Request::new("POST", port, "/").authority("reviews"));
    for response in [&unknown_host, &no_rule] {
        assert_eq!(response.status, 404);
        assert_eq!(response.text(), "route not found");
        assert_eq!(response.header_str("x-sluice-router"), Some("no-match"));
        assert_eq!(response.served_by(), None);
    }
    assert_eq!(backends.upstream("reviews-v1").request_count(), 0);
    let ok = client::get(port, "reviews", "/", NO_HEADERS).unwrap();
    assert_eq!(ok.served_by(), Some("reviews-v1"));
    assert_eq!(envoy.stat("wasmcustom.sluice.router.no_match"), Some(2));
}

#[test]
fn client_cannot_pick_its_destination_with_internal_headers() {
    let backends = Backends::start(&["reviews-v1", "reviews-v2"]);
    let config = any_host(json!([
        {"name": "default", "route": {"cluster": "reviews-v1"}},
    ]));
    // Let the internal headers reach the upstream, to see exactly what the router sent.
    let envoy = Envoy::start(
        &backends
            .bootstrap(&config)
            .forward_internal_headers()
            .render(),
    )
    .unwrap();
    let port = envoy.listener_port(LISTENER_NAME);
    let request = Request::get(port, "/")
        .authority("reviews")
        .header("x-sluice-cluster", "reviews-v2")
        .header("x-sluice-cluster", "reviews-v2")
        .header("x-sluice-split", "evil-split")
        .header("x-sluice-rule", "evil-rule")
        .header("x-sluice-rule", "evil-rule-2");
    let response = send(&envoy, request);
    assert_eq!(response.served_by(), Some("reviews-v1"));
    let seen = backends.upstream("reviews-v1").requests();
    let seen = seen.first().unwrap();
    let all = |name: &str| -> Vec<&[u8]> {
        seen.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    };
    assert_eq!(all("x-sluice-cluster"), vec![&b"reviews-v1"[..]]);
    assert_eq!(all("x-sluice-rule"), vec![&b"default"[..]]);
    assert!(all("x-sluice-split").is_empty());
    assert_eq!(backends.upstream("reviews-v2").request_count(), 0);
}

#[test]
fn split_destination_is_handed_to_the_canary_filter() {
    // The router alone only names the split; Envoy's route then has no cluster header (the
    // canary filter would set it), so forward the headers and route by a fixed cluster.
    let backends = Backends::start(&["reviews-v1"]);
    let config = any_host(json!([
        {"name": "canary", "route": {"split": "reviews-split"}},
    ]));
    let yaml = backends
        .bootstrap(&config)
        .route_to_cluster("reviews-v1")
        .forward_internal_headers()
        .render();
    let envoy = Envoy::start(&yaml).unwrap();
    let port = envoy.listener_port(LISTENER_NAME);
    let response = client::get(
        port,
        "reviews",
        "/",
        &[
            ("x-sluice-cluster", "evil"),
            ("x-sluice-cluster", "evil-2"),
            ("x-sluice-split", "evil-split"),
        ],
    )
    .unwrap();
    assert_eq!(response.served_by(), Some("reviews-v1"));
    let seen = backends.upstream("reviews-v1").requests();
    let seen = seen.first().unwrap();
    let all = |name: &str| -> Vec<&[u8]> {
        seen.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    };
    assert_eq!(all("x-sluice-split"), vec![&b"reviews-split"[..]]);
    assert_eq!(seen.header("x-sluice-rule"), Some(&b"canary"[..]));
    assert!(all("x-sluice-cluster").is_empty());
}

#[test]
fn non_utf8_header_values_are_served_not_crashed() {
    let backends = Backends::start(&["regex", "exact", "default"]);
    let envoy = backends.envoy(&any_host(json!([
        {"name": "regex", "match": [{"headers": {"end-user": {"regex": "j.*"}}}], "route": {"cluster": "regex"}},
        {"name": "exact", "match": [{"headers": {"x-raw": {"prefix": "caf"}}}], "route": {"cluster": "exact"}},
        {"name": "default", "route": {"cluster": "default"}},
    ])));
    // A regex matches bytes, UTF-8 or not, as Envoy's own (Latin-1) RE2 does: `j.*` takes
    // "j\xff\xfe" (integration/tests/regex_envoy.rs shows Envoy's answers); prefix compares bytes.
    let raw: &[(&str, &[u8])] = &[("end-user", b"j\xff\xfe")];
    assert_eq!(
        served(&envoy, "reviews", "/", raw).as_deref(),
        Some("regex")
    );
    let raw: &[(&str, &[u8])] = &[("x-raw", b"caf\xe9\xff")];
    assert_eq!(
        served(&envoy, "reviews", "/", raw).as_deref(),
        Some("exact")
    );
    let jason: &[(&str, &[u8])] = &[("end-user", b"jason")];
    assert_eq!(
        served(&envoy, "reviews", "/", jason).as_deref(),
        Some("regex")
    );
    // Every worker's VM is still alive: many more requests are served and counted by the
    // filter (a trapped VM would answer 503 under FAIL_CLOSED and count nothing).
    let port = envoy.listener_port(LISTENER_NAME);
    let responses = client::get_many(
        port,
        "reviews",
        "/",
        &[("end-user", b"\xff".as_slice())],
        40,
    )
    .unwrap();
    assert!(responses.iter().all(|r| r.served_by() == Some("default")));
    assert_eq!(
        envoy.stat("wasmcustom.sluice.router.rule.default.matched"),
        Some(40)
    );
    assert_eq!(
        envoy.stat("wasmcustom.sluice.router.rule.exact.matched"),
        Some(1)
    );
    assert_eq!(
        envoy.stat("wasmcustom.sluice.router.rule.regex.matched"),
        Some(2)
    );
    assert_eq!(envoy.stat("wasm.sluice_router.vm_reload_failure"), Some(0));
    let log = envoy.log();
    for trap in ["panicked", "RuntimeError", "Uncaught"] {
        assert!(!log.contains(trap), "{trap} in the Envoy log:\n{log}");
    }
}

#[test]
fn port_match_reads_the_local_port() {
    // The rule needs the listener's port before Envoy starts: reserve a free one.
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let backends = Backends::start(&["this-port", "other-port"]);
    let config = any_host(json!([
        {"name": "other-port", "match": [{"port": if port == 1 { 2 } else { 1 }}], "route": {"cluster": "other-port"}},
        {"name": "this-port", "match": [{"port": port}], "route": {"cluster": "this-port"}},
    ]));
    let mut bootstrap = backends.bootstrap(&config).to_json();
    bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] =
        json!(port);
    let envoy = Envoy::start(&bootstrap.to_string()).unwrap();
    assert_eq!(envoy.listener_port(LISTENER_NAME), port);
    assert_eq!(
        served(&envoy, "reviews", "/", NONE).as_deref(),
        Some("this-port")
    );
}

#[test]
fn per_rule_counters_in_stats_and_prometheus() {
    let backends = Backends::start(&["reviews-v1", "reviews-v2"]);
    let envoy = backends.envoy(&any_host(json!([
        {"name": "reviews.jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "route": {"cluster": "reviews-v2"}},
        {"name": "default", "route": {"cluster": "reviews-v1"}},
    ])));
    let jason: &[(&str, &[u8])] = &[("end-user", b"jason")];
    for _ in 0..3 {
        assert_eq!(
            served(&envoy, "reviews", "/", jason).as_deref(),
            Some("reviews-v2")
        );
    }
    for _ in 0..5 {
        assert_eq!(
            served(&envoy, "reviews", "/", NONE).as_deref(),
            Some("reviews-v1")
        );
    }
    // Counters are summed over the worker VMs; "reviews.jason" is sanitised to "reviews_jason".
    assert_eq!(
        envoy.stat("wasmcustom.sluice.router.rule.reviews_jason.matched"),
        Some(3)
    );
    assert_eq!(
        envoy.stat("wasmcustom.sluice.router.rule.default.matched"),
        Some(5)
    );
    assert_eq!(envoy.stat("wasmcustom.sluice.router.no_match"), Some(0));
    let prometheus = envoy.prometheus().unwrap();
    let line = |rule: &str| {
        prometheus
            .lines()
            .find(|l| {
                l.starts_with("sluice_router_matched{") && l.contains(&format!("rule=\"{rule}\""))
            })
            .map(str::to_owned)
    };
    assert!(
        line("reviews_jason").is_some_and(|l| l.ends_with(" 3")),
        "{prometheus}"
    );
    assert!(
        line("default").is_some_and(|l| l.ends_with(" 5")),
        "{prometheus}"
    );
}

#[test]
fn bad_plugin_configs_are_refused_with_the_reason() {
    let backends = Backends::start(&["reviews-v1"]);
    for (config, reason) in [
        ("{\"virtualHosts\": [", "invalid router configuration JSON"),
        (
            r#"{"virtualHosts":[{"name":"all","domains":["*"],"rules":[
                {"name":"r","match":[{"headers":{"end-user":{"regex":"(jason"}}}],"route":{"cluster":"reviews-v1"}}]}]}"#,
            r#"rules[0] "r": match[0].headers["end-user"].regex: invalid regex"#,
        ),
        (
            r#"{"virtualHosts":[{"name":"all","domains":["*"],"rules":[
                {"name":"r","route":{"cluster":"reviews-v1"}},{"name":"r","route":{"cluster":"reviews-v1"}}]}]}"#,
            "duplicate rule name",
        ),
    ] {
        let yaml = backends
            .upstreams
            .iter()
            .fold(Bootstrap::new(), |b, u| b.cluster(u.name(), u.port()))
            .wasm_filter("router", config)
            .render();
        let log = Envoy::start_expect_failure(&yaml);
        assert!(
            log.contains("sluice-router: "),
            "no filter reason in the log:\n{log}"
        );
        assert!(
            log.contains(reason),
            "expected {reason:?} in the log:\n{log}"
        );
    }
}
