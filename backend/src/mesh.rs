//! Mesh events into counters: per batch, each request shape is resolved to its series once,
//! records are summed per (shape, step), and each series is touched once per step.
//!
//! The work is split so the store is held only briefly: [`Mesh::plans`] resolves shapes to
//! series (creating them in calls the caller can slice), [`Mesh::counts`] sums a batch into
//! per-series additions without touching the store, and the caller applies them.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use waggle_wire::{Batch, Key, MeshKind};

use crate::families::{le, Family, Kind, Measure};
use crate::store::{self, Refused, SeriesId, Store};

/// Where one family's events of one request shape go.
#[derive(Debug, Clone)]
pub enum Target {
    Counter {
        family: usize,
        id: Option<SeriesId>,
        measure: Measure,
    },
    Histogram {
        family: usize,
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

    /// The family, when some of its series were refused (the events are not counted there).
    fn refused(&self) -> Option<usize> {
        match self {
            Target::Counter { family, id, .. } => id.is_none().then_some(*family),
            Target::Histogram {
                family,
                buckets,
                sum,
                count,
                ..
            } => (buckets.iter().any(Option::is_none) || sum.is_none() || count.is_none())
                .then_some(*family),
        }
    }
}

/// Where one request shape's events go: its targets, and the families whose series the
/// limit refused (worked out once per shape, not per event).
#[derive(Debug)]
pub struct Shape {
    targets: Vec<Target>,
    refused: Vec<usize>,
    /// Accumulator slots per (shape, step): events, then each target's slots and sum.
    width: usize,
}

pub type Plan = Arc<Shape>;

/// One counter addition: `count` at the step holding `ts_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Add {
    pub id: SeriesId,
    pub ts_ms: i64,
    pub count: u64,
}

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub events: u64,
    /// New series the series limit refused.
    pub refused_series: u64,
    /// Events not counted in a family because its series were refused, by family index.
    pub refused_events: Vec<u64>,
}

impl Outcome {
    pub fn merge(&mut self, o: &Outcome) {
        self.events += o.events;
        self.refused_series += o.refused_series;
        if self.refused_events.len() < o.refused_events.len() {
            self.refused_events.resize(o.refused_events.len(), 0);
        }
        for (a, b) in self.refused_events.iter_mut().zip(&o.refused_events) {
            *a += b;
        }
    }

    pub fn events_refused(&self) -> u64 {
        self.refused_events.iter().sum()
    }
}

/// The series one family needs for one request shape: labels they all share, and per
/// series its metric name, `le` value (histogram buckets) and base units per value unit.
pub struct Wanted<'a> {
    pub base: Vec<(&'a str, String)>,
    pub members: Vec<(String, Option<String>, f64)>,
}

impl Wanted<'_> {
    /// Finds or creates the family's series in `store`, in member order.
    pub fn resolve(&self, store: &mut Store) -> Vec<Result<SeriesId, Refused>> {
        let base: Vec<(&str, &str)> = self.base.iter().map(|(l, v)| (*l, v.as_str())).collect();
        let members: Vec<store::Member<'_>> = self
            .members
            .iter()
            .map(|(name, le, per_unit)| store::Member {
                name,
                extra: le.as_deref(),
                kind: store::Kind::Counter {
                    per_unit: *per_unit,
                },
            })
            .collect();
        store.series_group(&base, "le", &members)
    }
}

