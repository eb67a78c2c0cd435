//! A bit stream of per-step counter increments, each stored as its distance from a prediction.
//!
//! Traffic is steady more often than not, so a step's increment is predicted by the moving
//! average of recent increments and only the residual is written: zigzag-mapped to an
//! unsigned `z`, then `z >> k` in unary (ones, then a zero) and the low `k` bits, where `k`
//! follows the moving average of recent residuals (LOCO-I's rule: the smallest `k` with
//! `2^k ≥ mean`). Both averages are exponential and kept in fixed point, so the decoder
//! replays them exactly with shifts and no division, and nothing but the bits is stored. An
//! idle step, or one at the recent rate, costs one bit. A quotient of 32 or more escapes to
//! 32 ones and the raw 64-bit residual.

const ESCAPE: u32 = 32;
/// Fraction bits of the fixed-point averages.
const FRAC: u32 = 4;
/// Inputs to the averages are clamped so the fixed point fits 32 bits; larger increments
/// still round-trip, through longer codes.
const CLAMP: u64 = 1 << (32 - FRAC - 1);
/// The prediction follows 1/8 of each new increment, the code parameter 1/16 of each residual.
const MEAN_SHIFT: u32 = 3;
const SPREAD_SHIFT: u32 = 4;

/// The prediction and code parameter state, identical in encoder and decoder. A chunk's
/// writer keeps one; every reader starts from the default, as the writer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coder {
    pub(super) mean: u32,
    pub(super) spread: u32,
}

impl Coder {
    fn predict(self) -> u64 {
        u64::from((self.mean + (1 << (FRAC - 1))) >> FRAC)
    }

    /// The smallest `k` with `2^k ≥ mean residual`.
    fn k(self) -> u32 {
        if self.spread <= 1 << FRAC {
            return 0;
        }
        32 - ((self.spread - 1) >> FRAC).leading_zeros()
    }

    fn update(&mut self, d: u64, z: u64) {
        self.mean = ema(self.mean, d, MEAN_SHIFT);
        self.spread = ema(self.spread, z, SPREAD_SHIFT);
    }
}

/// Moves `avg` a `1/2^shift` of the way towards `x` (both in fixed point; rounding towards
/// `x` from above so a steady input is reached exactly).
fn ema(avg: u32, x: u64, shift: u32) -> u32 {
    let target = (x.min(CLAMP) as u32) << FRAC;
    if target >= avg {
        avg + ((target - avg) >> shift)
    } else {
        avg - (avg - target).div_ceil(1 << shift)
    }
}

fn zigzag(d: u64, p: u64) -> u64 {
    let r = d.wrapping_sub(p) as i64;
    ((r << 1) ^ (r >> 63)) as u64
}

fn unzigzag(z: u64, p: u64) -> u64 {
    let r = ((z >> 1) as i64) ^ -((z & 1) as i64);
    p.wrapping_add(r as u64)
}

/// The bits of one chunk. The slice's length is its capacity; `len` counts the bits used.
#[derive(Debug, Clone, Default)]
pub struct Bits {
    pub(super) words: Box<[u64]>,
    pub(super) len: u32,
}

impl Bits {
    pub fn with_words(n: usize) -> Self {
        Self {
            words: vec![0; n].into_boxed_slice(),
            len: 0,
        }
    }

    /// Appends the low `n` bits of `value` (`n ≤ 64`), most significant first.
    fn push_bits(&mut self, value: u64, n: u32) {
        if n == 0 {
            return;
        }
        let value = if n == 64 {
            value
        } else {
            value & ((1 << n) - 1)
        };
        let end = self.len as usize + n as usize;
        if end.div_ceil(64) > self.words.len() {
            // Grow by doubling; `shrink` trims the slack once the chunk is full.
            let mut v = std::mem::take(&mut self.words).into_vec();
            let want = end.div_ceil(64).max(v.len() * 2).max(2);
            v.resize(want, 0);
            self.words = v.into_boxed_slice();
        }
        let (w, off) = (self.len as usize / 64, self.len % 64);
        let free = 64 - off;
        if n <= free {
            if let Some(word) = self.words.get_mut(w) {
                *word |= value << (free - n);
            }
        } else {
            let rest = n - free;
            if let Some(word) = self.words.get_mut(w) {
                *word |= value >> rest;
            }
            if let Some(word) = self.words.get_mut(w + 1) {
                *word |= value << (64 - rest);
            }
        }
        self.len += n;
    }

    pub fn push(&mut self, coder: &mut Coder, delta: u64) {
        let (p, k) = (coder.predict(), coder.k());
        let z = zigzag(delta, p);
        let q = z >> k;
        if q < u64::from(ESCAPE) {
            // q ones and a zero, then the k low bits.
            self.push_bits(((1u64 << q) - 1) << 1, q as u32 + 1);
            self.push_bits(z, k);
        } else {
            self.push_bits(u64::from(u32::MAX), ESCAPE);
            self.push_bits(z, 64);
        }
        coder.update(delta, z);
    }

    /// Words in use, to size the next chunk.
    pub fn words(&self) -> usize {
        (self.len as usize).div_ceil(64)
    }

    pub fn bytes(&self) -> usize {
        self.words.len() * 8
    }

    /// Drops the growth slack once no more bits will be pushed.
    pub fn shrink(&mut self) {
        let used = self.words();
        if used < self.words.len() {
            let mut v = std::mem::take(&mut self.words).into_vec();
            v.truncate(used);
            self.words = v.into_boxed_slice();
        }
    }

    /// Bits written so far: with the writer's [`Coder`], where a reader can resume.
    pub fn bit_len(&self) -> u32 {
        self.len
    }

