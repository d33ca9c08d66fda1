//! `sluice explain`: why a request goes where it goes.
//!
//! Nothing here decides on its own: the mesh is modelled as `generate` models it
//! ([`crate::model()`]), the listener's plugin configs are emitted as for Envoy
//! ([`crate::xds::filters::PluginConfigs`]), and the router JSON the router filter would
//! receive is compiled with the filter's own code ([`CompiledRouter::from_json`]) and asked
//! to explain its decision ([`CompiledRouter::explain`], the same compiled matchers as
//! [`CompiledRouter::decide`]). A split is resolved with the canary's own code (the sticky key
//! read by [`sluice_core::canary::CompiledSticky::key`], [`sluice_core::canary::sticky_point`],
//! [`sluice_core::canary::locate`]).

use std::fmt::Write as _;

use serde::Serialize;
use sluice_core::canary::{self, CompiledCanary, KeySource};
use sluice_core::fault::config::FaultRule;
use sluice_core::host::MockHost;
use sluice_core::matching::Explanation as BlockOutcome;
use sluice_core::router::{CompiledRouter, Destination};

use crate::input::parse::{Kind, Resource, Spec};
use crate::input::yaml::FieldPath;
use crate::model::{Listener, Mesh, Rule};
use crate::xds::filters::PluginConfigs;
use crate::{Diagnostics, Inputs, Options};

/// Which listeners a request may arrive on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// Any listener.
    #[default]
    Any,
    /// The ports of this Gateway's servers (`name` or `namespace/name`).
    Gateway(String),
    /// Ports no Gateway serves (the sidecar's service ports).
    Mesh,
}

/// The request to explain.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `:authority`, as the client sends it (`shop` or `shop:8000`).
    pub host: String,
    /// The port it arrives on; `None`: the port of `host` if it has one, else the only
    /// listener (in `scope`) with a virtual host for it.
    pub port: Option<u32>,
    /// `:method` (default `GET`).
    pub method: String,
    /// `:path`, with the query string.
    pub path: String,
    /// Other headers, in order (`name`, value).
    pub headers: Vec<(String, String)>,
    /// Which listeners to consider.
    pub scope: Scope,
    /// The client address, for a split sticky on the source address.
    pub source_address: Option<String>,
}

/// Everything `sluice explain` prints (`--format json` is this, serialised).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Explained {
    /// The request as routed.
    pub request: RequestOut,
    /// The listener (`listener_<port>`) and its port.
    pub listener: ListenerOut,
    /// The virtual host chosen by `:authority`; `None`: no virtual host (404).
    pub virtual_host: Option<VirtualHostOut>,
    /// Every rule tried, in order; the matching one last.
    pub rules: Vec<RuleOut>,
    /// The kind of decision ([`Decision::kind`]): `upstream`, `redirect`, `direct_response`
    /// or `no_route`.
    pub outcome: &'static str,
    /// What happens to the request.
    pub decision: Decision,
}

/// The request.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RequestOut {
    /// `:method`.
    pub method: String,
    /// `:authority`.
    pub authority: String,
    /// `:path`.
    pub path: String,
    /// Other headers.
    pub headers: Vec<(String, String)>,
}

/// The listener.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ListenerOut {
    /// Envoy listener name.
    pub name: String,
    /// Port.
    pub port: u32,
}

/// The virtual host.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VirtualHostOut {
    /// Name (the VirtualService `namespace.name`, or `host:port` of a default route).
    pub name: String,
    /// Its Envoy domains.
    pub domains: Vec<String>,
}

/// One rule tried.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleOut {
    /// The rule (and Envoy route) name.
    pub name: String,
    /// `file:line:col` of its `http[i]` in the input; `None` for a service's default route.
    pub at: Option<String>,
    /// Whether it matched.
    pub matched: bool,
    /// The match block that matched (`None`: the rule has no `match`, or it did not match).
    pub matched_block: Option<usize>,
    /// Why each block failed (the blocks before the matching one, or all of them).
    pub misses: Vec<MissOut>,
}

