//! Unit tests of the grid module.

use super::*;

fn all(g: &Grid, now: i64) -> Vec<(i64, Point)> {
    let mut out = vec![];
    g.points(i64::MIN / 2, i64::MAX / 2, now, |s, p| out.push((s, p)));
    out
}

fn values(g: &Grid, now: i64) -> Vec<(i64, u64)> {
    all(g, now)
        .into_iter()
        .filter_map(|(s, p)| match p {
            Point::Value(v) => Some((s, v)),
            Point::Stale => None,
        })
        .collect()
}

#[test]
fn extends_to_now_while_active() {
    let mut g = Grid::new(300);
    g.add(10, 2);
    g.add(12, 1);
    assert_eq!(
        values(&g, 14),
        [(9, 0), (10, 2), (11, 2), (12, 3), (13, 3), (14, 3)],
        "a new series starts from an implicit 0"
    );
}

#[test]
fn late_events_land_in_their_step_within_the_head() {
    let mut g = Grid::new(300);
    g.add(100, 1);
    g.add(105, 1);
    assert!(g.add(101, 5), "within the head window");
    assert_eq!(values(&g, 105).first(), Some(&(99, 0)));
    assert_eq!(values(&g, 105).get(1), Some(&(100, 1)));
    assert_eq!(values(&g, 105).get(2), Some(&(101, 6)));
    g.add(200, 1);
    assert!(
        !g.add(150, 1),
        "older than the head: counted in its oldest step"
    );
    assert_eq!(values(&g, 200).last(), Some(&(200, 9)));
}

#[test]
fn goes_stale_and_resumes_with_the_same_total() {
    let mut g = Grid::new(5);
    g.add(0, 1);
    g.add(2, 1);
    let pts = all(&g, 20);
    assert_eq!(
        pts.last(),
        Some(&(7, Point::Stale)),
        "stale 5 steps after the last event"
    );
    assert_eq!(pts.len(), 9, "the leading 0, steps 0 to 6, the marker");
    assert_eq!(pts[0], (-1, Point::Value(0)));
    g.add(30, 4);
    let pts = all(&g, 31);
    assert_eq!(pts[8], (7, Point::Stale));
    assert_eq!(&pts[9..], [(30, Point::Value(6)), (31, Point::Value(6))]);
    assert!(g.maintain(31, 0));
    assert_eq!(all(&g, 31), pts, "maintenance changes nothing visible");
}

#[test]
fn long_runs_compress_and_retention_trims() {
    let mut g = Grid::new(300);
    for s in 0..3600 {
        g.add(s, s as u64 % 3);
    }
    let vs = values(&g, 3599);
    assert_eq!(vs.len(), 3601, "with the leading 0");
    let expected: u64 = (0..3600u64).map(|s| s % 3).sum();
    assert_eq!(vs.last(), Some(&(3599, expected)));
    assert!(
        std::mem::size_of::<Grid>() + g.heap_bytes() < 2048,
        "an hour of a busy counter in {} bytes",
        g.heap_bytes()
    );
    assert!(g.maintain(3599, 3000));
    let kept = values(&g, 3599);
    assert_ne!(
        kept.first().map(|p| p.1),
        Some(0),
        "trimmed with the first chunk"
    );
    assert!(kept.first().unwrap().0 >= 2000 && kept.first().unwrap().0 <= 3000);
    assert_eq!(
        kept.last(),
        Some(&(3599, expected)),
        "totals survive trimming"
    );
}

#[test]
fn zero_counts_keep_a_series_alive_without_storing() {
    let mut g = Grid::new(5);
    g.add(0, 3);
    g.add(4, 0);
    g.add(8, 0);
    let pts = all(&g, 12);
    assert_eq!(
        pts.len(),
        14,
        "the leading 0, then alive until 5 steps after the last touch: {pts:?}"
    );
    assert_eq!(pts.last(), Some(&(12, Point::Value(3))));
    assert_eq!(all(&g, 13).last(), Some(&(13, Point::Stale)));
}

#[test]
fn the_head_is_a_small_inline_vector() {
    let mut h = Head::default();
    h.add(2, 5);
    h.add(0, 1);
    assert_eq!(h.iter().collect::<Vec<_>>(), [1, 0, 5]);
    h.add(HEAD_STEPS, 9);
    assert_eq!(h.len(), 3, "beyond the head: ignored (callers seal first)");
    h.drain_front(1);
    assert_eq!(h.iter().collect::<Vec<_>>(), [0, 5]);
    let mut wide = Head::default();
    wide.add(1, u64::from(u32::MAX));
    wide.add(1, 1);
    assert_eq!(wide.get(1), 1 << 32, "wider than 32 bits");
    wide.add(1, u64::MAX);
    assert_eq!(wide.get(1), u64::MAX, "saturates");
    h.drain_front(5);
    assert!(h.is_empty() && h.sum() == 0);
    h.add(0, 2);
    assert_eq!(h.iter().collect::<Vec<_>>(), [2], "drained slots are zero");
}

#[test]
fn windows_in_the_newest_chunk_match_a_full_decode() {
    let mut g = Grid::new(300);
    for s in 0..2000i64 {
        g.add(s, ((s * 7919) % 13) as u64);
    }
    let now = 1999;
    let full = all(&g, now);
    for from in (1700..2000).step_by(7) {
        for len in [0, 1, 59, 60, 61, 200, 300] {
            let mut got = vec![];
            g.points(from, from + len, now, |s, p| got.push((s, p)));
            let want: Vec<_> = full
                .iter()
                .copied()
                .filter(|(s, _)| (from..=from + len).contains(s))
                .collect();
            assert_eq!(got, want, "window {from}..={}", from + len);
        }
    }
}

#[test]
fn any_point_agrees_with_points() {
    let mut g = Grid::new(5);
    for s in [3, 4, 9, 40, 41, 2000] {
        g.add(s, 1);
    }
    for now in [41, 60, 2000, 2010] {
        for from in (-5..2020).step_by(3) {
            for len in [0, 1, 4, 30] {
                let mut n = 0;
                g.points(from, from + len, now, |_, _| n += 1);
                assert_eq!(
                    g.any_point(from, from + len, now),
                    n > 0,
                    "{from}..={} at {now}",
                    from + len
                );
            }
        }
    }
}

#[test]
fn window_bounds_are_inclusive() {
    let mut g = Grid::new(300);
    for s in 0..20 {
        g.add(s, 1);
    }
    let mut got = vec![];
    g.points(5, 7, 19, |s, _| got.push(s));
    assert_eq!(got, [5, 6, 7]);
}
