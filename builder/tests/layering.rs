//! The builder's stages import only downward (docs/ARCHITECTURE.md).
//!
//! Reads every file of `builder/src`, maps it to a stage by its folder (`input/`, `check/`,
//! `model/`, `xds/`, `package/`, `target/`; the root files are named below), finds every
//! `crate::<module>` and `super::` path in its code (comments skipped), maps the module named to
//! its stage, and fails on:
//!
//! - an import from a lower stage to a higher one (an "upward" import);
//! - a cycle between stages (which an upward import always makes, but the graph is checked on
//!   its own so a wrong rank table cannot hide one).
//!
//! A path through the crate root (`crate::Options`, `crate::parse::...` via the compatibility
//! re-exports of lib.rs) counts as an import of the root, the top stage: code below the root
//! names modules by their stage path (`crate::input::options::Options`), so every import says
//! which stage it comes from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The stages, lowest first. A file may import its own stage and the stages before it.
const STAGES: [&str; 9] = [
    "leaf", "input", "check", "model", "xds", "package", "target", "front", "control",
];

/// The stage of a top-level module (a folder of builder/src, or a root file).
fn stage_of_module(module: &str) -> &'static str {
    match module {
        // Cross-cutting leaves: positions, diagnostics and their reports, the output folder.
        "diag" | "position" | "report" | "output" => "leaf",
        "input" => "input",
        "check" => "check",
        "model" => "model",
        "xds" => "xds",
        "package" => "package",
        "target" => "target",
        // The control plane runs the whole pipeline (lib.rs's `resources`) on what it watches:
        // `sluice serve`, its etcd store and its prober.
        "serve" | "store" | "probe" => "control",
        // The pipeline's runner (lib.rs), `sluice explain` on top of it, and the CLI.
        _ => "front",
    }
}

fn rank(stage: &str) -> usize {
    STAGES
        .iter()
        .position(|s| *s == stage)
        .expect("a known stage")
}

/// One source file: its path under src (`model/tcp.rs`) and text.
struct File {
    path: String,
    text: String,
}

/// The top-level module a file belongs to: its folder, or its name for a root file.
fn file_module(path: &str) -> String {
    match path.split_once('/') {
        Some((dir, _)) => dir.to_owned(),
        None => path.trim_end_matches(".rs").to_owned(),
    }
}

/// The module path of a file (`model/tcp.rs` -> [model, tcp]; `model/mod.rs` -> [model];
/// `lib.rs` -> []).
fn module_path(path: &str) -> Vec<String> {
    let mut segs: Vec<String> = path
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if matches!(
        segs.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        segs.pop();
    }
    segs
}

/// The first segment of each path a `crate::{a::b, c}` group names, with its offset in the
/// group.
fn group_heads(group: &str) -> Vec<(String, usize)> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, ch) in group.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push((start, &group[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push((start, &group[start..]));
    items
        .into_iter()
        .filter_map(|(start, item)| {
            let lead = item.len() - item.trim_start().len();
            let head = item.trim().split("::").next().unwrap_or("").trim();
            (!head.is_empty() && head != "self").then(|| (head.to_owned(), start + lead))
        })
        .collect()
}

/// The top-level modules `file` imports, each with the line it is named on.
fn imports(file: &File) -> Vec<(String, usize)> {
    let own = module_path(&file.path);
    let mut found = Vec::new();
    // Items after an inline `mod name {` (unit tests) sit one module deeper: their `super::` is
    // the file's own module.
    let mut inline = false;
    // Uses spanning several lines (`use crate::{\n a,\n b,\n};`) are joined first.
    let mut code = String::new();
    let mut line_of = Vec::new();
    for (n, line) in file.text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        if line.starts_with("mod ") && line.trim_end().ends_with('{') {
            inline = true;
        }
        let code_part = line.split(" //").next().unwrap_or(line);
        for _ in 0..code_part.len() + 1 {
            line_of.push((n + 1, inline));
        }
        code.push_str(code_part);
        code.push('\n');
    }
    let bytes = code.as_bytes();
    let mut at = 0;
    while at < code.len() {
        let rest = &code[at..];
        let (kind, skip) = if rest.starts_with("crate::") {
            ("crate", "crate::".len())
        } else if rest.starts_with("super::") {
            ("super", "super::".len())
        } else {
            at += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        // A path segment, not the tail of an identifier (`my_crate::`).
        let word_before =
            at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        let (line, in_inline) = line_of[at];
        at += skip;
        if word_before {
            continue;
        }
        let mut base: Vec<String> = Vec::new();
        if kind == "super" {
            let mut levels = 1;
            while code[at..].starts_with("super::") {
                levels += 1;
                at += "super::".len();
            }
            let mut path = own.clone();
            if in_inline {
                levels -= 1;
            }
            for _ in 0..levels {
                path.pop();
            }
            base = path;
        }
        let heads = if code[at..].starts_with('{') {
            let close = matching_brace(&code[at..]);
            let group = &code[at + 1..at + close];
            let heads = group_heads(group)
                .into_iter()
                .map(|(head, offset)| (head, line_of[at + 1 + offset].0))
                .collect();
            at += close;
            heads
        } else {
            let ident: String = code[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            vec![(ident, line)]
        };
        for (head, line) in heads {
            let top = base.first().cloned().unwrap_or(head);
            if !top.is_empty() {
                found.push((top, line));
            }
        }
    }
    found
}

fn matching_brace(text: &str) -> usize {
    let mut depth = 0;
    for (i, ch) in text.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    text.len() - 1
}

/// Every upward import (`file:line: stage -> stage (module)`) and every cycle between stages.
fn violations(files: &[File]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for file in files {
        let from = stage_of_module(&file_module(&file.path));
        for (module, line) in imports(file) {
            let to = stage_of_module(&module);
            if from == to {
                continue;
            }
            edges.entry(from).or_default().insert(to);
            if rank(to) > rank(from) {
                problems.push(format!(
                    "{}:{line}: the {from} stage imports `{module}` of the higher {to} stage",
                    file.path
                ));
            }
        }
    }
    problems.extend(cycles(&edges));
    problems
}

/// Each cycle of the stage graph, as `cycle: a -> b -> a`.
fn cycles(edges: &BTreeMap<&str, BTreeSet<&str>>) -> Vec<String> {
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        out: &mut Vec<String>,
    ) {
        if let Some(i) = stack.iter().position(|s| *s == node) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(node);
            out.push(format!("cycle: {}", cycle.join(" -> ")));
            return;
        }
        if !done.insert(node) {
            return;
        }
        stack.push(node);
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, stack, done, out);
        }
        stack.pop();
    }
    let mut out = Vec::new();
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        visit(node, edges, &mut Vec::new(), &mut done, &mut out);
    }
    out
}

