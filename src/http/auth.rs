//! Basic auth of the web config (`basic_auth_users`), checked on the connection's own
//! thread.
//!
//! One bcrypt check at cost 10 takes tens of milliseconds, at cost 12 a quarter of a
//! second: paid on every scrape it would be Prometheus' whole budget, and paid for every
//! guess it lets a brute force take every core. So, as exporter-toolkit does, verdicts
//! are cached both ways, keyed by SHA-256 of user, hash and password (never the password
//! itself), and the cache is consulted before anything waits: a scrape with a known
//! password never queues behind a bcrypt. Guesses that no cache helps (a brute force that
//! never repeats) share [`BCRYPT_PERMITS`] checks at a time; one that cannot get a turn
//! within [`PERMIT_WAIT`] is answered 429 and costs nothing. Unknown users cost one
//! bcrypt check against a decoy hash too, so timing does not tell which users exist.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

/// bcrypt checks running at once, at most (the machine keeps the rest of its cores).
pub const BCRYPT_PERMITS: usize = 1;
/// How long a guess waits for a bcrypt turn before it gets 429.
pub const PERMIT_WAIT: Duration = Duration::from_millis(500);
/// Right answers remembered; the wrong ones have their own cache, so a flood of wrong
/// guesses cannot push a right password out. A full cache starts over (bcrypt ignores
/// bytes past 72, so one password has unboundedly many spellings).
const VERIFIED_ENTRIES: usize = 1024;
const REFUSED_ENTRIES: usize = 4096;

/// The outcome of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No or wrong credentials: 401.
    Denied,
    /// A guess that found no bcrypt turn in time: 429.
    Busy,
}

/// `basic_auth_users`, their cache and the bcrypt turns.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// Checked for unknown users, so they cost what known ones cost.
    decoy: String,
    verified: Mutex<HashSet<[u8; 32]>>,
    refused: Mutex<HashSet<[u8; 32]>>,
    free_permits: Mutex<usize>,
    permit_freed: Condvar,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    /// `None` when there are no users (everyone may read).
    pub fn new(users: BTreeMap<String, String>) -> Option<BasicAuth> {
        let decoy = users.values().next()?.clone();
        Some(BasicAuth {
            users,
            decoy,
            verified: Mutex::default(),
            refused: Mutex::default(),
            free_permits: Mutex::new(BCRYPT_PERMITS),
            permit_freed: Condvar::new(),
        })
    }

    /// Checks an `Authorization` header value. `waiting` is called once if the check
    /// has to wait for a bcrypt turn; `abandoned` says to stop waiting (the connection
    /// was evicted).
    pub fn check(
        &self,
        authorization: Option<&str>,
        waiting: impl FnOnce(),
        abandoned: impl Fn() -> bool,
    ) -> Verdict {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return Verdict::Denied;
        };
        let hash = self.users.get(&user);
        let key = cache_key(&user, hash.map_or("", String::as_str), &password);
        if lock(&self.verified).contains(&key) {
            return Verdict::Allowed;
        }
        if lock(&self.refused).contains(&key) {
            return Verdict::Denied;
        }
        waiting();
        let Some(_turn) = self.turn(&abandoned) else {
            return Verdict::Busy;
        };
        let ok = match hash {
            Some(hash) => bcrypt::verify(&password, hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(&password, &self.decoy);
                false
            }
        };
        let (cache, limit) = if ok {
            (&self.verified, VERIFIED_ENTRIES)
        } else {
            (&self.refused, REFUSED_ENTRIES)
        };
        let mut cache = lock(cache);
        if cache.len() >= limit {
            cache.clear();
        }
        cache.insert(key);
        if ok {
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }

    /// A bcrypt turn, within [`PERMIT_WAIT`].
    fn turn(&self, abandoned: &dyn Fn() -> bool) -> Option<Turn<'_>> {
        let deadline = Instant::now() + PERMIT_WAIT;
        let mut free = lock(&self.free_permits);
        while *free == 0 {
            let left = deadline.checked_duration_since(Instant::now())?;
            if abandoned() {
                return None;
            }
            // Short waits, so an evicted connection's thread ends soon.
            free = self
                .permit_freed
                .wait_timeout(free, left.min(Duration::from_millis(10)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *free -= 1;
        Some(Turn(self))
    }
}

/// A bcrypt turn, given back when dropped.
struct Turn<'a>(&'a BasicAuth);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free_permits) += 1;
        self.0.permit_freed.notify_one();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn cache_key(user: &str, hash: &str, password: &str) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, hash, password] {
        context.update(&(part.len() as u64).to_le_bytes());
        context.update(part.as_bytes());
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(context.finish().as_ref());
    key
}

/// User and password of a `Basic` authorization.
fn credentials(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user_password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        )
    }

    #[test]
    fn credentials_are_decoded() {
        assert_eq!(
            credentials("Basic dXNlcjpwYXNz"),
            Some(("user".into(), "pass".into()))
        );
        assert_eq!(credentials("basic YTo="), Some(("a".into(), "".into())));
        assert_eq!(credentials("Basic not base64!"), None);
        assert_eq!(credentials("Bearer dXNlcjpwYXNz"), None);
    }

    #[test]
    fn cache_keys_separate_their_parts() {
        assert_ne!(cache_key("ab", "h", "c"), cache_key("a", "h", "bc"));
        assert_eq!(cache_key("a", "h", "b"), cache_key("a", "h", "b"));
    }

    #[test]
    fn verdicts_are_cached_both_ways_and_busy_guesses_give_up() {
        let hash = bcrypt::hash("right", 4).unwrap();
        let auth = BasicAuth::new([("alice".to_owned(), hash)].into()).unwrap();
        let waited = std::cell::Cell::new(0);
        let check = |h: &str| auth.check(Some(h), || waited.set(waited.get() + 1), || false);
        assert_eq!(check(&header("alice:right")), Verdict::Allowed);
        assert_eq!(check(&header("alice:wrong")), Verdict::Denied);
        assert_eq!(check(&header("bob:right")), Verdict::Denied);
        assert_eq!(waited.get(), 3);
        // Cached: no bcrypt turn needed, even when none is free.
        let _all = auth.turn(&|| false).unwrap();
        assert_eq!(check(&header("alice:right")), Verdict::Allowed);
        assert_eq!(check(&header("alice:wrong")), Verdict::Denied);
        assert_eq!(check(&header("bob:right")), Verdict::Denied);
        assert_eq!(waited.get(), 3);
        assert_eq!(check(&header("alice:new guess")), Verdict::Busy);
        assert_eq!(
            auth.check(Some(&header("alice:x")), || {}, || true),
            Verdict::Busy
        );
        assert_eq!(auth.check(None, || {}, || false), Verdict::Denied);
    }
}
