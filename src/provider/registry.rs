//! The provider registry: the [`Adapter`] trait every platform implements, and the
//! [`registry!`] macro that turns the list of adapters (one line each, in
//! `provider/mod.rs`) into the closed [`ProviderKind`](super::ProviderKind) and
//! [`AnyProvider`](super::AnyProvider) enums, [`build`](super::build) and the delegation of
//! [`Provider`] to whichever adapter an `AnyProvider` holds.
//!
//! The enums stay closed and dispatch stays static (one `match` per operation, generated
//! here): adding a platform is its adapter file plus one registry line, and the compiler
//! checks the rest.

use super::settings::{KindProblem, KindSettings, ProviderSettings};
use super::{Provider, ProviderError};

/// Where a kind's `base_url` comes from when the config gives none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseUrl {
    /// The platform's public API address.
    Default(&'static str),
    /// Required: the platform is self-hosted or per-customer. `example` goes in the message.
    Required {
        /// An address to show in the error, e.g. `https://app.chatwoot.com`.
        example: &'static str,
    },
}

impl BaseUrl {
    /// The default address, if there is one.
    pub const fn default_url(self) -> Option<&'static str> {
        match self {
            BaseUrl::Default(url) => Some(url),
            BaseUrl::Required { .. } => None,
        }
    }
}

/// One platform's adapter: how it is named and configured, and how its client is built.
/// The [`Provider`] operations are the other half.
///
/// Config validation asks the adapter (through [`ProviderKind`](super::ProviderKind)) for
/// everything kind-specific; nothing outside the adapter file and its registry line names
/// the kind.
pub trait Adapter: Provider + Sized {
    /// The config spelling (`kind = "..."`), also shown in logs and status.
    const KIND: &'static str;
    /// The `base_url` used when the config gives none, or that it is required.
    const BASE_URL: BaseUrl;
    /// The keys of a `[[providers]]` table that only this kind takes (beside the common
    /// ones: name, kind, base_url, api_key_*, schedule, push, …).
    const KIND_KEYS: &'static [&'static str] = &[];

    /// Checks the kind-specific keys of one instance (`table` holds only keys from
    /// [`Adapter::KIND_KEYS`]; `push` is the instance's `push`) and returns them normalised:
    /// what [`Adapter::new`] reads and `check-config` shows. Every problem is returned.
    /// By default there is nothing to check and the table is kept as written.
    fn validate_kind_settings(
        table: &KindSettings,
        push: bool,
    ) -> Result<KindSettings, Vec<KindProblem>> {
        let _ = push;
        Ok(table.clone())
    }

    /// The client of one configured instance. Fails (before any request) when the
    /// settings cannot make a client: no TLS roots, a key that cannot travel in a header,
    /// kind-specific settings this adapter refuses.
    #[allow(clippy::result_large_err)] // `ProviderError` carries context for the human.
    fn new(settings: &ProviderSettings) -> Result<Self, ProviderError>;
}

