//! Checks of sluice's own input ([`crate::input::annotations`]): the `sluice.dev/*`
//! annotations, the seeds' legacy `trafficPolicy.circuitBreaker` block, and Istio's `fault` as
//! the fault filter's rule.
//!
//! Every value is validated by the filters' own compile step (`CompiledCanary`, `FaultPlan`,
//! `breaker::Policy`), so the builder refuses exactly what a filter would refuse; the filter's
//! message path (`schedule.steps[1].hold: ...`) is mapped back to the annotation's real
//! `file:line:col` (the block scalar's lines offset by the annotation's position in the file).
//!
//! [`check`] reports problems (it needs the source text for positions); the model reads values
//! through [`crate::model::settings`] from the same trees, parsed once with the resource
//! ([`crate::input::annotations::SluiceAnnotations`]), and never reports.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use sluice_core::breaker::Policy;
use sluice_core::canary::{CanaryConfig, CompiledCanary, Member, Split};
use sluice_core::fault::config::FaultConfig;
use sluice_core::fault::plan::FaultPlan;

use crate::diag::{Code, Diagnostic, Severity, did_you_mean};
use crate::input::annotations::{
    BREAKER_ANNOTATION, BreakerFields, CANARY_ANNOTATION, CanaryRoute, DEBUG_ANNOTATION,
    DRAINING_ANNOTATION, DebugSettings, FAULT_ANNOTATION, FaultExtras, OUTCOMES, PROBE_ANNOTATION,
    annotation_tree, debug_secret_path, fault_rule, legacy_breaker, outcome, read_debug_secret,
    route_index,
};
use crate::input::istio::{DestinationRuleSpec, VirtualServiceSpec};
use crate::input::parse::{Inputs, Resource, Spec};
use crate::input::probe::ProbeInput;
use crate::input::yaml::{FieldPath, Node, Pos, Seg, Value};

/// Where an annotation's YAML sits in its file, to turn a position inside the value into one
/// in the file.
struct Embedded<'a> {
    r: &'a Resource,
    key: &'static str,
    /// Position of the annotation's key (the fallback).
    key_pos: Pos,
    origin: Origin,
}

enum Origin {
    /// A block scalar (`|`, `>`): value line `n` is file line `first_line + n - 1`, indented by
    /// `indent` columns.
    Block { first_line: usize, indent: usize },
    /// A one-line scalar starting at this column (after its opening quote).
    Inline { line: usize, col: usize },
    /// Anything else: point at the value itself.
    Value(Pos),
}

