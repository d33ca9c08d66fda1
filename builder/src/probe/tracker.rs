//! One endpoint's health from its probe results: Kubernetes' thresholds (successes in a row to
//! become healthy, failures in a row to become unhealthy), and when it last changed.

use std::time::Instant;

/// An endpoint's health as the control plane reports it (EDS `health_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not probed enough yet. Proxies get it as UNHEALTHY (see
    /// [`crate::xds::health::EdsHealth::Unhealthy`]): Istio sends no traffic to a
    /// health-checked WorkloadEntry before its first passing probe.
    Unknown,
    /// Probes pass.
    Healthy,
    /// Probes fail: Envoy sends it nothing.
    Unhealthy,
}

impl Health {
    /// The EDS `health_status` name.
    pub fn eds_name(self) -> &'static str {
        match self {
            Health::Unknown => "UNKNOWN",
            Health::Healthy => "HEALTHY",
            Health::Unhealthy => "UNHEALTHY",
        }
    }

    /// The health an EDS `health_status` name says ([`Health::eds_name`]'s inverse).
    pub fn from_eds_name(name: &str) -> Option<Health> {
        [Health::Unknown, Health::Healthy, Health::Unhealthy]
            .into_iter()
            .find(|h| h.eds_name() == name)
    }
}

/// The probe results of one endpoint.
#[derive(Debug, Clone)]
pub struct Tracker {
    health: Health,
    successes: u32,
    failures: u32,
    changed: Option<Instant>,
    last_error: Option<String>,
    probes: u64,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            health: Health::Unknown,
            successes: 0,
            failures: 0,
            changed: None,
            last_error: None,
            probes: 0,
        }
    }
}

impl Tracker {
    /// Records one probe's result at `now`; returns whether the health changed.
    pub fn record(
        &mut self,
        result: Result<(), String>,
        success_threshold: u32,
        failure_threshold: u32,
        now: Instant,
    ) -> bool {
        self.probes += 1;
        let before = self.health;
        match result {
            Ok(()) => {
                self.successes = self.successes.saturating_add(1);
                self.failures = 0;
                self.last_error = None;
                if self.successes >= success_threshold {
                    self.health = Health::Healthy;
                }
            }
            Err(why) => {
                self.failures = self.failures.saturating_add(1);
                self.successes = 0;
                self.last_error = Some(why);
                if self.failures >= failure_threshold {
                    self.health = Health::Unhealthy;
                }
            }
        }
        let changed = self.health != before;
        if changed {
            self.changed = Some(now);
        }
        changed
    }

    /// The current health.
    pub fn health(&self) -> Health {
        self.health
    }

    /// When the health last changed (`None`: never).
    pub fn changed(&self) -> Option<Instant> {
        self.changed
    }

    /// Why the last probe failed, if it did.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Probes recorded.
    pub fn probes(&self) -> u64 {
        self.probes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_decide_and_a_success_resets_the_failures() {
        let now = Instant::now();
        let mut t = Tracker::default();
        assert_eq!(t.health(), Health::Unknown);
        assert!(!t.record(Err("refused".into()), 2, 3, now));
        assert!(!t.record(Err("refused".into()), 2, 3, now));
        assert!(
            !t.record(Ok(()), 2, 3, now),
            "one success is below the threshold of 2"
        );
        assert!(t.record(Ok(()), 2, 3, now));
        assert_eq!(t.health(), Health::Healthy);
        assert!(!t.record(Err("503".into()), 2, 3, now));
        assert!(!t.record(Err("503".into()), 2, 3, now));
        assert!(t.record(Err("503".into()), 2, 3, now));
        assert_eq!(
            (t.health(), t.last_error()),
            (Health::Unhealthy, Some("503"))
        );
        assert_eq!(t.probes(), 7);
        assert_eq!(t.changed(), Some(now));
    }
}
