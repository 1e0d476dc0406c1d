//! Routing a client's requests, one step each: ask the core where the message goes (a
//! [`Route`], decided once), carry that route to a connection of this worker's pool, and
//! record push ownership. Requests handed back by a lost backend connection, and the parts
//! of a split request that could not go yet, are routed before any new request.

use super::listener::ListenerCtx;
use super::reply::{Client, Members, Requeued};
use crate::access_log::Sample;
use crate::backend::PoolTarget;
use crate::backend::{MsgId, Sending};
use bytes::{Buf, BytesMut};
use std::rc::Rc;
use std::time::Instant;
use switchyard_core::balance::How;
use switchyard_core::{BackendFault, Fault, ReplySink, Route, Routed, Ticket};
use switchyard_proto::{
    ConnState, Correlation, Direction, Flags, Frame, FrameSet, Key, Part, Plan, Span,
};

/// Why routing could not proceed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Blocked {
    /// The client has `max_inflight` requests outstanding: wait for answers.
    Inflight,
    /// The chosen backends are full: wait for a backend connection to drain.
    Backend,
    /// The client asked to end the connection (QUIT): read nothing more.
    Quit,
}

/// What routing one request did.
enum Step {
    Sent,
    /// Not sent: it stays first in line.
    Blocked(Blocked),
    /// Taken, but part of it waits in the retry queue: nothing newer may go before it.
    Queued(Blocked),
}

/// What a message is, for where it may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A request (or a `none` listener's message): pinned, or placed and pinned.
    Request,
    /// A marked one-way request: to its pin, or placed without pinning.
    OneWay,
    /// A client's answer to a backend's request: only to its session's pin.
    Answer,
}

/// Where a request can go.
enum Choice {
    To(Route),
    /// Nowhere yet: wait.
    Wait(Blocked),
    /// Nowhere: no backend can take it, or its key's backend is down and
    /// `on_backend_down = "fail"`.
    Refuse(Fault),
}

/// One request about to be routed.
struct Request<'f> {
    frame: &'f [u8],
    key: Option<Key>,
    id: Option<Span>,
    /// Its ticket, if it has one already (a retry, a part of a split request).
    ticket: Option<Ticket>,
    /// No answer will come.
    one_way: bool,
    /// It may reach a backend twice (a read, or any request of a protocol the proxy does
    /// not interpret): re-sent on probation if its connection dies, on a listener that
    /// retries.
    repeatable: bool,
    /// It answers a request a backend sent (`ANSWER`): it goes, one-way, to the backend
    /// holding its session.
    answer: bool,
    /// It ends its session (`ENDS_SESSION`): the pin goes once it is done.
    ends: bool,
    /// The codec marked it `ONE_WAY`: it pins no key that has no pin.
    marked_one_way: bool,
}

/// One client's routing, for one pass of its task (one clock read).
pub(super) struct Router<'a> {
    pub(super) client: &'a Rc<Client>,
    pub(super) sink: &'a Rc<dyn ReplySink>,
    pub(super) lctx: &'a ListenerCtx,
    pub(super) now: Instant,
    /// `now` on the core's clock (ejection deadlines), read once for the pass.
    pub(super) ms: u64,
}