fn read_src(dir: &Path, root: &Path, out: &mut Vec<File>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("readable src")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_src(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).expect("under src");
            out.push(File {
                path: rel.to_string_lossy().replace('\\', "/"),
                text: std::fs::read_to_string(&path).expect("utf-8 source"),
            });
        }
    }
}

#[test]
fn stages_import_only_downward_and_form_no_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_src(&root, &root, &mut files);
    assert!(files.len() > 30, "read builder/src: {} files", files.len());
    // Every folder is a known stage: a new folder must be placed in the table above.
    for file in &files {
        let module = file_module(&file.path);
        assert!(
            !file.path.contains('/') || stage_of_module(&module) != "front",
            "{} is in no stage: add its folder to stage_of_module",
            file.path
        );
    }
    let problems = violations(&files);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn an_upward_import_and_a_cycle_are_found() {
    let files = [
        File {
            path: "model/mod.rs".into(),
            text: "pub mod tcp;\nuse crate::input::parse::Resource;\n".into(),
        },
        File {
            path: "model/tcp.rs".into(),
            // One upward import in a group, over two lines.
            text: "use crate::{\n    diag::Code,\n    xds::Kind,\n};\n".into(),
        },
        File {
            path: "xds/native.rs".into(),
            text: "use super::resources::x;\nuse crate::model::Mesh;\n".into(),
        },
        File {
            path: "input/parse.rs".into(),
            // A comment is no import; the test module's `super::` is the file's own module.
            text: "// crate::target::envoy\nuse crate::Options;\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n".into(),
        },
    ];
    let problems = violations(&files);
    assert_eq!(
        problems,
        [
            "model/tcp.rs:3: the model stage imports `xds` of the higher xds stage",
            "input/parse.rs:2: the input stage imports `Options` of the higher front stage",
            "cycle: model -> xds -> model",
        ],
        "{problems:#?}"
    );
}

/// The `crate::input::<module>` modules `file` names outside comments (also inside groups:
/// `crate::{input::native::X}`, `crate::input::{options, native}`), with their lines.
fn input_modules(file: &File) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for (n, line) in file.text.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        let code = line.split(" //").next().unwrap_or(line);
        let mut rest = code;
        while let Some(i) = rest.find("input::") {
            let before = rest[..i].chars().next_back();
            rest = &rest[i + "input::".len()..];
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            if rest.starts_with('{') {
                let close = rest.find('}').unwrap_or(rest.len());
                for (head, _) in group_heads(&rest[1..close]) {
                    found.push((head, n + 1));
                }
            } else {
                let ident: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                found.push((ident, n + 1));
            }
        }
    }
    found
}

/// The xds stage translates the model and never reads input resources again: of the input
/// stage it may name only the run's options (`input::options`). Istio's input types, their
/// free-form JSON and their duration strings are resolved once, in the model.
#[test]
fn the_xds_stage_reads_no_input_type_but_the_options() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_src(&root.join("xds"), &root, &mut files);
    assert!(!files.is_empty(), "read builder/src/xds");
    let mut problems = Vec::new();
    for file in &files {
        for (module, line) in input_modules(file) {
            if module != "options" {
                problems.push(format!(
                    "{}:{line}: xds reads `input::{module}`: resolve it into the model instead",
                    file.path
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The check itself finds a group import and a path in an expression.
    let sample = File {
        path: "xds/native.rs".into(),
        text: "use crate::input::{options::Options, native::Headers};\n// crate::input::istio\nlet x = crate::input::istio::X;\n".into(),
    };
    assert_eq!(
        input_modules(&sample),
        [
            ("options".to_owned(), 1),
            ("native".to_owned(), 1),
            ("istio".to_owned(), 3)
        ]
    );
}
