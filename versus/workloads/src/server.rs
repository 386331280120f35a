//! A real server: HTTP/1.1 with hyper on tokio, JSON in and out with serde, loaded over
//! loopback (127.0.0.1, an ephemeral port) by a built-in load generator: 32 keep-alive
//! connections, each sending requests one after the other for a fixed time. The load is
//! bounded in time and count and stops by itself; nothing leaves the machine.
//!
//! Besides the orders (a POST on any path), the server answers a GET on
//! [`HEAP_PROFILE_PATH`], `/debug/pprof/heap`, with the heap profile of the worker's
//! allocator, as Go's `net/http/pprof` does, so that `go tool pprof` can read it from the
//! running server. This crate does not know the allocator: the worker binary supplies the
//! profile through [`set_heap_profile_source`] (the ebbmalloc worker does, from
//! `ebbmalloc-pprof`); without a source the answer is 501 Not Implemented.
//! [`start`] runs the server alone, without the load generator (`versus-worker --serve`).

use crate::rng::XorShift;
use crate::{rss, Better, Kind, Metric, Scale};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

/// Connections of the load generator.
pub const CONNECTIONS: usize = 32;
/// Server worker threads.
pub const SERVER_THREADS: usize = 2;
/// At most this many requests per connection, whatever the time.
const MAX_REQUESTS_PER_CONNECTION: usize = 1_000_000;
/// Distinct request bodies the load generator cycles through.
const BODIES: usize = 16;
/// Where a GET fetches the heap profile (the path of Go's `net/http/pprof`). Its query,
/// `?seconds=` and the like, is ignored.
pub const HEAP_PROFILE_PATH: &str = "/debug/pprof/heap";

/// A heap profile as a gzip-compressed pprof protobuf, or `None` if there is none to give.
pub type HeapProfileSource = fn() -> Option<Vec<u8>>;

static HEAP_PROFILE_SOURCE: OnceLock<HeapProfileSource> = OnceLock::new();

/// Makes `source` the supplier of the profile a GET on [`HEAP_PROFILE_PATH`] answers with.
/// Once per process, before serving; panics if a source is set already.
pub fn set_heap_profile_source(source: HeapProfileSource) {
    assert!(
        HEAP_PROFILE_SOURCE.set(source).is_ok(),
        "a heap profile source is set already"
    );
}

#[derive(Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub customer: Customer,
    pub items: Vec<Item>,
    pub tags: Vec<String>,
    pub note: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub struct Customer {
    pub name: String,
    pub email: String,
    pub address: Vec<String>,
}

#[derive(Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub name: String,
    pub qty: u32,
    pub price: f64,
    pub tags: Vec<String>,
    pub attrs: HashMap<String, String>,
}

#[derive(Serialize, Deserialize)]
pub struct Receipt {
    pub order_id: String,
    pub customer: String,
    pub lines: Vec<Line>,
    pub totals_by_tag: HashMap<String, f64>,
    pub skus: Vec<String>,
    pub total: f64,
    pub summary: String,
}

#[derive(Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    pub description: String,
    pub amount: f64,
    pub attrs: Vec<String>,
}

/// The server's work on one order: a receipt with a line per item, totals per tag, the
/// sorted SKUs and a summary.
pub fn receipt(order: Order) -> Receipt {
    let mut totals_by_tag: HashMap<String, f64> = HashMap::new();
    let mut lines = Vec::new();
    let mut skus = Vec::new();
    let mut total = 0.0;
    for item in order.items {
        let amount = item.price * item.qty as f64;
        total += amount;
        for tag in item.tags.iter().chain(order.tags.iter()) {
            *totals_by_tag.entry(tag.clone()).or_insert(0.0) += amount;
        }
        let mut attrs: Vec<String> = item.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        attrs.sort();
        skus.push(item.sku.clone());
        lines.push(Line {
            description: format!("{} x {} @ {:.2}", item.qty, item.name, item.price),
            sku: item.sku,
            amount,
            attrs,
        });
    }
    skus.sort();
    Receipt {
        summary: format!(
            "{} lines for {} <{}>, total {:.2}{}",
            lines.len(),
            order.customer.name,
            order.customer.email,
            total,
            order.note.map(|n| format!(" ({n})")).unwrap_or_default()
        ),
        order_id: order.order_id,
        customer: order.customer.name,
        lines,
        totals_by_tag,
        skus,
        total,
    }
}

