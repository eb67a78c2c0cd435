//! The in-memory time-series store: interned label sets, a postings index, counters on a grid
//! (from mesh events) and raw samples (from remote write), with a series limit and retention.

pub mod bits;
pub mod grid;
mod group;
mod maintain;
mod postings;
pub mod snapshot;

mod symbols;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::labels::Labels;
use grid::{Grid, Point};
pub use group::Member;
use postings::Postings;
use symbols::Symbols;

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

/// The default `--max-series`, sized from measured memory per series (see the README).
pub const DEFAULT_MAX_SERIES: usize = 500_000;

impl Default for Limits {
    fn default() -> Self {
        Self {
            resolution_ms: 1000,
            retention_ms: 3_600_000,
            stale_after_ms: 300_000,
            max_series: DEFAULT_MAX_SERIES,
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
    #[error("series {0} holds remote-written samples; mesh events cannot count into it")]
    RawSeries(String),
}

pub type SeriesId = u32;

/// A series' label set as interned (name, value) pairs, sorted by name.
type Key = Arc<[(u32, u32)]>;

// Nearly every series is a grid: boxing it would cost each an allocation and a pointer.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Data {
    /// A counter from mesh events: `value = count / per_unit` (a division, so sums in
    /// microseconds read as exact milliseconds).
    Grid {
        grid: Grid,
        per_unit: f64,
    },
    Raw(Vec<(i64, f64)>),
}

#[derive(Debug)]
struct Series {
    /// Shared with the index key: one copy per series.
    labels: Arc<[(u32, u32)]>,
    data: Data,
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
    index: FxHashMap<Arc<[(u32, u32)]>, SeriesId>,
    postings: Postings,
    /// Changes whenever series ids are removed or renumbered: a reader that let go of its
    /// lock between selecting ids and reading them selects again when it differs.
    generation: u64,
    pub stats: StoreStats,
}

/// The kind of series to find or create.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Counter { per_unit: f64 },
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
            postings: Postings::default(),
            generation: 0,
            stats: StoreStats::default(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn series_count(&self) -> usize {
        self.index.len()
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The existing series with these labels (any order; empty values are dropped), found
    /// without interning anything.
    pub fn lookup(&self, labels: &[(&str, &str)]) -> Option<SeriesId> {
        let mut key: Vec<(u32, u32)> = Vec::with_capacity(labels.len());
        for (k, v) in labels.iter().filter(|(_, v)| !v.is_empty()) {
            key.push((self.symbols.get(k)?, self.symbols.get(v)?));
        }
        self.sort_key(&mut key);
        self.index.get(key.as_slice()).copied()
    }

    fn sort_key(&self, key: &mut [(u32, u32)]) {
        let symbols = &self.symbols;
        // Keys read back from a checkpoint or built from sorted labels are in order already.
        if !key.is_sorted_by(|a, b| symbols.str(a.0) <= symbols.str(b.0)) {
            key.sort_by(|a, b| symbols.str(a.0).cmp(symbols.str(b.0)));
        }
    }

    fn kind_of(&self, id: SeriesId) -> Option<Kind> {
        self.get(id).map(|s| match &s.data {
            Data::Grid { per_unit, .. } => Kind::Counter {
                per_unit: *per_unit,
            },
            Data::Raw(_) => Kind::Raw,
        })
    }

    /// Finds or creates the series with these labels (any order; empty values are dropped).
    pub fn series(&mut self, labels: &[(&str, &str)], kind: Kind) -> Result<SeriesId, Refused> {
        let mut pending = Vec::new();
        let out = self.find_or_create(labels, kind, &mut pending);
        self.postings.add(pending);
        out
    }

    /// [`Store::series`] for many label sets at once; the postings are merged once at the end.
    pub fn series_many<'a>(
        &mut self,
        sets: impl IntoIterator<Item = (&'a [(&'a str, &'a str)], Kind)>,
    ) -> Vec<Result<SeriesId, Refused>> {
        let mut pending = Vec::new();
        let out = sets
            .into_iter()
            .map(|(labels, kind)| self.find_or_create(labels, kind, &mut pending))
            .collect();
        self.postings.add(pending);
        out
    }

    fn find_or_create(
        &mut self,
        labels: &[(&str, &str)],
        kind: Kind,
        pending: &mut Vec<(u32, u32, SeriesId)>,
    ) -> Result<SeriesId, Refused> {
        if let Some(id) = self.lookup(labels) {
            return match (self.kind_of(id), kind) {
                (Some(Kind::Counter { .. }), Kind::Raw) => {
                    Err(Refused::KindMismatch(self.labels(id).to_string()))
                }
                (Some(Kind::Raw), Kind::Counter { .. }) => {
                    Err(Refused::RawSeries(self.labels(id).to_string()))
                }
                _ => Ok(id),
            };
        }
        // Refuse before interning: refused label sets must not grow the symbol table.
        if self.index.len() >= self.limits.max_series {
            self.stats.series_refused += 1;
            return Err(Refused::SeriesLimit(self.limits.max_series));
        }
        let mut key: Vec<(u32, u32)> = labels
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (self.symbols.intern(k), self.symbols.intern(v)))
            .collect();
        self.sort_key(&mut key);
        key.dedup_by_key(|p| p.0);
        let data = self.empty_data(kind);
        Ok(self.insert(key.into(), data, pending))
    }

    /// Puts a new series in a free slot and indexes it (postings through `pending`).
    fn insert(
        &mut self,
        key: Arc<[(u32, u32)]>,
        data: Data,
        pending: &mut Vec<(u32, u32, SeriesId)>,
    ) -> SeriesId {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.series.push(None);
                (self.series.len() - 1) as SeriesId
            }
        };
        pending.extend(key.iter().map(|&(n, v)| (n, v, id)));
        if let Some(slot) = self.series.get_mut(id as usize) {
            *slot = Some(Series {
                labels: key.clone(),
                data,
            });
        }
        self.index.insert(key, id);
        self.stats.series_created += 1;
        id
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

