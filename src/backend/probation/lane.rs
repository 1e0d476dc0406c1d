//! One probation lane: takes the waiting requests of a dead connection one at a time and
//! re-sends each alone on its own connection (a fresh one, or the lane's last while it is
//! still open), then settles it: answered, held as a suspect, or failed.

use super::{judge, lost, stop, BackendConn, Retry, JUDGE_WAIT, KILLS_IN_A_ROW};
use crate::backend::handshake;
use crate::registry::Registry;
use crate::transport::Stream;
use bytes::{Buf, BytesMut};
use std::rc::Rc;
use std::time::{Duration, Instant};
use switchyard_core::{BackendFault, Fault};
use switchyard_proto::{
    parse_proxy_id, CodecError, Correlation, Direction, Flags, FrameSet, Framer, Protocols,
};

/// How one request fared on probation.
enum Outcome {
    Answered,
    /// The connection died with it alone in flight; `fresh`: it was the connection's first.
    Killed {
        reason: String,
        fresh: bool,
    },
    /// It could not be tried: the backend cannot be reached, or the answers cannot be framed.
    Untried(Fault),
    /// It was tried and failed without blame (no answer in time, the answer script failed).
    Failed(Fault),
}

/// One probation connection, with what it read and has not framed yet.
struct LaneConn {
    stream: Stream,
    framer: Box<dyn Framer>,
    rbuf: BytesMut,
    frames: FrameSet,
    /// Requests answered on it.
    served: u32,
}

impl LaneConn {
    /// Room in the read buffer for the next read.
    fn room(&mut self) {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(16 << 10);
        }
    }
}

/// One lane: takes waiting requests one at a time and re-sends each alone.
pub(super) async fn lane(
    conn: Rc<BackendConn>,
    protocols: Protocols,
    max_frame: usize,
    registry: Rc<Registry>,
) {
    let mut link: Option<LaneConn> = None;
    // A request whose reused connection died: it goes again alone on a fresh one.
    let mut unsure: Option<Retry> = None;
    while let Some(p) = unsure.take().or_else(|| conn.probation.next()) {
        let client = p.sink().client_id();
        let done = match try_one(&conn, &mut link, p, &protocols, max_frame, &registry).await {
            Tried::Done => true,
            Tried::Again(p) => {
                unsure = Some(p);
                false
            }
            Tried::Unreachable(fault) => {
                // The backend cannot be reached: nothing waiting can be tried now.
                for rest in conn.probation.take_all() {
                    rest.fail(&fault, &conn);
                    rest.sink().retrying(false);
                }
                conn.probation.release(client);
                registry.flush_clients();
                break;
            }
        };
        if done {
            conn.probation.release(client);
        }
        registry.flush_clients();
    }
    conn.probation.lanes.set(conn.probation.lanes.get() - 1);
    if conn.probation.lanes.get() == 0 && !conn.probation.suspects.borrow().is_empty() {
        // Give the backend a moment to show it is alive (answers on other connections):
        // a suspect is blamed only on a live backend.
        let deadline = Instant::now() + JUDGE_WAIT;
        while !conn.probation.backend_answered(&conn) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if conn.probation.lanes.get() == 0 {
            judge(&conn, &registry);
        }
    }
}

/// What became of one request a lane took.
enum Tried {
    /// Answered, failed or held as a suspect: the lane goes on to the next.
    Done,
    /// Its reused connection died: it goes again, alone on a fresh connection.
    Again(Retry),
    /// The backend cannot be reached (it failed with this).
    Unreachable(Fault),
}

