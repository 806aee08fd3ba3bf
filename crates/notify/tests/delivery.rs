//! The notifier against real local HTTP servers (wiremock): what each service receives for each
//! event, retries, `Retry-After`, channels that hang or refuse, full queues, and that no
//! secret reaches a `Debug`, a `Display` or an error (logs: `tests/logs.rs`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use safe_updater_notify::{Channel, EventKind, Notifier, NotifyOptions};
use serde_json::{Value, json};
use url::Url;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// Sends one event of each kind through a notifier with this one channel and returns the JSON
/// bodies the server received, in order, with the request of each.
async fn send_all_kinds(ch: Channel, server: &MockServer) -> Vec<(Request, Value)> {
    let notifier = Notifier::new(vec![ch], options()).expect("notifier");
    for kind in EventKind::ALL {
        notifier.notify(event(kind));
    }
    let report = notifier.flush(Duration::from_secs(10)).await;
    assert!(report.completed, "{report:?}");
    assert_eq!(report.stats.total.delivered, 4, "{report:?}");
    assert_eq!(report.stats.total.failed, 0, "{report:?}");
    let requests = server.received_requests().await.expect("recording");
    assert_eq!(requests.len(), 4);
    requests
        .into_iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.body).expect("JSON body");
            (r, v)
        })
        .collect()
}

#[tokio::test]
async fn slack_webhook_gets_text_and_blocks_for_every_kind() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(
            "/services/T0SECRET1/B0SECRET2/SlackSecretPart3xxxxxxxx",
        ))
        .and(header("content-type", "application/json; charset=utf-8"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(4)
        .mount(&server)
        .await;
    let got = send_all_kinds(channel(SLACK_HOOK, &server), &server).await;
    let colors = ["#2eb886", "#d60510", "#ff8c00", "#2488ff"];
    for ((_, body), (kind, color)) in got.iter().zip(EventKind::ALL.into_iter().zip(colors)) {
        let title = title_of(kind);
        assert!(
            body["text"]
                .as_str()
                .expect("text")
                .ends_with(&format!("{title}: prod/web 1.0.0 → 1.1.0")),
            "{body}"
        );
        let att = &body["attachments"][0];
        assert_eq!(att["color"], color);
        let blocks = att["blocks"].as_array().expect("blocks");
        assert_eq!(
            blocks[0]["text"]["text"],
            format!("*{title}*: `prod/web` 1.0.0 → 1.1.0")
        );
        let fields: Vec<&str> = blocks[1]["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .map(|f| f["text"].as_str().expect("field text"))
            .collect();
        assert_eq!(
            fields,
            [
                "*Asset*\nweb",
                "*Kind*\ndocker_container",
                "*Namespace*\nprod",
                "*From*\n1.0.0",
                "*To*\n1.1.0",
                "*Decision*\nreview"
            ]
        );
        assert_eq!(
            blocks[2]["text"]["text"],
            "*Reason*\n1.0.0 → 1.1.0 is a minor update; the gate for minor is review"
        );
        let button = blocks.iter().find(|b| b["type"] == "actions");
        if kind == EventKind::ApprovalNeeded {
            let button = button.expect("approve button");
            assert_eq!(button["elements"][0]["url"], APPROVE);
            assert_eq!(button["elements"][0]["text"]["text"], "Approve");
        } else {
            assert!(button.is_none(), "{body}");
        }
        let context = blocks.last().expect("context");
        assert_eq!(
            context["elements"][0]["text"],
            "asset docker:local/web · correlation corr-42 · 2026-11-22T06:00:00Z"
        );
        // A webhook posts to its own channel: no channel, no bot name unless configured.
        assert!(body.get("channel").is_none() && body.get("username").is_none());
    }
}

#[tokio::test]
async fn slack_bot_api_gets_bearer_token_and_channel_and_refusals_are_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .and(header(
            "authorization",
            "Bearer xoxb-123456789012-123456789013-BotSecretPart3yyyyyyyyyy",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .mount(&server)
        .await;
    let got = send_all_kinds(channel(SLACK_BOT, &server), &server).await;
    for (_, body) in &got {
        assert_eq!(body["channel"], "C0123456789");
        assert_eq!(body["username"], "updater");
    }

    // Slack's Web API answers 200 with ok:false for its own errors: a failure, no retry.
    let refusing = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": false, "error": "channel_not_found"})),
        )
        .mount(&refusing)
        .await;
    let notifier = Notifier::new(vec![channel(SLACK_BOT, &refusing)], options()).expect("notifier");
    notifier.notify(event(EventKind::Failed));
    let report = notifier.flush(Duration::from_secs(5)).await;
    assert_eq!(report.stats.total.failed, 1, "{report:?}");
    assert_eq!(report.stats.total.retries, 0, "{report:?}");
    assert_eq!(
        refusing.received_requests().await.expect("recording").len(),
        1
    );
}

#[tokio::test]
async fn discord_gets_content_and_an_embed_for_every_kind() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/api/webhooks/123456789012345678/{DISCORD_TOKEN}"
        )))
        .respond_with(ResponseTemplate::new(204))
        .expect(4)
        .mount(&server)
        .await;
    let url = format!(
        "{}?username=Updater&avatar=https://img.example/a.png",
        discord_url()
    );
    let got = send_all_kinds(channel(&url, &server), &server).await;
    let colors = [0x2eb886, 0xd60510, 0xff8c00, 0x2488ff];
    for ((_, body), (kind, color)) in got.iter().zip(EventKind::ALL.into_iter().zip(colors)) {
        let title = title_of(kind);
        assert!(
            body["content"]
                .as_str()
                .expect("content")
                .ends_with(&format!("{title}: prod/web 1.0.0 → 1.1.0")),
            "{body}"
        );
        assert_eq!(body["username"], "Updater");
        assert_eq!(body["avatar_url"], "https://img.example/a.png");
        assert_eq!(body["allowed_mentions"], json!({"parse": []}));
        let embed = &body["embeds"][0];
        assert_eq!(embed["title"], format!("{title}: prod/web"));
        assert_eq!(
            embed["description"],
            "1.0.0 → 1.1.0 is a minor update; the gate for minor is review"
        );
        assert_eq!(embed["color"], color);
        assert_eq!(embed["timestamp"], "2026-11-22T06:00:00Z");
        let fields: Vec<(String, String)> = embed["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .map(|f| {
                (
                    f["name"].as_str().expect("name").to_owned(),
                    f["value"].as_str().expect("value").to_owned(),
                )
            })
            .collect();
        let mut want: Vec<(String, String)> = [
            ("Asset", "web"),
            ("Kind", "docker_container"),
            ("Namespace", "prod"),
            ("From", "1.0.0"),
            ("To", "1.1.0"),
            ("Decision", "review"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        if kind == EventKind::ApprovalNeeded {
            want.push(("Approve".into(), format!("[Approve]({APPROVE})")));
            assert_eq!(embed["url"], APPROVE);
        } else {
            assert!(embed.get("url").is_none());
        }
        assert_eq!(fields, want);
        assert_eq!(
            embed["footer"]["text"],
            "asset docker:local/web · correlation corr-42 · 2026-11-22T06:00:00Z"
        );
    }
}

