//! redcache side by side with the `cached` crate (and a hand-written cache-aside), on the
//! same private `redis-server`, the same ~180-byte value and the same tokio runtime (multi
//! thread, 2 workers):
//!
//! 1. hits: ops/s and p99 at 1, 16, 64 and 256 concurrent tasks, each task looping on its
//!    own key for a fixed time slice; rounds interleave the implementations (redcache
//!    twice: with its default JSON, and with MessagePack, the encoding `cached` uses);
//! 2. misses: every call on a new key (the body answers at once), at 1 and 16 tasks;
//! 3. stampede: 200 concurrent callers on one cold key whose body sleeps 50 ms;
//! 4. outage: on a second server, keys warmed, the server SIGKILLed, then 200 calls (warmed
//!    keys and new ones), each with a 2 s deadline.
//!
//! Run from the repository root:
//! `cargo run --release --manifest-path benches/peers/Cargo.toml`. Markdown on stdout.

mod server;

use cached::macros::concurrent_cached;
use md5::{Digest, Md5};
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use server::RedisServer;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// One round's time slice per implementation and concurrency.
const SLICE: Duration = Duration::from_secs(1);
/// Interleaved rounds of the hit table.
const HIT_REPEATS: usize = 5;
/// Interleaved rounds of the miss table.
const MISS_REPEATS: usize = 3;
const HIT_TASKS: [usize; 4] = [1, 16, 64, 256];
const MISS_TASKS: [usize; 2] = [1, 16];
const STAMPEDE_CALLERS: usize = 200;
const STAMPEDE_TRIALS: usize = 3;
const OUTAGE_CALLS: usize = 200;
const OUTAGE_TASKS: usize = 20;
const OUTAGE_WARM: u64 = 100;
const OUTAGE_DEADLINE: Duration = Duration::from_secs(2);
const TTL: u64 = 3600;
const MISS_TTL: u64 = 60;

// The value: the workspace benches' own struct, the same file.
#[path = "../../shared/mod.rs"]
mod shared;
use shared::{profile, Profile};

/// The error every implementation returns: the `cached` crate needs a `Result` for its
/// Redis store, so all three have the same signature.
#[derive(Debug, Clone)]
pub struct PeerError(#[allow(dead_code)] String);

fn peer_err(e: impl std::fmt::Debug) -> PeerError {
    PeerError(format!("{e:?}"))
}

/// A key nobody used yet.
fn fresh_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1 << 40);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Body runs of the stampede functions, one counter per implementation.
static STAMPEDE_RUNS: [AtomicUsize; 4] = [
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
];

async fn stampede_body(peer: Peer, id: u64) -> Result<Profile, PeerError> {
    STAMPEDE_RUNS[peer as usize].fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(profile(id))
}

// ---------------------------------------------------------------------------------------
// (a) the `cached` crate: `#[concurrent_cached]` over `cached::AsyncRedisCache` (4.x renamed
// `#[io_cached]` to `#[concurrent_cached]`).

static MAIN_URL: OnceLock<String> = OnceLock::new();
static OUTAGE_URL: OnceLock<String> = OnceLock::new();

/// Prefixes without `:`: the `cached` crate percent-escapes a `:` inside its key fields.
async fn cached_store(
    url: &OnceLock<String>,
    prefix: &str,
    ttl: u64,
) -> cached::AsyncRedisCache<u64, Profile> {
    cached::AsyncRedisCache::builder(prefix)
        .ttl(Duration::from_secs(ttl))
        .connection_string(url.get().expect("server URL set before the first call"))
        .build()
        .await
        .expect("build the cached crate's AsyncRedisCache")
}

#[concurrent_cached(
    map_error = |e| PeerError(format!("{e:?}")),
    ty = "cached::AsyncRedisCache<u64, Profile>",
    create = { cached_store(&MAIN_URL, "peers_cached_hit", TTL).await }
)]
async fn cached_hit(id: u64) -> Result<Profile, PeerError> {
    Ok(profile(id))
}

#[concurrent_cached(
    map_error = |e| PeerError(format!("{e:?}")),
    ty = "cached::AsyncRedisCache<u64, Profile>",
    create = { cached_store(&MAIN_URL, "peers_cached_miss", MISS_TTL).await }
)]
async fn cached_miss(id: u64) -> Result<Profile, PeerError> {
    Ok(profile(id))
}

