//! Where each thread's cache lives: a block of thread-local storage reached in one or two
//! instructions.
//!
//! Rust's `thread_local!` uses the TLS model the crate type implies. In an executable that is
//! "local-exec" (`%fs`-relative, one instruction), but in `libebbmalloc.so` it is
//! "general-dynamic": a call to `__tls_get_addr` on every `malloc` and `free`, measured at
//! 28 extra instructions per malloc+free pair (callgrind, see the README). Choosing the
//! "initial-exec" model for the whole crate needs the unstable `-Z tls-model`.
//!
//! So on x86_64 Linux the block is declared in assembly, in `.tbss` (zero-initialised), and
//! reached through its `@GOTTPOFF` offset plus the thread pointer at `%fs:0`: the
//! initial-exec model, which the linker relaxes further to local-exec in an executable.
//! Initial-exec is correct for a library loaded at start-up (`LD_PRELOAD`, or linked), which
//! is how a `malloc` is loaded; a `dlopen` of the library later in a process's life could
//! fail for lack of static TLS space, which is also true of jemalloc and mimalloc.
//!
//! The block starts zeroed in every thread, so whatever lives there must be valid as all
//! zero bytes (see `ThreadCache`). Elsewhere, a `thread_local!` of the same size is used.
//! Under loom, whose threads share one OS thread, the cache is a loom thread-local instead
//! (see `thread_cache.rs`).

/// Bytes reserved for the thread cache (checked against its size at compile time by the
/// user, `thread_cache.rs`).
pub(crate) const BLOCK_BYTES: usize = 2048;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
core::arch::global_asm!(
    ".section .tbss,\"awT\",@nobits",
    ".balign 64",
    ".globl ebbmalloc_thread_block_v0",
    ".hidden ebbmalloc_thread_block_v0",
    ".type ebbmalloc_thread_block_v0, @object",
    ".size ebbmalloc_thread_block_v0, 2048",
    "ebbmalloc_thread_block_v0:",
    ".zero 2048",
    ".text",
);

/// This thread's zero-initialised block of [`BLOCK_BYTES`], 64-byte aligned.
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(loom)))]
#[inline(always)]
pub(crate) fn this_thread_block() -> *mut u8 {
    let block: *mut u8;
    // SAFETY: reads the block's offset from the thread pointer out of the GOT and adds the
    // thread pointer (`%fs:0` holds its own address on x86_64 Linux). Both are constant for
    // the calling thread, so the result may be reused within it (`pure`).
    unsafe {
        core::arch::asm!(
            "mov {block}, qword ptr [rip + ebbmalloc_thread_block_v0@GOTTPOFF]",
            "add {block}, qword ptr fs:[0]",
            block = out(reg) block,
            options(pure, readonly, nostack),
        );
    }
    block
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
#[repr(C, align(64))]
struct Block(core::cell::UnsafeCell<[u8; BLOCK_BYTES]>);

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
std::thread_local! {
    static BLOCK: Block = const { Block(core::cell::UnsafeCell::new([0; BLOCK_BYTES])) };
}

/// This thread's zero-initialised block of [`BLOCK_BYTES`], 64-byte aligned.
#[cfg(all(not(all(target_arch = "x86_64", target_os = "linux")), not(loom)))]
#[inline(always)]
pub(crate) fn this_thread_block() -> *mut u8 {
    BLOCK.with(|block| block.0.get() as *mut u8)
}

const _: () = assert!(
    BLOCK_BYTES == 2048,
    "keep the assembly's .size and .zero in step"
);
