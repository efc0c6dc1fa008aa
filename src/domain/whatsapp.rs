//! WhatsApp-aware phone rules (`sync.whatsapp_phone_variants`, default on).
//!
//! Chat platforms hold WhatsApp numbers, and WhatsApp writes some countries' mobiles
//! another way than their national plan does:
//!
//! - **Brazil** (+55): mobiles with and without the 9th digit (`+55 11 9xxxx-xxxx` /
//!   `+55 11 xxxx-xxxx`, the old 8-digit form, still used by older WhatsApp accounts);
//!   only 8-digit numbers starting 6–9 are mobiles (2–5 are landlines: no variant).
//! - **Mexico** (+52): with and without the mobile `1` (`+52 1 55…` / `+52 55…`).
//! - **Argentina** (+54): with and without the mobile `9` (`+54 9 11…` / `+54 11…`), and
//!   the national mobile prefix `15` written after the area code (`+54 11 15 xxxx-xxxx`).
//!
//! The forms of one number are *variants*: extra match keys of the same person. They
//! never rewrite the number a provider holds. libphonenumber rejects some of these forms
//! (`+521…`, Brazil's 8-digit mobiles, `…15…` in Argentina), so the rules here decide from
//! the digits; libphonenumber only confirms the *other* form they point at.
//!
//! WhatsApp ids are recognised too: `…@s.whatsapp.net` and `…@c.us` carry a phone number;
//! `…@lid` (WhatsApp's privacy ids) and every other `@` id are never a phone.

/// What a WhatsApp-style id (`local@domain`) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaId {
    /// A phone id: the international digits, without `+`.
    Phone(String),
    /// A privacy id (`@lid`), a group, a broadcast list…: never a phone.
    NotAPhone,
}

/// Reads a WhatsApp id; `None` when `text` is not one (no `@`).
pub fn parse_wa_id(text: &str) -> Option<WaId> {
    let (local, domain) = text.trim().rsplit_once('@')?;
    let domain = domain.trim().to_ascii_lowercase();
    // A multi-device id carries the device after a colon: `5511987654321:12@s.whatsapp.net`.
    let local = local.split(':').next().unwrap_or(local).trim();
    let local = local.strip_prefix('+').unwrap_or(local);
    match domain.as_str() {
        "s.whatsapp.net" | "c.us"
            if (8..=15).contains(&local.len()) && local.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Some(WaId::Phone(local.to_owned()))
        }
        _ => Some(WaId::NotAPhone),
    }
}

