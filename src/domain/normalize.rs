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

/// The phone rules: the default region used for numbers written without a country code,
/// and whether WhatsApp's other forms of a number are match keys too
/// (`sync.whatsapp_phone_variants`, see [`super::whatsapp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRegion {
    region: Region,
    whatsapp: bool,
}

impl DefaultRegion {
    /// Parses an ISO 3166-1 alpha-2 region code such as `US` or `gb` (WhatsApp variants on).
    pub fn parse(code: &str) -> Option<Self> {
        let upper = code.trim().to_ascii_uppercase();
        if upper.len() != 2 {
            return None;
        }
        Region::from_str(&upper).ok().map(|region| Self {
            region,
            whatsapp: true,
        })
    }

    /// The same rules with WhatsApp variants on or off.
    #[must_use]
    pub fn with_whatsapp_variants(self, on: bool) -> Self {
        Self {
            whatsapp: on,
            ..self
        }
    }

    /// Whether WhatsApp variants are match keys.
    pub fn whatsapp_variants(self) -> bool {
        self.whatsapp
    }
}

impl Default for DefaultRegion {
    fn default() -> Self {
        Self {
            region: Region::US,
            whatsapp: true,
        }
    }
}

/// Longest input considered a phone number; longer text is kept raw, never parsed.
const MAX_PHONE_LEN: usize = 64;

/// Normalises a phone number written any common way (national format, spaces, dashes,
/// dots, parentheses, `00` international prefix, `tel:` URIs) to E.164. Returns `None`
/// for blank input.
///
/// WhatsApp ids are read as phones (`…@s.whatsapp.net`, `…@c.us`); a privacy id
/// (`…@lid`) and every other `@` id is never a phone. With WhatsApp variants on, a form
/// libphonenumber rejects but WhatsApp writes (`+521…`, Brazil's 8-digit mobiles,
/// Argentina's `…15…`) normalises to the valid form it stands for.
pub fn normalize_phone(raw: &str, region: DefaultRegion) -> Option<Phone> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return None;
    }
    let wa;
    let text = match super::whatsapp::parse_wa_id(trimmed) {
        None => trimmed,
        Some(super::whatsapp::WaId::Phone(digits)) => {
            wa = format!("+{digits}");
            wa.as_str()
        }
        Some(super::whatsapp::WaId::NotAPhone) => return Some(Phone::Invalid(trimmed.to_owned())),
    };
    Some(
        match parse_e164(text, region).or_else(|| whatsapp_form(text, region)) {
            Some(e164) => Phone::E164(e164),
            None => Phone::Invalid(trimmed.to_owned()),
        },
    )
}

/// A number libphonenumber rejects, written in international form, that is a WhatsApp
/// form of a valid number: that valid number.
fn whatsapp_form(text: &str, region: DefaultRegion) -> Option<String> {
    if !region.whatsapp || text.len() > MAX_PHONE_LEN {
        return None;
    }
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    let intl = if text.starts_with('+') {
        format!("+{digits}")
    } else {
        format!("+{}", digits.strip_prefix("00")?)
    };
    super::whatsapp::variants(&intl)
        .into_iter()
        .find_map(|v| parse_e164(&v, region).filter(|e| *e == v))
}

