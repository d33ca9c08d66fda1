//! Stage 1: input files -> typed Istio resources, every problem reported with its position.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::diag::{Code, Diagnostic, Severity, did_you_mean};
use crate::istio::{
    DestinationRuleSpec, GatewaySpec, KNOWN_FIELDS, Metadata, Object, ServiceEntrySpec,
    UNSUPPORTED, VirtualServiceSpec, WorkloadEntrySpec,
};
use crate::yaml::{self, FieldPath, Node, Pos, Seg};

/// The API versions accepted (Istio serves all three with the same schema).
pub const API_VERSIONS: [&str; 3] = [
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];

/// One input file: its display name and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// How diagnostics name the file (the path as given).
    pub name: String,
    /// YAML text.
    pub text: String,
}

/// All input files, in the order they are read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    /// The files.
    pub files: Vec<SourceFile>,
    /// Problems found while reading the files (a file that is not UTF-8), reported by [`parse`]
    /// with the other diagnostics so the user sees them all at once.
    pub read_errors: Vec<Diagnostic>,
}

impl Inputs {
    /// Inputs from in-memory text (tests, embedding).
    pub fn from_text(name: &str, text: &str) -> Self {
        Self {
            files: vec![SourceFile {
                name: name.to_owned(),
                text: text.to_owned(),
            }],
            read_errors: Vec::new(),
        }
    }

    /// Reads files and directories (recursively: `*.yaml` and `*.yml`, sorted by path, so the
    /// output does not depend on the file system's listing order).
    pub fn read(paths: &[PathBuf]) -> Result<Self, String> {
        let mut found = Vec::new();
        for path in paths {
            if path.is_dir() {
                collect_yaml_files(path, &mut found)
                    .map_err(|e| format!("{}: cannot list directory: {e}", path.display()))?;
            } else {
                found.push(path.clone());
            }
        }
        let mut files = Vec::with_capacity(found.len());
        let mut read_errors = Vec::new();
        for path in found {
            let bytes = std::fs::read(&path)
                .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
            let name = path.display().to_string();
            let text = match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(e) => {
                    let bytes = e.into_bytes();
                    read_errors.push(not_utf8(&name, &bytes));
                    // The rest of the file is still checked (invalid bytes become U+FFFD), so
                    // one run reports every problem and other files' references still resolve.
                    String::from_utf8_lossy(&bytes).into_owned()
                }
            };
            files.push(SourceFile { name, text });
        }
        if files.is_empty() {
            return Err("no input: give YAML files or directories with -f".into());
        }
        Ok(Self { files, read_errors })
    }
}

/// The error for a file that is not UTF-8, at its first invalid byte (column in characters, as
/// YAML positions are).
fn not_utf8(name: &str, bytes: &[u8]) -> Diagnostic {
    let valid_up_to = std::str::from_utf8(bytes).map_or_else(|e| e.valid_up_to(), |s| s.len());
    let prefix = bytes.get(..valid_up_to).unwrap_or_default();
    // The prefix is valid UTF-8 by construction.
    let prefix = std::str::from_utf8(prefix).unwrap_or_default();
    let line_start = prefix.rfind('\n').map_or(0, |i| i + 1);
    let pos = Pos {
        line: prefix.matches('\n').count() + 1,
        col: prefix.get(line_start..).map_or(0, |l| l.chars().count()) + 1,
    };
    let byte = bytes.get(valid_up_to).copied().unwrap_or_default();
    Diagnostic {
        file: name.to_owned(),
        pos,
        severity: Severity::Error,
        resource: String::new(),
        path: FieldPath::root(),
        message: format!(
            "the file is not UTF-8: invalid byte 0x{byte:02x} at byte offset {valid_up_to}"
        ),
        hint: Some(
            "save the file as UTF-8 (Kubernetes and Istio read YAML as UTF-8), e.g. \
             `iconv -f latin1 -t utf-8`"
                .into(),
        ),
        code: Code::NotUtf8,
    }
}

fn collect_yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_yaml_files(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// The resource kinds sluice reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `Gateway`.
    Gateway,
    /// `VirtualService`.
    VirtualService,
    /// `DestinationRule`.
    DestinationRule,
    /// `ServiceEntry`.
    ServiceEntry,
    /// `WorkloadEntry`.
    WorkloadEntry,
}

