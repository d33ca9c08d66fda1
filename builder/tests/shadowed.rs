//! SL904: rules an earlier rule shadows. Purpose-built inputs warn, with both positions;
//! every example and integration fixture does not.

use std::path::{Path, PathBuf};

use sluice::{Code, Inputs, Options, WasmModules};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const SERVICES: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: shop}\nspec:\n  hosts: [shop]\n  ports: [{number: 8000, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 127.0.0.1, labels: {version: v1}}, {address: 127.0.0.2, labels: {version: v2}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: shop}\nspec:\n  host: shop\n  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]\n---\n";

/// The SL904 diagnostics of a VirtualService for `shop` with these `http` rules (YAML list
/// items, indented by two), through `validate` (and so `generate`'s checks).
fn shadowed(http: &str) -> Vec<String> {
    let text = format!(
        "{SERVICES}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: shop}}\nspec:\n  hosts: [shop]\n  http:\n{http}"
    );
    let options = Options {
        wasm: WasmModules::NotRead,
        ..Options::default()
    };
    let diags = sluice::validate(&Inputs::from_text("mesh.yaml", &text), &options);
    assert!(!diags.has_errors(), "{diags}");
    diags
        .0
        .iter()
        .filter(|d| d.code == Code::ShadowedRule)
        .map(|d| d.to_string())
        .collect()
}

const V1: &str = "    route: [{destination: {host: shop, subset: v1}}]\n";
const V2: &str = "    route: [{destination: {host: shop, subset: v2}}]\n";

#[test]
fn a_catch_all_before_other_rules() {
    let got = shadowed(&format!(
        "  - name: all\n{V1}  - name: late\n    match: [{{uri: {{prefix: /x}}}}]\n{V2}"
    ));
    assert_eq!(got.len(), 1, "{got:?}");
    let d = &got[0];
    // The shadowed rule's position (http[1] at line 25) and the earlier one's (http[0], 23:5).
    assert!(d.starts_with("mesh.yaml:25:5: warning[SL904]: VirtualService/shop: spec.http[1]: http[1] (\"late\") can never match: the earlier http[0] (\"all\") at mesh.yaml:23:5 takes every request it would (it has no match conditions)"), "{d}");
    assert!(
        d.contains(
            "hint: the first matching rule wins: move http[1] (\"late\") before http[0] (\"all\")"
        ),
        "{d}"
    );
    // An empty match block is a catch-all too.
    let got = shadowed(&format!(
        "  - match: [{{}}]\n{V1}  - match: [{{headers: {{x: {{exact: a}}}}}}]\n{V2}"
    ));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].contains("http[1] can never match: the earlier http[0] at mesh.yaml:23:5"),
        "{}",
        got[0]
    );
}

#[test]
fn a_prefix_before_an_exact_or_longer_prefix_it_covers() {
    let got = shadowed(&format!(
        "  - name: api\n    match: [{{uri: {{prefix: /api}}}}]\n{V1}  - name: v1-exact\n    match: [{{uri: {{exact: /api/v1}}}}]\n{V2}  - name: v1-prefix\n    match: [{{uri: {{prefix: /api/v1/}}, headers: {{x: {{exact: a}}}}}}]\n{V2}"
    ));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].contains("spec.http[1]: http[1] (\"v1-exact\") can never match: the earlier http[0] (\"api\") at mesh.yaml:23:5 takes every request it would (uri prefix \"/api\" covers exact \"/api/v1\")"), "{}", got[0]);
    assert!(got[1].contains("spec.http[2]: http[2] (\"v1-prefix\") can never match: the earlier http[0] (\"api\") at mesh.yaml:23:5 takes every request it would (uri prefix \"/api\" covers prefix \"/api/v1/\")"), "{}", got[1]);
}

#[test]
fn an_exact_duplicate() {
    let got = shadowed(&format!(
        "  - match: [{{headers: {{end-user: {{exact: jason}}}}, uri: {{prefix: /r}}}}, {{method: {{exact: POST}}}}]\n{V1}  - match: [{{headers: {{end-user: {{exact: jason}}}}, uri: {{prefix: /r}}}}, {{method: {{exact: POST}}}}]\n{V2}"
    ));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("(the same match conditions)"), "{}", got[0]);
}

