//! One entry's header blocks, byte for byte as one of two writers makes
//! them: Python's `tarfile` in PAX format (nixpkgs' `stream_layered_image.py`)
//! or Go's `archive/tar` with no format chosen (nix2container).
//!
//! Both write ustar blocks (`ustar\0` + `00`, 7/11-digit octal fields, the
//! checksum as `%06o\0 `) and fall back to a PAX `x` header for what a ustar
//! field cannot hold. They differ in the details a digest sees:
//! - a name over 100 bytes: tarfile always writes a PAX `path`; Go first
//!   splits it into ustar's prefix and name fields when it can;
//! - the PAX header: tarfile names it `././@PaxHeader` and writes its records
//!   in field order (`hdrcharset=BINARY` first for names that are not UTF-8);
//!   Go names it `DIR/PaxHeaders.0/FILE` and sorts the records by key;
//! - text that does not fit a ustar field: tarfile writes non-ASCII
//!   characters as `?`; Go drops them;
//! - the device fields: empty in tarfile's headers, `0000000` in Go's.

use super::super::Ownership;

pub(super) const BLOCK: usize = 512;

pub(super) const REGULAR: u8 = b'0';
pub(super) const SYMLINK: u8 = b'2';
pub(super) const DIRECTORY: u8 = b'5';
const PAX_EXTENDED: u8 = b'x';

const NAME_FIELD: usize = 100;
const PREFIX_FIELD: usize = 155;
const OWNER_NAME_FIELD: usize = 32;

/// Whose tar bytes to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Python's `tarfile` (`PAX_FORMAT`), as nixpkgs' `stream_layered_image.py` uses it.
    PythonTarfile,
    /// Go's `archive/tar` with an unspecified format, as nix2container uses it.
    GoArchiveTar,
}

/// One entry's header fields, before encoding.
pub(super) struct Entry<'a> {
    pub name: &'a [u8],
    pub mode: u32,
    pub size: u64,
    pub kind: u8,
    pub link: &'a [u8],
}

/// The fields of one ustar block, text already in the bytes to store.
struct Block<'a> {
    name: &'a [u8],
    prefix: &'a [u8],
    mode: u64,
    /// uid, gid, size, mtime.
    numbers: [u64; 4],
    kind: u8,
    link: &'a [u8],
    uname: &'a [u8],
    gname: &'a [u8],
    /// Go writes `0000000` into the device fields of every entry it packs.
    device_fields: bool,
}

/// The header of `entry` as `dialect` writes it: a PAX header (block,
/// records, padding) when one is needed, then the ustar block.
pub(super) fn encode(dialect: Dialect, entry: &Entry, owner: &Ownership) -> Vec<u8> {
    match dialect {
        Dialect::PythonTarfile => python_header(entry, owner),
        Dialect::GoArchiveTar => go_header(entry, owner),
    }
}

/// Text fields longer than their ustar field or not ASCII: PAX records.
fn oversized_texts<'a>(entry: &Entry<'a>, owner: &'a Ownership) -> Vec<(&'static str, Vec<u8>)> {
    [
        ("path", entry.name, NAME_FIELD),
        ("linkpath", entry.link, NAME_FIELD),
        ("uname", owner.uname.as_bytes(), OWNER_NAME_FIELD),
        ("gname", owner.gname.as_bytes(), OWNER_NAME_FIELD),
    ]
    .into_iter()
    .filter(|(_, value, field)| !value.is_ascii() || value.len() > *field)
    .map(|(key, value, _)| (key, value.to_vec()))
    .collect()
}

