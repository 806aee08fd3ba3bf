//! Channel URLs: reading a shoutrrr-style URL (`slack://…`, `discord://…`, `teams://…`,
//! `generic://…`, `https://…`) into a typed [`Channel`], and building the request target from it.
//!
//! What this module must not do: let a token reach a `Debug`, a `Display`, an error or a log.
//! Every secret lives in a [`Secret`], whose formatting prints `***`; errors name the part of
//! the URL that is wrong (a scheme, a part's name, a query key) and never a value.

use std::collections::BTreeSet;
use std::fmt;

use percent_encoding::percent_decode_str;
use url::Url;

use crate::event::EventKind;

/// A string that must never be shown. Formatting it prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What is wrong with one channel URL. The message names the part, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a valid URL: {0}")]
    Syntax(#[from] url::ParseError),
    #[error(
        "unsupported scheme `{0}`: expected slack, discord, teams, generic (generic+https, generic+http), https or http"
    )]
    Scheme(String),
    #[error("{service}: the {part} is missing")]
    Missing {
        service: &'static str,
        part: &'static str,
    },
    #[error("{service}: the {part} is malformed; expected {expected}")]
    Malformed {
        service: &'static str,
        part: &'static str,
        expected: &'static str,
    },
    #[error("{service}: unknown query parameter `{key}`{hint}")]
    UnknownParameter {
        service: &'static str,
        key: String,
        hint: &'static str,
    },
    #[error("{service}: query parameter `{key}` has an invalid value; expected {expected}")]
    InvalidValue {
        service: &'static str,
        key: String,
        expected: &'static str,
    },
    #[error(
        "unknown event `{0}` in events=; expected applied, failed, rolled_back or approval_needed"
    )]
    UnknownEvent(String),
}

/// One configured destination: a service, its credentials, its options and which events it
/// wants. Cheap to clone. `Debug` and `Display` mask every secret.
#[derive(Clone)]
pub struct Channel {
    pub(crate) service: Service,
    events: Option<BTreeSet<EventKind>>,
    endpoint_override: Option<Url>,
}

#[derive(Clone)]
pub(crate) enum Service {
    Slack(Slack),
    Discord(Discord),
    Teams(Teams),
    Generic(Generic),
}

#[derive(Clone)]
pub(crate) struct Slack {
    /// `hook`, `xoxb` or `xoxp`.
    pub(crate) token_type: String,
    /// The three token parts.
    pub(crate) parts: [Secret; 3],
    /// A Slack channel id for the bot API; for webhooks, a channel override or nothing.
    pub(crate) channel: Option<String>,
    pub(crate) botname: Option<String>,
    pub(crate) icon: Option<String>,
    pub(crate) color: Option<String>,
    pub(crate) title: Option<String>,
    pub(crate) thread_ts: Option<String>,
}

impl Slack {
    pub(crate) fn is_webhook(&self) -> bool {
        self.token_type == "hook"
    }
    /// `Bearer xoxb-…` for the Web API.
    pub(crate) fn authorization(&self) -> Secret {
        let [a, b, c] = &self.parts;
        Secret::new(format!(
            "Bearer {}-{}-{}-{}",
            self.token_type,
            a.expose(),
            b.expose(),
            c.expose()
        ))
    }
}

#[derive(Clone)]
pub(crate) struct Discord {
    pub(crate) webhook_id: String,
    pub(crate) token: Secret,
    pub(crate) title: Option<String>,
    pub(crate) username: Option<String>,
    pub(crate) avatar: Option<String>,
    pub(crate) thread_id: Option<String>,
}

#[derive(Clone)]
pub(crate) enum TeamsTarget {
    /// Power Automate "workflows" webhook: the whole URL is the secret (its `sig` signs it).
    Workflow(Secret),
    /// The retired Office 365 connector webhook, `…/webhookb2/group@tenant/IncomingWebhook/…`.
    Connector {
        host: String,
        /// group, tenant, altId, groupOwner and the optional extraId.
        parts: Vec<Secret>,
    },
}

#[derive(Clone)]
pub(crate) struct Teams {
    pub(crate) target: TeamsTarget,
    pub(crate) title: Option<String>,
    pub(crate) color: Option<String>,
}