#[tokio::test]
async fn teams_workflow_gets_an_adaptive_card_for_every_kind() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/workflows/wf123/triggers/manual/paths/invoke"))
        .and(wiremock::matchers::query_param("sig", TEAMS_SIG))
        .and(wiremock::matchers::query_param(
            "sp",
            "/triggers/manual/run",
        ))
        .respond_with(ResponseTemplate::new(202))
        .expect(4)
        .mount(&server)
        .await;
    let got = send_all_kinds(channel(&teams_workflow_url(), &server), &server).await;
    let colors = ["good", "attention", "warning", "accent"];
    for ((_, body), (kind, color)) in got.iter().zip(EventKind::ALL.into_iter().zip(colors)) {
        assert_eq!(body["type"], "message");
        let att = &body["attachments"][0];
        assert_eq!(
            att["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        let card = &att["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["version"], "1.2");
        let blocks = card["body"].as_array().expect("body");
        assert!(
            blocks[0]["text"]
                .as_str()
                .expect("heading")
                .ends_with(&format!("{}: prod/web 1.0.0 → 1.1.0", title_of(kind)))
        );
        assert_eq!(blocks[0]["color"], color);
        assert_eq!(
            blocks[1]["facts"],
            json!([
                {"title": "Asset", "value": "web"},
                {"title": "Kind", "value": "docker_container"},
                {"title": "Namespace", "value": "prod"},
                {"title": "From", "value": "1.0.0"},
                {"title": "To", "value": "1.1.0"},
                {"title": "Decision", "value": "review"}
            ])
        );
        assert_eq!(
            blocks[2]["text"],
            "1.0.0 → 1.1.0 is a minor update; the gate for minor is review"
        );
        if kind == EventKind::ApprovalNeeded {
            assert_eq!(
                card["actions"],
                json!([{"type": "Action.OpenUrl", "title": "Approve", "url": APPROVE}])
            );
        } else {
            assert!(card.get("actions").is_none());
        }
    }
}

