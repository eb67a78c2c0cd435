//! Numbers and timestamps written the way Prometheus 2.42's JSON API writes them.

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`, with Prometheus's spellings of the specials.
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// A sample value: shortest digits, exponent form below 1e-6 and from 1e21 (Go's `e` format:
/// explicit sign and at least two exponent digits).
pub fn sample_value(v: f64) -> String {
    let abs = v.abs();
    if v.is_finite() && abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{v:e}");
        if let Some((mantissa, exp)) = s.split_once('e') {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            return format!("{mantissa}e{sign}{digits:0>2}");
        }
        return s;
    }
    go_float(v)
}

/// A sample timestamp in seconds: integer part, then three zero-padded millisecond digits when
/// they are not all zero (`1.100`, `0.010`, `-0.001`).
pub fn timestamp(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let abs = ms.unsigned_abs();
    let (secs, frac) = (abs / 1000, abs % 1000);
    if frac == 0 {
        format!("{sign}{secs}")
    } else {
        format!("{sign}{secs}.{frac:03}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_like_prometheus() {
        let cases = [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (1234567.8, "1234567.8"),
            (0.0000012345678, "0.0000012345678"),
            (1.2345678e-67, "1.2345678e-67"),
            (1e-7, "1e-07"),
            (1e21, "1e+21"),
            (-2.5e22, "-2.5e+22"),
            (0.0, "0"),
            (1.0, "1"),
            (99.5, "99.5"),
        ];
        for (v, want) in cases {
            assert_eq!(sample_value(v), want, "{v}");
        }
        assert_eq!(go_float(1e-7), "0.0000001");
    }

    #[test]
    fn timestamps_like_prometheus() {
        for (ms, want) in [
            (1100, "1.100"),
            (10, "0.010"),
            (1000, "1"),
            (-1, "-0.001"),
            (1435781451781, "1435781451.781"),
        ] {
            assert_eq!(timestamp(ms), want);
        }
    }
}
