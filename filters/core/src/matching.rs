//! Istio `HTTPMatchRequest` semantics, compiled once at configure time and evaluated per request.
//!
//! The config types mirror Istio's JSON exactly (`uri`, `ignoreUriCase`, `headers`,
//! `withoutHeaders`, `queryParams`, `method`, `authority`, `port`), so a `match:` block copied
//! from a VirtualService parses unchanged. [`MatchSet::compile`] validates and compiles a list of
//! blocks; [`MatchSet::matches`] evaluates it: blocks are OR-ed, fields inside a block AND-ed, and
//! an empty list matches every request (as a VirtualService route without `match`).
//!
//! Semantics, following Istio's translation to Envoy route matchers:
//! - `uri` is matched against `:path` without its query string (Envoy's path matchers ignore the
//!   query). `ignoreUriCase` makes uri `exact`/`prefix` ASCII case-insensitive (Envoy's
//!   `case_sensitive: false`) and, beyond Istio which cannot express it in Envoy, compiles a uri
//!   `regex` case-insensitively too.
//! - Every `regex` is a full match, as Envoy's `safe_regex`: the pattern is anchored as
//!   `^(?:pattern)$`.
//! - `headers` keys are lower-cased (HTTP/2 and Envoy lower-case header names). A header is
//!   matched on its first value, as proxy-wasm's `get_http_request_header` returns it.
//! - `{}` (no `exact`/`prefix`/`regex`) means presence: for `headers` and `queryParams` the name
//!   must be present with any value; for `withoutHeaders` it must be absent. For `uri`, `method`
//!   and `authority` it matches every request, since those pseudo-headers are always present.
//!   As in Istio, `{"regex": "*"}` (not a valid regex) is the same catch-all wherever Istio
//!   translates to an Envoy header matcher: `headers`, `withoutHeaders`, `method`, `authority`.
//! - `withoutHeaders` inverts a header match: the block fails when the header's value matches.
//!   As Istio translates it (an inverted Envoy header matcher with `treat_missing_header_as_empty`
//!   unless it is a presence match), a missing header counts as the empty value: it fails an
//!   entry whose matcher accepts "" (`regex: ".*"`, `exact: ""`, `prefix: ""`) and passes the
//!   others and `{}` (absent = not present). `headers` entries get no such flag in Istio: a
//!   missing header fails every one of them, `regex: ".*"` and `exact: ""` included.
//! - `queryParams` are parsed from `:path`: the first parameter with the name counts (Envoy's
//!   `getFirstValue`); a parameter without `=` has an empty value. Names and values are compared
//!   as sent, NOT percent-decoded: Envoy's route matcher, which Istio's `queryParams` compile
//!   to, parses the query without decoding (checked on Envoy 1.40: `?version=v%32` does not
//!   match `exact: v2`), so a config behaves the same under Istio and under sluice.
//! - `method` and `authority` match `:method` and `:authority` case-sensitively, as Envoy's
//!   header matchers do.
//! - `port` matches the local port the request arrived on ([`RequestView::local_port`]).
//!
//! Header values are bytes: `exact` and `prefix` compare bytes, and a `regex` matches bytes as
//! Envoy's does: Envoy 1.40 runs RE2 in Latin-1 mode, one character per byte, so `.` matches
//! any byte but `\n` (not a whole `é`), and a value that is not UTF-8 can match.
//!
//! Regexes run on our own engine, [`crate::regex`]: RE2 syntax (Envoy's `safe_regex`, minus
//! Unicode classes), Envoy's byte semantics, a full match, linear time (a Pike VM: no backtracking, so a hostile header
//! cannot stall a worker) and no allocation per match. Why not a crate: the modules load into
//! every worker VM, and even `regex-lite` 0.1.9, the smallest maintained engine, cost the suite
//! module ~48 KB (`regex` 1.13 costs ~800 KB); this engine costs ~12 KB (suite module
//! 289,048 B with `regex-lite`; 252,252 B with this engine; ~239,800 B with no regex at all),
//! which puts every module under the 256,000 B budget (BENCHMARKS.md has the current sizes). `regex-lite` stays as the oracle of a
//! differential test and a fuzz target on ASCII; integration/tests/regex_envoy.rs compares the
//! engine with Envoy itself, bytes included. ASCII only, as in Envoy:
//! `\d`, `\w`, `\s`, `\b` and the POSIX classes are ASCII (as in RE2), and case-insensitive
//! matching (`(?i)`, `ignoreUriCase`) folds ASCII letters only.
//! Patterns are compiled once, in `on_configure`, with a size limit
//! ([`crate::regex::SIZE_LIMIT`]) and Envoy's program size limit
//! ([`crate::regex::PROGRAM_LIMIT`], see [`compile_regex`]); matches spend the request's step
//! budget ([`crate::regex::REQUEST_STEP_BUDGET`]).

use std::collections::BTreeMap;
use std::fmt;

mod explain;
pub use explain::{Explanation, Miss};

use serde::{Deserialize, Serialize};

use crate::host::RequestView;
use crate::regex::Regex;

/// One Istio `HTTPMatchRequest` block: every field set must match (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    /// Optional name of the block (Istio uses it in route names; informational here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Match on `:path` without the query string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    /// Makes the `uri` match ASCII case-insensitive.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_uri_case: bool,
    /// Header name (any case; lower-cased when compiled) -> match on its value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    /// Headers that must NOT match: the block fails if any of these matches.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Query parameter name -> match on its (first) value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Match on `:method`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    /// Match on `:authority` (the Host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// The local port the request arrived on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Istio's `StringMatch`: one of `{"exact": ..}`, `{"prefix": ..}`, `{"regex": ..}`, or `{}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(try_from = "StringMatchJson", into = "StringMatchJson")]
