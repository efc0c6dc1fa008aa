//! Golden records, their match keys and tags: reading and writing one contact.

use super::{Seq, StoreError};
use crate::domain::matching::{ContactId, KeyKind};
use crate::domain::merge::HeldContact;
use crate::domain::{Fields, GoldenRecord, Tags, field};
use rusqlite::{Connection, OptionalExtension, params};

/// The plain columns of `contacts` that hold fields of the same name.
pub const COLUMNS: [&str; 6] = [
    field::NAME,
    field::FIRST_NAME,
    field::LAST_NAME,
    field::EMAIL,
    field::PHONE,
    field::SOURCE_ID,
];

/// Builds the field map of a contact row (`attrs` is a JSON object).
pub fn fields_from_row(values: [String; 6], attrs: &str) -> Result<Fields, StoreError> {
    let mut fields = Fields::new();
    for (name, value) in COLUMNS.iter().zip(values) {
        if !value.is_empty() {
            fields.insert((*name).to_owned(), value);
        }
    }
    let attrs: serde_json::Map<String, serde_json::Value> = serde_json::from_str(attrs)
        .map_err(|e| StoreError::Corrupt(format!("contact attrs: {e}")))?;
    for (k, v) in attrs {
        let text = match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        if !text.is_empty() {
            fields.insert(format!("{}{k}", field::ATTR_PREFIX), text);
        }
    }
    Ok(fields)
}

/// The `attrs` JSON of a field map.
pub fn attrs_json(fields: &Fields) -> String {
    let map: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(field::ATTR_PREFIX)
                .filter(|_| !v.is_empty())
                .map(|key| (key.to_owned(), serde_json::Value::String(v.clone())))
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// Loads one golden record with its tags.
pub fn load(conn: &Connection, id: ContactId) -> Result<Option<GoldenRecord>, StoreError> {
    let Some((fields, phone_valid, deleted)) = load_row(conn, id)? else {
        return Ok(None);
    };
    let has_key = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM match_keys WHERE contact_id = ?1)")?
        .query_row([id], |r| r.get(0))?;
    Ok(Some(GoldenRecord {
        id,
        fields,
        phone_valid,
        has_key,
        deleted,
        tags: load_tags(conn, id)?,
    }))
}

/// Loads a contact as the pull's merge needs it: fields, phone validity and tags.
pub fn load_held(conn: &Connection, id: ContactId) -> Result<Option<HeldContact>, StoreError> {
    let Some((fields, phone_valid, _)) = load_row(conn, id)? else {
        return Ok(None);
    };
    Ok(Some(HeldContact {
        fields,
        phone_valid,
        tags: load_tags(conn, id)?,
    }))
}

/// A contact's row: `(fields, phone_valid, deleted)`.
fn load_row(conn: &Connection, id: ContactId) -> Result<Option<(Fields, bool, bool)>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT name, first_name, last_name, email, phone, source_id, attrs, phone_valid, deleted
             FROM contacts WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok((
                [
                    r.get::<_, String>(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ],
                r.get::<_, String>(6)?,
                r.get::<_, bool>(7)?,
                r.get::<_, bool>(8)?,
            ))
        })
        .optional()?;
    row.map(|(values, attrs, phone_valid, deleted)| {
        Ok((fields_from_row(values, &attrs)?, phone_valid, deleted))
    })
    .transpose()
}

/// A contact's tags.
pub fn load_tags(conn: &Connection, id: ContactId) -> Result<Tags, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT tag FROM contact_tags WHERE contact_id = ?1")?;
    let tags = stmt
        .query_map([id], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(tags.into_iter().collect())
}

