//! Checks of the natively implemented Istio settings ([`crate::input::native`]): rewrites,
//! redirects, direct responses, headers, mirrors, CORS, TLS, load-balancer settings and the
//! `sluice.dev/health-check` annotation. Each reports with the file, line and field at fault.

use crate::diag::{Code, Diagnostic};
use crate::input::annotations::HEALTH_CHECK_ANNOTATION;
use crate::input::istio::HttpRoute;
use crate::input::native::{hash_key, is_redirect_code, proxy_protocol_version};
use crate::input::parse::Resource;
use crate::position::FieldPath;

/// Reports a `sluice.dev/health-check` annotation that does not parse, or sits on a kind that
/// has no endpoints.
pub fn check_health_check(r: &Resource, out: &mut Vec<Diagnostic>) {
    let Some(parsed) = &r.annotations.health_check else {
        return;
    };
    let at = FieldPath::annotation(HEALTH_CHECK_ANNOTATION);
    if !matches!(
        r.spec,
        crate::input::parse::Spec::ServiceEntry(_) | crate::input::parse::Spec::DestinationRule(_)
    ) {
        out.push(r.error(
            Code::InvalidHttpAction,
            &at,
            format!("`{HEALTH_CHECK_ANNOTATION}` belongs on a ServiceEntry or DestinationRule"),
            "move it to the resource of the host whose endpoints are probed",
        ));
        return;
    }
    if let Err(e) = parsed {
        out.push(r.error(Code::InvalidHttpAction, &at,
            format!("invalid health check: {e}"),
            "e.g. {path: /healthz, interval: 10s, timeout: 1s, unhealthyThreshold: 3, healthyThreshold: 1}",
        ));
    }
}

