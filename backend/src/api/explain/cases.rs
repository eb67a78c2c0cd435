//! The explanations, case by case, against a small store.

use std::time::Instant;

use super::why_empty;
use crate::db::Lock;
use crate::promql::Options;
use crate::store::{Kind, Limits, Store};

const NOW: i64 = 10_000_000;

fn store() -> Lock {
    let mut s = Store::new(Limits::default());
    let series: [(&str, &str, &str, i64); 3] = [
        ("istio_requests_total", "podinfo-primary", "200", NOW - 1000),
        ("istio_requests_total", "podinfo-canary", "200", NOW - 1000),
        // Last seen 20 minutes before the query.
        (
            "istio_old_requests_total",
            "podinfo-canary",
            "200",
            NOW - 1_200_000,
        ),
    ];
    for (name, workload, code, at) in series {
        let id = s
            .series(
                &[
                    ("__name__", name),
                    ("reporter", "destination"),
                    ("destination_workload_namespace", "test"),
                    ("destination_workload", workload),
                    ("response_code", code),
                ],
                Kind::Counter { per_unit: 1.0 },
            )
            .unwrap();
        s.add(id, at - 5000, 1, NOW);
        s.add(id, at, 1, NOW);
    }
    Lock::new(s)
}

fn opts() -> Options {
    Options {
        lookback_ms: 300_000,
        subquery_step_ms: 60_000,
        max_samples: 1_000_000,
        deadline: Instant::now() + std::time::Duration::from_secs(10),
    }
}

#[test]
fn each_kind_of_empty_answer_is_explained() {
    let lock = store();
    // (query, words the reasons hold, words they must not hold)
    let cases: [(&str, &[&str], &[&str]); 10] = [
        (
            r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="prod",destination_workload=~"podinfo"}[1m]))"#,
            &[
                "differs in 2 label(s)",
                r#"destination_workload_namespace is "test", not "prod""#,
                r#"does not match "podinfo""#,
                r#"destination_workload is one of "podinfo-canary", "podinfo-primary""#,
            ],
            &["no single label matcher is to blame"],
        ),
        (
            r#"istio_requests_total{destination_workload_namespace="prod",zone="eu"}"#,
            &[
                r#"zone is not set, not "eu""#,
                "no istio_requests_total series has a zone label",
                r#"is "test", not "prod""#,
            ],
            &[],
        ),
        (
            r#"istio_requests_total{destination_workload!="podinfo-primary",destination_workload_namespace="prod",response_code!="200"}"#,
            &[
                "differs in 2 label(s)",
                r#"response_code is "200", which response_code!="200" excludes"#,
            ],
            &[],
        ),
        (
            r#"rate(istio_old_requests_total{destination_workload="podinfo-canary"}[1m])"#,
            &[
                "the newest sample is at",
                "m before the query time",
                "no traffic recently",
            ],
            &["matched no series"],
        ),
        (
            r#"sum(rate(istio_requests_total{reporter="destination",response_code=~"5.*"}[1m])) / sum(rate(istio_requests_total{reporter="destination"}[1m])) * 100"#,
            &[
                "the ratio is empty only because its numerator",
                r#"write the numerator as (sum(rate(istio_requests_total{reporter="destination",response_code=~"5.*"}[1m])) or on() vector(0))"#,
                r#"their response_code values are "200""#,
            ],
            &[],
        ),
        // The division found under a call, parentheses, a unary minus and an aggregation.
        (
            r#"clamp_max((sum(rate(istio_requests_total{response_code=~"5.*"}[1m])) / sum(rate(istio_requests_total[1m]))), 1)"#,
            &["the ratio is empty only because its numerator"],
            &[],
        ),
        (
            r#"-sum(rate(istio_requests_total{response_code=~"5.*"}[1m]) / rate(istio_requests_total[1m]))"#,
            &["the ratio is empty only because its numerator"],
            &[],
        ),
        // Only a division, and only when the denominator has data.
        (
            r#"sum(rate(istio_requests_total{response_code=~"5.*"}[1m])) + sum(rate(istio_requests_total[1m]))"#,
            &[r#"their response_code values are "200""#],
            &["the ratio is empty"],
        ),
        (
            r#"sum(rate(istio_requests_total{response_code=~"5.*"}[1m])) / sum(rate(istio_missing_total[1m]))"#,
            &[r#"no metric is named "istio_missing_total""#],
            &["the ratio is empty"],
        ),
        (
            r#"sum(rate(istio_requests_total{reporter="destination"}[1m])) / sum(rate(istio_missing_total[1m]))"#,
            &[r#"no metric is named "istio_missing_total""#],
            &["numerator"],
        ),
    ];
    for (q, want, never) in cases {
        let e = crate::promql::parse(q).unwrap();
        let why = why_empty(&lock, &e, (NOW, NOW), opts(), NOW).join(" | ");
        for w in want {
            assert!(why.contains(w), "{q}\n  lacks {w:?}\n  in {why}");
        }
        for n in never {
            assert!(!why.contains(n), "{q}\n  holds {n:?}\n  in {why}");
        }
    }
}
