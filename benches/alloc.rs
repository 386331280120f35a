//! Criterion micro-benchmarks: ebbmalloc against glibc (`System`), jemalloc and mimalloc.
//!
//! Every allocator is called directly through `GlobalAlloc`, from functions generic over
//! `A: GlobalAlloc` and monomorphised per allocator, so there is no dynamic dispatch; each
//! call goes through one non-inlined shim, the call boundary a `#[global_allocator]` has
//! (see `shim_alloc`). The process's own `#[global_allocator]` stays the default (glibc):
//! criterion, the channels and the threads allocate through it, never through the
//! allocator being measured.
//!
//! Groups (see benches/README.md):
//! - `pairs/<size>/<allocator>`: one alloc + write one byte + dealloc per iteration;
//! - `window/<allocator>`: 1,000 live objects, each step frees the oldest and allocates a
//!   new one of a random size from 8 B to 4 KiB;
//! - `cross_thread/<64|mixed>/<allocator>`: a producer thread allocates, a consumer thread
//!   frees; time per block.
//!
//! `cargo bench --bench alloc` runs everything; `-- --quick` is a smoke run; a regex after
//! `--` filters, e.g. `cargo bench --bench alloc -- pairs/64/`.

use std::alloc::{handle_alloc_error, GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::mpsc::{
    channel, sync_channel, Receiver, Sender, SyncSender, TryRecvError, TrySendError,
};
use std::sync::OnceLock;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::Throughput;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};

use ebbmalloc::EbbMalloc;
use mimalloc::MiMalloc;
use tikv_jemallocator::Jemalloc;

static EBBMALLOC: EbbMalloc = EbbMalloc;
static SYSTEM: System = System;
static JEMALLOC: Jemalloc = Jemalloc;
static MIMALLOC: MiMalloc = MiMalloc;

/// Calls `$bench(group, name, &ALLOCATOR, args...)` once per allocator, in the same order
/// everywhere so that the four results for one case are printed together.
macro_rules! each_allocator {
    ($bench:ident, $group:expr $(, $arg:expr)* $(,)?) => {{
        $bench($group, "ebbmalloc", &EBBMALLOC $(, $arg)*);
        $bench($group, "system", &SYSTEM $(, $arg)*);
        $bench($group, "jemalloc", &JEMALLOC $(, $arg)*);
        $bench($group, "mimalloc", &MIMALLOC $(, $arg)*);
    }};
}

/// Alignment of every request: what a Rust `Box<[u64; N]>` or `Vec<u64>` asks for, and no
/// more than `malloc` guarantees, so `System` takes its plain `malloc` path.
const ALIGN: usize = 8;

/// Layout of `size` bytes at `ALIGN`. The alignment goes through `black_box` so that the
/// compiler cannot propagate the constant into the call shims below and drop the allocator's
/// alignment checks: a real `__rust_alloc` receives the alignment at run time.
#[inline(always)]
fn layout(size: usize) -> Layout {
    let align = black_box(ALIGN);
    debug_assert!(align.is_power_of_two() && size > 0 && size <= 1 << 20);
    // SAFETY: `ALIGN` is a non-zero power of two and every size used here is at most 1 MiB,
    // far below `isize::MAX` once rounded up to `ALIGN`.
    unsafe { Layout::from_size_align_unchecked(size, align) }
}

// A program with `#[global_allocator]` reaches the allocator through a call to
// `__rust_alloc` / `__rust_dealloc`, a function into which `GlobalAlloc::alloc` is inlined.
// Called directly, an allocator whose fast path is `#[inline]` Rust (ebbmalloc) would be
// inlined into the benchmark loop while the C allocators still pay a call, which favours
// ebbmalloc unfairly. These two shims restore that call boundary for every allocator: one
// direct (not dynamic) call per operation, with the allocator's code inlined behind it,
// exactly the shape of `__rust_alloc` without LTO.

/// `a.alloc(layout)` behind one call, like `__rust_alloc`.
///
/// # Safety
/// As `GlobalAlloc::alloc`.
#[inline(never)]
unsafe fn shim_alloc<A: GlobalAlloc>(a: &A, layout: Layout) -> *mut u8 {
    // SAFETY: forwarded from the caller.
    unsafe { a.alloc(layout) }
}

