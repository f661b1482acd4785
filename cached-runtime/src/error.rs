//! The one error type of redcache.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// Everything that can go wrong in redcache, with a message that says how to fix it.
///
/// A `#[cached]` function never returns this type: cache faults there fail open (the body
/// runs and its result is returned). It comes back from set-up ([`init`](crate::init),
/// [`Cache::connect`](crate::Cache::connect)) and from the programmatic API
/// ([`Cache::get`](crate::Cache::get), [`Cache::set`](crate::Cache::set), …).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let config = redcache::Config::builder().url("not a url").build();
/// let err = redcache::Cache::connect(config).await.unwrap_err();
/// assert!(matches!(err, redcache::Error::Config { .. }));
/// assert!(err.to_string().contains("REDIS_URL"));
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable (a malformed URL, a tunable that does not parse), or a
    /// name given at run time names nothing (`invalidate_group("{products}")`).
    Config {
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Redis could not be reached when connecting.
    Connect {
        /// The redacted address that was tried (never contains a password).
        target: String,
        /// What the driver reported.
        source: Box<dyn StdError + Send + Sync>,
    },
    /// Redis rejected a command (a key of another type, out of memory, a read-only
    /// replica); the connection itself is fine.
    Rejected {
        /// What Redis replied.
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The connection to Redis failed or broke.
    Redis {
        /// What the driver reported.
        source: Box<dyn StdError + Send + Sync>,
    },
    /// Redis did not answer within the configured operation timeout.
    Timeout {
        /// The timeout that elapsed.
        after: Duration,
    },
    /// A value could not be serialized in the cache's codec (JSON, or MessagePack).
    Encode {
        /// What the serializer reported.
        source: serde_json::Error,
    },
    /// A stored value could not be read back as the requested type.
    Decode {
        /// What went wrong.
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The store was skipped: consecutive faults opened the circuit breaker.
    Unavailable {
        /// How long the breaker skips the store before it probes again.
        cooldown: Duration,
    },
    /// An encoded value is larger than [`Config::max_value_bytes`](crate::Config::max_value_bytes).
    TooLarge {
        /// Encoded size in bytes.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// [`init`](crate::init) or [`Cache::install`](crate::Cache::install) ran a second time.
    AlreadyInitialized,
    /// No cache is installed and none is in scope.
    NotInitialized,
    /// `put!` was given a value the function never caches (an `Err`).
    NotCacheable,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config { message } => write!(f, "invalid redcache configuration: {message}"),
            Error::Connect { target, source } => write!(
                f,
                "could not connect to Redis at {target}: {source}; check REDIS_URL (or \
                 REDIS_HOST/REDIS_PORT, REDIS_CLUSTER_NODES, REDIS_SENTINEL_NODES) and that \
                 redis-server is running"
            ),
            Error::Rejected { source } => write!(f, "Redis rejected the command: {source}"),
            Error::Redis { source } => write!(
                f,
                "the connection to Redis failed: {source}; redcache connects again"
            ),
            Error::Timeout { after } => write!(
                f,
                "Redis did not answer within {after:?}; raise the timeout with \
                 Config::builder().op_timeout(..) or REDCACHE_TIMEOUT_MS"
            ),
            Error::Encode { source } => {
                write!(f, "the value cannot be serialized ({source})")?;
                if source.to_string().contains("key must be a string") {
                    f.write_str("; maps need string or integer keys")?;
                }
                Ok(())
            }
            Error::Decode { source } => write!(
                f,
                "the cached value does not decode as the requested type ({source}); it was \
                 written by another type or another format version and will be overwritten"
            ),
            Error::Unavailable { cooldown } => write!(
                f,
                "the store is skipped after consecutive faults (circuit breaker open, probing \
                 again every {cooldown:?}); check that Redis is up"
            ),
            Error::TooLarge { size, max } => write!(
                f,
                "the encoded value is {size} bytes, over the limit of {max}; raise it with \
                 Config::builder().max_value_bytes(..) or REDCACHE_MAX_VALUE_BYTES"
            ),
            Error::AlreadyInitialized => write!(
                f,
                "a global cache is already installed; call redcache::init once at startup, \
                 or use Cache::scope for a different cache in part of the program"
            ),
            Error::NotInitialized => write!(
                f,
                "no cache is installed; call redcache::init(Config::from_env()) at startup \
                 or run the code inside Cache::scope"
            ),
            Error::NotCacheable => write!(
                f,
                "an `Err` is never cached, so put! does not store one; pass the `Ok` value \
                 to write through, or use invalidate! to drop the entry"
            ),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Connect { source, .. }
            | Error::Rejected { source }
            | Error::Redis { source }
            | Error::Decode { source } => Some(&**source),
            Error::Encode { source } => Some(source),
            _ => None,
        }
    }
}

impl Error {
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::Config {
            message: message.into(),
        }
    }

    pub(crate) fn redis(err: redis::RedisError) -> Self {
        if matches!(
            err.kind(),
            redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
        ) {
            Error::Rejected {
                source: Box::new(err),
            }
        } else {
            Error::Redis {
                source: Box::new(err),
            }
        }
    }

    /// A cluster that is resharding refused what was asked (a prefix walk) for now. The
    /// cluster is well and says so: not a fault of the store, which the breaker would count
    /// however often a job tries again.
    pub(crate) fn resharding(message: impl Into<String>) -> Self {
        Error::Rejected {
            source: message.into().into(),
        }
    }

    /// The redis-rs error this one is, if it is one.
    fn redis_error(&self) -> Option<&redis::RedisError> {
        match self {
            Error::Rejected { source } | Error::Redis { source } => source.downcast_ref(),
            _ => None,
        }
    }

    /// A cluster node's `MOVED`, `ASK` or `TRYAGAIN` that was not followed to the end.
    pub(crate) fn is_cluster_redirect(&self) -> bool {
        use redis::{ErrorKind::Server, ServerErrorKind::*};
        self.redis_error()
            .is_some_and(|err| matches!(err.kind(), Server(Moved | Ask | TryAgain)))
    }

    /// A cluster node refused a command of several keys because a slot is moving with
    /// some of them moved and some not (`TRYAGAIN`): so until the move ends.
    pub(crate) fn is_split_by_migration(&self) -> bool {
        use redis::{ErrorKind::Server, ServerErrorKind::TryAgain};
        self.redis_error()
            .is_some_and(|err| matches!(err.kind(), Server(TryAgain)))
    }

    /// Redis refused the command at `index` of a pipeline (0 for a lone command) for the
    /// user's permissions (`NOPERM`).
    pub(crate) fn is_no_permission_at(&self, index: usize) -> bool {
        use redis::ServerErrorKind::NoPerm;
        self.redis_error()
            .and_then(|err| err.clone().into_server_errors())
            .is_some_and(|errors| {
                errors
                    .iter()
                    .any(|(at, err)| *at == index && err.kind() == Some(NoPerm))
            })
    }

    pub(crate) fn decode(err: impl StdError + Send + Sync + 'static) -> Self {
        Error::Decode {
            source: Box::new(err),
        }
    }

    /// A cached value that did not decode, described by the kind of problem and where,
    /// never by its content: serde_json's messages quote the data (`invalid type: string
    /// "…"`), and cached data may be personal or secret, so it stays out of logs.
    /// A fault redcache's codec described itself (a MessagePack or compressed entry, or
    /// one this build lacks the feature for) is shown whole: its text names no data.
    pub(crate) fn decode_json(err: &serde_json::Error) -> Self {
        // Made outside any parse (no position): a type's own message while parsing has one.
        if err.line() == 0 {
            if let Some(own) = err.to_string().strip_prefix(crate::codec::OWN_FAULT) {
                return Error::decode(OwnFault(own.to_owned()));
            }
        }
        Error::decode(JsonFault {
            kind: err.classify(),
            line: err.line(),
            column: err.column(),
        })
    }

    /// A short name of the kind of fault, for metrics labels.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Error::Config { .. } => "config",
            Error::Connect { .. } => "connect",
            Error::Rejected { .. } => "rejected",
            Error::Redis { .. } => "connection",
            Error::Timeout { .. } => "timeout",
            Error::Encode { .. } => "encode",
            Error::Decode { .. } => "decode",
            Error::Unavailable { .. } => "unavailable",
            Error::TooLarge { .. } => "too_large",
            Error::AlreadyInitialized | Error::NotInitialized | Error::NotCacheable => "usage",
        }
    }

    /// Whether this fault says the store itself is unhealthy (counts toward the breaker).
    pub(crate) fn is_store_fault(&self) -> bool {
        matches!(self, Error::Redis { .. } | Error::Timeout { .. })
    }

    /// Whether what failed may succeed if sent again later: a store fault, or a refusal
    /// that passes, from a server that is loading its data after a restart (`LOADING`),
    /// held by a long script (`BUSY`), out of memory under `noeviction` (`OOM`), without
    /// its master or its cluster for now (`MASTERDOWN`, `CLUSTERDOWN`, `TRYAGAIN`),
    /// demoted to replica (`READONLY`: a failover, which a new connection follows), short
    /// of the replicas `min-replicas-to-write` asks for (`NOREPLICAS`: a promoted replica
    /// until the others follow it), or refusing writes since a snapshot failed
    /// (`MISCONF`, until one succeeds).
    pub(crate) fn is_transient(&self) -> bool {
        const PASSING: [&str; 9] = [
            "LOADING",
            "BUSY",
            "OOM",
            "MASTERDOWN",
            "CLUSTERDOWN",
            "TRYAGAIN",
            "READONLY",
            "NOREPLICAS",
            "MISCONF",
        ];
        match self {
            Error::Rejected { .. } => self.reply_code().is_some_and(|c| PASSING.contains(&c)),
            _ => self.is_store_fault(),
        }
    }

    /// The code of the error reply Redis answered (`WRONGTYPE`, `OOM`..), if it answered
    /// one.
    pub(crate) fn reply_code(&self) -> Option<&str> {
        match self {
            Error::Rejected { .. } => self
                .redis_error()
                .and_then(|err| script_error_code(err).or_else(|| err.code())),
            _ => None,
        }
    }
}

