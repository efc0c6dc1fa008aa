//! Labels: a contact's labels (GET, and POST which replaces the whole set), the account's
//! labels (GET, POST), and how label names are matched (case-insensitively, first
//! spelling kept) and split.

use std::collections::HashSet;

use axum::body::Bytes;
use axum::extract::{Path, State as Ext};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::request::{boolean, invalid, not_found, ok, parse_body, text, value_text};
use super::{AccountLabel, Contact, Inner, Shared};
use crate::simulator::http::Reply;

impl AccountLabel {
    pub(super) fn json(&self) -> Value {
        json!({
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "color": self.color,
            "show_on_sidebar": self.show_on_sidebar,
        })
    }
}

pub(super) const LABEL_COLORS: &[&str] = &["#1f93ff", "#ff6b6b", "#2ecc71", "#f39c12", "#9b59b6"];

/// Trims, drops blanks, splits on commas and removes case-insensitive duplicates (first
/// spelling wins), as acts-as-taggable-on does with a tag list.
pub(super) fn dedupe_labels(labels: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for raw in labels {
        for part in raw.split(',') {
            let t = part.trim();
            if !t.is_empty() && seen.insert(t.to_lowercase()) {
                out.push(t.to_owned());
            }
        }
    }
    out
}

pub(super) async fn contact_labels(
    Ext(st): Ext<Shared>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    st.authorize(&headers, &account)?;
    let inner = st.read();
    match id.parse().ok().and_then(|id| inner.get(id)) {
        Some(c) => ok(&json!({"payload": inner.label_names(c)})),
        None => Err(not_found()),
    }
}

pub(super) async fn set_contact_labels(
    Ext(st): Ext<Shared>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    st.authorize(&headers, &account)?;
    let params = parse_body(&body)?;
    let requested: Vec<String> = match params.get("labels") {
        Some(Value::Array(items)) => items
            .iter()
            .filter(|v| !v.is_null())
            .map(value_text)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    let mut inner = st.write();
    let Some(id) = id.parse::<u64>().ok().filter(|&id| inner.get(id).is_some()) else {
        return Err(not_found());
    };
    let tags: Vec<u32> = dedupe_labels(requested)
        .iter()
        .map(|l| inner.tag_id(l))
        .collect();
    let Some(c) = inner.get_mut(id) else {
        return Err(not_found());
    };
    let old = Inner::keys(c);
    c.labels = tags;
    let new = Inner::keys(c);
    inner.reindex(id, &old, &new);
    match inner.get(id) {
        Some(c) => ok(&json!({"payload": inner.label_names(c)})),
        None => Err(not_found()),
    }
}

pub(super) async fn account_labels(
    Ext(st): Ext<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
) -> Reply {
    st.authorize(&headers, &account)?;
    let inner = st.read();
    ok(&json!({"payload": inner.account_labels.iter().map(AccountLabel::json).collect::<Vec<_>>()}))
}

pub(super) async fn create_account_label(
    Ext(st): Ext<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    st.authorize(&headers, &account)?;
    let params = parse_body(&body)?;
    let title = text(&params, "title").unwrap_or_default().to_lowercase();
    let mut inner = st.write();
    if title.trim().is_empty() {
        return Err(invalid(&[("title", "Title can't be blank".to_owned())]));
    }
    // UNICODE_CHARACTER_NUMBER_HYPHEN_UNDERSCORE
    if !title
        .chars()
        .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid(&[("title", "Title is invalid".to_owned())]));
    }
    if inner.account_labels.iter().any(|l| l.title == title) {
        return Err(invalid(&[(
            "title",
            "Title has already been taken".to_owned(),
        )]));
    }
    let label = AccountLabel {
        id: inner.account_labels.iter().map(|l| l.id).max().unwrap_or(0) + 1,
        title,
        description: text(&params, "description").unwrap_or_default(),
        color: text(&params, "color").unwrap_or_else(|| "#1f93ff".to_owned()),
        show_on_sidebar: boolean(&params, "show_on_sidebar").unwrap_or(false),
    };
    let body = label.json();
    inner.account_labels.push(label);
    ok(&body)
}

impl Inner {
    pub(super) fn label_names(&self, c: &Contact) -> Vec<&str> {
        c.labels.iter().map(|&t| &*self.tags[t as usize]).collect()
    }

    /// The tag id of `name`, matched case-insensitively; new tags keep this spelling.
    pub(super) fn tag_id(&mut self, name: &str) -> u32 {
        let key = name.to_lowercase();
        if let Some(&id) = self.tag_ids.get(key.as_str()) {
            return id;
        }
        let id = u32::try_from(self.tags.len()).unwrap_or(u32::MAX);
        self.tags.push(name.into());
        self.tag_ids.insert(key.into_boxed_str(), id);
        self.by_tag.push(Vec::new());
        id
    }

    pub(super) fn ensure_account_label(&mut self, title: &str) {
        let title = title.to_lowercase();
        if self.account_labels.iter().any(|l| l.title == title) {
            return;
        }
        let id = self.account_labels.len() as u64 + 1;
        let color = LABEL_COLORS[self.account_labels.len() % LABEL_COLORS.len()];
        self.account_labels.push(AccountLabel {
            id,
            title,
            description: String::new(),
            color: color.to_owned(),
            show_on_sidebar: true,
        });
    }
}
