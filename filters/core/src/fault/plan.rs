//! The compiled fault config and the per-request decision.
//!
//! [`FaultPlan::compile`] applies Istio's validation (at least one of delay/abort, HTTP status
//! 200-599, known gRPC status names, percentages 0 or 0.0001-100, durations of at least 1ms in
//! whole milliseconds) and turns percentages into parts per million. [`FaultPlan::decide`]
//! then picks the rule, draws delay and abort independently (as Envoy and Istio do), applies
//! trusted header faults and the active-fault cap, all without a host call beyond the header
//! reads the rules need.

use std::net::IpAddr;
use std::time::Duration;

use super::config::{Abort, Delay, FaultConfig, FaultRule, HeaderFaults, Percent};
use super::grpc;
use super::net::{self, Cidr};
use super::percent::{self, PPM_ALL};
use crate::duration;
use crate::host::RequestView;
use crate::matching::{Lookup, MatchSet};
use crate::wire;

/// Envoy's header naming a delay in milliseconds.
pub const DELAY_HEADER: &str = "x-envoy-fault-delay-request";
/// Envoy's header with the share (0-100) of requests the header delay applies to.
pub const DELAY_PERCENTAGE_HEADER: &str = "x-envoy-fault-delay-request-percentage";
/// Envoy's header naming the HTTP status to abort with.
pub const ABORT_HEADER: &str = "x-envoy-fault-abort-request";
/// Envoy's header naming the gRPC status code (a number) to abort with.
pub const ABORT_GRPC_HEADER: &str = "x-envoy-fault-abort-grpc-request";
/// Envoy's header with the share (0-100) of requests the header abort applies to.
pub const ABORT_PERCENTAGE_HEADER: &str = "x-envoy-fault-abort-request-percentage";
/// The debug response header (`debugHeader: true`).
pub const DEBUG_HEADER: &str = "x-sluice-fault";
/// Body of an HTTP abort reply and `grpc-message` of a gRPC one (Envoy's fault filter text).
pub const ABORT_BODY: &str = "fault filter abort";

/// How a request is aborted, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortCode {
    /// An HTTP status (200-599).
    Http(u16),
    /// A gRPC status code (0-16).
    Grpc(u8),
}

/// The reply actually sent, once the request's protocol is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// A plain HTTP response with this status and body [`ABORT_BODY`].
    Http(u16),
    /// A trailers-only gRPC response (HTTP 200, `grpc-status`, `grpc-message`).
    Grpc(u8),
}

/// The reply for `code`: gRPC requests always get a gRPC status (an HTTP status is mapped as
/// Envoy maps local replies), plain requests an HTTP status (a gRPC code is mapped back).
pub fn abort_reply(code: AbortCode, grpc_request: bool) -> Reply {
    match (code, grpc_request) {
        (AbortCode::Http(status), false) => Reply::Http(status),
        (AbortCode::Http(status), true) => Reply::Grpc(grpc::from_http(status)),
        (AbortCode::Grpc(code), true) => Reply::Grpc(code),
        (AbortCode::Grpc(code), false) => Reply::Http(grpc::to_http(code)),
    }
}

/// Whether a `content-type` value marks a gRPC request (`application/grpc`,
/// `application/grpc+proto`, `application/grpc;...`), as Envoy's `isGrpcRequestHeaders`.
/// gRPC-Web is not gRPC here: it expects its status in the body.
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    match value.get(..GRPC.len()) {
        Some(head) if head.eq_ignore_ascii_case(GRPC) => {
            matches!(value.get(GRPC.len()), None | Some(b'+') | Some(b';'))
        }
        _ => false,
    }
}

/// Where an injected fault came from, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The rule at this index of [`FaultPlan::rules`].
    Rule(usize),
    /// A trusted client's fault header.
    Header,
}

/// The faults to inject into one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Injection {
    /// Hold the request this long first.
    pub delay: Option<(Duration, Origin)>,
    /// Then answer with this instead of forwarding.
    pub abort: Option<(AbortCode, Origin)>,
}

