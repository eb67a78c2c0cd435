//! A counter sampled on a fixed grid, as if Prometheus scraped the sidecar every step.
//!
//! The value at step `s` counts every event that ended before `(s + 1) · resolution` and has
//! arrived, so the newest sample is current the moment a batch lands. The last [`HEAD_STEPS`]
//! steps stay mutable for batches that arrive late; older steps are compressed into [`Bits`].
//! While a series receives events its grid extends to "now" without storing anything; once
//! it has been idle for the stale time it ends with a stale marker, as a vanished scrape target
//! does in Prometheus.
//!
//! A new series starts with a 0 one step before its first count, as Prometheus does with
//! created-timestamp zero ingestion: the sidecar's counter really was 0, and without that
//! sample `rate()` would ignore a series' first step and see nothing until its second.

use std::collections::VecDeque;

use super::bits::{Bits, Coder};

/// Steps that late events can still land in exactly.
pub const HEAD_STEPS: usize = 8;
const CHUNK_STEPS: u16 = 900;
/// Spacing of the resume points in the newest chunk.
const MARK_STEPS: u16 = 160;
pub(super) const MARKS: usize = 3;

/// One sample of a grid series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    Value(u64),
    Stale,
}

#[derive(Debug, Clone)]
pub(super) struct Chunk {
    pub(super) start: i64,
    /// Cumulative value before `start`.
    pub(super) first: u64,
    pub(super) bits: Bits,
    pub(super) len: u16,
    /// The segment ends with a stale marker right after this chunk's last step.
    pub(super) stale: bool,
}

impl Chunk {
    fn end(&self) -> i64 {
        self.start + i64::from(self.len) - i64::from(!self.stale)
    }
}

/// A point in the newest chunk where a reader can resume instead of decoding from its start.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Mark {
    /// Steps from the chunk's start; 0 means no mark.
    pub(super) steps: u16,
    pub(super) pos: u32,
    /// Cumulative value before that step.
    pub(super) value: u64,
    pub(super) coder: Coder,
}

/// The mutable head: up to [`HEAD_STEPS`] per-step counts, kept inline. A heap `Vec` here cost
/// more per series (pointer, capacity, allocation and its header) than the counts themselves.
/// Counts are 64-bit: a duration sum in microseconds passes `u32::MAX` with a thousand
/// five-second requests in one step.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Head {
    pub(super) len: u8,
    pub(super) counts: [u64; HEAD_STEPS],
}

impl Head {
    fn len(&self) -> usize {
        usize::from(self.len)
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn clear(&mut self) {
        *self = Self::default();
    }

    fn get(&self, i: usize) -> u64 {
        self.counts
            .get(..self.len())
            .and_then(|c| c.get(i))
            .copied()
            .unwrap_or(0)
    }

    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.counts.iter().take(self.len()).copied()
    }

    fn sum(&self) -> u64 {
        self.iter().fold(0, u64::saturating_add)
    }

    /// Adds `count` at `idx`, growing the head with zeros up to it (`idx < HEAD_STEPS`; the
    /// caller seals older steps first). Counts saturate at u64::MAX.
    fn add(&mut self, idx: usize, count: u64) {
        if idx >= HEAD_STEPS {
            return;
        }
        if idx >= self.len() {
            self.len = (idx + 1) as u8;
        }
        if let Some(c) = self.counts.get_mut(idx) {
            *c = c.saturating_add(count);
        }
    }

    /// Drops the first `n` steps.
    fn drain_front(&mut self, n: usize) {
        let n = n.min(self.len());
        let keep = self.len() - n;
        self.counts.copy_within(n.., 0);
        for c in self.counts.iter_mut().skip(keep) {
            *c = 0;
        }
        self.len = keep as u8;
    }
}

#[derive(Debug, Clone)]
pub struct Grid {
    pub(super) chunks: VecDeque<Chunk>,
    pub(super) tail_start: i64,
    pub(super) tail: Head,
    /// Cumulative value before `tail_start`.
    pub(super) base: u64,
    pub(super) last_event: i64,
    pub(super) open: bool,
    /// The oldest data is the series' first segment, so its implicit leading 0 still exists.
    pub(super) from_zero: bool,
    pub(super) stale_steps: i64,
    /// The newest chunk's coder state; readers replay it from the chunk's start or a mark.
    pub(super) coder: Coder,
    /// The newest marks of the newest chunk, oldest first: a query of the last five minutes
    /// decodes at most `MARKS · MARK_STEPS` steps, one of the last minute usually a third of
    /// that, not the whole chunk.
    pub(super) marks: [Mark; MARKS],
}

