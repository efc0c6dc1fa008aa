//! `POST contacts/filter`: the filter keys and operators Chatwoot accepts, how a payload
//! of conditions is parsed and refused, and how conditions joined by AND / OR select
//! contacts.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as Ext};
use axum::http::HeaderMap;
use serde_json::{Map, Value};

use super::listing::{Base, like};
use super::request::{PageParam, Params, ok, parse_body, ruby_to_i, unprocessable, value_text};
use super::{Contact, Inner, Shared, is_resolved, now_secs};
use crate::simulator::http::{Reject, Reply};

/// The contact filter keys and their operators (`lib/filters/filter_keys.yml`).
pub(super) const FILTER_KEYS: &[(&str, &[&str])] = &[
    (
        "name",
        &["equal_to", "not_equal_to", "contains", "does_not_contain"],
    ),
    (
        "phone_number",
        &[
            "equal_to",
            "not_equal_to",
            "contains",
            "does_not_contain",
            "starts_with",
        ],
    ),
    (
        "email",
        &["equal_to", "not_equal_to", "contains", "does_not_contain"],
    ),
    ("identifier", &["equal_to", "not_equal_to"]),
    ("country_code", &["equal_to", "not_equal_to"]),
    (
        "city",
        &["equal_to", "not_equal_to", "contains", "does_not_contain"],
    ),
    (
        "company",
        &["equal_to", "not_equal_to", "contains", "does_not_contain"],
    ),
    (
        "labels",
        &["equal_to", "not_equal_to", "is_present", "is_not_present"],
    ),
    (
        "created_at",
        &["is_greater_than", "is_less_than", "days_before"],
    ),
    (
        "last_activity_at",
        &["is_greater_than", "is_less_than", "days_before"],
    ),
    ("blocked", &["equal_to", "not_equal_to"]),
];

pub(super) struct Condition {
    key: String,
    op: String,
    values: Vec<Value>,
    /// Joins this condition to the next one (`AND` / `OR`).
    joiner: Option<String>,
}

pub(super) fn parse_conditions(body: &Map<String, Value>) -> Result<Vec<Condition>, Reject> {
    let Some(Value::Array(items)) = body.get("payload") else {
        return Err(unprocessable(
            "Invalid value. The values provided for payload are invalid",
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let text = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let joiner = match item.get("query_operator") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let op = v.as_str().unwrap_or("").to_ascii_uppercase();
                if op != "AND" && op != "OR" {
                    return Err(unprocessable(
                        r#"Query operator must be either "AND" or "OR"."#,
                    ));
                }
                Some(op)
            }
        };
        let values = match item.get("values") {
            Some(Value::Array(v)) => v.clone(),
            None | Some(Value::Null) => Vec::new(),
            Some(v) => vec![v.clone()],
        };
        out.push(Condition {
            key: text("attribute_key"),
            op: text("filter_operator"),
            values,
            joiner,
        });
    }
    for c in &out {
        let Some((_, ops)) = FILTER_KEYS.iter().find(|(k, _)| *k == c.key) else {
            let keys: Vec<&str> = FILTER_KEYS.iter().map(|(k, _)| *k).collect();
            return Err(unprocessable(&format!(
                "Invalid attribute key - [{}]. The key should be one of [{}] or a custom attribute defined in the account.",
                c.key,
                keys.join(",")
            )));
        };
        if !ops.contains(&c.op.as_str()) {
            return Err(unprocessable(&format!(
                "Invalid operator. The allowed operators for {} are [{}].",
                c.key,
                ops.join(",")
            )));
        }
        let needs_values = !matches!(c.op.as_str(), "is_present" | "is_not_present");
        let blank = |v: &Value| v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty());
        if needs_values && (c.values.is_empty() || c.values.iter().all(blank)) {
            return Err(unprocessable(&format!(
                "Invalid value. The values provided for {} are invalid",
                c.key
            )));
        }
    }
    Ok(out)
}

/// Epoch seconds of a filter date value (`2024-01-31`, an RFC 3339 time, or epoch seconds).
pub(super) fn value_time(v: &Value) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(n);
    }
    let s = v.as_str()?.trim();
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Some(ts.as_second());
    }
    let date = s.get(..10).unwrap_or(s).parse::<jiff::civil::Date>().ok()?;
    date.to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp().as_second())
}