impl Kind {
    /// All kinds, for hints.
    pub const ALL: [Kind; 5] = [
        Kind::Gateway,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
    ];

    /// The `kind:` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gateway => "Gateway",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The typed `spec` of a resource.
// One value per input document, built once: the size difference between kinds costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Spec {
    /// A Gateway.
    Gateway(GatewaySpec),
    /// A VirtualService.
    VirtualService(VirtualServiceSpec),
    /// A DestinationRule.
    DestinationRule(DestinationRuleSpec),
    /// A ServiceEntry.
    ServiceEntry(ServiceEntrySpec),
    /// A WorkloadEntry.
    WorkloadEntry(WorkloadEntrySpec),
}

/// A parsed resource, with its source tree kept so later stages can point at any field.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Input file name.
    pub file: String,
    /// The document's tree with positions.
    pub root: Node,
    /// Kind.
    pub kind: Kind,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, `default` when absent.
    pub namespace: String,
    /// Metadata (labels, annotations).
    pub metadata: Metadata,
    /// The typed spec.
    pub spec: Spec,
}

impl Resource {
    /// `Kind/name`, as diagnostics show it.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// A diagnostic about `path` in this resource.
    pub fn diag(
        &self,
        code: Code,
        severity: Severity,
        path: &FieldPath,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Diagnostic {
        Diagnostic {
            file: self.file.clone(),
            pos: self.root.locate(path),
            severity,
            resource: self.id(),
            path: path.clone(),
            message: message.into(),
            hint,
            code,
        }
    }

    /// An error about `path` in this resource.
    pub fn error(
        &self,
        code: Code,
        path: &FieldPath,
        message: impl Into<String>,
        hint: &str,
    ) -> Diagnostic {
        let hint = (!hint.is_empty()).then(|| hint.to_owned());
        self.diag(code, Severity::Error, path, message, hint)
    }
}

/// A document that was rejected (its error reported) and so is missing from the resources:
/// what could still be read of it, so that references to it are not reported again as
/// unknown hosts, subsets or gateways (follow-on errors).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejected {
    /// The resource's kind, `None` when the `kind` itself was the problem (it may be any).
    pub kind: Option<Kind>,
    /// `metadata.name` (may be empty).
    pub name: String,
    /// `spec.hosts` (ServiceEntry, VirtualService) and `spec.host` (DestinationRule); empty
    /// when unreadable, which then matches any host.
    pub hosts: Vec<String>,
}

/// Everything rejected while parsing (see [`Rejected`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejections {
    /// The rejected documents.
    pub documents: Vec<Rejected>,
    /// A file was not valid YAML: it may have defined anything.
    pub unreadable_file: bool,
}

impl Rejections {
    /// True when nothing was rejected.
    pub fn is_empty(&self) -> bool {
        self.documents.is_empty() && !self.unreadable_file
    }

    /// True when a rejected document of `kind` may be the one `matches` looks for.
    pub fn any(&self, kind: Kind, matches: impl Fn(&Rejected) -> bool) -> bool {
        self.unreadable_file
            || self
                .documents
                .iter()
                .any(|r| r.kind.is_none_or(|k| k == kind) && matches(r))
    }

    /// True when a rejected document of `kind` names `host` (or its hosts are unreadable).
    pub fn has_host(&self, kind: Kind, host: &str) -> bool {
        self.any(kind, |r| {
            r.hosts.is_empty() || r.hosts.iter().any(|h| same_host(h, host))
        })
    }
}

impl Rejected {
    /// What can be read of a document's identity without its schema.
    fn of(root: &Node) -> Self {
        let kind = root
            .get("kind")
            .and_then(Node::as_str)
            .and_then(|k| Kind::ALL.into_iter().find(|kind| kind.as_str() == k));
        let name = root
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Node::as_str)
            .unwrap_or_default()
            .to_owned();
        let spec = root.get("spec");
        let mut hosts: Vec<String> = spec
            .and_then(|s| s.get("hosts"))
            .map(|h| match &h.value {
                yaml::Value::Seq(items) => items
                    .iter()
                    .filter_map(Node::as_str)
                    .map(str::to_owned)
                    .collect(),
                _ => Vec::new(),
            })
            .unwrap_or_default();
        hosts.extend(
            spec.and_then(|s| s.get("host"))
                .and_then(Node::as_str)
                .map(str::to_owned),
        );
        Rejected { kind, name, hosts }
    }
}