impl Grid {
    pub fn new(stale_steps: i64) -> Self {
        Self {
            chunks: VecDeque::new(),
            tail_start: 0,
            tail: Head::default(),
            base: 0,
            last_event: 0,
            open: false,
            from_zero: false,
            stale_steps: stale_steps.max(1),
            coder: Coder::default(),
            marks: [Mark::default(); MARKS],
        }
    }

    fn total(&self) -> u64 {
        self.base.saturating_add(self.tail.sum())
    }

    fn stale_end(&self) -> i64 {
        self.last_event + self.stale_steps
    }

    /// Adds `count` at `step` (already clamped to now by the caller). Returns false when the
    /// step was older than the mutable head and the count landed in the oldest head step.
    pub fn add(&mut self, step: i64, count: u64) -> bool {
        if self.open && step >= self.stale_end() {
            self.close();
        }
        // Nothing to count: an open series only needs to stay alive; the grid extends itself.
        if count == 0 && self.open {
            self.last_event = self.last_event.max(step);
            return step >= self.tail_start;
        }
        if !self.open {
            self.from_zero |= self.chunks.is_empty() && self.tail.is_empty() && self.base == 0;
            self.open = true;
            self.base = self.total_closed();
            self.tail_start = step;
            self.tail.clear();
            self.tail.add(0, count);
            self.last_event = step;
            return true;
        }
        let exact = step >= self.tail_start;
        let step = step.max(self.tail_start);
        // Keep the head at most HEAD_STEPS long: steps that fall out of it (the old head and
        // any idle gap) go straight into the chunks, so the head never grows with a gap.
        let new_start = step + 1 - HEAD_STEPS as i64;
        if new_start > self.tail_start {
            self.seal_until(new_start);
        }
        let idx = (step - self.tail_start) as usize;
        self.tail.add(idx, count);
        self.last_event = self.last_event.max(step);
        exact
    }

    /// Seals head steps, then idle steps, until the head starts at `start`.
    fn seal_until(&mut self, start: i64) {
        self.seal((start - self.tail_start).max(0) as usize);
        self.seal_idle((start - self.tail_start).max(0) as usize);
    }

    /// The counter total once the tail is closed (the segment's last value).
    fn total_closed(&self) -> u64 {
        if self.open {
            return self.total();
        }
        self.base
    }

    /// Appends one step's delta at `tail_start` to the chunks.
    fn push_sealed(&mut self, d: u64) {
        let step = self.tail_start;
        let fits = self
            .chunks
            .back()
            .is_some_and(|c| !c.stale && c.start + i64::from(c.len) == step && c.len < CHUNK_STEPS);
        if !fits {
            // Size the new chunk like the last one: one allocation instead of doublings.
            let words = self.chunks.back().map_or(4, |c| c.bits.words());
            if let Some(c) = self.chunks.back_mut() {
                c.bits.shrink();
            }
            self.chunks.push_back(Chunk {
                start: step,
                first: self.base,
                len: 0,
                bits: Bits::with_words(words),
                stale: false,
            });
            self.coder = Coder::default();
            self.marks = [Mark::default(); MARKS];
            // A handful of chunks per series: keep the list exact, not doubled.
            self.chunks.shrink_to_fit();
        }
        self.base = self.base.saturating_add(d);
        if let Some(c) = self.chunks.back_mut() {
            c.bits.push(&mut self.coder, d);
            c.len += 1;
            if c.len.is_multiple_of(MARK_STEPS) {
                self.marks.rotate_left(1);
                self.marks[MARKS - 1] = Mark {
                    steps: c.len,
                    pos: c.bits.bit_len(),
                    value: self.base,
                    coder: self.coder,
                };
            }
        }
        self.tail_start += 1;
    }

    /// Moves the first `n` tail steps into compressed chunks.
    fn seal(&mut self, n: usize) {
        let n = n.min(self.tail.len());
        for i in 0..n {
            let d = self.tail.get(i);
            self.push_sealed(d);
        }
        self.tail.drain_front(n);
    }

    /// Seals `n` idle steps after an empty head, without materialising them.
    fn seal_idle(&mut self, n: usize) {
        for _ in 0..n {
            self.push_sealed(0);
        }
    }

