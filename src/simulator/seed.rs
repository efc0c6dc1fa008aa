//! Deterministic generator of realistic, overlapping contact sets for the simulated
//! providers (names in several scripts, phones in local formats, mixed-case emails, tags).
//!
//! Everything here is a pure function of `(seed, index)`: [`person`] builds person number
//! `index` of the population, [`placement`] says which providers hold them, and
//! [`written_for`] says how they were typed into one provider. [`people`] and
//! [`people_for`] stream those in index order, so seeding a million contacts never holds
//! more than one person in memory (only the servers' own state holds them).
//!
//! Facts a test can rely on:
//! - For `index < 1_000_000`, phones are unique (E.164) and emails are unique (lower-cased).
//! - Every phone is a valid number of a real numbering plan (mobile or geographic ranges
//!   `libphonenumber` accepts; never the fictional US 555-01xx block).
//! - Every person has an email, a phone, or both.
//! - In every provider's view ([`people_for`]) the phone normalises to `phone_e164` when
//!   parsed with the default region [`HOME_REGION`]: only US numbers are written in
//!   national format there; others carry their country code (`+44 20 …`, `0044 20 …`).
//!   The canonical person ([`person`]) writes every phone the way it is written at home
//!   (national format, parse with [`Person::phone_region`]).
//! - Providers that need a phone ([`Provider::needs_phone`]) only hold people with one.

/// The default region a sync config should use with simulated data (`default_region`).
pub const HOME_REGION: &str = "US";

/// How a WhatsApp-fed platform (Agentalk, DM Champ) shows a seeded phone: most as
/// `+digits`, some as the WhatsApp id it came in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaForm {
    /// `<digits>@s.whatsapp.net` (WhatsApp's own JID).
    Jid,
    /// `<digits>@c.us` (the form of WhatsApp Web libraries).
    CUs,
    /// `<digits>@lid`: a WhatsApp privacy id, which hides the phone number; its digits
    /// are not a phone (only seeded with [`IdentityCases`]).
    Lid,
}

impl WaForm {
    /// The form person `index` was seeded with, deterministically: one person in ten a
    /// JID, one in ten a `@c.us` id, the rest `+digits`.
    pub fn of(index: u64) -> Option<WaForm> {
        match mix(index ^ 0x5741) % 10 {
            3 => Some(WaForm::Jid),
            7 => Some(WaForm::CUs),
            _ => None,
        }
    }

    /// The phone (E.164 digits without `+`) written in this form.
    pub fn render(self, digits: u64) -> String {
        match self {
            WaForm::Jid => format!("{digits}@s.whatsapp.net"),
            WaForm::CUs => format!("{digits}@c.us"),
            WaForm::Lid => format!("{digits}@lid"),
        }
    }
}

/// One person as a seeded provider holds them. Every field is written the way a human
/// typed it into that provider (local phone formats, mixed-case emails).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Stable index of the person in the generated population (the same person has the
    /// same index in every provider it is seeded into).
    pub index: u64,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Email as typed (mixed case, stray spaces possible), if the person has one.
    pub email: Option<String>,
    /// Phone as typed in this provider (e.g. `(415) 555-0123`, `0044 20 7946 0958`).
    pub phone: Option<String>,
    /// The same phone in E.164 (`+14155550123`).
    pub phone_e164: Option<String>,
    /// Tags / labels.
    pub tags: Vec<String>,
}

impl Person {
    /// The name as one string, the way the person's script writes it: family name first
    /// and no space for Chinese and Japanese (`王志明`), `first last` otherwise.
    pub fn full_name(&self) -> String {
        let cjk = self
            .last_name
            .chars()
            .chain(self.first_name.chars())
            .any(is_cjk);
        match (self.first_name.is_empty(), self.last_name.is_empty()) {
            (true, _) => self.last_name.clone(),
            (_, true) => self.first_name.clone(),
            _ if cjk => format!("{}{}", self.last_name, self.first_name),
            _ => format!("{} {}", self.first_name, self.last_name),
        }
    }

    /// ISO 3166 region of the phone number (`US`, `GB`, `TW`, …), from its country code.
    pub fn phone_region(&self) -> Option<&'static str> {
        let e164 = self.phone_e164.as_deref()?;
        PLANS
            .iter()
            .find(|p| e164.strip_prefix('+').is_some_and(|d| d.starts_with(p.cc)))
            .map(|p| p.region)
    }

    /// The email a provider that lower-cases and checks addresses would keep: trimmed,
    /// lower-cased.
    pub fn email_key(&self) -> Option<String> {
        self.email
            .as_deref()
            .map(|e| e.trim().to_lowercase())
            .filter(|e| !e.is_empty())
    }
}

fn is_cjk(c: char) -> bool {
    matches!(c, '\u{3040}'..='\u{30ff}' | '\u{3400}'..='\u{4dbf}' | '\u{4e00}'..='\u{9fff}')
}

