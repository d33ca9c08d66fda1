//! The router filter's plugin config and per-request decision.
//!
//! A [`RouterConfig`] is a list of virtual hosts (Envoy's domain matching picks one by
//! `:authority`), each with an ordered list of rules (Istio `http` routes: `match` blocks and a
//! destination). [`CompiledRouter::decide`] returns the first matching rule of the chosen host,
//! or `None`, which the filter answers with 404 as Istio's "no route" (`NR`).
//!
//! ```json
//! {"virtualHosts": [{"name": "reviews", "domains": ["reviews", "reviews:9080"], "rules": [
//!   {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
//!    "route": {"cluster": "reviews-v2"}},
//!   {"name": "default", "route": {"split": "reviews-canary"}}]}]}
//! ```

use serde::{Deserialize, Serialize};

use crate::host::RequestView;
use crate::matching::{HttpMatchRequest, Lookup, MatchSet};
use crate::metrics;
use crate::unique::FirstSeen;
use crate::wire;

/// The router filter's plugin configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouterConfig {
    /// Virtual hosts, selected by `:authority` as Envoy selects them.
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub virtual_hosts: Vec<VirtualHost>,
}

/// A set of domains and the rules for requests addressed to them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualHost {
    /// Name, for errors and logs.
    pub name: String,
    /// Envoy-style domains: `host`, `host:port`, `*.suffix`, `prefix.*`, or `*`.
    pub domains: Vec<String>,
    /// Ordered rules; the first that matches wins.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// One route: Istio match blocks (OR-ed; none = match all) and where matching requests go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Unique across the whole config: sent to later filters in `x-sluice-rule` and used in the
    /// metric `sluice.router.rule.<name>.matched`.
    pub name: String,
    /// Istio `HTTPMatchRequest` blocks (JSON `"match"`); empty matches every request.
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<HttpMatchRequest>,
    /// Where a matching request goes.
    pub route: Destination,
}

/// A rule's destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Destination {
    /// `{"cluster": "<envoy cluster>"}`: sent in `x-sluice-cluster`, which Envoy's route reads.
    Cluster(String),
    /// `{"split": "<split name>"}`: sent in `x-sluice-split` for the canary filter to resolve.
    Split(String),
}

/// The result of routing a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    /// Index of the rule across the whole config, counting the rules of all virtual hosts in
    /// config order (the index into [`CompiledRouter::rules`]).
    pub rule_index: usize,
    /// The rule's name.
    pub rule_name: &'a str,
    /// The virtual host the rule belongs to.
    pub virtual_host: &'a str,
    /// Where the request goes.
    pub destination: &'a Destination,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// The rule's name.
    pub name: String,
    /// Its destination.
    pub destination: Destination,
    /// The counter counting its matches (`sluice.router.rule.<sanitized name>.matched`).
    pub metric_name: String,
    matches: MatchSet,
}

#[derive(Debug, Clone)]
struct CompiledHost {
    name: String,
    /// Indices into `CompiledRouter::rules`, in order.
    rules: std::ops::Range<usize>,
}

/// Domain tables, all lower-case, following Envoy's search order: exact, then suffix wildcards
/// (longest suffix first), then prefix wildcards (longest prefix first), then `*`.
#[derive(Debug, Clone, Default)]
struct Domains {
    exact: crate::unique::ByteMap,
    /// (suffix after '*', host index), longest first.
    suffixes: Vec<(Box<[u8]>, usize)>,
    /// (prefix before '*', host index), longest first.
    prefixes: Vec<(Box<[u8]>, usize)>,
    any: Option<usize>,
}

/// Inserts a wildcard domain's affix so the table stays longest first, after every affix of the
/// same length (equal lengths keep their config order). Ordered insertion rather than a sort:
/// it runs once per configuration, and it spares the module a sort instance (~5 KB of wasm).
fn insert_longest_first(table: &mut Vec<(Box<[u8]>, usize)>, affix: &str, host: usize) {
    let at = table.partition_point(|(other, _)| other.len() >= affix.len());
    table.insert(at, (affix.as_bytes().into(), host));
}

/// A validated router config, ready to decide per request.
#[derive(Debug, Clone, Default)]
pub struct CompiledRouter {
    hosts: Vec<CompiledHost>,
    rules: Vec<CompiledRule>,
    domains: Domains,
    reads_port: bool,
}

/// Longest host name we lower-case on the stack; longer ones (rare) are lower-cased on the heap.
const STACK_HOST_LEN: usize = 256;