    /// Ends the open segment: materialises its implicit idle steps and the stale marker.
    fn close(&mut self) {
        let end = self.stale_end();
        self.seal_until(end);
        self.tail.clear();
        match self.chunks.back_mut() {
            Some(c) if c.start + i64::from(c.len) == end => {
                c.stale = true;
                c.bits.shrink();
            }
            _ => {
                self.chunks.push_back(Chunk {
                    start: end,
                    first: self.base,
                    len: 0,
                    bits: Bits::default(),
                    stale: true,
                });
                self.marks = [Mark::default(); MARKS];
            }
        }
        self.open = false;
    }

    /// Closes a segment whose stale time has passed and drops chunks older than `min_step`.
    /// Returns whether anything is left.
    pub fn maintain(&mut self, now: i64, min_step: i64) -> bool {
        if self.open && now >= self.stale_end() {
            self.close();
        }
        while self.chunks.front().is_some_and(|c| c.end() < min_step) {
            self.chunks.pop_front();
            self.from_zero = false;
        }
        self.open || !self.chunks.is_empty()
    }

    /// Calls `f` for every point with `from <= step <= to`, in order, as of `now`.
    pub fn points(&self, from: i64, to: i64, now: i64, mut f: impl FnMut(i64, Point)) {
        if self.from_zero {
            let first = self.chunks.front().map_or(self.tail_start, |c| c.start);
            if (from..=to).contains(&(first - 1)) {
                f(first - 1, Point::Value(0));
            }
        }
        let newest = self.chunks.len().saturating_sub(1);
        for (n, c) in self.chunks.iter().enumerate() {
            if c.end() < from || c.start > to {
                continue;
            }
            let mark = self
                .marks
                .iter()
                .rev()
                .find(|m| n == newest && m.steps > 0 && c.start + i64::from(m.steps) <= from)
                .copied()
                .unwrap_or(Mark {
                    value: c.first,
                    ..Mark::default()
                });
            let mut v = mark.value;
            let first_step = c.start + i64::from(mark.steps);
            for (i, d) in c.bits.reader_at(mark.pos, mark.coder).enumerate() {
                let step = first_step + i as i64;
                if step > to {
                    break;
                }
                v = v.saturating_add(d);
                if step >= from {
                    f(step, Point::Value(v));
                }
            }
            let marker = c.start + i64::from(c.len);
            if c.stale && (from..=to).contains(&marker) {
                f(marker, Point::Stale);
            }
        }
        if !self.open {
            return;
        }
        let mut v = self.base;
        for (i, d) in self.tail.iter().enumerate() {
            let step = self.tail_start + i as i64;
            v = v.saturating_add(d);
            if step > to {
                return;
            }
            if step >= from {
                f(step, Point::Value(v));
            }
        }
        let stale_end = self.stale_end();
        let implicit_end = now.min(stale_end - 1).min(to);
        let first_implicit = (self.tail_start + self.tail.len() as i64).max(from);
        for step in first_implicit..=implicit_end {
            f(step, Point::Value(v));
        }
        if now >= stale_end && (from..=to).contains(&stale_end) {
            f(stale_end, Point::Stale);
        }
    }

    /// Whether any point lies in `from..=to` as of `now`, without decoding: chunks hold one
    /// point per step from their start to their end, the open segment one per step to now.
    pub fn any_point(&self, from: i64, to: i64, now: i64) -> bool {
        if from > to {
            return false;
        }
        if self.from_zero {
            let first = self.chunks.front().map_or(self.tail_start, |c| c.start);
            if (from..=to).contains(&(first - 1)) {
                return true;
            }
        }
        let hit = |a: i64, b: i64| a <= to && b >= from;
        if self.chunks.iter().any(|c| {
            let marker = c.start + i64::from(c.len);
            (c.len > 0 && hit(c.start, c.start + i64::from(c.len) - 1))
                || (c.stale && (from..=to).contains(&marker))
        }) {
            return true;
        }
        if !self.open {
            return false;
        }
        let stale_end = self.stale_end();
        let last = now
            .min(stale_end - 1)
            .max(self.tail_start + self.tail.len() as i64 - 1);
        hit(self.tail_start, last) || (now >= stale_end && (from..=to).contains(&stale_end))
    }

    /// Heap bytes held beyond the struct itself, for the memory figures.
    pub fn heap_bytes(&self) -> usize {
        self.chunks.capacity() * std::mem::size_of::<Chunk>()
            + self.chunks.iter().map(|c| c.bits.bytes()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests;
