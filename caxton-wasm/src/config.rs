//! Configuration values agents read through `caxton.config`, changeable while they run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

/// A set of configuration values shared by the host and every instance that reads it.
///
/// Reads are lock-free snapshots; a change made with [`set`](ConfigSource::set),
/// [`remove`](ConfigSource::remove) or [`replace`](ConfigSource::replace) is seen by the
/// next `caxton.config` call of every instance, without reloading or restarting anything.
///
/// ```
/// use caxton_wasm::ConfigSource;
///
/// let config = ConfigSource::from_iter([("model", "anthropic/claude-sonnet@2026-01-01")]);
/// config.set("temperature", "0.2");
/// assert_eq!(config.get("temperature").as_deref(), Some("0.2"));
/// assert_eq!(config.remove("model").as_deref(), Some("anthropic/claude-sonnet@2026-01-01"));
/// assert_eq!(config.len(), 1);
/// ```
#[derive(Default)]
pub struct ConfigSource {
    values: ArcSwap<BTreeMap<String, String>>,
}

impl fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be secrets: show only the keys.
        let values = self.values.load();
        f.debug_struct("ConfigSource")
            .field("keys", &values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ConfigSource {
    /// An empty source.
    pub fn new() -> Self {
        ConfigSource::default()
    }

    /// A source holding `values`.
    pub fn from_map(values: BTreeMap<String, String>) -> Self {
        ConfigSource {
            values: ArcSwap::from_pointee(values),
        }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<String> {
        self.values.load().get(key).cloned()
    }

    /// Sets `key` to `value`; returns the previous value.
    pub fn set(&self, key: impl Into<String>, value: impl Into<String>) -> Option<String> {
        let (key, value) = (key.into(), value.into());
        let mut previous = None;
        self.values.rcu(|current| {
            let mut next = BTreeMap::clone(current);
            previous = next.insert(key.clone(), value.clone());
            next
        });
        previous
    }

    /// Removes `key`; returns the value it had.
    pub fn remove(&self, key: &str) -> Option<String> {
        let mut previous = None;
        self.values.rcu(|current| {
            let mut next = BTreeMap::clone(current);
            previous = next.remove(key);
            next
        });
        previous
    }

    /// Replaces every value at once.
    pub fn replace(&self, values: BTreeMap<String, String>) {
        self.values.store(Arc::new(values));
    }

    /// A consistent snapshot of every value.
    pub fn snapshot(&self) -> Arc<BTreeMap<String, String>> {
        self.values.load_full()
    }

    /// How many keys are set.
    pub fn len(&self) -> usize {
        self.values.load().len()
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.values.load().is_empty()
    }

    /// Runs `read` on the value of `key` without copying it.
    pub(crate) fn with_value<R>(&self, key: &str, read: impl FnOnce(Option<&str>) -> R) -> R {
        let values = self.values.load();
        read(values.get(key).map(String::as_str))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for ConfigSource {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        ConfigSource::from_map(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// The configuration one instance reads: its own source first, then the keys of an
/// optional shared one (host-wide settings and secrets) that it was granted.
///
/// ```
/// use std::sync::Arc;
/// use caxton_wasm::{ConfigLayers, ConfigSource};
///
/// let own = Arc::new(ConfigSource::from_iter([("model", "m")]));
/// let secrets = Arc::new(ConfigSource::from_iter([("api-key", "k"), ("db-password", "p")]));
/// let layers = ConfigLayers::new(own).with_shared(secrets, ["api-key"]);
/// assert!(layers.is_granted("api-key") && !layers.is_granted("db-password"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConfigLayers {
    /// Values of this deployment: its version's layers and its own settings.
    pub own: Arc<ConfigSource>,
    /// Host-wide values, read after `own` and only for the keys in `granted`.
    pub shared: Option<Arc<ConfigSource>>,
    /// The keys of `shared` this deployment may read; every other key of it reads as
    /// absent, so one agent never sees another's secrets.
    pub granted: Arc<BTreeSet<String>>,
}

impl ConfigLayers {
    /// Layers with only `own`.
    pub fn new(own: Arc<ConfigSource>) -> Self {
        ConfigLayers {
            own,
            shared: None,
            granted: Arc::default(),
        }
    }

    /// Adds a shared source consulted after `own`, of which only the `granted` keys may
    /// be read.
    pub fn with_shared<K: Into<String>>(
        mut self,
        shared: Arc<ConfigSource>,
        granted: impl IntoIterator<Item = K>,
    ) -> Self {
        self.shared = Some(shared);
        self.granted = Arc::new(granted.into_iter().map(Into::into).collect());
        self
    }

    /// Whether `key` of the shared source may be read.
    pub fn is_granted(&self, key: &str) -> bool {
        self.granted.contains(key)
    }

    /// Runs `read` on the value of `key`, looked up in `own`, then in `shared` when the
    /// key is granted.
    pub(crate) fn with_value<R>(&self, key: &str, read: impl FnOnce(Option<&str>) -> R) -> R {
        let own = self.own.values.load();
        if let Some(value) = own.get(key) {
            return read(Some(value));
        }
        match &self.shared {
            Some(shared) if self.is_granted(key) => shared.with_value(key, read),
            _ => read(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_values_shadow_shared_ones() {
        let own = Arc::new(ConfigSource::from_iter([("model", "own")]));
        let shared = Arc::new(ConfigSource::from_iter([
            ("model", "shared"),
            ("secret", "s"),
        ]));
        let layers = ConfigLayers::new(own.clone()).with_shared(shared, ["model", "secret"]);
        assert_eq!(
            layers.with_value("model", |v| v.map(str::to_owned)),
            Some("own".into())
        );
        assert_eq!(
            layers.with_value("secret", |v| v.map(str::to_owned)),
            Some("s".into())
        );
        assert!(layers.with_value("absent", |v| v.is_none()));
        own.remove("model");
        assert_eq!(
            layers.with_value("model", |v| v.map(str::to_owned)),
            Some("shared".into())
        );
    }

    #[test]
    fn shared_keys_not_granted_read_as_absent() {
        let own = Arc::new(ConfigSource::from_iter([("temperature", "0.2")]));
        let shared = Arc::new(ConfigSource::from_iter([
            ("api-key", "k"),
            ("db-password", "p"),
        ]));
        let read =
            |layers: &ConfigLayers, key: &str| layers.with_value(key, |v| v.map(str::to_owned));
        let granted = ConfigLayers::new(own.clone()).with_shared(shared.clone(), ["api-key"]);
        assert_eq!(read(&granted, "api-key").as_deref(), Some("k"));
        assert_eq!(read(&granted, "db-password"), None);
        assert_eq!(read(&granted, "temperature").as_deref(), Some("0.2"));
        let none = ConfigLayers::new(own).with_shared(shared.clone(), None::<String>);
        assert_eq!(read(&none, "api-key"), None);
        // A grant of a key the shared source lacks yet sees it once it is set.
        shared.set("db-password", "rotated");
        shared.set("later", "v");
        let later = ConfigLayers::new(Arc::default()).with_shared(shared, ["later"]);
        assert_eq!(read(&later, "later").as_deref(), Some("v"));
    }

    #[test]
    fn debug_does_not_show_values() {
        let source = ConfigSource::from_iter([("api_key", "hunter2")]);
        let text = format!("{source:?}");
        assert!(
            text.contains("api_key") && !text.contains("hunter2"),
            "{text}"
        );
    }

    #[test]
    fn set_returns_the_previous_value_and_replace_swaps_everything() {
        let source = ConfigSource::new();
        assert!(source.is_empty());
        assert_eq!(source.set("a", "1"), None);
        assert_eq!(source.set("a", "2"), Some("1".into()));
        source.replace(BTreeMap::from([("b".to_owned(), "3".to_owned())]));
        assert_eq!(source.get("a"), None);
        assert_eq!(source.snapshot().get("b").map(String::as_str), Some("3"));
    }
}
