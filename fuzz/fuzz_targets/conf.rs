//! streamLayeredImage confs: any bytes parse to a conf or an error; the
//! times in it are read or refused without a panic, and a `created` that is
//! read comes back out as an RFC 3339 time (four-digit year) that reads
//! back to itself. Inputs starting with `@` are a time alone, put in a
//! conf as both `created` and `mtime`, to reach the time parser directly.
#![no_main]

use flakeforge::image::conf::LayeredImageConf;
use libfuzzer_sys::fuzz_target;

fn conf_with_time(time: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "config": {"Env": ["A=1"]}, "created": time, "mtime": time,
        "uid": 0, "gid": 0, "uname": "root", "gname": "root", "store_layers": [],
        "customisation_layer": "/nix/store/x", "from_image": null,
    }))
    .unwrap()
}

fuzz_target!(|data: &[u8]| {
    let bytes = match data.strip_prefix(b"@") {
        Some(time) => match std::str::from_utf8(time) {
            Ok(time) => conf_with_time(time),
            Err(_) => return,
        },
        None => data.to_vec(),
    };
    let Ok(conf) = LayeredImageConf::parse(&bytes) else { return };
    let _ = conf.ownership();
    let base = serde_json::json!({"Env": ["A=0", "B=2", "=", "noequals"]});
    let _ = conf.merged_config(Some(&base));
    let _ = conf.merged_config(Some(&conf.config));
    if let Ok(created) = conf.created_iso() {
        let year = created.split('-').next().unwrap();
        assert!(year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit()), "{:?} became {created:?}", conf.created);
        if conf.created != "now" {
            let again = LayeredImageConf { created: created.clone(), ..conf.clone() };
            assert_eq!(again.created_iso().unwrap(), created, "{:?}", conf.created);
        }
    }
});
