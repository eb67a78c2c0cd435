//! `waggle analyze --check` on the shipped examples (no errors) and on broken copies of them,
//! each problem reported against the metric or webhook it belongs to.

use std::path::{Path, PathBuf};
use std::process::Command;

use waggle::analyze::doctor::{doctor, Finding, Level};
use waggle::analyze::{Manifests, Options};
use waggle_tests::hooks::Receiver;
use waggle_tests::prom::Waggle;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The webhook names a Canary file declares, so each can be pointed at the local receiver.
fn hook_names(text: &str) -> Vec<String> {
    let mut m = Manifests::default();
    m.add_yaml("c", text).expect("parses");
    m.canaries
        .iter()
        .flat_map(|c| c.spec.analysis.webhooks.iter().map(|w| w.name.clone()))
        .collect()
}

#[test]
fn the_shipped_examples_check_clean() {
    let w = Waggle::start(&[]).expect("waggle starts");
    let hooks = Receiver::start();
    let cases = [
        (
            "istio/metric-templates.yaml",
            "istio/examples/podinfo-canary.yaml",
            "istio",
            "/api/v1",
        ),
        (
            "istio/metric-templates.yaml",
            "istio/examples/podinfo-development.yaml",
            "istio",
            "/flagger",
        ),
        (
            "istio/metric-templates.yaml",
            "istio/examples/podinfo-production.yaml",
            "istio",
            "/flagger",
        ),
        (
            "istio/metric-templates.yaml",
            "istio/examples/podinfo-multi-provider.yaml",
            "istio",
            "/flagger",
        ),
        (
            "kuma/metric-templates.yaml",
            "kuma/examples/podinfo-canary.yaml",
            "kuma",
            "/flagger",
        ),
        (
            "kuma/metric-templates.yaml",
            "kuma/examples/podinfo-canary-templates.yaml",
            "kuma",
            "/flagger",
        ),
    ];
    for (templates, canary, mesh, prefix) in cases {
        let server = if prefix == "/flagger" {
            format!("{}/flagger", w.base())
        } else {
            w.base()
        };
        let mut cmd = Command::new(waggle_tests::waggle_binary());
        cmd.args([
            "analyze",
            "--check",
            "--templates-use-metrics-server",
            "-mesh-provider",
            mesh,
        ])
        .args(["--metrics-server", &server, "-f"])
        .arg(root().join(templates))
        .arg("-f")
        .arg(root().join(canary));
        for name in hook_names(&read(canary)) {
            cmd.arg("--webhook-override")
                .arg(format!("{name}={}", hooks.url("/ok")));
        }
        let out = cmd.output().expect("run waggle analyze --check");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{canary}:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains(" 0 error(s)")
                || text.starts_with("checking") && text.contains("\n0 error(s)"),
            "{canary}:\n{text}"
        );
        // An empty store: every waggle query is run and says why it has no value.
        assert!(
            text.contains("has no value for it now") && text.contains("matched no series"),
            "{canary}:\n{text}"
        );
        if !hook_names(&read(canary)).is_empty() {
            assert!(
                text.contains("accepts connections at") && text.contains("never POSTs"),
                "{text}"
            );
        }
    }
    assert!(
        hooks.received("/ok").is_empty(),
        "--check never calls a webhook"
    );
}

fn broken(edit: impl Fn(String) -> String) -> Vec<Finding> {
    let w = Waggle::start(&[]).expect("waggle starts");
    let mut m = Manifests::default();
    m.add_yaml(
        "metric-templates.yaml",
        &read("istio/metric-templates.yaml"),
    )
    .expect("templates");
    m.add_yaml(
        "canary.yaml",
        &edit(read("istio/examples/podinfo-production.yaml")),
    )
    .expect("canary");
    let o = Options {
        metrics_server: w.base(),
        templates_use_metrics_server: true,
        mesh_provider: "istio".into(),
        skip_webhooks: false,
        ..Options::default()
    };
    doctor(&m, None, &o).findings
}

