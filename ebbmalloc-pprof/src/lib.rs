//! ebbmalloc's heap profile (`ebbmalloc::profiling`) as a gzip-compressed pprof protobuf,
//! readable by `pprof` and `go tool pprof` and by continuous-profiling services, and as a
//! plain-text summary for a terminal.
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: ebbmalloc::EbbMalloc = ebbmalloc::EbbMalloc;
//!
//! ebbmalloc::profiling::set_active(true); // or EBBMALLOC_PROF=1
//! // ... the program runs ...
//! std::fs::write("heap.pb.gz", ebbmalloc_pprof::dump_pprof()).unwrap();
//! print!("{}", ebbmalloc_pprof::text_summary(&ebbmalloc::profiling::snapshot(), 20));
//! ```
//!
//! The profile has four sample types, `alloc_objects`, `alloc_space` (everything sampled
//! since profiling began), `inuse_objects` and `inuse_space` (what is still live; the
//! default), each value the estimate of the real figure (every sample weighted by the
//! inverse of its probability of being sampled, see `ebbmalloc::profiling`). Its period is
//! the sampling interval in bytes. The mappings are the loaded objects' executable segments
//! with their GNU build ids (`dl_iterate_phdr` and the objects' ELF notes), so `pprof` can
//! symbolise from the binaries; the locations also carry the functions, files and lines
//! resolved in the process (with the `backtrace` crate), so the profile reads without them;
//! the debug information read for that is let go once the profile is built.
//! The allocator's own frames at the top of each stack are left out.

pub mod proto;

use ebbmalloc::profiling::{HeapProfile, SampledStack};
use prost::Message;
use std::collections::HashMap;
use std::io::Write;

/// The current heap profile as a gzip-compressed pprof protobuf.
pub fn dump_pprof() -> Vec<u8> {
    encode_gzip(&to_pprof(&ebbmalloc::profiling::snapshot()))
}

/// Writes [`dump_pprof`] to `path`.
pub fn write_pprof(path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
    std::fs::write(path, dump_pprof())
}

/// `profile` gzip-compressed.
pub fn encode_gzip(profile: &proto::Profile) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(&profile.encode_to_vec())
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

/// Decodes a gzip-compressed pprof protobuf (for tests and tools).
pub fn decode_gzip(bytes: &[u8]) -> std::io::Result<proto::Profile> {
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut raw)?;
    proto::Profile::decode(raw.as_slice())
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))
}

/// Where the sample type `name` (`"inuse_space"`, ...) is in each sample's values of a
/// decoded profile (for tests and tools).
pub fn sample_type_index(profile: &proto::Profile, name: &str) -> Option<usize> {
    profile
        .sample_type
        .iter()
        .position(|kind| profile.string_table[kind.r#type as usize] == name)
}

/// The function names of a decoded sample's stack, innermost first, inlined frames
/// included (for tests and tools).
pub fn stack_function_names(profile: &proto::Profile, sample: &proto::Sample) -> Vec<String> {
    sample
        .location_id
        .iter()
        .flat_map(|&id| &profile.location[id as usize - 1].line)
        .map(|line| {
            let function = &profile.function[line.function_id as usize - 1];
            profile.string_table[function.name as usize].clone()
        })
        .collect()
}

/// The sum of the values of sample type `kind` over the samples of a decoded profile whose
/// stack has a function that `function` accepts by name (for tests and tools).
///
/// # Panics
/// When the profile has no sample type `kind`.
pub fn total_through(profile: &proto::Profile, function: impl Fn(&str) -> bool, kind: &str) -> i64 {
    let column = sample_type_index(profile, kind)
        .unwrap_or_else(|| panic!("the profile has no sample type {kind}"));
    profile
        .sample
        .iter()
        .filter(|sample| {
            stack_function_names(profile, sample)
                .iter()
                .any(|name| function(name))
        })
        .map(|sample| sample.value[column])
        .sum()
}

/// The sample types, in the order of each sample's values.
pub const SAMPLE_TYPES: [(&str, &str); 4] = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
];

/// A function and line that an address resolves to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Frame {
    name: String,
    system_name: String,
    file: String,
    line: u32,
}

