//! The schema migrations, from the top-level `migrations/NNNN_name.sql` files, applied in
//! order at open with `rusqlite_migration` (tracked in SQLite's `user_version`).

use rusqlite_migration::{M, Migrations};

/// Every migration, oldest first. Append only: never edit a released migration.
pub const MIGRATION_SQL: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_review.sql"),
    include_str!("../../migrations/0003_journal.sql"),
    include_str!("../../migrations/0004_webhooks.sql"),
    include_str!("../../migrations/0005_links_creating.sql"),
    include_str!("../../migrations/0006_refusals.sql"),
    include_str!("../../migrations/0007_webhook_runs.sql"),
    include_str!("../../migrations/0008_review_keys.sql"),
];

/// The migrations as `rusqlite_migration` wants them.
pub fn migrations() -> Migrations<'static> {
    Migrations::new(MIGRATION_SQL.iter().map(|sql| M::up(sql)).collect())
}

/// The schema version this binary writes.
pub fn latest_version() -> usize {
    MIGRATION_SQL.len()
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        assert!(super::migrations().validate().is_ok());
    }
}
