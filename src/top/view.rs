//! What `top` shows: rates from two readings, the terminal frame, the plain-text view.

use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Instant;

/// Rates from two readings of the overview.
#[derive(Default)]
pub(super) struct Rates {
    last: Option<(Instant, HashMap<String, u64>)>,
    now: HashMap<String, f64>,
}

impl Rates {
    /// Counters of `v` to follow: per listener in/out, per backend requests.
    fn counters(v: &Value) -> HashMap<String, u64> {
        let mut m = HashMap::new();
        for l in v["listeners"].as_array().into_iter().flatten() {
            let n = l["name"].as_str().unwrap_or("");
            m.insert(format!("l/{n}/in"), l["messages_in"].as_u64().unwrap_or(0));
            m.insert(
                format!("l/{n}/out"),
                l["messages_out"].as_u64().unwrap_or(0),
            );
        }
        for b in v["backends"].as_array().into_iter().flatten() {
            m.insert(
                format!(
                    "b/{}/{}",
                    b["cluster"].as_str().unwrap_or(""),
                    b["name"].as_str().unwrap_or("")
                ),
                b["requests"].as_u64().unwrap_or(0),
            );
        }
        m
    }

    pub(super) fn update(&mut self, v: &Value) {
        let now = Instant::now();
        let counts = Self::counters(v);
        if let Some((t, old)) = &self.last {
            let dt = now.duration_since(*t).as_secs_f64().max(1e-3);
            self.now = counts
                .iter()
                .map(|(k, n)| {
                    (
                        k.clone(),
                        n.saturating_sub(*old.get(k).unwrap_or(n)) as f64 / dt,
                    )
                })
                .collect();
        }
        self.last = Some((now, counts));
    }

    fn get(&self, k: &str) -> f64 {
        self.now.get(k).copied().unwrap_or(0.0)
    }
}

fn rows<'a>(v: &'a Value, k: &str) -> impl Iterator<Item = &'a Value> {
    v[k].as_array().into_iter().flatten()
}

pub(super) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

/// The view as plain text (`--once`).
pub(super) fn plain(v: &Value, r: &Rates) -> String {
    let mut out = format!(
        "switchyard {} · up {:.0}s · generation {}\n\nlisteners\n",
        text(&v["version"]),
        v["uptime_seconds"].as_f64().unwrap_or(0.0),
        text(&v["generation"])
    );
    for l in rows(v, "listeners") {
        let n = l["name"].as_str().unwrap_or("");
        out.push_str(&format!(
            "  {n:<16} {:<22} {:<13} conns {:>5}  in {:>8.0}/s  out {:>8.0}/s  total {}\n",
            text(&l["address"]),
            text(&l["protocol"]),
            text(&l["connections"]),
            r.get(&format!("l/{n}/in")),
            r.get(&format!("l/{n}/out")),
            text(&l["messages_in"]),
        ));
    }
    out.push_str("\nbackends\n");
    for b in rows(v, "backends") {
        let key = format!("b/{}/{}", text(&b["cluster"]), text(&b["name"]));
        out.push_str(&format!(
            "  {:<24} {:<10} {:>8.0}/s  outstanding {:>5}  requests {:>10}  failures {:>6}  weight {}\n",
            format!("{}/{}", text(&b["cluster"]), text(&b["name"])),
            text(&b["state"]),
            r.get(&key),
            text(&b["outstanding"]),
            text(&b["requests"]),
            text(&b["failures"]),
            text(&b["weight"]),
        ));
    }
    out.push_str("\nerrors\n");
    for e in rows(v, "errors") {
        out.push_str(&format!(
            "  {} {} {}\n",
            text(&e["scope"]),
            text(&e["reason"]),
            text(&e["count"])
        ));
    }
    out
}

fn bar(share: f64, width: usize) -> String {
    let n = (share.clamp(0.0, 1.0) * width as f64).round() as usize;
    format!("{}{}", "█".repeat(n), "·".repeat(width - n))
}

fn state_color(s: &str) -> Color {
    match s {
        "up" => Color::Green,
        "draining" => Color::Yellow,
        _ => Color::Red,
    }
}