impl Condition {
    pub(super) fn text_of<'c>(&self, c: &'c Contact) -> Option<&'c str> {
        match self.key.as_str() {
            "name" => Some(&c.name),
            "email" => c.email.as_deref(),
            "phone_number" => c.phone.as_deref(),
            "identifier" => c.identifier.as_deref(),
            "city" => c.additional.get("city").and_then(Value::as_str),
            "company" => c.additional.get("company_name").and_then(Value::as_str),
            "country_code" => c.additional.get("country_code").and_then(Value::as_str),
            _ => None,
        }
    }

    /// The value `equal_to` compares with: `"+" + digits` for phones, lower-case else.
    pub(super) fn equal_value(&self) -> String {
        let first = self.values.first().map(value_text).unwrap_or_default();
        if self.key == "phone_number" {
            let digits: String = first.chars().filter(char::is_ascii_digit).collect();
            format!("+{digits}")
        } else {
            first.to_lowercase()
        }
    }

    pub(super) fn holds(&self, inner: &Inner, c: &Contact) -> bool {
        match self.key.as_str() {
            "labels" => {
                let wanted: Vec<String> = self
                    .values
                    .iter()
                    .map(|v| value_text(v).to_lowercase())
                    .collect();
                let names = inner.label_names(c);
                let any = names.iter().any(|n| wanted.iter().any(|w| w == n));
                match self.op.as_str() {
                    "equal_to" => any,
                    "not_equal_to" => !any,
                    "is_present" => !names.is_empty(),
                    _ => names.is_empty(),
                }
            }
            "created_at" | "last_activity_at" => {
                let at = if self.key == "created_at" {
                    Some(c.created_at)
                } else {
                    c.last_activity_at
                };
                let bound = if self.op == "days_before" {
                    let days = self.values.first().map_or(0, |v| ruby_to_i(&value_text(v)));
                    Some(now_secs() / 86_400 * 86_400 - days * 86_400)
                } else {
                    self.values.first().and_then(value_time)
                };
                match (at, bound) {
                    (Some(at), Some(b)) if self.op == "is_greater_than" => at > b,
                    (Some(at), Some(b)) => at < b,
                    _ => false,
                }
            }
            "blocked" => {
                let want = self
                    .values
                    .first()
                    .is_some_and(|v| v.as_bool().unwrap_or_else(|| value_text(v) == "true"));
                (c.blocked == want) == (self.op == "equal_to")
            }
            _ => {
                let Some(text) = self.text_of(c) else {
                    return false; // SQL: a comparison with NULL is never true
                };
                let patterns = || {
                    self.values.iter().map(|v| {
                        format!("%{}%", value_text(v).trim().to_lowercase())
                            .chars()
                            .collect::<Vec<_>>()
                    })
                };
                let lower = text.to_lowercase();
                match self.op.as_str() {
                    "equal_to" if self.key == "phone_number" => text == self.equal_value(),
                    "equal_to" => lower == self.equal_value(),
                    "not_equal_to" if self.key == "phone_number" => text != self.equal_value(),
                    "not_equal_to" => lower != self.equal_value(),
                    "contains" => patterns().any(|p| like(&lower, &p)),
                    "does_not_contain" => patterns().all(|p| !like(&lower, &p)),
                    _ => {
                        let prefix = self.values.first().map(value_text).unwrap_or_default();
                        lower.starts_with(&prefix.to_lowercase())
                    }
                }
            }
        }
    }
}

/// Ids matching `conds` (SQL precedence: AND binds tighter than OR), ascending.
pub(super) fn run_filter(inner: &Inner, conds: &[Condition]) -> Vec<u64> {
    // Fast path for the exact lookups a sync uses: one `equal_to` on an indexed key.
    if let [c] = conds
        && c.op == "equal_to"
    {
        let hits: Option<Vec<u64>> = match c.key.as_str() {
            "phone_number" => Some(
                inner
                    .by_phone
                    .get(c.equal_value().as_str())
                    .copied()
                    .into_iter()
                    .collect(),
            ),
            "email" => Some(
                inner
                    .by_email
                    .get(c.equal_value().as_str())
                    .copied()
                    .into_iter()
                    .collect(),
            ),
            "identifier" => Some(
                inner
                    .by_identifier_lower
                    .get(c.equal_value().as_str())
                    .cloned()
                    .unwrap_or_default(),
            ),
            _ => None,
        };
        if let Some(mut ids) = hits {
            ids.retain(|id| inner.get(*id).is_some_and(is_resolved));
            ids.sort_unstable();
            return ids;
        }
    }
    let mut groups: Vec<Vec<&Condition>> = vec![Vec::new()];
    for (i, c) in conds.iter().enumerate() {
        if let Some(group) = groups.last_mut() {
            group.push(c);
        }
        if i + 1 < conds.len() && c.joiner.as_deref() == Some("OR") {
            groups.push(Vec::new());
        }
    }
    inner
        .resolved
        .iter()
        .copied()
        .filter(|&id| {
            inner.get(id).is_some_and(|contact| {
                groups
                    .iter()
                    .any(|g| g.iter().all(|c| c.holds(inner, contact)))
            })
        })
        .collect()
}

pub(super) async fn filter(
    Ext(st): Ext<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Reply {
    st.authorize(&headers, &account)?;
    let body = parse_body(&body)?;
    let conds = parse_conditions(&body)?;
    let params = Params::parse(query.as_deref());
    let body_page = body.get("page").map(value_text);
    let page = PageParam::from(params.get("page").or(body_page.as_deref()));
    let inner = st.read();
    let ids = run_filter(&inner, &conds);
    if ids.iter().any(|id| inner.unlisted.contains(id)) {
        // Found by key: listed from now on.
        drop(inner);
        let mut inner = st.write();
        for id in &ids {
            inner.unlisted.remove(id);
        }
        return ok(&st.envelope(&inner, &Base::Subset(ids.into()), &params, &page));
    }
    ok(&st.envelope(&inner, &Base::Subset(ids.into()), &params, &page))
}
