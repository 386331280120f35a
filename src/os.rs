//! The operating system below us, named by intent: reserve address space, give pages back,
//! move a mapping, sleep on a futex word, create the background thread, hook thread exit
//! and `fork`, write to stderr, walk or look up the unwind tables of the loaded code (for
//! the heap profiler). This is the only module that makes system calls or calls
//! the C library; it is the bottom layer and depends on nothing of ours but `consts`, so
//! the logic above it can be run against another `os` (a mock under Miri or loom).
//!
//! Every function is safe to call from inside `malloc`: none takes a lock of ours, and none
//! allocates but the heap profiler's [`backtrace_with_unwinder`], [`unwind_entry`] and
//! [`thread_stack_end`], whose caller guards against re-entry.
//!
//! **errno.** A successful `malloc`, `realloc` or `free` leaves `errno` as it found it, yet
//! on its way it may make system calls that fail harmlessly (an `mremap` in place that finds
//! the neighbouring pages taken, a `madvise` the kernel refuses) and set `errno`. So every
//! function here puts `errno` back as it was ([`keeping_errno`]); the C front sets it
//! itself when a call fails as a whole.

use core::ptr;

/// How pages that are no longer needed are handed back to the OS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purge {
    /// `madvise(MADV_DONTNEED)`: the memory leaves the process's RSS at once.
    DontNeed,
    /// `madvise(MADV_FREE)`: the kernel reclaims the memory when it needs it; cheaper, but
    /// RSS only drops under memory pressure.
    Free,
}

/// Maps `size` bytes of fresh, zeroed, read-write memory aligned to `align` (a power of
/// two, at least a page). Returns null when the OS refuses.
pub(crate) fn reserve_aligned(size: usize, align: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two() && align >= crate::consts::PAGE_SIZE);
    let Some(over) = size.checked_add(align - crate::consts::PAGE_SIZE) else {
        return ptr::null_mut();
    };
    let raw = map(over);
    if raw.is_null() {
        return raw;
    }
    let start = raw as usize;
    let aligned = (start + align - 1) & !(align - 1);
    let head = aligned - start;
    let tail = over - head - size;
    // SAFETY: [raw, raw + head) and [aligned + size, raw + over) are parts of the mapping we
    // just made and nothing points into them.
    unsafe {
        if head > 0 {
            unmap(raw, head);
        }
        if tail > 0 {
            unmap((aligned + size) as *mut u8, tail);
        }
    }
    aligned as *mut u8
}

fn map(size: usize) -> *mut u8 {
    map_with(size, 0)
}

/// Maps `size` bytes of zeroed read-write memory with no swap reserved for them: for
/// tables of our own that are large in address space and touched sparsely (the chunk
/// map). Null when the OS refuses.
pub(crate) fn reserve_sparse(size: usize) -> *mut u8 {
    map_with(size, libc::MAP_NORESERVE)
}

/// Maps `size` bytes of zeroed read-write memory, with no swap reserved for them, exactly at
/// `address` (page-aligned), or nothing if any of that range is taken: for the heap
/// profiler's range of sampled blocks, which must lie at a known place. Returns whether
/// the range is now ours.
pub(crate) fn reserve_sparse_at(address: usize, size: usize) -> bool {
    // MAP_FIXED_NOREPLACE never replaces an existing mapping; a kernel older than 4.17
    // takes it as a hint and may map elsewhere, which is undone below.
    let p = map_at(
        address as *mut u8,
        size,
        libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE,
    );
    if p.is_null() {
        return false;
    }
    if p as usize != address {
        // SAFETY: a fresh mapping of ours at the wrong place, never published.
        unsafe { unmap(p, size) };
        return false;
    }
    true
}

fn map_with(size: usize, extra_flags: libc::c_int) -> *mut u8 {
    map_at(ptr::null_mut(), size, extra_flags)
}

/// An anonymous private read-write mapping of `size` bytes, at `address` as a hint (null:
/// the kernel's choice), or null when the OS refuses. `extra_flags` may not include
/// `MAP_FIXED`, which would replace what is there.
fn map_at(address: *mut u8, size: usize, extra_flags: libc::c_int) -> *mut u8 {
    debug_assert!(extra_flags & libc::MAP_FIXED == 0);
    // SAFETY: an anonymous private mapping without MAP_FIXED touches no existing memory.
    let p = keeping_errno(|| unsafe {
        libc::mmap(
            address as *mut libc::c_void,
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags,
            -1,
            0,
        )
    });
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p as *mut u8
    }
}

