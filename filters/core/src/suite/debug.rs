//! The online explanation: a request that carries the configured debug header, with the
//! secret and/or from a trusted network, gets an `x-sluice-explain` response header saying
//! which rule matched (and where it is written), the split member and bucket, the fault
//! decision and the breaker state ([`Explanation::header_value`]).
//!
//! The suite's `debug` section ([`DebugConfig`]) is optional; without it the module reads no
//! header and pays nothing. With it, a request without the header costs one header lookup
//! (absent: no allocation). A request that carries the header has it removed before the
//! upstream whatever its value, so the secret never leaves the proxy; a wrong secret, an
//! untrusted client, or a client-sent `x-sluice-explain` get no explanation.
//!
//! Trust: the secret is compared in constant time ([`constant_time_eq`]); trusted networks
//! are checked against Envoy's `source.address` (the downstream address the connection
//! manager resolved), as the fault filter's `headerFaults` are. With both set, both must hold.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::fault::net::{self, Cidr};

/// The response header carrying the explanation.
pub const EXPLAIN_HEADER: &str = "x-sluice-explain";

/// The shortest secret accepted: shorter ones can be guessed by trying.
pub const MIN_SECRET_LEN: usize = 16;

/// The suite's `debug` section: who may ask for an explanation, and the rules' positions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DebugConfig {
    /// The request header that asks for an explanation (lowercase, e.g. `x-sluice-debug`).
    /// Removed from every request before the upstream.
    pub header: String,
    /// The value the header must carry ([`MIN_SECRET_LEN`] visible ASCII characters or more),
    /// compared in constant time. Empty: any value, from a trusted network.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret: String,
    /// Client networks that may ask (`10.0.0.0/8`, `::1`). Empty: any client with the secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_cidrs: Vec<String>,
    /// Where each router rule is written (`vs.yaml:12:5`), indexed like the router's rules
    /// (virtual hosts in order, their rules in order); empty: no positions. Only the debug
    /// section carries them, so a config without it is not one byte larger.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub positions: Vec<String>,
}

/// A validated [`DebugConfig`].
#[derive(Debug, Clone)]
pub struct CompiledDebug {
    config: DebugConfig,
    trusted: Vec<Cidr>,
}

impl DebugConfig {
    /// Validates the section for a router of `rules` rules. Errors start with `debug: ` and the
    /// field, and never quote the secret.
    pub fn compile(&self, rules: usize) -> Result<CompiledDebug, String> {
        // One message per field (each `format!` costs the modules bytes).
        let header = &self.header;
        if header.is_empty()
            || header == EXPLAIN_HEADER
            || crate::wire::INTERNAL_HEADERS.contains(&header.as_str())
            || !header
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "debug: header {header:?}: must be a lowercase header name (letters, digits, \
                 '-') other than sluice's own (x-sluice-explain, x-sluice-rule, \
                 x-sluice-cluster, x-sluice-split), e.g. \"x-sluice-debug\""
            ));
        }
        if !self.secret.is_empty()
            && (self.secret.len() < MIN_SECRET_LEN
                || !self.secret.bytes().all(|b| b.is_ascii_graphic()))
        {
            // MIN_SECRET_LEN, written out: a literal costs less than a `format!`.
            return Err(
                "debug: secret: must be at least 16 visible ASCII characters (no spaces)".into(),
            );
        }
        let trusted = net::parse_cidrs(&self.trusted_cidrs).map_err(|e| format!("debug: {e}"))?;
        if self.secret.is_empty() && trusted.is_empty() {
            return Err(
                "debug: needs a secret, trustedCidrs, or both: otherwise any client could ask"
                    .into(),
            );
        }
        // A control character would make the explanation an invalid header value.
        if !self.positions.is_empty() && self.positions.len() != rules
            || self
                .positions
                .iter()
                .any(|p| p.bytes().any(|b| b.is_ascii_control()))
        {
            return Err(format!(
                "debug: positions: {} given for {rules} router rules: give one per rule, in \
                 order, without control characters",
                self.positions.len()
            ));
        }
        Ok(CompiledDebug {
            config: self.clone(),
            trusted,
        })
    }
}

impl CompiledDebug {
    /// The request header that asks for an explanation.
    pub fn header(&self) -> &str {
        &self.config.header
    }

    /// Whether a request whose debug header carries `value` may see the explanation. `client`
    /// (the request's source address) is read only when trusted networks are configured.
    pub fn authorizes(&self, value: &[u8], client: impl FnOnce() -> Option<IpAddr>) -> bool {
        let secret = &self.config.secret;
        let secret = secret.is_empty() || constant_time_eq(value, secret.as_bytes());
        let source = self.trusted.is_empty()
            || client().is_some_and(|ip| net::is_trusted(&self.trusted, ip));
        secret && source
    }

