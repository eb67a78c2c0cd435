//! Maintenance: ending stale segments, retention, removing empty series, and compacting the
//! symbol table after churn. Each part can run in slices (by id range), and the expensive
//! rebuild is computed from a shared view and swapped in at once, so the writer never holds
//! the store exclusively for long.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::postings::Postings;
use super::symbols::Symbols;
use super::{Data, Key, SeriesId, Store};

/// A rebuilt symbol table and everything renumbered with it, ready to swap in.
pub struct Compaction {
    symbols: Symbols,
    labels: Vec<(SeriesId, Key)>,
    index: FxHashMap<Arc<[(u32, u32)]>, SeriesId>,
    postings: Postings,
    generation: u64,
}

/// What a compaction replaced: dropped by the caller after it lets go of the store.
pub struct Replaced(
    #[allow(dead_code)] Symbols,
    #[allow(dead_code)] FxHashMap<Arc<[(u32, u32)]>, SeriesId>,
    #[allow(dead_code)] Postings,
    #[allow(dead_code)] Vec<Arc<[(u32, u32)]>>,
);

impl Store {
    /// Ends stale segments, trims data older than retention, and drops empty series.
    pub fn maintain(&mut self, now_ms: i64) {
        let dead = self.maintain_range(now_ms, 0..self.id_bound());
        self.remove_many(&dead);
        if let Some(c) = self.plan_compaction() {
            drop(self.apply_compaction(c));
        }
    }

    /// [`Store::maintain`]'s per-series part for the ids in `range`; returns the series left
    /// empty, for [`Store::remove_many`].
    pub fn maintain_range(
        &mut self,
        now_ms: i64,
        range: std::ops::Range<SeriesId>,
    ) -> Vec<SeriesId> {
        let min_ts = now_ms.saturating_sub(self.limits.retention_ms);
        let (now_step, min_step) = (self.step(now_ms), self.step(min_ts));
        let mut dead = Vec::new();
        let (from, to) = (
            range.start as usize,
            (range.end as usize).min(self.series.len()),
        );
        for (id, slot) in self.series.iter_mut().enumerate().take(to).skip(from) {
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
        dead
    }

    /// Removes series, updating each touched postings list once.
    pub fn remove_many(&mut self, ids: &[SeriesId]) {
        let mut entries = Vec::new();
        for &id in ids {
            let Some(s) = self.series.get_mut(id as usize).and_then(Option::take) else {
                continue;
            };
            entries.extend(s.labels.iter().map(|&(n, v)| (n, v, id)));
            self.index.remove(&s.labels);
            self.free.push(id);
            self.stats.series_expired += 1;
        }
        if !ids.is_empty() {
            self.generation += 1;
            self.postings.remove(entries);
        }
    }

    /// A rebuilt symbol table, when most of the current one is no longer used by any series
    /// (label churn must not grow memory without bound). Reads only.
    pub fn plan_compaction(&self) -> Option<Compaction> {
        let total = self.symbols.len();
        if total < 1024 {
            return None;
        }
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
        if total < 2 * live {
            return None;
        }
        let mut fresh = Symbols::default();
        let map: Vec<u32> = used
            .iter()
            .zip(&self.symbols.strs)
            .map(|(u, s)| if *u { fresh.intern(s) } else { u32::MAX })
            .collect();
        let remap = |i: u32| map.get(i as usize).copied().unwrap_or(u32::MAX);
        // Remapping keeps the name order: it is the order of the strings, not the ids.
        let labels: Vec<(SeriesId, Key)> = self
            .series
            .iter()
            .enumerate()
            .filter_map(|(id, s)| {
                let s = s.as_ref()?;
                let l: Arc<[(u32, u32)]> = s
                    .labels
                    .iter()
                    .map(|&(n, v)| (remap(n), remap(v)))
                    .collect();
                Some((id as SeriesId, l))
            })
            .collect();
        let mut index = FxHashMap::default();
        let mut entries = Vec::new();
        for (id, l) in &labels {
            entries.extend(l.iter().map(|&(n, v)| (n, v, *id)));
            index.insert(l.clone(), *id);
        }
        let mut postings = Postings::default();
        postings.add(entries);
        Some(Compaction {
            symbols: fresh,
            labels,
            index,
            postings,
            generation: self.generation,
        })
    }

    /// Swaps in a compaction planned on this same state (nothing changed in between); the
    /// structures it replaces come back to be dropped outside the lock.
    pub fn apply_compaction(&mut self, c: Compaction) -> Option<Replaced> {
        if c.generation != self.generation {
            return None;
        }
        let mut old_labels = Vec::with_capacity(c.labels.len());
        for (id, labels) in c.labels {
            if let Some(Some(s)) = self.series.get_mut(id as usize) {
                old_labels.push(std::mem::replace(&mut s.labels, labels));
            }
        }
        let replaced = Replaced(
            std::mem::replace(&mut self.symbols, c.symbols),
            std::mem::replace(&mut self.index, c.index),
            std::mem::replace(&mut self.postings, c.postings),
            old_labels,
        );
        self.generation += 1;
        self.stats.symbol_compactions += 1;
        Some(replaced)
    }
}
