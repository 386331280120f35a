//! Core properties with `EbbMalloc` as the global allocator of this test binary: contents,
//! alignment, zeroing, no block handed out twice, cross-thread frees, thread exit, fork.

#[global_allocator]
static GLOBAL: ebbmalloc::EbbMalloc = ebbmalloc::EbbMalloc;

use std::alloc::{alloc, alloc_zeroed, dealloc, realloc, GlobalAlloc, Layout};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Sizes skewed small: most under 1 KiB, some up to 128 KiB, a few up to 2 MiB.
    fn size(&mut self) -> usize {
        match self.below(100) {
            0..=79 => 1 + self.below(1024) as usize,
            80..=97 => 1 + self.below(128 << 10) as usize,
            _ => (128 << 10) + self.below(2 << 20) as usize,
        }
    }
}

/// The byte a stamped block holds at `index`, from its address and a sequence number.
fn stamp_byte(address: usize, sequence: u64, index: usize) -> u8 {
    (address as u64 ^ sequence.rotate_left(17) ^ (index as u64).wrapping_mul(0x9e37)).to_le_bytes()
        [index % 8]
}

/// Writes the stamp over the first `len` bytes (all of a small block, samples of a big one).
fn stamp(block: *mut u8, len: usize, sequence: u64) {
    for index in stamp_positions(len) {
        // SAFETY: callers pass live blocks of at least `len` bytes.
        unsafe {
            block
                .add(index)
                .write(stamp_byte(block as usize, sequence, index))
        };
    }
}

/// Checks a stamp made at `stamped_at` (the address it had then) over `len` bytes.
fn check_stamp(block: *const u8, stamped_at: usize, len: usize, sequence: u64) {
    check_stamp_prefix(block, stamped_at, len, len, sequence);
}

/// Checks the first `len` bytes of a stamp made over `stamped_len` bytes (after a realloc
/// that kept only a prefix).
fn check_stamp_prefix(
    block: *const u8,
    stamped_at: usize,
    stamped_len: usize,
    len: usize,
    sequence: u64,
) {
    for index in stamp_positions(stamped_len).filter(|&i| i < len) {
        // SAFETY: callers pass live blocks of at least `len` bytes.
        let byte = unsafe { block.add(index).read() };
        assert_eq!(
            byte,
            stamp_byte(stamped_at, sequence, index),
            "block {block:p} (stamped at {stamped_at:#x}) len {len} seq {sequence}: byte {index} changed"
        );
    }
}

fn stamp_positions(len: usize) -> impl Iterator<Item = usize> {
    let step = if len <= 4096 { 1 } else { 61 };
    (0..len).step_by(step).chain(len.saturating_sub(16)..len)
}

