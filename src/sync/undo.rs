//! Undoing a run: a run of its own ([`Engine::undo_run`]). It pulls as a cycle does, so an
//! edit made since the run is seen; then it puts back, on every person the run changed,
//! the values from before it — except fields changed since (by a later run, its own pull
//! included), which are left alone and named with who changed them
//! ([`crate::domain::journal::plan_restore`]); and the restored people go out through the
//! normal plan and executor in the same run. People the run created in providers are
//! deleted there only when asked (`--delete-created`), and only where the provider can
//! delete.

use super::{CycleOptions, CycleReport, Engine, SyncError};
use crate::domain::journal::{LeftAlone, Restore, created_by, plan_restore};
use crate::provider::Provider;
use std::collections::BTreeSet;

/// What to undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UndoRequest {
    /// The run to undo.
    pub run: i64,
    /// Delete the people the run created, where the provider can delete.
    pub delete_created: bool,
}

/// What an undo put back and what it left alone.
#[derive(Debug, Clone, Default)]
pub struct UndoOutcome {
    /// People whose values were put back, with what changed.
    pub restored: Vec<Restore>,
    /// Fields (and tags) left as they are, and why.
    pub left: Vec<LeftAlone>,
    /// `(provider, person)` created by the run and deleted (queued) now.
    pub deleted: Vec<(String, i64)>,
    /// `(provider, person)` created by the run and kept: not asked to delete, the provider
    /// cannot delete, or it is not linked there any more.
    pub kept: Vec<(String, i64)>,
}

impl<P: Provider> Engine<P> {
    /// Undoes run `request.run` as a run of its own (see the module doc). In dry-run the
    /// store must be a copy, as for [`Engine::run_cycle`].
    pub async fn undo_run(
        &mut self,
        opts: &CycleOptions,
        request: UndoRequest,
    ) -> Result<(CycleReport, UndoOutcome), SyncError> {
        let (report, outcome) = self.cycle(opts, Some(&request)).await?;
        Ok((report, outcome.unwrap_or_default()))
    }

    /// Between the pull and the plan of an undo: computes what goes back and applies it
    /// (one transaction), queueing the deletes asked for.
    pub(super) async fn put_back(&self, request: &UndoRequest) -> Result<UndoOutcome, SyncError> {
        let subjects = self.store.undo_subjects(request.run).await?;
        let mut out = UndoOutcome::default();
        let mut restores = Vec::new();
        for subject in &subjects {
            let mut r = plan_restore(subject, self.region);
            out.left.append(&mut r.left);
            if r.changes_anything() {
                restores.push(r);
            }
        }
        let entries = self.store.run_entries(request.run).await?;
        let mut deletes = Vec::new();
        for (provider, contact) in created_by(&entries) {
            let slot = self
                .members
                .iter()
                .map(|m| (&m.slot, &m.id))
                .find(|(s, _)| s.settings.name == provider);
            match slot {
                Some((slot, &id))
                    if request.delete_created
                        && slot.settings.push
                        && slot.client.capabilities().delete =>
                {
                    deletes.push((id, contact));
                    out.deleted.push((provider, contact));
                }
                _ => out.kept.push((provider, contact)),
            }
        }
        let queued = self
            .store
            .apply_undo(restores.clone(), deletes, self.stamp())
            .await?;
        if queued < out.deleted.len() as u64 {
            // Some were no longer linked there: nothing to delete.
            tracing::info!(
                asked = out.deleted.len(),
                queued,
                "some records the run created are no longer linked; nothing to delete there"
            );
        }
        out.restored = restores;
        Ok(out)
    }
}

impl UndoOutcome {
    /// What the undo did, for a human: people and fields put back, fields left alone with
    /// who changed them, people created by the run that were deleted or kept.
    pub fn describe(&self, undone: i64) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let fields: usize = self.restored.iter().map(|r| r.changes.len()).sum();
        let _ = writeln!(
            s,
            "undo of run {undone}: {fields} value(s) put back on {} person(s)",
            self.restored.len()
        );
        for r in &self.restored {
            let names: Vec<&str> = r.changes.keys().map(String::as_str).collect();
            let _ = writeln!(s, "  contact {}: {}", r.contact, names.join(", "));
        }
        if !self.left.is_empty() {
            let _ = writeln!(
                s,
                "left as they are ({}): changed since run {undone}",
                self.left.len()
            );
            for l in &self.left {
                let _ = writeln!(s, "  contact {} {}: {}", l.contact, l.field, why(l));
            }
        }
        let people =
            |list: &[(String, i64)]| -> BTreeSet<i64> { list.iter().map(|(_, c)| *c).collect() };
        if !self.deleted.is_empty() {
            let _ = writeln!(
                s,
                "deleted {} record(s) run {undone} created ({} person(s))",
                self.deleted.len(),
                people(&self.deleted).len()
            );
        }
        if !self.kept.is_empty() {
            let _ = writeln!(
                s,
                "kept {} record(s) run {undone} created ({} person(s)); --delete-created deletes them where the provider can delete",
                self.kept.len(),
                people(&self.kept).len()
            );
        }
        s
    }
}

fn why(l: &LeftAlone) -> String {
    use crate::domain::journal::LeftBecause;
    match &l.because {
        LeftBecause::ChangedLater { provider, run, at } => {
            let by = provider
                .as_deref()
                .map_or_else(|| "by an undo".to_owned(), |p| format!("in {p}"));
            let run = run.map(|r| format!(" (run {r})")).unwrap_or_default();
            format!(
                "changed later {by}{run} at {}",
                crate::store::codec::rfc3339(*at)
            )
        }
        LeftBecause::DiffersNow => {
            "differs from what the run left, and its history does not say why".to_owned()
        }
        LeftBecause::KeyTaken => "another person holds that value now".to_owned(),
    }
}
