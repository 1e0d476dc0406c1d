//! The soak's clients: one protocol per mode ([`Load`]), and one long-lived client task
//! offering a fixed rate and checking every answer.

use super::mode::Mode;
use crate::demo::proto;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Mutex;

/// What the clients share with the measuring thread.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) sent: AtomicU64,
    pub(super) answered: AtomicU64,
    /// The first wrong or missing answer.
    pub(super) error: Mutex<Option<String>>,
    pub(super) stop: AtomicBool,
}

impl Counters {
    pub(super) fn fail(&self, e: String) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
    }
}

/// One client's protocol: its requests, how answers are cut, and how each is checked.
pub(super) trait Load: Send {
    /// Appends request number `n`.
    fn request(&mut self, n: u64, out: &mut Vec<u8>);
    /// The length of the answer at the head of `buf`; `Ok(None)`: incomplete.
    fn answer_len(&self, buf: &[u8]) -> Result<Option<usize>, String>;
    /// Checks one answer against the request it answers; returns how many requests it
    /// completed (a provisional answer completes none).
    fn check(&mut self, answer: &[u8]) -> Result<u64, String>;
    /// Requests awaiting answers.
    fn in_flight(&self) -> usize;
    /// What the answers checked so far ask to send next (a SIP call's ACK and BYE).
    fn follow_up(&mut self, _out: &mut Vec<u8>) {}
}

pub(super) fn load_for(mode: Mode, client: u64) -> Box<dyn Load> {
    match mode {
        Mode::ById | Mode::Lua | Mode::Poison | Mode::Observed => {
            Box::new(Demo::new(client, false))
        }
        Mode::Dns => Box::new(Dns::new(client)),
        Mode::InOrder => Box::new(Demo::new(client, true)),
        Mode::None => Box::new(Demo::new(client, false)),
        Mode::Delimiter => Box::new(Lines::new(client)),
        Mode::Resp | Mode::Tls => Box::new(Redis::new(client)),
        Mode::Sip => Box::new(SipCalls::new(client)),
    }
}

/// Session keys per client.
pub(super) const KEYS: u64 = 16;

/// The demo protocol: answers (or pushes) carry the request's key and payload; `ordered`
/// answers come in request order, the others are found by the payload's number.
struct Demo {
    client: u64,
    ordered: bool,
    fifo: VecDeque<u64>,
    waiting: HashMap<u64, u64>,
}

impl Demo {
    fn new(client: u64, ordered: bool) -> Self {
        Demo {
            client,
            ordered,
            fifo: VecDeque::new(),
            waiting: HashMap::new(),
        }
    }

    fn key(&self, n: u64) -> u64 {
        (self.client << 32) | (n % KEYS)
    }
}

impl Load for Demo {
    fn request(&mut self, n: u64, out: &mut Vec<u8>) {
        let mut payload = [0u8; 32];
        payload[..8].copy_from_slice(&n.to_be_bytes());
        payload[8..16].copy_from_slice(&self.client.to_be_bytes());
        proto::write_request(out, self.key(n), n as u32, &payload);
        if self.ordered {
            self.fifo.push_back(n);
        } else {
            self.waiting.insert(n, self.key(n));
        }
    }

    fn answer_len(&self, buf: &[u8]) -> Result<Option<usize>, String> {
        let Some(head) = buf.get(..4) else {
            return Ok(None);
        };
        let len = 4 + u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        Ok((buf.len() >= len).then_some(len))
    }

    fn check(&mut self, answer: &[u8]) -> Result<u64, String> {
        let m = proto::parse(answer).ok_or("answer too short")?;
        let (_, payload) = proto::answer_parts(m.rest).ok_or("malformed answer")?;
        let n = payload
            .get(..8)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()))
            .ok_or("answer without its payload")?;
        let want = if self.ordered {
            self.fifo
                .pop_front()
                .filter(|w| *w == n)
                .map(|w| self.key(w))
        } else {
            self.waiting.remove(&n)
        };
        match want {
            Some(key) if key == m.key && (self.ordered || m.id == n as u32 || m.id == u32::MAX) => {
                Ok(1)
            }
            _ => Err(format!(
                "answer for request {n} (key {}, id {}) matches nothing sent",
                m.key, m.id
            )),
        }
    }

    fn in_flight(&self) -> usize {
        self.fifo.len() + self.waiting.len()
    }
}

