//! The JSON body each service expects for an [`Event`]: Slack (`text` plus an attachment of
//! blocks), Discord (`content` plus an embed), Teams (a MessageCard for connector webhooks, an
//! Adaptive Card for workflow webhooks) and the documented generic object.
//!
//! Pure functions of the event and the channel's options: no IO, no clock, no secrets (a
//! payload never contains a channel's token).

use serde_json::{Map, Value, json};

use crate::channel::{Discord, Generic, Slack, Teams, TeamsTarget};
use crate::event::{Event, EventKind};

/// Limits of the services (Slack section text 3000, Discord description 4096 and field value
/// 1024), with room to spare.
const SLACK_TEXT_MAX: usize = 2900;
const DISCORD_DESCRIPTION_MAX: usize = 4000;
const DISCORD_FIELD_MAX: usize = 1000;
const DISCORD_CONTENT_MAX: usize = 1900;

/// The facts every channel shows, in order: (label, value). Absent values are left out.
fn facts(event: &Event) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("Asset", event.asset_name.clone()),
        ("Kind", event.asset_kind.clone()),
    ];
    if let Some(ns) = event.namespace.as_deref().filter(|s| !s.is_empty()) {
        out.push(("Namespace", ns.to_owned()));
    }
    out.push(("From", event.from.clone().unwrap_or_else(|| "?".into())));
    out.push(("To", event.to.clone().unwrap_or_else(|| "?".into())));
    if !event.decision.is_empty() {
        out.push(("Decision", event.decision.clone()));
    }
    out
}

/// Asset id, correlation id and time, for a footer.
fn footer(event: &Event) -> String {
    let mut parts = vec![format!("asset {}", event.asset_id)];
    if let Some(c) = &event.correlation_id {
        parts.push(format!("correlation {c}"));
    }
    parts.push(event.timestamp.to_string());
    parts.join(" \u{b7} ")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('\u{2026}');
    out
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped; anything else is shown as written.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn hex_color(rgb: u32) -> String {
    format!("#{rgb:06x}")
}

pub(crate) fn slack(event: &Event, approve_url: Option<&str>, cfg: &Slack) -> Value {
    let summary = format!("{} {}", event.kind.emoji(), event.summary());
    let text = match &cfg.title {
        Some(t) => format!("{}\n{}", slack_escape(t), slack_escape(&summary)),
        None => slack_escape(&summary),
    };
    let mut blocks = vec![
        json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": format!(
                "*{}*: `{}` {}",
                event.kind.title(),
                slack_escape(&event.qualified_name()),
                slack_escape(&event.versions())
            )}
        }),
        json!({
            "type": "section",
            "fields": facts(event).into_iter().map(|(k, v)| json!({
                "type": "mrkdwn",
                "text": format!("*{k}*\n{}", slack_escape(&truncate(&v, 1900)))
            })).collect::<Vec<_>>()
        }),
    ];
    if !event.reason.is_empty() {
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": format!("*Reason*\n{}", slack_escape(&truncate(&event.reason, SLACK_TEXT_MAX)))}
        }));
    }
    if let Some(url) = approve_url {
        blocks.push(json!({
            "type": "actions",
            "elements": [{
                "type": "button",
                "text": {"type": "plain_text", "text": "Approve"},
                "url": url,
                "style": "primary"
            }]
        }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": slack_escape(&footer(event))}]
    }));
    let mut body = Map::new();
    body.insert("text".into(), Value::String(text));
    body.insert(
        "attachments".into(),
        json!([{
            "color": cfg.color.clone().unwrap_or_else(|| hex_color(event.kind.rgb())),
            "fallback": summary,
            "blocks": blocks,
        }]),
    );
    if let Some(b) = &cfg.botname {
        body.insert("username".into(), Value::String(b.clone()));
    }
    if let Some(icon) = &cfg.icon {
        let key = if icon.starts_with("http://") || icon.starts_with("https://") {
            "icon_url"
        } else {
            "icon_emoji"
        };
        body.insert(key.into(), Value::String(icon.clone()));
    }
    if let Some(c) = &cfg.channel {
        body.insert("channel".into(), Value::String(c.clone()));
    }
    if let Some(ts) = &cfg.thread_ts {
        body.insert("thread_ts".into(), Value::String(ts.clone()));
    }
    Value::Object(body)
}

