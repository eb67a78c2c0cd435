//! Evaluates a parsed PromQL expression against the store with Prometheus 2.42's semantics.

use rustc_hash::FxHashMap as HashMap;
use std::cell::{Cell, RefCell};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use promql_parser::parser::{AtModifier, Expr, Offset, VectorSelector};
use rustc_hash::FxHashMap;

use super::value::{exec, EvalError, Result, Sample, Series, Value};
use crate::db::Lock;
use crate::labels::Labels;
use crate::store::is_stale;

/// Settings of one evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub lookback_ms: i64,
    pub subquery_step_ms: i64,
    pub max_samples: usize,
    pub deadline: Instant,
}

/// One series as selected: labels and the samples of the query's whole window.
pub(crate) struct Selected {
    pub labels: Labels,
    /// The labels without `__name__`, as most functions return them.
    pub no_name: Labels,
    pub samples: Vec<(i64, f64)>,
    /// Whether any sample is a stale marker (a window holding one must drop it).
    pub has_stale: bool,
    /// No sample is below the one before it (stale markers skipped): `rate()` over any window
    /// then needs no reset scan. Mesh counters on the 1 s grid never reset.
    pub monotonic: bool,
}

/// A range selector's samples in one window: borrowed from what was fetched, copied only when a
/// stale marker has to be dropped.
pub(crate) struct RangeSeries<'s> {
    pub labels: &'s Labels,
    pub no_name: std::borrow::Cow<'s, Labels>,
    pub points: std::borrow::Cow<'s, [(i64, f64)]>,
    pub monotonic: bool,
}

/// One query's evaluation state.
pub struct Evaluator<'a> {
    pub(crate) store: &'a Lock,
    pub(crate) now_ms: i64,
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) opts: Options,
    loaded: Cell<usize>,
    /// Per selector node (by address): everything it can need for this query, fetched once.
    cache: RefCell<FxHashMap<usize, std::rc::Rc<Vec<Selected>>>>,
    /// Per selector node (by address): the window of samples it can read, from the AST.
    windows: FxHashMap<usize, (i64, i64)>,
}

/// Longest duration the engine works with (about 36 million years): with times bounded by
/// [`MAX_TIME_MS`], any time plus or minus a few durations stays within `i64`.
pub const MAX_DURATION_MS: i64 = 1 << 60;
/// Latest (and, negated, earliest) time the engine works with, about 146 million years.
pub const MAX_TIME_MS: i64 = 1 << 62;

pub fn duration_ms(d: &std::time::Duration) -> i64 {
    i64::try_from(d.as_millis())
        .unwrap_or(i64::MAX)
        .min(MAX_DURATION_MS)
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        Some(Offset::Pos(d)) => duration_ms(d),
        Some(Offset::Neg(d)) => -duration_ms(d),
        None => 0,
    }
}

pub fn system_time_ms(t: &SystemTime) -> i64 {
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => ms(d).min(MAX_TIME_MS),
        Err(e) => -ms(e.duration()).min(MAX_TIME_MS),
    }
}

/// Where a subexpression is evaluated: the query's range, and the interval of evaluation times
/// (a subquery's steps, or one pinned time under `@`).
struct Reach {
    start: i64,
    end: i64,
    lookback: i64,
}

impl Reach {
    fn at(&self, at: &Option<AtModifier>, ts: (i64, i64)) -> (i64, i64) {
        match at {
            Some(AtModifier::Start) => (self.start, self.start),
            Some(AtModifier::End) => (self.end, self.end),
            Some(AtModifier::At(t)) => (system_time_ms(t), system_time_ms(t)),
            None => ts,
        }
    }

