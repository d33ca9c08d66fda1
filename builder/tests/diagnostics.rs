//! The messages for typical mistakes: `file:line:col: error[SL301]: Kind/name: field.path: message`
//! plus a `hint:`, one snapshot per mistake. Every case must fail generation (nothing written).

use sluice::{Inputs, Options, WasmModules, generate};

/// A valid mesh the cases start from: reviews (v1, v2) and a gateway.
const BASE: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: 9082}, labels: {version: v1}}
  - {address: 127.0.0.1, ports: {http: 9083}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public}
spec:
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [reviews.example.com]
---
";

fn options() -> Options {
    Options {
        wasm: WasmModules::Reference("wasm".into()),
        ..Options::default()
    }
}

/// Diagnostics for BASE followed by `mistake` (in file `mistake.yaml`).
fn diagnose(mistake: &str) -> String {
    let mut inputs = Inputs::from_text("base.yaml", BASE);
    inputs.files.push(sluice::SourceFile {
        name: "mistake.yaml".into(),
        text: mistake.into(),
    });
    match generate(&inputs, &options()) {
        Ok(_) => panic!("expected errors for:\n{mistake}"),
        Err(d) => {
            assert!(d.has_errors());
            d.to_string()
        }
    }
}

#[test]
fn base_mesh_is_valid() {
    let output = generate(&Inputs::from_text("base.yaml", BASE), &options());
    assert!(
        output.is_ok(),
        "{}",
        output.err().map(|d| d.to_string()).unwrap_or_default()
    );
}

const VS_HEAD: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n";

macro_rules! case {
    ($name:ident, $yaml:expr) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(diagnose(&$yaml));
        }
    };
}

case!(
    unknown_field_with_suggestion,
    format!(
        "{VS_HEAD}  http:\n  - mach:\n    - uri: {{prefix: /}}\n    route:\n    - destination: {{host: reviews}}\n"
    )
);
case!(
    wrong_type,
    format!(
        "{VS_HEAD}  http:\n  - route:\n    - destination: {{host: reviews}}\n      weight: ninety\n"
    )
);
case!(
    unknown_subset,
    format!("{VS_HEAD}  http:\n  - route:\n    - destination: {{host: reviews, subset: v3}}\n")
);
case!(
    unknown_gateway,
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: edge}\nspec:\n  hosts: [reviews.example.com]\n  gateways: [pubilc]\n  http:\n  - route:\n    - destination: {host: reviews}\n"
);
case!(
    unknown_destination_host,
    format!("{VS_HEAD}  http:\n  - route:\n    - destination: {{host: reveiws}}\n")
);
case!(
    host_without_endpoints,
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ratings}\nspec:\n  hosts: [ratings]\n  ports: [{number: 9080, name: http, protocol: HTTP}]\n  resolution: STATIC\n"
);
case!(
    bad_regex,
    format!(
        "{VS_HEAD}  http:\n  - match:\n    - uri: {{regex: '/items/(unclosed'}}\n    route:\n    - destination: {{host: reviews}}\n"
    )
);
case!(
    duplicate_resource_name,
    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n"
);
case!(
    duplicate_subset_name,
    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews-more}\nspec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v1, labels: {version: v2}}\n"
);
case!(
    negative_and_zero_weights,
    format!(
        "{VS_HEAD}  http:\n  - route:\n    - destination: {{host: reviews, subset: v1}}\n      weight: -10\n    - destination: {{host: reviews, subset: v2}}\n      weight: 110\n  - route:\n    - destination: {{host: reviews, subset: v1}}\n      weight: 0\n    - destination: {{host: reviews, subset: v2}}\n      weight: 0\n"
    )
);
case!(
    bad_durations,
    format!(
        "{VS_HEAD}  http:\n  - route:\n    - destination: {{host: reviews}}\n    timeout: 5sec\n    retries: {{attempts: 3, perTryTimeout: '2', retryOn: '5xx,gateway-eror'}}\n"
    )
);
case!(
    unsupported_istio_field,
    format!(
        "{VS_HEAD}  http:\n  - route:\n    - destination: {{host: reviews}}\n    delegate: {{name: reviews-routes}}\n    match: [{{sourceLabels: {{app: web}}}}]\n"
    )
);
case!(
    invalid_yaml,
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: broken\nspec: {}\n"
);
case!(
    static_endpoint_is_a_hostname,
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext}\nspec:\n  hosts: [api.example.com]\n  ports: [{number: 443, name: https, protocol: HTTPS}]\n  resolution: STATIC\n  endpoints: [{address: api.example.com}]\n"
);
case!(
    host_not_exposed_by_gateway,
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: edge}\nspec:\n  hosts: [shop.example.com]\n  gateways: [public]\n  http:\n  - route:\n    - destination: {host: reviews}\n"
);
case!(
    unknown_kind_and_api_version,
    "apiVersion: networking.istio.io/v1\nkind: Virtualservice\nmetadata: {name: a}\nspec: {}\n---\napiVersion: v1\nkind: ServiceEntry\nmetadata: {name: b}\nspec: {}\n"
);

#[test]
fn all_problems_are_reported_not_just_the_first() {
    let text = diagnose(&format!(
        "{VS_HEAD}  gateways: [nope]\n  http:\n  - mach: []\n    route:\n    - destination: {{host: reveiws}}\n    timeout: 1x\n"
    ));
    assert!(text.contains("unknown field `mach`"), "{text}");
    assert!(text.contains("unknown gateway"), "{text}");
    assert!(text.contains("unknown unit"), "{text}");
    assert!(text.ends_with("errors; nothing was written\n"), "{text}");
}
