//! The canary filter's logic: resolve a split to one member cluster.
//!
//! - [`config`]: the plugin-config types (serde), emitted by the builder.
//! - [`CompiledCanary`]: the validated config the filter runs on.
//! - [`bucket`]: weighted and sticky picking with monotone buckets, and breaker failover.
//! - [`schedule`]: progressive schedules and their shared start time.
//! - [`guard`]: the self-guarding canary (shared window, halt rule, halted choice).

pub mod bucket;
pub mod config;
pub mod guard;
pub mod schedule;

use std::time::Duration;

use crate::host::RequestView;
use crate::matching::MatchSet;
use crate::unique::FirstSeen;
use crate::wire::{
    CANARY_GUARD_HALTED_SUFFIX, CANARY_GUARD_HALTS_SUFFIX, CANARY_MEMBER_INFIX,
    CANARY_ROUTED_SUFFIX, CANARY_SPLIT_PREFIX, CANARY_STEP_SUFFIX, CANARY_UNAVAILABLE_SUFFIX,
};
use crate::{duration, metrics};

pub use bucket::{Choice, choose, locate, sticky_point};
pub use config::{
    CanaryConfig, CanaryRule, Failures, Guard, Member, Schedule, SetCookie, Split, Step, Sticky,
};
pub use guard::CompiledGuard;
pub use schedule::{CompiledSchedule, ScheduleRecord, SharedStore};

/// Response header set on the 503 the filter answers when every member of a split is
/// unavailable (`all-members-unavailable`) or the router named a split this filter lacks
/// (`unknown-split`).
pub const CANARY_HEADER: &str = "x-sluice-canary";
/// [`CANARY_HEADER`] value when every member's breaker is open.
pub const ALL_MEMBERS_UNAVAILABLE: &str = "all-members-unavailable";
/// [`CANARY_HEADER`] value when `x-sluice-split` names no configured split.
pub const UNKNOWN_SPLIT: &str = "unknown-split";

/// Name of the counter of requests a split sent to a member:
/// `sluice.canary.split.<split>.member.<cluster>.routed` (both parts sanitised).
pub fn routed_metric(split: &str, cluster: &str) -> String {
    format!(
        "{CANARY_SPLIT_PREFIX}{}{CANARY_MEMBER_INFIX}{}{CANARY_ROUTED_SUFFIX}",
        metrics::sanitize(split),
        metrics::sanitize(cluster)
    )
}

/// Name of the gauge holding a scheduled split's current step (0-based):
/// `sluice.canary.split.<split>.step`.
pub fn step_metric(split: &str) -> String {
    format!(
        "{CANARY_SPLIT_PREFIX}{}{CANARY_STEP_SUFFIX}",
        metrics::sanitize(split)
    )
}

/// Name of the counter of requests answered 503 because every member was unavailable:
/// `sluice.canary.split.<split>.unavailable`.
pub fn unavailable_metric(split: &str) -> String {
    format!(
        "{CANARY_SPLIT_PREFIX}{}{CANARY_UNAVAILABLE_SUFFIX}",
        metrics::sanitize(split)
    )
}

/// Name of the counter of a guarded split's halts: `sluice.canary.split.<split>.guard_halts`.
pub fn guard_halts_metric(split: &str) -> String {
    split_metric(split, CANARY_GUARD_HALTS_SUFFIX)
}

/// Name of the gauge of a guarded split's state, 0 healthy, 1 halted:
/// `sluice.canary.split.<split>.guard_halted`.
pub fn guard_halted_metric(split: &str) -> String {
    split_metric(split, CANARY_GUARD_HALTED_SUFFIX)
}

fn split_metric(split: &str, suffix: &str) -> String {
    let mut name = String::from(CANARY_SPLIT_PREFIX);
    name.push_str(&metrics::sanitize(split));
    name.push_str(suffix);
    name
}

/// Where a sticky key is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A request header (lower-case name).
    Header(String),
    /// A cookie of the `cookie` header.
    Cookie(String),
    /// The client address, without the port.
    SourceAddress,
}

/// The cookie set for clients without a key, ready to format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinCookie {
    /// Cookie name.
    pub name: String,
    /// `Max-Age` in seconds.
    pub max_age_secs: u64,
    /// `Path`.
    pub path: String,
}

