//! The JSON conf of nixpkgs' `dockerTools.streamLayeredImage` (its `conf`
//! attribute), read with the meaning `stream_layered_image.py` gives it:
//! times as Python's `datetime.fromisoformat`, `created` written back as
//! `datetime.isoformat`, the base image's `Env` merged as `overlay_base_config`.

use std::time::{SystemTime, UNIX_EPOCH};

use super::Ownership;

#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("the conf does not parse: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid conf field {field}: {reason}")]
    Field { field: &'static str, reason: String },
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct LayeredImageConf {
    pub architecture: String,
    #[serde(default)]
    pub config: serde_json::Value,
    pub created: String,
    pub mtime: String,
    pub uid: serde_json::Value,
    pub gid: serde_json::Value,
    pub uname: String,
    pub gname: String,
    #[serde(default)]
    pub store_dir: Option<String>,
    pub store_layers: Vec<Vec<String>>,
    pub customisation_layer: String,
    #[serde(default)]
    pub from_image: Option<String>,
    #[serde(default)]
    pub repo_tag: Option<String>,
}

/// Keys only a streamLayeredImage conf has.
const CONF_KEYS: [&str; 2] = ["customisation_layer", "store_layers"];

/// Whether `bytes` are meant as a streamLayeredImage conf: a JSON object
/// with a conf's own keys, or text that starts like one and names them (a
/// conf cut short). Such a file that does not parse is a broken conf, to be
/// reported, not some other file to be served another way.
pub fn looks_like_conf(bytes: &[u8]) -> bool {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(value) => value.as_object().is_some_and(|object| CONF_KEYS.iter().any(|key| object.contains_key(*key))),
        Err(_) => {
            let text = String::from_utf8_lossy(bytes);
            text.trim_start().starts_with('{') && CONF_KEYS.iter().any(|key| text.contains(&format!("\"{key}\"")))
        }
    }
}

impl LayeredImageConf {
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// Owner and mtime of store-layer entries: `int(parse_time(mtime).timestamp())`.
    pub fn ownership(&self) -> Result<Ownership, ConfError> {
        let mtime = parse_time(&self.mtime).map_err(|reason| ConfError::Field { field: "mtime", reason })?;
        let seconds = mtime.timestamp().div_euclid(1_000_000);
        Ok(Ownership {
            mtime: u64::try_from(seconds)
                .map_err(|_| ConfError::Field { field: "mtime", reason: "before 1970".into() })?,
            uid: id(&self.uid, "uid")?,
            gid: id(&self.gid, "gid")?,
            uname: self.uname.clone(),
            gname: self.gname.clone(),
        })
    }

    /// `created` as the script writes it into the image config (`datetime.isoformat`).
    pub fn created_iso(&self) -> Result<String, ConfError> {
        parse_time(&self.created).map(|t| t.isoformat()).map_err(|reason| ConfError::Field { field: "created", reason })
    }

    /// The image's `config`, with the base image's `Env` under its own: last one wins per variable,
    /// in the order variables first appear (a Python dict's order).
    pub fn merged_config(&self, base_config: Option<&serde_json::Value>) -> serde_json::Value {
        let mut config = if self.config.is_object() { self.config.clone() } else { serde_json::json!({}) };
        let Some(base) = base_config else { return config };
        let env_of = |v: &serde_json::Value| -> Vec<String> {
            v.get("Env")
                .and_then(|e| e.as_array())
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str())
                .map(String::from)
                .collect()
        };
        let mut merged: Vec<(String, String)> = Vec::new();
        for entry in env_of(base).into_iter().chain(env_of(&config)) {
            let key = entry.split('=').next().unwrap_or_default().to_string();
            match merged.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = entry,
                None => merged.push((key, entry)),
            }
        }
        if !merged.is_empty() {
            config["Env"] = merged.into_iter().map(|(_, entry)| serde_json::Value::String(entry)).collect();
        }
        config
    }
}

fn id(value: &serde_json::Value, field: &'static str) -> Result<u64, ConfError> {
    let parsed = match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| ConfError::Field { field, reason: format!("{value} is not a user or group id") })
}

/// A moment as Python's `datetime` holds it: civil time plus an optional UTC offset.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DateTime {
    days: i64,
    micros_of_day: i64,
    offset_seconds: Option<i64>,
}

