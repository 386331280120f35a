//! The contents every live block holds: byte `i` of a block with tag `t` is
//! `TEMPLATE[(t + i) % PERIOD]`, a pseudo-random sequence with a prime period. Each block
//! gets its own tag, so a block holding another's bytes, bytes shifted by any amount that
//! is not a multiple of the period, or stale bytes of a freed block is caught.
//!
//! The template holds two periods, so any run of up to `PERIOD` pattern bytes is one slice
//! of it: filling and checking are `memcpy` and `memcmp` per run, fast even in the debug
//! builds `cargo test` makes.

const PERIOD: usize = 4093;

static TEMPLATE: [u8; 2 * PERIOD] = template();

/// Zeroes to compare zeroed blocks with, a run at a time.
static ZEROES: [u8; 4096] = [0; 4096];

const fn template() -> [u8; 2 * PERIOD] {
    let mut bytes = [0u8; 2 * PERIOD];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut i = 0;
    while i < PERIOD {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let byte = (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
        bytes[i] = byte;
        bytes[i + PERIOD] = byte;
        i += 1;
    }
    bytes
}

/// The pattern bytes at block offsets `from..from + len` of a block tagged `tag`, as runs.
fn runs(tag: u32, from: usize, len: usize) -> impl Iterator<Item = (usize, &'static [u8])> {
    let mut done = 0;
    core::iter::from_fn(move || {
        if done == len {
            return None;
        }
        let offset = done;
        let start = (tag as usize + from + offset) % PERIOD;
        let run = (len - done).min(PERIOD);
        done += run;
        Some((offset, &TEMPLATE[start..start + run]))
    })
}

/// Writes the pattern of `tag` into `bytes`, which are the block's bytes from offset `from`.
pub(crate) fn fill(bytes: &mut [u8], tag: u32, from: usize) {
    for (offset, run) in runs(tag, from, bytes.len()) {
        bytes[offset..offset + run.len()].copy_from_slice(run);
    }
}

/// The first offset (relative to `bytes`) where `bytes`, the block's bytes from offset
/// `from`, differ from the pattern of `tag`, with the expected byte.
pub(crate) fn first_mismatch(bytes: &[u8], tag: u32, from: usize) -> Option<(usize, u8)> {
    for (offset, run) in runs(tag, from, bytes.len()) {
        let found = &bytes[offset..offset + run.len()];
        if found != run {
            let at = found.iter().zip(run).position(|(a, b)| a != b)?;
            return Some((offset + at, run[at]));
        }
    }
    None
}

/// The first offset in `bytes` that is not zero.
pub(crate) fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    for (chunk_index, chunk) in bytes.chunks(ZEROES.len()).enumerate() {
        if chunk != &ZEROES[..chunk.len()] {
            let at = chunk.iter().position(|&b| b != 0)?;
            return Some(chunk_index * ZEROES.len() + at);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_checks_clean_and_every_single_byte_change_is_found() {
        let mut block = vec![0u8; 3 * PERIOD + 17];
        fill(&mut block, 7, 0);
        assert_eq!(first_mismatch(&block, 7, 0), None);
        assert!(
            first_mismatch(&block, 8, 0).is_some(),
            "another tag matched"
        );
        for at in [0, 1, PERIOD - 1, PERIOD, 2 * PERIOD + 5, block.len() - 1] {
            let saved = block[at];
            block[at] ^= 0x40;
            assert_eq!(first_mismatch(&block, 7, 0), Some((at, saved)));
            block[at] = saved;
        }
    }

    #[test]
    fn a_fill_from_an_offset_continues_the_pattern() {
        let mut whole = vec![0u8; 10_000];
        fill(&mut whole, 99, 0);
        let mut tail = vec![0u8; 10_000 - 1234];
        fill(&mut tail, 99, 1234);
        assert_eq!(&whole[1234..], &tail[..]);
        assert_eq!(first_mismatch(&whole[1234..], 99, 1234), None);
        assert!(first_mismatch(&whole[1233..], 99, 1234).is_some());
    }

    #[test]
    fn nonzero_bytes_are_found_past_the_first_run() {
        let mut bytes = vec![0u8; 10_000];
        assert_eq!(first_nonzero(&bytes), None);
        bytes[9_999] = 1;
        assert_eq!(first_nonzero(&bytes), Some(9_999));
    }
}