/// `a.dealloc(ptr, layout)` behind one call, like `__rust_dealloc`.
///
/// # Safety
/// As `GlobalAlloc::dealloc`.
#[inline(never)]
unsafe fn shim_dealloc<A: GlobalAlloc>(a: &A, ptr: *mut u8, layout: Layout) {
    // SAFETY: forwarded from the caller.
    unsafe { a.dealloc(ptr, layout) }
}

/// Allocates `layout` from `a`, aborting through `handle_alloc_error` on failure, and
/// writes one byte so the block is really used.
///
/// # Safety
/// `layout` has a non-zero size.
#[inline(always)]
unsafe fn alloc_touch<A: GlobalAlloc>(a: &A, layout: Layout, byte: u8) -> *mut u8 {
    // SAFETY: the caller guarantees a non-zero size.
    let p = unsafe { shim_alloc(a, layout) };
    if p.is_null() {
        handle_alloc_error(layout);
    }
    // SAFETY: `p` is a fresh block of at least one byte.
    unsafe { p.write(byte) };
    p
}

// ---------------------------------------------------------------------------------------
// Deterministic sizes
// ---------------------------------------------------------------------------------------

/// xorshift64 (Marsaglia): tiny, fixed-seed, the same sequence for every allocator.
struct XorShift64(u64);

impl XorShift64 {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Length of the precomputed size tables (a power of two, so indexing is a mask).
const SIZE_TABLE_LEN: usize = 1 << 14;

/// `SIZE_TABLE_LEN` sizes from `2^min_shift` to `2^max_shift` bytes, log-uniform-ish: a
/// power of two `2^s` is picked uniformly for `s` in `min_shift..max_shift`, then a size
/// uniformly in `[2^s, 2^(s+1)]`.
fn log_uniform_sizes(seed: u64, min_shift: u32, max_shift: u32) -> Vec<u32> {
    let mut rng = XorShift64(seed);
    (0..SIZE_TABLE_LEN)
        .map(|_| {
            let r = rng.next();
            let shift = min_shift + (r % u64::from(max_shift - min_shift)) as u32;
            let low = 1u64 << shift;
            (low + (r >> 32) % (low + 1)) as u32
        })
        .collect()
}

/// Sizes for the `window` group: 8 B ..= 4 KiB.
fn window_sizes() -> &'static [u32] {
    static SIZES: OnceLock<Vec<u32>> = OnceLock::new();
    SIZES.get_or_init(|| log_uniform_sizes(0x9E37_79B9_7F4A_7C15, 3, 12))
}

/// Sizes for `cross_thread/mixed`: 16 B ..= 1 KiB.
fn mixed_sizes() -> &'static [u32] {
    static SIZES: OnceLock<Vec<u32>> = OnceLock::new();
    SIZES.get_or_init(|| log_uniform_sizes(0xD1B5_4A32_D192_ED03, 4, 10))
}

/// Sizes for `cross_thread/64`: a table of one entry.
static FIXED_64: [u32; 1] = [64];

// ---------------------------------------------------------------------------------------
// pairs
// ---------------------------------------------------------------------------------------

const PAIR_SIZES: [usize; 9] = [
    16,
    64,
    256,
    1 << 10,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
];

/// One iteration is one alloc + write + dealloc of `size` bytes. Criterion times the whole
/// loop of `iters` iterations with one pair of clock reads and divides, so the reported
/// time is per pair with no per-pair timer overhead.
fn bench_pairs<A: GlobalAlloc>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    a: &'static A,
    size: usize,
) {
    let layout = layout(size);
    group.bench_function(BenchmarkId::new(size.to_string(), name), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                // SAFETY: `layout` has a non-zero size; the block is freed once, with the
                // layout it was allocated with.
                unsafe {
                    let p = alloc_touch(a, layout, i as u8);
                    // `black_box` hides that this is the pointer just returned, so the
                    // compiler cannot pair and remove the calls (it may for `malloc`).
                    shim_dealloc(a, black_box(p), layout);
                }
            }
            start.elapsed()
        });
    });
}

