//! The messages of pprof's `profile.proto` (github.com/google/pprof, `proto/profile.proto`)
//! that a heap profile uses, derived by hand with `prost` so that no build script or
//! `protoc` is needed. Field numbers and types are the proto's; strings are indices into
//! `Profile::string_table`, whose entry 0 is the empty string.

/// A profile: sample types, samples, and the tables they refer to.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    /// What each of a sample's values measures.
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    /// The samples.
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    /// The loaded objects.
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    /// Program addresses, each with its function(s) and line(s).
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    /// Functions named in the locations.
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// Every string of the profile; entry 0 is "".
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    /// A regular expression of frames to drop (string index).
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    /// A regular expression of frames to keep (string index).
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    /// When the profile was taken, in nanoseconds since the epoch.
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    /// How long the profile covers, in nanoseconds.
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    /// What the period counts.
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    /// The sampling period: for a heap profile, the mean bytes between samples.
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// Free-form comments (string indices).
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    /// The sample type shown by default (string index of its type).
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

/// A kind of value and its unit (string indices).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    /// What is measured, e.g. "inuse_space".
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    /// Its unit, e.g. "bytes".
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// One stack and its values, one per sample type.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Location ids, leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    /// One value per sample type.
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    /// Labels of the sample.
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

/// A label of a sample.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// The label's name (string index).
    #[prost(int64, tag = "1")]
    pub key: i64,
    /// A string value (string index), or 0.
    #[prost(int64, tag = "2")]
    pub str: i64,
    /// A numeric value.
    #[prost(int64, tag = "3")]
    pub num: i64,
    /// The unit of `num` (string index).
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

/// A loaded object: where its executable segment lies, and its file and build id.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mapping {
    /// Unique, non-zero.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// First address of the segment.
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    /// One past its last address.
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    /// Where the segment starts in the file.
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    /// The object's path (string index).
    #[prost(int64, tag = "5")]
    pub filename: i64,
    /// Its GNU build id in hex (string index).
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    /// Whether the locations in it name functions.
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    /// Whether they name files.
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    /// Whether they have line numbers.
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    /// Whether they have inlined frames.
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// A program address.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    /// Unique, non-zero.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The mapping it lies in, or 0.
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    /// The address (of the call instruction, for a return address).
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Its functions: the innermost (inlined) first, the one it was inlined into last.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    /// Whether several functions were folded together here.
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

/// A function and line of a location.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Line {
    /// The function's id.
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    /// The line number, or 0.
    #[prost(int64, tag = "2")]
    pub line: i64,
}

/// A function.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    /// Unique, non-zero.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Its demangled name (string index).
    #[prost(int64, tag = "2")]
    pub name: i64,
    /// Its symbol name (string index).
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    /// Its source file (string index).
    #[prost(int64, tag = "4")]
    pub filename: i64,
    /// Its first line, or 0.
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}