#[test]
fn narrower_earlier_rules_do_not_warn() {
    for http in [
        // The earlier prefix has another condition the later rule lacks.
        format!(
            "  - match: [{{uri: {{prefix: /api}}, headers: {{x: {{exact: a}}}}}}]\n{V1}  - match: [{{uri: {{exact: /api/v1}}}}]\n{V2}"
        ),
        // A later rule the prefix does not cover, or only covers in part.
        format!(
            "  - match: [{{uri: {{prefix: /api/v1}}}}]\n{V1}  - match: [{{uri: {{prefix: /api}}}}]\n{V2}"
        ),
        format!(
            "  - match: [{{uri: {{prefix: /api}}}}]\n{V1}  - match: [{{uri: {{exact: /api}}}}, {{uri: {{exact: /web}}}}]\n{V2}"
        ),
        // Regexes, case folding and different values are left alone.
        format!(
            "  - match: [{{uri: {{regex: '/a.*'}}}}]\n{V1}  - match: [{{uri: {{exact: /ab}}}}]\n{V2}"
        ),
        format!(
            "  - match: [{{uri: {{prefix: /API}}, ignoreUriCase: true}}]\n{V1}  - match: [{{uri: {{exact: /api/x}}}}]\n{V2}"
        ),
        format!(
            "  - match: [{{headers: {{x: {{exact: a}}}}}}]\n{V1}  - match: [{{headers: {{x: {{exact: b}}}}}}]\n{V2}"
        ),
        format!(
            "  - match: [{{headers: {{x: {{prefix: a}}}}}}]\n{V1}  - match: [{{headers: {{x: {{exact: ab}}}}}}]\n{V2}"
        ),
        // A catch-all last is the usual default route.
        format!(
            "  - match: [{{uri: {{prefix: /api}}}}]\n{V1}  - route: [{{destination: {{host: shop, subset: v2}}}}]\n"
        ),
    ] {
        assert_eq!(shadowed(&http), Vec::<String>::new(), "{http}");
    }
}

/// Every `.yaml` under `dir`, recursively, sorted.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("readable")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn no_example_or_fixture_warns() {
    let mut files = Vec::new();
    yaml_files(&repo().join("examples"), &mut files);
    yaml_files(&repo().join("integration/fixtures"), &mut files);
    assert!(files.len() >= 30, "{files:?}");
    let mut checked_rules = 0;
    for path in &files {
        let mut text = std::fs::read_to_string(path).expect("readable");
        // Templates: `${PORT}`-style placeholders the tests fill in.
        while let Some(start) = text.find("${") {
            let end = text[start..]
                .find('}')
                .map_or(text.len(), |e| start + e + 1);
            text.replace_range(start..end, "1234");
        }
        // Conformance case files hold their mesh in `mesh:`.
        if path.parent().is_some_and(|p| p.ends_with("conformance")) {
            let docs = sluice::yaml::parse_documents(&text).expect("YAML");
            text = docs[0].root.to_json()["mesh"]
                .as_str()
                .expect("mesh")
                .to_owned();
        }
        let (resources, _) =
            sluice::parse::parse(&Inputs::from_text(&path.display().to_string(), &text));
        for r in &resources {
            if let sluice::parse::Spec::VirtualService(vs) = &r.spec {
                checked_rules += vs.http.len();
            }
        }
        let warned: Vec<String> = sluice::shadow::check(&resources)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(warned.is_empty(), "{}: {warned:#?}", path.display());
    }
    assert!(checked_rules >= 50, "{checked_rules} rules checked");
    // And through generation, for the examples that generate on their own.
    for example in [
        "examples/bookinfo",
        "examples/demo",
        "examples/ecommerce/basic.yaml",
    ] {
        let mut paths = vec![repo().join(example)];
        if example.contains("ecommerce") {
            paths.push(repo().join("examples/ecommerce/common"));
        }
        let inputs = Inputs::read(&paths).expect("readable");
        let options = Options {
            wasm: WasmModules::NotRead,
            ..Options::default()
        };
        let diags = sluice::validate(&inputs, &options);
        assert!(
            !diags.0.iter().any(|d| d.code == Code::ShadowedRule),
            "{example}: {diags}"
        );
    }
}
