//! The pages of one listing (all contacts, or the contacts carrying one tag), in order,
//! with requests ahead when the listing is addressed by page number.
//!
//! A listing is followed page by page through each page's `next` cursor. When the first
//! page says how many pages there are (`last_page`) and the provider can name a page by
//! its number ([`Provider::page_cursor`], [`Provider::tag_page_cursor`]), up to
//! [`PAGES_AHEAD`] of the following pages are requested at once: the provider serves one
//! page while the engine decodes the previous one, instead of one round trip after
//! another. Still exactly one request per page, and every request goes through the
//! provider's pacing.
//!
//! If a page ends the listing early (no `next`: the listing shrank), the pages requested
//! beyond it are dropped; if the last announced page has a `next` (the listing grew),
//! the listing goes on following `next` from there.

use crate::provider::{Page, Provider, ProviderError, TagPage};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use std::time::Instant;

/// Pages requested ahead at most.
pub const PAGES_AHEAD: usize = 4;

/// A page of a listing: where the next one is, and how many there are (first page).
pub trait ListedPage {
    /// The cursor of the next page; `None` on the last page.
    fn next_cursor(&self) -> Option<&str>;
    /// How many pages the listing has, when the (first) page said so.
    fn last_page(&self) -> Option<u64>;
}

impl ListedPage for Page {
    fn next_cursor(&self) -> Option<&str> {
        self.next.as_deref()
    }
    fn last_page(&self) -> Option<u64> {
        self.last_page
    }
}

impl ListedPage for TagPage {
    fn next_cursor(&self) -> Option<&str> {
        self.next.as_deref()
    }
    fn last_page(&self) -> Option<u64> {
        self.last_page
    }
}

/// One fetched page (or its error) and the seconds spent waiting for it (pages requested
/// ahead overlap: this is the wait after asking for the page, not the request's time).
pub type Fetched<T> = (Result<T, ProviderError>, f64);

type FetchFn<'a, T> =
    Box<dyn Fn(Option<String>) -> BoxFuture<'a, Result<T, ProviderError>> + Send + Sync + 'a>;
type CursorFn<'a> = Box<dyn Fn(u64) -> Option<String> + Send + Sync + 'a>;

/// One listing being read.
pub struct Listing<'a, T> {
    fetch: FetchFn<'a, T>,
    cursor_of: CursorFn<'a>,
    in_flight: FuturesOrdered<BoxFuture<'a, Result<T, ProviderError>>>,
    /// The next page number to request ahead (announced listings only).
    next_number: u64,
    /// The last page number the first page announced; 0 when none was.
    last_number: u64,
}

impl<'a> Listing<'a, Page> {
    /// The listing of all of `client`'s contacts (nothing requested yet).
    pub fn new<P: Provider>(client: &'a P) -> Self {
        Self::with(
            Box::new(move |cursor: Option<String>| {
                Box::pin(async move { client.list_page(cursor.as_deref()).await })
            }),
            Box::new(move |number| client.page_cursor(number)),
        )
    }
}

impl<'a> Listing<'a, TagPage> {
    /// The listing of `client`'s contacts carrying `tag` (nothing requested yet).
    pub fn tagged<P: Provider>(client: &'a P, tag: &'a str) -> Self {
        Self::with(
            Box::new(move |cursor: Option<String>| {
                Box::pin(async move { client.list_tag_page(tag, cursor.as_deref()).await })
            }),
            Box::new(move |number| client.tag_page_cursor(tag, number)),
        )
    }
}

impl<'a, T: ListedPage + Send + 'a> Listing<'a, T> {
    fn with(fetch: FetchFn<'a, T>, cursor_of: CursorFn<'a>) -> Self {
        Self {
            fetch,
            cursor_of,
            in_flight: FuturesOrdered::new(),
            next_number: 0,
            last_number: 0,
        }
    }

    /// Requests the first page (again, after [`Listing::restart`]).
    pub async fn first(&mut self) -> Fetched<T> {
        let started = Instant::now();
        let page = (self.fetch)(None).await;
        if let Ok(page) = &page
            && let Some(last) = page.last_page()
            && page.next_cursor().is_some()
            && (self.cursor_of)(2).is_some()
        {
            self.next_number = 2;
            self.last_number = last;
        }
        (page, started.elapsed().as_secs_f64())
    }

    /// Forgets every page requested ahead: the next call must be [`Listing::first`].
    pub fn restart(&mut self) {
        self.in_flight = FuturesOrdered::new();
        self.next_number = 0;
        self.last_number = 0;
    }

    /// The page after the one whose `next` cursor is `next`; `None` when that page was the
    /// last one.
    pub async fn next(&mut self, next: Option<&str>) -> Option<Fetched<T>> {
        let Some(next) = next else {
            // The end (possibly earlier than announced): drop what was requested ahead.
            self.restart();
            return None;
        };
        self.request_ahead();
        let started = Instant::now();
        let page = match self.in_flight.next().await {
            Some(page) => page,
            None => (self.fetch)(Some(next.to_owned())).await,
        };
        Some((page, started.elapsed().as_secs_f64()))
    }

    /// Tops the requests in flight up to [`PAGES_AHEAD`] with announced pages.
    fn request_ahead(&mut self) {
        while self.in_flight.len() < PAGES_AHEAD
            && self.next_number >= 2
            && self.next_number <= self.last_number
        {
            let Some(cursor) = (self.cursor_of)(self.next_number) else {
                break;
            };
            self.next_number += 1;
            self.in_flight.push_back((self.fetch)(Some(cursor)));
        }
    }
}
