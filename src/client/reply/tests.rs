//! The reply handle alone: order restored, splits gathered and handed back, ids restored,
//! error answers, bounds.

use super::*;
use bytes::BytesMut;
use switchyard_core::BackendFault;
use switchyard_core::ReplySink;
use switchyard_proto::memcache::MemcacheProtocol;
use switchyard_proto::Part;

fn client_of(protocol: Arc<dyn Protocol>, ordered: bool, bound: usize) -> Client {
    Client::new(
        1,
        "127.0.0.1:1".parse().unwrap(),
        protocol,
        if ordered {
            (switchyard_proto::Correlation::InOrder, false)
        } else {
            (switchyard_proto::Correlation::ById, true)
        },
        bound,
        Default::default(),
    )
}

fn client(bound: usize) -> Client {
    client_of(Arc::new(MemcacheProtocol), true, bound)
}

fn output(c: &Client) -> Vec<u8> {
    let mut b = BytesMut::new();
    c.take_output(&mut b);
    b.to_vec()
}

fn ticket(c: &Client) -> Ticket {
    c.ticket(None, None, None)
}

#[test]
fn in_order_answers_are_restored_to_request_order() {
    let c = client(1 << 20);
    let t: Vec<Ticket> = (0..4).map(|_| ticket(&c)).collect();
    c.answer(&t[2], b"C", None);
    c.answer(&t[1], b"B", None);
    assert_eq!(output(&c), b"");
    c.answer(&t[0], b"A", None);
    assert_eq!(output(&c), b"ABC");
    c.answer(&t[3], b"D", None);
    assert_eq!(output(&c), b"D");
    assert_eq!(c.inflight(), 0);
}

fn get(key: &str) -> Part {
    Part {
        frame: Bytes::from(format!("get {key}\r\n")),
        key: (4, key.len()),
        args_at: 4,
        argc: 1,
    }
}

#[test]
fn a_joined_part_is_answered_per_member_and_handed_back_split() {
    let c = client(1 << 20);
    let p = MemcacheProtocol;
    let seq = c.begin_split(3, Merge::MemcacheValues);
    let members = vec![(0u16, get("a")), (2u16, get("c"))];
    let joined = p.join(Merge::MemcacheValues, &[&members[0].1, &members[1].1]);
    assert_eq!(joined.frame, Bytes::from_static(b"get a c\r\n"));
    c.joined(seq, 0, members.clone());
    let part = |n: u16| Ticket {
        seq,
        part: Some(n),
        orig_id: None,
        key: None,
        end_session: None,
    };
    // Handed back unwritten: it comes back as its two parts, keyed by their own keys.
    c.hand_back(Some(part(0)), joined.frame.clone(), None, true);
    let back: Vec<Requeued> = std::iter::from_fn(|| c.take_requeued()).collect();
    assert_eq!(back.len(), 2);
    assert_eq!(back[0].frame, members[0].1.frame);
    assert_eq!(back[1].ticket.as_ref().unwrap().part, Some(2));
    assert_eq!(back[1].frame, members[1].1.frame);
    // Sent joined again; its answer fills both members' places, part 1 its own.
    c.joined(seq, 0, members);
    c.answer(&part(0), b"VALUE c 0 1\r\nz\r\nEND\r\n", None);
    assert_eq!(output(&c), b"");
    c.answer(&part(1), b"VALUE b 0 1\r\ny\r\nEND\r\n", None);
    assert_eq!(
        output(&c),
        b"VALUE b 0 1\r\ny\r\nVALUE c 0 1\r\nz\r\nEND\r\n"
    );
    assert_eq!(c.inflight(), 0);
}

#[test]
fn by_id_error_answers_go_out_as_they_come_and_hold_nothing() {
    // A by_id client's failed requests are answered straight out: the reorder window,
    // whose base only in_order answers move, must not grow with every failure.
    let c = client_of(Arc::new(MemcacheProtocol), false, 1 << 20);
    let gone: Fault = BackendFault::NoBackend("c".into()).into();
    for _ in 0..10_000 {
        let t = c.ticket(None, Some(b"7"), None);
        c.fail(&t, &gone, None);
        assert_eq!(
            output(&c),
            b"SERVER_ERROR no backend of cluster c can take messages\r\n"
        );
    }
    assert_eq!(c.inflight(), 0);
    assert_eq!(c.order.borrow().slots(), (0, 0));
}

