//! Binary operators: arithmetic, comparison (filtering or `bool`), set operators, and vector
//! matching with `on`/`ignoring`/`group_left`/`group_right`, as Prometheus 2.42 does them.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::engine::ops::*;
use super::engine::Evaluator;
use super::value::{exec, Result, Sample, Value};
use crate::labels::{Labels, METRIC_NAME};

/// `(value, keep)`: for comparisons, `keep` says whether the comparison held.
pub(crate) fn elem(op: u16, l: f64, r: f64) -> Option<(f64, bool)> {
    Some(match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_MOD => (l % r, true),
        T_POW => (l.powf(r), true),
        T_ATAN2 => (l.atan2(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        _ => return None,
    })
}

fn is_comparison(op: u16) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

fn drops_name(op: u16) -> bool {
    matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_POW | T_MOD)
}

pub fn eval(ev: &Evaluator<'_>, b: &BinaryExpr, ts: i64) -> Result<Value> {
    let op = b.op.id();
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = ev.eval(&b.lhs, ts)?;
    let rhs = ev.eval(&b.rhs, ts)?;
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => {
            let Some((v, keep)) = elem(op, l, r) else {
                return exec(format!("operator {} not allowed between scalars", b.op));
            };
            Ok(Value::Scalar(if is_comparison(op) {
                f64::from(u8::from(keep))
            } else {
                v
            }))
        }
        (Value::Vector(v), Value::Scalar(s)) => vector_scalar(op, v, s, false, return_bool, ts),
        (Value::Scalar(s), Value::Vector(v)) => vector_scalar(op, v, s, true, return_bool, ts),
        (Value::Vector(l), Value::Vector(r)) => {
            let m = b.modifier.clone().unwrap_or_else(|| {
                BinModifier::default().with_card(VectorMatchCardinality::OneToOne)
            });
            match op {
                T_LAND => Ok(Value::Vector(and_unless(l, r, &m, true))),
                T_LUNLESS => Ok(Value::Vector(and_unless(l, r, &m, false))),
                T_LOR => Ok(Value::Vector(or(l, r, &m))),
                _ => vector_vector(op, l, r, &m, return_bool, ts).map(Value::Vector),
            }
        }
        (l, r) => exec(format!(
            "binary operator {} between {} and {} is not supported",
            b.op,
            l.type_name(),
            r.type_name()
        )),
    }
}

fn vector_scalar(
    op: u16,
    v: Vec<Sample>,
    s: f64,
    swap: bool,
    return_bool: bool,
    ts: i64,
) -> Result<Value> {
    let mut out = Vec::with_capacity(v.len());
    for sample in v {
        let (l, r) = if swap { (s, sample.v) } else { (sample.v, s) };
        let Some((mut value, mut keep)) = elem(op, l, r) else {
            return exec("operator not allowed between a vector and a scalar");
        };
        // A comparison always keeps the vector's value, even with the scalar on the left.
        if is_comparison(op) && swap {
            value = r;
        }
        if return_bool {
            value = f64::from(u8::from(keep));
            keep = true;
        }
        if keep {
            let labels = if drops_name(op) || return_bool {
                sample.labels.without_name()
            } else {
                sample.labels
            };
            out.push(Sample {
                labels,
                t: ts,
                v: value,
            });
        }
    }
    Ok(Value::Vector(out))
}

/// The labels two samples match on.
fn signature(l: &Labels, matching: &Option<LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(names)) => l.keep(&names.labels),
        Some(LabelModifier::Exclude(names)) => l.drop(&names.labels),
        None => l.drop(&[]),
    }
}

fn and_unless(l: Vec<Sample>, r: Vec<Sample>, m: &BinModifier, and: bool) -> Vec<Sample> {
    let right: HashSet<Labels> = r
        .iter()
        .map(|s| signature(&s.labels, &m.matching))
        .collect();
    l.into_iter()
        .filter(|s| right.contains(&signature(&s.labels, &m.matching)) == and)
        .collect()
}

fn or(l: Vec<Sample>, r: Vec<Sample>, m: &BinModifier) -> Vec<Sample> {
    let left: HashSet<Labels> = l
        .iter()
        .map(|s| signature(&s.labels, &m.matching))
        .collect();
    let mut out = l;
    out.extend(
        r.into_iter()
            .filter(|s| !left.contains(&signature(&s.labels, &m.matching))),
    );
    out
}

fn vector_vector(
    op: u16,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    m: &BinModifier,
    return_bool: bool,
    ts: i64,
) -> Result<Vec<Sample>> {
    // Prometheus returns before matching when a side is empty, so duplicates on the other side
    // are an error only at steps where both sides have samples.
    if lhs.is_empty() || rhs.is_empty() {
        return Ok(Vec::new());
    }
    let one_to_many = matches!(m.card, VectorMatchCardinality::OneToMany(_));
    let (lhs, rhs) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
    let mut right: HashMap<Labels, &Sample> =
        HashMap::with_capacity_and_hasher(rhs.len(), Default::default());
    for rs in &rhs {
        let sig = signature(&rs.labels, &m.matching);
        if let Some(dup) = right.get(&sig) {
            let side = if one_to_many { "left" } else { "right" };
            let group = match &m.matching {
                Some(LabelModifier::Include(names)) => rs.labels.keep(&names.labels),
                _ => sig.clone(),
            };
            return exec(format!(
                "found duplicate series for the match group {group} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                rs.labels, dup.labels
            ));
        }
        right.insert(sig, rs);
    }
    let include: &[String] = m.card.labels().map_or(&[], |l| &l.labels);
    let mut matched: HashMap<Labels, HashSet<Labels>> = HashMap::default();
    let mut out = Vec::new();
    for ls in &lhs {
        let sig = signature(&ls.labels, &m.matching);
        let Some(rs) = right.get(&sig) else { continue };
        let (vl, vr) = if one_to_many {
            (rs.v, ls.v)
        } else {
            (ls.v, rs.v)
        };
        let Some((mut value, keep)) = elem(op, vl, vr) else {
            return exec("operator not allowed between vectors");
        };
        if return_bool {
            value = f64::from(u8::from(keep));
        } else if !keep {
            continue;
        }
        let mut metric = ls.labels.clone();
        if drops_name(op) {
            metric.remove(METRIC_NAME);
        }
        if matches!(m.card, VectorMatchCardinality::OneToOne) {
            match &m.matching {
                Some(LabelModifier::Include(names)) => metric = metric.keep(&names.labels),
                Some(LabelModifier::Exclude(names)) => {
                    for n in &names.labels {
                        metric.remove(n);
                    }
                }
                None => {}
            }
        }
        for name in include {
            match rs.labels.get(name) {
                Some(v) => metric.set(name, v),
                None => metric.remove(name),
            }
        }
        if return_bool {
            metric.remove(METRIC_NAME);
        }
        let seen = matched.entry(sig).or_default();
        if matches!(m.card, VectorMatchCardinality::OneToOne) {
            if !seen.is_empty() {
                return exec("multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)");
            }
            seen.insert(Labels::default());
        } else if !seen.insert(metric.clone()) {
            return exec("multiple matches for labels: grouping labels must ensure unique matches");
        }
        out.push(Sample {
            labels: metric,
            t: ts,
            v: value,
        });
    }
    Ok(out)
}