impl Embedded<'_> {
    fn new<'a>(r: &'a Resource, key: &'static str, sources: &BTreeMap<&str, &str>) -> Embedded<'a> {
        let annotations = FieldPath::root().key("metadata").key("annotations");
        let key_pos = r.root.locate(&annotations.key(key));
        let value_pos = r
            .root
            .get("metadata")
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(key))
            .map_or(key_pos, |n| n.pos);
        // Only resources that carry the annotation need the file's lines: splitting the whole
        // file for every resource made a large mesh quadratic (8,000 services: minutes).
        let lines: Vec<&str> = sources
            .get(r.file.as_str())
            .filter(|_| r.metadata.annotations.contains_key(key))
            .map(|t| t.lines().collect())
            .unwrap_or_default();
        let line_at = |n: usize| lines.get(n.wrapping_sub(1)).copied().unwrap_or("");
        let start = line_at(value_pos.line)
            .get(value_pos.col.saturating_sub(1)..)
            .unwrap_or("");
        // yaml-rust2 places a block scalar's node at its first content line; the line before
        // it then ends with the block indicator (`key: |`, `key: |-`, `key: >+2`).
        let after_indicator = line_at(value_pos.line.wrapping_sub(1))
            .trim_end()
            .rsplit(' ')
            .next()
            .is_some_and(|last| {
                last.starts_with(['|', '>'])
                    && last[1..]
                        .chars()
                        .all(|c| matches!(c, '-' | '+' | '0'..='9'))
            });
        let origin = if after_indicator {
            Origin::Block {
                first_line: value_pos.line,
                indent: value_pos.col.saturating_sub(1),
            }
        } else if start.starts_with(['|', '>']) {
            let first_line = value_pos.line + 1;
            let indent = (first_line..=lines.len())
                .map(line_at)
                .find(|l| !l.trim().is_empty())
                .map_or(0, |l| l.len() - l.trim_start_matches(' ').len());
            Origin::Block { first_line, indent }
        } else if start.starts_with(['\'', '"']) {
            Origin::Inline {
                line: value_pos.line,
                col: value_pos.col + 1,
            }
        } else if !start.is_empty() {
            Origin::Inline {
                line: value_pos.line,
                col: value_pos.col,
            }
        } else {
            Origin::Value(value_pos)
        };
        Embedded {
            r,
            key,
            key_pos,
            origin,
        }
    }

    /// The file position of `inner`, a position inside the annotation's value.
    fn file_pos(&self, inner: Pos) -> Pos {
        match self.origin {
            Origin::Block { first_line, indent } => Pos {
                line: first_line + inner.line.saturating_sub(1),
                col: indent + inner.col,
            },
            Origin::Inline { line, col } if inner.line <= 1 => Pos {
                line,
                col: col + inner.col.saturating_sub(1),
            },
            Origin::Inline { line, col } => Pos { line, col },
            Origin::Value(pos) => pos,
        }
    }

    /// `metadata.annotations["<key>"]` followed by `path`.
    fn path(&self, path: &FieldPath) -> FieldPath {
        let mut segs = FieldPath::root()
            .key("metadata")
            .key(&format!("annotations[{:?}]", self.key))
            .0;
        segs.extend(path.0.iter().cloned());
        FieldPath(segs)
    }

    fn diag(
        &self,
        code: Code,
        severity: Severity,
        tree: Option<&Node>,
        path: &FieldPath,
        message: impl Into<String>,
        hint: &str,
    ) -> Diagnostic {
        let pos = tree.map_or(self.key_pos, |t| self.file_pos(t.locate(path)));
        Diagnostic {
            file: self.r.file.clone(),
            pos,
            severity,
            resource: self.r.id(),
            path: self.path(path),
            message: message.into(),
            hint: (!hint.is_empty()).then(|| hint.to_owned()),
            code,
        }
    }

    fn error(
        &self,
        code: Code,
        tree: &Node,
        path: &FieldPath,
        message: impl Into<String>,
        hint: &str,
    ) -> Diagnostic {
        self.diag(code, Severity::Error, Some(tree), path, message, hint)
    }

    /// Parses the annotation's YAML; a syntax error is reported at its real position.
    fn tree(&self, out: &mut Vec<Diagnostic>) -> Option<Node> {
        match annotation_tree(self.r, self.key)? {
            Ok(tree) => Some(tree.clone()),
            Err(e) => {
                let mut d = self.diag(Code::InvalidAnnotation, Severity::Error,
                    None,
                    &FieldPath::root(),
                    format!("invalid YAML in the annotation: {}", e.message),
                    "the value is YAML: write it as a block scalar (`|`) with consistent indentation",
                );
                d.pos = self.file_pos(e.pos);
                out.push(d);
                None
            }
        }
    }

    /// Deserializes `node` (at `path` in the tree) as `T`; every type error and unknown field
    /// is reported at its position.
    ///
    /// serde stops at the first problem, so a mapping is first checked one entry at a time
    /// (every field of the settings structs is optional, so a one-entry mapping is a complete
    /// value): the user sees all bad fields of the annotation in one run, as elsewhere.
    fn typed<T: DeserializeOwned>(
        &self,
        tree: &Node,
        path: &FieldPath,
        node: &Node,
        out: &mut Vec<Diagnostic>,
    ) -> Option<T> {
        if let Value::Map(entries) = &node.value
            && entries.len() > 1
        {
            let before = out.len();
            for entry in entries {
                let one = Node {
                    pos: node.pos,
                    value: Value::Map(vec![entry.clone()]),
                };
                let _ = self.typed_whole::<T>(tree, path, &one, out);
            }
            if out.len() > before {
                return None;
            }
        }
        self.typed_whole(tree, path, node, out)
    }

    /// Deserializes `node` as `T`; the first error (serde's) is reported.
    fn typed_whole<T: DeserializeOwned>(
        &self,
        tree: &Node,
        path: &FieldPath,
        node: &Node,
        out: &mut Vec<Diagnostic>,
    ) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(node.to_json()) {
            Ok(v) => Some(v),
            Err(e) => {
                let mut at = path.clone();
                for seg in e.path().iter() {
                    match seg {
                        serde_path_to_error::Segment::Seq { index } => at = at.index(*index),
                        serde_path_to_error::Segment::Map { key } => at = at.key(key),
                        _ => {}
                    }
                }
                let message = crate::input::parse::friendly_type_error(&e.into_inner().to_string());
                let hint = unknown_field_hint(&message);
                out.push(self.error(Code::InvalidAnnotation, tree, &at, message, &hint));
                None
            }
        }
    }
}

/// "did you mean" for serde's `unknown field `x`, expected one of `a`, `b``.
fn unknown_field_hint(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return "check the value against the sluice annotation reference (builder/README.md)"
            .into();
    };
    let field = rest.split('`').next().unwrap_or("");
    let expected: Vec<&str> = rest.split('`').skip(2).step_by(2).collect();
    match did_you_mean(field, expected.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("known fields: {}", expected.join(", ")),
    }
}