/// The line protocol: `KEY ID PAYLOAD`, answered `KEY ID NAME PAYLOAD`, ids in text.
struct Lines {
    client: u64,
    waiting: HashMap<u64, u64>,
}

impl Lines {
    fn new(client: u64) -> Self {
        Lines {
            client,
            waiting: HashMap::new(),
        }
    }
}

impl Load for Lines {
    fn request(&mut self, n: u64, out: &mut Vec<u8>) {
        let key = n % KEYS;
        out.extend_from_slice(format!("c{}k{key} {n} payload-{n}\n", self.client).as_bytes());
        self.waiting.insert(n, key);
    }

    fn answer_len(&self, buf: &[u8]) -> Result<Option<usize>, String> {
        Ok(memchr::memchr(b'\n', buf).map(|i| i + 1))
    }

    fn check(&mut self, answer: &[u8]) -> Result<u64, String> {
        let text = std::str::from_utf8(answer).map_err(|e| e.to_string())?;
        let words: Vec<&str> = text.split_whitespace().collect();
        let [key, id, _name, payload] = words[..] else {
            return Err(format!("malformed answer {text:?}"));
        };
        let n: u64 = id.parse().map_err(|_| format!("bad id in {text:?}"))?;
        let want = self.waiting.remove(&n);
        if want.map(|k| format!("c{}k{k}", self.client)).as_deref() == Some(key)
            && payload == format!("payload-{n}")
        {
            Ok(1)
        } else {
            Err(format!("answer {text:?} matches nothing sent"))
        }
    }

    fn in_flight(&self) -> usize {
        self.waiting.len()
    }
}

/// Redis: SET a key, then GET it back; answers in order.
struct Redis {
    client: u64,
    expected: VecDeque<Vec<u8>>,
}

impl Redis {
    fn new(client: u64) -> Self {
        Redis {
            client,
            expected: VecDeque::new(),
        }
    }
}

impl Load for Redis {
    fn request(&mut self, n: u64, out: &mut Vec<u8>) {
        let key = format!("soak:{}:{}", self.client, (n / 2) % (KEYS * 4));
        if n % 2 == 0 {
            let value = format!("v{n}");
            let cmd = switchyard_proto::resp::build(b"SET", &[key.as_bytes(), value.as_bytes()]);
            out.extend_from_slice(&cmd.frame);
            self.expected.push_back(b"+OK\r\n".to_vec());
        } else {
            let cmd = switchyard_proto::resp::build(b"GET", &[key.as_bytes()]);
            out.extend_from_slice(&cmd.frame);
            let value = format!("v{}", n - 1);
            self.expected
                .push_back(format!("${}\r\n{value}\r\n", value.len()).into_bytes());
        }
    }

    fn answer_len(&self, buf: &[u8]) -> Result<Option<usize>, String> {
        switchyard_proto::resp::value_len(buf, 1 << 20).map_err(|e| e.to_string())
    }

    fn check(&mut self, answer: &[u8]) -> Result<u64, String> {
        match self.expected.pop_front() {
            Some(want) if want == answer => Ok(1),
            want => Err(format!(
                "expected {:?}, got {:?}",
                want.map(|w| String::from_utf8_lossy(&w).into_owned()),
                String::from_utf8_lossy(answer)
            )),
        }
    }

    fn in_flight(&self) -> usize {
        self.expected.len()
    }
}

/// SIP calls: request `n` is call `n` (an INVITE); its 100 and 180 must come before its
/// 200, which the caller ACKs and follows with a BYE; the BYE's 200 completes the call.
/// Every answer must carry its request's Call-ID and CSeq.
struct SipCalls {
    client: u64,
    /// Calls in progress: Call-ID → answers seen (1xx count), whether the BYE went.
    calls: HashMap<String, (u8, bool)>,
    /// ACK and BYE to send, for calls whose INVITE got its 200.
    next: Vec<u8>,
}

impl SipCalls {
    fn new(client: u64) -> Self {
        SipCalls {
            client,
            calls: HashMap::new(),
            next: Vec::new(),
        }
    }
}

impl Load for SipCalls {
    fn request(&mut self, n: u64, out: &mut Vec<u8>) {
        let call = format!("soak-{}-{n}@127.0.0.1", self.client);
        out.extend_from_slice(&crate::demo::sip::request("INVITE", &call, 1, None));
        self.calls.insert(call, (0, false));
    }

    fn answer_len(&self, buf: &[u8]) -> Result<Option<usize>, String> {
        Ok(crate::demo::sip::parse(buf)?.map(|(len, _)| len))
    }