    pub fn reader(&self) -> Reader<'_> {
        self.reader_at(0, Coder::default())
    }

    /// A reader resuming at `pos` with the coder state the writer had there.
    pub fn reader_at(&self, pos: u32, coder: Coder) -> Reader<'_> {
        Reader {
            words: &self.words,
            len: self.len,
            pos,
            coder,
        }
    }
}

pub struct Reader<'a> {
    words: &'a [u64],
    len: u32,
    pos: u32,
    coder: Coder,
}

impl Reader<'_> {
    /// The 64 bits from the cursor, most significant first, zero-padded past the end.
    fn peek64(&self) -> u64 {
        let (w, o) = (self.pos as usize / 64, self.pos % 64);
        let hi = self.words.get(w).copied().unwrap_or(0) << o;
        let lo = if o == 0 {
            0
        } else {
            self.words.get(w + 1).copied().unwrap_or(0) >> (64 - o)
        };
        hi | lo
    }

    fn advance(&mut self, n: u32) -> Option<()> {
        self.pos += n;
        (self.pos <= self.len).then_some(())
    }

    fn take(&mut self, n: u32) -> Option<u64> {
        if n == 0 {
            return Some(0);
        }
        let v = self.peek64() >> (64 - n);
        self.advance(n).map(|()| v)
    }
}

impl Iterator for Reader<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.pos >= self.len {
            return None;
        }
        let (p, k) = (self.coder.predict(), self.coder.k());
        let ones = (!self.peek64()).leading_zeros();
        let z = if ones < ESCAPE {
            self.advance(ones + 1)?;
            (u64::from(ones) << k) | self.take(k)?
        } else {
            self.advance(ESCAPE)?;
            self.take(64)?
        };
        let d = unzigzag(z, p);
        self.coder.update(d, z);
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(deltas: &[u64]) -> Bits {
        let mut b = Bits::default();
        let mut c = Coder::default();
        for d in deltas {
            b.push(&mut c, *d);
        }
        b
    }

    #[test]
    fn code_parameter_is_the_smallest_that_covers_the_mean() {
        for spread in (0..5000u32).chain([u32::MAX / 2, u32::MAX]) {
            let k = Coder { mean: 0, spread }.k();
            let mean = u64::from(spread.div_ceil(1 << FRAC));
            assert!((1u64 << k) >= mean, "spread={spread} k={k}");
            assert!(k == 0 || (1u64 << (k - 1)) < mean, "spread={spread} k={k}");
        }
    }

    #[test]
    fn averages_reach_a_steady_input() {
        for x in [0u64, 1, 5, 17, 1000, CLAMP] {
            for start in [0u32, (x as u32) << FRAC, 3 << 29] {
                let mut c = Coder {
                    mean: start,
                    spread: 0,
                };
                for _ in 0..2000 {
                    c.update(x, 0);
                }
                assert_eq!(c.predict(), x, "from {start}");
            }
        }
    }

    proptest! {
        #[test]
        fn round_trips(deltas in proptest::collection::vec(prop_oneof![Just(0u64), Just(1), 0u64..100, any::<u64>()], 0..300)) {
            prop_assert_eq!(encode(&deltas).reader().collect::<Vec<_>>(), deltas);
        }

        #[test]
        fn zigzag_round_trips(d in any::<u64>(), p in any::<u64>()) {
            prop_assert_eq!(unzigzag(zigzag(d, p), p), d);
        }
    }

    #[test]
    fn readers_resume_where_the_writer_was() {
        let deltas: Vec<u64> = (0..500u64).map(|i| (i * 7919) % 23).collect();
        let (mut b, mut c) = (Bits::default(), Coder::default());
        let mut resume = None;
        for (i, d) in deltas.iter().enumerate() {
            if i == 300 {
                resume = Some((b.bit_len(), c));
            }
            b.push(&mut c, *d);
        }
        let (pos, coder) = resume.unwrap();
        assert_eq!(b.reader_at(pos, coder).collect::<Vec<_>>(), deltas[300..]);
    }

    #[test]
    fn idle_and_steady_steps_cost_one_bit() {
        let mut b = encode(&[0; 640]);
        b.shrink();
        assert_eq!(b.bytes(), 80);
        let steady = encode(&[5; 900]);
        assert!(
            steady.len < 900 + 100,
            "five a step: {} bits for 900 steps",
            steady.len
        );
    }

    #[test]
    fn noisy_traffic_costs_near_its_entropy() {
        // Poisson(λ) increments from a fixed LCG (inversion for small λ, the normal
        // approximation for large): entropy ≈ ½·log2(2πeλ) bits.
        let mut seed = 12345u64;
        let mut uniform = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        for lambda in [5.0f64, 100.0, 2000.0] {
            let deltas: Vec<u64> = (0..3600)
                .map(|_| {
                    if lambda < 50.0 {
                        let (u, mut k, mut p) = (uniform(), 0u64, (-lambda).exp());
                        let mut cdf = p;
                        while u > cdf && k < 1000 {
                            k += 1;
                            p *= lambda / k as f64;
                            cdf += p;
                        }
                        k
                    } else {
                        let (u1, u2) = (uniform(), uniform());
                        let n = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                        (lambda + lambda.sqrt() * n).round().max(0.0) as u64
                    }
                })
                .collect();
            let bits = encode(&deltas).len as f64 / deltas.len() as f64;
            let entropy = 0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E * lambda).log2();
            // A plain Rice code of the increments pays about log2(λ) + 2 bits.
            eprintln!("λ={lambda}: {bits:.2} bits a step, entropy {entropy:.2}");
            assert!(
                bits < entropy + 1.0,
                "λ={lambda}: {bits:.2} bits a step, entropy {entropy:.2}"
            );
        }
    }
}