/// Splits a filter's error message into the field path it starts with and the rest:
/// `schedule.steps[1].hold: bad` -> (`schedule.steps[1].hold`, `bad`).
fn split_message(message: &str) -> (FieldPath, String) {
    let mut path = FieldPath::root();
    let mut rest = message;
    loop {
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let (word, after) = rest.split_at(end);
        if word.is_empty() || !word.starts_with(|c: char| c.is_ascii_lowercase()) {
            break;
        }
        let mut seg_path = path.key(word);
        let mut after = after;
        while let Some(inner) = after.strip_prefix('[') {
            let Some((n, tail)) = inner.split_once(']') else {
                break;
            };
            let Ok(n) = n.parse::<usize>() else { break };
            seg_path = seg_path.index(n);
            after = tail;
        }
        if let Some(tail) = after.strip_prefix('.') {
            path = seg_path;
            rest = tail;
            continue;
        }
        if let Some(tail) = after.strip_prefix(": ") {
            return (seg_path, tail.to_owned());
        }
        if after.starts_with(' ') {
            // "maxEjectionTime (1m) is shorter ...": the field is part of the sentence.
            return (seg_path, rest.to_owned());
        }
        break;
    }
    (FieldPath::root(), message.to_owned())
}

/// Prepends `base` to a path.
fn join(base: &FieldPath, path: &FieldPath) -> FieldPath {
    let mut segs = base.0.clone();
    segs.extend(path.0.iter().cloned());
    FieldPath(segs)
}

/// Checks every sluice-only setting and Istio `fault`; returns all problems. `inputs` gives
/// the source text, to place errors inside annotation values.
pub fn check(resources: &[Resource], inputs: &Inputs) -> Vec<Diagnostic> {
    let sources: BTreeMap<&str, &str> = inputs
        .files
        .iter()
        .map(|f| (f.name.as_str(), f.text.as_str()))
        .collect();
    let mut out = Vec::new();
    for r in resources {
        match &r.spec {
            Spec::VirtualService(vs) => {
                check_canary(r, vs, &sources, &mut out);
                check_fault_extras(r, &sources, &mut out);
                check_debug(r, &sources, &mut out);
                check_faults(r, vs, &mut out);
            }
            Spec::DestinationRule(dr) => {
                check_breaker(r, dr, &sources, &mut out);
                check_legacy_breakers(r, dr, &mut out);
            }
            Spec::ServiceEntry(_) => check_probe(r, &sources, &mut out),
            Spec::WorkloadEntry(_) => {
                check_probe(r, &sources, &mut out);
                check_draining(r, &mut out);
            }
            _ => {}
        }
        for key in r.metadata.annotations.keys() {
            if key.starts_with("sluice.dev/")
                && ![
                    CANARY_ANNOTATION,
                    FAULT_ANNOTATION,
                    DEBUG_ANNOTATION,
                    BREAKER_ANNOTATION,
                    crate::input::annotations::HEALTH_CHECK_ANNOTATION,
                    PROBE_ANNOTATION,
                    DRAINING_ANNOTATION,
                ]
                .contains(&key.as_str())
            {
                let known = [
                    CANARY_ANNOTATION,
                    FAULT_ANNOTATION,
                    DEBUG_ANNOTATION,
                    BREAKER_ANNOTATION,
                    crate::input::annotations::HEALTH_CHECK_ANNOTATION,
                    PROBE_ANNOTATION,
                    DRAINING_ANNOTATION,
                ];
                let hint = match did_you_mean(key, known) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("sluice reads {}", known.join(", ")),
                };
                out.push(r.error(
                    Code::InvalidAnnotation,
                    &FieldPath::annotation(key),
                    format!("unknown sluice annotation `{key}`"),
                    &hint,
                ));
            }
        }
        for key in [
            CANARY_ANNOTATION,
            FAULT_ANNOTATION,
            DEBUG_ANNOTATION,
            BREAKER_ANNOTATION,
            PROBE_ANNOTATION,
            DRAINING_ANNOTATION,
        ] {
            let wrong_kind = match r.spec {
                _ if key == PROBE_ANNOTATION => {
                    !matches!(r.spec, Spec::ServiceEntry(_) | Spec::WorkloadEntry(_))
                }
                _ if key == DRAINING_ANNOTATION => !matches!(r.spec, Spec::WorkloadEntry(_)),
                Spec::VirtualService(_) => key == BREAKER_ANNOTATION,
                Spec::DestinationRule(_) => key != BREAKER_ANNOTATION,
                _ => true,
            };
            if wrong_kind && r.metadata.annotations.contains_key(key) {
                let home = if key == PROBE_ANNOTATION {
                    "ServiceEntry or WorkloadEntry"
                } else if key == DRAINING_ANNOTATION {
                    "WorkloadEntry"
                } else if key == BREAKER_ANNOTATION {
                    "DestinationRule"
                } else {
                    "VirtualService"
                };
                out.push(r.error(
                    Code::InvalidAnnotation,
                    &FieldPath::annotation(key),
                    format!("`{key}` belongs on a {home}, not a {}", r.kind),
                    &if key == DRAINING_ANNOTATION {
                        "annotate the WorkloadEntry of the workload that is leaving".to_owned()
                    } else {
                        format!("move it to the {home} of the same host")
                    },
                ));
            }
        }
    }
    out
}