/// Resolves addresses to their frames (innermost inlined function first), once each.
#[derive(Default)]
struct Symbols {
    resolved: HashMap<usize, Vec<Frame>>,
}

impl Symbols {
    /// The frames of the return address `address` (looked up at `address - 1`, in the call).
    fn frames(&mut self, address: usize) -> &[Frame] {
        self.resolved.entry(address).or_insert_with(|| {
            let mut frames = Vec::new();
            backtrace::resolve(
                address.saturating_sub(1) as *mut std::ffi::c_void,
                |symbol| {
                    let name = symbol.name();
                    frames.push(Frame {
                        name: name
                            .as_ref()
                            .map_or(String::new(), |name| format!("{name:#}")),
                        system_name: name
                            .as_ref()
                            .and_then(|name| name.as_str())
                            .unwrap_or_default()
                            .to_string(),
                        file: symbol
                            .filename()
                            .map(|file| file.display().to_string())
                            .unwrap_or_default(),
                        line: symbol.lineno().unwrap_or(0),
                    });
                },
            );
            // The allocator's functions inlined at a call into the allocator (the
            // program's frame that allocated) are left out: its leaf is the program's.
            let inlined_allocator = frames
                .iter()
                .take(frames.len().saturating_sub(1))
                .take_while(|frame| is_allocator_function(&frame.name))
                .count();
            frames.drain(..inlined_allocator);
            frames
        })
    }

    /// Whether the function that holds `address` (the outermost of its frames, into which
    /// the others were inlined) is the allocator's own or the standard library's
    /// allocation glue: such frames at the top of a stack are left out.
    fn is_allocator(&mut self, address: usize) -> bool {
        self.frames(address)
            .last()
            .is_some_and(|frame| is_allocator_function(&frame.name))
    }

    /// The frames of a stack from the program's allocating call outwards: the allocator's
    /// frames at the top dropped (all of them kept if none resolves to the program).
    fn program_frames<'a>(&mut self, stack: &'a SampledStack) -> &'a [usize] {
        let skip = stack
            .frames
            .iter()
            .take_while(|&&address| self.is_allocator(address))
            .count();
        if skip == stack.frames.len() {
            &stack.frames
        } else {
            &stack.frames[skip..]
        }
    }
}

/// Functions of the allocator and of the standard library's allocation glue.
fn is_allocator_function(name: &str) -> bool {
    const PREFIXES: [&str; 10] = [
        "ebbmalloc::",
        "<ebbmalloc::",
        "__rustc::",
        "__rust_alloc",
        "__rust_realloc",
        "__rdl_",
        "__rg_",
        "alloc::alloc::",
        "<alloc::alloc::Global",
        "std::alloc::",
    ];
    PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// Builds the string table as it goes.
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Strings {
        let mut strings = Strings::default();
        strings.get("");
        strings
    }

    fn get(&mut self, text: &str) -> i64 {
        if let Some(&index) = self.index.get(text) {
            return index;
        }
        let index = self.table.len() as i64;
        self.table.push(text.to_string());
        self.index.insert(text.to_string(), index);
        index
    }
}

/// The estimated values of a stack, in the order of [`SAMPLE_TYPES`].
fn values_of(stack: &SampledStack) -> Vec<i64> {
    let counts = &stack.counts;
    [
        counts.alloc_objects,
        counts.alloc_bytes,
        counts.live_objects,
        counts.live_bytes,
    ]
    .iter()
    .map(|value| value.max(0.0).round() as i64)
    .collect()
}

