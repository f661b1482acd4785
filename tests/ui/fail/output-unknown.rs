type Lookup = Result<u32, String>;

#[redcache::cached(output = "either")]
async fn lookup(id: u32) -> Lookup {
    Ok(id)
}

fn main() {}
