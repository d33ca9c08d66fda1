//! [`FromJson`] for every plugin config type the filters read: the router, canary, fault,
//! breaker and suite configs and their parts.
//!
//! Each impl mirrors its type's serde derive (field names and their order, which fields are
//! required, the defaults, `Option`s read as serde reads them), so [`super::from_slice`] and
//! [`super::serde_from_slice`] accept the same documents with the same values and refuse the
//! others with the same message at the same position; the tests below run both over every
//! config in the repository and over broken variants of them. A new field goes into the
//! type, its `NAMES` list (declaration order: serde's `expected one of` lists them so), its
//! `REQUIRED` bit if it has no serde default, and its `match` arm.
//!
//! The shape of every impl: start from the serde defaults (required fields hold a placeholder
//! that allocates nothing), read each member straight into place, and let
//! [`Reader::end_struct`] refuse a missing required field by its bit in the object's seen
//! set. So an impl holds no per-field `Option` slots, and an error path drops one value.
//! Why by hand at all: serde's derived visitors were ~87 KB of the suite module (BENCHMARKS.md,
//! "Suite module size"); these impls are a `match` per type over non-generic helpers.

use super::{Error, FromJson, Reader};
use crate::breaker::{Breaker, BreakerConfig, BreakerSettings, ErrorRatio, Outcome};
use crate::canary::{
    CanaryConfig, CanaryRule, Failures, Guard, Member, Schedule, SetCookie, Split, Step, Sticky,
};
use crate::fault::config::{Abort, Delay, FaultConfig, FaultRule, HeaderFaults, Percent};
use crate::matching::{HttpMatchRequest, StringMatch};
use crate::router::{Destination, RouterConfig, Rule, VirtualHost};
use crate::suite::SuiteConfig;
use crate::suite::debug::DebugConfig;

// --- router -----------------------------------------------------------------------------------

impl FromJson for RouterConfig {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &["virtualHosts"];
        let mut value = Self::default();
        let mut object = r.object("struct RouterConfig")?;
        while r.field(&mut object, NAMES)?.is_some() {
            value.virtual_hosts = FromJson::read(r)?;
        }
        r.end_struct(&object, NAMES, 0b1)?;
        Ok(value)
    }
}

impl FromJson for VirtualHost {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &["name", "domains", "rules"];
        let mut value = Self::default();
        let mut object = r.object("struct VirtualHost")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.name = r.string()?,
                1 => value.domains = FromJson::read(r)?,
                _ => value.rules = FromJson::read(r)?,
            }
        }
        r.end_struct(&object, NAMES, 0b011)?;
        Ok(value)
    }
}

impl FromJson for Rule {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &["name", "match", "route"];
        let mut value = Self {
            name: String::new(),
            match_: Vec::new(),
            route: Destination::Cluster(String::new()),
        };
        let mut object = r.object("struct Rule")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.name = r.string()?,
                1 => value.match_ = FromJson::read(r)?,
                _ => value.route = FromJson::read(r)?,
            }
        }
        r.end_struct(&object, NAMES, 0b101)?;
        Ok(value)
    }
}

impl FromJson for Destination {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        let (variant, wrapped) = r.variant(&["cluster", "split"])?;
        if !wrapped {
            return Err(r.not_unit_variant());
        }
        let name = r.string()?;
        r.end_object()?;
        Ok(if variant == 0 {
            Self::Cluster(name)
        } else {
            Self::Split(name)
        })
    }
}

// --- matching ---------------------------------------------------------------------------------

impl FromJson for HttpMatchRequest {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &[
            "name",
            "uri",
            "ignoreUriCase",
            "headers",
            "withoutHeaders",
            "queryParams",
            "method",
            "authority",
            "port",
        ];
        let mut value = Self::default();
        let mut object = r.object("struct HttpMatchRequest")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.name = FromJson::read(r)?,
                1 => value.uri = FromJson::read(r)?,
                2 => value.ignore_uri_case = r.boolean()?,
                3 => value.headers = FromJson::read(r)?,
                4 => value.without_headers = FromJson::read(r)?,
                5 => value.query_params = FromJson::read(r)?,
                6 => value.method = FromJson::read(r)?,
                7 => value.authority = FromJson::read(r)?,
                _ => value.port = FromJson::read(r)?,
            }
        }
        r.end_struct(&object, NAMES, 0)?;
        Ok(value)
    }
}