/// Whether two host names may be the same service: equal, or one is the other's short name
/// (`reviews` and `reviews.default.svc.cluster.local`).
fn same_host(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    a == b
        || long
            .strip_prefix(short)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Parses every file; returns the resources that parsed and every problem found.
pub fn parse(inputs: &Inputs) -> (Vec<Resource>, Vec<Diagnostic>) {
    let (resources, diags, _) = parse_with_rejections(inputs);
    (resources, diags)
}

/// [`parse`], also returning what was rejected, for [`crate::generate`] to drop follow-on
/// errors.
pub fn parse_with_rejections(inputs: &Inputs) -> (Vec<Resource>, Vec<Diagnostic>, Rejections) {
    let mut resources = Vec::new();
    let mut rejections = Rejections::default();
    let mut diags = inputs.read_errors.clone();
    for file in &inputs.files {
        match yaml::parse_documents(&file.text) {
            Err(e) => diags.push(Diagnostic {
                file: file.name.clone(),
                pos: e.pos,
                severity: Severity::Error,
                resource: String::new(),
                path: FieldPath::root(),
                hint: Some(if e.message.contains("(the cap on") {
                    "the caps bound the builder's memory; write the repeated blocks out, or \
                     split the input into several files"
                        .into()
                } else {
                    "fix the YAML syntax (indentation, quotes, brackets)".into()
                }),
                message: format!("invalid YAML: {}", e.message),
                code: Code::YamlSyntax,
            }),
            Ok(docs) => {
                for doc in docs {
                    let reported = diags.len();
                    // Read before parse_document consumes the tree; a few lookups.
                    let identity = Rejected::of(&doc.root);
                    match parse_document(&file.name, doc.root, &mut diags) {
                        Some(r) => resources.push(r),
                        None if diags.len() > reported => rejections.documents.push(identity),
                        None => {} // an empty document
                    }
                }
            }
        }
    }
    rejections.unreadable_file = diags.iter().any(|d| d.code == Code::YamlSyntax);
    diags.sort();
    (resources, diags, rejections)
}

fn bare_error(
    code: Code,
    file: &str,
    pos: Pos,
    resource: String,
    message: String,
    hint: &str,
) -> Diagnostic {
    Diagnostic {
        code,
        file: file.to_owned(),
        pos,
        severity: Severity::Error,
        resource,
        path: FieldPath::root(),
        message,
        hint: Some(hint.to_owned()),
    }
}

fn parse_document(file: &str, root: Node, diags: &mut Vec<Diagnostic>) -> Option<Resource> {
    if root.value == yaml::Value::Null {
        return None; // an empty document (e.g. a trailing `---`) is fine
    }
    if !matches!(root.value, yaml::Value::Map(_)) {
        diags.push(bare_error(
            Code::NotAResource,
            file,
            root.pos,
            String::new(),
            format!(
                "expected a resource (a mapping), found a {}",
                root.type_name()
            ),
            "each YAML document must be one Istio resource with apiVersion, kind, metadata, spec",
        ));
        return None;
    }
    let kind_text = root.get("kind").and_then(Node::as_str).unwrap_or("");
    let name = root
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Node::as_str)
        .unwrap_or("")
        .to_owned();
    let label = if kind_text.is_empty() {
        format!("<missing kind>/{name}")
    } else {
        format!("{kind_text}/{name}")
    };
    let Some(kind) = Kind::ALL.into_iter().find(|k| k.as_str() == kind_text) else {
        let kind_node = root.get("kind");
        let pos = kind_node.map_or(root.pos, |n| n.pos);
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        let supported = format!(
            "sluice reads {} (apiVersion {})",
            known.join(", "),
            API_VERSIONS.join(", ")
        );
        let hint = match did_you_mean(kind_text, known.iter().copied()) {
            Some(s) => format!("did you mean `{s}`? {supported}"),
            None => supported,
        };
        let message = match kind_node {
            None => "the resource has no `kind`".to_owned(),
            Some(n) if n.as_str().is_none() => {
                format!(
                    "expected the kind's name (a string), found a {}",
                    n.type_name()
                )
            }
            Some(_) => format!("`{kind_text}` is not a kind sluice reads"),
        };
        diags.push(Diagnostic {
            file: file.to_owned(),
            pos,
            severity: Severity::Error,
            resource: label,
            path: FieldPath::root().key("kind"),
            message,
            hint: Some(hint),
            code: Code::UnknownKind,
        });
        return None;
    };
    let api_version = root.get("apiVersion").and_then(Node::as_str).unwrap_or("");
    if !API_VERSIONS.contains(&api_version) {
        let pos = root.get("apiVersion").map_or(root.pos, |n| n.pos);
        diags.push(Diagnostic {
            file: file.to_owned(),
            pos,
            severity: Severity::Error,
            resource: label.clone(),
            path: FieldPath::root().key("apiVersion"),
            message: format!("unsupported apiVersion {api_version:?}"),
            hint: Some(format!("use one of {}", API_VERSIONS.join(", "))),
            code: Code::UnsupportedApiVersion,
        });
        return None;
    }

    let json = root.to_json();
    let mut ignored = Vec::new();
    let parsed = match kind {
        Kind::Gateway => typed::<GatewaySpec>(&json, &mut ignored).map(|o| o.map(Spec::Gateway)),
        Kind::VirtualService => {
            typed::<VirtualServiceSpec>(&json, &mut ignored).map(|o| o.map(Spec::VirtualService))
        }
        Kind::DestinationRule => {
            typed::<DestinationRuleSpec>(&json, &mut ignored).map(|o| o.map(Spec::DestinationRule))
        }
        Kind::ServiceEntry => {
            typed::<ServiceEntrySpec>(&json, &mut ignored).map(|o| o.map(Spec::ServiceEntry))
        }
        Kind::WorkloadEntry => {
            typed::<WorkloadEntrySpec>(&json, &mut ignored).map(|o| o.map(Spec::WorkloadEntry))
        }
    };
    let resource_diag = |code: Code, path: &FieldPath, message: String, hint: String| Diagnostic {
        code,
        file: file.to_owned(),
        pos: root.locate(path),
        severity: Severity::Error,
        resource: label.clone(),
        path: path.clone(),
        message,
        hint: Some(hint),
    };
    for path in &ignored {
        let field = match path.0.last() {
            Some(Seg::Key(k)) => k.as_str(),
            _ => "",
        };
        if is_unsupported(path) {
            diags.push(resource_diag(
                Code::UnsupportedField,
                path,
                format!("`{field}` is not supported yet by sluice"),
                "remove it; sluice refuses settings it would otherwise drop silently".into(),
            ));
        } else {
            let hint = match did_you_mean(field, KNOWN_FIELDS.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "check the field name against Istio's networking.istio.io API".into(),
            };
            diags.push(resource_diag(
                Code::UnknownField,
                path,
                format!("unknown field `{field}`"),
                hint,
            ));
        }
    }
    let object = match parsed {
        Ok(o) => o,
        Err((path, message)) => {
            diags.push(resource_diag(
                Code::WrongType,
                &path,
                message,
                "fix the value's type to match Istio's schema".into(),
            ));
            return None;
        }
    };
    if name.is_empty() {
        diags.push(resource_diag(
            Code::MissingName,
            &FieldPath::root().key("metadata"),
            "missing `metadata.name`".into(),
            "every resource needs a name".into(),
        ));
        return None;
    }
    let namespace = object
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    Some(Resource {
        file: file.to_owned(),
        root,
        kind,
        name,
        namespace,
        metadata: object.metadata,
        spec: object.spec,
    })
}

