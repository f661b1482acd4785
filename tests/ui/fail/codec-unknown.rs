#[redcache::cached(codec = "bincode")]
async fn report(month: u32) -> Vec<u64> {
    vec![u64::from(month)]
}

fn main() {}