/// Read as its JSON shape (serde `try_from = "StringMatchJson"`): at most one of three optional
/// strings, the check made after the object's `}` as serde's `try_from` makes it.
impl FromJson for StringMatch {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &["exact", "prefix", "regex"];
        let mut value = StringMatch::Present;
        let mut several = false;
        let mut object = r.object("struct StringMatchJson")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            // `null` leaves a field unset, as serde's `Option` does.
            let Some(text) = Option::<String>::read(r)? else {
                continue;
            };
            several |= !matches!(value, StringMatch::Present);
            value = match field {
                0 => StringMatch::Exact(text),
                1 => StringMatch::Prefix(text),
                _ => StringMatch::Regex(text),
            };
        }
        r.end_struct(&object, NAMES, 0)?;
        if several {
            return Err(r.refuse(
                "a StringMatch sets at most one of \"exact\", \"prefix\", \"regex\" ({} means any value)",
            ));
        }
        Ok(value)
    }
}

// --- canary -----------------------------------------------------------------------------------

impl FromJson for CanaryConfig {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &["afterRouter", "splits", "rules"];
        let mut value = Self::default();
        let mut object = r.object("struct CanaryConfig")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.after_router = r.boolean()?,
                1 => value.splits = FromJson::read(r)?,
                _ => value.rules = FromJson::read(r)?,
            }
        }
        r.end_struct(&object, NAMES, 0b010)?;
        Ok(value)
    }
}

impl FromJson for Split {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &["name", "members", "sticky", "schedule", "failover", "guard"];
        let mut value = Self {
            name: String::new(),
            members: Vec::new(),
            sticky: None,
            schedule: None,
            failover: true,
            guard: None,
        };
        let mut object = r.object("struct Split")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.name = r.string()?,
                1 => value.members = FromJson::read(r)?,
                2 => value.sticky = FromJson::read(r)?,
                3 => value.schedule = FromJson::read(r)?,
                4 => value.failover = r.boolean()?,
                _ => value.guard = FromJson::read(r)?,
            }
        }
        r.end_struct(&object, NAMES, 0b00_0011)?;
        Ok(value)
    }
}

impl FromJson for Guard {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &[
            "canary",
            "failures",
            "minRequests",
            "window",
            "margin",
            "falseAlarm",
        ];
        let mut value = Self::default();
        let mut object = r.object("struct Guard")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.canary = FromJson::read(r)?,
                1 => value.failures = FromJson::read(r)?,
                2 => value.min_requests = r.u32()?,
                3 => value.window = r.string()?,
                4 => value.margin = r.f64()?,
                _ => value.false_alarm = r.f64()?,
            }
        }
        r.end_struct(&object, NAMES, 0)?;
        Ok(value)
    }
}

impl FromJson for Failures {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &["outcomes", "grpc", "latency"];
        let mut value = Self::default();
        let mut object = r.object("struct Failures")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.outcomes = FromJson::read(r)?,
                1 => value.grpc = FromJson::read(r)?,
                _ => value.latency = FromJson::read(r)?,
            }
        }
        r.end_struct(&object, NAMES, 0)?;
        Ok(value)
    }
}

impl FromJson for Member {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &["cluster", "weight"];
        let mut value = Self {
            cluster: String::new(),
            weight: 0,
        };
        let mut object = r.object("struct Member")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.cluster = r.string()?,
                _ => value.weight = r.u32()?,
            }
        }
        r.end_struct(&object, NAMES, 0b01)?;
        Ok(value)
    }
}

