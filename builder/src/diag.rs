//! Diagnostics: every problem found in the input, with where it is and how to fix it.

use std::fmt;

use crate::position::{FieldPath, Pos};

/// How bad a diagnostic is. Errors stop generation; warnings are printed and generation goes on.
#[derive(serde::Serialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Generation fails, nothing is written.
    Error,
    /// Something the user should know (e.g. a setting this target cannot express).
    Warning,
    /// Information only, e.g. a Kubernetes resource sluice passes over (never fails a run).
    Note,
}

/// A diagnostic's stable code, e.g. `SL302`. Codes never change meaning once released, so
/// scripts, CI annotations (SARIF `ruleId`) and docs/DIAGNOSTICS.md can rely on them.
///
/// Ranges: `SL1xx` input and YAML, `SL2xx` checks of one resource's fields, `SL3xx`
/// cross-references between resources, `SL4xx` the target and emission, `SL5xx` Istio features
/// sluice does not support, `SL8xx` notes, `SL9xx` warnings. Each variant's doc line is its one-line meaning;
/// docs/DIAGNOSTICS.md has the table (a test keeps the two in step). To add a code: add a
/// variant with the next free number of its range, to [`Code::ALL`], and a row to the table.
#[derive(serde::Serialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Code {
    /// The file is not valid YAML.
    YamlSyntax,
    /// The file is not UTF-8.
    NotUtf8,
    /// A YAML document is not a mapping (not a resource).
    NotAResource,
    /// The `kind` is missing or not one sluice reads.
    UnknownKind,
    /// The `apiVersion` is not a networking.istio.io version sluice reads.
    UnsupportedApiVersion,
    /// A field Istio's schema does not have (usually a typo).
    UnknownField,
    /// A field's value has the wrong type.
    WrongType,
    /// The resource has no `metadata.name`.
    MissingName,
    /// The input defines nothing to route: no listener would be generated.
    NothingToRoute,
    /// A field is missing, malformed, out of range, or conflicts with another field.
    InvalidField,
    /// A route's weights are invalid (negative, or all zero).
    InvalidWeights,
    /// A rule's redirect, rewrite, direct response, mirror, CORS, statPrefix or a health check
    /// is invalid.
    InvalidHttpAction,
    /// A `tcp` or `tls` route, or a TLS server or passthrough setting, is invalid.
    InvalidTcpTls,
    /// A DestinationRule `localityLbSetting` or the `--locality` is invalid.
    InvalidLocality,
    /// A sluice annotation (canary, fault, breaker, ...) is invalid.
    InvalidAnnotation,
    /// A `sluice.dev/debug` annotation is invalid: its header, its secret file (unreadable,
    /// too short) or its trusted networks, or neither a secret nor networks.
    InvalidDebug,
    /// A host no ServiceEntry defines.
    UnknownHost,
    /// A subset no DestinationRule of the host defines.
    UnknownSubset,
    /// A port the host does not have, or a host with several ports and no port given.
    UnknownPort,
    /// A gateway that no Gateway resource defines.
    UnknownGateway,
    /// Two resources claim the same name, host, port or route.
    Conflict,
    /// A VirtualService host that none of its gateways' servers exposes.
    HostNotExposed,
    /// A TLS secret (`credentialName`) that cannot be read.
    MissingCredential,
    /// A host whose endpoints are missing or cannot serve the route.
    NoEndpoints,
    /// Generating the target's files failed (e.g. a wasm module cannot be read).
    EmitFailed,
    /// The chosen target cannot express the setting.
    TargetCannotExpress,
    /// An Istio field sluice does not support yet.
    UnsupportedField,
    /// An Istio value (protocol, resolution, mode, ...) sluice does not support yet.
    UnsupportedValue,
    /// A setting that has no effect: it is ignored or not applied.
    Ignored,
    /// A rule, block or route that can never apply.
    Unreachable,
    /// A route's weights do not sum to 100 (they are relative shares).
    WeightsNot100,
    /// A rule that can never match: an earlier rule takes every request it would.
    ShadowedRule,
    /// A Kubernetes resource sluice does not read (a Deployment, a ServiceAccount...) was
    /// passed over (a note).
    SkippedResource,
    /// A host known only from a Kubernetes Service has no endpoints for a target that needs
    /// them (envoy, compose).
    NeedsEndpoints,
}