fn pairs(c: &mut Criterion) {
    let mut group = c.benchmark_group("pairs");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500));
    for size in PAIR_SIZES {
        each_allocator!(bench_pairs, &mut group, size);
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------
// window
// ---------------------------------------------------------------------------------------

/// Live objects in the sliding window.
const WINDOW_SLOTS: usize = 1000;

/// A ring of `WINDOW_SLOTS` live blocks and their sizes.
struct Window<A: GlobalAlloc + 'static> {
    a: &'static A,
    sizes: &'static [u32],
    ring: Vec<(*mut u8, u32)>,
    /// Oldest slot, the next to be replaced.
    slot: usize,
    /// Index of the next size in `sizes`.
    next: usize,
}

impl<A: GlobalAlloc> Window<A> {
    /// An empty window; `ring` is allocated here, once, by the global allocator.
    fn new(a: &'static A, sizes: &'static [u32]) -> Self {
        assert!(sizes.len().is_power_of_two());
        Window {
            a,
            sizes,
            ring: Vec::with_capacity(WINDOW_SLOTS),
            slot: 0,
            next: 0,
        }
    }

    /// Fills the ring with the first `WINDOW_SLOTS` sizes of the sequence.
    fn fill(&mut self) {
        debug_assert!(self.ring.is_empty());
        self.slot = 0;
        self.next = 0;
        while self.ring.len() < WINDOW_SLOTS {
            let size = self.next_size();
            // SAFETY: every size in the table is at least 8.
            let p = unsafe { alloc_touch(self.a, layout(size as usize), size as u8) };
            self.ring.push((p, size));
        }
    }

    #[inline(always)]
    fn next_size(&mut self) -> u32 {
        let size = self.sizes[self.next & (self.sizes.len() - 1)];
        self.next = self.next.wrapping_add(1);
        size
    }

    /// `steps` times: free the oldest block, allocate one of the next size in its slot.
    #[inline(always)]
    fn run(&mut self, steps: u64) {
        for _ in 0..steps {
            let size = self.next_size();
            let (old, old_size) = self.ring[self.slot];
            // SAFETY: `old` is live, allocated from `self.a` with `layout(old_size)`, and is
            // replaced in the ring below, so it is freed once; sizes are at least 8.
            let p = unsafe {
                shim_dealloc(self.a, old, layout(old_size as usize));
                alloc_touch(self.a, layout(size as usize), size as u8)
            };
            self.ring[self.slot] = (black_box(p), size);
            self.slot += 1;
            if self.slot == WINDOW_SLOTS {
                self.slot = 0;
            }
        }
    }

    /// Frees every live block.
    fn drain(&mut self) {
        for (p, size) in self.ring.drain(..) {
            // SAFETY: `p` is live, allocated from `self.a` with `layout(size)`; the ring no
            // longer holds it.
            unsafe { shim_dealloc(self.a, p, layout(size as usize)) };
        }
    }
}

/// One iteration is one step (free the oldest block + allocate a new one). Each sample
/// starts from the same state for every allocator: the ring is filled with the first 1,000
/// sizes and turned over once (untimed), then `iters` steps are timed, then the ring is
/// freed (untimed). Every allocator therefore sees exactly the same sequence of requests.
fn bench_window<A: GlobalAlloc>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    a: &'static A,
) {
    let mut window = Window::new(a, window_sizes());
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            window.fill();
            window.run(WINDOW_SLOTS as u64);
            let start = Instant::now();
            window.run(iters);
            let elapsed = start.elapsed();
            window.drain();
            elapsed
        });
    });
}

fn window(c: &mut Criterion) {
    let mut group = c.benchmark_group("window");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    each_allocator!(bench_window, &mut group);
    group.finish();
}

// ---------------------------------------------------------------------------------------
// cross_thread
// ---------------------------------------------------------------------------------------

/// Blocks per batch sent from the producer to the consumer.
const BATCH: usize = 256;
/// Capacity of the producer -> consumer channel, in batches.
const CHANNEL_BATCHES: usize = 8;

/// Block addresses, moved by value through the channel: sending one allocates nothing.
struct Batch {
    len: usize,
    ptrs: [usize; BATCH],
}