impl FromJson for Sticky {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &["header", "cookie", "sourceAddress", "setCookie"];
        let mut value = Self::default();
        let mut object = r.object("struct Sticky")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.header = FromJson::read(r)?,
                1 => value.cookie = FromJson::read(r)?,
                2 => value.source_address = r.boolean()?,
                _ => value.set_cookie = FromJson::read(r)?,
            }
        }
        r.end_struct(&object, NAMES, 0)?;
        Ok(value)
    }
}

impl FromJson for SetCookie {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &["name", "ttl", "path"];
        let mut value = Self {
            name: String::new(),
            ttl: String::new(),
            path: None,
        };
        let mut object = r.object("struct SetCookie")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.name = r.string()?,
                1 => value.ttl = r.string()?,
                _ => value.path = FromJson::read(r)?,
            }
        }
        r.end_struct(&object, NAMES, 0b011)?;
        Ok(value)
    }
}

impl FromJson for Schedule {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &["steps", "paused"];
        let mut value = Self {
            steps: Vec::new(),
            paused: false,
        };
        let mut object = r.object("struct Schedule")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.steps = FromJson::read(r)?,
                _ => value.paused = r.boolean()?,
            }
        }
        r.end_struct(&object, NAMES, 0b01)?;
        Ok(value)
    }
}

impl FromJson for Step {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &["weights", "hold"];
        let mut value = Self {
            weights: Vec::new(),
            hold: String::new(),
        };
        let mut object = r.object("struct Step")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.weights = FromJson::read(r)?,
                _ => value.hold = r.string()?,
            }
        }
        r.end_struct(&object, NAMES, 0b11)?;
        Ok(value)
    }
}

impl FromJson for CanaryRule {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &["match", "split"];
        let mut value = Self {
            matches: Vec::new(),
            split: String::new(),
        };
        let mut object = r.object("struct CanaryRule")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.matches = FromJson::read(r)?,
                _ => value.split = r.string()?,
            }
        }
        r.end_struct(&object, NAMES, 0b10)?;
        Ok(value)
    }
}

// --- fault ------------------------------------------------------------------------------------

impl FromJson for FaultConfig {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &[
            "afterRouter",
            "faults",
            "maxActiveFaults",
            "headerFaults",
            "debugHeader",
        ];
        // `max_active_faults` defaults to DEFAULT_MAX_ACTIVE_FAULTS here as in serde.
        let mut value = Self::default();
        let mut object = r.object("struct FaultConfig")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.after_router = r.boolean()?,
                1 => value.faults = FromJson::read(r)?,
                2 => value.max_active_faults = r.u32()?,
                3 => value.header_faults = FromJson::read(r)?,
                _ => value.debug_header = r.boolean()?,
            }
        }
        r.end_struct(&object, NAMES, 0)?;
        Ok(value)
    }
}

impl FromJson for FaultRule {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &["rule", "match", "delay", "abort"];
        let mut value = Self {
            rule: String::new(),
            matches: Vec::new(),
            delay: None,
            abort: None,
        };
        let mut object = r.object("struct FaultRule")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.rule = r.string()?,
                1 => value.matches = FromJson::read(r)?,
                2 => value.delay = FromJson::read(r)?,
                _ => value.abort = FromJson::read(r)?,
            }
        }
        r.end_struct(&object, NAMES, 0b0001)?;
        Ok(value)
    }
}

impl FromJson for Delay {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &["fixedDelay", "percentage", "percent"];
        let mut value = Self {
            fixed_delay: String::new(),
            percentage: None,
            percent: None,
        };
        let mut object = r.object("struct Delay")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.fixed_delay = r.string()?,
                1 => value.percentage = FromJson::read(r)?,
                _ => value.percent = FromJson::read(r)?,
            }
        }
        r.end_struct(&object, NAMES, 0b001)?;
        Ok(value)
    }
}

impl FromJson for Abort {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &["httpStatus", "grpcStatus", "percentage"];
        let mut value = Self {
            http_status: None,
            grpc_status: None,
            percentage: None,
        };
        let mut object = r.object("struct Abort")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.http_status = FromJson::read(r)?,
                1 => value.grpc_status = FromJson::read(r)?,
                _ => value.percentage = FromJson::read(r)?,
            }
        }
        r.end_struct(&object, NAMES, 0)?;
        Ok(value)
    }
}