/// The code of the error a script's command met, where Redis wraps it in the script's own
/// (before Redis 7: `ERR Error running script (call to f_..): @user_script:1:
/// @user_script: 1: -READONLY You can't write against a read only replica.`).
pub(crate) fn script_error_code(err: &redis::RedisError) -> Option<&str> {
    if err.code() != Some("ERR") {
        return None;
    }
    let (_, inner) = err
        .detail()?
        .strip_prefix("Error running script")?
        .rsplit_once(": -")?;
    inner.split(' ').next().filter(|code| !code.is_empty())
}

/// Where and how a cached value failed to decode, without its content.
#[derive(Debug)]
struct JsonFault {
    kind: serde_json::error::Category,
    line: usize,
    column: usize,
}

impl fmt::Display for JsonFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use serde_json::error::Category;
        let kind = match self.kind {
            Category::Io => "an I/O error",
            Category::Syntax => "not valid JSON",
            Category::Data => "JSON of another shape or type",
            Category::Eof => "JSON cut short",
        };
        write!(f, "{kind} at line {} column {}", self.line, self.column)
    }
}

impl StdError for JsonFault {}

/// A decoding fault in redcache's own words (see [`Error::decode_json`]).
#[derive(Debug)]
struct OwnFault(String);

impl fmt::Display for OwnFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for OwnFault {}