#[derive(Clone)]
pub(crate) struct Generic {
    /// The URL posted to, with credentials, path and query: all of it treated as secret.
    pub(crate) url: Secret,
    /// `generic` or `https`/`http`: how the user wrote it, for `Display`.
    pub(crate) written_scheme: String,
    pub(crate) method: reqwest::Method,
    pub(crate) content_type: String,
    pub(crate) headers: Vec<(String, Secret)>,
    pub(crate) extra: Vec<(String, String)>,
    pub(crate) title: Option<String>,
    pub(crate) title_key: String,
    pub(crate) message_key: String,
}

const SLACK_HOOKS: &str = "https://hooks.slack.com";
const SLACK_API: &str = "https://slack.com";
const DISCORD_API: &str = "https://discord.com";
const TEAMS_LEGACY_HOST: &str = "outlook.office.com";

impl Channel {
    /// Reads one channel URL. See the crate documentation for the formats.
    pub fn parse(input: &str) -> Result<Channel, UrlError> {
        let url = Url::parse(input.trim())?;
        let scheme = url.scheme().to_ascii_lowercase();
        if scheme == "https" || scheme == "http" {
            return Ok(Channel {
                service: Service::Generic(plain_webhook(url.clone(), &scheme)),
                events: None,
                endpoint_override: None,
            });
        }
        let mut query = Query::new(&url);
        let events = parse_events(&mut query)?;
        let service = match scheme.as_str() {
            "slack" => Service::Slack(parse_slack(&url, &mut query)?),
            "discord" => Service::Discord(parse_discord(&url, &mut query)?),
            "teams" => Service::Teams(parse_teams(&url, &mut query)?),
            "generic" | "generic+https" | "generic+http" => {
                Service::Generic(parse_generic(&url, &scheme, &mut query)?)
            }
            other => return Err(UrlError::Scheme(other.to_owned())),
        };
        if let Some(rest) = query.leftover() {
            return Err(rest);
        }
        Ok(Channel {
            service,
            events,
            endpoint_override: None,
        })
    }

    /// Sends to `base` (scheme, host and port) instead of the service's own host, keeping the
    /// path the service expects. For tests against a local server, and for proxies.
    #[must_use]
    pub fn with_endpoint_override(mut self, base: Url) -> Channel {
        self.endpoint_override = Some(base);
        self
    }

    /// Only these events are sent to this channel (`events=` in the URL does the same).
    #[must_use]
    pub fn with_events(mut self, events: impl IntoIterator<Item = EventKind>) -> Channel {
        self.events = Some(events.into_iter().collect());
        self
    }

