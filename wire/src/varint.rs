//! LEB128 varints and a bounds-checked reader over a byte slice.

use crate::DecodeError;

pub(crate) fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put(out, ((v << 1) ^ (v >> 63)) as u64);
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A cursor that never reads past the end of its input.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let (&b, rest) = self.buf.split_first().ok_or(DecodeError::Truncated(what))?;
        self.buf = rest;
        Ok(b)
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            let low = u64::from(b & 0x7f);
            // The tenth byte may only carry the top bit of a u64.
            if shift == 63 && low > 1 {
                return Err(DecodeError::BadVarint(what));
            }
            v |= low << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::BadVarint(what))
    }

    pub(crate) fn zigzag(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        let v = self.varint(what)?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// Reads an element count and checks that `min_size` bytes per element could follow.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        min_size: usize,
    ) -> Result<usize, DecodeError> {
        let count = self.varint(what)?;
        let remaining = self.remaining();
        if count > (remaining / min_size.max(1)) as u64 {
            return Err(DecodeError::CountTooLarge {
                what,
                count,
                remaining,
            });
        }
        Ok(count as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_round_trips(v: u64) {
            let mut out = Vec::new();
            put(&mut out, v);
            prop_assert!(out.len() <= 10);
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.varint("v").unwrap(), v);
            prop_assert_eq!(r.remaining(), 0);
        }

        #[test]
        fn zigzag_round_trips(v: i64) {
            let mut out = Vec::new();
            put_zigzag(&mut out, v);
            prop_assert_eq!(Reader::new(&out).zigzag("v").unwrap(), v);
        }
    }

    #[test]
    fn rejects_overlong_and_overflowing_varints() {
        let cases: &[&[u8]] = &[
            &[0x80; 11],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
        ];
        for case in cases {
            assert_eq!(
                Reader::new(case).varint("x"),
                Err(DecodeError::BadVarint("x"))
            );
        }
        assert_eq!(
            Reader::new(&[0x80, 0x80]).varint("x"),
            Err(DecodeError::Truncated("x"))
        );
    }

    #[test]
    fn count_is_bounded_by_remaining_input() {
        let mut r = Reader::new(&[100, 0, 0, 0]);
        assert!(matches!(
            r.count("things", 1),
            Err(DecodeError::CountTooLarge { count: 100, .. })
        ));
    }
}
