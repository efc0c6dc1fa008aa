//! The wall clock: owned by the process edge (`app`, `daemon`, `demo`) and handed to the
//! engine, so the cycle, the store and the domain read no clock of their own and tests can
//! pass a fixed one.

use std::sync::Arc;

/// Unix seconds, from wherever the owner says.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Self(Arc::new(|| jiff::Timestamp::now().as_second()))
    }

    /// A clock that always says `secs`.
    pub fn fixed(secs: i64) -> Self {
        Self(Arc::new(move || secs))
    }

    /// Unix seconds now.
    pub fn now_secs(&self) -> i64 {
        (self.0)()
    }

    /// The clock as a function.
    pub fn as_fn(&self) -> &(dyn Fn() -> i64 + Send + Sync) {
        &*self.0
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}