/// Draws one frame.
pub(super) fn draw(
    f: &mut ratatui::Frame,
    base: &str,
    v: &Value,
    r: &Rates,
    sel: &mut TableState,
    status: &str,
) {
    let area = f.area();
    let listeners: Vec<&Value> = rows(v, "listeners").collect();
    let backends: Vec<&Value> = rows(v, "backends").collect();
    let [head, lt, bt, bottom, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(listeners.len() as u16 + 3),
        Constraint::Length(backends.len() as u16 + 3),
        Constraint::Min(8),
        Constraint::Length(1),
    ])
    .areas(area);
    let total: f64 = listeners
        .iter()
        .map(|l| r.get(&format!("l/{}/in", text(&l["name"]))))
        .sum();
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(
                "switchyard top ",
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!(
                "{base} · v{} · up {:.0}s · generation {} · {total:.0} msg/s",
                text(&v["version"]),
                v["uptime_seconds"].as_f64().unwrap_or(0.0),
                text(&v["generation"]),
            )),
        ])),
        head,
    );
    let lrows = listeners.iter().map(|l| {
        let n = text(&l["name"]);
        Row::new(vec![
            n.clone(),
            text(&l["address"]),
            text(&l["protocol"]),
            text(&l["cluster"]),
            text(&l["connections"]),
            format!("{:.0}", r.get(&format!("l/{n}/in"))),
            format!("{:.0}", r.get(&format!("l/{n}/out"))),
            text(&l["messages_in"]),
        ])
    });
    f.render_widget(
        Table::new(
            lrows,
            [
                Constraint::Length(14),
                Constraint::Length(22),
                Constraint::Length(13),
                Constraint::Length(12),
                Constraint::Length(7),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(12),
            ],
        )
        .header(
            Row::new([
                "listener", "address", "protocol", "cluster", "conns", "in/s", "out/s", "messages",
            ])
            .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(Block::default().borders(Borders::ALL).title(" listeners ")),
        lt,
    );
    let mut cluster_rate: HashMap<String, f64> = HashMap::new();
    for b in &backends {
        let key = format!("b/{}/{}", text(&b["cluster"]), text(&b["name"]));
        *cluster_rate.entry(text(&b["cluster"])).or_default() += r.get(&key);
    }
    let brows = backends.iter().map(|b| {
        let cluster = text(&b["cluster"]);
        let key = format!("b/{cluster}/{}", text(&b["name"]));
        let rate = r.get(&key);
        let share = rate / cluster_rate.get(&cluster).copied().unwrap_or(0.0).max(1e-9);
        let state = text(&b["state"]);
        let runtime = if b["runtime_override"].is_null() {
            ""
        } else {
            " (runtime)"
        };
        Row::new(vec![
            Cell::from(format!("{cluster}/{}", text(&b["name"]))),
            Cell::from(format!("{state}{runtime}")).style(Style::default().fg(state_color(&state))),
            Cell::from(format!("{rate:.0}")),
            Cell::from(bar(share, 16)),
            Cell::from(text(&b["outstanding"])),
            Cell::from(format!(
                "{:.2}",
                b["latency_ewma_seconds"].as_f64().unwrap_or(0.0) * 1e3
            )),
            Cell::from(text(&b["requests"])),
            Cell::from(text(&b["failures"])),
            Cell::from(text(&b["weight"])),
        ])
    });
    f.render_stateful_widget(
        Table::new(
            brows,
            [
                Constraint::Length(22),
                Constraint::Length(20),
                Constraint::Length(9),
                Constraint::Length(17),
                Constraint::Length(6),
                Constraint::Length(8),
                Constraint::Length(12),
                Constraint::Length(9),
                Constraint::Length(6),
            ],
        )
        .header(
            Row::new([
                "backend", "state", "msg/s", "load", "outst", "ewma ms", "requests", "failures",
                "weight",
            ])
            .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .block(Block::default().borders(Borders::ALL).title(" backends ")),
        bt,
        sel,
    );
    let [errs, clus, rel] = Layout::horizontal([
        Constraint::Percentage(40),
        Constraint::Percentage(30),
        Constraint::Percentage(30),
    ])
    .areas(bottom);
    let elines: Vec<Line> = rows(v, "errors")
        .take(6)
        .map(|e| {
            Line::raw(format!(
                "{} {} {}",
                text(&e["scope"]),
                text(&e["reason"]),
                text(&e["count"])
            ))
        })
        .collect();
    let elines = if elines.is_empty() {
        vec![Line::raw("no errors")]
    } else {
        elines
    };
    f.render_widget(
        Paragraph::new(elines).block(Block::default().borders(Borders::ALL).title(" errors ")),
        errs,
    );
    let clines: Vec<Line> = rows(v, "clusters")
        .map(|c| {
            Line::raw(format!(
                "{} {} pins {} moved {}",
                text(&c["name"]),
                text(&c["policy"]),
                text(&c["pins"]),
                text(&c["pin_moved"])
            ))
        })
        .collect();
    f.render_widget(
        Paragraph::new(clines).block(Block::default().borders(Borders::ALL).title(" clusters ")),
        clus,
    );
    let rlines: Vec<Line> = rows(v, "reloads")
        .take(6)
        .map(|x| {
            Line::raw(format!(
                "{} {}: {}",
                text(&x["source"]),
                if x["applied"].as_bool() == Some(true) {
                    "applied"
                } else {
                    "refused"
                },
                x["error"]
                    .as_str()
                    .unwrap_or(x["summary"].as_str().unwrap_or(""))
            ))
        })
        .collect();
    let rlines = if rlines.is_empty() {
        vec![Line::raw("no reloads yet")]
    } else {
        rlines
    };
    f.render_widget(
        Paragraph::new(rlines).block(Block::default().borders(Borders::ALL).title(" reloads ")),
        rel,
    );
    f.render_widget(
        Paragraph::new(format!(
            "q quit · ↑/↓ select · d drain · u undrain   {status}"
        )),
        foot,
    );
}
