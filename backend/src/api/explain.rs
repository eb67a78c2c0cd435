//! Plain-words reasons for an empty or NaN result: which selector matched nothing and why,
//! the label values that do exist, and when the matching series last had samples. This is
//! what turns Flagger's bare "no values found" into something a user can act on.

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{Expr, VectorSelector};

use std::time::Instant;

use crate::db::Lock;
use crate::labels::METRIC_NAME;
use crate::promql::engine::duration_ms;
use crate::promql::format::timestamp;
use crate::promql::Options;
use crate::store::is_stale;

#[cfg(test)]
mod cases;
mod nearest;
mod ratio;

/// The query's time range and staleness lookback, for deciding whether a selector has data.
struct Window {
    start: i64,
    end: i64,
    lookback_ms: i64,
    now: i64,
}

/// Whether the selector matches a series with a sample in its window (false once the budget is
/// spent: the caller then says nothing rather than something unsure).
fn has_data(lock: &Lock, vs: &VectorSelector, range: i64, w: &Window, budget: &mut Budget) -> bool {
    let ids = lock.read().select(&matchers(vs));
    if !budget.spend(ids.len() as u64 + 1) {
        return false;
    }
    let window = if range > 0 { range } else { w.lookback_ms };
    let from = w.start.saturating_sub(window);
    let store = lock.read();
    ids.iter()
        .any(|id| store.has_sample(*id, from, w.end, w.now))
}

fn selectors<'e>(e: &'e Expr, out: &mut Vec<(&'e VectorSelector, i64)>) {
    match e {
        Expr::VectorSelector(vs) => out.push((vs, 0)),
        Expr::MatrixSelector(ms) => out.push((&ms.vs, duration_ms(&ms.range))),
        Expr::Aggregate(a) => {
            selectors(&a.expr, out);
            if let Some(p) = &a.param {
                selectors(p, out);
            }
        }
        Expr::Unary(u) => selectors(&u.expr, out),
        Expr::Binary(b) => {
            selectors(&b.lhs, out);
            selectors(&b.rhs, out);
        }
        Expr::Paren(p) => selectors(&p.expr, out),
        Expr::Subquery(s) => selectors(&s.expr, out),
        Expr::Call(c) => c.args.args.iter().for_each(|a| selectors(a, out)),
        _ => {}
    }
}

fn matchers(vs: &VectorSelector) -> Vec<Matcher> {
    let mut m = vs.matchers.matchers.clone();
    if let Some(n) = &vs.name {
        if !m.iter().any(|x| x.name == METRIC_NAME) {
            m.push(Matcher::new(MatchOp::Equal, METRIC_NAME, n));
        }
    }
    m
}

fn describe(m: &Matcher) -> String {
    let op = match &m.op {
        MatchOp::Equal => "=",
        MatchOp::NotEqual => "!=",
        MatchOp::Re(_) => "=~",
        MatchOp::NotRe(_) => "!~",
    };
    format!("{}{op}{:?}", m.name, short(&m.value))
}

/// Work one explanation may do (series visited, samples decoded, edit-distance cells), on
/// top of the query's own deadline: past it, reasons get shorter instead of slower.
const WORK: u64 = 2_000_000;
/// Longest prefix of a label value compared by edit distance.
const MAX_COMPARED: usize = 64;

/// The explanation's allowance of work and time.
struct Budget {
    left: u64,
    deadline: Instant,
}

impl Budget {
    /// Takes `n` units; false (and nothing left) once the work or the time is spent.
    fn spend(&mut self, n: u64) -> bool {
        if self.left < n || Instant::now() > self.deadline {
            self.left = 0;
            return false;
        }
        self.left -= n;
        true
    }

    fn spent(&self) -> bool {
        self.left == 0
    }
}

const SPENT: &str =
    "(waggle stopped looking closer: the explanation's work or time budget is spent)";

fn edit_distance(a: &str, b: &str, budget: &mut Budget) -> Option<usize> {
    let a: Vec<char> = a.chars().take(MAX_COMPARED).collect();
    let b: Vec<char> = b.chars().take(MAX_COMPARED).collect();
    if !budget.spend((a.len() as u64 + 1) * (b.len() as u64 + 1)) {
        return None;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            if let Some(c) = cur.get_mut(j + 1) {
                *c = sub.min(del).min(ins);
            }
        }
        prev = cur;
    }
    prev.last().copied()
}

