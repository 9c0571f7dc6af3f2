//! `flakeforge systemd-unit`: the systemd unit for hosts with Debian's Nix
//! (`nix-bin` and `nix-setup-systemd`, whose `nix-daemon.socket` builds),
//! such as Debian, Ubuntu and Raspberry Pi OS.
//!
//! The settings every distribution shares (dynamic user, directories,
//! hardening) come from `nixos/service.json`, which the NixOS module reads
//! too; only how the program is started and what Debian's Nix needs on top
//! are written here. `contrib/systemd/flakeforge.service` is this output,
//! and a test keeps the two equal.

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

/// nixos/service.json, compiled in so the binary prints the unit it matches.
const SHARED: &str = include_str!("../nixos/service.json");

/// Where the README installs the binary.
pub const DEFAULT_BINARY: &str = "/usr/local/bin/flakeforge";

/// The shape of nixos/service.json.
#[derive(Deserialize)]
struct Shared {
    environment: serde_json::Map<String, Value>,
    service: Vec<Group>,
    #[serde(rename = "privilegedPort")]
    privileged_port: Group,
}

/// Settings with the reason they are there, which becomes a comment.
#[derive(Deserialize)]
struct Group {
    why: String,
    settings: serde_json::Map<String, Value>,
}

/// What varies between installations.
pub struct UnitOptions {
    /// The flakeforge executable, absolute.
    pub binary: String,
    /// For a port below 1024: the capability to bind it.
    pub privileged_port: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error("nixos/service.json: {0}")]
    Shared(#[from] serde_json::Error),
    #[error("nixos/service.json: {0} must be a string, number, boolean or a list of those")]
    Value(String),
    #[error("--binary must be an absolute path without spaces (got {0:?})")]
    Binary(String),
}

/// The text of flakeforge.service.
pub fn render(options: &UnitOptions) -> Result<String, UnitError> {
    if !options.binary.starts_with('/') || options.binary.chars().any(|c| c.is_whitespace() || c == '%') {
        return Err(UnitError::Binary(options.binary.clone()));
    }
    let shared: Shared = serde_json::from_str(SHARED)?;
    let mut unit = String::new();
    unit.push_str(HEADER);
    unit.push_str(
        "\n[Unit]\n\
         Description=flakeforge container registry\n\
         # Remote flakes are fetched by the service itself.\n\
         Wants=network-online.target\n\
         After=network-online.target nix-daemon.socket\n\
         Requires=nix-daemon.socket\n\
         \n[Service]\n\
         # FLAKEFORGE_ARGS: the flags of `flakeforge serve` (--flake is required),\n\
         # and any environment (RUST_LOG, NIX_CONFIG with access tokens).\n\
         EnvironmentFile=/etc/default/flakeforge\n",
    );
    let _ = writeln!(unit, "ExecStart={} serve --state-dir /var/lib/flakeforge $FLAKEFORGE_ARGS", options.binary);
    unit.push_str(
        "# Re-reads the certificate files at once (changed files are noticed within\n\
         # a second anyway; the local CA's server certificate only on a reload).\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         Environment=RUST_LOG=info\n",
    );
    for (name, value) in &shared.environment {
        let _ = writeln!(unit, "Environment={name}={}", scalar(name, value)?);
    }
    unit.push_str(
        "# git refuses repositories of other users (\"dubious ownership\"); the\n\
         # served flake is trusted anyway: Nix evaluates its code.\n\
         Environment=GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0=*\n\
         # Debian's Nix daemon socket directory is 0770 root:nix-users.\n\
         SupplementaryGroups=nix-users\n",
    );
    let mut groups: Vec<&Group> = shared.service.iter().collect();
    if options.privileged_port {
        groups.push(&shared.privileged_port);
    }
    for group in groups {
        unit.push('\n');
        comment(&mut unit, &group.why);
        for (name, value) in &group.settings {
            if options.privileged_port
                && !std::ptr::eq(group, &shared.privileged_port)
                && shared.privileged_port.settings.contains_key(name)
            {
                continue;
            }
            setting(&mut unit, name, value)?;
        }
    }
    unit.push_str("\n[Install]\nWantedBy=multi-user.target\n");
    Ok(unit)
}