/// The CPUs this process may run on (its affinity mask), lowest first.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is plain data for which all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable `cpu_set_t` of the size passed; 0 is this thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below `CPU_SETSIZE`, the size of the set.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pins the calling thread to `cpu` (best effort: a failure leaves it unpinned).
fn pin_current_thread(cpu: usize) {
    // SAFETY: `cpu_set_t` is plain data for which all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` comes from `allowed_cpus`, so it is below `CPU_SETSIZE`; `set` is a
    // valid `cpu_set_t` of the size passed; 0 is the calling thread.
    unsafe {
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
    }
}

/// A producer and a consumer thread that live as long as one benchmark (one allocator,
/// one size mix), and a main thread that starts a run of `n` blocks and waits for its end.
///
/// Why persistent threads rather than spawning two per sample: spawning costs tens of
/// microseconds and, worse for an allocator benchmark, every new thread starts with empty
/// thread caches and tears them down at exit, so each sample would mostly measure cache
/// set-up and flush. With persistent threads each sample measures the steady state of the
/// cross-thread path (the consumer's caches overflow to the shared level, the producer's
/// refill from it). The remaining fixed cost per sample (two wake-ups through channels) is
/// the same for every allocator and is removed by criterion's slope estimate, which
/// regresses time on the iteration count.
///
/// Inside a run the workers spin on a full or empty channel instead of parking (see
/// `send_batch`); between runs they wait parked, so they leave the CPUs to criterion.
///
/// The producer and the consumer are pinned to the first two CPUs the process may use
/// (with fewer than two, they are not pinned and do not spin).
/// Unpinned, the scheduler's wake-affine placement often puts both on one CPU for seconds
/// at a time; samples then fall into two clusters about 10x apart, and the fast one does
/// not measure cross-core frees at all.
struct CrossThread {
    /// Sends "produce this many blocks"; dropping it shuts both threads down.
    go: Option<Sender<u64>>,
    /// Receives one message when the consumer has freed every block of a run.
    done: Receiver<()>,
    threads: Vec<JoinHandle<()>>,
}

impl CrossThread {
    /// `sizes`: block `k` of a run has size `sizes[k % sizes.len()]`; both threads count
    /// blocks in the same (FIFO) order, so no size travels with the pointers.
    fn start<A: GlobalAlloc + Sync>(a: &'static A, sizes: &'static [u32]) -> Self {
        assert!(sizes.len().is_power_of_two());
        let (go_tx, go_rx) = channel::<u64>();
        let (done_tx, done_rx) = channel::<()>();
        let (batch_tx, batch_rx) = sync_channel::<Option<Batch>>(CHANNEL_BATCHES);
        let cpus = allowed_cpus();
        let (producer_cpu, consumer_cpu) = match cpus[..] {
            [first, second, ..] => (Some(first), Some(second)),
            _ => (None, None),
        };
        // Spin inside a run only when each worker has a CPU of its own.
        let spin = producer_cpu.is_some();
        let producer = thread::Builder::new()
            .name("producer".into())
            .spawn(move || {
                if let Some(cpu) = producer_cpu {
                    pin_current_thread(cpu);
                }
                produce(a, sizes, &go_rx, &batch_tx, spin);
            })
            .expect("spawn producer");
        let consumer = thread::Builder::new()
            .name("consumer".into())
            .spawn(move || {
                if let Some(cpu) = consumer_cpu {
                    pin_current_thread(cpu);
                }
                consume(a, sizes, &batch_rx, &done_tx, spin);
            })
            .expect("spawn consumer");
        CrossThread {
            go: Some(go_tx),
            done: done_rx,
            threads: vec![producer, consumer],
        }
    }

    /// Moves `n` blocks from the producer to the consumer; returns the wall time.
    fn run(&self, n: u64) -> Duration {
        let start = Instant::now();
        self.go.as_ref().unwrap().send(n).expect("producer alive");
        self.done.recv().expect("consumer alive");
        start.elapsed()
    }
}

impl Drop for CrossThread {
    fn drop(&mut self) {
        self.go = None;
        for t in self.threads.drain(..) {
            t.join().expect("cross-thread worker panicked");
        }
    }
}