    /// Whether `ts` could be appended to a raw series now: the check [`Store::append`] makes,
    /// without changing anything (`None` for a series that does not exist yet).
    pub fn check_append(
        &self,
        id: Option<SeriesId>,
        ts: i64,
        v: f64,
        now_ms: i64,
    ) -> Result<(), Refused> {
        let name = || id.map(|id| self.labels(id).to_string()).unwrap_or_default();
        if ts < now_ms.saturating_sub(self.limits.retention_ms) {
            return Err(Refused::TooOld { series: name(), ts });
        }
        let Some(series) = id.and_then(|id| self.get(id)) else {
            return Ok(());
        };
        let Data::Raw(samples) = &series.data else {
            return Err(Refused::KindMismatch(name()));
        };
        match samples.last() {
            Some(&(t, old)) if t == ts && old.to_bits() != v.to_bits() => {
                Err(Refused::Duplicate { series: name(), ts })
            }
            Some(&(t, _)) if t > ts => Err(Refused::OutOfOrder {
                series: name(),
                ts,
                newest: t,
            }),
            _ => Ok(()),
        }
    }

    /// Room left in a raw series for new samples.
    pub fn room(&self, id: Option<SeriesId>) -> usize {
        let held = match id.and_then(|id| self.get(id)).map(|s| &s.data) {
            Some(Data::Raw(v)) => v.len(),
            _ => 0,
        };
        self.limits.max_samples_per_series.saturating_sub(held)
    }

