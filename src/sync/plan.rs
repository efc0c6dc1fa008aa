//! Planning one provider: every contact changed since the provider's planning watermark
//! is planned ([`crate::domain::plan::plan_contact`], pure) and the writes are persisted
//! as intents with the watermark, one transaction per batch. The cycle plan's steps are
//! made from these intents ([`crate::domain::cycle_plan`]).

use super::{Engine, PLAN_BATCH, ProviderSlot, lookup_keys, shape_of};
use crate::domain::plan::{LinkView, Skip, plan_contact, project};
use crate::provider::Provider;
use crate::store::StoreError;
use crate::store::intents::IntentPayload;
use std::collections::BTreeSet;

/// What planning one provider did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Planned {
    /// Intents persisted.
    pub intents: u64,
    /// Things the provider cannot hold or do (counted, never errors).
    pub skipped: u64,
}

/// Whether creates may be planned in a provider now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creates<'a> {
    /// Yes: its listing completed in this cycle, or it cannot be listed (its creates
    /// search first).
    Now,
    /// No: its listing did not complete (its unread pages may hold the person).
    Wait,
    /// Only for these contacts, and only those it can be searched by (a key among its
    /// lookups): a targeted cycle, which reads no listing, in a provider whose listing
    /// completed before. A record made there since that listing is found by the search
    /// and linked; the others wait for the next complete listing.
    IfFindable(&'a std::collections::HashSet<i64>),
}

impl Creates<'_> {
    /// `Now` when `yes`, else `Wait`.
    pub fn when(yes: bool) -> Self {
        if yes { Creates::Now } else { Creates::Wait }
    }
}

/// Providers plan one at a time: planning is store work on the one writer thread, so
/// providers planning at once all finish when the last does, and every push starts late;
/// one at a time, the first pushes while the next plans. Of the providers waiting, a
/// provider that cannot be listed goes first (it looks each person up before creating
/// them, so its push is the longest), then the provider registered first.
#[derive(Debug)]
pub struct PlanTurns {
    state: std::sync::Mutex<TurnState>,
    /// Bumped whenever a turn ends or a waiter leaves.
    changed: tokio::sync::watch::Sender<u64>,
}

/// A waiter's place: `(can be listed, provider id)`, smallest first.
type Rank = (bool, i64);

#[derive(Debug, Default)]
struct TurnState {
    busy: bool,
    waiting: BTreeSet<Rank>,
}

impl Default for PlanTurns {
    fn default() -> Self {
        Self {
            state: std::sync::Mutex::new(TurnState::default()),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }
}

/// A provider's turn to plan (or its place in the queue): ended when dropped.
pub struct Turn<'a> {
    turns: &'a PlanTurns,
    rank: Rank,
    holding: bool,
}

impl PlanTurns {
    fn state(&self) -> std::sync::MutexGuard<'_, TurnState> {
        // The state is two plain values, consistent at every step: a panic elsewhere
        // leaves nothing half-done in it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for this provider's turn.
    pub async fn take(&self, rank: Rank) -> Turn<'_> {
        let mut changed = self.changed.subscribe();
        self.state().waiting.insert(rank);
        let mut turn = Turn {
            turns: self,
            rank,
            holding: false,
        };
        // The providers that became ready together all queue before the first takes its
        // turn, so their ranks decide the order, not which was polled first.
        tokio::task::yield_now().await;
        loop {
            {
                let mut state = self.state();
                if !state.busy && state.waiting.first() == Some(&rank) {
                    state.waiting.remove(&rank);
                    state.busy = true;
                    turn.holding = true;
                    return turn;
                }
            }
            // `self` holds the sender, so this ends only with a change.
            let _ = changed.changed().await;
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        {
            let mut state = self.turns.state();
            if self.holding {
                state.busy = false;
            } else {
                state.waiting.remove(&self.rank);
            }
        }
        self.turns.changed.send_modify(|n| *n += 1);
    }
}