const HEADER: &str = "\
# flakeforge.service for hosts with Debian's Nix (nix-bin, nix-setup-systemd):
# Debian, Ubuntu, Raspberry Pi OS. Made by `flakeforge systemd-unit` from
# nixos/service.json, the settings the NixOS module uses as well; change
# them there. Add your own with `systemctl edit flakeforge`.
#
# /etc/default/flakeforge holds the flags, e.g.
#   FLAKEFORGE_ARGS=\"--flake /srv/images --hostname registry.lan\"
# The CA clients must trust, once the service has started:
#   sudo flakeforge ca --state-dir /var/lib/flakeforge
";

/// `# text`, wrapped at 78 columns.
fn comment(unit: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > 78 && line.len() > 1 {
            unit.push_str(&line);
            unit.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    unit.push_str(&line);
    unit.push('\n');
}

/// `Name=value`, or one line per element of a list, as NixOS renders it.
fn setting(unit: &mut String, name: &str, value: &Value) -> Result<(), UnitError> {
    match value {
        Value::Array(items) => {
            for item in items {
                let _ = writeln!(unit, "{name}={}", scalar(name, item)?);
            }
        }
        other => {
            let _ = writeln!(unit, "{name}={}", scalar(name, other)?);
        }
    }
    Ok(())
}

fn scalar(name: &str, value: &Value) -> Result<String, UnitError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Bool(flag) => Ok(flag.to_string()),
        Value::Number(number) => Ok(number.to_string()),
        _ => Err(UnitError::Value(name.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(privileged_port: bool) -> String {
        render(&UnitOptions { binary: DEFAULT_BINARY.to_string(), privileged_port }).unwrap()
    }

    fn lines_of(unit: &str, name: &str) -> Vec<String> {
        unit.lines().filter(|l| l.starts_with(&format!("{name}="))).map(str::to_string).collect()
    }

    #[test]
    fn renders_lists_as_one_line_each_and_booleans_as_nixos_does() {
        let unit = unit(false);
        assert_eq!(
            lines_of(&unit, "SystemCallFilter"),
            ["SystemCallFilter=@system-service", "SystemCallFilter=~@privileged"]
        );
        assert_eq!(lines_of(&unit, "RestrictAddressFamilies").len(), 4);
        assert_eq!(lines_of(&unit, "DynamicUser"), ["DynamicUser=true"]);
        assert_eq!(lines_of(&unit, "CapabilityBoundingSet"), ["CapabilityBoundingSet="]);
        assert_eq!(lines_of(&unit, "LimitNOFILE"), ["LimitNOFILE=65536"]);
        assert!(lines_of(&unit, "Environment").contains(&"Environment=NIX_REMOTE=daemon".to_string()));
        assert!(lines_of(&unit, "AmbientCapabilities").is_empty());
    }

    #[test]
    fn a_privileged_port_replaces_the_settings_it_names() {
        let unit = unit(true);
        assert_eq!(lines_of(&unit, "CapabilityBoundingSet"), ["CapabilityBoundingSet=CAP_NET_BIND_SERVICE"]);
        assert_eq!(lines_of(&unit, "AmbientCapabilities"), ["AmbientCapabilities=CAP_NET_BIND_SERVICE"]);
        assert_eq!(lines_of(&unit, "PrivateUsers"), ["PrivateUsers=false"]);
    }

    #[test]
    fn comments_stay_within_78_columns() {
        for line in unit(false).lines().filter(|l| l.starts_with('#')) {
            assert!(line.len() <= 78 || !line.contains(' '), "{line}");
        }
    }

    #[test]
    fn refuses_a_relative_binary() {
        let options = UnitOptions { binary: "flakeforge".into(), privileged_port: false };
        assert!(matches!(render(&options), Err(UnitError::Binary(_))));
    }
}