/// `profile` as a pprof message (see the crate docs).
pub fn to_pprof(profile: &HeapProfile) -> proto::Profile {
    let mut strings = Strings::new();
    let mut symbols = Symbols::default();
    let mappings = mappings::loaded_objects();
    let mut out = proto::Profile {
        sample_type: SAMPLE_TYPES
            .iter()
            .map(|(kind, unit)| proto::ValueType {
                r#type: strings.get(kind),
                unit: strings.get(unit),
            })
            .collect(),
        period_type: Some(proto::ValueType {
            r#type: strings.get("space"),
            unit: strings.get("bytes"),
        }),
        period: profile.sample_interval_bytes as i64,
        default_sample_type: strings.get("inuse_space"),
        time_nanos: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as i64),
        ..Default::default()
    };
    out.comment.push(strings.get(&format!(
        "ebbmalloc heap profile: {} samples dropped",
        profile.dropped_samples
    )));
    for (index, mapping) in mappings.iter().enumerate() {
        out.mapping.push(proto::Mapping {
            id: index as u64 + 1,
            memory_start: mapping.start as u64,
            memory_limit: mapping.limit as u64,
            file_offset: mapping.file_offset as u64,
            filename: strings.get(&mapping.path),
            build_id: strings.get(&mapping.build_id),
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        });
    }
    let mut locations: HashMap<usize, u64> = HashMap::new();
    let mut functions: HashMap<(String, String), u64> = HashMap::new();
    for stack in &profile.stacks {
        let mut location_ids = Vec::new();
        for &address in symbols.program_frames(stack) {
            if let Some(&id) = locations.get(&address) {
                location_ids.push(id);
                continue;
            }
            let id = out.location.len() as u64 + 1;
            let mapping_id = mappings
                .iter()
                .position(|mapping| (mapping.start..mapping.limit).contains(&address))
                .map_or(0, |index| index as u64 + 1);
            let mut lines = Vec::new();
            for frame in symbols.frames(address).to_vec() {
                let key = (frame.name.clone(), frame.file.clone());
                let function_id = match functions.get(&key) {
                    Some(&function_id) => function_id,
                    None => {
                        let function_id = out.function.len() as u64 + 1;
                        out.function.push(proto::Function {
                            id: function_id,
                            name: strings.get(&frame.name),
                            system_name: strings.get(&frame.system_name),
                            filename: strings.get(&frame.file),
                            start_line: 0,
                        });
                        functions.insert(key, function_id);
                        function_id
                    }
                };
                lines.push(proto::Line {
                    function_id,
                    line: frame.line as i64,
                });
            }
            out.location.push(proto::Location {
                id,
                mapping_id,
                // The call instruction, within the one before the return address.
                address: address.saturating_sub(1) as u64,
                line: lines,
                is_folded: false,
            });
            locations.insert(address, id);
            location_ids.push(id);
        }
        out.sample.push(proto::Sample {
            location_id: location_ids,
            value: values_of(stack),
            label: Vec::new(),
        });
    }
    out.string_table = strings.table;
    // The `backtrace` crate keeps the debug information it parsed to name the functions
    // (tens of MB for a binary built with debug info) for the life of the process. A
    // server that serves its profile now and then should not keep that: it is dropped,
    // and every profile parses it again (some 150 ms for the `versus` worker).
    backtrace::clear_symbol_cache();
    out
}

/// The estimated live and allocated bytes of one function.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FunctionSummary {
    /// The function's demangled name, without its hash.
    pub name: String,
    /// Estimated live bytes allocated by this function itself (its own frame the
    /// program's innermost on the stack).
    pub flat_live_bytes: f64,
    /// Estimated live bytes allocated by this function and everything it called.
    pub cum_live_bytes: f64,
    /// Estimated live objects allocated by this function and everything it called.
    pub cum_live_objects: f64,
    /// Estimated bytes allocated since profiling began by this function and everything it
    /// called.
    pub cum_alloc_bytes: f64,
}

