//! Unit tests of the snapshot module.

use super::*;
use crate::store::{Kind, Limits, STALE_NAN};

fn sample_store() -> Store {
    let mut s = Store::new(Limits::default());
    for w in 0..50 {
        let id = s
            .series(
                &[
                    ("__name__", "req_total"),
                    ("w", &format!("w{w}")),
                    ("ns", "test"),
                ],
                Kind::Counter { per_unit: 1000.0 },
            )
            .unwrap();
        for step in 0..2000 {
            if step % (w + 1) == 0 {
                s.add(
                    id,
                    step * 1000,
                    (step as u64 * 7 + w as u64) % 13,
                    step * 1000,
                );
            }
        }
    }
    let raw = s
        .series(&[("__name__", "kpi"), ("shop", "eu")], Kind::Raw)
        .unwrap();
    for t in 0..100 {
        s.append(raw, 1_000_000 + t * 15_000, t as f64 * 0.5, 3_000_000)
            .unwrap();
    }
    s.append(raw, 2_600_000, f64::from_bits(STALE_NAN), 3_000_000)
        .unwrap();
    s.maintain(2_100_000);
    s
}

fn everything(s: &Store) -> Vec<(String, Vec<(i64, u64)>)> {
    let mut out: Vec<_> = (0..s.id_bound())
        .filter(|id| s.get(*id).is_some())
        .map(|id| {
            let samples = s.samples(id, i64::MIN / 4, i64::MAX / 4, 2_100_000);
            (
                s.labels(id).to_string(),
                samples.into_iter().map(|(t, v)| (t, v.to_bits())).collect(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_restored_store_answers_exactly_as_the_original() {
    let s = sample_store();
    let path = std::env::temp_dir().join(format!("waggle-snap-{}.wgs", std::process::id()));
    let header = Header {
        resolution_ms: 1000,
        retention_ms: 3_600_000,
        created_ms: 5,
        progress: vec![("prom".into(), 1234)],
    };
    let mut w = Writer::create(&path, &header).unwrap();
    let bound = s.id_bound();
    w.slice(&s, 0..20, 7).unwrap();
    w.slice(&s, 20..bound, 9).unwrap();
    commit(w.finish().unwrap()).unwrap();
    let r = restore(&path, Limits::default()).unwrap();
    assert_eq!(r.header, header);
    assert_eq!(r.series, 51);
    assert_eq!(r.min_seq, 7);
    assert_eq!(everything(&r.store), everything(&s));
    // Counters go on from where they were, in the same grid.
    let mut a = s;
    let mut b = r.store;
    let id_a = a
        .lookup(&[("__name__", "req_total"), ("w", "w3"), ("ns", "test")])
        .unwrap();
    let id_b = b
        .lookup(&[("__name__", "req_total"), ("w", "w3"), ("ns", "test")])
        .unwrap();
    a.add(id_a, 2_000_500, 4, 2_000_500);
    b.add(id_b, 2_000_500, 4, 2_000_500);
    assert_eq!(
        a.samples(id_a, 1_990_000, 2_001_000, 2_001_000),
        b.samples(id_b, 1_990_000, 2_001_000, 2_001_000)
    );
    // Foreign, truncated and corrupt files are refused by name.
    let bytes = std::fs::read(&path).unwrap();
    let cut = &bytes[..bytes.len() - 10];
    std::fs::write(&path, cut).unwrap();
    assert!(matches!(
        restore(&path, Limits::default()),
        Err(SnapshotError::Truncated(_))
    ));
    let mut flipped = bytes.clone();
    flipped[40] ^= 1;
    std::fs::write(&path, &flipped).unwrap();
    assert!(matches!(
        restore(&path, Limits::default()),
        Err(SnapshotError::Corrupt { .. })
    ));
    std::fs::write(&path, &bytes).unwrap();
    let other = Limits {
        resolution_ms: 2000,
        ..Limits::default()
    };
    let e = restore(&path, other).err().unwrap().to_string();
    assert!(e.contains("--resolution 1000 ms"), "{e}");
    std::fs::write(&path, b"not a snapshot").unwrap();
    assert!(matches!(
        restore(&path, Limits::default()),
        Err(SnapshotError::Magic)
    ));
    let _ = std::fs::remove_file(&path);
}
