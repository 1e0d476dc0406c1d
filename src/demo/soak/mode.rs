//! The soak's modes: what runs through the proxy, and how each is named.

/// What runs through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Demo protocol, `length_field`, `by_id` (ids rewritten on shared connections).
    ById,
    /// Demo protocol, `length_field`, `in_order`.
    InOrder,
    /// Demo protocol, `length_field`, `none`: every answer comes back as a push, routed by
    /// the session key's owner.
    None,
    /// A line protocol, `delimiter`, `by_id` with text ids.
    Delimiter,
    /// The demo protocol framed by `examples/scripts/binary64.lua` (`by_id`).
    Lua,
    /// Redis: `resp` in front of a real redis-server, SET and GET.
    Resp,
    /// DNS: the built-in `dns` codec in front of three real nsd servers, maglev on the
    /// question name; every client's ids count from 0, so they collide across clients.
    Dns,
    /// Demo protocol, `length_field`, `by_id`, `retry_on_backend_close = true`: besides the
    /// clients, a poisoner sends four requests a second that make their backend close the
    /// shared connection; every client's answer must still come (poison isolation).
    Poison,
    /// Demo protocol, `length_field`, `by_id`, with the admin listener on: `/metrics`,
    /// `/api/overview` and a pin lookup scraped five times a second, and the access log
    /// writing one request in a hundred.
    Observed,
    /// SIP calls through `examples/scripts/sip.lua` (`by_id_as_sent`, `least_sessions`) to
    /// three SIP servers: INVITE, 100, 180, 200, ACK, BYE, 200. A call counts as one
    /// message, offered at a quarter of the message rate; every call's pin must be
    /// released when it ends.
    Sip,
    /// Redis over TLS both ways: every client sends a PROXY v2 header (naming a client
    /// address of its own) and does a TLS handshake with the proxy, which speaks TLS to a
    /// real `redis-server --tls-port`; SET and GET as in `resp`.
    Tls,
}

impl Mode {
    pub(super) const ALL: [Mode; 11] = [
        Mode::ById,
        Mode::InOrder,
        Mode::None,
        Mode::Delimiter,
        Mode::Lua,
        Mode::Resp,
        Mode::Dns,
        Mode::Poison,
        Mode::Observed,
        Mode::Sip,
        Mode::Tls,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Mode::ById => "length_field by_id",
            Mode::InOrder => "length_field in_order",
            Mode::None => "length_field none + pushes",
            Mode::Delimiter => "delimiter by_id (text ids)",
            Mode::Lua => "lua binary64.lua by_id",
            Mode::Resp => "resp, redis-server",
            Mode::Dns => "dns, nsd",
            Mode::Poison => "length_field by_id + poison",
            Mode::Observed => "length_field by_id + admin scraped",
            Mode::Sip => "lua sip.lua, SIP calls",
            Mode::Tls => "resp over TLS both ways + PROXY v2",
        }
    }

    /// Messages the mode's rate counts per unit it offers: a SIP call is seven messages
    /// (three requests, four answers), offered at a quarter of the rate.
    pub(super) fn rate_divisor(self) -> u64 {
        match self {
            Mode::Sip => 4,
            _ => 1,
        }
    }
}