impl Code {
    /// Every code, in table order.
    pub const ALL: [Code; 34] = [
        Code::YamlSyntax,
        Code::NotUtf8,
        Code::NotAResource,
        Code::UnknownKind,
        Code::UnsupportedApiVersion,
        Code::UnknownField,
        Code::WrongType,
        Code::MissingName,
        Code::NothingToRoute,
        Code::InvalidField,
        Code::InvalidWeights,
        Code::InvalidHttpAction,
        Code::InvalidTcpTls,
        Code::InvalidLocality,
        Code::InvalidAnnotation,
        Code::InvalidDebug,
        Code::UnknownHost,
        Code::UnknownSubset,
        Code::UnknownPort,
        Code::UnknownGateway,
        Code::Conflict,
        Code::HostNotExposed,
        Code::MissingCredential,
        Code::NoEndpoints,
        Code::EmitFailed,
        Code::TargetCannotExpress,
        Code::UnsupportedField,
        Code::UnsupportedValue,
        Code::Ignored,
        Code::Unreachable,
        Code::WeightsNot100,
        Code::ShadowedRule,
        Code::SkippedResource,
        Code::NeedsEndpoints,
    ];

    /// The code as printed, e.g. `SL302`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::YamlSyntax => "SL101",
            Code::NotUtf8 => "SL102",
            Code::NotAResource => "SL103",
            Code::UnknownKind => "SL104",
            Code::UnsupportedApiVersion => "SL105",
            Code::UnknownField => "SL106",
            Code::WrongType => "SL107",
            Code::MissingName => "SL108",
            Code::NothingToRoute => "SL109",
            Code::InvalidField => "SL201",
            Code::InvalidWeights => "SL202",
            Code::InvalidHttpAction => "SL203",
            Code::InvalidTcpTls => "SL204",
            Code::InvalidLocality => "SL205",
            Code::InvalidAnnotation => "SL206",
            Code::InvalidDebug => "SL207",
            Code::UnknownHost => "SL301",
            Code::UnknownSubset => "SL302",
            Code::UnknownPort => "SL303",
            Code::UnknownGateway => "SL304",
            Code::Conflict => "SL305",
            Code::HostNotExposed => "SL306",
            Code::MissingCredential => "SL307",
            Code::NoEndpoints => "SL308",
            Code::EmitFailed => "SL401",
            Code::TargetCannotExpress => "SL402",
            Code::UnsupportedField => "SL501",
            Code::UnsupportedValue => "SL502",
            Code::Ignored => "SL901",
            Code::Unreachable => "SL902",
            Code::WeightsNot100 => "SL903",
            Code::ShadowedRule => "SL904",
            Code::SkippedResource => "SL801",
            Code::NeedsEndpoints => "SL403",
        }
    }

    /// A short description (SARIF `shortDescription`; the doc line of the variant).
    pub fn summary(self) -> &'static str {
        match self {
            Code::YamlSyntax => "The file is not valid YAML.",
            Code::NotUtf8 => "The file is not UTF-8.",
            Code::NotAResource => "A YAML document is not a mapping (not a resource).",
            Code::UnknownKind => "The kind is missing or not one sluice reads.",
            Code::UnsupportedApiVersion => "The apiVersion is not one sluice reads.",
            Code::UnknownField => "A field Istio's schema does not have.",
            Code::WrongType => "A field's value has the wrong type.",
            Code::MissingName => "The resource has no metadata.name.",
            Code::NothingToRoute => "The input defines nothing to route.",
            Code::InvalidField => "A field is missing, malformed, out of range or conflicting.",
            Code::InvalidWeights => "A route's weights are invalid.",
            Code::InvalidHttpAction => {
                "A redirect, rewrite, direct response, mirror, CORS, statPrefix or health check is invalid."
            }
            Code::InvalidTcpTls => "A tcp or tls route or a TLS setting is invalid.",
            Code::InvalidLocality => "A localityLbSetting or locality is invalid.",
            Code::InvalidAnnotation => "A sluice annotation is invalid.",
            Code::InvalidDebug => "A sluice.dev/debug annotation is invalid.",
            Code::UnknownHost => "A host no ServiceEntry or Kubernetes Service defines.",
            Code::UnknownSubset => "A subset no DestinationRule defines.",
            Code::UnknownPort => "A port the host does not have, or an ambiguous port.",
            Code::UnknownGateway => "A gateway no Gateway resource defines.",
            Code::Conflict => "Two resources claim the same name, host, port or route.",
            Code::HostNotExposed => "A host none of the VirtualService's gateways exposes.",
            Code::MissingCredential => "A TLS secret that cannot be read.",
            Code::NoEndpoints => "A host whose endpoints are missing or unusable.",
            Code::EmitFailed => "Generating the target's files failed.",
            Code::TargetCannotExpress => "The chosen target cannot express the setting.",
            Code::UnsupportedField => "An Istio field sluice does not support yet.",
            Code::UnsupportedValue => "An Istio value sluice does not support yet.",
            Code::Ignored => "A setting that has no effect.",
            Code::Unreachable => "A rule, block or route that can never apply.",
            Code::WeightsNot100 => "A route's weights do not sum to 100.",
            Code::ShadowedRule => "A rule an earlier rule shadows: it can never match.",
            Code::SkippedResource => "A Kubernetes resource sluice does not read was skipped.",
            Code::NeedsEndpoints => "A Kubernetes Service host has no endpoints for this target.",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem, rendered as
/// `file:line:col: error[SL301]: Kind/name: field.path: message` plus an indented `hint:` line.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// The input file (as given on the command line or to [`crate::Inputs`]).
    pub file: String,
    /// Position in that file.
    pub pos: Pos,
    /// Error or warning.
    pub severity: Severity,
    /// `Kind/name` of the resource, or empty when the problem precedes resources (YAML syntax).
    pub resource: String,
    /// Field path inside the resource, e.g. `spec.http[0].route[0].destination.subset`.
    pub path: FieldPath,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
    /// The stable code (see [`Code`]); last, so sorting stays by file and position.
    pub code: Code,
}

