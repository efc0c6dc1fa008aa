//! Client-side pacing: how fast one provider instance is sent requests.
//!
//! The platforms' rate limits are mostly undocumented (Chatwoot: 3,000 a minute per IP and
//! 100 a minute for contact search, answered 429 without `Retry-After`), so the client
//! learns them: [`Aimd`] is an additive-increase, multiplicative-decrease controller of
//! one request class's rate, a pure state machine driven by the caller's clock (tested
//! without timers). [`Pacer`] holds one controller for all the instance's requests and one
//! per request class with its own lower limit (a search endpoint), plus the configured
//! ceiling (`requests_per_second`, through governor).
//!
//! The controller, per class:
//! - **Unpaced until the first 429** (or paced at the ceiling when one is set): a provider
//!   that never throttles is never slowed down.
//! - **On a 429** every request of the class waits ([`Aimd::throttled`]): for the
//!   `Retry-After` when the provider sends one, else a probe delay that starts at the
//!   retry base delay and doubles on each 429 in a row (at most [`MAX_PROBE_FACTOR`]
//!   times it), so a fixed window that is used up (Chatwoot's minute) costs a handful of
//!   429s, not one per request. The first 429 after an answer also **decreases** the rate
//!   (at most once a second): to [`BETA`] times the rate the provider actually answered
//!   since the last decrease (answers ÷ time, waits included), which is what a fixed
//!   window allows, or the current rate if lower.
//! - **On each answer to a request that had to wait** the rate grows by
//!   [`INCREASE_SHARE`] of the rate measured at the last decrease per second of sending
//!   (additive: a straight line between decreases), never above the ceiling.

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter, clock::Clock};
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// The multiplicative decrease: a 429 sets the rate to this share of what the provider
/// answered since the last decrease.
pub const BETA: f64 = 0.9;
/// The additive increase, per second of sending: this share of the rate measured at the
/// last decrease.
pub const INCREASE_SHARE: f64 = 0.02;
/// The slowest rate a decrease goes to, requests a second.
pub const MIN_RATE: f64 = 0.2;
/// At most one decrease in this long (429s in a burst are one signal).
pub const DECREASE_COOLDOWN: Duration = Duration::from_secs(1);
/// The longest probe delay after 429s in a row, as a multiple of the first one.
pub const MAX_PROBE_FACTOR: u32 = 8;
/// A pause in sending longer than this (not waiting on a 429) starts a new measurement.
pub const IDLE: Duration = Duration::from_secs(5);

/// The rate controller of one request class (see the module doc). Every method takes
/// the time, so it is a pure function of what it was told.
#[derive(Debug, Clone)]
pub struct Aimd {
    /// Requests a second; `None`: unpaced (no 429 seen and no ceiling).
    rate: Option<f64>,
    ceiling: Option<f64>,
    probe_base: Duration,
    probe: Duration,
    next_at: Option<Instant>,
    blocked_until: Option<Instant>,
    throttled_in_a_row: u32,
    last_decrease: Option<Instant>,
    increase_per_sec: f64,
    since: Option<Instant>,
    answered: u64,
    last_sent: Option<Instant>,
    probing_until: Option<Instant>,
    decreases: u64,
}

impl Aimd {
    /// A controller capped at `ceiling` requests a second (if any), starting there (or
    /// unpaced), whose first probe delay after a 429 is `probe_base`.
    pub fn new(ceiling: Option<f64>, probe_base: Duration) -> Self {
        let ceiling = ceiling.filter(|c| c.is_finite() && *c > 0.0);
        Aimd {
            rate: ceiling,
            ceiling,
            probe_base,
            probe: probe_base,
            next_at: None,
            blocked_until: None,
            throttled_in_a_row: 0,
            last_decrease: None,
            increase_per_sec: 0.0,
            since: None,
            answered: 0,
            last_sent: None,
            probing_until: None,
            decreases: 0,
        }
    }

    /// The rate in force, requests a second (`None`: unpaced).
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// How many times the rate was decreased.
    pub fn decreases(&self) -> u64 {
        self.decreases
    }

    /// When the next request may go: `None` now, else the instant to wait for.
    pub fn ready_at(&self, now: Instant) -> Option<Instant> {
        [self.blocked_until, self.next_at, self.probing_until]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .max()
    }

