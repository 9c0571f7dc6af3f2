//! Access control: who may pull which images, who may make Nix build them,
//! and who may watch builds, checked in [`crate::app`] before a request is
//! dispatched.
//!
//! - [`htpasswd`]: the users (`--htpasswd`, bcrypt entries only).
//! - [`policy`]: what each may do (`--policy`), or the built-in policies.
//! - [`throttle`]: failed logins per client address.
//! - [`credentials`]: the HTTP Basic credentials of a request.
//!
//! Both files are read again when they change or on SIGHUP
//! ([`crate::reload`]). [`Guard::identify`] tells who sent a request (or
//! why it is refused: wrong credentials, a throttled address); the
//! [`Identity`] it gives answers what that client may do, by the policy as
//! it was when the request came. No log line holds a password or a hash.

mod credentials;
mod htpasswd;
mod policy;
mod throttle;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use credentials::Credentials;
use htpasswd::{Check, Users};
use policy::Policy;
use throttle::Throttle;

use crate::http::Request;
use crate::reference::RepoName;
use crate::reload::{FileSource, Reloading};

/// The `WWW-Authenticate` value of every `401`: what docker, podman,
/// skopeo, containerd and the kubelet answer with their credentials.
pub const CHALLENGE: &str = "Basic realm=\"flakeforge\"";

/// `--htpasswd` and `--policy`.
#[derive(Debug, Clone, Default)]
pub struct AuthOptions {
    pub htpasswd: Option<PathBuf>,
    pub policy: Option<PathBuf>,
}

/// What a client may do with an image name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Get an image that is built.
    Pull,
    /// Have Nix build it (a new image, tag, revision or composition).
    Build,
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Right::Pull => "pull",
            Right::Build => "build",
        })
    }
}

/// Why a request is refused. Messages say which right is missing, never
/// whether an image exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No credentials where they are needed, or wrong ones: `401` with [`CHALLENGE`].
    #[error("{0}")]
    Unauthenticated(String),
    /// The client may not do this: `403`.
    #[error("{0}")]
    Forbidden(String),
    /// Too many failed logins from the client's address: `429`.
    #[error("too many failed logins from this address; try again in {} s", retry_after_secs(*.0))]
    Throttled(Duration),
}

/// Whole seconds to wait, rounded up.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// Checks who sends each request.
pub struct Guard {
    users: Option<Reloading<FileSource<Users>>>,
    policy: PolicySource,
    throttle: Throttle,
}

enum PolicySource {
    BuiltIn(Arc<Policy>),
    File(Reloading<FileSource<Policy>>),
}

impl Guard {
    /// Reads the files; a problem in either stops the start, in one line.
    /// With neither file, everyone may do everything.
    pub fn open(options: &AuthOptions) -> Result<Guard, String> {
        let users = options.htpasswd.as_ref().map(|path| {
            Reloading::new(FileSource { path: path.clone(), what: "access control: the users", read: Users::read })
        });
        let users = users.transpose()?;
        let policy = match (&options.policy, &users) {
            (Some(path), _) => PolicySource::File(Reloading::new(FileSource {
                path: path.clone(),
                what: "access control: the policy",
                read: Policy::read,
            })?),
            (None, Some(_)) => PolicySource::BuiltIn(Arc::new(Policy::users_only())),
            (None, None) => PolicySource::BuiltIn(Arc::new(Policy::open())),
        };
        let guard = Guard { users, policy, throttle: Throttle::default() };
        guard.describe();
        Ok(guard)
    }

    /// Says at start who may do what, and what in the policy names no user.
    fn describe(&self) {
        let policy = self.policy();
        let Some(users) = &self.users else {
            match self.policy {
                PolicySource::BuiltIn(_) => {
                    log::info!("access control: off (no --htpasswd): anyone may pull and build")
                }
                PolicySource::File(_) => log::info!("access control: the policy's anonymous rights apply to everyone"),
            }
            if policy.user_names().next().is_some() {
                log::warn!("access control: the policy names users, but there is no --htpasswd for them to log in");
            }
            return;
        };
        let users = users.current();
        if users.is_empty() {
            log::warn!("access control: the htpasswd file lists no user: nobody can log in");
        }
        log::info!(
            "access control: {} users may log in (HTTP Basic); anonymous clients may {}",
            users.len(),
            match (policy.allows_some(None, Right::Pull), policy.allows_some(None, Right::Build)) {
                (_, true) => "pull and build some images",
                (true, false) => "pull some images",
                (false, false) => "do nothing",
            }
        );
        for name in policy.user_names().filter(|name| !users.contains(name)) {
            log::warn!("access control: the policy names user {name}, who is not in the htpasswd file");
        }
    }