/// Runs `f` (which makes system or C library calls) and restores `errno` to what it was
/// before: the allocator's own failed attempts are none of the program's business.
#[inline]
pub(crate) fn keeping_errno<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: `__errno_location` returns this thread's errno slot, valid for its life.
    let slot = unsafe { libc::__errno_location() };
    // SAFETY: as above.
    let saved = unsafe { *slot };
    let result = f();
    // SAFETY: as above.
    unsafe { *slot = saved };
    result
}

/// Returns a whole mapping, or a page-aligned part of one, to the OS.
///
/// # Safety
/// `[start, start + size)` is memory this allocator mapped and nothing will touch it again.
pub(crate) unsafe fn unmap(start: *mut u8, size: usize) {
    // SAFETY: the caller owns the range; munmap of an owned range cannot corrupt anything
    // else. It can only fail for bad arguments, which the caller rules out.
    let rc = unsafe { libc::munmap(start as *mut libc::c_void, size) };
    if rc != 0 {
        // Not `fatal::fatal`, which sits above this module; the range is a bug of ours.
        write_stderr(b"ebbmalloc: munmap of a range of ours failed\n");
        abort();
    }
}

/// Tells the OS that the pages of `[start, start + size)` are no longer needed. With
/// [`Purge::DontNeed`] their physical memory is freed now and they read as zeros when next
/// touched; with [`Purge::Free`] the kernel frees them when it needs memory, and until then
/// they may keep their contents.
///
/// # Safety
/// The range is page-aligned memory of ours whose contents nobody needs.
pub(crate) unsafe fn release_pages(start: *mut u8, size: usize, how: Purge) {
    let advice = match how {
        Purge::DontNeed => libc::MADV_DONTNEED,
        Purge::Free => libc::MADV_FREE,
    };
    // SAFETY: the caller owns the range and does not need its contents.
    keeping_errno(|| unsafe {
        libc::madvise(start as *mut libc::c_void, size, advice);
    });
}

/// Makes `[start, start + size)` a guard: any access to it faults. Returns whether the OS
/// agreed (it may not, when the process is out of kernel mappings).
///
/// # Safety
/// The range is page-aligned memory of ours that nothing uses.
#[cfg(feature = "hardened")]
pub(crate) unsafe fn make_guard(start: *mut u8, size: usize) -> bool {
    // SAFETY: the caller owns the range and nothing in it is used.
    keeping_errno(|| unsafe {
        libc::mprotect(start as *mut libc::c_void, size, libc::PROT_NONE) == 0
    })
}

/// Milliseconds on a monotonic clock (wraps after 49 days; compare with `wrapping_sub`).
pub(crate) fn now_ms() -> u32 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own; the coarse clock is a vDSO read.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    (now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000) as u32
}

/// Shrinks or grows the mapping at `start` to `new_size` without moving it. Returns whether
/// the OS could do it (growing fails when the address space after it is taken).
///
/// # Safety
/// `[start, start + old_size)` is one mapping of ours.
#[cfg(not(feature = "hardened"))] // hardened large blocks are copied (see `large.rs`)
pub(crate) unsafe fn resize_in_place(start: *mut u8, old_size: usize, new_size: usize) -> bool {
    // SAFETY: without MREMAP_MAYMOVE the mapping stays where it is or the call fails.
    let p = keeping_errno(|| unsafe {
        libc::mremap(start as *mut libc::c_void, old_size, new_size, 0)
    });
    p != libc::MAP_FAILED
}

