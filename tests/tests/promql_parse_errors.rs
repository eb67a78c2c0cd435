//! Parse errors as Prometheus 2.42 writes them (`1:16: parse error: unclosed left parenthesis`):
//! every query in `tests/promql/parse_errors.tsv` sent to waggle and, when it is installed
//! (always in CI), to Prometheus itself, whose answers the file must still hold;
//! `WAGGLE_BLESS=1` rewrites it from Prometheus.

use std::path::PathBuf;

use serde_json::Value;
use waggle_tests::prom::{self, Prometheus, Waggle};

const PREFIX: &str = "invalid parameter \"query\": ";

fn error_of(base: &str, query: &str) -> String {
    let v: Value = prom::client()
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", query), ("time", "1767228000")])
        .send()
        .and_then(|r| r.json())
        .unwrap_or_default();
    assert_eq!(v["errorType"], "bad_data", "{query}: {v}");
    v["error"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches(PREFIX)
        .to_owned()
}

#[test]
fn parse_errors_match_prometheus_2_42() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("promql/parse_errors.tsv");
    let text = std::fs::read_to_string(&path).unwrap();
    let prometheus = match prom::binary() {
        Some(b) => Some(Prometheus::start(&b).unwrap()),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must compare with Prometheus 2.42"
            );
            None
        }
    };
    let bless = std::env::var_os("WAGGLE_BLESS").is_some();
    let waggle = Waggle::start(&[]).unwrap();
    let (mut out, mut wrong, mut stale) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        let Some((q, want)) = line.split_once('\t').filter(|_| !line.starts_with('#')) else {
            out.push(line.to_owned());
            continue;
        };
        let want = match &prometheus {
            Some(p) => {
                let live = error_of(&p.base(), q);
                if live != want && !bless {
                    stale.push(format!("{q}\n  file {want}\n  live {live}"));
                }
                live
            }
            None => want.to_owned(),
        };
        let got = error_of(&waggle.base(), q);
        if got != want {
            wrong.push(format!("{q}\n  prometheus {want}\n  waggle     {got}"));
        }
        out.push(format!("{q}\t{want}"));
    }
    if bless {
        std::fs::write(&path, out.join("\n") + "\n").unwrap();
    }
    assert!(
        stale.is_empty(),
        "parse_errors.tsv disagrees with Prometheus (rebless):\n{}",
        stale.join("\n")
    );
    assert!(
        wrong.is_empty(),
        "{} differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
