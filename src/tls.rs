//! Where each thread's cache lives: a block of thread-local storage reached in one or two
//! instructions.
//!
//! Rust's `thread_local!` uses the TLS model the crate type implies. In an executable that is
//! "local-exec" (`%fs`-relative, one instruction), but in `libebbmalloc.so` it is
//! "general-dynamic": a call to `__tls_get_addr` on every `malloc` and `free`, measured at
//! 28 extra instructions per malloc+free pair (callgrind, see docs/preload.md). Choosing the
//! "initial-exec" model for the whole crate needs the unstable `-Z tls-model`.
//!
//! How each target gets its block:
//!
//! - **x86_64 Linux** (`mod block` under `cfg(all(target_arch = "x86_64", target_os =
//!   "linux", not(ebbmalloc_portable_tls)))`): the block is declared in assembly, in `.tbss`
//!   (zero-initialised), and reached through its `@GOTTPOFF` offset plus the thread pointer at
//!   `%fs:0`: the initial-exec model, which the linker relaxes further to local-exec in an
//!   executable. Initial-exec is correct for a library loaded at start-up (`LD_PRELOAD`, or
//!   linked), which is how a `malloc` is loaded; a `dlopen` of the library later in a
//!   process's life could fail for lack of static TLS space, which is also true of jemalloc
//!   and mimalloc.
//! - **every other Linux architecture** (`mod block` under the negation of that condition): a
//!   `const`-initialised `thread_local!` of the same size and alignment, holding a type
//!   without `Drop`, so std registers no destructor for it and it stays readable while other
//!   TLS destructors run. Its model is the crate type's (see above).
//! - **under loom**, whose threads share one OS thread, neither block is used: the cache is a
//!   loom thread-local (see `thread_cache.rs`).
//!
//! CI builds and tests the fallback on x86_64 too: `RUSTFLAGS="--cfg ebbmalloc_portable_tls"`
//! selects it there (`.ci/run`, step "portable TLS fallback").
//!
//! The block starts zeroed in every thread, so whatever lives there must be valid as all
//! zero bytes (see `ThreadCache`).

/// Bytes reserved for the thread cache (checked against its size at compile time by the
/// user, `thread_cache.rs`).
pub(crate) const BLOCK_BYTES: usize = 2048;

/// This thread's zero-initialised block of [`BLOCK_BYTES`], 64-byte aligned.
#[cfg(not(loom))]
pub(crate) use block::this_thread_block;

/// The block in `.tbss`, reached with the initial-exec model.
#[cfg(all(
    target_arch = "x86_64",
    target_os = "linux",
    not(ebbmalloc_portable_tls)
))]
mod block {
    use super::BLOCK_BYTES;

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

    const _: () = assert!(
        BLOCK_BYTES == 2048,
        "keep the assembly's .size and .zero in step"
    );

    #[inline(always)]
    pub(crate) fn this_thread_block() -> *mut u8 {
        let block: *mut u8;
        // SAFETY: reads the block's offset from the thread pointer out of the GOT and adds
        // the thread pointer (`%fs:0` holds its own address on x86_64 Linux). Both are
        // constant for the calling thread, so the result may be reused within it (`pure`),
        // also across stores to memory (`nomem`: the words it reads never change; with
        // `readonly` a store in between, such as the heap profiler's countdown, made the
        // compiler compute the block's address again).
        unsafe {
            core::arch::asm!(
                "mov {block}, qword ptr [rip + ebbmalloc_thread_block_v0@GOTTPOFF]",
                "add {block}, qword ptr fs:[0]",
                block = out(reg) block,
                options(pure, nomem, nostack),
            );
        }
        block
    }
}

/// The portable block: a `thread_local!`.
#[cfg(not(all(
    target_arch = "x86_64",
    target_os = "linux",
    not(ebbmalloc_portable_tls)
)))]
mod block {
    use super::BLOCK_BYTES;
    use core::cell::UnsafeCell;

    /// No `Drop`, so no destructor is registered, and zero bytes, so it lands in `.tbss`.
    #[repr(C, align(64))]
    struct Block(UnsafeCell<[u8; BLOCK_BYTES]>);

    std::thread_local! {
        static BLOCK: Block = const { Block(UnsafeCell::new([0; BLOCK_BYTES])) };
    }

    const _: () = assert!(!core::mem::needs_drop::<Block>());

    // `with` fails (panics) only for a key whose destructor has run; this one has none.
    #[inline(always)]
    pub(crate) fn this_thread_block() -> *mut u8 {
        BLOCK.with(|block| block.0.get().cast())
    }
}
