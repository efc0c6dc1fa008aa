//! Planning one provider: every contact changed since the provider's planning watermark
//! is planned ([`crate::domain::plan::plan_contact`], pure) and the writes are persisted
//! as intents with the watermark, one transaction per batch. The cycle plan's steps are
//! made from these intents ([`crate::domain::cycle_plan`]).

use super::{Engine, PLAN_BATCH, ProviderSlot, lookup_keys, shape_of};
use crate::domain::plan::{LinkView, Skip, plan_contact, project};
use crate::provider::Provider;
use crate::store::StoreError;
use crate::store::intents::IntentPayload;

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