/// The other match keys of a normalised (E.164) phone: its WhatsApp variants, when on.
pub fn phone_variants(e164: &str, region: DefaultRegion) -> Vec<String> {
    if region.whatsapp {
        super::whatsapp::variants(e164)
    } else {
        Vec::new()
    }
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
        None => phonenumber::parse(Some(region.region), &digits)
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

    /// Every match key of a phone as typed: its E.164 form and its WhatsApp variants.
    fn keys_of(raw: &str, rules: DefaultRegion) -> Vec<String> {
        match normalize_phone(raw, rules) {
            Some(Phone::E164(e)) => {
                let mut keys = phone_variants(&e, rules);
                keys.push(e);
                keys
            }
            _ => Vec::new(),
        }
    }

    fn share_a_key(a: &[String], b: &[String]) -> bool {
        a.iter().any(|k| b.contains(k))
    }

    /// Real-world spellings of one mobile, per country: people's national formats, the
    /// international form with and without WhatsApp's extra digit, WhatsApp ids. Every
    /// pair shares a match key (one person); the numbers themselves are kept as typed.
    #[test]
    fn whatsapp_forms_of_one_mobile_share_a_key() {
        for (reg, a, b) in [
            // Brazil: with and without the 9th digit.
            ("BR", "(11) 98765-4321", "+55 11 8765-4321"),
            ("BR", "+55 (21) 99876-5432", "552198765432@s.whatsapp.net"),
            ("US", "+55 31 8888-7777", "+55 31 98888-7777"),
            ("BR", "5581996543210@c.us", "+55 81 9654-3210"),
            ("BR", "5511987654321:3@s.whatsapp.net", "(11) 98765-4321"),
            // Mexico: with and without the mobile 1.
            ("MX", "55 1234 5678", "+52 1 55 1234 5678"),
            ("US", "5215512345678@s.whatsapp.net", "+52 55 1234 5678"),
            ("MX", "+52 1 33 1234 5678", "33 1234 5678"),
            ("US", "+52 81 1234 5678", "5218112345678@c.us"),
            // Argentina: with and without the mobile 9, and the national 15.
            ("AR", "+54 9 11 2345-6789", "+54 11 2345-6789"),
            ("US", "+54 11 2345-6789", "5491123456789@s.whatsapp.net"),
            ("US", "+54 11 15 2345 6789", "+54 9 11 2345 6789"),
            ("AR", "+54 11 15 4567 8901", "+54 9 11 4567-8901"),
            ("US", "5491145678901@c.us", "+54 11 4567-8901"),
        ] {
            let rules = region(reg);
            let (ka, kb) = (keys_of(a, rules), keys_of(b, rules));
            assert!(
                !ka.is_empty() && !kb.is_empty(),
                "{reg} {a:?} {ka:?} / {b:?} {kb:?}"
            );
            assert!(share_a_key(&ka, &kb), "{reg}: {a:?} {ka:?} / {b:?} {kb:?}");
        }
    }

    #[test]
    fn different_numbers_and_landlines_stay_apart() {
        let rules = region("BR");
        for (a, b) in [
            // A landline (3…) has no 9th-digit form.
            ("+55 11 3333-4444", "+55 11 93333-4444"),
            ("+55 11 98765-4321", "+55 11 98765-4322"),
            ("+52 55 1234 5678", "+52 55 1234 5679"),
            ("+54 9 11 2345-6789", "+54 9 11 2345-6788"),
        ] {
            assert!(
                !share_a_key(&keys_of(a, rules), &keys_of(b, rules)),
                "{a} / {b}"
            );
        }
    }

    #[test]
    fn whatsapp_privacy_ids_are_never_phones() {
        for raw in [
            "123456789012345@lid",
            "5511987654321@lid",
            "120363025246125888@g.us",
            "status@broadcast",
        ] {
            let phone = normalize_phone(raw, region("BR")).unwrap();
            assert_eq!(phone, Phone::Invalid(raw.to_owned()));
            assert_eq!(phone.key(), None, "{raw}");
        }
    }

    #[test]
    fn without_whatsapp_variants_only_the_valid_form_is_a_key() {
        let off = region("BR").with_whatsapp_variants(false);
        assert!(phone_variants("+5511987654321", off).is_empty());
        assert_eq!(
            normalize_phone("+55 11 8765-4321", off).and_then(|p| p.key().map(str::to_owned)),
            None,
            "an 8-digit Brazilian mobile is not valid on its own"
        );
        assert_eq!(
            normalize_phone("5511987654321@s.whatsapp.net", off),
            Some(Phone::E164("+5511987654321".into())),
            "WhatsApp ids are read either way"
        );
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
