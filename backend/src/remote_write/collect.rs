//! Reading a window of steps out of the store as remote-write requests: each series with
//! samples in the window becomes one `TimeSeries` (its samples in order, external labels
//! merged under its own), series are spread over shards by id so that a series' samples
//! always travel in order, and each request is closed at `max_samples_per_send`.

use crate::db::{Lock, ReadSlices};
use crate::prompb::Encoder;
use crate::store::{is_stale, SeriesId};

use super::config::Destination;

/// One request, ready to send.
#[derive(Debug, Clone)]
pub struct Request {
    /// The snappy-compressed `WriteRequest`.
    pub body: Vec<u8>,
    pub samples: usize,
    /// The newest sample timestamp it holds (ms).
    pub newest_ms: i64,
    /// Uncompressed protobuf bytes, for the bytes-per-sample figures.
    pub raw_bytes: usize,
}

/// A window's requests, per shard in order.
#[derive(Debug, Default)]
pub struct Collected {
    pub shards: Vec<Vec<Request>>,
    pub samples: usize,
    pub series: usize,
}

struct Shard {
    enc: Encoder,
    newest: i64,
    out: Vec<Request>,
}

impl Shard {
    fn close(&mut self) {
        if self.enc.sample_count() == 0 {
            return;
        }
        let samples = self.enc.sample_count();
        let raw = self.enc.take();
        let body = snap::raw::Encoder::new()
            .compress_vec(&raw)
            .unwrap_or_default();
        self.out.push(Request {
            body,
            samples,
            newest_ms: self.newest,
            raw_bytes: raw.len(),
        });
        self.newest = i64::MIN;
    }
}

/// The samples of `(from_ms, to_ms]` at the destination's resolution: points on its grid,
/// stale markers, and the last value before a stale marker (so a counter's final increment
/// is never lost to a coarse resolution).
fn thin(samples: &mut Vec<(i64, f64)>, resolution_ms: i64) {
    if resolution_ms <= 0 || samples.iter().all(|s| s.0.rem_euclid(resolution_ms) == 0) {
        return;
    }
    let keep: Vec<bool> = (0..samples.len())
        .map(|i| {
            let (t, v) = samples[i];
            t.rem_euclid(resolution_ms) == 0
                || is_stale(v)
                || samples.get(i + 1).is_some_and(|n| is_stale(n.1))
        })
        .collect();
    let mut k = keep.iter();
    samples.retain(|_| *k.next().unwrap_or(&false));
}

