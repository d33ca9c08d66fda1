//! `sluice explain` on the example meshes: text and JSON, exit codes.

use std::path::Path;
use std::process::{Command, Output};

fn repo(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
        .display()
        .to_string()
}

fn explain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("explain")
        .args(args)
        .output()
        .expect("runs")
}

fn ok_text(args: &[&str]) -> String {
    let run = explain(args);
    assert!(
        run.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8(run.stdout).expect("UTF-8")
}

fn ok_json(args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    serde_json::from_str(&ok_text(&all)).expect("one JSON document")
}

#[test]
fn text_names_each_rule_tried_why_it_failed_and_the_destination() {
    let bookinfo = repo("examples/bookinfo");
    let text = ok_text(&[
        "-f",
        &bookinfo,
        "--host",
        "reviews",
        "--port",
        "9080",
        "--path",
        "/reviews/1",
        "-H",
        "end-user: bob",
    ]);
    for line in [
        "request:  GET reviews/reviews/1\n",
        "listener: listener_9080 (port 9080)\n",
        "virtual host: default.reviews (domains: reviews, reviews:9080)\n",
        "  1. reviews-jason (",
        "routing.yaml:38:5): no match\n",
        "       match[0].headers[\"end-user\"] [{\"exact\":\"jason\"}]: \"bob\" is not exact \"jason\"\n",
        "  2. reviews-default (",
        "routing.yaml:44:5): MATCHED (no match conditions: every request)\n",
        "decision: rule reviews-default at ",
        "  envoy route: reviews-default\n",
        "  cluster: outbound|9080|v1|reviews (endpoints: 127.0.0.1:9082)\n",
        "  fault: none\n",
        "  timeout: 10s\n",
        "  retries: 2 on connect-failure,refused-stream,retriable-status-codes (503), 3s per try\n",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
    let jason = ok_text(&[
        "-f",
        &bookinfo,
        "--host",
        "reviews:9080",
        "-H",
        "end-user: jason",
    ]);
    assert!(
        jason.contains("1. reviews-jason (") && jason.contains("MATCHED (match[0])"),
        "{jason}"
    );
    assert!(
        !jason.contains("reviews-default"),
        "rules after the match are not tried: {jason}"
    );
    assert!(
        jason.contains("cluster: outbound|9080|v2|reviews"),
        "{jason}"
    );
}

#[test]
fn json_is_the_same_as_data() {
    let bookinfo = repo("examples/bookinfo");
    let e = ok_json(&[
        "-f",
        &bookinfo,
        "--host",
        "reviews",
        "--mesh",
        "-H",
        "end-user: bob",
    ]);
    assert_eq!(e["listener"]["name"], "listener_9080");
    assert_eq!(e["virtual_host"]["name"], "default.reviews");
    assert_eq!(e["outcome"], "upstream");
    let rules = e["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0]["name"], "reviews-jason");
    assert_eq!(rules[0]["matched"], false);
    let miss = &rules[0]["misses"][0];
    assert_eq!(miss["field"], "headers[\"end-user\"]");
    assert_eq!(miss["reason"], "\"bob\" is not exact \"jason\"");
    assert_eq!(miss["condition"], serde_json::json!({"exact": "jason"}));
    assert!(
        rules[0]["at"]
            .as_str()
            .expect("at")
            .ends_with("routing.yaml:38:5")
    );
    let d = &e["decision"];
    assert_eq!(d["rule"], "reviews-default");
    assert_eq!(d["envoy_route"], "reviews-default");
    assert_eq!(d["action"]["type"], "cluster");
    assert_eq!(d["action"]["cluster"], "outbound|9080|v1|reviews");
    assert_eq!(d["timeout"], "10s");
    assert_eq!(d["retries"]["attempts"], 2);

    // A gateway path no rule takes: a 404, still explained (exit 0).
    let e = ok_json(&[
        "-f",
        &bookinfo,
        "--host",
        "bookinfo.example.com",
        "--gateway",
        "bookinfo-gateway",
        "--path",
        "/admin",
    ]);
    assert_eq!(e["listener"]["port"], 8080);
    assert_eq!(e["outcome"], "no_route");
    assert_eq!(e["rules"][0]["misses"].as_array().expect("misses").len(), 5);
    assert_eq!(
        e["rules"][0]["misses"][1]["reason"],
        "\"/admin\" is not prefix \"/static\""
    );
}

#[test]
fn sticky_split_names_the_key_and_the_canarys_own_pick() {
    let demo = repo("examples/demo");
    for user in ["alice", "gina", "kim", "u-17"] {
        let e = ok_json(&[
            "-f",
            &demo,
            "--host",
            "ratings",
            "-H",
            &format!("end-user: {user}"),
        ]);
        let action = &e["decision"]["action"];
        assert_eq!(action["type"], "split");
        assert_eq!(action["members"][0]["weight"], 90);
        assert_eq!(action["members"][1]["percent"], 10.0);
        assert_eq!(action["sticky"]["source"], "header end-user");
        assert_eq!(action["sticky"]["key"], user);
        let point = sluice_core::canary::sticky_point("ratings-canary", user.as_bytes());
        let index = sluice_core::canary::locate(&[90, 10], point).expect("a member");
        let want = ["outbound|9080|v1|ratings", "outbound|9080|v2|ratings"][index];
        assert_eq!(action["sticky"]["member"], want, "{user}");
    }
    let text = ok_text(&["-f", &demo, "--host", "ratings"]);
    assert!(
        text.contains("sticky on header end-user: this request has no key"),
        "{text}"
    );
    let text = ok_text(&["-f", &demo, "--host", "reviews", "-H", "x-chaos: abort"]);
    assert!(
        text.contains("fault: abort 500 with probability 100%"),
        "{text}"
    );
    let text = ok_text(&["-f", &demo, "--host", "reviews", "-H", "x-chaos: delay"]);
    assert!(
        text.contains("fault: delay 1s with probability 100%"),
        "{text}"
    );
}

#[test]
fn unusable_requests_and_inputs_have_their_exit_codes() {
    let bookinfo = repo("examples/bookinfo");
    let run = explain(&["-f", &bookinfo, "--host", "reviews"]);
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("served on ports 8080, 9080: pass --port"),
        "{err}"
    );
    let run = explain(&["-f", &bookinfo, "--host", "reviews", "--port", "1234"]);
    assert_eq!(run.status.code(), Some(2));
    let run = explain(&["-f", &bookinfo, "--host", "x", "--gateway", "nope"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("no Gateway \"nope\""));
    let run = explain(&["-f", &bookinfo, "--host", "x", "-H", "no-colon"]);
    assert_eq!(run.status.code(), Some(2));
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [r]\n  http:\n  - route:\n    - destination: {host: nowhere}\n",
    )
    .expect("write");
    let run = explain(&["-f", &bad.display().to_string(), "--host", "r"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("SL301"));
}

#[test]
fn the_builder_readme_quotes_the_output_as_it_is() {
    let readme = std::fs::read_to_string(repo("builder/README.md")).expect("builder/README.md");
    let block = readme
        .split("```console\n$ sluice explain ")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("builder/README.md has a ```console block of sluice explain");
    let (command, quoted) = block
        .split_once('\n')
        .expect("a command line and its output");
    // The command as written, run from the repository root (paths in the output are relative).
    let mut args: Vec<String> = Vec::new();
    for (i, part) in command.split('\'').enumerate() {
        if i % 2 == 1 {
            args.push(part.to_owned());
        } else {
            args.extend(part.split_whitespace().map(str::to_owned));
        }
    }
    let run = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("explain")
        .args(&args)
        .current_dir(repo(""))
        .output()
        .expect("runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&run.stdout), quoted, "{args:?}");
}

#[test]
fn a_scheduled_split_shows_its_first_step_and_picks_with_it() {
    let mesh = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: shop}\nspec:\n  hosts: [shop]\n  ports: [{number: 8000, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 127.0.0.1, labels: {version: v1}}, {address: 127.0.0.2, labels: {version: v2}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: shop}\nspec:\n  host: shop\n  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: shop\n  annotations:\n    sluice.dev/canary: |\n      rollout:\n        sticky: {header: end-user}\n        schedule:\n          steps:\n          - {weights: [70, 30], hold: 30s}\n          - {weights: [0, 100], hold: 0s}\nspec:\n  hosts: [shop]\n  http:\n  - name: rollout\n    route:\n    - {destination: {host: shop, subset: v1}, weight: 90}\n    - {destination: {host: shop, subset: v2}, weight: 10}\n";
    let options = sluice::Options {
        wasm: sluice::WasmModules::NotRead,
        ..sluice::Options::default()
    };
    for user in ["alice", "bob", "carol", "dave"] {
        let request = sluice::explain::Request {
            host: "shop".into(),
            headers: vec![("end-user".into(), user.into())],
            ..Default::default()
        };
        let e = sluice::explain::explain(
            &sluice::Inputs::from_text("mesh.yaml", mesh),
            &options,
            &request,
        )
        .expect("explained");
        let json = serde_json::to_value(&e).expect("JSON");
        let action = &json["decision"]["action"];
        assert_eq!(action["schedule"], true);
        assert_eq!(action["members"][0]["weight"], 70);
        assert_eq!(action["members"][1]["weight"], 30);
        let point = sluice_core::canary::sticky_point("rollout", user.as_bytes());
        let index = sluice_core::canary::locate(&[70, 30], point).expect("a member");
        let want = ["outbound|8000|v1|shop", "outbound|8000|v2|shop"][index];
        assert_eq!(action["sticky"]["member"], want, "{user}");
        assert!(sluice::explain::to_text(&e).contains("(scheduled: weights of the first step"));
    }
}
