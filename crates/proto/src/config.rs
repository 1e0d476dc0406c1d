//! The codec tables of the config file (`[listener.codec]`, `[listener.response_codec]`):
//! one serde-tagged enum, whose variants are the protocols, each with its own keys (a key
//! of another kind is refused by serde, naming the line). Building a listener's protocols
//! validates the values, loads scripts, resolves the correlation the protocol and the
//! listener agree on, and wraps an operator's error template around the protocol.
//!
//! Adding a protocol: its file (a `Config` and a `Protocol` implementation), one variant
//! here, and one arm in each of [`CodecConfig::kind`] and `CodecConfig::build`
//! (docs/architecture.md walks through it).

use crate::delimiter::{self, DelimiterProtocol};
use crate::dns;
use crate::length_field::{self, LengthFieldProtocol};
use crate::lua::{self, LuaProtocol};
use crate::memcache::{self, MemcacheProtocol};
use crate::netstring;
use crate::protocol::{Correlation, Protocol};
use crate::resp::{self, RespProtocol};
use crate::template::{self, Finish, Template, Templated};
use std::path::Path;
use std::sync::Arc;

pub use crate::error::Invalid;

/// A `[listener.codec]` table: `kind` picks the protocol, the other keys are its own.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CodecConfig {
    /// Binary frames with a length field.
    LengthField(length_field::Config),
    /// Line (or other delimiter) framed text.
    Delimiter(delimiter::Config),
    /// A user's protocol script.
    Lua(lua::Config),
    /// Redis.
    Resp(resp::Config),
    /// memcached's text protocol.
    Memcache(memcache::Config),
    /// Netstrings.
    Netstring(netstring::Config),
    /// DNS over TCP.
    Dns(dns::Config),
}

/// A codec table, validated: the protocol and what the answers' framing needs of an error
/// template.
struct Built {
    protocol: Arc<dyn Protocol>,
    finish: Finish,
    /// A binary key field's width (the demo protocol's 8 bytes), for trying templates.
    key_width: Option<usize>,
    /// The script's source, when there is one: part of the protocol's identity.
    source: Option<Arc<str>>,
}

impl CodecConfig {
    /// The kind's config name.
    pub fn kind(&self) -> &'static str {
        match self {
            CodecConfig::LengthField(_) => "length_field",
            CodecConfig::Delimiter(_) => "delimiter",
            CodecConfig::Lua(_) => "lua",
            CodecConfig::Resp(_) => "resp",
            CodecConfig::Memcache(_) => "memcache",
            CodecConfig::Netstring(_) => "netstring",
            CodecConfig::Dns(_) => "dns",
        }
    }

    fn build(&self, base: &Path, password: Option<&String>) -> Result<Built, Invalid> {
        let plain = |protocol: Arc<dyn Protocol>| Built {
            protocol,
            finish: Finish::Nothing,
            key_width: None,
            source: None,
        };
        Ok(match self {
            CodecConfig::LengthField(c) => {
                let spec = c.spec()?;
                Built {
                    key_width: spec.key.map(|k| k.width as usize),
                    finish: Finish::Length(spec.clone()),
                    protocol: Arc::new(LengthFieldProtocol::guarded(spec, c.guard()?)),
                    source: None,
                }
            }
            CodecConfig::Delimiter(c) => {
                let spec = c.spec()?;
                Built {
                    finish: Finish::Delimiter(spec.delimiter.clone()),
                    protocol: Arc::new(DelimiterProtocol::new(spec)),
                    key_width: None,
                    source: None,
                }
            }
            CodecConfig::Lua(c) => {
                let spec = c.spec(base)?;
                Built {
                    source: Some(spec.source.clone()),
                    ..plain(Arc::new(LuaProtocol::new(spec)))
                }
            }
            CodecConfig::Resp(_) => plain(Arc::new(RespProtocol::new(password.cloned()))),
            CodecConfig::Memcache(_) => plain(Arc::new(MemcacheProtocol)),
            CodecConfig::Netstring(c) => plain(Arc::new(c.protocol()?)),
            CodecConfig::Dns(c) => plain(Arc::new(c.protocol()?)),
        })
    }
}

/// A listener's settings that shape its protocols besides the codec tables.
#[derive(Debug, Clone)]
pub struct ListenerOptions<'a> {
    /// The config file's folder (scripts are found relative to it).
    pub base: &'a Path,
    /// The listener's own `correlation`, if it sets one.
    pub correlation: Option<Correlation>,
    /// `password`: clients must AUTH with it (`resp` only).
    pub password: Option<String>,
    /// `error_reply`: a text error template.
    pub error_reply: Option<String>,
    /// `error_reply_hex`: an error template in hex.
    pub error_reply_hex: Option<String>,
    /// `max_frame_size`, for trying the template.
    pub max_frame: usize,
}

/// A listener's protocols: requests are framed (and planned) by `requests`, answers by
/// `answers`; failed requests are answered by `requests.error_answer`.
#[derive(Debug, Clone)]
pub struct Protocols {
    /// Client → backend.
    pub requests: Arc<dyn Protocol>,
    /// Backend → client.
    pub answers: Arc<dyn Protocol>,
    /// How answers find their requests.
    pub correlation: Correlation,
    identity: Identity,
}

