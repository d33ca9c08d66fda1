//! Checks of the locality inputs ([`crate::input::locality`]): endpoint localities, the proxy's
//! locality against the settings that need it, and `localityLbSetting` (its `distribute`
//! weights, `failover` regions and `failoverPriority` labels).

use crate::diag::{Code, Diagnostic, Severity};
use crate::input::istio::TrafficPolicy;
use crate::input::locality::{Locality, LocalityLbSetting};
use crate::input::parse::{Resource, Spec};
use crate::position::FieldPath;

/// Checks every `localityLbSetting` and endpoint locality of `resources`, and warns when
/// `proxy` is unknown (no `--locality`) while some DestinationRule asks for locality load
/// balancing.
pub fn check(resources: &[Resource], proxy: Option<&Locality>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for r in resources {
        match &r.spec {
            Spec::DestinationRule(dr) => {
                let spec = FieldPath::root().key("spec");
                let mut first = None;
                let host = dr.traffic_policy.as_ref();
                let host_outlier = host.is_some_and(|p| p.outlier_detection.is_some());
                if let Some(p) = host {
                    check_policy(
                        r,
                        &spec.key("trafficPolicy"),
                        p,
                        false,
                        &mut first,
                        &mut out,
                    );
                }
                for (i, s) in dr.subsets.iter().enumerate() {
                    if let Some(p) = &s.traffic_policy {
                        let at = spec.key("subsets").index(i).key("trafficPolicy");
                        check_policy(r, &at, p, host_outlier, &mut first, &mut out);
                    }
                }
                if let (None, Some(at)) = (proxy, first) {
                    out.push(r.diag(Code::Ignored, Severity::Warning,
                        &at,
                        "localityLbSetting needs the proxy's own locality, which sluice does not know: not applied",
                        Some("pass `--locality REGION[/ZONE[/SUBZONE]]` to `sluice generate` (written to the bootstrap's node.locality); endpoints are still grouped by locality".into()),
                    ));
                }
            }
            Spec::ServiceEntry(se) => {
                for (i, ep) in se.endpoints.iter().enumerate() {
                    if let Some(l) = &ep.locality {
                        let at = FieldPath::root()
                            .key("spec")
                            .key("endpoints")
                            .index(i)
                            .key("locality");
                        check_endpoint_locality(r, &at, l, &mut out);
                    }
                }
            }
            Spec::WorkloadEntry(we) => {
                if let Some(l) = &we.locality {
                    let at = FieldPath::root().key("spec").key("locality");
                    check_endpoint_locality(r, &at, l, &mut out);
                }
            }
            _ => {}
        }
    }
    out
}

fn check_endpoint_locality(r: &Resource, at: &FieldPath, text: &str, out: &mut Vec<Diagnostic>) {
    if let Err(e) = Locality::parse(text) {
        out.push(r.error(
            Code::InvalidLocality,
            at,
            e,
            "write region/zone/subzone, e.g. us-east/zone-a",
        ));
    }
}

/// Checks one policy's `localityLbSetting` (and its `portLevelSettings`' ones); `first` gets the
/// path of the first setting found.
fn check_policy(
    r: &Resource,
    at: &FieldPath,
    policy: &TrafficPolicy,
    inherited_outlier: bool,
    first: &mut Option<FieldPath>,
    out: &mut Vec<Diagnostic>,
) {
    let outlier = inherited_outlier || policy.outlier_detection.is_some();
    if let Some(raw) = policy
        .load_balancer
        .as_ref()
        .and_then(|l| l.locality_lb_setting.as_ref())
    {
        let lat = at.key("loadBalancer").key("localityLbSetting");
        first.get_or_insert_with(|| lat.clone());
        check_setting(r, &lat, raw, outlier, out);
    }
    for (i, p) in policy.port_level_settings.iter().enumerate() {
        if let Some(raw) = p
            .load_balancer
            .as_ref()
            .and_then(|l| l.locality_lb_setting.as_ref())
        {
            let lat = at
                .key("portLevelSettings")
                .index(i)
                .key("loadBalancer")
                .key("localityLbSetting");
            first.get_or_insert_with(|| lat.clone());
            check_setting(r, &lat, raw, outlier || p.outlier_detection.is_some(), out);
        }
    }
}

