//! Deterministic generator of realistic, overlapping contact sets for the simulated
//! providers (names in several scripts, phones in local formats, mixed-case emails, tags).

/// One person as a seeded provider holds them. Every field is written the way a human
/// typed it into that provider (local phone formats, mixed-case emails).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Stable index of the person in the generated population (the same person has the
    /// same index in every provider it is seeded into).
    pub index: u64,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Email as typed (mixed case, stray spaces possible), if the person has one.
    pub email: Option<String>,
    /// Phone as typed in this provider (e.g. `(415) 555-0123`, `0044 20 7946 0958`).
    pub phone: Option<String>,
    /// The same phone in E.164 (`+14155550123`).
    pub phone_e164: Option<String>,
    /// Tags / labels.
    pub tags: Vec<String>,
}
