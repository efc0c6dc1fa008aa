//! API calls are the currency: a first import and the cycles after it, counted by the
//! simulated providers, against the least each provider's API allows for the seeded
//! population (`simulator::floor`, computed from the seed alone).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{SEED, World, stdout};
use contact_sync::simulator::floor::{self, Requests};
use std::fmt::Write;

fn counted(world: &World, kind: &str) -> Requests {
    let c = world.server(kind).log().counters();
    Requests {
        reads: c.reads,
        writes: c.writes,
    }
}

fn reset(world: &World) {
    for kind in ["chatwoot", "maiagent", "agentalk", "dmchamp"] {
        world.server(kind).log().reset();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_spends_at_most_five_percent_over_the_floor_and_a_quiet_cycle_the_floor() {
    let people = 400;
    let world = World::new(people).await;
    let floors = floor::floors(SEED, people);
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let mut report = String::new();
    let mut over = Vec::new();
    for (kind, floor) in &floors {
        let sent = counted(&world, kind);
        let limit = (floor.import.total() * 105 / 100).max(floor.import.total() + 2);
        let _ = writeln!(
            report,
            "{kind}: sent {} reads + {} writes = {}, floor {} + {} = {} (limit {limit})",
            sent.reads,
            sent.writes,
            sent.total(),
            floor.import.reads,
            floor.import.writes,
            floor.import.total()
        );
        if sent.total() > limit {
            over.push(*kind);
            let mut by = std::collections::BTreeMap::<String, u64>::new();
            for e in world.server(kind).log().entries() {
                let shape: String = e
                    .path
                    .split('/')
                    .map(|p| {
                        if p.len() > 12 || p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() {
                            "{id}"
                        } else {
                            p
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("/");
                *by.entry(format!("{} {shape} {}", e.method, e.status))
                    .or_default() += 1;
            }
            let _ = writeln!(report, "  {by:?}");
        }
    }
    assert!(over.is_empty(), "over the floor: {over:?}\n{report}");

    // The cycle after it sends nothing but the listings; a quiet one after that too.
    for _ in 0..2 {
        reset(&world);
        let out = world.sync().await;
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
        for kind in floors.keys() {
            let listing = Requests {
                reads: world.server(kind).listing_floor(),
                writes: 0,
            };
            assert_eq!(
                counted(&world, kind),
                listing,
                "{kind}: a cycle with nothing changed reads its listing and writes nothing"
            );
        }
    }
}
