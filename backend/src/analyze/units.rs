//! Numbers and durations as Flagger's messages print them (Go's `%v` and `time.Duration`).

/// A number as Go's `%v` prints a float64 threshold (no trailing `.0`).
pub fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Milliseconds as Go's `time.Duration` prints them: `312ms`, `1.5s`, `2m0s`.
pub fn go_ms(ms: f64) -> String {
    let ms = ms as i64;
    if ms.abs() < 1000 {
        return format!("{ms}ms");
    }
    let secs = ms as f64 / 1000.0;
    if secs.abs() < 60.0 {
        return format!("{}s", num(secs));
    }
    let m = ms / 60_000;
    let rest = (ms % 60_000) as f64 / 1000.0;
    if m < 60 {
        format!("{m}m{}s", num(rest))
    } else {
        format!("{}h{}m{}s", m / 60, m % 60, num(rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        for (ms, want) in [
            (312.0, "312ms"),
            (1500.0, "1.5s"),
            (500.0, "500ms"),
            (120_000.0, "2m0s"),
            (61_500.0, "1m1.5s"),
        ] {
            assert_eq!(go_ms(ms), want);
        }
        assert_eq!(num(99.0), "99");
        assert_eq!(num(99.5), "99.5");
    }
}