    /// The window each selector under `e` reads when `e` is evaluated at times `ts`, by node
    /// address: a selector under a pinned subquery reads around the pinned time, not the
    /// query's.
    fn windows(&self, e: &Expr, ts: (i64, i64), out: &mut FxHashMap<usize, (i64, i64)>) {
        let mut sel = |vs: &VectorSelector, range: i64| {
            let (lo, hi) = self.at(&vs.at, ts);
            let off = offset_ms(&vs.offset);
            let back = if range > 0 { range } else { self.lookback };
            let w = (
                lo.saturating_sub(off).saturating_sub(back),
                hi.saturating_sub(off),
            );
            let key = vs as *const VectorSelector as usize;
            let e = out.entry(key).or_insert(w);
            *e = (e.0.min(w.0), e.1.max(w.1));
        };
        match e {
            Expr::VectorSelector(vs) => sel(vs, 0),
            Expr::MatrixSelector(ms) => sel(&ms.vs, duration_ms(&ms.range)),
            Expr::Aggregate(a) => {
                self.windows(&a.expr, ts, out);
                if let Some(p) = &a.param {
                    self.windows(p, ts, out);
                }
            }
            Expr::Unary(u) => self.windows(&u.expr, ts, out),
            Expr::Binary(b) => {
                self.windows(&b.lhs, ts, out);
                self.windows(&b.rhs, ts, out);
            }
            Expr::Paren(p) => self.windows(&p.expr, ts, out),
            Expr::Subquery(s) => {
                let (lo, hi) = self.at(&s.at, ts);
                let off = offset_ms(&s.offset);
                let inner = (
                    lo.saturating_sub(off).saturating_sub(duration_ms(&s.range)),
                    hi.saturating_sub(off),
                );
                self.windows(&s.expr, inner, out);
            }
            Expr::Call(c) => c.args.args.iter().for_each(|a| self.windows(a, ts, out)),
            _ => {}
        }
    }
}

impl<'a> Evaluator<'a> {
    pub fn new(
        store: &'a Lock,
        now_ms: i64,
        start: i64,
        end: i64,
        expr: &Expr,
        opts: Options,
    ) -> Self {
        let mut windows = FxHashMap::default();
        Reach {
            start,
            end,
            lookback: opts.lookback_ms,
        }
        .windows(expr, (start, end), &mut windows);
        Self {
            store,
            now_ms,
            start,
            end,
            opts,
            loaded: Cell::new(0),
            cache: RefCell::new(FxHashMap::default()),
            windows,
        }
    }

    pub(crate) fn check_deadline(&self) -> Result<()> {
        if Instant::now() > self.opts.deadline {
            return Err(EvalError::Timeout("expression evaluation".into()));
        }
        Ok(())
    }

    /// Samples this evaluation has held so far.
    pub fn loaded(&self) -> usize {
        self.loaded.get()
    }

    /// Counts `n` more samples held in memory against `--query-max-samples`, as Prometheus
    /// counts every sample a selector loads and every point a subquery or range query makes.
    pub(crate) fn charge(&self, n: usize) -> Result<()> {
        let total = self.loaded.get().saturating_add(n);
        self.loaded.set(total);
        if total > self.opts.max_samples {
            return Err(EvalError::TooManySamples("query execution".into()));
        }
        Ok(())
    }

    /// The time a selector or subquery evaluates at: its `@` if any, else `ts`.
    pub(crate) fn at(&self, at: &Option<AtModifier>, ts: i64) -> i64 {
        match at {
            Some(AtModifier::Start) => self.start,
            Some(AtModifier::End) => self.end,
            Some(AtModifier::At(t)) => system_time_ms(t),
            None => ts,
        }
    }

    /// All series of a selector with their samples over the query's window.
    pub(crate) fn fetch(&self, vs: &VectorSelector) -> Result<std::rc::Rc<Vec<Selected>>> {
        let key = vs as *const VectorSelector as usize;
        if let Some(hit) = self.cache.borrow().get(&key) {
            return Ok(hit.clone());
        }
        // A selector not in the tree `new` saw (none today) reads the query's own window.
        let (lo, hi) = self
            .windows
            .get(&key)
            .copied()
            .unwrap_or((self.start.saturating_sub(self.opts.lookback_ms), self.end));
        let mut matchers = vs.matchers.matchers.clone();
        if let Some(name) = &vs.name {
            if !matchers
                .iter()
                .any(|m| m.name == crate::labels::METRIC_NAME)
            {
                matchers.push(promql_parser::label::Matcher::new(
                    promql_parser::label::MatchOp::Equal,
                    crate::labels::METRIC_NAME,
                    name,
                ));
            }
        }
        let before = self.loaded.get();
        let fetched = crate::db::read::fetch(self.store, &matchers, (lo, hi), self.now_ms, |n| {
            self.loaded.set(before);
            self.check_deadline()?;
            self.charge(n)
        })?;
        let out: Vec<Selected> = fetched
            .into_iter()
            .map(|f| {
                let has_stale = f.samples.iter().any(|(_, v)| is_stale(*v));
                let mut prev = f64::NEG_INFINITY;
                let monotonic = f
                    .samples
                    .iter()
                    .filter(|(_, v)| !is_stale(*v))
                    .all(|(_, v)| {
                        // A reset is `v < prev`; NaN on either side is none, as in rate().
                        let up = v.partial_cmp(&prev) != Some(std::cmp::Ordering::Less);
                        prev = *v;
                        up
                    });
                Selected {
                    no_name: f.labels.without_name(),
                    labels: f.labels,
                    samples: f.samples,
                    has_stale,
                    monotonic,
                }
            })
            .collect();
        let out = std::rc::Rc::new(out);
        self.cache.borrow_mut().insert(key, out.clone());
        Ok(out)
    }