impl FromJson for Percent {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &["value"];
        let mut value = Self { value: 0.0 };
        let mut object = r.object("struct Percent")?;
        while r.field(&mut object, NAMES)?.is_some() {
            value.value = r.f64()?;
        }
        r.end_struct(&object, NAMES, 0b1)?;
        Ok(value)
    }
}

impl FromJson for HeaderFaults {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &["trustedCidrs", "delay", "abort", "maxDelay"];
        let mut value = Self {
            trusted_cidrs: Vec::new(),
            delay: true,
            abort: true,
            max_delay: None,
        };
        let mut object = r.object("struct HeaderFaults")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.trusted_cidrs = FromJson::read(r)?,
                1 => value.delay = r.boolean()?,
                2 => value.abort = r.boolean()?,
                _ => value.max_delay = FromJson::read(r)?,
            }
        }
        r.end_struct(&object, NAMES, 0b0001)?;
        Ok(value)
    }
}

// --- breaker ----------------------------------------------------------------------------------

impl FromJson for BreakerConfig {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &[
            "afterRouter",
            "clusterHeader",
            "breakers",
            "default",
            "detailedReplies",
        ];
        let mut value = Self::default();
        let mut object = r.object("struct BreakerConfig")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.after_router = r.boolean()?,
                1 => value.cluster_header = FromJson::read(r)?,
                2 => value.breakers = FromJson::read(r)?,
                3 => value.default = FromJson::read(r)?,
                _ => value.detailed_replies = r.boolean()?,
            }
        }
        r.end_struct(&object, NAMES, 0)?;
        Ok(value)
    }
}

/// The fields of a [`Breaker`] in declaration order: `cluster`, then the [`BreakerSettings`]
/// fields, which are those after it.
const BREAKER: [&str; 11] = [
    "cluster",
    "consecutiveErrors",
    "errorRatio",
    "interval",
    "baseEjectionTime",
    "maxEjectionTime",
    "halfOpenProbes",
    "probeTimeout",
    "countAs",
    "maxConcurrentRequests",
    "maxEjectionPercent",
];

/// Reads the member at `index` of [`BREAKER`] (`cluster` or a setting) into place. A
/// [`Breaker`] is read as its cluster plus [`BreakerSettings`] (whose `Default` is the serde
/// defaults of both types), so the settings' code exists once.
fn read_breaker_field(
    r: &mut Reader<'_>,
    index: usize,
    cluster: &mut String,
    settings: &mut BreakerSettings,
) -> Result<(), Error> {
    match index {
        0 => *cluster = r.string()?,
        1 => settings.consecutive_errors = FromJson::read(r)?,
        2 => settings.error_ratio = FromJson::read(r)?,
        3 => settings.interval = r.string()?,
        4 => settings.base_ejection_time = r.string()?,
        5 => settings.max_ejection_time = r.string()?,
        6 => settings.half_open_probes = r.u32()?,
        7 => settings.probe_timeout = r.string()?,
        8 => settings.count_as = FromJson::read(r)?,
        9 => settings.max_concurrent_requests = FromJson::read(r)?,
        _ => settings.max_ejection_percent = FromJson::read(r)?,
    }
    Ok(())
}

impl FromJson for BreakerSettings {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        let names = BREAKER.get(1..).unwrap_or_default();
        let mut value = Self::default();
        let mut object = r.object("struct BreakerSettings")?;
        while let Some(field) = r.field(&mut object, names)? {
            read_breaker_field(r, field + 1, &mut String::new(), &mut value)?;
        }
        r.end_struct(&object, names, 0)?;
        Ok(value)
    }
}

impl FromJson for Breaker {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        let mut cluster = String::new();
        let mut settings = BreakerSettings::default();
        let mut object = r.object("struct Breaker")?;
        while let Some(field) = r.field(&mut object, &BREAKER)? {
            read_breaker_field(r, field, &mut cluster, &mut settings)?;
        }
        r.end_struct(&object, &BREAKER, 0b1)?;
        Ok(Self::new(cluster, settings))
    }
}

