//! The pages of one contact listing, in order, with requests ahead when the listing is
//! addressed by page number.
//!
//! A listing is followed page by page through each page's `next` cursor. When the first
//! page says how many pages there are ([`Page::last_page`]) and the provider can name a
//! page by its number ([`Provider::page_cursor`]), up to [`PAGES_AHEAD`] of the following
//! pages are requested at once: the provider serves one page while the engine decodes
//! the previous one, instead of one round trip after another. Still exactly one request
//! per page, and every request goes through the provider's pacing.
//!
//! If a page ends the listing early (no `next`: the listing shrank), the pages requested
//! beyond it are dropped; if the last announced page has a `next` (the listing grew),
//! the listing goes on following `next` from there.

use crate::provider::{Page, Provider, ProviderError};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use std::time::Instant;

/// Pages requested ahead at most.
pub const PAGES_AHEAD: usize = 4;

/// One fetched page (or its error) and the seconds spent waiting for it (pages requested
/// ahead overlap: this is the wait after asking for the page, not the request's time).
pub type Fetched = (Result<Page, ProviderError>, f64);

/// One listing being read.
pub struct Listing<'a, P> {
    client: &'a P,
    in_flight: FuturesOrdered<BoxFuture<'a, Result<Page, ProviderError>>>,
    /// The next page number to request ahead (announced listings only).
    next_number: u64,
    /// The last page number the first page announced; 0 when none was.
    last_number: u64,
}

impl<'a, P: Provider> Listing<'a, P> {
    /// A listing of `client`'s contacts (nothing requested yet).
    pub fn new(client: &'a P) -> Self {
        Self {
            client,
            in_flight: FuturesOrdered::new(),
            next_number: 0,
            last_number: 0,
        }
    }

    /// Requests the first page (again, after [`Listing::restart`]).
    pub async fn first(&mut self) -> Fetched {
        let fetched = timed(self.client.list_page(None)).await;
        if let Ok(page) = &fetched.0
            && let Some(last) = page.last_page
            && page.next.is_some()
            && self.client.page_cursor(2).is_some()
        {
            self.next_number = 2;
            self.last_number = last;
        }
        fetched
    }

    /// Forgets every page requested ahead: the next call must be [`Listing::first`].
    pub fn restart(&mut self) {
        self.in_flight = FuturesOrdered::new();
        self.next_number = 0;
        self.last_number = 0;
    }

    /// The page after the one whose `next` cursor is `next`; `None` when that page was the
    /// last one.
    pub async fn next(&mut self, next: Option<&str>) -> Option<Fetched> {
        let Some(next) = next else {
            // The end (possibly earlier than announced): drop what was requested ahead.
            self.restart();
            return None;
        };
        self.request_ahead();
        let started = Instant::now();
        let page = match self.in_flight.next().await {
            Some(page) => page,
            None => self.client.list_page(Some(next)).await,
        };
        Some((page, started.elapsed().as_secs_f64()))
    }

    /// Tops the requests in flight up to [`PAGES_AHEAD`] with announced pages.
    fn request_ahead(&mut self) {
        while self.in_flight.len() < PAGES_AHEAD
            && self.next_number >= 2
            && self.next_number <= self.last_number
        {
            let Some(cursor) = self.client.page_cursor(self.next_number) else {
                break;
            };
            self.next_number += 1;
            let client = self.client;
            self.in_flight.push_back(Box::pin(
                async move { client.list_page(Some(&cursor)).await },
            ));
        }
    }
}

/// Awaits `f` and measures how long it took.
pub async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, f64) {
    let started = Instant::now();
    let value = f.await;
    (value, started.elapsed().as_secs_f64())
}
