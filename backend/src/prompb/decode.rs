//! Decodes a `WriteRequest` without copying its strings, checking every series as it goes:
//! label names (valid, unique, bounded in number and size), values (bounded), the metric
//! name, and sample order. Memory is the decompressed body plus a few words per label and
//! sample; nothing is allocated per string.

use crate::families::{is_label_name, is_metric_name};
use crate::labels::METRIC_NAME;

/// What one request may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_series: usize,
    pub max_labels: usize,
    pub max_name_bytes: usize,
    pub max_value_bytes: usize,
}

impl Default for Limits {
    /// Generous beside every sender's defaults (Prometheus sends 500 or 2,000 samples a
    /// request, vmagent 10,000) and Mimir's per-series limits (30 labels, 1 KiB names, 2 KiB
    /// values), so only malformed or hostile requests meet them.
    fn default() -> Self {
        Self {
            max_series: 100_000,
            max_labels: 64,
            max_name_bytes: 1024,
            max_value_bytes: 16 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed remote-write protobuf: {0}")]
    Malformed(&'static str),
    #[error("the request holds more than {0} series; send smaller requests")]
    TooManySeries(usize),
    #[error("series {series} has no labels")]
    NoLabels { series: usize },
    #[error("series {series} has {count} labels, more than the {limit} allowed")]
    TooManyLabels {
        series: usize,
        count: usize,
        limit: usize,
    },
    #[error("series {series}: label name of {len} bytes is longer than {limit}")]
    NameTooLong {
        series: usize,
        len: usize,
        limit: usize,
    },
    #[error("series {series}: the value of label {name:?} is {len} bytes, longer than {limit}")]
    ValueTooLong {
        series: usize,
        name: String,
        len: usize,
        limit: usize,
    },
    #[error("series {series}: label {what} is not valid UTF-8")]
    BadUtf8 { series: usize, what: &'static str },
    #[error("series {series}: invalid label name {name:?}")]
    BadLabelName { series: usize, name: String },
    #[error("series {series}: invalid metric name {name:?}")]
    BadMetricName { series: usize, name: String },
    #[error("series {series}: duplicate label name {name:?}")]
    DuplicateLabel { series: usize, name: String },
    #[error("series {series}: samples are not in increasing timestamp order")]
    OutOfOrder { series: usize },
}

/// A byte range of the request body.
type Span = (u32, u32);

/// A decoded request: the body, and per series its labels (sorted by name) and samples.
#[derive(Debug, Default)]
pub struct Request {
    buf: Vec<u8>,
    pairs: Vec<(Span, Span)>,
    samples: Vec<(i64, f64)>,
    /// Per series: end of its labels in `pairs` and of its samples in `samples`.
    series: Vec<(u32, u32)>,
}

/// One series of a [`Request`].
#[derive(Debug, Clone, Copy)]
pub struct SeriesView<'a> {
    req: &'a Request,
    pairs: &'a [(Span, Span)],
    pub samples: &'a [(i64, f64)],
}

impl<'a> SeriesView<'a> {
    /// The labels, sorted by name.
    pub fn labels(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let req = self.req;
        self.pairs
            .iter()
            .map(move |(n, v)| (req.str(*n), req.str(*v)))
    }

    pub fn label_vec(&self) -> Vec<(&'a str, &'a str)> {
        self.labels().collect()
    }
}

impl Request {
    fn str(&self, (from, to): Span) -> &str {
        // Checked as UTF-8 when decoded.
        self.buf
            .get(from as usize..to as usize)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    pub fn sample_count(&self) -> usize {
        self.samples.len()
    }

    /// Bytes held: the body and the tables over it.
    pub fn bytes(&self) -> usize {
        self.buf.capacity()
            + self.pairs.capacity() * 16
            + self.samples.capacity() * 16
            + self.series.capacity() * 8
    }

    pub fn series(&self) -> impl Iterator<Item = SeriesView<'_>> + '_ {
        let mut prev = (0usize, 0usize);
        self.series.iter().map(move |&(p, s)| {
            let (p, s) = (p as usize, s as usize);
            let view = SeriesView {
                req: self,
                pairs: self.pairs.get(prev.0..p).unwrap_or_default(),
                samples: self.samples.get(prev.1..s).unwrap_or_default(),
            };
            prev = (p, s);
            view
        })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.end
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .filter(|_| self.pos < self.end)
                .ok_or(DecodeError::Malformed("truncated varint"))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Malformed("varint longer than 10 bytes"))
    }

    /// A length-delimited field's range.
    fn len_delimited(&mut self) -> Result<(usize, usize), DecodeError> {
        let len = usize::try_from(self.varint()?).map_err(|_| DecodeError::Malformed("length"))?;
        let from = self.pos;
        let to = from
            .checked_add(len)
            .filter(|to| *to <= self.end)
            .ok_or(DecodeError::Malformed("length past the end of its message"))?;
        self.pos = to;
        Ok((from, to))
    }

    fn fixed64(&mut self) -> Result<u64, DecodeError> {
        let b = self
            .buf
            .get(self.pos..self.pos + 8)
            .filter(|_| self.pos + 8 <= self.end)
            .ok_or(DecodeError::Malformed("truncated fixed64"))?;
        self.pos += 8;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// Skips a field of this wire type.
    fn skip(&mut self, wire: u64) -> Result<(), DecodeError> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.fixed64().map(drop),
            2 => self.len_delimited().map(drop),
            5 => {
                if self.pos + 4 > self.end {
                    return Err(DecodeError::Malformed("truncated fixed32"));
                }
                self.pos += 4;
                Ok(())
            }
            _ => Err(DecodeError::Malformed("unsupported wire type")),
        }
    }

    /// The next field's (number, wire type).
    fn key(&mut self) -> Result<(u64, u64), DecodeError> {
        let k = self.varint()?;
        Ok((k >> 3, k & 7))
    }

    fn sub(&self, (from, to): (usize, usize)) -> Reader<'a> {
        Reader {
            buf: self.buf,
            pos: from,
            end: to,
        }
    }
}

/// Decodes and checks a decompressed `WriteRequest`, taking ownership of its bytes.
pub fn decode(buf: Vec<u8>, limits: &Limits) -> Result<Request, DecodeError> {
    if u32::try_from(buf.len()).is_err() {
        return Err(DecodeError::Malformed("body larger than 4 GiB"));
    }
    let mut req = Request::default();
    {
        let mut r = Reader {
            buf: &buf,
            pos: 0,
            end: buf.len(),
        };
        let mut names: Vec<&str> = Vec::new();
        while !r.done() {
            let (field, wire) = r.key()?;
            if field != 1 || wire != 2 {
                r.skip(wire)?;
                continue;
            }
            let index = req.series.len();
            if index >= limits.max_series {
                return Err(DecodeError::TooManySeries(limits.max_series));
            }
            let ts = r.len_delimited()?;
            series(&mut r.sub(ts), index, limits, &mut req, &mut names)?;
        }
    }
    req.buf = buf;
    Ok(req)
}

fn series<'a>(
    r: &mut Reader<'a>,
    index: usize,
    limits: &Limits,
    req: &mut Request,
    names: &mut Vec<&'a str>,
) -> Result<(), DecodeError> {
    let first_pair = req.pairs.len();
    let first_sample = req.samples.len();
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, 2) => {
                if req.pairs.len() - first_pair >= limits.max_labels {
                    return Err(DecodeError::TooManyLabels {
                        series: index,
                        count: req.pairs.len() - first_pair + 1,
                        limit: limits.max_labels,
                    });
                }
                let l = r.len_delimited()?;
                req.pairs.push(label(&mut r.sub(l), index, limits)?);
            }
            (2, 2) => {
                let s = r.len_delimited()?;
                req.samples.push(sample(&mut r.sub(s))?);
            }
            _ => r.skip(wire)?,
        }
    }
    let buf = r.buf;
    let text =
        |(from, to): Span| std::str::from_utf8(&buf[from as usize..to as usize]).unwrap_or("");
    let pairs = &mut req.pairs[first_pair..];
    if pairs.is_empty() {
        return Err(DecodeError::NoLabels { series: index });
    }
    pairs.sort_unstable_by(|a, b| text(a.0).cmp(text(b.0)));
    names.clear();
    for &(n, v) in pairs.iter() {
        let name = text(n);
        if names.last() == Some(&name) {
            return Err(DecodeError::DuplicateLabel {
                series: index,
                name: name.to_owned(),
            });
        }
        if !is_label_name(name) {
            return Err(DecodeError::BadLabelName {
                series: index,
                name: name.to_owned(),
            });
        }
        if name == METRIC_NAME && !is_metric_name(text(v)) {
            return Err(DecodeError::BadMetricName {
                series: index,
                name: text(v).to_owned(),
            });
        }
        names.push(name);
    }
    if req.samples[first_sample..]
        .windows(2)
        .any(|w| w[1].0 <= w[0].0)
    {
        return Err(DecodeError::OutOfOrder { series: index });
    }
    req.series
        .push((req.pairs.len() as u32, req.samples.len() as u32));
    Ok(())
}