/// Up to five existing values, closest to `wanted` first (in name order once the budget is
/// spent).
fn closest(values: Vec<String>, wanted: &str, budget: &mut Budget) -> String {
    let mut v: Vec<(usize, String)> = values
        .into_iter()
        .map(|x| {
            let d = if x.contains(wanted) || wanted.contains(x.as_str()) {
                Some(0)
            } else if budget.spent() {
                None
            } else {
                edit_distance(&x, wanted, budget)
            };
            (d.unwrap_or(usize::MAX), x)
        })
        .collect();
    v.sort();
    let shown: Vec<String> = v
        .iter()
        .take(5)
        .map(|(_, x)| format!("{:?}", short(x)))
        .collect();
    let more = v.len().saturating_sub(5);
    let list = if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    };
    if budget.spent() {
        format!("{list} {SPENT}")
    } else {
        list
    }
}

/// A value shown in a reason: long ones are cut, so a reason stays readable.
fn short(s: &str) -> String {
    match s.char_indices().nth(MAX_COMPARED) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn ago(ms: i64) -> String {
    let s = ms / 1000;
    if s >= 60 && s % 60 == 0 && s < 7200 {
        format!("{}m", s / 60)
    } else if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else {
        format!("{}h", s / 3600)
    }
}

/// Reasons, one per selector that explains the gap; a NaN note when every selector had data.
/// Bounded by the query's deadline and [`WORK`].
pub fn why_empty(
    lock: &Lock,
    e: &Expr,
    (start, end): (i64, i64),
    opts: Options,
    now: i64,
) -> Vec<String> {
    let mut budget = Budget {
        left: WORK,
        deadline: opts.deadline,
    };
    let mut sels = Vec::new();
    selectors(e, &mut sels);
    let mut out = Vec::new();
    let w = Window {
        start,
        end,
        lookback_ms: opts.lookback_ms,
        now,
    };
    out.extend(ratio::empty_numerator(lock, e, &w, &mut budget));
    for (vs, range) in sels {
        let ms = matchers(vs);
        let shown = if range > 0 {
            format!("{vs}[{}]", ago(range))
        } else {
            vs.to_string()
        };
        let ids = lock.read().select(&ms);
        if !budget.spend(ids.len() as u64) {
            out.push(format!("{shown} matched {} series {SPENT}", ids.len()));
            continue;
        }
        if ids.is_empty() {
            out.push(no_series(lock, &shown, &ms, &mut budget));
            continue;
        }
        let window = if range > 0 { range } else { opts.lookback_ms };
        let from = start.saturating_sub(window);
        let recent = {
            let store = lock.read();
            ids.iter().any(|id| store.has_sample(*id, from, end, now))
        };
        if !recent {
            let newest = ids
                .iter()
                .take_while(|_| budget.spend(64))
                .filter_map(|id| lock.read().newest_value_before(*id, end, now))
                .map(|(t, _)| t)
                .max();
            out.push(match newest {
                None if budget.spent() => format!("{shown} matched {} series, but none has a sample in the {} before {} {SPENT}", ids.len(), ago(window), timestamp(end)),
                None => format!("{shown} matched {} series, but none has a sample at or before {}", ids.len(), timestamp(end)),
                Some(t) => format!(
                    "{shown} matched {} series, but the newest sample is at {} ({} before the query time): the workload has had no traffic recently",
                    ids.len(),
                    timestamp(t),
                    ago(end - t)
                ),
            });
            continue;
        }
        if range > 0 {
            let mut with_two = 0;
            let mut looked = true;
            let mut samples = Vec::new();
            for id in &ids {
                samples.clear();
                lock.read()
                    .samples_into(*id, end - range, end, now, &mut samples);
                if !budget.spend(samples.len() as u64 + 1) {
                    looked = false;
                    break;
                }
                if samples.iter().filter(|(_, v)| !is_stale(*v)).count() >= 2 {
                    with_two += 1;
                    break;
                }
            }
            if looked && with_two == 0 {
                out.push(format!(
                    "{shown} matched {} series, but none has two samples in the {} window ending at {}, so rate() and friends have nothing to compute",
                    ids.len(),
                    ago(range),
                    timestamp(end)
                ));
            }
        }
    }
    if out.is_empty() {
        out.push(
            "every selector matched series with recent samples; the result is empty or NaN because of the expression itself \
             (for example 0/0 when the denominator saw no requests in the window, or label sets that do not match across an operator)"
                .to_owned(),
        );
    }
    out
}

fn no_series(lock: &Lock, shown: &str, ms: &[Matcher], budget: &mut Budget) -> String {
    let name = ms
        .iter()
        .find(|m| m.name == METRIC_NAME && matches!(m.op, MatchOp::Equal))
        .map(|m| m.value.clone());
    if let Some(n) = &name {
        let named = lock
            .read()
            .select(&[Matcher::new(MatchOp::Equal, METRIC_NAME, n)]);
        if named.is_empty() {
            let names = lock.read().label_values(METRIC_NAME, None);
            return format!(
                "{shown} matched no series: no metric is named {n:?}{}",
                if names.is_empty() {
                    " (the store is empty: is any sidecar sending events?)".to_owned()
                } else if budget.spend(names.len() as u64) {
                    format!("; closest names: {}", closest(names, n, budget))
                } else {
                    format!("; {} metric names exist {SPENT}", names.len())
                }
            );
        }
    }
    // Find a matcher whose removal lets the rest match: that one excludes everything.
    for (i, m) in ms.iter().enumerate() {
        let rest: Vec<Matcher> = ms
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, x)| x.clone())
            .collect();
        let ids = lock.read().select(&rest);
        if !budget.spend(ids.len() as u64 + 1) {
            return format!("{shown} matched no series {SPENT}");
        }
        if !ids.is_empty() {
            let values = lock.read().label_values(&m.name, Some(&ids));
            let existing = if values.is_empty() {
                format!("none of them has a {} label", m.name)
            } else {
                format!(
                    "their {} values are {}",
                    m.name,
                    closest(values, &m.value, budget)
                )
            };
            return format!(
                "{shown} matched no series: {} series match everything but {}, and {existing}",
                ids.len(),
                describe(m)
            );
        }
    }
    if let Some(n) = &name {
        if let Some(why) = nearest::nearest(lock, shown, ms, n, budget) {
            return why;
        }
    }
    format!("{shown} matched no series, and no single label matcher is to blame: check every label")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Kind, Limits, Store};

    fn opts() -> Options {
        Options {
            lookback_ms: 300_000,
            subquery_step_ms: 60_000,
            max_samples: 1_000_000,
            deadline: Instant::now() + std::time::Duration::from_secs(10),
        }
    }

    #[test]
    fn names_the_matcher_and_the_values_that_exist() {
        let mut s = Store::new(Limits::default());
        let now = 10_000_000;
        for w in ["podinfo-primary", "podinfo-canary"] {
            let id = s
                .series(
                    &[
                        ("__name__", "istio_requests_total"),
                        ("destination_workload", w),
                        ("reporter", "destination"),
                    ],
                    Kind::Counter { per_unit: 1.0 },
                )
                .unwrap();
            s.add(id, now - 1000, 1, now);
        }
        let e = crate::promql::parse(r#"sum(rate(istio_requests_total{reporter="destination",destination_workload=~"podinfo"}[1m]))"#).unwrap();
        let s = Lock::new(s);
        let w = why_empty(&s, &e, (now, now), opts(), now);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains(r#"destination_workload=~"podinfo""#),
            "{}",
            w[0]
        );
        assert!(
            w[0].contains("podinfo-canary") && w[0].contains("podinfo-primary"),
            "{}",
            w[0]
        );

        let e = crate::promql::parse("istio_request_total").unwrap();
        assert!(why_empty(&s, &e, (now, now), opts(), now)[0]
            .contains("closest names: \"istio_requests_total\""));

        let e = crate::promql::parse(
            r#"rate(istio_requests_total{destination_workload="podinfo-canary"}[1m])"#,
        )
        .unwrap();
        let w = why_empty(
            &s,
            &e,
            (now + 600_000, now + 600_000),
            opts(),
            now + 600_000,
        );
        assert!(
            w[0].contains("no traffic recently") || w[0].contains("none has two samples"),
            "{w:?}"
        );
    }
}