impl Injection {
    /// The `x-sluice-fault` value: `delay=5000ms`, `abort=503`, `abort=grpc-UNAVAILABLE`, or
    /// both joined by `, `.
    pub fn debug_value(&self) -> String {
        use std::fmt::Write as _;
        // Written into one String: `[String]::join` would link `join_generic_copy` (1 KB).
        let mut value = String::new();
        if let Some((delay, _)) = self.delay {
            // As u64: formatting a u128 would cost each module 1.4 KB.
            let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            let _ = write!(value, "delay={ms}ms");
        }
        if let Some((code, _)) = self.abort {
            if !value.is_empty() {
                value.push_str(", ");
            }
            let _ = match code {
                AbortCode::Http(status) => write!(value, "abort={status}"),
                AbortCode::Grpc(code) => write!(
                    value,
                    "abort=grpc-{}",
                    grpc::name_of(code).unwrap_or("UNKNOWN")
                ),
            };
        }
        value
    }
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No fault applies (no rule matched, or every draw said no).
    Pass,
    /// A fault was drawn but the worker already runs `maxActiveFaults` faults: pass untouched.
    Overflow,
    /// Inject these faults.
    Inject(Injection),
}

/// One rule's compiled fault.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// The rule name as configured (metric names sanitise it).
    pub name: String,
    matches: MatchSet,
    delay: Option<(Duration, u32)>,
    abort: Option<(AbortCode, u32)>,
}

#[derive(Debug, Clone)]
struct HeaderPolicy {
    trusted: Vec<Cidr>,
    delay: bool,
    abort: bool,
    max_delay: Duration,
}

/// A validated fault config, ready for per-request decisions.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// Trust the router's `x-sluice-rule` instead of matching (see [`FaultConfig`]).
    pub after_router: bool,
    /// Per-worker cap on active faults.
    pub max_active_faults: u32,
    /// Add `x-sluice-fault` to faulted responses.
    pub debug_header: bool,
    rules: Vec<CompiledRule>,
    header: Option<HeaderPolicy>,
}

impl FaultPlan {
    /// Parses the plugin configuration JSON and compiles it.
    pub fn from_json(json: &[u8]) -> Result<Self, String> {
        Self::compile(&super::config::parse(json)?)
    }

    /// Validates `config` as Istio would and compiles it. The error names the fault and field.
    pub fn compile(config: &FaultConfig) -> Result<Self, String> {
        let mut rules: Vec<CompiledRule> = Vec::with_capacity(config.faults.len());
        for (index, rule) in config.faults.iter().enumerate() {
            let compiled = compile_rule(rule)
                .map_err(|err| format!("faults[{index}] (rule {:?}): {err}", rule.rule))?;
            if rules.iter().any(|seen| seen.name == compiled.name) {
                return Err(format!(
                    "faults[{index}]: rule {:?} appears twice; each rule has at most one fault",
                    rule.rule
                ));
            }
            rules.push(compiled);
        }
        let header = config
            .header_faults
            .as_ref()
            .map(compile_header_faults)
            .transpose()
            .map_err(|err| format!("headerFaults: {err}"))?;
        Ok(Self {
            after_router: config.after_router,
            max_active_faults: config.max_active_faults,
            debug_header: config.debug_header,
            rules,
            header,
        })
    }

