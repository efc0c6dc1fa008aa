//! Pure contact rules: the shared record vocabulary, normalisation, matching, merging and
//! planning. No I/O, no clocks, no async.

pub mod cycle_plan;
pub mod journal;
pub mod matching;
pub mod merge;
pub mod names;
pub mod normalize;
pub mod plan;
pub mod record;
pub mod review;
pub mod whatsapp;

pub use record::{Fields, GoldenRecord, RemoteRecord, Tags, attr_field, field, tag_key};
