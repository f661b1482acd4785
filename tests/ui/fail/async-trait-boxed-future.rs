use std::future::Future;
use std::pin::Pin;

struct Users;

impl Users {
    #[redcache::cached(ttl = 60)]
    fn name(&self, id: u64) -> Pin<Box<dyn Future<Output = String> + Send + '_>> {
        Box::pin(async move { format!("user {id}") })
    }
}

fn main() {
    let _ = Users.name(1);
}
