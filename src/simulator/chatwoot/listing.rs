//! Contact listings: `GET contacts` (optionally by label), `contacts/search` and
//! `contacts/active`, and what they share with the filter: the sort keys, 15 contacts a
//! page, the random order without `sort`, the cached sorted orders and the page envelope.

use std::sync::{Arc, PoisonError};

use axum::extract::{Path, RawQuery, State as Ext};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::request::{PageParam, Params, ok, unprocessable};
use super::{Contact, Inner, PAGE_SIZE, Shared, State};
use crate::simulator::http::Reply;

// ---------------------------------------------------------------------------------------
// Sorting and paging

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum SortField {
    Name,
    Email,
    Phone,
    LastActivity,
    CreatedAt,
    Company,
    City,
    Country,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Sort {
    pub(super) field: SortField,
    pub(super) desc: bool,
}

impl Sort {
    /// `name`, `-email`, … ; unknown keys are ignored (no sort), as Sift does.
    pub(super) fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let (desc, key) = match raw.strip_prefix('-') {
            Some(k) => (true, k),
            None => (false, raw),
        };
        let field = match key {
            "name" => SortField::Name,
            "email" => SortField::Email,
            "phone_number" => SortField::Phone,
            "last_activity_at" => SortField::LastActivity,
            "created_at" => SortField::CreatedAt,
            "company" | "company_name" => SortField::Company,
            "city" => SortField::City,
            "country" => SortField::Country,
            _ => return None,
        };
        Some(Sort { field, desc })
    }

    /// Orders `ids` by this sort (ties by id, ascending).
    pub(super) fn order(self, inner: &Inner, ids: &[u64]) -> Vec<u64> {
        #[derive(PartialEq, Eq, PartialOrd, Ord)]
        enum Key {
            Int(i64),
            Text(String),
        }
        let attr = |c: &Contact, k: &str| {
            c.additional
                .get(k)
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .map(Key::Text)
        };
        let key_of = |c: &Contact| -> Option<Key> {
            match self.field {
                SortField::Name => {
                    let n = &*c.name;
                    let special =
                        n.starts_with('+') || n.starts_with(|ch: char| ch.is_ascii_digit());
                    Some(Key::Text(if special {
                        "z".to_owned()
                    } else {
                        n.to_lowercase()
                    }))
                }
                SortField::Email => c.email.as_deref().map(|e| Key::Text(e.to_lowercase())),
                SortField::Phone => c.phone.as_deref().map(|p| Key::Text(p.to_lowercase())),
                SortField::LastActivity => c.last_activity_at.map(Key::Int),
                SortField::CreatedAt => Some(Key::Int(c.created_at)),
                SortField::Company => attr(c, "company_name"),
                SortField::City => attr(c, "city"),
                SortField::Country => attr(c, "country"),
            }
        };
        // Postgres puts NULLs last ascending and first descending; Chatwoot writes NULLS
        // LAST for every sort key except email and phone_number.
        let nulls_first = self.desc && matches!(self.field, SortField::Email | SortField::Phone);
        let mut keyed: Vec<(Option<Key>, u64)> = ids
            .iter()
            .filter_map(|&id| inner.get(id).map(|c| (key_of(c), id)))
            .collect();
        keyed.sort_by(|(ka, ia), (kb, ib)| {
            use std::cmp::Ordering;
            let by_key = match (ka, kb) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) if nulls_first => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) if nulls_first => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) if self.desc => b.cmp(a),
                (Some(a), Some(b)) => a.cmp(b),
            };
            by_key.then(ia.cmp(ib))
        });
        keyed.into_iter().map(|(_, id)| id).collect()
    }
}

/// The contacts a listing draws from: all resolved contacts, or a subset (ascending ids).
pub(super) enum Base<'a> {
    Resolved(&'a [u64]),
    Subset(std::borrow::Cow<'a, [u64]>),
}

impl Base<'_> {
    pub(super) fn ids(&self) -> &[u64] {
        match self {
            Base::Resolved(ids) => ids,
            Base::Subset(ids) => ids,
        }
    }
}

impl State {
    /// One page of `base` under `sort` (or in a fresh random rotation without one).
    pub(super) fn page(
        &self,
        inner: &Inner,
        base: &Base<'_>,
        sort: Option<Sort>,
        page: &PageParam,
    ) -> Vec<u64> {
        let ids = base.ids();
        let total = ids.len();
        let offset = page.offset();
        if offset >= total {
            return Vec::new();
        }
        let end = (offset + PAGE_SIZE).min(total);
        match sort {
            Some(Sort {
                field: SortField::CreatedAt,
                desc,
            }) => {
                // created_at never decreases with the id: id order is created_at order.
                if desc {
                    (offset..end).map(|pos| ids[total - 1 - pos]).collect()
                } else {
                    ids[offset..end].to_vec()
                }
            }
            Some(sort) => {
                let ordered = match base {
                    Base::Resolved(_) => self.sorted_resolved(inner, sort),
                    Base::Subset(ids) => Arc::new(sort.order(inner, ids)),
                };
                ordered[offset..end.min(ordered.len())].to_vec()
            }
            None => {
                let rotation = usize::try_from(rand::random::<u64>() % total as u64).unwrap_or(0);
                (offset..end)
                    .map(|pos| ids[(pos + rotation) % total])
                    .collect()
            }
        }
    }