impl PinCookie {
    /// The `set-cookie` response header value carrying `token`.
    pub fn header_value(&self, token: &str) -> String {
        format!(
            "{}={token}; Max-Age={}; Path={}; HttpOnly; SameSite=Lax",
            self.name, self.max_age_secs, self.path
        )
    }
}

/// A validated sticky setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledSticky {
    /// The main key source; `None` when only the pin cookie is the key.
    pub source: Option<KeySource>,
    /// The cookie set (and read back) for clients without a key.
    pub pin_cookie: Option<PinCookie>,
}

impl CompiledSticky {
    /// The request's key: the main source, else the pin cookie. `source_address` is called
    /// only when the source is the client address (it costs a host call).
    pub fn key(
        &self,
        req: &impl RequestView,
        source_address: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Option<Vec<u8>> {
        let from_source = match &self.source {
            Some(KeySource::Header(name)) => req.header(name).filter(|v| !v.is_empty()),
            Some(KeySource::Cookie(name)) => cookie_in(req, name),
            Some(KeySource::SourceAddress) => source_address()
                .map(|address| address_without_port(&address).to_vec())
                .filter(|a| !a.is_empty()),
            None => None,
        };
        from_source.or_else(|| {
            self.pin_cookie
                .as_ref()
                .and_then(|pin| cookie_in(req, &pin.name))
        })
    }
}

fn cookie_in(req: &impl RequestView, name: &str) -> Option<Vec<u8>> {
    let first = req.header("cookie")?;
    let found = |line: &[u8]| {
        cookie_value(line, name)
            .filter(|v| !v.is_empty())
            .map(<[u8]>::to_vec)
    };
    // Envoy hands a filter only the first line of a repeated header. Browsers send one
    // `cookie` line (and Envoy joins HTTP/2's split cookies into one), but an HTTP/1.1 client
    // may send several: look at the others only when the first lacks the cookie, so the
    // common request pays one header read.
    found(&first).or_else(|| {
        req.header_lines("cookie")
            .iter()
            .skip(1)
            .find_map(|line| found(line))
    })
}

/// The value of cookie `name` in a `cookie` request header (`a=1; b=2`), quotes removed.
pub fn cookie_value<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (key, value) = (pair.get(..eq)?, pair.get(eq + 1..)?);
        (key.trim_ascii() == name.as_bytes()).then(|| {
            let value = value.trim_ascii();
            value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value)
        })
    })
}

/// `10.0.0.1:5000` -> `10.0.0.1`, `[::1]:5000` -> `::1`; an address without a port unchanged.
pub fn address_without_port(address: &[u8]) -> &[u8] {
    if let Some(rest) = address.strip_prefix(b"[") {
        return match rest.iter().position(|&b| b == b']') {
            Some(end) => rest.get(..end).unwrap_or(rest),
            None => address,
        };
    }
    let colons = address.iter().filter(|&&b| b == b':').count();
    match (colons, address.iter().rposition(|&b| b == b':')) {
        // Exactly one colon: host:port. More: a bare IPv6 address.
        (1, Some(colon)) => address.get(..colon).unwrap_or(address),
        _ => address,
    }
}

/// One split, validated.
#[derive(Debug, Clone)]
pub struct CompiledSplit {
    /// The split's name.
    pub name: String,
    /// Member clusters, in order.
    pub clusters: Vec<String>,
    /// Member weights when there is no schedule.
    pub weights: Vec<u32>,
    /// Sticky setting, if any.
    pub sticky: Option<CompiledSticky>,
    /// Progressive schedule, if any.
    pub schedule: Option<CompiledSchedule>,
    /// Whether open breakers take members out.
    pub failover: bool,
    /// The self-guard, if any.
    pub guard: Option<CompiledGuard>,
}

/// The canary config, validated and ready to run.
#[derive(Debug, Clone)]
pub struct CompiledCanary {
    /// Trust the router's `x-sluice-split` instead of evaluating `rules`.
    pub after_router: bool,
    /// The splits, in config order.
    pub splits: Vec<CompiledSplit>,
    rules: Vec<(MatchSet, usize)>,
}

