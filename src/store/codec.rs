//! How values are written in the store's text columns and shown to people: field maps and
//! tag lists as JSON, times as RFC 3339. Every other store file reads and writes through
//! these, so the format has one owner.

use super::StoreError;
use crate::domain::{Fields, Tags};

/// Serialises a field map.
pub fn fields_json(fields: &Fields) -> String {
    serde_json::to_string(fields).unwrap_or_else(|_| "{}".to_owned())
}

/// Serialises a tag set.
pub fn tags_json(tags: &Tags) -> String {
    serde_json::to_string(&tags.names().collect::<Vec<_>>()).unwrap_or_else(|_| "[]".to_owned())
}

/// Parses a stored field map.
pub fn parse_fields(text: &str) -> Result<Fields, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("link snapshot: {e}")))
}

/// Parses a stored tag list.
pub fn parse_tags(text: Option<&str>) -> Result<Option<Tags>, StoreError> {
    text.map(|t| {
        serde_json::from_str::<Vec<String>>(t)
            .map(|v| v.into_iter().collect())
            .map_err(|e| StoreError::Corrupt(format!("link tags: {e}")))
    })
    .transpose()
}

/// Formats unix seconds as RFC 3339.
pub fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |t| t.to_string())
}
