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
    fn bit(&mut self) -> Option<u64> {
        if self.pos >= self.bits.len {
            return None;
        }
        let w = self.bits.words.get(self.pos / 64)?;
        let b = (w >> (63 - self.pos % 64)) & 1;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<u64> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }
}

impl Iterator for Reader<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.bit()? == 0 {
            return Some(0);
        }
        if self.bit()? == 0 {
            return Some(1);
        }
        if self.bit()? == 0 {
            return Some(2 + self.take(2)?);
        }
        let n = self.take(6)? as usize + 1;
        self.take(n)
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
