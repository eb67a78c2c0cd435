//! The in-memory time-series store: interned label sets, a postings index, counters on a grid
//! (from mesh events) and raw samples (from remote write), with a series limit and retention.

pub mod bits;
pub mod grid;

use std::sync::Arc;

use promql_parser::label::{MatchOp, Matcher};
use rustc_hash::FxHashMap;

use crate::labels::Labels;
use grid::{Grid, Point};

/// Prometheus's stale marker: a NaN with a payload no computation produces.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN
}

/// Store-wide limits and timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub resolution_ms: i64,
    pub retention_ms: i64,
    pub stale_after_ms: i64,
    pub max_series: usize,
    /// Raw (remote-written) samples kept per series.
    pub max_samples_per_series: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            resolution_ms: 1000,
            retention_ms: 3_600_000,
            stale_after_ms: 300_000,
            max_series: 200_000,
            max_samples_per_series: 100_000,
        }
    }
}

/// Why a sample or series was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("series limit of {0} reached; new series are refused")]
    SeriesLimit(usize),
    #[error(
        "out of order sample for series {series}: {ts} is before the newest stored sample {newest}"
    )]
    OutOfOrder {
        series: String,
        ts: i64,
        newest: i64,
    },
    #[error("duplicate sample for timestamp {ts} with a different value for series {series}")]
    Duplicate { series: String, ts: i64 },
    #[error("sample at {ts} for series {series} is older than the retention window")]
    TooOld { series: String, ts: i64 },
    #[error("series {series} already holds {limit} samples")]
    SampleLimit { series: String, limit: usize },
    #[error("series {0} is a mesh-derived counter; remote write cannot add samples to it")]
    KindMismatch(String),
}

pub type SeriesId = u32;

#[derive(Debug)]
enum Data {
    /// A counter from mesh events: `value = count · scale`.
    Grid {
        grid: Grid,
        scale: f64,
    },
    Raw(Vec<(i64, f64)>),
}

#[derive(Debug)]
struct Series {
    /// Shared with the index key: one copy per series.
    labels: std::sync::Arc<[(u32, u32)]>,
    data: Data,
}

#[derive(Debug, Default)]
struct Symbols {
    ids: FxHashMap<Arc<str>, u32>,
    strs: Vec<Arc<str>>,
}

impl Symbols {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.strs.len() as u32;
        let a: Arc<str> = Arc::from(s);
        self.strs.push(a.clone());
        self.ids.insert(a, i);
        i
    }

    fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    fn str(&self, i: u32) -> &Arc<str> {
        static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
        self.strs
            .get(i as usize)
            .unwrap_or_else(|| EMPTY.get_or_init(|| Arc::from("")))
    }
}

/// Counters the self-metrics report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub series_created: u64,
    pub series_refused: u64,
    pub series_expired: u64,
    pub late_counts: u64,
    pub symbol_compactions: u64,
}

#[derive(Debug)]
pub struct Store {
    limits: Limits,
    symbols: Symbols,
    series: Vec<Option<Series>>,
    free: Vec<SeriesId>,
    index: FxHashMap<std::sync::Arc<[(u32, u32)]>, SeriesId>,
    /// label name → label value → series ids (ascending).
    postings: FxHashMap<u32, FxHashMap<u32, Vec<SeriesId>>>,
    pub stats: StoreStats,
}

/// The kind of series to find or create.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Counter { scale: f64 },
    Raw,
}

