//! The server workload's `/debug/pprof/heap`: served from this process, with ebbmalloc as
//! its global allocator and profiling on, it must answer with a pprof protobuf that decodes
//! and holds the server's allocations; with profiling off, or from a worker that has no
//! profile to give, it must answer 501. `versus-worker --serve` must serve orders and the
//! endpoint standing alone.
//!
//! Requests are plain HTTP/1.1 over a `TcpStream`, one connection each (`Connection: close`).

#[global_allocator]
static GLOBAL: ebbmalloc::EbbMalloc = ebbmalloc::EbbMalloc;

use ebbmalloc_pprof::proto;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use versus_workloads::rng::XorShift;
use versus_workloads::server::{self, HEAP_PROFILE_PATH};

/// An answer: the status, the Content-Type and the body.
struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("an answer");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("the end of the headers");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    Answer {
        status,
        content_type,
        body: raw[end + 4..].to_vec(),
    }
}

/// `count` orders, each of which must be answered with a receipt.
fn post_orders(addr: SocketAddr, count: usize) {
    let mut rng = XorShift::new(5);
    for n in 0..count {
        let answer = request(addr, "POST", "/order", &server::order_body(&mut rng, n));
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.content_type, "application/json");
    }
}

fn assert_not_implemented(answer: &Answer) {
    let text = String::from_utf8_lossy(&answer.body);
    assert_eq!(answer.status, 501, "{text}");
    assert!(text.contains("EBBMALLOC_PROF=1"), "{text}");
}

/// The body of a 200 answer, decoded.
fn profile_of(answer: &Answer) -> proto::Profile {
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.content_type, "application/octet-stream");
    assert_eq!(&answer.body[..2], &[0x1f, 0x8b], "gzip magic");
    ebbmalloc_pprof::decode_gzip(&answer.body).expect("a pprof protobuf")
}

/// What a heap profile of the server must show: the four sample types, `inuse_space` the
/// default; samples with stacks whose locations resolve to functions; live bytes; and the
/// orders' work (`receipt`, called only by the server) among the allocated bytes.
fn check_server_profile(profile: &proto::Profile) {
    let types: Vec<&str> = profile
        .sample_type
        .iter()
        .map(|kind| profile.string_table[kind.r#type as usize].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "alloc_objects",
            "alloc_space",
            "inuse_objects",
            "inuse_space"
        ]
    );
    assert_eq!(
        profile.string_table[profile.default_sample_type as usize],
        "inuse_space"
    );
    assert!(!profile.sample.is_empty(), "no samples");
    for sample in &profile.sample {
        assert!(!sample.location_id.is_empty(), "a sample without a stack");
        assert!(
            !ebbmalloc_pprof::stack_function_names(profile, sample).is_empty(),
            "a stack without functions"
        );
    }
    let inuse = ebbmalloc_pprof::sample_type_index(profile, "inuse_space").expect("inuse_space");
    assert!(
        profile.sample.iter().any(|sample| sample.value[inuse] > 0),
        "no live bytes"
    );
    let receipts = ebbmalloc_pprof::total_through(
        profile,
        |name| name.contains("versus_workloads::server::receipt"),
        "alloc_space",
    );
    assert!(receipts > 0, "no allocation of the orders' receipts");
}

#[test]
fn served_heap_profile_decodes_and_holds_the_servers_allocations() {
    // A sample every 1 KiB on average, rather than every 512 KiB: a few hundred
    // requests give thousands of samples, so that every property below holds surely.
    let mut settings = ebbmalloc::Settings::current();
    settings.prof_sample_bytes = 1 << 10;
    ebbmalloc::configure(&settings);
    ebbmalloc::profiling::set_active(true);
    // The source the ebbmalloc worker sets (src/bin/versus-worker.rs).
    server::set_heap_profile_source(|| {
        ebbmalloc::profiling::is_active().then(ebbmalloc_pprof::dump_pprof)
    });
    let (runtime, addr) = server::start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("a server");

    post_orders(addr, 200);
    // A query, such as Go's `?seconds=`, is ignored.
    for path in [HEAP_PROFILE_PATH, "/debug/pprof/heap?seconds=5"] {
        let profile = profile_of(&request(addr, "GET", path, b""));
        assert_eq!(profile.period, 1 << 10);
        check_server_profile(&profile);
    }

    // The source gives no profile while profiling is off.
    ebbmalloc::profiling::set_active(false);
    assert_not_implemented(&request(addr, "GET", HEAP_PROFILE_PATH, b""));
    drop(runtime);
}

/// A `versus-worker --serve` process, killed when dropped.
struct Worker {
    child: Child,
    addr: SocketAddr,
}

impl Worker {
    fn start(prof: bool) -> Worker {
        let mut command = Command::new(env!("CARGO_BIN_EXE_versus-worker"));
        command
            .args(["--workload", "server", "--serve", "127.0.0.1:0"])
            .env_remove("EBBMALLOC_PROF")
            .stdout(Stdio::piped());
        if prof {
            // A sample every 4 KiB on average (see the in-process test).
            command
                .env("EBBMALLOC_PROF", "1")
                .env("EBBMALLOC_PROF_SAMPLE", "4096");
        }
        let mut child = command.spawn().expect("versus-worker starts");
        // "versus-worker (ALLOC): serving on http://ADDR (...)"
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("the worker's first line");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("no address in {line:?}")
            });
        Worker { child, addr }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn worker_serves_standing_alone_and_a_profile_only_when_it_has_one() {
    let alloc = Command::new(env!("CARGO_BIN_EXE_versus-worker"))
        .arg("--allocator")
        .output()
        .expect("versus-worker --allocator");
    let alloc = String::from_utf8(alloc.stdout).unwrap();

    // Built without an ebbmalloc feature (as by `cargo test --workspace`), the worker has no
    // profile source; an ebbmalloc worker has one, which gives nothing with profiling off.
    let worker = Worker::start(false);
    post_orders(worker.addr, 20);
    assert_not_implemented(&request(worker.addr, "GET", HEAP_PROFILE_PATH, b""));
    drop(worker);

    // `cargo test -p versus --features alloc-ebbmalloc` runs this part.
    if alloc.starts_with("ebbmalloc") {
        let worker = Worker::start(true);
        post_orders(worker.addr, 200);
        check_server_profile(&profile_of(&request(
            worker.addr,
            "GET",
            HEAP_PROFILE_PATH,
            b"",
        )));
    }
}