    /// `slack`, `discord`, `teams` or `generic`.
    pub fn service_name(&self) -> &'static str {
        match &self.service {
            Service::Slack(_) => "slack",
            Service::Discord(_) => "discord",
            Service::Teams(_) => "teams",
            Service::Generic(_) => "generic",
        }
    }

    /// Whether this channel wants events of this kind.
    pub fn wants(&self, kind: EventKind) -> bool {
        self.events.as_ref().is_none_or(|set| set.contains(&kind))
    }

    /// The URL a notification is posted to. Holds secrets: never log it.
    pub(crate) fn target(&self) -> Result<Url, UrlError> {
        let mut url = match &self.service {
            Service::Slack(s) if s.is_webhook() => {
                let mut u = Url::parse(SLACK_HOOKS)?;
                push_segments(
                    &mut u,
                    ["services"]
                        .into_iter()
                        .chain(s.parts.iter().map(Secret::expose)),
                );
                u
            }
            Service::Slack(_) => {
                let mut u = Url::parse(SLACK_API)?;
                push_segments(&mut u, ["api", "chat.postMessage"]);
                u
            }
            Service::Discord(d) => {
                let mut u = Url::parse(DISCORD_API)?;
                push_segments(
                    &mut u,
                    ["api", "webhooks", d.webhook_id.as_str(), d.token.expose()],
                );
                if let Some(thread) = &d.thread_id {
                    u.query_pairs_mut().append_pair("thread_id", thread);
                }
                u
            }
            Service::Teams(t) => match &t.target {
                TeamsTarget::Workflow(url) => Url::parse(url.expose())?,
                TeamsTarget::Connector { host, parts } => {
                    let mut u = Url::parse(&format!("https://{host}"))?;
                    let path = if host == TEAMS_LEGACY_HOST {
                        "webhook"
                    } else {
                        "webhookb2"
                    };
                    let group_at_tenant = format!("{}@{}", parts[0].expose(), parts[1].expose());
                    push_segments(
                        &mut u,
                        [path, group_at_tenant.as_str(), "IncomingWebhook"]
                            .into_iter()
                            .chain(parts[2..].iter().map(Secret::expose)),
                    );
                    u
                }
            },
            Service::Generic(g) => Url::parse(g.url.expose())?,
        };
        if let Some(base) = &self.endpoint_override {
            // Only the origin changes, so tests see the path the real service would get.
            let _ = url.set_scheme(base.scheme());
            url.set_host(base.host_str())?;
            let _ = url.set_port(base.port_or_known_default());
        }
        Ok(url)
    }

    /// Every secret value of this channel, to scrub from text that came from elsewhere (an
    /// HTTP library's error, a server's answer) before it is logged or returned.
    pub(crate) fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        match &self.service {
            Service::Slack(s) => out.extend(s.parts.iter().map(|p| p.expose().to_owned())),
            Service::Discord(d) => out.push(d.token.expose().to_owned()),
            Service::Teams(t) => match &t.target {
                TeamsTarget::Workflow(u) => out.extend(url_secrets(u.expose())),
                TeamsTarget::Connector { parts, .. } => {
                    out.extend(parts.iter().map(|p| p.expose().to_owned()));
                }
            },
            Service::Generic(g) => {
                out.extend(url_secrets(g.url.expose()));
                out.extend(g.headers.iter().map(|(_, v)| v.expose().to_owned()));
            }
        }
        // Short fragments would mangle ordinary words and are not worth hiding on their own.
        out.retain(|s| s.len() >= 6);
        out.sort_by_key(|s| std::cmp::Reverse(s.len()));
        out
    }

    /// `text` with every secret of this channel replaced by `***`.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for s in self.secrets() {
            text = text.replace(&s, "***");
            let encoded: String =
                percent_encoding::utf8_percent_encode(&s, percent_encoding::NON_ALPHANUMERIC)
                    .collect();
            if encoded != s {
                text = text.replace(&encoded, "***");
            }
        }
        text
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.service {
            Service::Slack(s) => {
                let channel = s.channel.as_deref().unwrap_or("webhook");
                write!(f, "slack://{}:***@{channel}", s.token_type)?;
            }
            Service::Discord(d) => write!(f, "discord://***@{}", d.webhook_id)?,
            Service::Teams(t) => match &t.target {
                TeamsTarget::Workflow(u) => {
                    write!(f, "teams://?host={}", masked_url(u.expose(), "https"))?;
                }
                TeamsTarget::Connector { host, .. } => {
                    write!(f, "teams://***@***/***/***?host={host}")?;
                }
            },
            Service::Generic(g) => f.write_str(&masked_url(g.url.expose(), &g.written_scheme))?,
        }
        if let Some(events) = &self.events {
            let names: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
            write!(f, " (events: {})", names.join(","))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("service", &self.service_name())
            .field("url", &self.to_string())
            .field(
                "endpoint_override",
                &self
                    .endpoint_override
                    .as_ref()
                    .map(|u| u.origin().ascii_serialization()),
            )
            .finish()
    }
}

/// `scheme://host[:port]` and `/***` when there is anything after the origin.
fn masked_url(raw: &str, scheme: &str) -> String {
    match Url::parse(raw) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let hidden = (u.path() != "/" && !u.path().is_empty())
                || u.query().is_some()
                || !u.username().is_empty()
                || u.password().is_some();
            format!(
                "{scheme}://{host}{port}{}",
                if hidden { "/***" } else { "" }
            )
        }
        Err(_) => format!("{scheme}://***"),
    }
}

/// Path segments, query values and the password of a URL: the parts that can carry a secret.
fn url_secrets(raw: &str) -> Vec<String> {
    let Ok(u) = Url::parse(raw) else {
        return vec![raw.to_owned()];
    };
    let mut out = Vec::new();
    if let Some(p) = u.password() {
        out.push(decode(p));
        out.push(p.to_owned());
    }
    if !u.username().is_empty() {
        out.push(decode(u.username()));
    }
    if let Some(segments) = u.path_segments() {
        out.extend(segments.filter(|s| !s.is_empty()).map(decode));
    }
    out.extend(u.query_pairs().map(|(_, v)| v.into_owned()));
    if let Some(q) = u.query() {
        out.push(q.to_owned());
    }
    out
}

