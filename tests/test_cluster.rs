//! What only a Redis Cluster can show: keys spread over every master (and prefix
//! invalidation reaching them all), a failover under load, a resharded slot, and local-tier
//! invalidations arriving from every node. (The whole behaviour suite also runs on a
//! cluster: see `on_both_stores!`.)

mod common;

use common::{test_config, RedisCluster};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[redcache::cached(prefix = "c:item", ttl = 600, skip(calls))]
async fn item(id: u64, calls: &AtomicUsize) -> String {
    calls.fetch_add(1, SeqCst);
    format!("item {id}")
}

#[tokio::test]
async fn keys_spread_over_every_master_and_invalidate_prefix_reaches_them_all() {
    let cluster = RedisCluster::start(3, 0);
    let cache = cluster.cache().await;
    let calls = AtomicUsize::new(0);
    cache
        .scope(async {
            for id in 0..300 {
                item(id, &calls).await;
            }
        })
        .await;
    let per_master = cluster.keys_per_master();
    assert_eq!(per_master.iter().sum::<u64>(), 300, "{per_master:?}");
    assert!(
        per_master.iter().all(|n| *n > 50),
        "the keys spread over the 3 masters: {per_master:?}"
    );
    assert_eq!(cache.invalidate_prefix("c:item").await.unwrap(), 300);
    // Every entry on every master is a tombstone now: each call misses again.
    assert_eq!(cluster.keys_per_master(), per_master);
    cache
        .scope(async {
            for id in 0..300 {
                item(id, &calls).await;
            }
        })
        .await;
    assert_eq!(calls.load(SeqCst), 600, "every entry was invalidated");
    assert_eq!(cache.stats().hits, 0);
    assert_eq!(
        cache.invalidate_prefix("c:item").await.unwrap(),
        300,
        "the new entries, and no tombstone counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_under_load_answers_every_call_and_caching_resumes() {
    const OP_TIMEOUT: Duration = Duration::from_millis(200);
    let mut cluster = RedisCluster::start(3, 1);
    let cache = cluster
        .cache_with(test_config().op_timeout(OP_TIMEOUT))
        .await;
    let calls = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for task in 0..8u64 {
        let (cache, calls, stop, answered) =
            (cache.clone(), calls.clone(), stop.clone(), answered.clone());
        load.push(tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let mut i = 0;
            while !stop.load(SeqCst) {
                let id = task * 1000 + i % 50;
                let start = Instant::now();
                assert_eq!(cache.scope(item(id, &calls)).await, format!("item {id}"));
                slowest = slowest.max(start.elapsed());
                answered.fetch_add(1, SeqCst);
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            slowest
        }));
    }
    // Under load, and caching, before the failover.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.stats().hits < 50 {
        assert!(Instant::now() < deadline, "no caching before the failover");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Kill the master that holds item(1)'s key, under load.
    let key = cache.scope(async { redcache::key!(item(1, _)) }).await;
    let owner = cluster.owner_of(&key);
    let before = answered.load(SeqCst);
    cluster.nodes[owner].stop();
    // Its replica takes over once the others agree it failed (node timeout: 1 s).
    let failed_over = Instant::now();
    let survivor = cluster.nodes.iter().position(|n| n.is_running()).unwrap();
    loop {
        let info = cluster.cli(cluster.nodes[survivor].port(), &["CLUSTER", "INFO"]);
        let promoted = cluster.try_owner_of(&key).is_some_and(|o| o != owner);
        if info.contains("cluster_state:ok") && promoted {
            break;
        }
        assert!(
            failed_over.elapsed() < Duration::from_secs(20),
            "no failover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("failover took {:?}", failed_over.elapsed());
    // Caching resumes on the promoted replica: item(1) gets stored and hits again.
    let resumed = Instant::now();
    let probe = AtomicUsize::new(0);
    loop {
        let runs = probe.load(SeqCst);
        cache.scope(item(1, &probe)).await;
        cache.scope(item(1, &probe)).await;
        if probe.load(SeqCst) == runs {
            break;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(10),
            "caching did not resume"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, SeqCst);
    let mut slowest = Duration::ZERO;
    for task in load {
        slowest = slowest.max(task.await.expect("no call panicked or failed"));
    }
    let during = answered.load(SeqCst) - before;
    eprintln!("{during} calls answered during and after the failover; slowest {slowest:?}");
    assert!(during > 0);
    // At most two operation timeouts: the read, and a re-read when a flight ended meanwhile.
    assert!(
        slowest < 2 * OP_TIMEOUT + Duration::from_millis(300),
        "slowest call {slowest:?}"
    );
    assert!(cache.stats().faults > 0, "the dead master was noticed");
}

/// Reads `item(id)` through `cache` `n` times at once, sharing its connections: how many
/// ran the body.
async fn runs_of_reads_at_once(cache: &redcache::Cache, id: u64, n: usize) -> usize {
    let runs = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (cache, runs) = (cache.clone(), runs.clone());
        tasks.spawn(async move { cache.scope(item(id, &runs)).await });
    }
    while let Some(read) = tasks.join_next().await {
        assert_eq!(read.expect("no read panicked"), format!("item {id}"));
    }
    runs.load(SeqCst)
}

/// A cluster that announces its nodes by hostname (`cluster-preferred-endpoint-type
/// hostname`, as on Kubernetes): `CLUSTER SLOTS`, which redis-rs reads, names them by
/// hostname, and `CLUSTER NODES` by IP. A prefix walk still reaches every master.
#[tokio::test]
async fn a_cluster_announcing_hostnames_is_walked() {
    let cluster = RedisCluster::start(3, 0);
    for node in &cluster.nodes {
        let set =
            |name: &str, value: &str| cluster.cli(node.port(), &["CONFIG", "SET", name, value]);
        // Redis 6.2 announces no hostnames (the setting came with 7.0, and Valkey has it):
        // nothing to show there. Any other server must take it.
        let info = cluster.cli(node.port(), &["INFO", "server"]);
        let redis_6 = !info.contains("valkey_version:") && info.contains("redis_version:6.");
        let said = set("cluster-announce-hostname", "localhost");
        if redis_6 {
            eprintln!("no hostnames to announce on Redis 6: {said}");
            return;
        }
        assert!(said.contains("OK"), "{said}");
        assert!(set("cluster-preferred-endpoint-type", "hostname").contains("OK"));
    }
    // Until every node names every master by its hostname (spread by the cluster bus).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster.nodes.iter().all(|node| {
        let slots = cluster.cli(node.port(), &["CLUSTER", "SLOTS"]);
        slots.matches("localhost").count() == 3
    }) {
        assert!(Instant::now() < deadline, "the hostnames did not spread");
        std::thread::sleep(Duration::from_millis(50));
    }
    let cache = cluster.cache().await;
    let calls = AtomicUsize::new(0);
    cache
        .scope(async {
            for id in 0..30 {
                item(id, &calls).await;
            }
        })
        .await;
    assert_eq!(cache.invalidate_prefix("c:item").await.unwrap(), 30);
    cache
        .scope(async {
            for id in 0..30 {
                item(id, &calls).await;
            }
        })
        .await;
    assert_eq!(calls.load(SeqCst), 60, "every entry was retired");
    assert_eq!(cache.stats().faults, 0, "{:?}", cache.health());
}