impl CompiledRouter {
    /// Validates and compiles a config. The error names the virtual host, rule and field:
    /// `virtualHosts[0] "reviews": rules[1] "jason": match[0].uri.regex: invalid regex ...`.
    pub fn compile(config: &RouterConfig) -> Result<Self, String> {
        let mut router = Self::default();
        // Values: the virtual host of a domain; the index in `router.rules` of a rule name and
        // of a counter name.
        let mut domain_owner = FirstSeen::new();
        let mut rule_owner = FirstSeen::new();
        let mut metric_owner = FirstSeen::new();
        if config.virtual_hosts.is_empty() {
            return Err("virtualHosts: at least one virtual host is required".into());
        }
        for (host_index, host) in config.virtual_hosts.iter().enumerate() {
            let at = format!("virtualHosts[{host_index}] {:?}", host.name);
            if host.name.is_empty() {
                return Err(format!(
                    "virtualHosts[{host_index}].name: must not be empty"
                ));
            }
            if host.domains.is_empty() {
                return Err(format!("{at}.domains: at least one domain is required"));
            }
            for (domain_index, domain) in host.domains.iter().enumerate() {
                let lower = domain.to_ascii_lowercase();
                let field = format!("{at}.domains[{domain_index}] {domain:?}");
                if let Some(first) = domain_owner.get(&lower) {
                    return Err(format!(
                        "{field}: duplicate domain, already in virtualHosts[{first}] {:?} (Envoy requires unique domains)",
                        config
                            .virtual_hosts
                            .get(first)
                            .map_or("", |h| h.name.as_str())
                    ));
                }
                router
                    .domains
                    .insert(&lower, host_index)
                    .map_err(|why| format!("{field}: {why}"))?;
                domain_owner.insert(&lower, host_index);
            }
            let first_rule = router.rules.len();
            for (rule_index, rule) in host.rules.iter().enumerate() {
                let at = format!("{at}: rules[{rule_index}] {:?}", rule.name);
                check_header_value(&rule.name).map_err(|why| format!("{at}.name: {why}"))?;
                if let Some(first) = rule_owner.insert(&rule.name, router.rules.len()) {
                    // The first rule is in an earlier host, or earlier in this one.
                    let (h, r) = router
                        .hosts
                        .iter()
                        .enumerate()
                        .find(|(_, h)| h.rules.contains(&first))
                        .map_or_else(
                            || (host_index, first.saturating_sub(first_rule)),
                            |(h, host)| (h, first.saturating_sub(host.rules.start)),
                        );
                    return Err(format!(
                        "{at}.name: duplicate rule name, already virtualHosts[{h}].rules[{r}] (rule names are unique across the config)"
                    ));
                }
                let metric_name = metrics::router_rule_matched(&rule.name);
                if let Some(first) = metric_owner.insert(&metric_name, router.rules.len()) {
                    let other = router.rules.get(first).map_or("", |r| r.name.as_str());
                    return Err(format!(
                        "{at}.name: rules {other:?} and {:?} would share the counter {metric_name:?} (names are sanitised to [A-Za-z0-9_-]); rename one",
                        rule.name
                    ));
                }
                let (kind, target) = match &rule.route {
                    Destination::Cluster(c) => ("cluster", c),
                    Destination::Split(s) => ("split", s),
                };
                check_header_value(target).map_err(|why| format!("{at}.route.{kind}: {why}"))?;
                let matches = MatchSet::compile(&rule.match_).map_err(|e| format!("{at}: {e}"))?;
                if let Some(internal) = matches
                    .header_names()
                    .into_iter()
                    .find(|name| wire::INTERNAL_HEADERS.contains(name))
                {
                    return Err(format!(
                        "{at}.match: {internal:?} is internal to sluice (set by the filters, never taken from clients) and cannot be matched"
                    ));
                }
                router.reads_port |= matches.uses_port();
                router.rules.push(CompiledRule {
                    name: rule.name.clone(),
                    destination: rule.route.clone(),
                    metric_name,
                    matches,
                });
            }
            router.hosts.push(CompiledHost {
                name: host.name.clone(),
                rules: first_rule..router.rules.len(),
            });
        }
        Ok(router)
    }