    fn policy(&self) -> Arc<Policy> {
        match &self.policy {
            PolicySource::BuiltIn(policy) => Arc::clone(policy),
            PolicySource::File(file) => file.current(),
        }
    }

    /// Who sent `request`: a user whose password checks out, or anonymous.
    pub fn identify(&self, request: &Request) -> Result<Identity, Denied> {
        let policy = self.policy();
        let Some(users) = &self.users else { return Ok(Identity { user: None, policy, can_log_in: false }) };
        let (user, password) = match credentials::of_request(request) {
            Credentials::None => return Ok(Identity { user: None, policy, can_log_in: true }),
            Credentials::Unusable(why) => return Err(Denied::Unauthenticated(why.to_string())),
            Credentials::Basic { user, password } => (user, password),
        };
        let client = request.peer.ip();
        self.throttle.check(client).map_err(Denied::Throttled)?;
        match users.current().check(&user, &password) {
            Check::Valid => Ok(Identity { user: Some(user), policy, can_log_in: true }),
            failed => {
                self.throttle.failed(client);
                // A user name typed into the password field must not reach the log.
                match failed {
                    Check::WrongPassword => log::info!("{client}: failed login: wrong password for user {user}"),
                    _ => log::info!("{client}: failed login: no such user"),
                }
                Err(Denied::Unauthenticated("wrong user name or password".into()))
            }
        }
    }
}

/// Who sent a request, and what they may do.
#[derive(Clone)]
pub struct Identity {
    /// `None`: anonymous.
    user: Option<String>,
    policy: Arc<Policy>,
    /// There are users: an anonymous client refused may log in (`401`, not `403`).
    can_log_in: bool,
}

impl Identity {
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether it may exercise `right` on the image `name` (its canonical form).
    pub fn may(&self, right: Right, name: &str) -> bool {
        self.policy.allows(self.user(), right, name)
    }

    /// Whether it has `right` on some name.
    pub fn may_some(&self, right: Right) -> bool {
        self.policy.allows_some(self.user(), right)
    }

    /// Whether it has `right` on every name.
    pub fn may_every(&self, right: Right) -> bool {
        self.policy.allows_every(self.user(), right)
    }

    pub fn is_admin(&self) -> bool {
        self.policy.is_admin(self.user())
    }

    /// `right` on `name`, or why not.
    pub fn require(&self, right: Right, name: &str) -> Result<(), Denied> {
        match self.may(right, name) {
            true => Ok(()),
            false => Err(self.refused(&format!("may not {right} {name}"))),
        }
    }

    /// For `/v2/`, where clients ask whether to log in: anonymous clients
    /// must when anyone can.
    pub fn require_login(&self) -> Result<(), Denied> {
        match self.user.is_none() && self.can_log_in {
            true => Err(Denied::Unauthenticated("authentication required".into())),
            false => Ok(()),
        }
    }

    /// For what only admins see (`what`: the metrics, the cache).
    pub fn require_admin(&self, what: &str) -> Result<(), Denied> {
        match self.is_admin() {
            true => Ok(()),
            false => Err(self.refused(&format!("may not see {what} (that needs admin)"))),
        }
    }

    /// Keeps, of image names as listed (`_catalog`, the web catalog), those
    /// it may pull.
    pub fn retain_pullable(&self, names: &mut Vec<String>) {
        names.retain(|name| RepoName::parse(name).is_some_and(|name| self.may(Right::Pull, &name.canonical())));
    }

    /// For `POST /-/refresh`: `admin`, or `refresh` in the policy.
    pub fn require_refresh(&self) -> Result<(), Denied> {
        match self.policy.may_refresh(self.user()) {
            true => Ok(()),
            false => Err(self.refused("may not ask for a refresh (that needs admin or refresh in the policy)")),
        }
    }

    /// A refusal saying what `self` may not do (`what` follows the client's
    /// name): `401` for an anonymous client that could log in, `403` otherwise.
    pub fn refused(&self, what: &str) -> Denied {
        match &self.user {
            Some(user) => Denied::Forbidden(format!("user {user} {what}")),
            None if self.can_log_in => {
                Denied::Unauthenticated(format!("authentication required: anonymous clients {what}"))
            }
            None => Denied::Forbidden(format!("anonymous clients {what}")),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.user().unwrap_or("anonymous"))
    }
}