/// How people are placed into one simulated provider and typed there: each provider
/// module states its own ([`super::SimulatedProvider::SEED`]); [`Provider::all`] lists
/// those of the registry, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Provider {
    /// The provider's kind (`chatwoot`, …).
    pub kind: &'static str,
    /// Percentage of the population seeded into it.
    pub share: u64,
    /// It can only store people with a phone.
    pub needs_phone: bool,
    /// Its contacts can be listed, so a sync learns everyone in it (otherwise it can only
    /// look people up, and a sync only writes to it the people it learnt elsewhere).
    pub listable: bool,
    /// How phones are typed into it.
    pub phone: PhoneStyle,
    /// Emails sometimes carry a stray leading or trailing space (its UI allows it).
    pub stray_spaces: bool,
    /// How tags are spelled in it.
    pub tags: TagStyle,
    /// Varies how people are typed into this provider (distinct per provider).
    pub salt: u64,
}

/// How phones are typed into a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PhoneStyle {
    /// E.164 (the provider insists on a country code).
    E164,
    /// Free text: US numbers mostly in a national format (`(415) 555-0123`), others with
    /// their country code (`+44 20 7946 0958`, `0044 20 7946 0958`, `+886-912-345-678`).
    FreeText,
}

/// How tags are spelled in a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TagStyle {
    /// Lower-case (the provider lower-cases labels).
    LowerCase,
    /// Any of the tag's usual spellings.
    AnySpelling,
}

impl Provider {
    /// The seed profiles of every registered simulated provider, in registry order.
    pub fn all() -> impl Iterator<Item = Provider> {
        super::PROVIDERS.iter().map(|e| e.seed)
    }

    /// The seed profile of `kind`, if it is a registered simulated provider.
    pub fn of(kind: &str) -> Option<Provider> {
        Provider::all().find(|p| p.kind == kind)
    }

    /// Its position in the registry (the bit of [`Placement`]).
    fn position(self) -> Option<usize> {
        super::PROVIDERS.iter().position(|e| e.kind == self.kind)
    }
}

/// Which providers hold one person (one bit per registered provider).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Placement(u64);

impl Placement {
    /// Whether `provider` holds the person.
    pub fn contains(self, provider: Provider) -> bool {
        provider
            .position()
            .is_some_and(|i| i < 64 && self.0 & (1 << i) != 0)
    }

    /// Whether the provider of `kind` holds the person.
    pub fn contains_kind(self, kind: &str) -> bool {
        Provider::of(kind).is_some_and(|p| self.contains(p))
    }

