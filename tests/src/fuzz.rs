//! A small mutation fuzzer for stable Rust: it replays a target's corpus, then mutates corpus
//! entries for a fixed time and checks each input, saving any that fails under
//! `tests/fuzz/<target>/` so it is replayed by every later run. Seeds come from the target;
//! the run's own seed is printed (set `WAGGLE_FUZZ_SEED` to repeat it) and the time budget is
//! `WAGGLE_FUZZ_SECS` (default 10 s per target).

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// xorshift64*: fast, and enough for picking mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// Values that break parsers: boundaries of every integer width.
const INTERESTING: [u64; 12] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 32,
    1 << 53,
    i64::MAX as u64,
    u64::MAX,
];

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// One to four byte-level mutations of `input`, sometimes splicing in part of `other`, and
/// inserting `tokens` (a target's dictionary) when it has one.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8], tokens: &[&str]) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(b.len() + 1);
        match rng.below(9) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = *rng.pick(&[0u8, 1, 0x7f, 0x80, 0xff, b'(', b'"', b'{', b'[', b'-']);
            }
            2 => {
                let n = rng.below(8) + 1;
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                b.splice(at..at, bytes);
            }
            3 if !b.is_empty() => {
                let len = rng.below(b.len().min(64)) + 1;
                let from = rng.below(b.len());
                b.drain(from..(from + len).min(b.len()));
            }
            4 if !b.is_empty() => {
                let from = rng.below(b.len());
                let len = rng.below((b.len() - from).min(256)) + 1;
                let piece = b[from..from + len].to_vec();
                b.splice(at..at, piece);
            }
            5 if !other.is_empty() => {
                let from = rng.below(other.len());
                let len = rng.below((other.len() - from).min(256)) + 1;
                b.splice(at..at, other[from..from + len].iter().copied());
            }
            6 => {
                let v = varint(*rng.pick(&INTERESTING));
                let end = (at + v.len()).min(b.len());
                b.splice(at..end, v);
            }
            7 if !tokens.is_empty() => {
                let t = rng.pick(tokens).as_bytes().to_vec();
                b.splice(at..at, t);
            }
            _ => {
                let end = (at + rng.below(16)).min(b.len());
                b.truncate(end.max(at.min(b.len())));
            }
        }
    }
    b
}

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(target)
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Saves a failing input where every later run replays it, then fails the run.
fn fail(dir: &std::path::Path, target: &str, input: &[u8], why: String) -> ! {
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join(format!("crash-{:016x}", fnv(input)));
    let _ = std::fs::write(&path, input);
    panic!(
        "fuzz target {target}: {why}\n  input saved to {}",
        path.display()
    );
}

/// What a run did.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub replayed: usize,
    pub inputs: usize,
}

/// How an input was answered, coarsely (a status and the start of a message): an input that
/// gets an answer not seen before is kept and mutated further, a cheap stand-in for coverage.
pub type Signature = String;

/// Most inputs kept for their new signatures.
const KEEP: usize = 4096;

/// Replays `tests/fuzz/<target>/`, then fuzzes from it and `seeds` for the time budget.
/// `check` returns an error for a wrong answer; a panic inside it is a failure too. The
/// first failing input is saved to the corpus and the run panics naming it.
pub fn run(
    target: &str,
    seeds: Vec<Vec<u8>>,
    tokens: &[&str],
    mut check: impl FnMut(&[u8]) -> Result<Signature, String>,
) -> Report {
    let dir = corpus_dir(target);
    let mut corpus: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|d| {
            let mut paths: Vec<PathBuf> = d.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            paths
                .into_iter()
                .filter_map(|p| std::fs::read(p).ok())
                .collect()
        })
        .unwrap_or_default();
    let replayed = corpus.len();
    let mut try_one = |input: &[u8]| -> Signature {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(input))) {
            Ok(Ok(sig)) => sig,
            Ok(Err(why)) => fail(&dir, target, input, why),
            Err(p) => {
                let why = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                fail(&dir, target, input, format!("panicked: {why}"))
            }
        }
    };
    let mut seen = std::collections::HashSet::new();
    for input in &corpus {
        seen.insert(try_one(input));
    }
    corpus.extend(seeds);
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let seed = std::env::var("WAGGLE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let secs: f64 = std::env::var("WAGGLE_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    eprintln!("fuzz target {target}: seed {seed}, {secs} s, {replayed} saved inputs");
    let mut rng = Rng::new(seed);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut inputs = 0;
    while Instant::now() < deadline {
        let parent = &corpus[rng.below(corpus.len())];
        let other = &corpus[rng.below(corpus.len())];
        let input = mutate(&mut rng, parent, other, tokens);
        let sig = try_one(&input);
        if corpus.len() < KEEP && seen.insert(sig) {
            corpus.push(input);
        }
        inputs += 1;
    }
    eprintln!(
        "fuzz target {target}: {inputs} inputs, {} distinct answers, no failure",
        seen.len()
    );
    Report { replayed, inputs }
}
