//! Why a match set did or did not match a request: the same compiled blocks and the same
//! [`Matcher`] primitives as [`MatchSet::matches_with`], walked in the same order, but keeping
//! the first field that failed in each block and why. For tools (`sluice explain`), never the
//! filters' per-request path: it allocates its answer.

use std::fmt::Write as _;

use super::{Block, Lookup, MatchSet, Matcher, Pattern, first_query_value, path_only, query_of};
use crate::host::RequestView;

/// Why one match block did not match: the first field (in evaluation order) that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miss {
    /// The block's index in the rule's `match` list.
    pub block: usize,
    /// The field, as in the config: `port`, `method`, `uri`, `authority`,
    /// `headers["x-user"]`, `withoutHeaders["x-skip"]`, `queryParams["v"]`.
    pub field: String,
    /// Why it failed, e.g. `header absent`, `"bob" is not exact "jason"`.
    pub reason: String,
}

/// The outcome of [`MatchSet::explain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Explanation {
    /// The set has no blocks: it matches every request.
    CatchAll,
    /// This block matched (the first that did; the blocks before it are in the misses).
    Matched {
        /// The index of the matching block.
        block: usize,
        /// Why each earlier block failed.
        earlier: Vec<Miss>,
    },
    /// No block matched: why each failed, in order.
    NoMatch(Vec<Miss>),
}

impl Explanation {
    /// Whether the set matched.
    pub fn is_match(&self) -> bool {
        !matches!(self, Self::NoMatch(_))
    }
}

impl MatchSet {
    /// As [`MatchSet::matches_with`], with the reasons: the first matching block, or for every
    /// block the field that failed. Agrees with `matches_with` on every request (tested).
    pub fn explain_with<'a, V: RequestView>(&'a self, req: &mut Lookup<'a, V>) -> Explanation {
        if self.blocks.is_empty() {
            return Explanation::CatchAll;
        }
        let mut misses = Vec::new();
        for (index, block) in self.blocks.iter().enumerate() {
            match block.explain(req) {
                None => {
                    return Explanation::Matched {
                        block: index,
                        earlier: misses,
                    };
                }
                Some((field, reason)) => misses.push(Miss {
                    block: index,
                    field,
                    reason,
                }),
            }
        }
        Explanation::NoMatch(misses)
    }

    /// [`MatchSet::explain_with`] on a request of its own.
    pub fn explain(&self, req: &impl RequestView) -> Explanation {
        self.explain_with(&mut Lookup::new(req))
    }
}

/// A value for a message: text when it is UTF-8, else escaped bytes; long values shortened.
fn show(value: &[u8]) -> String {
    const MAX: usize = 80;
    let text = String::from_utf8_lossy(value.get(..MAX).unwrap_or(value)).into_owned();
    let mut out = format!("{text:?}");
    if value.len() > MAX {
        let _ = write!(out, " (+{} bytes)", value.len() - MAX);
    }
    out
}

impl Matcher {
    /// What the matcher wants, e.g. `exact "jason"`, `regex "j.*n"`, `any value`.
    fn wants(&self) -> String {
        let case = if self.ignore_case {
            " (ignoring case)"
        } else {
            ""
        };
        match &self.pattern {
            Pattern::Any => "any value".into(),
            Pattern::Exact(p) => format!("exact {}{case}", show(p)),
            Pattern::Prefix(p) => format!("prefix {}{case}", show(p)),
            // The compiled program keeps no source text: the caller has the config to quote.
            Pattern::Regex(_) => format!("the regex{case}"),
        }
    }

    /// Why `value` fails this matcher (only called when it does).
    fn why_not(&self, value: &[u8]) -> String {
        match &self.pattern {
            Pattern::Regex(_) => format!("{} does not match {}", show(value), self.wants()),
            _ => format!("{} is not {}", show(value), self.wants()),
        }
    }
}