#[redcache::cached(prefix = "c:grouped", group = "shelf", ttl = 600, skip(calls))]
async fn grouped_item(id: u64, calls: &AtomicUsize) -> String {
    calls.fetch_add(1, SeqCst);
    format!("item {id}")
}

/// A grouped function reads its entry with its group's generation in one `MGET`, which a
/// node refuses (`TRYAGAIN`) while their slot moves with one of the two moved and not the
/// other, for as long as the move lasts. Hits are still hits, a miss runs its body without
/// a fault (and stores nothing until the move ends), on the local tier's tracked read too.
#[tokio::test]
async fn a_grouped_function_is_served_while_its_slot_moves() {
    let cluster = RedisCluster::start(3, 0);
    let cache = cluster.cache().await;
    let local = cluster.cache_with(test_config().local_capacity(100)).await;
    let calls = AtomicUsize::new(0);
    assert_eq!(cache.scope(grouped_item(1, &calls)).await, "item 1");
    let key = cache
        .scope(async { redcache::key!(grouped_item(1, _)) })
        .await;
    let from = cluster.owner_of(&key);
    let to = (from + 1) % 3;
    let slot = cluster.start_moving(&key, from, to);
    // The entry moves; the generation (same slot, by its hash tag) stays behind.
    cluster.migrate(&key, from, to);
    for c in [&cache, &local] {
        assert_eq!(c.scope(grouped_item(1, &calls)).await, "item 1");
    }
    assert_eq!(
        calls.load(SeqCst),
        1,
        "hits, the entry and the generation apart"
    );
    // A miss: its entry is on neither side, the generation on the old one.
    for c in [&cache, &local] {
        assert_eq!(c.scope(grouped_item(2, &calls)).await, "item 2");
    }
    assert_eq!(calls.load(SeqCst), 3);
    for c in [&cache, &local] {
        assert_eq!(c.stats().faults, 0, "{:?}", c.health());
        assert_eq!(c.health().consecutive_faults, 0);
    }
    // A `put!` cannot check the generation where it would write: it fails, and retires
    // the entry rather than leave the value it was to replace served.
    let put = cache
        .scope(redcache::put!(grouped_item(1, _), "put 1".to_owned()))
        .await;
    assert!(put.is_err(), "{put:?}");
    assert_eq!(cache.scope(grouped_item(1, &calls)).await, "item 1");
    assert_eq!(calls.load(SeqCst), 4, "retired: a miss");
    cluster.finish_moving(&slot, to);
    for _ in 0..2 {
        assert_eq!(cache.scope(grouped_item(2, &calls)).await, "item 2");
    }
    assert_eq!(calls.load(SeqCst), 5, "stored once the move ended");
    assert_eq!(cache.health().consecutive_faults, 0, "{:?}", cache.health());
}