/// Generates, from one line per adapter (`Variant => module::Adapter`, with the doc of
/// the variant above it): the `pub mod` of each adapter file, [`ProviderKind`]
/// (`ALL`, `as_str`, `parse`, `base_url`, `default_base_url`, `kind_keys`,
/// `validate_kind_settings`), [`AnyProvider`], [`build`] and `impl Provider for
/// AnyProvider`.
///
/// [`ProviderKind`]: super::ProviderKind
/// [`AnyProvider`]: super::AnyProvider
/// [`build`]: super::build
macro_rules! registry {
    ($( $(#[$doc:meta])* $variant:ident => $module:ident :: $adapter:ident ),+ $(,)?) => {
        $( pub mod $module; )+

        /// How many kinds the registry holds.
        const KIND_COUNT: usize = [$(stringify!($variant)),+].len();

        /// The platforms, one per registered adapter. A closed set: one is added with its
        /// adapter file and one line in the registry (`provider/mod.rs`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ProviderKind {
            $( $(#[$doc])* $variant, )+
        }

        impl ProviderKind {
            /// Every kind, in registry order.
            pub const ALL: [ProviderKind; KIND_COUNT] = [$(ProviderKind::$variant),+];

            /// The config spelling (`kind = "..."`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $( ProviderKind::$variant => <$module::$adapter as Adapter>::KIND, )+
                }
            }

            /// Parses the config spelling.
            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.into_iter().find(|k| k.as_str() == s)
            }

            /// Where the kind's `base_url` comes from when the config gives none.
            pub fn base_url(self) -> BaseUrl {
                match self {
                    $( ProviderKind::$variant => <$module::$adapter as Adapter>::BASE_URL, )+
                }
            }

            /// The default `base_url`, if the kind has one.
            pub fn default_base_url(self) -> Option<&'static str> {
                self.base_url().default_url()
            }

            /// The keys of a provider table that only this kind takes.
            pub fn kind_keys(self) -> &'static [&'static str] {
                match self {
                    $( ProviderKind::$variant => <$module::$adapter as Adapter>::KIND_KEYS, )+
                }
            }

            /// The adapter's check of this kind's keys (see
            /// [`Adapter::validate_kind_settings`]).
            pub fn validate_kind_settings(
                self,
                table: &KindSettings,
                push: bool,
            ) -> Result<KindSettings, Vec<KindProblem>> {
                match self {
                    $( ProviderKind::$variant => {
                        <$module::$adapter as Adapter>::validate_kind_settings(table, push)
                    } )+
                }
            }
        }

        /// Any of the registered adapters, chosen at start-up by [`build`]. Implements
        /// [`Provider`] by delegation (static dispatch, no boxing).
        #[derive(Debug)]
        pub enum AnyProvider {
            $( $(#[$doc])* $variant($module::$adapter), )+
        }

        /// Builds the client of one configured provider instance: the one `match` over
        /// [`ProviderKind`]. Fails (before any request) when the settings cannot make a
        /// client (see [`Adapter::new`]).
        #[allow(clippy::result_large_err)] // `ProviderError` carries context for the human.
        pub fn build(settings: &ProviderSettings) -> Result<AnyProvider, ProviderError> {
            Ok(match settings.kind {
                $( ProviderKind::$variant => {
                    AnyProvider::$variant(<$module::$adapter as Adapter>::new(settings)?)
                } )+
            })
        }

        impl Provider for AnyProvider {
            fn name(&self) -> &str {
                match self { $( AnyProvider::$variant(p) => p.name(), )+ }
            }

            fn kind(&self) -> ProviderKind {
                match self { $( AnyProvider::$variant(p) => p.kind(), )+ }
            }

            fn capabilities(&self) -> &Capabilities {
                match self { $( AnyProvider::$variant(p) => p.capabilities(), )+ }
            }

            async fn list_page(&self, cursor: Option<&str>) -> Res<Page> {
                match self { $( AnyProvider::$variant(p) => p.list_page(cursor).await, )+ }
            }

            fn page_cursor(&self, number: u64) -> Option<String> {
                match self { $( AnyProvider::$variant(p) => p.page_cursor(number), )+ }
            }

            async fn list_tag_names(&self) -> Res<Vec<String>> {
                match self { $( AnyProvider::$variant(p) => p.list_tag_names().await, )+ }
            }

            async fn list_tag_page(&self, tag: &str, cursor: Option<&str>) -> Res<TagPage> {
                match self {
                    $( AnyProvider::$variant(p) => p.list_tag_page(tag, cursor).await, )+
                }
            }

            fn tag_page_cursor(&self, tag: &str, number: u64) -> Option<String> {
                match self { $( AnyProvider::$variant(p) => p.tag_page_cursor(tag, number), )+ }
            }

            async fn lookup(&self, key: LookupKey<'_>) -> Res<Option<RemoteRecord>> {
                match self { $( AnyProvider::$variant(p) => p.lookup(key).await, )+ }
            }

            async fn create(&self, fields: &Fields, tags: &Tags) -> Res<Created> {
                match self { $( AnyProvider::$variant(p) => p.create(fields, tags).await, )+ }
            }

            async fn update(&self, target: Target<'_>, changes: &Fields) -> Res<()> {
                match self { $( AnyProvider::$variant(p) => p.update(target, changes).await, )+ }
            }

            async fn read_record(&self, remote_id: &str) -> Res<Option<RemoteRecord>> {
                match self { $( AnyProvider::$variant(p) => p.read_record(remote_id).await, )+ }
            }

            async fn read_tags(&self, remote_id: &str) -> Res<Tags> {
                match self { $( AnyProvider::$variant(p) => p.read_tags(remote_id).await, )+ }
            }

            async fn add_tags(&self, target: Target<'_>, add: &[String]) -> Res<()> {
                match self { $( AnyProvider::$variant(p) => p.add_tags(target, add).await, )+ }
            }

            async fn remove_tags(&self, target: Target<'_>, remove: &[String]) -> Res<()> {
                match self {
                    $( AnyProvider::$variant(p) => p.remove_tags(target, remove).await, )+
                }
            }

            async fn delete(&self, remote_id: &str) -> Res<()> {
                match self { $( AnyProvider::$variant(p) => p.delete(remote_id).await, )+ }
            }

            fn can_find_created(&self) -> bool {
                match self {
                    $(AnyProvider::$variant(p) => p.can_find_created(),)+
                }
            }

            async fn find_created(&self, sent: &Fields) -> Res<Option<RemoteRecord>> {
                match self { $( AnyProvider::$variant(p) => p.find_created(sent).await, )+ }
            }

            fn can_merge(&self) -> bool {
                match self {
                    $(AnyProvider::$variant(p) => p.can_merge(),)+
                }
            }

            async fn merge(&self, base: &str, mergee: &str) -> Res<()> {
                match self { $( AnyProvider::$variant(p) => p.merge(base, mergee).await, )+ }
            }

            fn health(&self) -> Option<&$crate::provider::http::Health> {
                match self {
                    $(AnyProvider::$variant(p) => p.health(),)+
                }
            }
        }
    };
}

pub(crate) use registry;

#[cfg(test)]
mod tests {
    use super::super::{KindSettings, ProviderKind};
    use super::BaseUrl;

    #[test]
    fn every_kind_parses_its_own_spelling() {
        for kind in ProviderKind::ALL {
            assert_eq!(ProviderKind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.to_string(), kind.as_str());
            assert!(ProviderKind::names().contains(kind.as_str()));
        }
        assert_eq!(ProviderKind::parse("no-such-kind"), None);
    }

    #[test]
    fn kind_rules_come_from_the_adapter() {
        for kind in ProviderKind::ALL {
            assert_eq!(
                kind.default_base_url().is_some(),
                matches!(kind.base_url(), BaseUrl::Default(_)),
                "{kind}"
            );
            // An empty table is accepted, or refused with problems on the kind's own keys.
            if let Err(problems) = kind.validate_kind_settings(&KindSettings::new(), true) {
                assert!(!problems.is_empty(), "{kind}");
                for p in problems {
                    assert!(kind.kind_keys().contains(&p.key), "{kind}: {p:?}");
                }
            }
        }
    }
}