    /// Appends one remote-written sample, exactly as received.
    pub fn append(&mut self, id: SeriesId, ts: i64, v: f64, now_ms: i64) -> Result<(), Refused> {
        self.check_append(Some(id), ts, v, now_ms)?;
        if self.newest(id, now_ms).map(|s| s.0) == Some(ts) {
            // An exact duplicate of the newest sample is accepted and not stored twice.
            return Ok(());
        }
        if self.room(Some(id)) == 0 {
            return Err(Refused::SampleLimit {
                series: self.labels(id).to_string(),
                limit: self.limits.max_samples_per_series,
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

    pub fn exists(&self, id: SeriesId) -> bool {
        self.get(id).is_some()
    }

    /// The labels of a series as borrowed pairs, sorted by name (no allocation per string).
    pub fn label_pairs(&self, id: SeriesId) -> Vec<(&str, &str)> {
        self.get(id).map_or_else(Vec::new, |s| {
            s.labels
                .iter()
                .map(|&(n, v)| (&**self.symbols.str(n), &**self.symbols.str(v)))
                .collect()
        })
    }

    /// Whether the series holds mesh-derived counters (as opposed to remote-written samples).
    pub fn is_counter(&self, id: SeriesId) -> bool {
        matches!(self.kind_of(id), Some(Kind::Counter { .. }))
    }

    /// Samples with `mint <= t <= maxt`, stale markers included (as [`STALE_NAN`]).
    pub fn samples(&self, id: SeriesId, mint: i64, maxt: i64, now_ms: i64) -> Vec<(i64, f64)> {
        let mut out = Vec::new();
        self.samples_into(id, mint, maxt, now_ms, &mut out);
        out
    }

    /// [`Store::samples`], appended to `out`.
    pub fn samples_into(
        &self,
        id: SeriesId,
        mint: i64,
        maxt: i64,
        now_ms: i64,
        out: &mut Vec<(i64, f64)>,
    ) {
        let Some(s) = self.get(id) else {
            return;
        };
        match &s.data {
            Data::Raw(samples) => {
                let from = samples.partition_point(|(t, _)| *t < mint);
                let to = samples.partition_point(|(t, _)| *t <= maxt);
                out.extend_from_slice(samples.get(from..to).unwrap_or_default());
            }
            Data::Grid { grid, per_unit } => {
                let res = self.limits.resolution_ms;
                let (from, to) = (
                    mint.div_euclid(res) + i64::from(mint.rem_euclid(res) != 0),
                    maxt.div_euclid(res),
                );
                out.reserve(to.saturating_sub(from).clamp(0, 100_000) as usize + 1);
                grid.points(from, to, self.step(now_ms), |step, p| {
                    let v = match p {
                        Point::Value(c) => c as f64 / per_unit,
                        Point::Stale => f64::from_bits(STALE_NAN),
                    };
                    out.push((step * res, v));
                });
            }
        }
    }

    /// Whether the series holds any sample (stale markers included) in `[mint, maxt]`.
    pub fn has_sample(&self, id: SeriesId, mint: i64, maxt: i64, now_ms: i64) -> bool {
        let Some(s) = self.get(id) else {
            return false;
        };
        match &s.data {
            Data::Raw(samples) => {
                let from = samples.partition_point(|(t, _)| *t < mint);
                samples.get(from).is_some_and(|(t, _)| *t <= maxt)
            }
            Data::Grid { grid, .. } => {
                let res = self.limits.resolution_ms;
                let from = mint.div_euclid(res) + i64::from(mint.rem_euclid(res) != 0);
                grid.any_point(from, maxt.div_euclid(res), self.step(now_ms))
            }
        }
    }

    /// The newest sample that is not a stale marker at or before `t`, found by searching with
    /// [`Store::has_sample`] (no decoding beyond the last few steps).
    pub fn newest_value_before(&self, id: SeriesId, t: i64, now_ms: i64) -> Option<(i64, f64)> {
        if let Data::Raw(samples) = &self.get(id)?.data {
            let to = samples.partition_point(|(ts, _)| *ts <= t);
            return samples[..to]
                .iter()
                .rev()
                .find(|(_, v)| !is_stale(*v))
                .copied();
        }
        let res = self.limits.resolution_ms;
        let oldest = t.saturating_sub(self.limits.retention_ms.saturating_mul(2));
        // The smallest window ending at `t` that holds a point, then its exact start.
        let mut span = res;
        while !self.has_sample(id, t.saturating_sub(span), t, now_ms) {
            if t.saturating_sub(span) < oldest {
                return None;
            }
            span = span.saturating_mul(2);
        }
        let (mut lo, mut hi) = (t.saturating_sub(span), t);
        while hi - lo > res {
            let mid = lo + (hi - lo) / 2;
            if self.has_sample(id, mid, t, now_ms) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let mut near = Vec::new();
        self.samples_into(id, lo.saturating_sub(3 * res), t, now_ms, &mut near);
        near.into_iter().rev().find(|(_, v)| !is_stale(*v))
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
        self.samples(
            id,
            ts_ms.saturating_sub(self.limits.retention_ms),
            ts_ms,
            now_ms,
        )
        .pop()
    }

    /// Interned strings held (for tests and self-metrics).
    pub fn symbols_len(&self) -> usize {
        self.symbols.len()
    }

    /// The highest series id in use plus one: ids below it are the slots to visit.
    pub fn id_bound(&self) -> SeriesId {
        self.series.len() as SeriesId
    }

    /// Approximate heap bytes held by series data, labels, the index and the postings.
    pub fn bytes(&self) -> usize {
        let series: usize = self
            .series
            .iter()
            .flatten()
            .map(|s| {
                16 + s.labels.len() * 8
                    + match &s.data {
                        Data::Grid { grid, .. } => grid.heap_bytes(),
                        Data::Raw(v) => v.capacity() * 16,
                    }
            })
            .sum();
        series
            + self.series.capacity() * std::mem::size_of::<Option<Series>>()
            + self.index.capacity() * 24
            + self.postings.bytes()
            + self.symbols.bytes()
    }
}
