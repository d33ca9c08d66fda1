//! Metric names shared by the filters and the builder's `stats_tags`.
//!
//! proxy-wasm metrics have no labels, so variable parts (rule, cluster, member) are encoded in
//! the dotted name, e.g. `sluice.router.rule.<rule>.matched`, and extracted as Prometheus labels
//! by `stats_tags` regexes in the bootstrap. Envoy splits stat names on `.`, so a variable part
//! must not contain one: [`sanitize`] maps each part to `[A-Za-z0-9_-]`.

// The names themselves are part of the wire contract; re-exported where they always were.
pub use crate::wire::{ROUTER_NO_MATCH, ROUTER_RULE_PREFIX, ROUTER_RULE_SUFFIX};

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

/// Per-worker counter increments held back and published in bulk (the suite's counters).
///
/// Each `increment_metric` is a host call (~1 us on Envoy's V8); a request bumps several
/// counters, while a dashboard reads them every few seconds. The batch keeps one pending delta
/// per counter id, sized once at configure time (no allocation per request): [`add`] is a
/// binary search and an add, [`drain`] hands each non-zero delta to the publisher once.
///
/// [`add`]: CounterBatch::add
/// [`drain`]: CounterBatch::drain
#[derive(Debug, Default)]
pub struct CounterBatch {
    /// `(counter id, pending delta)`, sorted by id, ids unique.
    slots: Vec<(u32, u64)>,
    /// Whether some delta is non-zero.
    pending: bool,
}

/// What [`CounterBatch::add`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batched {
    /// Held back; the batch was idle before (the caller makes sure a flush is scheduled).
    First,
    /// Held back with others already pending.
    More,
    /// Not a batched counter: the caller publishes it at once.
    Unknown,
}

impl CounterBatch {
    /// A batch for these counter ids (duplicates merged).
    pub fn new(ids: impl IntoIterator<Item = u32>) -> Self {
        // Sorted insertion rather than a sort: once per configuration, and it spares the
        // module a sort instance (~5 KB of wasm).
        let mut slots: Vec<(u32, u64)> = Vec::new();
        for id in ids {
            if let Err(at) = slots.binary_search_by_key(&id, |&(slot, _)| slot) {
                slots.insert(at, (id, 0));
            }
        }
        Self {
            slots,
            pending: false,
        }
    }

    /// Adds 1 to counter `id`.
    pub fn add(&mut self, id: u32) -> Batched {
        let Ok(index) = self.slots.binary_search_by_key(&id, |&(slot, _)| slot) else {
            return Batched::Unknown;
        };
        let Some((_, delta)) = self.slots.get_mut(index) else {
            return Batched::Unknown;
        };
        *delta = delta.saturating_add(1);
        if std::mem::replace(&mut self.pending, true) {
            Batched::More
        } else {
            Batched::First
        }
    }

    /// Whether some increment waits to be published.
    pub fn is_pending(&self) -> bool {
        self.pending
    }

    /// Hands every pending delta to `publish` (one call per changed counter) and zeroes it.
    pub fn drain(&mut self, mut publish: impl FnMut(u32, u64)) {
        if !std::mem::take(&mut self.pending) {
            return;
        }
        for (id, delta) in &mut self.slots {
            let delta = std::mem::take(delta);
            if delta > 0 {
                publish(*id, delta);
            }
        }
    }
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

    #[test]
    fn counter_batch_sums_per_id_and_drains_each_changed_counter_once() {
        let mut batch = CounterBatch::new([9, 3, 7, 3]);
        assert!(!batch.is_pending());
        assert_eq!(batch.add(7), Batched::First);
        assert_eq!(batch.add(3), Batched::More);
        assert_eq!(batch.add(7), Batched::More);
        assert_eq!(batch.add(4), Batched::Unknown);
        assert!(batch.is_pending());
        let mut published = Vec::new();
        batch.drain(|id, delta| published.push((id, delta)));
        assert_eq!(published, [(3, 1), (7, 2)]);
        assert!(!batch.is_pending());
        // Drained deltas are gone; the next increment starts a new batch.
        batch.drain(|id, delta| panic!("nothing pending, got {id}+{delta}"));
        assert_eq!(batch.add(9), Batched::First);
        let mut published = Vec::new();
        batch.drain(|id, delta| published.push((id, delta)));
        assert_eq!(published, [(9, 1)]);
    }

    #[test]
    fn empty_counter_batch_batches_nothing() {
        let mut batch = CounterBatch::default();
        assert_eq!(batch.add(1), Batched::Unknown);
        assert!(!batch.is_pending());
    }
}
