//! The one name rule: how a display name (`name`) and a given/family name pair
//! (`first_name`, `last_name`) stand for each other.
//!
//! - A display name splits into its first word (given name) and the rest (family name).
//! - Given and family name join into a display name with one space (either may be empty).
//!
//! Providers hold one side or the other (Chatwoot and MaiAgent a display name, Agentalk
//! and DM Champ given/family names), so the golden record keeps both. The rule is used in
//! three ways: [`completed`] derives the side a contact lacks (the planner's projection);
//! [`complete`] writes that side into a field map (a new or newly linked contact); and
//! [`follow`] re-derives the other side after a provider changed one (the pull's merge).

use super::record::{Fields, field, set_field as set};
use std::borrow::Cow;

/// A contact's three name fields, each `""` when empty (borrowed from the field map where
/// they are not derived).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names<'a> {
    /// Display name.
    pub name: Cow<'a, str>,
    /// Given name.
    pub first: Cow<'a, str>,
    /// Family name.
    pub last: Cow<'a, str>,
}

/// Splits a display name into (given, family): the first word and the rest, trimmed.
pub fn split(name: &str) -> (String, String) {
    let name = name.trim();
    match name.split_once(char::is_whitespace) {
        Some((first, rest)) => (first.to_owned(), rest.trim().to_owned()),
        None => (name.to_owned(), String::new()),
    }
}

/// Joins given and family name into a display name.
pub fn join(first: &str, last: &str) -> String {
    match (first.trim(), last.trim()) {
        ("", l) => l.to_owned(),
        (f, "") => f.to_owned(),
        (f, l) => format!("{f} {l}"),
    }
}

fn get<'a>(fields: &'a Fields, name: &str) -> &'a str {
    fields.get(name).map_or("", String::as_str)
}

/// The name fields of `fields` with the missing side derived from the other: a display
/// name alone gives given/family name by [`split`]; given/family name alone give the
/// display name by [`join`]. When both sides (or neither) are present they are kept.
pub fn completed(fields: &Fields) -> Names<'_> {
    let (name, first, last) = (
        get(fields, field::NAME),
        get(fields, field::FIRST_NAME),
        get(fields, field::LAST_NAME),
    );
    match (name.is_empty(), first.is_empty() && last.is_empty()) {
        (false, true) => {
            let (first, last) = split(name);
            Names {
                name: name.into(),
                first: first.into(),
                last: last.into(),
            }
        }
        (true, false) => Names {
            name: join(first, last).into(),
            first: first.into(),
            last: last.into(),
        },
        _ => Names {
            name: name.into(),
            first: first.into(),
            last: last.into(),
        },
    }
}

/// Whether two field maps hold the same name, however each provider splits it: the
/// display name of one is the other's given and family name joined — with or without a
/// space, in either order (`陳美玲` is family name `陳` plus given name `美玲`). Spaces do
/// not count; case does (a change of case is a change).
pub fn same_name(a: &Fields, b: &Fields) -> bool {
    fn forms(f: &Fields) -> Vec<String> {
        let n = completed(f);
        let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        let mut out = vec![
            squash(&n.name),
            squash(&format!("{}{}", n.first, n.last)),
            squash(&format!("{}{}", n.last, n.first)),
        ];
        out.retain(|s| !s.is_empty());
        out
    }
    let (a, b) = (forms(a), forms(b));
    a.iter().any(|x| b.contains(x))
}

/// Whether `field` is the given or the family name: the fields a provider splits a name
/// into its own way (a display name is compared as written).
pub fn is_split_name_field(name: &str) -> bool {
    matches!(name, field::FIRST_NAME | field::LAST_NAME)
}

/// Writes [`completed`] names into `fields` (empty ones removed).
pub fn complete(fields: &mut Fields) {
    let Names { name, first, last } = completed(fields);
    let (name, first, last) = (name.into_owned(), first.into_owned(), last.into_owned());
    set(fields, field::NAME, name);
    set(fields, field::FIRST_NAME, first);
    set(fields, field::LAST_NAME, last);
}