fn push_segments<'a>(url: &mut Url, segments: impl IntoIterator<Item = &'a str>) {
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The query of a channel URL, read once; each parser takes the keys it knows and whatever is
/// left over is an error (or, for generic webhooks, part of the webhook's own URL).
struct Query {
    pairs: Vec<(String, String)>,
    service: &'static str,
}

impl Query {
    fn new(url: &Url) -> Query {
        Query {
            pairs: url
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            service: "",
        }
    }

    /// The value of the first of `keys` present (case-insensitive), removing every key given.
    fn take(&mut self, keys: &[&str]) -> Option<String> {
        let mut found = None;
        self.pairs.retain(|(k, v)| {
            if keys.iter().any(|want| k.eq_ignore_ascii_case(want)) {
                if found.is_none() {
                    found = Some(v.clone());
                }
                false
            } else {
                true
            }
        });
        found.filter(|v| !v.is_empty())
    }

    fn take_bool(&mut self, key: &str) -> Result<Option<bool>, UrlError> {
        match self.take(&[key]) {
            None => Ok(None),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "yes" | "true" | "1" | "on" => Ok(Some(true)),
                "no" | "false" | "0" | "off" => Ok(Some(false)),
                _ => Err(UrlError::InvalidValue {
                    service: self.service,
                    key: key.to_owned(),
                    expected: "yes or no",
                }),
            },
        }
    }

    fn leftover(&self) -> Option<UrlError> {
        let (key, _) = self.pairs.first()?;
        let hint = if self.service == "teams" {
            "; percent-encode the whole workflow URL given in host="
        } else {
            ""
        };
        Some(UrlError::UnknownParameter {
            service: self.service,
            key: key.clone(),
            hint,
        })
    }
}

fn parse_events(q: &mut Query) -> Result<Option<BTreeSet<EventKind>>, UrlError> {
    let Some(list) = q.take(&["events"]) else {
        return Ok(None);
    };
    let mut set = BTreeSet::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        set.insert(EventKind::parse(name).ok_or_else(|| UrlError::UnknownEvent(name.to_owned()))?);
    }
    Ok(Some(set))
}

fn parse_slack(url: &Url, q: &mut Query) -> Result<Slack, UrlError> {
    const S: &str = "slack";
    q.service = S;
    let host = url.host_str().map(decode).unwrap_or_default();
    let (token, channel, mut botname) = if url.path().len() > 1 {
        // The first format: slack://[botname@]token-a/token-b/token-c (a webhook).
        let token = format!("{host}{}", decode(url.path()));
        let bot = Some(decode(url.username())).filter(|s| !s.is_empty());
        (token, None, bot)
    } else {
        // slack://hook:a-b-c@webhook or slack://xoxb:a-b-c@CHANNEL.
        let user = decode(url.username());
        if user.is_empty() {
            return Err(UrlError::Missing {
                service: S,
                part: "token (slack://hook:TOKEN@webhook or slack://xoxb:TOKEN@CHANNEL)",
            });
        }
        let token = match url.password() {
            Some(p) => format!("{user}:{}", decode(p)),
            None => user,
        };
        let channel = Some(host).filter(|h| !h.is_empty() && h != "webhook");
        (token, channel, None)
    };
    let (token_type, parts) = parse_slack_token(&token)?;
    if token_type != "hook" && channel.is_none() {
        return Err(UrlError::Missing {
            service: S,
            part: "channel (the host part, e.g. slack://xoxb:TOKEN@C0123456789)",
        });
    }
    if let Some(b) = q.take(&["botname", "username"]) {
        botname = Some(b);
    }
    Ok(Slack {
        token_type,
        parts,
        channel,
        botname,
        icon: q.take(&["icon", "icon_emoji", "icon_url"]),
        color: q.take(&["color"]),
        title: q.take(&["title"]),
        thread_ts: q.take(&["thread_ts"]),
    })
}

/// `[type(:|-)]part1 SEP part2 SEP part3`, SEP one of `-`, `/`, `,` used twice; type `hook`,
/// `xoxb`, `xoxp` (any `xox?`); parts of at least 9, 9 and 24 letters or digits.
fn parse_slack_token(raw: &str) -> Result<(String, [Secret; 3]), UrlError> {
    const S: &str = "slack";
    let malformed = |part, expected| UrlError::Malformed {
        service: S,
        part,
        expected,
    };
    let (token_type, rest) = match raw.get(..5) {
        Some(head)
            if (head.starts_with("xox") || head.starts_with("hook"))
                && matches!(head.as_bytes()[4], b'-' | b':') =>
        {
            (head[..4].to_owned(), &raw[5..])
        }
        _ => ("hook".to_owned(), raw.trim_start_matches(':')),
    };
    let Some(sep) = rest.chars().find(|c| matches!(c, '-' | '/' | ',')) else {
        return Err(malformed(
            "token",
            "three parts separated by -, / or , (e.g. T00000000-B00000000-XXXXXXXXXXXXXXXXXXXXXXXX)",
        ));
    };
    let parts: Vec<&str> = rest.split(sep).collect();
    if parts.len() != 3 {
        return Err(malformed(
            "token",
            "three parts separated by the same character (-, / or ,)",
        ));
    }
    let upper_digits = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    };
    if parts[0].len() < 9 || !upper_digits(parts[0]) {
        return Err(malformed(
            "token's first part",
            "at least 9 upper-case letters or digits",
        ));
    }
    if parts[1].len() < 9 || !upper_digits(parts[1]) {
        return Err(malformed(
            "token's second part",
            "at least 9 upper-case letters or digits",
        ));
    }
    if parts[2].len() < 24 || !parts[2].chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(malformed(
            "token's third part",
            "at least 24 letters or digits",
        ));
    }
    Ok((
        token_type,
        [
            Secret::new(parts[0]),
            Secret::new(parts[1]),
            Secret::new(parts[2]),
        ],
    ))
}

