//! Applying a remote-write request, all or nothing: every series and sample is checked
//! against the store and against the rest of the request (Prometheus 2.42 sends the same
//! series once per sample) before anything is stored, so a refused request changes nothing:
//! no sample, no empty series left behind to count against `--max-series`.

use rustc_hash::FxHashMap;

use super::{Lock, ReadSlices, WriteSlices};
use crate::prompb::Request;
use crate::store::{Kind, Refused, SeriesId};

pub type WriteError = Refused;

/// What the check knows of one series: its id if it exists, its newest sample so far, and
/// how many more samples it may take.
struct Seen {
    id: Option<SeriesId>,
    newest: Option<(i64, f64)>,
    room: usize,
}

/// Checks `req` whole, then stores it; returns the samples stored.
pub fn apply(lock: &Lock, req: &Request, now_ms: i64) -> Result<usize, Refused> {
    check(lock, req, now_ms)?;
    store(lock, req, now_ms)
}

/// Stores a request [`check`] accepted, with nothing changed in between.
pub fn store(lock: &Lock, req: &Request, now_ms: i64) -> Result<usize, Refused> {
    let mut w = WriteSlices::new(lock);
    for view in req.series() {
        let labels = view.label_vec();
        // Checked above, by the only thread that changes the store: neither can fail.
        let id = w.store().series(&labels, Kind::Raw)?;
        for &(ts, v) in view.samples {
            w.store().append(id, ts, v, now_ms)?;
        }
        w.tick();
    }
    Ok(req.sample_count())
}

/// Replays a logged request onto a restored store: its series that `keep` rejects already hold
/// it; for the others each sample is appended if it still fits (replay never refuses whole).
pub fn replay(
    store: &mut crate::store::Store,
    req: &Request,
    now_ms: i64,
    keep: impl Fn(SeriesId) -> bool,
) {
    for view in req.series() {
        let labels = view.label_vec();
        let existing = store.lookup(&labels);
        if existing.is_some_and(|id| !keep(id)) {
            continue;
        }
        let Ok(id) = store.series(&labels, Kind::Raw) else {
            continue;
        };
        for &(ts, v) in view.samples {
            let _ = store.append(id, ts, v, now_ms);
        }
    }
}

/// Whether `req` can be stored whole; changes nothing.
pub fn check(lock: &Lock, req: &Request, now_ms: i64) -> Result<(), Refused> {
    let mut seen: FxHashMap<Vec<(&str, &str)>, Seen> = FxHashMap::default();
    let mut new_series = 0usize;
    let mut r = ReadSlices::new(lock);
    let retention = r.store().limits().retention_ms;
    for view in req.series() {
        let labels = view.label_vec();
        let store = r.store();
        let name = |id: Option<SeriesId>| match id {
            Some(id) => store.labels(id).to_string(),
            None => crate::labels::Labels::from_strs(&labels).to_string(),
        };
        let s = match seen.entry(labels.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let id = store.lookup(&labels);
                if id.is_some_and(|id| store.is_counter(id)) {
                    return Err(Refused::KindMismatch(name(id)));
                }
                new_series += usize::from(id.is_none());
                e.insert(Seen {
                    id,
                    newest: id.and_then(|id| store.newest(id, now_ms)),
                    room: store.room(id),
                })
            }
        };
        for &(ts, v) in view.samples {
            if ts < now_ms.saturating_sub(retention) {
                return Err(Refused::TooOld {
                    series: name(s.id),
                    ts,
                });
            }
            match s.newest {
                Some((t, old)) if t == ts && old.to_bits() != v.to_bits() => {
                    return Err(Refused::Duplicate {
                        series: name(s.id),
                        ts,
                    });
                }
                Some((t, _)) if t > ts => {
                    return Err(Refused::OutOfOrder {
                        series: name(s.id),
                        ts,
                        newest: t,
                    });
                }
                Some((t, _)) if t == ts => {}
                _ => {
                    if s.room == 0 {
                        return Err(Refused::SampleLimit {
                            series: name(s.id),
                            limit: store.limits().max_samples_per_series,
                        });
                    }
                    s.room -= 1;
                    s.newest = Some((ts, v));
                }
            }
        }
        r.tick();
    }
    let store = r.store();
    let limit = store.limits().max_series;
    if store.series_count().saturating_add(new_series) > limit {
        return Err(Refused::SeriesLimit(limit));
    }
    Ok(())
}
