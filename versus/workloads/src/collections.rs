//! Standard-library collections: `vec-string` (growth by push, i.e. realloc chains) and
//! `hashmap` (build and drop).

use crate::rng::XorShift;
use crate::{Metric, Scale};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::hint::black_box;
use std::time::Instant;

/// A log-uniform length in `1..=65536`: mostly short, now and then long.
fn length(rng: &mut XorShift) -> usize {
    let bits = rng.below(17);
    1 + rng.below(1 << bits)
}

/// Builds `Vec<u64>`s and `String`s by pushing one element at a time (no `with_capacity`),
/// keeping the last 64 of each alive so the heap around the growing block is not empty.
pub fn run_vec_string(scale: Scale, seed: u64) -> Vec<Metric> {
    let elements = scale.pick(1_000_000_000, 50_000_000, 100_000);
    const KEEP: usize = 64;

    let mut rng = XorShift::new(seed);
    let mut kept: Vec<Vec<u64>> = (0..KEEP).map(|_| Vec::new()).collect();
    let mut done = 0u64;
    let start = Instant::now();
    let mut i = 0;
    while done < elements {
        let n = length(&mut rng);
        let mut v = Vec::new();
        for k in 0..n as u64 {
            v.push(black_box(k));
        }
        done += n as u64;
        kept[i % KEEP] = v;
        i += 1;
    }
    let vec_secs = start.elapsed().as_secs_f64();
    let vec_done = done;
    drop(kept);

    let mut rng = XorShift::new(seed);
    let mut kept: Vec<String> = (0..KEEP).map(|_| String::new()).collect();
    let mut done = 0u64;
    let start = Instant::now();
    let mut i = 0;
    while done < elements {
        let n = length(&mut rng);
        let mut s = String::new();
        for k in 0..n {
            s.push(black_box((b'a' + (k % 26) as u8) as char));
        }
        done += n as u64;
        kept[i % KEEP] = s;
        i += 1;
    }
    let string_secs = start.elapsed().as_secs_f64();
    drop(kept);

    vec![
        Metric::mops("Vec<u64> push", "M elem/s", vec_done, vec_secs),
        Metric::mops("String push", "M chars/s", done, string_secs),
    ]
}

type Map = HashMap<String, Vec<u32>, BuildHasherDefault<DefaultHasher>>;

/// Writes `"key-"` and the decimal digits of `n` into a new `String`, growing it by push.
fn key(n: u64) -> String {
    let mut s = String::new();
    s.push_str("key-");
    let mut digits = [0u8; 20];
    let mut len = 0;
    let mut n = n;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in digits[..len].iter().rev() {
        s.push(d as char);
    }
    s
}

/// Builds maps of `String` keys to short `Vec<u32>`s (no `with_capacity`), then drops
/// them; sizes cycle through 16, 256, 4096 and 65536 entries. The hasher has fixed keys,
/// so every allocator sees the same sequence.
pub fn run_hashmap(scale: Scale, seed: u64) -> Vec<Metric> {
    let entries = scale.pick(10_000_000, 500_000, 20_000);
    const SIZES: [u64; 4] = [16, 256, 4096, 65536];
    let mut rng = XorShift::new(seed);
    let mut done = 0u64;
    let mut round = 0;
    let start = Instant::now();
    while done < entries {
        let n = SIZES[round % SIZES.len()].min(entries - done);
        round += 1;
        let mut map = Map::default();
        for k in 0..n {
            let mut v = Vec::new();
            for j in 0..1 + rng.below(8) as u32 {
                v.push(j);
            }
            map.insert(key((rng.next_u64() >> 40) ^ k), v);
        }
        done += n;
        black_box(&map);
        drop(map);
    }
    let secs = start.elapsed().as_secs_f64();
    vec![Metric::mops("build+drop", "M entries/s", done, secs)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_decimal() {
        assert_eq!(key(0), "key-0");
        assert_eq!(key(1234567), "key-1234567");
        assert_eq!(key(u64::MAX), format!("key-{}", u64::MAX));
    }

    #[test]
    fn tiny_runs() {
        let m = run_vec_string(Scale::Tiny, 3);
        assert_eq!(m.len(), 2);
        assert!(m.iter().all(|m| m.value > 0.0));
        let h = run_hashmap(Scale::Tiny, 3);
        assert_eq!(h.len(), 1);
        assert!(h[0].value > 0.0);
    }
}
