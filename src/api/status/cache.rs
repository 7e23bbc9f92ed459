//! Rendered answers kept for `status_page.refresh`: however many people
//! open the page, Postgres is read at most once per refresh per answer.
//!
//! Stale-while-revalidate (RFC 5861's idea, on the server): a stale answer
//! is served at once while one task renders the next, so a reader waits for
//! Postgres only when there is no answer at all, or when the one kept is so
//! old (three refreshes) that serving it would mislead. Concurrent misses of
//! one key wait for one render instead of each starting their own. Keys are
//! the listed sites' pages and badges, so the map is bounded by the config.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

/// How many refreshes old an answer may be and still be served while the
/// next renders (90 s at the default 30 s).
const STALE_FOR: u32 = 3;

pub struct Cache<V> {
    ttl: Mutex<Duration>,
    entries: Mutex<HashMap<String, Arc<Entry<V>>>>,
}

struct Entry<V> {
    value: RwLock<Option<(Instant, Arc<V>)>>,
    /// A background render is under way (one at a time per key).
    refreshing: AtomicBool,
    /// Held by the render of a miss, so others wait for it.
    first: tokio::sync::Mutex<()>,
}

impl<V> Default for Entry<V> {
    fn default() -> Self {
        Entry {
            value: RwLock::new(None),
            refreshing: AtomicBool::new(false),
            first: tokio::sync::Mutex::new(()),
        }
    }
}

impl<V: Send + Sync + 'static> Cache<V> {
    pub fn new(ttl: Duration) -> Self {
        Cache {
            ttl: Mutex::new(ttl),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets every answer and keeps new ones for `ttl`: the page's
    /// settings changed (a reload), so no answer made under the old ones
    /// may be served. A render under way keeps its detached entry.
    pub fn reset(&self, ttl: Duration) {
        *self.ttl.lock().expect("cache lock") = ttl;
        self.entries.lock().expect("cache lock").clear();
    }

    /// Keeps `v` under `key`, made now by someone else (a page that read
    /// what this key holds as part of its own render).
    pub fn put(&self, key: &str, v: V) -> Arc<V> {
        let entry = {
            let mut map = self.entries.lock().expect("cache lock");
            map.entry(key.to_owned()).or_default().clone()
        };
        store(&entry, v)
    }

    /// The answer under `key`, rendered by `make` when missing or stale.
    pub async fn get<F, Fut, E>(&self, key: &str, make: F) -> Result<Arc<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let ttl = *self.ttl.lock().expect("cache lock");
        let entry = {
            let mut map = self.entries.lock().expect("cache lock");
            map.entry(key.to_owned()).or_default().clone()
        };
        let kept = entry.value.read().expect("cache lock").clone();
        if let Some((at, v)) = kept {
            let age = at.elapsed();
            if age < ttl {
                return Ok(v);
            }
            if age < ttl * STALE_FOR {
                if !entry.refreshing.swap(true, Ordering::AcqRel) {
                    let (e, fut, key) = (entry.clone(), make(), key.to_owned());
                    tokio::spawn(async move {
                        match fut.await {
                            Ok(v) => drop(store(&e, v)),
                            Err(err) => tracing::warn!(key, error = %err,
                                "status page not refreshed; the previous answer stays"),
                        }
                        e.refreshing.store(false, Ordering::Release);
                    });
                }
                return Ok(v);
            }
        }
        let _one = entry.first.lock().await;
        let kept = entry.value.read().expect("cache lock").clone();
        if let Some((at, v)) = kept {
            if at.elapsed() < ttl {
                return Ok(v);
            }
        }
        let v = make().await?;
        Ok(store(&entry, v))
    }
}

fn store<V>(e: &Entry<V>, v: V) -> Arc<V> {
    let v = Arc::new(v);
    *e.value.write().expect("cache lock") = Some((Instant::now(), v.clone()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[tokio::test(start_paused = true)]
    async fn fresh_answers_are_kept_and_stale_ones_served_while_the_next_renders() {
        let cache = Cache::<u32>::new(Duration::from_secs(30));
        let renders = Arc::new(AtomicU32::new(0));
        let make = |r: Arc<AtomicU32>| {
            move || async move { Ok::<_, String>(r.fetch_add(1, Ordering::SeqCst) + 1) }
        };
        assert_eq!(*cache.get("k", make(renders.clone())).await.unwrap(), 1);
        assert_eq!(*cache.get("k", make(renders.clone())).await.unwrap(), 1);
        assert_eq!(
            renders.load(Ordering::SeqCst),
            1,
            "fresh: not rendered again"
        );

        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(
            *cache.get("k", make(renders.clone())).await.unwrap(),
            1,
            "stale, served"
        );
        // The background render lands.
        while renders.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        assert_eq!(*cache.get("k", make(renders.clone())).await.unwrap(), 2);

        tokio::time::advance(Duration::from_secs(30 * 4)).await;
        assert_eq!(
            *cache.get("k", make(renders.clone())).await.unwrap(),
            3,
            "too old to serve: rendered while the reader waits"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_render_is_an_error_and_nothing_is_kept() {
        let cache = Cache::<u32>::new(Duration::from_secs(30));
        let r = cache
            .get("k", || async { Err::<u32, _>("down".to_owned()) })
            .await;
        assert_eq!(r.unwrap_err(), "down");
        assert_eq!(
            *cache
                .get("k", || async { Ok::<_, String>(7) })
                .await
                .unwrap(),
            7
        );
    }
}