/// Why a match block failed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MissOut {
    /// Index of the block in `match`.
    pub block: usize,
    /// The field that failed (`uri`, `headers["x-user"]`, ...).
    pub field: String,
    /// Why.
    pub reason: String,
    /// The field's condition as configured (JSON), e.g. `{"regex":"/r/[0-9]+"}`.
    pub condition: Option<serde_json::Value>,
}

/// What happens to the request.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decision {
    /// No virtual host or no rule matched: the router answers 404 (Istio's `NR`).
    NoRoute,
    /// A rule matched.
    Route(Box<Routed>),
}

impl Decision {
    /// `no_route`, `upstream`, `redirect` or `direct_response`.
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::NoRoute => "no_route",
            Decision::Route(r) => match r.action {
                Action::Cluster { .. } | Action::Split { .. } => "upstream",
                Action::Redirect { .. } => "redirect",
                Action::DirectResponse { .. } => "direct_response",
            },
        }
    }
}

/// The matched rule and what it does.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Routed {
    /// The rule name (the router's `x-sluice-rule`).
    pub rule: String,
    /// `file:line:col` of its `http[i]`.
    pub at: Option<String>,
    /// The Envoy route the rule's header selects (named after the rule).
    pub envoy_route: String,
    /// Where the request goes.
    pub action: Action,
    /// The fault that may apply.
    pub fault: Option<FaultOut>,
    /// The overall timeout (`None`: none, Istio's default).
    pub timeout: Option<String>,
    /// The retry policy.
    pub retries: Option<RetriesOut>,
    /// The rule has a CORS policy and the request is a preflight (`OPTIONS` with `origin` and
    /// `access-control-request-method`): Envoy's CORS filter answers it itself when the origin
    /// is allowed, and forwards it otherwise.
    pub cors_preflight: bool,
}

/// Where a matched request goes.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// One Envoy cluster.
    Cluster {
        /// Cluster name.
        cluster: String,
        /// Its endpoints (`address:port`).
        endpoints: Vec<String>,
    },
    /// A weighted split the canary filter resolves.
    Split {
        /// The split's name.
        split: String,
        /// Members and weights.
        members: Vec<MemberOut>,
        /// How a sticky split maps this request; `None`: not sticky (a random draw).
        sticky: Option<StickyOut>,
        /// The split has a progressive schedule: the weights shown are the first step's, the
        /// live ones depend on time.
        schedule: bool,
    },
    /// An Envoy redirect.
    Redirect {
        /// Status (301 by default).
        status: u32,
        /// New path, if set.
        uri: Option<String>,
        /// New authority, if set.
        authority: Option<String>,
    },
    /// An Envoy direct response.
    DirectResponse {
        /// Status.
        status: u32,
    },
}

/// A split member.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemberOut {
    /// Cluster name.
    pub cluster: String,
    /// Relative weight.
    pub weight: u32,
    /// Share of the traffic, in percent.
    pub percent: f64,
    /// Its endpoints.
    pub endpoints: Vec<String>,
}

/// How a sticky split maps this request.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StickyOut {
    /// Where the key is read: `header x`, `cookie c`, `source address`, `pin cookie p`.
    pub source: String,
    /// The key this request carries; `None`: it has none (a random draw, or a new pin cookie).
    pub key: Option<String>,
    /// The member the key maps to (with every member available).
    pub member: Option<String>,
}

/// A fault of the matched rule.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FaultOut {
    /// Delay and its probability in percent.
    pub delay: Option<(String, f64)>,
    /// Abort status (HTTP status or gRPC status name) and its probability in percent.
    pub abort: Option<(String, f64)>,
}

/// A retry policy.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RetriesOut {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Envoy `retry_on`.
    pub retry_on: String,
    /// The statuses `retriable-status-codes` retries.
    pub status_codes: Vec<u32>,
    /// Per-attempt timeout.
    pub per_try_timeout: Option<String>,
}