/// Merges a series' labels (sorted) with the external ones (sorted); the series' own win.
fn merged<'a>(
    own: &[(&'a str, &'a str)],
    external: &'a [(String, String)],
    out: &mut Vec<(&'a str, &'a str)>,
) {
    out.clear();
    let (mut i, mut j) = (0, 0);
    while i < own.len() || j < external.len() {
        match (own.get(i), external.get(j)) {
            (Some(a), Some(b)) if a.0 == b.0 => {
                out.push(*a);
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.0 < b.0.as_str() => {
                out.push(*a);
                i += 1;
            }
            (Some(_), Some(b)) | (None, Some(b)) => {
                out.push((b.0.as_str(), b.1.as_str()));
                j += 1;
            }
            (Some(a), None) => {
                out.push(*a);
                i += 1;
            }
            (None, None) => break,
        }
    }
}

/// Every series' samples in `(from_ms, to_ms]`, as requests over `shards` shards.
pub fn collect(
    lock: &Lock,
    dest: &Destination,
    (from_ms, to_ms): (i64, i64),
    now_ms: i64,
    shards: usize,
) -> Collected {
    let shards = shards.max(1);
    let per_request = dest.queue.max_samples_per_send;
    let mut out: Vec<Shard> = (0..shards)
        .map(|_| Shard {
            enc: Encoder::with_capacity(64 << 10),
            newest: i64::MIN,
            out: Vec::new(),
        })
        .collect();
    let (mut total, mut series) = (0, 0);
    let mut samples = Vec::new();
    let mut r = ReadSlices::new(lock);
    let bound = r.store().id_bound();
    for id in 0..bound as SeriesId {
        let store = r.store();
        let counter = store.is_counter(id);
        if counter || (dest.include_received && store.exists(id)) {
            samples.clear();
            store.samples_into(id, from_ms.saturating_add(1), to_ms, now_ms, &mut samples);
            if counter {
                thin(&mut samples, dest.resolution_ms);
            }
            if !samples.is_empty() {
                let own = store.label_pairs(id);
                let mut labels = Vec::with_capacity(own.len() + dest.external_labels.len());
                merged(&own, &dest.external_labels, &mut labels);
                let shard = &mut out[id as usize % shards];
                // A series with more samples than a request holds spans several, in order.
                for part in samples.chunks(per_request) {
                    if shard.enc.sample_count() + part.len() > per_request {
                        shard.close();
                    }
                    shard.enc.series(&labels, part);
                    shard.newest = shard.newest.max(part.last().map_or(i64::MIN, |s| s.0));
                }
                total += samples.len();
                series += 1;
            }
        }
        let _ = r.tick();
    }
    drop(r);
    for s in &mut out {
        s.close();
    }
    Collected {
        shards: out
            .into_iter()
            .map(|s| s.out)
            .filter(|r| !r.is_empty())
            .collect(),
        samples: total,
        series,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Kind, Limits, Store, STALE_NAN};

    #[test]
    fn thinning_keeps_the_grid_stale_markers_and_the_last_value() {
        let mut s = vec![
            (1000, 1.0),
            (2000, 2.0),
            (3000, 3.0),
            (4000, 4.0),
            (5000, 5.0),
            (6000, 6.0),
            (7000, f64::from_bits(STALE_NAN)),
        ];
        thin(&mut s, 3000);
        let ts: Vec<i64> = s.iter().map(|x| x.0).collect();
        assert_eq!(ts, [3000, 6000, 7000]);
        let mut s = vec![
            (1000, 1.0),
            (2000, 2.0),
            (3500, 2.0),
            (4000, f64::from_bits(STALE_NAN)),
        ];
        thin(&mut s, 3000);
        assert_eq!(
            s.iter().map(|x| x.0).collect::<Vec<_>>(),
            [3500, 4000],
            "the value before the marker"
        );
    }

    #[test]
    fn own_labels_win_over_external_ones_and_all_stay_sorted() {
        let own = [("__name__", "x"), ("cluster", "mine"), ("job", "a")];
        let ext = vec![
            ("cluster".to_string(), "theirs".to_string()),
            ("waggle_replica".to_string(), "w-0".to_string()),
            ("a".to_string(), "1".to_string()),
        ];
        let mut ext = ext;
        ext.sort();
        let mut out = Vec::new();
        merged(&own, &ext, &mut out);
        assert_eq!(
            out,
            [
                ("__name__", "x"),
                ("a", "1"),
                ("cluster", "mine"),
                ("job", "a"),
                ("waggle_replica", "w-0")
            ]
        );
    }

    #[test]
    fn requests_hold_every_sample_once_in_order_within_the_size_limit() {
        let mut store = Store::new(Limits::default());
        for w in 0..30 {
            let id = store
                .series(
                    &[("__name__", "req_total"), ("w", &format!("w{w}"))],
                    Kind::Counter { per_unit: 1.0 },
                )
                .unwrap();
            for step in 100..160 {
                store.add(id, step * 1000, 1, step * 1000);
            }
        }
        let lock = Lock::new(store);
        let dest = Destination {
            name: "t".into(),
            url: "http://x/".into(),
            headers: vec![],
            auth: super::super::config::Auth::None,
            external_labels: vec![("waggle_replica".into(), "r0".into())],
            remote_timeout: std::time::Duration::from_secs(1),
            resolution_ms: 1000,
            include_received: false,
            queue: super::super::config::Queue {
                max_samples_per_send: 25,
                ..Default::default()
            },
        };
        let c = collect(&lock, &dest, (119_000, 139_000), 160_000, 3);
        assert_eq!(c.samples, 30 * 20);
        assert_eq!(c.series, 30);
        let mut seen: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
        for shard in &c.shards {
            for r in shard {
                assert!(r.samples <= 25, "{}", r.samples);
                let raw = snap::raw::Decoder::new().decompress_vec(&r.body).unwrap();
                let req: crate::prompb::WriteRequest =
                    prost::Message::decode(raw.as_slice()).unwrap();
                for ts in req.timeseries {
                    let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
                    let mut sorted = names.clone();
                    sorted.sort();
                    assert_eq!(names, sorted);
                    assert!(names.contains(&"waggle_replica"));
                    let w = ts
                        .labels
                        .iter()
                        .find(|l| l.name == "w")
                        .unwrap()
                        .value
                        .clone();
                    seen.entry(w)
                        .or_default()
                        .extend(ts.samples.iter().map(|s| s.timestamp));
                }
            }
        }
        assert_eq!(seen.len(), 30);
        for ts in seen.values() {
            assert_eq!(
                ts,
                &(120..=139).map(|s| s * 1000).collect::<Vec<_>>(),
                "each sample once, in order"
            );
        }
    }
}