    /// The compiled rules, in config order ([`Origin::Rule`] indexes them).
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// The rule that applies to the request: by the router's `x-sluice-rule` when
    /// `afterRouter`, else the first whose `match` accepts it.
    fn select_rule<'a, V: RequestView>(&'a self, lookup: &mut Lookup<'a, V>) -> Option<usize> {
        if self.after_router {
            let name = lookup.header(wire::RULE_HEADER)?;
            self.rules.iter().position(|r| r.name.as_bytes() == name)
        } else {
            self.rules
                .iter()
                .position(|rule| rule.matches.matches_with(lookup))
        }
    }

    /// Decides the faults for one request. `client_ip` is called only when a fault header is
    /// present and header faults are configured; `active_faults` is the worker's count of
    /// faults in progress; `next_u32` is the worker's PRNG.
    pub fn decide<V: RequestView>(
        &self,
        req: &V,
        client_ip: impl FnOnce() -> Option<IpAddr>,
        active_faults: u32,
        next_u32: &mut impl FnMut() -> u32,
    ) -> Decision {
        let mut lookup = Lookup::new(req);
        let rule = self.select_rule(&mut lookup);
        self.decide_with(rule, &mut lookup, client_ip, active_faults, next_u32)
    }

    /// Like [`FaultPlan::decide`] for a caller that already knows the rule (an index into
    /// [`FaultPlan::rules`], `None` when no rule has a fault): the suite module resolves it
    /// at configure time, so no `x-sluice-rule` header is read or compared per request.
    pub fn decide_for_rule<V: RequestView>(
        &self,
        rule: Option<usize>,
        req: &V,
        client_ip: impl FnOnce() -> Option<IpAddr>,
        active_faults: u32,
        next_u32: &mut impl FnMut() -> u32,
    ) -> Decision {
        self.decide_with(
            rule,
            &mut Lookup::new(req),
            client_ip,
            active_faults,
            next_u32,
        )
    }

    /// The draws and caps of [`FaultPlan::decide`] once the rule is known.
    fn decide_with<'a, V: RequestView>(
        &'a self,
        rule: Option<usize>,
        lookup: &mut Lookup<'a, V>,
        client_ip: impl FnOnce() -> Option<IpAddr>,
        active_faults: u32,
        next_u32: &mut impl FnMut() -> u32,
    ) -> Decision {
        let mut injection = Injection {
            delay: None,
            abort: None,
        };
        if let Some(index) = rule
            && let Some(rule) = self.rules.get(index)
        {
            // Independent draws, delay first, as Envoy's fault filter.
            if let Some((delay, ppm)) = rule.delay
                && percent::fires(ppm, next_u32)
            {
                injection.delay = Some((delay, Origin::Rule(index)));
            }
            if let Some((code, ppm)) = rule.abort
                && percent::fires(ppm, next_u32)
            {
                injection.abort = Some((code, Origin::Rule(index)));
            }
        }
        if let Some(policy) = &self.header {
            policy.apply(lookup, client_ip, &mut injection, next_u32);
        }
        if injection.delay.is_none() && injection.abort.is_none() {
            Decision::Pass
        } else if active_faults >= self.max_active_faults {
            Decision::Overflow
        } else {
            Decision::Inject(injection)
        }
    }
}

impl HeaderPolicy {
    /// Replaces the rule's delay/abort by the client's fault headers, if the client is
    /// trusted. Reads the trigger headers first and the client address only when one is set,
    /// so untriggered requests cost no property read.
    fn apply<'a, V: RequestView>(
        &self,
        lookup: &mut Lookup<'a, V>,
        client_ip: impl FnOnce() -> Option<IpAddr>,
        injection: &mut Injection,
        next_u32: &mut impl FnMut() -> u32,
    ) {
        let delay_ms = if self.delay {
            lookup.header(DELAY_HEADER).and_then(parse_u64)
        } else {
            None
        };
        let abort = if self.abort {
            let http = lookup
                .header(ABORT_HEADER)
                .and_then(parse_u64)
                .and_then(|s| u16::try_from(s).ok())
                .filter(|s| (200..=599).contains(s))
                .map(AbortCode::Http);
            // Envoy: the HTTP status header wins when both are present.
            http.or_else(|| {
                lookup
                    .header(ABORT_GRPC_HEADER)
                    .and_then(parse_u64)
                    .and_then(|c| u8::try_from(c).ok())
                    .filter(|c| *c <= 16)
                    .map(AbortCode::Grpc)
            })
        } else {
            None
        };
        if delay_ms.is_none() && abort.is_none() {
            return;
        }
        let trusted = client_ip().is_some_and(|ip| net::is_trusted(&self.trusted, ip));
        if !trusted {
            return;
        }
        if let Some(ms) = delay_ms {
            let ppm = header_ppm(lookup.header(DELAY_PERCENTAGE_HEADER));
            let delay = Duration::from_millis(ms).min(self.max_delay);
            injection.delay =
                (ms > 0 && percent::fires(ppm, next_u32)).then_some((delay, Origin::Header));
        }
        if let Some(code) = abort {
            let ppm = header_ppm(lookup.header(ABORT_PERCENTAGE_HEADER));
            injection.abort = percent::fires(ppm, next_u32).then_some((code, Origin::Header));
        }
    }
}

/// A percentage header (`"25"`, `"0.5"`) in ppm; absent or invalid means 100%, as Envoy
/// applies a header fault to every request unless told otherwise.
fn header_ppm(value: Option<&[u8]>) -> u32 {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| crate::json::parse_decimal(v.trim()))
        .filter(|p| percent::validate_percentage(*p).is_ok())
        .map_or(PPM_ALL, percent::percentage_to_ppm)
}