    /// A request goes at `now` (after [`Aimd::ready_at`] said so).
    pub fn sent(&mut self, now: Instant) {
        let idle = self
            .last_sent
            .is_none_or(|t| now.saturating_duration_since(t) > IDLE);
        if self.since.is_none() || (idle && self.throttled_in_a_row == 0) {
            self.since = Some(now);
            self.answered = 0;
        }
        self.last_sent = Some(now);
        self.next_at = self.rate.map(|r| now + interval(r));
        if self.throttled_in_a_row > 0 {
            // A probe after 429s: one at a time until it is answered.
            self.probing_until = Some(now + self.probe_base * MAX_PROBE_FACTOR * 2);
        }
    }

    /// A request of this class got no answer at all (a transport failure): the next one
    /// may go.
    pub fn released(&mut self) {
        self.probing_until = None;
    }

    /// A request of this class was answered (anything but a 429); `waited`: it had to
    /// wait for its turn, so the rate was what held it back.
    pub fn answered(&mut self, now: Instant, mut waited: bool) {
        self.probing_until = None;
        if self.throttled_in_a_row > 0 {
            // The first answer after 429s: the window that was used up is over. What was
            // answered from the start of the measurement until now (the wait included)
            // is what the provider allows.
            let elapsed = self
                .since
                .map_or(0.0, |s| now.saturating_duration_since(s).as_secs_f64());
            if self.answered > 0 && elapsed > 0.0 {
                let allowed = self.answered as f64 / elapsed;
                let rate = self.rate.map_or(allowed * BETA, |r| r.min(allowed * BETA));
                self.rate = Some(self.cap(rate));
                self.increase_per_sec = INCREASE_SHARE * allowed;
            }
            self.since = Some(now);
            self.answered = 0;
            waited = false;
        }
        self.answered += 1;
        self.throttled_in_a_row = 0;
        self.probe = self.probe_base;
        if let (true, Some(rate)) = (waited, self.rate) {
            let grown = rate + self.increase_per_sec / rate.max(MIN_RATE);
            self.rate = Some(self.cap(grown));
        }
    }

    /// A request of this class was answered 429 at `now`, with the provider's
    /// `Retry-After` if it sent one.
    pub fn throttled(&mut self, now: Instant, retry_after: Option<Duration>) {
        let first = self.throttled_in_a_row == 0;
        self.throttled_in_a_row += 1;
        self.probing_until = None;
        let wait = retry_after.unwrap_or(self.probe);
        if retry_after.is_none() {
            self.probe = (self.probe * 2).min(self.probe_base * MAX_PROBE_FACTOR);
        }
        let until = now + wait;
        self.blocked_until = Some(self.blocked_until.map_or(until, |b| b.max(until)));
        let cooled = self
            .last_decrease
            .is_none_or(|t| now.saturating_duration_since(t) >= DECREASE_COOLDOWN);
        if !(first && cooled) {
            return;
        }
        let elapsed = self
            .since
            .map_or(0.0, |s| now.saturating_duration_since(s).as_secs_f64());
        let measured = (self.answered > 0 && elapsed > 0.0).then(|| self.answered as f64 / elapsed);
        // Nothing answered yet (the window was used up before we came): nothing to learn
        // from but the wait.
        let Some(measured) = measured else {
            return;
        };
        let basis = self.rate.map_or(measured, |r| r.min(measured));
        self.rate = Some(self.cap(BETA * basis));
        self.increase_per_sec = INCREASE_SHARE * basis;
        self.last_decrease = Some(now);
        self.decreases += 1;
    }

    fn cap(&self, rate: f64) -> f64 {
        let rate = rate.max(MIN_RATE);
        self.ceiling.map_or(rate, |c| rate.min(c))
    }
}

fn interval(rate: f64) -> Duration {
    Duration::try_from_secs_f64(1.0 / rate.max(MIN_RATE)).unwrap_or(Duration::from_secs(5))
}

/// What a request is, for pacing: the endpoints with their own lower limit are told apart
/// from the rest by their path alone (no adapter code), e.g. Chatwoot's
/// `/contacts/search` (100 a minute against 3,000 for everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    /// Any request.
    General,
    /// A search endpoint (a path segment `search`).
    Search,
}

impl RequestClass {
    /// The class of a request to `url`.
    pub fn of(url: &url::Url) -> Self {
        if url
            .path_segments()
            .is_some_and(|mut s| s.any(|seg| seg.eq_ignore_ascii_case("search")))
        {
            RequestClass::Search
        } else {
            RequestClass::General
        }
    }

    /// Its label in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestClass::General => "all",
            RequestClass::Search => "search",
        }
    }
}

#[derive(Debug)]
struct Controllers {
    all: Aimd,
    search: Aimd,
}