/// Moves the mapping at `start` to a fresh place aligned to `align`, resized to `new_size`,
/// without copying its pages. Returns the new start, or null (the old mapping is then
/// untouched).
///
/// # Safety
/// `[start, start + old_size)` is one mapping of ours; nobody uses it during the call.
#[cfg(not(feature = "hardened"))]
pub(crate) unsafe fn move_aligned(
    start: *mut u8,
    old_size: usize,
    new_size: usize,
    align: usize,
) -> *mut u8 {
    let target = reserve_aligned(new_size, align);
    if target.is_null() {
        return target;
    }
    // SAFETY: MREMAP_FIXED replaces our fresh reservation at `target` atomically; the
    // source is the caller's mapping.
    let p = keeping_errno(|| unsafe {
        libc::mremap(
            start as *mut libc::c_void,
            old_size,
            new_size,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            target as *mut libc::c_void,
        )
    });
    if p == libc::MAP_FAILED {
        // SAFETY: the reservation is ours and unused.
        unsafe { unmap(target, new_size) };
        return ptr::null_mut();
    }
    p as *mut u8
}

/// 16 bytes that an attacker cannot predict (for the double-free mark and the hardened
/// link key): from `getrandom(2)` without blocking, else the kernel's `AT_RANDOM` bytes,
/// else our code and stack addresses (randomised by ASLR) and the time, mixed.
pub(crate) fn random_words() -> [u64; 2] {
    let mut words = [0u64; 2];
    // SAFETY: getrandom writes at most the 16 bytes of our buffer; GRND_NONBLOCK keeps it
    // from waiting for the entropy pool early in boot.
    let got = keeping_errno(|| unsafe {
        libc::getrandom(
            words.as_mut_ptr() as *mut libc::c_void,
            core::mem::size_of_val(&words),
            libc::GRND_NONBLOCK,
        )
    });
    if got == core::mem::size_of_val(&words) as isize {
        return words;
    }
    // SAFETY: AT_RANDOM, when present, is the address of 16 random bytes the kernel put on
    // the initial stack; they stay there for the life of the process.
    unsafe {
        let at_random = libc::getauxval(libc::AT_RANDOM) as *const [u64; 2];
        if !at_random.is_null() {
            return at_random.read_unaligned();
        }
    }
    let stack = &words as *const _ as u64;
    let code = random_words as *const () as u64;
    [
        mix(stack ^ now_ms() as u64),
        mix(code.rotate_left(32) ^ stack),
    ]
}

/// Fills `frames` with the return addresses of the calling thread's stack, innermost first,
/// leaving out the `skip` innermost frames (this function's own is always left out, so
/// `skip == 0` starts with the return address into its caller); returns how many it wrote
/// (at most `frames.len()`). Walks the stack with the C unwinder (`_Unwind_Backtrace`, from
/// libgcc_s, which Rust's standard library links), which needs no frame pointers. It is the
/// profiler's fallback for stacks that `unwind.rs` cannot walk itself. The unwinder may call
/// `malloc` the first time it looks an object's unwind tables up: the caller must be ready
/// for that re-entry (see `profiling.rs`).
#[inline(never)]
pub(crate) fn backtrace_with_unwinder(frames: &mut [usize], skip: usize) -> usize {
    /// What the unwinder hands our callback, per frame.
    #[repr(C)]
    struct Walk {
        frames: *mut usize,
        capacity: usize,
        len: usize,
        /// Frames still to skip.
        skip: usize,
        /// This function's stack pointer. A frame whose stack pointer (what
        /// `_Unwind_GetCFA` gives for it: the stack pointer at its call) is at or below it is
        /// this function's own, or a helper's or the unwinder's under it (how many depends
        /// on inlining), and is passed over.
        own_frame: usize,
    }
    #[allow(non_camel_case_types)]
    type _Unwind_Context = libc::c_void;
    /// `_URC_NO_REASON`: go on; `_URC_END_OF_STACK`: stop.
    const GO_ON: libc::c_int = 0;
    const STOP: libc::c_int = 5;
    extern "C" {
        fn _Unwind_Backtrace(
            trace: extern "C" fn(*mut _Unwind_Context, *mut libc::c_void) -> libc::c_int,
            argument: *mut libc::c_void,
        ) -> libc::c_int;
        fn _Unwind_GetIP(context: *mut _Unwind_Context) -> usize;
        fn _Unwind_GetCFA(context: *mut _Unwind_Context) -> usize;
    }
    extern "C" fn each_frame(
        context: *mut _Unwind_Context,
        argument: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `argument` is the `Walk` that `backtrace_with_unwinder` passed, alive for
        // the walk; `context` is the unwinder's, valid during this call.
        unsafe {
            let walk = &mut *(argument as *mut Walk);
            if _Unwind_GetCFA(context) <= walk.own_frame {
                return GO_ON;
            }
            if walk.skip > 0 {
                walk.skip -= 1;
                return GO_ON;
            }
            let ip = _Unwind_GetIP(context);
            if ip == 0 || walk.len == walk.capacity {
                return STOP;
            }
            *walk.frames.add(walk.len) = ip;
            walk.len += 1;
            GO_ON
        }
    }
    let mut walk = Walk {
        frames: frames.as_mut_ptr(),
        capacity: frames.len(),
        len: 0,
        skip,
        own_frame: 0,
    };
    // The stack pointer itself, not a local's address: under AddressSanitizer locals may
    // live on a stack of its own.
    // SAFETY: reads a register into an output; no memory, no stack.
    unsafe {
        core::arch::asm!(
            "mov {}, rsp",
            out(reg) walk.own_frame,
            options(nomem, nostack, preserves_flags)
        )
    };
    // SAFETY: the callback writes at most `capacity` frames into `frames`, which outlives
    // the call; the unwinder only reads this thread's stack.
    keeping_errno(|| unsafe {
        _Unwind_Backtrace(each_frame, &mut walk as *mut Walk as *mut libc::c_void)
    });
    walk.len
}