    /// How many providers hold the person (at least 1).
    pub fn count(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The providers holding the person, in registry order.
    pub fn providers(self) -> impl Iterator<Item = Provider> {
        Provider::all().filter(move |p| self.contains(*p))
    }
}

/// Person number `index` of the population of `seed`, canonical form: the phone written
/// the way it is written at home (national format of its region), the email as typed.
pub fn person(seed: u64, index: u64) -> Person {
    let mut d = Dice::new(seed, index, STREAM_PERSON);
    let plan = pick_plan(&mut d);
    // Most people carry a name of their country's script; some are from elsewhere.
    let group = if d.chance(85) {
        plan.names
    } else {
        NAME_GROUPS[d.below(NAME_GROUPS.len() as u64) as usize]
    };
    let first = d.pick(group.first);
    let last = d.pick(group.last);
    let (has_email, has_phone) = presence(seed, index);

    let (phone, phone_e164) = if has_phone {
        let nsn = national_number(plan, seed, index, &mut d);
        let styles = national_formats(plan.region, &nsn);
        let typed = d.pick(&styles).clone();
        (Some(typed), Some(format!("+{}{}", plan.cc, nsn)))
    } else {
        (None, None)
    };

    let email = has_email.then(|| typed_email(first, last, index, &mut d));

    let tag_count = match d.below(10) {
        0..=2 => 0,
        3..=6 => 1,
        7..=8 => 2,
        _ => 3,
    };
    let mut tags: Vec<String> = Vec::new();
    for _ in 0..tag_count {
        let spellings = d.pick(TAGS);
        let tag = d.pick(spellings);
        if !tags.iter().any(|t| t.eq_ignore_ascii_case(tag)) {
            tags.push((*tag).to_owned());
        }
    }

    Person {
        index,
        first_name: first.0.to_owned(),
        last_name: last.0.to_owned(),
        email,
        phone,
        phone_e164,
        tags,
    }
}

/// The first `n` people of the population of `seed`, canonical form, streamed.
pub fn people(seed: u64, n: u64) -> impl Iterator<Item = Person> {
    (0..n).map(move |index| person(seed, index))
}

/// Which providers hold person `index` (deterministic from `seed` and `index`): each
/// registered provider, in registry order, with its [`Provider::share`] chance (only
/// people with a phone where [`Provider::needs_phone`]). Everyone is in at least one
/// provider (the registry's first when the dice chose none); about half are in two or
/// more.
pub fn placement(seed: u64, index: u64) -> Placement {
    let mut d = Dice::new(seed, index, STREAM_PLACEMENT);
    let (_, has_phone) = presence(seed, index);
    let mut bits = 0u64;
    for (i, p) in Provider::all().enumerate().take(64) {
        // The dice is thrown for every provider, so adding one never moves the others.
        if d.chance(p.share) && (has_phone || !p.needs_phone) {
            bits |= 1 << i;
        }
    }
    if bits == 0 {
        bits = 1;
    }
    Placement(bits)
}

/// Whether instance `instance` (> 0) of `provider` holds person `index`: its own throw
/// of the provider's [`Provider::share`], independent of [`placement`] (a second
/// account of one platform holds a different, overlapping share of the population).
fn placed_in_instance(seed: u64, index: u64, provider: Provider, instance: u64) -> bool {
    let mut d = Dice::new(
        seed,
        index,
        STREAM_PLACEMENT ^ mix(provider.salt ^ instance),
    );
    let (_, has_phone) = presence(seed, index);
    d.chance(provider.share) && (has_phone || !provider.needs_phone)
}

/// How `person` was typed into `provider` (`seed` picks the variations):
/// - phone: as the provider's [`PhoneStyle`] says;
/// - email: case changed in some providers, stray spaces where
///   [`Provider::stray_spaces`], sometimes left out;
/// - tags: as the provider's [`TagStyle`] says, and each tag is missing from a provider
///   now and then (it was only added in some of them).
pub fn written_for(seed: u64, person: &Person, provider: Provider) -> Person {
    let mut d = Dice::new(seed, person.index, STREAM_WRITTEN ^ provider.salt);
    let mut out = person.clone();

    out.phone = match (&person.phone_e164, provider.phone) {
        (None, _) => None,
        (Some(e164), PhoneStyle::FreeText) => {
            let plan = person.phone_region().and_then(plan_of);
            match plan {
                Some(plan) => {
                    let nsn = &e164[1 + plan.cc.len()..];
                    let styles = if plan.region == HOME_REGION && d.chance(80) {
                        national_formats(plan.region, nsn)
                    } else {
                        international_formats(plan, nsn)
                    };
                    Some(d.pick(&styles).clone())
                }
                None => Some(e164.clone()),
            }
        }
        (Some(e164), _) => Some(e164.clone()),
    };

    out.email = person.email.as_ref().and_then(|email| {
        // Sometimes a provider simply does not have the email (unless it is the only key).
        if person.phone.is_some() && d.chance(8) {
            return None;
        }
        let base = email.trim();
        let recased = match d.below(10) {
            0..=5 => base.to_owned(),
            6..=7 => base.to_lowercase(),
            8 => capitalise_parts(base),
            _ => base.to_uppercase(),
        };
        Some(match (provider.stray_spaces, d.below(12)) {
            (false, _) => recased,
            (_, 0) => format!(" {recased}"),
            (_, 1) => format!("{recased} "),
            _ => recased,
        })
    });

    let mut tags = Vec::with_capacity(person.tags.len());
    for tag in &person.tags {
        if !d.chance(85) {
            continue;
        }
        let spellings = TAGS
            .iter()
            .find(|s| s.iter().any(|t| t.eq_ignore_ascii_case(tag)))
            .copied()
            .unwrap_or(&[]);
        tags.push(match provider.tags {
            TagStyle::LowerCase => tag.to_lowercase(),
            _ if spellings.is_empty() => tag.clone(),
            TagStyle::AnySpelling => (*d.pick(spellings)).to_owned(),
        });
    }
    out.tags = tags;
    out
}

/// The people of the first `n` of `seed`'s population that `provider` holds, as typed
/// into it ([`placement`] then [`written_for`]), streamed in index order.
pub fn people_for(seed: u64, n: u64, provider: Provider) -> impl Iterator<Item = Person> {
    (0..n)
        .filter(move |&index| placement(seed, index).contains(provider))
        .map(move |index| written_for(seed, &person(seed, index), provider))
}

/// The people instance `instance` of `provider` holds: [`people_for`] for instance 0
/// (the one a [`super::Simulation`] starts), an independent share of the same population
/// for the others (typed the same way), streamed in index order.
pub fn people_for_instance(
    seed: u64,
    n: u64,
    provider: Provider,
    instance: u64,
) -> impl Iterator<Item = Person> {
    (0..n)
        .filter(move |&index| {
            if instance == 0 {
                placement(seed, index).contains(provider)
            } else {
                placed_in_instance(seed, index, provider, instance)
            }
        })
        .map(move |index| written_for(seed, &person(seed, index), provider))
}

// ---------------------------------------------------------------------------------------
// Identity cases (seeded only when asked for)

/// Records that put identity matching to the test, seeded on top of the population when
/// a simulation is started with [`super::SimOptions::identity_cases`]. Off by default, so
/// the population (and every fixture's and benchmark's counts) stays as it is.
///
/// Which provider holds which case is the provider module's choice
/// ([`super::SimulatedProvider::seed_identity_cases`]): the WhatsApp-fed platforms hold
/// the privacy-id contacts, MaiAgent the records that share a phone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentityCases {
    /// WhatsApp contacts known only by their privacy id (`<digits>@lid`), with the name
    /// their profile shows and no email: the same contacts in every platform holding
    /// them. Their digits are never a seeded phone (15 digits, from `2`; seeded phones
    /// have at most 13).
    pub lids: Vec<LidContact>,
    /// Second records that share the phone of a person the provider holds (a family's one
    /// number): the same index, phone and family name as that person, typed the same
    /// way, another given name, an email of their own (`family.<index>@example.net`,
    /// unique), no tags. Only people no other provider holds are chosen, so the shared
    /// phone is the only thing a sync can go by.
    pub shared_phones: Vec<Person>,
}

