//! Mesh events into counters: per batch, each request shape is resolved to its series once,
//! records are summed per (shape, step), and each series is touched once per step.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use waggle_wire::{Batch, Key};

use crate::families::{le, Family, Kind, Measure};
use crate::labels::METRIC_NAME;
use crate::store::{self, SeriesId, Store};

/// Where one family's events of one request shape go.
#[derive(Debug, Clone)]
enum Target {
    Counter {
        id: Option<SeriesId>,
        measure: Measure,
    },
    Histogram {
        bounds: Arc<[f64]>,
        buckets: Vec<Option<SeriesId>>,
        sum: Option<SeriesId>,
        count: Option<SeriesId>,
        measure: Measure,
    },
}

impl Target {
    /// Slots this target needs in a per-step accumulator.
    fn slots(&self) -> usize {
        match self {
            Target::Counter { .. } => 1,
            Target::Histogram { buckets, .. } => buckets.len() + 1,
        }
    }
}

type Plan = Arc<[Target]>;

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub events: u64,
    pub refused_series: u64,
}

/// The family table plus a cache of resolved request shapes (cleared when series expire).
#[derive(Debug)]
pub struct Mesh {
    families: Vec<Family>,
    bounds: Vec<Arc<[f64]>>,
    /// Plans by the hash of their field values (entries keep the values to rule out collisions).
    plans: FxHashMap<u64, Vec<(Vec<String>, Plan)>>,
    series_seen: u64,
}

const MAX_CACHED_PLANS: usize = 50_000;

impl Mesh {
    pub fn new(families: Vec<Family>) -> Self {
        let bounds = families
            .iter()
            .map(|f| match &f.kind {
                Kind::Histogram(b) => b.iter().map(|x| x * f.measure.base_per_unit()).collect(),
                Kind::Counter => Arc::from(Vec::new()),
            })
            .collect();
        Self {
            families,
            bounds,
            plans: FxHashMap::default(),
            series_seen: 0,
        }
    }

    pub fn families(&self) -> &[Family] {
        &self.families
    }