/// Checks of the native fields of one `http[]` route.
pub fn check_route(r: &Resource, at: &FieldPath, h: &HttpRoute, out: &mut Vec<Diagnostic>) {
    // Istio has one Envoy route per match block; sluice has one per rule, so one prefix.
    let mut prefixes = h
        .matches
        .iter()
        .enumerate()
        .filter_map(|(i, m)| Some((i, m.stat_prefix.as_deref()?)));
    if let Some((_, first)) = prefixes.next()
        && let Some((i, other)) = prefixes.find(|(_, p)| p != &first)
    {
        out.push(r.error(Code::InvalidHttpAction, &at.key("match").index(i).key("statPrefix"),
            format!("statPrefix {other:?} differs from {first:?} in an earlier match block of this rule"),
            "sluice keeps one Envoy route (and so one stat prefix) per rule: use one statPrefix, or split the rule",
        ));
    }
    let locally = [
        ("redirect", h.redirect.is_some()),
        ("directResponse", h.direct_response.is_some()),
    ];
    let answering: Vec<&str> = locally
        .iter()
        .filter(|(_, s)| *s)
        .map(|(n, _)| *n)
        .collect();
    if answering.len() > 1 {
        out.push(r.error(
            Code::InvalidHttpAction,
            at,
            "`redirect` and `directResponse` are exclusive",
            "keep one: a rule answers in one way",
        ));
    }
    if let Some(first) = answering.first() {
        for (field, set) in [
            ("route", !h.route.is_empty()),
            ("mirror", h.mirror.is_some() || !h.mirrors.is_empty()),
            ("rewrite", h.rewrite.is_some()),
            ("retries", h.retries.is_some()),
        ] {
            if set {
                out.push(r.error(
                    Code::InvalidHttpAction,
                    &at.key(field),
                    format!("`{field}` cannot be combined with `{first}`"),
                    &format!("a `{first}` rule answers the client itself and forwards nothing"),
                ));
            }
        }
    }
    if h.mirror.is_some() && !h.mirrors.is_empty() {
        out.push(r.error(
            Code::InvalidHttpAction,
            &at.key("mirrors"),
            "`mirror` and `mirrors` are exclusive",
            "list every mirror under `mirrors`",
        ));
    }
    if let Some(p) = h.mirror_percentage.as_ref().and_then(|p| p.value)
        && !(0.0..=100.0).contains(&p)
    {
        out.push(r.error(
            Code::InvalidHttpAction,
            &at.key("mirrorPercentage").key("value"),
            format!("{p} is not a percentage"),
            "use a value from 0 to 100",
        ));
    }
    if let Some(p) = h.mirror_percent
        && p > 100
    {
        out.push(r.error(
            Code::InvalidHttpAction,
            &at.key("mirrorPercent"),
            format!("{p} is not a percentage"),
            "use a value from 0 to 100",
        ));
    }
    if let Some(rw) = &h.rewrite {
        if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
            out.push(r.error(
                Code::InvalidHttpAction,
                &at.key("rewrite"),
                "`uri` and `uriRegexRewrite` are exclusive",
                "keep one of them",
            ));
        }
        if let Some(rr) = &rw.uri_regex_rewrite {
            let rat = at.key("rewrite").key("uriRegexRewrite");
            match rr.pattern.as_deref() {
                None => out.push(r.error(
                    Code::InvalidHttpAction,
                    &rat,
                    "missing `match`",
                    "give the RE2 pattern",
                )),
                Some(p) => {
                    if let Err(e) = sluice_core::matching::compile_regex(p, false) {
                        out.push(r.error(
                            Code::InvalidHttpAction,
                            &rat.key("match"),
                            format!("invalid regex: {e}"),
                            "use RE2 syntax",
                        ));
                    }
                }
            }
            if rr.rewrite.is_none() {
                out.push(r.error(
                    Code::InvalidHttpAction,
                    &rat,
                    "missing `rewrite`",
                    "give the substitution",
                ));
            }
        }
    }
    if let Some(rd) = &h.redirect {
        let rat = at.key("redirect");
        if let Some(code) = rd.redirect_code
            && !is_redirect_code(code)
        {
            out.push(r.error(
                Code::InvalidHttpAction,
                &rat.key("redirectCode"),
                format!("redirect code {code} is not one Envoy sends"),
                "use 301, 302, 303, 307 or 308",
            ));
        }
        if rd.uri.is_some() && rd.prefix_rewrite.is_some() {
            out.push(r.error(
                Code::InvalidHttpAction,
                &rat,
                "`uri` and `prefixRewrite` are exclusive",
                "keep one of them",
            ));
        }
        if rd.port.is_some() && rd.derive_port.is_some() {
            out.push(r.error(
                Code::InvalidHttpAction,
                &rat,
                "`port` and `derivePort` are exclusive",
                "keep one",
            ));
        }
        if let Some(d) = rd.derive_port.as_deref()
            && !matches!(d, "FROM_PROTOCOL_DEFAULT" | "FROM_REQUEST_PORT")
        {
            out.push(r.error(
                Code::InvalidHttpAction,
                &rat.key("derivePort"),
                format!("unknown derivePort {d:?}"),
                "use FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT",
            ));
        }
    }
    if let Some(dr) = &h.direct_response {
        let dat = at.key("directResponse");
        match dr.status {
            None => out.push(r.error(
                Code::InvalidHttpAction,
                &dat,
                "missing `status`",
                "give the HTTP status",
            )),
            Some(s) if !(200..=599).contains(&s) => out.push(r.error(
                Code::InvalidHttpAction,
                &dat.key("status"),
                format!("status {s} is outside 200-599"),
                "Envoy answers directly with a status from 200 to 599",
            )),
            Some(_) => {}
        }
        if let Some(b) = &dr.body
            && b.string.is_some() == b.bytes.is_some()
        {
            out.push(r.error(
                Code::InvalidHttpAction,
                &dat.key("body"),
                "give exactly one of `string` and `bytes`",
                "`bytes` is base64",
            ));
        }
    }
    if let Some(c) = &h.cors_policy {
        let cat = at.key("corsPolicy");
        for (i, o) in c.allow_origins.iter().enumerate() {
            let n = [&o.exact, &o.prefix, &o.regex]
                .iter()
                .filter(|v| v.is_some())
                .count();
            if n != 1 {
                out.push(r.error(
                    Code::InvalidHttpAction,
                    &cat.key("allowOrigins").index(i),
                    "give exactly one of `exact`, `prefix`, `regex`",
                    "e.g. {exact: https://example.com}",
                ));
            }
            if let Some(re) = &o.regex
                && let Err(e) = sluice_core::matching::compile_regex(re, false)
            {
                out.push(r.error(
                    Code::InvalidHttpAction,
                    &cat.key("allowOrigins").index(i).key("regex"),
                    format!("invalid regex: {e}"),
                    "use RE2 syntax",
                ));
            }
        }
        if let Some(u) = c.unmatched_preflights.as_deref()
            && !matches!(u, "UNSPECIFIED" | "FORWARD" | "IGNORE")
        {
            out.push(r.error(
                Code::InvalidHttpAction,
                &cat.key("unmatchedPreflights"),
                format!("unknown value {u:?}"),
                "use FORWARD or IGNORE",
            ));
        }
        if let Some(t) = c.max_age.as_deref()
            && sluice_core::duration::parse(t).is_err()
        {
            out.push(r.error(
                Code::InvalidHttpAction,
                &cat.key("maxAge"),
                format!("invalid duration {t:?}"),
                "use e.g. 24h or 600s",
            ));
        }
    }
}