impl FromJson for ErrorRatio {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &["thresholdPercent", "minRequestVolume"];
        let mut value = Self {
            threshold_percent: 0,
            // breaker/config.rs `default_min_request_volume` (private there); the tests below pin it.
            min_request_volume: 20,
        };
        let mut object = r.object("struct ErrorRatio")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.threshold_percent = r.u32()?,
                _ => value.min_request_volume = r.u32()?,
            }
        }
        r.end_struct(&object, NAMES, 0b01)?;
        Ok(value)
    }
}

impl FromJson for Outcome {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const OUTCOMES: [Outcome; 5] = [
            Outcome::Status5xx,
            Outcome::GatewayError,
            Outcome::ConnectFailure,
            Outcome::Reset,
            Outcome::Timeout,
        ];
        let (index, wrapped) = r.variant(&[
            "5xx",
            "gateway-error",
            "connect-failure",
            "reset",
            "timeout",
        ])?;
        if wrapped {
            r.unit()?;
            r.end_object()?;
        }
        Ok(OUTCOMES.get(index).copied().unwrap_or(Outcome::Status5xx))
    }
}

// --- suite ------------------------------------------------------------------------------------

impl FromJson for SuiteConfig {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &["router", "canary", "fault", "breaker", "debug"];
        let mut value = Self::default();
        let mut object = r.object("struct SuiteConfig")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.router = FromJson::read(r)?,
                1 => value.canary = FromJson::read(r)?,
                2 => value.fault = FromJson::read(r)?,
                3 => value.breaker = FromJson::read(r)?,
                // Not `Option::read`: one more monomorph of it would cost the suite 150 bytes.
                _ => {
                    value.debug = if r.null()? {
                        None
                    } else {
                        Some(DebugConfig::read(r)?)
                    }
                }
            }
        }
        r.end_struct(&object, NAMES, 0b00001)?;
        Ok(value)
    }
}

impl FromJson for DebugConfig {
    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        const NAMES: &[&str] = &["header", "secret", "trustedCidrs", "positions"];
        let mut value = Self::default();
        let mut object = r.object("struct DebugConfig")?;
        while let Some(field) = r.field(&mut object, NAMES)? {
            match field {
                0 => value.header = r.string()?,
                1 => value.secret = r.string()?,
                2 => value.trusted_cidrs = FromJson::read(r)?,
                _ => value.positions = FromJson::read(r)?,
            }
        }
        r.end_struct(&object, NAMES, 0b0001)?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    //! Differential tests: the hand-written readers against the serde derives (through
    //! [`serde_from_slice`], itself checked against serde_json in `json`'s tests), on every
    //! plugin config the repository holds and on thousands of broken variants of them.

    use std::fmt::Debug;
    use std::path::Path;

    use serde::de::DeserializeOwned;
    use serde_json::{Value, json};

    use super::*;
    use crate::json::{from_slice, serde_from_slice};

    /// Both readers on `doc`: the same value or the same error (message, line, column).
    fn same<T: FromJson + DeserializeOwned + PartialEq + Debug>(doc: &[u8]) -> bool {
        let ours = from_slice::<T>(doc);
        let serde = serde_from_slice::<T>(doc);
        assert_eq!(ours, serde, "{}", String::from_utf8_lossy(doc));
        ours.is_ok()
    }

    /// Which config type a filter's plugin config is, by the module's name.
    fn check(kind: &str, doc: &[u8]) -> bool {
        match kind {
            "router" => same::<RouterConfig>(doc),
            "canary" => same::<CanaryConfig>(doc),
            "fault" => same::<FaultConfig>(doc),
            "breaker" => same::<BreakerConfig>(doc),
            "suite" => same::<SuiteConfig>(doc),
            other => panic!("no config type for filter {other}"),
        }
    }

