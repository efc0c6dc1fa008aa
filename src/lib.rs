//! # contact-sync
//!
//! Keeps the contacts of several chat/CRM platforms in step through a local SQLite hub.
//!
//! ## Vocabulary
//!
//! - **Provider**: one configured platform account (`[[providers]]`), e.g. a Chatwoot
//!   account. Each has a kind (`chatwoot`, `maiagent`, `agentalk`, `dmchamp`) and
//!   [`provider::Capabilities`] (can it be enumerated? which lookups? tags?).
//! - **Contact**: the golden record of one person in the store.
//! - **Link**: (provider, remote id) → contact, with the snapshot of what that provider
//!   last showed or was last sent, so a change is detected only once and our own writes
//!   never come back as changes.
//! - **Match key**: E.164 phone, lower-cased email or source id; each value points to at
//!   most one contact.
//! - **Intent**: a planned write, persisted before it is sent (the outbox).
//!
//! ## Data flow of one cycle
//!
//! pull (page by page, one transaction per page) → match → discover in lookup-only
//! providers → plan (pure: [`domain`]) → push intents with retry → record snapshots.
//!
//! ## Layers
//!
//! - [`domain`]: pure rules (normalisation, matching, merging, planning); no I/O.
//! - [`provider`]: one trait, one adapter per platform (registered on one line in
//!   `provider/mod.rs`), one HTTP driver, the settings a client is built from.
//! - [`config`]: the config file into validated [`config::Settings`]; kind-specific keys
//!   are checked by the provider adapters.
//! - [`store`]: the only module with SQL.
//! - [`sync`]: the cycle; the only module that sees both HTTP and SQL.
//! - [`daemon`]: schedules, signals, systemd, health and metrics endpoint, webhook
//!   receiving (events applied as targeted cycles); the only module that knows clocks and
//!   signals.
//! - [`simulator`]: simulated providers for the demo, the tests and the benchmarks.
//! - [`app`]: the CLI commands, above [`daemon`] and [`demo`]; both use [`slots`] (settings
//!   → provider clients) and [`exit`] (exit codes), which use neither.
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crash;
pub mod daemon;
pub mod demo;
pub mod domain;
pub mod exit;
pub mod provider;
pub mod review;
pub mod simulator;
pub mod slots;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod webhooks;