impl<P: Provider> Engine<P> {
    /// Plans every contact changed since the provider's watermark and persists the
    /// intents. Creates wait as `creates` says (the provider's listing did not complete):
    /// the watermark stops before the first of them, so they are planned again.
    pub(super) async fn plan_provider(
        &self,
        slot: &ProviderSlot<P>,
        provider_id: i64,
        creates: Creates<'_>,
    ) -> Result<Planned, StoreError> {
        let caps = slot.client.capabilities();
        let _turn = self.planning.take((caps.enumerate, provider_id)).await;
        let shape = shape_of(caps);
        let mut after = self.store.planned_seq(provider_id).await?;
        let mut out = Planned::default();
        let mut held_back = i64::MAX;
        loop {
            let inputs = self
                .store
                .plan_inputs(provider_id, after, PLAN_BATCH)
                .await?;
            let Some(last) = inputs.last() else { break };
            let last_seq = last.seq;
            let mut intents = Vec::new();
            for input in &inputs {
                let may_create = match creates {
                    Creates::Now => true,
                    Creates::Wait => false,
                    Creates::IfFindable(people) => {
                        people.contains(&input.contact.id)
                            && !lookup_keys(caps, &project(&input.contact, &shape)).is_empty()
                    }
                };
                let plan = plan_contact(&input.contact, &input.link, &shape, may_create);
                out.skipped += plan.skipped.len() as u64;
                if plan.skipped.contains(&Skip::EnumerationIncomplete) {
                    held_back = held_back.min(input.seq - 1);
                }
                if plan.operations.is_empty() {
                    continue;
                }
                let projection = project(&input.contact, &shape);
                let known_tags: Vec<String> = match &input.link {
                    LinkView::Active { tags: Some(t), .. } => {
                        t.names().map(str::to_owned).collect()
                    }
                    _ => Vec::new(),
                };
                for op in plan.operations {
                    intents.push((
                        input.contact.id,
                        IntentPayload {
                            op,
                            projection: projection.clone(),
                            known_tags: known_tags.clone(),
                        },
                    ));
                }
            }
            out.intents += intents.len() as u64;
            let watermark = last_seq.min(held_back);
            let now = self.clock.now_secs();
            self.store
                .persist_intents(provider_id, intents, watermark, now)
                .await?;
            after = last_seq;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn providers_plan_one_at_a_time_the_unlisted_ones_first() {
        let turns = PlanTurns::default();
        let busy = AtomicBool::new(false);
        let order = std::sync::Mutex::new(Vec::new());
        // Chatwoot and MaiAgent (listed, ids 1 and 2) become ready with Agentalk and DM
        // Champ (not listed, ids 3 and 4).
        let ranks = [(true, 1), (true, 2), (false, 3), (false, 4)];
        futures::future::join_all(ranks.map(|rank| {
            let (turns, busy, order) = (&turns, &busy, &order);
            async move {
                let _turn = turns.take(rank).await;
                assert!(
                    !busy.swap(true, Ordering::SeqCst),
                    "two providers planned at once"
                );
                order.lock().unwrap().push(rank.1);
                tokio::task::yield_now().await;
                busy.store(false, Ordering::SeqCst);
            }
        }))
        .await;
        assert_eq!(*order.lock().unwrap(), vec![3, 4, 1, 2]);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_does_not_hold_the_others() {
        let turns = PlanTurns::default();
        let first = turns.take((false, 1)).await;
        // A provider cancelled while it waited (its future dropped).
        let mut gave_up = Box::pin(turns.take((false, 2)));
        assert!(futures::poll!(gave_up.as_mut()).is_pending());
        drop(gave_up);
        drop(first);
        let third =
            tokio::time::timeout(std::time::Duration::from_secs(5), turns.take((true, 3))).await;
        assert!(third.is_ok(), "a dropped waiter kept the turn");
    }
}
