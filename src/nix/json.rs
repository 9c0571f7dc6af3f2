//! The JSON that `nix build --json` and `nix path-info --json` print, in the
//! shapes of both Nix 2.8 (lists) and current Nix (objects keyed by path).