/// Per function of the program, what it allocated (with inlined functions counted as
/// their own), largest cumulative live bytes first.
pub fn summarize(profile: &HeapProfile) -> Vec<FunctionSummary> {
    let mut symbols = Symbols::default();
    let mut by_name: HashMap<String, FunctionSummary> = HashMap::new();
    for stack in &profile.stacks {
        let mut seen: Vec<String> = Vec::new();
        for (depth, &address) in symbols.program_frames(stack).iter().enumerate() {
            for (inner, frame) in symbols.frames(address).to_vec().into_iter().enumerate() {
                if frame.name.is_empty() {
                    continue;
                }
                let entry = by_name
                    .entry(frame.name.clone())
                    .or_insert_with(|| FunctionSummary {
                        name: frame.name.clone(),
                        ..Default::default()
                    });
                if depth == 0 && inner == 0 {
                    entry.flat_live_bytes += stack.counts.live_bytes;
                }
                if !seen.contains(&frame.name) {
                    entry.cum_live_bytes += stack.counts.live_bytes;
                    entry.cum_live_objects += stack.counts.live_objects;
                    entry.cum_alloc_bytes += stack.counts.alloc_bytes;
                    seen.push(frame.name);
                }
            }
        }
    }
    let mut functions: Vec<FunctionSummary> = by_name.into_values().collect();
    functions.sort_by(|a, b| b.cum_live_bytes.total_cmp(&a.cum_live_bytes));
    functions
}

/// A plain-text summary for a terminal: the totals, then the `limit` functions holding
/// the most live memory (cumulative), one per line.
pub fn text_summary(profile: &HeapProfile, limit: usize) -> String {
    let live: f64 = profile.stacks.iter().map(|s| s.counts.live_bytes).sum();
    let allocated: f64 = profile.stacks.iter().map(|s| s.counts.alloc_bytes).sum();
    let samples: u64 = profile.stacks.iter().map(|s| s.counts.live_samples).sum();
    let mut text = format!(
        "heap profile: estimated live {:.0} bytes ({} samples), allocated {:.0} bytes since \
         activation; sampling every {} bytes on average; {} stacks, {} samples dropped\n\
         {:>14} {:>14} {:>14}  function\n",
        live,
        samples,
        allocated,
        profile.sample_interval_bytes,
        profile.stacks.len(),
        profile.dropped_samples,
        "flat live",
        "cum live",
        "cum alloc",
    );
    for function in summarize(profile).iter().take(limit) {
        text.push_str(&format!(
            "{:>14.0} {:>14.0} {:>14.0}  {}\n",
            function.flat_live_bytes,
            function.cum_live_bytes,
            function.cum_alloc_bytes,
            function.name
        ));
    }
    text
}