    /// Every plugin config in the generated Envoy configs (envoy-configs/) and the builder's
    /// snapshots: `(filter, JSON)`, from the `value: "..."` after `name: sluice_<filter>`.
    fn repository_configs() -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = Vec::new();
        for dir in ["envoy-configs", "builder/tests/snapshots"] {
            collect(&root.join(dir), &mut files);
        }
        let mut configs = Vec::new();
        for file in files {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            let mut filter: Option<String> = None;
            for line in text.lines() {
                let line = line.trim();
                if let Some(name) = line.strip_prefix("name: sluice_") {
                    filter = Some(name.to_owned());
                } else if let Some(quoted) = line.strip_prefix("value: \"{")
                    && let Some(kind) = filter.take()
                {
                    let json: String = serde_json::from_str(&format!("\"{{{quoted}"))
                        .unwrap_or_else(|e| panic!("{}: {e}: {line}", file.display()));
                    configs.push((kind, json));
                }
            }
        }
        configs.sort();
        configs.dedup();
        configs
    }

    fn collect(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                collect(&path, files);
            } else {
                files.push(path);
            }
        }
    }

    /// Documents that set every field of every type (the repository's configs leave many at
    /// their defaults), escapes, the other enum forms, and the defaults of absent fields.
    fn full_documents() -> Vec<(&'static str, Value)> {
        let matches = json!([
            {"name": "m\u{e9}\"", "uri": {"regex": "/a/.*"}, "ignoreUriCase": true,
             "headers": {"end-user": {"exact": "jason"}, "x-any": {}, "x-null": {"exact": null, "prefix": "p"}},
             "withoutHeaders": {"x-b": {"prefix": "b"}}, "queryParams": {"q": {"exact": "1"}},
             "method": {"exact": "GET"}, "authority": {"prefix": "shop"}, "port": 9080},
            {}
        ]);
        let settings = json!({"consecutiveErrors": 5, "errorRatio": {"thresholdPercent": 50},
            "interval": "5s", "baseEjectionTime": "1s", "maxEjectionTime": "9s",
            "halfOpenProbes": 2, "probeTimeout": "2500ms", "countAs": ["5xx", "gateway-error", {"reset": null}, "connect-failure", "timeout"],
            "maxConcurrentRequests": 7, "maxEjectionPercent": 50});
        let mut breaker = settings.clone();
        breaker["cluster"] = json!("c\\u00e9");
        breaker["errorRatio"] = json!({"thresholdPercent": 10, "minRequestVolume": 3});
        let router = json!({"virtualHosts": [
            {"name": "a", "domains": ["*", "a:80"], "rules": [
                {"name": "r1", "match": matches, "route": {"cluster": "c1"}},
                {"name": "r2", "route": {"split": "s"}}]},
            {"name": "b", "domains": ["b"]}]});
        let canary = json!({"afterRouter": true, "splits": [
            {"name": "s", "members": [{"cluster": "c1", "weight": 90}, {"cluster": "c2"}],
             "sticky": {"header": "end-user", "cookie": "k", "sourceAddress": true,
                        "setCookie": {"name": "n", "ttl": "24h", "path": "/p"}},
             "schedule": {"steps": [{"weights": [90, 10], "hold": "1m"}, {"weights": [0, 100], "hold": "0s"}],
                          "paused": true},
             "failover": false,
             "guard": {"canary": "c2", "failures": {"outcomes": ["5xx", "reset"], "grpc": ["UNAVAILABLE"],
                                                    "latency": "800ms"},
                       "minRequests": 50, "window": "10s", "margin": 0.01, "falseAlarm": 1e-9}},
            {"name": "t", "members": [{"cluster": "c3", "weight": 1}], "sticky": null, "schedule": null,
             "guard": {"failures": {"latency": null}}}],
            "rules": [{"match": matches, "split": "s"}, {"split": "t"}]});
        let fault = json!({"afterRouter": false, "faults": [
            {"rule": "r1", "match": matches, "delay": {"fixedDelay": "5s", "percentage": {"value": 0.0001}, "percent": 3},
             "abort": {"httpStatus": 503, "grpcStatus": "UNAVAILABLE", "percentage": {"value": 100}}},
            {"rule": "r2", "delay": {"fixedDelay": "1ms", "percent": 100}, "abort": {"grpcStatus": "NOT_FOUND"}},
            {"rule": "r3", "delay": null, "abort": null}],
            "maxActiveFaults": 7, "headerFaults": {"trustedCidrs": ["10.0.0.0/8", "::1"],
            "delay": false, "abort": false, "maxDelay": "2s"}, "debugHeader": true});
        let breakers = json!({"afterRouter": true, "clusterHeader": "x-c", "breakers": [breaker, {"cluster": "d"}], "detailedReplies": true,
            "default": settings});
        let debug = json!({"header": "x-sluice-debug", "secret": "s\\u00e9cret-0123456789",
            "trustedCidrs": ["10.0.0.0/8", "::1"], "positions": ["a.yaml:1:2", "b c.yaml:3:4"]});
        let suite = json!({"router": router, "canary": canary, "fault": fault,
            "breaker": breakers, "debug": debug});
        vec![
            ("router", router),
            ("canary", canary),
            ("fault", fault),
            ("breaker", breakers),
            ("suite", suite),
            ("fault", json!({})),
            ("fault", json!({"headerFaults": {"trustedCidrs": []}})),
            ("breaker", json!({"default": {}})),
            (
                "breaker",
                json!({"breakers": [{"cluster": "x", "errorRatio": {"thresholdPercent": 1}}]}),
            ),
            (
                "suite",
                json!({"router": {"virtualHosts": []}, "canary": null, "fault": null, "breaker": null,
                       "debug": null}),
            ),
            (
                "suite",
                json!({"router": {"virtualHosts": []}, "debug": {"header": "x-d"}}),
            ),
        ]
    }

    /// Values of every JSON type (and integers out of `u32`'s range, both signs, `-0`), to put
    /// where another value was.
    fn replacements() -> Vec<&'static str> {
        vec![
            "null",
            "true",
            "0",
            "-0",
            "-1",
            "4294967296",
            "1.5",
            "1e999",
            "\"s\"",
            "\"5xx\"",
            "[]",
            "[1]",
            "{}",
            "{\"exact\":\"a\"}",
            "{\"cluster\":\"c\"}",
            "{\"reset\":1}",
        ]
    }

    /// `value` as compact JSON, with `edit` applied to node number `target` (pre-order).
    fn render(value: &Value, target: usize, edit: &Edit, counter: &mut usize, out: &mut String) {
        let this = *counter;
        *counter += 1;
        if this == target {
            match (edit, value) {
                (Edit::Replace(text), _) => return out.push_str(text),
                (Edit::Drop(key), Value::Object(map)) => {
                    let mut map = map.clone();
                    map.remove(key);
                    return out.push_str(&Value::Object(map).to_string());
                }
                (Edit::Duplicate, Value::Object(map)) => {
                    if let Some((k, v)) = map.iter().next() {
                        out.push_str(&format!("{{{}:{v},", Value::from(k.as_str())));
                        let rest = Value::Object(map.clone()).to_string();
                        return out.push_str(&rest[1..]);
                    }
                }
                (Edit::Unknown, Value::Object(map)) => {
                    let mut map = map.clone();
                    map.insert("bogus\\u0041".into(), Value::Null);
                    return out.push_str(&Value::Object(map).to_string());
                }
                _ => {}
            }
        }
        match value {
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    render(item, target, edit, counter, out);
                }
                out.push(']');
            }
            Value::Object(map) => {
                out.push('{');
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::from(k.as_str()).to_string());
                    out.push(':');
                    render(v, target, edit, counter, out);
                }
                out.push('}');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }

    enum Edit {
        Replace(&'static str),
        Drop(String),
        Duplicate,
        Unknown,
    }

    fn nodes(value: &Value, keys: &mut Vec<(usize, Vec<String>)>, counter: &mut usize) {
        let this = *counter;
        *counter += 1;
        match value {
            Value::Array(items) => items.iter().for_each(|v| nodes(v, keys, counter)),
            Value::Object(map) => {
                keys.push((this, map.keys().cloned().collect()));
                map.values().for_each(|v| nodes(v, keys, counter));
            }
            _ => {}
        }
    }

    /// Every broken variant of `doc`: each node replaced by each kind of value, each member
    /// dropped, each object with a duplicate and with an unknown member, each prefix of the
    /// pretty-printed text (EOF at every place, with line numbers).
    fn variants(doc: &Value) -> Vec<String> {
        let mut objects = Vec::new();
        let mut count = 0;
        nodes(doc, &mut objects, &mut count);
        let mut edits: Vec<(usize, Edit)> = Vec::new();
        for node in 0..count {
            edits.extend(replacements().into_iter().map(|r| (node, Edit::Replace(r))));
        }
        for (node, keys) in objects {
            edits.extend(keys.into_iter().map(|k| (node, Edit::Drop(k))));
            edits.push((node, Edit::Duplicate));
            edits.push((node, Edit::Unknown));
        }
        let mut out: Vec<String> = edits
            .iter()
            .map(|(node, edit)| {
                let mut text = String::new();
                render(doc, *node, edit, &mut 0, &mut text);
                text
            })
            .collect();
        let pretty = serde_json::to_string_pretty(doc).unwrap();
        let step = 1 + pretty.len() / 400;
        out.extend(
            (0..pretty.len())
                .step_by(step)
                .filter(|&end| pretty.is_char_boundary(end))
                .map(|end| pretty[..end].to_owned()),
        );
        out.push(format!("{pretty} x"));
        out.push(format!("{pretty},"));
        out
    }

    fn corpus() -> Vec<(String, Value)> {
        let mut docs: Vec<(String, Value)> = repository_configs()
            .into_iter()
            .map(|(kind, text)| (kind, serde_json::from_str(&text).unwrap()))
            .collect();
        docs.extend(full_documents().into_iter().map(|(k, v)| (k.to_owned(), v)));
        docs
    }

    /// Every config the repository holds reads to the same value with both readers, and the
    /// full documents too (so every field's reader is exercised).
    #[test]
    fn every_config_reads_the_same() {
        let configs = repository_configs();
        for kind in ["router", "canary", "fault", "breaker", "suite"] {
            assert!(
                configs.iter().any(|(k, _)| k == kind),
                "no {kind} config found in the repository"
            );
        }
        for (kind, doc) in corpus() {
            for text in [doc.to_string(), serde_json::to_string_pretty(&doc).unwrap()] {
                assert!(check(&kind, text.as_bytes()), "{kind} refused: {text}");
            }
        }
    }

    /// Broken variants of every config: both readers refuse them with the same message at the
    /// same line and column, or accept them with the same value.
    #[test]
    fn every_variant_is_refused_the_same() {
        let mut refused = 0;
        let mut total = 0;
        for (kind, doc) in corpus() {
            for text in variants(&doc) {
                total += 1;
                if !check(&kind, text.as_bytes()) {
                    refused += 1;
                }
            }
        }
        // Most variants must be errors, or the comparison proves little about them.
        assert!(refused * 2 > total, "{refused} of {total} refused");
    }

    /// Wording the docs and filter tests pin, through the hand-written reader.
    #[test]
    fn messages_as_documented() {
        let err = from_slice::<RouterConfig>(b"{\"virtualHost\":[]}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown field `virtualHost`, expected `virtualHosts` at line 1 column 14"
        );
        let err = from_slice::<CanaryConfig>(b"{\n\"splits\": [{\"name\": \"s\"}]}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing field `members` at line 2 column 23"
        );
        let err =
            from_slice::<BreakerConfig>(br#"{"breakers":[{"cluster":"c","countAs":["6xx"]}]}"#)
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown variant `6xx`, expected one of `5xx`, `gateway-error`, `connect-failure`, \
             `reset`, `timeout` at line 1 column 44"
        );
        let err = from_slice::<FaultConfig>(br#"{"maxActiveFaults":-3}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value: integer `-3`, expected u32 at line 1 column 21"
        );
        let value = from_slice::<ErrorRatio>(br#"{"thresholdPercent": 5}"#).unwrap();
        assert_eq!(value.min_request_volume, 20);
    }
}
