//! What AddressSanitizer and valgrind's memcheck are told about our blocks.
//!
//! A caching allocator hides use-after-free from both tools: to them a freed block that sits
//! in a thread cache, a transfer batch or a pool is still memory the program may use. Two
//! cargo features make the allocator say what it knows:
//!
//! - **`asan`**, for builds with `-Zsanitizer=address`: ASan's manual poisoning interface
//!   (`__asan_poison_memory_region`, `__asan_unpoison_memory_region`). A block is
//!   poisoned when it comes back and unpoisoned when it is handed out; the blocks of a
//!   freshly carved pool start poisoned. A touch of a poisoned byte is reported as
//!   `use-after-poison`. The symbols exist only in a sanitized build: enabling the feature
//!   without the sanitizer fails at link time.
//! - **`valgrind`** (x86_64): valgrind client requests, issued by our own `asm!` with the
//!   documented magic preamble, that do nothing (a few register rotations) when the program
//!   does not run under valgrind. A handed-out block is a `MALLOCLIKE_BLOCK`, a returned one
//!   a `FREELIKE_BLOCK`, and a fresh pool's blocks are `NOACCESS`, so memcheck reports
//!   reads and writes of free blocks with the stack that freed them, and leaks of live
//!   blocks at exit.
//!
//! The allocator itself writes and reads the link word of free blocks (`block.rs`). Around
//! each such access [`open_link`] / [`open_link_for_write`] make that word accessible and
//! [`close_link`] fences it off again, so the tools see only the program's misuse.
//!
//! The extent told is the block's usable size (the class size, or a large block's bytes up
//! to the end of its mapping), as `malloc_usable_size` promises: a write past the request
//! but inside the block is not reported.
//!
//! With neither feature every function here is an empty `#[inline(always)]` function and
//! the fast paths compile exactly as before.

#[cfg(all(
    feature = "valgrind",
    not(all(target_arch = "x86_64", target_os = "linux"))
))]
compile_error!("the `valgrind` feature supports x86_64 Linux only");

/// Bytes of a free block's link word.
const LINK_BYTES: usize = core::mem::size_of::<*mut u8>();

/// `size` bytes at `block` now belong to the program; `zeroed`: they read as zero.
///
/// # Safety
/// `block` is null or a block of ours of at least `size` bytes that was just handed out.
#[inline(always)]
pub(crate) unsafe fn handed_out(block: *mut u8, size: usize, zeroed: bool) {
    if block.is_null() {
        return;
    }
    #[cfg(feature = "asan")]
    {
        // SAFETY: the block's memory is ours and mapped (caller).
        unsafe { asan::__asan_unpoison_memory_region(block, size) };
    }
    #[cfg(feature = "valgrind")]
    valgrind::request(
        valgrind::MALLOCLIKE_BLOCK,
        block as usize,
        size,
        0,
        zeroed as usize,
    );
    let _ = (size, zeroed);
}

/// The program handed back the `size` bytes at `block`.
///
/// # Safety
/// `block` is a block of ours of `size` bytes that the program no longer uses.
#[inline(always)]
pub(crate) unsafe fn taken_back(block: *mut u8, size: usize) {
    #[cfg(feature = "asan")]
    {
        // SAFETY: the block's memory is ours and mapped (caller).
        unsafe { asan::__asan_poison_memory_region(block, size) };
    }
    #[cfg(feature = "valgrind")]
    valgrind::request(valgrind::FREELIKE_BLOCK, block as usize, 0, 0, 0);
    let _ = (block, size);
}

/// A live block stayed where it is and now has `new_size` usable bytes instead of
/// `old_size`.
///
/// # Safety
/// `block` is a live block of ours, now `new_size` bytes long.
#[cfg(not(feature = "hardened"))] // hardened large blocks are reallocated by copying
#[inline(always)]
pub(crate) unsafe fn resized(block: *mut u8, old_size: usize, new_size: usize) {
    #[cfg(feature = "asan")]
    {
        // SAFETY: the block's memory is ours and mapped (caller).
        unsafe { asan::__asan_unpoison_memory_region(block, new_size) };
    }
    #[cfg(feature = "valgrind")]
    valgrind::request(
        valgrind::RESIZEINPLACE_BLOCK,
        block as usize,
        old_size,
        new_size,
        0,
    );
    let _ = (block, old_size, new_size);
}

/// A live block was moved by the OS (its pages remapped, not copied) from `old` to `new`
/// and now has `new_size` usable bytes; its first `min(old_size, new_size)` bytes are its
/// old contents.
///
/// # Safety
/// `new` is a live block of ours of `new_size` bytes; `old` is no longer mapped.
#[cfg(not(feature = "hardened"))] // hardened large blocks are reallocated by copying
#[inline(always)]
pub(crate) unsafe fn moved(old: *mut u8, old_size: usize, new: *mut u8, new_size: usize) {
    #[cfg(feature = "asan")]
    {
        // SAFETY: the new block's memory is ours and mapped (caller).
        unsafe { asan::__asan_unpoison_memory_region(new, new_size) };
    }
    #[cfg(feature = "valgrind")]
    {
        // Memcheck carried the contents' definedness over with the pages, but a
        // `MALLOCLIKE_BLOCK` marks the whole block undefined: the kept bytes are marked
        // defined again (reads of bytes never written there go unreported).
        valgrind::request(valgrind::FREELIKE_BLOCK, old as usize, 0, 0, 0);
        valgrind::request(valgrind::MALLOCLIKE_BLOCK, new as usize, new_size, 0, 0);
        valgrind::request(
            valgrind::MAKE_MEM_DEFINED,
            new as usize,
            old_size.min(new_size),
            0,
            0,
        );
    }
    let _ = (old, old_size, new, new_size);
}

