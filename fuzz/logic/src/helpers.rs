//! Helper threads, the thread lifecycle operations of every target: a helper starts, does
//! one small thing and ends while the op streams go on, so thread caches are set up and
//! torn down (or never set up) under the allocator, statistics walks and trimming passes
//! meet threads that come and go, and large mappings appear, move and vanish beside the
//! streams' blocks.
//!
//! | kind         | thread                 | what it does                                   |
//! |--------------|------------------------|------------------------------------------------|
//! | `Idle`       | `std::thread` (scoped) | nothing: it never calls the allocator          |
//! | `Free`       | `std::thread` (scoped) | frees the block handed to it, nothing else     |
//! | `RawIdle`    | detached raw pthread   | nothing                                        |
//! | `RawFree`    | detached raw pthread   | frees the block handed to it                   |
//! | `FreeAtExit` | detached raw pthread   | frees the block handed to it from its last round of pthread-key destructors |
//! | `Trimmer`    | `std::thread` (scoped) | trims, walks the statistics, trims again       |
//! | `Mapper`     | `std::thread` (scoped) | maps, resizes (mostly moving) and unmaps large blocks of up to 32 MiB, aligned up to 2 MiB |
//! | `Preempter`  | `std::thread` (scoped) | for about 15 ms, stops stream, mapper or trimmer threads at random moments for 50 us |
//!
//! `FreeAtExit` stands for what glibc does when a detached thread ends: it frees the
//! thread's `dtv` (allocated by the thread that created it) *after* the thread's
//! pthread-key destructors ran, so a thread that never allocated makes its first call to
//! the allocator when the allocator's own key destructor can no longer run. A key of ours
//! created after the allocator's re-arms its value until the last round glibc makes
//! (`PTHREAD_DESTRUCTOR_ITERATIONS`) and frees there.
//!
//! `Preempter` widens race windows: a signal sent while a thread is in a system call is
//! handled when the call returns, so the thread stops between a system call and the
//! bookkeeping after it (a mapping moved by `mremap`, and its old chunk still in the chunk
//! map), and the other threads (mappers, streams, trimmers) run in between. The handler
//! only sleeps and keeps `errno` as it was.
//!
//! Scoped helpers are joined when their stream ends ([`Helpers::join`]). Raw ones are
//! created detached and may outlive the run, so they touch nothing of it: the caller checks
//! a block and takes it out of the model before it hands it over (`Handed`).
//!
//! **No thread is detached after it started.** glibc 2.36's `pthread_detach` (Debian 12's)
//! marks the thread detached and only then reads its descriptor to see whether it has
//! exited; a thread that exits in between frees its own stack, and when glibc's stack
//! cache is over its limit another thread's exit or start unmaps that stack, descriptor
//! included: `pthread_detach` then faults. Dropping a `ScopedJoinHandle` is such a detach,
//! and this harness makes the window wide (preempters stop the very thread that detaches
//! them; many threads end at once). It crashed the `threads` target about once in 20,000
//! runs, and `scripts/glibc-detach-race.c` shows the same fault with glibc alone. So
//! scoped helpers are joined, and raw ones get the detached attribute at creation.

use crate::generate::Rng;
use crate::pattern;
use crate::shadow::{owned_bytes, Shadow};
use crate::watchdog;
use core::ffi::{c_int, c_void};
use std::sync::{Mutex, OnceLock};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Duration;

/// What a helper thread does (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// Nothing: it never calls the allocator.
    Idle,
    /// Frees the block handed to it.
    Free,
    /// A detached raw pthread that does nothing.
    RawIdle,
    /// A detached raw pthread that frees the block handed to it.
    RawFree,
    /// A detached raw pthread that frees the block handed to it from its last round of
    /// pthread-key destructors.
    FreeAtExit,
    /// Trims, walks the statistics, trims again.
    Trimmer,
    /// Maps, resizes and unmaps large blocks.
    Mapper,
    /// Stops stream, mapper and trimmer threads at random moments for a while.
    Preempter,
}

impl ThreadKind {
    /// Every kind, in the order of their encoding.
    pub const ALL: [ThreadKind; 8] = [
        ThreadKind::Idle,
        ThreadKind::Free,
        ThreadKind::RawIdle,
        ThreadKind::RawFree,
        ThreadKind::FreeAtExit,
        ThreadKind::Trimmer,
        ThreadKind::Mapper,
        ThreadKind::Preempter,
    ];