/// Numbers too large for their octal field: PAX records, and 0 in the field.
fn oversized_numbers(entry: &Entry, owner: &Ownership, pax: &mut Vec<(&'static str, Vec<u8>)>) -> [u64; 4] {
    let mut numbers = [owner.uid, owner.gid, entry.size, owner.mtime];
    for ((key, digits), value) in [("uid", 8), ("gid", 8), ("size", 12), ("mtime", 12)].into_iter().zip(&mut numbers) {
        if *value >= 8u64.pow(digits - 1) {
            pax.push((key, value.to_string().into_bytes()));
            *value = 0;
        }
    }
    numbers
}

fn python_header(entry: &Entry, owner: &Ownership) -> Vec<u8> {
    let mut pax = oversized_texts(entry, owner);
    let numbers = oversized_numbers(entry, owner, &mut pax);
    let mut out = Vec::with_capacity(BLOCK);
    if !pax.is_empty() {
        let mut records = Vec::new();
        if pax.iter().any(|(_, value)| std::str::from_utf8(value).is_err()) {
            records.extend_from_slice(b"21 hdrcharset=BINARY\n");
        }
        for (key, value) in &pax {
            records.extend(pax_record(key, value));
        }
        append_pax_header(&mut out, b"././@PaxHeader", &records);
    }
    out.extend_from_slice(&ustar_block(&Block {
        name: &question_marks(entry.name),
        prefix: b"",
        mode: u64::from(entry.mode & 0o7777),
        numbers,
        kind: entry.kind,
        link: &question_marks(entry.link),
        uname: &question_marks(owner.uname.as_bytes()),
        gname: &question_marks(owner.gname.as_bytes()),
        device_fields: false,
    }));
    out
}

fn go_header(entry: &Entry, owner: &Ownership) -> Vec<u8> {
    // `Header.allowedFormats`: what needs a PAX record, and whether ustar can
    // still hold it all (a long name only, which fits prefix and name).
    let mut pax = oversized_texts(entry, owner);
    let numbers = oversized_numbers(entry, owner, &mut pax);
    let ustar = pax.iter().all(|(key, _)| *key == "path") && (pax.is_empty() || split_ustar_path(entry.name).is_some());
    let mut block = Block {
        name: entry.name,
        prefix: b"",
        mode: u64::from(entry.mode),
        numbers,
        kind: entry.kind,
        link: entry.link,
        uname: owner.uname.as_bytes(),
        gname: owner.gname.as_bytes(),
        device_fields: true,
    };
    if ustar {
        if let Some((prefix, name)) = split_ustar_path(entry.name) {
            (block.prefix, block.name) = (prefix, name);
        }
        return ustar_block(&block).to_vec();
    }
    pax.sort_by(|a, b| a.0.cmp(b.0));
    let records: Vec<u8> = pax.iter().flat_map(|(key, value)| pax_record(key, value)).collect();
    let mut header_name = to_ascii(&pax_header_name(entry.name));
    header_name.truncate(NAME_FIELD);
    while header_name.last() == Some(&b'/') {
        header_name.pop();
    }
    let mut out = Vec::with_capacity(3 * BLOCK);
    append_pax_header(&mut out, &header_name, &records);
    let (name, link) = (go_field(entry.name, NAME_FIELD), go_field(entry.link, NAME_FIELD));
    let (uname, gname) =
        (go_field(owner.uname.as_bytes(), OWNER_NAME_FIELD), go_field(owner.gname.as_bytes(), OWNER_NAME_FIELD));
    (block.name, block.link, block.uname, block.gname) = (&name, &link, &uname, &gname);
    out.extend_from_slice(&ustar_block(&block));
    out
}

/// A PAX `x` header named `name` and its records, padded to a whole block.
/// Both writers fill only the v7 fields (Go's `writeRawFile`), so even Go
/// leaves its device fields empty.
fn append_pax_header(out: &mut Vec<u8>, name: &[u8], records: &[u8]) {
    let header = Block {
        name,
        prefix: b"",
        mode: 0,
        numbers: [0, 0, records.len() as u64, 0],
        kind: PAX_EXTENDED,
        link: b"",
        uname: b"",
        gname: b"",
        device_fields: false,
    };
    out.extend_from_slice(&ustar_block(&header));
    out.extend_from_slice(records);
    out.resize(out.len().next_multiple_of(BLOCK), 0);
}

/// `"%d %s=%s\n"`, the length counting its own digits (both writers' fixpoint).
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let bare = key.len() + value.len() + 3;
    let mut total = 0;
    loop {
        let next = bare + total.to_string().len();
        if next == total {
            break;
        }
        total = next;
    }
    let mut record = format!("{total} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

fn ustar_block(fields: &Block) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    put_text(&mut block[0..100], fields.name);
    put_octal(&mut block[100..108], fields.mode);
    put_octal(&mut block[108..116], fields.numbers[0]);
    put_octal(&mut block[116..124], fields.numbers[1]);
    put_octal(&mut block[124..136], fields.numbers[2]);
    put_octal(&mut block[136..148], fields.numbers[3]);
    block[148..156].fill(b' ');
    block[156] = fields.kind;
    put_text(&mut block[157..257], fields.link);
    block[257..265].copy_from_slice(b"ustar\x0000");
    put_text(&mut block[265..297], fields.uname);
    put_text(&mut block[297..329], fields.gname);
    if fields.device_fields {
        put_octal(&mut block[329..337], 0);
        put_octal(&mut block[337..345], 0);
    }
    put_text(&mut block[345..500], fields.prefix);
    let checksum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..155].copy_from_slice(format!("{checksum:06o}\0").as_bytes());
    block
}

fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    field[..digits].copy_from_slice(format!("{value:0digits$o}").as_bytes());
    field[digits] = 0;
}

/// As much of `text` as fits; the rest of the field stays zero.
fn put_text(field: &mut [u8], text: &[u8]) {
    let n = text.len().min(field.len());
    field[..n].copy_from_slice(&text[..n]);
}

/// Python's `s.encode("ascii", "replace")` of the name decoded as tarfile
/// decodes file names (UTF-8, invalid bytes one character each).
fn question_marks(text: &[u8]) -> Vec<u8> {
    let mut encoded = Vec::with_capacity(text.len());
    for chunk in text.utf8_chunks() {
        for c in chunk.valid().chars() {
            encoded.push(if c.is_ascii() { c as u8 } else { b'?' });
        }
        encoded.extend(std::iter::repeat_n(b'?', chunk.invalid().len()));
    }
    encoded
}

