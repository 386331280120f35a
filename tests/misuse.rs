//! Misuse that must end the process with a clear message. Each case runs in a child
//! process: this test binary again, with `EBBMALLOC_MISUSE_CASE` naming the case. The child
//! states on stderr the line it expects ebbmalloc to write (with the exact address), then
//! misuses the allocator; the parent checks that the child died of the expected signal and
//! that the line is there.
//!
//! Every build stops a double free at the second free itself (the default build by the
//! block's double-free mark, the hardened one by its live bits): those cases end in
//! [`misuse_went_unnoticed`]. Other misuse the default build finds when blocks go back to
//! their pools, so those cases end with `ebbmalloc::trim()`, which sends every cached block
//! home; the hardened build (cargo feature `hardened`) stops at the misuse itself. Cases that only a hardened build can
//! catch are compiled only with the feature: `cargo test -p ebbmalloc --features hardened
//! --test misuse`.
//!
//! A plain program (`harness = false`): `misuse [FILTER]` runs the cases whose name contains
//! FILTER.

use ebbmalloc::c_abi;
use std::alloc::{GlobalAlloc, Layout};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: ebbmalloc::EbbMalloc = ebbmalloc::EbbMalloc;

const CASE_VAR: &str = "EBBMALLOC_MISUSE_CASE";
/// The size a case that runs for several sizes uses (see [`case_size`]).
const SIZE_VAR: &str = "EBBMALLOC_MISUSE_SIZE";
const EXPECT_PREFIX: &str = "misuse: expecting ";

/// A block size no other code in the process uses, so that std's own allocations between
/// the steps of a case do not take or bring blocks of its class.
const ODD_SIZE: usize = 2560;

struct Case {
    name: &'static str,
    /// The signal the child must die of.
    signal: i32,
    run: fn(),
    /// The sizes the case runs with, one child each (see [`case_size`]).
    sizes: &'static [usize],
}

/// The sizes of a case that does not vary its size.
const ONE_SIZE: &[usize] = &[ODD_SIZE];

