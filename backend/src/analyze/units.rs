//! Numbers and durations as Flagger's messages print them (Go's `%v` and `time.Duration`), and
//! Go's `time.ParseDuration`, which reads a webhook's `timeout`.

use std::time::Duration;

/// A number as Go's `%v` prints a float64 threshold: shortest digits, an exponent below 1e-4
/// and from 1e21 (`1e+21`, `1.5e-05`), `+Inf`, `NaN`.
pub fn num(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let a = v.abs();
    if a != 0.0 && !(1e-4..1e21).contains(&a) {
        let s = format!("{v:e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = e.strip_prefix('-').map_or(("+", e), |d| ("-", d));
        return format!("{m}e{sign}{digits:0>2}");
    }
    format!("{v}")
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

/// Go's `time.ParseDuration`, with its error texts; a negative duration is zero (Go's HTTP
/// client treats both as "no timeout").
pub fn go_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    let mut s = text.strip_prefix(['-', '+']).unwrap_or(text);
    let negative = text.starts_with('-');
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut nanos: f64 = 0.0;
    while !s.is_empty() {
        // Go's grammar: [0-9]*(\.[0-9]*)? then a unit, which runs to the next digit or '.'.
        let int = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let mut end = int;
        if s[int..].starts_with('.') {
            end = int
                + 1
                + s[int + 1..]
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(s.len() - int - 1);
        }
        if int == 0 && end <= 1 {
            return Err(invalid());
        }
        let (n, rest) = s.split_at(end);
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let (unit, rest) = rest.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {text:?}"));
        }
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {text:?}")),
        };
        let v: f64 = n.parse().map_err(|_| invalid())?;
        nanos += v * scale;
        s = rest;
    }
    if nanos > i64::MAX as f64 {
        return Err(invalid());
    }
    if negative {
        return Ok(Duration::ZERO);
    }
    Ok(Duration::from_nanos(nanos as u64))
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
            (999.0, "999ms"),
            (1000.0, "1s"),
            (60_000.0, "1m0s"),
            (3_600_000.0, "1h0m0s"),
        ] {
            assert_eq!(go_ms(ms), want);
        }
        assert_eq!(num(99.0), "99");
        let parsed = [
            ("10s", Ok(Duration::from_secs(10))),
            ("1m30s", Ok(Duration::from_secs(90))),
            ("1.5s", Ok(Duration::from_millis(1500))),
            ("250ms", Ok(Duration::from_millis(250))),
            ("2h", Ok(Duration::from_secs(7200))),
            ("0", Ok(Duration::ZERO)),
            ("-5s", Ok(Duration::ZERO)),
            ("abc", Err("time: invalid duration \"abc\"")),
            ("10", Err("time: missing unit in duration \"10\"")),
            ("1d", Err("time: unknown unit \"d\" in duration \"1d\"")),
            ("", Err("time: invalid duration \"\"")),
            (".s", Err("time: invalid duration \".s\"")),
            ("1.s", Ok(Duration::from_secs(1))),
            (".5s", Ok(Duration::from_millis(500))),
            ("1.2.3s", Err("time: missing unit in duration \"1.2.3s\"")),
        ];
        for (text, want) in parsed {
            assert_eq!(go_duration(text), want.map_err(str::to_owned), "{text}");
        }
        assert_eq!(num(99.5), "99.5");
        for (v, want) in [
            (-3.0, "-3"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (0.0001, "0.0001"),
            (1.5e-5, "1.5e-05"),
            (-2e-7, "-2e-07"),
            (0.0, "0"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(num(v), want, "{v}");
        }
    }
}
