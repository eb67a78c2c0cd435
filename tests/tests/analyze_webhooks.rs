//! Flagger's webhooks in `waggle analyze`, against a real local receiver: what each answer reads
//! as (Flagger's error text and the plain reason), what each type does to the loop, and the
//! command's `--skip-webhooks` and `--webhook-override`.

use waggle::analyze::webhook::{call, Payload, Webhook};
use waggle::analyze::{Analysis, Manifests, Options, Outcome};
use waggle_tests::hooks::{refused_url, Receiver, FAIL_BODY, FORBIDDEN_BODY};

fn hook(url: &str) -> Webhook {
    Webhook {
        name: "load-test".into(),
        kind: "rollout".into(),
        url: url.into(),
        timeout: None,
        metadata: None,
        retries: None,
        mute_alert: false,
        disable_tls: false,
    }
}

fn payload() -> Payload {
    Payload {
        name: "podinfo".into(),
        namespace: "test".into(),
        phase: "Progressing".into(),
        checksum: "abc".into(),
        metadata: None,
    }
}

/// (url, timeout, retries, Flagger's error or None for a pass, words the plain reason holds)
type Case<'a> = (String, Option<&'a str>, i64, Option<String>, Vec<String>);

#[test]
fn each_answer_reads_as_flagger_reads_it_and_says_what_flagger_hides() {
    let r = Receiver::start();
    let refused = refused_url();
    let u = |p: &str| r.url(p);
    let cases: Vec<Case<'_>> = vec![
        (u("/ok"), None, 0, None, vec!["HTTP 200 OK".into()]),
        (u("/created"), None, 0, None, vec!["HTTP 201 Created".into()]),
        (u("/accepted"), None, 0, None, vec!["HTTP 202 Accepted".into(), "only in the hook's own log".into()]),
        (u("/nocontent"), None, 0, Some(String::new()), vec!["HTTP 204 No Content".into(), "only 200, 201 and 202".into()]),
        (u("/forbidden"), None, 0, Some(FORBIDDEN_BODY.into()), vec!["HTTP 403 Forbidden".into(), FORBIDDEN_BODY.into()]),
        (u("/unimplemented"), None, 0, Some("not here".into()), vec!["HTTP 501 Not Implemented".into()]),
        (
            u("/fail"),
            None,
            1,
            Some(format!("POST {} giving up after 2 attempt(s): unexpected HTTP status 500 Internal Server Error", u("/fail"))),
            vec!["after 2 attempt(s)".into(), FAIL_BODY.into(), "drops a 500 body".into()],
        ),
        (u("/busy"), None, 0, Some(format!("POST {} giving up after 1 attempt(s)", u("/busy"))), vec!["HTTP 429".into()]),
        (
            u("/hang"),
            Some("1s"),
            0,
            Some(format!("POST {0} giving up after 1 attempt(s): Post \"{0}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)", u("/hang"))),
            vec!["within 1s".into(), "each attempt".into()],
        ),
        (
            refused.clone(),
            None,
            0,
            Some(format!("POST {refused} giving up after 1 attempt(s): Post \"{refused}\": dial tcp {}: connect: connection refused", refused.trim_start_matches("http://").trim_end_matches('/'))),
            vec!["refused".into(), "nothing listens".into()],
        ),
        (
            "http://flagger-loadtester.nowhere.invalid/".into(),
            None,
            0,
            Some("POST http://flagger-loadtester.nowhere.invalid/ giving up after 1 attempt(s): Post \"http://flagger-loadtester.nowhere.invalid/\": dial tcp: lookup flagger-loadtester.nowhere.invalid: no such host".into()),
            vec!["1 attempt(s): the host name \"flagger-loadtester.nowhere.invalid\" did not resolve".into(), "--webhook-override load-test=".into()],
        ),
        (u("/ok"), Some("soon"), 0, Some("time: invalid duration \"soon\"".into()), vec!["not a Go duration".into(), "without calling it".into()]),
    ];
    for (url, timeout, retries, error, plain) in cases {
        let mut h = hook(&url);
        h.timeout = timeout.map(str::to_owned);
        h.retries = Some(retries);
        let got = call(&h, &payload());
        assert_eq!(got.error, error, "{url} {timeout:?}");
        for p in plain {
            assert!(got.plain.contains(&p), "{url}: {:?} lacks {p:?}", got.plain);
        }
    }
    assert_eq!(
        r.received("/fail").len(),
        2,
        "retries: 1 makes two attempts"
    );
    assert_eq!(r.received("/unimplemented").len(), 1, "501 is not retried");
    // The invalid timeout never reached the receiver: /ok was called once, by the first case.
    assert_eq!(r.received("/ok").len(), 1);
    let first = &r.received("/ok")[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.content_type, "application/json");
    assert_eq!(
        first.body,
        serde_json::json!({"name":"podinfo","namespace":"test","phase":"Progressing","checksum":"abc"})
    );
}