impl CompiledCanary {
    /// Parses and validates the plugin configuration JSON.
    pub fn from_json(json: &[u8]) -> Result<Self, String> {
        let config: CanaryConfig =
            crate::json::from_slice(json).map_err(|e| format!("invalid canary config: {e}"))?;
        Self::compile(&config)
    }

    /// Validates a config; the error names the field (`splits[1].schedule.steps[0].weights`)
    /// and what is wrong.
    pub fn compile(config: &CanaryConfig) -> Result<Self, String> {
        let mut names = FirstSeen::new();
        let mut splits = Vec::with_capacity(config.splits.len());
        for (index, split) in config.splits.iter().enumerate() {
            let at = format!("splits[{index}] ({:?})", split.name);
            if split.name.is_empty() {
                return Err(format!("splits[{index}].name is empty"));
            }
            if names.insert(&split.name, index).is_some() {
                return Err(format!("{at}: duplicate split name {:?}", split.name));
            }
            splits.push(compile_split(&at, split)?);
        }
        if config.after_router && !config.rules.is_empty() {
            return Err(
                "rules are only used when afterRouter is false (the router names the split \
                 otherwise): remove them or set afterRouter to false"
                    .into(),
            );
        }
        let mut rules = Vec::with_capacity(config.rules.len());
        for (index, rule) in config.rules.iter().enumerate() {
            let split = config
                .splits
                .iter()
                .position(|s| s.name == rule.split)
                .ok_or_else(|| {
                    format!(
                        "rules[{index}].split: unknown split {:?} (known: {})",
                        rule.split,
                        known(&config.splits)
                    )
                })?;
            let set =
                MatchSet::compile(&rule.matches).map_err(|e| format!("rules[{index}].{e}"))?;
            rules.push((set, split));
        }
        Ok(Self {
            after_router: config.after_router,
            splits,
            rules,
        })
    }

    /// The index of the split named `name` (bytes of the `x-sluice-split` header).
    pub fn split_index(&self, name: &[u8]) -> Option<usize> {
        self.splits.iter().position(|s| s.name.as_bytes() == name)
    }

    /// The split of the first rule matching the request (used when `after_router` is false).
    pub fn rule_split(&self, req: &impl RequestView) -> Option<usize> {
        let mut lookup = crate::matching::Lookup::new(req);
        self.rules
            .iter()
            .find(|(set, _)| set.matches_with(&mut lookup))
            .map(|&(_, split)| split)
    }

    /// Whether any split has a schedule (the filter then needs a tick).
    pub fn has_schedules(&self) -> bool {
        self.splits.iter().any(|s| s.schedule.is_some())
    }
}

fn known(splits: &[Split]) -> String {
    quoted_names(&mut splits.iter().map(|s| s.name.as_str()))
}

/// `"a", "b"` (each name as `{:?}` writes it, joined by `, `), or `none`: the known splits an
/// error lists. One non-generic loop: `[String]::join` links `join_generic_copy` (1 KB).
pub(crate) fn quoted_names(names: &mut dyn Iterator<Item = &str>) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    for name in names {
        if !text.is_empty() {
            text.push_str(", ");
        }
        let _ = write!(text, "{name:?}");
    }
    if text.is_empty() {
        text.push_str("none");
    }
    text
}

