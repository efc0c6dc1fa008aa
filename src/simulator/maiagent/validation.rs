//! How MaiAgent (Django REST framework serializers) validates a contact write: the
//! fields a create, PUT or PATCH may set, camelCase and snake_case spellings, length and
//! type checks, email syntax, inbox references, and the field errors it answers with.

use serde_json::{Map, Value};

use super::{Inner, MAX_CHARS, parse_uuid};

/// Fields a write will set; `Some(None)` clears a nullable field.
#[allow(
    clippy::option_option,
    reason = "absent (keep) / null (clear) / value (set) is exactly what DRF distinguishes"
)]
#[derive(Default)]
pub(super) struct Changes {
    pub(super) name: Option<Box<str>>,
    pub(super) inboxes: Option<Vec<u32>>,
    pub(super) avatar: Option<Option<Box<str>>>,
    pub(super) phone: Option<Option<Box<str>>>,
    pub(super) email: Option<Option<Box<str>>>,
    pub(super) source_id: Option<Option<Box<str>>>,
    pub(super) query_metadata: Option<Option<Box<Value>>>,
    pub(super) mcp_credentials: Option<Option<Box<Value>>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// POST and PUT: required fields must be present.
    Full,
    /// PATCH.
    Partial,
}

/// DRF field errors, keyed by camelCase field name.
pub(super) type FieldErrors = Map<String, Value>;

pub(super) fn add_error(errors: &mut FieldErrors, field: &str, message: impl Into<String>) {
    let entry = errors
        .entry(field.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(v) = entry {
        v.push(Value::String(message.into()));
    }
}

/// Value of a field sent in camelCase or snake_case (camelCase wins).
pub(super) fn field<'a>(
    data: &'a Map<String, Value>,
    camel: &str,
    snake: &str,
) -> Option<&'a Value> {
    data.get(camel).or_else(|| data.get(snake))
}

/// DRF `CharField`: strings and numbers are accepted, whitespace trimmed.
pub(super) fn char_field(v: &Value) -> Result<Option<String>, &'static str> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.trim().to_owned())),
        Value::Number(n) => Ok(Some(n.to_string())),
        _ => Err("Not a valid string."),
    }
}

/// An optional text field: null and blank clear it.
#[allow(
    clippy::option_option,
    reason = "absent / clear / set, as in `Changes`"
)]
pub(super) fn optional_text(
    errors: &mut FieldErrors,
    data: &Map<String, Value>,
    camel: &str,
    snake: &str,
    max: Option<usize>,
) -> Option<Option<Box<str>>> {
    let v = field(data, camel, snake)?;
    match char_field(v) {
        Ok(Some(s)) if s.is_empty() => Some(None),
        Ok(Some(s)) => {
            if let Some(max) = max
                && s.chars().count() > max
            {
                add_error(
                    errors,
                    camel,
                    format!("Ensure this field has no more than {max} characters."),
                );
                return None;
            }
            Some(Some(s.into_boxed_str()))
        }
        Ok(None) => Some(None),
        Err(msg) => {
            add_error(errors, camel, msg);
            None
        }
    }
}

pub(super) fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(char::is_whitespace)
}

pub(super) fn python_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

impl Inner {
    pub(super) fn parse_inbox_ref(&self, item: &Value) -> Result<u32, String> {
        let raw = match item {
            Value::Object(o) => match o.get("id") {
                Some(Value::String(s)) => s.as_str(),
                Some(_) => return Err("Must be a valid UUID.".to_owned()),
                None => return Err("This field is required.".to_owned()),
            },
            Value::String(s) => s.as_str(),
            _ => return Err("Must be a valid UUID.".to_owned()),
        };
        let id = parse_uuid(raw).ok_or_else(|| "Must be a valid UUID.".to_owned())?;
        self.inbox_by_id
            .get(&id)
            .copied()
            .ok_or_else(|| format!("Invalid pk \"{raw}\" - object does not exist."))
    }