#[tokio::test]
async fn a_resharded_slot_is_followed() {
    let cluster = RedisCluster::start(3, 0);
    let cache = cluster.cache().await;
    let calls = AtomicUsize::new(0);
    assert_eq!(cache.scope(item(7, &calls)).await, "item 7");
    let key = cache.scope(async { redcache::key!(item(7, _)) }).await;
    let from = cluster.owner_of(&key);
    let to = (from + 1) % 3;
    // Move the slot, with its key, the way redis-cli --cluster reshard does.
    let slot = cluster.start_moving(&key, from, to);
    // While the slot moves, a prefix walk could miss its keys: it says so, and retires
    // nothing it could not vouch for.
    let err = cache.invalidate_prefix("c:item").await.unwrap_err();
    assert!(
        err.to_string().contains(&format!("slot {slot} is moving")),
        "{err}"
    );
    assert_eq!(
        cache.health().consecutive_faults,
        0,
        "a cluster resharding is not a fault of the store"
    );
    cluster.migrate(&key, from, to);
    // Mid-move, the old owner answers for the key with ASK. Reads at once share each node's
    // connection, where one's ASKING could be taken by another's read: every one is a hit.
    assert_eq!(
        runs_of_reads_at_once(&cache, 7, 50).await,
        0,
        "50 hits through ASK"
    );
    assert_eq!(cache.stats().faults, 0, "{:?}", cache.health());
    // A read the local tier would keep (tracked) follows the ASK too.
    let local = cluster.cache_with(test_config().local_capacity(100)).await;
    assert_eq!(local.scope(item(7, &calls)).await, "item 7");
    assert_eq!(calls.load(SeqCst), 1, "a hit, through the ASK redirect");
    assert_eq!(local.stats().faults, 0, "{:?}", local.health());
    cluster.finish_moving(&slot, to);
    assert_eq!(cluster.owner_of(&key), to);
    // The cache's slot map still points at the old owner: MOVED, followed (and the slot
    // map rebuilt meanwhile).
    assert_eq!(
        runs_of_reads_at_once(&cache, 7, 50).await,
        0,
        "50 hits through MOVED"
    );
    assert_eq!(cache.scope(item(7, &calls)).await, "item 7");
    assert_eq!(calls.load(SeqCst), 1, "a hit, through the redirect");
    assert!(cache
        .scope(redcache::invalidate!(item(7, _)))
        .await
        .unwrap());
    assert_eq!(cache.scope(item(7, &calls)).await, "item 7");
    assert_eq!(calls.load(SeqCst), 2);
    assert_eq!(cache.stats().faults, 0);
    // Once it has moved, the walk finds the key on its new master.
    assert_eq!(cache.invalidate_prefix("c:item").await.unwrap(), 1);
    assert_eq!(cache.scope(item(7, &calls)).await, "item 7");
    assert_eq!(calls.load(SeqCst), 3);
}