    fn plan(&mut self, store: &mut Store, batch: &Batch, key: &Key, refused: &mut u64) -> Plan {
        // The identity of a shape is every field value any family uses. Hash them without
        // allocating; compare in full only on a hash hit.
        let values: [std::borrow::Cow<'_, str>; 28] =
            crate::families::FIELDS.map(|(_, f)| f.value(batch, key));
        let mut h = rustc_hash::FxHasher::default();
        values
            .iter()
            .for_each(|v| std::hash::Hash::hash(v.as_ref(), &mut h));
        let hash = std::hash::Hasher::finish(&h);
        if self.series_seen != store.stats.series_expired || self.plans.len() > MAX_CACHED_PLANS {
            self.plans.clear();
            self.series_seen = store.stats.series_expired;
        }
        if let Some(hit) = self.plans.get(&hash).and_then(|entries| {
            entries
                .iter()
                .find(|(stored, _)| stored.iter().zip(&values).all(|(a, b)| a == b.as_ref()))
                .map(|(_, p)| p.clone())
        }) {
            return hit;
        }
        let owned: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let mut targets = Vec::new();
        for (family, bounds) in self.families.iter().zip(&self.bounds) {
            if family.reporter.is_some_and(|r| r != key.reporter) {
                continue;
            }
            let mut labels: Vec<(&str, String)> = family
                .labels
                .iter()
                .map(|(l, f)| (l.as_str(), f.value(batch, key).into_owned()))
                .collect();
            let mut series = |name: String, extra: Option<String>, scale: f64| {
                labels.retain(|(l, _)| *l != "le");
                if let Some(le) = extra {
                    labels.push(("le", le));
                }
                let mut all: Vec<(&str, &str)> =
                    labels.iter().map(|(l, v)| (*l, v.as_str())).collect();
                all.push((METRIC_NAME, &name));
                match store.series(&all, store::Kind::Counter { scale }) {
                    Ok(id) => Some(id),
                    Err(_) => {
                        *refused += 1;
                        None
                    }
                }
            };
            match &family.kind {
                Kind::Counter => targets.push(Target::Counter {
                    id: series(
                        family.name.clone(),
                        None,
                        1.0 / family.measure.base_per_unit(),
                    ),
                    measure: family.measure,
                }),
                Kind::Histogram(units) => {
                    let name = format!("{}_bucket", family.name);
                    let mut buckets: Vec<Option<SeriesId>> = units
                        .iter()
                        .map(|b| series(name.clone(), Some(le(*b)), 1.0))
                        .collect();
                    buckets.push(series(name, Some(le(f64::INFINITY)), 1.0));
                    let sum = series(
                        format!("{}_sum", family.name),
                        None,
                        1.0 / family.measure.base_per_unit(),
                    );
                    let count = series(format!("{}_count", family.name), None, 1.0);
                    targets.push(Target::Histogram {
                        bounds: bounds.clone(),
                        buckets,
                        sum,
                        count,
                        measure: family.measure,
                    });
                }
            }
        }
        let plan: Plan = targets.into();
        self.plans
            .entry(hash)
            .or_default()
            .push((owned, plan.clone()));
        plan
    }

    /// Counts every record of `batch` into the store, as of `now_ms`.
    pub fn ingest(&mut self, store: &mut Store, batch: &Batch, now_ms: i64) -> Outcome {
        let mut out = Outcome {
            events: batch.records.len() as u64,
            ..Outcome::default()
        };
        let plans: Vec<Plan> = batch
            .keys
            .iter()
            .map(|k| self.plan(store, batch, k, &mut out.refused_series))
            .collect();
        let res = store.limits().resolution_ms;
        // (key, step) → offset of its accumulator in `acc`: [events, per-target slots..., sums...].
        let mut groups: FxHashMap<(u32, i64), usize> = FxHashMap::default();
        let mut acc: Vec<u64> = Vec::new();
        for r in &batch.records {
            let Some(plan) = plans.get(r.key as usize) else {
                continue;
            };
            let end_ms = ((r.start_unix_us.saturating_add(r.duration_us)) / 1000)
                .min(i64::MAX as u64) as i64;
            let step = end_ms.min(now_ms).div_euclid(res);
            let width = 1 + plan.iter().map(|t| t.slots() + 1).sum::<usize>();
            let at = *groups.entry((r.key, step)).or_insert_with(|| {
                acc.resize(acc.len() + width, 0);
                acc.len() - width
            });
            let Some(slots) = acc.get_mut(at..at + width) else {
                continue;
            };
            slots[0] += 1;
            let mut o = 1;
            for t in plan.iter() {
                match t {
                    Target::Counter { measure, .. } => slots[o] += measure.of(r),
                    Target::Histogram {
                        bounds, measure, ..
                    } => {
                        let v = measure.of(r);
                        let b = bounds.partition_point(|bound| (v as f64) > *bound);
                        slots[o + b] += 1;
                        slots[o + t.slots()] += v;
                    }
                }
                o += t.slots() + 1;
            }
        }
        for (&(key, step), &at) in &groups {
            let Some(plan) = plans.get(key as usize) else {
                continue;
            };
            let Some(slots) = acc.get(at..) else { continue };
            let ts = step * res;
            let events = slots[0];
            let mut o = 1;
            for t in plan.iter() {
                match t {
                    Target::Counter { id, .. } => {
                        if let Some(id) = id {
                            store.add(*id, ts, slots[o], now_ms);
                        }
                    }
                    Target::Histogram {
                        buckets,
                        sum,
                        count,
                        ..
                    } => {
                        let mut cumulative = 0;
                        for (i, id) in buckets.iter().enumerate() {
                            cumulative += slots[o + i];
                            // Every bucket gets a sample, even +0, so all exist from the start.
                            if let Some(id) = id {
                                store.add(*id, ts, cumulative, now_ms);
                            }
                        }
                        if let Some(id) = sum {
                            store.add(*id, ts, slots[o + t.slots()], now_ms);
                        }
                        if let Some(id) = count {
                            store.add(*id, ts, events, now_ms);
                        }
                    }
                }
                o += t.slots() + 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::builtin;
    use crate::store::Limits;
    use promql_parser::label::{MatchOp, Matcher};
    use waggle_wire::{sample, BatchBuilder};

    fn batch(events: &[waggle_wire::Event]) -> Batch {
        let mut b = BatchBuilder::new();
        for e in events {
            b.push(e);
        }
        waggle_wire::decode(&b.finish(&sample::header(0))).unwrap()
    }

    fn sum_latest(store: &Store, matchers: &[Matcher], now: i64) -> f64 {
        store
            .select(matchers)
            .iter()
            .filter_map(|id| {
                store
                    .samples(*id, now - 10_000, now, now)
                    .last()
                    .map(|s| s.1)
            })
            .sum()
    }

    #[test]
    fn events_become_istio_series() {
        let mut store = Store::new(Limits::default());
        let mut mesh = Mesh::new(builtin());
        let events = sample::inbound(200, 5, false);
        let now = (events
            .iter()
            .map(|e| e.start_unix_us + e.duration_us)
            .max()
            .unwrap()
            / 1000) as i64
            + 1000;
        let out = mesh.ingest(&mut store, &batch(&events), now);
        assert_eq!(
            out,
            Outcome {
                events: 200,
                refused_series: 0
            }
        );
        let name = |n: &str| Matcher::new(MatchOp::Equal, "__name__", n);
        let reporter = Matcher::new(MatchOp::Equal, "reporter", "destination");
        assert_eq!(
            sum_latest(
                &store,
                &[name("istio_requests_total"), reporter.clone()],
                now
            ),
            200.0
        );
        let errors = events.iter().filter(|e| e.response_code >= 500).count() as f64;
        let code5 = Matcher::new(
            MatchOp::Re(regex::Regex::new("^(?:5.*)$").unwrap()),
            "response_code",
            "",
        );
        assert_eq!(
            sum_latest(&store, &[name("istio_requests_total"), code5], now),
            errors
        );
        let inf = Matcher::new(MatchOp::Equal, "le", "+Inf");
        assert_eq!(
            sum_latest(
                &store,
                &[name("istio_request_duration_milliseconds_bucket"), inf],
                now
            ),
            200.0
        );
        let le100 = Matcher::new(MatchOp::Equal, "le", "100");
        let fast = events.iter().filter(|e| e.duration_us <= 100_000).count() as f64;
        assert_eq!(
            sum_latest(
                &store,
                &[name("istio_request_duration_milliseconds_bucket"), le100],
                now
            ),
            fast
        );
        let total_ms: f64 = events.iter().map(|e| e.duration_us as f64).sum::<f64>() / 1000.0;
        let got = sum_latest(
            &store,
            &[name("istio_request_duration_milliseconds_sum")],
            now,
        );
        assert!(
            (got - total_ms).abs() < 1e-6 * total_ms,
            "{got} vs {total_ms}"
        );
        assert_eq!(
            sum_latest(&store, &[name("http_requests_total")], now),
            200.0
        );
        assert!(
            store
                .select(&[name("envoy_cluster_upstream_rq_total")])
                .is_empty(),
            "inbound events only"
        );
        let labels = store.labels(store.select(&[name("istio_requests_total")])[0]);
        assert_eq!(
            labels.len(),
            24 + 1,
            "25 Istio labels less an empty grpc_response_status, plus __name__"
        );
        assert_eq!(labels.get("destination_workload"), Some("reviews-v1"));
        assert_eq!(labels.get("destination_service_name"), Some("reviews"));
    }

    #[test]
    fn refused_series_are_counted_and_the_rest_still_count() {
        let mut store = Store::new(Limits {
            max_series: 5,
            ..Limits::default()
        });
        let mut mesh = Mesh::new(builtin());
        let events = sample::inbound(10, 6, false);
        let out = mesh.ingest(&mut store, &batch(&events), i64::MAX / 4);
        assert!(out.refused_series > 0);
        assert_eq!(store.series_count(), 5);
    }
}