fn parse_discord(url: &Url, q: &mut Query) -> Result<Discord, UrlError> {
    const S: &str = "discord";
    q.service = S;
    let token = decode(url.username());
    if token.is_empty() {
        return Err(UrlError::Missing {
            service: S,
            part: "token (discord://TOKEN@WEBHOOK_ID)",
        });
    }
    let webhook_id = url.host_str().map(decode).unwrap_or_default();
    if webhook_id.is_empty() {
        return Err(UrlError::Missing {
            service: S,
            part: "webhook id (discord://TOKEN@WEBHOOK_ID)",
        });
    }
    if !webhook_id.chars().all(|c| c.is_ascii_digit()) {
        return Err(UrlError::Malformed {
            service: S,
            part: "webhook id",
            expected: "digits",
        });
    }
    // `/raw` makes shoutrrr send the message text as the JSON body; notifications here always
    // build their own payload, so it is accepted and has no effect.
    if !matches!(url.path(), "" | "/" | "/raw") {
        return Err(UrlError::Malformed {
            service: S,
            part: "path",
            expected: "nothing or /raw",
        });
    }
    // Colours come from the event kind; shoutrrr's colour and layout keys are accepted for
    // compatibility with existing URLs and ignored.
    for key in [
        "color",
        "colorerror",
        "colorwarn",
        "colorinfo",
        "colordebug",
        "splitlines",
        "json",
    ] {
        q.take(&[key]);
    }
    Ok(Discord {
        webhook_id,
        token: Secret::new(token),
        title: q.take(&["title"]),
        username: q.take(&["username"]),
        avatar: q.take(&["avatar", "avatarurl"]),
        thread_id: q.take(&["thread_id"]).map(|t| t.trim().to_owned()),
    })
}

fn parse_teams(url: &Url, q: &mut Query) -> Result<Teams, UrlError> {
    const S: &str = "teams";
    q.service = S;
    let host_param = q.take(&["host"]);
    let title = q.take(&["title"]);
    let color = q.take(&["color"]);
    let path_parts: Vec<String> = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).map(decode).collect())
        .unwrap_or_default();
    let target = match host_param {
        Some(h) if h.starts_with("https://") || h.starts_with("http://") => {
            let wf = Url::parse(&h).map_err(|_| UrlError::InvalidValue {
                service: S,
                key: "host".into(),
                expected: "the Power Automate workflow URL, percent-encoded",
            })?;
            if wf.host_str().is_none_or(str::is_empty) {
                return Err(UrlError::InvalidValue {
                    service: S,
                    key: "host".into(),
                    expected: "the Power Automate workflow URL, percent-encoded",
                });
            }
            TeamsTarget::Workflow(Secret::new(wf.to_string()))
        }
        host => {
            if url.password().is_some() {
                return Err(UrlError::Malformed {
                    service: S,
                    part: "URL",
                    expected: "teams://?host=WORKFLOW_URL or teams://group@tenant/altId/groupOwner[/extraId]?host=org.webhook.office.com",
                });
            }
            let group = decode(url.username());
            let tenant = url.host_str().map(decode).unwrap_or_default();
            if group.is_empty() && tenant.is_empty() && path_parts.is_empty() {
                return Err(UrlError::Missing {
                    service: S,
                    part: "webhook (teams://?host=WORKFLOW_URL, percent-encoded)",
                });
            }
            if !(2..=3).contains(&path_parts.len()) {
                return Err(UrlError::Malformed {
                    service: S,
                    part: "path",
                    expected: "/altId/groupOwner[/extraId] after group@tenant",
                });
            }
            let uuid =
                |s: &str| s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
            let checks: [(&str, &'static str, bool); 4] = [
                (&group, "group", uuid(&group)),
                (&tenant, "tenant", uuid(&tenant)),
                (
                    &path_parts[0],
                    "altId",
                    path_parts[0].len() == 32
                        && path_parts[0].chars().all(|c| c.is_ascii_hexdigit()),
                ),
                (&path_parts[1], "groupOwner", uuid(&path_parts[1])),
            ];
            for (_, part, ok) in checks {
                if !ok {
                    return Err(UrlError::Malformed {
                        service: S,
                        part,
                        expected: if part == "altId" {
                            "32 hexadecimal digits"
                        } else {
                            "a 36-character UUID"
                        },
                    });
                }
            }
            let host = host.unwrap_or_else(|| TEAMS_LEGACY_HOST.to_owned());
            if host.contains(['/', '@', '?', '#'])
                || Url::parse(&format!("https://{host}")).is_err()
            {
                return Err(UrlError::InvalidValue {
                    service: S,
                    key: "host".into(),
                    expected: "a host name such as example.webhook.office.com",
                });
            }
            let mut parts = vec![Secret::new(group), Secret::new(tenant)];
            parts.extend(path_parts.into_iter().map(Secret::new));
            TeamsTarget::Connector { host, parts }
        }
    };
    Ok(Teams {
        target,
        title,
        color,
    })
}