fn check_setting(
    r: &Resource,
    at: &FieldPath,
    raw: &serde_json::Value,
    outlier: bool,
    out: &mut Vec<Diagnostic>,
) {
    let s: LocalityLbSetting = match serde_json::from_value(raw.clone()) {
        Ok(s) => s,
        Err(e) => {
            out.push(r.error(Code::InvalidLocality, at,
                format!("invalid localityLbSetting: {e}"),
                "fields: enabled, distribute [{from, to: {locality: weight}}], failover [{from, to}], failoverPriority",
            ));
            return;
        }
    };
    if !s.failover_priority.is_empty() {
        out.push(r.error(
            Code::UnsupportedField,
            &at.key("failoverPriority"),
            "failoverPriority is not supported yet by sluice",
            "use `failover` (region to region) or the default failover by locality",
        ));
    }
    if !s.distribute.is_empty() && !s.failover.is_empty() {
        out.push(r.error(
            Code::InvalidLocality,
            at,
            "`distribute` and `failover` cannot be set together",
            "Istio applies one of them: keep `distribute` (weights) or `failover` (priorities)",
        ));
    }
    let mut sources = Vec::new();
    for (i, d) in s.distribute.iter().enumerate() {
        let dat = at.key("distribute").index(i);
        match &d.from {
            None => out.push(r.error(
                Code::InvalidLocality,
                &dat,
                "missing `from`",
                "give the proxy locality this rule applies to, e.g. us-east/zone-a/*",
            )),
            Some(from) => sources.push((dat.key("from"), from.as_str())),
        }
        if d.to.is_empty() {
            out.push(r.error(
                Code::InvalidLocality,
                &dat,
                "missing `to`",
                "give destination localities with weights summing to 100",
            ));
            continue;
        }
        let mut total = 0i64;
        for (loc, w) in &d.to {
            if !(1..=100).contains(w) {
                out.push(r.error(
                    Code::InvalidLocality,
                    &dat.key("to").key(loc),
                    format!("locality weight {w} is outside 1-100"),
                    "weights are 1-100 and sum to 100",
                ));
            }
            total += w;
        }
        if total != 100 {
            out.push(r.error(
                Code::InvalidLocality,
                &dat.key("to"),
                format!("the weights sum to {total}, not 100"),
                "Istio requires the `to` weights of a rule to sum to 100",
            ));
        }
        let dests: Vec<(FieldPath, &str)> =
            d.to.keys()
                .map(|k| (dat.key("to").key(k), k.as_str()))
                .collect();
        check_patterns(r, &dests, out);
    }
    check_patterns(r, &sources, out);
    for (i, f) in s.failover.iter().enumerate() {
        let fat = at.key("failover").index(i);
        let (Some(from), Some(to)) = (&f.from, &f.to) else {
            out.push(r.error(
                Code::InvalidLocality,
                &fat,
                "a failover rule needs `from` and `to`",
                "both are regions, e.g. {from: us-east, to: eu-west}",
            ));
            continue;
        };
        for (field, v) in [("from", from), ("to", to)] {
            if v.contains('/') || v.contains('*') || v.is_empty() {
                out.push(r.error(
                    Code::InvalidLocality,
                    &fat.key(field),
                    format!("{v:?} is not a region"),
                    "failover rules name regions only, without '/' or '*'",
                ));
            }
        }
        if from == to {
            out.push(r.error(
                Code::InvalidLocality,
                &fat,
                format!("failover from {from:?} to itself"),
                "`from` and `to` must be different regions",
            ));
        }
    }
    if s.distribute.is_empty() && s.enabled != Some(false) && !outlier {
        out.push(r.diag(Code::Ignored, Severity::Warning,
            at,
            "locality failover applies only with outlierDetection (Istio ignores it silently without): no failover priorities for this policy",
            Some("add `outlierDetection` (e.g. {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}) so Envoy can leave an unhealthy locality".into()),
        ));
    }
}

/// Istio's `validateLocalities`: patterns `region[/zone[/subzone]]`, at most one `*`, only at
/// the end, no empty part, and no pattern covered by another.
fn check_patterns(r: &Resource, patterns: &[(FieldPath, &str)], out: &mut Vec<Diagnostic>) {
    let mut seen: Vec<&str> = Vec::new();
    for (at, p) in patterns {
        let stars = p.matches('*').count();
        let parts: Vec<&str> = p.split('/').collect();
        let problem = if stars > 1 || (stars == 1 && !p.ends_with('*')) {
            Some("the wildcard '*' may appear once, as the last part")
        } else if parts.len() > 3 || parts.iter().any(|s| s.is_empty()) {
            Some("a locality has the form region[/zone[/subzone]] with no empty part")
        } else if stars == 1 && parts.last().is_some_and(|s| *s != "*") {
            Some("the wildcard '*' stands for a whole part (us-east/*, not us-east/zone*)")
        } else {
            None
        };
        if let Some(problem) = problem {
            out.push(r.error(
                Code::InvalidLocality,
                at,
                format!("invalid locality {p:?}: {problem}"),
                "e.g. us-east, us-east/zone-a, us-east/zone-a/*, *",
            ));
            continue;
        }
        if let Some(prev) = seen.iter().find(|q| covers(q, p) || covers(p, q)) {
            out.push(r.error(
                Code::InvalidLocality,
                at,
                format!("locality {p:?} overlaps {prev:?}"),
                "each locality may be named once; a wildcard covers everything below it",
            ));
            continue;
        }
        seen.push(p);
    }
}

/// Whether pattern `a` covers every locality pattern `b` names (`us-east` covers
/// `us-east/zone-a`; `*` covers all).
fn covers(a: &str, b: &str) -> bool {
    let a: Vec<&str> = a.split('/').filter(|s| *s != "*").collect();
    let b: Vec<&str> = b.split('/').filter(|s| *s != "*").collect();
    a.len() <= b.len() && a.iter().zip(&b).all(|(x, y)| x == y)
}