    pub(super) fn sorted_resolved(&self, inner: &Inner, sort: Sort) -> Arc<Vec<u64>> {
        let mut cache = self.sorted.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((generation, ids)) = cache.get(&sort)
            && *generation == inner.generation
        {
            return Arc::clone(ids);
        }
        let ids = Arc::new(sort.order(inner, &inner.resolved));
        cache.insert(sort, (inner.generation, Arc::clone(&ids)));
        ids
    }

    pub(super) fn envelope(
        &self,
        inner: &Inner,
        base: &Base<'_>,
        params: &Params,
        page: &PageParam,
    ) -> Value {
        let with_inboxes = params.include_contact_inboxes();
        let ids = self.page(inner, base, params.sort().and_then(Sort::parse), page);
        let payload: Vec<Value> = ids
            .iter()
            .filter_map(|&id| inner.get(id))
            .map(|c| self.contact_json(c, with_inboxes))
            .collect();
        json!({
            "meta": {"count": base.ids().len(), "current_page": page.echo},
            "payload": payload,
        })
    }
}

/// Resolved contacts carrying any of `labels` (case-insensitive), ascending ids. One
/// label (the common case: a client paging through a label) borrows that label's list
/// rather than copying it for every page.
pub(super) fn labelled<'a>(inner: &'a Inner, labels: &[String]) -> std::borrow::Cow<'a, [u64]> {
    use std::borrow::Cow;
    let mut tag_ids: Vec<usize> = labels
        .iter()
        .filter_map(|l| inner.tag_ids.get(l.to_lowercase().as_str()))
        .map(|&t| t as usize)
        .collect();
    tag_ids.sort_unstable();
    tag_ids.dedup();
    match tag_ids.as_slice() {
        [] => Cow::Owned(Vec::new()),
        [one] => Cow::Borrowed(inner.by_tag[*one].as_slice()),
        many => {
            let mut all: Vec<u64> = many
                .iter()
                .flat_map(|&t| inner.by_tag[t].iter().copied())
                .collect();
            all.sort_unstable();
            all.dedup();
            Cow::Owned(all)
        }
    }
}

pub(super) async fn list(
    Ext(st): Ext<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Reply {
    st.authorize(&headers, &account)?;
    let params = Params::parse(query.as_deref());
    let page = PageParam::from(params.get("page"));
    let inner = st.read();
    let labels = params.labels();
    let base = if labels.is_empty() && inner.unlisted.is_empty() {
        Base::Resolved(&inner.resolved)
    } else if labels.is_empty() {
        let listed: Vec<u64> = inner
            .resolved
            .iter()
            .copied()
            .filter(|id| !inner.unlisted.contains(id))
            .collect();
        Base::Subset(listed.into())
    } else {
        Base::Subset(labelled(&inner, &labels))
    };
    ok(&st.envelope(&inner, &base, &params, &page))
}

pub(super) async fn active(
    Ext(st): Ext<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Reply {
    st.authorize(&headers, &account)?;
    let params = Params::parse(query.as_deref());
    let page = PageParam::from(params.get("page"));
    ok(&json!({"meta": {"count": 0, "current_page": page.echo}, "payload": []}))
}

pub(super) async fn search(
    Ext(st): Ext<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Reply {
    st.authorize(&headers, &account)?;
    let params = Params::parse(query.as_deref());
    let Some(q) = params.get("q").map(str::trim).filter(|q| !q.is_empty()) else {
        return Err(unprocessable("Specify search string with parameter q"));
    };
    let page = PageParam::from(params.get("page"));
    let inner = st.read();
    let pattern: Vec<char> = format!("%{q}%").chars().collect();
    let pattern_lower: Vec<char> = format!("%{}%", q.to_lowercase()).chars().collect();
    let ilike = |v: Option<&str>| v.is_some_and(|v| like(&v.to_lowercase(), &pattern_lower));
    let ids: Vec<u64> = inner
        .resolved
        .iter()
        .copied()
        .filter(|&id| {
            inner.get(id).is_some_and(|c| {
                ilike(Some(&c.name))
                    || ilike(c.email.as_deref())
                    || ilike(c.phone.as_deref())
                    || ilike(c.additional.get("company_name").and_then(Value::as_str))
                    || c.identifier.as_deref().is_some_and(|i| like(i, &pattern))
            })
        })
        .collect();
    ok(&st.envelope(&inner, &Base::Subset(ids.into()), &params, &page))
}

/// SQL `LIKE`: `%` any run, `_` any one character, `\` escapes the next one.
pub(super) fn like(text: &str, pattern: &[char]) -> bool {
    #[derive(Clone, Copy)]
    enum Tok {
        Any,
        One,
        Lit(char),
    }
    let mut toks = Vec::with_capacity(pattern.len());
    let mut it = pattern.iter();
    while let Some(&c) = it.next() {
        toks.push(match c {
            '%' => Tok::Any,
            '_' => Tok::One,
            '\\' => Tok::Lit(it.next().copied().unwrap_or('\\')),
            c => Tok::Lit(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    let (mut t, mut p) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match toks.get(p) {
            Some(Tok::Any) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Tok::One) => {
                t += 1;
                p += 1;
            }
            Some(Tok::Lit(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    toks[p..].iter().all(|t| matches!(t, Tok::Any))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_handles_wildcards() {
        let p = |s: &str| s.chars().collect::<Vec<_>>();
        assert!(like("maria garcia", &p("%garc%")));
        assert!(like("maria garcia", &p("%g_rc%")));
        assert!(!like("maria", &p("%garc%")));
        assert!(like("50%off", &p("%0\\%o%")));
        assert!(like("abc", &p("%%")));
    }
}