/// The other forms of an international number (`+` and digits) that WhatsApp or people
/// write for the same mobile, each as `+` and digits. Empty when the number has none.
pub fn variants(e164: &str) -> Vec<String> {
    let Some(digits) = e164.strip_prefix('+') else {
        return Vec::new();
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Some(national) = digits.strip_prefix("55") {
        brazil(national, &mut out);
    } else if let Some(national) = digits.strip_prefix("52") {
        mexico(national, &mut out);
    } else if let Some(national) = digits.strip_prefix("54") {
        argentina(national, &mut out);
    }
    out.retain(|v| v != e164);
    out
}

/// Brazil: 2-digit area code (11–99, no zero digit), then 9 digits starting 9 (mobile) or
/// 8 digits (mobile when starting 6–9).
fn brazil(national: &str, out: &mut Vec<String>) {
    let area_ok = |a: &str| a.len() == 2 && !a.contains('0');
    match national.len() {
        11 => {
            let (area, sub) = national.split_at(2);
            if area_ok(area)
                && let Some(rest) = sub.strip_prefix('9')
                && rest.starts_with(['6', '7', '8', '9'])
            {
                out.push(format!("+55{area}{rest}"));
            }
        }
        10 => {
            let (area, sub) = national.split_at(2);
            if area_ok(area) && sub.starts_with(['6', '7', '8', '9']) {
                out.push(format!("+55{area}9{sub}"));
            }
        }
        _ => {}
    }
}

/// Mexico: 10 national digits, written with the old mobile `1` in front by WhatsApp.
fn mexico(national: &str, out: &mut Vec<String>) {
    match national.len() {
        11 if national.starts_with('1') => out.push(format!("+52{}", &national[1..])),
        10 if !national.starts_with(['0', '1']) => out.push(format!("+521{national}")),
        _ => {}
    }
}

/// Argentina: 10 national digits (area code + subscriber); mobiles are `9` + those in
/// international form, and are written `15` after the area code nationally.
fn argentina(national: &str, out: &mut Vec<String>) {
    match national.len() {
        11 if national.starts_with('9') => out.push(format!("+54{}", &national[1..])),
        10 if !national.starts_with(['0', '9']) => out.push(format!("+549{national}")),
        12 => {
            // `15` after an area code of 2, 3 or 4 digits: the first that fits.
            for area in 2..=4 {
                if national[area..].starts_with("15") && !national.starts_with('0') {
                    let (a, rest) = (&national[..area], &national[area + 2..]);
                    out.push(format!("+549{a}{rest}"));
                    out.push(format!("+54{a}{rest}"));
                    break;
                }
            }
        }
        _ => {}
    }
}

/// Whether two phone values are the same number written two WhatsApp ways (or equal).
pub fn equivalent(a: &str, b: &str) -> bool {
    a == b || (!a.is_empty() && !b.is_empty() && variants(a).iter().any(|v| v == b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whatsapp_ids() {
        for (input, expected) in [
            (
                "5511987654321@s.whatsapp.net",
                Some(WaId::Phone("5511987654321".into())),
            ),
            (
                "5511987654321:12@s.whatsapp.net",
                Some(WaId::Phone("5511987654321".into())),
            ),
            (
                "5215512345678@c.us",
                Some(WaId::Phone("5215512345678".into())),
            ),
            (
                " 5491112345678@C.US ",
                Some(WaId::Phone("5491112345678".into())),
            ),
            ("123456789012345@lid", Some(WaId::NotAPhone)),
            ("120363025246125888@g.us", Some(WaId::NotAPhone)),
            ("status@broadcast", Some(WaId::NotAPhone)),
            ("abc@s.whatsapp.net", Some(WaId::NotAPhone)),
            ("+5511987654321", None),
        ] {
            assert_eq!(parse_wa_id(input), expected, "{input}");
        }
    }

    /// Brazil, as people and WhatsApp write the same numbers.
    #[test]
    fn brazil_ninth_digit() {
        for (input, expected) in [
            // São Paulo mobile, with and without the 9.
            ("+5511987654321", vec!["+551187654321"]),
            ("+551187654321", vec!["+5511987654321"]),
            // Rio, Belo Horizonte, Recife, Porto Alegre.
            ("+5521998765432", vec!["+552198765432"]),
            ("+553188887777", vec!["+5531988887777"]),
            ("+5581996543210", vec!["+558196543210"]),
            ("+555196543210", vec!["+5551996543210"]),
            // Landlines (2–5) have no 9th digit.
            ("+551133334444", vec![]),
            ("+552125551234", vec![]),
            // A 9 followed by a landline digit is not a mobile written with its 9.
            ("+5511923456789", vec![]),
            // Area codes have no 0.
            ("+551087654321", vec![]),
            // Wrong lengths.
            ("+55119876543", vec![]),
        ] {
            assert_eq!(variants(input), expected, "{input}");
        }
    }

    /// Mexico, with and without the mobile 1.
    #[test]
    fn mexico_mobile_one() {
        for (input, expected) in [
            ("+5215512345678", vec!["+525512345678"]),
            ("+525512345678", vec!["+5215512345678"]),
            // Guadalajara and Monterrey.
            ("+5213312345678", vec!["+523312345678"]),
            ("+528112345678", vec!["+5218112345678"]),
            ("+52551234567", vec![]),
        ] {
            assert_eq!(variants(input), expected, "{input}");
        }
    }

    /// Argentina, with and without the mobile 9, and the national 15.
    #[test]
    fn argentina_nine_and_fifteen() {
        for (input, expected) in [
            ("+5491123456789", vec!["+541123456789"]),
            ("+541123456789", vec!["+5491123456789"]),
            // Córdoba (351), Mendoza (261).
            ("+5493511234567", vec!["+543511234567"]),
            ("+542611234567", vec!["+5492611234567"]),
            // `15` kept after the area code in an international number.
            ("+54111523456789", vec!["+5491123456789", "+541123456789"]),
            ("+54351151234567", vec!["+5493511234567", "+543511234567"]),
        ] {
            assert_eq!(variants(input), expected, "{input}");
        }
    }

    #[test]
    fn other_countries_have_no_variants() {
        for input in [
            "+14155552671",
            "+442079460958",
            "+886912345678",
            "5511987654321",
        ] {
            assert!(variants(input).is_empty(), "{input}");
        }
        assert!(equivalent("+5511987654321", "+551187654321"));
        assert!(!equivalent("+5511987654321", "+551187654322"));
        assert!(equivalent("+1", "+1"));
    }
}