#[test]
fn without_an_error_answer_a_failure_closes_the_client() {
    let c = client_of(
        Arc::new(switchyard_proto::delimiter::DelimiterProtocol::new(
            switchyard_proto::delimiter::DelimiterSpec {
                delimiter: b"\n".to_vec(),
                key_token: None,
                id_token: None,
            },
        )),
        true,
        1 << 20,
    );
    let t = ticket(&c);
    c.fail(&t, &BackendFault::NoBackend("c".into()).into(), None);
    assert_eq!(c.inflight(), 0);
    assert!(c.failure().is_some());
}

#[test]
fn by_id_restores_the_client_id() {
    let c = client_of(Arc::new(MemcacheProtocol), false, 1 << 20);
    let t = c.ticket(None, Some(b"\xAA\xBB\xCC\xDD"), None);
    let frame = b"hdr\x00\x00\x00\x07tail";
    c.answer(&t, frame, Some(Span { offset: 3, len: 4 }));
    assert_eq!(output(&c), b"hdr\xAA\xBB\xCC\xDDtail");
}

#[test]
fn a_client_that_does_not_read_is_failed() {
    let c = client(8);
    assert!(c.push(b"12345"));
    assert!(c.failure().is_none());
    c.push(b"6789");
    assert!(c
        .failure()
        .unwrap()
        .to_string()
        .contains("max_reply_buffer 8"));
    assert!(!c.push(b"x"));
}

#[test]
fn answers_held_for_reordering_count_against_the_bound() {
    let c = client(8);
    let first = ticket(&c);
    let second = ticket(&c);
    c.answer(&second, b"0123456789", None);
    assert!(c.failure().is_some(), "held answers must be bounded too");
    c.answer(&first, b"x", None);
    assert_eq!(output(&c), b"");
}

#[test]
fn an_in_order_client_holds_new_requests_while_one_is_on_probation() {
    let c = client(1 << 20);
    assert!(!c.held_for_retry());
    c.retrying(true);
    c.retrying(true);
    assert!(
        c.held_for_retry(),
        "its next request must not overtake the retry"
    );
    c.retrying(false);
    assert!(c.held_for_retry(), "one is still on probation");
    c.retrying(false);
    assert!(!c.held_for_retry());
    // Answers by id carry no order to keep: nothing is held.
    let by_id = client_of(Arc::new(MemcacheProtocol), false, 1 << 20);
    by_id.retrying(true);
    assert!(!by_id.held_for_retry());
}

/// Provisional answers go out in their request's place; only the final one lets the next
/// request's answers out, and only it ends the request.
#[test]
fn provisional_answers_keep_their_place_and_their_request() {
    let c = client(1 << 20);
    let t: Vec<Ticket> = (0..3).map(|_| ticket(&c)).collect();
    c.provisional(&t[1], b"b1", None);
    c.answer(&t[2], b"C", None);
    c.provisional(&t[0], b"a1", None);
    assert_eq!(
        output(&c),
        b"a1",
        "the first request's provisional answer at once"
    );
    c.provisional(&t[1], b"b2", None);
    c.answer(&t[0], b"A", None);
    assert_eq!(
        output(&c),
        b"Ab1b2",
        "the next request's so far, and no further"
    );
    assert_eq!(
        c.inflight(),
        1,
        "only the second request awaits its final answer"
    );
    c.provisional(&t[1], b"b3", None);
    assert_eq!(output(&c), b"b3", "its request is due now: straight out");
    c.answer(&t[1], b"B", None);
    assert_eq!(output(&c), b"BC");
    assert_eq!(c.inflight(), 0);
}

/// Where answers need no order, a failed request without an error answer is dropped and
/// counted; the client is not closed.
#[test]
fn an_unanswerable_failure_is_dropped_where_answers_need_no_order() {
    let config: switchyard_proto::netstring::Config = toml::from_str("").unwrap();
    let proto: Arc<dyn Protocol> = Arc::new(config.protocol().unwrap());
    let c = client_of(proto.clone(), false, 1 << 20);
    let t = ticket(&c);
    let fault: Fault = switchyard_core::BackendFault::NoBackend("x".into()).into();
    c.fail(&t, &fault, None);
    assert!(c.failure().is_none(), "still open");
    assert_eq!(c.inflight(), 0);
    let dropped: u64 = c.counters.dropped.iter().map(|x| x.get()).sum();
    assert_eq!(dropped, 1);
    // In order, the same failure closes the client (every later answer would shift).
    let c = client_of(proto, true, 1 << 20);
    let t = ticket(&c);
    c.fail(&t, &fault, None);
    assert!(c.failure().is_some());
}
