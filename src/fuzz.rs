//! A small mutation fuzzer for the parsers' tests: deterministic (seeded),
//! bounded (`SITEWATCH_FUZZ_ITERS`, default 20,000 per target; `make faults`
//! runs 500,000), and without dependencies.

/// Iterations per fuzz target.
pub fn iterations() -> usize {
    std::env::var("SITEWATCH_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// xorshift64*: enough randomness for mutations, and reproducible by seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that tend to break parsers.
const TOKENS: [&[u8]; 14] = [
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\\",
    b"\n",
    b"=",
    b"null",
    b"-1",
    b"\xff\xfe",
    b"99999999999999999999",
];

/// `input` with one to four random edits: flip, delete, duplicate, insert a
/// token, or truncate.
pub fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        if out.is_empty() {
            out.extend_from_slice(TOKENS[rng.below(TOKENS.len())]);
            continue;
        }
        let at = rng.below(out.len());
        match rng.below(5) {
            0 => out[at] ^= 1 << rng.below(8),
            1 => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at..end);
            }
            2 => {
                let end = (at + 1 + rng.below(32)).min(out.len());
                let piece = out[at..end].to_vec();
                out.splice(at..at, piece);
            }
            3 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, t.iter().copied());
            }
            _ => out.truncate(at),
        }
    }
    out
}