/// `sluice.dev/draining` on a WorkloadEntry: `"true"` or `"false"`, nothing else (a typo must
/// not leave a leaving workload in the load balancing, nor drain a healthy one).
fn check_draining(r: &Resource, out: &mut Vec<Diagnostic>) {
    let Some(value) = r.metadata.annotations.get(DRAINING_ANNOTATION) else {
        return;
    };
    if value != "true" && value != "false" {
        out.push(r.error(
            Code::InvalidAnnotation,
            &FieldPath::annotation(DRAINING_ANNOTATION),
            format!("`{DRAINING_ANNOTATION}` is {value:?}: expected \"true\" or \"false\""),
            "write \"true\" (quoted) to drain the workload's endpoints, or remove the annotation",
        ));
    }
}

/// `sluice.dev/probe` on a ServiceEntry or WorkloadEntry: the shape of Istio's WorkloadGroup
/// `probe`, resolved as the prober will run it; a port given by name must name a port of the
/// ServiceEntry (or a key of the WorkloadEntry's `ports`). Errors point inside the value.
fn check_probe(r: &Resource, sources: &BTreeMap<&str, &str>, out: &mut Vec<Diagnostic>) {
    let e = Embedded::new(r, PROBE_ANNOTATION, sources);
    let Some(tree) = e.tree(out) else { return };
    let Some(input) = e.typed::<ProbeInput>(&tree, &FieldPath::root(), &tree, out) else {
        return;
    };
    let (named, names): (BTreeMap<String, u32>, &str) = match &r.spec {
        Spec::ServiceEntry(se) => (
            se.ports
                .iter()
                .filter_map(|p| Some((p.name.clone()?, p.target_port.or(p.number)?)))
                .collect(),
            "the name of one of the ServiceEntry's `ports`",
        ),
        Spec::WorkloadEntry(we) => (we.ports.clone(), "a key of the WorkloadEntry's `ports`"),
        _ => return,
    };
    if let Err(error) = input.resolve_with(&|name| named.get(name).copied()) {
        let mut path = FieldPath::root();
        for part in error.field.split('.').filter(|p| !p.is_empty()) {
            path = path.key(part);
        }
        let hint = if input.port_name().is_some() && error.field.ends_with(".port") {
            format!("a probe port is a number or {names}")
        } else {
            "the value has the shape of Istio's WorkloadGroup `probe`: \
             {httpGet: {path: /healthz, port: 8080}, periodSeconds: 10, failureThreshold: 3}"
                .to_owned()
        };
        out.push(e.error(Code::InvalidAnnotation, &tree, &path, error.message, &hint));
    }
}