const CASES: &[Case] = &[
    Case {
        name: "double_free_same_thread",
        signal: libc::SIGABRT,
        run: double_free_same_thread,
        sizes: &DOUBLE_FREE_SIZES,
    },
    Case {
        name: "double_free_same_thread_c_abi",
        signal: libc::SIGABRT,
        run: double_free_same_thread_c_abi,
        sizes: &DOUBLE_FREE_SIZES,
    },
    Case {
        name: "double_free_other_thread",
        signal: libc::SIGABRT,
        run: double_free_other_thread,
        sizes: ONE_SIZE,
    },
    Case {
        name: "double_free_other_thread_c_abi",
        signal: libc::SIGABRT,
        run: double_free_other_thread_c_abi,
        sizes: ONE_SIZE,
    },
    Case {
        name: "double_free_after_cache_and_flush",
        signal: libc::SIGABRT,
        run: double_free_after_cache_and_flush,
        // 1: the block went all the way to its pool (`trim`) before the second free.
        sizes: &[1, ODD_SIZE],
    },
    Case {
        name: "double_free_large",
        signal: libc::SIGABRT,
        run: double_free_large,
        sizes: ONE_SIZE,
    },
    Case {
        name: "free_stack_pointer_c_abi",
        signal: libc::SIGABRT,
        run: free_stack_pointer_c_abi,
        sizes: ONE_SIZE,
    },
    Case {
        name: "free_interior_pointer_c_abi",
        signal: libc::SIGABRT,
        run: free_interior_pointer_c_abi,
        sizes: ONE_SIZE,
    },
    Case {
        name: "dealloc_foreign_pointer",
        signal: libc::SIGABRT,
        run: dealloc_foreign_pointer,
        sizes: ONE_SIZE,
    },
    // The default build does not look a large block up before reading its header.
    #[cfg(feature = "hardened")]
    Case {
        name: "dealloc_foreign_pointer_as_large",
        signal: libc::SIGABRT,
        run: dealloc_foreign_pointer_as_large,
        sizes: ONE_SIZE,
    },
    Case {
        name: "dealloc_with_wrong_layout",
        signal: libc::SIGABRT,
        run: dealloc_with_wrong_layout,
        sizes: ONE_SIZE,
    },
    Case {
        name: "dealloc_interior_pointer",
        signal: libc::SIGABRT,
        run: dealloc_interior_pointer,
        sizes: ONE_SIZE,
    },
    // Debug builds stop this misuse before us: Rust's check of pointer alignment, compiled
    // into every dereference, aborts on the mark's read in `free` ("misaligned pointer
    // dereference"), which is also an abort.
    #[cfg(not(debug_assertions))]
    Case {
        name: "dealloc_unaligned_interior_pointer",
        signal: libc::SIGABRT,
        run: dealloc_unaligned_interior_pointer,
        sizes: ONE_SIZE,
    },
    Case {
        name: "realloc_freed_large_c_abi",
        signal: libc::SIGABRT,
        run: realloc_freed_large_c_abi,
        sizes: ONE_SIZE,
    },
    Case {
        name: "realloc_freed_small_c_abi",
        signal: libc::SIGABRT,
        run: realloc_freed_small_c_abi,
        sizes: ONE_SIZE,
    },
    Case {
        name: "free_just_past_an_arena_c_abi",
        signal: libc::SIGABRT,
        run: free_just_past_an_arena_c_abi,
        sizes: ONE_SIZE,
    },
    Case {
        name: "free_misaligned_pointer_c_abi",
        signal: libc::SIGABRT,
        run: free_misaligned_pointer_c_abi,
        sizes: &[1, 8, 24],
    },
    Case {
        name: "free_block_back_in_its_pool_c_abi",
        signal: libc::SIGABRT,
        run: free_block_back_in_its_pool_c_abi,
        sizes: ONE_SIZE,
    },
    Case {
        name: "free_large_mapping_header_c_abi",
        signal: libc::SIGABRT,
        run: free_large_mapping_header_c_abi,
        sizes: &[4 << 10, 256 << 10, 1 << 20],
    },
    Case {
        name: "free_inside_chunk_aligned_large_block_c_abi",
        signal: libc::SIGABRT,
        run: free_inside_chunk_aligned_large_block_c_abi,
        sizes: ONE_SIZE,
    },
    #[cfg(feature = "hardened")]
    Case {
        name: "overflow_into_neighbours_link",
        signal: libc::SIGABRT,
        run: overflow_into_neighbours_link,
        sizes: ONE_SIZE,
    },
    #[cfg(all(feature = "hardened", debug_assertions))]
    Case {
        name: "write_after_free",
        signal: libc::SIGABRT,
        run: write_after_free,
        sizes: ONE_SIZE,
    },
    #[cfg(feature = "hardened")]
    Case {
        name: "large_overflow_hits_guard_page",
        signal: libc::SIGSEGV,
        run: large_overflow_hits_guard_page,
        sizes: ONE_SIZE,
    },
    #[cfg(feature = "hardened")]
    Case {
        name: "large_underflow_hits_guard_page",
        signal: libc::SIGSEGV,
        run: large_underflow_hits_guard_page,
        sizes: ONE_SIZE,
    },
];