/// Sends `message`, spinning while the channel is full. Inside a run neither worker parks
/// (see `CrossThread`): a futex wake-up costs microseconds, more in a VM, and whether the
/// threads park on every batch or never depends on which side happens to be faster, so
/// blocking sends and receives made samples fall into clusters several times apart.
///
/// With `spin` false (fewer than two CPUs, where a spinning thread would only keep the
/// other one from running), it is a plain blocking `send`.
fn send_batch<T>(batches: &SyncSender<T>, mut message: T, spin: bool) {
    if !spin {
        return batches
            .send(message)
            .expect("cross-thread consumer is gone");
    }
    loop {
        match batches.try_send(message) {
            Ok(()) => return,
            Err(TrySendError::Full(back)) => {
                message = back;
                std::hint::spin_loop();
            }
            Err(TrySendError::Disconnected(_)) => panic!("cross-thread consumer is gone"),
        }
    }
}

/// For each run request: allocate `n` blocks, send them in batches of `BATCH`, then `None`.
/// Waits for a run request blocked (parked); sends with `send_batch`.
fn produce<A: GlobalAlloc>(
    a: &A,
    sizes: &[u32],
    go: &Receiver<u64>,
    batches: &SyncSender<Option<Batch>>,
    spin: bool,
) {
    let mask = sizes.len() - 1;
    while let Ok(n) = go.recv() {
        let mut batch = Batch {
            len: 0,
            ptrs: [0; BATCH],
        };
        for k in 0..n as usize {
            let size = sizes[k & mask] as usize;
            // SAFETY: every size in the tables is at least 16.
            let p = unsafe { alloc_touch(a, layout(size), k as u8) };
            batch.ptrs[batch.len] = p as usize;
            batch.len += 1;
            if batch.len == BATCH {
                send_batch(batches, Some(batch), spin);
                batch = Batch {
                    len: 0,
                    ptrs: [0; BATCH],
                };
            }
        }
        if batch.len > 0 {
            send_batch(batches, Some(batch), spin);
        }
        send_batch(batches, None, spin);
    }
}

/// Frees every block it receives, reading its first byte first (as a real consumer would
/// use the object); on `None`, reports the end of the run. Between runs it waits blocked
/// (parked, so it does not compete with criterion's analysis for a CPU); inside a run,
/// from the first batch to `None`, it polls with `try_recv` and never parks.
fn consume<A: GlobalAlloc>(
    a: &A,
    sizes: &[u32],
    batches: &Receiver<Option<Batch>>,
    done: &Sender<()>,
    spin: bool,
) {
    let mask = sizes.len() - 1;
    let mut k = 0usize;
    let mut in_run = false;
    loop {
        let message = if in_run && spin {
            match batches.try_recv() {
                Ok(message) => message,
                Err(TryRecvError::Empty) => {
                    std::hint::spin_loop();
                    continue;
                }
                Err(TryRecvError::Disconnected) => return,
            }
        } else {
            match batches.recv() {
                Ok(message) => message,
                Err(_) => return,
            }
        };
        match message {
            Some(batch) => {
                in_run = true;
                for &p in &batch.ptrs[..batch.len] {
                    let p = p as *mut u8;
                    let size = sizes[k & mask] as usize;
                    k += 1;
                    // SAFETY: `p` was allocated by the producer from `a` with `layout(size)`
                    // (block `k` of this run, sent once) and is freed here once.
                    unsafe {
                        black_box(p.read());
                        shim_dealloc(a, p, layout(size));
                    }
                }
            }
            None => {
                in_run = false;
                k = 0;
                if done.send(()).is_err() {
                    return;
                }
            }
        }
    }
}

/// One iteration is one block allocated by the producer and freed by the consumer.
fn bench_cross_thread<A: GlobalAlloc + Sync>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    a: &'static A,
    variant: &str,
    sizes: &'static [u32],
) {
    let workers = CrossThread::start(a, sizes);
    group.bench_function(BenchmarkId::new(variant, name), |b| {
        b.iter_custom(|iters| workers.run(iters));
    });
    drop(workers);
}

fn cross_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("cross_thread");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    each_allocator!(bench_cross_thread, &mut group, "64", &FIXED_64[..]);
    each_allocator!(bench_cross_thread, &mut group, "mixed", mixed_sizes());
    group.finish();
}

criterion_group!(benches, pairs, window, cross_thread);
criterion_main!(benches);