/// After field `changed` of `fields` took a new value: re-derives the other side of the
/// name. A new display name replaces given/family name by its [`split`]; a new given or
/// family name replaces the display name by their [`join`]. Other fields change nothing.
pub fn follow(fields: &mut Fields, changed: &str) {
    match changed {
        field::NAME => {
            let (first, last) = split(get(fields, field::NAME));
            set(fields, field::FIRST_NAME, first);
            set(fields, field::LAST_NAME, last);
        }
        field::FIRST_NAME | field::LAST_NAME => {
            let name = join(
                get(fields, field::FIRST_NAME),
                get(fields, field::LAST_NAME),
            );
            set(fields, field::NAME, name);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_same_name_split_differently_is_the_same_name() {
        let f = |pairs: &[(&str, &str)]| -> Fields {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let cjk = f(&[("name", "陳美玲")]);
        assert!(same_name(
            &cjk,
            &f(&[("first_name", "美玲"), ("last_name", "陳")])
        ));
        assert!(same_name(&cjk, &f(&[("first_name", "陳美玲")])));
        let latin = f(&[("name", "Ana López")]);
        assert!(same_name(
            &latin,
            &f(&[("first_name", "Ana"), ("last_name", "López")])
        ));
        assert!(!same_name(
            &latin,
            &f(&[("first_name", "Ana"), ("last_name", "Lopez")])
        ));
        assert!(
            !same_name(&latin, &f(&[("name", "ana lópez")])),
            "case counts"
        );
        assert!(
            !same_name(&latin, &Fields::new()),
            "no name is not the same name"
        );
    }

    #[test]
    fn a_display_name_splits_at_the_first_word() {
        assert_eq!(
            split("María del Carmen"),
            ("María".into(), "del Carmen".into())
        );
        assert_eq!(split("  Ana  "), ("Ana".into(), String::new()));
        assert_eq!(split("Ana \t Bel"), ("Ana".into(), "Bel".into()));
        assert_eq!(split(""), (String::new(), String::new()));
    }

    #[test]
    fn given_and_family_name_join_with_one_space() {
        assert_eq!(join("Ana", "Bel"), "Ana Bel");
        assert_eq!(join(" Ana ", ""), "Ana");
        assert_eq!(join("", "Bel"), "Bel");
        assert_eq!(join("", ""), "");
    }

    #[test]
    fn completing_derives_only_the_missing_side() {
        let names = |name: &'static str, first: &'static str, last: &'static str| Names {
            name: name.into(),
            first: first.into(),
            last: last.into(),
        };
        assert_eq!(
            completed(&fields(&[("name", "Ana Bel Cruz")])),
            names("Ana Bel Cruz", "Ana", "Bel Cruz")
        );
        assert_eq!(
            completed(&fields(&[("last_name", "Cruz")])),
            names("Cruz", "", "Cruz")
        );
        // Both sides present: kept as they are, even when they disagree.
        assert_eq!(
            completed(&fields(&[
                ("name", "Ana"),
                ("first_name", "Anita"),
                ("last_name", "B")
            ])),
            names("Ana", "Anita", "B")
        );
        assert_eq!(completed(&Fields::new()), Names::default());

        let mut f = fields(&[("first_name", "Ana"), ("email", "a@x.io")]);
        complete(&mut f);
        assert_eq!(
            f,
            fields(&[("first_name", "Ana"), ("name", "Ana"), ("email", "a@x.io")])
        );
    }

    #[test]
    fn a_changed_side_replaces_the_other() {
        let mut f = fields(&[
            ("name", "Ana Bel"),
            ("first_name", "Ana"),
            ("last_name", "Bel"),
        ]);
        f.insert("name".into(), "Eva".into());
        follow(&mut f, field::NAME);
        assert_eq!(f, fields(&[("name", "Eva"), ("first_name", "Eva")]));

        f.insert("last_name".into(), "Ruiz".into());
        follow(&mut f, field::LAST_NAME);
        assert_eq!(
            f,
            fields(&[
                ("name", "Eva Ruiz"),
                ("first_name", "Eva"),
                ("last_name", "Ruiz")
            ])
        );

        f.remove("first_name");
        f.remove("last_name");
        follow(&mut f, field::FIRST_NAME);
        assert_eq!(
            f,
            Fields::new(),
            "emptied given/family name empty the display name"
        );

        let before = fields(&[("name", "Ana"), ("email", "a@x.io")]);
        let mut f = before.clone();
        follow(&mut f, field::EMAIL);
        assert_eq!(f, before);
    }
}