/// What makes two listeners' protocols the same, so connections can move between them on
/// reload.
#[derive(Debug, Clone, PartialEq)]
struct Identity {
    codec: CodecConfig,
    response: Option<CodecConfig>,
    sources: Vec<Option<Arc<str>>>,
    correlation: Correlation,
    password: Option<String>,
    error_reply: Option<String>,
    error_reply_hex: Option<String>,
}

impl PartialEq for Protocols {
    fn eq(&self, other: &Self) -> bool {
        self.identity == other.identity
    }
}

/// Validates a listener's codec tables and options into its protocols. Keys of errors are
/// relative to the listener (`codec.length_width`, `correlation`, `error_reply`).
pub fn build_listener(
    codec: &CodecConfig,
    response: Option<&CodecConfig>,
    o: &ListenerOptions<'_>,
) -> Result<Protocols, Invalid> {
    fn under(prefix: &'static str) -> impl Fn(Invalid) -> Invalid {
        move |(k, p)| (format!("{prefix}.{k}"), p)
    }
    let requests = codec
        .build(o.base, o.password.as_ref())
        .map_err(under("codec"))?;
    let answers = match response {
        Some(r) => r.build(o.base, None).map_err(under("response_codec"))?,
        None => Built {
            protocol: requests.protocol.clone(),
            finish: requests.finish.clone(),
            key_width: requests.key_width,
            source: requests.source.clone(),
        },
    };
    let caps = requests.protocol.capabilities();
    let correlation = o
        .correlation
        .or(caps.correlation)
        .unwrap_or(Correlation::InOrder);
    if let Some(own) = requests.protocol.fixed_correlation() {
        if correlation != own {
            let kind = codec.kind();
            let why = match own {
                Correlation::InOrder => {
                    format!("the {kind} codec answers in order: only in_order fits")
                }
                Correlation::ById => {
                    format!("the {kind} codec's answers come in any order: only by_id fits")
                }
                Correlation::None => format!("the {kind} codec answers nothing: only none fits"),
                Correlation::ByIdAsSent => {
                    format!("the {kind} codec's ids are matched as sent: only by_id_as_sent fits")
                }
            };
            return Err(("correlation".into(), why));
        }
    }
    if !caps.interprets && o.password.is_some() {
        return Err((
            "password".into(),
            "client passwords apply to the resp codec only".into(),
        ));
    }
    if matches!(correlation, Correlation::ById | Correlation::ByIdAsSent) {
        let name = if correlation == Correlation::ById {
            "by_id"
        } else {
            "by_id_as_sent"
        };
        if !caps.ids {
            return Err((
                "correlation".into(),
                format!("{name} needs the codec to find an id (codec.id or codec.id_token)"),
            ));
        }
        if !answers.protocol.capabilities().ids {
            return Err((
                "correlation".into(),
                format!("{name} needs the response codec to find an id"),
            ));
        }
    }
    let requests_protocol = with_error_template(&requests, &answers, correlation, o)?;
    Ok(Protocols {
        identity: Identity {
            codec: codec.clone(),
            response: response.cloned(),
            sources: vec![requests.source.clone(), answers.source.clone()],
            correlation,
            password: o.password.clone(),
            error_reply: o.error_reply.clone(),
            error_reply_hex: o.error_reply_hex.clone(),
        },
        requests: requests_protocol,
        answers: answers.protocol,
        correlation,
    })
}

/// The requests' protocol, answering failures with the operator's template if the listener
/// has one (refused where the protocol answers failures itself, or where nothing is
/// answered).
fn with_error_template(
    requests: &Built,
    answers: &Built,
    correlation: Correlation,
    o: &ListenerOptions<'_>,
) -> Result<Arc<dyn Protocol>, Invalid> {
    let (name, text) = match (&o.error_reply, &o.error_reply_hex) {
        (None, None) => return Ok(requests.protocol.clone()),
        (Some(_), Some(_)) => {
            return Err((
                "error_reply_hex".into(),
                "conflicts with error_reply".into(),
            ))
        }
        (Some(t), None) => ("error_reply", t),
        (None, Some(h)) => ("error_reply_hex", h),
    };
    let caps = requests.protocol.capabilities();
    let kind = requests.protocol.kind();
    if caps.interprets {
        return Err((
            name.into(),
            format!("the {kind} codec answers failed requests with its own error line"),
        ));
    }
    if requests.protocol.error_answer_needs_request() {
        return Err((
            name.into(),
            format!("the {kind} codec answers failed requests itself (SERVFAIL)"),
        ));
    }
    if requests.protocol.error_answer_needs_key() {
        return Err((
            name.into(),
            "conflicts with the script's own error_reply function".into(),
        ));
    }
    if correlation == Correlation::None {
        return Err((
            name.into(),
            "with correlation = \"none\" no answers are expected, so none can be an error".into(),
        ));
    }
    let finish = answers.finish.clone();
    let template = if name == "error_reply" {
        Template::from_text(text, finish)
    } else {
        Template::from_hex(text, finish)
    }
    .map_err(|e| (name.to_string(), e))?;
    template::check(
        &template,
        &caps,
        requests.key_width,
        &*answers.protocol,
        matches!(correlation, Correlation::ById | Correlation::ByIdAsSent),
        o.max_frame,
    )
    .map_err(|e| (name.to_string(), e))?;
    Ok(Arc::new(Templated::new(
        requests.protocol.clone(),
        template,
    )))
}
