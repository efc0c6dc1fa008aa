//! `GET /api/contacts/`: DRF page-number pagination (page size, `page=last`, absolute
//! `next` / `previous` links built from the request's host), and the `query`, `search`
//! and `inboxes` filters.

use std::collections::BTreeMap;

use axum::extract::{self, OriginalUri, RawQuery};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use serde_json::{Value, json};

use super::{Contact, DEFAULT_PAGE_SIZE, Inner, MAX_PAGE_SIZE, Shared, parse_uuid};
use crate::simulator::http::{Reject, Reply, contains_ci, detail, first, query_pairs, respond};

pub(super) fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    first(params, key)
}

/// DRF `_positive_int(strict=True, cutoff=max)`, falling back to the default.
pub(super) fn page_size(params: &[(String, String)]) -> usize {
    let raw = param(params, "pageSize").or_else(|| param(params, "page_size"));
    match raw.map(|s| s.trim().parse::<i64>()) {
        Some(Ok(n)) if n > 0 => (n as usize).min(MAX_PAGE_SIZE),
        _ => DEFAULT_PAGE_SIZE,
    }
}

/// Django `Paginator.validate_number`; `None` means "Invalid page.".
pub(super) fn page_number(params: &[(String, String)], num_pages: usize) -> Option<usize> {
    match param(params, "page") {
        None => Some(1),
        Some("last") => Some(num_pages),
        Some(s) => {
            let n = s.trim().parse::<i64>().ok()?;
            (n >= 1 && (n as usize) <= num_pages).then_some(n as usize)
        }
    }
}

/// `http://{Host}{path}` of the request, as DRF's `build_absolute_uri` would see it.
pub(super) fn absolute_base(headers: &HeaderMap, uri: &Uri) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(ToString::to_string))
        .unwrap_or_else(|| "localhost".to_owned());
    format!("http://{host}{}", uri.path())
}

/// DRF `replace_query_param` / `remove_query_param`: keys sorted, other params kept.
pub(super) fn page_link(base: &str, params: &[(String, String)], page: Option<usize>) -> String {
    let mut grouped: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (k, v) in params {
        if k != "page" {
            grouped.entry(k.as_str()).or_default().push(v.clone());
        }
    }
    if let Some(p) = page {
        grouped.insert("page", vec![p.to_string()]);
    }
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, vs) in &grouped {
        for v in vs {
            ser.append_pair(k, v);
        }
    }
    let q = ser.finish();
    if q.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{q}")
    }
}

/// The hyphenated lower-case form of a UUID, without allocating.
pub(super) fn uuid_ascii(u: u128) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut nibble = 0;
    for (i, slot) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            continue;
        }
        *slot = HEX[((u >> (124 - 4 * nibble)) & 0xF) as usize];
        nibble += 1;
    }
    out
}

/// List filters from the query string.
pub(super) struct Filter {
    query: Option<String>,
    query_may_be_id: bool,
    search: Vec<String>,
    inboxes: Option<Vec<u32>>,
}

