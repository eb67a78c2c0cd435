//! Unit tests of the store: selection, limits, churn, raw samples, counters and retention.

use super::*;
use promql_parser::label::{MatchOp, Matcher};

fn m(name: &str, op: MatchOp, value: &str) -> Matcher {
    Matcher::new(op, name, value)
}

fn re(s: &str) -> MatchOp {
    MatchOp::Re(regex::Regex::new(&format!("^(?:{s})$")).unwrap())
}

#[test]
fn selects_with_all_four_matchers() {
    let mut s = Store::new(Limits::default());
    let a = s
        .series(
            &[("__name__", "x"), ("code", "200"), ("ns", "a")],
            Kind::Raw,
        )
        .unwrap();
    let b = s
        .series(
            &[("__name__", "x"), ("code", "503"), ("ns", "a")],
            Kind::Raw,
        )
        .unwrap();
    let c = s
        .series(&[("__name__", "x"), ("code", "404")], Kind::Raw)
        .unwrap();
    assert_eq!(
        s.series(
            &[("ns", "a"), ("code", "200"), ("__name__", "x")],
            Kind::Raw
        )
        .unwrap(),
        a,
        "label order is irrelevant"
    );
    assert_eq!(
        s.select(&[m("__name__", MatchOp::Equal, "x"), m("code", re("5.*"), "")]),
        [b]
    );
    assert_eq!(
        s.select(&[
            m("__name__", MatchOp::Equal, "x"),
            m(
                "code",
                MatchOp::NotRe(regex::Regex::new("^(?:5.*)$").unwrap()),
                ""
            )
        ]),
        [a, c]
    );
    assert_eq!(
        s.select(&[
            m("__name__", MatchOp::Equal, "x"),
            m("ns", MatchOp::NotEqual, "a")
        ]),
        [c]
    );
    assert_eq!(
        s.select(&[
            m("__name__", MatchOp::Equal, "x"),
            m("ns", MatchOp::Equal, "")
        ]),
        [c],
        "missing label matches empty"
    );
    assert_eq!(s.label_values("code", None), ["200", "404", "503"]);
    assert_eq!(s.label_names(None), ["__name__", "code", "ns"]);
}

#[test]
fn series_limit_refuses_and_counts() {
    let mut s = Store::new(Limits {
        max_series: 2,
        ..Limits::default()
    });
    s.series(&[("a", "1")], Kind::Raw).unwrap();
    s.series(&[("a", "2")], Kind::Raw).unwrap();
    assert_eq!(
        s.series(&[("a", "3")], Kind::Raw),
        Err(Refused::SeriesLimit(2))
    );
    assert!(
        s.series(&[("a", "1")], Kind::Raw).is_ok(),
        "existing series still work"
    );
    assert_eq!(s.stats.series_refused, 1);
}

#[test]
fn label_churn_does_not_grow_the_symbol_table() {
    let limits = Limits {
        retention_ms: 10_000,
        stale_after_ms: 1_000,
        ..Limits::default()
    };
    let mut s = Store::new(limits);
    let keep = s
        .series(&[("__name__", "kept"), ("job", "a")], Kind::Raw)
        .unwrap();
    for round in 0..5i64 {
        let now = round * 100_000;
        s.append(keep, now + 45_000, 1.0, now + 45_000).unwrap();
        for i in 0..2000 {
            let id = s
                .series(
                    &[("__name__", "churn"), ("pod", &format!("pod-{round}-{i}"))],
                    Kind::Raw,
                )
                .unwrap();
            s.append(id, now, 1.0, now).unwrap();
        }
        s.maintain(now + 50_000);
    }
    assert!(
        s.symbols_len() < 1100,
        "{} symbols after churn",
        s.symbols_len()
    );
    assert!(s.stats.symbol_compactions > 0);
    assert_eq!(
        s.labels(keep).to_string(),
        r#"kept{job="a"}"#,
        "surviving series keep their labels"
    );
    assert_eq!(
        s.select(&[Matcher::new(MatchOp::Equal, "job", "a")]),
        [keep],
        "and stay selectable"
    );
}

#[test]
fn raw_samples_are_kept_exactly_and_validated() {
    let mut s = Store::new(Limits::default());
    let id = s.series(&[("__name__", "kpi")], Kind::Raw).unwrap();
    let now = 10_000_000;
    s.append(id, now - 1500, 1.25, now).unwrap();
    s.append(id, now - 500, f64::from_bits(STALE_NAN), now)
        .unwrap();
    assert!(matches!(
        s.append(id, now - 1000, 2.0, now),
        Err(Refused::OutOfOrder { .. })
    ));
    assert!(matches!(
        s.append(id, now - 500, 2.0, now),
        Err(Refused::Duplicate { .. })
    ));
    assert!(matches!(
        s.append(id, now - 4_000_000, 2.0, now),
        Err(Refused::TooOld { .. })
    ));
    let got = s.samples(id, 0, now, now);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], (now - 1500, 1.25));
    assert!(is_stale(got[1].1));
}

#[test]
fn counters_on_the_grid_and_retention() {
    let limits = Limits {
        retention_ms: 10_000,
        stale_after_ms: 3_000,
        ..Limits::default()
    };
    let mut s = Store::new(limits);
    let id = s
        .series(
            &[("__name__", "req_total")],
            Kind::Counter { per_unit: 2.0 },
        )
        .unwrap();
    s.add(id, 1_000, 2, 1_000);
    s.add(id, 2_400, 2, 2_500);
    assert_eq!(
        s.samples(id, 0, 3_000, 3_000),
        [(0, 0.0), (1_000, 1.0), (2_000, 2.0), (3_000, 2.0)],
        "from an implicit 0 one step before the first count"
    );
    assert_eq!(
        s.samples(id, 1_001, 3_000, 3_000).first(),
        Some(&(2_000, 2.0)),
        "window start rounds up to the grid"
    );
    s.maintain(6_000);
    assert!(
        is_stale(s.samples(id, 0, 6_000, 6_000).last().unwrap().1),
        "stale 3 s after the last event"
    );
    s.maintain(20_000);
    assert_eq!(s.series_count(), 0, "expired after retention");
    assert!(s
        .select(&[Matcher::new(MatchOp::Equal, "__name__", "req_total")])
        .is_empty());
}