/// A decimal integer header value (ASCII digits only, surrounding spaces allowed).
fn parse_u64(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn compile_rule(rule: &FaultRule) -> Result<CompiledRule, String> {
    if rule.rule.is_empty() {
        return Err("rule: must name the rule (the router's rule name)".into());
    }
    if rule.delay.is_none() && rule.abort.is_none() {
        return Err("HTTP fault injection must have an abort and/or a delay".into());
    }
    let matches = MatchSet::compile(&rule.matches)?;
    let delay = rule
        .delay
        .as_ref()
        .map(compile_delay)
        .transpose()
        .map_err(|err| format!("delay.{err}"))?;
    let abort = rule
        .abort
        .as_ref()
        .map(compile_abort)
        .transpose()
        .map_err(|err| format!("abort.{err}"))?;
    Ok(CompiledRule {
        name: rule.rule.clone(),
        matches,
        delay,
        abort,
    })
}

fn compile_percentage(percentage: Option<Percent>) -> Result<Option<u32>, String> {
    percentage
        .map(|p| {
            percent::validate_percentage(p.value)
                .map(|()| percent::percentage_to_ppm(p.value))
                .map_err(|err| format!("percentage.value: {err}"))
        })
        .transpose()
}

fn compile_delay(delay: &Delay) -> Result<(Duration, u32), String> {
    let fixed = duration::parse(&delay.fixed_delay).map_err(|err| format!("fixedDelay: {err}"))?;
    validate_istio_duration(fixed).map_err(|err| format!("fixedDelay: {err}"))?;
    let ppm = match compile_percentage(delay.percentage)? {
        Some(ppm) => ppm,
        None => match delay.percent {
            Some(p) if p > 100 => {
                return Err(format!("percent: percentage {p} is not in range 0..100"));
            }
            Some(p) => p.saturating_mul(10_000),
            None => 0,
        },
    };
    Ok((fixed, ppm))
}

fn compile_abort(abort: &Abort) -> Result<(AbortCode, u32), String> {
    let code = match (abort.http_status, &abort.grpc_status) {
        (Some(_), Some(_)) => {
            return Err("httpStatus: set only one of httpStatus and grpcStatus".into());
        }
        (None, None) => {
            return Err(
                "httpStatus: abort needs an error type: set httpStatus (200-599) or grpcStatus"
                    .into(),
            );
        }
        (Some(status), None) => {
            // Istio's validateHTTPStatus accepts 600 while its message says 200-599; Envoy's
            // FaultAbort.http_status is [200, 600), so 600 would only fail later, in Envoy.
            let status = u16::try_from(status)
                .ok()
                .filter(|s| (200..=599).contains(s))
                .ok_or_else(|| {
                    format!("httpStatus: HTTP status {status} is not in range 200-599")
                })?;
            AbortCode::Http(status)
        }
        (None, Some(name)) => AbortCode::Grpc(grpc::code_of(name).ok_or_else(|| {
            format!(
                "grpcStatus: gRPC status {name:?} is not supported; use a name of \
                 https://github.com/grpc/grpc/blob/master/doc/statuscodes.md, for example \
                 'NOT_FOUND' or 'UNAVAILABLE'"
            )
        })?),
    };
    let ppm = compile_percentage(abort.percentage)?.unwrap_or(0);
    Ok((code, ppm))
}

/// Istio's `ValidateDuration`: at least 1ms, whole milliseconds.
fn validate_istio_duration(d: Duration) -> Result<(), String> {
    if d < Duration::from_millis(1) {
        return Err(format!(
            "duration {} must be at least 1ms",
            duration::format(d)
        ));
    }
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(format!(
            "duration {}: only durations to ms precision are supported",
            duration::format(d)
        ));
    }
    Ok(())
}

fn compile_header_faults(h: &HeaderFaults) -> Result<HeaderPolicy, String> {
    if h.trusted_cidrs.is_empty() {
        return Err(
            "trustedCidrs: list the client networks allowed to request faults, e.g. [\"127.0.0.1/32\"]"
                .into(),
        );
    }
    let trusted = super::net::parse_cidrs(&h.trusted_cidrs)?;
    let max_delay_text = h
        .max_delay
        .as_deref()
        .unwrap_or(super::config::DEFAULT_HEADER_MAX_DELAY);
    let max_delay = duration::parse(max_delay_text).map_err(|err| format!("maxDelay: {err}"))?;
    validate_istio_duration(max_delay).map_err(|err| format!("maxDelay: {err}"))?;
    Ok(HeaderPolicy {
        trusted,
        delay: h.delay,
        abort: h.abort,
        max_delay,
    })
}