struct Typed<S> {
    metadata: Metadata,
    spec: S,
}

impl<S> Typed<S> {
    fn map<T>(self, f: impl FnOnce(S) -> T) -> Typed<T> {
        Typed {
            metadata: self.metadata,
            spec: f(self.spec),
        }
    }
}

/// Deserializes one document: the first type error with its path, and every ignored key.
fn typed<S: DeserializeOwned>(
    json: &serde_json::Value,
    ignored: &mut Vec<FieldPath>,
) -> Result<Typed<S>, (FieldPath, String)> {
    let mut record = |p: serde_ignored::Path<'_>| ignored.push(from_ignored(&p));
    let de = serde_ignored::Deserializer::new(json, &mut record);
    match serde_path_to_error::deserialize::<_, Object<S>>(de) {
        Ok(o) => Ok(Typed {
            metadata: o.metadata,
            spec: o.spec,
        }),
        Err(e) => {
            let path = FieldPath(
                e.path()
                    .iter()
                    .filter_map(|s| match s {
                        serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                        serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                        _ => None,
                    })
                    .collect(),
            );
            Err((path, friendly_type_error(&e.into_inner().to_string())))
        }
    }
}

/// serde names Rust types (`expected u32`); say what a YAML author writes instead.
pub(crate) fn friendly_type_error(message: &str) -> String {
    [
        ("expected i64", "expected an integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected a mapping"),
        ("expected struct ", "expected a mapping: "),
    ]
    .iter()
    .fold(message.to_owned(), |m, (from, to)| m.replace(from, to))
}

