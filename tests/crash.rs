//! Crash safety (README.md): SIGKILL the real binary mid-push at several points, rerun,
//! and compare with an uninterrupted run — no change lost, no duplicate created anywhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{World, assert_converged, end_state};
use contact_sync::simulator::faults::{FaultAction, FaultRule};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_push_then_rerun_loses_nothing_and_duplicates_nothing() {
    let clean = World::new(30).await;
    assert_eq!(clean.sync().await.status.code(), Some(0));
    let expected = end_state(&clean);

    for kill_after in [1u64, 6, 25] {
        let world = World::new(30).await;
        // Slow every write down so the kill lands between sending and recording.
        for instance in world.sim.instances() {
            instance.server.faults().add(
                FaultRule::new(FaultAction::Delay { millis: 40 }).method(reqwest::Method::POST),
            );
        }
        let mut child = world.spawn_sync();
        let mut waited = 0;
        while world.total_writes() < kill_after && waited < 600 {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += 1;
        }
        let still_running = child.try_wait().unwrap().is_none();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if kill_after <= 6 {
            assert!(
                still_running,
                "the kill after {kill_after} writes landed mid-push"
            );
        }
        // Rerun (twice at most: a write cut off mid-flight is retried by the next cycle).
        let mut code = world.sync().await.status.code();
        if code != Some(0) {
            code = world.sync().await.status.code();
        }
        assert_eq!(code, Some(0), "rerun after a kill at {kill_after} writes");
        assert_converged(&world);
        assert_eq!(
            end_state(&world),
            expected,
            "kill after {kill_after} writes"
        );
        let status = world.status().await;
        assert_eq!(status["contacts"], world.known(), "{status}");
    }
}