#[tokio::test]
async fn teams_connector_gets_a_message_card_for_every_kind() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/webhookb2/{TEAMS_GROUP}@{TEAMS_TENANT}/IncomingWebhook/{TEAMS_ALT}/{TEAMS_OWNER}"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_string("1"))
        .expect(4)
        .mount(&server)
        .await;
    let got = send_all_kinds(channel(&teams_connector_url(), &server), &server).await;
    let colors = ["2EB886", "D60510", "FF8C00", "2488FF"];
    for ((_, body), (kind, color)) in got.iter().zip(EventKind::ALL.into_iter().zip(colors)) {
        assert_eq!(body["@type"], "MessageCard");
        assert_eq!(body["@context"], "http://schema.org/extensions");
        assert_eq!(body["themeColor"], color);
        assert_eq!(
            body["summary"],
            format!("{}: prod/web 1.0.0 → 1.1.0", title_of(kind))
        );
        assert!(
            body["title"]
                .as_str()
                .expect("title")
                .starts_with("Updates: ")
        );
        let section = &body["sections"][0];
        assert_eq!(
            section["facts"][0],
            json!({"name": "Asset", "value": "web"})
        );
        assert_eq!(section["facts"][4], json!({"name": "To", "value": "1.1.0"}));
        assert_eq!(
            section["text"],
            "1.0.0 → 1.1.0 is a minor update; the gate for minor is review"
        );
        if kind == EventKind::ApprovalNeeded {
            assert_eq!(
                body["potentialAction"],
                json!([{"@type": "OpenUri", "name": "Approve", "targets": [{"os": "default", "uri": APPROVE}]}])
            );
        } else {
            assert!(body.get("potentialAction").is_none());
        }
    }
}

#[tokio::test]
async fn generic_webhook_gets_the_documented_object_with_headers_and_extras() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/hooks/updates"))
        .and(wiremock::matchers::query_param(
            "token",
            "GenericQuerySecret",
        ))
        .and(header("x-api-key", "GenericHeaderSecret"))
        .and(header("content-type", "application/json"))
        .respond_with(ResponseTemplate::new(200))
        .expect(4)
        .mount(&server)
        .await;
    let url = "generic://hooks.example.com/hooks/updates?template=json&method=PUT&token=GenericQuerySecret&@XApiKey=GenericHeaderSecret&$team=ops&$event=ignored";
    let got = send_all_kinds(channel(url, &server), &server).await;
    for ((_, body), kind) in got.iter().zip(EventKind::ALL) {
        let approve = (kind == EventKind::ApprovalNeeded).then_some(APPROVE);
        assert_eq!(
            *body,
            json!({
                "event": kind.as_str(),
                "title": title_of(kind),
                "message": format!("{}: prod/web 1.0.0 → 1.1.0", title_of(kind)),
                "asset_id": "docker:local/web",
                "asset": "web",
                "kind": "docker_container",
                "namespace": "prod",
                "from": "1.0.0",
                "to": "1.1.0",
                "decision": "review",
                "reason": "1.0.0 → 1.1.0 is a minor update; the gate for minor is review",
                "approve_url": approve,
                "timestamp": "2026-11-22T06:00:00Z",
                "correlation_id": "corr-42",
                "team": "ops"
            })
        );
    }

    // A plain http URL is posted to exactly as written, with the same object.
    let plain = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/plain/hook"))
        .and(wiremock::matchers::query_param("events", "kept"))
        .respond_with(ResponseTemplate::new(200))
        .expect(4)
        .mount(&plain)
        .await;
    let url = format!("{}/plain/hook?events=kept", plain.uri());
    let notifier = Notifier::from_urls(&[url], options()).expect("notifier");
    for kind in EventKind::ALL {
        notifier.notify(event(kind));
    }
    assert!(notifier.flush(Duration::from_secs(5)).await.completed);
    let bodies: Vec<Value> = plain
        .received_requests()
        .await
        .expect("recording")
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("json"))
        .collect();
    let events: Vec<&str> = bodies
        .iter()
        .map(|b| b["event"].as_str().expect("event"))
        .collect();
    assert_eq!(
        events,
        ["applied", "failed", "rolled_back", "approval_needed"]
    );
    assert!(bodies[0].get("team").is_none());
}

