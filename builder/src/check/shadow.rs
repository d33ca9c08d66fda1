//! Rules that can never match (SL904): a VirtualService `http[j]` every request of which an
//! earlier `http[i]` of the same VirtualService already takes (first match wins).
//!
//! Conservative on purpose: `http[i]` shadows `http[j]` only when each match block of `http[j]`
//! is implied by some block of `http[i]`, and a block implies another only when every condition
//! of the earlier block appears unchanged in the later one, except that a uri `prefix` also
//! covers a later `exact` or longer `prefix` uri that starts with it (with the same
//! `ignoreUriCase`). A rule without `match` (or with an empty block) covers everything. Blocks
//! naming `gateways` are left alone (they apply on some listeners only), and so is anything
//! that does not convert to the router's matcher.

use sluice_core::matching::{HttpMatchRequest, StringMatch};

use crate::check::validate::to_core_match;
use crate::diag::{Code, Diagnostic, Severity};
use crate::input::parse::{Resource, Spec};
use crate::input::yaml::FieldPath;

/// The SL904 warnings of every VirtualService.
pub fn check(resources: &[Resource]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for r in resources {
        let Spec::VirtualService(vs) = &r.spec else {
            continue;
        };
        // Each rule's blocks in the router's types; None: left alone.
        let rules: Vec<Option<Vec<HttpMatchRequest>>> = vs
            .http
            .iter()
            .map(|h| {
                if h.matches.iter().any(|m| !m.gateways.is_empty()) {
                    return None;
                }
                h.matches.iter().map(|m| to_core_match(m).ok()).collect()
            })
            .collect();
        for (j, later) in rules.iter().enumerate() {
            let Some(later) = later else { continue };
            let shadowing = rules
                .iter()
                .take(j)
                .enumerate()
                .find_map(|(i, earlier)| Some((i, why_shadowed(earlier.as_ref()?, later)?)));
            let Some((i, why)) = shadowing else { continue };
            let http = FieldPath::root().key("spec").key("http");
            let earlier_at = r.root.locate(&http.clone().index(i));
            let label = |k: usize| match vs.http.get(k).and_then(|h| h.name.as_deref()) {
                Some(name) => format!("http[{k}] ({name:?})"),
                None => format!("http[{k}]"),
            };
            out.push(r.diag(
                Code::ShadowedRule,
                Severity::Warning,
                &http.index(j),
                format!(
                    "{} can never match: the earlier {} at {}:{}:{} takes every request it would ({why})",
                    label(j),
                    label(i),
                    r.file,
                    earlier_at.line,
                    earlier_at.col
                ),
                Some(format!(
                    "the first matching rule wins: move {} before {}, or narrow {}; `sluice explain` shows which rule a request takes",
                    label(j),
                    label(i),
                    label(i)
                )),
            ));
        }
    }
    out
}

/// Why every request `later` matches is matched by `earlier`, or `None` when that is not
/// certain.
fn why_shadowed(earlier: &[HttpMatchRequest], later: &[HttpMatchRequest]) -> Option<String> {
    if earlier.is_empty() || earlier.iter().any(is_empty_block) {
        return Some("it has no match conditions".into());
    }
    if later.is_empty() {
        // The later rule matches every request; only a catch-all covers that.
        return None;
    }
    if earlier == later {
        return Some("the same match conditions".into());
    }
    let mut reasons = Vec::new();
    for block in later {
        let by = earlier.iter().find_map(|e| implies(block, e))?;
        if !reasons.contains(&by) {
            reasons.push(by);
        }
    }
    Some(reasons.join("; "))
}

fn is_empty_block(b: &HttpMatchRequest) -> bool {
    HttpMatchRequest {
        name: None,
        ..b.clone()
    } == HttpMatchRequest::default()
}

/// Whether every request matching `later` matches `earlier`: `Some(reason)`.
fn implies(later: &HttpMatchRequest, earlier: &HttpMatchRequest) -> Option<String> {
    let same = |a: &Option<StringMatch>, b: &Option<StringMatch>| a.is_none() || a == b;
    let lower = |m: &std::collections::BTreeMap<String, StringMatch>| {
        m.iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let subset = |e: &std::collections::BTreeMap<String, StringMatch>,
                  l: &std::collections::BTreeMap<String, StringMatch>| {
        let (e, l) = (lower(e), lower(l));
        e.iter().all(|(k, v)| l.get(k) == Some(v))
    };
    let query_subset = earlier
        .query_params
        .iter()
        .all(|(k, v)| later.query_params.get(k) == Some(v));
    if !(same(&earlier.method, &later.method)
        && same(&earlier.authority, &later.authority)
        && (earlier.port.is_none() || earlier.port == later.port)
        && subset(&earlier.headers, &later.headers)
        && subset(&earlier.without_headers, &later.without_headers)
        && query_subset)
    {
        return None;
    }
    let uri = match (&earlier.uri, &later.uri) {
        (None, _) => None,
        (Some(e), Some(l)) if e == l && earlier.ignore_uri_case == later.ignore_uri_case => None,
        (Some(StringMatch::Prefix(p)), Some(l))
            if earlier.ignore_uri_case == later.ignore_uri_case =>
        {
            let (path, kind) = match l {
                StringMatch::Exact(x) => (x, "exact"),
                StringMatch::Prefix(x) => (x, "prefix"),
                _ => return None,
            };
            let starts = if earlier.ignore_uri_case {
                path.to_ascii_lowercase()
                    .starts_with(&p.to_ascii_lowercase())
            } else {
                path.starts_with(p.as_str())
            };
            if !starts {
                return None;
            }
            Some(format!("uri prefix {p:?} covers {kind} {path:?}"))
        }
        _ => return None,
    };
    Some(uri.unwrap_or_else(|| {
        if earlier == later {
            "the same match conditions".into()
        } else {
            "its match block's conditions are all in this rule's".into()
        }
    }))
}