impl Severity {
    /// `error` or `warning`, as printed and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        }
    }
}

/// ANSI styles for [`Diagnostic::render`]; empty strings when colour is off.
struct Style {
    bold: &'static str,
    level: &'static str,
    reset: &'static str,
}

impl Style {
    fn new(color: bool, severity: Severity) -> Self {
        if !color {
            return Self {
                bold: "",
                level: "",
                reset: "",
            };
        }
        Self {
            bold: "\x1b[1m",
            level: match severity {
                Severity::Error => "\x1b[1;31m",
                Severity::Warning => "\x1b[1;33m",
                Severity::Note => "\x1b[1;36m",
            },
            reset: "\x1b[0m",
        }
    }
}

impl Diagnostic {
    /// The text form, with ANSI colour when `color` (a terminal): the level red (error) or
    /// yellow (warning), position and code bold. Without colour it equals `to_string()`.
    pub fn render(&self, color: bool) -> String {
        let Style { bold, level, reset } = Style::new(color, self.severity);
        // A diagnostic about no input position (a wasm module, a flag) names only its subject.
        let place = if self.pos.line == 0 {
            self.file.clone()
        } else {
            format!("{}:{}", self.file, self.pos)
        };
        let mut out = format!(
            "{bold}{place}:{reset} {level}{}{reset}[{bold}{}{reset}]: ",
            self.severity.as_str(),
            self.code
        );
        if !self.resource.is_empty() {
            out.push_str(&self.resource);
            out.push_str(": ");
        }
        if !self.path.is_root() {
            out.push_str(&self.path.to_string());
            out.push_str(": ");
        }
        out.push_str(&self.message);
        if let Some(hint) = &self.hint {
            out.push_str(&format!("\n  {bold}hint:{reset} {hint}"));
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

/// Where in the input something comes from: the file, the position, the resource and the path
/// of the field. Resolved things carry it (a model rule, an emission error) so a problem found
/// after the checks still names the field at fault.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Origin {
    /// Input file name.
    pub file: String,
    /// Position of the field in the file.
    pub pos: Pos,
    /// `Kind/name` of the resource.
    pub resource: String,
    /// The field.
    pub path: FieldPath,
}

/// All diagnostics of one run, sorted by file and position.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// True when at least one diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    /// Only the errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Error)
    }

    /// Only the warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Warning)
    }

    pub(crate) fn sort(&mut self) {
        self.0.sort();
        self.0.dedup();
    }
}