    /// Instant selection: the newest sample in `[t - lookback, t]`, unless it is a stale marker.
    pub(crate) fn select_instant(&self, vs: &VectorSelector, ts: i64) -> Result<Vec<Sample>> {
        let t = self.at(&vs.at, ts) - offset_ms(&vs.offset);
        let series = self.fetch(vs)?;
        let mut out = Vec::new();
        for s in series.iter() {
            let i = s.samples.partition_point(|(st, _)| *st <= t);
            if let Some(&(st, v)) = i.checked_sub(1).and_then(|i| s.samples.get(i)) {
                if st >= t - self.opts.lookback_ms && !is_stale(v) {
                    out.push(Sample {
                        labels: s.labels.clone(),
                        t: st,
                        v,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Range selection: samples in `[t - range, t]`, stale markers dropped, empty series dropped.
    pub(crate) fn select_range(
        &self,
        vs: &VectorSelector,
        range: i64,
        ts: i64,
    ) -> Result<Vec<Series>> {
        let t = self.at(&vs.at, ts) - offset_ms(&vs.offset);
        let series = self.fetch(vs)?;
        let mut out = Vec::new();
        for s in series.iter() {
            let from = s.samples.partition_point(|(st, _)| *st < t - range);
            let to = s.samples.partition_point(|(st, _)| *st <= t);
            let points: Vec<(i64, f64)> = s
                .samples
                .get(from..to)
                .unwrap_or_default()
                .iter()
                .copied()
                .filter(|(_, v)| !is_stale(*v))
                .collect();
            if !points.is_empty() {
                out.push(Series {
                    labels: s.labels.clone(),
                    points,
                });
            }
        }
        Ok(out)
    }

    /// [`Evaluator::select_range`] without copying: each series' window of `fetched` (what
    /// [`Evaluator::fetch`] returned for `vs`), empty windows dropped.
    pub(crate) fn range_views<'s>(
        &self,
        fetched: &'s [Selected],
        vs: &VectorSelector,
        range: i64,
        ts: i64,
    ) -> Vec<RangeSeries<'s>> {
        use std::borrow::Cow;
        let t = self.at(&vs.at, ts) - offset_ms(&vs.offset);
        let mut out = Vec::new();
        for s in fetched {
            let from = s.samples.partition_point(|(st, _)| *st < t - range);
            let to = s.samples.partition_point(|(st, _)| *st <= t);
            let window = s.samples.get(from..to).unwrap_or_default();
            let points: Cow<'s, [(i64, f64)]> = if s.has_stale {
                Cow::Owned(
                    window
                        .iter()
                        .copied()
                        .filter(|(_, v)| !is_stale(*v))
                        .collect(),
                )
            } else {
                Cow::Borrowed(window)
            };
            if !points.is_empty() {
                out.push(RangeSeries {
                    labels: &s.labels,
                    no_name: Cow::Borrowed(&s.no_name),
                    points,
                    monotonic: s.monotonic,
                });
            }
        }
        out
    }

    /// Evaluates `e` at `ts` (milliseconds).
    pub fn eval(&self, e: &Expr, ts: i64) -> Result<Value> {
        self.check_deadline()?;
        match e {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, ts),
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.select_instant(vs, ts)?)),
            Expr::MatrixSelector(ms) => Ok(Value::Matrix(self.select_range(
                &ms.vs,
                duration_ms(&ms.range),
                ts,
            )?)),
            Expr::Unary(u) => match self.eval(&u.expr, ts)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Vector(vec) => Ok(Value::Vector(
                    vec.into_iter()
                        .map(|s| Sample {
                            labels: s.labels.without_name(),
                            t: ts,
                            v: -s.v,
                        })
                        .collect(),
                )),
                other => exec(format!("unary minus on {}", other.type_name())),
            },
            Expr::Binary(b) => super::binary::eval(self, b, ts).map(|v| at_time(v, ts)),
            Expr::Aggregate(a) => super::aggregate::eval(self, a, ts).map(|v| at_time(v, ts)),
            Expr::Call(c) => super::functions::call(self, c, ts),
            Expr::Subquery(sq) => self.subquery(sq, ts),
            Expr::Extension(_) => exec("extension expressions are not supported"),
        }
    }

    fn subquery(&self, sq: &promql_parser::parser::SubqueryExpr, ts: i64) -> Result<Value> {
        let step = sq
            .step
            .as_ref()
            .map_or(self.opts.subquery_step_ms, duration_ms)
            .max(1);
        let range = duration_ms(&sq.range);
        let end = self.at(&sq.at, ts) - offset_ms(&sq.offset);
        // Steps are aligned to absolute multiples of the step (Go's truncating division).
        let mut start = step * ((end - range) / step);
        if start < end - range {
            start += step;
        }
        let mut m = MatrixBuilder::default();
        let mut t = start;
        while t <= end {
            match self.eval(&sq.expr, t)? {
                Value::Vector(v) => {
                    self.charge(v.len())?;
                    v.into_iter().for_each(|s| m.push(s.labels, t, s.v));
                }
                Value::Scalar(v) => {
                    self.charge(1)?;
                    m.push(Labels::default(), t, v);
                }
                other => {
                    return exec(format!(
                        "subquery of a {} is not supported",
                        other.type_name()
                    ))
                }
            }
            t = match t.checked_add(step) {
                Some(t) => t,
                None => break,
            };
        }
        Ok(Value::Matrix(m.series))
    }

    /// Evaluates a range query: the expression at every step, as a matrix sorted by labels.
    pub fn eval_range(&self, e: &Expr, step: i64) -> Result<Value> {
        let mut m = MatrixBuilder::default();
        let mut t = self.start;
        while t <= self.end {
            match self.eval(e, t)? {
                Value::Vector(v) => {
                    check_unique(&v)?;
                    self.charge(v.len())?;
                    v.into_iter().for_each(|s| m.push(s.labels, t, s.v));
                }
                Value::Scalar(v) => {
                    self.charge(1)?;
                    m.push(Labels::default(), t, v);
                }
                other => {
                    return Err(EvalError::BadData(format!(
                        "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                        if matches!(other, Value::Matrix(_)) { "range vector" } else { other.type_name() }
                    )))
                }
            }
            t = match t.checked_add(step) {
                Some(t) => t,
                None => break,
            };
        }
        m.series.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(Value::Matrix(m.series))
    }

    /// Evaluates an instant query.
    pub fn eval_instant(&self, e: &Expr) -> Result<Value> {
        let v = self.eval(e, self.start)?;
        if let Value::Vector(vec) = &v {
            check_unique(vec)?;
        }
        Ok(v)
    }
}