/// A WhatsApp contact known only by its privacy id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LidContact {
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// The privacy id's digits (`<lid>@lid`).
    pub lid: u64,
}

impl LidContact {
    /// `<digits>@lid`.
    pub fn id(&self) -> String {
        WaForm::Lid.render(self.lid)
    }
}

/// How many cases of each kind a population of `n` gets: one per 25 people (at least
/// one when there are people at all).
pub fn identity_case_count(n: u64) -> u64 {
    n.div_ceil(25)
}

/// The identity cases of the first `n` people of `seed` for `provider`: the privacy-id
/// contacts (the same for every provider) and the first [`identity_case_count`] people
/// only `provider` holds, with a phone, each given a family member sharing it (see
/// [`IdentityCases`]).
pub fn identity_cases(seed: u64, n: u64, provider: Provider) -> IdentityCases {
    let count = identity_case_count(n);
    let lids = (0..count)
        .map(|i| {
            let mut d = Dice::new(seed, i, STREAM_LID);
            let group = NAME_GROUPS[d.below(NAME_GROUPS.len() as u64) as usize];
            let first = d.pick(group.first).0.to_owned();
            let last = d.pick(group.last).0.to_owned();
            let lid = 200_000_000_000_000 + d.below(100_000_000_000_000);
            LidContact {
                first_name: first,
                last_name: last,
                lid,
            }
        })
        .collect();
    let shared_phones = people_for(seed, n, provider)
        .filter(|p| p.phone.is_some() && placement(seed, p.index).count() == 1)
        .take(usize::try_from(count).unwrap_or(usize::MAX))
        .map(|p| family_member(seed, &p))
        .collect();
    IdentityCases {
        lids,
        shared_phones,
    }
}