    /// The kind a slot byte selects: its quotient by the slot count.
    pub(crate) fn decode(slot_byte: u8, slots: usize) -> ThreadKind {
        Self::ALL[slot_byte as usize / slots % Self::ALL.len()]
    }

    /// The slot byte that decodes to `slot` and this kind.
    pub(crate) fn encode(self, slot: u8, slots: usize) -> u8 {
        let index = Self::ALL.iter().position(|&k| k == self).unwrap_or(0);
        u8::try_from(index * slots + slot as usize).expect("a slot byte for every kind")
    }

    /// Whether the thread takes the slot's block to free it.
    pub(crate) fn frees(self) -> bool {
        matches!(
            self,
            ThreadKind::Free | ThreadKind::RawFree | ThreadKind::FreeAtExit
        )
    }

    /// The block of `slot` that a thread of this kind takes to free, leaving the slot
    /// empty; `None` (and the slot as it was) for the kinds that free nothing.
    pub(crate) fn take_block<B>(self, slot: &mut Option<B>) -> Option<B> {
        if self.frees() {
            slot.take()
        } else {
            None
        }
    }
}

/// The allocation functions a target drives, as its helper threads call them. Each
/// panics (with `ebbmalloc fuzz:` and `what`) on a result the target's model refuses.
pub(crate) trait Heap: Copy + Send + Sync {
    /// A block of `size` bytes aligned to `align` (a power of two).
    fn allocate(self, size: usize, align: usize, what: &str) -> *mut u8;

    /// Resizes a block of `size` bytes aligned to `align` to `new_size`; the result is
    /// aligned to [`Heap::realloc_align`].
    ///
    /// # Safety
    /// `ptr` is a live block of this heap of `size` bytes aligned to `align`.
    unsafe fn reallocate(
        self,
        ptr: *mut u8,
        size: usize,
        align: usize,
        new_size: usize,
        what: &str,
    ) -> *mut u8;

    /// The alignment a reallocated block keeps.
    fn realloc_align(self, align: usize) -> usize;

    /// Frees a block.
    ///
    /// # Safety
    /// `ptr` is a live block of this heap of `size` bytes aligned to `align`, not used
    /// again.
    unsafe fn deallocate(self, ptr: *mut u8, size: usize, align: usize, what: &str);

    /// A full trimming pass.
    fn trim(self, what: &str);

    /// A statistics walk.
    fn stats(self, what: &str);
}

/// A block handed to a helper thread, already checked and out of the model.
pub(crate) struct Handed {
    pub(crate) ptr: *mut u8,
    pub(crate) size: usize,
    pub(crate) align: usize,
}

// SAFETY: a handed block has one holder, the helper it was handed to.
unsafe impl Send for Handed {}

impl Handed {
    fn free(self, heap: impl Heap, what: &str) {
        // SAFETY: a live block of `heap` with this size and alignment, handed over to be
        // freed once.
        unsafe { heap.deallocate(self.ptr, self.size, self.align, what) };
    }
}

/// Starts helper threads for one op stream: scoped ones in `scope`, joined by [`join`]
/// (see the module docs for why never detached), raw ones detached.
///
/// [`join`]: Helpers::join
pub(crate) struct Helpers<'s, 'e, H: Heap> {
    scope: &'s Scope<'s, 'e>,
    shadow: &'e Shadow,
    heap: H,
    /// The scoped helpers started and not joined yet.
    started: Vec<ScopedJoinHandle<'s, ()>>,
}