/// The unwind table entry (DWARF frame description entry, in a loaded object's
/// `.eh_frame`) that covers the code address `pc`, and the start of the function it
/// describes; `None` where no loaded object describes `pc`. Asks libgcc's
/// `_Unwind_Find_FDE`, which looks the object up with glibc's `_dl_find_object` (or
/// `dl_iterate_phdr`) and binary-searches its `.eh_frame_hdr`. The entry stays readable
/// while the object stays loaded.
pub(crate) fn unwind_entry(pc: usize) -> Option<(*const u8, usize)> {
    /// libgcc's `struct dwarf_eh_bases`.
    #[repr(C)]
    struct Bases {
        text: usize,
        data: usize,
        function: usize,
    }
    extern "C" {
        fn _Unwind_Find_FDE(pc: *mut libc::c_void, bases: *mut Bases) -> *const u8;
    }
    let mut bases = Bases {
        text: 0,
        data: 0,
        function: 0,
    };
    // SAFETY: `_Unwind_Find_FDE` only reads the loader's tables and writes `bases`, which
    // we own.
    let entry = keeping_errno(|| unsafe { _Unwind_Find_FDE(pc as *mut libc::c_void, &mut bases) });
    (!entry.is_null()).then_some((entry, bases.function))
}

/// The end (highest address, exclusive) of the calling thread's stack, or 0 where the C
/// library cannot say. `pthread_getattr_np` allocates (through us) and, for the main
/// thread, reads `/proc/self/maps`: the heap profiler asks once per thread, with its
/// re-entry guard set.
pub(crate) fn thread_stack_end() -> usize {
    // SAFETY: the attribute object is initialised by `pthread_getattr_np` before it is read
    // and destroyed after; `pthread_attr_getstack` writes the two outputs we own.
    keeping_errno(|| unsafe {
        let mut attr = core::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
        if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
            return 0;
        }
        let mut low: *mut libc::c_void = ptr::null_mut();
        let mut size: libc::size_t = 0;
        let got = libc::pthread_attr_getstack(attr.as_ptr(), &mut low, &mut size);
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        if got != 0 {
            return 0;
        }
        (low as usize).saturating_add(size)
    })
}

/// The step of the Weyl sequences whose terms [`mix`] turns into random words (splitmix64:
/// the hardened build's shuffling, the heap profiler's per-thread generator).
pub(crate) const WEYL_STEP: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64's finaliser: a 64-bit word whose every bit depends on every bit of `z`.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Sleeps for `ms` milliseconds (an interrupted sleep ends early, which callers tolerate).
pub(crate) fn sleep_ms(ms: u32) {
    let time = timespec_of_ms(ms);
    // SAFETY: nanosleep reads our timespec; the remainder pointer may be null.
    keeping_errno(|| unsafe { libc::nanosleep(&time, ptr::null_mut()) });
}