fn vm_rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn std_collections_keep_their_contents() {
    let mut map: HashMap<u64, String> = HashMap::new();
    for i in 0..50_000u64 {
        map.insert(i, format!("value-{i}-{}", "x".repeat((i % 40) as usize)));
    }
    for i in (0..50_000u64).step_by(3) {
        map.remove(&i);
    }
    for i in 0..50_000u64 {
        match map.get(&i) {
            Some(v) => assert_eq!(*v, format!("value-{i}-{}", "x".repeat((i % 40) as usize))),
            None => assert_eq!(i % 3, 0),
        }
    }
    let mut tree: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for i in 0..20_000u32 {
        tree.entry(format!("k{}", i % 777)).or_default().push(i);
    }
    let total: usize = tree.values().map(Vec::len).sum();
    assert_eq!(total, 20_000);
    let mut deque: VecDeque<Box<[u8]>> = VecDeque::new();
    for i in 0..30_000usize {
        deque.push_back(vec![(i % 251) as u8; i % 300 + 1].into_boxed_slice());
        if deque.len() > 500 {
            let old = deque.pop_front().unwrap();
            assert!(old.iter().all(|&b| b == old[0]));
        }
    }
    let text: String = (0..10_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    assert_eq!(text.len(), 10_000);
    assert!(text.starts_with("abcdefghijklmnopqrstuvwxyzabc"));
}

#[test]
fn eight_threads_hand_stamped_blocks_to_each_other() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 3_000;
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS)
        .map(|_| mpsc::channel::<(usize, usize, u64)>())
        .unzip();
    let senders = Arc::new(senders);
    let workers: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(me, inbox)| {
            let senders = Arc::clone(&senders);
            std::thread::spawn(move || {
                let mut rng = Rng(0x1234_5678 + me as u64);
                let mut freed = 0;
                for round in 0..ROUNDS {
                    let size = rng.size();
                    let layout = Layout::from_size_align(size, 8).unwrap();
                    // SAFETY: a valid non-zero layout.
                    let block = unsafe { alloc(layout) };
                    assert!(!block.is_null());
                    let sequence = (me * ROUNDS + round) as u64;
                    stamp(block, size, sequence);
                    let target = rng.below(THREADS as u64) as usize;
                    senders[target]
                        .send((block as usize, size, sequence))
                        .unwrap();
                    while let Ok((address, size, sequence)) = inbox.try_recv() {
                        check_stamp(address as *const u8, address, size, sequence);
                        // SAFETY: allocated with this layout by some thread, freed once.
                        unsafe {
                            dealloc(
                                address as *mut u8,
                                Layout::from_size_align(size, 8).unwrap(),
                            )
                        };
                        freed += 1;
                    }
                }
                (inbox, freed)
            })
        })
        .collect();
    let inboxes: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    drop(senders);
    let mut freed: usize = inboxes.iter().map(|(_, n)| n).sum();
    for (inbox, _) in inboxes {
        while let Ok((address, size, sequence)) = inbox.try_recv() {
            check_stamp(address as *const u8, address, size, sequence);
            // SAFETY: as above.
            unsafe {
                dealloc(
                    address as *mut u8,
                    Layout::from_size_align(size, 8).unwrap(),
                )
            };
            freed += 1;
        }
    }
    assert_eq!(freed, THREADS * ROUNDS);
}

#[test]
fn producer_allocates_and_consumer_frees() {
    let (tx, rx) = mpsc::sync_channel::<Vec<(usize, u64)>>(4);
    let consumer = std::thread::spawn(move || {
        let mut count = 0;
        for batch in rx {
            for (address, sequence) in batch {
                check_stamp(address as *const u8, address, 64, sequence);
                // SAFETY: allocated by the producer with this layout.
                unsafe { dealloc(address as *mut u8, Layout::from_size_align(64, 8).unwrap()) };
                count += 1;
            }
        }
        count
    });
    let mut sequence = 0;
    for _ in 0..400 {
        let batch: Vec<(usize, u64)> = (0..256)
            .map(|_| {
                // SAFETY: a valid non-zero layout.
                let block = unsafe { alloc(Layout::from_size_align(64, 8).unwrap()) };
                sequence += 1;
                stamp(block, 64, sequence);
                (block as usize, sequence)
            })
            .collect();
        tx.send(batch).unwrap();
    }
    drop(tx);
    assert_eq!(consumer.join().unwrap(), 400 * 256);
}

/// Every class size, one below and one above, and sizes around the large boundary.
fn boundary_sizes() -> Vec<usize> {
    let mut sizes = vec![1, 2, 3, 7, 9, 15, 17, 23, 25];
    let mut class: usize = 8;
    while class <= 128 << 10 {
        sizes.extend([class - 1, class, class + 1]);
        class += if class < 64 {
            8
        } else if class < 128 {
            16
        } else {
            1 << (usize::BITS - 1 - class.leading_zeros() - 2)
        };
    }
    sizes.extend([(128 << 10) + 4095, 200 << 10, 1 << 20, (3 << 20) + 17]);
    sizes
}

#[test]
fn every_alignment_up_to_one_mebibyte_is_honoured() {
    for size in boundary_sizes() {
        let mut align = 1;
        while align <= 1 << 20 {
            let layout = Layout::from_size_align(size, align).unwrap();
            for direct in [false, true] {
                // SAFETY: a valid non-zero layout; freed with the same layout below.
                let block = unsafe {
                    if direct {
                        ebbmalloc::EbbMalloc.alloc(layout)
                    } else {
                        alloc(layout)
                    }
                };
                assert!(!block.is_null(), "size {size} align {align}");
                assert_eq!(
                    block as usize % align,
                    0,
                    "size {size} align {align}: {block:p}"
                );
                // SAFETY: the block holds `size` bytes.
                unsafe {
                    block.write(0xa5);
                    block.add(size - 1).write(0x5a);
                    if direct {
                        ebbmalloc::EbbMalloc.dealloc(block, layout);
                    } else {
                        dealloc(block, layout);
                    }
                }
            }
            align *= 2;
        }
    }
}