/// Someone of `person`'s family who shares their phone (see [`IdentityCases`]).
fn family_member(seed: u64, person: &Person) -> Person {
    let mut d = Dice::new(seed, person.index, STREAM_LID ^ 0x6661_6d69_6c79);
    let group = NAME_GROUPS
        .iter()
        .find(|g| g.first.iter().any(|f| f.0 == person.first_name))
        .copied()
        .unwrap_or(&ENGLISH);
    let others: Vec<&(&str, &str)> = group
        .first
        .iter()
        .filter(|f| f.0 != person.first_name)
        .collect();
    let first = others
        .get(d.below(others.len() as u64) as usize)
        .map_or("Alex", |f| f.0);
    Person {
        index: person.index,
        first_name: first.to_owned(),
        last_name: person.last_name.clone(),
        email: Some(format!("family.{}@example.net", person.index)),
        phone: person.phone.clone(),
        phone_e164: person.phone_e164.clone(),
        tags: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Deterministic randomness

const STREAM_PERSON: u64 = 0x7065_7273_6f6e;
const STREAM_PRESENCE: u64 = 0x7072_6573;
const STREAM_PLACEMENT: u64 = 0x0070_6c61_6365;
const STREAM_WRITTEN: u64 = 0x7772_6974_7465_6e00;
const STREAM_LID: u64 = 0x006c_6964;

/// SplitMix64 finaliser: a good 64-bit mixer, stable forever (unlike library RNGs).
pub(crate) const fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Formats two 64-bit values as a UUID with the version-4 layout.
pub(crate) fn uuid_from(a: u64, b: u64) -> String {
    let hi = (a & 0xffff_ffff_ffff_0fff) | 0x4000;
    let lo = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// A small deterministic dice: successive values of SplitMix64 from `(seed, index, stream)`.
#[derive(Debug, Clone)]
pub struct Dice(u64);

impl Dice {
    /// The dice of `(seed, index, stream)`.
    pub fn new(seed: u64, index: u64, stream: u64) -> Self {
        Dice(mix(mix(seed ^ mix(stream)) ^ index))
    }

    /// The next value.
    #[allow(clippy::should_implement_trait)] // an endless stream, not an `Iterator`
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with `percent`% probability.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One of `items` (not empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Whether person `index` has an email and a phone (at least one of them).
fn presence(seed: u64, index: u64) -> (bool, bool) {
    let mut d = Dice::new(seed, index, STREAM_PRESENCE);
    let has_email = d.chance(85);
    let has_phone = d.chance(88);
    if !has_email && !has_phone {
        (true, false)
    } else {
        (has_email, has_phone)
    }
}

/// A bijection of `0..1_000_000` (for `index` below a million): the digits that make
/// phones unique.
fn unique_digits(seed: u64, index: u64) -> [u8; 6] {
    const SPACE: u64 = 1_000_000;
    // 387_419 is coprime with 10, so `i * A + B mod 10^6` is a permutation.
    let v = (index % SPACE * 387_419 + mix(seed) % SPACE) % SPACE;
    let mut out = [0u8; 6];
    let mut rest = v;
    for slot in out.iter_mut().rev() {
        *slot = (rest % 10) as u8;
        rest /= 10;
    }
    out
}

// ---------------------------------------------------------------------------------------
// Phones

/// A country's numbering plan, as far as we generate numbers in it.
struct Plan {
    region: &'static str,
    /// Country calling code, digits only.
    cc: &'static str,
    weight: u64,
    names: &'static NameGroup,
    /// Templates of the national significant number: digits are literal, `U` takes the
    /// next unique digit, `H` any digit, `[xyz]` one of those digits. Every template holds
    /// six `U`s, except when `by_unique` is set: then there are exactly ten templates, the
    /// first unique digit picks one, and each holds the five other `U`s.
    templates: &'static [&'static str],
    by_unique: bool,
}

static PLANS: &[Plan] = &[
    Plan {
        region: "US",
        cc: "1",
        weight: 28,
        names: &ENGLISH,
        templates: &[
            "212[2346789][2-9]UUUUU",
            "312[2346789][2-9]UUUUU",
            "415[2346789][2-9]UUUUU",
            "503[2346789][2-9]UUUUU",
            "617[2346789][2-9]UUUUU",
            "646[2346789][2-9]UUUUU",
            "713[2346789][2-9]UUUUU",
            "206[2346789][2-9]UUUUU",
            "404[2346789][2-9]UUUUU",
            "305[2346789][2-9]UUUUU",
        ],
        by_unique: true,
    },
    Plan {
        region: "GB",
        cc: "44",
        weight: 8,
        names: &ENGLISH,
        templates: &["20[378]UUUUUUH", "77[1-7]HUUUUUU", "79[0245-9]HUUUUUU"],
        by_unique: false,
    },
    Plan {
        region: "TW",
        cc: "886",
        weight: 10,
        names: &CHINESE,
        templates: &["9[1-8]UUUUUUH"],
        by_unique: false,
    },
    Plan {
        region: "CN",
        cc: "86",
        weight: 4,
        names: &CHINESE,
        templates: &["138UUUUUUHH", "139UUUUUUHH", "158UUUUUUHH", "186UUUUUUHH"],
        by_unique: false,
    },
    Plan {
        region: "JP",
        cc: "81",
        weight: 7,
        names: &JAPANESE,
        templates: &["90[1-9]UUUUUUH", "80[1-9]UUUUUUH", "70[1-9]UUUUUUH"],
        by_unique: false,
    },
    Plan {
        region: "DE",
        cc: "49",
        weight: 6,
        names: &EUROPEAN,
        templates: &["151UUUUUUHH", "152UUUUUUHH", "170UUUUUUHH", "176UUUUUUHH"],
        by_unique: false,
    },
    Plan {
        region: "FR",
        cc: "33",
        weight: 5,
        names: &EUROPEAN,
        templates: &["6[1245]UUUUUUH", "7[3-9]UUUUUUH"],
        by_unique: false,
    },
    Plan {
        region: "ES",
        cc: "34",
        weight: 4,
        names: &EUROPEAN,
        templates: &["6[0-9]UUUUUUH"],
        by_unique: false,
    },
    Plan {
        region: "BR",
        cc: "55",
        weight: 6,
        names: &EUROPEAN,
        templates: &["119[6-9]UUUUUUH", "219[6-9]UUUUUUH", "319[6-9]UUUUUUH"],
        by_unique: false,
    },
    Plan {
        region: "RU",
        cc: "7",
        weight: 5,
        names: &CYRILLIC,
        templates: &["912UUUUUUH", "916UUUUUUH", "926UUUUUUH", "903UUUUUUH"],
        by_unique: false,
    },
    Plan {
        region: "EG",
        cc: "20",
        weight: 4,
        names: &ARABIC,
        templates: &["10UUUUUUHH", "11UUUUUUHH", "12UUUUUUHH"],
        by_unique: false,
    },
    Plan {
        region: "SA",
        cc: "966",
        weight: 3,
        names: &ARABIC,
        templates: &["50UUUUUUH", "55UUUUUUH", "53UUUUUUH"],
        by_unique: false,
    },
    Plan {
        region: "IN",
        cc: "91",
        weight: 6,
        names: &INDIAN,
        templates: &["98[1-9]UUUUUUH", "99[1-9]UUUUUUH"],
        by_unique: false,
    },
    Plan {
        region: "AU",
        cc: "61",
        weight: 4,
        names: &ENGLISH,
        templates: &["4[0-3]HUUUUUU"],
        by_unique: false,
    },
];

fn plan_of(region: &str) -> Option<&'static Plan> {
    PLANS.iter().find(|p| p.region == region)
}

fn pick_plan(d: &mut Dice) -> &'static Plan {
    let total: u64 = PLANS.iter().map(|p| p.weight).sum();
    let mut roll = d.below(total);
    for plan in PLANS {
        if roll < plan.weight {
            return plan;
        }
        roll -= plan.weight;
    }
    &PLANS[0]
}

/// The national significant number (digits only) of person `index` in `plan`.
fn national_number(plan: &Plan, seed: u64, index: u64, d: &mut Dice) -> String {
    let unique = unique_digits(seed, index);
    let mut next_unique = unique.iter();
    let template = if plan.by_unique {
        let first = next_unique.next().copied().unwrap_or(0);
        plan.templates[usize::from(first) % plan.templates.len()]
    } else {
        d.pick(plan.templates)
    };
    let mut out = String::with_capacity(16);
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        match c {
            'U' => out.push(char::from(b'0' + next_unique.next().copied().unwrap_or(0))),
            'H' => out.push(char::from(b'0' + d.below(10) as u8)),
            '[' => {
                let mut set = Vec::new();
                let mut prev = None;
                let mut range = false;
                for c in chars.by_ref() {
                    match c {
                        ']' => break,
                        '-' => range = true,
                        _ if range => {
                            if let Some(lo) = prev {
                                set.extend(((lo as u8 + 1)..=(c as u8)).map(char::from));
                            }
                            range = false;
                        }
                        _ => {
                            set.push(c);
                            prev = Some(c);
                        }
                    }
                }
                out.push(*d.pick(&set));
            }
            _ => out.push(c),
        }
    }
    out
}

/// Splits `digits` into groups of the given sizes (the last group takes the rest).
fn group(digits: &str, sizes: &[usize], sep: &str) -> String {
    let mut parts = Vec::with_capacity(sizes.len() + 1);
    let mut rest = digits;
    for (i, &size) in sizes.iter().enumerate() {
        if rest.is_empty() {
            break;
        }
        if i + 1 == sizes.len() || size >= rest.len() {
            parts.push(rest);
            rest = "";
            break;
        }
        let (head, tail) = rest.split_at(size);
        parts.push(head);
        rest = tail;
    }
    if !rest.is_empty() {
        parts.push(rest);
    }
    parts.join(sep)
}

/// Digit groups of a national significant number, as the country writes them.
fn groups_of(region: &str, nsn: &str) -> &'static [usize] {
    match region {
        "US" | "EG" => &[3, 3, 4],
        "GB" if nsn.starts_with('2') => &[2, 4, 4],
        "GB" => &[4, 6],
        "TW" | "AU" => &[3, 3, 3],
        "CN" => &[3, 4, 4],
        "JP" => &[2, 4, 4],
        "DE" => &[3, 8],
        "FR" => &[1, 2, 2, 2, 2],
        "ES" => &[3, 2, 2, 2],
        "BR" => &[2, 5, 4],
        "RU" => &[3, 3, 2, 2],
        "SA" => &[2, 3, 4],
        "IN" => &[5, 5],
        _ => &[3, 3, 3, 3],
    }
}

