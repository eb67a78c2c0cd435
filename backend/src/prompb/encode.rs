//! Writes `WriteRequest` bytes directly (no message structs, no per-string allocation): the
//! remote-write sender encodes every sample it sends through here.

/// Bytes a varint of `v` takes.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn label_len(name: &str, value: &str) -> usize {
    1 + varint_len(name.len() as u64)
        + name.len()
        + 1
        + varint_len(value.len() as u64)
        + value.len()
}

fn sample_len(ts: i64) -> usize {
    // value: tag + 8 bytes; timestamp: tag + varint (omitted when 0, as proto3 does).
    9 + if ts == 0 {
        0
    } else {
        1 + varint_len(ts as u64)
    }
}

/// The encoded size of one `TimeSeries` message body.
pub fn encoded_len<'a>(
    labels: impl Iterator<Item = (&'a str, &'a str)>,
    samples: &[(i64, f64)],
) -> usize {
    let l: usize = labels
        .map(|(n, v)| {
            let inner = label_len(n, v);
            1 + varint_len(inner as u64) + inner
        })
        .sum();
    let s: usize = samples
        .iter()
        .map(|(t, _)| {
            let inner = sample_len(*t);
            1 + varint_len(inner as u64) + inner
        })
        .sum();
    l + s
}

/// Builds one request's protobuf, series by series.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
    series: usize,
    samples: usize,
}

impl Encoder {
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            ..Self::default()
        }
    }

    /// Appends one `TimeSeries`: `labels` must be sorted by name and unique.
    pub fn series(&mut self, labels: &[(&str, &str)], samples: &[(i64, f64)]) {
        let body = encoded_len(labels.iter().copied(), samples);
        self.buf.push(0x0a);
        put_varint(&mut self.buf, body as u64);
        for (n, v) in labels {
            self.buf.push(0x0a);
            put_varint(&mut self.buf, label_len(n, v) as u64);
            self.buf.push(0x0a);
            put_varint(&mut self.buf, n.len() as u64);
            self.buf.extend_from_slice(n.as_bytes());
            self.buf.push(0x12);
            put_varint(&mut self.buf, v.len() as u64);
            self.buf.extend_from_slice(v.as_bytes());
        }
        for &(t, v) in samples {
            self.buf.push(0x12);
            put_varint(&mut self.buf, sample_len(t) as u64);
            self.buf.push(0x09);
            self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
            if t != 0 {
                self.buf.push(0x10);
                put_varint(&mut self.buf, t as u64);
            }
        }
        self.series += 1;
        self.samples += samples.len();
    }

    pub fn series_count(&self) -> usize {
        self.series
    }

    pub fn sample_count(&self) -> usize {
        self.samples
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The request's bytes; the encoder is empty again afterwards.
    pub fn take(&mut self) -> Vec<u8> {
        self.series = 0;
        self.samples = 0;
        std::mem::take(&mut self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompb::WriteRequest;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn prost_reads_what_we_write(series in proptest::collection::vec(
            (proptest::collection::btree_map("[a-z_]{1,6}", "\\PC{0,300}", 1..5),
             proptest::collection::vec((any::<i64>(), any::<f64>()), 0..4)), 0..10)) {
            let mut e = Encoder::default();
            for (labels, samples) in &series {
                let l: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                e.series(&l, samples);
            }
            let got: WriteRequest = prost::Message::decode(e.take().as_slice()).unwrap();
            prop_assert_eq!(got.timeseries.len(), series.len());
            for (ts, (labels, samples)) in got.timeseries.iter().zip(&series) {
                let l: Vec<(String, String)> = ts.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
                prop_assert_eq!(l, labels.iter().map(|(n, v)| (n.clone(), v.clone())).collect::<Vec<_>>());
                prop_assert_eq!(ts.samples.len(), samples.len());
                for (s, (t, v)) in ts.samples.iter().zip(samples) {
                    prop_assert_eq!(s.timestamp, *t);
                    prop_assert_eq!(s.value.to_bits(), v.to_bits());
                }
            }
        }
    }

    #[test]
    fn varint_lengths() {
        for (v, n) in [
            (0u64, 1),
            (127, 1),
            (128, 2),
            (16383, 2),
            (16384, 3),
            (u64::MAX, 10),
        ] {
            assert_eq!(varint_len(v), n, "{v}");
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), n);
        }
    }
}
