//! The store's units of work for one sync cycle: each method is one step of the cycle
//! and one transaction, so a crash between two steps leaves the store at a step boundary
//! (see `docs/architecture.md`, "Crash points"). The engine (`crate::sync`) calls only
//! these; it never sees a connection.

use super::intents::{self, IntentPayload, PlanInput};
use super::journal::{self, Stamp};
use super::pull::{self, FieldOwners, LinkSet, PageOutcome};
use super::runs::{self, RunCounts};
use super::{Store, StoreError};
use super::{contacts, links};
use crate::domain::cycle_plan::DueIntent;
use crate::domain::journal::{Entry, Restore, UndoSubject};
use crate::domain::matching::ContactId;
use crate::domain::merge::NormalizedRecord;
use crate::domain::plan::{LinkView, Operation};
use crate::domain::{Fields, Tags};
use rusqlite::{OptionalExtension, params};
use std::sync::{Arc, Mutex};

/// The state of a link (`links.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Linked; the snapshot is what the provider last showed or was last sent.
    Active,
    /// A create was sent and its answer is not recorded yet.
    Creating,
    /// Deleted in the provider: never re-created there.
    Gone,
}

impl LinkState {
    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "active" => Ok(LinkState::Active),
            "creating" => Ok(LinkState::Creating),
            "gone" => Ok(LinkState::Gone),
            other => Err(StoreError::Corrupt(format!("unknown link state {other:?}"))),
        }
    }
}

/// A contact's link in one provider, with its state.
#[derive(Debug, Clone)]
pub struct LinkNow {
    /// Its state.
    pub state: LinkState,
    /// The link row.
    pub link: links::ActiveLink,
}

/// How a create begins: a new `creating` link, or the link the contact already has.
#[derive(Debug, Clone)]
pub enum CreateStart {
    /// The `creating` link written (its id).
    Begun(i64),
    /// The contact is linked (or being created, or gone) there already.
    Linked(LinkNow),
}

/// What finishing a complete listing did.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListingEnd {
    /// Links marked gone.
    pub gone: u64,
    /// Links that would have gone but the delete guard held them back.
    pub held_back: u64,
}

/// How a `creating` link found its record (what the journal says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkedBy {
    /// Our create went through (its answer, or a lookup after a lost answer).
    Created,
    /// A record the provider held already was found and linked.
    Found,
}

/// Where a step's record ends up after a create or a lookup.
#[derive(Debug, Clone)]
pub struct Linked {
    /// The provider's id of the record.
    pub remote_id: String,
    /// What the provider holds (or was sent).
    pub snapshot: Fields,
    /// Its tags, when known.
    pub tags: Option<Tags>,
}

