//! The users: an Apache htpasswd file (`--htpasswd`) of bcrypt entries, as
//! `htpasswd -B` makes them. Any other kind of entry (MD5, SHA-1, crypt,
//! plain text) is refused, by line and user, never quoting the hash.
//!
//! Passwords are checked by bcrypt, which compares in constant time; a user
//! not in the file costs one bcrypt all the same, so timing does not tell
//! who exists. A check that succeeded is remembered as a SHA-256 of user,
//! password and entry (never the password), so that the many requests of
//! one pull, each with the password, cost one bcrypt together.

use std::collections::HashMap;
use std::fs;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Mutex;

use lru::LruCache;

/// Successful checks remembered.
const VERIFIED_KEPT: usize = 1024;

pub struct Users {
    /// User → bcrypt hash.
    entries: HashMap<String, String>,
    /// A hash to check against for users not in the file.
    decoy: Option<String>,
    verified: Mutex<LruCache<[u8; 32], ()>>,
}

/// How a user name and password fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Valid,
    UnknownUser,
    WrongPassword,
}

impl Users {
    /// An htpasswd file's text.
    pub fn parse(text: &str) -> Result<Users, String> {
        let mut entries = HashMap::new();
        let mut decoy = None;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let number = index + 1;
            let Some((user, hash)) = line.split_once(':') else {
                return Err(format!("line {number} is not USER:HASH"));
            };
            if user.is_empty() {
                return Err(format!("line {number} has no user name"));
            }
            if let Err(kind) = check_bcrypt(hash) {
                return Err(format!(
                    "line {number} (user {user}): {kind}; only bcrypt entries are accepted: make them with `htpasswd -B`"
                ));
            }
            if entries.insert(user.to_string(), hash.to_string()).is_some() {
                return Err(format!("line {number}: user {user} is listed twice"));
            }
            decoy.get_or_insert_with(|| hash.to_string());
        }
        let capacity = NonZeroUsize::new(VERIFIED_KEPT).expect("not zero");
        Ok(Users { entries, decoy, verified: Mutex::new(LruCache::new(capacity)) })
    }

    pub fn read(path: &Path) -> Result<Users, String> {
        let text = fs::read_to_string(path).map_err(|e| format!("--htpasswd {}: {e}", path.display()))?;
        Users::parse(&text).map_err(|e| format!("--htpasswd {}: {e}", path.display()))
    }

    pub fn contains(&self, user: &str) -> bool {
        self.entries.contains_key(user)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks `password` for `user`.
    pub fn check(&self, user: &str, password: &str) -> Check {
        let Some(hash) = self.entries.get(user) else {
            if let Some(decoy) = &self.decoy {
                let _ = bcrypt::verify(password, decoy);
            }
            return Check::UnknownUser;
        };
        let key = verified_key(user, password, hash);
        if self.verified.lock().unwrap().get(&key).is_some() {
            return Check::Valid;
        }
        if bcrypt::verify(password, hash).unwrap_or(false) {
            self.verified.lock().unwrap().put(key, ());
            Check::Valid
        } else {
            Check::WrongPassword
        }
    }
}

/// What a successful check is remembered by: it cannot be had without the
/// password, and it changes with the entry.
fn verified_key(user: &str, password: &str, hash: &str) -> [u8; 32] {
    let mut sha = crate::digest::Sha256::new();
    for part in [user, password, hash] {
        sha.update(&(part.len() as u64).to_le_bytes());
        sha.update(part.as_bytes());
    }
    sha.finish()
}

/// Ok for a bcrypt hash; else what kind of entry it is.
fn check_bcrypt(hash: &str) -> Result<(), &'static str> {
    let kind = match hash {
        _ if ["$2a$", "$2b$", "$2x$", "$2y$"].iter().any(|p| hash.starts_with(p)) => {
            return hash.parse::<bcrypt::HashParts>().map(drop).map_err(|_| "a malformed bcrypt hash");
        }
        _ if hash.starts_with("$apr1$") => "an MD5 hash ($apr1$)",
        _ if hash.starts_with("{SHA}") => "a SHA-1 hash ({SHA})",
        _ if hash.starts_with("$1$") => "an MD5-crypt hash ($1$)",
        _ if hash.starts_with("$5$") || hash.starts_with("$6$") => "a SHA-crypt hash ($5$ or $6$)",
        _ if hash.len() == 13 && hash.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/') => {
            "a crypt(3) DES hash"
        }
        _ => "not a hash htpasswd makes (plain text?)",
    };
    Err(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cost 4, the least bcrypt allows: fast enough for tests.
    fn entry(user: &str, password: &str) -> String {
        format!("{user}:{}\n", bcrypt::hash(password, 4).unwrap())
    }

    #[test]
    fn checks_bcrypt_entries_and_remembers_what_succeeded() {
        let users = Users::parse(&(entry("alice", "wonderland") + "\r\n" + &entry("bob", "builder"))).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users.check("alice", "wonderland"), Check::Valid);
        assert_eq!(users.check("alice", "wonderland"), Check::Valid);
        assert_eq!(users.check("alice", "builder"), Check::WrongPassword);
        assert_eq!(users.check("carol", "builder"), Check::UnknownUser);
        assert_eq!(users.check("bob", ""), Check::WrongPassword);
        assert_eq!(users.verified.lock().unwrap().len(), 1);
    }

    #[test]
    fn other_kinds_of_entries_are_refused_without_quoting_them() {
        let cases = [
            ("bob:$apr1$abcdefgh$0123456789012345678901", "an MD5 hash"),
            ("bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "a SHA-1 hash"),
            ("bob:abJnggxhB/yWI", "a crypt(3) DES hash"),
            ("bob:secret", "plain text"),
            ("bob:$2y$05$short", "a malformed bcrypt hash"),
        ];
        for (line, kind) in cases {
            let text = entry("alice", "x") + line + "\n";
            let error = Users::parse(&text).err().unwrap();
            assert!(error.starts_with("line 2 (user bob): ") && error.contains(kind), "{error}");
            assert!(error.contains("htpasswd -B"), "{error}");
            let hash = line.split_once(':').unwrap().1;
            assert!(!error.contains(hash), "{error}");
        }
        assert!(Users::parse("no colon\n").err().unwrap().starts_with("line 1 is not USER:HASH"));
        let twice = Users::parse(&(entry("a", "x") + &entry("a", "y"))).err().unwrap();
        assert_eq!(twice, "line 2: user a is listed twice");
        assert!(Users::parse("\n\n").unwrap().is_empty());
    }

    #[test]
    fn apache_bcrypt_variants_are_accepted() {
        // `htpasswd -B` writes $2y$; other tools $2a$ or $2b$.
        let hash = bcrypt::hash("pw", 4).unwrap();
        for variant in ["$2a$", "$2b$", "$2y$"] {
            let users = Users::parse(&format!("u:{variant}{}\n", &hash[4..])).unwrap();
            assert_eq!(users.check("u", "pw"), Check::Valid, "{variant}");
        }
    }
}
