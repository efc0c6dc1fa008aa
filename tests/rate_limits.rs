//! Rate limits like the real ones (`simulate --rate-limits real`), and the client learning
//! them: a first import against simulated providers that each enforce their platform's
//! per-minute limit — scaled to one-second windows so the test is quick, the rates
//! unchanged (Chatwoot 3,000 a minute is 50 a second) — keeps close to the allowed rate,
//! with few requests answered 429 and none failing for good.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{World, assert_converged, stdout};
use contact_sync::simulator::ratelimit::RateLimitSettings;
use std::fmt::Write;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_under_real_rate_limits_learns_them_with_few_429s_and_no_failure() {
    let world = World::new(300).await;
    let settings = RateLimitSettings {
        window: Duration::from_secs(1),
        others_per_minute: 1_200,
    };
    world.sim.enforce_rate_limits(&settings);
    let out = world.sync().await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "no request failed for good: {}",
        stdout(&out)
    );
    assert_converged(&world);

    let mut report = String::new();
    let mut throttled_somewhere = false;
    for kind in ["chatwoot", "maiagent", "agentalk", "dmchamp"] {
        let server = world.server(kind);
        let counters = server.log().counters();
        let entries = server.log().entries();
        let allowed = server.rate_limits().allowed()[0].1;
        let answered = counters.requests - counters.throttled;
        let share = counters.throttled as f64 / counters.requests.max(1) as f64;
        // The rate it was answered at while it was busy (first to last request).
        let busy = entries
            .last()
            .zip(entries.first())
            .map_or(0.0, |(l, f)| (l.at_ms - f.at_ms) as f64 / 1000.0);
        let used = answered as f64 / busy.max(1e-3) / allowed;
        let _ = writeln!(
            report,
            "{kind}: {} requests, {} answered 429 ({:.2}%), {answered} in {busy:.1}s = {:.1}/s of {allowed}/s allowed ({:.0}%)",
            counters.requests,
            counters.throttled,
            share * 100.0,
            answered as f64 / busy.max(1e-3),
            used * 100.0
        );
        throttled_somewhere |= counters.throttled > 0;
    }
    eprintln!("{report}");
    assert!(throttled_somewhere, "the limits were reached\n{report}");
}
