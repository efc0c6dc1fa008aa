//! Progress of a one-shot run (`--sync-now`): one indicatif spinner per provider with the
//! records pulled and intents sent when stderr is a terminal; plain log lines otherwise
//! (one per page pulled, one every [`LOG_EVERY_INTENTS`] intents sent).

use crate::sync::{Progress, ProgressEvent};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// In plain mode, a log line every this many intents sent to a provider.
pub const LOG_EVERY_INTENTS: u64 = 50;

#[derive(Default)]
struct Counts {
    pulled: u64,
    pages: u64,
    sent: u64,
}

/// The progress display of one run; [`Display::finish`] clears the bars.
pub struct Display {
    bars: Option<(MultiProgress, HashMap<String, ProgressBar>)>,
    counts: Arc<Mutex<HashMap<String, Counts>>>,
}

impl Display {
    /// Bars on a terminal, log lines elsewhere, for `providers` (instance names).
    pub fn new(providers: &[String]) -> Self {
        if std::io::stderr().is_terminal() {
            Self::bars(providers)
        } else {
            Self::plain(providers)
        }
    }

    /// Plain log lines.
    pub fn plain(providers: &[String]) -> Self {
        Self {
            bars: None,
            counts: Arc::new(Mutex::new(
                providers
                    .iter()
                    .map(|p| (p.clone(), Counts::default()))
                    .collect(),
            )),
        }
    }

    fn bars(providers: &[String]) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} {prefix:<16} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let width = providers.iter().map(String::len).max().unwrap_or(0);
        let bars = providers
            .iter()
            .map(|p| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style.clone());
                bar.set_prefix(format!("{p:<width$}"));
                bar.set_message("waiting");
                bar.enable_steady_tick(Duration::from_millis(120));
                (p.clone(), bar)
            })
            .collect();
        let mut plain = Self::plain(providers);
        plain.bars = Some((multi, bars));
        plain
    }

    /// The hook to put in [`crate::sync::CycleOptions::progress`].
    pub fn hook(&self) -> Progress {
        let counts = Arc::clone(&self.counts);
        let bars = self.bars.as_ref().map(|(_, b)| b.clone());
        Progress::new(move |event| {
            let Ok(mut counts) = counts.lock() else {
                return;
            };
            let (provider, plain_line) = match &event {
                ProgressEvent::PagePulled { provider, records } => {
                    let c = counts.entry(provider.clone()).or_default();
                    c.pulled += records;
                    c.pages += 1;
                    (
                        provider,
                        Some(format!("{} records pulled ({} pages)", c.pulled, c.pages)),
                    )
                }
                ProgressEvent::IntentSent { provider } => {
                    let c = counts.entry(provider.clone()).or_default();
                    c.sent += 1;
                    let line = (c.sent % LOG_EVERY_INTENTS == 0)
                        .then(|| format!("{} writes sent", c.sent));
                    (provider, line)
                }
            };
            let c = counts.get(provider.as_str());
            match &bars {
                Some(bars) => {
                    if let (Some(bar), Some(c)) = (bars.get(provider.as_str()), c) {
                        bar.set_message(format!(
                            "pulled {} records ({} pages) · sent {} writes",
                            c.pulled, c.pages, c.sent
                        ));
                    }
                }
                None => {
                    if let Some(line) = plain_line {
                        tracing::info!(provider = %provider, "{line}");
                    }
                }
            }
        })
    }

    /// Clears the bars (before the summary table is printed).
    pub fn finish(self) {
        if let Some((multi, bars)) = self.bars {
            for bar in bars.values() {
                bar.finish_and_clear();
            }
            let _ = multi.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_mode_counts_per_provider() {
        let display = Display::plain(&["a".into(), "b".into()]);
        let hook = display.hook();
        hook.emit(ProgressEvent::PagePulled {
            provider: "a".into(),
            records: 15,
        });
        hook.emit(ProgressEvent::PagePulled {
            provider: "a".into(),
            records: 3,
        });
        hook.emit(ProgressEvent::IntentSent {
            provider: "b".into(),
        });
        let counts = display.counts.lock().unwrap();
        assert_eq!(counts["a"].pulled, 18);
        assert_eq!(counts["a"].pages, 2);
        assert_eq!(counts["b"].sent, 1);
    }
}