/// Collects points into series keyed by label set, keeping first-seen order.
#[derive(Default)]
struct MatrixBuilder {
    series: Vec<Series>,
    index: HashMap<Labels, usize>,
}

impl MatrixBuilder {
    fn push(&mut self, labels: Labels, t: i64, v: f64) {
        let i = match self.index.get(&labels) {
            Some(&i) => i,
            None => {
                self.index.insert(labels.clone(), self.series.len());
                self.series.push(Series {
                    labels,
                    points: Vec::new(),
                });
                self.series.len() - 1
            }
        };
        if let Some(s) = self.series.get_mut(i) {
            s.points.push((t, v));
        }
    }
}

/// Computed samples carry the evaluation time (only a plain selector keeps its own).
fn at_time(v: Value, ts: i64) -> Value {
    match v {
        Value::Vector(vec) => {
            Value::Vector(vec.into_iter().map(|s| Sample { t: ts, ..s }).collect())
        }
        other => other,
    }
}

/// Prometheus refuses a result vector with two elements of the same label set.
pub(crate) fn check_unique(v: &[Sample]) -> Result<()> {
    if v.len() < 2 {
        return Ok(());
    }
    let mut seen = rustc_hash::FxHashSet::with_capacity_and_hasher(v.len(), Default::default());
    for s in v {
        if !seen.insert(&s.labels) {
            return exec("vector cannot contain metrics with the same labelset");
        }
    }
    Ok(())
}

/// Token ids of the operators, re-exported for the other evaluation modules.
pub(crate) mod ops {
    pub use promql_parser::parser::token::{
        T_ADD, T_ATAN2, T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_DIV, T_EQLC, T_GROUP, T_GTE,
        T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MAX, T_MIN, T_MOD, T_MUL, T_NEQ, T_POW,
        T_QUANTILE, T_STDDEV, T_STDVAR, T_SUB, T_SUM, T_TOPK,
    };
}