#[tokio::test]
async fn events_filter_sends_only_the_chosen_kinds() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let url = format!("{}?events=failed,rolled-back", discord_url());
    let notifier = Notifier::new(vec![channel(&url, &server)], options()).expect("notifier");
    for kind in EventKind::ALL {
        notifier.notify(event(kind));
    }
    let report = notifier.flush(Duration::from_secs(5)).await;
    assert_eq!(report.stats.total.delivered, 2);
    assert_eq!(report.stats.total.filtered, 2);
    let titles: Vec<String> = server
        .received_requests()
        .await
        .expect("recording")
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.body).expect("json");
            v["embeds"][0]["title"].as_str().expect("title").to_owned()
        })
        .collect();
    assert_eq!(
        titles,
        ["Update failed: prod/web", "Update rolled back: prod/web"]
    );
}

#[tokio::test]
async fn a_500_then_200_is_retried_and_delivered() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string("busy"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .with_priority(2)
        .mount(&server)
        .await;
    let notifier =
        Notifier::new(vec![channel(&discord_url(), &server)], options()).expect("notifier");
    notifier.notify(event(EventKind::Applied));
    let report = notifier.flush(Duration::from_secs(5)).await;
    assert!(report.completed);
    assert_eq!(report.stats.total.delivered, 1, "{report:?}");
    assert_eq!(report.stats.total.retries, 1, "{report:?}");
    let requests = server.received_requests().await.expect("recording");
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].body, requests[1].body,
        "the same payload is sent again"
    );
}