impl<'s, 'e, H: Heap + 'static> Helpers<'s, 'e, H> {
    pub(crate) fn new(scope: &'s Scope<'s, 'e>, shadow: &'e Shadow, heap: H) -> Self {
        Helpers {
            scope,
            shadow,
            heap,
            started: Vec::new(),
        }
    }

    /// Starts a helper of `kind`; `block` is the block a freeing kind frees (a kind that
    /// does not free gets none), `seed` varies what a mapper does.
    pub(crate) fn spawn(&mut self, kind: ThreadKind, block: Option<Handed>, seed: u64) {
        let heap = self.heap;
        let started = match kind {
            ThreadKind::Idle => self.scope.spawn(|| {}),
            ThreadKind::Free => self.scope.spawn(move || {
                if let Some(block) = block {
                    block.free(heap, "a helper thread's only free");
                }
            }),
            ThreadKind::RawIdle => return spawn_detached(None, false),
            ThreadKind::RawFree | ThreadKind::FreeAtExit => {
                let free = block.map(|block| {
                    Box::new(move || block.free(heap, "a raw thread's only free"))
                        as Box<dyn FnOnce() + Send>
                });
                return spawn_detached(free, kind == ThreadKind::FreeAtExit);
            }
            ThreadKind::Trimmer => self.scope.spawn(move || {
                let _busy = busy();
                heap.trim("a trimmer thread");
                heap.stats("a trimmer thread");
                heap.trim("a trimmer thread");
            }),
            ThreadKind::Mapper => {
                let shadow = self.shadow;
                self.scope.spawn(move || Mapper { heap, shadow }.run(seed))
            }
            ThreadKind::Preempter => self.scope.spawn(move || preempt(seed)),
        };
        self.started.push(started);
    }

    /// Waits for the scoped helpers started so far; a helper's panic goes on in the caller.
    pub(crate) fn join(&mut self) {
        for helper in self.started.drain(..) {
            if let Err(panic) = helper.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// The threads of every run in progress that preempters stop: streams, mappers, trimmers.
static BUSY: Mutex<Vec<libc::pthread_t>> = Mutex::new(Vec::new());

/// The signal that stops a busy thread (ignored by default, used by nobody else here).
const STOP_SIGNAL: c_int = libc::SIGURG;
/// How long a stopped thread sleeps.
const STOP: Duration = Duration::from_micros(50);
/// Stops one preempter makes.
const STOPS: usize = 200;

/// A busy thread that preempters may stop, until this is dropped.
pub(crate) struct Busy(libc::pthread_t);

/// Registers the calling thread as one that preempters may stop.
pub(crate) fn busy() -> Busy {
    static HANDLER: OnceLock<()> = OnceLock::new();
    HANDLER.get_or_init(|| {
        // SAFETY: installs `hold`, which is async-signal-safe, for a signal nobody else
        // handles; `SA_RESTART` resumes the system calls it interrupts where it can.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = hold as extern "C" fn(c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(STOP_SIGNAL, &action, std::ptr::null_mut());
        }
    });
    // SAFETY: a plain query.
    let me = unsafe { libc::pthread_self() };
    lock_busy().push(me);
    Busy(me)
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut busy = lock_busy();
        if let Some(at) = busy.iter().position(|&t| t == self.0) {
            busy.swap_remove(at);
        }
    }
}

fn lock_busy() -> std::sync::MutexGuard<'static, Vec<libc::pthread_t>> {
    BUSY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The stop signal's handler: sleeps, and leaves `errno` as it found it.
extern "C" fn hold(_signal: c_int) {
    let time = libc::timespec {
        tv_sec: 0,
        tv_nsec: STOP.as_nanos() as libc::c_long,
    };
    // SAFETY: `__errno_location` is this thread's errno; nanosleep is async-signal-safe.
    unsafe {
        let errno = libc::__errno_location();
        let saved = *errno;
        libc::nanosleep(&time, std::ptr::null_mut());
        *errno = saved;
    }
}

/// A preempter's work: [`STOPS`] times, a short pause, then a random busy thread stopped.
fn preempt(seed: u64) {
    let mut rng = Rng::new(seed);
    for _ in 0..STOPS {
        std::thread::sleep(Duration::from_micros(10 + rng.below(40) as u64));
        let busy = lock_busy();
        if busy.is_empty() {
            return;
        }
        // SAFETY: a registered thread is alive: it unregisters, under the lock we hold,
        // before it ends.
        unsafe { libc::pthread_kill(busy[rng.below(busy.len())], STOP_SIGNAL) };
    }
}

/// Sizes a mapper's blocks take: large ones that `realloc` grows by factors (mostly
/// moving the mapping), and some past the 16 MiB limit of the mapping cache.
const MAPPER_SIZES: [usize; 6] = [
    300 << 10,
    1 << 20,
    5 << 20,
    (12 << 20) + 4096,
    17 << 20,
    24 << 20,
];
/// Alignments a mapper's blocks ask for.
const MAPPER_ALIGNMENTS: [usize; 6] = [16, 4096, 64 << 10, 256 << 10, 1 << 20, 2 << 20];
/// Steps of a mapper: each maps, resizes or unmaps one of its two blocks.
const MAPPER_STEPS: usize = 64;
/// Bytes of pattern at each end of a mapper's block (its pages in between stay untouched,
/// so that mapping 24 MiB costs little).
const END_BYTES: usize = 4096;

/// A block of a mapper thread.
struct Mapped {
    ptr: *mut u8,
    size: usize,
    align: usize,
    tag: u32,
}