/// Checks of `trafficPolicy.tls` and the native load-balancer settings.
pub fn check_policy(
    r: &Resource,
    at: &FieldPath,
    tp: &crate::input::istio::TrafficPolicy,
    out: &mut Vec<Diagnostic>,
) {
    let mut ports = std::collections::BTreeSet::new();
    for (i, p) in tp.port_level_settings.iter().enumerate() {
        let pat = at.key("portLevelSettings").index(i);
        match p.port.as_ref().and_then(|s| s.number) {
            None => out.push(r.error(
                Code::InvalidHttpAction,
                &pat,
                "missing `port: {number: ...}`",
                "name the service port these settings apply to",
            )),
            Some(n) if !ports.insert(n) => out.push(r.error(
                Code::InvalidHttpAction,
                &pat.key("port"),
                format!("port {n} already has settings"),
                "merge the two entries",
            )),
            Some(_) => {}
        }
        let as_policy = crate::input::istio::TrafficPolicy {
            load_balancer: p.load_balancer.clone(),
            tls: p.tls.clone(),
            ..Default::default()
        };
        check_policy(r, &pat, &as_policy, out);
    }
    if let Some(tls) = &tp.tls {
        let tat = at.key("tls");
        match tls.mode.as_deref().unwrap_or("DISABLE") {
            "DISABLE" | "SIMPLE" => {}
            "MUTUAL" => {
                for (field, v) in [
                    ("clientCertificate", &tls.client_certificate),
                    ("privateKey", &tls.private_key),
                ] {
                    if v.is_none() && tls.credential_name.is_none() {
                        out.push(r.error(
                            Code::InvalidHttpAction,
                            &tat,
                            format!("MUTUAL needs `{field}`"),
                            "give the file paths of the client certificate and key",
                        ));
                    }
                }
            }
            "ISTIO_MUTUAL" => out.push(r.error(
                Code::InvalidHttpAction,
                &tat.key("mode"),
                "ISTIO_MUTUAL needs Istio's certificate authority, which sluice does not run",
                "use MUTUAL with certificate files",
            )),
            other => out.push(r.error(
                Code::InvalidHttpAction,
                &tat.key("mode"),
                format!("unknown TLS mode {other:?}"),
                "use DISABLE, SIMPLE or MUTUAL",
            )),
        }
        if tls.credential_name.is_some() {
            // Istio's validation: the secret carries the certificates, so files are exclusive.
            let files = [
                ("clientCertificate", &tls.client_certificate),
                ("privateKey", &tls.private_key),
                ("caCertificates", &tls.ca_certificates),
            ];
            for (field, _) in files.iter().filter(|(_, v)| v.is_some()) {
                out.push(r.error(Code::InvalidHttpAction, &tat.key(field),
                    format!("`{field}` cannot be combined with `credentialName`"),
                    "the secret holds the certificates (DIR/<credentialName>/tls.crt, tls.key, ca.crt with `--credentials-dir DIR`): keep one of them",
                ));
            }
        }
    }
    if let Some(pp) = &tp.proxy_protocol
        && proxy_protocol_version(pp).is_none()
    {
        out.push(r.error(
            Code::InvalidHttpAction,
            &at.key("proxyProtocol").key("version"),
            format!(
                "unknown PROXY protocol version {:?}",
                pp.version.as_deref().unwrap_or_default()
            ),
            "use V1 (text) or V2 (binary)",
        ));
    }
    if let Some(rb) = &tp.retry_budget {
        let rat = at.key("retryBudget");
        if let Some(p) = rb.percent
            && !(0.0..=100.0).contains(&p)
        {
            out.push(r.error(
                Code::InvalidHttpAction,
                &rat.key("percent"),
                format!("{p} is not a percentage"),
                "use a value from 0 to 100 (Envoy's default is 20)",
            ));
        }
        if rb.budget_interval.is_some() {
            out.push(r.diag(Code::Ignored, crate::diag::Severity::Warning,
                &rat.key("budgetInterval"),
                "ignored: Envoy's retry budget counts the requests active at each moment and has no interval",
                Some("remove `budgetInterval`; `percent` and `minRetryConcurrency` apply".into()),
            ));
        }
        if let Some(n) = tp
            .connection_pool
            .as_ref()
            .and_then(|c| c.http.as_ref())
            .and_then(|h| h.max_retries)
        {
            out.push(r.diag(Code::Ignored, crate::diag::Severity::Warning,
                &at.key("connectionPool").key("http").key("maxRetries"),
                format!("maxRetries {n} has no effect: Envoy ignores the retry limit of a cluster with a retry budget"),
                Some("remove `maxRetries`, or the `retryBudget` if a fixed limit is what you want".into()),
            ));
        }
    }
    if let Some(ch) = tp
        .load_balancer
        .as_ref()
        .and_then(|l| l.consistent_hash.as_ref())
        && hash_key(ch).is_none()
    {
        out.push(r.error(Code::InvalidHttpAction, &at.key("loadBalancer").key("consistentHash"),
            "no hash key",
            "give one of httpHeaderName, httpCookie {name, ttl}, useSourceIp, httpQueryParameterName",
        ));
    }
}
