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

/// Counters whose increments look random: their bit-packed grids do not compress.
fn noisy_store(series: usize) -> Store {
    let mut s = Store::new(Limits::default());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for w in 0..series {
        let id = s
            .series(
                &[("__name__", "noisy_total"), ("w", &format!("w{w}"))],
                Kind::Counter { per_unit: 1.0 },
            )
            .unwrap();
        for step in 0..3000i64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            s.add(id, step * 1000, (x >> 40) % 5000, step * 1000);
        }
    }
    s
}

/// (frames stored as zstd, frames stored plain) in a snapshot file.
fn frame_kinds(bytes: &[u8]) -> (usize, usize) {
    let (mut at, mut kinds) = (12, (0, 0));
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if bytes[at + 8..].starts_with(&ZSTD_MAGIC) {
            kinds.0 += 1;
        } else {
            kinds.1 += 1;
        }
        at += 8 + len;
    }
    kinds
}

/// Writes `s` in slices of `per_slice` series; returns the payload bytes before compression.
fn write(s: &Store, path: &Path, per_slice: u32) -> u64 {
    let header = Header {
        resolution_ms: 1000,
        ..Header::default()
    };
    let mut w = Writer::create(path, &header).unwrap();
    let bound = s.id_bound();
    for from in (0..bound).step_by(per_slice as usize) {
        w.slice(s, from..(from + per_slice).min(bound), u64::from(from))
            .unwrap();
    }
    let payload = w.bytes;
    commit(w.finish().unwrap()).unwrap();
    payload
}

#[test]
fn frames_that_do_not_compress_are_stored_plain_and_read_back_in_order() {
    let path = std::env::temp_dir().join(format!("waggle-snap-plain-{}.wgs", std::process::id()));
    let mut s = noisy_store(30);
    for (i, sparse) in sample_store_labels().into_iter().enumerate() {
        let id = s.series(&sparse, Kind::Counter { per_unit: 1.0 }).unwrap();
        s.add(id, i as i64 * 1000, 1, 3_000_000);
    }
    // Eleven slices of three series: more frames than parsing threads, in several rounds.
    let _ = write(&s, &path, 3);
    let bytes = std::fs::read(&path).unwrap();
    let (zstd, plain) = frame_kinds(&bytes);
    assert!(
        plain >= 10,
        "noisy slices are stored plain ({zstd} zstd, {plain} plain)"
    );
    assert!(
        zstd >= 1,
        "the sparse slice and the header still compress ({zstd} zstd)"
    );
    let r = restore(&path, Limits::default()).unwrap();
    assert_eq!(everything(&r.store), everything(&s));
    // Ids follow file order, so the per-series log positions line up with the slices.
    for id in 0..s.id_bound() {
        assert_eq!(r.store.labels(id).to_string(), s.labels(id).to_string());
        assert_eq!(r.seqs[id as usize], u64::from(id - id % 3));
    }
    // A corrupt plain frame in the middle is named by its index, whichever thread read it.
    let mut flipped = bytes.clone();
    let mut at = 12;
    for _ in 0..5 {
        at += 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    flipped[at + 20] ^= 0x10;
    std::fs::write(&path, &flipped).unwrap();
    match restore(&path, Limits::default()) {
        Err(SnapshotError::Corrupt { frame: 5, why }) => assert!(why.contains("checksum"), "{why}"),
        other => panic!(
            "expected frame 5 corrupt, got {:?}",
            other.map(|r| r.series)
        ),
    }
    let _ = std::fs::remove_file(&path);
}

fn sample_store_labels() -> Vec<Vec<(&'static str, &'static str)>> {
    vec![
        vec![("__name__", "sparse_total"), ("w", "a")],
        vec![("__name__", "sparse_total"), ("w", "b")],
        vec![("__name__", "sparse_total"), ("w", "c")],
    ]
}

#[test]
fn version_one_files_are_read_and_newer_versions_refused_by_number() {
    let path = std::env::temp_dir().join(format!("waggle-snap-v1-{}.wgs", std::process::id()));
    let s = sample_store();
    let _ = write(&s, &path, 20);
    let mut bytes = std::fs::read(&path).unwrap();
    // Its slices compress, as every frame of a version 1 file did.
    assert!(frame_kinds(&bytes).0 >= 2);
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let r = restore(&path, Limits::default()).unwrap();
    assert_eq!(everything(&r.store), everything(&s));
    bytes[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let e = restore(&path, Limits::default()).err().unwrap().to_string();
    assert!(
        e.contains(&format!("format version {}", VERSION + 1)),
        "{e}"
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_large_frame_is_compressed_only_when_its_series_compress() {
    let path = std::env::temp_dir().join(format!("waggle-snap-probe-{}.wgs", std::process::id()));
    // One slice each, both larger than the probe.
    let noisy = noisy_store(40);
    let mut sparse = Store::new(Limits::default());
    for w in 0..3000 {
        let id = sparse
            .series(
                &[("__name__", "sparse_total"), ("pod", &format!("pod-{w}"))],
                Kind::Counter { per_unit: 1.0 },
            )
            .unwrap();
        sparse.add(id, 1000, 1, 2000);
    }
    for (store, zstd_slices) in [(&noisy, 0), (&sparse, 1)] {
        let payload = write(store, &path, 5000);
        assert!(payload > 2 * PROBE as u64, "{payload} bytes");
        let bytes = std::fs::read(&path).unwrap();
        // The header and footer are tiny and stored plain; the one slice decides.
        assert_eq!(frame_kinds(&bytes), (zstd_slices, 3 - zstd_slices));
        let r = restore(&path, Limits::default()).unwrap();
        assert_eq!(everything(&r.store), everything(store));
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_zero_filled_tail_is_an_incomplete_file_found_at_its_first_zero_frame() {
    let path = std::env::temp_dir().join(format!("waggle-snap-zeros-{}.wgs", std::process::id()));
    let s = sample_store();
    let _ = write(&s, &path, 20);
    let bytes = std::fs::read(&path).unwrap();
    // Keep the header frame, then a megabyte of zeros where the slices were.
    let first = 12 + 8 + u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let mut torn = bytes[..first].to_vec();
    torn.resize(first + (1 << 20), 0);
    std::fs::write(&path, &torn).unwrap();
    assert!(matches!(
        restore(&path, Limits::default()),
        Err(SnapshotError::Truncated(1))
    ));
    let _ = std::fs::remove_file(&path);
}