#[track_caller]
fn error_about<'f>(f: &'f [Finding], subject: &str) -> &'f Finding {
    match f
        .iter()
        .find(|x| x.subject.starts_with(subject) && x.level == Level::Error)
    {
        Some(x) => x,
        None => panic!("no error about {subject}: {f:#?}"),
    }
}

#[test]
fn broken_copies_are_reported_by_name() {
    // The shipped file is fine except for its loadtester hosts, which resolve only in a cluster.
    let f = broken(|s| s);
    assert!(
        !f.iter()
            .any(|x| x.level == Level::Error && x.subject.starts_with("metric")),
        "{f:#?}"
    );
    assert!(error_about(&f, "webhook load-test (rollout)")
        .text
        .contains("\"flagger-loadtester.prod\" did not resolve"));
    assert!(error_about(&f, "webhook acceptance-test (pre-rollout)")
        .text
        .contains("--webhook-override acceptance-test="));

    let f = broken(|s| s.replace("name: waggle-latency-p99", "name: waggle-latency-p999"));
    let e = error_about(&f, "metric latency-p99");
    assert!(
        e.text
            .contains("templateRef waggle-latency-p999.istio-system does not exist")
            && e.text.contains("no file given holds"),
        "{e:?}"
    );

    let f = broken(|s| s.replace("namespace: istio-system", "namespace: prod"));
    let e = error_about(&f, "metric latency-p99");
    assert!(
        e.text.contains("waggle-latency-p99.prod does not exist")
            && e.text.contains("set templateRef.namespace: istio-system"),
        "{e:?}"
    );

    let f = broken(|s| {
        s.replacen(
            "          namespace: istio-system\n        interval: 1m\n",
            "          namespace: istio-system\n",
            1,
        )
    });
    let e = error_about(&f, "metric latency-p99");
    assert!(
        e.text.contains("interval is not set") && e.text.contains("`[]`"),
        "{e:?}"
    );

    let f = broken(|s| {
        s.replace(
            "        interval: 1m\n        thresholdRange:\n          min: 99.5",
            "        interval: 1s\n        thresholdRange:\n          min: 99.5",
        )
    });
    assert!(error_about(&f, "metric request-success-rate")
        .text
        .contains("cannot hold two samples"));

    let f = broken(|s| s.replace("timeout: 5s", "timeout: 5 seconds"));
    assert!(error_about(&f, "webhook load-test")
        .text
        .contains("time: unknown unit \" seconds\" in duration \"5 seconds\""));
}

#[test]
fn warnings_do_not_fail_the_check_and_values_are_shown() {
    let w = Waggle::start(&[]).expect("waggle starts");
    let hooks = Receiver::start();
    let mut m = Manifests::default();
    m.add_yaml(
        "c.yaml",
        &format!(
            "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {{name: podinfo, namespace: test}}\nspec:\n  targetRef: {{kind: Deployment, name: podinfo}}\n  analysis:\n    interval: 5s\n    stepWeight: 10\n    metrics:\n    - name: request-duration\n      interval: 1m\n      thresholdRange: {{max: 0.5}}\n    - name: answer\n      query: vector(42)\n      thresholdRange: {{max: 50}}\n    webhooks:\n    - {{name: load-test, url: '{}', timeout: 15s}}\n",
            hooks.url("/ok")
        ),
    )
    .expect("canary");
    let o = Options {
        metrics_server: w.base(),
        mesh_provider: "istio".into(),
        ..Options::default()
    };
    let r = doctor(&m, None, &o);
    assert_eq!(r.count(Level::Error), 0, "{}", r.render());
    let text = r.render();
    for want in [
        "warning  analysis.interval: 5s is under 10s: Flagger runs the analysis every 10s",
        "warning  analysis.threshold: not set",
        "warning  metric request-duration: max 0.5 looks like seconds",
        "did you mean 500?",
        "ok       metric answer: renders, parses and answers 42",
        "warning  webhooks: the rollout webhooks' timeouts add up to 15s, not under analysis.interval (10s)",
        "ok       webhook load-test (rollout): ",
    ] {
        assert!(text.contains(want), "{want}\n---\n{text}");
    }
    assert!(hooks.received("/ok").is_empty());
}