impl Block {
    /// `None` when the block matches, else the first failing field and why; the same checks in
    /// the same order as [`Block::matches`].
    fn explain<'a, V: RequestView>(&'a self, req: &mut Lookup<'a, V>) -> Option<(String, String)> {
        if let Some(port) = self.port {
            match req.local_port() {
                Some(p) if p == port => {}
                Some(p) => return Some(("port".into(), format!("port {p} is not {port}"))),
                None => return Some(("port".into(), format!("local port unknown, want {port}"))),
            }
        }
        let pseudo = |name: &'static str, m: &Matcher, value: Option<&[u8]>, strip: bool| {
            let Some(value) = value else {
                return Some((
                    name.to_owned(),
                    format!("no {name}-bearing header in the request"),
                ));
            };
            let value = if strip { path_only(value) } else { value };
            (!m.matches(value)).then(|| (name.to_owned(), m.why_not(value)))
        };
        if let Some(m) = &self.method
            && let Some(miss) = pseudo("method", m, req.header(":method"), false)
        {
            return Some(miss);
        }
        if let Some(m) = &self.uri
            && let Some(miss) = pseudo("uri", m, req.header(":path"), true)
        {
            return Some(miss);
        }
        if let Some(m) = &self.authority
            && let Some(miss) = pseudo("authority", m, req.header(":authority"), false)
        {
            return Some(miss);
        }
        for (name, m) in &self.headers {
            let field = format!("headers[{name:?}]");
            match req.header(name) {
                None => return Some((field, "header absent".into())),
                Some(v) if !m.matches(v) => return Some((field, m.why_not(v))),
                Some(_) => {}
            }
        }
        for (name, m) in &self.without_headers {
            let field = format!("withoutHeaders[{name:?}]");
            match (req.header(name), &m.pattern) {
                (None, Pattern::Any) => {}
                (Some(_), Pattern::Any) => {
                    return Some((field, "header present (it must be absent)".into()));
                }
                (value, _) => {
                    let present = value.is_some();
                    let v = value.unwrap_or_default();
                    if m.matches(v) {
                        let what = if present {
                            format!("{} matches {}", show(v), m.wants())
                        } else {
                            format!(
                                "header absent, which counts as \"\" and matches {}",
                                m.wants()
                            )
                        };
                        return Some((field, format!("{what} (it must not)")));
                    }
                }
            }
        }
        if !self.query_params.is_empty() {
            let query = req.header(":path").and_then(query_of).unwrap_or_default();
            for (name, m) in &self.query_params {
                let field = format!("queryParams[{}]", show(name));
                match first_query_value(query, name) {
                    None => return Some((field, "query parameter absent".into())),
                    Some(v) if !m.matches(v) => return Some((field, m.why_not(v))),
                    Some(_) => {}
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MockHost;

    fn set(json: &str) -> MatchSet {
        MatchSet::compile(&serde_json::from_str::<Vec<_>>(json).unwrap()).unwrap()
    }

    fn get(path: &str) -> MockHost {
        MockHost::request("GET", "shop", path)
    }

    fn only_miss(e: Explanation) -> (String, String) {
        match e {
            Explanation::NoMatch(misses) => {
                let m = misses.into_iter().next().unwrap();
                (m.field, m.reason)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_the_failing_field_and_why() {
        let s = set(r#"[{"headers":{"x-user":{"exact":"jason"}}}]"#);
        assert_eq!(
            only_miss(s.explain(&get("/"))),
            ("headers[\"x-user\"]".into(), "header absent".into())
        );
        assert_eq!(
            only_miss(s.explain(&get("/").with("x-user", "bob"))),
            (
                "headers[\"x-user\"]".into(),
                "\"bob\" is not exact \"jason\"".into()
            )
        );
        let s = set(r#"[{"uri":{"regex":"/r/[0-9]+"}}]"#);
        assert_eq!(
            only_miss(s.explain(&get("/r/1a?x=1"))),
            ("uri".into(), "\"/r/1a\" does not match the regex".into())
        );
        let s = set(r#"[{"method":{"exact":"POST"}}]"#);
        assert_eq!(
            only_miss(s.explain(&get("/"))).1,
            "\"GET\" is not exact \"POST\""
        );
        let s = set(r#"[{"withoutHeaders":{"x-skip":{}}}]"#);
        assert_eq!(
            only_miss(s.explain(&get("/").with("x-skip", "1"))).1,
            "header present (it must be absent)"
        );
        let s = set(r#"[{"withoutHeaders":{"x-skip":{"regex":".*"}}}]"#);
        assert!(
            only_miss(s.explain(&get("/")))
                .1
                .starts_with("header absent, which counts as \"\"")
        );
        let s = set(r#"[{"queryParams":{"v":{"exact":"2"}}}]"#);
        assert_eq!(
            only_miss(s.explain(&get("/?w=1"))),
            ("queryParams[\"v\"]".into(), "query parameter absent".into())
        );
        let s = set(r#"[{"port":8080}]"#);
        let mut req = get("/");
        req.port = Some(80);
        assert_eq!(only_miss(s.explain(&req)).1, "port 80 is not 8080");
    }

    #[test]
    fn reports_the_block_that_matched_and_the_earlier_misses() {
        let s = set(r#"[{"uri":{"prefix":"/a"}},{"headers":{"x":{}}}]"#);
        match s.explain(&get("/b").with("x", "1")) {
            Explanation::Matched { block, earlier } => {
                assert_eq!(block, 1);
                assert_eq!(earlier.len(), 1);
                assert_eq!(earlier[0].field, "uri");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(set("[]").explain(&get("/")), Explanation::CatchAll);
    }

    #[test]
    fn agrees_with_matches_on_every_request() {
        let sets = [
            r#"[{"uri":{"exact":"/a"}}]"#,
            r#"[{"uri":{"prefix":"/A"},"ignoreUriCase":true}]"#,
            r#"[{"uri":{"regex":"/a/[0-9]+"}}]"#,
            r#"[{"headers":{"x":{"exact":"1"}},"method":{"exact":"GET"}}]"#,
            r#"[{"headers":{"x":{"regex":".*"}}}]"#,
            r#"[{"headers":{"x":{"regex":"*"}}}]"#,
            r#"[{"withoutHeaders":{"x":{"regex":".*"}}}]"#,
            r#"[{"withoutHeaders":{"x":{"exact":""}}}]"#,
            r#"[{"withoutHeaders":{"x":{}}}]"#,
            r#"[{"withoutHeaders":{"x":{"prefix":"1"}}}]"#,
            r#"[{"queryParams":{"q":{"exact":"1"}}},{"authority":{"prefix":"sh"}}]"#,
            r#"[{"queryParams":{"q":{}}}]"#,
            r#"[{"port":8080,"uri":{"prefix":"/a"}}]"#,
            r#"[{"method":{"regex":"G.T"}}]"#,
            r#"[{}]"#,
            "[]",
        ];
        let mut requests = Vec::new();
        for path in ["/", "/a", "/a/1", "/A/x", "/a?q=1", "/b?q", "/b?q=2&q=1"] {
            for method in ["GET", "POST"] {
                for authority in ["shop", "other"] {
                    for x in [None, Some(""), Some("1"), Some("2")] {
                        for port in [None, Some(8080), Some(80)] {
                            let mut r = MockHost::request(method, authority, path);
                            if let Some(x) = x {
                                r = r.with("x", x);
                            }
                            r.port = port;
                            requests.push(r);
                        }
                    }
                }
            }
        }
        requests.push(MockHost::default());
        for json in sets {
            let s = set(json);
            for r in &requests {
                assert_eq!(s.explain(r).is_match(), s.matches(r), "{json} {r:?}");
            }
        }
    }
}