pub enum StringMatch {
    /// The value equals this string (bytes compared).
    Exact(String),
    /// The value starts with this string.
    Prefix(String),
    /// The whole value matches this RE2-style regex (anchored at both ends).
    Regex(String),
    /// `{}`: any value; for headers and query parameters this means "present".
    Present,
}

/// The JSON shape of a `StringMatch` (a protobuf oneof): at most one field set.
#[derive(Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(extend("maxProperties" = 1)))]
#[serde(deny_unknown_fields)]
struct StringMatchJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
}

/// Why a `StringMatch` JSON object was refused.
#[derive(Debug)]
struct StringMatchError(&'static str);

impl fmt::Display for StringMatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl TryFrom<StringMatchJson> for StringMatch {
    type Error = StringMatchError;

    fn try_from(json: StringMatchJson) -> Result<Self, Self::Error> {
        match (json.exact, json.prefix, json.regex) {
            (None, None, None) => Ok(Self::Present),
            (Some(v), None, None) => Ok(Self::Exact(v)),
            (None, Some(v), None) => Ok(Self::Prefix(v)),
            (None, None, Some(v)) => Ok(Self::Regex(v)),
            _ => Err(StringMatchError(
                "a StringMatch sets at most one of \"exact\", \"prefix\", \"regex\" ({} means any value)",
            )),
        }
    }
}

impl From<StringMatch> for StringMatchJson {
    fn from(m: StringMatch) -> Self {
        match m {
            StringMatch::Exact(v) => Self {
                exact: Some(v),
                ..Self::default()
            },
            StringMatch::Prefix(v) => Self {
                prefix: Some(v),
                ..Self::default()
            },
            StringMatch::Regex(v) => Self {
                regex: Some(v),
                ..Self::default()
            },
            StringMatch::Present => Self::default(),
        }
    }
}

/// A compiled `StringMatch`.
#[derive(Debug, Clone)]
enum Pattern {
    Any,
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Regex(Regex),
}

/// A compiled `StringMatch` plus its case sensitivity (only `uri` may be case-insensitive).
#[derive(Debug, Clone)]
struct Matcher {
    pattern: Pattern,
    ignore_case: bool,
}

impl Matcher {
    fn compile(
        m: &StringMatch,
        ignore_case: bool,
        field: &dyn Fn() -> String,
    ) -> Result<Self, String> {
        let pattern = match m {
            StringMatch::Present => Pattern::Any,
            StringMatch::Exact(v) => Pattern::Exact(v.as_bytes().into()),
            StringMatch::Prefix(v) => Pattern::Prefix(v.as_bytes().into()),
            StringMatch::Regex(re) => Pattern::Regex(
                compile_regex(re, ignore_case)
                    .map_err(|e| format!("{}.regex: invalid regex {re:?}: {e}", field()))?,
            ),
        };
        Ok(Self {
            pattern,
            ignore_case,
        })
    }

    fn matches(&self, value: &[u8]) -> bool {
        match &self.pattern {
            Pattern::Any => true,
            Pattern::Exact(p) if self.ignore_case => value.eq_ignore_ascii_case(p),
            Pattern::Exact(p) => value == &p[..],
            Pattern::Prefix(p) => value.get(..p.len()).is_some_and(|head| {
                if self.ignore_case {
                    head.eq_ignore_ascii_case(p)
                } else {
                    head == &p[..]
                }
            }),
            // Bytes, UTF-8 or not, as Envoy's Latin-1 RE2 reads them.
            // Within the request's step budget (crate::regex): a match that would exceed it
            // answers no match.
            Pattern::Regex(re) => re.is_match_within_budget(value),
        }
    }
}

/// Compiles an Envoy `safe_regex`-style pattern: a full match, with the size and nesting limits
/// ([`crate::regex`]) and at most [`crate::regex::PROGRAM_LIMIT`] instructions, Envoy's default
/// RE2 program size limit in this engine's units. Within that limit, one match on the longest
/// header Envoy accepts ([`crate::regex::MAX_HEADERS_BYTES`]) fits the per-request step budget
/// ([`crate::regex::REQUEST_STEP_BUDGET`]).
pub fn compile_regex(pattern: &str, ignore_case: bool) -> Result<Regex, String> {
    let re = Regex::new(pattern, ignore_case).map_err(|e| e.to_string())?;
    if re.program_len() > crate::regex::PROGRAM_LIMIT {
        return Err(format!(
            "compiled regex has {} instructions, more than {} (Envoy's default RE2 program size \
             limit, re2.max_program_size.error_level; alternatives of single characters are \
             cheaper as a class: [abc] rather than a|b|c)",
            re.program_len(),
            crate::regex::PROGRAM_LIMIT
        ));
    }
    Ok(re)
}

/// One compiled `HTTPMatchRequest` block.
#[derive(Debug, Clone)]
struct Block {
    uri: Option<Matcher>,
    method: Option<Matcher>,
    authority: Option<Matcher>,
    headers: Vec<(Box<str>, Matcher)>,
    without_headers: Vec<(Box<str>, Matcher)>,
    query_params: Vec<(Box<[u8]>, Matcher)>,
    port: Option<u32>,
}

impl Block {
    fn compile(index: usize, block: &HttpMatchRequest) -> Result<Self, String> {
        let at = |field: &str| format!("match[{index}].{field}");
        // `match`es rather than `map(..).transpose()`: smaller modules, the same checks.
        let uri = match &block.uri {
            Some(m) => Some(Matcher::compile(m, block.ignore_uri_case, &|| at("uri"))?),
            None => None,
        };
        let method = match &block.method {
            Some(m) => Some(Matcher::compile(header_match(m), false, &|| at("method"))?),
            None => None,
        };
        let authority = match &block.authority {
            Some(m) => Some(Matcher::compile(header_match(m), false, &|| {
                at("authority")
            })?),
            None => None,
        };
        let headers = compile_headers(&block.headers, &|name| at(&format!("headers[{name:?}]")))?;
        let without_headers = compile_headers(&block.without_headers, &|name| {
            at(&format!("withoutHeaders[{name:?}]"))
        })?;
        let mut query_params = Vec::with_capacity(block.query_params.len());
        for (name, m) in &block.query_params {
            let field = || at(&format!("queryParams[{name:?}]"));
            if name.is_empty() {
                return Err(format!("{}: empty query parameter name", field()));
            }
            // Istio's `translateQueryParamMatch`: `regex: "*"` is a presence match here too.
            query_params.push((
                name.as_bytes().into(),
                Matcher::compile(header_match(m), false, &field)?,
            ));
        }
        if let Some(port) = block.port
            && !(1..=65535).contains(&port)
        {
            return Err(format!("{}: {port} is not a port (1-65535)", at("port")));
        }
        Ok(Self {
            uri,
            method,
            authority,
            headers,
            without_headers,
            query_params,
            port: block.port,
        })
    }

    fn matches<'a, V: RequestView>(&'a self, req: &mut Lookup<'a, V>) -> bool {
        // Cheapest and most selective checks first; each fetch is a host call at most once.
        if let Some(port) = self.port
            && req.local_port() != Some(port)
        {
            return false;
        }
        if let Some(m) = &self.method
            && !req.header(":method").is_some_and(|v| m.matches(v))
        {
            return false;
        }
        if let Some(m) = &self.uri
            && !req.header(":path").is_some_and(|p| m.matches(path_only(p)))
        {
            return false;
        }
        if let Some(m) = &self.authority
            && !req.header(":authority").is_some_and(|v| m.matches(v))
        {
            return false;
        }
        for (name, m) in &self.headers {
            if !req.header(name).is_some_and(|v| m.matches(v)) {
                return false;
            }
        }
        for (name, m) in &self.without_headers {
            // Istio inverts the matcher and, unless it is a presence match, sets Envoy's
            // `treat_missing_header_as_empty`: a missing header is matched as "".
            let hit = match (req.header(name), &m.pattern) {
                (None, Pattern::Any) => false,
                (value, _) => m.matches(value.unwrap_or_default()),
            };
            if hit {
                return false;
            }
        }
        if !self.query_params.is_empty() {
            let query = req.header(":path").and_then(query_of).unwrap_or_default();
            for (name, m) in &self.query_params {
                if !first_query_value(query, name).is_some_and(|v| m.matches(v)) {
                    return false;
                }
            }
        }
        true
    }

    /// Header names this block reads (for the glue's lazy fetching and for tests).
    fn header_names(&self) -> impl Iterator<Item = &str> {
        let pseudo = [
            self.method.as_ref().map(|_| ":method"),
            (self.uri.is_some() || !self.query_params.is_empty()).then_some(":path"),
            self.authority.as_ref().map(|_| ":authority"),
        ];
        pseudo.into_iter().flatten().chain(
            self.headers
                .iter()
                .chain(&self.without_headers)
                .map(|(name, _)| &**name),
        )
    }
}