/// Writes `bytes` to stderr with one `write(2)` (a short or failed write is not retried:
/// the callers are diagnostics).
pub(crate) fn write_stderr(bytes: &[u8]) {
    // SAFETY: writes our own initialised bytes to fd 2.
    keeping_errno(|| unsafe {
        libc::write(2, bytes.as_ptr() as *const libc::c_void, bytes.len());
    });
}

/// Writes `bytes` to the C stream `stream` (`FILE *`) with `fwrite`, for `malloc_info`.
///
/// # Safety
/// `stream` is a valid `FILE *` open for writing.
pub(crate) unsafe fn write_to_stream(stream: *mut libc::c_void, bytes: &[u8]) {
    // SAFETY: the caller's promise; the bytes are ours and initialised. stdio may allocate
    // its buffer here, through us: no lock of ours is held.
    keeping_errno(|| unsafe {
        libc::fwrite(
            bytes.as_ptr() as *const libc::c_void,
            1,
            bytes.len(),
            stream as *mut libc::FILE,
        );
    });
}

/// Ends the process at once (`abort(3)`: SIGABRT, a core dump where enabled).
pub(crate) fn abort() -> ! {
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

/// The calling thread's `errno`.
pub(crate) fn errno() -> i32 {
    // SAFETY: `__errno_location` returns this thread's errno slot, valid for its life.
    unsafe { *libc::__errno_location() }
}

/// Leaves `ENOMEM` in `errno`, as a C allocation function that returns null must. Every
/// allocation of ours that returns null has called this (`thread_cache::alloc_slow` and
/// `front`), so C's `malloc` needs no check of its own on its fast path.
#[cold]
pub(crate) fn set_errno_out_of_memory() {
    set_errno(libc::ENOMEM);
}

/// Sets the calling thread's `errno` (the C front reports a failed call this way).
pub(crate) fn set_errno(code: i32) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = code };
}

/// Sleeps while the word at `word` holds `expected`, for at most `timeout_ms` when given
/// (futex FUTEX_WAIT, process-private). May return early, interrupted or spuriously woken:
/// callers re-check the word.
#[cfg(not(loom))]
pub(crate) fn futex_wait(
    word: &core::sync::atomic::AtomicU32,
    expected: u32,
    timeout_ms: Option<u32>,
) {
    let timeout = timeout_ms.map(timespec_of_ms);
    let timeout_ptr = match &timeout {
        Some(t) => t as *const libc::timespec,
        None => ptr::null(),
    };
    // SAFETY: FUTEX_WAIT reads the aligned u32 behind `word`, which outlives the call, and
    // the relative timeout we own. It fails with EAGAIN when the word changed first, or
    // ETIMEDOUT, EINTR: errno is put back, no `malloc` that succeeded may show them (the
    // fuzz target `capi` caught a `posix_memalign` returning 0 with errno set to EAGAIN).
    keeping_errno(|| unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            timeout_ptr,
        );
    });
}

/// `membarrier(2)` commands (linux/membarrier.h).
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

/// Registers the process for [`membarrier_private_expedited`]; false where the kernel
/// refuses (before Linux 4.14, or a sandbox that filters the call). A registration is the
/// address space's: a forked child registers again.
pub(crate) fn register_membarrier() -> bool {
    // SAFETY: membarrier takes no pointers; a failure only sets errno, which is put back.
    keeping_errno(|| unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
            0,
        ) == 0
    })
}

/// Makes every running thread of the process execute a full memory barrier before this
/// returns (an inter-processor interrupt to each CPU that runs one; a thread that is not
/// running passed one when it was switched out). False if the kernel refused.
pub(crate) fn membarrier_private_expedited() -> bool {
    // SAFETY: as in `register_membarrier`.
    keeping_errno(|| unsafe {
        libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) == 0
    })
}

/// Wakes one thread sleeping in [`futex_wait`] on `word`, if any.
#[cfg(not(loom))]
pub(crate) fn futex_wake_one(word: &core::sync::atomic::AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address of the word as a key.
    keeping_errno(|| unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
            ptr::null::<libc::timespec>(),
        );
    });
}

fn timespec_of_ms(ms: u32) -> libc::timespec {
    libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    }
}

