//! What the `metrics` feature costs a `#[cached]` hit, on the memory store (pure CPU, where
//! any overhead shows most) and on a `redis-server` this benchmark starts itself, from one
//! task and from 16.
//!
//! - Built with `--features metrics`, it compares, in one process, hits with no recorder
//!   installed (A) against hits with the Prometheus exporter's recorder installed
//!   (`PrometheusBuilder::new().build_recorder()`, B). The recorder is installed for B's
//!   turn only, with `metrics::with_local_recorder` around the runtime's `block_on`, so
//!   both turns go through the same lookup of the recorder (thread-local, then global) and
//!   differ only in what the recorder does. A third turn (C) has no recorder installed,
//!   and the bench itself records each hit into handles of the same recorder: one clock
//!   read, one counter increment, one histogram sample, the least a recorder is asked for
//!   a counted, timed call, so C/A is the floor of B/A. The turns go round, A B C, B C A,
//!   C A B, … on the same current-thread runtime.
//! - With `--plain`, in either build, it measures each cell once with no recorder and
//!   prints one `cell <name> <ops/s>` line per cell. `scripts/metrics-overhead` builds the
//!   bench with and without the feature and runs the two binaries in turn, to compare
//!   "feature off" with "feature on, no recorder", which one process cannot do.
//!
//! `cargo bench --bench metrics_overhead --features metrics`. Under
//! `cargo test --bench metrics_overhead --features metrics` it runs a few operations of each
//! cell as a smoke test, and checks that the recorder counted them.

#[path = "../tests/common/mod.rs"]
mod common;
mod shared;

use shared::{profile, Profile};

use std::rc::Rc;
use std::time::Instant;

#[redcache::cached(prefix = "bench:profile", ttl = 3600)]
async fn cached_profile(id: u64) -> Profile {
    profile(id)
}

/// One measured configuration: a store and a number of concurrent tasks.
struct Cell {
    name: &'static str,
    cache: redcache::Cache,
    tasks: u64,
    /// Hits per measurement, over all tasks.
    ops: u64,
}

/// A counter and a histogram the bench itself records into after each hit.
type ByHand = (metrics::Counter, metrics::Histogram);

