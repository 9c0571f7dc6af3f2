//! `Range` headers against blob sizes: never a panic, and a satisfiable
//! range always lies inside the blob and is not empty.
#![no_main]

use flakeforge::registry::api::{parse_range, RangeRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (size, header) = data.split_at(8);
    // Small sizes most of the time, where the edges are; any u64 otherwise.
    let raw = u64::from_le_bytes(size.try_into().unwrap());
    let size = if raw & 1 == 0 { (raw >> 1) % 1024 } else { raw >> 1 };
    let header = String::from_utf8_lossy(header);
    match parse_range(&header, size) {
        RangeRequest::Satisfiable(start, end) => {
            assert!(start < end && end <= size, "{header:?} of {size} bytes gave {start}..{end}");
        }
        RangeRequest::Unsatisfiable | RangeRequest::Ignored => {}
    }
});
