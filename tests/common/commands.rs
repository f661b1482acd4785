//! What the server ran: its SLOWLOG (every command, or the slow ones) and the call counts
//! of `INFO commandstats`, for tests that check which commands the cache sends.

/// Logs every command the server runs from now on (SLOWLOG with no threshold), to read
/// back with [`commands_logged`].
pub async fn log_commands(conn: &mut redis::aio::MultiplexedConnection) {
    for (name, value) in [
        ("slowlog-log-slower-than", "0"),
        ("slowlog-max-len", "1000000"),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(conn)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(conn)
        .await
        .unwrap();
}

/// Like [`log_commands`], but logs only commands that held the server `micros` or more,
/// and resets the per-command call counts that [`command_calls`] reads.
pub async fn log_commands_slower_than(conn: &mut redis::aio::MultiplexedConnection, micros: u64) {
    log_commands(conn).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(micros)
        .query_async(conn)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .unwrap();
}

/// How many times each command (lower case) ran since the counts were reset, commands run
/// by scripts included, from `INFO commandstats`.
pub async fn command_calls(
    conn: &mut redis::aio::MultiplexedConnection,
) -> std::collections::HashMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .filter(|(name, _)| !matches!(name.as_str(), "info" | "config" | "slowlog"))
        .collect()
}

/// A command the server ran since [`log_commands`]: its name (upper case), its arguments
/// and how long it held the server.
pub struct Logged {
    pub name: String,
    pub args: Vec<String>,
    pub micros: u64,
}

/// The commands logged since [`log_commands`] (commands a script ran inside Redis
/// included), oldest first, without the test's own `SLOWLOG`/`CONFIG`.
pub async fn commands_logged(conn: &mut redis::aio::MultiplexedConnection) -> Vec<Logged> {
    let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(conn)
        .await
        .unwrap();
    let mut logged: Vec<Logged> = log
        .iter()
        .map(|entry| {
            let redis::Value::Array(fields) = entry else {
                panic!("a slowlog entry is an array")
            };
            let micros = redis::from_redis_value_ref(&fields[2]).unwrap();
            let args: Vec<String> = redis::from_redis_value_ref(&fields[3]).unwrap();
            Logged {
                name: args[0].to_ascii_uppercase(),
                args,
                micros,
            }
        })
        .filter(|c| c.name != "SLOWLOG" && c.name != "CONFIG")
        .collect();
    logged.reverse();
    logged
}