    fn check(&mut self, answer: &[u8]) -> Result<u64, String> {
        let Some((_, Some(m))) = crate::demo::sip::parse(answer)? else {
            return Err("a keep-alive where an answer was due".into());
        };
        let call = m.header("call-id").ok_or("an answer without a Call-ID")?;
        let cseq = m
            .header("cseq")
            .ok_or("an answer without a CSeq")?
            .to_string();
        let status = m
            .status()
            .ok_or_else(|| format!("not an answer: {}", m.start))?;
        let Some(state) = self.calls.get_mut(call) else {
            return Err(format!(
                "an answer for call {call}, which is not in progress"
            ));
        };
        match (cseq.as_str(), status, state.1) {
            ("1 INVITE", 100 | 180, false) => {
                state.0 += 1;
                Ok(0)
            }
            ("1 INVITE", 200, false) if state.0 == 2 => {
                state.1 = true;
                let tag = m
                    .header("to")
                    .and_then(|t| t.split(";tag=").nth(1))
                    .ok_or("a 200 without a To tag")?
                    .to_string();
                let call = call.to_string();
                self.next
                    .extend_from_slice(&crate::demo::sip::request("ACK", &call, 1, Some(&tag)));
                self.next
                    .extend_from_slice(&crate::demo::sip::request("BYE", &call, 2, Some(&tag)));
                Ok(0)
            }
            ("2 BYE", 200, true) => {
                self.calls.remove(call);
                Ok(1)
            }
            _ => Err(format!(
                "call {call}: {status} for {cseq} out of place ({} provisional so far, BYE sent: {})",
                state.0, state.1
            )),
        }
    }

    fn in_flight(&self) -> usize {
        self.calls.len()
    }

    fn follow_up(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.next);
    }
}

/// Names in the DNS mode's zone.
pub(super) const DNS_NAMES: u32 = 1000;

/// DNS queries for names of the test zone, ids counting from 0 on every client (so they
/// collide across clients); each answer must carry its query's id, NOERROR and the name's
/// address.
struct Dns {
    client: u64,
    waiting: HashMap<u16, u32>,
}

impl Dns {
    fn new(client: u64) -> Self {
        Dns {
            client,
            waiting: HashMap::new(),
        }
    }
}

/// The first A record's address in DNS message `m` (without its length) and its rcode.
fn dns_answer(m: &[u8]) -> Option<(u16, u8, [u8; 4])> {
    let skip_name = |mut i: usize| -> Option<usize> {
        loop {
            let len = *m.get(i)? as usize;
            if len & 0xc0 == 0xc0 {
                return Some(i + 2);
            }
            i += 1 + len;
            if len == 0 {
                return Some(i);
            }
        }
    };
    let id = u16::from_be_bytes([*m.first()?, *m.get(1)?]);
    let rcode = m.get(3)? & 0x0f;
    let at = skip_name(12)? + 4; // the question
    let rr = skip_name(at)?;
    let rdata = m.get(rr + 10..rr + 14)?;
    Some((id, rcode, [rdata[0], rdata[1], rdata[2], rdata[3]]))
}

impl Load for Dns {
    fn request(&mut self, n: u64, out: &mut Vec<u8>) {
        let i = ((self.client * 7919 + n * 13) % u64::from(DNS_NAMES)) as u32;
        let id = n as u16;
        out.extend_from_slice(&switchyard_proto::dns::query(
            id,
            &format!("n{i}.example.test"),
            1,
        ));
        self.waiting.insert(id, i);
    }

    fn answer_len(&self, buf: &[u8]) -> Result<Option<usize>, String> {
        let Some(head) = buf.get(..2) else {
            return Ok(None);
        };
        let len = 2 + usize::from(u16::from_be_bytes([head[0], head[1]]));
        Ok((buf.len() >= len).then_some(len))
    }

    fn check(&mut self, answer: &[u8]) -> Result<u64, String> {
        let (id, rcode, a) = dns_answer(&answer[2..]).ok_or("a DNS answer without an A record")?;
        match self.waiting.remove(&id) {
            Some(i) if rcode == 0 && a == crate::demo::nsd::address_of(i) => Ok(1),
            Some(i) => Err(format!(
                "query n{i} (id {id}) got rcode {rcode}, address {a:?}"
            )),
            None => Err(format!("answer id {id} matches no query")),
        }
    }

    fn in_flight(&self) -> usize {
        self.waiting.len()
    }
}