impl FaultConfig {
    /// Legal but probably unintended settings, for the filter to log as warnings.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (index, rule) in self.faults.iter().enumerate() {
            let at = format!("faults[{index}] (rule {:?})", rule.rule);
            if let Some(delay) = &rule.delay
                && delay.percentage.is_none()
                && delay.percent.is_none()
            {
                warnings.push(format!(
                    "{at}: delay has no percentage, so (as in Istio) no request is delayed; \
                     add percentage: {{value: 100}} to delay every matching request"
                ));
            }
            if let Some(abort) = &rule.abort
                && abort.percentage.is_none()
            {
                warnings.push(format!(
                    "{at}: abort has no percentage, so (as in Istio) no request is aborted; \
                     add percentage: {{value: 100}} to abort every matching request"
                ));
            }
            if self.after_router && !rule.matches.is_empty() {
                warnings.push(format!(
                    "{at}: match is ignored because afterRouter is true (the router matched)"
                ));
            }
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MockHost;
    use serde_json::json;

    fn plan(config: serde_json::Value) -> Result<FaultPlan, String> {
        FaultPlan::from_json(config.to_string().as_bytes())
    }

    fn one_fault(fault: serde_json::Value) -> Result<FaultPlan, String> {
        let mut rule = json!({"rule": "r"});
        if let (Some(obj), Some(extra)) = (rule.as_object_mut(), fault.as_object()) {
            obj.extend(extra.clone());
        }
        plan(json!({ "faults": [rule] }))
    }

    /// A generator that always returns `v`: 0 makes every partial draw fire, u32::MAX - 1e6
    /// ... is in the unbiased range and above any ppm below 100%.
    fn constant(v: u32) -> impl FnMut() -> u32 {
        move || v
    }

    const NEVER: u32 = 999_999; // draw % 1e6 = 999_999: fires only at 100%.

    fn no_ip() -> Option<IpAddr> {
        None
    }