/// `size` bytes at `start` hold only free blocks that nobody may touch yet (a new pool).
///
/// # Safety
/// The range is memory of ours with no live block in it.
#[inline(always)]
pub(crate) unsafe fn fence_off(start: *mut u8, size: usize) {
    // SAFETY: the caller's promise.
    unsafe { tell(start, size, Access::None) };
}

/// The link word of the free block at `block` is about to be read by the allocator.
///
/// # Safety
/// `block` is a free block of ours.
#[inline(always)]
pub(crate) unsafe fn open_link(block: *mut u8) {
    // SAFETY: the link word is ours (caller).
    unsafe { tell(block, LINK_BYTES, Access::Defined) };
}

/// The link word of the free block at `block` is about to be written by the allocator.
///
/// # Safety
/// `block` is a free block of ours.
#[inline(always)]
pub(crate) unsafe fn open_link_for_write(block: *mut u8) {
    // SAFETY: the link word is ours (caller).
    unsafe { tell(block, LINK_BYTES, Access::Undefined) };
}

/// The allocator is done with the link word of the free block at `block`.
///
/// # Safety
/// `block` is a free block of ours.
#[inline(always)]
pub(crate) unsafe fn close_link(block: *mut u8) {
    // SAFETY: the link word is ours (caller).
    unsafe { tell(block, LINK_BYTES, Access::None) };
}

/// What the sanitizers are told of a range of ours.
#[derive(Clone, Copy)]
enum Access {
    /// Nobody may touch it (ASan: poisoned; memcheck: no access).
    None,
    /// Readable, with defined contents (ASan: unpoisoned; memcheck: defined).
    Defined,
    /// Writable, contents undefined (ASan: unpoisoned; memcheck: undefined).
    Undefined,
}

/// Tells ASan and memcheck (whichever this build serves) what `access` the range allows.
///
/// # Safety
/// `[start, start + size)` is mapped memory of ours.
#[inline(always)]
unsafe fn tell(start: *mut u8, size: usize, access: Access) {
    #[cfg(feature = "asan")]
    {
        // SAFETY: the range is ours and mapped (caller).
        unsafe {
            match access {
                Access::None => asan::__asan_poison_memory_region(start, size),
                Access::Defined | Access::Undefined => {
                    asan::__asan_unpoison_memory_region(start, size)
                }
            }
        }
    }
    #[cfg(feature = "valgrind")]
    valgrind::request(
        match access {
            Access::None => valgrind::MAKE_MEM_NOACCESS,
            Access::Defined => valgrind::MAKE_MEM_DEFINED,
            Access::Undefined => valgrind::MAKE_MEM_UNDEFINED,
        },
        start as usize,
        size,
        0,
        0,
    );
    let _ = (start, size, access);
}

#[cfg(feature = "asan")]
mod asan {
    extern "C" {
        /// Marks `[addr, addr + size)` unaddressable (ASan's manual poisoning interface).
        pub(super) fn __asan_poison_memory_region(addr: *const u8, size: usize);
        /// Marks `[addr, addr + size)` addressable again.
        pub(super) fn __asan_unpoison_memory_region(addr: *const u8, size: usize);
    }
}

#[cfg(feature = "valgrind")]
mod valgrind {
    //! Client requests, as `valgrind.h` and `memcheck.h` issue them on amd64.

    /// `VG_USERREQ__MALLOCLIKE_BLOCK`: (address, size, redzone, is_zeroed).
    pub(super) const MALLOCLIKE_BLOCK: usize = 0x1301;
    /// `VG_USERREQ__FREELIKE_BLOCK`: (address, redzone).
    pub(super) const FREELIKE_BLOCK: usize = 0x1302;
    /// `VG_USERREQ__RESIZEINPLACE_BLOCK`: (address, old size, new size, redzone).
    #[cfg(not(feature = "hardened"))]
    pub(super) const RESIZEINPLACE_BLOCK: usize = 0x130b;
    /// Memcheck's tool base, `VG_USERREQ_TOOL_BASE('M', 'C')`.
    const MEMCHECK_BASE: usize = ((b'M' as usize) << 24) | ((b'C' as usize) << 16);
    /// `VG_USERREQ__MAKE_MEM_NOACCESS`: (address, size).
    pub(super) const MAKE_MEM_NOACCESS: usize = MEMCHECK_BASE;
    /// `VG_USERREQ__MAKE_MEM_UNDEFINED`: (address, size).
    pub(super) const MAKE_MEM_UNDEFINED: usize = MEMCHECK_BASE + 1;
    /// `VG_USERREQ__MAKE_MEM_DEFINED`: (address, size).
    pub(super) const MAKE_MEM_DEFINED: usize = MEMCHECK_BASE + 2;

    /// Issues a client request with four arguments (the fifth is always 0 here). The
    /// requests used here answer nothing we need; outside valgrind they do nothing.
    #[inline(always)]
    pub(super) fn request(code: usize, a1: usize, a2: usize, a3: usize, a4: usize) {
        let block: [usize; 6] = [code, a1, a2, a3, a4, 0];
        // SAFETY: the magic sequence rotates rdi by 3 + 13 + 61 + 51 = 128 bits (a full
        // turn: rdi is unchanged) and exchanges rbx with itself; natively that is all it
        // does, clobbering only the flags. Under valgrind it is the client request: valgrind
        // reads the six words at rax and writes its answer (ignored) to rdx. `block` lives across the
        // asm and the asm may read memory (no `nomem`).
        unsafe {
            core::arch::asm!(
                "rol rdi, 3",
                "rol rdi, 13",
                "rol rdi, 61",
                "rol rdi, 51",
                "xchg rbx, rbx",
                in("rax") block.as_ptr(),
                inout("rdx") 0usize => _,
                options(nostack),
            );
        }
    }
}