/// Re-sends `p` alone on the lane's connection (opened if there is none) and settles it.
async fn try_one(
    conn: &Rc<BackendConn>,
    link: &mut Option<LaneConn>,
    p: Retry,
    protocols: &Protocols,
    max_frame: usize,
    registry: &Registry,
) -> Tried {
    if p.sink().is_gone() {
        p.sink().retrying(false);
        return Tried::Done;
    }
    if conn.probation.suspected(p.sink().client_id()) {
        p.fail(
            &lost(
                conn,
                "not re-sent: another request of this client closed the backend's connection again when re-sent alone",
            ),
            conn,
        );
        p.sink().retrying(false);
        return Tried::Done;
    }
    if link.as_mut().is_some_and(|l| !still_open(l)) {
        *link = None;
    }
    let outcome = match link.as_mut() {
        Some(l) => exchange(conn, l, &p, protocols, registry).await,
        None => match open(conn, protocols, max_frame).await {
            Ok(l) => exchange(conn, link.insert(l), &p, protocols, registry).await,
            Err(fault) => Outcome::Untried(fault),
        },
    };
    let probation = &conn.probation;
    match outcome {
        Outcome::Answered => {
            probation.kills_in_a_row.set(0);
            probation.hold_off.set(Duration::ZERO);
            conn.counters.retries_answered.inc();
        }
        Outcome::Killed { fresh: false, .. } => {
            *link = None;
            return Tried::Again(p);
        }
        Outcome::Killed {
            reason,
            fresh: true,
        } if !probation.open(Instant::now()) => {
            // Probation stopped meanwhile (the backend closes on everything).
            *link = None;
            p.fail(&lost(conn, &reason), conn);
        }
        Outcome::Killed {
            reason,
            fresh: true,
        } => {
            *link = None;
            let kills = probation.killed(conn);
            probation.suspects.borrow_mut().push((p, reason.clone()));
            if kills >= KILLS_IN_A_ROW {
                stop(conn, &reason);
            }
            return Tried::Done; // judged when the lanes are done
        }
        Outcome::Untried(fault) => {
            p.fail(&fault, conn);
            p.sink().retrying(false);
            return Tried::Unreachable(fault);
        }
        Outcome::Failed(fault) => {
            *link = None;
            p.fail(&fault, conn);
        }
    }
    p.sink().retrying(false);
    Tried::Done
}