/// Why a request cannot be explained.
#[derive(Debug)]
pub enum Error {
    /// The input does not generate.
    Invalid(Diagnostics),
    /// The request names no usable listener, or the config is refused.
    Request(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Invalid(d) => write!(f, "the input does not generate:\n{d}"),
            Error::Request(why) => f.write_str(why),
        }
    }
}

/// Models `inputs` with `options` and explains `request`.
pub fn explain(inputs: &Inputs, options: &Options, request: &Request) -> Result<Explained, Error> {
    let modelled = crate::model(inputs, options).map_err(Error::Invalid)?;
    explain_in(&modelled.resources, &modelled.mesh, request)
}

/// [`explain`] on an already modelled mesh (several requests, one model).
pub fn explain_in(
    resources: &[Resource],
    mesh: &Mesh,
    request: &Request,
) -> Result<Explained, Error> {
    let method = if request.method.is_empty() {
        "GET"
    } else {
        &request.method
    };
    let path = if request.path.is_empty() {
        "/"
    } else {
        &request.path
    };
    let mut req = MockHost::request(method, &request.host, path);
    for (name, value) in &request.headers {
        let name = name.to_ascii_lowercase();
        if req.headers.contains_key(&name) {
            req = req.with_repeated(&name, value);
        } else {
            req = req.with(&name, value);
        }
    }
    let (listener, configs, router) = pick_listener(resources, mesh, request, &req)?;
    req.port = Some(listener.port);
    let trace = router.explain(&req);
    let positions = rule_positions(resources);
    let model_rules: Vec<&Rule> = listener
        .virtual_hosts
        .iter()
        .flat_map(|vh| &vh.rules)
        .collect();
    let virtual_host = trace.virtual_host.and_then(|(i, _)| {
        let vh = listener.virtual_hosts.get(i)?;
        Some(VirtualHostOut {
            name: vh.name.clone(),
            domains: vh.domains.clone(),
        })
    });
    let rules = trace
        .tried
        .iter()
        .map(|t| {
            let config = model_rules.get(t.rule_index).map(|r| r.matches.as_slice());
            let condition = |block: usize, field: &str| {
                let block = serde_json::to_value(config?.get(block)?).ok()?;
                condition_of(&block, field)
            };
            let (matched_block, misses) = match &t.outcome {
                BlockOutcome::CatchAll => (None, Vec::new()),
                BlockOutcome::Matched { block, earlier } => (Some(*block), earlier.clone()),
                BlockOutcome::NoMatch(misses) => (None, misses.clone()),
            };
            RuleOut {
                name: t.name.to_owned(),
                at: positions.get(t.name).cloned(),
                matched: t.outcome.is_match(),
                matched_block,
                misses: misses
                    .into_iter()
                    .map(|m| MissOut {
                        condition: condition(m.block, &m.field),
                        block: m.block,
                        field: m.field,
                        reason: m.reason,
                    })
                    .collect(),
            }
        })
        .collect();
    let decision = match trace.decision {
        None => Decision::NoRoute,
        Some(d) => {
            let rule = model_rules
                .get(d.rule_index)
                .ok_or_else(|| Error::Request("internal error: rule index".into()))?;
            let action = action(rule, d.destination, &configs, mesh, &req, request)?;
            let has = |name: &str| req.headers.contains_key(name);
            let cors_preflight = rule.native.cors.is_some()
                && method == "OPTIONS"
                && has("origin")
                && has("access-control-request-method");
            let fault = configs
                .fault
                .as_ref()
                .and_then(|f| f.faults.iter().find(|r| r.rule == rule.name).map(fault_out));
            Decision::Route(Box::new(Routed {
                rule: rule.name.clone(),
                at: positions.get(&rule.name).cloned(),
                envoy_route: rule.name.clone(),
                action,
                fault,
                timeout: rule.timeout.map(|t| format!("{:?}", t)),
                retries: rule
                    .retries
                    .as_ref()
                    .filter(|r| r.attempts > 0)
                    .map(|r| RetriesOut {
                        attempts: r.attempts,
                        retry_on: r.retry_on.join(","),
                        status_codes: r.status_codes.clone(),
                        per_try_timeout: r.per_try_timeout.map(|t| format!("{t:?}")),
                    }),
                cors_preflight,
            }))
        }
    };
    Ok(Explained {
        request: RequestOut {
            method: method.to_owned(),
            authority: request.host.clone(),
            path: path.to_owned(),
            headers: request.headers.clone(),
        },
        listener: ListenerOut {
            name: listener.name(),
            port: listener.port,
        },
        virtual_host,
        rules,
        outcome: decision.kind(),
        decision,
    })
}

