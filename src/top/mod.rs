//! `switchyard top` and `switchyard where`: clients of a running balancer's admin API, for
//! ssh sessions. `top` polls `/api/overview` and draws the status page's view in the
//! terminal (ratatui): traffic per listener and backend with load bars, health, pins,
//! errors by reason, the last reloads; a selected backend can be drained or undrained.

mod view;

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::widgets::TableState;
use serde_json::Value;
use std::time::{Duration, Instant};
use view::{draw, plain, text, Rates};

/// Why a client of the admin API failed.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// The request failed (connection, timeout).
    #[error("admin API at {url}: {reason}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The API answered with an error.
    #[error("admin API at {url}: {status} {message}")]
    Refused {
        /// What was asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The API's `error` text.
        message: String,
    },
    /// The terminal could not be driven.
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
}

/// `switchyard top` options.
#[derive(Debug, Clone, clap::Args)]
pub struct TopArgs {
    /// The admin listener, e.g. `http://127.0.0.1:9901` or `127.0.0.1:9901`.
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin: String,
    /// The bearer token, if the admin listener needs one (or SWITCHYARD_ADMIN_TOKEN).
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How often to poll, e.g. `1s`.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Print one plain-text view (rates over one interval) and exit, for scripts.
    #[arg(long)]
    pub once: bool,
}

/// One admin API endpoint.
struct Api {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Api {
    fn new(admin: &str, token: Option<&str>) -> Self {
        let base = if admin.starts_with("http://") || admin.starts_with("https://") {
            admin.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", admin.trim_end_matches('/'))
        };
        Api {
            base,
            token: token.map(str::to_string),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(3))
                .build(),
        }
    }

    fn call(&self, method: &str, path: &str) -> Result<Value, TopError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.request(method, &url);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let resp = if method == "POST" {
            req.send_string("")
        } else {
            req.call()
        };
        match resp {
            Ok(r) => r.into_json().map_err(|e| TopError::Unreachable {
                url,
                reason: format!("not JSON: {e}"),
            }),
            Err(ureq::Error::Status(status, r)) => {
                let message = r
                    .into_json::<Value>()
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or_default();
                Err(TopError::Refused {
                    url,
                    status,
                    message,
                })
            }
            Err(e) => Err(TopError::Unreachable {
                url,
                reason: e.to_string(),
            }),
        }
    }
}

/// Percent-encodes a path segment.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `switchyard where`: where `key` is pinned, as text.
pub fn where_is(
    admin: &str,
    token: Option<&str>,
    cluster: Option<&str>,
    key: &str,
    hex: bool,
) -> Result<String, TopError> {
    let api = Api::new(admin, token);
    let mut query = Vec::new();
    if let Some(c) = cluster {
        query.push(format!("cluster={}", encode(c)));
    }
    if hex {
        query.push("encoding=hex".to_string());
    }
    let mut path = format!("/api/sessions/{}", encode(key));
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    let v = api.call("GET", &path)?;
    let mut out = String::new();
    for c in v["clusters"].as_array().into_iter().flatten() {
        let cluster = c["cluster"].as_str().unwrap_or("?");
        let backend = c["backend"].as_str().unwrap_or("a removed backend");
        let address = c["address"].as_str().unwrap_or("-");
        if c["pinned"].as_bool() == Some(true) {
            out.push_str(&format!(
                "{key}: cluster {cluster} → backend {backend} ({address}), pinned {:.1} s ago, {} hits, last used {:.1} s ago, session owner {}\n",
                c["age_seconds"].as_f64().unwrap_or(0.0),
                c["hits"].as_u64().unwrap_or(0),
                c["idle_seconds"].as_f64().unwrap_or(0.0),
                c["owner"].as_str().unwrap_or("none"),
            ));
        } else {
            out.push_str(&format!(
                "{key}: cluster {cluster} → backend {backend} ({address}), placed by {} (no pin table)\n",
                c["hashed_by"].as_str().unwrap_or("hash"),
            ));
        }
    }
    Ok(out)
}

/// `switchyard top`.
pub fn run(args: TopArgs) -> Result<(), TopError> {
    let api = Api::new(&args.admin, args.token.as_deref());
    let mut rates = Rates::default();
    if args.once {
        let v = api.call("GET", "/api/overview")?;
        rates.update(&v);
        std::thread::sleep(args.interval);
        let v = api.call("GET", "/api/overview")?;
        rates.update(&v);
        print!("{}", plain(&v, &rates));
        return Ok(());
    }
    // Fail before taking the terminal over if the API cannot be reached.
    let mut view = api.call("GET", "/api/overview")?;
    rates.update(&view);
    let mut terminal = ratatui::init();
    let result = (|| -> Result<(), TopError> {
        let mut sel = TableState::default().with_selected(Some(0));
        let mut status = String::new();
        let mut next_poll = Instant::now() + args.interval;
        loop {
            terminal.draw(|f| draw(f, &api.base, &view, &rates, &mut sel, &status))?;
            let wait = next_poll.saturating_duration_since(Instant::now());
            if event::poll(wait)? {
                if let Event::Key(k) = event::read()? {
                    if k.kind != KeyEventKind::Press {
                        continue;
                    }
                    let n = view["backends"].as_array().map_or(0, Vec::len);
                    match k.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        KeyCode::Down => sel.select(Some(
                            (sel.selected().unwrap_or(0) + 1).min(n.saturating_sub(1)),
                        )),
                        KeyCode::Up => {
                            sel.select(Some(sel.selected().unwrap_or(0).saturating_sub(1)))
                        }
                        KeyCode::Char(c @ ('d' | 'u')) => {
                            let b = sel.selected().and_then(|i| view["backends"].get(i));
                            if let Some(b) = b {
                                let (name, cluster) = (text(&b["name"]), text(&b["cluster"]));
                                let action = if c == 'd' { "drain" } else { "undrain" };
                                let path = format!(
                                    "/api/backends/{}/{action}?cluster={}",
                                    encode(&name),
                                    encode(&cluster)
                                );
                                status = match api.call("POST", &path) {
                                    Ok(_) => format!("{action}: {cluster}/{name} done"),
                                    Err(e) => format!("{action} failed: {e}"),
                                };
                                next_poll = Instant::now();
                            }
                        }
                        _ => {}
                    }
                }
                continue;
            }
            match api.call("GET", "/api/overview") {
                Ok(v) => {
                    rates.update(&v);
                    view = v;
                    if status.starts_with("error") {
                        status.clear();
                    }
                }
                Err(e) => status = format!("error: {e}"),
            }
            next_poll = Instant::now() + args.interval;
        }
    })();
    ratatui::restore();
    result
}