#[concurrent_cached(
    map_error = |e| PeerError(format!("{e:?}")),
    ty = "cached::AsyncRedisCache<u64, Profile>",
    create = { cached_store(&MAIN_URL, "peers_cached_stampede", TTL).await }
)]
async fn cached_stampede(id: u64) -> Result<Profile, PeerError> {
    stampede_body(Peer::Cached, id).await
}

#[concurrent_cached(
    map_error = |e| PeerError(format!("{e:?}")),
    ty = "cached::AsyncRedisCache<u64, Profile>",
    create = { cached_store(&OUTAGE_URL, "peers_cached_outage", TTL).await }
)]
async fn cached_outage(id: u64) -> Result<Profile, PeerError> {
    Ok(profile(id))
}

// ---------------------------------------------------------------------------------------
// (b) redcache, Redis path only (no local tier).

#[redcache::cached(prefix = "peers:rc:hit", ttl = 3600)]
async fn rc_hit(id: u64) -> Result<Profile, PeerError> {
    Ok(profile(id))
}

#[redcache::cached(prefix = "peers:rc:miss", ttl = 60)]
async fn rc_miss(id: u64) -> Result<Profile, PeerError> {
    Ok(profile(id))
}

#[redcache::cached(prefix = "peers:rc:stampede", ttl = 3600)]
async fn rc_stampede(id: u64) -> Result<Profile, PeerError> {
    stampede_body(Peer::Redcache, id).await
}

#[redcache::cached(prefix = "peers:rc:outage", ttl = 3600)]
async fn rc_outage(id: u64) -> Result<Profile, PeerError> {
    Ok(profile(id))
}

// (b') the same with `codec = "msgpack"`: MessagePack with field names, as `cached` stores.

#[redcache::cached(prefix = "peers:rcmp:hit", ttl = 3600, codec = "msgpack")]
async fn rcmp_hit(id: u64) -> Result<Profile, PeerError> {
    Ok(profile(id))
}

#[redcache::cached(prefix = "peers:rcmp:miss", ttl = 60, codec = "msgpack")]
async fn rcmp_miss(id: u64) -> Result<Profile, PeerError> {
    Ok(profile(id))
}

#[redcache::cached(prefix = "peers:rcmp:stampede", ttl = 3600, codec = "msgpack")]
async fn rcmp_stampede(id: u64) -> Result<Profile, PeerError> {
    stampede_body(Peer::RedcacheMsgpack, id).await
}

#[redcache::cached(prefix = "peers:rcmp:outage", ttl = 3600, codec = "msgpack")]
async fn rcmp_outage(id: u64) -> Result<Profile, PeerError> {
    Ok(profile(id))
}

// ---------------------------------------------------------------------------------------
// (c) hand-written cache-aside: md5 of the JSON arguments, GET on a MultiplexedConnection,
// serde_json; on a miss the body, then SET EX. Any Redis error is returned.

#[derive(Clone)]
struct Hand {
    conn: MultiplexedConnection,
}

impl Hand {
    async fn connect(url: &str) -> Hand {
        let conn = redis::Client::open(url)
            .expect("parse the Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis-server");
        Hand { conn }
    }

    fn key(prefix: &str, id: u64) -> String {
        let material = serde_json::to_vec(&(id,)).expect("JSON of the arguments");
        let digest = Md5::digest(&material);
        let mut key = String::with_capacity(prefix.len() + 33);
        key.push_str(prefix);
        key.push(':');
        for b in digest {
            use std::fmt::Write;
            let _ = write!(key, "{b:02x}");
        }
        key
    }

    async fn get_or_fill<F, Fut>(
        &self,
        prefix: &str,
        id: u64,
        ttl: u64,
        body: F,
    ) -> Result<Profile, PeerError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Profile, PeerError>>,
    {
        let key = Hand::key(prefix, id);
        let mut conn = self.conn.clone();
        let found: Option<Vec<u8>> = conn.get(&key).await.map_err(peer_err)?;
        if let Some(bytes) = found {
            return serde_json::from_slice(&bytes).map_err(peer_err);
        }
        let value = body().await?;
        let json = serde_json::to_vec(&value).map_err(peer_err)?;
        let _: () = conn.set_ex(&key, json, ttl).await.map_err(peer_err)?;
        Ok(value)
    }
}