#[tokio::test]
async fn the_local_tier_hears_invalidations_from_every_node() {
    let cluster = RedisCluster::start(3, 0);
    let local = cluster.cache_with(test_config().local_capacity(100)).await;
    let other = cluster.cache().await;
    let calls = AtomicUsize::new(0);
    // Keys on every master, each served locally.
    let ids: Vec<u64> = (0..30).collect();
    for &id in &ids {
        for _ in 0..3 {
            local.scope(item(id, &calls)).await;
        }
    }
    let mut owners = std::collections::HashSet::new();
    for &id in &ids {
        let key = local.scope(async { redcache::key!(item(id, _)) }).await;
        owners.insert(cluster.owner_of(&key));
    }
    assert_eq!(owners.len(), 3, "the keys live on all three masters");
    // All served locally, and still after a few beats of the heartbeat (a `PING` to every
    // master every 500 ms), which keeps them while every master answers.
    for pause in [Duration::ZERO, Duration::from_millis(1600)] {
        tokio::time::sleep(pause).await;
        let before = local.stats().local_hits;
        for &id in &ids {
            local.scope(item(id, &calls)).await;
        }
        assert_eq!(
            local.stats().local_hits - before,
            30,
            "all served locally after {pause:?}: {:?}",
            local.health()
        );
    }
    // Another client invalidates them all; each node pushes its keys' invalidations.
    for &id in &ids {
        assert!(other
            .scope(redcache::invalidate!(item(id, _)))
            .await
            .unwrap());
    }
    // Each local copy is dropped: the next read of every id is a miss, within moments.
    let runs = calls.load(SeqCst);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut pending = ids.clone();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            let before = calls.load(SeqCst);
            local.scope(item(id, &calls)).await;
            if calls.load(SeqCst) == before {
                still.push(id);
            }
        }
        pending = still;
        assert!(
            Instant::now() < deadline,
            "local copies outlived their invalidation: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        calls.load(SeqCst) - runs,
        ids.len(),
        "each id recomputed once"
    );
}

#[tokio::test]
async fn a_cluster_with_a_password_works_and_never_shows_it() {
    const PASSWORD: &str = "cluster-pw-7c1d-secret";
    let cluster = RedisCluster::start_with_password(3, 0, PASSWORD);
    let cache = cluster.cache().await;
    let calls = AtomicUsize::new(0);
    for id in 0..30 {
        cache.scope(item(id, &calls)).await;
        cache.scope(item(id, &calls)).await;
    }
    assert_eq!(
        calls.load(SeqCst),
        30,
        "stored and read back on every master"
    );
    assert!(!format!("{cache:?}").contains(PASSWORD));
    let wrong: Vec<String> = cluster
        .urls()
        .iter()
        .map(|u| u.replace(PASSWORD, "wrong-2b9e-secret"))
        .collect();
    let err = redcache::Cache::connect(
        test_config()
            .cluster_nodes(wrong)
            .connect_timeout(Duration::from_secs(2))
            .build(),
    )
    .await
    .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(matches!(err, redcache::Error::Connect { .. }), "{shown}");
    assert!(shown.contains("cluster redis://:***@127.0.0.1"), "{shown}");
    assert!(!shown.contains("secret"), "{shown}");
}

/// A node that drops the cache's connection (`CLIENT KILL`, a proxy's idle timeout) costs no
/// call anything: the read is sent again on a new connection, and is still a hit.
#[tokio::test]
async fn a_connection_a_node_drops_costs_no_call_anything() {
    let cluster = RedisCluster::start(3, 0);
    let cache = cluster.cache().await;
    let calls = AtomicUsize::new(0);
    let ids: Vec<u64> = (0..20).collect();
    for &id in &ids {
        assert_eq!(cache.scope(item(id, &calls)).await, format!("item {id}"));
    }
    for round in 1..=3 {
        for node in &cluster.nodes {
            cluster.cli(
                node.port(),
                &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"],
            );
        }
        for &id in &ids {
            assert_eq!(cache.scope(item(id, &calls)).await, format!("item {id}"));
        }
        assert_eq!(
            calls.load(SeqCst),
            ids.len(),
            "round {round}: every read a hit"
        );
    }
    assert_eq!(cache.stats().faults, 0, "{:?}", cache.health());
}

/// A master that serves no slot yet (added, not yet given slots) holds no key, and the
/// client holds no connection to it: a prefix walk leaves it out, and still reaches every
/// key on the others.
#[tokio::test]
async fn invalidate_prefix_leaves_out_a_master_without_slots() {
    let mut cluster = RedisCluster::start(3, 0);
    let cache = cluster.cache().await;
    let calls = AtomicUsize::new(0);
    for id in 0..30 {
        cache.scope(item(id, &calls)).await;
    }
    cluster.add_master();
    assert_eq!(cache.invalidate_prefix("c:item").await.unwrap(), 30);
    for id in 0..30 {
        cache.scope(item(id, &calls)).await;
    }
    assert_eq!(calls.load(SeqCst), 60, "every entry was retired");
    assert_eq!(cache.stats().faults, 0, "{:?}", cache.health());
}

