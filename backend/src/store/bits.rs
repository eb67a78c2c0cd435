//! A bit stream of per-step counter increments in an adaptive Rice code: each delta `d` is
//! written as `d >> k` in unary (ones, then a zero) and the low `k` bits, where `k` follows
//! the running mean of recent deltas (LOCO-I's rule: the smallest `k` with `n·2^k ≥ sum`).
//! Idle steps cost one bit; a counter averaging five events a step about four. The decoder
//! replays the same adaptation, so nothing but the bits is stored. A quotient of 32 or more
//! escapes to 32 ones and the raw 64-bit value.

const ESCAPE: u32 = 32;
/// Deltas remembered by the adaptation: older ones are halved away.
const WINDOW: u32 = 32;

/// The code parameter's state, identical in encoder and decoder.
#[derive(Debug, Clone, Copy)]
struct Adapt {
    sum: u64,
    n: u32,
}

impl Default for Adapt {
    fn default() -> Self {
        Self { sum: 0, n: 1 }
    }
}

impl Adapt {
    /// The smallest `k` with `n · 2^k ≥ sum`: `⌈log2 ⌈sum / n⌉⌉`, without a loop.
    fn k(self) -> u32 {
        let n = u64::from(self.n.max(1));
        if self.sum <= n {
            return 0;
        }
        let c = self.sum.div_ceil(n);
        (64 - (c - 1).leading_zeros()).min(63)
    }

    fn update(&mut self, d: u64) {
        self.sum = self.sum.saturating_add(d.min(1 << 40));
        self.n += 1;
        if self.n >= WINDOW {
            self.sum /= 2;
            self.n /= 2;
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Bits {
    words: Vec<u64>,
    len: usize,
    adapt: Adapt,
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
        let k = self.adapt.k();
        let q = delta >> k;
        if q < u64::from(ESCAPE) {
            // q ones and a zero, then the k low bits.
            self.push_bits(((1u64 << q) - 1) << 1, q as usize + 1);
            self.push_bits(delta & ((1u64 << k) - 1), k as usize);
        } else {
            self.push_bits(u64::from(u32::MAX), ESCAPE as usize);
            self.push_bits(delta, 64);
        }
        self.adapt.update(delta);
    }

    pub fn with_words(n: usize) -> Self {
        Self {
            words: Vec::with_capacity(n),
            ..Self::default()
        }
    }

    pub fn words(&self) -> usize {
        self.words.len()
    }

    pub fn bytes(&self) -> usize {
        self.words.capacity() * 8
    }

    pub fn shrink(&mut self) {
        self.words.shrink_to_fit();
    }

    pub fn reader(&self) -> Reader<'_> {
        Reader {
            bits: self,
            pos: 0,
            adapt: Adapt::default(),
        }
    }
}

pub struct Reader<'a> {
    bits: &'a Bits,
    pos: usize,
    adapt: Adapt,
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

    fn take(&mut self, n: u32) -> Option<u64> {
        if n == 0 {
            return Some(0);
        }
        let v = if n == 64 {
            self.peek64()
        } else {
            self.peek64() >> (64 - n)
        };
        self.advance(n as usize).map(|()| v)
    }
}

impl Iterator for Reader<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.pos >= self.bits.len {
            return None;
        }
        let k = self.adapt.k();
        let ones = (!self.peek64()).leading_zeros();
        let d = if ones < ESCAPE {
            self.advance(ones as usize + 1)?;
            (u64::from(ones) << k) | self.take(k)?
        } else {
            self.advance(ESCAPE as usize)?;
            self.take(64)?
        };
        self.adapt.update(d);
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rice_parameter_is_the_smallest_that_covers_the_mean() {
        for n in 1..40u32 {
            for sum in 0..2000u64 {
                let k = Adapt { sum, n }.k();
                assert!((u64::from(n) << k) >= sum, "n={n} sum={sum} k={k}");
                assert!(
                    k == 0 || (u64::from(n) << (k - 1)) < sum,
                    "n={n} sum={sum} k={k} not smallest"
                );
            }
        }
    }

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