// ---------------------------------------------------------------------------------------
// Dispatch.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Peer {
    Cached = 0,
    Redcache = 1,
    Hand = 2,
    RedcacheMsgpack = 3,
}

const PEERS: [Peer; 4] = [
    Peer::Cached,
    Peer::Redcache,
    Peer::Hand,
    Peer::RedcacheMsgpack,
];

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Cached => "`cached` 4.1 `#[concurrent_cached]`",
            Peer::Redcache => "redcache `#[cached]`",
            Peer::Hand => "hand-written GET + serde_json",
            Peer::RedcacheMsgpack => "redcache `#[cached(codec = \"msgpack\")]`",
        }
    }
}

async fn hit(peer: Peer, hand: &Hand, id: u64) -> Result<Profile, PeerError> {
    match peer {
        Peer::Cached => cached_hit(id).await,
        Peer::Redcache => rc_hit(id).await,
        Peer::RedcacheMsgpack => rcmp_hit(id).await,
        Peer::Hand => {
            hand.get_or_fill("peers:hand:hit", id, TTL, || async move { Ok(profile(id)) })
                .await
        }
    }
}

async fn miss(peer: Peer, hand: &Hand, id: u64) -> Result<Profile, PeerError> {
    match peer {
        Peer::Cached => cached_miss(id).await,
        Peer::Redcache => rc_miss(id).await,
        Peer::RedcacheMsgpack => rcmp_miss(id).await,
        Peer::Hand => {
            hand.get_or_fill("peers:hand:miss", id, MISS_TTL, || async move {
                Ok(profile(id))
            })
            .await
        }
    }
}

async fn stampede(peer: Peer, hand: &Hand, id: u64) -> Result<Profile, PeerError> {
    match peer {
        Peer::Cached => cached_stampede(id).await,
        Peer::Redcache => rc_stampede(id).await,
        Peer::RedcacheMsgpack => rcmp_stampede(id).await,
        Peer::Hand => {
            hand.get_or_fill("peers:hand:stampede", id, TTL, || {
                stampede_body(Peer::Hand, id)
            })
            .await
        }
    }
}

async fn outage(
    peer: Peer,
    hand: &Hand,
    rc: &redcache::Cache,
    id: u64,
) -> Result<Profile, PeerError> {
    match peer {
        Peer::Cached => cached_outage(id).await,
        Peer::Redcache => rc.scope(rc_outage(id)).await,
        Peer::RedcacheMsgpack => rc.scope(rcmp_outage(id)).await,
        Peer::Hand => {
            hand.get_or_fill(
                "peers:hand:outage",
                id,
                TTL,
                || async move { Ok(profile(id)) },
            )
            .await
        }
    }
}

// ---------------------------------------------------------------------------------------
// Measurement.

#[derive(Clone, Copy)]
struct Sample {
    ops_per_sec: f64,
    p99: Duration,
}

/// `tasks` concurrent tasks, each calling `op(task)` in a loop until `slice` has passed
/// since the start; every call's latency is kept. Ops/s counts every call over the time
/// until the last task has finished its last call.
async fn run_slice<F, Fut>(tasks: usize, slice: Duration, op: F) -> Sample
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let deadline = start + slice;
    let handles: Vec<_> = (0..tasks as u64)
        .map(|task| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(16 * 1024);
                loop {
                    let t = Instant::now();
                    if t >= deadline {
                        break;
                    }
                    op(task).await;
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("a benchmark task panicked"));
    }
    let elapsed = start.elapsed();
    all.sort_unstable();
    Sample {
        ops_per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p99: all[(all.len() * 99 / 100).min(all.len() - 1)],
    }
}

/// Each implementation's samples at one concurrency.
type Rows = Vec<(usize, [Vec<Sample>; 4])>;

