#!/usr/bin/env python3
"""Writes the hand-made seed inputs under fuzz/seeds/<target>/ (run from anywhere; the
files are kept in the repository, this only documents and regenerates them). Each input
follows the layout described at the top of fuzz/fuzz_targets/<target>.rs."""
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def max_frame(n):  # inverse of 16 + v % 65521
    assert 16 <= n <= 65536
    return struct.pack("<H", n - 16)


def reads(*sizes):  # count byte, then 1 + b per read
    assert len(sizes) < 16 and all(1 <= s <= 256 for s in sizes)
    return bytes([len(sizes)] + [s - 1 for s in sizes])


def lf_flags(offset, width, little=False, key=False, ident=False):
    return bytes([offset | ([1, 2, 4, 8].index(width) << 3) | (0x20 if little else 0)
                  | (0x40 if key else 0) | (0x80 if ident else 0)])


def lf_adjust(a):  # inverse of b % 33 - 16
    return bytes([a + 16])


# --- length_field -------------------------------------------------------------------------
# examples/orders.toml: u32 BE body length, key {4, 8}, id {12, 4}.
def order(key, ident, body):
    rest = struct.pack(">QI", key, ident) + body
    return struct.pack(">I", len(rest)) + rest


orders = order(42, 1, b"buy 10") + order(7, 2, b"") + order(42, 3, b"sell 5 @ 99")
write("length_field", "orders_u32be_key_id",
      lf_flags(0, 4, key=True, ident=True) + lf_adjust(0) + bytes([4, 7, 12, 3])
      + max_frame(1024) + reads(3, 9, 1, 20) + orders)
# examples/telemetry.toml: u16 LE at offset 2 counting the whole frame (adjust -4).
def telem(body):
    return b"\xab\xcd" + struct.pack("<H", 4 + len(body)) + body


write("length_field", "telemetry_u16le_whole_frame",
      lf_flags(2, 2, little=True) + lf_adjust(-4) + max_frame(256) + reads(5, 5)
      + telem(b"cpu=3") + telem(b"") + telem(b"mem=512"))
# u8 length, key {1, 2}; the last frame is incomplete.
write("length_field", "u8_key_partial",
      lf_flags(0, 1, key=True) + lf_adjust(0) + bytes([1, 1]) + max_frame(64) + reads(1, 1, 1)
      + b"\x03ab!" + b"\x02cd" + b"\x05ef")
# u64 LE length, id {8, 8}, split mid-header.
write("length_field", "u64le_id",
      lf_flags(0, 8, little=True, ident=True) + lf_adjust(0) + bytes([8, 7]) + max_frame(4096)
      + reads(3, 7, 6)
      + struct.pack("<Q", 8) + struct.pack(">Q", 99) + struct.pack("<Q", 9) + b"\0" * 8 + b"x")
# A frame over max_frame after a good one: the stream must fail the same way in reads.
write("length_field", "too_large_after_good",
      lf_flags(0, 2) + lf_adjust(0) + max_frame(16) + reads(2)
      + b"\x00\x01z" + b"\x00\xffxxxx")

# --- delimiter ----------------------------------------------------------------------------
def tok(n):  # inverse of b % 5 (4 = none)
    return bytes([4 if n is None else n])


# examples/lines.toml: CRLF lines "ID KEY ...", with a CRLF split across two reads.
write("delimiter", "crlf_id_key",
      b"\x01" + tok(1) + tok(0) + max_frame(8192) + reads(4, 1, 13)
      + b"17 alice  hello\r\n18\tbob\r\n19 carol x\r\npartial")
write("delimiter", "lf_only_key",
      b"\x00" + tok(0) + tok(None) + max_frame(64) + reads(1, 1, 1)
      + b"only\n\n  spaced   key \nno-newline")
# A custom two-byte delimiter "||" (kind 6: 6 % 4 = 2, 1 + (6 >> 2) % 3 = 2 bytes).
write("delimiter", "custom_pipes",
      b"\x06||" + tok(2) + tok(0) + max_frame(32) + reads(3, 2)
      + b"1 a b||2 c d|||3 e f||")
# A self-overlapping three-byte delimiter "aab" (kind 10: 1 + (10 >> 2) % 3 = 3 bytes).
write("delimiter", "overlapping_aab",
      b"\x0aaab" + tok(0) + tok(1) + max_frame(16) + reads(2, 1, 1, 3)
      + b"xaaaab" + b"k aab" + b"aab")
