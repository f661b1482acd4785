//! What reading hits from a replica buys: `#[cached]` hits through Sentinel with every read
//! on the master against the same hits with `read_from_replicas`, on one primary, one
//! replica and three Sentinels this benchmark starts itself (the test harness's).
//!
//! The two kinds of cell alternate, round after round, so that drift in the machine's load
//! hits both alike; each row gives the medians of the rounds, and the ratio of replica
//! reads to master reads as the median of the rounds' ratios with their min–max. It also
//! reads the master's CPU time (`INFO cpu`) around each cell: what the replica takes off
//! the master.
//!
//! `cargo bench --bench replica_reads`; under `cargo test` it runs a few operations as a
//! smoke test.

#[path = "../tests/common/mod.rs"]
mod common;
mod shared;

use shared::{profile, Profile};

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

#[redcache::cached(prefix = "bench:profile", ttl = 3600)]
async fn cached_profile(id: u64) -> Profile {
    profile(id)
}

/// Runs `op(task)` from `tasks` concurrent tasks, `per_task` times each; operations per
/// second. Each task reads its own key.
async fn measure<F, Fut>(tasks: usize, per_task: usize, op: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks as u64)
        .map(|task| {
            let op = op.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    op(task).await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    (tasks * per_task) as f64 / start.elapsed().as_secs_f64()
}

/// The CPU seconds (user + system) the server on `port` has used so far.
async fn cpu_seconds(sentinel: &common::RedisSentinel, port: u16) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut sentinel.conn_to(port).await)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, value) = line.trim().split_once(':')?;
            matches!(name, "used_cpu_user" | "used_cpu_sys")
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// One cell: hits on `cache` from `tasks` tasks; ops/s and the master's CPU microseconds
/// per hit.
async fn cell(
    sentinel: &common::RedisSentinel,
    master: u16,
    cache: &redcache::Cache,
    tasks: usize,
    per_task: usize,
) -> (f64, f64) {
    let before = cpu_seconds(sentinel, master).await;
    let cache = cache.clone();
    let ops = measure(tasks, per_task, move |id| {
        let cache = cache.clone();
        async move {
            std::hint::black_box(cache.scope(cached_profile(id)).await);
        }
    })
    .await;
    let cpu = cpu_seconds(sentinel, master).await - before;
    (ops, cpu * 1e6 / (tasks * per_task) as f64)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(full));
}

async fn run(full: bool) {
    let sentinel = common::RedisSentinel::start();
    sentinel.wait_for_replica();
    let (master, replica) = (sentinel.nodes[0].port(), sentinel.nodes[1].port());
    let on_master = sentinel.cache().await;
    let on_replica = sentinel
        .cache_with(common::test_config().read_from_replicas(true))
        .await;
    for id in 0..256 {
        on_master.scope(cached_profile(id)).await;
    }
    sentinel.wait_until_replica_caught_up(master, replica).await;

    let (ops, rounds) = if full { (20_000, 7) } else { (64, 1) };
    println!("{ops} hits per cell, {rounds} rounds, the two kinds of cell alternating\n");
    println!(
        "{:>5} | {:>22} | {:>22} | {:>26} | {:>28}",
        "tasks",
        "master reads: ops/s",
        "replica reads: ops/s",
        "replica/master (min-max)",
        "master CPU µs/hit: m / r"
    );
    for tasks in [1usize, 16, 64] {
        let per_task = (ops / tasks).max(1);
        let (mut m_ops, mut r_ops, mut ratios, mut m_cpu, mut r_cpu) =
            (vec![], vec![], vec![], vec![], vec![]);
        for round in 0..rounds {
            // Alternate which goes first, so neither always follows the other.
            let (m, r) = if round % 2 == 0 {
                let m = cell(&sentinel, master, &on_master, tasks, per_task).await;
                let r = cell(&sentinel, master, &on_replica, tasks, per_task).await;
                (m, r)
            } else {
                let r = cell(&sentinel, master, &on_replica, tasks, per_task).await;
                let m = cell(&sentinel, master, &on_master, tasks, per_task).await;
                (m, r)
            };
            ratios.push(r.0 / m.0);
            m_ops.push(m.0);
            r_ops.push(r.0);
            m_cpu.push(m.1);
            r_cpu.push(r.1);
        }
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        println!(
            "{tasks:>5} | {:>22.0} | {:>22.0} | {:>26} | {:>28}",
            median(m_ops),
            median(r_ops),
            format!("{:.2}x ({lo:.2}-{hi:.2})", median(ratios)),
            format!("{:.1} / {:.1}", median(m_cpu), median(r_cpu)),
        );
    }
    let (m, r) = (on_master.stats(), on_replica.stats());
    assert_eq!((m.faults, r.faults), (0, 0), "{m:?} {r:?}");
    assert_eq!(r.misses, 0, "every read on the replica was a hit: {r:?}");
}