#[tokio::test]
async fn a_4xx_is_not_retried_and_attempts_are_bounded() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/gone"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/down"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let urls = [
        format!("{}/gone", server.uri()),
        format!("{}/down", server.uri()),
    ];
    let notifier = Notifier::from_urls(&urls, options()).expect("notifier");
    notifier.notify(event(EventKind::Failed));
    let report = notifier.flush(Duration::from_secs(5)).await;
    assert!(report.completed);
    let gone = &report.stats.channels[0].counts;
    let down = &report.stats.channels[1].counts;
    assert_eq!((gone.failed, gone.retries), (1, 0), "{report:?}");
    assert_eq!((down.failed, down.retries), (1, 2), "{report:?}");
    let requests = server.received_requests().await.expect("recording");
    let count = |p: &str| requests.iter().filter(|r| r.url.path() == p).count();
    assert_eq!(count("/gone"), 1);
    assert_eq!(count("/down"), 3, "options().attempts is 3");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&server)
        .await;
    let notifier = Notifier::new(vec![channel("generic://example.com/x", &server)], options())
        .expect("notifier");
    let started = Instant::now();
    notifier.notify(event(EventKind::Applied));
    let report = notifier.flush(Duration::from_secs(10)).await;
    let elapsed = started.elapsed();
    assert!(report.completed);
    assert_eq!(report.stats.total.delivered, 1);
    assert_eq!(
        server.received_requests().await.expect("recording").len(),
        2
    );
    // The backoff alone would have waited 10 ms; the service asked for a second.
    assert!(elapsed >= Duration::from_millis(950), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

    // Asked to wait longer than max_retry_wait: given up at once, not hammered.
    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "3600"))
        .mount(&slow)
        .await;
    let notifier = Notifier::new(vec![channel("generic://example.com/x", &slow)], options())
        .expect("notifier");
    let started = Instant::now();
    notifier.notify(event(EventKind::Applied));
    let report = notifier.flush(Duration::from_secs(5)).await;
    assert!(report.completed && started.elapsed() < Duration::from_secs(2));
    assert_eq!(report.stats.total.failed, 1);
    assert_eq!(slow.received_requests().await.expect("recording").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_and_refusing_channels_delay_neither_the_caller_nor_other_channels() {
    let good = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&good)
        .await;
    let (hole, _task) = black_hole().await;
    let refused = refused_port();
    let channels = vec![
        Channel::parse(&format!("http://{hole}/hang")).expect("hang"),
        Channel::parse(&format!("http://127.0.0.1:{refused}/refused")).expect("refused"),
        channel(&discord_url(), &good),
    ];
    let opts = NotifyOptions {
        timeout: Duration::from_secs(30),
        ..options()
    };
    let notifier = Notifier::new(channels, opts).expect("notifier");

    let started = Instant::now();
    for kind in EventKind::ALL {
        notifier.notify(event(kind));
    }
    let spent = started.elapsed();
    assert!(
        spent < Duration::from_millis(100),
        "notify() waited {spent:?}"
    );

    // The good channel gets everything while the hanging one is still waiting on its first.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = good.received_requests().await.expect("recording").len();
        if n == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "good channel got {n} of 4");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The refused channel gives up on each (3 attempts, short backoff) on its own.
    let deadline = Instant::now() + Duration::from_secs(5);
    while notifier.stats().channels[1].counts.failed < 4 {
        assert!(Instant::now() < deadline, "{:?}", notifier.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = notifier.flush(Duration::from_millis(200)).await;
    assert!(!report.completed, "the hanging channel still holds its 4");
    assert_eq!(report.pending, 4, "{report:?}");
    let [hang, refused, good_stats] = &report.stats.channels[..] else {
        panic!("three channels")
    };
    assert_eq!(hang.counts.delivered + hang.counts.failed, 0);
    assert_eq!((refused.counts.failed, refused.counts.retries), (4, 8));
    assert_eq!(good_stats.counts.delivered, 4);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts() {
    let (hole, _task) = black_hole().await;
    let opts = NotifyOptions {
        queue_capacity: 1,
        timeout: Duration::from_secs(30),
        ..options()
    };
    let notifier = Notifier::new(
        vec![Channel::parse(&format!("http://{hole}/x")).expect("url")],
        opts,
    )
    .expect("notifier");
    // On this single-threaded runtime the channel's task cannot run between these calls, so
    // the first fills the queue of one and the rest find it full.
    for _ in 0..5 {
        notifier.notify(event(EventKind::Failed));
    }
    let stats = notifier.stats();
    assert_eq!(stats.total.enqueued, 1, "{stats:?}");
    assert_eq!(stats.total.dropped, 4, "{stats:?}");
    assert_eq!(stats.pending, 1);
}

#[tokio::test]
async fn flush_with_nothing_queued_returns_at_once() {
    let notifier = Notifier::from_urls(&[], options()).expect("notifier");
    notifier.notify(event(EventKind::Applied));
    let started = Instant::now();
    let report = notifier.flush(Duration::from_secs(5)).await;
    assert!(report.completed && started.elapsed() < Duration::from_millis(100));
    assert_eq!(report.stats.total, Default::default());
}

#[test]
fn no_secret_in_debug_display_or_errors() {
    let urls = [
        SLACK_HOOK.to_owned(),
        SLACK_BOT.to_owned(),
        discord_url(),
        teams_connector_url(),
        teams_workflow_url(),
        "generic://hooks.example.com/x?token=GenericQuerySecret&@XApiKey=GenericHeaderSecret"
            .to_owned(),
        format!("https://hooks.example.com/{DISCORD_TOKEN}?k=GenericQuerySecret"),
    ];
    for u in &urls {
        let c = Channel::parse(u).expect("parses");
        assert_clean("Display", &c.to_string());
        assert_clean("Debug", &format!("{c:?}"));
        assert_clean("alternate Debug", &format!("{c:#?}"));
    }
    // Errors about malformed URLs that contain secrets name the part, not the value.
    let bad = [
        "slack://hook:T0SECRET1-B0SECRET2-SlackSecretPart3@webhook".to_owned(),
        "slack://xoxb:T0SECRET1-B0SECRET2-SlackSecretPart3xxxxxxxx".to_owned(),
        format!("slack://hook:T0SECRET1-B0SECRET2-{SLACK_P3}@webhook?bogus={DISCORD_TOKEN}"),
        format!("discord://{DISCORD_TOKEN}@not-digits"),
        format!("discord://{DISCORD_TOKEN}@123/extra"),
        format!("teams://?host={}", teams_workflow()),
        format!("teams://{TEAMS_GROUP}@{TEAMS_TENANT}/{TEAMS_ALT}"),
        format!(
            "teams://{TEAMS_GROUP}@{TEAMS_TENANT}/{TEAMS_ALT}/{TEAMS_OWNER}?host=a/{TEAMS_SIG}"
        ),
        "generic://hooks.example.com/x?template=GenericQuerySecret".to_owned(),
        "generic://hooks.example.com/x?method=GenericQuerySecret&@XApiKey=GenericHeaderSecret"
            .to_owned(),
        format!("telegram://{DISCORD_TOKEN}@telegram"),
        format!("slack://{DISCORD_TOKEN}"),
    ];
    for (i, u) in bad.iter().enumerate() {
        let e = Channel::parse(u).expect_err(u);
        assert_clean("UrlError Display", &e.to_string());
        assert_clean("UrlError Debug", &format!("{e:?}"));
        let list = vec![SLACK_HOOK.to_owned(), u.clone()];
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        let e = Notifier::from_urls(&list, options()).expect_err("bad list");
        let text = e.to_string();
        assert!(
            text.starts_with("notifications.urls[1]"),
            "case {i}: {text}"
        );
        assert_clean("NotifyError", &text);
        assert_clean("NotifyError Debug", &format!("{e:?}"));
    }
}

#[tokio::test]
async fn approve_base_url_must_be_http() {
    let e = Notifier::from_urls(
        &[SLACK_HOOK.to_owned()],
        NotifyOptions {
            approve_base_url: Some("ftp://x".into()),
            ..options()
        },
    )
    .expect_err("ftp");
    assert!(e.to_string().contains("approve_base_url"), "{e}");
}

#[test]
fn a_notifier_with_channels_needs_a_runtime() {
    let e = Notifier::from_urls(&[SLACK_HOOK.to_owned()], options()).expect_err("no runtime");
    assert!(
        matches!(e, safe_updater_notify::NotifyError::NoRuntime),
        "{e}"
    );
    // Without channels there is nothing to run, so no runtime is needed.
    let n = Notifier::from_urls(&[], options()).expect("no channels");
    assert_eq!(n.channel_count(), 0);
}

#[tokio::test]
async fn an_https_channel_to_a_plain_http_server_fails_cleanly() {
    // The TLS stack (rustls on ring, platform verifier) is really used: the handshake goes to
    // a server that speaks plain HTTP and fails; the notification fails after its attempts.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let port = Url::parse(&server.uri())
        .expect("uri")
        .port()
        .expect("port");
    let url = format!("https://127.0.0.1:{port}/hook");
    let notifier = Notifier::from_urls(&[url], options()).expect("notifier");
    notifier.notify(event(EventKind::Applied));
    let report = notifier.flush(Duration::from_secs(10)).await;
    assert!(report.completed);
    assert_eq!(report.stats.total.failed, 1, "{report:?}");
    assert_eq!(report.stats.total.retries, 2, "{report:?}");
    // Nothing reached the handler: each attempt died in the handshake.
    assert!(
        server
            .received_requests()
            .await
            .expect("recording")
            .is_empty()
    );
}

#[test]
fn a_watchtower_url_list_splits_on_spaces() {
    let list = format!("{SLACK_HOOK}  {}\n{}", discord_url(), teams_connector_url());
    let urls = safe_updater_notify::split_urls(&list);
    assert_eq!(urls.len(), 3);
    let services: Vec<&str> = urls
        .iter()
        .map(|u| Channel::parse(u).expect("parses").service_name())
        .collect();
    assert_eq!(services, ["slack", "discord", "teams"]);
}

#[test]
fn every_bad_url_is_reported_at_once() {
    let urls = vec![
        "slack://webhook".to_owned(),
        SLACK_HOOK.to_owned(),
        format!("discord://{DISCORD_TOKEN}@abc"),
    ];
    let problems = safe_updater_notify::check_urls(&urls);
    let at: Vec<usize> = problems.iter().map(|p| p.index).collect();
    assert_eq!(at, [0, 2]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let e = Notifier::from_urls(&urls, options()).expect_err("bad");
    let text = e.to_string();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.starts_with("notifications.urls[0] (slack): slack: the token"),
        "{text}"
    );
    assert!(
        text.contains("notifications.urls[2] (discord): discord: the webhook id is malformed"),
        "{text}"
    );
    assert!(!text.contains(DISCORD_TOKEN));
}

#[tokio::test]
async fn send_now_reports_each_channel() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/ok"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/missing"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let urls = [
        format!("{}/ok", server.uri()),
        format!("{}/missing", server.uri()),
    ];
    let mut channels: Vec<Channel> = urls
        .iter()
        .map(|u| Channel::parse(u).expect("parses"))
        .collect();
    // Filters do not apply to a test send.
    channels[0] = channels[0].clone().with_events([EventKind::Failed]);
    let notifier = Notifier::new(channels, options()).expect("notifier");
    let reports = notifier.send_now(&event(EventKind::Applied)).await;
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0].result, Ok(1));
    assert_eq!(
        reports[1].result,
        Err(safe_updater_notify::SendError::Status {
            status: 404,
            detail: String::new()
        })
    );
    assert_eq!(notifier.stats().total, Default::default());
}