    /// Where router rule `rule_index` is written, if the config says.
    pub fn position(&self, rule_index: usize) -> Option<&str> {
        self.config.positions.get(rule_index).map(String::as_str)
    }
}

/// `a == b` in time that depends only on the lengths, so that a client timing the answer
/// learns nothing about how much of the secret it guessed.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// What the routing decision of one request says: the first part of its explanation, written
/// when the decision is made ([`Explanation::head`]); the fault and breaker follow when the
/// response comes ([`finish`]), by when a delayed request has had its admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Explanation<'a> {
    /// The rule that matched (`None`: no rule, the 404).
    pub rule: Option<&'a str>,
    /// Where that rule is written (`vs.yaml:12:5`).
    pub position: Option<&'a str>,
    /// The cluster the request goes to.
    pub cluster: Option<&'a str>,
    /// For a split: its name, the member chosen (index in the split) and the request's point
    /// on the split's line (`[0, 2^32)`, see `canary::bucket`).
    pub split: Option<(&'a str, usize, u32)>,
    /// The split's canary is halted by its guard (the member was chosen without it): the
    /// `x-sluice-canary` reason of issue 29, as `canary=halted` after the bucket.
    pub canary_halted: bool,
}

impl Explanation<'_> {
    /// `rule=... at ...; cluster=...; split=... member=... bucket=.../10000`: the fields
    /// [`finish`] completes. `bucket` is the point as a share of the split's line, in
    /// ten-thousandths: member `k` owns the buckets from the running sum of the weights before
    /// it to the sum including it.
    pub fn head(&self) -> String {
        // Pushed piece by piece: one `write!` per field would cost the module more.
        let mut value = String::with_capacity(160);
        push_field(&mut value, "rule=", self.rule);
        if self.position.is_some() {
            push_field(&mut value, " at ", self.position);
        }
        push_field(&mut value, "; cluster=", self.cluster);
        push_field(&mut value, "; split=", self.split.map(|(name, _, _)| name));
        if let Some((_, member, point)) = self.split {
            let bucket = (u64::from(point) * 10_000) >> 32;
            let _ = write!(value, " member={member} bucket={bucket}/10000");
            if self.canary_halted {
                value.push_str(" canary=halted");
            }
        }
        value
    }
}

/// Completes a [`Explanation::head`] into the `x-sluice-explain` value, `; `-separated
/// `key=value` fields in a fixed order:
///
/// `rule=reviews.default.0 at vs.yaml:12:5; cluster=outbound|9080|v2|reviews;
/// split=reviews.default.0 member=1 bucket=8123/10000; fault=delay=5000ms; breaker=closed`
///
/// `fault`: `x-sluice-fault`'s value (`delay=5000ms`, `abort=503`), empty for none.
/// `breaker`: `closed`, `half-open` (admitted as a probe), `not-admitted` (rejected with a
/// 503, or let through because its state was unreachable), `skipped` (an abort answered
/// first); `None` without a breaker, or with no cluster chosen.
pub fn finish(head: &mut String, fault: &str, breaker: Option<&str>) {
    push_field(head, "; fault=", Some(fault).filter(|f| !f.is_empty()));
    push_field(head, "; breaker=", breaker);
}