fn compile_split(at: &str, split: &Split) -> Result<CompiledSplit, String> {
    if split.members.is_empty() {
        return Err(format!("{at}.members is empty: list at least one cluster"));
    }
    if split.members.len() > bucket::MAX_MEMBERS {
        return Err(format!(
            "{at}.members has {} entries, at most {} are supported",
            split.members.len(),
            bucket::MAX_MEMBERS
        ));
    }
    let mut clusters = FirstSeen::new();
    for (index, member) in split.members.iter().enumerate() {
        if member.cluster.is_empty() {
            return Err(format!("{at}.members[{index}].cluster is empty"));
        }
        if clusters.insert(&member.cluster, index).is_some() {
            return Err(format!(
                "{at}.members[{index}]: duplicate cluster {:?} (merge the weights into one member)",
                member.cluster
            ));
        }
    }
    let weights: Vec<u32> = split.members.iter().map(|m| m.weight).collect();
    if split.schedule.is_none() {
        check_weights(&format!("{at}.members"), &weights)?;
    }
    // `match`es rather than `map(..).transpose()`: smaller modules, the same checks.
    let sticky = match &split.sticky {
        Some(s) => Some(compile_sticky(&format!("{at}.sticky"), s)?),
        None => None,
    };
    let schedule = match &split.schedule {
        Some(s) => Some(compile_schedule(&format!("{at}.schedule"), split, s)?),
        None => None,
    };
    let clusters: Vec<String> = split.members.iter().map(|m| m.cluster.clone()).collect();
    let guard = split
        .guard
        .as_ref()
        .map(|g| {
            CompiledGuard::compile(
                &format!("{at}.guard"),
                g,
                &split.name,
                &clusters,
                &weights,
                schedule.as_ref().map(|s| s.fingerprint),
                split.failover,
            )
        })
        .transpose()?;
    Ok(CompiledSplit {
        name: split.name.clone(),
        clusters,
        weights,
        sticky,
        schedule,
        failover: split.failover,
        guard,
    })
}

fn check_weights(at: &str, weights: &[u32]) -> Result<(), String> {
    if weights.len() > 1 && weights.iter().all(|&w| w == 0) {
        return Err(format!(
            "{at}: all weights are 0, so no member could take traffic; give at least one a positive weight"
        ));
    }
    Ok(())
}

fn compile_sticky(at: &str, sticky: &Sticky) -> Result<CompiledSticky, String> {
    let mut sources = Vec::new();
    if let Some(header) = &sticky.header {
        if !is_token(header) {
            return Err(format!(
                "{at}.header: {header:?} is not a valid header name"
            ));
        }
        sources.push(KeySource::Header(header.to_ascii_lowercase()));
    }
    if let Some(cookie) = &sticky.cookie {
        if !is_token(cookie) {
            return Err(format!(
                "{at}.cookie: {cookie:?} is not a valid cookie name"
            ));
        }
        sources.push(KeySource::Cookie(cookie.clone()));
    }
    if sticky.source_address {
        sources.push(KeySource::SourceAddress);
    }
    if sources.len() > 1 {
        return Err(format!(
            "{at}: set only one of header, cookie and sourceAddress as the key"
        ));
    }
    let pin_cookie = sticky
        .set_cookie
        .as_ref()
        .map(|c| {
            if !is_token(&c.name) {
                return Err(format!(
                    "{at}.setCookie.name: {:?} is not a valid cookie name",
                    c.name
                ));
            }
            let ttl = duration::parse(&c.ttl).map_err(|e| format!("{at}.setCookie.ttl: {e}"))?;
            if ttl.as_secs() == 0 {
                return Err(format!(
                    "{at}.setCookie.ttl: {:?} is under one second; browsers would drop the cookie at once",
                    c.ttl
                ));
            }
            let path = c.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || path.bytes().any(|b| b == b';' || b.is_ascii_control()) {
                return Err(format!("{at}.setCookie.path: {path:?} must start with '/' and hold no ';'"));
            }
            Ok(PinCookie {
                name: c.name.clone(),
                max_age_secs: ttl.as_secs(),
                path,
            })
        })
        .transpose()?;
    let source = sources.pop();
    if source.is_none() && pin_cookie.is_none() {
        return Err(format!(
            "{at}: no key: set header, cookie or sourceAddress, or setCookie"
        ));
    }
    Ok(CompiledSticky { source, pin_cookie })
}

/// An RFC 7230 token (header names, cookie names).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn compile_schedule(
    at: &str,
    split: &Split,
    schedule: &Schedule,
) -> Result<CompiledSchedule, String> {
    if schedule.steps.is_empty() {
        return Err(format!("{at}.steps is empty: list at least one step"));
    }
    let mut steps: Vec<(Vec<u32>, Duration)> = Vec::with_capacity(schedule.steps.len());
    for (index, step) in schedule.steps.iter().enumerate() {
        let step_at = format!("{at}.steps[{index}]");
        if step.weights.len() != split.members.len() {
            return Err(format!(
                "{step_at}.weights has {} entries but the split has {} members (one weight per member, in order)",
                step.weights.len(),
                split.members.len()
            ));
        }
        check_weights(&format!("{step_at}.weights"), &step.weights)?;
        let hold = duration::parse(&step.hold).map_err(|e| format!("{step_at}.hold: {e}"))?;
        steps.push((step.weights.clone(), hold));
    }
    let clusters: Vec<&str> = split.members.iter().map(|m| m.cluster.as_str()).collect();
    Ok(CompiledSchedule::new(
        &split.name,
        &clusters,
        &steps,
        schedule.paused,
    ))
}

