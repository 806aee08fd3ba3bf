//! Notifications: channels configured by URL (Watchtower/shoutrrr style), sent with retries and
//! never blocking an update.
//!
//! The daemon makes one [`Notifier`] from the configured URLs and calls [`Notifier::notify`]
//! with an [`Event`] when an update is applied, fails, is rolled back, or waits for approval.
//! `notify` only puts the event in each channel's bounded queue and returns; one background
//! task per channel sends it, retrying with exponential backoff (bounded; `Retry-After` of a
//! 429 or 503 is honoured up to `max_retry_wait`). A slow or dead channel delays nobody, and a
//! full queue drops the event, counted in [`Notifier::stats`] and logged. At shutdown,
//! [`Notifier::flush`] waits (with a timeout) for what is queued.
//!
//! What this crate must not do: let a channel's token reach a log line, an error, a `Debug`
//! or a `Display` (channels print as `slack://hook:***@webhook`), or make a caller wait.
//!
//! # Channel URLs
//!
//! The formats are shoutrrr's, so a `WATCHTOWER_NOTIFICATION_URL` can be reused
//! ([`split_urls`] splits its space-separated list). Query keys are case-insensitive. Every
//! URL also takes `events=` (comma-separated `applied`, `failed`, `rolled_back`,
//! `approval_needed`) to receive only those events; without it a channel gets all four.
//!
//! | service | URL | sent to |
//! | --- | --- | --- |
//! | Slack webhook | `slack://hook:T00000000-B00000000-XXXXXXXXXXXXXXXXXXXXXXXX@webhook` | `https://hooks.slack.com/services/T00000000/B00000000/XXXX…` |
//! | Slack webhook (first format) | `slack://[botname@]T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX` | the same |
//! | Slack bot API | `slack://xoxb:123456789012-1234567890123-AbCd…@C0123456789` | `https://slack.com/api/chat.postMessage` with `Authorization: Bearer xoxb-…`, to that channel id |
//! | Discord | `discord://TOKEN@WEBHOOK_ID[?thread_id=ID]` | `https://discord.com/api/webhooks/WEBHOOK_ID/TOKEN` |
//! | Teams workflow (Power Automate) | `teams://?host=WORKFLOW_URL` with the whole workflow URL percent-encoded | that URL, an Adaptive Card |
//! | Teams connector (retired by Microsoft) | `teams://group@tenant/altId/groupOwner[/extraId]?host=example.webhook.office.com` | `https://example.webhook.office.com/webhookb2/group@tenant/IncomingWebhook/altId/groupOwner[/extraId]`, a MessageCard (without `host=`: `https://outlook.office.com/webhook/…`) |
//! | Generic | `generic://host[:port]/path[?query]` | `https://host[:port]/path[?query]`, the JSON object below |
//! | Generic, explicit | `generic+https://…`, `generic+http://…` | the same, over https or http |
//! | Plain webhook | `https://…` or `http://…` | exactly that URL (no options are read from it), the JSON object below |
//!
//! Options by service (all optional):
//!
//! * Slack: `botname` (alias `username`), `icon` (an emoji like `:robot_face:` or an image URL;
//!   aliases `icon_emoji`, `icon_url`), `color` (side bar, e.g. `good` or `%23ff8000`;
//!   default by event), `title` (a line above the message), `thread_ts`. The token's three parts
//!   may be separated by `-`, `/` or `,`.
//! * Discord: `title`, `username`, `avatar` (alias `avatarurl`), `thread_id`. shoutrrr's
//!   `color*`, `splitlines`, `json` and the `/raw` path are accepted and ignored (the colour
//!   follows the event).
//! * Teams: `title`, `color` (connector cards only; hex), `host` (see above).
//! * Generic: `disabletls=yes` (http instead of https), `template=json` (the only template; the
//!   body is always the JSON object), `method` (`POST`, `PUT`, `PATCH`), `contenttype`,
//!   `title`, `titlekey`, `messagekey` (rename the `title`/`message` keys), `@Name=value` (a
//!   request header: `@Authorization=Bearer%20…`, `@XApiKey=…` sends `X-Api-Key`),
//!   `$name=value` (an extra key in the JSON object). Any other query key stays in the
//!   webhook's URL.
//!
//! Unknown keys are errors (except for generic webhooks), so a typo does not pass silently.
//!
//! # Payloads
//!
//! * Slack: `text` (the one-line summary) and one attachment with the event's colour and
//!   blocks: the heading, fields (asset, kind, namespace, from, to, decision), the reason, an
//!   *Approve* button when there is an approve link, and a context line (asset id, correlation
//!   id, time).
//! * Discord: `content` (the summary) and one embed (title, reason, colour, timestamp, the same
//!   fields, the approve link as the embed's URL and a field, the context as footer);
//!   `allowed_mentions` is empty so nothing from a tag or reason can ping anyone.
//! * Teams: a MessageCard (connector) or an Adaptive Card 1.2 in a `message` envelope
//!   (workflow), with the heading, the facts, the reason and an *Approve* action.
//! * Generic: one JSON object, every key always present (`null` when unknown):
//!
//! ```json
//! {
//!   "event": "approval_needed",
//!   "title": "Approval needed",
//!   "message": "Approval needed: prod/web 1.0.0 → 1.1.0",
//!   "asset_id": "…",
//!   "asset": "web",
//!   "kind": "deployment",
//!   "namespace": "prod",
//!   "from": "1.0.0",
//!   "to": "1.1.0",
//!   "decision": "review",
//!   "reason": "1.0.0 → 1.1.0 is a minor update; the gate for minor is review …",
//!   "approve_url": "https://updater.example.com/approvals/…",
//!   "timestamp": "2026-01-01T12:00:00Z",
//!   "correlation_id": "…"
//! }
//! ```
//!
//! `event` is one of `applied`, `failed`, `rolled_back`, `approval_needed`. The approve link
//! is present on `approval_needed` events when `approve_base_url` is configured.

mod channel;
mod event;
mod notifier;
mod payload;
mod send;

pub use channel::{Channel, UrlError, split_urls};
pub use event::{Event, EventKind};
pub use notifier::{
    ChannelStats, Counts, DeliveryReport, FlushReport, Notifier, NotifyError, NotifyOptions,
    NotifyStats, UrlProblem, check_approve_base_url, check_urls,
};
pub use send::SendError;