fn check_canary(
    r: &Resource,
    vs: &VirtualServiceSpec,
    sources: &BTreeMap<&str, &str>,
    out: &mut Vec<Diagnostic>,
) {
    let e = Embedded::new(r, CANARY_ANNOTATION, sources);
    let Some(tree) = e.tree(out) else { return };
    let Value::Map(entries) = &tree.value else {
        out.push(e.error(
            Code::InvalidAnnotation,
            &tree,
            &FieldPath::root(),
            format!(
                "expected a mapping of http route names, found a {}",
                tree.type_name()
            ),
            "key each entry by an http route's `name` (or its index in `http`, as \"0\")",
        ));
        return;
    };
    for (key, _, node) in entries {
        let at = FieldPath::root().key(key);
        let Some(index) = route_index(vs, key) else {
            let names: Vec<&str> = vs.http.iter().filter_map(|h| h.name.as_deref()).collect();
            let hint = match did_you_mean(key, names.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None if names.is_empty() => format!(
                    "the http routes have no `name`: use an index 0..{}",
                    vs.http.len()
                ),
                None => format!(
                    "http route names: {}; or an index 0..{}",
                    names.join(", "),
                    vs.http.len()
                ),
            };
            out.push(e.error(
                Code::InvalidAnnotation,
                &tree,
                &at,
                format!("no http route named {key:?} in this VirtualService"),
                &hint,
            ));
            continue;
        };
        let Some(route) = e.typed::<CanaryRoute>(&tree, &at, node, out) else {
            continue;
        };
        let destinations = vs.http.get(index).map_or(0, |h| h.route.len());
        if destinations < 2 {
            for (field, set) in [
                ("schedule", route.schedule.is_some()),
                ("sticky", route.sticky.is_some()),
                ("guard", route.guard.is_some()),
            ] {
                if set {
                    let (code, severity) = if field != "sticky" {
                        (Code::InvalidAnnotation, Severity::Error)
                    } else {
                        (Code::Ignored, Severity::Warning)
                    };
                    out.push(e.diag(code, severity,
                        Some(&tree),
                        &at.key(field),
                        format!(
                            "http[{index}] has {destinations} destination, so there is nothing to {}",
                            match field {
                                "schedule" => "shift traffic between",
                                "guard" => "compare the canary with",
                                _ => "stick to",
                            }
                        ),
                        "list the stable and the canary destination under `route` (weights are then taken from the schedule)",
                    ));
                }
            }
            continue;
        }
        if route.guard.as_ref().is_some_and(|g| g.canary.is_some()) {
            out.push(e.error(
                Code::InvalidAnnotation,
                &tree,
                &at.key("guard").key("canary"),
                "`canary` is not set in the annotation: the canary is the route's last destination",
                "list the canary destination last under `route`, and remove `canary`",
            ));
            continue;
        }
        // The filter refuses a bad gRPC status name without naming the entry (one message
        // less in every module): find the entry here, to point at it.
        let bad_grpc = route.guard.as_ref().and_then(|g| {
            g.failures.grpc.iter().enumerate().find(|(_, name)| {
                !matches!(sluice_core::fault::grpc::code_of(name), Some(code) if code != 0)
            })
        });
        let bad_grpc = bad_grpc.map(|(index, name)| (index, name.clone()));
        // Compile the split as the canary filter will, with placeholder clusters, so the builder
        // refuses exactly what the filter would.
        let split = Split {
            name: key.clone(),
            members: (0..destinations)
                .map(|i| Member {
                    cluster: format!("member{i}"),
                    weight: 1,
                })
                .collect(),
            sticky: route.sticky,
            schedule: route.schedule,
            failover: route.failover.unwrap_or(true),
            guard: route.guard,
        };
        let config = CanaryConfig {
            after_router: true,
            splits: vec![split],
            rules: Vec::new(),
        };
        // The compile step stops at the first problem: compile each step alone first, so
        // every bad step is reported; the whole schedule (cross-step rules) only if they pass.
        let step_errors: Vec<(usize, String)> = config
            .splits
            .first()
            .and_then(|s| s.schedule.as_ref())
            .map(|schedule| {
                (0..schedule.steps.len())
                    .filter_map(|i| {
                        let mut one = config.clone();
                        if let Some(sc) = one.splits.first_mut().and_then(|s| s.schedule.as_mut()) {
                            sc.steps = schedule.steps.get(i).cloned().into_iter().collect();
                        }
                        CompiledCanary::compile(&one).err().map(|m| (i, m))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let errors = if step_errors.is_empty() {
            CompiledCanary::compile(&config)
                .err()
                .into_iter()
                .collect::<Vec<_>>()
        } else {
            step_errors
                .into_iter()
                .map(|(i, m)| m.replacen("steps[0]", &format!("steps[{i}]"), 1))
                .collect()
        };
        for message in errors {
            let prefix = format!("splits[0] ({key:?})");
            let message = message
                .strip_prefix(&prefix)
                .unwrap_or(&message)
                .trim_start_matches(['.', ':', ' ']);
            let (mut path, text) = split_message(message);
            let grpc_hint = match &bad_grpc {
                Some((index, name)) if path.to_string().ends_with("failures.grpc") => {
                    path = path.index(*index);
                    let known = sluice_core::fault::grpc::STATUS_NAMES
                        .iter()
                        .skip(1)
                        .copied();
                    Some(match did_you_mean(name, known.clone()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!(
                            "gRPC error statuses: {}",
                            known.collect::<Vec<_>>().join(", ")
                        ),
                    })
                }
                _ => None,
            };
            let hint = if let Some(hint) = grpc_hint {
                hint
            } else if text.contains("members") {
                format!(
                    "http[{index}] has {destinations} destinations: give one weight per destination, in route order"
                )
            } else if path.to_string().ends_with("hold") || text.contains("duration") {
                "write a duration such as \"30s\", \"10m\" or \"1h\"".into()
            } else {
                "see the canary filter's settings in filters/canary/README.md".into()
            };
            out.push(e.error(
                Code::InvalidAnnotation,
                &tree,
                &join(&at, &path),
                text,
                &hint,
            ));
        }
    }
}

fn check_fault_extras(r: &Resource, sources: &BTreeMap<&str, &str>, out: &mut Vec<Diagnostic>) {
    let e = Embedded::new(r, FAULT_ANNOTATION, sources);
    let Some(tree) = e.tree(out) else { return };
    let Some(extras) = e.typed::<FaultExtras>(&tree, &FieldPath::root(), &tree, out) else {
        return;
    };
    let config = FaultConfig {
        header_faults: extras.header_faults,
        ..FaultConfig::default()
    };
    if let Err(message) = FaultPlan::compile(&config) {
        let (path, text) = split_message(&message);
        out.push(e.error(
            Code::InvalidAnnotation,
            &tree,
            &path,
            text,
            "see the fault filter's settings in filters/fault/README.md",
        ));
    }
}

/// `sluice.dev/debug`, validated by the suite module's own compile step (with the secret read
/// from its file), so what passes here is what the module accepts. Messages never quote the
/// secret.
fn check_debug(r: &Resource, sources: &BTreeMap<&str, &str>, out: &mut Vec<Diagnostic>) {
    let e = Embedded::new(r, DEBUG_ANNOTATION, sources);
    let Some(tree) = e.tree(out) else { return };
    let Some(settings) = e.typed::<DebugSettings>(&tree, &FieldPath::root(), &tree, out) else {
        return;
    };
    const HINT: &str = "see \"The online explanation\" in filters/suite/README.md";
    let Some(header) = settings.header else {
        out.push(e.error(
            Code::InvalidDebug,
            &tree,
            &FieldPath::root(),
            "missing `header`: the request header that asks for an explanation",
            "add `header: x-sluice-debug`",
        ));
        return;
    };
    let secret = match &settings.secret_file {
        Some(file) => match read_debug_secret(&debug_secret_path(&r.file, file)) {
            Ok(secret) => secret,
            Err(message) => {
                out.push(e.error(
                    Code::InvalidDebug,
                    &tree,
                    &FieldPath::root().key("secretFile"),
                    message,
                    "the path is relative to the folder of this YAML file",
                ));
                return;
            }
        },
        None => String::new(),
    };
    let config = sluice_core::suite::debug::DebugConfig {
        header,
        secret,
        trusted_cidrs: settings.trusted_cidrs,
        positions: Vec::new(),
    };
    if let Err(message) = config.compile(0) {
        let message = message.strip_prefix("debug: ").unwrap_or(&message);
        let (path, text) = match message.strip_prefix("secret: ") {
            // The module's `secret` is the content of `secretFile`.
            Some(rest) => (
                FieldPath::root().key("secretFile"),
                format!("the secret in the file {rest}"),
            ),
            None if message.starts_with("header ") => {
                (FieldPath::root().key("header"), message.to_owned())
            }
            None => split_message(message),
        };
        out.push(e.error(Code::InvalidDebug, &tree, &path, text, HINT));
    }
}

/// Istio's `fault` of each route, validated by the fault filter's own compile step.
fn check_faults(r: &Resource, vs: &VirtualServiceSpec, out: &mut Vec<Diagnostic>) {
    for (i, h) in vs.http.iter().enumerate() {
        let Some(fault) = &h.fault else { continue };
        let at = FieldPath::root()
            .key("spec")
            .key("http")
            .index(i)
            .key("fault");
        if let Some(d) = &fault.delay
            && d.fixed_delay.is_none()
        {
            out.push(r.error(
                Code::InvalidAnnotation,
                &at.key("delay"),
                "missing `fixedDelay`",
                "set `fixedDelay: 5s`",
            ));
            continue;
        }
        let rule = fault_rule(&format!("http[{i}]"), fault);
        let config = FaultConfig {
            faults: vec![rule],
            ..FaultConfig::default()
        };
        match FaultPlan::compile(&config) {
            Err(message) => {
                let message = message
                    .split_once("): ")
                    .map_or(message.as_str(), |(_, m)| m);
                let (path, text) = split_message(message);
                let hint = fault_hint(&path, &text);
                out.push(r.error(Code::InvalidAnnotation, &join(&at, &path), text, &hint));
            }
            Ok(_) => {
                for (field, set) in [
                    (
                        "delay",
                        fault
                            .delay
                            .as_ref()
                            .is_some_and(|d| d.percentage.is_none() && d.percent.is_none()),
                    ),
                    (
                        "abort",
                        fault.abort.as_ref().is_some_and(|a| a.percentage.is_none()),
                    ),
                ] {
                    if set {
                        out.push(r.diag(
                            Code::Ignored,
                            Severity::Warning,
                            &at.key(field),
                            format!(
                                "no `percentage`: as in Istio, this {field} applies to no request"
                            ),
                            Some(format!(
                                "add `percentage: {{value: 100}}` to {field} every matching request"
                            )),
                        ));
                    }
                }
            }
        }
    }
}

fn fault_hint(path: &FieldPath, text: &str) -> String {
    let last = match path.0.last() {
        Some(Seg::Key(k)) => k.as_str(),
        _ => "",
    };
    match last {
        "httpStatus" if text.contains("range") => "use an HTTP status from 200 to 599".into(),
        "httpStatus" => "set `httpStatus: 503` (or `grpcStatus: UNAVAILABLE`)".into(),
        "grpcStatus" => "e.g. UNAVAILABLE, NOT_FOUND, DEADLINE_EXCEEDED, INTERNAL".into(),
        "value" | "percent" => "percentages are 0-100 (e.g. 0.1 for one request in a thousand)".into(),
        "fixedDelay" => "write a duration of at least 1ms, in whole milliseconds, e.g. \"5s\"".into(),
        _ => "add `delay: {fixedDelay: 5s, percentage: {value: 10}}` and/or `abort: {httpStatus: 503, percentage: {value: 10}}`".into(),
    }
}

fn check_breaker(
    r: &Resource,
    dr: &DestinationRuleSpec,
    sources: &BTreeMap<&str, &str>,
    out: &mut Vec<Diagnostic>,
) {
    let e = Embedded::new(r, BREAKER_ANNOTATION, sources);
    let Some(tree) = e.tree(out) else { return };
    let Value::Map(entries) = &tree.value else {
        out.push(e.error(
            Code::InvalidAnnotation,
            &tree,
            &FieldPath::root(),
            format!("expected a mapping, found a {}", tree.type_name()),
            "e.g. `consecutiveErrors: 5` on its own line",
        ));
        return;
    };
    let host_node = Node {
        pos: tree.pos,
        value: Value::Map(
            entries
                .iter()
                .filter(|(k, _, _)| k != "subsets")
                .cloned()
                .collect(),
        ),
    };
    let host = e.typed::<BreakerFields>(&tree, &FieldPath::root(), &host_node, out);
    // The fields that are well typed are still checked when others are not.
    let host_fields_ok = check_breaker_fields(
        &e,
        &tree,
        &FieldPath::root(),
        &host
            .clone()
            .unwrap_or_else(|| well_typed_breaker_fields(&host_node)),
        out,
    );
    let host_ok = match &host {
        Some(host) => host_fields_ok && compile_breaker(&e, &tree, &FieldPath::root(), host, out),
        None => false,
    };
    let Some(subsets_node) = tree.get("subsets") else {
        return;
    };
    let sat = FieldPath::root().key("subsets");
    let Value::Map(subsets) = &subsets_node.value else {
        out.push(e.error(
            Code::InvalidAnnotation,
            &tree,
            &sat,
            format!(
                "expected a mapping of subset names, found a {}",
                subsets_node.type_name()
            ),
            "e.g. `subsets: {v2: {consecutiveErrors: 3}}`",
        ));
        return;
    };
    let known: Vec<&str> = dr
        .subsets
        .iter()
        .filter_map(|s| s.name.as_deref())
        .collect();
    for (name, _, node) in subsets {
        let at = sat.key(name);
        if !known.contains(&name.as_str()) {
            let hint = match did_you_mean(name, known.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("subsets of this DestinationRule: {}", known.join(", ")),
            };
            out.push(e.error(
                Code::InvalidAnnotation,
                &tree,
                &at,
                format!("unknown subset {name:?}"),
                &hint,
            ));
            continue;
        }
        let Some(over) = e.typed::<BreakerFields>(&tree, &at, node, out) else {
            check_breaker_fields(&e, &tree, &at, &well_typed_breaker_fields(node), out);
            continue;
        };
        let mut fields_ok = check_breaker_fields(&e, &tree, &at, &over, out);
        if over.max_ejection_percent.is_some() {
            fields_ok = false;
            out.push(
                e.error(
                    Code::InvalidAnnotation,
                    &tree,
                    &at.key("maxEjectionPercent"),
                    "maxEjectionPercent is a host-level field: it caps the open share of all the \
                 host's clusters together"
                        .to_owned(),
                    "move it to the top level of the annotation, beside the host's fields",
                ),
            );
        }
        if let Some(host) = &host
            && host_ok
            && fields_ok
        {
            compile_breaker(&e, &tree, &at, &host.merged(&over), out);
        }
    }
}

/// The entries of a breaker mapping that deserialize on their own, merged (the others were
/// reported by [`Embedded::typed`]).
fn well_typed_breaker_fields(node: &Node) -> BreakerFields {
    let Value::Map(entries) = &node.value else {
        return BreakerFields::default();
    };
    entries
        .iter()
        .filter_map(|entry| {
            let one = Node {
                pos: node.pos,
                value: Value::Map(vec![entry.clone()]),
            };
            serde_json::from_value::<BreakerFields>(one.to_json()).ok()
        })
        .fold(BreakerFields::default(), |acc, f| acc.merged(&f))
}

/// Field-by-field checks of breaker settings (every unknown outcome, every bad duration), so
/// all problems are reported before the breaker's own compile step, which stops at the first.
/// True when all fields are fine.
fn check_breaker_fields(
    e: &Embedded<'_>,
    tree: &Node,
    at: &FieldPath,
    fields: &BreakerFields,
    out: &mut Vec<Diagnostic>,
) -> bool {
    let before = out.len();
    check_count_as(e, tree, at, fields, out);
    for (name, value) in [
        ("interval", &fields.interval),
        ("baseEjectionTime", &fields.base_ejection_time),
        ("maxEjectionTime", &fields.max_ejection_time),
    ] {
        if let Some(text) = value
            && let Err(err) = sluice_core::duration::parse(text)
        {
            out.push(e.error(
                Code::InvalidAnnotation,
                tree,
                &at.key(name),
                err.to_string(),
                "write a duration such as \"500ms\", \"10s\" or \"5m\"",
            ));
        }
    }
    out.len() == before
}

fn check_count_as(
    e: &Embedded<'_>,
    tree: &Node,
    at: &FieldPath,
    fields: &BreakerFields,
    out: &mut Vec<Diagnostic>,
) {
    for (i, name) in fields.count_as.iter().flatten().enumerate() {
        if outcome(name).is_none() {
            let hint = match did_you_mean(name, OUTCOMES) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("use {}", OUTCOMES.join(", ")),
            };
            out.push(e.error(
                Code::InvalidAnnotation,
                tree,
                &at.key("countAs").index(i),
                format!("unknown outcome {name:?}"),
                &hint,
            ));
        }
    }
}

/// Compiles merged settings with the breaker's own validation; true when accepted.
fn compile_breaker(
    e: &Embedded<'_>,
    tree: &Node,
    at: &FieldPath,
    fields: &BreakerFields,
    out: &mut Vec<Diagnostic>,
) -> bool {
    if fields
        .count_as
        .iter()
        .flatten()
        .any(|n| outcome(n).is_none())
    {
        return false; // reported by check_count_as
    }
    match Policy::compile(&fields.settings(), "breaker") {
        Ok(_) => true,
        Err(err) => {
            let message = err.0.strip_prefix("breaker: ").unwrap_or(&err.0);
            let (path, text) = split_message(message);
            out.push(e.error(
                Code::InvalidAnnotation,
                tree,
                &join(at, &path),
                text,
                "durations such as \"10s\"; see the breaker settings in builder/README.md",
            ));
            false
        }
    }
}

/// The seeds' `trafficPolicy.circuitBreaker`, at host and subset level: accepted, with a
/// warning pointing to the annotation and saying where `maxEjectionPercent` went.
fn check_legacy_breakers(r: &Resource, dr: &DestinationRuleSpec, out: &mut Vec<Diagnostic>) {
    let spec = FieldPath::root().key("spec");
    let mut blocks = Vec::new();
    if let Some(cb) = dr
        .traffic_policy
        .as_ref()
        .and_then(|t| t.circuit_breaker.as_ref())
    {
        blocks.push((spec.key("trafficPolicy").key("circuitBreaker"), cb));
    }
    for (i, s) in dr.subsets.iter().enumerate() {
        if let Some(cb) = s
            .traffic_policy
            .as_ref()
            .and_then(|t| t.circuit_breaker.as_ref())
        {
            blocks.push((
                spec.key("subsets")
                    .index(i)
                    .key("trafficPolicy")
                    .key("circuitBreaker"),
                cb,
            ));
        }
    }
    let annotated = r.metadata.annotations.contains_key(BREAKER_ANNOTATION);
    for (at, cb) in blocks {
        let message = if annotated {
            format!(
                "`circuitBreaker` is not an Istio field; ignored because the `{BREAKER_ANNOTATION}` annotation configures this host's breaker"
            )
        } else if legacy_breaker(cb).is_some() {
            "`circuitBreaker` is not an Istio field (stock Istio rejects it): sluice applies it as the sluice breaker filter".to_owned()
        } else {
            "`circuitBreaker` sets no `consecutiveErrors`, so no breaker is configured".to_owned()
        };
        out.push(r.diag(
            Code::Ignored,
            Severity::Warning,
            &at,
            message,
            Some(format!(
                "move it to the `{BREAKER_ANNOTATION}` annotation, which Istio tooling accepts"
            )),
        ));
        if cb.max_ejection_percent.is_some() {
            out.push(r.diag(Code::Ignored, Severity::Warning,
                &at.key("maxEjectionPercent"),
                "ignored: the sluice breaker opens for a whole destination and ejects no share of hosts",
                Some(
                    format!("to cap ejected hosts, use `trafficPolicy.outlierDetection.maxEjectionPercent` (Envoy's native outlier detection); to cap how many of the host's subset breakers are open at once, `maxEjectionPercent` at the top level of the `{BREAKER_ANNOTATION}` annotation"),
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_messages_split_into_path_and_text() {
        let (p, t) = split_message("schedule.steps[1].hold: invalid duration");
        assert_eq!(p.to_string(), "schedule.steps[1].hold");
        assert_eq!(t, "invalid duration");
        let (p, t) = split_message("errorRatio.thresholdPercent must be within 1..=100, got 0");
        assert_eq!(p.to_string(), "errorRatio.thresholdPercent");
        assert_eq!(t, "thresholdPercent must be within 1..=100, got 0");
        let (p, t) = split_message("HTTP fault injection must have an abort and/or a delay");
        assert!(p.is_root());
        assert_eq!(t, "HTTP fault injection must have an abort and/or a delay");
    }
}