#[test]
fn realloc_keeps_contents_across_classes_and_the_large_boundary() {
    for align in [8, 64, 4096] {
        let chain = [
            40usize,
            100,
            1000,
            130 << 10,
            200 << 10,
            5 << 20,
            300 << 10,
            64 << 10,
            40,
            16,
            (2 << 20) + 3,
            24,
        ];
        let mut size = 24;
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: a valid layout.
        let mut block = unsafe { alloc(layout) };
        stamp(block, size, 7);
        let mut stamped_at = block as usize;
        for new_size in chain {
            // SAFETY: `block` is live with (size, align).
            let grown = unsafe {
                realloc(
                    block,
                    Layout::from_size_align(size, align).unwrap(),
                    new_size,
                )
            };
            assert!(!grown.is_null());
            assert_eq!(grown as usize % align, 0);
            check_stamp_prefix(grown, stamped_at, size, size.min(new_size), 7);
            block = grown;
            size = new_size;
            stamp(block, size, 7);
            stamped_at = block as usize;
        }
        // SAFETY: live with (size, align).
        unsafe { dealloc(block, Layout::from_size_align(size, align).unwrap()) };
    }
}

#[test]
fn realloc_within_a_class_stays_in_place() {
    let layout = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: valid layouts; the block is live throughout.
    unsafe {
        let block = alloc(layout);
        let same = realloc(block, layout, 112);
        assert_eq!(block, same, "100 -> 112 bytes share the 112-byte class");
        let large = alloc(Layout::from_size_align(1 << 20, 8).unwrap());
        large.write_bytes(3, 1 << 20);
        let grown = realloc(
            large,
            Layout::from_size_align(1 << 20, 8).unwrap(),
            (1 << 20) + 1000,
        );
        assert_eq!(
            large, grown,
            "a large block grows within its mapping's rounding"
        );
        dealloc(grown, Layout::from_size_align((1 << 20) + 1000, 8).unwrap());
        dealloc(same, Layout::from_size_align(112, 8).unwrap());
    }
}

#[test]
fn alloc_zeroed_is_zero_for_fresh_and_reused_blocks() {
    let sizes = [
        8usize,
        24,
        100,
        1000,
        4096,
        20_000,
        100 << 10,
        1 << 20,
        5 << 20,
    ];
    for round in 0..4 {
        for &size in &sizes {
            for align in [8, 256] {
                let layout = Layout::from_size_align(size, align).unwrap();
                let blocks: Vec<*mut u8> = (0..8)
                    .map(|_| {
                        // SAFETY: a valid layout.
                        let block = unsafe { alloc_zeroed(layout) };
                        assert!(!block.is_null());
                        // SAFETY: the block holds `size` bytes.
                        let bytes = unsafe { std::slice::from_raw_parts(block, size) };
                        assert!(
                            bytes.iter().all(|&b| b == 0),
                            "round {round} size {size} align {align}: not zero at {block:p}"
                        );
                        block
                    })
                    .collect();
                for block in blocks {
                    // SAFETY: the block holds `size` bytes and is freed once.
                    unsafe {
                        block.write_bytes(0xab, size);
                        dealloc(block, layout);
                    }
                }
            }
        }
    }
}