fn label(r: &mut Reader<'_>, index: usize, limits: &Limits) -> Result<(Span, Span), DecodeError> {
    let (mut name, mut value) = ((0, 0), (0, 0));
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, 2) => name = r.len_delimited()?,
            (2, 2) => value = r.len_delimited()?,
            _ => r.skip(wire)?,
        }
    }
    let utf8 = |(from, to): (usize, usize), what| {
        std::str::from_utf8(&r.buf[from..to])
            .map(|_| (from as u32, to as u32))
            .map_err(|_| DecodeError::BadUtf8 {
                series: index,
                what,
            })
    };
    let (n, v) = (utf8(name, "name")?, utf8(value, "value")?);
    let name_len = name.1 - name.0;
    if name_len > limits.max_name_bytes {
        return Err(DecodeError::NameTooLong {
            series: index,
            len: name_len,
            limit: limits.max_name_bytes,
        });
    }
    if value.1 - value.0 > limits.max_value_bytes {
        return Err(DecodeError::ValueTooLong {
            series: index,
            name: String::from_utf8_lossy(&r.buf[name.0..name.1]).into_owned(),
            len: value.1 - value.0,
            limit: limits.max_value_bytes,
        });
    }
    Ok((n, v))
}

fn sample(r: &mut Reader<'_>) -> Result<(i64, f64), DecodeError> {
    let (mut ts, mut v) = (0i64, 0f64);
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, 1) => v = f64::from_bits(r.fixed64()?),
            (2, 0) => ts = r.varint()? as i64,
            _ => r.skip(wire)?,
        }
    }
    Ok((ts, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompb::{Label, Sample, TimeSeries, WriteRequest};
    use proptest::prelude::*;

    fn encode(req: &WriteRequest) -> Vec<u8> {
        prost::Message::encode_to_vec(req)
    }

    fn ts(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| Label {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|&(timestamp, value)| Sample { value, timestamp })
                .collect(),
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        let l = Limits {
            max_series: 2,
            max_labels: 3,
            max_name_bytes: 8,
            max_value_bytes: 8,
        };
        let cases: Vec<(Vec<TimeSeries>, &str)> = vec![
            (vec![ts(&[], &[(1, 1.0)])], "has no labels"),
            (
                vec![ts(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")], &[])],
                "4 labels, more than the 3",
            ),
            (
                vec![ts(&[("abcdefghi", "1")], &[])],
                "label name of 9 bytes",
            ),
            (
                vec![ts(&[("a", "123456789")], &[])],
                "the value of label \"a\" is 9 bytes",
            ),
            (vec![ts(&[("1a", "1")], &[])], "invalid label name \"1a\""),
            (
                vec![ts(&[("__name__", "a-b")], &[])],
                "invalid metric name \"a-b\"",
            ),
            (
                vec![ts(&[("b", "1"), ("a", "1"), ("b", "2")], &[])],
                "duplicate label name \"b\"",
            ),
            (
                vec![ts(&[("a", "1")], &[(2, 1.0), (1, 1.0)])],
                "not in increasing timestamp order",
            ),
            (
                vec![
                    ts(&[("a", "1")], &[]),
                    ts(&[("a", "2")], &[]),
                    ts(&[("a", "3")], &[]),
                ],
                "more than 2 series",
            ),
        ];
        for (series, want) in cases {
            let e = decode(encode(&WriteRequest { timeseries: series }), &l).unwrap_err();
            assert!(e.to_string().contains(want), "{e} does not say {want:?}");
        }
        for bad in [
            vec![0x0a, 0x05, 0x0a],
            vec![0x0a],
            vec![0xff; 11],
            vec![0x0b],
        ] {
            assert!(matches!(decode(bad, &l), Err(DecodeError::Malformed(_))));
        }
    }

    #[test]
    fn duplicate_check_is_linear() {
        // 100,000 distinct labels in one series: sorting is O(n log n), not O(n²).
        let labels: Vec<(String, String)> = (0..100_000)
            .map(|i| (format!("l{i}"), "v".into()))
            .collect();
        let pairs: Vec<(&str, &str)> = labels
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let body = encode(&WriteRequest {
            timeseries: vec![ts(&pairs, &[(1, 1.0)])],
        });
        let limits = Limits {
            max_labels: 200_000,
            ..Limits::default()
        };
        let t = std::time::Instant::now();
        let req = decode(body, &limits).unwrap();
        assert_eq!(req.series().next().unwrap().labels().count(), 100_000);
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
    }

    proptest! {
        #[test]
        fn decodes_what_prost_encodes(series in proptest::collection::vec(
            (proptest::collection::btree_map("[a-z_][a-z0-9_]{0,6}", "\\PC{0,8}", 1..6),
             proptest::collection::btree_set(-1000i64..1000, 0..5)), 0..20)) {
            let req = WriteRequest {
                timeseries: series.iter().map(|(labels, times)| TimeSeries {
                    // Reversed: the decoder sorts by name.
                    labels: labels.iter().rev().map(|(n, v)| Label { name: n.clone(), value: v.clone() }).collect(),
                    samples: times.iter().map(|t| Sample { value: *t as f64 * 0.5, timestamp: *t }).collect(),
                }).collect(),
            };
            let got = decode(encode(&req), &Limits::default()).unwrap();
            prop_assert_eq!(got.len(), series.len());
            for (view, (labels, times)) in got.series().zip(&series) {
                let want: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                prop_assert_eq!(view.label_vec(), want);
                let want: Vec<(i64, f64)> = times.iter().map(|t| (*t, *t as f64 * 0.5)).collect();
                prop_assert_eq!(view.samples.to_vec(), want);
            }
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(bytes, &Limits::default());
        }
    }
}