fn parse_generic(url: &Url, scheme: &str, q: &mut Query) -> Result<Generic, UrlError> {
    const S: &str = "generic";
    q.service = S;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::Missing {
            service: S,
            part: "host (generic://host[:port]/path)",
        });
    }
    let disable_tls = q
        .take_bool("disabletls")?
        .unwrap_or(scheme == "generic+http");
    if let Some(t) = q.take(&["template"])
        && !t.eq_ignore_ascii_case("json")
    {
        return Err(UrlError::InvalidValue {
            service: S,
            key: "template".into(),
            expected: "json (the only payload sent is the documented JSON object)",
        });
    }
    let content_type = q
        .take(&["contenttype"])
        .unwrap_or_else(|| "application/json".to_owned());
    let method = match q.take(&["method"]) {
        None => reqwest::Method::POST,
        Some(m) => match m.to_ascii_uppercase().as_str() {
            "POST" => reqwest::Method::POST,
            "PUT" => reqwest::Method::PUT,
            "PATCH" => reqwest::Method::PATCH,
            _ => {
                return Err(UrlError::InvalidValue {
                    service: S,
                    key: "method".into(),
                    expected: "POST, PUT or PATCH",
                });
            }
        },
    };
    let title = q.take(&["title"]);
    let title_key = q.take(&["titlekey"]).unwrap_or_else(|| "title".to_owned());
    let message_key = q
        .take(&["messagekey"])
        .unwrap_or_else(|| "message".to_owned());
    let mut headers = Vec::new();
    let mut extra = Vec::new();
    let mut rest = Vec::new();
    for (k, v) in std::mem::take(&mut q.pairs) {
        if let Some(name) = k.strip_prefix('@') {
            let name = header_name(name);
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(UrlError::InvalidValue {
                    service: S,
                    key: format!("@{name}"),
                    expected: "a valid HTTP header name",
                });
            }
            headers.push((name, Secret::new(v)));
        } else if let Some(name) = k.strip_prefix('$') {
            extra.push((name.to_owned(), v));
        } else {
            // Anything else belongs to the webhook's own URL, as shoutrrr does.
            rest.push((k, v));
        }
    }
    // `generic` is not a special scheme and the URL standard refuses to turn it into `https`
    // in place, so the webhook URL is read again from the text after `://`.
    let after = url.as_str().split_once("://").map(|(_, r)| r).unwrap_or("");
    let web_scheme = if disable_tls { "http" } else { "https" };
    let mut target = Url::parse(&format!("{web_scheme}://{after}"))?;
    target.set_query(None);
    target.set_fragment(None);
    if !rest.is_empty() {
        target.query_pairs_mut().extend_pairs(rest);
    }
    Ok(Generic {
        url: Secret::new(target.to_string()),
        written_scheme: "generic".to_owned(),
        method,
        content_type,
        headers,
        extra,
        title,
        title_key,
        message_key,
    })
}