    /// Parses the plugin configuration JSON and compiles it; the error says which step failed
    /// (JSON errors carry line and column, compile errors the field path).
    pub fn from_json(json: &[u8]) -> Result<Self, String> {
        if json.iter().all(u8::is_ascii_whitespace) {
            return Err("empty plugin configuration: expected {\"virtualHosts\": [...]}".into());
        }
        let config: RouterConfig = crate::json::from_slice(json)
            .map_err(|e| format!("invalid router configuration JSON: {e}"))?;
        Self::compile(&config).map_err(|e| format!("invalid router configuration: {e}"))
    }

    /// Every rule, in config order (the index space of [`Decision::rule_index`]).
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// Whether some rule matches on the local port, so the glue must be able to read it.
    pub fn reads_port(&self) -> bool {
        self.reads_port
    }

    /// Routes a request: the virtual host by `:authority`, then its first matching rule.
    /// `None` means no virtual host or no rule matched (answer 404).
    pub fn decide(&self, req: &impl RequestView) -> Option<Decision<'_>> {
        let mut lookup = Lookup::new(req);
        let host_index = match self.domains.only_any() {
            // One catch-all virtual host (a filter in front of a single service): the authority
            // cannot change the outcome, so it is not fetched.
            Some(any) => any,
            None => {
                let authority = lookup.header(":authority").unwrap_or_default();
                self.domains.find(authority)?
            }
        };
        let host = self.hosts.get(host_index)?;
        let rules = self.rules.get(host.rules.clone())?;
        rules
            .iter()
            .position(|rule| rule.matches.matches_with(&mut lookup))
            .and_then(|offset| {
                let rule_index = host.rules.start + offset;
                let rule = self.rules.get(rule_index)?;
                Some(Decision {
                    rule_index,
                    rule_name: &rule.name,
                    virtual_host: &host.name,
                    destination: &rule.destination,
                })
            })
    }
}

/// Every step of routing one request, for tools (`sluice explain`): see
/// [`CompiledRouter::explain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace<'a> {
    /// The virtual host chosen by `:authority` (index in the config, name), if any.
    pub virtual_host: Option<(usize, &'a str)>,
    /// The rules of that host that were tried, in order, the matching one last.
    pub tried: Vec<TriedRule<'a>>,
    /// The decision, exactly as [`CompiledRouter::decide`] returns it.
    pub decision: Option<Decision<'a>>,
}

/// One rule tried by [`CompiledRouter::explain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriedRule<'a> {
    /// Index across the config (as [`Decision::rule_index`]).
    pub rule_index: usize,
    /// The rule's name.
    pub name: &'a str,
    /// Which block matched, or why each failed.
    pub outcome: crate::matching::Explanation,
}

impl CompiledRouter {
    /// [`CompiledRouter::decide`] with its reasons: the virtual host, every rule tried and why
    /// each that did not match failed ([`crate::matching::MatchSet::explain_with`], the same
    /// compiled matchers). Allocates; not for the filters' per-request path. Its `decision` is
    /// `decide`'s own, and the rule it names is the first in `tried` that matched (tested).
    pub fn explain<'a>(&'a self, req: &impl RequestView) -> Trace<'a> {
        let decision = self.decide(req);
        let mut lookup = Lookup::new(req);
        let host_index = match self.domains.only_any() {
            Some(any) => Some(any),
            None => {
                let authority = lookup.header(":authority").unwrap_or_default();
                self.domains.find(authority)
            }
        };
        let Some((host_index, host)) = host_index.and_then(|i| Some((i, self.hosts.get(i)?)))
        else {
            return Trace {
                virtual_host: None,
                tried: Vec::new(),
                decision,
            };
        };
        let mut tried = Vec::new();
        for rule_index in host.rules.clone() {
            let Some(rule) = self.rules.get(rule_index) else {
                break;
            };
            let outcome = rule.matches.explain_with(&mut lookup);
            let matched = outcome.is_match();
            tried.push(TriedRule {
                rule_index,
                name: &rule.name,
                outcome,
            });
            if matched {
                break;
            }
        }
        Trace {
            virtual_host: Some((host_index, &host.name)),
            tried,
            decision,
        }
    }
}