/// Says on stderr which line ebbmalloc must write: `ebbmalloc: <message> 0x<address>`.
fn expect(message: &str, address: usize) {
    eprintln!("{EXPECT_PREFIX}ebbmalloc: {message} 0x{address:x}");
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// Default builds find a double free when the block goes back to its pool: send every
/// cached block home. Hardened builds have aborted before this.
fn flush_to_pools() {
    ebbmalloc::trim();
}

/// Ends a case whose misuse should have stopped the process already: the parent sees an
/// exit instead of the expected signal.
fn misuse_went_unnoticed() -> ! {
    eprintln!("misuse: the misuse went unnoticed");
    std::process::exit(3)
}

/// Sizes whose blocks the same-thread cases free twice: the smallest class (1 to 16 bytes
/// share it), small and medium classes, and one no other code uses.
const DOUBLE_FREE_SIZES: [usize; 5] = [1, 16, 64, 1000, ODD_SIZE];

/// `free(p); free(p)` in one thread, for each size, caught at the second free in every
/// build (the default build by the block's double-free mark).
fn double_free_same_thread() {
    let size = case_size();
    let l = layout(size);
    // SAFETY: a valid layout; the second `dealloc` is the misuse under test.
    unsafe {
        let p = GLOBAL.alloc(l);
        expect("double free of", p as usize);
        GLOBAL.dealloc(p, l);
        GLOBAL.dealloc(p, l);
    }
    misuse_went_unnoticed();
}

/// What C's `free` says of a second free of a small block still out of its pool. The
/// default build's `free` finds the block out (it sits in a thread cache or a batch) and
/// the thread cache's double-free mark, shared with Rust's `dealloc`, stops it; the
/// hardened build's out bits mean *live*, so `free`'s own lookup already finds no live
/// block there and names itself.
const C_DOUBLE_FREE: &str = if cfg!(feature = "hardened") {
    "free(): double free of"
} else {
    "double free of"
};

/// The same through the C front, whose `free` carries no size.
fn double_free_same_thread_c_abi() {
    let p = c_abi::malloc(case_size());
    expect(C_DOUBLE_FREE, p as usize);
    // SAFETY: a live block, then the misuse under test.
    unsafe {
        c_abi::free(p);
        c_abi::free(p);
    }
    misuse_went_unnoticed();
}

/// Freed by the main thread, freed again by another.
fn double_free_other_thread() {
    let l = layout(ODD_SIZE);
    // SAFETY: a valid layout.
    let p = unsafe { GLOBAL.alloc(l) } as usize;
    expect("double free of", p);
    // SAFETY: the block is live.
    unsafe { GLOBAL.dealloc(p as *mut u8, l) };
    std::thread::spawn(move || {
        // SAFETY: none: the block was freed by the main thread; this is the misuse.
        unsafe { GLOBAL.dealloc(p as *mut u8, l) };
    })
    .join()
    .unwrap();
    misuse_went_unnoticed();
}

/// The same through the C front.
fn double_free_other_thread_c_abi() {
    let p = c_abi::malloc(ODD_SIZE) as usize;
    expect(C_DOUBLE_FREE, p);
    // SAFETY: the block is live.
    unsafe { c_abi::free(p as *mut _) };
    std::thread::spawn(move || {
        // SAFETY: none: the block was freed by the main thread; this is the misuse.
        unsafe { c_abi::free(p as *mut _) };
    })
    .join()
    .unwrap();
    misuse_went_unnoticed();
}

/// The first free went into a thread cache and from there, in a batch, to the central
/// lists (the freeing thread exited) or all the way to its pool (`trim`); the second free
/// comes later from another thread.
fn double_free_after_cache_and_flush() {
    let l = layout(ODD_SIZE);
    let to_pool = case_size() == 1;
    // SAFETY: a valid layout; `keep` holds the pool alive, so `p`'s page stays a pool's.
    unsafe {
        let keep = GLOBAL.alloc(l);
        let p = GLOBAL.alloc(l) as usize;
        keep.write(1);
        expect("double free of", p);
        // Into the exiting thread's cache, then in a batch to the central lists.
        std::thread::spawn(move || GLOBAL.dealloc(p as *mut u8, l))
            .join()
            .unwrap();
        if to_pool {
            ebbmalloc::trim();
        }
        GLOBAL.dealloc(p as *mut u8, l);
    }
    misuse_went_unnoticed();
}

/// The size a case runs with, from its name's `@SIZE` suffix (see [`main`]).
fn case_size() -> usize {
    std::env::var(SIZE_VAR)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(ODD_SIZE)
}

fn double_free_large() {
    let l = layout(1 << 20);
    // SAFETY: a valid layout; the second `dealloc` is the misuse under test.
    unsafe {
        let p = GLOBAL.alloc(l);
        expect("double free of", p as usize);
        GLOBAL.dealloc(p, l);
        GLOBAL.dealloc(p, l);
    }
}

fn free_stack_pointer_c_abi() {
    let mut on_stack = [0u64; 4];
    let p = on_stack.as_mut_ptr();
    expect("free(): invalid pointer", p as usize);
    // SAFETY: none: not a block of ours; this is the misuse.
    unsafe { c_abi::free(p.cast()) };
    std::hint::black_box(&on_stack);
}

fn free_interior_pointer_c_abi() {
    let p = c_abi::malloc(100) as *mut u8;
    let interior = p.wrapping_add(16);
    expect("free(): invalid pointer", interior as usize);
    // SAFETY: none: inside a block; this is the misuse.
    unsafe { c_abi::free(interior.cast()) };
}

/// A pointer exactly at the end of an arena, where nothing is mapped: the lookup of its
/// chunk once found the arena below (`(ptr - 1)` rounded down) and read the header of the
/// unmapped chunk at `ptr`, faulting instead of aborting with the message.
///
/// Arenas come in reservations that the kernel maps downwards, each abutting the one
/// above, so the arena with nothing after it is the top one of the first reservation, and
/// only when the mapping above that does not end on an arena boundary (it did in one CI
/// run: the search found nothing and the case failed). So when the search finds none, the
/// case makes one: it empties every second arena it filled and trims, which gives empty
/// arenas back to the OS and leaves holes after the arenas kept.
fn free_just_past_an_arena_c_abi() {
    const ARENA_SIZE: usize = 256 << 10;
    let end_of_arena = |block: usize| (block & !(ARENA_SIZE - 1)) + ARENA_SIZE;
    // SAFETY: msync only asks whether the page is mapped (ENOMEM when it is not).
    let unmapped = |at: usize| unsafe { libc::msync(at as *mut _, 4096, libc::MS_ASYNC) } != 0;
    let mut held = Vec::new();
    let mut past_end = None;
    while past_end.is_none() && held.len() < 4096 {
        let p = c_abi::malloc(60_000) as usize;
        assert!(p != 0);
        held.push(p);
        past_end = Some(end_of_arena(p)).filter(|&end| unmapped(end));
    }
    if past_end.is_none() {
        let (kept, emptied): (Vec<usize>, Vec<usize>) =
            held.into_iter().partition(|&p| (p / ARENA_SIZE) % 2 == 0);
        for p in emptied {
            // SAFETY: a live block of ours, not used again.
            unsafe { c_abi::free(p as *mut _) };
        }
        ebbmalloc::trim();
        past_end = kept
            .into_iter()
            .map(end_of_arena)
            .find(|&end| unmapped(end));
    }
    let past_end = past_end.expect("an arena with unmapped space after it");
    expect("free(): invalid pointer", past_end);
    // SAFETY: none: not a block of ours; this is the misuse.
    unsafe { c_abi::free(past_end as *mut _) };
}

/// A pointer `case_size()` bytes into a live block: not a block start, whether or not it
/// falls on the 8-byte granule of the out-block bitmap (C's `free` reads the bit of the
/// granule, so an address between granules must be turned away before).
fn free_misaligned_pointer_c_abi() {
    let p = c_abi::malloc(100) as *mut u8;
    let inside = p.wrapping_add(case_size());
    expect("free(): invalid pointer", inside as usize);
    // SAFETY: none: inside a block; this is the misuse.
    unsafe { c_abi::free(inside.cast()) };
}

/// `free(p)` after `p` went all the way back to its pool (its out bit clear, the pool
/// still live): C's `free` finds no out block there and tells a block start (double free)
/// from anything else.
fn free_block_back_in_its_pool_c_abi() {
    let keep = c_abi::malloc(ODD_SIZE);
    let p = c_abi::malloc(ODD_SIZE);
    assert!(!keep.is_null() && !p.is_null());
    expect("free(): double free of", p as usize);
    // SAFETY: `p` is live; `keep` holds the pool alive; the second free is the misuse.
    unsafe {
        c_abi::free(p);
        ebbmalloc::trim();
        c_abi::free(p);
    }
    misuse_went_unnoticed();
}

/// A pointer the chunk map knows but where no block starts, in the chunk where a large
/// block aligned to `case_size()` starts. Below a chunk's alignment: the chunk's start (the
/// mapping's header page), whose lookup must not read a header in the chunk below, where
/// nothing of ours may be mapped. From a chunk's alignment on (the block at the chunk's
/// start, its header in the chunk below): a page into the block, whose lookup must not take
/// the block's own bytes for a header.
fn free_large_mapping_header_c_abi() {
    let alignment = case_size();
    let p = c_abi::aligned_alloc(alignment, 1 << 20) as usize;
    assert!(p != 0);
    let target = if alignment >= 256 << 10 {
        p + (4 << 10)
    } else {
        p & !((256 << 10) - 1)
    };
    expect("free(): invalid pointer", target);
    // SAFETY: none: not a block start; this is the misuse.
    unsafe { c_abi::free(target as *mut _) };
}

/// A pointer into the second chunk of a large block aligned to 1 MiB (whose first chunk
/// the chunk map records, the block starting at its start).
fn free_inside_chunk_aligned_large_block_c_abi() {
    let p = c_abi::aligned_alloc(1 << 20, 1 << 20) as usize;
    assert!(p != 0);
    let target = p + (256 << 10);
    expect("free(): invalid pointer", target);
    // SAFETY: none: inside a block; this is the misuse.
    unsafe { c_abi::free(target as *mut _) };
}

fn dealloc_foreign_pointer() {
    let mut on_stack = [0u64; 8];
    let p = on_stack.as_mut_ptr() as *mut u8;
    expect("invalid free of", p as usize);
    // SAFETY: none: not a block of ours; this is the misuse (the array outlives the check).
    unsafe { GLOBAL.dealloc(p, layout(64)) };
    flush_to_pools();
    std::hint::black_box(&on_stack);
}

#[cfg(feature = "hardened")]
fn dealloc_foreign_pointer_as_large() {
    let mut on_stack = [0u64; 8];
    let p = on_stack.as_mut_ptr() as *mut u8;
    expect("invalid free of", p as usize);
    // SAFETY: none: not a block of ours; this is the misuse.
    unsafe { GLOBAL.dealloc(p, layout(1 << 20)) };
    std::hint::black_box(&on_stack);
}

/// A Rust `dealloc` of an address inside a live block, at a multiple of the granule: not a
/// block start, so its out bit is clear when it comes back to the pool, which must say
/// "invalid free", not "double free".
fn dealloc_interior_pointer() {
    dealloc_inside_a_block(64);
}

/// As [`dealloc_interior_pointer`], off the granule (release builds, see its case).
#[cfg(not(debug_assertions))]
fn dealloc_unaligned_interior_pointer() {
    dealloc_inside_a_block(3);
}

fn dealloc_inside_a_block(offset: usize) {
    // SAFETY: a valid layout; freeing an address inside the block is the misuse under test.
    unsafe {
        let p = GLOBAL.alloc(layout(ODD_SIZE));
        let inside = p.add(offset);
        expect("invalid free of", inside as usize);
        GLOBAL.dealloc(inside, layout(ODD_SIZE));
    }
    flush_to_pools();
    misuse_went_unnoticed();
}

fn dealloc_with_wrong_layout() {
    // SAFETY: a valid layout; freeing with another layout is the misuse under test.
    unsafe {
        let p = GLOBAL.alloc(layout(64));
        expect("invalid free of", p as usize);
        GLOBAL.dealloc(p, layout(ODD_SIZE));
    }
    flush_to_pools();
}

fn realloc_freed_large_c_abi() {
    let p = c_abi::malloc(1 << 20);
    expect("realloc(): double free of", p as usize);
    // SAFETY: a live block, then the misuse under test.
    unsafe {
        c_abi::free(p);
        c_abi::realloc(p, 2 << 20);
    }
}

fn realloc_freed_small_c_abi() {
    let p = c_abi::malloc(ODD_SIZE);
    expect("realloc(): double free of", p as usize);
    // SAFETY: a live block, then the misuse under test.
    unsafe {
        c_abi::free(p);
        c_abi::realloc(p, 2 * ODD_SIZE);
    }
    misuse_went_unnoticed();
}

/// Two blocks of `size` where the second starts where the first ends, from `blocks` live
/// blocks of that size.
#[cfg(feature = "hardened")]
fn neighbours(blocks: &[usize], size: usize) -> (usize, usize) {
    blocks
        .iter()
        .find_map(|&a| blocks.contains(&(a + size)).then_some((a, a + size)))
        .expect("two adjacent blocks")
}

#[cfg(feature = "hardened")]
fn overflow_into_neighbours_link() {
    const SIZE: usize = 96;
    let l = layout(SIZE);
    let mut blocks = [0usize; 64];
    for b in blocks.iter_mut() {
        // SAFETY: a valid layout.
        *b = unsafe { GLOBAL.alloc(l) } as usize;
    }
    let (a, b) = neighbours(&blocks, SIZE);
    expect("corrupted free list at", b);
    // SAFETY: `b` is live; then `a` is overrun by one word, into `b`'s link: the misuse.
    unsafe {
        GLOBAL.dealloc(b as *mut u8, l);
        std::ptr::write_volatile((a + SIZE) as *mut u64, 0x4141_4141_4141_4141);
        // `b` is the head of the thread cache's list: popping it reads its link.
        GLOBAL.alloc(l);
    }
}

#[cfg(all(feature = "hardened", debug_assertions))]
fn write_after_free() {
    let l = layout(ODD_SIZE);
    // SAFETY: a valid layout; the write to the freed block is the misuse under test.
    unsafe {
        let p = GLOBAL.alloc(l);
        GLOBAL.dealloc(p, l);
        expect("write after free at", p as usize + 100);
        std::ptr::write_volatile(p.add(100), 7);
        // LIFO: the same block comes back, and its fill pattern is checked.
        GLOBAL.alloc(l);
    }
}

#[cfg(feature = "hardened")]
fn large_overflow_hits_guard_page() {
    let p = c_abi::malloc(300 << 10) as *mut u8;
    // SAFETY: a live block; reading one byte past its usable size is the misuse.
    unsafe {
        let usable = c_abi::malloc_usable_size(p.cast());
        std::ptr::read_volatile(p.add(usable));
    }
}

#[cfg(feature = "hardened")]
fn large_underflow_hits_guard_page() {
    let p = c_abi::malloc(300 << 10) as *mut u8;
    // SAFETY: none: the byte before a large block is the misuse.
    unsafe { std::ptr::read_volatile(p.wrapping_sub(1)) };
}

/// Runs `case` in a child; returns why it failed, if it did.
fn check(case: &Case, size: usize) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .env(CASE_VAR, case.name)
        .env(SIZE_VAR, size.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut stderr = child.stderr.take().expect("piped stderr");
    // The child writes a few lines; read them to the end (it closes the pipe by dying).
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("did not end within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = reader.join().unwrap_or_default();
    if status.signal() != Some(case.signal) {
        return Err(format!(
            "ended with {status}, not signal {}\n--- stderr\n{stderr}",
            case.signal
        ));
    }
    // An abort must come with ebbmalloc's line; a fault (guard page) has none.
    let expected = stderr.lines().find_map(|l| l.strip_prefix(EXPECT_PREFIX));
    match expected {
        Some(line) if !stderr.lines().any(|l| l == line) => {
            Err(format!("no line {line:?}\n--- stderr\n{stderr}"))
        }
        None if case.signal == libc::SIGABRT => {
            Err(format!("the case stated no line\n--- stderr\n{stderr}"))
        }
        _ => Ok(()),
    }
}

fn main() -> ExitCode {
    if let Ok(name) = std::env::var(CASE_VAR) {
        // No core files for the aborts we cause.
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit reads our struct.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
        match CASES.iter().find(|c| c.name == name) {
            Some(case) => (case.run)(),
            None => eprintln!("misuse: no case {name:?}"),
        }
        // The misuse went unnoticed: the parent sees a normal exit and fails the case.
        return ExitCode::SUCCESS;
    }
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let cases: Vec<&Case> = CASES
        .iter()
        .filter(|c| filter.as_deref().is_none_or(|f| c.name.contains(f)))
        .collect();
    let runs: Vec<(&Case, usize)> = cases
        .iter()
        .flat_map(|case| case.sizes.iter().map(move |&size| (*case, size)))
        .collect();
    println!("\nrunning {} misuse cases", runs.len());
    let mut failed = 0;
    for &(case, size) in &runs {
        let name = if case.sizes.len() > 1 {
            format!("{}@{size}", case.name)
        } else {
            case.name.to_string()
        };
        match check(case, size) {
            Ok(()) => println!("misuse {name} ... ok"),
            Err(why) => {
                failed += 1;
                println!("misuse {name} ... FAILED: {why}");
            }
        }
    }
    println!(
        "\nmisuse result: {}. {} passed; {failed} failed\n",
        if failed == 0 { "ok" } else { "FAILED" },
        runs.len() - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