pub(crate) fn discord(event: &Event, approve_url: Option<&str>, cfg: &Discord) -> Value {
    let summary = format!("{} {}", event.kind.emoji(), event.summary());
    let content = match &cfg.title {
        Some(t) => format!("**{t}**\n{summary}"),
        None => summary,
    };
    let mut fields: Vec<Value> = facts(event)
        .into_iter()
        .map(|(k, v)| {
            json!({
                "name": k,
                // Discord refuses empty field values.
                "value": if v.is_empty() { "\u{2014}".to_owned() } else { truncate(&v, DISCORD_FIELD_MAX) },
                "inline": true
            })
        })
        .collect();
    if let Some(url) = approve_url {
        fields.push(
            json!({"name": "Approve", "value": format!("[Approve]({url})"), "inline": false}),
        );
    }
    let mut embed = Map::new();
    embed.insert(
        "title".into(),
        Value::String(format!(
            "{}: {}",
            event.kind.title(),
            event.qualified_name()
        )),
    );
    if !event.reason.is_empty() {
        embed.insert(
            "description".into(),
            Value::String(truncate(&event.reason, DISCORD_DESCRIPTION_MAX)),
        );
    }
    if let Some(url) = approve_url {
        embed.insert("url".into(), Value::String(url.to_owned()));
    }
    embed.insert("color".into(), json!(event.kind.rgb()));
    embed.insert(
        "timestamp".into(),
        Value::String(event.timestamp.to_string()),
    );
    embed.insert("fields".into(), Value::Array(fields));
    embed.insert("footer".into(), json!({"text": footer(event)}));
    let mut body = Map::new();
    body.insert(
        "content".into(),
        Value::String(truncate(&content, DISCORD_CONTENT_MAX)),
    );
    body.insert("embeds".into(), Value::Array(vec![Value::Object(embed)]));
    // Tags and reasons come from outside; never let them ping @everyone or a role.
    body.insert("allowed_mentions".into(), json!({"parse": []}));
    if let Some(u) = &cfg.username {
        body.insert("username".into(), Value::String(u.clone()));
    }
    if let Some(a) = &cfg.avatar {
        body.insert("avatar_url".into(), Value::String(a.clone()));
    }
    Value::Object(body)
}

fn teams_heading(event: &Event, title: Option<&str>) -> String {
    let heading = format!("{} {}", event.kind.emoji(), event.summary());
    match title {
        Some(t) => format!("{t}: {heading}"),
        None => heading,
    }
}

pub(crate) fn teams(event: &Event, approve_url: Option<&str>, cfg: &Teams) -> Value {
    match cfg.target {
        TeamsTarget::Connector { .. } => teams_message_card(event, approve_url, cfg),
        TeamsTarget::Workflow(_) => teams_adaptive_card(event, approve_url, cfg),
    }
}

/// The Office 365 connector card, as shoutrrr sends to `webhook.office.com`.
fn teams_message_card(event: &Event, approve_url: Option<&str>, cfg: &Teams) -> Value {
    let color = cfg
        .color
        .clone()
        .unwrap_or_else(|| format!("{:06X}", event.kind.rgb()));
    let mut card = json!({
        "@type": "MessageCard",
        "@context": "http://schema.org/extensions",
        "summary": event.summary(),
        "title": teams_heading(event, cfg.title.as_deref()),
        "themeColor": color.trim_start_matches('#'),
        "sections": [{
            "facts": facts(event).into_iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
            "text": event.reason,
            "activitySubtitle": footer(event),
            "markdown": false
        }]
    });
    if let (Some(url), Some(obj)) = (approve_url, card.as_object_mut()) {
        obj.insert(
            "potentialAction".into(),
            json!([{"@type": "OpenUri", "name": "Approve", "targets": [{"os": "default", "uri": url}]}]),
        );
    }
    card
}

/// The Power Automate workflow envelope with an Adaptive Card, as shoutrrr sends.
fn teams_adaptive_card(event: &Event, approve_url: Option<&str>, cfg: &Teams) -> Value {
    let color = match event.kind {
        EventKind::Applied => "good",
        EventKind::Failed => "attention",
        EventKind::RolledBack => "warning",
        EventKind::ApprovalNeeded => "accent",
    };
    let mut body = vec![
        json!({"type": "TextBlock", "text": teams_heading(event, cfg.title.as_deref()), "weight": "Bolder", "size": "Medium", "color": color, "wrap": true}),
        json!({"type": "FactSet", "facts": facts(event).into_iter().map(|(k, v)| json!({"title": k, "value": v})).collect::<Vec<_>>()}),
    ];
    if !event.reason.is_empty() {
        body.push(json!({"type": "TextBlock", "text": event.reason, "wrap": true}));
    }
    body.push(json!({"type": "TextBlock", "text": footer(event), "isSubtle": true, "size": "Small", "wrap": true}));
    let mut content = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.2",
        "body": body,
    });
    if let (Some(url), Some(obj)) = (approve_url, content.as_object_mut()) {
        obj.insert(
            "actions".into(),
            json!([{"type": "Action.OpenUrl", "title": "Approve", "url": url}]),
        );
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": content
        }]
    })
}