const WORDS: &[&str] = &[
    "red", "green", "blue", "large", "small", "steel", "wooden", "glass", "lamp", "chair", "table",
    "cable", "screw", "panel", "frame", "spring", "summer", "sale", "new", "gift",
];

fn words(rng: &mut XorShift, n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.below(WORDS.len())]);
    }
    s
}

/// A request body: an order of 4..=32 items (about 1..8 KiB of JSON).
pub fn order_body(rng: &mut XorShift, n: usize) -> Vec<u8> {
    let items = (0..rng.range(4, 32))
        .map(|_| Item {
            sku: format!("SKU-{:06}", rng.below(1_000_000)),
            name: words(rng, 3),
            qty: rng.range(1, 9) as u32,
            price: rng.range(100, 99_999) as f64 / 100.0,
            tags: (0..rng.range(0, 3)).map(|_| words(rng, 1)).collect(),
            attrs: (0..rng.range(1, 4))
                .map(|k| (format!("attr{k}"), words(rng, 2)))
                .collect(),
        })
        .collect::<Vec<_>>();
    let order = Order {
        order_id: format!("order-{n}-{}", items.len()),
        customer: Customer {
            name: words(rng, 2),
            email: format!("customer{}@example.com", rng.below(10_000)),
            address: vec![
                words(rng, 3),
                words(rng, 2),
                format!("{:05}", rng.below(99_999)),
            ],
        },
        items,
        tags: (0..rng.range(0, 2)).map(|_| words(rng, 1)).collect(),
        note: (rng.below(2) == 0).then(|| words(rng, 6)),
    };
    serde_json::to_vec(&order).expect("an order serializes")
}