/// `repeats` rounds at each of `tasks`, each round taking one slice of every
/// implementation in turn, each round starting one implementation later (`cached`,
/// redcache, hand-written, redcache with MessagePack; then redcache, hand-written, ...,
/// `cached`), so that none always comes first or after the same one.
async fn interleaved<F, Fut>(tasks: &[usize], repeats: usize, slice: F) -> Rows
where
    F: Fn(Peer, usize) -> Fut,
    Fut: Future<Output = Sample>,
{
    let mut rows = Vec::new();
    for &tasks in tasks {
        let mut samples: [Vec<Sample>; 4] = Default::default();
        for round in 0..repeats {
            for i in 0..PEERS.len() {
                let peer = PEERS[(round + i) % PEERS.len()];
                samples[peer as usize].push(slice(peer, tasks).await);
            }
        }
        rows.push((tasks, samples));
    }
    rows
}

/// The per-implementation table of `rows`: ops/s and p99, median (min–max).
fn print_rows(rows: &Rows, unit: &str) {
    println!("| tasks | implementation | {unit} | p99 |");
    println!("|---:|---|---:|---:|");
    for (tasks, samples) in rows {
        for peer in PEERS {
            let s = &samples[peer as usize];
            let ops: Vec<f64> = s.iter().map(|s| s.ops_per_sec).collect();
            let p99: Vec<Duration> = s.iter().map(|s| s.p99).collect();
            println!(
                "| {tasks} | {} | {} | {} |",
                peer.name(),
                fmt_ops_spread(&ops),
                fmt_dur_spread(&p99)
            );
        }
    }
}

async fn hit_slice(peer: Peer, hand: &Hand, tasks: usize, slice: Duration) -> Sample {
    let hand = hand.clone();
    run_slice(tasks, slice, move |id| {
        let hand = hand.clone();
        async move {
            let p = hit(peer, &hand, id).await.expect("a hit failed");
            debug_assert_eq!(p.id, id);
            std::hint::black_box(p);
        }
    })
    .await
}

async fn miss_slice(peer: Peer, hand: &Hand, tasks: usize, slice: Duration) -> Sample {
    let hand = hand.clone();
    run_slice(tasks, slice, move |_| {
        let hand = hand.clone();
        async move {
            let p = miss(peer, &hand, fresh_id()).await.expect("a miss failed");
            std::hint::black_box(p);
        }
    })
    .await
}

/// median, min, max.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn fmt_ops(x: f64) -> String {
    if x >= 1000.0 {
        format!("{:.1} k", x / 1000.0)
    } else {
        format!("{x:.0}")
    }
}

fn fmt_ops_spread(values: &[f64]) -> String {
    let (med, min, max) = spread(values);
    format!(
        "{} ({}–{})",
        fmt_ops(med),
        fmt_ops(min).trim_end_matches(" k"),
        fmt_ops(max)
    )
}

fn fmt_dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn fmt_dur_spread(values: &[Duration]) -> String {
    let secs: Vec<f64> = values.iter().map(Duration::as_secs_f64).collect();
    let (med, min, max) = spread(&secs);
    format!(
        "{} ({}–{})",
        fmt_dur(Duration::from_secs_f64(med)),
        fmt_dur(Duration::from_secs_f64(min)),
        fmt_dur(Duration::from_secs_f64(max))
    )
}

fn fmt_ratio(values: &[f64]) -> String {
    let (med, min, max) = spread(values);
    format!("{med:.2}x ({min:.2}–{max:.2})")
}

// ---------------------------------------------------------------------------------------