/// The documented object of the generic webhook. Every key is always present (`null` when
/// unknown); `$name=value` extras from the URL are added but never replace these keys.
pub(crate) fn generic(event: &Event, approve_url: Option<&str>, cfg: &Generic) -> Value {
    let mut body = Map::new();
    body.insert("event".into(), json!(event.kind.as_str()));
    body.insert(
        cfg.title_key.clone(),
        json!(
            cfg.title
                .clone()
                .unwrap_or_else(|| event.kind.title().to_owned())
        ),
    );
    body.insert(cfg.message_key.clone(), json!(event.summary()));
    body.insert("asset_id".into(), json!(event.asset_id));
    body.insert("asset".into(), json!(event.asset_name));
    body.insert("kind".into(), json!(event.asset_kind));
    body.insert("namespace".into(), json!(event.namespace));
    body.insert("from".into(), json!(event.from));
    body.insert("to".into(), json!(event.to));
    body.insert("decision".into(), json!(event.decision));
    body.insert("reason".into(), json!(event.reason));
    body.insert("approve_url".into(), json!(approve_url));
    body.insert("timestamp".into(), json!(event.timestamp.to_string()));
    body.insert("correlation_id".into(), json!(event.correlation_id));
    for (k, v) in &cfg.extra {
        body.entry(k.clone()).or_insert_with(|| json!(v));
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_short_text_and_marks_cut_text() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abcdef", 4), "abc\u{2026}");
    }

    fn sample() -> Event {
        let mut e = Event::new(
            EventKind::Failed,
            "id<1>",
            "web",
            "deployment",
            jiff::Timestamp::UNIX_EPOCH,
        );
        e.from = Some("1.0.0".into());
        e.to = Some("1.0.2".into());
        e.reason = "health check failed: <script> & more".into();
        e
    }

    #[test]
    fn slack_options_shape_the_message() {
        let ch = crate::Channel::parse(
            "slack://bot@T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX?icon=https://img.example/i.png&color=good&title=Prod&thread_ts=123.456",
        )
        .expect("parses");
        let crate::channel::Service::Slack(cfg) = &ch.service else {
            panic!("slack")
        };
        let v = slack(&sample(), None, cfg);
        assert_eq!(v["username"], "bot");
        assert_eq!(v["icon_url"], "https://img.example/i.png");
        assert!(v.get("icon_emoji").is_none());
        assert_eq!(v["thread_ts"], "123.456");
        assert_eq!(v["attachments"][0]["color"], "good");
        assert_eq!(
            v["text"],
            "Prod\n\u{274c} Update failed: web 1.0.0 \u{2192} 1.0.2"
        );
        // Namespace and decision are absent, so their fields are left out.
        assert_eq!(
            v["attachments"][0]["blocks"][1]["fields"]
                .as_array()
                .map(Vec::len),
            Some(4)
        );
        assert_eq!(
            v["attachments"][0]["blocks"][2]["text"]["text"],
            "*Reason*\nhealth check failed: &lt;script&gt; &amp; more"
        );
        assert_eq!(
            v["attachments"][0]["blocks"][3]["elements"][0]["text"],
            "asset id&lt;1&gt; \u{b7} 1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn discord_never_sends_an_empty_field_or_an_oversized_text() {
        let ch = crate::Channel::parse("discord://tok@1?title=Prod").expect("parses");
        let crate::channel::Service::Discord(cfg) = &ch.service else {
            panic!("discord")
        };
        let mut e = sample();
        e.asset_kind = String::new();
        e.reason = "x".repeat(10_000);
        let v = discord(&e, None, cfg);
        assert_eq!(v["embeds"][0]["fields"][1]["value"], "\u{2014}");
        assert_eq!(
            v["embeds"][0]["description"]
                .as_str()
                .map(|s| s.chars().count()),
            Some(DISCORD_DESCRIPTION_MAX)
        );
        assert!(
            v["content"]
                .as_str()
                .is_some_and(|c| c.starts_with("**Prod**\n"))
        );
    }

    #[test]
    fn slack_text_is_escaped() {
        assert_eq!(slack_escape("a<b>&c"), "a&lt;b&gt;&amp;c");
    }
}