    pub(super) fn parse_inboxes(
        &self,
        errors: &mut FieldErrors,
        data: &Map<String, Value>,
    ) -> Option<Vec<u32>> {
        if let Some(v) = data.get("inboxes") {
            let items = match v {
                Value::Array(items) => items,
                Value::Null => {
                    add_error(errors, "inboxes", "This field may not be null.");
                    return None;
                }
                other => {
                    add_error(
                        errors,
                        "inboxes",
                        format!(
                            "Expected a list of items but got type \"{}\".",
                            python_type(other)
                        ),
                    );
                    return None;
                }
            };
            if items.is_empty() {
                add_error(errors, "inboxes", "This list may not be empty.");
                return None;
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match self.parse_inbox_ref(item) {
                    Ok(idx) if !out.contains(&idx) => out.push(idx),
                    Ok(_) => {}
                    Err(msg) => add_error(errors, "inboxes", msg),
                }
            }
            return Some(out);
        }
        // Legacy single inbox.
        let v = data.get("inbox")?;
        if v.is_null() {
            add_error(errors, "inbox", "This field may not be null.");
            return None;
        }
        match self.parse_inbox_ref(v) {
            Ok(idx) => Some(vec![idx]),
            Err(msg) => {
                add_error(errors, "inbox", msg);
                None
            }
        }
    }

    /// Validate a request body against the contact serializer. `current` is the contact
    /// being updated (None on create).
    pub(super) fn validate(
        &self,
        data: &Map<String, Value>,
        mode: Mode,
        current: Option<u32>,
    ) -> Result<Changes, FieldErrors> {
        let mut errors = FieldErrors::new();
        let mut ch = Changes::default();

        match data.get("name") {
            None if mode == Mode::Full => add_error(&mut errors, "name", "This field is required."),
            None => {}
            Some(Value::Null) => add_error(&mut errors, "name", "This field may not be null."),
            Some(v) => match char_field(v) {
                Ok(Some(s)) if s.is_empty() => {
                    add_error(&mut errors, "name", "This field may not be blank.");
                }
                Ok(Some(s)) if s.chars().count() > MAX_CHARS => add_error(
                    &mut errors,
                    "name",
                    format!("Ensure this field has no more than {MAX_CHARS} characters."),
                ),
                Ok(Some(s)) => ch.name = Some(s.into_boxed_str()),
                Ok(None) => add_error(&mut errors, "name", "This field may not be null."),
                Err(msg) => add_error(&mut errors, "name", msg),
            },
        }

        let inboxes_given = data.contains_key("inboxes") || data.contains_key("inbox");
        if !inboxes_given && mode == Mode::Full {
            add_error(&mut errors, "inboxes", "This field is required.");
        }
        ch.inboxes = self.parse_inboxes(&mut errors, data);

        ch.avatar = optional_text(&mut errors, data, "avatar", "avatar", None);
        ch.phone = optional_text(&mut errors, data, "phoneNumber", "phone_number", None);
        ch.source_id = optional_text(&mut errors, data, "sourceId", "source_id", Some(MAX_CHARS));
        ch.email = optional_text(&mut errors, data, "email", "email", None);
        if let Some(Some(e)) = &ch.email
            && !valid_email(e)
        {
            add_error(&mut errors, "email", "Enter a valid email address.");
        }
        if let Some(v) = field(data, "queryMetadata", "query_metadata") {
            ch.query_metadata = Some((!v.is_null()).then(|| Box::new(v.clone())));
        }
        if let Some(v) = field(data, "mcpCredentials", "mcp_credentials") {
            ch.mcp_credentials = Some((!v.is_null()).then(|| Box::new(v.clone())));
        }

        if errors.is_empty() {
            // `sourceId` is unique within each inbox the contact belongs to.
            let cur = current.and_then(|s| self.contact(s));
            let source_id = match &ch.source_id {
                Some(sid) => sid.clone(),
                None => cur.and_then(|c| c.source_id.clone()),
            };
            let inboxes: Vec<u32> = match &ch.inboxes {
                Some(v) => v.clone(),
                None => cur
                    .map(|c| c.inboxes.as_slice().to_vec())
                    .unwrap_or_default(),
            };
            if let Some(sid) = source_id {
                let taken = inboxes.iter().any(|&ib| {
                    self.source_ids
                        .get(&(ib, sid.clone()))
                        .is_some_and(|&holder| Some(holder) != current)
                });
                if taken {
                    add_error(
                        &mut errors,
                        "sourceId",
                        "contact with this source id already exists.",
                    );
                }
            }
        }

        if errors.is_empty() {
            Ok(ch)
        } else {
            Err(errors)
        }
    }
}