/// A shadow model of live blocks: no new block may overlap a live one, and live blocks keep
/// their stamps.
#[test]
fn no_block_is_handed_out_twice_while_live() {
    let mut rng = Rng(0xfeed_beef);
    let mut live: BTreeMap<usize, (usize, usize, u64)> = BTreeMap::new(); // start -> (end, align, seq)
    let mut sequence = 0u64;
    let overlaps = |live: &BTreeMap<usize, (usize, usize, u64)>, start: usize, end: usize| {
        live.range(..end)
            .next_back()
            .is_some_and(|(_, &(e, _, _))| e > start)
    };
    for _ in 0..60_000 {
        let action = rng.below(10);
        if action < 5 || live.len() < 10 {
            let size = rng.size().min(300 << 10);
            let align = 1 << rng.below(8);
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: a valid layout.
            let block = unsafe { alloc(layout) } as usize;
            assert!(block != 0);
            assert!(
                !overlaps(&live, block, block + size),
                "{block:#x}+{size} overlaps a live block"
            );
            sequence += 1;
            stamp(block as *mut u8, size, sequence);
            live.insert(block, (block + size, align, sequence));
        } else {
            let nth = rng.below(live.len() as u64) as usize;
            let (&start, &(end, align, seq)) = live.iter().nth(nth).unwrap();
            live.remove(&start);
            check_stamp(start as *const u8, start, end - start, seq);
            if action < 8 {
                let layout = Layout::from_size_align(end - start, align).unwrap();
                // SAFETY: live with this layout.
                unsafe { dealloc(start as *mut u8, layout) };
            } else {
                let new_size = rng.size().min(300 << 10);
                let layout = Layout::from_size_align(end - start, align).unwrap();
                // SAFETY: live with this layout.
                let moved = unsafe { realloc(start as *mut u8, layout, new_size) } as usize;
                check_stamp_prefix(
                    moved as *const u8,
                    start,
                    end - start,
                    (end - start).min(new_size),
                    seq,
                );
                assert!(
                    !overlaps(&live, moved, moved + new_size),
                    "realloc into a live block"
                );
                sequence += 1;
                stamp(moved as *mut u8, new_size, sequence);
                live.insert(moved, (moved + new_size, align, sequence));
            }
        }
    }
    for (start, (end, align, seq)) in live {
        check_stamp(start as *const u8, start, end - start, seq);
        // SAFETY: live with this layout.
        unsafe {
            dealloc(
                start as *mut u8,
                Layout::from_size_align(end - start, align).unwrap(),
            )
        };
    }
}

/// A structure of many small blocks dropped in a scrambled order (as a `HashMap` drops its
/// entries in hash order) and built again: the new blocks come out in address order, next
/// to each other, not in the order they were freed. Only the few batches parked in the
/// transfer cache and the thread's own cache keep the scrambled order; the rest went back
/// to their pools, which hand them out again upwards. (Hardened builds hand blocks out in
/// random order on purpose.)
#[test]
#[cfg(not(feature = "hardened"))]
fn a_scrambled_drop_is_reused_in_address_order() {
    const BLOCKS: usize = 50_000;
    let layout = Layout::from_size_align(16, 8).unwrap();
    let take = |blocks: &mut Vec<usize>| {
        for _ in 0..BLOCKS {
            // SAFETY: a valid layout of non-zero size.
            let block = unsafe { alloc(layout) } as usize;
            assert!(block != 0);
            blocks.push(block);
        }
    };
    let mut blocks = Vec::with_capacity(BLOCKS);
    take(&mut blocks);
    let mut rng = Rng(0x5eed_f0d3);
    for i in (1..BLOCKS).rev() {
        blocks.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for &block in &blocks {
        // SAFETY: live with this layout, freed once.
        unsafe { dealloc(block as *mut u8, layout) };
    }
    blocks.clear();
    take(&mut blocks);
    // A step to the next block up the same page, as an address-ordered hand-out makes; a
    // scrambled order makes one in a few hundred.
    let near = blocks
        .windows(2)
        .filter(|w| w[1] > w[0] && w[1] - w[0] <= 4096)
        .count();
    let mut distinct = blocks.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), BLOCKS, "a block handed out twice");
    assert!(
        near * 10 >= BLOCKS * 8,
        "{near} of {BLOCKS} allocations were a step up from the one before"
    );
    for &block in &blocks {
        // SAFETY: live with this layout, freed once.
        unsafe { dealloc(block as *mut u8, layout) };
    }
}