/// Hits per second of `ops` hits from `tasks` concurrent tasks on the current-thread
/// runtime, each task reading its own key (so single flight does not merge the calls).
/// With `by_hand`, each hit is followed by what a recorder needs of it at least: one
/// clock read, one counter increment and one histogram sample.
async fn hits_per_sec(cell: &Cell, by_hand: Option<&ByHand>) -> f64 {
    let per_task = (cell.ops / cell.tasks).max(1);
    let start = Instant::now();
    let tasks: Vec<_> = (0..cell.tasks)
        .map(|id| {
            let cache = cell.cache.clone();
            let by_hand = by_hand.cloned();
            tokio::task::spawn_local(async move {
                let since = Instant::now();
                for _ in 0..per_task {
                    std::hint::black_box(cache.scope(cached_profile(id)).await);
                    if let Some((counter, histogram)) = &by_hand {
                        counter.increment(1);
                        histogram.record(since.elapsed());
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (per_task * cell.tasks) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let plain = std::env::args().any(|a| a == "--plain");
    let rt = Rc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    );
    let local = tokio::task::LocalSet::new();
    let server = common::RedisServer::start();
    let redis = local.block_on(&rt, server.cache());
    let memory = redcache::Cache::memory();
    let scale = if full { 1 } else { 1_000 };
    let cells = [
        Cell {
            name: "memory/1",
            cache: memory.clone(),
            tasks: 1,
            ops: 1_000_000 / scale,
        },
        Cell {
            name: "memory/16",
            cache: memory.clone(),
            tasks: 16,
            ops: 1_000_000 / scale,
        },
        Cell {
            name: "redis/1",
            cache: redis.clone(),
            tasks: 1,
            ops: 20_000 / scale,
        },
        Cell {
            name: "redis/16",
            cache: redis.clone(),
            tasks: 16,
            ops: 40_000 / scale,
        },
    ];
    // Fill every entry, then warm each cell once.
    local.block_on(&rt, async {
        for id in 0..16 {
            assert_eq!(memory.scope(cached_profile(id)).await, profile(id));
            assert_eq!(redis.scope(cached_profile(id)).await, profile(id));
        }
        for cell in &cells {
            hits_per_sec(cell, None).await;
        }
    });

    if plain {
        for cell in &cells {
            let ops = local.block_on(&rt, hits_per_sec(cell, None));
            println!("cell {} {ops:.0}", cell.name);
        }
    } else {
        #[cfg(feature = "metrics")]
        with_recorder::compare(&rt, &local, &cells, if full { 9 } else { 1 });
        #[cfg(not(feature = "metrics"))]
        println!(
            "without `--features metrics` only `--plain` measures; see scripts/metrics-overhead"
        );
    }
    for cache in [&memory, &redis] {
        let stats = cache.stats();
        assert!(stats.hits > 0 && stats.faults == 0, "{stats:?}");
    }
}

#[cfg(feature = "metrics")]
mod with_recorder {
    use super::{hits_per_sec, Cell};
    use metrics_exporter_prometheus::PrometheusBuilder;

    /// `rounds` rounds per cell of three turns: no recorder (A); the Prometheus recorder
    /// (B); and no recorder for redcache, with the bench recording each hit by hand into
    /// the same recorder's handles, one clock read, one counter increment and one
    /// histogram sample (C), the least any recorder is asked for a timed, counted call.
    /// Prints each turn's hits/s and the ratios B/A and C/A per round, as the median
    /// (min–max).
    pub(super) fn compare(
        rt: &tokio::runtime::Runtime,
        local: &tokio::task::LocalSet,
        cells: &[Cell],
        rounds: usize,
    ) {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let by_hand = metrics::with_local_recorder(&recorder, || {
            (
                metrics::counter!("bench_by_hand_total"),
                metrics::histogram!("bench_by_hand_seconds"),
            )
        });
        println!(
            "feature on: no recorder (A), the Prometheus recorder (B), A plus the recorder's \
             least work by hand (C); {rounds} rounds"
        );
        println!(
            "{:>10} | {:>12} | {:>12} | {:>12} | B/A median (min-max) | C/A median (min-max)",
            "cell", "A ops/s med", "B ops/s med", "C ops/s med"
        );
        for cell in cells {
            let mut turns = [Vec::new(), Vec::new(), Vec::new()];
            for round in 0..rounds {
                // Each turn takes each place in the order in turn.
                for turn in (0..3).map(|i| (i + round) % 3) {
                    let ops = match turn {
                        0 => local.block_on(rt, hits_per_sec(cell, None)),
                        1 => metrics::with_local_recorder(&recorder, || {
                            local.block_on(rt, hits_per_sec(cell, None))
                        }),
                        _ => local.block_on(rt, hits_per_sec(cell, Some(&by_hand))),
                    };
                    turns[turn].push(ops);
                }
                // What an exporter does between scrapes, outside the measurement: drain
                // the histograms' buckets.
                handle.run_upkeep();
            }
            let [none, with, hand] = &turns;
            let ratios =
                |of: &[f64]| -> Vec<f64> { of.iter().zip(none).map(|(b, a)| b / a).collect() };
            let (b, c) = (summary(&ratios(with)), summary(&ratios(hand)));
            println!(
                "{:>10} | {:>12.0} | {:>12.0} | {:>12.0} | {:.3}x ({:.3}-{:.3}x) | {:.3}x ({:.3}-{:.3}x)",
                cell.name,
                summary(none).0,
                summary(with).0,
                summary(hand).0,
                b.0, b.1, b.2, c.0, c.1, c.2,
            );
        }
        // The recorder did record every hit it was installed for.
        let rendered = handle.render();
        assert!(
            rendered.contains(r#"redcache_requests_total{prefix="bench:profile",result="hit"}"#),
            "{rendered}"
        );
    }

    /// Median, min and max.
    fn summary(values: &[f64]) -> (f64, f64, f64) {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        (median, sorted[0], sorted[n - 1])
    }
}