/// A helper that keeps two large blocks, resizes and replaces them.
struct Mapper<'e, H: Heap> {
    heap: H,
    shadow: &'e Shadow,
}

impl<H: Heap> Mapper<'_, H> {
    fn run(&self, seed: u64) {
        let _busy = busy();
        let mut rng = Rng::new(seed);
        let mut live: [Option<Mapped>; 2] = [None, None];
        for step in 0..MAPPER_STEPS {
            watchdog::progress();
            let held = &mut live[step % 2];
            *held = match held.take() {
                None => self.map(&mut rng),
                Some(block) if rng.below(4) > 0 => self.resize(block, &mut rng),
                Some(block) => {
                    self.unmap(block);
                    None
                }
            };
        }
        for block in live.into_iter().flatten() {
            self.unmap(block);
        }
    }

    fn map(&self, rng: &mut Rng) -> Option<Mapped> {
        let size = pick(rng, &MAPPER_SIZES);
        let align = pick(rng, &MAPPER_ALIGNMENTS);
        if !self.shadow.reserve(size) {
            return None;
        }
        let ptr = self.heap.allocate(size, align, "a mapper's block");
        let block = Mapped {
            ptr,
            size,
            align,
            tag: self.shadow.new_tag(),
        };
        self.adopt(&block, "mapping");
        Some(block)
    }

    fn resize(&self, block: Mapped, rng: &mut Rng) -> Option<Mapped> {
        let new_size = pick(rng, &MAPPER_SIZES);
        if new_size > block.size && !self.shadow.reserve(new_size - block.size) {
            return Some(block);
        }
        self.check(&block, block.size, block.size, "before a resize");
        self.shadow.remove(block.ptr as usize);
        // SAFETY: a live block of ours with this size and alignment.
        let ptr = unsafe {
            self.heap.reallocate(
                block.ptr,
                block.size,
                block.align,
                new_size,
                "a mapper's resize",
            )
        };
        if new_size < block.size {
            self.shadow.release(block.size - new_size);
        }
        let moved = Mapped {
            ptr,
            size: new_size,
            align: self.heap.realloc_align(block.align),
            tag: block.tag,
        };
        self.check(&moved, block.size, new_size, "after a resize");
        self.adopt(&moved, "resizing");
        Some(moved)
    }

    fn unmap(&self, block: Mapped) {
        self.check(&block, block.size, block.size, "before freeing");
        self.shadow.remove(block.ptr as usize);
        // SAFETY: a live block of ours with this size and alignment, freed once.
        unsafe {
            self.heap
                .deallocate(block.ptr, block.size, block.align, "a mapper's free")
        };
        self.shadow.release(block.size);
    }

    /// Checks a new or moved block's place and records it; writes the pattern into its
    /// ends.
    fn adopt(&self, block: &Mapped, what: &str) {
        if block.ptr as usize % block.align != 0 {
            self.fail(block, format_args!("{what}: misaligned"));
        }
        if let Err(overlap) = self
            .shadow
            .insert(block.ptr as usize, block.size, block.tag)
        {
            self.fail(block, format_args!("{what}: {overlap}"));
        }
        for (from, to) in ends(block.size) {
            // SAFETY: bytes `from..to` lie in the live block, which only we use.
            let bytes = unsafe { std::slice::from_raw_parts_mut(block.ptr.add(from), to - from) };
            pattern::fill(bytes, block.tag, from);
        }
    }

    /// Checks that the allocator still knows the block, and the pattern that the ends of
    /// a block of `patterned` bytes had, within the block's first `len` bytes.
    fn check(&self, block: &Mapped, patterned: usize, len: usize, what: &str) {
        // SAFETY: a live block of ours.
        let usable = unsafe { owned_bytes(block.ptr) };
        if usable < block.size {
            self.fail(block, format_args!("{what}: {usable} usable bytes"));
        }
        for (from, to) in ends(patterned) {
            let to = to.min(len);
            if from >= to {
                continue;
            }
            // SAFETY: bytes `from..to` lie in the live block, which only we use.
            let bytes = unsafe { std::slice::from_raw_parts(block.ptr.add(from), to - from) };
            if let Some((at, expected)) = pattern::first_mismatch(bytes, block.tag, from) {
                let found = bytes[at];
                self.fail(
                    block,
                    format_args!(
                        "{what}: {found:#04x} at offset {}, expected {expected:#04x}",
                        from + at
                    ),
                );
            }
        }
    }

    #[cold]
    fn fail(&self, block: &Mapped, message: std::fmt::Arguments<'_>) -> ! {
        panic!(
            "ebbmalloc fuzz: mapper thread, block {:p} (size {}, align {}, tag {}): {message}",
            block.ptr, block.size, block.align, block.tag
        )
    }
}

