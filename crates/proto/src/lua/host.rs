//! The host functions a protocol script calls through `sy` (the prelude binds them to
//! locals): `find`, a substring search, and `header`, a text header's value. They run in
//! Rust on the script's buffer, reading it in chunks (a Luau buffer's memory is the VM's).

use mlua::{Buffer, Lua};
use std::cell::RefCell;

/// `sy.find(data, from, to, needle)`: the offset of the first `needle` in `data[from, to)`,
/// or nil. Runs in the host (memchr), reading the buffer in chunks.
pub(super) fn find(
    _: &Lua,
    (data, from, to, needle): (Buffer, usize, usize, mlua::LuaString),
) -> mlua::Result<Option<usize>> {
    use std::io::{Read, Seek, SeekFrom};
    let needle = needle.as_bytes();
    let to = to.min(data.len());
    if needle.is_empty() || from >= to || to - from < needle.len() {
        return Ok(None);
    }
    let finder = memchr::memmem::Finder::new(&needle[..]);
    let mut cursor = data.cursor();
    cursor.seek(SeekFrom::Start(from as u64))?;
    let mut chunk = [0u8; 4096];
    let mut carry = 0usize;
    let mut pos = from;
    while pos < to {
        let want = (to - pos).min(chunk.len() - carry);
        let n = cursor.read(&mut chunk[carry..carry + want])?;
        if n == 0 {
            break;
        }
        let filled = carry + n;
        if let Some(i) = finder.find(&chunk[..filled]) {
            return Ok(Some(pos - carry + i));
        }
        pos += n;
        // Keep the last needle-1 bytes: a match may straddle two chunks.
        let keep = (needle.len() - 1).min(filled);
        chunk.copy_within(filled - keep..filled, 0);
        carry = keep;
    }
    Ok(None)
}

/// `sy.header(data, from, to, name, compact?)`: the value of the first header line named
/// `name` (or its one-letter `compact` form), compared without regard to case, among the
/// lines of `data[from, to)` (`from` at a line's start; lines end in CRLF): its offset and
/// length, without the spaces around it, continuation lines included; or nil. For
/// text-header protocols (SIP, HTTP). Runs in the host.
pub(super) fn header(
    _: &Lua,
    (data, from, to, name, compact): (
        Buffer,
        usize,
        usize,
        mlua::LuaString,
        Option<mlua::LuaString>,
    ),
) -> mlua::Result<(Option<usize>, Option<usize>)> {
    use std::io::{Read, Seek, SeekFrom};
    let to = to.min(data.len());
    if from >= to {
        return Ok((None, None));
    }
    thread_local! {
        /// The head being searched, copied out of the script's buffer (reused).
        static HEAD: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    HEAD.with(|head| {
        let mut head = head.borrow_mut();
        head.clear();
        head.resize(to - from, 0);
        let mut cursor = data.cursor();
        cursor.seek(SeekFrom::Start(from as u64))?;
        cursor.read_exact(&mut head)?;
        let compact = compact.as_ref().map(|c| c.as_bytes());
        let found = find_header(&head, &name.as_bytes(), compact.as_deref());
        if head.capacity() > 64 << 10 {
            *head = Vec::new(); // a huge head's memory back
        }
        Ok(match found {
            Some((off, len)) => (Some(from + off), Some(len)),
            None => (None, None),
        })
    })
}

/// [`header`] on plain bytes: the value span of the first line named `name` or `compact`.
pub(super) fn find_header(
    head: &[u8],
    name: &[u8],
    compact: Option<&[u8]>,
) -> Option<(usize, usize)> {
    let is_ws = |b: u8| b == b' ' || b == b'\t';
    // The end of the line starting at `from`: its CRLF, or the end of the head.
    let line_end = |from: usize| {
        let mut at = from;
        while let Some(i) = memchr::memchr(b'\n', &head[at..]) {
            if at + i > 0 && head[at + i - 1] == b'\r' {
                return at + i - 1;
            }
            at += i + 1;
        }
        head.len()
    };
    let mut pos = 0;
    while pos < head.len() {
        let end = line_end(pos);
        let line = &head[pos..end];
        if let Some(colon) = memchr::memchr(b':', line) {
            let mut n = &line[..colon];
            while n.last().is_some_and(|b| is_ws(*b)) {
                n = &n[..n.len() - 1];
            }
            let named = n.eq_ignore_ascii_case(name)
                || compact.is_some_and(|c| !c.is_empty() && n.eq_ignore_ascii_case(c));
            if named && !n.is_empty() {
                // The value runs on over continuation lines (starting with a space or tab).
                let mut vend = end;
                while vend + 2 < head.len() && is_ws(head[vend + 2]) {
                    vend = line_end(vend + 2);
                }
                let mut start = pos + colon + 1;
                while start < vend && is_ws(head[start]) {
                    start += 1;
                }
                let mut stop = vend;
                while stop > start && is_ws(head[stop - 1]) {
                    stop -= 1;
                }
                return Some((start, stop - start));
            }
        }
        if end >= head.len() {
            break;
        }
        pos = end + 2;
    }
    None
}