/// Go's `toASCII`: every character that is not ASCII (or is NUL) dropped.
fn to_ascii(text: &[u8]) -> Vec<u8> {
    text.iter().copied().filter(|&b| b != 0 && b.is_ascii()).collect()
}

/// What Go's `formatString(field, toASCII(text))` leaves in a field: a text
/// cut at the field's end must not end in `/` there, so the run of slashes
/// before the cut starts the terminating NUL.
fn go_field(text: &[u8], field: usize) -> Vec<u8> {
    let mut ascii = to_ascii(text);
    if ascii.len() > field {
        ascii.truncate(field);
        if ascii[field - 1] == b'/' {
            let kept = ascii[..field - 1].iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
            ascii[kept] = 0;
        }
    }
    ascii
}

/// Go's `splitUSTARPath`: a long ASCII name cut at a `/` into a prefix of
/// at most 155 bytes and a name of at most 100.
fn split_ustar_path(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= NAME_FIELD || !name.is_ascii() {
        return None;
    }
    let mut length = name.len();
    if length > PREFIX_FIELD + 1 {
        length = PREFIX_FIELD + 1;
    } else if name[length - 1] == b'/' {
        length -= 1;
    }
    let i = name[..length].iter().rposition(|&b| b == b'/')?;
    let suffix_len = name.len() - i - 1;
    if i == 0 || suffix_len > NAME_FIELD || suffix_len == 0 || i > PREFIX_FIELD {
        return None;
    }
    Some((&name[..i], &name[i + 1..]))
}

/// Go's `path.Join(dir, "PaxHeaders.0", file)` for the entry named `name`.
fn pax_header_name(name: &[u8]) -> Vec<u8> {
    let (dir, file) = match name.iter().rposition(|&b| b == b'/') {
        Some(i) => name.split_at(i + 1),
        None => (&b""[..], name),
    };
    let mut joined = dir.to_vec();
    if !joined.is_empty() {
        joined.push(b'/');
    }
    joined.extend_from_slice(b"PaxHeaders.0/");
    joined.extend_from_slice(file);
    clean_path(&joined)
}

/// Go's `path.Clean`: no repeated slashes, `.` or resolvable `..`, no
/// trailing slash but for the root; `.` for nothing.
pub(crate) fn clean_path(path: &[u8]) -> Vec<u8> {
    let rooted = path.first() == Some(&b'/');
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if parts.last().is_some_and(|last| *last != b"..") => {
                parts.pop();
            }
            b".." if rooted => {}
            _ => parts.push(part),
        }
    }
    let mut cleaned = if rooted { b"/".to_vec() } else { Vec::new() };
    cleaned.extend(parts.join(&b'/'));
    if cleaned.is_empty() {
        cleaned.push(b'.');
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        // Expected values from Python's tarfile._create_pax_generic_header (Go's formatPAXRecord agrees).
        assert_eq!(pax_record("a", b"bcd"), b"8 a=bcd\n");
        assert_eq!(pax_record("a", b"bcde"), b"9 a=bcde\n");
        assert_eq!(pax_record("a", b"bcdef"), b"11 a=bcdef\n");
        // 94 + 4 + 3 = 101 bytes without the length; with it, 104: three digits.
        let record = pax_record("path", &[b'x'; 94]);
        assert_eq!(&record[..4], b"104 ");
        assert_eq!(record.len(), 104);
    }

    #[test]
    fn go_splits_long_names_into_prefix_and_name() {
        let long = [b"/nix/store/".to_vec(), vec![b'a'; 60], b"/".to_vec(), vec![b'b'; 50]].concat();
        let (prefix, name) = split_ustar_path(&long).unwrap();
        assert_eq!((prefix.len(), name), (71, &[b'b'; 50][..]));
        assert!(split_ustar_path(&[b'/'; 50]).is_none());
        assert!(split_ustar_path(&[b"/".to_vec(), vec![b'c'; 120]].concat()).is_none());
        assert!(split_ustar_path("/é/x".repeat(30).as_bytes()).is_none());
    }

    #[test]
    fn go_cleans_paths_as_path_clean() {
        for (path, clean) in [("/a//b/./c/..", "/a/b"), ("/", "/"), ("", "."), ("a/../..", ".."), ("/../a/", "/a")] {
            assert_eq!(clean_path(path.as_bytes()), clean.as_bytes(), "{path}");
        }
        assert_eq!(pax_header_name(b"/nix/store/x/long"), b"/nix/store/x/PaxHeaders.0/long");
        assert_eq!(pax_header_name(b"/"), b"/PaxHeaders.0");
        assert_eq!(pax_header_name(b"rel"), b"PaxHeaders.0/rel");
    }

    #[test]
    fn go_fields_drop_non_ascii_and_never_end_in_a_cut_slash() {
        assert_eq!(go_field("aé/b".as_bytes(), 100), b"a/b");
        let mut cut = vec![b'x'; 97];
        cut.extend_from_slice(b"///y");
        let field = go_field(&cut, 100);
        assert_eq!((field[97], field.len()), (0, 100));
    }
}
