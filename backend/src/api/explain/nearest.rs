//! When a selector matches nothing and more than one matcher is to blame: the nearest series of
//! that metric (the one failing the fewest matchers) and every label in which it differs, with
//! the values that do exist.

use promql_parser::label::{MatchOp, Matcher};

use super::{closest, short, Budget, SPENT};
use crate::db::Lock;
use crate::labels::METRIC_NAME;
use crate::store::SeriesId;

/// Series compared under one read lock, so ingest never waits behind a long comparison.
const CHUNK: usize = 1024;

/// How one label of the nearest series fails its matcher.
fn differs(m: &Matcher, v: &str) -> String {
    let (name, want) = (&m.name, short(&m.value));
    match (&m.op, v.is_empty()) {
        (MatchOp::Equal, true) => format!("{name} is not set, not {want:?}"),
        (MatchOp::Equal, false) => format!("{name} is {:?}, not {want:?}", short(v)),
        (MatchOp::NotEqual, _) => {
            format!("{name} is {:?}, which {name}!={want:?} excludes", short(v))
        }
        (MatchOp::Re(_), true) => format!("{name} is not set, so it does not match {want:?}"),
        (MatchOp::Re(_), false) => format!("{name} {:?} does not match {want:?}", short(v)),
        (MatchOp::NotRe(_), _) => format!(
            "{name} {:?} matches {want:?}, which {name}!~ excludes",
            short(v)
        ),
    }
}

/// The nearest series of metric `name` to the matchers `ms`, and how it differs; `None` when the
/// metric has no series (or every one was compared away by the budget).
pub(super) fn nearest(
    lock: &Lock,
    shown: &str,
    ms: &[Matcher],
    name: &str,
    budget: &mut Budget,
) -> Option<String> {
    let ids: Vec<SeriesId> = lock
        .read()
        .select(&[Matcher::new(MatchOp::Equal, METRIC_NAME, name)]);
    let others: Vec<&Matcher> = ms.iter().filter(|m| m.name != METRIC_NAME).collect();
    // (how many matchers fail, which ones with the series' value)
    let mut best: Option<Vec<(usize, String)>> = None;
    let mut complete = true;
    'chunks: for chunk in ids.chunks(CHUNK) {
        let store = lock.read();
        for id in chunk {
            if !budget.spend(others.len() as u64 + 1) {
                complete = false;
                break 'chunks;
            }
            let pairs = store.label_pairs(*id);
            let fails: Vec<(usize, String)> = others
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    let v = pairs
                        .iter()
                        .find(|(k, _)| *k == m.name)
                        .map_or("", |(_, v)| *v);
                    (!m.is_match(v)).then(|| (i, v.to_owned()))
                })
                .collect();
            if best.as_ref().is_none_or(|b| fails.len() < b.len()) {
                best = Some(fails);
            }
        }
    }
    let fails = best.filter(|f| !f.is_empty())?;
    let parts: Vec<String> = fails.iter().map(|(i, v)| differs(others[*i], v)).collect();
    let values: Vec<String> = fails
        .iter()
        .map(|(i, _)| {
            let m = others[*i];
            let vals = lock.read().label_values(&m.name, Some(&ids));
            if vals.is_empty() {
                format!("no {name} series has a {} label", m.name)
            } else {
                format!("{} is one of {}", m.name, closest(vals, &m.value, budget))
            }
        })
        .collect();
    Some(format!(
        "{shown} matched no series; the nearest {name} series differs in {} label(s): {}. Among {} {name} series, {}{}",
        fails.len(),
        parts.join("; "),
        ids.len(),
        values.join("; "),
        if complete {
            String::new()
        } else {
            format!(" {SPENT}")
        }
    ))
}
