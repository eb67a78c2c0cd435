//! Reading the store in short shared sections: a query's series and samples are copied out
//! a slice at a time, so the writer never waits long, and a read that straddles a removal of
//! series ids starts over instead of reading the wrong series.

use promql_parser::label::Matcher;

use super::{Lock, ReadSlices};
use crate::labels::Labels;
use crate::store::{SeriesId, Store};

/// One selected series and its samples over the requested window.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
}

/// Attempts before a read stops yielding to the writer (ids removed every time it yielded).
const ATTEMPTS: usize = 3;

/// The series matching `matchers`, with samples in `[lo, hi]` as of `now`. `charge` is told
/// the samples loaded so far (from the start of the attempt it is in) and may stop the read.
pub fn fetch<E>(
    lock: &Lock,
    matchers: &[Matcher],
    (lo, hi): (i64, i64),
    now: i64,
    mut charge: impl FnMut(usize) -> Result<(), E>,
) -> Result<Vec<Fetched>, E> {
    for attempt in 1..=ATTEMPTS {
        let mut r = ReadSlices::new(lock);
        let ids = r.store().select(matchers);
        let mut out = Vec::with_capacity(ids.len());
        let mut loaded = 0usize;
        let mut valid = true;
        for id in ids {
            let mut samples = Vec::new();
            r.store().samples_into(id, lo, hi, now, &mut samples);
            loaded += samples.len();
            charge(loaded)?;
            out.push(Fetched {
                labels: r.store().labels(id),
                samples,
            });
            if attempt < ATTEMPTS && !r.tick() {
                valid = false;
                break;
            }
        }
        if valid {
            return Ok(out);
        }
    }
    Ok(Vec::new())
}

/// `f` of every series matching any of `sets` (each id once, ascending) that holds a sample
/// in `window` (`(from, to, now)`) when one is given; `stop` is asked between series whether
/// to give up (a deadline).
pub fn each_matching<T>(
    lock: &Lock,
    sets: &[Vec<Matcher>],
    window: Option<(i64, i64, i64)>,
    mut stop: impl FnMut() -> bool,
    mut f: impl FnMut(&Store, SeriesId) -> T,
) -> Vec<T> {
    for attempt in 1..=ATTEMPTS {
        let mut r = ReadSlices::new(lock);
        let mut ids: Vec<SeriesId> = sets.iter().flat_map(|m| r.store().select(m)).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut out = Vec::new();
        let mut valid = true;
        for id in ids {
            if stop() {
                break;
            }
            let store = r.store();
            if window.is_none_or(|(from, to, now)| store.has_sample(id, from, to, now)) {
                out.push(f(store, id));
            }
            if attempt < ATTEMPTS && !r.tick() {
                valid = false;
                break;
            }
        }
        if valid {
            return out;
        }
    }
    Vec::new()
}