impl Store {
    /// The ids of the provider instances `(name, kind)`, created if new.
    pub async fn ensure_providers(
        &self,
        names: Vec<(String, String)>,
    ) -> Result<Vec<i64>, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let ids = names
                .iter()
                .map(|(n, k)| runs::ensure_provider(&tx, n, k))
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit()?;
            Ok(ids)
        })
        .await
    }

    /// Starts a run (a cycle; an undo names the run it undoes) with a row for each
    /// provider, and prunes the journal entries older than `prune_before`; returns the run
    /// id and the provider rows' ids.
    pub async fn begin_runs(
        &self,
        providers: Vec<i64>,
        trigger: journal::Trigger,
        prune_before: i64,
        now: i64,
    ) -> Result<(i64, Vec<i64>), StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            journal::prune(&tx, prune_before)?;
            let cycle = journal::begin_cycle(&tx, now, trigger)?;
            let ids = providers
                .iter()
                .map(|&p| runs::begin_run(&tx, p, cycle, now))
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit()?;
            Ok((cycle, ids))
        })
        .await
    }

    /// Finishes a run (after its provider rows).
    pub async fn finish_cycle(&self, run: i64, ok: bool, now: i64) -> Result<(), StoreError> {
        self.call(move |c| journal::finish_cycle(c, run, ok, now))
            .await
    }

    /// Finishes a targeted run: its provider rows (`(row id, counts, error)`; a targeted
    /// cycle reads no listing, so no provider's last success moves) and the run — or, when
    /// it changed nothing (`changed` false and no journal entry), forgets it, so events
    /// that only echo our own writes leave no run behind. One transaction. Returns whether
    /// the run was kept.
    pub async fn finish_targeted_run(
        &self,
        run: i64,
        rows: Vec<(i64, RunCounts, Option<String>)>,
        ok: bool,
        changed: bool,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            for (row, counts, error) in &rows {
                runs::finish_run(&tx, *row, counts, error.as_deref(), now)?;
            }
            journal::finish_cycle(&tx, run, ok, now)?;
            let kept = changed || !journal::forget_if_empty(&tx, run)?;
            tx.commit()?;
            Ok(kept)
        })
        .await
    }

    /// Whether each provider (by id) has ever completed a listing.
    pub async fn listed_once(&self, providers: Vec<i64>) -> Result<Vec<bool>, StoreError> {
        self.call(move |c| providers.iter().map(|&p| runs::listed_once(c, p)).collect())
            .await
    }

    /// The people run `run` changed, with what an undo needs to know of each.
    pub async fn undo_subjects(&self, run: i64) -> Result<Vec<UndoSubject>, StoreError> {
        self.call(move |c| journal::undo_subjects(c, run)).await
    }

    /// The journal of run `run`, oldest first.
    pub async fn run_entries(&self, run: i64) -> Result<Vec<Entry>, StoreError> {
        self.call(move |c| journal::run_entries(c, run)).await
    }

    /// Applies what an undo puts back, and queues a delete of each record in `deletes`
    /// (`(provider, person)`: people the undone run created there, where the provider can
    /// delete and the record is still linked) — one transaction. Returns the deletes
    /// queued.
    pub async fn apply_undo(
        &self,
        restores: Vec<Restore>,
        deletes: Vec<(i64, ContactId)>,
        stamp: Stamp,
    ) -> Result<u64, StoreError> {
        self.call_seq(move |c, seq| {
            let tx = c.transaction()?;
            for r in &restores {
                journal::apply_restore(&tx, seq, stamp, r)?;
            }
            let mut queued = 0;
            for (provider_id, contact) in deletes {
                let Some((state, link)) = links::link_of(&tx, provider_id, contact)? else {
                    continue;
                };
                if LinkState::parse(&state)? != LinkState::Active {
                    continue;
                }
                let payload = IntentPayload {
                    op: Operation::Delete {
                        remote_id: link.remote_id,
                    },
                    projection: link.snapshot,
                    known_tags: Vec::new(),
                };
                intents::insert_intents(&tx, provider_id, &[(contact, payload)], stamp.at)?;
                queued += 1;
            }
            tx.commit()?;
            Ok(queued)
        })
        .await
    }

    /// Finishes a provider's run row (and records its success).
    pub async fn finish_run(
        &self,
        run_id: i64,
        provider_id: i64,
        counts: RunCounts,
        error: Option<String>,
        listing_complete: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            runs::finish_run(&tx, run_id, &counts, error.as_deref(), now)?;
            if error.is_none() {
                runs::mark_success(&tx, provider_id, listing_complete, now)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Links a crash (or a lost answer) left `creating` in a provider:
    /// `(link id, contact id, sent fields)`.
    pub async fn creating_links(
        &self,
        provider_id: i64,
    ) -> Result<Vec<(i64, ContactId, Fields)>, StoreError> {
        self.call(move |c| links::creating_links(c, provider_id))
            .await
    }

    /// A `creating` link found in the provider: it becomes active with what was found,
    /// which fills the contact's gaps (journaled as our create, or as a record found and
    /// linked, with what it filled in); the intent (if any) is closed and the contact is
    /// planned again when `replan` (or when it was filled). `None`: the record is linked
    /// to another contact (held as a conflict); else whether the contact was filled.
    #[allow(clippy::too_many_arguments)]
    pub async fn link_found(
        &self,
        link_id: i64,
        contact_id: ContactId,
        found: Linked,
        replan: bool,
        how: LinkedBy,
        intent: Option<i64>,
        stamp: Stamp,
    ) -> Result<Option<bool>, StoreError> {
        self.call_grouped(move |c, seq| {
            let op = match how {
                LinkedBy::Created => links::LinkOp::Created,
                LinkedBy::Found => links::LinkOp::Found,
            };
            links::finish_link(
                c,
                seq,
                link_id,
                contact_id,
                &found.remote_id,
                &found.snapshot,
                found.tags.as_ref(),
                replan,
                op,
                intent,
                stamp,
            )
        })
        .await
    }

    /// A `creating` link whose create certainly never landed: dropped, and the contact
    /// planned again.
    pub async fn drop_creating(
        &self,
        link_id: i64,
        contact_id: ContactId,
    ) -> Result<(), StoreError> {
        self.call_grouped(move |c, seq| links::drop_creating(c, seq, link_id, contact_id))
            .await
    }

    /// Whether the provider has an active link: when it has none (its first import), no
    /// listed record can be unchanged and the pull skips the probe.
    pub async fn any_active_link(&self, provider_id: i64) -> Result<bool, StoreError> {
        self.call(move |c| links::any_active(c, provider_id)).await
    }

    /// Which of the `listed` records (remote id, listed hash) are unchanged since their
    /// active link's snapshot: their link ids (`None` for the others).
    /// `cursor` is the listing's probe cursor ([`pull::ProbeCursor`]), moved along.
    pub async fn unchanged_links(
        &self,
        provider_id: i64,
        listed: Vec<(String, i64)>,
        cursor: pull::ProbeCursor,
    ) -> Result<(Vec<(String, i64)>, Vec<Option<i64>>, pull::ProbeCursor), StoreError> {
        self.call(move |c| {
            let mut cursor = cursor;
            let unchanged = pull::unchanged_links(c, provider_id, &listed, &mut cursor)?;
            Ok((listed, unchanged, cursor))
        })
        .await
    }

    /// Stores one listed page (normalised records) in one transaction: merged into the
    /// contacts, linked, conflicts recorded.
    pub async fn store_page(
        &self,
        records: Vec<NormalizedRecord>,
        provider_id: i64,
        order: usize,
        owners: Arc<Mutex<FieldOwners>>,
        stamp: Stamp,
    ) -> Result<PageOutcome, StoreError> {
        let mut outcomes = self
            .store_pages(vec![records], provider_id, order, owners, stamp)
            .await?;
        Ok(outcomes.pop().unwrap_or_default())
    }

    /// Stores consecutive listed pages of one provider in one transaction (see
    /// [`pull::apply_pages`]); one outcome per page.
    pub async fn store_pages(
        &self,
        pages: Vec<Vec<NormalizedRecord>>,
        provider_id: i64,
        order: usize,
        owners: Arc<Mutex<FieldOwners>>,
        stamp: Stamp,
    ) -> Result<Vec<PageOutcome>, StoreError> {
        self.call_seq(move |c, seq| {
            let mut owners = owners.lock().map_err(|_| StoreError::Closed)?;
            let outcome =
                pull::apply_pages(c, seq, &mut owners, provider_id, order, &pages, stamp)?;
            crate::crash_point!("after-page-stored");
            Ok(outcome)
        })
        .await
    }

    /// Finishes a complete listing in one transaction: links it did not show are marked
    /// gone (none when more than `guard_percent` of the links would go), their contacts
    /// are marked deleted when `propagate_deletes`, and `creating` links no listed record
    /// adopted are dropped (their creates never landed) so they are planned again.
    pub async fn finish_listing(
        &self,
        provider_id: i64,
        seen: Arc<LinkSet>,
        guard_percent: u64,
        propagate_deletes: bool,
        stamp: Stamp,
    ) -> Result<ListingEnd, StoreError> {
        self.call_seq(move |c, seq| {
            let tx = c.transaction()?;
            let (gone, held_back) = pull::mark_gone(&tx, provider_id, &seen, guard_percent, stamp)?;
            crate::crash_point!("after-mark-gone");
            if propagate_deletes {
                contacts::mark_contacts_deleted(&tx, seq, &gone)?;
            }
            for (link_id, contact_id, _) in links::creating_links(&tx, provider_id)? {
                links::drop_creating(&tx, seq, link_id, contact_id)?;
            }
            tx.commit()?;
            Ok(ListingEnd {
                gone: gone.len() as u64,
                held_back,
            })
        })
        .await
    }

    /// Starts staging a provider's tag listing (its earlier staged rows are cleared; other
    /// providers' staging is untouched).
    pub async fn begin_tag_staging(&self, provider_id: i64) -> Result<(), StoreError> {
        self.call(move |c| pull::begin_tag_staging(c, provider_id))
            .await
    }

    /// Stages one page of a tag listing: `remote_ids` carry `tag`.
    pub async fn stage_tag_page(
        &self,
        provider_id: i64,
        tag: String,
        remote_ids: Vec<String>,
    ) -> Result<(), StoreError> {
        self.call(move |c| pull::stage_tag_page(c, provider_id, &tag, &remote_ids))
            .await
    }

    /// Applies a provider's staged tag listing to the links in `seen`.
    pub async fn apply_staged_tags(
        &self,
        provider_id: i64,
        universe: Tags,
        seen: Arc<LinkSet>,
        stamp: Stamp,
    ) -> Result<u64, StoreError> {
        self.call_seq(move |c, seq| {
            pull::apply_staged_tags(c, seq, provider_id, &universe, &seen, stamp)
        })
        .await
    }

    /// Carries out the review decisions written since the last cycle (one transaction
    /// per item). `can_merge`: the providers that merge records themselves.
    pub async fn apply_decisions(
        &self,
        can_merge: Vec<i64>,
        stamp: Stamp,
    ) -> Result<super::review::AppliedDecisions, StoreError> {
        self.call_seq(move |c, seq| super::review::apply_decisions(c, seq, &can_merge, stamp))
            .await
    }

    /// What a provider's record names besides `contact` (see
    /// [`super::review::holder_people`]).
    pub async fn holder_people(
        &self,
        provider_id: i64,
        contact: ContactId,
        remote_id: String,
        keys: crate::domain::matching::Keys,
    ) -> Result<super::review::HolderNames, StoreError> {
        self.call(move |c| super::review::holder_people(c, provider_id, contact, &remote_id, &keys))
            .await
    }

    /// Records a write the provider refused because another of its records holds a key
    /// (see [`super::review::record_refusal`]).
    pub async fn record_refusal(
        &self,
        refusal: super::review::Refusal,
        stamp: Stamp,
    ) -> Result<super::review::RefusalOutcome, StoreError> {
        self.call_seq(move |c, seq| super::review::record_refusal(c, seq, &refusal, stamp))
            .await
    }

    /// The merges a provider that merges records itself still has to run.
    pub async fn pending_merges(
        &self,
        provider_id: i64,
    ) -> Result<Vec<super::review::RemoteMerge>, StoreError> {
        self.call(move |c| super::review::pending_merges(c, provider_id))
            .await
    }

    /// Records how a merge in the provider went (see [`super::review::finish_merge`]).
    pub async fn finish_merge(
        &self,
        provider_id: i64,
        remote_id: String,
        outcome: Result<(), (String, bool)>,
    ) -> Result<(), StoreError> {
        self.call(move |c| super::review::finish_merge(c, provider_id, &remote_id, outcome))
            .await
    }

    /// How many records are linked (active), over all providers: none before a first run.
    pub async fn active_links(&self) -> Result<i64, StoreError> {
        self.call(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM links WHERE state = 'active'",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// The open review items (what a dry run would leave open).
    pub async fn open_review_items(&self) -> Result<Vec<super::review::Item>, StoreError> {
        self.call(|c| super::review::open_items(c)).await
    }

    /// The planning watermark of a provider: contacts changed after it are planned.
    pub async fn planned_seq(&self, provider_id: i64) -> Result<i64, StoreError> {
        self.call(move |c| intents::planned_seq(c, provider_id))
            .await
    }

    /// Contacts changed after `after_seq`, with their link in the provider.
    pub async fn plan_inputs(
        &self,
        provider_id: i64,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<PlanInput>, StoreError> {
        self.call(move |c| intents::plan_inputs(c, provider_id, after_seq, limit))
            .await
    }

    /// Persists planned writes and moves the planning watermark, in one transaction.
    pub async fn persist_intents(
        &self,
        provider_id: i64,
        intents: Vec<(ContactId, IntentPayload)>,
        watermark: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            intents::insert_intents(&tx, provider_id, &intents, now)?;
            intents::set_planned_seq(&tx, provider_id, watermark)?;
            tx.commit()?;
            crate::crash_point!("after-plan-persisted");
            Ok(())
        })
        .await
    }

    /// Pending intents of a provider due at `due` (all when `None`), after id `after`, at
    /// most `limit`, each with its contact's link there now.
    pub async fn due_intents(
        &self,
        provider_id: i64,
        due: Option<i64>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<DueIntent>, StoreError> {
        self.call(move |c| {
            let intents = intents::due_intents(c, provider_id, due, after, limit)?;
            let mut out = Vec::with_capacity(intents.len());
            for i in intents {
                let link = match links::link_of(c, provider_id, i.contact_id)? {
                    None => LinkView::None,
                    Some((state, link)) => match LinkState::parse(&state)? {
                        LinkState::Gone => LinkView::Gone,
                        LinkState::Creating => LinkView::Creating,
                        LinkState::Active => LinkView::Active {
                            remote_id: link.remote_id,
                            snapshot: link.snapshot,
                            tags: link.tags,
                        },
                    },
                };
                let held_by = super::review::held_by(c, provider_id, i.contact_id)?;
                out.push(DueIntent {
                    held_by,
                    intent_id: i.id,
                    contact_id: i.contact_id,
                    who: who(c, i.contact_id)?,
                    attempts: i.attempts,
                    op: i.payload.op,
                    projection: i.payload.projection,
                    link,
                });
            }
            Ok(out)
        })
        .await
    }

    /// The contact's link in a provider now.
    pub async fn link_now(
        &self,
        provider_id: i64,
        contact_id: ContactId,
    ) -> Result<Option<LinkNow>, StoreError> {
        self.call(move |c| {
            links::link_of(c, provider_id, contact_id)?
                .map(|(state, link)| {
                    Ok(LinkNow {
                        state: LinkState::parse(&state)?,
                        link,
                    })
                })
                .transpose()
        })
        .await
    }

    /// Writes a `creating` link before a create is sent, unless the contact already has a
    /// link there: then that link, as it is now.
    pub async fn begin_create(
        &self,
        provider_id: i64,
        contact_id: ContactId,
        sent: Fields,
        now: i64,
    ) -> Result<CreateStart, StoreError> {
        self.call_grouped(move |c, _| {
            if let Some(id) = links::begin_create(c, provider_id, contact_id, &sent, now)? {
                return Ok(CreateStart::Begun(id));
            }
            match links::link_of(c, provider_id, contact_id)? {
                Some((state, link)) => Ok(CreateStart::Linked(LinkNow {
                    state: LinkState::parse(&state)?,
                    link,
                })),
                None => Err(StoreError::Corrupt(format!(
                    "contact {contact_id}: a link was neither created nor found"
                ))),
            }
        })
        .await
    }

    /// A write (`op`: `update`, `tag_add`, `tag_remove`) went through: the link's new
    /// snapshot (and tags, when given), a `sent_to` journal entry with each value sent and
    /// the one the snapshot held before, and the intent closed when `intent` is given —
    /// one transaction.
    pub async fn record_write(
        &self,
        link_id: i64,
        op: &'static str,
        snapshot: Fields,
        tags: Option<Tags>,
        intent: Option<i64>,
        stamp: Stamp,
    ) -> Result<(), StoreError> {
        self.call_grouped(move |c, _| {
            links::journal_write(c, link_id, op, &snapshot, tags.as_ref(), stamp)?;
            links::update_link_snapshot(c, link_id, &snapshot, tags.as_ref(), stamp.at)?;
            if let Some(id) = intent {
                intents::complete_intent(c, id)?;
            }
            Ok(())
        })
        .await
    }

    /// The record is gone from the provider (a 404 on it, or our delete went through when
    /// `deleted`): the link is marked gone and journaled (`gone`, or a `sent_to` delete),
    /// the contact deleted everywhere when `propagate`, and the intent closed — one
    /// transaction.
    pub async fn record_gone(
        &self,
        link_id: i64,
        intent: i64,
        propagate: bool,
        deleted: bool,
        stamp: Stamp,
    ) -> Result<(), StoreError> {
        self.call_seq(move |c, seq| {
            let tx = c.transaction()?;
            links::journal_gone(&tx, link_id, deleted, stamp)?;
            links::mark_link_gone(&tx, link_id, stamp.at)?;
            if propagate && let Some(contact) = links::contact_of_link(&tx, link_id)? {
                contacts::mark_contacts_deleted(&tx, seq, &[contact])?;
            }
            intents::complete_intent(&tx, intent)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Closes an intent whose step is done or moot.
    pub async fn close_intent(&self, intent: i64) -> Result<(), StoreError> {
        self.call_grouped(move |c, _| intents::complete_intent(c, intent))
            .await
    }

    /// Records a failed step: retried from `next_attempt_at`, or given up (`dead`), and
    /// journaled as a `sent_to` that did not go through — one transaction.
    pub async fn fail_intent(
        &self,
        intent: i64,
        dead: bool,
        next_attempt_at: i64,
        error: String,
        stamp: Stamp,
    ) -> Result<(), StoreError> {
        self.call_grouped(move |c, _| {
            intents::journal_failure(c, intent, dead, &error, stamp)?;
            intents::fail_intent(c, intent, dead, next_attempt_at, &error, stamp.at)?;
            Ok(())
        })
        .await
    }
}

impl Store {
    /// Pending and given-up intents per provider (the daemon's queue-depth metric).
    pub async fn intent_depth(&self) -> Result<Vec<super::status::IntentDepth>, StoreError> {
        self.call(|c| super::status::intent_depth(c)).await
    }

    /// A few people with the providers holding them (the demo's closing sample).
    pub async fn sample_people(
        &self,
        limit: usize,
    ) -> Result<Vec<(crate::domain::GoldenRecord, Vec<(String, String)>)>, StoreError> {
        self.call(move |c| contacts::sample_people(c, limit)).await
    }

    /// How many golden records the store holds.
    pub async fn contact_count(&self) -> Result<i64, StoreError> {
        self.call(|c| Ok(c.query_row("SELECT count(*) FROM contacts", [], |r| r.get(0))?))
            .await
    }
}

/// Who a contact is, for a human: display name, else email, else phone.
fn who(conn: &rusqlite::Connection, id: ContactId) -> Result<String, StoreError> {
    let row: Option<(String, String, String, String, String)> = conn
        .prepare_cached(
            "SELECT name, first_name, last_name, email, phone FROM contacts WHERE id = ?1",
        )?
        .query_row(params![id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    Ok(row
        .and_then(|(name, first, last, email, phone)| {
            let joined = crate::domain::names::join(&first, &last);
            [name, joined, email, phone]
                .into_iter()
                .find(|v| !v.trim().is_empty())
        })
        .unwrap_or_else(|| format!("contact #{id}")))
}
