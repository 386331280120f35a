//! The way out when an invariant breaks or the program misuses the allocator: a message on
//! stderr, written without allocating, then `abort`. Nothing in the allocator panics.

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
    // SAFETY: writing our own stack buffer to fd 2; failure to write changes nothing.
    unsafe {
        libc::write(2, line.as_ptr() as *const libc::c_void, len);
        libc::abort();
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