/// The byte ranges of a mapper's block of `size` bytes that hold the pattern.
fn ends(size: usize) -> [(usize, usize); 2] {
    let head = size.min(END_BYTES);
    [(0, head), (size.saturating_sub(END_BYTES).max(head), size)]
}

fn pick(rng: &mut Rng, items: &[usize]) -> usize {
    items[rng.below(items.len())]
}

/// What a detached raw thread runs: `free` in its body, or in its last round of
/// pthread-key destructors.
struct RawJob {
    free: Option<Box<dyn FnOnce() + Send>>,
    at_exit: bool,
}

/// Starts a raw pthread, detached from its creation (as a C program does: no Rust thread
/// handle, no join; not `pthread_detach` afterwards, see the module docs).
fn spawn_detached(free: Option<Box<dyn FnOnce() + Send>>, at_exit: bool) {
    let job = Box::into_raw(Box::new(RawJob { free, at_exit }));
    let mut thread: libc::pthread_t = 0;
    // SAFETY: `raw_main` takes the job back exactly once; the attributes are initialised
    // before use and destroyed after.
    let created = unsafe {
        let mut attributes: libc::pthread_attr_t = std::mem::zeroed();
        libc::pthread_attr_init(&mut attributes);
        libc::pthread_attr_setdetachstate(&mut attributes, libc::PTHREAD_CREATE_DETACHED);
        let created = libc::pthread_create(&mut thread, &attributes, raw_main, job.cast());
        libc::pthread_attr_destroy(&mut attributes);
        created
    };
    if created != 0 {
        // SAFETY: the thread was not created, so the job is still ours.
        drop(unsafe { Box::from_raw(job) });
        panic!("ebbmalloc fuzz: pthread_create failed with {created}");
    }
}

extern "C" fn raw_main(job: *mut c_void) -> *mut c_void {
    // SAFETY: `spawn_detached` handed us the job.
    let job = unsafe { Box::from_raw(job.cast::<RawJob>()) };
    match job.free {
        Some(free) if job.at_exit => {
            let rounds = destructor_rounds();
            let last = Box::into_raw(Box::new(AtExit {
                rounds_left: rounds - 1,
                free,
            }));
            // SAFETY: our key; the destructor takes the value back.
            unsafe { libc::pthread_setspecific(at_exit_key(), last.cast()) };
        }
        Some(free) => free(),
        None => {}
    }
    std::ptr::null_mut()
}

/// The work of a `FreeAtExit` thread's key and the destructor rounds still to skip.
struct AtExit {
    rounds_left: usize,
    free: Box<dyn FnOnce() + Send>,
}

/// The rounds of pthread-key destructors glibc makes at most.
fn destructor_rounds() -> usize {
    // SAFETY: a plain query.
    let rounds = unsafe { libc::sysconf(libc::_SC_THREAD_DESTRUCTOR_ITERATIONS) };
    usize::try_from(rounds).unwrap_or(4).max(1)
}

/// Our pthread key, created after the allocator's own (its destructor, with a lower key,
/// then runs before ours in each round).
fn at_exit_key() -> libc::pthread_key_t {
    static KEY: OnceLock<libc::pthread_key_t> = OnceLock::new();
    *KEY.get_or_init(|| {
        // The allocator sets itself up, and creates its key, on its first slow path.
        // SAFETY: a block freed at once.
        unsafe { ebbmalloc::c_abi::free(ebbmalloc::c_abi::malloc(64)) };
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `at_exit_round` lives for the whole process.
        let created = unsafe { libc::pthread_key_create(&mut key, Some(at_exit_round)) };
        assert_eq!(created, 0, "ebbmalloc fuzz: pthread_key_create failed");
        key
    })
}

/// Our key's destructor: re-arms the key until the last round, then frees.
extern "C" fn at_exit_round(value: *mut c_void) {
    let at_exit = value.cast::<AtExit>();
    // SAFETY: the value `raw_main` stored, ours until we free it.
    unsafe {
        if (*at_exit).rounds_left > 0 {
            (*at_exit).rounds_left -= 1;
            libc::pthread_setspecific(at_exit_key(), value);
            return;
        }
        (Box::from_raw(at_exit).free)();
    }
}
