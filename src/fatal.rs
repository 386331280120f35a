//! Writing to stderr without allocating, and the way out when an invariant breaks or the
//! program misuses the allocator: a message on stderr, then `abort`. Nothing in the
//! allocator panics. Formatted lines ([`print_line`], for statistics, settings and
//! warnings) go through a fixed buffer on the stack ([`StackWriter`]), never a `String`.

use crate::os;
use core::fmt::{self, Write};

/// Writes `ebbmalloc: <message> 0x<address>` and a newline to stderr, then aborts.
#[cold]
#[inline(never)]
pub(crate) fn fatal(message: &str, address: usize) -> ! {
    let mut line = [0u8; 256];
    let mut len = 0;
    for part in [
        b"ebbmalloc: ".as_slice(),
        message.as_bytes(),
        b" 0x".as_slice(),
    ] {
        let take = part.len().min(line.len() - 20 - len);
        line[len..len + take].copy_from_slice(&part[..take]);
        len += take;
    }
    len += write_hex(address, &mut line[len..]);
    line[len] = b'\n';
    len += 1;
    os::write_stderr(&line[..len]);
    os::abort()
}

/// Formats one line into a stack buffer and writes it to stderr.
pub(crate) fn print_line(args: fmt::Arguments<'_>) {
    write_line_with(args, os::write_stderr);
}

/// Formats one line (256 bytes at most; the rest is cut off) into a stack buffer and hands
/// the bytes to `write`.
pub(crate) fn write_line_with(args: fmt::Arguments<'_>, write: impl FnOnce(&[u8])) {
    let mut out = StackWriter::new();
    let _ = out.write_fmt(args);
    write(&out.buffer[..out.len]);
}

/// A fixed-size text buffer on the stack; what does not fit is cut off.
struct StackWriter {
    buffer: [u8; 256],
    len: usize,
}

impl StackWriter {
    fn new() -> StackWriter {
        StackWriter {
            buffer: [0; 256],
            len: 0,
        }
    }
}

impl Write for StackWriter {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let take = text.len().min(self.buffer.len() - self.len);
        self.buffer[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// Writes `value` in lowercase hex without leading zeros; returns the digits written.
fn write_hex(value: usize, out: &mut [u8]) -> usize {
    let digits = ((usize::BITS - value.leading_zeros()).div_ceil(4)).max(1) as usize;
    for (i, digit) in out[..digits].iter_mut().enumerate() {
        let nibble = (value >> ((digits - 1 - i) * 4)) & 0xf;
        *digit = b"0123456789abcdef"[nibble];
    }
    digits
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_digits() {
        let mut buf = [0u8; 20];
        let n = super::write_hex(0x7f12_ab00, &mut buf);
        assert_eq!(&buf[..n], b"7f12ab00");
        let n = super::write_hex(0, &mut buf);
        assert_eq!(&buf[..n], b"0");
    }
}