impl Diagnostics {
    /// `2 errors, 1 warning` (warnings left out when there are none and `always_warnings` is
    /// false, so the common `1 error` stays short).
    pub fn counts(&self, always_warnings: bool) -> String {
        let errors = self.errors().count();
        let warnings = self.warnings().count();
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        if warnings == 0 && !always_warnings {
            plural(errors, "error")
        } else {
            format!(
                "{}, {}",
                plural(errors, "error"),
                plural(warnings, "warning")
            )
        }
    }

    /// Every diagnostic in text form (see [`Diagnostic::render`]), one per line and its hint.
    pub fn render(&self, color: bool) -> String {
        let mut out = String::new();
        for d in &self.0 {
            out.push_str(&d.render(color));
            out.push('\n');
        }
        out
    }
}

/// Every diagnostic, then, when there are errors, `N errors[, M warnings]; nothing was written`.
impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))?;
        if self.has_errors() {
            writeln!(f, "{}; nothing was written", self.counts(false))?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Levenshtein distance, for "did you mean" hints. Inputs are short field and resource names.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev_diag = row.first().copied().unwrap_or(0);
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let above = row.get(j + 1).copied().unwrap_or(usize::MAX);
            let left = row.get(j).copied().unwrap_or(usize::MAX);
            let cost = usize::from(ca != *cb);
            let value = (prev_diag + cost).min(above + 1).min(left + 1);
            prev_diag = above;
            if let Some(cell) = row.get_mut(j + 1) {
                *cell = value;
            }
        }
    }
    row.last().copied().unwrap_or(0)
}

/// The candidate closest to `word`, if close enough to be a plausible typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1) && *d > 0 || (*d == 0 && *c != word))
        .min()
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance() {
        assert_eq!(edit_distance("mach", "match"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("weight", "weight"), 0);
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("mach", ["match", "route"]), Some("match"));
        assert_eq!(
            did_you_mean("ignoreURICase", ["ignoreUriCase"]),
            Some("ignoreUriCase")
        );
        assert_eq!(did_you_mean("zzzzzz", ["match", "route"]), None);
    }

    #[test]
    fn rendering() {
        let d = Diagnostic {
            file: "a.yaml".into(),
            pos: Pos { line: 3, col: 5 },
            severity: Severity::Error,
            resource: "VirtualService/reviews".into(),
            path: FieldPath::root().key("spec").key("http").index(0),
            message: "bad".into(),
            hint: Some("fix it".into()),
            code: Code::UnknownSubset,
        };
        assert_eq!(
            d.to_string(),
            "a.yaml:3:5: error[SL302]: VirtualService/reviews: spec.http[0]: bad\n  hint: fix it"
        );
        let colored = d.render(true);
        assert!(colored.contains("\x1b[1;31merror\x1b[0m"), "{colored:?}");
        assert!(colored.contains("[\x1b[1mSL302\x1b[0m]"), "{colored:?}");
    }

    /// docs/DIAGNOSTICS.md lists every code exactly once, and nothing else, with the severity
    /// of its range.
    #[test]
    fn every_code_is_documented_and_every_documented_code_exists() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/DIAGNOSTICS.md"),
        )
        .expect("docs/DIAGNOSTICS.md");
        let mut documented = Vec::new();
        for line in doc.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if let [_, code, severity, ..] = cells[..]
                && code.starts_with("SL")
            {
                documented.push((code.to_owned(), severity.to_owned()));
            }
        }
        let known: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        for (code, severity) in &documented {
            assert!(
                known.contains(&code.as_str()),
                "{code} is documented but not a Code"
            );
            let expected = if code.starts_with("SL9") {
                "warning"
            } else if code.starts_with("SL8") {
                "note"
            } else {
                "error"
            };
            assert_eq!(severity, expected, "{code}'s severity");
        }
        for code in known {
            let n = documented.iter().filter(|(c, _)| c == code).count();
            assert_eq!(n, 1, "{code} must have one row in docs/DIAGNOSTICS.md");
        }
    }

    #[test]
    fn codes_are_unique_and_in_their_ranges() {
        let mut seen = std::collections::BTreeSet::new();
        for code in Code::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} used twice");
            assert!(text.len() == 5 && text.starts_with("SL"), "{text}");
        }
        for code in [
            Code::Ignored,
            Code::Unreachable,
            Code::WeightsNot100,
            Code::ShadowedRule,
        ] {
            assert!(code.as_str().starts_with("SL9"), "warnings are SL9xx");
        }
    }
}
