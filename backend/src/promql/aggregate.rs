//! Aggregation operators with `by`/`without`, following Prometheus 2.42's accumulation order
//! (first-seen groups, plain summation, incremental mean, Go-heap `topk`/`bottomk`).

use rustc_hash::FxHashMap as HashMap;

use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::engine::ops::*;
use super::engine::Evaluator;
use super::value::{exec, Result, Sample, Value};
use crate::labels::{Labels, METRIC_NAME};

struct Group {
    labels: Labels,
    value: f64,
    mean: f64,
    count: u64,
    heap: Vec<Sample>,
}

pub fn eval(ev: &Evaluator<'_>, a: &AggregateExpr, ts: i64) -> Result<Value> {
    let op = a.op.id();
    let input = match ev.eval(&a.expr, ts)? {
        Value::Vector(v) => v,
        other => {
            return exec(format!(
                "aggregation over {} is not supported",
                other.type_name()
            ))
        }
    };
    let param = match &a.param {
        Some(p) => Some(ev.eval(p, ts)?),
        None => None,
    };
    let scalar_param = || match &param {
        Some(Value::Scalar(v)) => Ok(*v),
        _ => exec(format!("expected a scalar parameter for {}", a.op)),
    };
    let (without, mut grouping): (bool, Vec<String>) = match &a.modifier {
        Some(LabelModifier::Include(l)) => (false, l.labels.clone()),
        Some(LabelModifier::Exclude(l)) => (true, l.labels.clone()),
        None => (false, Vec::new()),
    };
    let mut k = 0usize;
    if matches!(op, T_TOPK | T_BOTTOMK) {
        let f = scalar_param()?;
        if !(-9.223_372_036_854_776e18..=9.223_372_036_854_776e18).contains(&f) {
            return exec(format!(
                "Scalar value {} overflows int64",
                super::format::go_float(f)
            ));
        }
        let kk = f as i64;
        if kk < 1 {
            return Ok(Value::Vector(Vec::new()));
        }
        k = usize::try_from(kk).unwrap_or(usize::MAX);
    }
    let q = if op == T_QUANTILE {
        scalar_param()?
    } else {
        0.0
    };
    let mut value_label = String::new();
    if op == T_COUNT_VALUES {
        value_label = match &param {
            Some(Value::String(s)) => s.clone(),
            _ => return exec("count_values needs a string parameter"),
        };
        if !crate::families::is_label_name(&value_label) {
            return exec(format!("invalid label name {value_label:?}"));
        }
        if !without {
            grouping.push(value_label.clone());
        }
    }

    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::default();
    for mut s in input {
        if op == T_COUNT_VALUES {
            s.labels.set(&value_label, &super::format::go_float(s.v));
        }
        let key = if without {
            s.labels.drop(&grouping)
        } else {
            s.labels.keep(&grouping)
        };
        let Some(&i) = index.get(&key) else {
            index.insert(key.clone(), groups.len());
            let mut g = Group {
                labels: key,
                value: s.v,
                mean: s.v,
                count: 1,
                heap: Vec::new(),
            };
            match op {
                T_STDVAR | T_STDDEV => g.value = 0.0,
                T_GROUP => g.value = 1.0,
                T_TOPK | T_BOTTOMK | T_QUANTILE => g.heap.push(s),
                _ => {}
            }
            groups.push(g);
            continue;
        };
        let Some(g) = groups.get_mut(i) else { continue };
        match op {
            T_SUM => g.value += s.v,
            T_AVG => {
                g.count += 1;
                if g.mean.is_infinite() {
                    if s.v.is_infinite() && (g.mean > 0.0) == (s.v > 0.0) {
                        continue;
                    }
                    if !s.v.is_infinite() && !s.v.is_nan() {
                        continue;
                    }
                }
                let n = g.count as f64;
                g.mean += s.v / n - g.mean / n;
            }
            T_GROUP => {}
            T_MAX => {
                if g.value < s.v || g.value.is_nan() {
                    g.value = s.v;
                }
            }
            T_MIN => {
                if g.value > s.v || g.value.is_nan() {
                    g.value = s.v;
                }
            }
            T_COUNT | T_COUNT_VALUES => g.count += 1,
            T_STDVAR | T_STDDEV => {
                g.count += 1;
                let delta = s.v - g.mean;
                g.mean += delta / g.count as f64;
                g.value += delta * (s.v - g.mean);
            }
            T_TOPK => {
                let top_lt = g.heap.first().is_some_and(|h| h.v < s.v || h.v.is_nan());
                if g.heap.len() < k || top_lt {
                    heap_offer(&mut g.heap, s, k, less_topk);
                }
            }
            T_BOTTOMK => {
                let top_gt = g.heap.first().is_some_and(|h| h.v > s.v || h.v.is_nan());
                if g.heap.len() < k || top_gt {
                    heap_offer(&mut g.heap, s, k, less_bottomk);
                }
            }
            T_QUANTILE => g.heap.push(s),
            _ => return exec(format!("aggregation {} is not supported", a.op)),
        }
    }

    let mut out = Vec::with_capacity(groups.len());
    for mut g in groups {
        let value = match op {
            T_AVG => g.mean,
            T_COUNT | T_COUNT_VALUES => g.count as f64,
            T_STDVAR => g.value / g.count as f64,
            T_STDDEV => (g.value / g.count as f64).sqrt(),
            T_TOPK | T_BOTTOMK => {
                let less = if op == T_TOPK {
                    less_topk
                } else {
                    less_bottomk
                };
                // Go's sort.Sort(sort.Reverse(heap)): not stable, but heaps are small.
                g.heap.sort_by(|x, y| {
                    if less(y, x) {
                        std::cmp::Ordering::Less
                    } else if less(x, y) {
                        std::cmp::Ordering::Greater
                    } else {
                        std::cmp::Ordering::Equal
                    }
                });
                out.extend(g.heap.into_iter().map(|s| Sample {
                    labels: s.labels,
                    t: ts,
                    v: s.v,
                }));
                continue;
            }
            T_QUANTILE => quantile(q, &mut g.heap),
            _ => g.value,
        };
        out.push(Sample {
            labels: g.labels,
            t: ts,
            v: value,
        });
    }
    // `without` drops the metric name; `by` keeps only the listed labels (never the name unless asked).
    for s in &mut out {
        if without && op != T_TOPK && op != T_BOTTOMK {
            s.labels.remove(METRIC_NAME);
        }
    }
    Ok(Value::Vector(out))
}