fn main() {
    // The servers live outside the runtime: their guards are dropped (and the servers
    // killed) on every way out of main, a panic included.
    let main_server = RedisServer::start();
    let mut outage_server = RedisServer::start();
    MAIN_URL.set(main_server.url()).unwrap();
    OUTAGE_URL.set(outage_server.url()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    let started = Instant::now();
    rt.block_on(run(&main_server, &mut outage_server));
    println!(
        "\n_Whole run: {:.0} s._",
        started.elapsed().as_secs_f64().round()
    );
}

async fn run(main_server: &RedisServer, outage_server: &mut RedisServer) {
    let url = main_server.url();
    redcache::init(redcache::Config::builder().url(&url).build())
        .await
        .expect("redcache::init on the private redis-server");
    let hand = Hand::connect(&url).await;
    let mut admin = Hand::connect(&url).await.conn;

    // Fill one entry per task id for every implementation, then check each answers from
    // Redis.
    for id in 0..256u64 {
        for peer in PEERS {
            assert_eq!(hit(peer, &hand, id).await.unwrap(), profile(id));
        }
    }
    let before = redcache::stats();
    for id in 0..256u64 {
        for peer in PEERS {
            assert_eq!(hit(peer, &hand, id).await.unwrap(), profile(id));
        }
    }
    let after = redcache::stats();
    assert_eq!(after.hits - before.hits, 512, "redcache answers from Redis");
    assert_eq!(after.local_hits, 0, "no local tier");

    let server_version: String = redis::cmd("INFO")
        .arg("server")
        .query_async::<String>(&mut admin)
        .await
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("redis_version:")
                    .map(|v| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "?".into());
    let json_len = serde_json::to_vec(&profile(1)).unwrap().len();
    let mut sizes = Vec::new();
    for (peer, pattern) in [
        (Peer::Cached, "*peers_cached_hit*"),
        (Peer::Redcache, "peers:rc:hit:*"),
        (Peer::Hand, "peers:hand:hit:*"),
        (Peer::RedcacheMsgpack, "peers:rcmp:hit:*"),
    ] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut admin)
            .await
            .unwrap_or_default();
        let mut len = None;
        for key in keys.iter().take(8) {
            if let Ok(n) = admin.strlen::<_, usize>(key).await {
                len = Some((key.clone(), n));
                break;
            }
        }
        sizes.push((peer, keys.len(), len));
    }

    println!("# redcache and the `cached` crate on one Redis\n");
    println!(
        "redis-server {server_version} on 127.0.0.1 (`--save \"\" --appendonly no`), one \
         server for sections 1–3 and another for section 4; tokio multi-thread runtime with \
         2 workers; {} CPUs seen by the process. The value: `Profile`, {json_len} bytes as \
         JSON. `cached` 4.1.0 stores it as MessagePack in an envelope, redcache as JSON in \
         its envelope (by default) or as MessagePack with field names (`codec = \"msgpack\"`), \
         the hand-written baseline as plain JSON:\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!("| implementation | keys written (256 ids) | example key | value bytes in Redis |");
    println!("|---|---|---|---|");
    for (peer, count, len) in &sizes {
        let (key, n) = len
            .as_ref()
            .map(|(k, n)| (format!("`{k}`"), n.to_string()))
            .unwrap_or_else(|| ("?".into(), "?".into()));
        println!("| {} | {count} | {key} | {n} |", peer.name());
    }

    // Warm every path (connections, allocator) before the first measured round.
    for peer in PEERS {
        hit_slice(peer, &hand, 16, Duration::from_millis(200)).await;
        miss_slice(peer, &hand, 16, Duration::from_millis(100)).await;
    }

    // 1. Hits.
    println!(
        "\n## 1. Hits\n\nEach task reads its own warm key in a loop for {:.1} s; the rounds \
         interleave the implementations (`cached`, redcache, hand-written, redcache with \
         MessagePack; each round starts one later), {HIT_REPEATS} rounds per concurrency. ops/s and p99 are the median (min–max) \
         of the rounds. Per hit, `cached`: its key `{{namespace}}:{{prefix}}:{{id}}`, one GET (as \
         a pipeline), a MessagePack decode; redcache: the md5 of the arguments' canonical \
         JSON, one GET over its self-reconnecting connection, its envelope's JSON decode, its \
         counters (with MessagePack: the same, its envelope's MessagePack decode); \
         hand-written: the md5 of the arguments' JSON, one GET, a JSON decode.\n",
        SLICE.as_secs_f64()
    );
    let hit_rows = interleaved(&HIT_TASKS, HIT_REPEATS, |peer, tasks| {
        hit_slice(peer, &hand, tasks, SLICE)
    })
    .await;
    print_rows(&hit_rows, "hits/s");
    println!(
        "\nRatios over the paired rounds (each round's redcache value over the same round's \
         other value), median (min–max); above 1.00x redcache does more hits/s, and for p99 \
         below 1.00x redcache is faster:\n"
    );
    println!(
        "| tasks | hits/s redcache / `cached` | p99 redcache / `cached` | hits/s redcache (MessagePack) / `cached` | p99 redcache (MessagePack) / `cached` | hits/s redcache / hand-written | hits/s `cached` / hand-written |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (tasks, samples) in &hit_rows {
        let ratio = |a: Peer, b: Peer, f: &dyn Fn(&Sample) -> f64| -> Vec<f64> {
            samples[a as usize]
                .iter()
                .zip(&samples[b as usize])
                .map(|(x, y)| f(x) / f(y))
                .collect()
        };
        let ops = |s: &Sample| s.ops_per_sec;
        let p99 = |s: &Sample| s.p99.as_secs_f64();
        println!(
            "| {tasks} | {} | {} | {} | {} | {} | {} |",
            fmt_ratio(&ratio(Peer::Redcache, Peer::Cached, &ops)),
            fmt_ratio(&ratio(Peer::Redcache, Peer::Cached, &p99)),
            fmt_ratio(&ratio(Peer::RedcacheMsgpack, Peer::Cached, &ops)),
            fmt_ratio(&ratio(Peer::RedcacheMsgpack, Peer::Cached, &p99)),
            fmt_ratio(&ratio(Peer::Redcache, Peer::Hand, &ops)),
            fmt_ratio(&ratio(Peer::Cached, Peer::Hand, &ops)),
        );
    }

    // 2. Misses.
    println!(
        "\n## 2. Misses\n\nEvery call on a key never used before; the body returns the value \
         at once, so this is the cost of the lookup plus the store (`cached`: GET, then a \
         GET + PSETEX pipeline; redcache, with either encoding: GET, then SET NX PX (its fill \
         when the read found nothing); hand-written: \
         GET, then SET EX). {MISS_REPEATS} interleaved rounds of {:.1} s.\n",
        SLICE.as_secs_f64()
    );
    let miss_rows = interleaved(&MISS_TASKS, MISS_REPEATS, |peer, tasks| {
        miss_slice(peer, &hand, tasks, SLICE)
    })
    .await;
    print_rows(&miss_rows, "misses/s");
    println!(
        "\n| tasks | misses/s redcache / `cached` | misses/s redcache (MessagePack) / `cached` | misses/s redcache / hand-written |"
    );
    println!("|---:|---:|---:|---:|");
    for (tasks, samples) in &miss_rows {
        let ratio = |a: Peer, b: Peer| -> Vec<f64> {
            samples[a as usize]
                .iter()
                .zip(&samples[b as usize])
                .map(|(x, y)| x.ops_per_sec / y.ops_per_sec)
                .collect()
        };
        println!(
            "| {tasks} | {} | {} | {} |",
            fmt_ratio(&ratio(Peer::Redcache, Peer::Cached)),
            fmt_ratio(&ratio(Peer::RedcacheMsgpack, Peer::Cached)),
            fmt_ratio(&ratio(Peer::Redcache, Peer::Hand)),
        );
    }
    let stats = redcache::stats();
    assert_eq!(stats.faults, 0, "redcache had store faults: {stats:?}");

    // 3. Stampede.
    println!(
        "\n## 3. Stampede\n\n{STAMPEDE_CALLERS} concurrent callers on one cold key; the body \
         counts its runs and sleeps 50 ms. {STAMPEDE_TRIALS} trials per implementation, each \
         on a new key, interleaved.\n"
    );
    let mut stampede_rows: [Vec<(usize, usize, Duration)>; 4] = Default::default();
    for _ in 0..STAMPEDE_TRIALS {
        for peer in PEERS {
            let id = fresh_id();
            STAMPEDE_RUNS[peer as usize].store(0, Ordering::SeqCst);
            let start = Instant::now();
            let handles: Vec<_> = (0..STAMPEDE_CALLERS)
                .map(|_| {
                    let hand = hand.clone();
                    tokio::spawn(async move { stampede(peer, &hand, id).await })
                })
                .collect();
            let mut ok = 0;
            for h in handles {
                if let Ok(Ok(p)) = h.await {
                    assert_eq!(p, profile(id));
                    ok += 1;
                }
            }
            let wall = start.elapsed();
            let runs = STAMPEDE_RUNS[peer as usize].load(Ordering::SeqCst);
            stampede_rows[peer as usize].push((runs, ok, wall));
        }
    }
    println!("| implementation | body runs per trial | callers answered | wall time per trial |");
    println!("|---|---:|---:|---:|");
    for peer in PEERS {
        let rows = &stampede_rows[peer as usize];
        let join = |f: &dyn Fn(&(usize, usize, Duration)) -> String| {
            rows.iter().map(f).collect::<Vec<_>>().join(", ")
        };
        println!(
            "| {} | {} | {} | {} |",
            peer.name(),
            join(&|r| r.0.to_string()),
            join(&|r| format!("{}/{STAMPEDE_CALLERS}", r.1)),
            join(&|r| fmt_dur(r.2)),
        );
    }

    // 4. Outage, on the second server.
    let outage_url = outage_server.url();
    let rc_outage_cache =
        redcache::Cache::connect(redcache::Config::builder().url(&outage_url).build())
            .await
            .expect("connect redcache to the outage server");
    let outage_hand = Hand::connect(&outage_url).await;
    for _ in 0..2 {
        for id in 0..OUTAGE_WARM {
            for peer in PEERS {
                assert_eq!(
                    outage(peer, &outage_hand, &rc_outage_cache, id)
                        .await
                        .unwrap(),
                    profile(id)
                );
            }
        }
    }
    assert_eq!(rc_outage_cache.stats().hits, 2 * OUTAGE_WARM);
    outage_server.kill();
    println!(
        "\n## 4. Outage\n\nOn a second redis-server: {OUTAGE_WARM} keys warmed for each \
         implementation, then the server is killed (SIGKILL, not restarted). Then \
         {OUTAGE_CALLS} calls per implementation from {OUTAGE_TASKS} concurrent tasks of {} \
         calls each, alternating a warmed key and a new key, each call under a {} s deadline \
         (`tokio::time::timeout`). Defaults everywhere: `cached`'s plain \
         MultiplexedConnection, redcache's `Config` defaults (200 ms operation timeout, \
         breaker after 5 faults), the hand-written code returns any Redis error.\n",
        OUTAGE_CALLS / OUTAGE_TASKS,
        OUTAGE_DEADLINE.as_secs()
    );
    println!(
        "| implementation | answered with a value | returned an error | timed out | slowest call | wall time |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut first_errors = Vec::new();
    for peer in PEERS {
        let start = Instant::now();
        let handles: Vec<_> = (0..OUTAGE_TASKS)
            .map(|task| {
                let hand = outage_hand.clone();
                let rc = rc_outage_cache.clone();
                tokio::spawn(async move {
                    let (mut ok, mut err, mut timeout) = (0usize, 0usize, 0usize);
                    let mut slowest = Duration::ZERO;
                    let mut first_err = None;
                    let per_task = OUTAGE_CALLS / OUTAGE_TASKS;
                    for j in 0..per_task {
                        let n = (task * per_task + j) as u64;
                        let id = if n.is_multiple_of(2) {
                            n / 2 % OUTAGE_WARM
                        } else {
                            fresh_id()
                        };
                        let t = Instant::now();
                        match tokio::time::timeout(OUTAGE_DEADLINE, outage(peer, &hand, &rc, id))
                            .await
                        {
                            Ok(Ok(p)) => {
                                assert_eq!(p, profile(id));
                                ok += 1;
                            }
                            Ok(Err(e)) => {
                                err += 1;
                                first_err.get_or_insert(e);
                            }
                            Err(_) => timeout += 1,
                        }
                        slowest = slowest.max(t.elapsed());
                    }
                    (ok, err, timeout, slowest, first_err)
                })
            })
            .collect();
        let (mut ok, mut err, mut timeout) = (0, 0, 0);
        let mut slowest = Duration::ZERO;
        let mut first_err = None;
        for h in handles {
            let (o, e, t, s, fe) = h.await.expect("an outage task panicked");
            ok += o;
            err += e;
            timeout += t;
            slowest = slowest.max(s);
            if first_err.is_none() {
                first_err = fe;
            }
        }
        let wall = start.elapsed();
        println!(
            "| {} | {ok} | {err} | {timeout} | {} | {} |",
            peer.name(),
            fmt_dur(slowest),
            fmt_dur(wall)
        );
        if let Some(e) = first_err {
            first_errors.push((peer, e));
        }
    }
    let s = rc_outage_cache.stats();
    println!(
        "\nredcache's outage cache afterwards: {} faults, {} operations skipped by the open \
         breaker, breaker open: {}.",
        s.faults, s.skipped, s.breaker_open
    );
    for (peer, e) in first_errors {
        let mut text = e.0;
        text.truncate(160);
        println!(
            "First error of {}: `{}`",
            peer.name(),
            text.replace('`', "'")
        );
    }
}