/// A plain `https://` or `http://` URL: posted to exactly as written, with the JSON object.
fn plain_webhook(url: Url, scheme: &str) -> Generic {
    Generic {
        url: Secret::new(url.to_string()),
        written_scheme: scheme.to_owned(),
        method: reqwest::Method::POST,
        content_type: "application/json".to_owned(),
        headers: Vec::new(),
        extra: Vec::new(),
        title: None,
        title_key: "title".to_owned(),
        message_key: "message".to_owned(),
    }
}

/// shoutrrr's header spelling: `@XApiKey` → `X-Api-Key`, `@authorization` → `Authorization`.
fn header_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len() * 2);
    let mut prev: Option<char> = None;
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            if prev.is_some_and(|p| p != '-') {
                out.push('-');
            }
            out.push(c);
        } else if prev.is_none_or(|p| p == '-') {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
        prev = Some(c);
    }
    out
}

/// Splits a Watchtower-style list (`WATCHTOWER_NOTIFICATION_URL` holds URLs separated by
/// spaces) into single URLs.
pub fn split_urls(list: &str) -> Vec<String> {
    list.split_whitespace().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOOK: &str = "T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX";

    fn target(url: &str) -> String {
        Channel::parse(url)
            .expect("parses")
            .target()
            .expect("target")
            .to_string()
    }

    #[test]
    fn slack_all_webhook_spellings_reach_the_same_hook() {
        let want = format!("https://hooks.slack.com/services/{HOOK}");
        assert_eq!(target(&format!("slack://{HOOK}")), want);
        assert_eq!(target(&format!("slack://bot@{HOOK}")), want);
        assert_eq!(
            target("slack://hook:T00000000-B00000000-XXXXXXXXXXXXXXXXXXXXXXXX@webhook"),
            want
        );
        assert_eq!(
            target("slack://T00000000-B00000000-XXXXXXXXXXXXXXXXXXXXXXXX@webhook"),
            want
        );
    }

    #[test]
    fn slack_bot_token_goes_to_the_web_api_with_its_channel() {
        let c = Channel::parse(
            "slack://xoxb:123456789012-123456789012-abcdefghijklmnopqrstuvwx@C0123456789?botname=su",
        )
        .expect("parses");
        assert_eq!(
            c.target().expect("target").as_str(),
            "https://slack.com/api/chat.postMessage"
        );
        let Service::Slack(s) = &c.service else {
            panic!("not slack")
        };
        assert_eq!(s.channel.as_deref(), Some("C0123456789"));
        assert_eq!(s.botname.as_deref(), Some("su"));
        assert_eq!(
            s.authorization().expose(),
            "Bearer xoxb-123456789012-123456789012-abcdefghijklmnopqrstuvwx"
        );
        assert_eq!(c.to_string(), "slack://xoxb:***@C0123456789");
    }

    #[test]
    fn slack_errors_name_the_part() {
        let e = Channel::parse("slack://hook:T000-B00000000-XXXXXXXXXXXXXXXXXXXXXXXX@webhook")
            .expect_err("short part");
        assert!(e.to_string().contains("first part"), "{e}");
        let e = Channel::parse("slack://webhook").expect_err("no token");
        assert!(e.to_string().contains("token"), "{e}");
        let e = Channel::parse(&format!("slack://{HOOK}?colour=red")).expect_err("typo");
        assert!(e.to_string().contains("`colour`"), "{e}");
    }

    #[test]
    fn discord_url_builds_the_webhook_and_thread() {
        assert_eq!(
            target("discord://tok3n-Secret_value@123456789012345678?thread_id=42&color=0xff0000"),
            "https://discord.com/api/webhooks/123456789012345678/tok3n-Secret_value?thread_id=42"
        );
        let e = Channel::parse("discord://@123").expect_err("no token");
        assert!(e.to_string().contains("token"), "{e}");
        let e = Channel::parse("discord://tok@abc").expect_err("id not digits");
        assert!(e.to_string().contains("webhook id"), "{e}");
    }

    #[test]
    fn teams_connector_and_workflow_urls() {
        let g = "11111111-2222-3333-4444-555555555555";
        let t = "66666666-7777-8888-9999-000000000000";
        let alt = "0123456789abcdef0123456789abcdef";
        let owner = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
        assert_eq!(
            target(&format!(
                "teams://{g}@{t}/{alt}/{owner}?host=example.webhook.office.com"
            )),
            format!(
                "https://example.webhook.office.com/webhookb2/{g}@{t}/IncomingWebhook/{alt}/{owner}"
            )
        );
        assert_eq!(
            target(&format!(
                "teams://{g}@{t}/{alt}/{owner}/V2extra?host=example.webhook.office.com"
            )),
            format!(
                "https://example.webhook.office.com/webhookb2/{g}@{t}/IncomingWebhook/{alt}/{owner}/V2extra"
            )
        );
        assert_eq!(
            target(&format!("teams://{g}@{t}/{alt}/{owner}")),
            format!("https://outlook.office.com/webhook/{g}@{t}/IncomingWebhook/{alt}/{owner}")
        );
        let wf = "https://prod-00.westus.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=SIGSECRET123";
        let enc: String =
            percent_encoding::utf8_percent_encode(wf, percent_encoding::NON_ALPHANUMERIC).collect();
        let c = Channel::parse(&format!("teams://?host={enc}&title=Hi")).expect("parses");
        assert_eq!(
            c.target().expect("target").as_str(),
            Url::parse(wf).expect("url").as_str()
        );
        assert_eq!(
            c.to_string(),
            "teams://?host=https://prod-00.westus.logic.azure.com/***"
        );
        // Not encoded: the workflow URL's own parameters spill into the teams URL's query.
        let e = Channel::parse(&format!("teams://?host={wf}")).expect_err("unencoded");
        assert!(e.to_string().contains("percent-encode"), "{e}");
        assert!(!e.to_string().contains("SIGSECRET123"));
        let e = Channel::parse(&format!("teams://{g}@{t}/{alt}")).expect_err("short");
        assert!(e.to_string().contains("path"), "{e}");
        let e = Channel::parse(&format!("teams://{g}@{t}/xyz/{owner}")).expect_err("altid");
        assert!(e.to_string().contains("altId"), "{e}");
    }

    #[test]
    fn generic_urls_keep_their_own_query_and_take_options() {
        let c = Channel::parse(
            "generic://example.com:8443/hook/path?template=json&disabletls=yes&token=abc&@XApiKey=k3y-secret&$team=ops&events=failed,rolled_back",
        )
        .expect("parses");
        assert_eq!(
            c.target().expect("target").as_str(),
            "http://example.com:8443/hook/path?token=abc"
        );
        let Service::Generic(g) = &c.service else {
            panic!("not generic")
        };
        assert_eq!(g.headers[0].0, "X-Api-Key");
        assert_eq!(g.extra, vec![("team".to_owned(), "ops".to_owned())]);
        assert!(c.wants(EventKind::Failed) && !c.wants(EventKind::Applied));
        assert_eq!(
            c.to_string(),
            "generic://example.com:8443/*** (events: failed,rolled_back)"
        );
        assert_eq!(
            target("generic+https://example.com/x"),
            "https://example.com/x"
        );
        assert_eq!(
            target("https://example.com/hooks/abc?x=1&events=whatever"),
            "https://example.com/hooks/abc?x=1&events=whatever"
        );
        let e = Channel::parse("generic://example.com/x?template=custom").expect_err("template");
        assert!(e.to_string().contains("template"), "{e}");
        let e = Channel::parse("generic://example.com/x?events=sometimes").expect_err("events");
        assert!(e.to_string().contains("sometimes"), "{e}");
    }

    #[test]
    fn header_names_follow_shoutrrr() {
        assert_eq!(header_name("XApiKey"), "X-Api-Key");
        assert_eq!(header_name("authorization"), "Authorization");
        assert_eq!(header_name("content-type"), "Content-Type");
    }

    #[test]
    fn unknown_scheme_is_named() {
        let e = Channel::parse("telegram://token@telegram?chats=1").expect_err("unsupported");
        assert!(e.to_string().contains("`telegram`"), "{e}");
    }

    #[test]
    fn endpoint_override_changes_only_the_origin() {
        let c = Channel::parse("discord://tok@123")
            .expect("parses")
            .with_endpoint_override(Url::parse("http://127.0.0.1:9999").expect("url"));
        assert_eq!(
            c.target().expect("target").as_str(),
            "http://127.0.0.1:9999/api/webhooks/123/tok"
        );
    }

    #[test]
    fn redact_scrubs_plain_and_encoded_secrets() {
        let c = Channel::parse("discord://s3cr3t.Tok-en_9@123").expect("parses");
        let text = "failed for /api/webhooks/123/s3cr3t%2ETok%2Den%5F9 and s3cr3t.Tok-en_9 (123)";
        let r = c.redact(text);
        assert!(!r.contains("s3cr3t"), "{r}");
        assert!(r.contains("(123)"), "{r}");
    }
}