fn from_ignored(path: &serde_ignored::Path<'_>) -> FieldPath {
    let mut segs = Vec::new();
    let mut cur = path;
    loop {
        match cur {
            serde_ignored::Path::Root => break,
            serde_ignored::Path::Seq { parent, index } => {
                segs.push(Seg::Index(*index));
                cur = parent;
            }
            serde_ignored::Path::Map { parent, key } => {
                segs.push(Seg::Key(key.clone()));
                cur = parent;
            }
            serde_ignored::Path::Some { parent }
            | serde_ignored::Path::NewtypeStruct { parent }
            | serde_ignored::Path::NewtypeVariant { parent } => cur = parent,
        }
    }
    segs.reverse();
    FieldPath(segs)
}

fn is_unsupported(path: &FieldPath) -> bool {
    UNSUPPORTED.iter().any(|pattern| {
        let (anywhere, pattern) = match pattern.strip_prefix("**.") {
            Some(rest) => (true, rest),
            None => (false, *pattern),
        };
        let parts: Vec<&str> = pattern.split('.').collect();
        let segs = match path.0.len().checked_sub(parts.len()) {
            Some(0) => &path.0[..],
            Some(skip) if anywhere => &path.0[skip..],
            _ => return false,
        };
        parts.iter().zip(segs).all(|(p, s)| match s {
            Seg::Key(k) => *p == "*" || p == k,
            Seg::Index(_) => *p == "*",
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> (Vec<Resource>, Vec<String>) {
        let (r, d) = parse(&Inputs::from_text("t.yaml", text));
        (r, d.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn parses_a_virtual_service() {
        let (r, d) = run(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n",
        );
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].namespace, "default");
    }

    #[test]
    fn every_unknown_field_is_reported() {
        let (_, d) = run(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [a]\n  http:\n  - mach: {}\n    rout: []\n    delegate: {}\n",
        );
        assert_eq!(d.len(), 3, "{d:#?}");
        assert!(d[0].starts_with("t.yaml:7:5: error[SL106]: VirtualService/a: spec.http[0].mach: unknown field `mach`\n  hint: did you mean `match`?"), "{}", d[0]);
        assert!(d[2].contains("`delegate` is not supported yet"), "{}", d[2]);
    }

    #[test]
    fn type_error_has_path_and_position() {
        let (_, d) = run(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a}\nspec:\n  hosts: [a]\n  ports:\n  - number: eighty\n",
        );
        assert_eq!(d.len(), 1, "{d:#?}");
        assert!(
            d[0].starts_with(
                "t.yaml:7:5: error[SL107]: ServiceEntry/a: spec.ports[0].number: invalid type"
            ),
            "{}",
            d[0]
        );
    }

    #[test]
    fn unknown_kind_and_version() {
        let (_, d) = run(
            "apiVersion: networking.istio.io/v1\nkind: VirtualServise\nmetadata: {name: a}\nspec: {}\n---\napiVersion: networking.istio.io/v2\nkind: Gateway\nmetadata: {name: g}\nspec: {}\n",
        );
        assert_eq!(d.len(), 2, "{d:#?}");
        assert!(d[0].contains("did you mean `VirtualService`?"), "{}", d[0]);
        assert!(
            d[1].starts_with(
                "t.yaml:6:13: error[SL105]: Gateway/g: apiVersion: unsupported apiVersion"
            ),
            "{}",
            d[1]
        );
    }
}
