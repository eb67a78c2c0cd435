//! waggle's PromQL against Prometheus 2.42 on the same samples: every case in
//! `tests/promql/cases.txt`, as instant queries at two times and as a range query, must give
//! equal results (values within 1e-9 relative, NaN equal to NaN, identical label sets and
//! timestamps) or fail with the same error type.
//!
//! Prometheus's answers are also kept in `tests/promql/golden.json`, so the comparison runs
//! without Prometheus too. With Prometheus present (always in CI), waggle is compared with it
//! live and the golden file must still agree; `WAGGLE_BLESS=1` rewrites the golden file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use waggle_tests::prom::{self, Prometheus, Waggle, T0_MS};

fn cases() -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("promql/cases.txt");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// (name, query-string parameters) of each evaluation mode.
fn modes(query: &str) -> Vec<(String, Vec<(&'static str, String)>)> {
    let secs = |ms: i64| format!("{}", ms as f64 / 1000.0);
    let instant_a = T0_MS + 50 * 60_000;
    let instant_b = T0_MS + 31 * 60_000 + 2_500;
    vec![
        (
            format!("instant@A|{query}"),
            vec![("query", query.to_owned()), ("time", secs(instant_a))],
        ),
        (
            format!("instant@B|{query}"),
            vec![("query", query.to_owned()), ("time", secs(instant_b))],
        ),
        (
            format!("range|{query}"),
            vec![
                ("query", query.to_owned()),
                ("start", secs(T0_MS + 40 * 60_000)),
                ("end", secs(T0_MS + 50 * 60_000)),
                ("step", "10".to_owned()),
            ],
        ),
    ]
}

fn ask(base: &str, params: &[(&'static str, String)]) -> Value {
    let path = if params.iter().any(|(k, _)| *k == "step") {
        "query_range"
    } else {
        "query"
    };
    let resp = prom::client()
        .get(format!("{base}/api/v1/{path}"))
        .query(params)
        .send()
        .unwrap();
    let text = resp.text().unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{base}: not JSON ({e}): {text}"))
}

fn num(v: &Value) -> f64 {
    match v.as_str() {
        Some("NaN") => f64::NAN,
        Some("+Inf") => f64::INFINITY,
        Some("-Inf") => f64::NEG_INFINITY,
        Some(s) => s.parse().unwrap_or(f64::NAN),
        None => v.as_f64().unwrap_or(f64::NAN),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn point(a: &Value, b: &Value) -> Result<(), String> {
    let (ta, tb) = (a[0].as_f64(), b[0].as_f64());
    if ta != tb {
        return Err(format!("timestamp {a} vs {b}"));
    }
    if !close(num(&a[1]), num(&b[1])) {
        return Err(format!("value {} vs {} at {}", a[1], b[1], a[0]));
    }
    Ok(())
}

/// Series keyed by their canonical label JSON.
fn keyed(result: &Value) -> BTreeMap<String, Value> {
    result
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| (s["metric"].to_string(), s.clone()))
        .collect()
}

/// Compares a waggle answer with Prometheus's; `Err` describes the first difference.
fn compare(query: &str, want: &Value, got: &Value) -> Result<(), String> {
    if want["status"] != got["status"] {
        return Err(format!(
            "status: prometheus {} ({}), waggle {} ({})",
            want["status"], want["error"], got["status"], got["error"]
        ));
    }
    if want["status"] == "error" {
        return if want["errorType"] == got["errorType"] {
            Ok(())
        } else {
            Err(format!(
                "errorType {} vs {}",
                want["errorType"], got["errorType"]
            ))
        };
    }
    let (w, g) = (&want["data"], &got["data"]);
    if w["resultType"] != g["resultType"] {
        return Err(format!(
            "resultType {} vs {}",
            w["resultType"], g["resultType"]
        ));
    }
    match w["resultType"].as_str() {
        Some("scalar") | Some("string") => point(&w["result"], &g["result"]),
        Some("vector") => {
            let (wv, gv) = (keyed(&w["result"]), keyed(&g["result"]));
            if wv.keys().ne(gv.keys()) {
                return Err(format!(
                    "series differ:\n  prometheus {:?}\n  waggle     {:?}",
                    wv.keys().collect::<Vec<_>>(),
                    gv.keys().collect::<Vec<_>>()
                ));
            }
            for (k, s) in &wv {
                point(&s["value"], &gv[k]["value"]).map_err(|e| format!("{k}: {e}"))?;
            }
            // sort() and sort_desc() promise an order of values (ties may fall either way).
            if query.starts_with("sort") {
                let vals = |r: &Value| {
                    r.as_array()
                        .into_iter()
                        .flatten()
                        .map(|s| num(&s["value"][1]))
                        .collect::<Vec<_>>()
                };
                let (a, b) = (vals(&w["result"]), vals(&g["result"]));
                if a.iter().zip(&b).any(|(x, y)| !close(*x, *y)) {
                    return Err(format!("order of values {a:?} vs {b:?}"));
                }
            }
            Ok(())
        }
        Some("matrix") => {
            let (wm, gm) = (keyed(&w["result"]), keyed(&g["result"]));
            if wm.keys().ne(gm.keys()) {
                return Err(format!(
                    "series differ:\n  prometheus {:?}\n  waggle     {:?}",
                    wm.keys().collect::<Vec<_>>(),
                    gm.keys().collect::<Vec<_>>()
                ));
            }
            for (k, s) in &wm {
                let (a, b) = (
                    s["values"].as_array().cloned().unwrap_or_default(),
                    gm[k]["values"].as_array().cloned().unwrap_or_default(),
                );
                if a.len() != b.len() {
                    let ts = |v: &[Value]| {
                        v.iter()
                            .map(|p| p[0].to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    return Err(format!(
                        "{k}: {} points vs {}\n  prometheus {}\n  waggle     {}",
                        a.len(),
                        b.len(),
                        ts(&a),
                        ts(&b)
                    ));
                }
                for (pa, pb) in a.iter().zip(&b) {
                    point(pa, pb).map_err(|e| format!("{k}: {e}"))?;
                }
            }
            Ok(())
        }
        other => Err(format!("unexpected resultType {other:?}")),
    }
}

#[test]
fn promql_matches_prometheus_2_42() {
    let golden_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("promql/golden.json");
    let bless = std::env::var_os("WAGGLE_BLESS").is_some();
    let prometheus = match prom::binary() {
        Some(b) => Some(Prometheus::start(&b).unwrap()),
        None => {
            assert!(std::env::var_os("CI").is_none(), "CI must compare with Prometheus 2.42: install Debian's prometheus package (see .ci/run)");
            eprintln!("prometheus not found: comparing with tests/promql/golden.json only");
            None
        }
    };
    let waggle = Waggle::start(&[]).unwrap();
    let data = prom::dataset();
    prom::remote_write_dataset(&format!("{}/api/v1/write", waggle.ingest_base()), &data).unwrap();
    if let Some(p) = &prometheus {
        prom::remote_write_dataset(&format!("{}/api/v1/write", p.base()), &data).unwrap();
    }

    let mut golden: BTreeMap<String, Value> = std::fs::read_to_string(&golden_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let mut failures = Vec::new();
    let mut stale_golden = Vec::new();
    let mut compared = 0;
    for query in cases() {
        for (name, params) in modes(&query) {
            let got = ask(&waggle.base(), &params);
            let want = match &prometheus {
                Some(p) => {
                    let live = ask(&p.base(), &params);
                    if bless {
                        golden.insert(name.clone(), live.clone());
                    } else if let Some(g) = golden.get(&name) {
                        if let Err(e) = compare(&query, &live, g) {
                            stale_golden.push(format!("{name}: {e}"));
                        }
                    } else {
                        stale_golden.push(format!("{name}: missing from golden.json"));
                    }
                    live
                }
                None => match golden.get(&name) {
                    Some(g) => g.clone(),
                    None => {
                        failures.push(format!(
                            "{name}: no golden answer (run with Prometheus and WAGGLE_BLESS=1)"
                        ));
                        continue;
                    }
                },
            };
            compared += 1;
            if let Err(e) = compare(&query, &want, &got) {
                failures.push(format!("{name}\n    {e}"));
            }
        }
    }
    if bless {
        std::fs::write(
            &golden_path,
            serde_json::to_string_pretty(&golden).unwrap() + "\n",
        )
        .unwrap();
    }
    println!("compared {compared} evaluations; {} differ", failures.len());
    assert!(
        stale_golden.is_empty(),
        "golden.json disagrees with live Prometheus (rebless):\n{}",
        stale_golden.join("\n")
    );
    assert!(
        failures.is_empty(),
        "{} of {compared} evaluations differ from Prometheus 2.42:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