impl DateTime {
    /// Microseconds since the epoch; a time without offset is taken as UTC.
    fn timestamp(&self) -> i64 {
        (self.days * 86_400 - self.offset_seconds.unwrap_or(0)) * 1_000_000 + self.micros_of_day
    }

    fn isoformat(&self) -> String {
        let (y, m, d) = civil_from_days(self.days);
        let seconds = self.micros_of_day / 1_000_000;
        let micros = self.micros_of_day % 1_000_000;
        let mut out =
            format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", seconds / 3600, seconds / 60 % 60, seconds % 60);
        if micros != 0 {
            out += &format!(".{micros:06}");
        }
        if let Some(offset) = self.offset_seconds {
            let sign = if offset < 0 { '-' } else { '+' };
            let abs = offset.abs();
            out += &format!("{sign}{:02}:{:02}", abs / 3600, abs / 60 % 60);
            if abs % 60 != 0 {
                out += &format!(":{:02}", abs % 60);
            }
        }
        out
    }
}

/// `"now"` or the ISO 8601 forms `datetime.fromisoformat` reads:
/// `YYYY-MM-DD[(T| )HH:MM[:SS[.f{1,6}]]][Z|±HH:MM[:SS]]`, year 1 to 9999
/// (Python's range: anything else could not be written back as RFC 3339).
fn parse_time(text: &str) -> Result<DateTime, String> {
    if text == "now" {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?;
        let micros = now.as_micros() as i64;
        return Ok(DateTime {
            days: micros.div_euclid(86_400_000_000),
            micros_of_day: micros.rem_euclid(86_400_000_000),
            offset_seconds: Some(0),
        });
    }
    let bad = || format!("{text:?} is not an ISO 8601 date and time");
    // Fixed-width digit fields, so no value can overflow what follows.
    let digits = |s: &str, width: usize| -> Result<i64, String> {
        if s.len() != width || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    // `get` rather than slicing: a multi-byte character may straddle the end of the date.
    let date = text.get(..10).ok_or_else(bad)?;
    let rest = &text[10..];
    let [y, m, d] = <[&str; 3]>::try_from(date.split('-').collect::<Vec<_>>()).map_err(|_| bad())?;
    let (y, m, d) = (digits(y, 4)?, digits(m, 2)?, digits(d, 2)?);
    if y < 1 || !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err(bad());
    }
    let mut result = DateTime { days: days_from_civil(y, m, d), micros_of_day: 0, offset_seconds: None };
    if rest.is_empty() {
        return Ok(result);
    }
    let time = rest.strip_prefix(['T', ' ']).ok_or_else(bad)?;
    let zone_at = time.find(['Z', '+', '-']).unwrap_or(time.len());
    let (clock, zone) = time.split_at(zone_at);
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let fields: Vec<i64> = hms.split(':').map(|f| digits(f, 2)).collect::<Result<_, _>>()?;
    let (h, min, s) = match fields.as_slice() {
        [h, min] => (*h, *min, 0),
        [h, min, s] => (*h, *min, *s),
        _ => return Err(bad()),
    };
    if h > 23 || min > 59 || s > 59 || fraction.len() > 6 || (clock.contains('.') && fraction.is_empty()) {
        return Err(bad());
    }
    let micros =
        if fraction.is_empty() { 0 } else { digits(fraction, fraction.len())? * 10i64.pow(6 - fraction.len() as u32) };
    result.micros_of_day = ((h * 60 + min) * 60 + s) * 1_000_000 + micros;
    result.offset_seconds = match zone {
        "" => None,
        "Z" => Some(0),
        _ => {
            let (sign, offset) = match zone.split_at(1) {
                ("+", offset) => (1, offset),
                ("-", offset) => (-1, offset),
                _ => return Err(bad()),
            };
            let fields: Vec<i64> = offset.split(':').map(|f| digits(f, 2)).collect::<Result<_, _>>()?;
            let (oh, om, os) = match fields.as_slice() {
                [oh, om] => (*oh, *om, 0),
                [oh, om, os] => (*oh, *om, *os),
                _ => return Err(bad()),
            };
            if oh > 23 || om > 59 || os > 59 {
                return Err(bad());
            }
            Some(sign * (oh * 3600 + om * 60 + os))
        }
    };
    Ok(result)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(created: &str, mtime: &str) -> LayeredImageConf {
        let json = serde_json::json!({
            "architecture": "amd64", "config": {"Env": ["A=1", "PATH=/img"], "Cmd": ["x"]},
            "created": created, "mtime": mtime, "uid": 0, "gid": "100", "uname": "root", "gname": "root",
            "store_dir": "/nix/store", "store_layers": [["/nix/store/a"]], "customisation_layer": "/nix/store/c",
            "from_image": null, "repo_tag": "x:y"
        });
        LayeredImageConf::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn times_as_python_reads_and_writes_them() {
        // Values from CPython: datetime.fromisoformat(s).isoformat() and int(....timestamp()).
        for (text, iso, stamp) in [
            ("1970-01-01T00:00:01Z", "1970-01-01T00:00:01+00:00", 1),
            ("2024-02-29T12:30:00+02:00", "2024-02-29T12:30:00+02:00", 1709202600),
            ("2023-11-14T22:13:20.5Z", "2023-11-14T22:13:20.500000+00:00", 1700000000),
            ("2023-11-14", "2023-11-14T00:00:00", 1699920000),
            ("2000-01-01 10:00-05:30", "2000-01-01T10:00:00-05:30", 946740600),
        ] {
            let c = conf(text, text);
            assert_eq!(c.created_iso().unwrap(), iso, "{text}");
            assert_eq!(c.ownership().unwrap().mtime, stamp, "{text}");
        }
        for bad in
            ["", "yesterday", "2023-13-01", "2023-02-30", "2023-01-01T25:00", "2023-01-01T10:00:00.", "1969-12-31"]
        {
            assert!(conf(bad, bad).ownership().is_err(), "{bad}");
        }
        assert!(conf("now", "now").created_iso().unwrap().ends_with("+00:00"));
    }

    #[test]
    fn malformed_times_are_errors_not_panics() {
        for bad in [
            "2023-11-1é",
            "2023-11-é1",
            "éééééé",
            "99999-1-1",
            "999999-1-1",
            "10000-01-01",
            "0000-01-01",
            "2023-1-01",
            "+123-01-01",
            "2023-01-01T1:00",
            "2023-01-01T10:00Z+01:00",
            "2023-01-01T10:00*01:00",
            "2023-01-01T10:00+1:00",
            "2023-01-01T99999999999999999999:00",
            "2023-01-01T10:00:00.1234567",
            "2023-01-01T10:00é",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
            assert!(conf(bad, bad).ownership().is_err() && conf(bad, bad).created_iso().is_err(), "{bad:?}");
        }
        // The extremes Python accepts still come out as four-digit years.
        assert_eq!(conf("9999-12-31T23:59:59Z", "1970-01-01").created_iso().unwrap(), "9999-12-31T23:59:59+00:00");
        assert_eq!(conf("0001-01-01", "1970-01-01").created_iso().unwrap(), "0001-01-01T00:00:00");
        assert_eq!(conf("1970-01-01", "9999-12-31T23:59:59Z").ownership().unwrap().mtime, 253_402_300_799);
    }

    #[test]
    fn confs_are_told_apart_from_other_files() {
        assert!(looks_like_conf(br#"{"store_layers": [], "customisation_layer": "/x"}"#));
        assert!(looks_like_conf(br#"{"store_layers": "of the wrong type"}"#));
        assert!(looks_like_conf(br#" {"architecture": "amd64", "store_layers": [["/nix/store/a"#));
        assert!(!looks_like_conf(br#"{"name": "some other JSON"}"#));
        assert!(!looks_like_conf(b"#!/bin/sh\necho store_layers\n"));
        assert!(!looks_like_conf(b"[1, 2]"));
        assert!(!looks_like_conf(b"\x7fELF\x02\x01"));
    }

    #[test]
    fn civil_dates_round_trip() {
        for days in [-1_000_000, -1, 0, 59, 365, 11_016, 19_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn ids_are_numbers_or_numeric_strings() {
        let o = conf("2023-11-14", "2023-11-14").ownership().unwrap();
        assert_eq!((o.uid, o.gid), (0, 100));
    }

    #[test]
    fn env_merged_under_the_image() {
        let c = conf("2023-11-14", "2023-11-14");
        let base = serde_json::json!({"Env": ["PATH=/base", "B=2", "A=0"]});
        let merged = c.merged_config(Some(&base));
        assert_eq!(merged["Env"], serde_json::json!(["PATH=/img", "B=2", "A=1"]));
        assert_eq!(merged["Cmd"], serde_json::json!(["x"]));
        assert_eq!(c.merged_config(None), c.config);
    }
}
