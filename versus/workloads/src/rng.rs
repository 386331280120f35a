//! A fixed-seed xorshift generator: the same sequence for every allocator.

/// xorshift64* (Vigna): small, fast, and deterministic for a given seed.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator started from `seed` (a zero seed is replaced, xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x2545_F491_4F6C_DD1D
        } else {
            seed
        })
    }

    /// A generator for stream `n` of `seed` (e.g. one per thread).
    pub fn stream(seed: u64, n: u64) -> Self {
        let mut g = XorShift::new(seed ^ n.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        // Let the streams drift apart before use.
        for _ in 0..4 {
            g.next_u64();
        }
        g
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    #[inline]
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        debug_assert!(lo <= hi);
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// Uniform in `0..n`.
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A size from a mix typical of programs: mostly small, a few medium, rarely large
    /// (8 .. 64 KiB; 60% up to 128 B, 30% up to 1 KiB, 9% up to 16 KiB, 1% up to 64 KiB).
    #[inline]
    pub fn mixed_size(&mut self) -> usize {
        let r = self.next_u64();
        let pick = r % 100;
        let r2 = (r >> 8) as usize;
        match pick {
            0..=59 => 8 + r2 % 121,
            60..=89 => 129 + r2 % 896,
            90..=98 => 1025 + r2 % 15360,
            _ => 16385 + r2 % 49152,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = XorShift::new(42);
        let mut b = XorShift::new(42);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut c = XorShift::stream(42, 1);
        let mut d = XorShift::stream(42, 2);
        assert_ne!(c.next_u64(), d.next_u64());
        assert_ne!(XorShift::new(0).next_u64(), 0);
    }

    #[test]
    fn ranges_stay_in_bounds() {
        let mut g = XorShift::new(1);
        let (mut small, mut large) = (0, 0);
        for _ in 0..100_000 {
            let r = g.range(16, 1024);
            assert!((16..=1024).contains(&r));
            assert!(g.below(7) < 7);
            let s = g.mixed_size();
            assert!((8..=65536).contains(&s));
            if s <= 128 {
                small += 1;
            }
            if s > 16384 {
                large += 1;
            }
        }
        assert!(small > 55_000 && small < 65_000, "{small}");
        assert!(large > 500 && large < 1500, "{large}");
    }
}
