//! Console sessions and the sign-in rate limit.
//!
//! A session is a random 32-byte id handed to the browser as an HttpOnly,
//! SameSite=Strict cookie; the server keeps only its SHA-256, with the
//! credential the session stands for (re-checked on every request, so a
//! revoked token or a deleted principal ends the session at once), the
//! session's CSRF token and when it was last used. Sessions idle longer
//! than the configured time are gone; the table is bounded (the least
//! recently used session makes room for a new one).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// Most sessions held at once.
const MAX_SESSIONS: usize = 4096;
/// Sign-in attempts one address may make per window.
pub(super) const ATTEMPTS_PER_ADDRESS: u32 = 10;
/// Sign-in attempts all addresses together may make per window.
const ATTEMPTS_IN_ALL: u32 = 300;
/// The rate limit's window.
const WINDOW: Duration = Duration::from_secs(60);
/// Most addresses the limiter tracks in one window.
const MAX_ADDRESSES: usize = 4096;

/// What a session signed in with.
pub(super) enum Credential {
    /// `--dev`: the development principal.
    Dev,
    /// A bearer token (configured, runtime `kwt_`, or a JWT), re-checked on each request.
    Token(Zeroizing<String>),
    /// A client certificate (its SHA-256): each request must come with it.
    Certificate([u8; 32]),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dev => f.write_str("Dev"),
            Self::Token(_) => f.write_str("Token(REDACTED)"),
            Self::Certificate(h) => write!(f, "Certificate({})", hex::encode(&h[..8])),
        }
    }
}

/// One signed-in browser.
#[derive(Debug)]
pub(super) struct Session {
    /// The principal it signed in as.
    pub principal: String,
    /// How, to check again.
    pub credential: Credential,
    /// The token every state-changing form carries.
    pub csrf: String,
    last_seen: Instant,
}

/// A session as a request sees it.
#[derive(Debug, Clone)]
pub(super) struct SessionView {
    /// Its id's hash (to end it).
    pub id: [u8; 32],
    /// The principal.
    pub principal: String,
    /// Its CSRF token.
    pub csrf: String,
    /// The credential, to check again.
    pub credential: SessionCredential,
}

/// What a request's session signed in with, to check again.
#[derive(Debug, Clone)]
pub(super) enum SessionCredential {
    /// The development principal.
    Dev,
    /// This bearer token.
    Token(Zeroizing<String>),
    /// The client certificate with this SHA-256.
    Certificate([u8; 32]),
}

/// Every session.
#[derive(Debug)]
pub(super) struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
    idle: Duration,
}

/// SHA-256.
pub(super) fn sha256(b: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, b);
    d.as_ref().try_into().expect("32 bytes")
}

fn hash(cookie: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, cookie.as_bytes());
    d.as_ref().try_into().expect("32 bytes")
}

pub(super) fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).expect("system randomness");
    hex::encode(b)
}

impl Sessions {
    pub(super) fn new(idle: Duration) -> Self {
        Self { map: Mutex::default(), idle }
    }

    /// Starts a session; returns the cookie value (only the browser keeps it).
    pub(super) fn start(&self, principal: String, credential: Credential) -> Zeroizing<String> {
        let cookie = Zeroizing::new(random_hex(32));
        let now = Instant::now();
        let mut map = self.map.lock().expect("session lock");
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| now.duration_since(s.last_seen) < self.idle);
        }
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(hash(&cookie), Session { principal, credential, csrf: random_hex(32), last_seen: now });
        cookie
    }

    /// The live session of a cookie, touched; an idle one is ended.
    pub(super) fn get(&self, cookie: &str) -> Option<SessionView> {
        let id = hash(cookie);
        let now = Instant::now();
        let mut map = self.map.lock().expect("session lock");
        let s = map.get_mut(&id)?;
        if now.duration_since(s.last_seen) >= self.idle {
            map.remove(&id);
            return None;
        }
        s.last_seen = now;
        Some(SessionView {
            id,
            principal: s.principal.clone(),
            csrf: s.csrf.clone(),
            credential: match &s.credential {
                Credential::Dev => SessionCredential::Dev,
                Credential::Token(t) => SessionCredential::Token(t.clone()),
                Credential::Certificate(h) => SessionCredential::Certificate(*h),
            },
        })
    }

    /// Ends a session (sign-out, or its credential no longer holds).
    pub(super) fn end(&self, id: &[u8; 32]) {
        self.map.lock().expect("session lock").remove(id);
    }

    /// How many sessions are held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map.lock().expect("session lock").len()
    }
}

/// Sign-in attempts per address and in all, per window.
#[derive(Debug, Default)]
pub(super) struct SignInLimiter {
    state: Mutex<(Option<Instant>, u32, HashMap<IpAddr, u32>)>,
}

impl SignInLimiter {
    /// Counts an attempt from `ip`; false if it is over the limit.
    pub(super) fn allow(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut guard = self.state.lock().expect("limiter lock");
        let (start, total, per) = &mut *guard;
        if start.is_none_or(|s| now.duration_since(s) >= WINDOW) {
            *start = Some(now);
            *total = 0;
            per.clear();
        }
        if *total >= ATTEMPTS_IN_ALL || (per.len() >= MAX_ADDRESSES && !per.contains_key(&ip)) {
            return false;
        }
        let n = per.entry(ip).or_insert(0);
        if *n >= ATTEMPTS_PER_ADDRESS {
            return false;
        }
        *n += 1;
        *total += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_cookie_only_until_it_idles_or_ends() {
        let s = Sessions::new(Duration::from_millis(200));
        let cookie = s.start("alice".into(), Credential::Dev);
        let v = s.get(&cookie).unwrap();
        assert_eq!(v.principal, "alice");
        assert_eq!(v.csrf.len(), 64);
        assert!(s.get("not-a-cookie").is_none());
        s.end(&v.id);
        assert!(s.get(&cookie).is_none());
        let cookie = s.start("bob".into(), Credential::Token(Zeroizing::new("kw_secret".into())));
        assert!(!format!("{:?}", s.map.lock().unwrap().values().next().unwrap()).contains("kw_secret"));
        std::thread::sleep(Duration::from_millis(250));
        assert!(s.get(&cookie).is_none(), "idle past the limit");
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn the_session_table_is_bounded() {
        let s = Sessions::new(Duration::from_secs(60));
        let first = s.start("p".into(), Credential::Dev);
        for _ in 0..MAX_SESSIONS {
            s.start("p".into(), Credential::Dev);
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.get(&first).is_none(), "the least recently used made room");
    }

    #[test]
    fn sign_ins_are_limited_per_address() {
        let l = SignInLimiter::default();
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        for _ in 0..ATTEMPTS_PER_ADDRESS {
            assert!(l.allow(a));
        }
        assert!(!l.allow(a));
        assert!(l.allow(b), "another address has its own allowance");
    }
}