fn compile_headers(
    headers: &BTreeMap<String, StringMatch>,
    field: &dyn Fn(&str) -> String,
) -> Result<Vec<(Box<str>, Matcher)>, String> {
    let mut out: Vec<(Box<str>, Matcher)> = Vec::with_capacity(headers.len());
    for (name, m) in headers {
        if name.is_empty() || !name.bytes().all(is_header_name_byte) {
            return Err(format!(
                "{}: {name:?} is not a valid header name",
                field(name)
            ));
        }
        let lower = name.to_ascii_lowercase();
        if out.iter().any(|(seen, _)| **seen == *lower) {
            return Err(format!(
                "{}: header {lower:?} is listed twice (names are case-insensitive)",
                field(name)
            ));
        }
        out.push((
            lower.into(),
            Matcher::compile(header_match(m), false, &|| field(name))?,
        ));
    }
    Ok(out)
}

/// Istio's header-matcher translation: `{"regex": "*"}` means "present" (`isCatchAllHeaderMatch`).
fn header_match(m: &StringMatch) -> &StringMatch {
    const PRESENT: &StringMatch = &StringMatch::Present;
    match m {
        StringMatch::Regex(re) if re == "*" => PRESENT,
        other => other,
    }
}

/// RFC 9110 token characters, plus a leading ':' for HTTP/2 pseudo-headers.
fn is_header_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:".contains(&b)
}

/// The path without its query string (and fragment, should a client send one).
fn path_only(path: &[u8]) -> &[u8] {
    match path.iter().position(|&b| b == b'?' || b == b'#') {
        Some(end) => path.get(..end).unwrap_or(path),
        None => path,
    }
}

/// The query string of a `:path` (after the first '?', without a fragment), if any.
fn query_of(path: &[u8]) -> Option<&[u8]> {
    let start = path.iter().position(|&b| b == b'?')? + 1;
    let query = path.get(start..)?;
    Some(match query.iter().position(|&b| b == b'#') {
        Some(end) => query.get(..end).unwrap_or(query),
        None => query,
    })
}

