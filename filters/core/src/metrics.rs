//! Metric names shared by the filters and the builder's `stats_tags`.
//!
//! proxy-wasm metrics have no labels, so variable parts (rule, cluster, member) are encoded in
//! the dotted name, e.g. `sluice.router.rule.<rule>.matched`, and extracted as Prometheus labels
//! by `stats_tags` regexes in the bootstrap. Envoy splits stat names on `.`, so a variable part
//! must not contain one: [`sanitize`] maps each part to `[A-Za-z0-9_-]`.

/// Counter of requests the router answered 404 because no virtual host or rule matched.
pub const ROUTER_NO_MATCH: &str = "sluice.router.no_match";

/// Prefix of the per-rule router counters (`sluice.router.rule.<rule>.matched`).
pub const ROUTER_RULE_PREFIX: &str = "sluice.router.rule.";

/// Suffix of the per-rule router counters.
pub const ROUTER_RULE_SUFFIX: &str = ".matched";

/// Maps a name to the characters a metric name part may hold: ASCII letters, digits, `_` and
/// `-` stay; every other character (including `.` and each non-ASCII char) becomes `_`. An empty
/// name becomes `_`, so the dotted name never has an empty segment.
pub fn sanitize(name: &str) -> String {
    if name.is_empty() {
        return "_".to_string();
    }
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The counter of requests that matched a router rule: `sluice.router.rule.<rule>.matched`.
pub fn router_rule_matched(rule: &str) -> String {
    format!("{ROUTER_RULE_PREFIX}{}{ROUTER_RULE_SUFFIX}", sanitize(rule))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_allowed_characters() {
        assert_eq!(sanitize("reviews-v2_jason"), "reviews-v2_jason");
        assert_eq!(sanitize("ABCxyz019"), "ABCxyz019");
    }

    #[test]
    fn replaces_everything_else() {
        assert_eq!(
            sanitize("reviews.default/route:0"),
            "reviews_default_route_0"
        );
        assert_eq!(sanitize("a b\tc"), "a_b_c");
        // One '_' per character, not per byte.
        assert_eq!(sanitize("café"), "caf_");
        assert_eq!(sanitize(""), "_");
    }

    #[test]
    fn output_is_always_a_single_stat_segment() {
        for name in ["x.y.z", "..", "{}[]", "名前", "a\u{0}b"] {
            let s = sanitize(name);
            assert!(!s.is_empty());
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{name:?} -> {s:?}"
            );
        }
    }

    #[test]
    fn rule_counter_name() {
        assert_eq!(
            router_rule_matched("reviews.jason"),
            "sluice.router.rule.reviews_jason.matched"
        );
    }
}
