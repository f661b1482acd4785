// Pattern arguments: every identifier a pattern binds is part of the key.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Copy)]
struct Point {
    x: i32,
    y: i32,
}

#[redcache::cached(ttl = 60)]
async fn sum((a, b): (u32, u32)) -> u32 {
    a + b
}

#[redcache::cached(ttl = 60)]
async fn manhattan(Point { x, y }: Point, [dx, dy]: [i32; 2]) -> i32 {
    (x + dx).abs() + (y + dy).abs()
}

#[redcache::cached(ttl = 60, skip(_unused))]
async fn ignored(_: u32, id: u32, _unused: u32) -> u32 {
    id
}

#[redcache::cached(ttl = 60)]
async fn countdown(mut from: u32, label: String) -> Vec<String> {
    let mut out = Vec::new();
    while from > 0 {
        out.push(format!("{label}{from}"));
        from -= 1;
    }
    out
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    redcache::Cache::memory()
        .scope(async {
            assert_eq!(sum((1, 2)).await, 3);
            assert_eq!(sum((2, 1)).await, 3);
            assert_eq!(manhattan(Point { x: 1, y: -2 }, [1, 1]).await, 3);
            assert_eq!(ignored(1, 2, 3).await, 2);
            assert_eq!(countdown(2, "t".to_owned()).await, ["t2", "t1"]);
        })
        .await;
}