/// Whether a lane's connection may carry the next request: the backend has not closed it
/// (it may close right after an answer, as Redis does after a protocol error). Bytes that
/// came meanwhile stay in its buffer, for the next exchange to frame.
fn still_open(l: &mut LaneConn) -> bool {
    l.room();
    match l.stream.try_read(&mut l.rbuf, 16 << 10) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

/// A fresh probation connection to `conn`'s backend, with the protocol's handshake.
async fn open(
    conn: &BackendConn,
    protocols: &Protocols,
    max_frame: usize,
) -> Result<LaneConn, Fault> {
    let config = conn.upstream.borrow().config.clone();
    let lost = |reason: String| {
        lost(
            conn,
            &format!("the connection died with the request in flight, and re-sending it failed: {reason}"),
        )
    };
    let attempt = tokio::time::timeout(
        config.pool.connect_timeout,
        handshake::connect(conn.backend.address, protocols, &config),
    )
    .await;
    let stream = match attempt {
        Ok(Ok(s)) => {
            conn.counters.connects.inc();
            s
        }
        Ok(Err(e)) => {
            conn.counters.connect_failures.inc();
            return Err(lost(e));
        }
        Err(_) => {
            conn.counters.connect_failures.inc();
            return Err(lost(format!(
                "connect timed out after {:?}",
                config.pool.connect_timeout
            )));
        }
    };
    let framer = protocols
        .answers
        .framer(Direction::Answers, max_frame)
        .map_err(|e| lost(format!("cannot frame answers: {e}")))?;
    Ok(LaneConn {
        stream,
        framer,
        rbuf: BytesMut::with_capacity(16 << 10),
        frames: FrameSet::new(),
        served: 0,
    })
}

/// How an exchange ended short of its answer.
enum Short {
    /// The connection died (closed, an I/O error, a bad answer).
    Died(String),
    /// It failed without blame on the request (the answer script failed).
    Failed(Fault),
}

/// Sends `p` alone on `l` and waits, within the request timeout, for its answer (anything
/// else the backend sends meanwhile is a push).
async fn exchange(
    conn: &BackendConn,
    l: &mut LaneConn,
    p: &Retry,
    protocols: &Protocols,
    registry: &Registry,
) -> Outcome {
    let fresh = l.served == 0;
    let request = &*p.bytes;
    let by_id = protocols.correlation == Correlation::ById;
    let answer_ids = protocols.answers.capabilities().id_format;
    // The id the request carries (the dead connection's proxy id): its answer has it.
    let want = p.pending.placed.id_at().filter(|_| by_id).and_then(|at| {
        parse_proxy_id(
            protocols.requests.capabilities().id_format,
            at.slice(request),
        )
    });
    conn.backend.load.on_sent(true);
    conn.counters.on_request(request.len());
    let sent = Instant::now();
    let timeout = conn.upstream.borrow().config.request_timeout;
    let answered = tokio::time::timeout(timeout, async {
        l.stream
            .write_all(request)
            .await
            .map_err(|e| Short::Died(format!("write failed: {e}")))?;
        loop {
            match l.framer.scan(&l.rbuf, &mut l.frames) {
                Ok(()) => {}
                Err(CodecError::Script(m)) => {
                    return Err(Short::Failed(Fault::Script(format!(
                        "the answer script failed: {m}"
                    ))))
                }
                Err(e) => return Err(Short::Died(format!("bad answer from backend: {e}"))),
            }
            let mut found = false;
            let mut frames = std::mem::take(&mut l.frames);
            for f in frames.drain(..) {
                let len = f.len as usize;
                let frame = &l.rbuf[..len];
                let id =
                    f.id.and_then(|s| parse_proxy_id(answer_ids, s.slice(frame)));
                // What answers nothing (a keep-alive, the backend's own request) is not
                // the answer; a provisional answer goes to the client, and the final one
                // is still awaited.
                let marks = f.flags;
                let answers = !found
                    && !marks.has(Flags::REQUEST | Flags::LOCAL | Flags::DROP)
                    && (!by_id || id == want);
                if marks.has(Flags::LOCAL | Flags::DROP) {
                    conn.counters.on_answer(len, None);
                } else if answers && marks.has(Flags::PROVISIONAL) {
                    conn.counters.on_answer(len, None);
                    p.sink().provisional(&p.pending.ticket, frame, f.id);
                    registry.defer_flush(p.sink());
                } else if answers {
                    found = true;
                    let latency = sent.elapsed();
                    conn.counters.on_answer(len, Some(latency));
                    conn.backend.on_answer(latency);
                    p.sink().answer(&p.pending.ticket, frame, f.id);
                    conn.done(&p.pending.ticket);
                    registry.defer_flush(p.sink());
                } else {
                    conn.counters.on_answer(len, None);
                    crate::backend::pump::route_push(conn, registry, frame, &f);
                }
                l.rbuf.advance(len);
            }
            l.frames = frames;
            if found {
                return Ok(());
            }
            l.room();
            match l.stream.read(&mut l.rbuf, 16 << 10).await {
                Ok(0) => return Err(Short::Died("backend closed the connection".into())),
                Ok(_) => {}
                Err(e) => return Err(Short::Died(format!("read failed: {e}"))),
            }
        }
    })
    .await;
    let short = match answered {
        Ok(Ok(())) => {
            l.served += 1;
            return Outcome::Answered;
        }
        Ok(Err(Short::Died(reason))) => Outcome::Killed { reason, fresh },
        Ok(Err(Short::Failed(fault))) => Outcome::Failed(fault),
        Err(_) => Outcome::Failed(
            BackendFault::TimedOut {
                backend: conn.backend.name.clone(),
                after: timeout,
            }
            .into(),
        ),
    };
    conn.backend.load.on_failed();
    short
}
