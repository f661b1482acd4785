// A parameter under `#[cfg]` (or a `cfg_attr` that makes one): refused at the attribute,
// by #[cached] and #[evicts] alike.

#[redcache::cached(prefix = "p", ttl = 60)]
async fn price(id: u64, #[cfg(any())] region: u8) -> u64 {
    id
}

#[redcache::evicts(price(id))]
async fn reprice(
    id: u64,
    #[cfg_attr(all(), cfg_attr(all(), cfg(any())))] region: u8,
) -> Result<(), String> {
    let _ = id;
    Ok(())
}

fn main() {}