fn push_field(value: &mut String, key: &str, text: Option<&str>) {
    value.push_str(key);
    value.push_str(text.unwrap_or("none"));
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef-s3cret";

    fn config(secret: &str, cidrs: &[&str]) -> DebugConfig {
        DebugConfig {
            header: "x-sluice-debug".into(),
            secret: secret.into(),
            trusted_cidrs: cidrs.iter().map(|c| (*c).to_owned()).collect(),
            positions: Vec::new(),
        }
    }

    fn ip(text: &str) -> Option<IpAddr> {
        text.parse().ok()
    }

    #[test]
    fn the_secret_alone_authorizes_any_client() {
        let debug = config(SECRET, &[]).compile(3).unwrap();
        assert!(debug.authorizes(SECRET.as_bytes(), || panic!("no address read")));
        assert!(!debug.authorizes(b"0123456789abcdef-s3creT", || None));
        assert!(!debug.authorizes(b"0123456789abcdef", || None));
        assert!(!debug.authorizes(b"", || None));
    }

    #[test]
    fn trusted_networks_alone_take_any_value_from_inside_only() {
        let debug = config("", &["10.0.0.0/8", "::1"]).compile(0).unwrap();
        assert!(debug.authorizes(b"1", || ip("10.2.3.4")));
        assert!(debug.authorizes(b"", || ip("::1")));
        assert!(debug.authorizes(b"yes", || ip("::ffff:10.0.0.1")));
        assert!(!debug.authorizes(b"1", || ip("192.168.0.1")));
        assert!(!debug.authorizes(b"1", || None), "no address: not trusted");
    }

    #[test]
    fn with_both_both_must_hold() {
        let debug = config(SECRET, &["127.0.0.1"]).compile(0).unwrap();
        assert!(debug.authorizes(SECRET.as_bytes(), || ip("127.0.0.1")));
        assert!(!debug.authorizes(SECRET.as_bytes(), || ip("127.0.0.2")));
        assert!(!debug.authorizes(b"wrong-wrong-wrong-wrong", || ip("127.0.0.1")));
    }

    #[test]
    fn the_secret_length_in_the_message_is_the_constant() {
        let err = config("short", &[]).compile(0).unwrap_err();
        assert!(
            err.contains(&format!("at least {MIN_SECRET_LEN} ")),
            "{err}"
        );
    }

    #[test]
    fn bad_settings_are_refused_without_quoting_the_secret() {
        let refused = |c: DebugConfig, rules: usize| c.compile(rules).unwrap_err();
        let err = refused(config("short-secret", &[]), 0);
        assert!(
            err.starts_with("debug: secret: must be at least 16"),
            "{err}"
        );
        assert!(!err.contains("short-secret"), "{err}");
        let err = refused(config("with a space in the secret", &[]), 0);
        assert!(err.starts_with("debug: secret: "), "{err}");
        assert!(refused(config("", &[]), 0).starts_with("debug: needs a secret, trustedCidrs"));
        let err = refused(config("", &["10.1.0.0/8"]), 0);
        assert!(
            err.starts_with("debug: trustedCidrs[0]: invalid CIDR"),
            "{err}"
        );
        for header in [
            "",
            "X-Debug",
            "x debug",
            "x-sluice-explain",
            "x-sluice-cluster",
        ] {
            let err = refused(
                DebugConfig {
                    header: header.into(),
                    ..config(SECRET, &[])
                },
                0,
            );
            assert!(
                err.starts_with(&format!("debug: header {header:?}: ")),
                "{err}"
            );
        }
        let positions = DebugConfig {
            positions: vec!["a.yaml:1:1".into()],
            ..config(SECRET, &[])
        };
        let err = refused(positions.clone(), 2);
        assert_eq!(
            err,
            "debug: positions: 1 given for 2 router rules: give one per rule, in order, \
             without control characters"
        );
        let debug = positions.compile(1).unwrap();
        assert_eq!(debug.position(0), Some("a.yaml:1:1"));
        assert_eq!(debug.position(1), None);
        let control = DebugConfig {
            positions: vec!["a\nb".into()],
            ..config(SECRET, &[])
        };
        assert!(refused(control, 1).contains("control characters"));
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn the_value_names_every_decision_in_a_fixed_order() {
        let full = Explanation {
            rule: Some("rollout"),
            position: Some("shop.yaml:12:5"),
            cluster: Some("shop-v2"),
            split: Some(("rollout", 1, u32::MAX)),
            canary_halted: false,
        };
        let mut value = full.head();
        finish(&mut value, "delay=1000ms", Some("closed"));
        assert_eq!(
            value,
            "rule=rollout at shop.yaml:12:5; cluster=shop-v2; split=rollout member=1 \
             bucket=9999/10000; fault=delay=1000ms; breaker=closed"
        );
        let plain = Explanation {
            rule: Some("testers"),
            position: None,
            cluster: Some("shop-v2"),
            split: None,
            canary_halted: false,
        };
        let mut value = plain.head();
        finish(&mut value, "", None);
        assert_eq!(
            value,
            "rule=testers; cluster=shop-v2; split=none; fault=none; breaker=none"
        );
        let half = Explanation {
            split: Some(("s", 0, 1 << 31)),
            ..plain
        };
        assert!(half.head().ends_with("split=s member=0 bucket=5000/10000"));
        let halted = Explanation {
            canary_halted: true,
            ..half
        };
        assert!(
            halted
                .head()
                .ends_with("split=s member=0 bucket=5000/10000 canary=halted")
        );
        let no_match = Explanation {
            rule: None,
            cluster: None,
            ..plain
        };
        assert_eq!(no_match.head(), "rule=none; cluster=none; split=none");
    }
}
