//! Normalisation of match keys: phones to E.164 (with `phonenumber` and a default region),
//! emails to a trimmed lower-case key, tag names (see [`crate::domain::tag_key`]).
//!
//! A value that cannot be normalised is kept as its trimmed raw text so nothing is lost,
//! but it is never used as a match key.

use phonenumber::Mode;
use phonenumber::country::Id as Region;
use std::str::FromStr;

/// A phone number after normalisation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Phone {
    /// A valid number in E.164 (`+14155550123`): usable as a match key.
    E164(String),
    /// Not a valid number: kept as trimmed raw text, never a match key.
    Invalid(String),
}

impl Phone {
    /// The value to store (E.164 or the raw text).
    pub fn as_str(&self) -> &str {
        match self {
            Phone::E164(s) | Phone::Invalid(s) => s,
        }
    }

    /// The match key, if the number is valid.
    pub fn key(&self) -> Option<&str> {
        match self {
            Phone::E164(s) => Some(s),
            Phone::Invalid(_) => None,
        }
    }
}

/// The default region used for numbers written without a country code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRegion(Region);

impl DefaultRegion {
    /// Parses an ISO 3166-1 alpha-2 region code such as `US` or `gb`.
    pub fn parse(code: &str) -> Option<Self> {
        let upper = code.trim().to_ascii_uppercase();
        if upper.len() != 2 {
            return None;
        }
        Region::from_str(&upper).ok().map(Self)
    }
}

impl Default for DefaultRegion {
    fn default() -> Self {
        Self(Region::US)
    }
}

/// Longest input considered a phone number; longer text is kept raw, never parsed.
const MAX_PHONE_LEN: usize = 64;

/// Normalises a phone number written any common way (national format, spaces, dashes,
/// dots, parentheses, `00` international prefix, `tel:` URIs) to E.164. Returns `None`
/// for blank input.
pub fn normalize_phone(raw: &str, region: DefaultRegion) -> Option<Phone> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return None;
    }
    Some(match parse_e164(trimmed, region) {
        Some(e164) => Phone::E164(e164),
        None => Phone::Invalid(trimmed.to_owned()),
    })
}

fn parse_e164(text: &str, region: DefaultRegion) -> Option<String> {
    if text.len() > MAX_PHONE_LEN {
        return None;
    }
    let text = text
        .strip_prefix("tel:")
        .or_else(|| text.strip_prefix("TEL:"))
        .unwrap_or(text)
        .trim();
    // Only the characters people use when writing numbers; anything else (letters,
    // extensions, several numbers) is not a number we want to guess at.
    if !text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '(' | ')' | '/'))
    {
        return None;
    }
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 4 {
        return None;
    }
    let international = if text.starts_with('+') {
        Some(format!("+{digits}"))
    } else {
        digits.strip_prefix("00").map(|rest| format!("+{rest}"))
    };
    let parsed = match international {
        Some(intl) => phonenumber::parse(None, &intl)
            .ok()
            .filter(phonenumber::is_valid)?,
        None => phonenumber::parse(Some(region.0), &digits)
            .ok()
            .filter(phonenumber::is_valid)
            .or_else(|| {
                // Digits only and not a number of the default region: an international
                // number whose `+` was lost (e.g. a phone stored as a JSON number).
                (digits.len() >= 8 && !digits.starts_with('0') && !text.contains(['(', ')']))
                    .then(|| phonenumber::parse(None, format!("+{digits}")).ok())
                    .flatten()
                    .filter(phonenumber::is_valid)
            })?,
    };
    let e164 = parsed.format().mode(Mode::E164).to_string();
    // The output must itself normalise to itself (idempotence): refuse anything odd.
    if e164.starts_with('+') && e164[1..].chars().all(|c| c.is_ascii_digit()) {
        Some(e164)
    } else {
        None
    }
}

/// An email after normalisation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Email {
    /// A syntactically valid address, trimmed and lower-cased: usable as a match key.
    Valid(String),
    /// Not a valid address: kept as trimmed raw text, never a match key.
    Invalid(String),
}

impl Email {
    /// The value to store.
    pub fn as_str(&self) -> &str {
        match self {
            Email::Valid(s) | Email::Invalid(s) => s,
        }
    }

    /// The match key, if the address is valid.
    pub fn key(&self) -> Option<&str> {
        match self {
            Email::Valid(s) => Some(s),
            Email::Invalid(_) => None,
        }
    }
}