#[test]
fn threads_share_a_shadow_model_without_overlap() {
    let live: Arc<Mutex<BTreeMap<usize, usize>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let live = Arc::clone(&live);
            std::thread::spawn(move || {
                let mut rng = Rng(99 + t);
                let mut mine: Vec<(usize, usize, u64)> = Vec::new();
                for i in 0..8_000u64 {
                    if mine.len() < 200 && rng.below(2) == 0 {
                        let size = rng.size().min(64 << 10);
                        let layout = Layout::from_size_align(size, 16).unwrap();
                        // SAFETY: a valid layout.
                        let block = unsafe { alloc(layout) } as usize;
                        {
                            let mut live = live.lock().unwrap();
                            let clash = live
                                .range(..block + size)
                                .next_back()
                                .is_some_and(|(_, &e)| e > block);
                            assert!(
                                !clash,
                                "thread {t}: {block:#x}+{size} overlaps a live block"
                            );
                            live.insert(block, block + size);
                        }
                        stamp(block as *mut u8, size, i);
                        mine.push((block, size, i));
                    } else if let Some((block, size, seq)) = mine.pop() {
                        check_stamp(block as *const u8, block, size, seq);
                        live.lock().unwrap().remove(&block);
                        // SAFETY: live with this layout.
                        unsafe {
                            dealloc(block as *mut u8, Layout::from_size_align(size, 16).unwrap())
                        };
                    }
                }
                for (block, size, seq) in mine {
                    check_stamp(block as *const u8, block, size, seq);
                    live.lock().unwrap().remove(&block);
                    // SAFETY: live with this layout.
                    unsafe {
                        dealloc(block as *mut u8, Layout::from_size_align(size, 16).unwrap())
                    };
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
}

#[test]
fn a_thousand_short_lived_threads_do_not_grow_rss() {
    // The process's RSS is the measure, so the scenario runs alone in a child process: the
    // other tests of this file, running beside it, once grew it past the bound.
    const CHILD: &str = "EBB_CORE_RSS_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "a_thousand_short_lived_threads_do_not_grow_rss",
                "--exact",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "the scenario failed: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        return;
    }
    let wave = |keep: &Mutex<Vec<usize>>| {
        let handles: Vec<_> = (0..50)
            .map(|_| {
                std::thread::spawn(|| {
                    let mut kept = Vec::new();
                    let mut blocks: Vec<Vec<u8>> = Vec::new();
                    for i in 0..2_000usize {
                        blocks.push(vec![i as u8; 16 + i % 1000]);
                    }
                    // Some blocks outlive the thread and are freed by the main thread.
                    for block in blocks.drain(..10) {
                        kept.push(Box::into_raw(block.into_boxed_slice()) as *mut u8 as usize);
                    }
                    kept
                })
            })
            .collect();
        for handle in handles {
            keep.lock().unwrap().extend(handle.join().unwrap());
        }
    };
    let keep = Mutex::new(Vec::new());
    // Warm up: one wave, so thread stacks and the allocator's first arenas exist.
    wave(&keep);
    let kept: Vec<usize> = std::mem::take(&mut *keep.lock().unwrap());
    free_boxes(kept);
    let before = vm_rss_kib();
    for _ in 0..20 {
        wave(&keep);
        let kept: Vec<usize> = std::mem::take(&mut *keep.lock().unwrap());
        free_boxes(kept);
    }
    let after = vm_rss_kib();
    // 1,000 threads each cached up to its byte budget; if caches were not flushed at exit
    // the growth would be hundreds of MiB.
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 1,000 threads"
    );
}

/// Frees boxes of `16 + i` bytes for `i` in `0..10`, in the order the threads kept them.
fn free_boxes(addresses: Vec<usize>) {
    for (n, address) in addresses.into_iter().enumerate() {
        let len = 16 + n % 10;
        // SAFETY: made by `Box::into_raw` of a boxed slice of `len` bytes.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(address as *mut u8, len)) });
    }
}

#[test]
fn fork_from_a_multithreaded_process() {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churners: Vec<_> = (0..4)
        .map(|t| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut rng = Rng(7 + t);
                let mut held: Vec<Vec<u8>> = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    held.push(vec![1; rng.size().min(200 << 10)]);
                    if held.len() > 64 {
                        held.swap_remove(rng.below(64) as usize);
                    }
                }
            })
        })
        .collect();
    for round in 0..10 {
        // SAFETY: fork; the child only allocates, checks and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let mut ok = true;
            let mut map = HashMap::new();
            for i in 0..20_000u32 {
                map.insert(i, vec![i as u8; (i % 200) as usize + 1]);
            }
            for i in 0..20_000u32 {
                ok &= map[&i].len() == (i % 200) as usize + 1 && map[&i][0] == i as u8;
            }
            let big = vec![7u8; 3 << 20];
            ok &= big.iter().all(|&b| b == 7);
            drop(map);
            // SAFETY: leave the child without running the parent's test harness.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "round {round}: child status {status:#x}"
        );
        let after: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        assert_eq!(after[999], "999");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for churner in churners {
        churner.join().unwrap();
    }
}
