//! From an image tag to a flake reference: `latest` is the flake as
//! configured, any other tag a git ref (or a 40-hex rev) of it.

use super::NixError;

pub fn for_tag(flake: &str, tag: &str) -> Result<String, NixError> {
    let _ = (flake, tag);
    todo!()
}