/// Ways people write a number of `region` at home (national formats).
fn national_formats(region: &str, nsn: &str) -> Vec<String> {
    let sizes = groups_of(region, nsn);
    let spaced = group(nsn, sizes, " ");
    let dashed = group(nsn, sizes, "-");
    match region {
        "US" => {
            let (area, rest) = nsn.split_at(3.min(nsn.len()));
            let (exchange, line) = rest.split_at(3.min(rest.len()));
            vec![
                format!("({area}) {exchange}-{line}"),
                format!("{area}-{exchange}-{line}"),
                format!("{area}.{exchange}.{line}"),
                format!("{area} {exchange} {line}"),
                format!("1 ({area}) {exchange}-{line}"),
            ]
        }
        "BR" => {
            let (area, rest) = nsn.split_at(2.min(nsn.len()));
            let (a, b) = rest.split_at(5.min(rest.len()));
            vec![format!("({area}) {a}-{b}"), format!("0{area} {a} {b}")]
        }
        "RU" => {
            let parts: Vec<&str> = dashed.split('-').collect();
            let (code, tail) = parts.split_first().map_or(("", &[][..]), |(c, t)| (*c, t));
            vec![
                format!("8 ({code}) {}", tail.join("-")),
                format!("8 {spaced}"),
            ]
        }
        "JP" => vec![format!("0{dashed}"), format!("0{}", nsn)],
        "CN" | "ES" => vec![spaced.clone(), nsn.to_owned()],
        "IN" => vec![spaced.clone(), format!("0{spaced}")],
        _ => vec![format!("0{spaced}"), format!("0{dashed}")],
    }
}

/// Ways people write a number of `plan` with its country code.
fn international_formats(plan: &Plan, nsn: &str) -> Vec<String> {
    let cc = plan.cc;
    let sizes = groups_of(plan.region, nsn);
    let spaced = group(nsn, sizes, " ");
    let dashed = group(nsn, sizes, "-");
    vec![
        format!("+{cc} {spaced}"),
        format!("+{cc} {spaced}"),
        format!("00{cc} {spaced}"),
        format!("+{cc}-{dashed}"),
        format!("+{cc}{nsn}"),
    ]
}

// ---------------------------------------------------------------------------------------
// Names and emails

/// First and family names of one script, each with the ASCII form used in emails.
struct NameGroup {
    first: &'static [(&'static str, &'static str)],
    last: &'static [(&'static str, &'static str)],
}

static ENGLISH: NameGroup = NameGroup {
    first: &[
        ("James", "james"),
        ("Olivia", "olivia"),
        ("Liam", "liam"),
        ("Emma", "emma"),
        ("Noah", "noah"),
        ("Charlotte", "charlotte"),
        ("Amelia", "amelia"),
        ("Oliver", "oliver"),
        ("Harper", "harper"),
        ("Ethan", "ethan"),
        ("Grace", "grace"),
        ("Jack", "jack"),
    ],
    last: &[
        ("Smith", "smith"),
        ("Johnson", "johnson"),
        ("O'Brien", "obrien"),
        ("Williams", "williams"),
        ("Brown", "brown"),
        ("McAllister", "mcallister"),
        ("Taylor", "taylor"),
        ("Nguyen", "nguyen"),
        ("Walker", "walker"),
        ("Thompson", "thompson"),
    ],
};