/// A slot moving to a master added since the cache connected (one redis-rs holds no
/// connection to): reads at once through ASK are hits, and through MOVED once it is there.
#[tokio::test]
async fn a_slot_moving_to_a_new_master_is_followed() {
    let mut cluster = RedisCluster::start(3, 0);
    let cache = cluster.cache().await;
    let calls = AtomicUsize::new(0);
    assert_eq!(cache.scope(item(9, &calls)).await, "item 9");
    let key = cache.scope(async { redcache::key!(item(9, _)) }).await;
    let from = cluster.owner_of(&key);
    let to = cluster.add_master();
    let slot = cluster.start_moving(&key, from, to);
    cluster.migrate(&key, from, to);
    assert_eq!(
        runs_of_reads_at_once(&cache, 9, 20).await,
        0,
        "20 hits through ASK"
    );
    // A write through ASK, and a fill over its tombstone: the fill script, which the new
    // master had never been sent.
    assert!(cache
        .scope(redcache::invalidate!(item(9, _)))
        .await
        .unwrap());
    assert_eq!(cache.scope(item(9, &calls)).await, "item 9");
    assert_eq!(calls.load(SeqCst), 2);
    assert_eq!(
        runs_of_reads_at_once(&cache, 9, 20).await,
        0,
        "the refill was stored"
    );
    cluster.finish_moving(&slot, to);
    assert_eq!(cluster.owner_of(&key), to);
    assert_eq!(
        runs_of_reads_at_once(&cache, 9, 20).await,
        0,
        "20 hits through MOVED"
    );
    assert_eq!(calls.load(SeqCst), 2);
    assert_eq!(cache.stats().faults, 0, "{:?}", cache.health());
}

/// A batch reads its keys one by one on a cluster (a redirect is for one slot): a key of
/// another type among them misses alone, as it does in one `MGET`.
#[tokio::test]
async fn a_batch_with_a_key_of_another_type_loads_only_that_id() {
    let cluster = RedisCluster::start(3, 0);
    let cache = cluster.cache().await;
    let ttl = Duration::from_secs(60);
    let loads = std::sync::Mutex::new(Vec::new());
    let load = |mut ids: Vec<u64>| {
        ids.sort_unstable();
        loads.lock().unwrap().push(ids.clone());
        let found: std::collections::HashMap<u64, String> = ids
            .into_iter()
            .map(|id| (id, format!("item {id}")))
            .collect();
        async move { found }
    };
    let ids = [1, 2, 3, 4, 5, 6];
    let got = cache.get_or_insert_many("c:batch", &ids, ttl, load).await;
    assert_eq!(got.len(), 6);
    let mut conn = cluster.conn().await;
    let key = common::expected_key("c:batch", "[4]");
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("LPUSH")
        .arg(&key)
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let got = cache.get_or_insert_many("c:batch", &ids, ttl, load).await;
    assert_eq!(got[&4], "item 4");
    assert_eq!(got[&5], "item 5");
    assert_eq!(
        *loads.lock().unwrap(),
        vec![ids.to_vec(), vec![4]],
        "only the id whose key holds another type is loaded again"
    );
}

/// An ACL user that may not send `CLIENT CACHING`, on every node: a cluster's pipeline
/// hands back that refusal as a reply, and the read stands, but nothing of it is kept
/// locally (no push would retire it); another process's invalidation is seen at once.
#[tokio::test]
async fn reads_redis_does_not_track_are_never_kept_locally() {
    let cluster = RedisCluster::start(3, 0);
    for node in &cluster.nodes {
        let acl = |for_6_2| [vec!["ACL"], common::no_caching_user(for_6_2)].concat();
        let refused = cluster.cli(node.port(), &acl(false));
        if refused.contains("ERR") {
            let set = cluster.cli(node.port(), &acl(true));
            assert!(!set.contains("ERR"), "{set}");
        }
    }
    let urls = cluster
        .urls()
        .iter()
        .map(|url| url.replacen("redis://", "redis://app:pw@", 1))
        .collect::<Vec<_>>();
    let config = test_config()
        .cluster_nodes(urls)
        .local_capacity(100)
        .build();
    let cache = redcache::Cache::connect(config).await.unwrap();
    let calls = AtomicUsize::new(0);
    for _ in 0..5 {
        assert_eq!(cache.scope(item(7, &calls)).await, "item 7");
    }
    let stats = cache.stats();
    assert_eq!(
        (stats.hits, stats.local_hits, stats.faults),
        (4, 0, 0),
        "{stats:?}"
    );
    assert_eq!(calls.load(SeqCst), 1);
    let other = cluster.cache().await;
    assert!(other
        .scope(redcache::invalidate!(item(7, _)))
        .await
        .unwrap());
    assert_eq!(cache.scope(item(7, &calls)).await, "item 7");
    assert_eq!(calls.load(SeqCst), 2, "the invalidation was seen");
}
