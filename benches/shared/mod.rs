//! The value both benchmarks cache: a ~180-byte struct, as JSON.

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
