//! Tags with arguments: `#[cached(tags("user:{user_id}"))]` attaches tags built from a
//! call's arguments to its entry, and `invalidate_tag("user:42")` retires every entry
//! carrying that tag, of every function, in one command.
//!
//! Each tag has a generation: a random number at `[{namespace}:]redcache:tag:{tag}`. A
//! tagged call reads the generations of its tags (one `MGET`; a cluster splits it by slot)
//! and stamps its entry with a digest of them. A read whose digest differs from the
//! entry's is a miss, filled over, exactly as an entry of an older group generation is.
//! `invalidate_tag` writes a new random generation. So:
//!
//! - **The fill race stays closed.** A fill computed before an invalidation carries the
//!   digest its call read, from before it: whatever it writes is a miss from then on.
//! - **A lost generation only costs misses.** A generation that expires (they live
//!   [`TAG_GENERATION_TTL`], renewed by every invalidation) or is evicted is replaced by a
//!   new random one, which no entry carries: never an old generation come back.

use crate::core::Core;
use crate::key::{self, new_generation};
use crate::stats::Event;
use crate::store::Store as _;
use crate::{Error, Result};
use md5::{Digest, Md5};
use std::time::Duration;

/// How long a tag's generation lives after it was created or last invalidated: entries
/// that outlive it miss once.
pub(crate) const TAG_GENERATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

impl Core {
    /// Where `tag`'s generation lives in this cache.
    fn tag_key(&self, tag: &str) -> String {
        key::tag_key(self.config.namespace(), tag)
    }

    /// The digest of the current generations of `tags` (never 0, which stamps an untagged
    /// entry), creating those that have none.
    pub(crate) async fn tag_digest(&self, tags: &[String]) -> Result<u64> {
        let keys: Vec<String> = tags.iter().map(|tag| self.tag_key(tag)).collect();
        let mut gens = self.op(self.backend.get_many(&keys)).await?;
        for (key, gen) in keys.iter().zip(gens.iter_mut()) {
            if gen.is_none() {
                *gen = Some(
                    self.create_generation(key, Some(TAG_GENERATION_TTL))
                        .await?,
                );
            }
        }
        let mut digest = Md5::new();
        for (tag, gen) in tags.iter().zip(&gens) {
            // Lengths first, so that no two lists of (tag, generation) hash alike.
            let gen = gen.as_deref().unwrap_or_default();
            digest.update((tag.len() as u64).to_le_bytes());
            digest.update(tag.as_bytes());
            digest.update((gen.len() as u64).to_le_bytes());
            digest.update(gen);
        }
        let digest = digest.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Ok(u64::from_le_bytes(first).max(1))
    }

    /// A generation at `key` (a tag's, or a group's that the HTTP layer keys by), which
    /// had none: a new random one living `ttl` (`None`: for good), or the one another
    /// caller created first. Callers that read none at once all key by the same one, so
    /// they share one flight, and every entry they store can be found again.
    pub(crate) async fn create_generation(
        &self,
        key: &str,
        ttl: Option<Duration>,
    ) -> Result<Vec<u8>> {
        let new = new_generation().to_string().into_bytes();
        for _ in 0..3 {
            let set = self.backend.set_nx(key, &new, ttl);
            if self.op(set).await? {
                return Ok(new);
            }
            if let Some(gen) = self.op(self.backend.get(key)).await? {
                return Ok(gen);
            }
        }
        Err(Error::decode(NoGeneration))
    }

    /// Moves `tag` to a new generation (see [`Cache::invalidate_tag`](crate::Cache::invalidate_tag)).
    pub(crate) async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        let key = self.tag_key(tag);
        let timeout = Some(self.config.op_timeout());
        let set = self.backend.regenerate(&key, Some(TAG_GENERATION_TTL));
        self.op_invalidation(timeout, set).await?;
        self.record(None, Event::Invalidations(1));
        Ok(())
    }
}

/// A generation that was created and gone again three times in a row.
#[derive(Debug)]
struct NoGeneration;

impl std::fmt::Display for NoGeneration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a generation could not be created")
    }
}

impl std::error::Error for NoGeneration {}
