//! Resolved tags in memory (`lru`): which image a name and tag stand for
//! now. Moving tags expire after a TTL; 40-hex revision tags never do.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

/// (name, tag) → (value, when it expires; never for revisions).
type Entries<V> = LruCache<(String, String), (V, Option<Instant>)>;

pub struct TagCache<V> {
    entries: Mutex<Entries<V>>,
    ttl: Duration,
}

impl<V: Clone> TagCache<V> {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let capacity = std::num::NonZeroUsize::new(capacity.max(1)).expect("capacity is at least 1");
        TagCache { entries: Mutex::new(LruCache::new(capacity)), ttl }
    }

    pub fn get(&self, name: &str, tag: &str) -> Option<V> {
        let mut entries = self.entries.lock().unwrap();
        let key = (name.to_string(), tag.to_string());
        match entries.get(&key) {
            Some((value, expires)) if expires.is_none_or(|t| Instant::now() < t) => Some(value.clone()),
            Some(_) => {
                entries.pop(&key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, name: &str, tag: &str, value: V, permanent: bool) {
        let expires = (!permanent).then(|| Instant::now() + self.ttl);
        self.entries.lock().unwrap().put((name.to_string(), tag.to_string()), (value, expires));
    }

    /// Every name and tag held, with its value (expired ones included), most recently used first.
    pub fn entries(&self) -> Vec<(String, String, V)> {
        let entries = self.entries.lock().unwrap();
        entries.iter().map(|((name, tag), (value, _))| (name.clone(), tag.clone(), value.clone())).collect()
    }

    /// Drops what `name:tag` was resolved to, so that it is resolved again.
    pub fn forget(&self, name: &str, tag: &str) {
        self.entries.lock().unwrap().pop(&(name.to_string(), tag.to_string()));
    }

    /// The tags of `name` resolved so far (expired ones included: they existed).
    pub fn tags_of(&self, name: &str) -> Vec<String> {
        let entries = self.entries.lock().unwrap();
        entries.iter().filter(|((n, _), _)| n == name).map(|((_, tag), _)| tag.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_moving_tags_only() {
        let cache = TagCache::new(8, Duration::from_millis(30));
        cache.insert("a", "latest", 1, false);
        cache.insert("a", "0123456789012345678901234567890123456789", 2, true);
        assert_eq!(cache.get("a", "latest"), Some(1));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(cache.get("a", "latest"), None);
        assert_eq!(cache.get("a", "0123456789012345678901234567890123456789"), Some(2));
        assert_eq!(cache.tags_of("a").len(), 1);
    }

    #[test]
    fn bounded() {
        let cache = TagCache::new(2, Duration::from_secs(60));
        for (i, tag) in ["a", "b", "c"].into_iter().enumerate() {
            cache.insert("n", tag, i, false);
        }
        assert_eq!(cache.get("n", "a"), None);
        assert_eq!(cache.get("n", "c"), Some(2));
    }
}
