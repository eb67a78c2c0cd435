//! Applying mesh batches: request shapes are resolved to series and the batch is summed
//! outside the exclusive hold; only creating series and adding counts take it, in slices.

use crate::mesh::{Mesh, Outcome, Wanted};

use super::{Lock, WriteSlices};

/// Counts `batches` into the store as of `now_ms`.
pub fn apply(lock: &Lock, mesh: &mut Mesh, batches: &[waggle_wire::Batch], now_ms: i64) -> Outcome {
    let mut total = Outcome::default();
    let res = lock.read().limits().resolution_ms;
    for batch in batches {
        let generation = lock.read().generation();
        // Shapes already cached cost nothing here; new ones take the lock one shape at a time.
        let mut w: Option<WriteSlices<'_>> = None;
        let (plans, refused) = mesh.plans(batch, generation, |wanted: &[Wanted<'_>]| {
            let w = w.get_or_insert_with(|| WriteSlices::new(lock));
            let mut ids = Vec::new();
            for family in wanted {
                ids.extend(family.resolve(w.store()));
                w.tick();
            }
            ids
        });
        drop(w);
        let mut adds = Vec::new();
        let mut out = mesh.counts(&plans, batch, now_ms, res, |a| adds.push(a));
        out.refused_series = refused;
        if !adds.is_empty() {
            let mut w = WriteSlices::new(lock);
            for a in adds {
                w.store().add(a.id, a.ts_ms, a.count, now_ms);
                w.tick();
            }
        }
        total.merge(&out);
    }
    total
}