/// The value of the environment variable `name` (given NUL-terminated), if set. `getenv`
/// does not allocate.
pub(crate) fn env_var(name: &core::ffi::CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated; getenv returns null or a C string the environment
    // owns, which the allocator reads once at set-up, before the program could change it
    // under us by `setenv` from another thread (the same assumption as every C library).
    unsafe {
        let raw = libc::getenv(name.as_ptr());
        (!raw.is_null()).then(|| core::ffi::CStr::from_ptr(raw).to_bytes())
    }
}

/// The id of this process.
pub(crate) fn process_id() -> u32 {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() as u32 }
}

/// What the C library runs at a thread's exit: a pthread key destructor, given the value
/// the thread stored under the key.
pub(crate) type ThreadExitHook = extern "C" fn(*mut libc::c_void);

/// Creates a pthread key whose destructor `at_exit` runs at the exit of every thread that
/// stored a non-null value under it ([`call_at_thread_exit`]). None when the C library has
/// no key left.
pub(crate) fn thread_exit_key(at_exit: ThreadExitHook) -> Option<u32> {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is ours to write; the destructor is an `extern "C"` function that lives
    // for the whole process.
    let rc = keeping_errno(|| unsafe { libc::pthread_key_create(&mut key, Some(at_exit)) });
    (rc == 0).then_some(key as u32)
}

/// Makes the C library run the destructor of `key` when this thread exits; false when it
/// cannot (out of memory for the thread's key slots).
pub(crate) fn call_at_thread_exit(key: u32) -> bool {
    // SAFETY: `key` was created by `thread_exit_key`; any non-null value makes glibc call
    // the destructor at thread exit.
    keeping_errno(|| unsafe {
        libc::pthread_setspecific(key as libc::pthread_key_t, 1 as *const libc::c_void) == 0
    })
}

/// Runs `before` in the thread that calls `fork` before the process is copied, then
/// `in_parent` in it, or `in_child` in the child's only thread.
pub(crate) fn hook_fork(
    before: extern "C" fn(),
    in_parent: extern "C" fn(),
    in_child: extern "C" fn(),
) {
    // SAFETY: the handlers are `extern "C"` functions that live for the whole process.
    keeping_errno(|| unsafe {
        libc::pthread_atfork(Some(before), Some(in_parent), Some(in_child));
    });
}

/// Runs `hook` when the process exits normally.
pub(crate) fn hook_process_exit(hook: extern "C" fn()) {
    // SAFETY: `hook` is an `extern "C"` function that lives for the whole process.
    keeping_errno(|| unsafe {
        libc::atexit(hook);
    });
}

/// Starts a detached thread running `main(argument)` on a stack of `stack_bytes`, with
/// every signal blocked in it, so that it never takes a signal meant for the program (a
/// server that blocks SIGTERM in all of *its* threads to take it with `sigwait` would
/// otherwise see it run a handler on our thread, or die of it). The caller's signal mask is
/// restored at once. glibc maps the new stack itself. False if the thread could not start.
pub(crate) fn start_background_thread(
    main: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void,
    argument: *mut libc::c_void,
    stack_bytes: usize,
) -> bool {
    // SAFETY: plain pthread calls on signal sets, attributes and a thread handle we own;
    // the thread function is `extern "C"` and takes `argument`, which pthread only passes
    // on (a new thread inherits its creator's mask, hence blocking everything around the
    // create).
    keeping_errno(|| unsafe {
        let mut all_signals: libc::sigset_t = core::mem::zeroed();
        let mut creator_mask: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all_signals);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all_signals, &mut creator_mask);
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        let mut thread: libc::pthread_t = 0;
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setstacksize(&mut attr, stack_bytes);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let rc = libc::pthread_create(&mut thread, &attr, main, argument);
        libc::pthread_attr_destroy(&mut attr);
        libc::pthread_sigmask(libc::SIG_SETMASK, &creator_mask, ptr::null_mut());
        rc == 0
    })
}

/// Names the calling thread (at most 15 bytes show in `/proc`).
pub(crate) fn name_this_thread(name: &core::ffi::CStr) {
    // SAFETY: naming our own thread with a NUL-terminated string.
    keeping_errno(|| unsafe {
        libc::pthread_setname_np(libc::pthread_self(), name.as_ptr());
    });
}
