//! What waggle ships for a cluster, fed through waggle's own parsers: every WasmPlugin's
//! `pluginConfig` through the filter's configuration parser (no warnings), every Canary with
//! every MetricTemplate through `waggle analyze`'s rendering, every rendered query, dashboard
//! and alert expression through the PromQL parser, and every embedded `waggle.toml` through
//! `waggle serve`'s settings. Schema validation is scripts/validate-manifests.

use std::path::{Path, PathBuf};

use waggle::analyze::{builtin, Analysis, Manifests, Options};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn docs(path: &Path) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

fn parses(query: &str) {
    if let Err(e) = waggle::promql::parse(query) {
        panic!("{e}\nin {query}");
    }
}

#[test]
fn every_plugin_config_parses_without_warnings() {
    let mut seen = 0;
    for f in yaml_files("istio") {
        for d in docs(&f) {
            if d["kind"].as_str() != Some("WasmPlugin") {
                continue;
            }
            let json = serde_json::to_vec(&d["spec"]["pluginConfig"]).unwrap();
            let parsed = waggle_filter::config::Config::parse(&json)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert_eq!(parsed.warnings, Vec::<String>::new(), "{}", f.display());
            assert_eq!(
                parsed.config.cluster,
                waggle_filter::config::DEFAULT_CLUSTER,
                "the Service deploy/ creates"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 2, "the namespaced and the mesh-wide WasmPlugin");
    // Kuma: the configuration inside each MeshProxyPatch's filter, addressed to the cluster
    // Kuma names the backend's ingest port by.
    let mut patches = 0;
    for f in yaml_files("kuma") {
        for d in docs(&f) {
            if d["kind"].as_str() != Some("MeshProxyPatch") {
                continue;
            }
            let value = d["spec"]["default"]["appendModifications"][0]["httpFilter"]["value"]
                .as_str()
                .unwrap();
            let filter: serde_yaml::Value = serde_yaml::from_str(value).unwrap();
            let config = filter["typedConfig"]["config"]["configuration"]["value"]
                .as_str()
                .unwrap();
            let parsed = waggle_filter::config::Config::parse(config.as_bytes())
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert_eq!(parsed.warnings, Vec::<String>::new(), "{}", f.display());
            assert_eq!(parsed.config.cluster, waggle_tests::kuma::INGEST_CLUSTER);
            patches += 1;
        }
    }
    assert_eq!(patches, 2, "inbound and outbound MeshProxyPatch");
}

#[test]
fn every_canary_renders_with_the_shipped_templates_into_valid_promql() {
    let kuma_templates =
        std::fs::read_to_string(root().join("kuma/metric-templates.yaml")).unwrap();
    let mut kuma = 0;
    for f in yaml_files("kuma/examples") {
        let mut m = Manifests::default();
        m.add_yaml("metric-templates.yaml", &kuma_templates)
            .unwrap();
        m.add_yaml(
            &f.display().to_string(),
            &std::fs::read_to_string(&f).unwrap(),
        )
        .unwrap();
        if m.canaries.is_empty() {
            continue;
        }
        let opts = Options {
            metrics_server: "http://127.0.0.1:9".into(),
            templates_use_metrics_server: false,
            interval: None,
            mesh_provider: "kuma".into(),
            ..Default::default()
        };
        let a = Analysis::new(&m, None, &opts).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for (_, q) in a.queries() {
            assert!(q.contains("podinfo-canary_test_svc_"), "{q}");
            parses(&q);
        }
        kuma += 1;
    }
    assert_eq!(kuma, 2, "the built-in and the template Kuma canaries");
    let templates = std::fs::read_to_string(root().join("istio/metric-templates.yaml")).unwrap();
    let mut canaries = 0;
    for f in yaml_files("istio/examples") {
        let mut m = Manifests::default();
        m.add_yaml("metric-templates.yaml", &templates).unwrap();
        m.add_yaml(
            &f.display().to_string(),
            &std::fs::read_to_string(&f).unwrap(),
        )
        .unwrap();
        let opts = Options {
            metrics_server: "http://127.0.0.1:9".into(),
            templates_use_metrics_server: false,
            interval: None,
            mesh_provider: "istio".into(),
            ..Default::default()
        };
        let a = Analysis::new(&m, None, &opts).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for (name, q) in a.queries() {
            if name.starts_with("datadog") {
                continue;
            }
            parses(&q);
        }
        canaries += 1;
    }
    assert!(canaries >= 4, "{canaries}");
    // Every template, alone, with Flagger's variables and the KPI's.
    let mut m = Manifests::default();
    m.add_yaml("metric-templates.yaml", &templates).unwrap();
    assert_eq!(m.templates.len(), 6);
    for t in &m.templates {
        let model = waggle::analyze::template::Model {
            name: "podinfo".into(),
            namespace: "test".into(),
            target: "podinfo".into(),
            interval: "1m".into(),
            variables: [
                ("counter".into(), "shop_orders_total".into()),
                ("workload_label".into(), "app".into()),
            ]
            .into(),
            ..Default::default()
        };
        parses(&waggle::analyze::template::render(&t.spec.query, &model).unwrap());
        assert_eq!(
            t.spec.provider.address.as_deref(),
            Some("http://waggle.waggle-system:9090/flagger")
        );
    }
    let ws = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let sr = m.template("waggle-success-rate", "istio-system").unwrap();
    assert_eq!(
        ws(&sr.spec.query),
        ws(builtin::REQUEST_SUCCESS_RATE),
        "the template is Flagger's built-in query"
    );
}

#[test]
fn dashboard_and_alert_expressions_parse() {
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("istio/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut n = 0;
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let e = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$namespace", "test")
                .replace("$target", "podinfo");
            parses(&e);
            n += 1;
        }
    }
    assert!(n >= 10, "{n}");
    for d in docs(&root().join("istio/prometheusrule.yaml")) {
        for g in d["spec"]["groups"].as_sequence().unwrap() {
            for r in g["rules"].as_sequence().unwrap() {
                parses(r["expr"].as_str().unwrap());
            }
        }
    }
}

#[test]
fn embedded_settings_are_accepted_by_waggle_serve() {
    for f in [
        "deploy/common/waggle.toml",
        "deploy/overlays/dev/waggle.toml",
        "deploy/overlays/prod/waggle.toml",
        "deploy/overlays/scale/waggle.toml",
    ] {
        let args = waggle::config::ServeArgs {
            config: Some(root().join(f)),
            ..Default::default()
        };
        let s = args.resolve().unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(s.listen.port(), 9090, "{f}");
        assert_eq!(s.ingest_listen.port(), 9091, "{f}");
    }
}