static EUROPEAN: NameGroup = NameGroup {
    first: &[
        ("José", "jose"),
        ("María", "maria"),
        ("João", "joao"),
        ("Inês", "ines"),
        ("François", "francois"),
        ("Zoë", "zoe"),
        ("Jürgen", "jurgen"),
        ("Łukasz", "lukasz"),
        ("Søren", "soren"),
        ("Lucía", "lucia"),
        ("Chloé", "chloe"),
        ("Björn", "bjorn"),
        ("Agnieszka", "agnieszka"),
        ("Andrés", "andres"),
        ("Noémie", "noemie"),
        ("Renée", "renee"),
    ],
    last: &[
        ("García", "garcia"),
        ("Müller", "muller"),
        ("Lefèvre", "lefevre"),
        ("Núñez", "nunez"),
        ("Gonçalves", "goncalves"),
        ("Kowalski", "kowalski"),
        ("Øvergaard", "overgaard"),
        ("Šimić", "simic"),
        ("Dubois", "dubois"),
        ("Fernández", "fernandez"),
        ("Schröder", "schroder"),
        ("Peña", "pena"),
        ("Côté", "cote"),
        ("Jönsson", "jonsson"),
    ],
};

static CHINESE: NameGroup = NameGroup {
    first: &[
        ("志明", "zhiming"),
        ("淑芬", "shufen"),
        ("偉", "wei"),
        ("怡君", "yijun"),
        ("建宏", "jianhong"),
        ("雅婷", "yating"),
        ("俊傑", "junjie"),
        ("美玲", "meiling"),
        ("家豪", "jiahao"),
        ("欣怡", "xinyi"),
    ],
    last: &[
        ("王", "wang"),
        ("李", "li"),
        ("張", "zhang"),
        ("陳", "chen"),
        ("林", "lin"),
        ("黃", "huang"),
        ("劉", "liu"),
        ("吳", "wu"),
    ],
};

static JAPANESE: NameGroup = NameGroup {
    first: &[
        ("陽翔", "haruto"),
        ("さくら", "sakura"),
        ("蓮", "ren"),
        ("結衣", "yui"),
        ("大翔", "hiroto"),
        ("美咲", "misaki"),
        ("ひなた", "hinata"),
        ("健太", "kenta"),
    ],
    last: &[
        ("佐藤", "sato"),
        ("鈴木", "suzuki"),
        ("高橋", "takahashi"),
        ("田中", "tanaka"),
        ("渡辺", "watanabe"),
        ("伊藤", "ito"),
    ],
};

static CYRILLIC: NameGroup = NameGroup {
    first: &[
        ("Александр", "alexander"),
        ("Мария", "maria"),
        ("Дмитрий", "dmitry"),
        ("Анна", "anna"),
        ("Сергей", "sergey"),
        ("Ольга", "olga"),
        ("Иван", "ivan"),
        ("Екатерина", "ekaterina"),
    ],
    last: &[
        ("Иванов", "ivanov"),
        ("Смирнова", "smirnova"),
        ("Кузнецов", "kuznetsov"),
        ("Попова", "popova"),
        ("Соколов", "sokolov"),
        ("Лебедева", "lebedeva"),
    ],
};

static ARABIC: NameGroup = NameGroup {
    first: &[
        ("محمد", "mohamed"),
        ("فاطمة", "fatima"),
        ("أحمد", "ahmed"),
        ("مريم", "mariam"),
        ("عمر", "omar"),
        ("ليلى", "layla"),
        ("يوسف", "youssef"),
        ("نور", "nour"),
    ],
    last: &[
        ("حسن", "hassan"),
        ("علي", "ali"),
        ("إبراهيم", "ibrahim"),
        ("السيد", "elsayed"),
        ("منصور", "mansour"),
        ("الشريف", "elsharif"),
    ],
};

static INDIAN: NameGroup = NameGroup {
    first: &[
        ("आरव", "aarav"),
        ("प्रिया", "priya"),
        ("Rahul", "rahul"),
        ("Ananya", "ananya"),
        ("विवान", "vivaan"),
        ("Diya", "diya"),
    ],
    last: &[
        ("शर्मा", "sharma"),
        ("Patel", "patel"),
        ("गुप्ता", "gupta"),
        ("Singh", "singh"),
        ("Reddy", "reddy"),
    ],
};

static NAME_GROUPS: &[&NameGroup] = &[
    &ENGLISH, &EUROPEAN, &CHINESE, &JAPANESE, &CYRILLIC, &ARABIC, &INDIAN,
];

/// Reserved example domains (RFC 2606), so no address can reach a real mailbox.
const DOMAINS: &[&str] = &[
    "example.com",
    "example.org",
    "example.net",
    "mail.example.com",
    "corp.example.org",
    "shop.example.net",
];