impl Domains {
    /// Classifies one lower-cased domain. Wildcards follow Envoy: a single `*` as the whole
    /// domain, as the first character (suffix form) or as the last (prefix form).
    fn insert(&mut self, domain: &str, host: usize) -> Result<(), String> {
        if domain.is_empty() {
            return Err("empty domain".into());
        }
        if !domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:*[]".contains(&b))
        {
            return Err(
                "invalid character (allowed: letters, digits, '.', '-', '_', ':', '[', ']', '*')"
                    .into(),
            );
        }
        let stars = domain.bytes().filter(|&b| b == b'*').count();
        if domain == "*" {
            self.any = Some(host);
        } else if stars == 0 {
            self.exact.insert(domain.as_bytes(), host);
        } else if stars == 1
            && let Some(suffix) = domain.strip_prefix('*')
        {
            insert_longest_first(&mut self.suffixes, suffix, host);
        } else if stars == 1
            && let Some(prefix) = domain.strip_suffix('*')
        {
            insert_longest_first(&mut self.prefixes, prefix, host);
        } else {
            return Err(
                "a wildcard '*' must be the whole domain, its first or its last character".into(),
            );
        }
        Ok(())
    }

    /// The `*` host when it is the only domain of the config.
    fn only_any(&self) -> Option<usize> {
        let no_other =
            self.exact.is_empty() && self.suffixes.is_empty() && self.prefixes.is_empty();
        self.any.filter(|_| no_other)
    }

    /// The virtual host for an authority, case-insensitively. Each class (exact, suffix, prefix)
    /// is tried with the authority as sent, then with its port removed, so a domain listed
    /// without a port also serves `host:port` (as Envoy with `strip_any_host_port`), while a
    /// domain listed with a port takes precedence for that port. `*` comes last.
    fn find(&self, authority: &[u8]) -> Option<usize> {
        let mut stack = [0u8; STACK_HOST_LEN];
        let heap: Vec<u8>;
        let host: &[u8] = match stack.get_mut(..authority.len()) {
            Some(buf) => {
                buf.copy_from_slice(authority);
                buf.make_ascii_lowercase();
                buf
            }
            None => {
                heap = authority.to_ascii_lowercase();
                &heap
            }
        };
        let without_port = strip_port(host);
        let candidates = [Some(host), without_port];
        let candidates = candidates.iter().flatten();
        candidates
            .clone()
            .find_map(|h| self.exact.get(h))
            .or_else(|| {
                candidates.clone().find_map(|h| {
                    self.suffixes
                        .iter()
                        .find(|(s, _)| h.len() > s.len() && h.ends_with(s))
                        .map(|(_, i)| *i)
                })
            })
            .or_else(|| {
                candidates.clone().find_map(|h| {
                    self.prefixes
                        .iter()
                        .find(|(p, _)| h.len() > p.len() && h.starts_with(p))
                        .map(|(_, i)| *i)
                })
            })
            .or(self.any)
    }
}

/// `host` without a trailing `:port` (digits), handling IPv6 literals (`[::1]:80`).
fn strip_port(host: &[u8]) -> Option<&[u8]> {
    let colon = host.iter().rposition(|&b| b == b':')?;
    let (name, port) = (host.get(..colon)?, host.get(colon + 1..)?);
    let is_port = !port.is_empty() && port.iter().all(u8::is_ascii_digit);
    // In "[::1]" the last ':' is inside the brackets; in "::1" (unbracketed) it is not a port.
    let ipv6_ok = !name.contains(&b':') || name.ends_with(b"]");
    (is_port && ipv6_ok).then_some(name)
}

