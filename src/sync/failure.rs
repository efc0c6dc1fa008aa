//! Why a provider's part of a cycle failed, typed until it is printed: recovering
//! interrupted creates ([`RecoverError`]), pulling ([`PullFailure`]) or pushing
//! ([`ExecFailure`]), gathered in [`ProviderFailure`] for the report.

use crate::provider::ProviderError;
use crate::store::StoreError;
use serde::Serialize;

/// Why one provider's part of a cycle failed. Kept typed until it is printed.
#[derive(Debug, Clone)]
pub enum ProviderFailure {
    /// Resolving interrupted creates failed.
    Recover(RecoverError),
    /// The provider could not be read.
    Pull(PullFailure),
    /// Its pushes stopped early (store, credentials, cut off).
    Push(ExecFailure),
}

impl std::fmt::Display for ProviderFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProviderFailure::Recover(RecoverError::Provider(e)) => {
                write!(f, "resolving interrupted creates: {e}")
            }
            ProviderFailure::Recover(RecoverError::Store(e)) => {
                write!(
                    f,
                    "the store failed while resolving interrupted creates: {e}"
                )
            }
            ProviderFailure::Pull(e) => write!(f, "{e}"),
            ProviderFailure::Push(ExecFailure::Store(e)) => {
                write!(f, "the store failed while pushing: {e}")
            }
            ProviderFailure::Push(ExecFailure::Auth(e)) => write!(f, "{e}"),
            ProviderFailure::Push(ExecFailure::CutOff { last, left }) => {
                write!(
                    f,
                    "cut off for the rest of this cycle: it kept failing ({} consecutive failures); {left} planned step(s) are kept for the next cycle",
                    crate::provider::http::CUT_OFF_STREAK
                )?;
                if let Some(e) = last {
                    write!(f, "; last failure: {e}")?;
                } else {
                    write!(
                        f,
                        ". {}",
                        crate::provider::error::default_hint(crate::provider::ErrorKind::CutOff)
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl Serialize for ProviderFailure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Why a provider's pull failed.
#[derive(Debug, Clone)]
pub enum PullFailure {
    /// The provider failed (after its retries).
    Provider(ProviderError),
    /// The store failed.
    Store(String),
    /// The normalising thread stopped (a bug).
    Normalizer,
}

impl From<ProviderError> for PullFailure {
    fn from(e: ProviderError) -> Self {
        PullFailure::Provider(e)
    }
}

impl From<StoreError> for PullFailure {
    fn from(e: StoreError) -> Self {
        PullFailure::Store(e.to_string())
    }
}

impl std::fmt::Display for PullFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PullFailure::Provider(e) => write!(f, "{e}"),
            PullFailure::Store(e) => write!(f, "the store failed while pulling: {e}"),
            PullFailure::Normalizer => f.write_str(
                "the thread normalising listed records stopped (a bug; please report it); nothing of this page was stored",
            ),
        }
    }
}

/// Why a provider's part of the cycle did not complete.
#[derive(Debug, Clone)]
pub enum ExecFailure {
    /// The store failed.
    Store(String),
    /// The credentials were refused: nothing more is sent.
    Auth(ProviderError),
    /// The provider kept failing and was cut off; `left` steps are kept for the next
    /// cycle.
    CutOff {
        /// The last failure.
        last: Option<ProviderError>,
        /// Steps not run.
        left: u64,
    },
}

/// Why recovering interrupted creates failed.
#[derive(Debug, Clone)]
pub enum RecoverError {
    /// The store failed.
    Store(String),
    /// The provider failed.
    Provider(ProviderError),
}