/// The answer to a GET on [`HEAP_PROFILE_PATH`]: the source's profile, or 501.
fn heap_profile() -> Response<Full<Bytes>> {
    let profile = HEAP_PROFILE_SOURCE.get().and_then(|source| source());
    let (status, content_type, body) = match profile {
        Some(profile) => (StatusCode::OK, "application/octet-stream", profile),
        None => (
            StatusCode::NOT_IMPLEMENTED,
            "text/plain; charset=utf-8",
            b"no heap profile: this worker's allocator gives none, or its profiling is off \
              (the ebbmalloc worker's is on with EBBMALLOC_PROF=1)\n"
                .to_vec(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    resp
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    // One compare of the path (of unequal lengths for the orders' `/order`).
    if req.uri().path() == HEAP_PROFILE_PATH && req.method() == Method::GET {
        return Ok(heap_profile());
    }
    let body = req.into_body().collect().await?.to_bytes();
    let (status, out) = match serde_json::from_slice::<Order>(&body) {
        Ok(order) => (
            StatusCode::OK,
            serde_json::to_vec(&receipt(order)).expect("a receipt serializes"),
        ),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string().into_bytes()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(out)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// The server: a runtime of [`SERVER_THREADS`] worker threads serving on a listener bound
/// to `addr` until the runtime is dropped; and the address bound.
pub fn start(addr: SocketAddr) -> std::io::Result<(tokio::runtime::Runtime, SocketAddr)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(SERVER_THREADS)
        .enable_all()
        .build()?;
    let listener = runtime.block_on(TcpListener::bind(addr))?;
    let bound = listener.local_addr()?;
    runtime.spawn(serve(listener));
    Ok((runtime, bound))
}

async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}

/// One connection of the load generator: requests until `deadline`; the latency of each in
/// microseconds.
async fn connection(
    addr: SocketAddr,
    bodies: Vec<Bytes>,
    first: usize,
    deadline: Instant,
) -> Result<Vec<u32>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let driver = tokio::spawn(conn);
    let mut latencies = Vec::with_capacity(4096);
    let mut i = first;
    while Instant::now() < deadline && latencies.len() < MAX_REQUESTS_PER_CONNECTION {
        sender.ready().await.map_err(|e| format!("ready: {e}"))?;
        let req = Request::builder()
            .method(Method::POST)
            .uri("/order")
            .header(HOST, "127.0.0.1")
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(bodies[i % bodies.len()].clone()))
            .map_err(|e| e.to_string())?;
        i += 1;
        let start = Instant::now();
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        latencies.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
        if status != StatusCode::OK || body.len() < 2 {
            return Err(format!("status {status}, {} bytes", body.len()));
        }
    }
    drop(sender);
    let _ = driver.await;
    Ok(latencies)
}

/// The `q` quantile (0..=1) of sorted values.
pub fn quantile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn run(scale: Scale, seed: u64) -> Vec<Metric> {
    let load = Duration::from_millis(scale.pick(5000, 1000, 200));
    let after = Duration::from_millis(scale.pick(1000, 1000, 20));

    let (server_rt, addr) =
        start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("a server on 127.0.0.1:0");
    assert!(addr.ip().is_loopback());

    let mut rng = XorShift::new(seed);
    let bodies: Vec<Bytes> = (0..BODIES)
        .map(|n| Bytes::from(order_body(&mut rng, n)))
        .collect();

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let start = Instant::now();
    let deadline = start + load;
    let results = client_rt.block_on(async {
        let tasks: Vec<_> = (0..CONNECTIONS)
            .map(|c| tokio::spawn(connection(addr, bodies.clone(), c, deadline)))
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            // A hard bound in case the server stops answering.
            let r = tokio::time::timeout(load + Duration::from_secs(30), t).await;
            out.push(match r {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(format!("task: {e}")),
                Err(_) => Err("timed out".to_string()),
            });
        }
        out
    });
    let secs = start.elapsed().as_secs_f64();
    drop(client_rt);
    let peak = rss::peak_kib();

    let mut latencies = Vec::new();
    for r in results {
        match r {
            Ok(l) => latencies.extend(l),
            Err(e) => panic!("load generator: {e}"),
        }
    }
    latencies.sort_unstable();
    let requests = latencies.len() as u64;

    // The server stays up, idle, for a second after the load stops.
    std::thread::sleep(after);
    let rss_after = rss::current_kib();
    server_rt.shutdown_timeout(Duration::from_secs(1));

    let ms = |us: u32| us as f64 / 1000.0;
    vec![
        Metric::new(
            "requests",
            "kreq/s",
            requests as f64 / secs / 1000.0,
            Better::Higher,
            Kind::Throughput,
        ),
        Metric::new(
            "p50 latency",
            "ms",
            ms(quantile(&latencies, 0.50)),
            Better::Lower,
            Kind::Latency,
        ),
        Metric::new(
            "p99 latency",
            "ms",
            ms(quantile(&latencies, 0.99)),
            Better::Lower,
            Kind::Latency,
        ),
        Metric::rss("peak RSS", peak),
        Metric::rss("RSS 1 s after load", rss_after),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 51);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn receipt_of_an_order() {
        let mut rng = XorShift::new(3);
        let body = order_body(&mut rng, 0);
        let order: Order = serde_json::from_slice(&body).unwrap();
        let n = order.items.len();
        let r = receipt(order);
        assert_eq!(r.lines.len(), n);
        assert_eq!(r.skus.len(), n);
        assert!(r.skus.windows(2).all(|w| w[0] <= w[1]));
        assert!(r.total > 0.0);
    }

    #[test]
    fn tiny_run_serves_requests() {
        let m = run(Scale::Tiny, 1);
        assert_eq!(m.len(), 5);
        assert!(m[0].value > 0.0, "no requests served");
    }
}