impl Store {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            symbols: Symbols::default(),
            series: Vec::new(),
            free: Vec::new(),
            index: FxHashMap::default(),
            postings: FxHashMap::default(),
            stats: StoreStats::default(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn series_count(&self) -> usize {
        self.index.len()
    }

    /// Finds or creates the series with these labels (any order; empty values are dropped).
    pub fn series(&mut self, labels: &[(&str, &str)], kind: Kind) -> Result<SeriesId, Refused> {
        let mut key: Vec<(u32, u32)> = labels
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (self.symbols.intern(k), self.symbols.intern(v)))
            .collect();
        let symbols = &self.symbols;
        key.sort_by(|a, b| symbols.str(a.0).cmp(symbols.str(b.0)));
        if let Some(&id) = self.index.get(key.as_slice()) {
            return Ok(id);
        }
        if self.index.len() >= self.limits.max_series {
            self.stats.series_refused += 1;
            return Err(Refused::SeriesLimit(self.limits.max_series));
        }
        let data = match kind {
            Kind::Counter { scale } => {
                let stale = (self.limits.stale_after_ms / self.limits.resolution_ms).max(1);
                Data::Grid {
                    grid: Grid::new(stale),
                    scale,
                }
            }
            Kind::Raw => Data::Raw(Vec::new()),
        };
        let key: std::sync::Arc<[(u32, u32)]> = key.into();
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.series.push(None);
                (self.series.len() - 1) as SeriesId
            }
        };
        for &(n, v) in key.iter() {
            let ids = self.postings.entry(n).or_default().entry(v).or_default();
            let at = ids.partition_point(|x| *x < id);
            ids.insert(at, id);
        }
        if let Some(slot) = self.series.get_mut(id as usize) {
            *slot = Some(Series {
                labels: key.clone(),
                data,
            });
        }
        self.index.insert(key, id);
        self.stats.series_created += 1;
        Ok(id)
    }

    fn get(&self, id: SeriesId) -> Option<&Series> {
        self.series.get(id as usize).and_then(Option::as_ref)
    }

    fn step(&self, ts_ms: i64) -> i64 {
        ts_ms.div_euclid(self.limits.resolution_ms)
    }

    /// Adds `count` to a counter series at the step holding `ts_ms` (never after `now_ms`).
    pub fn add(&mut self, id: SeriesId, ts_ms: i64, count: u64, now_ms: i64) {
        let step = self.step(ts_ms.min(now_ms));
        if let Some(Some(Series {
            data: Data::Grid { grid, .. },
            ..
        })) = self.series.get_mut(id as usize)
        {
            if !grid.add(step, count) {
                self.stats.late_counts += 1;
            }
        }
    }

    /// Appends one remote-written sample, exactly as received.
    pub fn append(&mut self, id: SeriesId, ts: i64, v: f64, now_ms: i64) -> Result<(), Refused> {
        let min_ts = now_ms - self.limits.retention_ms;
        let limit = self.limits.max_samples_per_series;
        let name = || self.labels(id).to_string();
        let Some(series) = self.get(id) else {
            return Ok(());
        };
        let Data::Raw(samples) = &series.data else {
            return Err(Refused::KindMismatch(name()));
        };
        if ts < min_ts {
            return Err(Refused::TooOld { series: name(), ts });
        }
        match samples.last() {
            Some(&(t, old)) if t == ts && old.to_bits() != v.to_bits() => {
                return Err(Refused::Duplicate { series: name(), ts })
            }
            Some(&(t, _)) if t == ts => return Ok(()),
            Some(&(t, _)) if t > ts => {
                return Err(Refused::OutOfOrder {
                    series: name(),
                    ts,
                    newest: t,
                })
            }
            _ => {}
        }
        if samples.len() >= limit {
            return Err(Refused::SampleLimit {
                series: name(),
                limit,
            });
        }
        if let Some(Some(Series {
            data: Data::Raw(samples),
            ..
        })) = self.series.get_mut(id as usize)
        {
            samples.push((ts, v));
        }
        Ok(())
    }

    pub fn labels(&self, id: SeriesId) -> Labels {
        let Some(s) = self.get(id) else {
            return Labels::default();
        };
        Labels::new(
            s.labels
                .iter()
                .map(|&(n, v)| (self.symbols.str(n).clone(), self.symbols.str(v).clone()))
                .collect(),
        )
    }

    /// Series ids matching every matcher, ascending. A missing label matches as "".
    pub fn select(&self, matchers: &[Matcher]) -> Vec<SeriesId> {
        // A matcher that rejects the empty value selects through the postings: the union of
        // the lists of the label values it accepts (one list for `=`, a few for a regex). The
        // lists are intersected smallest first; matchers that accept "" filter what is left.
        let mut lists: Vec<std::borrow::Cow<'_, [SeriesId]>> = Vec::new();
        for m in matchers.iter().filter(|m| !m.is_match("")) {
            let Some(values) = self
                .symbols
                .get(&m.name)
                .and_then(|n| self.postings.get(&n))
            else {
                return Vec::new();
            };
            let list: std::borrow::Cow<'_, [SeriesId]> = match &m.op {
                MatchOp::Equal => match self.symbols.get(&m.value).and_then(|v| values.get(&v)) {
                    Some(ids) => std::borrow::Cow::Borrowed(ids.as_slice()),
                    None => return Vec::new(),
                },
                _ => {
                    let mut ids: Vec<SeriesId> = values
                        .iter()
                        .filter(|(v, _)| m.is_match(self.symbols.str(**v)))
                        .flat_map(|(_, ids)| ids.iter().copied())
                        .collect();
                    ids.sort_unstable();
                    std::borrow::Cow::Owned(ids)
                }
            };
            if list.is_empty() {
                return Vec::new();
            }
            lists.push(list);
        }
        lists.sort_by_key(|l| l.len());
        let mut candidates: Option<Vec<SeriesId>> = None;
        for ids in lists {
            candidates = Some(match candidates {
                None => ids.into_owned(),
                Some(c) => c
                    .into_iter()
                    .filter(|id| ids.binary_search(id).is_ok())
                    .collect(),
            });
        }
        let candidates = candidates.unwrap_or_else(|| {
            let mut all: Vec<SeriesId> = self.index.values().copied().collect();
            all.sort_unstable();
            all
        });
        let filters: Vec<(&Matcher, Option<u32>)> = matchers
            .iter()
            .filter(|m| m.is_match(""))
            .map(|m| (m, self.symbols.get(&m.name)))
            .collect();
        candidates
            .into_iter()
            .filter(|&id| {
                let Some(s) = self.get(id) else { return false };
                filters.iter().all(|(m, name)| {
                    let value = name
                        .and_then(|n| s.labels.iter().find(|(k, _)| *k == n))
                        .map_or("", |&(_, v)| &**self.symbols.str(v));
                    m.is_match(value)
                })
            })
            .collect()
    }

    /// Samples with `mint <= t <= maxt`, stale markers included (as [`STALE_NAN`]).
    pub fn samples(&self, id: SeriesId, mint: i64, maxt: i64, now_ms: i64) -> Vec<(i64, f64)> {
        let Some(s) = self.get(id) else {
            return Vec::new();
        };
        match &s.data {
            Data::Raw(samples) => {
                let from = samples.partition_point(|(t, _)| *t < mint);
                let to = samples.partition_point(|(t, _)| *t <= maxt);
                samples.get(from..to).unwrap_or_default().to_vec()
            }
            Data::Grid { grid, scale } => {
                let res = self.limits.resolution_ms;
                let (from, to) = (
                    mint.div_euclid(res) + i64::from(mint.rem_euclid(res) != 0),
                    maxt.div_euclid(res),
                );
                let mut out = Vec::with_capacity(((to - from).max(0) + 1).min(100_000) as usize);
                grid.points(from, to, self.step(now_ms), |step, p| {
                    let v = match p {
                        Point::Value(c) => c as f64 * scale,
                        Point::Stale => f64::from_bits(STALE_NAN),
                    };
                    out.push((step * res, v));
                });
                out
            }
        }
    }

    /// The newest sample held (stale markers included).
    pub fn newest(&self, id: SeriesId, now_ms: i64) -> Option<(i64, f64)> {
        match &self.get(id)?.data {
            Data::Raw(samples) => samples.last().copied(),
            Data::Grid { .. } => self.last_sample_before(id, now_ms, now_ms),
        }
    }

    /// The last sample at or before `ts_ms` (stale markers included), if any is held.
    pub fn last_sample_before(&self, id: SeriesId, ts_ms: i64, now_ms: i64) -> Option<(i64, f64)> {
        self.samples(id, ts_ms - self.limits.retention_ms, ts_ms, now_ms)
            .pop()
    }

    /// Ends stale segments, trims data older than retention, and drops empty series.
    pub fn maintain(&mut self, now_ms: i64) {
        let min_ts = now_ms - self.limits.retention_ms;
        let (now_step, min_step) = (self.step(now_ms), self.step(min_ts));
        let mut dead = Vec::new();
        for (id, slot) in self.series.iter_mut().enumerate() {
            let Some(s) = slot else { continue };
            let alive = match &mut s.data {
                Data::Grid { grid, .. } => grid.maintain(now_step, min_step),
                Data::Raw(samples) => {
                    let n = samples.partition_point(|(t, _)| *t < min_ts);
                    samples.drain(..n);
                    !samples.is_empty()
                }
            };
            if !alive {
                dead.push(id as SeriesId);
            }
        }
        for id in dead {
            self.remove(id);
        }
        self.compact_symbols();
    }

    /// Rebuilds the symbol table when most of it is no longer used by any series, so label
    /// churn (workloads that come and go) cannot grow memory without bound.
    fn compact_symbols(&mut self) {
        let total = self.symbols.strs.len();
        let mut used = vec![false; total];
        for s in self.series.iter().flatten() {
            for &(n, v) in s.labels.iter() {
                for i in [n, v] {
                    if let Some(u) = used.get_mut(i as usize) {
                        *u = true;
                    }
                }
            }
        }
        let live = used.iter().filter(|u| **u).count();
        if total < 1024 || total < 2 * live {
            return;
        }
        let mut fresh = Symbols::default();
        let map: Vec<u32> = used
            .iter()
            .zip(&self.symbols.strs)
            .map(|(u, s)| if *u { fresh.intern(s) } else { u32::MAX })
            .collect();
        let remap = |i: u32| map.get(i as usize).copied().unwrap_or(u32::MAX);
        self.index.clear();
        self.postings.clear();
        for (id, slot) in self.series.iter_mut().enumerate() {
            let Some(s) = slot else { continue };
            // Remapping keeps the name order: it is the order of the strings, not the ids.
            s.labels = s
                .labels
                .iter()
                .map(|&(n, v)| (remap(n), remap(v)))
                .collect::<Vec<_>>()
                .into();
            for &(n, v) in s.labels.iter() {
                self.postings
                    .entry(n)
                    .or_default()
                    .entry(v)
                    .or_default()
                    .push(id as SeriesId);
            }
            self.index.insert(s.labels.clone(), id as SeriesId);
        }
        self.symbols = fresh;
        self.stats.symbol_compactions += 1;
    }

    /// Interned strings held (for tests and self-metrics).
    pub fn symbols_len(&self) -> usize {
        self.symbols.strs.len()
    }

    fn remove(&mut self, id: SeriesId) {
        let Some(s) = self.series.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        for &(n, v) in s.labels.iter() {
            if let Some(ids) = self.postings.get_mut(&n).and_then(|m| m.get_mut(&v)) {
                ids.retain(|x| *x != id);
            }
        }
        self.index.remove(&s.labels);
        self.free.push(id);
        self.stats.series_expired += 1;
    }

    /// All label names, sorted.
    pub fn label_names(&self, ids: Option<&[SeriesId]>) -> Vec<String> {
        let mut names: Vec<String> = match ids {
            None => self
                .postings
                .iter()
                .filter(|(_, vs)| vs.values().any(|ids| !ids.is_empty()))
                .map(|(n, _)| self.symbols.str(*n).to_string())
                .collect(),
            Some(ids) => ids
                .iter()
                .filter_map(|id| self.get(*id))
                .flat_map(|s| {
                    s.labels
                        .iter()
                        .map(|(n, _)| self.symbols.str(*n).to_string())
                })
                .collect(),
        };
        names.sort();
        names.dedup();
        names
    }

    /// All values of one label, sorted.
    pub fn label_values(&self, name: &str, ids: Option<&[SeriesId]>) -> Vec<String> {
        let Some(n) = self.symbols.get(name) else {
            return Vec::new();
        };
        let mut values: Vec<String> = match ids {
            None => self
                .postings
                .get(&n)
                .map(|vs| {
                    vs.iter()
                        .filter(|(_, ids)| !ids.is_empty())
                        .map(|(v, _)| self.symbols.str(*v).to_string())
                        .collect()
                })
                .unwrap_or_default(),
            Some(ids) => ids
                .iter()
                .filter_map(|id| self.get(*id))
                .filter_map(|s| {
                    s.labels
                        .iter()
                        .find(|(k, _)| *k == n)
                        .map(|(_, v)| self.symbols.str(*v).to_string())
                })
                .collect(),
        };
        values.sort();
        values.dedup();
        values
    }

    /// Approximate bytes held by series data and labels.
    pub fn bytes(&self) -> usize {
        self.series
            .iter()
            .flatten()
            .map(|s| {
                // Labels once (shared with the index key), their postings entries, the
                // index entry, and the series' data.
                std::mem::size_of::<Series>()
                    + 16
                    + s.labels.len() * (8 + 4)
                    + 32
                    + match &s.data {
                        Data::Grid { grid, .. } => grid.heap_bytes(),
                        Data::Raw(v) => v.capacity() * 16,
                    }
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            .series(&[("__name__", "req_total")], Kind::Counter { scale: 0.5 })
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
}