fn typed_email(first: &(&str, &str), last: &(&str, &str), index: u64, d: &mut Dice) -> String {
    let (f, l) = (first.1, last.1);
    let domain = d.pick(DOMAINS);
    // The index keeps every address unique.
    let local = match d.below(4) {
        0 => format!("{f}.{l}.{index}"),
        1 => format!("{f}_{l}{index}"),
        2 => format!("{}{l}{index}", &f[..1.min(f.len())]),
        _ => format!("{f}{index}"),
    };
    let typed = match d.below(10) {
        0..=5 => format!("{local}@{domain}"),
        6..=7 => capitalise_parts(&format!("{local}@{domain}")),
        8 => format!("{local}@{}", domain.to_uppercase()),
        _ => format!("{}@{domain}", local.to_uppercase()),
    };
    match d.below(25) {
        0 => format!(" {typed}"),
        1 => format!("{typed}  "),
        _ => typed,
    }
}

/// `maria.garcia.7@example.com` → `Maria.Garcia.7@Example.com`.
fn capitalise_parts(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = matches!(c, '.' | '_' | '@' | ' ');
    }
    out
}

/// Tag vocabulary: each entry lists spellings of the same tag (compare case-insensitively).
const TAGS: &[&[&str]] = &[
    &["VIP", "vip", "Vip"],
    &["lead", "Lead", "LEAD"],
    &["customer", "Customer"],
    &["newsletter", "Newsletter"],
    &["wholesale", "Wholesale"],
    &["churn-risk", "Churn-Risk"],
    &["beta-tester", "Beta-Tester"],
    &["partner", "Partner"],
];

/// The lower-case spelling of every tag the generator can produce (Chatwoot account
/// labels are created from these).
pub fn tag_vocabulary() -> impl Iterator<Item = String> {
    TAGS.iter().map(|s| s[0].to_lowercase())
}

// ---------------------------------------------------------------------------------------
// Credentials

/// Letters and digits (API keys).
pub const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Base58 (Rails `has_secure_token`).
pub const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
/// Lower-case hex digits.
pub const HEX: &[u8] = b"0123456789abcdef";

/// `len` characters of `alphabet` drawn from `d` (a credential).
pub fn token(d: &mut Dice, alphabet: &[u8], len: usize) -> String {
    (0..len).map(|_| char::from(*d.pick(alphabet))).collect()
}

/// A UUID drawn from `d`.
pub fn uuid(d: &mut Dice) -> String {
    let a = d.next();
    uuid_from(a, d.next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_splits_digits() {
        assert_eq!(group("4155550123", &[3, 3, 4], " "), "415 555 0123");
        assert_eq!(group("15123456789", &[3, 8], " "), "151 23456789");
        assert_eq!(group("612345678", &[1, 2, 2, 2, 2], " "), "6 12 34 56 78");
    }

    #[test]
    fn templates_have_the_right_number_of_unique_digits() {
        for plan in PLANS {
            let want = if plan.by_unique { 5 } else { 6 };
            if plan.by_unique {
                assert_eq!(plan.templates.len(), 10, "{}", plan.region);
            }
            for t in plan.templates {
                assert_eq!(t.matches('U').count(), want, "{} {t}", plan.region);
            }
        }
    }

    #[test]
    fn unique_digits_are_a_permutation_on_a_sample() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..200_000 {
            assert!(seen.insert(unique_digits(7, i)));
        }
    }

    #[test]
    fn identity_cases_share_a_phone_with_a_person_only_that_provider_holds() {
        let profile = Provider::all().find(|p| p.listable).unwrap();
        let cases = identity_cases(3, 200, profile);
        assert_eq!(cases.lids.len(), 8);
        assert_eq!(cases.shared_phones.len(), 8);
        assert_eq!(cases, identity_cases(3, 200, profile), "deterministic");
        let held: Vec<Person> = people_for(3, 200, profile).collect();
        for member in &cases.shared_phones {
            let theirs = held.iter().find(|p| p.index == member.index).unwrap();
            assert_eq!(member.phone, theirs.phone);
            assert_eq!(member.phone_e164, theirs.phone_e164);
            assert_ne!(member.first_name, theirs.first_name);
            assert_eq!(placement(3, member.index).count(), 1);
            // Their own email, nobody else's.
            let email = member.email_key().unwrap();
            assert!(people(3, 200).all(|p| p.email_key().as_deref() != Some(&email)));
        }
        // A privacy id's digits are never a seeded phone.
        for lid in &cases.lids {
            assert_eq!(lid.lid.to_string().len(), 15);
            assert!(lid.id().ends_with("@lid"));
            let as_phone = format!("+{}", lid.lid);
            assert!(people(3, 200).all(|p| p.phone_e164.as_deref() != Some(&as_phone)));
        }
        assert_eq!(identity_cases(3, 0, profile), IdentityCases::default());
    }

    #[test]
    fn full_name_follows_the_script() {
        let mut p = person(1, 0);
        p.first_name = "志明".into();
        p.last_name = "王".into();
        assert_eq!(p.full_name(), "王志明");
        p.first_name = "José".into();
        p.last_name = "García".into();
        assert_eq!(p.full_name(), "José García");
    }
}