/// Rule names and destinations travel in request headers: they must be non-empty visible ASCII.
fn check_header_value(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        Err("must not be empty")
    } else if !value.bytes().all(|b| b.is_ascii_graphic()) {
        Err("must be visible ASCII without spaces (it is sent in a request header)")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MockHost;

    fn compile(json: &str) -> Result<CompiledRouter, String> {
        CompiledRouter::compile(&serde_json::from_str(json).map_err(|e| e.to_string())?)
    }

    fn router(json: &str) -> CompiledRouter {
        compile(json).unwrap()
    }

    const BOOKINFO: &str = r#"{"virtualHosts":[
        {"name":"reviews","domains":["reviews","reviews.default.svc.cluster.local"],"rules":[
          {"name":"jason","match":[{"headers":{"end-user":{"exact":"jason"}}}],
           "route":{"cluster":"reviews-v2"}},
          {"name":"canary","match":[{"uri":{"prefix":"/canary"}}],"route":{"split":"reviews-split"}},
          {"name":"default","route":{"cluster":"reviews-v1"}}]},
        {"name":"ratings","domains":["ratings:9080"],"rules":[
          {"name":"ratings-get","match":[{"method":{"exact":"GET"}}],"route":{"cluster":"ratings-v1"}}]}
    ]}"#;

    fn cluster(d: Option<Decision<'_>>) -> Option<String> {
        match d?.destination {
            Destination::Cluster(c) => Some(c.clone()),
            Destination::Split(s) => Some(format!("split:{s}")),
        }
    }

    #[test]
    fn config_json_shape_round_trips() {
        let config: RouterConfig = serde_json::from_str(BOOKINFO).unwrap();
        let rule = config.virtual_hosts.first().unwrap().rules.first().unwrap();
        assert_eq!(rule.route, Destination::Cluster("reviews-v2".into()));
        assert_eq!(rule.match_.len(), 1);
        let json = serde_json::to_string(&config).unwrap();
        assert!(json.contains(r#""match":[{"headers""#), "{json}");
        assert!(
            json.contains(r#""route":{"split":"reviews-split"}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<RouterConfig>(&json).unwrap(), config);
        for bad in [
            r#"{"virtualHosts":[],"extra":1}"#,
            r#"{"virtualHosts":[{"name":"a","domains":["*"],"rules":[{"name":"r","route":{"weighted":"x"}}]}]}"#,
            r#"{"virtualHosts":[{"name":"a","domains":["*"],"rules":[{"name":"r","route":{"cluster":"a","split":"b"}}]}]}"#,
        ] {
            assert!(serde_json::from_str::<RouterConfig>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn from_json_reports_the_failing_step() {
        assert!(CompiledRouter::from_json(BOOKINFO.as_bytes()).is_ok());
        let err = CompiledRouter::from_json(b" \n").unwrap_err();
        assert!(err.starts_with("empty plugin configuration"), "{err}");
        let err = CompiledRouter::from_json(br#"{"virtualHosts":[{"name":"a"}]}"#).unwrap_err();
        assert!(
            err.contains("JSON") && err.contains("missing field `domains`"),
            "{err}"
        );
        let err = CompiledRouter::from_json(br#"{"virtualHost":[]}"#).unwrap_err();
        assert!(err.contains("unknown field `virtualHost`"), "{err}");
        let err = CompiledRouter::from_json(br#"{"virtualHosts":[]}"#).unwrap_err();
        assert!(
            err.starts_with("invalid router configuration: virtualHosts"),
            "{err}"
        );
    }

    #[test]
    fn first_matching_rule_wins() {
        let r = router(BOOKINFO);
        let jason = MockHost::request("GET", "reviews", "/canary").with("end-user", "jason");
        let d = r.decide(&jason).unwrap();
        assert_eq!(
            (d.rule_index, d.rule_name, d.virtual_host),
            (0, "jason", "reviews")
        );
        assert_eq!(cluster(Some(d)).unwrap(), "reviews-v2");
        let canary = MockHost::request("GET", "reviews", "/canary/x");
        assert_eq!(cluster(r.decide(&canary)).unwrap(), "split:reviews-split");
        let other = MockHost::request("GET", "reviews", "/").with("end-user", "bob");
        let d = r.decide(&other).unwrap();
        assert_eq!((d.rule_index, d.rule_name), (2, "default"));
    }

    #[test]
    fn no_host_or_no_rule_is_none() {
        let r = router(BOOKINFO);
        assert_eq!(r.decide(&MockHost::request("GET", "unknown", "/")), None);
        assert_eq!(
            r.decide(&MockHost::request("POST", "ratings:9080", "/")),
            None
        );
        let d = r
            .decide(&MockHost::request("GET", "ratings:9080", "/"))
            .unwrap();
        assert_eq!((d.rule_index, d.virtual_host), (3, "ratings"));
        assert_eq!(r.decide(&MockHost::default()), None, "no :authority");
    }

    #[test]
    fn domains_follow_envoy_precedence() {
        let r = router(
            r#"{"virtualHosts":[
            {"name":"any","domains":["*"],"rules":[{"name":"any","route":{"cluster":"c-any"}}]},
            {"name":"prefix","domains":["api.*"],"rules":[{"name":"prefix","route":{"cluster":"c-prefix"}}]},
            {"name":"suffix","domains":["*.example.com"],"rules":[{"name":"suffix","route":{"cluster":"c-suffix"}}]},
            {"name":"longer","domains":["*.eu.example.com"],"rules":[{"name":"longer","route":{"cluster":"c-longer"}}]},
            {"name":"exact","domains":["www.example.com"],"rules":[{"name":"exact","route":{"cluster":"c-exact"}}]},
            {"name":"port","domains":["www.example.com:8443"],"rules":[{"name":"port","route":{"cluster":"c-port"}}]},
            {"name":"longer-prefix","domains":["api.v2.*"],"rules":[{"name":"longer-prefix","route":{"cluster":"c-longer-prefix"}}]}
        ]}"#,
        );
        let host = |a: &str| {
            r.decide(&MockHost::request("GET", a, "/"))
                .unwrap()
                .virtual_host
        };
        assert_eq!(host("www.example.com"), "exact");
        assert_eq!(host("WWW.Example.COM"), "exact", "case-insensitive");
        assert_eq!(
            host("www.example.com:80"),
            "exact",
            "port stripped when not listed"
        );
        assert_eq!(host("www.example.com:8443"), "port", "a listed port wins");
        assert_eq!(host("a.example.com"), "suffix");
        assert_eq!(host("a.eu.example.com"), "longer", "longest suffix wins");
        assert_eq!(host("a.eu.example.com:1"), "longer");
        assert_eq!(host("api.example.com"), "suffix", "suffix before prefix");
        assert_eq!(host("api.internal"), "prefix");
        assert_eq!(
            host("api.v2.internal"),
            "longer-prefix",
            "longest prefix wins"
        );
        assert_eq!(
            host("example.com"),
            "any",
            "a wildcard matches at least one char"
        );
        assert_eq!(host(".example.com"), "any");
        assert_eq!(host("other"), "any");
        assert_eq!(host(""), "any");
    }

    #[test]
    fn strip_port_handles_ipv6() {
        assert_eq!(strip_port(b"a:80"), Some(&b"a"[..]));
        assert_eq!(strip_port(b"[::1]:80"), Some(&b"[::1]"[..]));
        assert_eq!(strip_port(b"[::1]"), None);
        assert_eq!(strip_port(b"::1"), None);
        assert_eq!(strip_port(b"a:"), None);
        assert_eq!(strip_port(b"a:b"), None);
    }

    #[test]
    fn any_client_port_matches_a_domain_listed_without_one() {
        // Istio's ignore_port_in_host_matching: the port a client writes in Host never keeps a
        // request from its virtual host.
        let r = router(
            r#"{"virtualHosts":[
              {"name":"gw","domains":["*.example.com","a.example.com:8080"],"rules":[{"name":"w","route":{"cluster":"c"}}]},
              {"name":"exact","domains":["api.example.org"],"rules":[{"name":"e","route":{"cluster":"d"}}]},
              {"name":"v6","domains":["[::1]"],"rules":[{"name":"six","route":{"cluster":"s"}}]}]}"#,
        );
        for (authority, rule) in [
            ("foo.example.com:12345", Some("w")),
            ("foo.example.com", Some("w")),
            ("FOO.example.com:1", Some("w")),
            ("api.example.org:12345", Some("e")),
            ("[::1]:12345", Some("six")),
            ("api.example.org:x", None),
        ] {
            assert_eq!(
                r.decide(&MockHost::request("GET", authority, "/"))
                    .map(|d| d.rule_name),
                rule,
                "{authority}"
            );
        }
    }

    #[test]
    fn long_authority_is_handled() {
        let long = format!("{}.example.com", "a".repeat(400));
        let r = router(
            r#"{"virtualHosts":[{"name":"s","domains":["*.EXAMPLE.com"],"rules":[{"name":"r","route":{"cluster":"c"}}]}]}"#,
        );
        assert!(
            r.decide(&MockHost::request("GET", &long.to_uppercase(), "/"))
                .is_some()
        );
    }

    #[test]
    fn non_utf8_authority_and_headers_do_not_break() {
        let r = router(BOOKINFO);
        let req = MockHost::request("GET", "reviews", "/").with_bytes("end-user", b"\xff\xfe");
        assert_eq!(r.decide(&req).unwrap().rule_name, "default");
        let req = MockHost::default().with_bytes(":authority", b"\xffreviews");
        assert_eq!(r.decide(&req), None);
    }

    #[test]
    fn metric_names_per_rule() {
        let r = router(BOOKINFO);
        let names: Vec<&str> = r.rules().iter().map(|x| x.metric_name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "sluice.router.rule.jason.matched",
                "sluice.router.rule.canary.matched",
                "sluice.router.rule.default.matched",
                "sluice.router.rule.ratings-get.matched"
            ]
        );
    }

    #[test]
    fn reads_port_only_when_a_rule_matches_on_it() {
        assert!(!router(BOOKINFO).reads_port());
        let r = router(
            r#"{"virtualHosts":[{"name":"a","domains":["*"],"rules":[
              {"name":"p","match":[{"port":8080}],"route":{"cluster":"c8080"}},
              {"name":"d","route":{"cluster":"c"}}]}]}"#,
        );
        assert!(r.reads_port());
        let mut req = MockHost::request("GET", "x", "/");
        req.port = Some(8080);
        assert_eq!(r.decide(&req).unwrap().rule_name, "p");
        req.port = Some(80);
        assert_eq!(r.decide(&req).unwrap().rule_name, "d");
    }

    #[test]
    fn compile_errors_are_precise() {
        let one = |domains: &str, rules: &str| {
            format!(r#"{{"virtualHosts":[{{"name":"vh","domains":{domains},"rules":{rules}}}]}}"#)
        };
        let ok_rule = r#"[{"name":"r","route":{"cluster":"c"}}]"#;
        for (json, needle) in [
            (
                r#"{"virtualHosts":[]}"#.to_string(),
                "at least one virtual host",
            ),
            (
                one("[]", ok_rule),
                "virtualHosts[0] \"vh\".domains: at least one domain",
            ),
            (one(r#"[""]"#, ok_rule), "domains[0] \"\": empty domain"),
            (one(r#"["a.*.com"]"#, ok_rule), "wildcard"),
            (one(r#"["*a*"]"#, ok_rule), "wildcard"),
            (one(r#"["a b"]"#, ok_rule), "invalid character"),
            (
                one(r#"["a","A"]"#, ok_rule),
                "domains[1] \"A\": duplicate domain",
            ),
            (
                one(
                    r#"["*"]"#,
                    r#"[{"name":"r","route":{"cluster":"c"}},{"name":"r","route":{"cluster":"d"}}]"#,
                ),
                "rules[1] \"r\".name: duplicate rule name",
            ),
            (
                one(
                    r#"["*"]"#,
                    r#"[{"name":"a.b","route":{"cluster":"c"}},{"name":"a_b","route":{"cluster":"d"}}]"#,
                ),
                "would share the counter \"sluice.router.rule.a_b.matched\"",
            ),
            (
                one(r#"["*"]"#, r#"[{"name":"","route":{"cluster":"c"}}]"#),
                "rules[0] \"\".name: must not be empty",
            ),
            (
                one(r#"["*"]"#, r#"[{"name":"r","route":{"cluster":""}}]"#),
                "rules[0] \"r\".route.cluster: must not be empty",
            ),
            (
                one(r#"["*"]"#, r#"[{"name":"r","route":{"split":"a b"}}]"#),
                "route.split: must be visible ASCII",
            ),
            (
                one(
                    r#"["*"]"#,
                    r#"[{"name":"r","match":[{},{"withoutHeaders":{"X-Sluice-Cluster":{}}}],"route":{"cluster":"c"}}]"#,
                ),
                "rules[0] \"r\".match: \"x-sluice-cluster\" is internal to sluice",
            ),
            (
                one(
                    r#"["*"]"#,
                    r#"[{"name":"r","match":[{"uri":{"regex":"("}}],"route":{"cluster":"c"}}]"#,
                ),
                "virtualHosts[0] \"vh\": rules[0] \"r\": match[0].uri.regex: invalid regex",
            ),
        ] {
            let err = compile(&json).unwrap_err();
            assert!(err.contains(needle), "{json}\n  -> {err}");
        }
        let two = r#"{"virtualHosts":[
            {"name":"a","domains":["x.com"],"rules":[{"name":"r1","route":{"cluster":"c"}}]},
            {"name":"b","domains":["X.COM"],"rules":[{"name":"r2","route":{"cluster":"c"}}]}]}"#;
        let err = compile(two).unwrap_err();
        assert!(err.contains("already in virtualHosts[0] \"a\""), "{err}");
        let two = r#"{"virtualHosts":[
            {"name":"a","domains":["x.com"],"rules":[{"name":"r","route":{"cluster":"c"}}]},
            {"name":"b","domains":["y.com"],"rules":[{"name":"r","route":{"cluster":"c"}}]}]}"#;
        let err = compile(two).unwrap_err();
        assert!(err.contains("already virtualHosts[0].rules[0]"), "{err}");
        // The first holder is found by position, in an earlier host or earlier in this one.
        let three = r#"{"virtualHosts":[
            {"name":"a","domains":["x.com"],"rules":[{"name":"a0","route":{"cluster":"c"}}]},
            {"name":"b","domains":["y.com"],"rules":[{"name":"b0","route":{"cluster":"c"}},
                {"name":"r","route":{"cluster":"c"}}]},
            {"name":"c","domains":["z.com"],"rules":[{"name":"c0","route":{"cluster":"c"}},
                {"name":"c1","route":{"cluster":"c"}},{"name":"r","route":{"cluster":"c"}}]}]}"#;
        let err = compile(three).unwrap_err();
        assert!(
            err.contains(
                "rules[2] \"r\".name: duplicate rule name, already virtualHosts[1].rules[1]"
            ),
            "{err}"
        );
        let same_host = r#"{"virtualHosts":[{"name":"a","domains":["x.com"],"rules":[
            {"name":"a0","route":{"cluster":"c"}},{"name":"r","route":{"cluster":"c"}},
            {"name":"r","route":{"cluster":"c"}}]}]}"#;
        let err = compile(same_host).unwrap_err();
        assert!(err.contains("already virtualHosts[0].rules[1]"), "{err}");
    }

    #[test]
    fn explain_traces_the_decision() {
        let r = router(BOOKINFO);
        let req = MockHost::request("GET", "reviews", "/canary/x").with("end-user", "bob");
        let trace = r.explain(&req);
        assert_eq!(trace.virtual_host, Some((0, "reviews")));
        let names: Vec<&str> = trace.tried.iter().map(|t| t.name).collect();
        assert_eq!(names, ["jason", "canary"]);
        assert!(!trace.tried[0].outcome.is_match());
        assert!(trace.tried[1].outcome.is_match());
        assert_eq!(trace.decision.unwrap().rule_name, "canary");
        let none = r.explain(&MockHost::request("GET", "unknown", "/"));
        assert_eq!(
            (none.virtual_host, none.tried.len(), none.decision),
            (None, 0, None)
        );
        let miss = r.explain(&MockHost::request("POST", "ratings:9080", "/"));
        assert_eq!(miss.virtual_host, Some((1, "ratings")));
        assert_eq!(miss.tried.len(), 1);
        assert_eq!(miss.decision, None);
        for (authority, path, user) in [
            ("reviews", "/", "jason"),
            ("reviews", "/canary", ""),
            ("reviews.default.svc.cluster.local", "/x", "bob"),
            ("ratings:9080", "/", ""),
            ("nope", "/", ""),
        ] {
            let req = MockHost::request("GET", authority, path).with("end-user", user);
            let trace = r.explain(&req);
            let last_matched = trace
                .tried
                .last()
                .filter(|t| t.outcome.is_match())
                .map(|t| t.rule_index);
            assert_eq!(
                last_matched,
                r.decide(&req).map(|d| d.rule_index),
                "{authority}{path}"
            );
        }
    }

    #[test]
    fn each_header_is_fetched_once_per_decision() {
        use std::cell::RefCell;
        struct Counting(MockHost, RefCell<usize>);
        impl RequestView for Counting {
            fn header(&self, name: &str) -> Option<Vec<u8>> {
                *self.1.borrow_mut() += 1;
                self.0.header(name)
            }
            fn header_lines(&self, name: &str) -> Vec<Vec<u8>> {
                *self.1.borrow_mut() += 1;
                self.0.header_lines(name)
            }
            fn local_port(&self) -> Option<u32> {
                self.0.local_port()
            }
        }
        let r = router(
            r#"{"virtualHosts":[{"name":"a","domains":["*"],"rules":[
              {"name":"r1","match":[{"headers":{"x":{"exact":"1"}}}],"route":{"cluster":"c"}},
              {"name":"r2","match":[{"headers":{"x":{"exact":"2"}}}],"route":{"cluster":"c"}},
              {"name":"r3","match":[{"headers":{"x":{"exact":"3"}}}],"route":{"cluster":"c"}}]}]}"#,
        );
        let req = Counting(
            MockHost::request("GET", "h", "/").with("x", "3"),
            RefCell::new(0),
        );
        assert_eq!(r.decide(&req).unwrap().rule_name, "r3");
        assert_eq!(
            *req.1.borrow(),
            1,
            "x once; :authority not needed with only '*'"
        );
        let r = router(BOOKINFO);
        let req = Counting(
            MockHost::request("GET", "reviews", "/").with("end-user", "bob"),
            RefCell::new(0),
        );
        assert_eq!(r.decide(&req).unwrap().rule_name, "default");
        assert_eq!(*req.1.borrow(), 3, ":authority, end-user, :path, once each");
    }
}