/// The family table plus a cache of resolved request shapes (cleared when series expire).
#[derive(Debug)]
pub struct Mesh {
    families: Vec<Family>,
    bounds: Vec<Arc<[f64]>>,
    /// Plans by the hash of their field values (entries keep the values to rule out collisions).
    plans: FxHashMap<u64, Vec<(Vec<String>, Plan)>>,
    generation: u64,
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
            generation: 0,
        }
    }

    pub fn families(&self) -> &[Family] {
        &self.families
    }

    /// The series one request shape needs, family by family, in the order [`Mesh::build`]
    /// consumes them.
    fn wanted(&self, batch: &Batch, key: &Key) -> Vec<Wanted<'_>> {
        let mut out = Vec::new();
        for family in &self.families {
            if !family.takes(key.reporter, batch.header.mesh) {
                continue;
            }
            let base: Vec<(&str, String)> = family
                .labels
                .iter()
                .filter(|(l, _)| l != "le")
                .map(|(l, f)| (l.as_str(), f.value(batch, key).into_owned()))
                .collect();
            let per_unit = family.measure.base_per_unit();
            let members = match &family.kind {
                Kind::Counter => vec![(family.name.clone(), None, per_unit)],
                Kind::Histogram(units) => {
                    let bucket = format!("{}_bucket", family.name);
                    let bounds = units.iter().map(|b| le(*b)).chain([le(f64::INFINITY)]);
                    let mut m: Vec<(String, Option<String>, f64)> =
                        bounds.map(|b| (bucket.clone(), Some(b), 1.0)).collect();
                    m.push((format!("{}_sum", family.name), None, per_unit));
                    m.push((format!("{}_count", family.name), None, 1.0));
                    m
                }
            };
            out.push(Wanted { base, members });
        }
        out
    }

    /// Turns resolved ids (in [`Mesh::wanted`]'s order) into the shape's plan.
    fn build(&self, key: &Key, mesh: MeshKind, ids: &[Result<SeriesId, Refused>]) -> Plan {
        let mut ids = ids.iter().map(|r| r.as_ref().ok().copied());
        let mut next = || ids.next().flatten();
        let mut targets = Vec::new();
        for (family_idx, (family, bounds)) in self.families.iter().zip(&self.bounds).enumerate() {
            if !family.takes(key.reporter, mesh) {
                continue;
            }
            match &family.kind {
                Kind::Counter => targets.push(Target::Counter {
                    family: family_idx,
                    id: next(),
                    measure: family.measure,
                }),
                Kind::Histogram(units) => {
                    let buckets = (0..=units.len()).map(|_| next()).collect();
                    let sum = next();
                    let count = next();
                    targets.push(Target::Histogram {
                        family: family_idx,
                        bounds: bounds.clone(),
                        buckets,
                        sum,
                        count,
                        measure: family.measure,
                    });
                }
            }
        }
        let refused = targets.iter().filter_map(Target::refused).collect();
        let width = 1 + targets.iter().map(|t| t.slots() + 1).sum::<usize>();
        Arc::new(Shape {
            targets,
            refused,
            width,
        })
    }

    /// The plan of every key of `batch`. Shapes not cached are resolved through `resolve`
    /// (which finds or creates series, e.g. with [`Store::series_many`]), one shape per call,
    /// so a caller holding a lock can let go of it between calls. `generation` is the store's:
    /// cached plans are dropped when it changes (series ids were removed or renumbered).
    pub fn plans(
        &mut self,
        batch: &Batch,
        generation: u64,
        mut resolve: impl FnMut(&[Wanted<'_>]) -> Vec<Result<SeriesId, Refused>>,
    ) -> (Vec<Plan>, u64) {
        if self.generation != generation || self.plans.len() > MAX_CACHED_PLANS {
            self.plans.clear();
            self.generation = generation;
        }
        let mut refused = 0;
        let plans = batch
            .keys
            .iter()
            .map(|key| {
                // The identity of a shape is every field value any family uses. Hash them
                // without allocating; compare in full only on a hash hit.
                // The mesh is one of them: it decides which families a shape feeds.
                let values: [std::borrow::Cow<'_, str>; crate::families::FIELDS.len()] =
                    crate::families::FIELDS.map(|(_, f)| f.value(batch, key));
                let mut h = rustc_hash::FxHasher::default();
                values
                    .iter()
                    .for_each(|v| std::hash::Hash::hash(v.as_ref(), &mut h));
                let hash = std::hash::Hasher::finish(&h);
                if let Some(hit) = self.plans.get(&hash).and_then(|entries| {
                    entries
                        .iter()
                        .find(|(stored, _)| {
                            stored.iter().zip(&values).all(|(a, b)| a == b.as_ref())
                        })
                        .map(|(_, p)| p.clone())
                }) {
                    return hit;
                }
                let wanted = self.wanted(batch, key);
                let ids = resolve(&wanted);
                refused += ids
                    .iter()
                    .filter(|r| matches!(r, Err(Refused::SeriesLimit(_))))
                    .count() as u64;
                let plan = self.build(key, batch.header.mesh, &ids);
                let owned: Vec<String> = values.iter().map(|v| v.to_string()).collect();
                self.plans
                    .entry(hash)
                    .or_default()
                    .push((owned, plan.clone()));
                plan
            })
            .collect();
        (plans, refused)
    }

    /// Sums every record of `batch` into per-series additions, as of `now_ms`, handed to `sink`.
    pub fn counts(
        &self,
        plans: &[Plan],
        batch: &Batch,
        now_ms: i64,
        res: i64,
        mut sink: impl FnMut(Add),
    ) -> Outcome {
        let mut out = Outcome {
            events: batch.records.len() as u64,
            refused_events: vec![0; self.families.len()],
            ..Outcome::default()
        };
        // (key, step) → offset of its accumulator in `acc`: [events, per-target slots..., sums...].
        let mut groups: FxHashMap<(u32, i64), usize> = FxHashMap::default();
        let mut acc: Vec<u64> = Vec::new();
        for r in &batch.records {
            let Some(plan) = plans.get(r.key as usize) else {
                continue;
            };
            let end_ms =
                (r.start_unix_us.saturating_add(r.duration_us) / 1000).min(i64::MAX as u64) as i64;
            let step = end_ms.min(now_ms).div_euclid(res);
            let width = plan.width;
            let at = *groups.entry((r.key, step)).or_insert_with(|| {
                acc.resize(acc.len() + width, 0);
                acc.len() - width
            });
            let Some(slots) = acc.get_mut(at..at + width) else {
                continue;
            };
            slots[0] += 1;
            for f in &plan.refused {
                if let Some(c) = out.refused_events.get_mut(*f) {
                    *c += 1;
                }
            }
            let mut o = 1;
            for t in &plan.targets {
                match t {
                    Target::Counter { measure, .. } => {
                        slots[o] = slots[o].saturating_add(measure.of(r));
                    }
                    Target::Histogram {
                        bounds, measure, ..
                    } => {
                        let v = measure.of(r);
                        let b = bounds.partition_point(|bound| (v as f64) > *bound);
                        slots[o + b] += 1;
                        slots[o + t.slots()] = slots[o + t.slots()].saturating_add(v);
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
            let ts_ms = step * res;
            let events = slots[0];
            let mut push = |id: &Option<SeriesId>, count: u64| {
                if let Some(id) = id {
                    sink(Add {
                        id: *id,
                        ts_ms,
                        count,
                    });
                }
            };
            let mut o = 1;
            for t in &plan.targets {
                match t {
                    Target::Counter { id, .. } => push(id, slots[o]),
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
                            push(id, cumulative);
                        }
                        push(sum, slots[o + t.slots()]);
                        push(count, events);
                    }
                }
                o += t.slots() + 1;
            }
        }
        out
    }

    /// All three steps at once, on a store the caller owns (tests, benchmarks, replay).
    pub fn ingest(&mut self, store: &mut Store, batch: &Batch, now_ms: i64) -> Outcome {
        self.ingest_where(store, batch, now_ms, |_| true)
    }

    /// [`Mesh::ingest`], adding only to the series `keep` accepts (replaying the log onto a
    /// checkpoint skips series the checkpoint already holds the batch in).
    pub fn ingest_where(
        &mut self,
        store: &mut Store,
        batch: &Batch,
        now_ms: i64,
        keep: impl Fn(SeriesId) -> bool,
    ) -> Outcome {
        let generation = store.generation();
        let (plans, refused) = self.plans(batch, generation, |wanted| {
            wanted.iter().flat_map(|w| w.resolve(store)).collect()
        });
        let res = store.limits().resolution_ms;
        let mut out = self.counts(&plans, batch, now_ms, res, |a| {
            if keep(a.id) {
                store.add(a.id, a.ts_ms, a.count, now_ms);
            }
        });
        out.refused_series = refused;
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
                refused_series: 0,
                refused_events: vec![0; builtin().len()],
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
        let families = builtin();
        let not_counted: Vec<(&str, u64)> = families
            .iter()
            .zip(&out.refused_events)
            .map(|(f, n)| (f.name.as_str(), *n))
            .collect();
        let requests = not_counted
            .iter()
            .find(|(f, _)| *f == "istio_requests_total")
            .map_or(0, |x| x.1);
        assert!(
            requests > 0 && requests < 10,
            "the first shapes got their series, the later ones not: {not_counted:?}"
        );
        assert!(
            not_counted.iter().any(|(_, n)| *n == 10),
            "every event of a refused family is reported: {not_counted:?}"
        );
        let symbols = store.symbols_len();
        mesh.ingest(
            &mut store,
            &batch(&sample::inbound(10, 99, false)),
            i64::MAX / 4,
        );
        assert_eq!(
            store.symbols_len(),
            symbols,
            "refused label sets are not interned"
        );
    }
}