/// The pacing of one provider instance: the learnt rate of all its requests and of its
/// search requests, under the configured ceiling. Waits with tokio's timer, so a paused
/// test clock is respected.
pub struct Pacer {
    provider: String,
    ceiling: Option<DefaultDirectRateLimiter>,
    controllers: Mutex<Controllers>,
}

impl fmt::Debug for Pacer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pacer")
            .field("ceiling", &self.ceiling.is_some())
            .field("controllers", &self.controllers)
            .finish()
    }
}

/// A request let through by [`Pacer::wait`]: whether it had to wait for its turn.
#[derive(Debug, Clone, Copy)]
pub struct Turn {
    class: RequestClass,
    waited: bool,
}

impl Pacer {
    /// A pacer for `provider` with at most `requests_per_second` (`None`, zero, negative
    /// or non-finite: no ceiling), probing after a 429 from `probe_base` on.
    pub fn new(provider: &str, requests_per_second: Option<f64>, probe_base: Duration) -> Self {
        let ceiling = requests_per_second.filter(|r| r.is_finite() && *r > 0.0);
        let quota = ceiling
            .and_then(|r| Duration::try_from_secs_f64(1.0 / r).ok())
            .and_then(Quota::with_period);
        Self {
            provider: provider.to_owned(),
            ceiling: quota.map(RateLimiter::direct),
            controllers: Mutex::new(Controllers {
                all: Aimd::new(ceiling, probe_base),
                search: Aimd::new(ceiling, probe_base),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Controllers> {
        self.controllers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The learnt rate of `class`, requests a second (`None`: unpaced).
    pub fn rate(&self, class: RequestClass) -> Option<f64> {
        let c = self.lock();
        match class {
            RequestClass::General => c.all.rate(),
            RequestClass::Search => c.search.rate(),
        }
    }

    /// Waits until a request of `class` may go out.
    pub async fn wait(&self, class: RequestClass) -> Turn {
        let mut waited = false;
        loop {
            let until = {
                let mut c = self.lock();
                let now = Instant::now();
                let at = match class {
                    RequestClass::General => c.all.ready_at(now),
                    RequestClass::Search => match (c.all.ready_at(now), c.search.ready_at(now)) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    },
                };
                if at.is_none() {
                    c.all.sent(now);
                    if class == RequestClass::Search {
                        c.search.sent(now);
                    }
                }
                at
            };
            match until {
                Some(t) => {
                    waited = true;
                    tokio::time::sleep_until(t).await;
                }
                None => break,
            }
        }
        if let Some(limiter) = &self.ceiling {
            loop {
                match limiter.check() {
                    Ok(()) => break,
                    Err(not_until) => {
                        waited = true;
                        let wait = not_until.wait_time_from(limiter.clock().now());
                        tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                    }
                }
            }
        }
        Turn { class, waited }
    }

    /// The request of `turn` was answered with something other than a 429.
    pub fn answered(&self, turn: Turn) {
        let mut c = self.lock();
        let now = Instant::now();
        match turn.class {
            RequestClass::General => c.all.answered(now, turn.waited),
            RequestClass::Search => {
                c.search.answered(now, turn.waited);
                c.all.answered(now, false);
            }
        }
    }

    /// The request of `turn` got no answer (a transport failure).
    pub fn released(&self, turn: Turn) {
        let mut c = self.lock();
        c.all.released();
        if turn.class == RequestClass::Search {
            c.search.released();
        }
    }

    /// The request of `turn` was answered 429 (with the provider's `Retry-After`, if
    /// any): its class waits and slows down (a search's 429 slows the searches only;
    /// when the limit of everything was reached, the other requests meet it too).
    pub fn throttled(&self, turn: Turn, retry_after: Option<Duration>) {
        let (rate, decreased) = {
            let mut c = self.lock();
            let now = Instant::now();
            let aimd = match turn.class {
                RequestClass::General => &mut c.all,
                RequestClass::Search => {
                    // It went through the instance's turn too: a probe there is over.
                    c.all.released();
                    &mut c.search
                }
            };
            let before = aimd.decreases();
            aimd.throttled(now, retry_after);
            (aimd.rate(), aimd.decreases() > before)
        };
        if decreased && let Some(rate) = rate {
            metrics::gauge!(
                "contact_sync_pacing_rate",
                "provider" => self.provider.clone(),
                "class" => turn.class.as_str()
            )
            .set(rate);
            tracing::info!(
                provider = %self.provider,
                class = turn.class.as_str(),
                rate,
                "rate limited: pacing at the learnt rate"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE: Duration = Duration::from_secs(1);

    /// Sends as fast as `ctl` allows from `start` for `secs` against a fixed-window limit
    /// of `per_window` requests per `window` (windows start at `start`), each request
    /// answered at once; `demand` is the most the caller would send per second. Returns
    /// (answered, throttled).
    fn run(
        ctl: &mut Aimd,
        start: Instant,
        secs: u64,
        window: Duration,
        per_window: u64,
        demand: f64,
    ) -> (u64, u64) {
        let end = start + Duration::from_secs(secs);
        let step = interval(demand);
        let mut now = start;
        let (mut ok, mut throttled) = (0, 0);
        let (mut index, mut count) = (0u128, 0u64);
        while now < end {
            let waited = match ctl.ready_at(now) {
                Some(t) => {
                    now = t;
                    true
                }
                None => false,
            };
            ctl.sent(now);
            let i = now.duration_since(start).as_nanos() / window.as_nanos();
            if i != index {
                index = i;
                count = 0;
            }
            count += 1;
            if count > per_window {
                throttled += 1;
                ctl.throttled(now, None);
            } else {
                ok += 1;
                ctl.answered(now, waited);
            }
            now += step;
        }
        (ok, throttled)
    }

    #[test]
    fn unpaced_until_the_first_429() {
        let now = Instant::now();
        let mut ctl = Aimd::new(None, PROBE);
        assert_eq!(ctl.rate(), None);
        for i in 0..100 {
            let t = now + Duration::from_millis(i);
            assert_eq!(ctl.ready_at(t), None);
            ctl.sent(t);
            ctl.answered(t, false);
        }
        assert_eq!(ctl.rate(), None);
    }

    #[test]
    fn a_429_blocks_the_class_and_probes_with_growing_delays() {
        let t0 = Instant::now();
        let mut ctl = Aimd::new(None, PROBE);
        ctl.sent(t0);
        ctl.throttled(t0, None);
        assert_eq!(ctl.ready_at(t0), Some(t0 + PROBE));
        let t1 = t0 + PROBE;
        ctl.sent(t1);
        ctl.throttled(t1, None);
        let t2 = ctl.ready_at(t1).unwrap();
        assert!(t2 >= t1 + 2 * PROBE, "the probe delay doubles");
        // Capped at MAX_PROBE_FACTOR times the first.
        let mut t = t2;
        for _ in 0..10 {
            ctl.sent(t);
            ctl.throttled(t, None);
            let next = ctl.ready_at(t).unwrap();
            assert!(next.duration_since(t) <= PROBE * MAX_PROBE_FACTOR);
            t = next;
        }
        // A Retry-After is obeyed as given.
        ctl.sent(t);
        ctl.throttled(t, Some(Duration::from_secs(30)));
        assert!(ctl.ready_at(t).unwrap() >= t + Duration::from_secs(30));
    }

    #[test]
    fn the_first_429_sets_the_rate_from_what_was_answered_and_the_wait_refines_it() {
        let t0 = Instant::now();
        let mut ctl = Aimd::new(None, PROBE);
        // 200 answers in 2 s, then a 429.
        for i in 0..200 {
            let t = t0 + Duration::from_millis(i * 10);
            ctl.sent(t);
            ctl.answered(t, false);
        }
        ctl.throttled(t0 + Duration::from_secs(2), None);
        let rate = ctl.rate().unwrap();
        assert!((rate - BETA * 100.0).abs() < 1.0, "{rate}");
        // Further 429s in the same burst do not decrease it again.
        ctl.throttled(t0 + Duration::from_secs(3), None);
        ctl.throttled(t0 + Duration::from_secs(5), None);
        assert_eq!(ctl.rate(), Some(rate));
        assert_eq!(ctl.decreases(), 1);
        // Answered again 8 s after the start: 200 in 8 s is what the provider allows.
        ctl.answered(t0 + Duration::from_secs(8), false);
        let rate = ctl.rate().unwrap();
        assert!((rate - BETA * 25.0).abs() < 0.5, "{rate}");
    }

    #[test]
    fn a_probe_goes_alone() {
        let t0 = Instant::now();
        let mut ctl = Aimd::new(Some(1_000.0), PROBE);
        ctl.sent(t0);
        ctl.throttled(t0, None);
        let t1 = ctl.ready_at(t0).unwrap();
        ctl.sent(t1);
        let later = t1 + Duration::from_millis(100);
        assert!(
            ctl.ready_at(later).is_some(),
            "waits for the probe's answer"
        );
        ctl.answered(later, true);
        assert!(
            ctl.ready_at(later + Duration::from_millis(10)).is_none(),
            "answered: the next may go"
        );
        ctl.sent(later);
        ctl.throttled(later, None);
        let t2 = ctl.ready_at(later).unwrap();
        ctl.sent(t2);
        ctl.released();
        assert_eq!(
            ctl.ready_at(t2 + Duration::from_millis(10)),
            None,
            "no answer at all: released"
        );
    }

    #[test]
    fn answers_after_waiting_raise_the_rate_additively_up_to_the_ceiling() {
        let t0 = Instant::now();
        let mut ctl = Aimd::new(Some(50.0), PROBE);
        assert_eq!(ctl.rate(), Some(50.0), "a ceiling is where it starts");
        for i in 0..100 {
            let t = t0 + Duration::from_millis(i * 20);
            ctl.sent(t);
            ctl.answered(t, false);
        }
        ctl.throttled(t0 + Duration::from_secs(2), None);
        // The window is over after 2.5 s: 100 answered in 2.5 s.
        ctl.answered(t0 + Duration::from_millis(2_500), false);
        let low = ctl.rate().unwrap();
        assert!((low - BETA * 40.0).abs() < 0.5, "{low}");
        // Answers that did not wait say nothing about the rate.
        ctl.answered(t0 + Duration::from_secs(3), false);
        assert_eq!(ctl.rate(), Some(low));
        // Each answer after a wait adds increase/rate: a second of them adds `increase`.
        let n = low.round() as u64;
        for _ in 0..n {
            ctl.answered(t0 + Duration::from_secs(3), true);
        }
        let grown = ctl.rate().unwrap() - low;
        let expected = INCREASE_SHARE * 40.0;
        assert!(
            (grown - expected).abs() < expected * 0.1,
            "{grown} vs {expected}"
        );
        for _ in 0..100_000 {
            ctl.answered(t0 + Duration::from_secs(3), true);
        }
        assert_eq!(ctl.rate(), Some(50.0), "never above the ceiling");
    }

    #[test]
    fn a_fixed_minute_window_is_learnt_with_few_429s_and_used_well() {
        // Chatwoot: 3,000 a minute in fixed windows, a client that could send 1,000/s.
        let t0 = Instant::now();
        let mut ctl = Aimd::new(None, PROBE);
        let window = Duration::from_mins(1);
        let (ok, throttled) = run(&mut ctl, t0, 20 * 60, window, 3_000, 1_000.0);
        let allowed = 20 * 3_000;
        let share = throttled as f64 / (ok + throttled) as f64;
        let used = ok as f64 / f64::from(allowed);
        eprintln!("share {share} used {used} rate {:?}", ctl.rate());
        assert!(share <= 0.01, "429 share {share}");
        assert!(used >= 0.9, "utilisation {used}");
        let rate = ctl.rate().unwrap();
        assert!((35.0..=80.0).contains(&rate), "learnt rate {rate}");
    }

    #[test]
    fn a_shorter_window_is_learnt_too() {
        // The same rate in ten-second windows, probing from 100 ms.
        let t0 = Instant::now();
        let mut ctl = Aimd::new(None, Duration::from_millis(100));
        let (ok, throttled) = run(&mut ctl, t0, 300, Duration::from_secs(10), 500, 1_000.0);
        let share = throttled as f64 / (ok + throttled) as f64;
        let used = ok as f64 / (300.0 * 50.0);
        eprintln!("share {share} used {used} rate {:?}", ctl.rate());
        assert!(share <= 0.01, "429 share {share}");
        assert!(used >= 0.9, "utilisation {used}");
    }

    #[test]
    fn one_second_windows_as_the_end_to_end_test_runs_them() {
        // 1,200 a minute in one-second windows, probing from 20 ms.
        let t0 = Instant::now();
        let mut ctl = Aimd::new(None, Duration::from_millis(20));
        let (ok, throttled) = run(&mut ctl, t0, 200, Duration::from_secs(1), 20, 1_000.0);
        let share = throttled as f64 / (ok + throttled) as f64;
        let used = ok as f64 / (200.0 * 20.0);
        eprintln!("share {share} used {used} rate {:?}", ctl.rate());
        assert!(share <= 0.01, "429 share {share}");
        assert!(used >= 0.9, "utilisation {used}");
    }

    #[test]
    fn search_requests_are_a_class_of_their_own() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(
            RequestClass::of(&u("https://h/api/v1/accounts/1/contacts/search?q=x")),
            RequestClass::Search
        );
        assert_eq!(
            RequestClass::of(&u("https://h/api/v1/accounts/1/contacts/filter")),
            RequestClass::General
        );
        assert_eq!(
            RequestClass::of(&u("https://h/api/v1/accounts/1/contacts?q=search")),
            RequestClass::General
        );
    }
}