impl Router<'_> {
    /// Routes requests handed back by failed backend connections (and waiting parts of
    /// split requests), before any new ones. `Err`: the client must close.
    pub(super) fn requeued(&self) -> Result<Option<Blocked>, Fault> {
        while let Some(r) = self.client.take_requeued() {
            // Its key, id and marks, as the listener's protocol finds them again (a request
            // matched by its id as sent comes back without its id's place).
            let found = r.key.is_none().then(|| self.frame_of(&r.frame)).flatten();
            let flags = found.map_or(Flags::NONE, |f| f.flags);
            let req = Request {
                frame: &r.frame,
                key: r.key.or(found.and_then(|f| f.key)),
                id: r.id.or(found.and_then(|f| f.id)),
                one_way: r.ticket.is_none(),
                ticket: r.ticket.clone(),
                repeatable: r.repeatable,
                answer: flags.has(Flags::ANSWER),
                ends: flags.has(Flags::ENDS_SESSION),
                marked_one_way: flags.has(Flags::ONE_WAY),
            };
            if let Step::Blocked(b) = self.send(req, None)? {
                self.client.untake_requeued(r);
                return Ok(Some(b));
            }
        }
        Ok(None)
    }

    /// A handed-back frame as the listener's protocol finds it again (its key, its marks).
    fn frame_of(&self, frame: &[u8]) -> Option<Frame> {
        let limits = &self.lctx.config.limits;
        let mut framer = self
            .lctx
            .config
            .protocols
            .requests
            .framer(Direction::Requests, limits.max_frame_size)
            .ok()?;
        let mut frames = Vec::with_capacity(1);
        framer.scan(frame, &mut frames).ok()?;
        frames.first().copied()
    }

    /// Routes `frames` from `cursor` on, consuming their bytes from `buf`. Returns why it
    /// stopped early, if it did.
    pub(super) fn frames(
        &self,
        buf: &mut BytesMut,
        frames: &FrameSet,
        cursor: &mut usize,
        proto: &mut ConnState,
    ) -> Result<Option<Blocked>, Fault> {
        let interprets = self
            .lctx
            .config
            .protocols
            .requests
            .capabilities()
            .interprets;
        while let Some(f) = frames.get(*cursor) {
            let len = f.len as usize;
            let step = if interprets {
                self.carry_out(&buf[..len], f, proto)?
            } else if f.flags.has(Flags::LOCAL | Flags::DROP) {
                self.locally(&buf[..len], f)?
            } else {
                self.send(Request::new(&buf[..len], f), None)?
            };
            match step {
                Step::Sent => {}
                Step::Blocked(b) => return Ok(Some(b)),
                Step::Queued(b) => {
                    buf.advance(len);
                    *cursor += 1;
                    return Ok(Some(b));
                }
            }
            buf.advance(len);
            *cursor += 1;
        }
        Ok(None)
    }

    /// The access log follows request `seq` to its answer.
    #[cold]
    fn sample(
        &self,
        seq: u64,
        key: Option<switchyard_proto::Key>,
        frame: &[u8],
        conn: &crate::backend::BackendConn,
    ) {
        let log = self.lctx.registry.shared.access.clone();
        self.client.start_sample(
            log,
            Sample {
                seq,
                at: self.now,
                listener: self.lctx.name.clone(),
                key: key.map(|k| k.display(frame).to_string()),
                backend: conn.backend.name.as_str().into(),
                client: crate::registry::conn_name(self.client.gid),
            },
        );
    }

    /// A frame the protocol handles itself: a `LOCAL` one answered with its
    /// `local_answer` (in its place in the client's order), a `DROP` one forgotten.
    #[cold]
    fn locally(&self, frame: &[u8], f: &Frame) -> Result<Step, Fault> {
        self.lctx.counters.local.inc();
        if f.flags.has(Flags::DROP) {
            return Ok(Step::Sent);
        }
        match self.lctx.config.protocols.requests.local_answer(frame) {
            Ok(Some(answer)) => self.client.reply_local(&answer),
            Ok(None) => {}
            Err(e) => return Err(Fault::Script(e)),
        }
        Ok(Step::Sent)
    }

    /// Sends one request: to `route` if it was decided already, else where the core says.
    fn send(&self, req: Request<'_>, route: Option<Route>) -> Result<Step, Fault> {
        let client = self.client;
        let lctx = self.lctx;
        let correlation = lctx.config.correlation();
        // A `by_id` request without an id cannot be answered: it goes one-way (config.md).
        let awaits = !req.one_way
            && !req.answer
            && match correlation {
                Correlation::None => false,
                Correlation::InOrder => true,
                Correlation::ById | Correlation::ByIdAsSent => req.id.is_some(),
            };
        if awaits && req.ticket.is_none() && client.inflight() >= lctx.config.limits.max_inflight {
            return Ok(Step::Blocked(Blocked::Inflight));
        }
        if let Some(t) = req.ticket.as_ref().filter(|_| !awaits) {
            // A request handed back that can no longer await its answer (its marks or id
            // could not be found again): it is failed, so its client's books stay right.
            let fault = Fault::Internal("a handed-back request lost its id or marks".into());
            client.refuse(t, &fault, Some(req.frame))?;
            return Ok(Step::Sent);
        }
        if client.held_for_retry() {
            return Ok(Step::Blocked(Blocked::Backend));
        }
        let mut scratch = [0; 8];
        let key = req.key.map(|k| k.bytes(req.frame, &mut scratch));
        // The client's id: restored on the answer (`by_id`), and put in error answers.
        let id = req.id.map(|s| s.slice(req.frame));
        let decided = route.map(Choice::To);
        let kind = if req.answer {
            Kind::Answer
        } else if req.marked_one_way {
            Kind::OneWay
        } else {
            Kind::Request
        };
        let route = match decided.unwrap_or_else(|| self.choose(req.frame, req.key, kind)) {
            Choice::To(r) => r,
            Choice::Wait(b) => return Ok(Step::Blocked(b)),
            Choice::Refuse(fault) if awaits => {
                let ticket = client.ticket(req.ticket, id, key);
                client.refuse(&ticket, &fault, Some(req.frame))?;
                return Ok(Step::Sent);
            }
            Choice::Refuse(fault) => {
                client.refuse_unanswered(&fault);
                return Ok(Step::Sent);
            }
        };
        match lctx.pool.target(route.backend, client.gid) {
            PoolTarget::Conn(conn) => {
                let cluster = lctx.cluster();
                // The session this message ends (`ENDS_SESSION`): by the request when it
                // is done, by a one-way message once it is written.
                let ends = route
                    .session
                    .filter(|_| req.ends)
                    .and_then(std::num::NonZeroU64::new);
                let ticket = awaits.then(|| {
                    let mut t = client.ticket(req.ticket, id, key);
                    t.end_session = t.end_session.or(ends);
                    t
                });
                if let Some(t) = ticket.as_ref().filter(|t| t.part.is_none()) {
                    if lctx.sample_now() && !client.sampling() {
                        self.sample(t.seq, req.key, req.frame, &conn);
                    }
                }
                let retry =
                    ticket.is_some() && req.repeatable && lctx.config.retry_on_backend_close;
                let msg_id = match (correlation, req.id) {
                    (Correlation::ById, Some(span)) => MsgId::Rewrite(span),
                    (Correlation::ByIdAsSent, Some(span)) if awaits => MsgId::AsSent(
                        switchyard_core::correlate::transaction_id(key, span.slice(req.frame)),
                        span,
                    ),
                    _ => MsgId::None,
                };
                let how = Sending {
                    retry,
                    ends: ends.filter(|_| !awaits),
                };
                // Push ownership once the message is taken (a refused duplicate takes
                // nothing over).
                if conn.send(req.frame, msg_id, ticket, how, self.sink, self.now) {
                    route.claim(cluster, client.gid);
                }
                Ok(Step::Sent)
            }
            // The key's backend is up but its connection is full: wait for room, never
            // move the key (the connection may also have gone down since the core looked:
            // wait, and route again).
            PoolTarget::Full | PoolTarget::Down => Ok(Step::Blocked(Blocked::Backend)),
        }
    }

    /// Where a request with `key` goes: its pin, or the policy (a moved pin is logged); an
    /// answer to a backend's request goes only where its session is pinned; a one-way
    /// request pins no key that has no pin.
    fn choose(&self, frame: &[u8], key: Option<Key>, kind: Kind) -> Choice {
        let lctx = self.lctx;
        let cluster = lctx.cluster();
        let mut scratch = [0; 8];
        let key_bytes = key.map(|k| k.bytes(frame, &mut scratch));
        let routed = {
            let mut picker = lctx.picker.borrow_mut();
            picker.source(self.client.source);
            let reach = lctx.pool.reach(self.client.gid);
            match kind {
                Kind::Answer => cluster.route_answer(key_bytes, &mut **picker, &reach, self.ms),
                Kind::OneWay => cluster.route_one_way(key_bytes, &mut **picker, &reach, self.ms),
                Kind::Request => cluster.route_at(key_bytes, &mut **picker, &reach, self.ms),
            }
        };
        if key_bytes.is_some() && cluster.sessions.is_some() {
            if let Some(i) = crate::metrics::pin_index(&routed) {
                lctx.counters.pins[i].inc();
            }
        }
        let name = |i: Option<usize>| {
            i.map_or_else(
                || "a removed backend".to_string(),
                |i| cluster.backends[i].name.clone(),
            )
        };
        match routed {
            Routed::To(route) => {
                if let How::Moved { from } = route.how {
                    tracing::info!(
                        key = %key.map(|k| k.display(frame)).unwrap_or_default(),
                        from = %name(from),
                        to = %name(Some(route.backend)),
                        "session moved off an unavailable backend"
                    );
                }
                Choice::To(route)
            }
            Routed::PinnedDown(b) => Choice::Refuse(BackendFault::KeyDown(name(b)).into()),
            // Free to go anywhere, but every backend is full: wait for room.
            Routed::Busy => Choice::Wait(Blocked::Backend),
            Routed::Unavailable => {
                Choice::Refuse(BackendFault::NoBackend(cluster.settings.name.clone()).into())
            }
            Routed::NoSession => Choice::Refuse(BackendFault::NoSession.into()),
        }
    }

    /// Carries out the protocol's plan for one request: forward it, answer it here, or
    /// split it per key (parts that cannot go yet wait in the client's retry queue, so the
    /// request is never planned twice).
    fn carry_out(&self, frame: &[u8], f: &Frame, proto: &mut ConnState) -> Result<Step, Fault> {
        let client = self.client;
        if client.inflight() >= self.lctx.config.limits.max_inflight {
            return Ok(Step::Blocked(Blocked::Inflight));
        }
        let protocol = &self.lctx.config.protocols.requests;
        match protocol.plan(frame, proto) {
            Plan::Forward => self.send(
                Request {
                    repeatable: false,
                    ..Request::new(frame, f)
                },
                None,
            ),
            Plan::ForwardRead => self.send(Request::new(frame, f), None),
            Plan::ForwardOneWay => self.send(
                Request {
                    one_way: true,
                    ..Request::new(frame, f)
                },
                None,
            ),
            Plan::Reply(answer) => {
                client.reply_local(&answer);
                Ok(Step::Sent)
            }
            Plan::Ignore => Ok(Step::Sent),
            Plan::ReplyAndClose(answer) => {
                if !answer.is_empty() {
                    client.reply_local(&answer);
                }
                Ok(Step::Blocked(Blocked::Quit))
            }
            Plan::Split(parts, merge) => {
                let seq = client.begin_split(parts.len(), merge);
                let mut queued = None;
                for (route, first, members) in self.group_by_backend(parts) {
                    let part = if members.len() == 1 {
                        members[0].1.clone()
                    } else {
                        let reqs: Vec<&Part> = members.iter().map(|(_, p)| p).collect();
                        let joined = protocol.join(merge, &reqs);
                        client.joined(seq, first, members);
                        joined
                    };
                    let ticket = Ticket {
                        seq,
                        part: Some(first),
                        orig_id: None,
                        key: None,
                        end_session: None,
                    };
                    let key = Some(part.key_span());
                    // Parts go out in order: once one waits, the rest queue behind it.
                    if queued.is_none() {
                        let req = Request {
                            frame: &part.frame,
                            key,
                            id: None,
                            ticket: Some(ticket.clone()),
                            one_way: false,
                            repeatable: merge.reads(),
                            answer: false,
                            ends: false,
                            marked_one_way: false,
                        };
                        match self.send(req, route)? {
                            Step::Sent => continue,
                            Step::Blocked(b) | Step::Queued(b) => queued = Some(b),
                        }
                    }
                    client.queue_part(Requeued {
                        key,
                        frame: part.frame,
                        id: None,
                        ticket: Some(ticket),
                        repeatable: merge.reads(),
                    });
                }
                // The request is consumed; parts left wait in the retry queue, and the
                // client's next requests wait behind them (a later `GET k` must not pass
                // the `MSET` part for `k`).
                Ok(queued.map_or(Step::Sent, Step::Queued))
            }
        }
    }

    /// The parts of a split request, numbered, in groups bound for one backend each (in
    /// the order of their first part), as twemproxy sends one fragment per server, with
    /// the route each group takes. A part whose backend cannot be chosen now is a group of
    /// its own, without a route (sending it answers why).
    fn group_by_backend(&self, parts: Vec<Part>) -> Vec<(Option<Route>, u16, Members)> {
        let mut groups: Vec<(Option<Route>, u16, Members)> = Vec::new();
        for (i, p) in parts.into_iter().enumerate() {
            let route = match self.choose(&p.frame, Some(p.key_span()), Kind::Request) {
                Choice::To(r) => Some(r),
                Choice::Wait(_) | Choice::Refuse(_) => None,
            };
            let backend = route.map(|r| r.backend);
            let i = i as u16;
            match groups
                .iter_mut()
                .find(|(r, _, _)| backend.is_some() && r.map(|r| r.backend) == backend)
            {
                Some((_, _, members)) => {
                    // Its route is not the one the group is sent by: it claims its session
                    // here.
                    if let Some(r) = route {
                        r.claim(self.lctx.cluster(), self.client.gid);
                    }
                    members.push((i, p));
                }
                None => groups.push((route, i, vec![(i, p)])),
            }
        }
        groups
    }
}

impl<'f> Request<'f> {
    /// A new request: `frame`, as the framer found it.
    fn new(frame: &'f [u8], f: &Frame) -> Self {
        Request {
            frame,
            key: f.key,
            id: f.id,
            ticket: None,
            one_way: f.flags.has(Flags::ONE_WAY),
            repeatable: true,
            answer: f.flags.has(Flags::ANSWER),
            ends: f.flags.has(Flags::ENDS_SESSION),
            marked_one_way: f.flags.has(Flags::ONE_WAY),
        }
    }
}