/// The value of the first parameter called `name`, both as sent (not percent-decoded).
fn first_query_value<'q>(query: &'q [u8], name: &[u8]) -> Option<&'q [u8]> {
    query.split(|&b| b == b'&').find_map(|pair| {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (pair.get(..eq)?, pair.get(eq + 1..)?),
            None => (pair, &b""[..]),
        };
        (key == name).then_some(value)
    })
}

/// A request seen through a per-request memo: each header (and the port) is fetched from the
/// host at most once however many blocks and rules look at it, and only when one does.
///
/// Create one per request and pass it to every [`MatchSet::matches_with`] call for that request.
/// The first [`INLINE_HEADERS`] headers looked at are kept inline, so a request allocates
/// nothing here unless its rules look at more distinct headers than that (the memo then
/// continues in a `Vec`).
pub struct Lookup<'a, V: RequestView> {
    req: &'a V,
    /// The first headers looked at, in order of first use (`None`: free).
    inline: [Option<Fetched<'a>>; INLINE_HEADERS],
    /// The headers looked at beyond the inline ones.
    more: Vec<Fetched<'a>>,
    port: Option<Option<u32>>,
}

/// A header's name and its (first) value as fetched, `None` when absent.
type Fetched<'a> = (&'a str, Option<Vec<u8>>);

/// How many distinct headers a [`Lookup`] keeps without allocating: the benchmark's and the
/// bookinfo-style configs look at one per request. Few, because every request builds and drops
/// the inline slots (two `Lookup`s per request in the suite: its route and its fault).
pub const INLINE_HEADERS: usize = 2;

impl<'a, V: RequestView> Lookup<'a, V> {
    /// Wraps a request; nothing is fetched yet. Refills the regex step budget
    /// ([`crate::regex::start_request`]): one `Lookup` per request and filter.
    pub fn new(req: &'a V) -> Self {
        crate::regex::start_request();
        Self {
            req,
            inline: [None, None],
            more: Vec::new(),
            port: None,
        }
    }

    /// A header's (first) value, fetched on first use. `name` must be lower-case.
    pub fn header(&mut self, name: &'a str) -> Option<&[u8]> {
        let seen = |slot: &Fetched<'_>| slot.0 == name;
        let slot = if let Some(index) = self.inline.iter().flatten().position(seen) {
            self.inline.get(index).and_then(Option::as_ref)
        } else if let Some(index) = self.more.iter().position(seen) {
            self.more.get(index)
        } else {
            let fetched = (name, self.req.header(name));
            // Slots fill in order: the first free one follows the used ones.
            match self.inline.iter_mut().find(|slot| slot.is_none()) {
                Some(free) => Some(&*free.insert(fetched)),
                None => {
                    self.more.push(fetched);
                    self.more.last()
                }
            }
        };
        slot.and_then(|(_, value)| value.as_deref())
    }

    /// The local port, fetched on first use.
    pub fn local_port(&mut self) -> Option<u32> {
        *self.port.get_or_insert_with(|| self.req.local_port())
    }
}

/// A compiled list of `HTTPMatchRequest` blocks (OR of ANDs).
#[derive(Debug, Clone, Default)]
pub struct MatchSet {
    blocks: Vec<Block>,
}

impl MatchSet {
    /// Validates and compiles Istio match blocks. Errors name the block and field, e.g.
    /// `match[1].headers["end-user"].regex: invalid regex "(": ...`.
    pub fn compile(blocks: &[HttpMatchRequest]) -> Result<Self, String> {
        let blocks = blocks
            .iter()
            .enumerate()
            .map(|(index, block)| Block::compile(index, block))
            .collect::<Result<_, _>>()?;
        Ok(Self { blocks })
    }

    /// Whether the request matches: true for an empty set, else when any block matches.
    pub fn matches(&self, req: &impl RequestView) -> bool {
        self.matches_with(&mut Lookup::new(req))
    }