/// Inserts a new contact with `fields` (names already completed, see
/// [`crate::domain::names`]) and returns its id.
pub fn insert(
    conn: &Connection,
    fields: &Fields,
    phone_valid: bool,
    seq: i64,
    now: i64,
) -> Result<ContactId, StoreError> {
    let get = |k: &str| fields.get(k).map_or("", String::as_str);
    conn.prepare_cached(
        "INSERT INTO contacts (name, first_name, last_name, email, phone, phone_valid, source_id, attrs, seq, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
    )?
    .execute(params![
        get(field::NAME),
        get(field::FIRST_NAME),
        get(field::LAST_NAME),
        get(field::EMAIL),
        get(field::PHONE),
        phone_valid,
        get(field::SOURCE_ID),
        attrs_json(fields),
        seq,
        now
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Writes the whole field map of a contact and bumps its change sequence.
pub fn save_fields(
    conn: &Connection,
    id: ContactId,
    fields: &Fields,
    phone_valid: bool,
    seq: i64,
    now: i64,
) -> Result<(), StoreError> {
    let get = |k: &str| fields.get(k).map_or("", String::as_str);
    conn.prepare_cached(
        "UPDATE contacts SET name = ?2, first_name = ?3, last_name = ?4, email = ?5, phone = ?6,
         phone_valid = ?7, source_id = ?8, attrs = ?9, seq = ?10, updated_at = ?11 WHERE id = ?1",
    )?
    .execute(params![
        id,
        get(field::NAME),
        get(field::FIRST_NAME),
        get(field::LAST_NAME),
        get(field::EMAIL),
        get(field::PHONE),
        phone_valid,
        get(field::SOURCE_ID),
        attrs_json(fields),
        seq,
        now
    ])?;
    Ok(())
}

/// Marks a contact as changed (to be planned again) without changing its fields.
pub fn bump(conn: &Connection, id: ContactId, seq: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE contacts SET seq = ?2 WHERE id = ?1")?
        .execute(params![id, seq])?;
    Ok(())
}

/// The contact a key points at.
pub fn key_owner(
    conn: &Connection,
    kind: KeyKind,
    value: &str,
) -> Result<Option<ContactId>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT contact_id FROM match_keys WHERE kind = ?1 AND value = ?2")?
        .query_row(params![kind.as_str(), value], |r| r.get(0))
        .optional()?)
}

/// Points `kind` of contact `id` at `value`, dropping its old key of that kind (`None`:
/// drops it only). The value must be free (the merge looked its owner up first).
pub fn move_key(
    conn: &Connection,
    id: ContactId,
    kind: KeyKind,
    value: Option<&str>,
) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM match_keys WHERE contact_id = ?1 AND kind = ?2")?
        .execute(params![id, kind.as_str()])?;
    if let Some(v) = value {
        conn.prepare_cached(
            "INSERT INTO match_keys (kind, value, contact_id) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![kind.as_str(), v, id])?;
    }
    Ok(())
}

/// Adds a key if nobody holds it yet (never moves a key). Returns whether it is ours now.
pub fn add_key_if_free(
    conn: &Connection,
    id: ContactId,
    kind: KeyKind,
    value: &str,
) -> Result<bool, StoreError> {
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO match_keys (kind, value, contact_id) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![kind.as_str(), value, id])?;
    // Inserted: ours. Ignored: someone holds it already (perhaps this contact).
    Ok(inserted == 1 || key_owner(conn, kind, value)? == Some(id))
}

/// Adds tags to a contact; returns how many were new.
pub fn add_tags(conn: &Connection, id: ContactId, tags: &[String]) -> Result<usize, StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO contact_tags (contact_id, tag_key, tag) VALUES (?1, ?2, ?3)",
    )?;
    let mut added = 0;
    for tag in tags {
        if let Some(key) = crate::domain::tag_key(tag) {
            added += stmt.execute(params![id, key, tag.trim()])?;
        }
    }
    Ok(added)
}

/// Removes tags from a contact; returns how many were present.
pub fn remove_tags(conn: &Connection, id: ContactId, tags: &[String]) -> Result<usize, StoreError> {
    let mut stmt =
        conn.prepare_cached("DELETE FROM contact_tags WHERE contact_id = ?1 AND tag_key = ?2")?;
    let mut removed = 0;
    for tag in tags {
        if let Some(key) = crate::domain::tag_key(tag) {
            removed += stmt.execute(params![id, key])?;
        }
    }
    Ok(removed)
}

/// With `propagate_deletes`: marks contacts deleted and to be planned again (their
/// active links elsewhere get a delete).
pub fn mark_contacts_deleted(
    conn: &Connection,
    seq: &Seq,
    contacts: &[ContactId],
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE contacts SET deleted = 1, seq = ?2 WHERE id = ?1 AND deleted = 0",
    )?;
    for id in contacts {
        stmt.execute(params![id, seq.next()])?;
    }
    Ok(())
}

/// A few people with the providers holding them, for the demo: `(contact, [(provider, remote id)])`.
pub fn sample_people(
    conn: &Connection,
    limit: usize,
) -> Result<Vec<(GoldenRecord, Vec<(String, String)>)>, StoreError> {
    let ids: Vec<i64> = conn
        .prepare(
            "SELECT contact_id FROM links WHERE state = 'active' GROUP BY contact_id ORDER BY count(*) DESC, contact_id LIMIT ?1",
        )?
        .query_map([limit as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for id in ids {
        if let Some(c) = load(conn, id)? {
            let links: Vec<(String, String)> = conn
                .prepare_cached(
                    "SELECT p.name, l.remote_id FROM links l JOIN providers p ON p.id = l.provider_id
                     WHERE l.contact_id = ?1 AND l.state = 'active' ORDER BY p.id",
                )?
                .query_map([id], |r| Ok((r.get(0)?, r.get::<_, Option<String>>(1)?.unwrap_or_default())))?
                .collect::<Result<_, _>>()?;
            out.push((c, links));
        }
    }
    Ok(out)
}
