//! Health checks (`health::probe`, `monitor`) against a real Docker engine and the dev-env
//! registry (`scripts/dev-env`): HTTP, TCP (IPv4 and `::1`), exec, the container's own
//! HEALTHCHECK, and the running-without-restart rule.
//!
//! Every container is named with a prefix unique to the test and the run and removed
//! afterwards, also when the test fails. Without an engine or registry these tests FAIL with
//! instructions; they never pass silently.

use std::time::Duration;

use safe_updater_docker::bollard::models::{
    ContainerCreateBody, HealthConfig, HostConfig, PortBinding,
};
use safe_updater_docker::bollard::query_parameters::CreateContainerOptions;
use safe_updater_docker::health::probe;
use safe_updater_docker::{Backoff, Check, ExecCheck, HttpCheck, Monitor, TcpCheck, monitor};

mod common;
use common::{Env, SETUP, guarded};

async fn env() -> Env {
    common::env(&["1.0.0", "1.0.2"]).await
}

fn prefix(test: &str) -> String {
    common::prefix("health", test)
}

/// Creates and starts `<prefix>-<suffix>` from `tag`, published on 127.0.0.1; returns its id.
async fn run(
    env: &Env,
    name: &str,
    tag: &str,
    cmd: Option<Vec<&str>>,
    healthcheck: Option<HealthConfig>,
) -> String {
    let docker = env.engine.docker();
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.to_owned()),
                ..Default::default()
            }),
            ContainerCreateBody {
                image: Some(format!("{}/demo/web:{tag}", env.registry)),
                cmd: cmd.map(|c| c.into_iter().map(str::to_owned).collect()),
                healthcheck,
                host_config: Some(HostConfig {
                    port_bindings: Some(
                        [(
                            "8080/tcp".to_owned(),
                            Some(vec![PortBinding {
                                host_ip: Some("127.0.0.1".into()),
                                host_port: Some(String::new()),
                            }]),
                        )]
                        .into(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    docker
        .start_container(&created.id, None)
        .await
        .expect("start");
    created.id
}

/// Waits until `GET /version` on the published port answers 200 (httpd is up).
async fn wait_listening(env: &Env, id: &str) {
    let check = Check::Http(HttpCheck::get(
        "http://{host_ip:8080/tcp}:{host_port:8080/tcp}/version",
    ));
    for _ in 0..75 {
        if probe(&env.engine, id, &check).await.ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{id} never answered on its published port");
}

async fn published_port(env: &Env, id: &str) -> u16 {
    let inspect = env
        .engine
        .docker()
        .inspect_container(id, None)
        .await
        .expect("inspect");
    inspect
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|p| p.get("8080/tcp").cloned().flatten())
        .and_then(|b| b.into_iter().find_map(|b| b.host_port))
        .and_then(|p| p.parse().ok())
        .expect("published port")
}

fn quick_monitor(window: u64) -> Monitor {
    Monitor {
        window: Duration::from_secs(window),
        interval: Duration::from_millis(500),
        failure_threshold: 3,
        retries_backoff: Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_millis(500),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_checks() {
    let env = env().await;
    let p = prefix("http");
    guarded(&env, &p, || async {
        let id = run(&env, &format!("{p}-web"), "1.0.0", None, None).await;
        wait_listening(&env, &id).await;
        let published = "http://{host_ip:8080/tcp}:{host_port:8080/tcp}";

        let mut ok = HttpCheck::get(format!("{published}/health"));
        ok.body_contains = Some("ok".into());
        let o = probe(&env.engine, &id, &Check::Http(ok)).await;
        assert!(o.ok, "{o:?}");
        assert!(o.detail.contains("HTTP 200"), "{o:?}");

        // By the container's IP on the bridge.
        let mut by_ip = HttpCheck::get("http://{container_ip}:8080/version");
        by_ip.body_contains = Some("1.0.0".into());
        let o = probe(&env.engine, &id, &Check::Http(by_ip)).await;
        assert!(o.ok, "{o:?}");

        let missing = HttpCheck::get(format!("{published}/nope"));
        let o = probe(&env.engine, &id, &Check::Http(missing.clone())).await;
        assert!(!o.ok, "{o:?}");
        assert!(o.detail.contains("HTTP 404"), "{o:?}");

        let mut expect_404 = missing;
        expect_404.expected_status = 404..=404;
        let o = probe(&env.engine, &id, &Check::Http(expect_404)).await;
        assert!(o.ok, "a status range that includes 404: {o:?}");

        let mut wrong_body = HttpCheck::get(format!("{published}/version"));
        wrong_body.body_contains = Some("2.0.0".into());
        let o = probe(&env.engine, &id, &Check::Http(wrong_body)).await;
        assert!(!o.ok, "{o:?}");
        assert!(o.detail.contains("does not contain"), "{o:?}");

        // A server that accepts and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = silent.local_addr().expect("addr");
        let mut slow = HttpCheck::get(format!("http://{addr}/"));
        slow.timeout = Duration::from_millis(700);
        let started = std::time::Instant::now();
        let o = probe(&env.engine, &id, &Check::Http(slow)).await;
        assert!(!o.ok, "{o:?}");
        assert!(o.detail.contains("no answer within 0.7s"), "{o:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(silent);

        // Nothing listening.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let o = probe(
            &env.engine,
            &id,
            &Check::Http(HttpCheck::get(format!("http://{addr}/"))),
        )
        .await;
        assert!(!o.ok, "{o:?}");

        // A port that is not published.
        let o = probe(
            &env.engine,
            &id,
            &Check::Http(HttpCheck::get("http://127.0.0.1:{host_port:9999/tcp}/")),
        )
        .await;
        assert!(!o.ok && o.detail.contains("not published"), "{o:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_checks_ipv4_and_ipv6() {
    let env = env().await;
    let p = prefix("tcp");
    guarded(&env, &p, || async {
        let id = run(&env, &format!("{p}-web"), "1.0.0", None, None).await;
        let port = published_port(&env, &id).await;
        let tcp = |host: &str, port: u16| {
            Check::Tcp(TcpCheck {
                host: host.to_owned(),
                port,
                timeout: Duration::from_secs(2),
            })
        };
        let o = probe(&env.engine, &id, &tcp("127.0.0.1", port)).await;
        assert!(o.ok, "{o:?}");
        // httpd needs a moment after the start; retry on the container's own address.
        let mut o = probe(&env.engine, &id, &tcp("{container_ip}", 8080)).await;
        for _ in 0..50 {
            if o.ok {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            o = probe(&env.engine, &id, &tcp("{container_ip}", 8080)).await;
        }
        assert!(o.ok, "the container's own address: {o:?}");

        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let closed_port = closed.local_addr().expect("addr").port();
        drop(closed);
        let o = probe(&env.engine, &id, &tcp("127.0.0.1", closed_port)).await;
        assert!(!o.ok, "{o:?}");

        let v6 = std::net::TcpListener::bind("[::1]:0")
            .expect("this test needs IPv6 on the loopback interface (::1)");
        let v6_port = v6.local_addr().expect("addr").port();
        let o = probe(&env.engine, &id, &tcp("::1", v6_port)).await;
        assert!(o.ok, "{o:?}");
        let o = probe(&env.engine, &id, &tcp("[::1]", v6_port)).await;
        assert!(o.ok, "bracketed: {o:?}");
        drop(v6);
        let o = probe(&env.engine, &id, &tcp("::1", v6_port)).await;
        assert!(!o.ok, "closed ::1 port: {o:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_checks() {
    let env = env().await;
    let p = prefix("exec");
    guarded(&env, &p, || async {
        let id = run(&env, &format!("{p}-web"), "1.0.0", None, None).await;
        let exec = |cmd: &str, expect_exit: i64, timeout_ms: u64| {
            Check::Exec(ExecCheck {
                cmd: vec!["sh".into(), "-c".into(), cmd.into()],
                timeout: Duration::from_millis(timeout_ms),
                expect_exit,
                output_contains: None,
            })
        };
        let printing = |cmd: &str, wanted: &str| {
            Check::Exec(ExecCheck {
                cmd: vec!["sh".into(), "-c".into(), cmd.into()],
                timeout: Duration::from_secs(5),
                expect_exit: 0,
                output_contains: Some(wanted.into()),
            })
        };
        let o = probe(&env.engine, &id, &printing("echo ready to serve", "ready")).await;
        assert!(o.ok, "{o:?}");
        let o = probe(&env.engine, &id, &printing("echo still booting", "ready")).await;
        assert!(!o.ok && o.detail.contains("lacks \"ready\""), "{o:?}");
        let o = probe(
            &env.engine,
            &id,
            &exec("echo hello; echo oops >&2; exit 3", 3, 5000),
        )
        .await;
        assert!(o.ok, "{o:?}");
        assert!(o.detail.contains("exit code 3"), "{o:?}");
        assert!(
            o.detail.contains("hello") && o.detail.contains("oops"),
            "{o:?}"
        );

        let o = probe(&env.engine, &id, &exec("cat /www/version", 0, 5000)).await;
        assert!(o.ok && o.detail.contains("1.0.0"), "{o:?}");

        let o = probe(&env.engine, &id, &exec("exit 1", 0, 5000)).await;
        assert!(!o.ok && o.detail.contains("exit code 1"), "{o:?}");

        let started = std::time::Instant::now();
        let o = probe(&env.engine, &id, &exec("sleep 5", 0, 800)).await;
        assert!(!o.ok && o.detail.contains("no exit within 0.8s"), "{o:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_rules() {
    let env = env().await;
    let p = prefix("mon");
    guarded(&env, &p, || async {
        // Healthy: Docker's own check turns healthy within the window, HTTP answers.
        let good = run(&env, &format!("{p}-good"), "1.0.0", None, None).await;
        let http = HttpCheck::get("http://{host_ip:8080/tcp}:{host_port:8080/tcp}/health");
        let report = monitor(
            &env.engine,
            &good,
            &[Check::Docker, Check::Http(http)],
            &quick_monitor(6),
        )
        .await;
        assert!(report.healthy, "{report:#?}");
        assert!(
            report
                .observations
                .iter()
                .any(|o| o.check == "docker" && o.ok)
        );

        // No checks, but a HEALTHCHECK: used implicitly. 1.0.2 turns unhealthy.
        let bad = run(&env, &format!("{p}-bad"), "1.0.2", None, None).await;
        let report = monitor(&env.engine, &bad, &[], &quick_monitor(15)).await;
        assert!(!report.healthy, "{report:#?}");
        assert!(report.reason.contains("unhealthy"), "{report:#?}");

        // `starting` for the whole window is not success.
        let slow = HealthConfig {
            test: Some(vec!["CMD-SHELL".into(), "exit 1".into()]),
            interval: Some(60_000_000_000),
            timeout: Some(1_000_000_000),
            start_period: Some(60_000_000_000),
            retries: Some(3),
            start_interval: None,
        };
        let starting = run(&env, &format!("{p}-starting"), "1.0.0", None, Some(slow)).await;
        let report = monitor(&env.engine, &starting, &[Check::Docker], &quick_monitor(2)).await;
        assert!(!report.healthy, "{report:#?}");
        assert!(report.reason.contains("had not succeeded"), "{report:#?}");

        // No checks and no HEALTHCHECK: running for the whole window is the check.
        let none = HealthConfig {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        };
        let plain = run(
            &env,
            &format!("{p}-plain"),
            "1.0.0",
            None,
            Some(none.clone()),
        )
        .await;
        let report = monitor(&env.engine, &plain, &[], &quick_monitor(2)).await;
        assert!(report.healthy, "{report:#?}");
        assert!(report.reason.contains("without a restart"), "{report:#?}");

        // A container that exits during the window fails.
        let dying = run(
            &env,
            &format!("{p}-dying"),
            "1.0.0",
            Some(vec!["sh", "-c", "sleep 1; exit 4"]),
            Some(none),
        )
        .await;
        let report = monitor(&env.engine, &dying, &[], &quick_monitor(5)).await;
        assert!(!report.healthy, "{report:#?}");
        assert!(report.reason.contains("not running"), "{report:#?}");
        assert!(report.reason.contains("exit code 4"), "{report:#?}");

        // A check that keeps failing fails after the threshold, before the window ends.
        let started = std::time::Instant::now();
        let missing = HttpCheck::get("http://{host_ip:8080/tcp}:{host_port:8080/tcp}/nope");
        let report = monitor(
            &env.engine,
            &good,
            &[Check::Http(missing)],
            &quick_monitor(30),
        )
        .await;
        assert!(!report.healthy, "{report:#?}");
        assert!(report.reason.contains("3 times in a row"), "{report:#?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    })
    .await;
}

/// HTTP checks over TLS against a real TLS server (`openssl s_server -HTTP`, OpenSSL rather
/// than rustls on the other end), and the request options (method, headers, basic auth,
/// redirects) against a plain HTTP server in the test that records what it received.
mod https_and_request_options {
    use super::common::{TempDir, openssl};
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex};

    /// In `dir`: `ca.pem` (a CA made for the test), and two server certificates it signed:
    /// `good-{cert,key}.pem` for IP:127.0.0.1 and DNS:localhost, `other-{cert,key}.pem` for
    /// DNS:other.invalid only.
    fn make_certificates(dir: &Path) {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca-key.pem",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=safe-updater health test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        for (name, san, serial) in [
            ("good", "IP:127.0.0.1,DNS:localhost", "11"),
            ("other", "DNS:other.invalid", "12"),
        ] {
            std::fs::write(
                dir.join(format!("{name}.ext")),
                format!(
                    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                     extendedKeyUsage=serverAuth\nsubjectAltName={san}\n"
                ),
            )
            .expect("write ext");
            let (key, csr, cert, ext) = (
                format!("{name}-key.pem"),
                format!("{name}.csr"),
                format!("{name}-cert.pem"),
                format!("{name}.ext"),
            );
            openssl(
                dir,
                &[
                    "req",
                    "-new",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN={name}"),
                ],
            );
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca-key.pem",
                    "-set_serial",
                    serial,
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                    "-out",
                    &cert,
                ],
            );
        }
    }

    /// `openssl s_server -HTTP` on a free loopback port, serving the files of `www` (each a
    /// complete HTTP response); killed when dropped.
    struct TlsServer {
        child: Child,
        port: u16,
    }

    impl TlsServer {
        fn start(certs: &Path, name: &str, www: &Path) -> TlsServer {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let mut child = Command::new("openssl")
                .args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-HTTP"])
                .arg("-cert")
                .arg(certs.join(format!("{name}-cert.pem")))
                .arg("-key")
                .arg(certs.join(format!("{name}-key.pem")))
                .current_dir(www)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run openssl s_server: {e}\n{SETUP}"));
            let stdout = child.stdout.take().expect("stdout");
            let mut lines = BufReader::new(stdout).lines();
            // s_server prints ACCEPT once it listens; the rest is drained so it never blocks.
            let ready = lines.by_ref().map_while(Result::ok).any(|l| l == "ACCEPT");
            std::thread::spawn(move || lines.for_each(drop));
            let server = TlsServer { child, port };
            assert!(ready, "openssl s_server did not start on port {port}");
            server
        }
    }

    impl Drop for TlsServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// One request as the recording server read it.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// A plain HTTP/1.1 server on a loopback port that records every request and answers:
    /// `/redirect` → 302 to `/target`; `/elsewhere` → 302 to `redirect_to` (another origin);
    /// `/loop` → 302 to itself; `/target` → 200 `landed`; anything else → 200 `hello`.
    struct Recorder {
        port: u16,
        seen: Arc<Mutex<Vec<Seen>>>,
        /// Connections accepted and not yet recorded: the answer is written before the
        /// request is logged, so a probe can return while its request is still in here.
        busy: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Recorder {
        fn start(redirect_to: Option<String>) -> Recorder {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let (log, working) = (Arc::clone(&seen), Arc::clone(&busy));
            // The thread ends with the test process; it holds nothing else.
            std::thread::spawn(move || {
                for stream in listener.incoming().map_while(Result::ok) {
                    working.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if let Some(request) = answer(stream, redirect_to.as_deref()) {
                        log.lock().expect("lock").push(request);
                    }
                    working.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
            Recorder { port, seen, busy }
        }

        fn url(&self, path: &str) -> String {
            format!("http://127.0.0.1:{}{path}", self.port)
        }

        fn take(&self) -> Vec<Seen> {
            let until = std::time::Instant::now() + Duration::from_secs(3);
            while self.busy.load(std::sync::atomic::Ordering::SeqCst) > 0
                && std::time::Instant::now() < until
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::mem::take(&mut *self.seen.lock().expect("lock"))
        }
    }

    fn answer(stream: TcpStream, redirect_to: Option<&str>) -> Option<Seen> {
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut reader = BufReader::new(stream.try_clone().ok()?);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let mut parts = line.split_whitespace();
        let method = parts.next()?.to_owned();
        let path = parts.next()?.to_owned();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).ok()?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':')?;
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        let length: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        let (status, location, text) = match path.as_str() {
            "/redirect" => ("302 Found", Some("/target".to_owned()), ""),
            "/elsewhere" => ("302 Found", redirect_to.map(str::to_owned), ""),
            "/loop" => ("302 Found", Some("/loop".to_owned()), ""),
            "/target" => ("200 OK", None, "landed"),
            _ => ("200 OK", None, "hello"),
        };
        let mut response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n",
            text.len()
        );
        if let Some(location) = location {
            response.push_str(&format!("Location: {location}\r\n"));
        }
        response.push_str("\r\n");
        if method != "HEAD" {
            response.push_str(text);
        }
        let mut stream = stream;
        stream.write_all(response.as_bytes()).ok()?;
        Some(Seen {
            method,
            path,
            headers,
        })
    }

    /// RFC 4648 base64, to check the Authorization header independently of the code under test.
    fn base64(input: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn https_checks_against_a_real_tls_server() {
        let env = env().await;
        let p = prefix("https");
        let certs = TempDir::new("health", "https-certs");
        make_certificates(certs.path());
        let www = TempDir::new("health", "https-www");
        let files = [
            (
                "health",
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall good\n",
            ),
            ("teapot", "HTTP/1.0 418 I'm a teapot\r\n\r\nshort and stout"),
            ("moved", "HTTP/1.0 302 Found\r\nLocation: /health\r\n\r\n"),
        ];
        for (name, response) in files {
            std::fs::write(www.path().join(name), response).expect("write response");
        }
        let good = TlsServer::start(certs.path(), "good", www.path());
        let other = TlsServer::start(certs.path(), "other", www.path());
        let ca = certs.path().join("ca.pem");
        guarded(&env, &p, || async {
            let id = run(&env, &format!("{p}-web"), "1.0.0", None, None).await;
            let check = |url: String, f: &dyn Fn(&mut HttpCheck)| {
                let mut h = HttpCheck::get(url);
                h.timeout = Duration::from_secs(5);
                f(&mut h);
                Check::Http(h)
            };
            let at =
                |server: &TlsServer, path: &str| format!("https://127.0.0.1:{}{path}", server.port);
            let with_ca = |h: &mut HttpCheck| h.ca_file = Some(ca.clone());

            // Verified against the test's CA, by address and by name.
            let o = probe(
                &env.engine,
                &id,
                &check(at(&good, "/health"), &|h| {
                    with_ca(h);
                    h.body_contains = Some("all good".into());
                }),
            )
            .await;
            assert!(o.ok, "{o:?}");
            assert!(o.detail.contains("HTTP 200"), "{o:?}");
            let by_name = format!("https://localhost:{}/health", good.port);
            let o = probe(&env.engine, &id, &check(by_name, &with_ca)).await;
            assert!(o.ok, "DNS:localhost is in the certificate: {o:?}");

            // The platform's roots do not know the test's CA.
            let o = probe(&env.engine, &id, &check(at(&good, "/health"), &|_| {})).await;
            assert!(!o.ok, "{o:?}");
            assert!(
                o.detail.contains("invalid peer certificate: UnknownIssuer"),
                "names the certificate problem: {o:?}"
            );

            // Not verifying accepts it, and a certificate for another name too.
            let o = probe(
                &env.engine,
                &id,
                &check(at(&good, "/health"), &|h| {
                    h.tls_verify = false;
                }),
            )
            .await;
            assert!(o.ok, "{o:?}");
            let o = probe(
                &env.engine,
                &id,
                &check(at(&other, "/health"), &|h| {
                    h.tls_verify = false;
                    h.body_contains = Some("all good".into());
                }),
            )
            .await;
            assert!(o.ok, "{o:?}");

            // A trusted certificate for another name is refused.
            let o = probe(&env.engine, &id, &check(at(&other, "/health"), &with_ca)).await;
            assert!(!o.ok, "{o:?}");
            assert!(
                o.detail
                    .contains("certificate not valid for name \"127.0.0.1\"")
                    && o.detail.contains("other.invalid"),
                "names the certificate problem: {o:?}"
            );

            // The body must contain the string.
            let o = probe(
                &env.engine,
                &id,
                &check(at(&good, "/health"), &|h| {
                    with_ca(h);
                    h.body_contains = Some("all bad".into());
                }),
            )
            .await;
            assert!(!o.ok, "{o:?}");
            assert!(o.detail.contains("does not contain \"all bad\""), "{o:?}");

            // Status ranges.
            let o = probe(&env.engine, &id, &check(at(&good, "/teapot"), &with_ca)).await;
            assert!(!o.ok, "{o:?}");
            assert!(
                o.detail.contains("HTTP 418") && o.detail.contains("expected status 200–299"),
                "{o:?}"
            );
            for range in [418..=418, 400..=499] {
                let o = probe(
                    &env.engine,
                    &id,
                    &check(at(&good, "/teapot"), &|h| {
                        with_ca(h);
                        h.expected_status = range.clone();
                        h.body_contains = Some("stout".into());
                    }),
                )
                .await;
                assert!(o.ok, "{range:?}: {o:?}");
            }
            let o = probe(
                &env.engine,
                &id,
                &check(at(&good, "/health"), &|h| {
                    with_ca(h);
                    h.expected_status = 500..=599;
                }),
            )
            .await;
            assert!(
                !o.ok && o.detail.contains("expected status 500–599"),
                "{o:?}"
            );

            // Redirects over TLS: followed by default, else the 3xx is the answer.
            let o = probe(
                &env.engine,
                &id,
                &check(at(&good, "/moved"), &|h| {
                    with_ca(h);
                    h.body_contains = Some("all good".into());
                }),
            )
            .await;
            assert!(o.ok, "followed: {o:?}");
            let o = probe(
                &env.engine,
                &id,
                &check(at(&good, "/moved"), &|h| {
                    with_ca(h);
                    h.follow_redirects = false;
                }),
            )
            .await;
            assert!(!o.ok, "not followed, 2xx wanted: {o:?}");
            assert!(o.detail.contains("HTTP 302"), "{o:?}");
            let o = probe(
                &env.engine,
                &id,
                &check(at(&good, "/moved"), &|h| {
                    with_ca(h);
                    h.follow_redirects = false;
                    h.expected_status = 300..=399;
                }),
            )
            .await;
            assert!(o.ok, "not followed, 3xx wanted: {o:?}");

            // A CA file that cannot be used says so instead of failing every handshake.
            let missing = certs.path().join("absent.pem");
            let o = probe(
                &env.engine,
                &id,
                &check(at(&good, "/health"), &|h| {
                    h.ca_file = Some(missing.clone());
                }),
            )
            .await;
            assert!(!o.ok, "{o:?}");
            assert!(o.detail.contains("cannot read CA file"), "{o:?}");
            let not_pem = certs.path().join("good.ext");
            let o = probe(
                &env.engine,
                &id,
                &check(at(&good, "/health"), &|h| {
                    h.ca_file = Some(not_pem.clone());
                }),
            )
            .await;
            assert!(!o.ok, "{o:?}");
            assert!(
                o.detail.contains("holds no PEM certificate"),
                "names the file's problem: {o:?}"
            );
        })
        .await;
        drop((good, other));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http_checks_send_method_headers_credentials_and_follow_redirects() {
        let env = env().await;
        let p = prefix("reqopts");
        let other_origin = Recorder::start(None);
        let server = Recorder::start(Some(other_origin.url("/target")));
        guarded(&env, &p, || async {
            let id = run(&env, &format!("{p}-web"), "1.0.0", None, None).await;
            let (user, password) = ("tester", "pa:ss wörd");
            let want_auth = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
            let check = |path: &str, f: &dyn Fn(&mut HttpCheck)| {
                let mut h = HttpCheck::get(server.url(path));
                f(&mut h);
                Check::Http(h)
            };

            // Basic auth and custom headers reach the server as sent.
            let o = probe(
                &env.engine,
                &id,
                &check("/status", &|h| {
                    h.basic_auth = Some((user.into(), password.into()));
                    h.headers = vec![
                        ("X-Probe".into(), "safe-updater".into()),
                        ("Accept".into(), "text/plain".into()),
                    ];
                    h.body_contains = Some("hello".into());
                }),
            )
            .await;
            assert!(o.ok, "{o:?}");
            let seen = server.take();
            assert_eq!(seen.len(), 1, "{seen:?}");
            assert_eq!(
                (seen[0].method.as_str(), seen[0].path.as_str()),
                ("GET", "/status")
            );
            assert_eq!(seen[0].header("authorization"), Some(want_auth.as_str()));
            assert_eq!(seen[0].header("x-probe"), Some("safe-updater"));
            assert_eq!(seen[0].header("accept"), Some("text/plain"));
            assert_eq!(seen[0].header("user-agent"), Some("safe-updater-health"));

            // Without credentials, no Authorization header.
            let o = probe(&env.engine, &id, &check("/plain", &|_| {})).await;
            assert!(o.ok, "{o:?}");
            let seen = server.take();
            assert_eq!(seen.len(), 1, "{seen:?}");
            assert_eq!(seen[0].header("authorization"), None);

            // Other methods.
            for method in ["HEAD", "POST", "OPTIONS"] {
                let o = probe(
                    &env.engine,
                    &id,
                    &check("/m", &|h| h.method = method.into()),
                )
                .await;
                assert!(o.ok, "{method}: {o:?}");
                let seen = server.take();
                assert_eq!(seen.len(), 1, "{seen:?}");
                assert_eq!(seen[0].method, method);
            }
            let o = probe(
                &env.engine,
                &id,
                &check("/m", &|h| h.method = "NOT A METHOD".into()),
            )
            .await;
            assert!(!o.ok && o.detail.contains("invalid HTTP method"), "{o:?}");
            assert!(
                server.take().is_empty(),
                "nothing sent for an invalid method"
            );

            // A redirect followed on the same origin, credentials kept.
            let o = probe(
                &env.engine,
                &id,
                &check("/redirect", &|h| {
                    h.basic_auth = Some((user.into(), password.into()));
                    h.body_contains = Some("landed".into());
                }),
            )
            .await;
            assert!(o.ok, "{o:?}");
            let seen = server.take();
            let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
            assert_eq!(paths, vec!["/redirect", "/target"]);
            assert_eq!(seen[1].header("authorization"), Some(want_auth.as_str()));

            // Not followed: the 302 is the answer, and /target is never asked.
            let o = probe(
                &env.engine,
                &id,
                &check("/redirect", &|h| h.follow_redirects = false),
            )
            .await;
            assert!(!o.ok, "{o:?}");
            assert!(
                o.detail.contains("HTTP 302") && o.detail.contains("expected status 200–299"),
                "{o:?}"
            );
            let o = probe(
                &env.engine,
                &id,
                &check("/redirect", &|h| {
                    h.follow_redirects = false;
                    h.expected_status = 302..=302;
                }),
            )
            .await;
            assert!(o.ok, "{o:?}");
            let paths: Vec<String> = server.take().into_iter().map(|s| s.path).collect();
            assert_eq!(paths, vec!["/redirect", "/redirect"]);

            // To another origin the redirect is followed, but the credentials stay behind.
            let o = probe(
                &env.engine,
                &id,
                &check("/elsewhere", &|h| {
                    h.basic_auth = Some((user.into(), password.into()));
                    h.headers = vec![("X-Probe".into(), "safe-updater".into())];
                    h.body_contains = Some("landed".into());
                }),
            )
            .await;
            assert!(o.ok, "{o:?}");
            let first = server.take();
            assert_eq!(first.len(), 1, "{first:?}");
            assert_eq!(first[0].header("authorization"), Some(want_auth.as_str()));
            let second = other_origin.take();
            assert_eq!(second.len(), 1, "{second:?}");
            assert_eq!(second[0].path, "/target");
            assert_eq!(
                second[0].header("authorization"),
                None,
                "basic auth must not be sent to another origin"
            );

            // A redirect loop ends with an error, not a hang.
            let o = probe(&env.engine, &id, &check("/loop", &|_| {})).await;
            assert!(!o.ok, "{o:?}");
            assert!(o.detail.contains("redirect"), "{o:?}");
            let loops = server.take().len();
            assert!((2..=12).contains(&loops), "{loops} requests");
        })
        .await;
    }
}