/// A Canary with no metrics, so only its webhooks decide.
fn canary(hooks: &str, threshold: u32) -> Manifests {
    let mut m = Manifests::default();
    m.add_yaml(
        "canary.yaml",
        &format!(
            "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {{name: podinfo, namespace: test}}\nspec:\n  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: podinfo}}\n  analysis:\n    interval: 1m\n    threshold: {threshold}\n    stepWeight: 50\n    maxWeight: 100\n    webhooks:\n{hooks}"
        ),
    )
    .expect("the canary parses");
    m
}

fn opts() -> Options {
    Options {
        metrics_server: "http://127.0.0.1:9".into(),
        mesh_provider: "istio".into(),
        ..Options::default()
    }
}

/// Steps until the outcome (at most `n` times): every decision word and every event.
fn run(m: &Manifests, o: &Options, n: usize) -> (Vec<&'static str>, Vec<String>, Analysis) {
    let mut a = Analysis::new(m, None, o).expect("the analysis starts");
    let (mut words, mut events) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let it = a.step();
        words.push(it.decision.word());
        events.extend(it.messages);
        if a.outcome().is_some() {
            break;
        }
    }
    (words, events, a)
}

fn phases(r: &Receiver, path: &str) -> Vec<String> {
    r.received(path)
        .iter()
        .map(|x| x.body["phase"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn failing_pre_rollout_and_rollout_hooks_count_as_failed_checks_until_rollback() {
    let r = Receiver::start();
    let m = canary(
        &format!("    - {{name: smoke, type: pre-rollout, url: '{}'}}\n    - {{name: cleanup, type: post-rollout, url: '{}'}}\n", r.url("/fail"), r.url("/ok")),
        2,
    );
    let (words, events, a) = run(&m, &opts(), 6);
    assert_eq!(words, ["halt", "halt", "rollback"]);
    assert_eq!(a.outcome(), Some(Outcome::RolledBack));
    let halt = format!("Halt podinfo.test advancement pre-rollout check smoke failed POST {} giving up after 1 attempt(s): unexpected HTTP status 500 Internal Server Error", r.url("/fail"));
    assert_eq!(
        events.iter().filter(|e| **e == halt).count(),
        2,
        "{events:#?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e.starts_with("Starting canary analysis for podinfo.test"))
            .count(),
        2,
        "Flagger starts over each interval while the weight is 0"
    );
    assert!(
        events.contains(&"Rolling back podinfo.test failed checks threshold reached 2".to_owned())
    );
    assert_eq!(
        phases(&r, "/ok"),
        ["Failed"],
        "post-rollout runs once, after the rollback"
    );
    assert!(events.contains(&"Post-rollout check cleanup passed".to_owned()));

    // A rollout hook that answers 204: Flagger's event ends with the (empty) body.
    let m = canary(
        &format!(
            "    - {{name: load-test, url: '{}'}}\n",
            r.url("/nocontent")
        ),
        1,
    );
    let (words, events, _) = run(&m, &opts(), 6);
    assert_eq!(
        words,
        ["start", "halt", "rollback"],
        "rollout hooks run from the second interval"
    );
    assert!(
        events
            .contains(&"Halt podinfo.test advancement external check load-test failed ".to_owned()),
        "{events:#?}"
    );
}

#[test]
fn confirm_gates_hold_without_counting_and_report_once() {
    let r = Receiver::start();
    let m = canary(
        &format!(
            "    - {{name: approve, type: confirm-rollout, url: '{}'}}\n    - {{name: step, type: confirm-traffic-increase, url: '{}'}}\n    - {{name: promote, type: confirm-promotion, url: '{}'}}\n",
            r.url("/closed/2"),
            r.url("/closed/1"),
            r.url("/closed/2/promote"),
        ),
        1,
    );
    let (words, events, a) = run(&m, &opts(), 20);
    assert_eq!(
        words,
        ["wait", "wait", "scale-up", "wait", "start", "advance", "wait", "wait", "promote"],
        "{events:#?}"
    );
    assert_eq!(a.outcome(), Some(Outcome::Promoted));
    let count = |s: &str| events.iter().filter(|e| e.as_str() == s).count();
    assert_eq!(
        count("Halt podinfo.test advancement waiting for approval approve"),
        1
    );
    assert_eq!(count("Confirm-rollout check approve passed"), 1);
    assert_eq!(count("New revision detected! Scaling up podinfo.test"), 1);
    assert_eq!(
        count("Halt podinfo.test advancement waiting for traffic increase approval step"),
        1
    );
    assert_eq!(
        count("Halt podinfo.test advancement waiting for promotion approval promote"),
        1,
        "recorded once, then held silently"
    );
    assert_eq!(count("Confirm-promotion check promote passed"), 1);
    assert_eq!(
        phases(&r, "/closed/2"),
        ["Initialized", "Waiting", "Waiting"]
    );
    // The traffic-increase gate runs before every step, the promotion's included, but not
    // while the promotion waits.
    assert_eq!(phases(&r, "/closed/1").len(), 4);
    assert_eq!(phases(&r, "/closed/2/promote"), ["Progressing"; 3]);
}

#[test]
fn a_rollback_hook_rolls_back_at_once_and_a_quiet_one_changes_nothing() {
    let r = Receiver::start();
    let m = canary(
        &format!(
            "    - {{name: abort, type: rollback, url: '{}'}}\n",
            r.url("/ok")
        ),
        5,
    );
    let (words, events, a) = run(&m, &opts(), 5);
    assert_eq!(words, ["rollback"]);
    assert_eq!(a.outcome(), Some(Outcome::RolledBack));
    assert_eq!(
        events,
        [
            "Rollback check abort passed",
            "Rolling back podinfo.test manual webhook invoked",
            "Canary failed! Scaling down podinfo.test"
        ]
    );
    let m = canary(
        &format!(
            "    - {{name: abort, type: rollback, url: '{}'}}\n",
            r.url("/forbidden")
        ),
        5,
    );
    let (words, events, _) = run(&m, &opts(), 5);
    assert_eq!(words, ["start", "advance", "promote"]);
    assert_eq!(
        events
            .iter()
            .filter(|e| *e == "Rollback hook abort not signaling a rollback")
            .count(),
        3
    );
}

#[test]
fn event_hooks_receive_every_event_and_post_rollout_failures_change_nothing() {
    let r = Receiver::start();
    let m = canary(
        &format!(
            "    - {{name: audit, type: event, url: '{}', metadata: {{team: a, eventType: mine}}}}\n    - {{name: notify, type: post-rollout, url: '{}'}}\n",
            r.url("/accepted"),
            r.url("/fail")
        ),
        1,
    );
    let (words, events, a) = run(&m, &opts(), 5);
    assert_eq!(words, ["start", "advance", "promote"]);
    assert_eq!(
        a.outcome(),
        Some(Outcome::Promoted),
        "a failed post-rollout hook does not change the outcome"
    );
    let failed = format!("Post-rollout hook notify failed POST {} giving up after 1 attempt(s): unexpected HTTP status 500 Internal Server Error", r.url("/fail"));
    assert!(events.contains(&failed), "{events:#?}");
    let sent = r.received("/accepted");
    let messages: Vec<&str> = sent
        .iter()
        .map(|x| {
            x.body["metadata"]["eventMessage"]
                .as_str()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        messages,
        events.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let kind = |s: &str| {
        sent.iter()
            .find(|x| x.body["metadata"]["eventMessage"] == s)
            .map(|x| x.body["metadata"]["eventType"].clone())
    };
    assert_eq!(kind(&failed), Some("Warning".into()));
    assert_eq!(
        kind("Advance podinfo.test canary weight 50"),
        Some("Normal".into()),
        "the Canary's eventType cannot override Flagger's"
    );
    assert!(sent.iter().all(|x| x.body["metadata"]["team"] == "a"));
    assert!(sent.iter().all(|x| x.body["metadata"]["timestamp"]
        .as_str()
        .is_some_and(|t| t.len() >= 13 && t.parse::<u64>().is_ok())));
    assert_eq!(
        sent.last().map(|x| x.body["phase"].clone()),
        Some("Succeeded".into())
    );
}

#[test]
fn skip_and_override_change_what_is_called_and_say_so() {
    let r = Receiver::start();
    let m = canary(
        "    - {name: load-test, url: 'http://flagger-loadtester.test/'}\n",
        1,
    );
    let o = Options {
        webhook_overrides: vec![("load-test".into(), r.url("/ok"))],
        ..opts()
    };
    let (words, _, a) = run(&m, &o, 5);
    assert_eq!(words, ["start", "advance", "promote"]);
    assert_eq!(r.received("/ok").len(), 2);
    assert_eq!(
        a.notes(),
        [format!(
            "--webhook-override load-test: calling {} instead of http://flagger-loadtester.test/",
            r.url("/ok")
        )]
    );

    let (words, _, a) = run(
        &m,
        &Options {
            skip_webhooks: true,
            ..opts()
        },
        5,
    );
    assert_eq!(words, ["start", "advance", "promote"]);
    assert!(
        a.notes()[0].contains("--skip-webhooks: not calling load-test (rollout)"),
        "{:?}",
        a.notes()
    );

    let e = Analysis::new(
        &m,
        None,
        &Options {
            webhook_overrides: vec![("load-tst".into(), r.url("/ok"))],
            ..opts()
        },
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        e.contains("no webhook named \"load-tst\" (it has: load-test)"),
        "{e}"
    );
}

#[test]
fn the_command_prints_flaggers_message_and_the_plain_reason() {
    let r = Receiver::start();
    let dir = std::env::temp_dir().join(format!("waggle-hooks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let file = dir.join("canary.yaml");
    std::fs::write(
        &file,
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: podinfo, namespace: test}\nspec:\n  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}\n  analysis:\n    interval: 1m\n    threshold: 1\n    stepWeight: 50\n    webhooks:\n    - {name: load-test, url: 'http://flagger-loadtester.test/'}\n",
    )
    .expect("write the canary");
    let out = std::process::Command::new(waggle_tests::waggle_binary())
        .args(["analyze", "-f"])
        .arg(&file)
        .args(["--interval", "10ms", "--webhook-override"])
        .arg(format!("load-test={}", r.url("/fail")))
        .output()
        .expect("run waggle analyze");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "rolled back: {text}");
    for want in [
        format!("--webhook-override load-test: calling {} instead of http://flagger-loadtester.test/", r.url("/fail")),
        format!("Halt podinfo.test advancement external check load-test failed POST {} giving up after 1 attempt(s): unexpected HTTP status 500 Internal Server Error", r.url("/fail")),
        format!("webhook load-test (rollout) FAILED: HTTP 500 Internal Server Error after 1 attempt(s), with body {FAIL_BODY:?}"),
        "ROLLBACK".to_owned(),
    ] {
        assert!(text.contains(&want), "{want}\n---\n{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