/// The loaded objects' executable segments, for the profile's mappings.
pub mod mappings {
    /// An executable segment of a loaded object.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct LoadedSegment {
        /// Its first address in this process.
        pub start: usize,
        /// One past its last.
        pub limit: usize,
        /// Its offset in the file.
        pub file_offset: usize,
        /// The object's path.
        pub path: String,
        /// The object's GNU build id in lower-case hex, or "" if it has none.
        pub build_id: String,
    }

    /// The executable segments of every loaded object (`dl_iterate_phdr`), each with its
    /// object's build id from the object's `PT_NOTE` segments.
    pub fn loaded_objects() -> Vec<LoadedSegment> {
        let mut segments: Vec<LoadedSegment> = Vec::new();
        // SAFETY: the callback gets a valid `dl_phdr_info` for each object and our Vec
        // through `data`, for the duration of the call only.
        unsafe {
            libc::dl_iterate_phdr(
                Some(each_object),
                &mut segments as *mut Vec<LoadedSegment> as *mut libc::c_void,
            );
        }
        segments
    }

    unsafe extern "C" fn each_object(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `dl_iterate_phdr` passes a valid info and our Vec (see the caller); the
        // program headers and the notes they point to are mapped while the object is
        // loaded, which it stays during the call (the loader's lock is held).
        unsafe {
            let segments = &mut *(data as *mut Vec<LoadedSegment>);
            let info = &*info;
            let headers = std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize);
            let base = info.dlpi_addr as usize;
            let mut path = if info.dlpi_name.is_null() {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(info.dlpi_name)
                    .to_string_lossy()
                    .into_owned()
            };
            if path.is_empty() {
                // The main program.
                path = std::env::current_exe()
                    .map(|exe| exe.display().to_string())
                    .unwrap_or_default();
            }
            let build_id = headers
                .iter()
                .filter(|header| header.p_type == libc::PT_NOTE)
                .find_map(|header| {
                    let notes = std::slice::from_raw_parts(
                        (base + header.p_vaddr as usize) as *const u8,
                        header.p_memsz as usize,
                    );
                    build_id_of(notes)
                })
                .unwrap_or_default();
            for header in headers {
                if header.p_type == libc::PT_LOAD && header.p_flags & libc::PF_X != 0 {
                    let start = base + header.p_vaddr as usize;
                    segments.push(LoadedSegment {
                        start,
                        limit: start + header.p_memsz as usize,
                        file_offset: header.p_offset as usize,
                        path: path.clone(),
                        build_id: build_id.clone(),
                    });
                }
            }
        }
        0
    }

    /// The GNU build id in a run of ELF notes, in hex.
    pub(crate) fn build_id_of(mut notes: &[u8]) -> Option<String> {
        const NT_GNU_BUILD_ID: u32 = 3;
        let word = |bytes: &[u8], at: usize| -> Option<u32> {
            Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
        };
        while notes.len() >= 12 {
            let name_len = word(notes, 0)? as usize;
            let desc_len = word(notes, 4)? as usize;
            let kind = word(notes, 8)?;
            let name_at = 12;
            let desc_at = name_at + name_len.next_multiple_of(4);
            let end = desc_at + desc_len.next_multiple_of(4);
            let name = notes.get(name_at..name_at + name_len)?;
            let desc = notes.get(desc_at..desc_at + desc_len)?;
            if kind == NT_GNU_BUILD_ID && name == b"GNU\0" {
                return Some(desc.iter().map(|byte| format!("{byte:02x}")).collect());
            }
            notes = notes.get(end..)?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_ids_are_read_from_notes() {
        let mut notes = Vec::new();
        // An unrelated note first, then the build id.
        for (kind, name, desc) in [
            (1u32, &b"XYZ\0"[..], &[1u8, 2, 3][..]),
            (3, b"GNU\0", &[0xab, 0x01, 0xff, 0x10]),
        ] {
            notes.extend_from_slice(&(name.len() as u32).to_ne_bytes());
            notes.extend_from_slice(&(desc.len() as u32).to_ne_bytes());
            notes.extend_from_slice(&kind.to_ne_bytes());
            notes.extend_from_slice(name);
            notes.resize(notes.len().next_multiple_of(4), 0);
            notes.extend_from_slice(desc);
            notes.resize(notes.len().next_multiple_of(4), 0);
        }
        assert_eq!(mappings::build_id_of(&notes).as_deref(), Some("ab01ff10"));
        assert_eq!(mappings::build_id_of(&notes[..20]), None);
    }

    #[test]
    fn this_program_is_among_the_mappings_with_a_build_id() {
        let here = this_program_is_among_the_mappings_with_a_build_id as fn() as usize;
        let segments = mappings::loaded_objects();
        let mine = segments
            .iter()
            .find(|segment| (segment.start..segment.limit).contains(&here))
            .expect("the test's own code is in an executable segment");
        assert!(!mine.path.is_empty());
        assert!(mine.build_id.len() >= 16, "build id {:?}", mine.build_id);
    }

    #[test]
    fn allocator_frames_are_recognised() {
        assert!(is_allocator_function("ebbmalloc::profiling::alloc_small"));
        assert!(is_allocator_function(
            "<ebbmalloc::EbbMalloc as core::alloc::global::GlobalAlloc>::alloc"
        ));
        assert!(is_allocator_function("__rust_alloc"));
        assert!(is_allocator_function("__rustc::__rust_alloc_zeroed"));
        assert!(!is_allocator_function("alloc::raw_vec::finish_grow"));
        assert!(!is_allocator_function("heap_profile::alloc_a"));
    }
}