fn less_topk(a: &Sample, b: &Sample) -> bool {
    if a.v.is_nan() {
        return true;
    }
    a.v < b.v
}

fn less_bottomk(a: &Sample, b: &Sample) -> bool {
    if a.v.is_nan() {
        return true;
    }
    a.v > b.v
}

/// Go's `container/heap` Push/Pop as Prometheus uses them for top-k, so ties break the same way.
fn heap_offer(h: &mut Vec<Sample>, s: Sample, k: usize, less: fn(&Sample, &Sample) -> bool) {
    if h.len() == k {
        if k == 1 {
            if let Some(first) = h.first_mut() {
                *first = s;
            }
            return;
        }
        // heap.Pop: swap root with last, sift down over n-1, remove last.
        let n = h.len() - 1;
        h.swap(0, n);
        down(h, 0, n, less);
        h.pop();
    }
    h.push(s);
    let j = h.len() - 1;
    up(h, j, less);
}

fn up(h: &mut [Sample], mut j: usize, less: fn(&Sample, &Sample) -> bool) {
    while j > 0 {
        let i = (j - 1) / 2;
        if i == j || !less(&h[j], &h[i]) {
            break;
        }
        h.swap(i, j);
        j = i;
    }
}

fn down(h: &mut [Sample], i0: usize, n: usize, less: fn(&Sample, &Sample) -> bool) {
    let mut i = i0;
    loop {
        let j1 = 2 * i + 1;
        if j1 >= n {
            break;
        }
        let mut j = j1;
        let j2 = j1 + 1;
        if j2 < n && less(&h[j2], &h[j1]) {
            j = j2;
        }
        if !less(&h[j], &h[i]) {
            break;
        }
        h.swap(i, j);
        i = j;
    }
}

/// Prometheus's `quantile`: linear interpolation between the closest ranks.
pub(crate) fn quantile(q: f64, values: &mut [Sample]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| {
        if less_topk(a, b) {
            std::cmp::Ordering::Less
        } else if less_topk(b, a) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    });
    quantile_sorted(q, &values.iter().map(|s| s.v).collect::<Vec<_>>())
}

/// The interpolation step on values already sorted ascending (NaN first).
pub(crate) fn quantile_sorted(q: f64, v: &[f64]) -> f64 {
    let n = v.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    let at = |i: f64| v.get(i as usize).copied().unwrap_or(f64::NAN);
    at(lower) * (1.0 - weight) + at(upper) * weight
}