impl Filter {
    pub(super) fn from_params(params: &[(String, String)], inner: &Inner) -> Result<Self, Reject> {
        let query = param(params, "query")
            .map(|q| q.trim().to_lowercase())
            .filter(|q| !q.is_empty());
        let query_may_be_id = query
            .as_deref()
            .is_some_and(|q| q.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
        let search = param(params, "search")
            .map(|s| {
                s.replace('\0', "")
                    .replace(',', " ")
                    .split_whitespace()
                    .map(str::to_lowercase)
                    .collect()
            })
            .unwrap_or_default();
        let mut inbox_values = params
            .iter()
            .filter(|(k, _)| k == "inboxes" || k == "inbox")
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .peekable();
        let inboxes = if inbox_values.peek().is_some() {
            let mut out = Vec::new();
            for v in inbox_values {
                let Some(id) = parse_uuid(v) else {
                    return Err(Reject(
                        StatusCode::BAD_REQUEST,
                        json!({"inboxes": ["Enter a valid UUID."]}),
                    ));
                };
                // An inbox that does not exist simply matches nothing.
                if let Some(&idx) = inner.inbox_by_id.get(&id) {
                    out.push(idx);
                }
            }
            Some(out)
        } else {
            None
        };
        Ok(Filter {
            query,
            query_may_be_id,
            search,
            inboxes,
        })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.query.is_none() && self.search.is_empty() && self.inboxes.is_none()
    }

    pub(super) fn matches(&self, c: &Contact, buf: &mut String) -> bool {
        if let Some(wanted) = &self.inboxes
            && !c.inboxes.as_slice().iter().any(|i| wanted.contains(i))
        {
            return false;
        }
        if let Some(q) = &self.query {
            let hit = contains_ci(buf, &c.name, q)
                || c.source_id
                    .as_deref()
                    .is_some_and(|s| contains_ci(buf, s, q))
                || (self.query_may_be_id
                    && std::str::from_utf8(&uuid_ascii(c.id))
                        .is_ok_and(|id| id.contains(q.as_str())));
            if !hit {
                return false;
            }
        }
        self.search.iter().all(|term| {
            contains_ci(buf, &c.name, term)
                || [&c.email, &c.phone, &c.source_id]
                    .into_iter()
                    .any(|f| f.as_deref().is_some_and(|s| contains_ci(buf, s, term)))
        })
    }
}

pub(super) async fn list(
    extract::State(st): Shared,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Reply {
    let params = query_pairs(raw.as_deref());
    let size = page_size(&params);
    let inner = st.lock();
    let filter = Filter::from_params(&params, &inner)?;
    let mut buf = String::new();
    let matched: Option<Vec<u32>> = (!filter.is_empty()).then(|| {
        inner
            .order
            .iter()
            .copied()
            .filter(|&s| {
                inner
                    .contact(s)
                    .is_some_and(|c| filter.matches(c, &mut buf))
            })
            .collect()
    });
    let all: &[u32] = matched.as_deref().unwrap_or(&inner.order);
    let count = all.len();
    let num_pages = count.div_ceil(size).max(1);
    let page = page_number(&params, num_pages)
        .ok_or_else(|| detail(StatusCode::NOT_FOUND, "Invalid page."))?;
    let start = (page - 1) * size;
    let end = (start + size).min(count);
    let results: Vec<Value> = all[start..end]
        .iter()
        .filter_map(|&s| inner.contact(s))
        .map(|c| inner.contact_json(c))
        .collect();
    drop(inner);
    let base = absolute_base(&headers, &uri);
    let next = (page < num_pages).then(|| page_link(&base, &params, Some(page + 1)));
    let previous = (page > 1).then(|| page_link(&base, &params, (page > 2).then_some(page - 1)));
    Ok(respond(
        StatusCode::OK,
        json!({"count": count, "next": next, "previous": previous, "results": results}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::maiagent::{fmt_uuid, new_uuid};

    #[test]
    fn page_links_sort_keys_and_drop_page_for_first() {
        let params = vec![
            ("pageSize".to_owned(), "5".to_owned()),
            ("page".to_owned(), "3".to_owned()),
            ("query".to_owned(), "a b".to_owned()),
        ];
        assert_eq!(
            page_link("http://h/api/contacts/", &params, Some(4)),
            "http://h/api/contacts/?page=4&pageSize=5&query=a+b"
        );
        assert_eq!(
            page_link("http://h/api/contacts/", &params, None),
            "http://h/api/contacts/?pageSize=5&query=a+b"
        );
    }

    #[test]
    fn uuid_ascii_matches_fmt_uuid() {
        for _ in 0..100 {
            let u = new_uuid();
            assert_eq!(std::str::from_utf8(&uuid_ascii(u)).unwrap(), fmt_uuid(u));
        }
    }
}
