//! The stress program's random numbers: a SplitMix64 generator of our own, so a run is
//! reproduced from its seed without a dependency (as far as thread timing allows).

/// Multiplier of the Weyl sequence and of the stamp pattern (2^64 / golden ratio).
pub const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function: a bijective mix of all 64 bits.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A SplitMix64 generator.
pub struct Rng(u64);

impl Rng {
    /// A generator for one stream of a run: `seed` is the run's seed, `stream` tells the
    /// threads (and generations of a thread slot) apart.
    pub fn new(seed: u64, stream: u64) -> Rng {
        Rng(mix(seed ^ mix(stream.wrapping_add(GOLDEN))))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo) as u64 + 1) as usize
    }

    /// True once in `n` on average.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// In `lo..=hi` with every power of two between them about as likely.
    pub fn log_uniform(&mut self, lo: usize, hi: usize) -> usize {
        let lo_bits = usize::BITS - lo.leading_zeros();
        let hi_bits = usize::BITS - hi.leading_zeros();
        let bits = self.range(lo_bits as usize, hi_bits as usize);
        let top = 1usize << (bits - 1);
        let value = top + self.below(top as u64) as usize;
        value.clamp(lo, hi)
    }
}
