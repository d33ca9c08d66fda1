//! Istio routing conformance through a real Envoy 1.40, driven by data files.
//!
//! Each `integration/fixtures/conformance/<file>.yaml` is one mesh (services backed by in-process
//! upstreams, Istio YAML) and its cases, modelled on Istio's own routing integration cases
//! (`tests/integration/pilot/common/routing.go`): each case sends requests and states the
//! answer Istio gives (status, who served, response headers, Location, what reached the
//! upstream). The builder generates the bootstrap, ONE Envoy runs per file, and every case of
//! the file runs against it. A case where sluice departs from Istio on purpose says so in its
//! `deviation` field, with the reason, and asserts what sluice does.
//!
//! File format (`deny_unknown_fields` everywhere, so a typo fails the test):
//!
//! ```yaml
//! about: what the file covers
//! services:                       # one STATIC ServiceEntry each, endpoints on upstreams
//! - {host: shop, port: 8000, endpoints: [{upstream: shop-v1, version: v1}]}
//! mesh: |                         # Istio YAML: VirtualServices, DestinationRules, Gateways
//!   ...
//! cases:
//! - name: unique-name
//!   istio: the routing.go case (or Istio source) this follows
//!   deviation: optional; why sluice differs
//!   setup: {shop-v1: {status: 503}}       # upstream behaviour for this case (reset after)
//!   requests:
//!   - {port: 8000, authority: shop, path: /, method: GET, headers: {k: v}, repeat: 1,
//!      headerLines: [[k, second-line]],
//!      expect: {status: 200, servedBy: shop-v1, servedByEach: [..], sameServer: true,
//!               headers: {name: value-or-null}, location: .., body: ..,
//!               upstream: {authority: .., path: .., headers: {name: value-or-null}},
//!               upstreamByServer: {shop-v1: {authority: ..}},
//!               mirroredTo: shadow, minMillis: 400, upstreamRequests: {flaky: 2}}}
//! ```
//!
//! Every request is also explained by `sluice explain`'s library function
//! ([`sluice::explain::explain_in`], the router filter's own compiled config and matchers) on
//! the same mesh, and what it names must be what Envoy did: the upstream that served the request
//! is an endpoint of the cluster it names (of the member a sticky split maps the key to, of some
//! member of a random split); an answer with no upstream is the kind of decision it names (a
//! redirect or direct response with that status, a 404 for no route, a fault's abort).
//!
//! Needs the modules (`cargo xtask build-wasm`) and Envoy 1.40 (`ENVOY_BIN`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;
use sluice_integration::client::{self, Request, Response};
use sluice_integration::envoy::Envoy;
use sluice_integration::mesh;
use sluice_integration::upstream::{Behavior, Upstream};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    about: String,
    services: Vec<Service>,
    mesh: String,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Service {
    host: String,
    port: u16,
    endpoints: Vec<Endpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Endpoint {
    upstream: String,
    version: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    istio: String,
    #[serde(default)]
    deviation: Option<String>,
    #[serde(default)]
    setup: BTreeMap<String, Setup>,
    requests: Vec<Req>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Setup {
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    fail_next: Option<u32>,
    #[serde(default)]
    delay_millis: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Req {
    port: u16,
    authority: String,
    path: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Further header lines, sent after `headers` (a header repeated on several lines).
    #[serde(default)]
    header_lines: Vec<[String; 2]>,
    #[serde(default)]
    repeat: Option<usize>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Expect {
    status: u16,
    #[serde(default)]
    served_by: Option<String>,
    #[serde(default)]
    served_by_each: Vec<String>,
    #[serde(default)]
    same_server: bool,
    #[serde(default)]
    headers: BTreeMap<String, Option<String>>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    upstream: Option<UpstreamExpect>,
    /// What reached the upstream, by who served (weighted destinations with their own headers).
    #[serde(default)]
    upstream_by_server: BTreeMap<String, UpstreamExpect>,
    #[serde(default)]
    mirrored_to: Option<String>,
    #[serde(default)]
    min_millis: Option<u64>,
    /// How many requests each named upstream received for this one (retries count).
    #[serde(default)]
    upstream_requests: BTreeMap<String, usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamExpect {
    #[serde(default)]
    authority: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, Option<String>>,
}

fn fixture_dir() -> PathBuf {
    sluice_integration::repo_root().join("integration/fixtures/conformance")
}

fn load(file: &str) -> CaseFile {
    let path = fixture_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs = sluice::yaml::parse_documents(&text)
        .unwrap_or_else(|e| panic!("{}: {}: {}", path.display(), e.pos, e.message));
    assert_eq!(docs.len(), 1, "{file}: one YAML document");
    serde_json::from_value(docs[0].root.to_json())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs every case of `file` against one Envoy; panics listing every failed case.
fn run_file(file: &str) {
    let spec = load(file);
    let mut upstreams: BTreeMap<String, Upstream> = BTreeMap::new();
    for s in &spec.services {
        for e in &s.endpoints {
            upstreams
                .entry(e.upstream.clone())
                .or_insert_with(|| Upstream::start(&e.upstream));
        }
    }
    let mut text = String::new();
    for s in &spec.services {
        let endpoints: Vec<(&Upstream, &str)> = s
            .endpoints
            .iter()
            .map(|e| (&upstreams[&e.upstream], e.version.as_str()))
            .collect();
        text += &mesh::service_entry(&s.host, s.port, &endpoints);
    }
    text += &spec.mesh;
    let envoy = mesh::start_text(&text).unwrap_or_else(|e| panic!("{file}: {e:#}"));
    let modelled = sluice::model(
        &sluice::Inputs::from_text("mesh.yaml", &text),
        &mesh::options(),
    )
    .unwrap_or_else(|d| panic!("{file}: {d}"));
    let mut explained = 0;
    let mut failures = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for case in &spec.cases {
        assert!(names.insert(&case.name), "{file}: case {} twice", case.name);
        assert!(
            !case.istio.trim().is_empty(),
            "{file}: {}: no istio",
            case.name
        );
        for (name, setup) in &case.setup {
            let u = upstreams
                .get(name)
                .unwrap_or_else(|| panic!("{file}: {}: no upstream {name}", case.name));
            u.set_behavior(behavior(setup));
        }
        if let Err(why) = run_case(&envoy, &upstreams, case, &modelled, &mut explained) {
            failures.push(format!("{file}: {}: {why}", case.name));
        }
        for u in upstreams.values() {
            u.set_behavior(Behavior::Ok);
        }
    }
    let total = spec.cases.len();
    eprintln!(
        "conformance {file} ({}): {} of {total} cases pass; {explained} responses agree with `sluice explain`",
        spec.about,
        total - failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {total} cases fail:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        envoy.log()
    );
}

fn behavior(s: &Setup) -> Behavior {
    match (s.status, s.fail_next, s.delay_millis) {
        (Some(status), Some(count), None) => Behavior::FailNext { count, status },
        (Some(status), None, None) => Behavior::Status(status),
        (None, None, Some(ms)) => Behavior::Delay(Duration::from_millis(ms)),
        other => panic!("setup: status [+ failNext] or delayMillis, not {other:?}"),
    }
}

fn run_case(
    envoy: &Envoy,
    upstreams: &BTreeMap<String, Upstream>,
    case: &Case,
    modelled: &sluice::Modelled,
    explained_count: &mut usize,
) -> Result<(), String> {
    for (i, req) in case.requests.iter().enumerate() {
        let at = format!(
            "request {i} ({} {}{})",
            req.method.as_deref().unwrap_or("GET"),
            req.authority,
            req.path
        );
        let port = envoy.listener_port(&format!("listener_{}", req.port));
        let explained = explain(modelled, req).map_err(|e| format!("{at}: explain: {e}"))?;
        let repeat = req.repeat.unwrap_or(1).max(1);
        let mut served = BTreeMap::<String, usize>::new();
        for _ in 0..repeat {
            for u in upstreams.values() {
                u.clear_requests();
            }
            let mut r = Request::new(req.method.as_deref().unwrap_or("GET"), port, &req.path)
                .authority(&req.authority)
                .timeout(Duration::from_secs(10));
            for (k, v) in &req.headers {
                r = r.header(k, v);
            }
            for [k, v] in &req.header_lines {
                r = r.header(k, v);
            }
            let started = Instant::now();
            let response = client::send(&r).map_err(|e| format!("{at}: {e:#}"))?;
            let took = started.elapsed();
            check_response(&req.expect, &response, took, upstreams).map_err(|why| {
                format!(
                    "{at}: {why}; got {} {:?}",
                    response.status,
                    response.headers_text()
                )
            })?;
            agrees(&explained, &response, upstreams).map_err(|why| {
                format!(
                    "{at}: `sluice explain` disagrees with Envoy: {why}\n{}",
                    sluice::explain::to_text(&explained)
                )
            })?;
            *explained_count += 1;
            if let Some(by) = response.served_by() {
                *served.entry(by.to_owned()).or_default() += 1;
            }
        }
        let e = &req.expect;
        for name in &e.served_by_each {
            if !served.contains_key(name) {
                return Err(format!("{at}: {name} never served in {repeat}: {served:?}"));
            }
        }
        if e.same_server && served.len() != 1 {
            return Err(format!("{at}: several servers in {repeat}: {served:?}"));
        }
    }
    Ok(())
}

/// The request as `sluice explain` sees it, explained on the mesh Envoy runs.
fn explain(
    modelled: &sluice::Modelled,
    req: &Req,
) -> Result<sluice::explain::Explained, sluice::explain::Error> {
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    headers.extend(req.header_lines.iter().map(|[k, v]| (k.clone(), v.clone())));
    let request = sluice::explain::Request {
        host: req.authority.clone(),
        port: Some(u32::from(req.port)),
        method: req.method.clone().unwrap_or_else(|| "GET".into()),
        path: req.path.clone(),
        headers,
        scope: sluice::explain::Scope::Any,
        source_address: Some("127.0.0.1".into()),
    };
    sluice::explain::explain_in(&modelled.resources, &modelled.mesh, &request)
}

/// Whether Envoy's answer `r` is what `e` says: see the module docs.
fn agrees(
    e: &sluice::explain::Explained,
    r: &Response,
    upstreams: &BTreeMap<String, Upstream>,
) -> Result<(), String> {
    use sluice::explain::{Action, Decision};
    let routed = match &e.decision {
        Decision::Route(routed) => Some(routed),
        Decision::NoRoute => None,
    };
    // Who served: the response says, unless the route removes x-served-by; then the one
    // upstream that received the request (each request starts with their records cleared).
    let received: Vec<&str> = upstreams
        .iter()
        .filter(|(_, u)| u.request_count() > 0)
        .map(|(name, _)| name.as_str())
        .collect();
    let served = r
        .served_by()
        .or_else(|| (received.len() == 1).then(|| received[0]));
    if let Some(by) = served {
        let routed = routed.ok_or_else(|| format!("served by {by}, explain says no route"))?;
        let port = upstreams
            .get(by)
            .ok_or_else(|| format!("unknown upstream {by}"))?
            .port();
        let endpoint = format!("127.0.0.1:{port}");
        let (named, allowed): (String, Vec<&String>) = match &routed.action {
            Action::Cluster { cluster, endpoints } => (cluster.clone(), endpoints.iter().collect()),
            Action::Split {
                members, sticky, ..
            } => match sticky.as_ref().and_then(|s| s.member.as_ref()) {
                Some(member) => (
                    member.clone(),
                    members
                        .iter()
                        .filter(|m| &m.cluster == member)
                        .flat_map(|m| &m.endpoints)
                        .collect(),
                ),
                None => (
                    format!("split {}", e.outcome),
                    members.iter().flat_map(|m| &m.endpoints).collect(),
                ),
            },
            other => return Err(format!("served by {by}, explain says {other:?}")),
        };
        if !allowed.contains(&&endpoint) {
            return Err(format!(
                "served by {by} ({endpoint}), explain names {named} ({allowed:?})"
            ));
        }
        return Ok(());
    }
    // No upstream answered: the kind of decision must account for the answer.
    let status = u32::from(r.status);
    let Some(routed) = routed else {
        return if status == 404 {
            Ok(())
        } else {
            Err(format!(
                "explain says no route (404), Envoy answered {status}"
            ))
        };
    };
    let abort = routed
        .fault
        .as_ref()
        .and_then(|f| f.abort.as_ref())
        .filter(|(_, percent)| *percent > 0.0);
    match &routed.action {
        Action::Redirect { status: want, .. } | Action::DirectResponse { status: want }
            if *want == status =>
        {
            Ok(())
        }
        _ if abort.is_some_and(|(code, _)| *code == status.to_string()) => Ok(()),
        _ if routed.cors_preflight => Ok(()),
        Action::Cluster { .. } | Action::Split { .. } if status >= 500 => {
            // The upstream failed or timed out (the case's setup): still an upstream decision.
            Ok(())
        }
        other => Err(format!(
            "Envoy answered {status} without an upstream; explain says {} {other:?}",
            e.outcome
        )),
    }
}

trait HeadersText {
    fn headers_text(&self) -> String;
}

impl HeadersText for Response {
    fn headers_text(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.headers {
            let _ = write!(out, "{k}: {}; ", String::from_utf8_lossy(v));
        }
        out
    }
}

fn check_response(
    e: &Expect,
    r: &Response,
    took: Duration,
    upstreams: &BTreeMap<String, Upstream>,
) -> Result<(), String> {
    if r.status != e.status {
        return Err(format!("status {} (want {})", r.status, e.status));
    }
    if let Some(want) = &e.served_by
        && r.served_by() != Some(want.as_str())
    {
        return Err(format!("served by {:?} (want {want})", r.served_by()));
    }
    for (name, want) in &e.headers {
        if r.header_str(name) != want.as_deref() {
            return Err(format!(
                "header {name}: {:?} (want {want:?})",
                r.header_str(name)
            ));
        }
    }
    if let Some(want) = &e.location
        && r.header_str("location") != Some(want.as_str())
    {
        return Err(format!(
            "location {:?} (want {want})",
            r.header_str("location")
        ));
    }
    if let Some(want) = &e.body
        && r.text() != *want
    {
        return Err(format!("body {:?} (want {want:?})", r.text()));
    }
    if let Some(min) = e.min_millis
        && took < Duration::from_millis(min)
    {
        return Err(format!("answered in {took:?} (want at least {min} ms)"));
    }
    let want = match r.served_by() {
        Some(by) if !e.upstream_by_server.is_empty() => Some(
            e.upstream_by_server
                .get(by)
                .ok_or_else(|| format!("{by} is not in upstreamByServer"))?,
        ),
        _ => e.upstream.as_ref(),
    };
    if let Some(want) = want {
        let by = r
            .served_by()
            .ok_or("no x-served-by to check the upstream")?;
        let u = upstreams
            .get(by)
            .ok_or_else(|| format!("unknown upstream {by}"))?;
        let requests = u.requests();
        let got = requests
            .last()
            .ok_or_else(|| format!("{by} recorded nothing"))?;
        if let Some(a) = &want.authority
            && got.authority.as_deref() != Some(a.as_str())
        {
            return Err(format!("upstream authority {:?} (want {a})", got.authority));
        }
        if let Some(p) = &want.path
            && got.path != *p
        {
            return Err(format!("upstream path {:?} (want {p})", got.path));
        }
        for (name, value) in &want.headers {
            let all: Vec<String> = got
                .headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect();
            let joined = (!all.is_empty()).then(|| all.join(","));
            if joined != *value {
                return Err(format!(
                    "upstream header {name}: {joined:?} (want {value:?})"
                ));
            }
        }
    }
    for (name, want) in &e.upstream_requests {
        let u = upstreams
            .get(name)
            .ok_or_else(|| format!("unknown upstream {name}"))?;
        if u.request_count() != *want {
            return Err(format!(
                "{name} got {} requests (want {want})",
                u.request_count()
            ));
        }
    }
    if let Some(shadow) = &e.mirrored_to {
        let u = upstreams
            .get(shadow)
            .ok_or_else(|| format!("unknown upstream {shadow}"))?;
        // Mirrors are sent asynchronously: wait for the copy (generous bound, never tight).
        let deadline = Instant::now() + Duration::from_secs(10);
        while u.request_count() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if u.request_count() == 0 {
            return Err(format!("no copy reached {shadow}"));
        }
    }
    Ok(())
}

macro_rules! conformance {
    ($($test:ident => $file:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                run_file($file);
            }
        )*

        #[test]
        fn every_fixture_file_runs_and_cases_are_counted() {
            let listed = [$($file),*];
            let mut on_disk: Vec<String> = std::fs::read_dir(fixture_dir())
                .expect("fixtures/conformance")
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".yaml"))
                .collect();
            on_disk.sort();
            let mut listed_sorted: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
            listed_sorted.sort();
            assert_eq!(on_disk, listed_sorted, "each fixture file has its test");
            let mut total = 0;
            let mut deviations = 0;
            for file in listed {
                let spec = load(file);
                total += spec.cases.len();
                deviations += spec.cases.iter().filter(|c| c.deviation.is_some()).count();
            }
            eprintln!("conformance: {total} cases in {} files, {deviations} documented deviations", listed.len());
            assert!(total >= 25, "{total} cases");
        }
    };
}

conformance! {
    header_operations => "headers.yaml",
    matching => "matching.yaml",
    redirects_rewrites_direct => "redirects.yaml",
    policies => "policies.yaml",
    traffic_shifting => "shifting.yaml",
    gateways => "gateways.yaml",
}