    /// As [`MatchSet::matches`], sharing one per-request [`Lookup`] between several sets (e.g.
    /// the rules of a router), so a header is fetched once per request.
    pub fn matches_with<'a, V: RequestView>(&'a self, req: &mut Lookup<'a, V>) -> bool {
        self.blocks.is_empty() || self.blocks.iter().any(|block| block.matches(req))
    }

    /// Whether this set matches every request (no blocks).
    pub fn is_catch_all(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The lower-case header names (pseudo-headers included) the set may read, deduplicated.
    pub fn header_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for name in self.blocks.iter().flat_map(Block::header_names) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// Whether any block matches on the local port (so the glue must read it).
    pub fn uses_port(&self) -> bool {
        self.blocks.iter().any(|b| b.port.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MockHost;

    fn parse(json: &str) -> Vec<HttpMatchRequest> {
        serde_json::from_str(json).unwrap()
    }

    fn set(json: &str) -> MatchSet {
        MatchSet::compile(&parse(json)).unwrap()
    }

    fn get(path: &str) -> MockHost {
        MockHost::request("GET", "reviews.default", path)
    }

    #[test]
    fn string_match_json_is_istio_oneof() {
        let m: StringMatch = serde_json::from_str(r#"{"exact":"v"}"#).unwrap();
        assert_eq!(m, StringMatch::Exact("v".into()));
        let m: StringMatch = serde_json::from_str(r#"{"prefix":"/a"}"#).unwrap();
        assert_eq!(m, StringMatch::Prefix("/a".into()));
        let m: StringMatch = serde_json::from_str(r#"{"regex":"a.*"}"#).unwrap();
        assert_eq!(m, StringMatch::Regex("a.*".into()));
        let m: StringMatch = serde_json::from_str("{}").unwrap();
        assert_eq!(m, StringMatch::Present);
        for m in [
            StringMatch::Exact("x".into()),
            StringMatch::Prefix("y".into()),
            StringMatch::Regex("z+".into()),
            StringMatch::Present,
        ] {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(
                serde_json::from_str::<StringMatch>(&json).unwrap(),
                m,
                "{json}"
            );
        }
        assert_eq!(serde_json::to_string(&StringMatch::Present).unwrap(), "{}");
        let err = serde_json::from_str::<StringMatch>(r#"{"exact":"a","prefix":"b"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most one"), "{err}");
        let err = serde_json::from_str::<StringMatch>(r#"{"suffix":"b"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn match_request_json_is_istio_camel_case_and_strict() {
        let blocks = parse(
            r#"[{"name":"b","uri":{"prefix":"/r"},"ignoreUriCase":true,
                 "headers":{"end-user":{"exact":"jason"}},
                 "withoutHeaders":{"x-test":{}},
                 "queryParams":{"v":{"regex":"[0-9]+"}},
                 "method":{"exact":"GET"},"authority":{"prefix":"reviews"},"port":9080}]"#,
        );
        let b = blocks.first().unwrap();
        assert!(b.ignore_uri_case);
        assert_eq!(b.port, Some(9080));
        assert_eq!(b.without_headers.get("x-test"), Some(&StringMatch::Present));
        let round: Vec<HttpMatchRequest> =
            serde_json::from_str(&serde_json::to_string(&blocks).unwrap()).unwrap();
        assert_eq!(round, blocks);
        // Defaults are omitted when serialising, so emitted configs stay minimal.
        assert_eq!(
            serde_json::to_string(&HttpMatchRequest::default()).unwrap(),
            "{}"
        );
        let err = serde_json::from_str::<Vec<HttpMatchRequest>>(r#"[{"sourceLabels":{}}]"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `sourceLabels`"), "{err}");
    }

    #[test]
    fn empty_set_matches_everything() {
        let s = set("[]");
        assert!(s.is_catch_all());
        assert!(s.matches(&get("/anything")));
        assert!(s.matches(&MockHost::default()));
        // An empty block also matches everything (no field constrains it).
        assert!(set("[{}]").matches(&get("/x")));
    }

    #[test]
    fn uri_exact_prefix_regex_ignore_query() {
        let exact = set(r#"[{"uri":{"exact":"/productpage"}}]"#);
        assert!(exact.matches(&get("/productpage")));
        assert!(exact.matches(&get("/productpage?u=normal")));
        assert!(!exact.matches(&get("/productpage/1")));
        assert!(!exact.matches(&get("/ProductPage")));

        let prefix = set(r#"[{"uri":{"prefix":"/api/v1"}}]"#);
        assert!(prefix.matches(&get("/api/v1")));
        assert!(prefix.matches(&get("/api/v1/users?x=1")));
        assert!(!prefix.matches(&get("/api/v2")));
        assert!(
            !prefix.matches(&get("/api?/v1")),
            "the query is not part of the path"
        );

        let regex = set(r#"[{"uri":{"regex":"/reviews/[0-9]+"}}]"#);
        assert!(regex.matches(&get("/reviews/12")));
        assert!(regex.matches(&get("/reviews/12?x=y")));
        assert!(
            !regex.matches(&get("/reviews/12/x")),
            "regex is a full match"
        );
        assert!(
            !regex.matches(&get("/v/reviews/12")),
            "regex is a full match"
        );

        assert!(!exact.matches(&MockHost::default()), "no :path, no match");
    }

    #[test]
    fn ignore_uri_case_applies_to_exact_prefix_and_regex() {
        for json in [
            r#"[{"uri":{"exact":"/Login"},"ignoreUriCase":true}]"#,
            r#"[{"uri":{"prefix":"/LOG"},"ignoreUriCase":true}]"#,
            r#"[{"uri":{"regex":"/log[a-z]+"},"ignoreUriCase":true}]"#,
        ] {
            let s = set(json);
            assert!(s.matches(&get("/login")), "{json}");
            assert!(s.matches(&get("/LOGIN")), "{json}");
            assert!(!s.matches(&get("/other")), "{json}");
        }
        let exact = set(r#"[{"uri":{"exact":"/Login"},"ignoreUriCase":true}]"#);
        assert!(!exact.matches(&get("/logout")), "still an exact match");
        let sensitive = set(r#"[{"uri":{"regex":"/log[a-z]+"}}]"#);
        assert!(!sensitive.matches(&get("/LOGIN")));
        // ignoreUriCase only touches the uri, never headers.
        let header = set(r#"[{"ignoreUriCase":true,"headers":{"x":{"exact":"A"}}}]"#);
        assert!(!header.matches(&get("/").with("x", "a")));
    }

    #[test]
    fn headers_exact_prefix_regex_presence() {
        let s = set(r#"[{"headers":{"end-user":{"exact":"jason"}}}]"#);
        assert!(s.matches(&get("/").with("end-user", "jason")));
        assert!(!s.matches(&get("/").with("end-user", "Jason")));
        assert!(!s.matches(&get("/").with("end-user", "jason2")));
        assert!(!s.matches(&get("/")));

        let s = set(r#"[{"headers":{"x-version":{"prefix":"v2"}}}]"#);
        assert!(s.matches(&get("/").with("x-version", "v2.1")));
        assert!(!s.matches(&get("/").with("x-version", "v1")));

        let s = set(r#"[{"headers":{"cookie":{"regex":".*user=jason.*"}}}]"#);
        assert!(s.matches(&get("/").with("cookie", "a=b; user=jason; c=d")));
        assert!(!s.matches(&get("/").with("cookie", "user=bob")));
        let full = set(r#"[{"headers":{"x":{"regex":"ab"}}}]"#);
        assert!(
            !full.matches(&get("/").with("x", "xaby")),
            "regex is a full match"
        );
        assert!(full.matches(&get("/").with("x", "ab")));

        for json in [
            r#"[{"headers":{"x-canary":{}}}]"#,
            r#"[{"headers":{"x-canary":{"regex":"*"}}}]"#, // Istio's catch-all spelling
        ] {
            let present = set(json);
            assert!(present.matches(&get("/").with("x-canary", "")), "{json}");
            assert!(
                present.matches(&get("/").with("x-canary", "anything")),
                "{json}"
            );
            assert!(!present.matches(&get("/")), "{json}");
        }
        let absent = set(r#"[{"withoutHeaders":{"x-canary":{"regex":"*"}}}]"#);
        assert!(absent.matches(&get("/")));
        assert!(!absent.matches(&get("/").with("x-canary", "1")));
        let err = MatchSet::compile(&parse(r#"[{"uri":{"regex":"*"}}]"#)).unwrap_err();
        assert!(
            err.contains("match[0].uri.regex"),
            "only header matchers: {err}"
        );
    }

    #[test]
    fn header_names_are_lower_cased_and_checked() {
        let s = set(r#"[{"headers":{"End-User":{"exact":"jason"}}}]"#);
        assert!(s.matches(&get("/").with("end-user", "jason")));
        assert_eq!(s.header_names(), vec!["end-user"]);
        let err = MatchSet::compile(&parse(
            r#"[{"headers":{"a":{}}},{"headers":{"X-A":{},"x-a":{}}}]"#,
        ))
        .unwrap_err();
        assert!(err.starts_with("match[1].headers["), "{err}");
        assert!(err.contains("listed twice"), "{err}");
        let err = MatchSet::compile(&parse(r#"[{"headers":{"bad name":{}}}]"#)).unwrap_err();
        assert!(err.contains("not a valid header name"), "{err}");
    }

    #[test]
    fn without_headers_inverts() {
        let s = set(r#"[{"withoutHeaders":{"x-debug":{}}}]"#);
        assert!(s.matches(&get("/")));
        assert!(!s.matches(&get("/").with("x-debug", "1")));

        let s = set(r#"[{"withoutHeaders":{"end-user":{"exact":"jason"}}}]"#);
        assert!(
            s.matches(&get("/")),
            "an absent header is \"\", which is not jason"
        );
        assert!(s.matches(&get("/").with("end-user", "bob")));
        assert!(!s.matches(&get("/").with("end-user", "jason")));

        let s = set(r#"[{"withoutHeaders":{"x":{"regex":"a+"}}}]"#);
        assert!(
            s.matches(&get("/").with_bytes("x", b"a\xff")),
            "a+ misses a\\xff"
        );
        assert!(!s.matches(&get("/").with("x", "aaa")));
        let s = set(r#"[{"withoutHeaders":{"x":{"regex":"a."}}}]"#);
        assert!(
            !s.matches(&get("/").with_bytes("x", b"a\xff")),
            "a. matches a\\xff (bytes, as Envoy)"
        );
    }

    #[test]
    fn missing_headers_follow_istios_envoy_matchers() {
        // withoutHeaders: treat_missing_header_as_empty (Istio), except presence matches.
        for (m, missing_applies) in [
            (r#"{"regex":".*"}"#, false),
            (r#"{"exact":""}"#, false),
            (r#"{"prefix":""}"#, false),
            (r#"{"regex":".+"}"#, true),
            (r#"{"exact":"x"}"#, true),
            (r#"{"prefix":"x"}"#, true),
            (r#"{}"#, true),
            (r#"{"regex":"*"}"#, true),
        ] {
            let s = set(&format!(r#"[{{"withoutHeaders":{{"x-h":{m}}}}}]"#));
            assert_eq!(s.matches(&get("/")), missing_applies, "withoutHeaders {m}");
            // headers: no flag, a missing header never matches.
            let s = set(&format!(r#"[{{"headers":{{"x-h":{m}}}}}]"#));
            assert!(!s.matches(&get("/")), "headers {m}");
        }
        // queryParams: `regex: "*"` is presence, as Istio's translateQueryParamMatch.
        let s = set(r#"[{"queryParams":{"q":{"regex":"*"}}}]"#);
        assert!(s.matches(&get("/?q=")));
        assert!(s.matches(&get("/?q=1")));
        assert!(!s.matches(&get("/?p=1")));
    }

    #[test]
    fn query_params() {
        let s = set(r#"[{"queryParams":{"version":{"exact":"v2"}}}]"#);
        assert!(s.matches(&get("/p?version=v2")));
        assert!(s.matches(&get("/p?a=1&version=v2&b")));
        assert!(!s.matches(&get("/p?version=v21")));
        assert!(!s.matches(&get("/p?xversion=v2")));
        assert!(!s.matches(&get("/p")));
        assert!(
            !s.matches(&get("/p?version=v1&version=v2")),
            "first value counts"
        );
        // Not percent-decoded, as Envoy's route matcher (what Istio compiles to).
        assert!(!s.matches(&get("/p?version=v%32")));
        assert!(!s.matches(&get("/p?v%65rsion=v2")));
        assert!(set(r#"[{"queryParams":{"q":{"exact":"a%20b"}}}]"#).matches(&get("/?q=a%20b")));

        let s = set(r#"[{"queryParams":{"v":{"prefix":"ab"}}}]"#);
        assert!(s.matches(&get("/?v=abc")));
        assert!(!s.matches(&get("/?v=a")));

        let s = set(r#"[{"queryParams":{"id":{"regex":"[0-9]+"}}}]"#);
        assert!(s.matches(&get("/?id=123")));
        assert!(!s.matches(&get("/?id=1%32")));
        assert!(!s.matches(&get("/?id=12a")));

        let present = set(r#"[{"queryParams":{"debug":{}}}]"#);
        assert!(present.matches(&get("/?debug")));
        assert!(present.matches(&get("/?debug=0")));
        assert!(!present.matches(&get("/?nodebug")));

        let empty = set(r#"[{"queryParams":{"debug":{"exact":""}}}]"#);
        assert!(
            empty.matches(&get("/?debug")),
            "no '=' means an empty value"
        );
        assert!(empty.matches(&get("/?debug=")));
        assert!(!empty.matches(&get("/?debug=1")));

        let fragment = set(r#"[{"queryParams":{"q":{"exact":"a"}}}]"#);
        assert!(
            fragment.matches(&get("/?q=a#frag")),
            "a fragment is not part of the value"
        );
    }

    #[test]
    fn method_authority_port() {
        let s = set(r#"[{"method":{"exact":"POST"}}]"#);
        assert!(s.matches(&MockHost::request("POST", "h", "/")));
        assert!(!s.matches(&MockHost::request("GET", "h", "/")));
        assert!(
            !s.matches(&MockHost::request("post", "h", "/")),
            "method is case-sensitive"
        );

        let s = set(r#"[{"authority":{"regex":"reviews(\\.default)?(:[0-9]+)?"}}]"#);
        assert!(s.matches(&MockHost::request("GET", "reviews", "/")));
        assert!(s.matches(&MockHost::request("GET", "reviews.default:9080", "/")));
        assert!(!s.matches(&MockHost::request("GET", "ratings", "/")));

        let s = set(r#"[{"port":9080}]"#);
        let mut req = get("/");
        assert!(!s.matches(&req), "unknown port does not match");
        req.port = Some(9080);
        assert!(s.matches(&req));
        req.port = Some(80);
        assert!(!s.matches(&req));
        assert!(s.uses_port());
    }

    #[test]
    fn fields_and_within_block_blocks_or() {
        let s = set(
            r#"[{"uri":{"prefix":"/api"},"headers":{"end-user":{"exact":"jason"}}},
                {"method":{"exact":"DELETE"}}]"#,
        );
        assert!(s.matches(&get("/api/x").with("end-user", "jason")));
        assert!(!s.matches(&get("/api/x")), "AND: header missing");
        assert!(
            !s.matches(&get("/web").with("end-user", "jason")),
            "AND: uri differs"
        );
        assert!(
            s.matches(&MockHost::request("DELETE", "h", "/web")),
            "OR: second block"
        );
    }

    #[test]
    fn bytes_values() {
        let s = set(r#"[{"headers":{"x":{"prefix":"ab"}}}]"#);
        assert!(
            s.matches(&get("/").with_bytes("x", b"ab\xff\xfe")),
            "prefix on bytes"
        );
        let s = set(r#"[{"headers":{"x":{"regex":"."}}}]"#);
        assert!(
            s.matches(&get("/").with_bytes("x", b"\xff")),
            "a regex matches bytes, UTF-8 or not (Envoy's Latin-1 RE2)"
        );
        assert!(!s.matches(&get("/").with("x", "é")), "`é` is two bytes");
        let s = set(r#"[{"headers":{"x":{}}}]"#);
        assert!(s.matches(&get("/").with_bytes("x", b"\xff")));
    }

    #[test]
    fn compile_errors_name_block_and_field() {
        for (json, needle) in [
            (
                r#"[{},{"uri":{"regex":"("}}]"#,
                "match[1].uri.regex: invalid regex \"(\"",
            ),
            (
                r#"[{"headers":{"x":{"regex":"[a-"}}}]"#,
                "match[0].headers[\"x\"].regex",
            ),
            (
                r#"[{"withoutHeaders":{"y":{"regex":"+"}}}]"#,
                "match[0].withoutHeaders[\"y\"].regex",
            ),
            (
                r#"[{"queryParams":{"q":{"regex":"(?<"}}}]"#,
                "match[0].queryParams[\"q\"].regex",
            ),
            (r#"[{"queryParams":{"":{}}}]"#, "empty query parameter name"),
            (r#"[{"method":{"regex":")"}}]"#, "match[0].method.regex"),
            (
                r#"[{"authority":{"regex":"("}}]"#,
                "match[0].authority.regex",
            ),
            (r#"[{"port":0}]"#, "match[0].port: 0 is not a port"),
            (r#"[{"port":70000}]"#, "match[0].port: 70000"),
        ] {
            let err = MatchSet::compile(&parse(json)).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn regex_size_is_limited() {
        let huge = r#"[{"uri":{"regex":"(a{1,1000}){1,1000}"}}]"#;
        let err = MatchSet::compile(&parse(huge)).unwrap_err();
        assert!(err.contains("match[0].uri.regex"), "{err}");
        // Envoy's default RE2 program size limit (100) holds: an alternation of 10 versions
        // fits, one of 200 (which Envoy refuses too) does not.
        let versions = |n: usize| {
            let list: Vec<String> = (0..n).map(|i| format!("v{i}\\.[0-9]+")).collect();
            HttpMatchRequest {
                headers: [("x".to_string(), StringMatch::Regex(list.join("|")))].into(),
                ..HttpMatchRequest::default()
            }
        };
        let s = MatchSet::compile(&[versions(10)]).unwrap();
        assert!(s.matches(&get("/").with("x", "v9.3")));
        assert!(!s.matches(&get("/").with("x", "v10.3")));
        let err = MatchSet::compile(&[versions(200)]).unwrap_err();
        assert!(err.contains("more than 100 (Envoy's default RE2"), "{err}");
    }

    #[test]
    fn regex_work_per_request_is_budgeted() {
        use crate::regex::{REQUEST_STEP_BUDGET, take_budget_exceeded};
        // A 100-instruction program over a maximal header fits the budget once: the first
        // match runs to the end, a second one on the same request is cut short (no match,
        // counted); a new request starts with a full budget.
        let pattern = format!("(?:.*){{31}}z{}", "y".repeat(3));
        let re = compile_regex(&pattern, false).unwrap();
        assert!(re.program_len() <= crate::regex::PROGRAM_LIMIT);
        let big = format!("{}zyyy", "x".repeat(crate::regex::MAX_HEADERS_BYTES - 4));
        assert!(re.worst_case_steps(big.len()) <= REQUEST_STEP_BUDGET);
        let block = |name: &str| HttpMatchRequest {
            headers: [(name.to_string(), StringMatch::Regex(pattern.clone()))].into(),
            ..HttpMatchRequest::default()
        };
        let one = MatchSet::compile(&[block("x")]).unwrap();
        let two = MatchSet::compile(&[block("x"), block("y")]).unwrap();
        let _ = take_budget_exceeded();
        assert!(one.matches(&get("/").with("x", &big)));
        assert_eq!(take_budget_exceeded(), 0);
        // Both blocks read a maximal header on one request: the second exceeds.
        let req = get("/").with("x", &format!("{big}!")).with("y", &big);
        assert!(!two.matches(&req), "the y block ran out of budget");
        assert_eq!(take_budget_exceeded(), 1);
        // Unbudgeted, the same regex answers.
        assert!(re.is_match(big.as_bytes()));
        // A fresh request has the whole budget again.
        assert!(one.matches(&get("/").with("x", &big)));
        assert_eq!(take_budget_exceeded(), 0);
    }

    /// Counts host fetches, to show the lookup fetches each header once and only when needed.
    struct Counting {
        inner: MockHost,
        fetches: std::cell::RefCell<Vec<String>>,
    }

    impl RequestView for Counting {
        fn header(&self, name: &str) -> Option<Vec<u8>> {
            self.fetches.borrow_mut().push(name.to_string());
            self.inner.header(name)
        }
        fn header_lines(&self, name: &str) -> Vec<Vec<u8>> {
            self.fetches
                .borrow_mut()
                .push(format!("{name} (all lines)"));
            self.inner.header_lines(name)
        }
        fn local_port(&self) -> Option<u32> {
            self.fetches.borrow_mut().push("port".into());
            self.inner.local_port()
        }
    }

    #[test]
    fn lookup_fetches_lazily_and_once() {
        let a = set(
            r#"[{"headers":{"end-user":{"exact":"jason"}}},{"headers":{"end-user":{"exact":"bob"}}}]"#,
        );
        let b = set(r#"[{"uri":{"prefix":"/x"},"queryParams":{"q":{}}}]"#);
        let req = Counting {
            inner: get("/x?q").with("end-user", "alice"),
            fetches: Default::default(),
        };
        let mut lookup = Lookup::new(&req);
        assert!(!a.matches_with(&mut lookup));
        assert!(b.matches_with(&mut lookup));
        assert!(!a.matches_with(&mut lookup));
        assert_eq!(*req.fetches.borrow(), vec!["end-user", ":path"]);
    }

    #[test]
    fn lookup_beyond_its_inline_headers_still_fetches_each_once() {
        // Two more distinct headers than the lookup keeps inline, each looked at twice.
        let names: Vec<String> = (0..INLINE_HEADERS + 2).map(|i| format!("h{i}")).collect();
        let mut inner = get("/");
        for (i, name) in names.iter().enumerate() {
            inner = inner.with(name, &i.to_string());
        }
        let req = Counting {
            inner,
            fetches: Default::default(),
        };
        let mut lookup = Lookup::new(&req);
        for _ in 0..2 {
            for (i, name) in names.iter().enumerate() {
                assert_eq!(lookup.header(name), Some(i.to_string().as_bytes()));
            }
            assert_eq!(lookup.header("absent"), None);
        }
        let mut fetched = names.clone();
        fetched.push("absent".into());
        assert_eq!(*req.fetches.borrow(), fetched);
    }

    #[test]
    fn header_names_lists_what_is_read() {
        let s = set(
            r#"[{"uri":{"prefix":"/"},"headers":{"a":{}}},{"queryParams":{"q":{}},"withoutHeaders":{"b":{}},"method":{"exact":"GET"}}]"#,
        );
        assert_eq!(s.header_names(), vec![":path", "a", ":method", "b"]);
        assert!(!s.uses_port());
    }
}