/// The canary's tick: for schedules a quarter of the shortest hold, within 50 ms .. 1 s, often
/// enough that the step gauge lags little and workers that raced on the shared start converge
/// quickly; for guards at most [`guard::GUARD_PERIOD`]; `None` without either.
pub fn schedule_period(canary: &CompiledCanary) -> Option<Duration> {
    let shortest = canary
        .splits
        .iter()
        .filter_map(|s| s.schedule.as_ref())
        .map(|s| s.shortest_hold_ms().unwrap_or(4_000))
        .min();
    let schedules = shortest.map(|ms| Duration::from_millis((ms / 4).clamp(50, 1_000)));
    let guards = canary
        .splits
        .iter()
        .any(|s| s.guard.is_some())
        .then_some(guard::GUARD_PERIOD);
    schedules.into_iter().chain(guards).min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MockHost;
    use serde_json::json;

    fn compile(value: serde_json::Value) -> Result<CompiledCanary, String> {
        CompiledCanary::from_json(value.to_string().as_bytes())
    }

    fn two(name: &str) -> serde_json::Value {
        json!({"name": name, "members": [{"cluster": "v1", "weight": 90}, {"cluster": "v2", "weight": 10}]})
    }

    #[test]
    fn full_config_parses_with_defaults() {
        let c = compile(json!({
            "splits": [{
                "name": "reviews",
                "members": [{"cluster": "v1", "weight": 90}, {"cluster": "v2", "weight": 10}],
                "sticky": {"header": "End-User", "setCookie": {"name": "pin", "ttl": "1h"}},
                "schedule": {"steps": [{"weights": [90, 10], "hold": "1s"}, {"weights": [50, 50], "hold": "0s"}]}
            }],
            "rules": [{"match": [{"headers": {"x-canary": {"exact": "yes"}}}], "split": "reviews"}]
        }))
        .unwrap();
        assert!(!c.after_router);
        let s = &c.splits[0];
        assert!(s.failover, "failover defaults to true");
        assert_eq!(s.clusters, ["v1", "v2"]);
        let sticky = s.sticky.as_ref().unwrap();
        assert_eq!(sticky.source, Some(KeySource::Header("end-user".into())));
        assert_eq!(sticky.pin_cookie.as_ref().unwrap().max_age_secs, 3600);
        assert_eq!(s.schedule.as_ref().unwrap().begins_ms, [0, 1000]);
        assert_eq!(
            c.rule_split(&MockHost::request("GET", "h", "/").with("x-canary", "yes")),
            Some(0)
        );
        assert_eq!(c.rule_split(&MockHost::request("GET", "h", "/")), None);
    }

    #[test]
    fn config_round_trips_through_serde() {
        let config = CanaryConfig {
            after_router: true,
            splits: vec![Split {
                name: "s".into(),
                members: vec![Member {
                    cluster: "a".into(),
                    weight: 1,
                }],
                sticky: Some(Sticky {
                    source_address: true,
                    ..Sticky::default()
                }),
                schedule: None,
                failover: false,
                guard: None,
            }],
            rules: vec![],
        };
        let text = serde_json::to_string(&config).unwrap();
        assert_eq!(
            text,
            r#"{"afterRouter":true,"splits":[{"name":"s","members":[{"cluster":"a","weight":1}],"sticky":{"sourceAddress":true},"failover":false}]}"#
        );
        assert_eq!(serde_json::from_str::<CanaryConfig>(&text).unwrap(), config);
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let cases = [
            (
                json!({"splits": [two("a")], "rules": [{"split": "b"}]}),
                "rules[0].split: unknown split \"b\" (known: \"a\")",
            ),
            (
                json!({"splits": [{"name": "a", "members": []}]}),
                "splits[0] (\"a\").members is empty",
            ),
            (
                json!({"splits": [{"name": "a", "members": [{"cluster": "x", "weight": 0}, {"cluster": "y"}]}]}),
                "all weights are 0",
            ),
            (
                json!({"splits": [two("a"), two("a")]}),
                "splits[1] (\"a\"): duplicate split name",
            ),
            (
                json!({"splits": [{"name": "a", "members": [{"cluster": "x"}, {"cluster": "x"}]}]}),
                "duplicate cluster \"x\"",
            ),
            (
                json!({"splits": [{"name": "a", "members": [{"cluster": "x"}, {"cluster": "y"}],
                "schedule": {"steps": [{"weights": [1], "hold": "1s"}]}}]}),
                "splits[0] (\"a\").schedule.steps[0].weights has 1 entries but the split has 2 members",
            ),
            (
                json!({"splits": [{"name": "a", "members": [{"cluster": "x"}, {"cluster": "y"}],
                "schedule": {"steps": [{"weights": [1, 1], "hold": "soon"}]}}]}),
                "schedule.steps[0].hold: invalid duration",
            ),
            (
                json!({"splits": [{"name": "a", "members": [{"cluster": "x"}, {"cluster": "y"}],
                "schedule": {"steps": [{"weights": [0, 0], "hold": "1s"}]}}]}),
                "steps[0].weights: all weights are 0",
            ),
            (
                json!({"splits": [{"name": "a", "members": [{"cluster": "x"}], "schedule": {"steps": []}}]}),
                "steps is empty",
            ),
            (
                json!({"splits": [{"name": "a", "members": [{"cluster": "x"}], "sticky": {"header": "h", "sourceAddress": true}}]}),
                "only one of",
            ),
            (
                json!({"splits": [{"name": "a", "members": [{"cluster": "x"}], "sticky": {}}]}),
                "no key",
            ),
            (
                json!({"splits": [{"name": "a", "members": [{"cluster": "x"}], "sticky": {"setCookie": {"name": "p", "ttl": "1x"}}}]}),
                "setCookie.ttl: invalid duration",
            ),
            (
                json!({"splits": [{"name": "a", "members": [{"cluster": "x"}], "sticky": {"header": "bad name"}}]}),
                "not a valid header name",
            ),
            (
                json!({"splits": [two("a")], "afterRouter": true, "rules": [{"split": "a"}]}),
                "rules are only used when afterRouter is false",
            ),
            (
                json!({"splits": [two("a")], "rules": [{"split": "a", "match": [{"uri": {"regex": "("}}]}]}),
                "rules[0].match[0].uri",
            ),
            (
                json!({"splits": [two("a")], "extra": 1}),
                "unknown field `extra`",
            ),
            (
                json!({"splits": [{"name": "a", "members": [{"cluster": "x", "weight": -1}]}]}),
                "invalid value",
            ),
        ];
        for (config, needle) in cases {
            let err = compile(config.clone()).err().unwrap_or_default();
            assert!(
                err.contains(needle),
                "{config}\n  error: {err:?}\n  expected: {needle:?}"
            );
        }
    }

    #[test]
    fn single_member_with_weight_zero_is_valid() {
        assert!(compile(json!({"splits": [{"name": "a", "members": [{"cluster": "x"}]}]})).is_ok());
    }

    #[test]
    fn sticky_key_sources() {
        let sticky = |v: serde_json::Value| {
            compile(json!({"splits": [{"name": "a", "members": [{"cluster": "x"}], "sticky": v}]}))
                .unwrap()
                .splits[0]
                .sticky
                .clone()
                .unwrap()
        };
        let req = MockHost::request("GET", "h", "/")
            .with("end-user", "jason")
            .with("cookie", "a=1; session=\"abc\" ; pin=tok");
        let no_addr = || -> Option<Vec<u8>> { panic!("address read without need") };
        assert_eq!(
            sticky(json!({"header": "end-user"})).key(&req, no_addr),
            Some(b"jason".to_vec())
        );
        assert_eq!(
            sticky(json!({"cookie": "session"})).key(&req, no_addr),
            Some(b"abc".to_vec())
        );
        assert_eq!(
            sticky(json!({"sourceAddress": true})).key(&req, || Some(b"10.1.2.3:4567".to_vec())),
            Some(b"10.1.2.3".to_vec())
        );
        // Missing main source: the pin cookie is the key; without it, no key.
        let with_pin =
            sticky(json!({"header": "x-user", "setCookie": {"name": "pin", "ttl": "1h"}}));
        assert_eq!(with_pin.key(&req, no_addr), Some(b"tok".to_vec()));
        assert_eq!(
            with_pin.key(&MockHost::request("GET", "h", "/"), no_addr),
            None
        );
        assert_eq!(
            with_pin.pin_cookie.unwrap().header_value("t0k"),
            "pin=t0k; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn a_cookie_on_a_later_cookie_line_is_found_and_only_then_are_all_lines_read() {
        use crate::host::RequestView;
        use std::cell::Cell;
        /// Counts the costly all-lines reads.
        struct Lines(MockHost, Cell<u32>);
        impl RequestView for Lines {
            fn header(&self, name: &str) -> Option<Vec<u8>> {
                self.0.header(name)
            }
            fn header_lines(&self, name: &str) -> Vec<Vec<u8>> {
                self.1.set(self.1.get() + 1);
                self.0.header_lines(name)
            }
            fn local_port(&self) -> Option<u32> {
                None
            }
        }
        let sticky = compile(
            json!({"splits": [{"name": "a", "members": [{"cluster": "x"}],
            "sticky": {"cookie": "session"}}]}),
        )
        .unwrap()
        .splits[0]
            .sticky
            .clone()
            .unwrap();
        let no_addr = || -> Option<Vec<u8>> { None };
        let base = MockHost::request("GET", "h", "/").with("cookie", "a=1");
        let later = Lines(
            base.clone()
                .with_repeated("cookie", "b=2")
                .with_repeated("cookie", "session=été"),
            Cell::new(0),
        );
        assert_eq!(later.0.header_lines("cookie").len(), 3);
        assert_eq!(sticky.key(&later, no_addr), Some("été".as_bytes().to_vec()));
        assert_eq!(later.1.get(), 1);
        // On the first line: one header read, no all-lines read.
        let first = Lines(
            MockHost::request("GET", "h", "/")
                .with("cookie", "session=s1")
                .with_repeated("cookie", "session=s2"),
            Cell::new(0),
        );
        assert_eq!(sticky.key(&first, no_addr), Some(b"s1".to_vec()));
        assert_eq!(first.1.get(), 0);
        // No cookie line at all: nothing more is read.
        let none = Lines(MockHost::request("GET", "h", "/"), Cell::new(0));
        assert_eq!(sticky.key(&none, no_addr), None);
        assert_eq!(none.1.get(), 0);
        // Lines without it: all read once, no key.
        let absent = Lines(base.with_repeated("cookie", "b=2"), Cell::new(0));
        assert_eq!(sticky.key(&absent, no_addr), None);
        assert_eq!(absent.1.get(), 1);
    }

    #[test]
    fn address_and_cookie_parsing() {
        assert_eq!(address_without_port(b"10.0.0.1:80"), b"10.0.0.1");
        assert_eq!(address_without_port(b"10.0.0.1"), b"10.0.0.1");
        assert_eq!(address_without_port(b"[::1]:80"), b"::1");
        assert_eq!(address_without_port(b"fe80::1"), b"fe80::1");
        assert_eq!(address_without_port(b"[::1"), b"[::1");
        assert_eq!(cookie_value(b"a=1;b=2", "b"), Some(&b"2"[..]));
        assert_eq!(cookie_value(b"ab=1; b=", "b"), Some(&b""[..]));
        assert_eq!(cookie_value(b"ab=1", "b"), None);
        assert_eq!(cookie_value(b"\xff=\xfe; b=x", "b"), Some(&b"x"[..]));
    }

    #[test]
    fn metric_names_are_sanitised() {
        assert_eq!(
            routed_metric("reviews.v", "outbound|9080|v2|reviews"),
            "sluice.canary.split.reviews_v.member.outbound_9080_v2_reviews.routed"
        );
        assert_eq!(step_metric("r"), "sluice.canary.split.r.step");
    }
}
