//! `invalidate_prefix` over 200,000 keys never holds Redis for long: every command the walk
//! sends is timed by Redis's own SLOWLOG. In a test binary of its own, so that no other test
//! shares the two cores while Redis times its commands.

mod common;

#[tokio::test]
async fn invalidate_prefix_never_blocks_redis_for_long() {
    const KEYS: usize = 200_000;
    let server = common::RedisServer::start();
    let cache = server.cache().await;
    let mut conn = server.conn().await;
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(20_000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("SET")
                .arg(format!("bulk:{i}"))
                .arg("x")
                .arg("EX")
                .arg(600)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await.unwrap();
    }
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("bulky:{i}"))
            .arg("x")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    // Commands that held Redis for 1 ms or more are logged; every command is counted.
    common::log_commands_slower_than(&mut conn, 1000).await;

    let removed = cache.invalidate_prefix("bulk").await.unwrap();
    assert_eq!(removed, KEYS as u64);

    let calls = common::command_calls(&mut conn).await;
    let count = |name: &str| calls.get(name).copied().unwrap_or(0);
    let (scans, scripts) = (count("scan"), count("evalsha") + count("eval"));
    assert_eq!(
        count("keys") + count("del") + count("unlink"),
        0,
        "{calls:?}"
    );
    // The keyspace is walked in steps (how many keys a step returns for `COUNT 250` is
    // the server's choice: see `each_scan_step_asks_for_250_keys` in
    // `test_invalidation.rs`). How long any one step held the server is checked below.
    assert!(scans >= 1, "{calls:?}");
    // The scripts are the cache's own batches, whatever the server: at most 100 keys each.
    assert!(scripts >= (KEYS / 100) as u64, "{scripts} script runs");
    assert_eq!(
        count("set"),
        KEYS as u64,
        "one tombstone per key: {calls:?}"
    );
    let slow = common::commands_logged(&mut conn).await;
    let longest = slow.iter().map(|c| c.micros).max().unwrap_or(0);
    eprintln!(
        "invalidate_prefix: {scans} SCAN + {scripts} scripts for {KEYS} keys; {} commands \
         of 1 ms or more, the longest {longest} µs",
        slow.len()
    );
    // SLOWLOG times a command by the wall clock, so a server descheduled mid-command on a
    // loaded machine logs it long: allow the odd outlier, never a long one. A walk in one
    // command (KEYS, or one UNLINK of every key) holds Redis for all of its 200000 keys.
    let over_10ms = slow.iter().filter(|c| c.micros >= 10_000).count();
    assert!(
        longest < 100_000 && over_10ms * 100 <= (scans + scripts) as usize,
        "commands held Redis too long: the longest {longest} µs, {over_10ms} of 10 ms or more"
    );
    // The keys are tombstones now, and the other prefix is untouched.
    let tombstone: Vec<u8> = redis::cmd("GET")
        .arg("bulk:123")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(common::is_tombstone(&tombstone));
    let bulky: String = redis::cmd("GET")
        .arg("bulky:7")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(bulky, "x", "`bulky:*` is another prefix and stays");
}
