//! What the benchmarks share: the value they cache (a ~180-byte struct, as JSON), and how
//! the load benches report a ratio.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub id: u64,
    pub name: String,
    pub email: String,
    pub bio: String,
    pub tags: Vec<String>,
    pub score: f64,
}

pub fn profile(id: u64) -> Profile {
    Profile {
        id,
        name: "Ada Lovelace".into(),
        email: "ada@example.org".into(),
        bio: "Mathematician and writer, known for work on the Analytical Engine.".into(),
        tags: vec!["math".into(), "engines".into(), "poetry".into()],
        score: 98.5,
    }
}

/// Ratios as median (min–max), e.g. `0.94x (0.88–0.97)`: how the load benches report one
/// cell over its interleaved rounds.
#[allow(dead_code)]
pub fn spread(mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    format!(
        "{:.2}x ({:.2}–{:.2})",
        values[values.len() / 2],
        values[0],
        values[values.len() - 1]
    )
}