/// Normalises an email: trimmed and lower-cased when valid. `None` for blank input.
/// `+tags` and dots are kept: they may be different mailboxes.
pub fn normalize_email(raw: &str) -> Option<Email> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return None;
    }
    let lower = trimmed.to_lowercase();
    let valid = lower.len() <= 254
        && lower.contains('@')
        && !lower.chars().any(char::is_whitespace)
        && email_address::EmailAddress::is_valid(&lower);
    Some(if valid {
        Email::Valid(lower)
    } else {
        Email::Invalid(trimmed.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(code: &str) -> DefaultRegion {
        DefaultRegion::parse(code).unwrap()
    }

    /// (default region, as typed, expected E.164) — real-world spellings across countries.
    const PHONES: &[(&str, &str, &str)] = &[
        ("US", "(415) 555-2671", "+14155552671"),
        ("US", "415.555.2671", "+14155552671"),
        ("US", "+1 415 555 2671", "+14155552671"),
        ("US", "1-415-555-2671", "+14155552671"),
        ("US", "001 415 555 2671", "+14155552671"),
        ("US", "tel:+1-415-555-2671", "+14155552671"),
        ("GB", "020 7946 0958", "+442079460958"),
        ("GB", "07911 123456", "+447911123456"),
        ("US", "+44 (0)20 7946 0958", "+442079460958"),
        ("US", "0044 20 7946 0958", "+442079460958"),
        ("DE", "030 901820", "+4930901820"),
        ("DE", "+49 (30) 901820", "+4930901820"),
        ("DE", "0151 23456789", "+4915123456789"),
        ("FR", "06 12 34 56 78", "+33612345678"),
        ("FR", "+33 6 12 34 56 78", "+33612345678"),
        ("TW", "0912-345-678", "+886912345678"),
        ("TW", "+886 912 345 678", "+886912345678"),
        ("US", "+886912345678", "+886912345678"),
        ("TW", "912345678", "+886912345678"),
        ("JP", "090-1234-5678", "+819012345678"),
        ("JP", "03-1234-5678", "+81312345678"),
        ("IN", "098765 43210", "+919876543210"),
        ("IN", "+91 98765-43210", "+919876543210"),
        ("BR", "(11) 91234-5678", "+5511912345678"),
        ("BR", "+55 11 91234 5678", "+5511912345678"),
        ("AE", "050 123 4567", "+971501234567"),
        ("AE", "+971 50 123 4567", "+971501234567"),
        ("AU", "0412 345 678", "+61412345678"),
        ("AU", "(02) 9374 4000", "+61293744000"),
        ("MX", "+52 55 1234 5678", "+525512345678"),
        ("ES", "612 34 56 78", "+34612345678"),
        ("NG", "0803 123 4567", "+2348031234567"),
        ("US", "886912345678", "+886912345678"),
        ("US", "447911123456", "+447911123456"),
    ];

    #[test]
    fn real_world_phones_normalise_to_e164() {
        let failures: Vec<String> = PHONES
            .iter()
            .filter_map(|(reg, raw, want)| {
                let got = normalize_phone(raw, region(reg));
                (got != Some(Phone::E164((*want).to_owned())))
                    .then(|| format!("{raw} in {reg}: got {got:?}, want {want}"))
            })
            .collect();
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn invalid_phones_are_kept_raw_and_never_keys() {
        for raw in ["12", "call me", "+1 555", "555-0100 ext 3", "+999 12345678"] {
            let phone = normalize_phone(raw, region("US")).unwrap();
            assert_eq!(phone, Phone::Invalid(raw.trim().to_owned()), "{raw}");
            assert_eq!(phone.key(), None);
        }
        assert_eq!(normalize_phone("   ", region("US")), None);
    }

    #[test]
    fn emails_are_trimmed_lowercased_and_validated() {
        let cases = [
            (" Ana.Lopez@Example.COM ", Some("ana.lopez@example.com")),
            ("ZHANG.wei+crm@Mail.CN", Some("zhang.wei+crm@mail.cn")),
            ("müller@beispiel.de", Some("müller@beispiel.de")),
            ("JOSÉ@EXAMPLE.ES", Some("josé@example.es")),
            ("not-an-email", None),
            ("two@@example.com", None),
            ("a b@example.com", None),
        ];
        for (raw, key) in cases {
            let email = normalize_email(raw).unwrap();
            assert_eq!(email.key(), key, "{raw}");
        }
        assert_eq!(normalize_email("  "), None);
    }

    #[test]
    fn region_codes_are_checked() {
        assert!(DefaultRegion::parse("us").is_some());
        assert!(DefaultRegion::parse("XX").is_none());
        assert!(DefaultRegion::parse("USA").is_none());
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn regions() -> impl Strategy<Value = DefaultRegion> {
            prop::sample::select(vec!["US", "GB", "DE", "TW", "JP", "BR", "IN", "FR"])
                .prop_map(|r| DefaultRegion::parse(r).unwrap())
        }

        proptest! {
            #[test]
            fn phone_normalisation_never_panics_and_is_idempotent(raw in any::<String>(), region in regions()) {
                if let Some(first) = normalize_phone(&raw, region) {
                    let second = normalize_phone(first.as_str(), region);
                    prop_assert_eq!(second, Some(first));
                }
            }

            #[test]
            fn phone_like_strings_are_idempotent(raw in "[+0-9 ()./-]{0,20}", region in regions()) {
                if let Some(first) = normalize_phone(&raw, region) {
                    prop_assert_eq!(normalize_phone(first.as_str(), region), Some(first.clone()));
                    if let Phone::E164(e) = &first {
                        prop_assert!(e.starts_with('+') && e[1..].chars().all(|c| c.is_ascii_digit()));
                    }
                }
            }

            #[test]
            fn email_normalisation_never_panics_and_is_idempotent(raw in any::<String>()) {
                if let Some(first) = normalize_email(&raw) {
                    prop_assert_eq!(normalize_email(first.as_str()), Some(first));
                }
            }

            #[test]
            fn email_like_strings_are_idempotent(raw in "[ A-Za-z0-9.+_-]{1,12}@[A-Za-z0-9-]{1,8}\\.[A-Za-z]{2,4} ?") {
                let first = normalize_email(&raw).unwrap();
                prop_assert_eq!(normalize_email(first.as_str()), Some(first.clone()));
            }
        }
    }
}