/// A listener, its plugin configs, and its router compiled from the JSON the router filter
/// gets.
type Picked<'m> = (&'m Listener, PluginConfigs, CompiledRouter);

/// The listener the request arrives on (see [`Request::port`]).
fn pick_listener<'m>(
    resources: &[Resource],
    mesh: &'m Mesh,
    request: &Request,
    req: &MockHost,
) -> Result<Picked<'m>, Error> {
    let gateway_ports = gateway_ports(resources, None);
    let in_scope: Vec<&Listener> = match &request.scope {
        Scope::Any => mesh.listeners.values().collect(),
        Scope::Mesh => mesh
            .listeners
            .values()
            .filter(|l| !gateway_ports.contains(&l.port))
            .collect(),
        Scope::Gateway(name) => {
            let ports = gateway_ports_of(resources, name)?;
            mesh.listeners
                .values()
                .filter(|l| ports.contains(&l.port))
                .collect()
        }
    };
    let http: Vec<&Listener> = in_scope
        .into_iter()
        .filter(|l| !l.virtual_hosts.is_empty())
        .collect();
    let compile = |l: &'m Listener| -> Result<Picked<'m>, Error> {
        let configs =
            PluginConfigs::of(l, mesh, &l.name()).map_err(|e| Error::Request(e.to_string()))?;
        let json = configs
            .chain()
            .map_err(|e| Error::Request(e.to_string()))?
            .into_iter()
            .find(|(filter, _)| *filter == "router")
            .map(|(_, json)| json)
            .ok_or_else(|| Error::Request("no router config".into()))?;
        let router = CompiledRouter::from_json(json.as_bytes()).map_err(Error::Request)?;
        Ok((l, configs, router))
    };
    let ports = || {
        http.iter()
            .map(|l| l.port.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let port = request.port.or_else(|| {
        let (_, port) = request.host.rsplit_once(':')?;
        let port: u32 = port.parse().ok()?;
        http.iter().any(|l| l.port == port).then_some(port)
    });
    if let Some(port) = port {
        let l = http.iter().find(|l| l.port == port).ok_or_else(|| {
            Error::Request(format!(
                "no HTTP listener on port {port} (in scope: {})",
                ports()
            ))
        })?;
        return compile(l);
    }
    let mut candidates = Vec::new();
    for l in &http {
        let picked = compile(l)?;
        if picked.2.explain(req).virtual_host.is_some() {
            candidates.push(picked);
        }
    }
    match candidates.len() {
        1 => Ok(candidates.remove(0)),
        0 => Err(Error::Request(format!(
            "no listener has a virtual host for {:?} (HTTP ports in scope: {}); pass --port",
            request.host,
            ports()
        ))),
        _ => Err(Error::Request(format!(
            "{:?} is served on ports {}: pass --port (or --gateway NAME / --mesh)",
            request.host,
            candidates
                .iter()
                .map(|(l, _, _)| l.port.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The server ports of every Gateway (or of the one called `name`).
fn gateway_ports(resources: &[Resource], name: Option<&str>) -> Vec<u32> {
    resources
        .iter()
        .filter(|r| r.kind == Kind::Gateway)
        .filter(|r| {
            name.is_none_or(|n| match n.split_once('/') {
                Some((ns, n)) => r.namespace == ns && r.name == n,
                None => r.name == n,
            })
        })
        .filter_map(|r| match &r.spec {
            Spec::Gateway(g) => Some(g),
            _ => None,
        })
        .flat_map(|g| &g.servers)
        .filter_map(|s| s.port.as_ref()?.number)
        .collect()
}

fn gateway_ports_of(resources: &[Resource], name: &str) -> Result<Vec<u32>, Error> {
    let ports = gateway_ports(resources, Some(name));
    if ports.is_empty() {
        let known: Vec<String> = resources
            .iter()
            .filter(|r| r.kind == Kind::Gateway)
            .map(|r| format!("{}/{}", r.namespace, r.name))
            .collect();
        return Err(Error::Request(format!(
            "no Gateway {name:?} with server ports (Gateways: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    }
    Ok(ports)
}

/// `file:line:col` of every VirtualService `http[i]`, by the rule name the model gives it
/// (its `name`, else `<namespace>.<vs>.<i>`). Names are unique per listener.
pub fn rule_positions(resources: &[Resource]) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for r in resources {
        let Spec::VirtualService(vs) = &r.spec else {
            continue;
        };
        for (i, h) in vs.http.iter().enumerate() {
            let name = h
                .name
                .clone()
                .unwrap_or_else(|| format!("{}.{}.{i}", r.namespace, r.name));
            let pos = r
                .root
                .locate(&FieldPath::root().key("spec").key("http").index(i));
            out.entry(name)
                .or_insert_with(|| format!("{}:{}:{}", r.file, pos.line, pos.col));
        }
    }
    out
}

/// The configured condition of `field` (as [`sluice_core::matching::Miss`] names it) in a
/// match block's JSON.
fn condition_of(block: &serde_json::Value, field: &str) -> Option<serde_json::Value> {
    let keyed = |prefix: &str, key: &str| {
        let name = field.strip_prefix(prefix)?.strip_suffix("]")?;
        let name: String = serde_json::from_str(name).ok()?;
        block
            .get(key)?
            .as_object()?
            .iter()
            .find_map(|(k, v)| k.eq_ignore_ascii_case(&name).then(|| v.clone()))
    };
    match field {
        "uri" | "method" | "authority" | "port" => {
            let mut v = block.get(field)?.clone();
            if field == "uri"
                && block.get("ignoreUriCase") == Some(&serde_json::Value::Bool(true))
                && let Some(o) = v.as_object_mut()
            {
                o.insert("ignoreUriCase".into(), true.into());
            }
            Some(v)
        }
        _ => keyed("headers[", "headers")
            .or_else(|| keyed("withoutHeaders[", "withoutHeaders"))
            .or_else(|| keyed("queryParams[", "queryParams")),
    }
}

fn endpoints(mesh: &Mesh, cluster: &str) -> Vec<String> {
    mesh.clusters
        .get(cluster)
        .map(|c| {
            c.endpoints
                .iter()
                .map(|e| format!("{}:{}", e.address, e.port))
                .collect()
        })
        .unwrap_or_default()
}

fn action(
    rule: &Rule,
    destination: &Destination,
    configs: &PluginConfigs,
    mesh: &Mesh,
    req: &MockHost,
    request: &Request,
) -> Result<Action, Error> {
    let n = &rule.native;
    if let Some(r) = &n.redirect {
        return Ok(Action::Redirect {
            status: r.status,
            uri: r.path.clone().or_else(|| r.prefix_rewrite.clone()),
            authority: r.authority.clone(),
        });
    }
    if let Some(d) = &n.direct_response {
        return Ok(Action::DirectResponse { status: d.status });
    }
    match destination {
        Destination::Cluster(c) => Ok(Action::Cluster {
            cluster: c.clone(),
            endpoints: endpoints(mesh, c),
        }),
        Destination::Split(name) => {
            let canary = configs
                .canary
                .as_ref()
                .ok_or_else(|| Error::Request(format!("split {name:?}: no canary config")))?;
            let json = serde_json::to_string(canary).map_err(|e| Error::Request(e.to_string()))?;
            let compiled = CompiledCanary::from_json(json.as_bytes()).map_err(Error::Request)?;
            let split = compiled
                .split_index(name.as_bytes())
                .and_then(|i| compiled.splits.get(i))
                .ok_or_else(|| {
                    Error::Request(format!("split {name:?} not in the canary config"))
                })?;
            // A schedule's live step depends on when it started: show its first step.
            let weights: &[u32] = match &split.schedule {
                Some(schedule) => schedule.weights(0),
                None => &split.weights,
            };
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            let members = split
                .clusters
                .iter()
                .zip(weights)
                .map(|(c, &w)| MemberOut {
                    cluster: c.clone(),
                    weight: w,
                    percent: if total == 0 {
                        0.0
                    } else {
                        (f64::from(w) * 1000.0 / total as f64).round() / 10.0
                    },
                    endpoints: endpoints(mesh, c),
                })
                .collect();
            let sticky = split.sticky.as_ref().map(|s| {
                let mut source = match &s.source {
                    Some(KeySource::Header(h)) => format!("header {h}"),
                    Some(KeySource::Cookie(c)) => format!("cookie {c}"),
                    Some(KeySource::SourceAddress) => "source address".to_owned(),
                    None => String::new(),
                };
                if let Some(pin) = &s.pin_cookie {
                    if !source.is_empty() {
                        source.push_str(", else ");
                    }
                    let _ = write!(source, "pin cookie {}", pin.name);
                }
                let key = s.key(req, || {
                    request
                        .source_address
                        .as_ref()
                        .map(|a| a.as_bytes().to_vec())
                });
                let member = key.as_ref().and_then(|key| {
                    let point = canary::sticky_point(&split.name, key);
                    let index = canary::locate(weights, point)?;
                    split.clusters.get(index).cloned()
                });
                StickyOut {
                    source,
                    key: key.map(|k| String::from_utf8_lossy(&k).into_owned()),
                    member,
                }
            });
            Ok(Action::Split {
                split: name.clone(),
                members,
                sticky,
                schedule: split.schedule.is_some(),
            })
        }
    }
}

fn fault_out(f: &FaultRule) -> FaultOut {
    FaultOut {
        delay: f.delay.as_ref().map(|d| {
            let percent = d
                .percentage
                .map(|p| p.value)
                .or(d.percent.map(f64::from))
                .unwrap_or(0.0);
            (d.fixed_delay.clone(), percent)
        }),
        abort: f.abort.as_ref().map(|a| {
            let status = a
                .http_status
                .map(|s| s.to_string())
                .or_else(|| a.grpc_status.clone())
                .unwrap_or_default();
            (status, a.percentage.map_or(0.0, |p| p.value))
        }),
    }
}

/// The explanation as text, for people.
pub fn to_text(e: &Explained) -> String {
    let mut out = String::new();
    let r = &e.request;
    let _ = writeln!(out, "request:  {} {}{}", r.method, r.authority, r.path);
    for (k, v) in &r.headers {
        let _ = writeln!(out, "          {k}: {v}");
    }
    let _ = writeln!(
        out,
        "listener: {} (port {})",
        e.listener.name, e.listener.port
    );
    match &e.virtual_host {
        Some(vh) => {
            let _ = writeln!(
                out,
                "virtual host: {} (domains: {})",
                vh.name,
                vh.domains.join(", ")
            );
        }
        None => {
            let _ = writeln!(
                out,
                "virtual host: none matches {:?} -> 404 (no route)",
                r.authority
            );
        }
    }
    if !e.rules.is_empty() {
        let _ = writeln!(out, "rules tried:");
    }
    for (i, rule) in e.rules.iter().enumerate() {
        let at = rule
            .at
            .as_deref()
            .map(|a| format!(" ({a})"))
            .unwrap_or_default();
        let verdict = match (rule.matched, rule.matched_block) {
            (true, Some(b)) => format!("MATCHED (match[{b}])"),
            (true, None) => "MATCHED (no match conditions: every request)".to_owned(),
            (false, _) => "no match".to_owned(),
        };
        let _ = writeln!(out, "  {}. {}{at}: {verdict}", i + 1, rule.name);
        for m in &rule.misses {
            let cond = m
                .condition
                .as_ref()
                .map(|c| format!(" [{c}]"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "       match[{}].{}{cond}: {}",
                m.block, m.field, m.reason
            );
        }
    }
    match &e.decision {
        Decision::NoRoute => {
            if e.virtual_host.is_some() {
                let _ = writeln!(out, "decision: no rule matches -> 404 (no route)");
            }
        }
        Decision::Route(d) => {
            let at =
                d.at.as_deref()
                    .map(|a| format!(" at {a}"))
                    .unwrap_or_default();
            let _ = writeln!(out, "decision: rule {}{at}", d.rule);
            let _ = writeln!(out, "  envoy route: {}", d.envoy_route);
            match &d.action {
                Action::Cluster { cluster, endpoints } => {
                    let _ = writeln!(out, "  cluster: {cluster} (endpoints: {})", list(endpoints));
                }
                Action::Split {
                    split,
                    members,
                    sticky,
                    schedule,
                } => {
                    let _ = writeln!(
                        out,
                        "  split {split}{}:",
                        if *schedule {
                            " (scheduled: weights of the first step; the live step depends on time)"
                        } else {
                            ""
                        }
                    );
                    for m in members {
                        let _ = writeln!(
                            out,
                            "    {} weight {} ({}%) (endpoints: {})",
                            m.cluster,
                            m.weight,
                            m.percent,
                            list(&m.endpoints)
                        );
                    }
                    match sticky {
                        None => {
                            let _ = writeln!(
                                out,
                                "  not sticky: each request draws a member by weight"
                            );
                        }
                        Some(s) => match (&s.key, &s.member) {
                            (Some(key), Some(member)) => {
                                let _ = writeln!(
                                    out,
                                    "  sticky on {}: key {key:?} -> {member}",
                                    s.source
                                );
                            }
                            _ => {
                                let _ = writeln!(
                                    out,
                                    "  sticky on {}: this request has no key -> a member drawn by weight",
                                    s.source
                                );
                            }
                        },
                    }
                }
                Action::Redirect {
                    status,
                    uri,
                    authority,
                } => {
                    let _ = writeln!(
                        out,
                        "  redirect {status}{}{}",
                        uri.as_deref()
                            .map(|u| format!(" path {u}"))
                            .unwrap_or_default(),
                        authority
                            .as_deref()
                            .map(|a| format!(" authority {a}"))
                            .unwrap_or_default()
                    );
                }
                Action::DirectResponse { status } => {
                    let _ = writeln!(out, "  direct response {status}");
                }
            }
            if d.cors_preflight {
                let _ = writeln!(
                    out,
                    "  CORS preflight: Envoy's CORS filter answers it when the origin is allowed (else it is forwarded)"
                );
            }
            match &d.fault {
                None => {
                    let _ = writeln!(out, "  fault: none");
                }
                Some(f) => {
                    if let Some((delay, p)) = &f.delay {
                        let _ = writeln!(out, "  fault: delay {delay} with probability {p}%");
                    }
                    if let Some((status, p)) = &f.abort {
                        let _ = writeln!(out, "  fault: abort {status} with probability {p}%");
                    }
                }
            }
            let _ = writeln!(out, "  timeout: {}", d.timeout.as_deref().unwrap_or("none"));
            match &d.retries {
                None => {
                    let _ = writeln!(out, "  retries: none");
                }
                Some(r) => {
                    let codes = if r.status_codes.is_empty() {
                        String::new()
                    } else {
                        let codes: Vec<String> =
                            r.status_codes.iter().map(u32::to_string).collect();
                        format!(" ({})", codes.join(","))
                    };
                    let _ = writeln!(
                        out,
                        "  retries: {} on {}{codes}{}",
                        r.attempts,
                        r.retry_on,
                        r.per_try_timeout
                            .as_deref()
                            .map(|t| format!(", {t} per try"))
                            .unwrap_or_default()
                    );
                }
            }
        }
    }
    out
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none listed".to_owned()
    } else {
        items.join(", ")
    }
}
