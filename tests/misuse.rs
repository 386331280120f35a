//! Misuse that must end the process with a clear message. Each case runs in a child
//! process: this test binary again, with `EBBMALLOC_MISUSE_CASE` naming the case. The child
//! states on stderr the line it expects ebbmalloc to write (with the exact address), then
//! misuses the allocator; the parent checks that the child died of the expected signal and
//! that the line is there.
//!
//! The default build checks when blocks go back to their pools, so its cases end with
//! `ebbmalloc::trim()`, which sends every cached block home; the hardened build (cargo
//! feature `hardened`) stops at the misuse itself. Cases that only a hardened build can
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
const EXPECT_PREFIX: &str = "misuse: expecting ";

/// A block size no other code in the process uses, so that std's own allocations between
/// the steps of a case do not take or bring blocks of its class.
const ODD_SIZE: usize = 2560;

struct Case {
    name: &'static str,
    /// The signal the child must die of.
    signal: i32,
    run: fn(),
}

const CASES: &[Case] = &[
    Case {
        name: "double_free_same_thread",
        signal: libc::SIGABRT,
        run: double_free_same_thread,
    },
    Case {
        name: "double_free_other_thread",
        signal: libc::SIGABRT,
        run: double_free_other_thread,
    },
    Case {
        name: "double_free_after_cache_and_flush",
        signal: libc::SIGABRT,
        run: double_free_after_cache_and_flush,
    },
    Case {
        name: "double_free_large",
        signal: libc::SIGABRT,
        run: double_free_large,
    },
    Case {
        name: "free_stack_pointer_c_abi",
        signal: libc::SIGABRT,
        run: free_stack_pointer_c_abi,
    },
    Case {
        name: "free_interior_pointer_c_abi",
        signal: libc::SIGABRT,
        run: free_interior_pointer_c_abi,
    },
    Case {
        name: "dealloc_foreign_pointer",
        signal: libc::SIGABRT,
        run: dealloc_foreign_pointer,
    },
    // The default build does not look a large block up before reading its header.
    #[cfg(feature = "hardened")]
    Case {
        name: "dealloc_foreign_pointer_as_large",
        signal: libc::SIGABRT,
        run: dealloc_foreign_pointer_as_large,
    },
    Case {
        name: "dealloc_with_wrong_layout",
        signal: libc::SIGABRT,
        run: dealloc_with_wrong_layout,
    },
    Case {
        name: "realloc_freed_large_c_abi",
        signal: libc::SIGABRT,
        run: realloc_freed_large_c_abi,
    },
    Case {
        name: "realloc_freed_small_c_abi",
        signal: libc::SIGABRT,
        run: realloc_freed_small_c_abi,
    },
    #[cfg(feature = "hardened")]
    Case {
        name: "overflow_into_neighbours_link",
        signal: libc::SIGABRT,
        run: overflow_into_neighbours_link,
    },
    #[cfg(all(feature = "hardened", debug_assertions))]
    Case {
        name: "write_after_free",
        signal: libc::SIGABRT,
        run: write_after_free,
    },
    #[cfg(feature = "hardened")]
    Case {
        name: "large_overflow_hits_guard_page",
        signal: libc::SIGSEGV,
        run: large_overflow_hits_guard_page,
    },
    #[cfg(feature = "hardened")]
    Case {
        name: "large_underflow_hits_guard_page",
        signal: libc::SIGSEGV,
        run: large_underflow_hits_guard_page,
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

fn double_free_same_thread() {
    let l = layout(ODD_SIZE);
    // SAFETY: a valid layout; the second `dealloc` is the misuse under test.
    unsafe {
        let p = GLOBAL.alloc(l);
        expect("double free of", p as usize);
        GLOBAL.dealloc(p, l);
        GLOBAL.dealloc(p, l);
    }
    flush_to_pools();
}

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
    flush_to_pools();
}

fn double_free_after_cache_and_flush() {
    let l = layout(ODD_SIZE);
    // SAFETY: a valid layout; `keep` holds the pool alive, so `p`'s page stays a pool's.
    unsafe {
        let keep = GLOBAL.alloc(l);
        let p = GLOBAL.alloc(l);
        keep.write(1);
        expect("double free of", p as usize);
        // Into the thread cache, then through the central lists back to its pool.
        GLOBAL.dealloc(p, l);
        ebbmalloc::trim();
        GLOBAL.dealloc(p, l);
    }
    flush_to_pools();
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
    // Hardened builds stop in `realloc`; the default build moves the block, frees it a
    // second time, and finds that in its pool.
    let message = if ebbmalloc::HARDENED {
        "realloc(): double free of"
    } else {
        "double free of"
    };
    expect(message, p as usize);
    // SAFETY: a live block, then the misuse under test.
    unsafe {
        c_abi::free(p);
        c_abi::realloc(p, 2 * ODD_SIZE);
    }
    flush_to_pools();
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
fn check(case: &Case) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .env(CASE_VAR, case.name)
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
    println!("\nrunning {} misuse cases", cases.len());
    let mut failed = 0;
    for case in &cases {
        match check(case) {
            Ok(()) => println!("misuse {} ... ok", case.name),
            Err(why) => {
                failed += 1;
                println!("misuse {} ... FAILED: {why}", case.name);
            }
        }
    }
    println!(
        "\nmisuse result: {}. {} passed; {failed} failed\n",
        if failed == 0 { "ok" } else { "FAILED" },
        cases.len() - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
