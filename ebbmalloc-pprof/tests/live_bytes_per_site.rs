//! Known amounts from known call sites: 64 MiB from `site_a` and 16 MiB from `site_b`, in
//! blocks of several sizes (small ones served from the thread caches, large ones mappings
//! of their own), half of `site_b`'s freed. The pprof protobuf, decoded with `prost`,
//! must estimate each site's live bytes within 15%, and once `site_b`'s blocks are all
//! freed its in-use figures must drop to zero while its allocated ones stay.
//!
//! One test function: profiling is process-wide.

#[global_allocator]
static GLOBAL: ebbmalloc::EbbMalloc = ebbmalloc::EbbMalloc;

use ebbmalloc_pprof::proto;

/// Sizes, each given a fifth of a site's bytes: 3 small classes, 1 large block size, and
/// one class near the largest.
const SIZES: [usize; 5] = [48, 700, 5000, 100_000, 300_000];

/// `total` bytes in blocks of [`SIZES`], each filled. Inlined into the sites so that the
/// allocations are made from their frames.
#[inline(always)]
fn blocks(total: usize, out: &mut Vec<Vec<u8>>) {
    for size in SIZES {
        for i in 0..total / SIZES.len() / size {
            out.push(vec![1 + i as u8 % 200; size]);
        }
    }
}

#[inline(never)]
fn site_a(out: &mut Vec<Vec<u8>>) {
    blocks(64 << 20, out);
    std::hint::black_box(out);
}

#[inline(never)]
fn site_b(out: &mut Vec<Vec<u8>>) {
    blocks(16 << 20, out);
    std::hint::black_box(out);
}

/// The sum of values of `kind` over the samples whose stack passes through a function whose
/// name ends with `::function`.
fn site_total(profile: &proto::Profile, function: &str, kind: &str) -> i64 {
    let suffix = format!("::{function}");
    ebbmalloc_pprof::total_through(profile, |name| name.ends_with(&suffix), kind)
}

fn dump() -> proto::Profile {
    let bytes = ebbmalloc_pprof::dump_pprof();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
    ebbmalloc_pprof::decode_gzip(&bytes).expect("a valid pprof protobuf")
}

fn assert_near(what: &str, estimate: i64, actual: usize) {
    let ratio = estimate as f64 / actual as f64;
    assert!(
        (0.85..=1.15).contains(&ratio),
        "{what}: estimated {estimate}, actual {actual} (ratio {ratio:.3})"
    );
}

#[test]
fn estimated_live_bytes_per_site_and_freed_blocks_leave_the_in_use_profile() {
    // 16 KiB: about 5,000 samples for site_a, so the estimate's standard error is near 1.5%
    // (at the default 512 KiB it would be near 9%, too loose for a 15% bound).
    let mut settings = ebbmalloc::Settings::current();
    settings.prof_sample_bytes = 16 << 10;
    ebbmalloc::configure(&settings);
    ebbmalloc::profiling::set_active(true);

    // Containers reserved up front, outside the sites: their own bytes are not the sites'.
    let mut a = Vec::with_capacity(1 << 20);
    let mut b = Vec::with_capacity(1 << 20);
    site_a(&mut a);
    site_b(&mut b);
    let a_bytes: usize = a.iter().map(Vec::len).sum();
    let b_bytes: usize = b.iter().map(Vec::len).sum();
    // Free every other block of site_b: half of its bytes of each size.
    let mut index = 0;
    b.retain(|_| {
        index += 1;
        index % 2 == 0
    });
    let b_live: usize = b.iter().map(Vec::len).sum();
    assert!(b_live * 2 >= b_bytes - SIZES.len() * 300_000 && b_live * 2 <= b_bytes + 300_000);

    let profile = dump();
    assert_eq!(profile.period, 16 << 10);
    assert_eq!(
        profile.string_table[profile.default_sample_type as usize],
        "inuse_space"
    );
    assert!(
        !profile.mapping.is_empty(),
        "mappings of the loaded objects"
    );
    assert!(
        profile
            .mapping
            .iter()
            .any(|mapping| !profile.string_table[mapping.build_id as usize].is_empty()),
        "a build id"
    );
    assert_near(
        "site_a inuse_space",
        site_total(&profile, "site_a", "inuse_space"),
        a_bytes,
    );
    assert_near(
        "site_b inuse_space",
        site_total(&profile, "site_b", "inuse_space"),
        b_live,
    );
    assert_near(
        "site_b alloc_space",
        site_total(&profile, "site_b", "alloc_space"),
        b_bytes,
    );
    let a_objects = site_total(&profile, "site_a", "inuse_objects");
    assert_near("site_a inuse_objects", a_objects, a.len());

    // The allocator's own frames are left out: no sample's leaf is an ebbmalloc function.
    for sample in &profile.sample {
        let leaf = &profile.location[sample.location_id[0] as usize - 1];
        let outer = leaf.line.last().expect("symbolised");
        let name =
            &profile.string_table[profile.function[outer.function_id as usize - 1].name as usize];
        assert!(!name.starts_with("ebbmalloc::"), "leaf frame {name}");
    }

    // Everything of site_b freed: out of the in-use profile, still in the allocated one.
    drop(b);
    let profile = dump();
    assert_eq!(site_total(&profile, "site_b", "inuse_space"), 0);
    assert_eq!(site_total(&profile, "site_b", "inuse_objects"), 0);
    assert_near(
        "site_b alloc_space after the frees",
        site_total(&profile, "site_b", "alloc_space"),
        b_bytes,
    );
    assert_near(
        "site_a inuse_space after site_b's frees",
        site_total(&profile, "site_a", "inuse_space"),
        a_bytes,
    );

    let text = ebbmalloc_pprof::text_summary(&ebbmalloc::profiling::snapshot(), 50);
    assert!(text.contains("site_a"), "{text}");
    drop(a);
}