    #[test]
    fn parses_istio_shaped_config_with_defaults() {
        let config: FaultConfig = serde_json::from_value(json!({
            "faults": [{
                "rule": "ratings",
                "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                "delay": {"fixedDelay": "7s", "percentage": {"value": 100}},
                "abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 0.1}}
            }]
        }))
        .unwrap();
        assert!(!config.after_router);
        assert_eq!(config.max_active_faults, 1000);
        assert!(!config.debug_header);
        assert!(config.header_faults.is_none());
        // Round trip: the builder serialises what the filter parses.
        let text = serde_json::to_string(&config).unwrap();
        let back: FaultConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, config);
        let plan = FaultPlan::compile(&config).unwrap();
        assert_eq!(plan.rules().len(), 1);
        assert_eq!(
            plan.rules()[0].delay,
            Some((Duration::from_secs(7), PPM_ALL))
        );
        assert_eq!(plan.rules()[0].abort, Some((AbortCode::Grpc(14), 1_000)));
    }

    #[test]
    fn refuses_unknown_fields() {
        let err = plan(json!({"faults": [], "maxActivFaults": 3})).unwrap_err();
        assert!(err.contains("unknown field `maxActivFaults`"), "{err}");
        let err = one_fault(json!({"abort": {"httpStatus": 500, "percent": 5}})).unwrap_err();
        assert!(err.contains("unknown field `percent`"), "{err}");
    }

    #[test]
    fn validates_like_istio_with_precise_reasons() {
        let cases = [
            (json!({}), "must have an abort and/or a delay"),
            (
                json!({"abort": {"httpStatus": 600, "percentage": {"value": 1}}}),
                "abort.httpStatus: HTTP status 600 is not in range 200-599",
            ),
            (
                json!({"abort": {"httpStatus": 199}}),
                "HTTP status 199 is not in range 200-599",
            ),
            (
                json!({"abort": {"grpcStatus": "UNAVAILABEL"}}),
                "abort.grpcStatus: gRPC status \"UNAVAILABEL\" is not supported",
            ),
            (
                json!({"abort": {"httpStatus": 503, "grpcStatus": "UNAVAILABLE"}}),
                "only one of httpStatus and grpcStatus",
            ),
            (json!({"abort": {}}), "abort needs an error type"),
            (
                json!({"abort": {"httpStatus": 503, "percentage": {"value": 100.5}}}),
                "abort.percentage.value: percentage 100.5 is neither 0.0",
            ),
            (
                json!({"delay": {"fixedDelay": "500us", "percentage": {"value": 1}}}),
                "delay.fixedDelay: duration 0.0005s must be at least 1ms",
            ),
            (
                json!({"delay": {"fixedDelay": "1.5ms"}}),
                "only durations to ms precision",
            ),
            (
                json!({"delay": {"fixedDelay": "5"}}),
                "delay.fixedDelay: invalid duration",
            ),
            (
                json!({"delay": {"fixedDelay": "1s", "percent": 101}}),
                "delay.percent: percentage 101 is not in range 0..100",
            ),
            (
                json!({"delay": {"fixedDelay": "1s"}, "match": [{"uri": {"regex": "("}}]}),
                "match[0]",
            ),
        ];
        for (fault, needle) in cases {
            let err = one_fault(fault.clone()).unwrap_err();
            assert!(err.starts_with("faults[0] (rule \"r\"): "), "{err}");
            assert!(err.contains(needle), "{fault}: {err}");
        }
        let err = plan(json!({"faults": [
            {"rule": "a", "abort": {"httpStatus": 500}},
            {"rule": "a", "abort": {"httpStatus": 503}}
        ]}))
        .unwrap_err();
        assert!(err.contains("rule \"a\" appears twice"), "{err}");
        let err =
            plan(json!({"faults": [{"rule": "", "abort": {"httpStatus": 500}}]})).unwrap_err();
        assert!(err.contains("must name the rule"), "{err}");
        let err = plan(json!({"headerFaults": {"trustedCidrs": []}})).unwrap_err();
        assert!(err.starts_with("headerFaults: trustedCidrs"), "{err}");
        let err = plan(json!({"headerFaults": {"trustedCidrs": ["10.0.0.0/40"]}})).unwrap_err();
        assert!(err.contains("trustedCidrs[0]: invalid CIDR"), "{err}");
        let err =
            plan(json!({"headerFaults": {"trustedCidrs": ["::1"], "maxDelay": "0s"}})).unwrap_err();
        assert!(
            err.contains("maxDelay: duration 0s must be at least 1ms"),
            "{err}"
        );
    }

    #[test]
    fn absent_percentage_injects_nothing_and_warns() {
        let config: FaultConfig = serde_json::from_value(json!({"faults": [{
            "rule": "r",
            "delay": {"fixedDelay": "1s"},
            "abort": {"httpStatus": 503}
        }]}))
        .unwrap();
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("no request is delayed"));
        assert!(warnings[1].contains("no request is aborted"));
        let plan = FaultPlan::compile(&config).unwrap();
        let req = MockHost::request("GET", "a", "/");
        // Even a generator that makes every partial draw fire injects nothing.
        assert_eq!(
            plan.decide(&req, no_ip, 0, &mut constant(0)),
            Decision::Pass
        );
    }

    #[test]
    fn legacy_integer_percent_applies_when_percentage_is_absent() {
        let p = one_fault(json!({"delay": {"fixedDelay": "1s", "percent": 30}})).unwrap();
        assert_eq!(p.rules()[0].delay, Some((Duration::from_secs(1), 300_000)));
        let p = one_fault(json!({"delay": {"fixedDelay": "1s", "percent": 30,
            "percentage": {"value": 0.5}}}))
        .unwrap();
        assert_eq!(p.rules()[0].delay, Some((Duration::from_secs(1), 5_000)));
    }

    #[test]
    fn first_matching_rule_applies_when_alone() {
        let p = plan(json!({"faults": [
            {"rule": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
             "abort": {"httpStatus": 418, "percentage": {"value": 100}}},
            {"rule": "rest", "delay": {"fixedDelay": "2s", "percentage": {"value": 100}}}
        ]}))
        .unwrap();
        let jason = MockHost::request("GET", "a", "/").with("end-user", "jason");
        let other = MockHost::request("GET", "a", "/").with("end-user", "bob");
        assert_eq!(
            p.decide(&jason, no_ip, 0, &mut constant(NEVER)),
            Decision::Inject(Injection {
                delay: None,
                abort: Some((AbortCode::Http(418), Origin::Rule(0)))
            })
        );
        assert_eq!(
            p.decide(&other, no_ip, 0, &mut constant(NEVER)),
            Decision::Inject(Injection {
                delay: Some((Duration::from_secs(2), Origin::Rule(1))),
                abort: None
            })
        );
        // Alone, a client-sent x-sluice-rule means nothing.
        let spoofed = other.clone().with(wire::RULE_HEADER, "jason");
        assert!(matches!(
            p.decide(&spoofed, no_ip, 0, &mut constant(NEVER)),
            Decision::Inject(Injection { abort: None, .. })
        ));
    }

    #[test]
    fn after_router_keys_on_the_rule_header() {
        let p = plan(json!({"afterRouter": true, "faults": [
            {"rule": "jason", "match": [{"headers": {"end-user": {"exact": "nobody"}}}],
             "abort": {"httpStatus": 503, "percentage": {"value": 100}}}
        ]}))
        .unwrap();
        let routed = MockHost::request("GET", "a", "/").with(wire::RULE_HEADER, "jason");
        assert!(matches!(
            p.decide(&routed, no_ip, 0, &mut constant(NEVER)),
            Decision::Inject(_)
        ));
        let other = MockHost::request("GET", "a", "/").with(wire::RULE_HEADER, "other");
        assert_eq!(p.decide(&other, no_ip, 0, &mut constant(0)), Decision::Pass);
        let none = MockHost::request("GET", "a", "/");
        assert_eq!(p.decide(&none, no_ip, 0, &mut constant(0)), Decision::Pass);
    }

    #[test]
    fn delay_and_abort_are_drawn_independently() {
        let p = one_fault(json!({
            "delay": {"fixedDelay": "10ms", "percentage": {"value": 50}},
            "abort": {"httpStatus": 503, "percentage": {"value": 50}}
        }))
        .unwrap();
        let req = MockHost::request("GET", "a", "/");
        // First draw (delay) says yes, second (abort) says no, and the other way round.
        let mut seq = [0u32, 700_000].into_iter();
        let d = p.decide(&req, no_ip, 0, &mut || seq.next().unwrap_or(0));
        assert!(matches!(
            d,
            Decision::Inject(Injection {
                delay: Some(_),
                abort: None
            })
        ));
        let mut seq = [700_000u32, 0].into_iter();
        let d = p.decide(&req, no_ip, 0, &mut || seq.next().unwrap_or(0));
        assert!(matches!(
            d,
            Decision::Inject(Injection {
                delay: None,
                abort: Some(_)
            })
        ));
        // Over many draws all four combinations appear near 25% each.
        let mut state = 12345u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u32
        };
        let mut both = 0;
        let n = 40_000;
        for _ in 0..n {
            if let Decision::Inject(Injection {
                delay: Some(_),
                abort: Some(_),
            }) = p.decide(&req, no_ip, 0, &mut next)
            {
                both += 1;
            }
        }
        // 25% of 40k = 10k, sigma = 86.6; 6 sigma bound.
        assert!((both as f64 - 10_000.0).abs() < 520.0, "{both}");
    }

    #[test]
    fn caps_active_faults() {
        let p = plan(json!({"maxActiveFaults": 2, "faults": [
            {"rule": "r", "abort": {"httpStatus": 503, "percentage": {"value": 100}}}
        ]}))
        .unwrap();
        let req = MockHost::request("GET", "a", "/");
        assert!(matches!(
            p.decide(&req, no_ip, 1, &mut constant(0)),
            Decision::Inject(_)
        ));
        assert_eq!(
            p.decide(&req, no_ip, 2, &mut constant(0)),
            Decision::Overflow
        );
    }

    #[test]
    fn header_faults_only_for_trusted_clients() {
        let p = plan(json!({"headerFaults": {"trustedCidrs": ["10.0.0.0/8"], "maxDelay": "2s"}}))
            .unwrap();
        let req = MockHost::request("GET", "a", "/")
            .with(DELAY_HEADER, "5000")
            .with(ABORT_HEADER, "429");
        let trusted = || Some("10.1.2.3".parse().unwrap());
        let untrusted = || Some("192.168.0.1".parse().unwrap());
        assert_eq!(
            p.decide(&req, trusted, 0, &mut constant(NEVER)),
            Decision::Inject(Injection {
                delay: Some((Duration::from_secs(2), Origin::Header)),
                abort: Some((AbortCode::Http(429), Origin::Header)),
            })
        );
        assert_eq!(
            p.decide(&req, untrusted, 0, &mut constant(0)),
            Decision::Pass
        );
        assert_eq!(p.decide(&req, no_ip, 0, &mut constant(0)), Decision::Pass);
        // Without a trigger header the client address is never read.
        let plain = MockHost::request("GET", "a", "/");
        let panicky = || -> Option<IpAddr> { panic!("address read without a fault header") };
        assert_eq!(
            p.decide(&plain, panicky, 0, &mut constant(0)),
            Decision::Pass
        );
    }

    #[test]
    fn header_faults_parse_like_envoy() {
        let p =
            plan(json!({"headerFaults": {"trustedCidrs": ["127.0.0.1"], "delay": false}})).unwrap();
        let trusted = || Some("127.0.0.1".parse().unwrap());
        // Delay headers are disabled; gRPC abort by number; bad values ignored.
        let req = MockHost::request("GET", "a", "/")
            .with(DELAY_HEADER, "100")
            .with(ABORT_HEADER, "600")
            .with(ABORT_GRPC_HEADER, "14");
        assert_eq!(
            p.decide(&req, trusted, 0, &mut constant(NEVER)),
            Decision::Inject(Injection {
                delay: None,
                abort: Some((AbortCode::Grpc(14), Origin::Header)),
            })
        );
        // The percentage header: 0 never fires; 50 fires on a low draw only.
        let zero = MockHost::request("GET", "a", "/")
            .with(ABORT_HEADER, "503")
            .with(ABORT_PERCENTAGE_HEADER, "0");
        assert_eq!(
            p.decide(&zero, trusted, 0, &mut constant(0)),
            Decision::Pass
        );
        let half = MockHost::request("GET", "a", "/")
            .with(ABORT_HEADER, "503")
            .with(ABORT_PERCENTAGE_HEADER, "50");
        assert_eq!(
            p.decide(&half, trusted, 0, &mut constant(NEVER)),
            Decision::Pass
        );
        assert!(matches!(
            p.decide(&half, trusted, 0, &mut constant(1)),
            Decision::Inject(_)
        ));
        for bad in ["-1", "5x", "", "99999999999999999999999", "\u{663}"] {
            let req = MockHost::request("GET", "a", "/").with(ABORT_HEADER, bad);
            assert_eq!(
                p.decide(&req, trusted, 0, &mut constant(0)),
                Decision::Pass,
                "{bad}"
            );
        }
        let binary = MockHost::request("GET", "a", "/").with_bytes(ABORT_HEADER, b"\xff5");
        assert_eq!(
            p.decide(&binary, trusted, 0, &mut constant(0)),
            Decision::Pass
        );
    }

    #[test]
    fn header_fault_replaces_the_rule_fault_of_its_kind() {
        let p = plan(json!({
            "faults": [{"rule": "r",
                "delay": {"fixedDelay": "1s", "percentage": {"value": 100}},
                "abort": {"httpStatus": 500, "percentage": {"value": 100}}}],
            "headerFaults": {"trustedCidrs": ["127.0.0.0/8"]}
        }))
        .unwrap();
        let req = MockHost::request("GET", "a", "/").with(ABORT_HEADER, "503");
        let trusted = || Some("127.0.0.1".parse().unwrap());
        assert_eq!(
            p.decide(&req, trusted, 0, &mut constant(NEVER)),
            Decision::Inject(Injection {
                delay: Some((Duration::from_secs(1), Origin::Rule(0))),
                abort: Some((AbortCode::Http(503), Origin::Header)),
            })
        );
    }

    #[test]
    fn replies_speak_the_request_protocol() {
        assert_eq!(abort_reply(AbortCode::Http(503), false), Reply::Http(503));
        assert_eq!(abort_reply(AbortCode::Http(503), true), Reply::Grpc(14));
        assert_eq!(abort_reply(AbortCode::Grpc(5), true), Reply::Grpc(5));
        assert_eq!(abort_reply(AbortCode::Grpc(5), false), Reply::Http(404));
        assert!(is_grpc_content_type(b"application/grpc"));
        assert!(is_grpc_content_type(b"application/grpc+proto"));
        assert!(is_grpc_content_type(b"Application/GRPC;charset=utf-8"));
        assert!(!is_grpc_content_type(b"application/grpc-web"));
        assert!(!is_grpc_content_type(b"application/json"));
        assert!(!is_grpc_content_type(b"application/grp"));
    }

    #[test]
    fn debug_values() {
        let both = Injection {
            delay: Some((Duration::from_millis(5000), Origin::Rule(0))),
            abort: Some((AbortCode::Http(500), Origin::Rule(0))),
        };
        assert_eq!(both.debug_value(), "delay=5000ms, abort=500");
        let grpc = Injection {
            delay: None,
            abort: Some((AbortCode::Grpc(14), Origin::Header)),
        };
        assert_eq!(grpc.debug_value(), "abort=grpc-UNAVAILABLE");
    }
}