/// `Result` with redcache's [`Error`].
///
/// # Examples
///
/// ```
/// fn ttl_of(config: &redcache::Config) -> redcache::Result<u64> {
///     Ok(config.default_ttl())
/// }
/// assert_eq!(ttl_of(&redcache::Config::default()).unwrap(), 300);
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(reply: &[u8]) -> Error {
        Error::redis(
            redis::parse_redis_value(reply)
                .unwrap()
                .extract_error()
                .unwrap_err(),
        )
    }

    #[test]
    fn a_refusal_a_script_met_counts_by_its_own_code() {
        let wrapped = |code: &str| {
            rejected(
                format!(
                    "-ERR Error running script (call to f_67ed): @user_script:1: @user_script: 1: \
                 -{code} refused for now. \r\n"
                )
                .as_bytes(),
            )
        };
        for code in ["READONLY", "OOM", "BUSY"] {
            let err = wrapped(code);
            assert_eq!(err.reply_code(), Some(code));
            assert!(err.is_transient(), "{code}");
        }
        let err = wrapped("WRONGTYPE");
        assert_eq!(err.reply_code(), Some("WRONGTYPE"));
        assert!(!err.is_transient());
        // A script's own error, and any other `ERR`, keep theirs.
        let own = rejected(b"-ERR Error running script (call to f_67ed): @user_script:1: bad\r\n");
        assert_eq!(own.reply_code(), Some("ERR"));
        assert_eq!(
            rejected(b"-ERR unknown command\r\n").reply_code(),
            Some("ERR")
        );
    }

    #[test]
    fn a_decode_fault_names_the_kind_not_the_content() {
        let err = serde_json::from_str::<u64>(r#""s3cret-token""#).unwrap_err();
        assert!(
            err.to_string().contains("s3cret"),
            "serde_json quotes the data"
        );
        let shown = Error::decode_json(&err).to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("another shape or type at line 1"), "{shown}");
        let err = serde_json::from_str::<u64>("@").unwrap_err();
        assert!(Error::decode_json(&err)
            .to_string()
            .contains("not valid JSON"));
    }

    /// What the codec says in its own words (a MessagePack entry a build without the
    /// feature reads, a compressed one cut short) is shown as it is, not as JSON.
    #[test]
    fn a_fault_of_the_codecs_own_is_shown_in_its_words() {
        let cut_short = [0xc1, 9, 0, 0, 0, 1];
        let err = crate::codec::decode::<u64>(&cut_short).unwrap_err();
        let shown = Error::decode_json(&err).to_string();
        assert!(shown.contains("compressed entry"), "{shown}");
        assert!(
            !shown.contains("JSON") && !shown.contains("redcache: "),
            "{shown}"
        );
    }
}
