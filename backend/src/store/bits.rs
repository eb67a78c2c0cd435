//! A bit stream of per-step counter increments: `0` for none, `10` for one, `110` and two bits
//! for 2 to 5, else `111`, six bits of length and the value. Idle steps cost one bit.

#[derive(Debug, Clone, Default)]
pub struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Bits {
    fn push_bits(&mut self, value: u64, n: usize) {
        for i in (0..n).rev() {
            let bit = (value >> i) & 1;
            if self.len.is_multiple_of(64) {
                self.words.push(0);
            }
            if let Some(w) = self.words.last_mut() {
                *w |= bit << (63 - self.len % 64);
            }
            self.len += 1;
        }
    }

    pub fn push(&mut self, delta: u64) {
        match delta {
            0 => self.push_bits(0, 1),
            1 => self.push_bits(0b10, 2),
            2..=5 => self.push_bits(0b11000 | (delta - 2), 5),
            d => {
                let n = 64 - d.leading_zeros() as usize;
                self.push_bits(0b111, 3);
                self.push_bits((n - 1) as u64, 6);
                self.push_bits(d, n);
            }
        }
    }

    pub fn bytes(&self) -> usize {
        self.words.capacity() * 8
    }

    pub fn shrink(&mut self) {
        self.words.shrink_to_fit();
    }

    pub fn reader(&self) -> Reader<'_> {
        Reader { bits: self, pos: 0 }
    }
}

pub struct Reader<'a> {
    bits: &'a Bits,
    pos: usize,
}

impl Reader<'_> {
    /// The 64 bits from the cursor, most significant first, zero-padded past the end.
    fn peek64(&self) -> u64 {
        let (w, o) = (self.pos / 64, self.pos % 64);
        let hi = self.bits.words.get(w).copied().unwrap_or(0) << o;
        let lo = if o == 0 {
            0
        } else {
            self.bits.words.get(w + 1).copied().unwrap_or(0) >> (64 - o)
        };
        hi | lo
    }

    fn advance(&mut self, n: usize) -> Option<()> {
        self.pos += n;
        (self.pos <= self.bits.len).then_some(())
    }
}

impl Iterator for Reader<'_> {
    type Item = u64;

    /// Decodes one delta from a 64-bit window: one branch on the count of leading ones.
    fn next(&mut self) -> Option<u64> {
        if self.pos >= self.bits.len {
            return None;
        }
        let p = self.peek64();
        match (!p).leading_zeros() {
            0 => self.advance(1).map(|()| 0),
            1 => self.advance(2).map(|()| 1),
            2 => self.advance(5).map(|()| 2 + ((p >> 59) & 0b11)),
            _ => {
                let n = ((p >> 55) & 0x3f) as usize + 1;
                self.advance(9)?;
                let v = if n == 64 {
                    self.peek64()
                } else {
                    self.peek64() >> (64 - n)
                };
                self.advance(n).map(|()| v)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(deltas in proptest::collection::vec(prop_oneof![Just(0u64), Just(1), 0u64..100, any::<u64>()], 0..300)) {
            let mut b = Bits::default();
            for d in &deltas {
                b.push(*d);
            }
            prop_assert_eq!(b.reader().collect::<Vec<_>>(), deltas);
        }
    }

    #[test]
    fn idle_steps_cost_one_bit() {
        let mut b = Bits::default();
        for _ in 0..640 {
            b.push(0);
        }
        b.shrink();
        assert_eq!(b.bytes(), 80);
    }
}
