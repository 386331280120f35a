//! The byte-level pieces the decoders share: a reader that ends the input cleanly at its
//! last whole operation, and the biased encodings of sizes and alignments.
//!
//! A size is a tier byte and a 24-bit value: tiers 0..200 are small (up to 8 << (tier % 10)
//! bytes, 8 B to 4 KiB), 200..250 medium (up to 256 KiB, across the largest size classes
//! and into large blocks), 250..255 huge (up to 4 MiB) and 255 giant (up to 32 MiB, past
//! the 16 MiB limit of the large-mapping cache; the value is in 2-byte units). Random bytes
//! thus give mostly small sizes, some up to 256 KiB, a few up to 4 MiB and rarely more.

/// Exclusive upper bound of a medium size (above `min`).
pub(crate) const MEDIUM_SPAN: usize = 256 << 10;
/// Exclusive upper bound of a huge size (above `min`).
pub(crate) const HUGE_SPAN: usize = 4 << 20;
/// Exclusive upper bound of a giant size (above `min`).
pub(crate) const GIANT_SPAN: usize = 32 << 20;

const MEDIUM_TIER: u8 = 200;
const HUGE_TIER: u8 = 250;
const GIANT_TIER: u8 = 255;
/// A giant size's value counts units of this many bytes (24 bits hold 16 Mi of them).
const GIANT_UNIT: usize = GIANT_SPAN >> 24;
/// The small tier whose span is 4 KiB.
const SMALL_TIER_4K: u8 = 9;

/// The sizes a tier byte selects: `min + value % span`.
fn span(tier: u8) -> usize {
    match tier {
        0..MEDIUM_TIER => 8 << (tier % 10),
        MEDIUM_TIER..HUGE_TIER => MEDIUM_SPAN,
        HUGE_TIER..GIANT_TIER => HUGE_SPAN,
        GIANT_TIER => GIANT_SPAN,
    }
}

/// Bytes per unit of a tier's value.
fn unit(tier: u8) -> usize {
    if tier == GIANT_TIER {
        GIANT_UNIT
    } else {
        1
    }
}

/// Reads operations' fields; every read returns `None` once the input is used up, which
/// ends decoding at the last whole operation.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Reader { rest: data }
    }

    pub(crate) fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(first)
    }

    /// A slot index below `slots`, and the byte it came from (whose quotient by `slots`
    /// some operations use).
    pub(crate) fn slot(&mut self, slots: usize) -> Option<(u8, u8)> {
        let byte = self.byte()?;
        Some(((byte as usize % slots) as u8, byte))
    }

    /// A size of at least `min` bytes (see the module docs).
    pub(crate) fn size(&mut self, min: usize) -> Option<usize> {
        let tier = self.byte()?;
        let value = u32::from_le_bytes([self.byte()?, self.byte()?, self.byte()?, 0]) as usize;
        Some(min + value * unit(tier) % span(tier))
    }
}

/// Appends the encoding of `size` (at least `min`, less than `min + GIANT_SPAN`; from
/// `min + HUGE_SPAN` on, `size - min` even).
pub(crate) fn push_size(out: &mut Vec<u8>, size: usize, min: usize) {
    let value = size
        .checked_sub(min)
        .filter(|&value| value < HUGE_SPAN || (value < GIANT_SPAN && value % GIANT_UNIT == 0))
        .unwrap_or_else(|| panic!("size {size} cannot be encoded above {min}"));
    let tier = if value < span(SMALL_TIER_4K) {
        SMALL_TIER_4K
    } else if value < MEDIUM_SPAN {
        MEDIUM_TIER
    } else if value < HUGE_SPAN {
        HUGE_TIER
    } else {
        GIANT_TIER
    };
    out.push(tier);
    out.extend_from_slice(&((value / unit(tier)) as u32).to_le_bytes()[..3]);
}

/// The byte that `decode` maps to `want`, for encoders of one-byte selectors.
pub(crate) fn selector(want: usize, decode: impl Fn(u8) -> usize, what: &str) -> u8 {
    (0..=u8::MAX)
        .find(|&byte| decode(byte) == want)
        .unwrap_or_else(|| panic!("no selector byte decodes to {what} {want:#x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip_at_tier_edges() {
        for min in [0, 1] {
            for size in [
                min,
                min + 1,
                min + 4095,
                min + 4096,
                min + MEDIUM_SPAN - 1,
                min + MEDIUM_SPAN,
                min + HUGE_SPAN - 1,
                min + HUGE_SPAN,
                min + (24 << 20),
                min + GIANT_SPAN - 2,
            ] {
                let mut bytes = Vec::new();
                push_size(&mut bytes, size, min);
                assert_eq!(Reader::new(&bytes).size(min), Some(size), "min {min}");
            }
        }
    }

    #[test]
    fn a_short_input_ends_decoding() {
        assert_eq!(Reader::new(&[3, 1, 2]).size(1), None);
        assert_eq!(Reader::new(&[]).byte(), None);
    }
}