# A line longer than max_frame (16).
write("delimiter", "too_long", b"\x00" + tok(0) + tok(1) + max_frame(16) + reads(4)
      + b"ok 1\n" + b"x" * 40 + b"\n")

# --- proxy_id -----------------------------------------------------------------------------
for width, raw, rest in [(4, 1, b"\x00\x00\x00\x01"), (1, 300, b"\xff"),
                         (8, 2**64 - 1, b"\x01" * 8), (2, 65536, b"12345"),
                         (3, 10**18, b"9999999999999999999")]:
    write("proxy_id", f"w{width}_{raw}", bytes([width - 1]) + struct.pack("<Q", raw) + rest)

# --- dns ----------------------------------------------------------------------------------
def dns_query(ident, name, qtype=1, flags=0x0100, qd=1):
    m = struct.pack(">HHHHHH", ident, flags, qd, 0, 0, 0)
    for label in name.split("."):
        m += bytes([len(label)]) + label.encode()
    m += b"\0" + struct.pack(">HH", qtype, 1)
    return struct.pack(">H", len(m)) + m


def dns_guard(min_frame=0, offset=0, mask=0, value=0):
    return bytes([min_frame, offset, mask, value])


queries = dns_query(1, "www.example.test") + dns_query(2, "WWW.Example.TEST", 28) \
    + dns_query(3, "other.test")
write("dns", "queries_keyed_dns_like_guard",
      bytes([2]) + max_frame(4096) + dns_guard(14, 4, 0xF8, 0) + reads(1, 10, 30) + queries)
write("dns", "qr_set_after_good",
      bytes([0]) + max_frame(4096) + dns_guard() + reads(7)
      + dns_query(1, "a.test") + dns_query(2, "b.test", flags=0x8100))
write("dns", "short_and_update",
      bytes([0]) + max_frame(512) + dns_guard(14) + reads(3)
      + dns_query(9, "c.test", flags=0x2800) + b"\x00\x04abcd")
write("dns", "answers",
      bytes([1]) + max_frame(4096) + dns_guard() + reads(2, 2)
      + dns_query(1, "a.test", flags=0x8180) + dns_query(2, "b.test", flags=0x8182))

# --- proxy_header -----------------------------------------------------------------------
# The raw input is parsed as it is, then its bytes choose an encoded header (see the target).
V2SIG = b"\r\n\r\n\x00\r\nQUIT\n"
write("proxy_header", "v1_tcp4", b"PROXY TCP4 192.0.2.1 198.51.100.2 51000 6379\r\n*1\r\n$4\r\nPING\r\n")
write("proxy_header", "v1_tcp6", b"PROXY TCP6 2001:db8::1 2001:db8::2 51000 443\r\n")
write("proxy_header", "v1_unknown", b"PROXY UNKNOWN\r\n")
write("proxy_header", "v1_cut", b"PROXY TCP4 192.0.2.1 198.")
write("proxy_header", "v2_tcp4", V2SIG + b"\x21\x11\x00\x0c" + bytes([192, 0, 2, 1, 198, 51, 100, 2]) + b"\xc7\x38\x18\xeb" + b"rest")
write("proxy_header", "v2_local", V2SIG + b"\x20\x00\x00\x00")
write("proxy_header", "v2_tlv", V2SIG + b"\x21\x11\x00\x13" + bytes(12) + b"\x04\x00\x04abcd")
write("proxy_header", "v2_too_long", V2SIG + b"\x21\x11\xff\xff")
write("proxy_header", "not_a_header", b"GET / HTTP/1.1\r\n\r\n")

# --- config -------------------------------------------------------------------------------
os.makedirs(os.path.join(HERE, "config"), exist_ok=True)
for name in ("orders", "lines", "telemetry", "dns"):
    shutil.copy(os.path.join(ROOT, "examples", name + ".toml"), os.path.join(HERE, "config", name + ".toml"))
write("config", "minimal_delimiter.toml", b'''workers = 1
[[listener]]
name = "l"
listen = "127.0.0.1:0"
cluster = "c"
[listener.codec]
kind = "delimiter"

[[cluster]]
name = "c"
backends = [{ address = "localhost:9000" }]
''')
