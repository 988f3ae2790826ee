//! The Alertmanager webhook (`pier::alerts::server`) over real TCP and real TLS, with a sink
//! that records what it is handed: the bearer token (rotated on disk without a restart) and
//! client certificates guard it; malformed, oversized and contract-breaking notifications are
//! refused with the right code and reach no sink; the sink's own refusals become 422/503;
//! a thousand concurrent posts are all answered; and a real Prometheus + Alertmanager, with
//! the token in `http_config.authorization.credentials_file`, gets a roll-blocking alert to
//! the sink.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use pier::alerts::server::{AlertsServer, AlertsTlsFiles};
use pier::alerts::{AlertSink, AlertsServerConfig, RecordSummary, SinkError};
use pier::reconcile::alerts::{ActionRequest, AlertRequest, ClusterKey};
use pier_testenv::monitoring::{MonitoringOptions, WebhookTls};
use pier_testenv::pki::{Ca, CertPem, LeafSpec};
use pier_testenv::{LogDir, Monitoring, wait_for};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "alertmanager-token-for-tests";

/// A sink that records every notification it is handed, or answers with a set error.
#[derive(Default)]
struct RecordingSink {
    calls: Mutex<Vec<Vec<AlertRequest>>>,
    answer: Mutex<Option<SinkError>>,
    /// Panic instead of answering.
    panic: std::sync::atomic::AtomicBool,
}

impl RecordingSink {
    fn calls(&self) -> Vec<Vec<AlertRequest>> {
        self.calls.lock().unwrap().clone()
    }

    fn answer_with(&self, error: Option<SinkError>) {
        *self.answer.lock().unwrap() = error;
    }
}

impl AlertSink for RecordingSink {
    fn record(&self, alerts: Vec<AlertRequest>) -> BoxFuture<'_, Result<RecordSummary, SinkError>> {
        Box::pin(async move {
            if self.panic.load(std::sync::atomic::Ordering::Relaxed) {
                panic!("a sink that panics");
            }
            if let Some(e) = self.answer.lock().unwrap().clone() {
                return Err(e);
            }
            let recorded = alerts.len();
            self.calls.lock().unwrap().push(alerts);
            Ok(RecordSummary {
                recorded,
                ..RecordSummary::default()
            })
        })
    }
}

/// A webhook server on a free loopback port, with its sink, metrics and files.
struct Webhook {
    addr: SocketAddr,
    sink: Arc<RecordingSink>,
    registry: Registry,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Webhook {
    /// With the bearer token [`TOKEN`] in a file, plus what `configure` changes.
    async fn start(configure: impl FnOnce(&mut AlertsServerConfig, &Path)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let mut config = AlertsServerConfig::new("127.0.0.1:0".parse().unwrap());
        config.token_file = Some(token_file);
        configure(&mut config, dir.path());
        let sink = Arc::new(RecordingSink::default());
        let mut registry = Registry::default();
        let server = AlertsServer::bind(&config, sink.clone(), &mut registry)
            .await
            .unwrap();
        let addr = server.local_addr();
        tokio::spawn(server.run(std::future::pending()));
        Self {
            addr,
            sink,
            registry,
            dir,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    /// POSTs `body` to /alerts with `token`: the status and the JSON answer.
    async fn post(&self, token: Option<&str>, body: impl Into<reqwest::Body>) -> (u16, Value) {
        self.post_to("/alerts", token, body).await
    }

    async fn post_to(
        &self,
        path: &str,
        token: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .post(self.url(path))
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("answer {code} is not JSON ({e}): {text:?}"));
        (code, value)
    }

    /// `pier_alert_webhook_requests_total{code}`.
    fn requests(&self, code: u16) -> u64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        let series = format!("pier_alert_webhook_requests_total{{code=\"{code}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |v| v.trim().parse().unwrap())
    }
}

/// An alert of a notification, firing, for kafka/demo unless `labels` say otherwise.
fn alert(fingerprint: &str, labels: Value) -> Value {
    let mut all =
        json!({"alertname": "KafkaDiskLow", "namespace": "kafka", "kafkacluster": "demo"});
    for (k, v) in labels.as_object().unwrap() {
        all[k] = v.clone();
    }
    json!({"status": "firing", "labels": all, "annotations": {"summary": "disk low"},
           "startsAt": "2026-11-26T12:16:01.533Z", "endsAt": "0001-01-01T00:00:00Z",
           "generatorURL": "http://prometheus/graph", "fingerprint": fingerprint})
}

/// A version 4 notification of `alerts`, as Alertmanager 0.25 sends it.
fn notification(alerts: Vec<Value>) -> Value {
    json!({"receiver": "pier", "status": "firing", "alerts": alerts,
           "groupLabels": {"alertname": "KafkaDiskLow"}, "commonLabels": {"alertname": "KafkaDiskLow"},
           "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "version": "4",
           "groupKey": "{}:{alertname=\"KafkaDiskLow\"}", "truncatedAlerts": 0})
}

fn upscale() -> String {
    notification(vec![alert(
        "f00d",
        json!({"pier_action": "upscale", "count": "2", "config_group": "big"}),
    )])
    .to_string()
}

#[tokio::test]
async fn only_the_bearer_token_gets_a_notification_to_the_sink() {
    let hook = Webhook::start(|_, _| {}).await;
    let (code, body) = hook.post(None, upscale()).await;
    assert_eq!(
        (code, body["error"].as_str()),
        (401, Some("a valid bearer token is required"))
    );
    assert_eq!(hook.post(Some("wrong"), upscale()).await.0, 401);
    assert_eq!(hook.post(Some(&TOKEN[1..]), upscale()).await.0, 401);
    // A bad body without the token is still 401: nothing of it is read.
    assert_eq!(hook.post(None, "not json").await.0, 401);
    let basic = hook
        .http
        .post(hook.url("/alerts"))
        .basic_auth(TOKEN, Some(TOKEN))
        .body(upscale())
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status().as_u16(), 401);
    assert_eq!(
        basic.headers()["www-authenticate"].to_str().unwrap(),
        "Bearer"
    );
    assert!(hook.sink.calls().is_empty(), "nothing reached the sink");

    let (code, body) = hook.post(Some(TOKEN), upscale()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        json!({"recorded": 1, "duplicates": 0, "refused": 0, "ignored": 0})
    );
    let calls = hook.sink.calls();
    assert_eq!(calls.len(), 1);
    let request = &calls[0][0];
    assert_eq!(
        request.cluster,
        ClusterKey {
            namespace: "kafka".into(),
            name: "demo".into()
        }
    );
    assert_eq!(request.fingerprint, "f00d");
    assert_eq!(request.starts_at, "2026-11-26T12:16:01.533Z");
    assert_eq!(request.alertname, "KafkaDiskLow");
    assert!(request.firing);
    assert!(!request.blocks_roll);
    assert_eq!(
        request.action,
        Some(ActionRequest::Upscale {
            config_group: Some("big".into()),
            count: 2
        })
    );
    assert_eq!(request.annotations["summary"], "disk low");

    // Alertmanager configs that post to the root work too; other paths and methods do not.
    assert_eq!(hook.post_to("/", Some(TOKEN), upscale()).await.0, 200);
    assert_eq!(hook.post_to("/other", Some(TOKEN), upscale()).await.0, 404);
    let get = hook
        .http
        .get(hook.url("/alerts"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 405);
    assert_eq!(hook.sink.calls().len(), 2);

    // Alerts not for Pier are counted, and a notification of only those reaches no sink.
    let (code, body) = hook
        .post(
            Some(TOKEN),
            notification(vec![alert("0ther", json!({}))]).to_string(),
        )
        .await;
    assert_eq!((code, body["ignored"].as_u64()), (200, Some(1)));
    assert_eq!(hook.sink.calls().len(), 2);

    assert_eq!(hook.requests(401), 5);
    assert_eq!(hook.requests(200), 3);
    assert_eq!(hook.requests(404), 1);
    assert_eq!(hook.requests(405), 1);
}

#[tokio::test]
async fn a_rotated_token_file_takes_effect_without_a_restart() {
    let hook = Webhook::start(|_, _| {}).await;
    assert_eq!(hook.post(Some(TOKEN), upscale()).await.0, 200);
    // As a Secret volume updates: the new content is renamed over the old file.
    let next = hook.dir.path().join("token.next");
    std::fs::write(&next, "rotated-token\n").unwrap();
    std::fs::rename(&next, hook.token_file()).unwrap();
    assert_eq!(hook.post(Some("rotated-token"), upscale()).await.0, 200);
    assert_eq!(hook.post(Some(TOKEN), upscale()).await.0, 401);
    // Rewritten in place too.
    std::fs::write(hook.token_file(), "third-token").unwrap();
    assert_eq!(hook.post(Some("third-token"), upscale()).await.0, 200);
    assert_eq!(hook.post(Some("rotated-token"), upscale()).await.0, 401);
    // An emptied file keeps the last token rather than opening the door or locking it.
    std::fs::write(hook.token_file(), "").unwrap();
    assert_eq!(hook.post(Some("third-token"), upscale()).await.0, 200);
    assert_eq!(hook.post(Some(""), upscale()).await.0, 401);
}

#[tokio::test]
async fn malformed_notifications_are_400_with_the_reason() {
    let hook = Webhook::start(|_, _| {}).await;
    let reason = |body: Value| body["error"].as_str().unwrap().to_string();

    let (code, body) = hook.post(Some(TOKEN), "{\"version\": \"4\",").await;
    assert_eq!(code, 400);
    assert!(reason(body).starts_with("the body is not JSON: "));

    let mut v3 = notification(vec![alert("a", json!({"pier_action": "upscale"}))]);
    v3["version"] = json!("3");
    let (code, body) = hook.post(Some(TOKEN), v3.to_string()).await;
    assert_eq!(code, 400);
    assert_eq!(
        reason(body),
        "payload version \"3\" is not supported (Pier reads version \"4\")"
    );

    let mut no_fingerprint = alert("a", json!({"pier_action": "upscale"}));
    no_fingerprint
        .as_object_mut()
        .unwrap()
        .remove("fingerprint");
    let good = alert("b", json!({"pier_action": "upscale"}));
    let (code, body) = hook
        .post(
            Some(TOKEN),
            notification(vec![good, no_fingerprint]).to_string(),
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(reason(body), "alert 1: missing field `fingerprint`");

    let mut unknown_status = alert("a", json!({}));
    unknown_status["status"] = json!("pending");
    let (code, body) = hook
        .post(Some(TOKEN), notification(vec![unknown_status]).to_string())
        .await;
    assert_eq!(code, 400);
    assert!(reason(body).contains("unknown variant `pending`"));

    // Whatever comes is answered; nothing panics.
    let deep = "[".repeat(100_000);
    let bodies: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"null".to_vec(),
        b"[]".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x01],
        deep.into_bytes(),
        json!({"version": "4", "alerts": null})
            .to_string()
            .into_bytes(),
        json!({"version": "4", "alerts": [null, 1, "x"]})
            .to_string()
            .into_bytes(),
        json!({"version": {"x": 1}}).to_string().into_bytes(),
        notification(vec![alert(
            "a",
            json!({"pier_action": "upscale", "count": "1e999"}),
        )])
        .to_string()
        .into_bytes(),
        notification(vec![alert("\u{1F4A5}", json!({"pier_action": "\u{0}"}))])
            .to_string()
            .into_bytes(),
    ];
    for body in bodies {
        let (code, _) = hook.post(Some(TOKEN), body.clone()).await;
        assert!(
            code == 400 || code == 422,
            "{code} for {:?}",
            String::from_utf8_lossy(&body[..body.len().min(40)])
        );
    }
    assert!(hook.sink.calls().is_empty());
    assert_eq!(hook.post(Some(TOKEN), upscale()).await.0, 200);
}

/// A notification of exactly `len` bytes (padded in an annotation).
fn notification_of(len: usize) -> String {
    let mut a = alert("big", json!({"pier_action": "upscale"}));
    a["annotations"]["padding"] = json!("");
    let base = notification(vec![a.clone()]).to_string().len();
    a["annotations"]["padding"] = json!("x".repeat(len - base));
    let text = notification(vec![a]).to_string();
    assert_eq!(text.len(), len);
    text
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let hook = Webhook::start(|_, _| {}).await;
    let limit = pier::alerts::server::DEFAULT_MAX_BODY_BYTES;
    assert_eq!(hook.post(Some(TOKEN), notification_of(limit)).await.0, 200);
    let (code, body) = hook.post(Some(TOKEN), notification_of(limit + 1)).await;
    assert_eq!(code, 413);
    assert_eq!(body["error"], "the body is over 1048576 bytes");
    assert_eq!(hook.sink.calls().len(), 1);

    // A configured limit; a chunked body (no Content-Length) is counted as it comes.
    let small = Webhook::start(|c, _| c.max_body_bytes = 4096).await;
    assert_eq!(small.post(Some(TOKEN), notification_of(4096)).await.0, 200);
    assert_eq!(small.post(Some(TOKEN), notification_of(4097)).await.0, 413);
    let chunked = |len| raw_chunked_post(small.addr, notification_of(len));
    assert_eq!(chunked(4096).await.unwrap(), 200);
    assert_eq!(chunked(4097).await.unwrap(), 413);
    assert_eq!(chunked(100_000).await.unwrap(), 413);
    assert_eq!(small.sink.calls().len(), 2);
    assert_eq!(small.requests(413), 3);
}

/// POSTs `body` with `Transfer-Encoding: chunked` over plain TCP: the status code.
async fn raw_chunked_post(addr: SocketAddr, body: String) -> anyhow::Result<u16> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut request = format!(
        "POST /alerts HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.as_bytes().chunks(1000) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    tcp.write_all(&request).await?;
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await?;
    status_of(&answer)
}

/// The status code of an HTTP/1.1 answer.
fn status_of(answer: &[u8]) -> anyhow::Result<u16> {
    let text = String::from_utf8_lossy(answer);
    let line = text.lines().next().context("closed without an answer")?;
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP answer: {line:?}"))
}

#[tokio::test]
async fn a_contract_error_is_422_and_nothing_of_the_notification_is_recorded() {
    let hook = Webhook::start(|_, _| {}).await;
    let good = alert("g00d", json!({"pier_action": "upscale"}));
    let bad = alert(
        "bad1",
        json!({"alertname": "DiskFull", "pier_action": "addDisk", "broker_id": "1"}),
    );
    let (code, body) = hook
        .post(
            Some(TOKEN),
            notification(vec![good.clone(), bad]).to_string(),
        )
        .await;
    assert_eq!(code, 422);
    assert_eq!(
        body["error"],
        "alert \"DiskFull\" (fingerprint bad1): `size` is required for addDisk"
    );
    let no_cluster = json!({"status": "firing", "labels": {"alertname": "X", "pier_blocks_roll": "true"},
        "startsAt": "2026-11-26T12:16:01Z", "fingerprint": "nc"});
    let (code, body) = hook
        .post(
            Some(TOKEN),
            notification(vec![good, no_cluster]).to_string(),
        )
        .await;
    assert_eq!(code, 422);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no `namespace` label"),
        "{body}"
    );
    assert!(hook.sink.calls().is_empty(), "never a partial action");
    assert_eq!(hook.requests(422), 2);
}

#[tokio::test]
async fn the_sinks_refusals_are_422_and_its_unavailability_503() {
    let hook = Webhook::start(|_, _| {}).await;
    let declared = notification(vec![alert("d", json!({"pier_action": "raiseRetention"}))]);
    hook.sink.answer_with(Some(SinkError::Unprocessable(
        "kafka/demo declares no alert action raiseRetention".into(),
    )));
    let (code, body) = hook.post(Some(TOKEN), declared.to_string()).await;
    assert_eq!(
        (code, body["error"].as_str()),
        (
            422,
            Some("kafka/demo declares no alert action raiseRetention")
        )
    );
    hook.sink.answer_with(Some(SinkError::Unavailable(
        "the API server cannot be reached".into(),
    )));
    let (code, body) = hook.post(Some(TOKEN), declared.to_string()).await;
    assert_eq!(
        (code, body["error"].as_str()),
        (503, Some("the API server cannot be reached"))
    );
    hook.sink.answer_with(None);
    // A sink that panics fails the request, not the server.
    hook.sink
        .panic
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (code, body) = hook.post(Some(TOKEN), declared.to_string()).await;
    assert_eq!(
        (code, body["error"].as_str()),
        (500, Some("recording failed"))
    );
    hook.sink
        .panic
        .store(false, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(hook.post(Some(TOKEN), declared.to_string()).await.0, 200);
    assert_eq!(
        hook.sink.calls()[0][0].action,
        Some(ActionRequest::Declared {
            name: "raiseRetention".into()
        })
    );
    assert_eq!(
        (hook.requests(422), hook.requests(503), hook.requests(200)),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn a_thousand_concurrent_identical_posts_are_all_answered() {
    let hook = Webhook::start(|_, _| {}).await;
    let body = upscale();
    let started = std::time::Instant::now();
    let answers = futures::future::join_all((0..1000).map(|_| {
        let req = hook
            .http
            .post(hook.url("/alerts"))
            .bearer_auth(TOKEN)
            .body(body.clone())
            .send();
        async move { req.await.map(|r| r.status().as_u16()) }
    }))
    .await;
    let ok = answers.iter().filter(|a| matches!(a, Ok(200))).count();
    assert_eq!(
        ok,
        1000,
        "{:?}",
        answers.iter().find(|a| !matches!(a, Ok(200)))
    );
    assert_eq!(
        hook.sink.calls().len(),
        1000,
        "each handed to the sink once"
    );
    assert!(
        hook.sink.calls().iter().all(|c| c[0].fingerprint == "f00d"),
        "the same alert each time"
    );
    eprintln!("1000 posts answered in {:?}", started.elapsed());
    assert_eq!(
        hook.post(Some(TOKEN), upscale()).await.0,
        200,
        "still serving"
    );
}

/// The CAs and certificates of an HTTPS webhook.
struct Pki {
    server_ca: Ca,
    client_ca: Ca,
}

impl Pki {
    fn new() -> Self {
        Self {
            server_ca: Ca::new("webhook server CA").unwrap(),
            client_ca: Ca::new("alertmanager client CA").unwrap(),
        }
    }

    /// Writes the serving certificate, its key and the client CA into `dir`.
    fn write(&self, dir: &Path, client_ca: bool) -> AlertsTlsFiles {
        let server = self
            .server_ca
            .issue(&LeafSpec {
                common_name: "pier-alerts",
                dns_names: &["localhost"],
                server: true,
                ..LeafSpec::default()
            })
            .unwrap();
        let files = AlertsTlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            client_ca: client_ca.then(|| dir.join("client-ca.crt")),
        };
        std::fs::write(&files.cert, &server.cert).unwrap();
        std::fs::write(&files.key, &server.key).unwrap();
        if let Some(ca) = &files.client_ca {
            std::fs::write(ca, self.client_ca.cert_pem()).unwrap();
        }
        files
    }

    fn client(ca: &Ca) -> CertPem {
        ca.issue(&LeafSpec {
            common_name: "alertmanager",
            client: true,
            ..LeafSpec::default()
        })
        .unwrap()
    }
}

/// POSTs `body` over HTTPS (HTTP/1.1, offered by ALPN as Go clients do) with an optional
/// client certificate and token: the status code, or the error of a refused handshake.
async fn https_post(
    addr: SocketAddr,
    server_ca: &Ca,
    client: Option<&CertPem>,
    token: Option<&str>,
    body: &str,
) -> anyhow::Result<u16> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(
        server_ca.cert_pem().as_bytes(),
    )?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match client {
        Some(c) => builder.with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(c.cert.as_bytes())?],
            PrivateKeyDer::from_pem_slice(c.key.as_bytes())?,
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "POST /alerts HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await??;
    status_of(&answer)
}

#[tokio::test]
async fn with_mtls_only_clients_with_a_certificate_from_the_client_ca_get_in() {
    let pki = Pki::new();
    let hook = Webhook::start(|c, dir| {
        c.token_file = None;
        c.tls = Some(pki.write(dir, true));
    })
    .await;
    let body = upscale();
    let post = |client, token| https_post(hook.addr, &pki.server_ca, client, token, &body);

    let none = post(None, None).await;
    assert!(none.is_err(), "no client certificate: {none:?}");
    let rogue_ca = Ca::new("rogue").unwrap();
    let rogue_client = Pki::client(&rogue_ca);
    let rogue = post(Some(&rogue_client), None).await;
    assert!(rogue.is_err(), "a certificate of another CA: {rogue:?}");
    let plaintext = hook
        .http
        .post(hook.url("/alerts"))
        .body(body.clone())
        .send()
        .await;
    assert!(
        plaintext.is_err(),
        "plain HTTP on the TLS port: {plaintext:?}"
    );
    assert!(hook.sink.calls().is_empty());

    let client = Pki::client(&pki.client_ca);
    assert_eq!(post(Some(&client), None).await.unwrap(), 200);
    assert_eq!(hook.sink.calls().len(), 1);
}

#[tokio::test]
async fn over_tls_with_a_token_and_client_certificates_both_are_needed() {
    let pki = Pki::new();
    let both = Webhook::start(|c, dir| c.tls = Some(pki.write(dir, true))).await;
    let body = upscale();
    let client = Pki::client(&pki.client_ca);
    let post = |addr, client, token| https_post(addr, &pki.server_ca, client, token, &body);
    assert_eq!(post(both.addr, Some(&client), None).await.unwrap(), 401);
    assert_eq!(
        post(both.addr, Some(&client), Some("wrong")).await.unwrap(),
        401
    );
    assert!(post(both.addr, None, Some(TOKEN)).await.is_err());
    assert_eq!(
        post(both.addr, Some(&client), Some(TOKEN)).await.unwrap(),
        200
    );

    // HTTPS without client certificates: the token alone.
    let token_only = Webhook::start(|c, dir| c.tls = Some(pki.write(dir, false))).await;
    assert_eq!(post(token_only.addr, None, None).await.unwrap(), 401);
    assert_eq!(post(token_only.addr, None, Some(TOKEN)).await.unwrap(), 200);
    assert_eq!(token_only.sink.calls().len(), 1);
}

#[tokio::test]
async fn a_real_alertmanagers_notification_reaches_the_sink() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("alerts-http")?;
    let hook = Webhook::start(|_, _| {}).await;
    let monitoring = Monitoring::start(
        &logs,
        MonitoringOptions {
            rules_yaml: "groups:
  - name: pier-webhook
    interval: 1s
    rules:
      - alert: KafkaUnderMinIsr
        expr: vector(1) > 0
        labels: {namespace: kafka, kafkacluster: demo, pier_blocks_roll: \"true\", severity: critical}
        annotations: {summary: partitions under min ISR}
"
            .into(),
            webhook_url: hook.url("/alerts"),
            scrape_targets: Vec::new(),
            webhook_credentials_file: Some(hook.token_file()),
            ..Default::default()
        },
    )
    .await?;
    let request = wait_for(
        "the alert at the sink",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let first = hook.sink.calls().into_iter().flatten().next();
            async move { first }
        },
    )
    .await?;
    assert_eq!(
        request.cluster,
        ClusterKey {
            namespace: "kafka".into(),
            name: "demo".into()
        }
    );
    assert_eq!(request.alertname, "KafkaUnderMinIsr");
    assert!(request.firing);
    assert!(request.blocks_roll);
    assert_eq!(request.action, None);
    assert_eq!(request.fingerprint.len(), 16, "{}", request.fingerprint);
    assert!(request.starts_at.starts_with("20"), "{}", request.starts_at);
    assert_eq!(request.labels["severity"], "critical");
    assert_eq!(request.annotations["summary"], "partitions under min ISR");
    // Alertmanager sent the token from its credentials file: nothing was refused.
    assert_eq!(hook.requests(401), 0);
    assert!(hook.requests(200) >= 1);
    drop(monitoring);
    Ok(())
}

/// Replaces `path`'s content as a Secret volume does (a new file renamed over it).
fn replace(path: &Path, content: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, content).unwrap();
    std::fs::rename(&next, path).unwrap();
}

#[tokio::test]
async fn rotated_tls_files_take_effect_without_a_restart() -> anyhow::Result<()> {
    let pki = Pki::new();
    let mut files = None;
    let hook = Webhook::start(|c, dir| {
        c.token_file = None;
        let written = pki.write(dir, true);
        files = Some(written.clone());
        c.tls = Some(written);
    })
    .await;
    let files = files.unwrap();
    let body = upscale();
    let old_client = Pki::client(&pki.client_ca);
    assert_eq!(
        https_post(hook.addr, &pki.server_ca, Some(&old_client), None, &body).await?,
        200
    );

    // A new client CA: its clients get in, the old CA's no longer do.
    let new_ca = Ca::new("next alertmanager client CA")?;
    let new_client = Pki::client(&new_ca);
    replace(files.client_ca.as_deref().unwrap(), &new_ca.cert_pem());
    wait_for(
        "the new client CA in use",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let post = https_post(hook.addr, &pki.server_ca, Some(&new_client), None, &body);
            async move { matches!(post.await, Ok(200)).then_some(()) }
        },
    )
    .await?;
    let old = https_post(hook.addr, &pki.server_ca, Some(&old_client), None, &body).await;
    assert!(old.is_err(), "the old CA's client: {old:?}");

    // A serving certificate from another CA: new connections get it.
    let next_server_ca = Ca::new("next webhook server CA")?;
    let server = next_server_ca.issue(&LeafSpec {
        common_name: "pier-alerts",
        dns_names: &["localhost"],
        server: true,
        ..LeafSpec::default()
    })?;
    // The key first: a moment of a mismatched pair keeps the old certificate serving.
    replace(&files.key, &server.key);
    replace(&files.cert, &server.cert);
    wait_for(
        "the new serving certificate in use",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let post = https_post(hook.addr, &next_server_ca, Some(&new_client), None, &body);
            async move { matches!(post.await, Ok(200)).then_some(()) }
        },
    )
    .await?;
    assert!(
        https_post(hook.addr, &pki.server_ca, Some(&new_client), None, &body)
            .await
            .is_err(),
        "the old serving certificate is gone"
    );
    Ok(())
}

#[tokio::test]
async fn a_real_alertmanager_posts_over_mtls_with_its_token() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("alerts-http-mtls")?;
    let pki = Pki::new();
    let mut tls = None;
    let hook = Webhook::start(|c, dir| {
        let written = pki.write(dir, true);
        tls = Some(written.clone());
        c.tls = Some(written);
    })
    .await;
    let dir = logs.sub("alertmanager-client")?;
    let client = Pki::client(&pki.client_ca);
    let files = WebhookTls {
        ca_file: dir.join("server-ca.crt"),
        cert_file: dir.join("tls.crt"),
        key_file: dir.join("tls.key"),
    };
    std::fs::write(&files.ca_file, pki.server_ca.cert_pem())?;
    std::fs::write(&files.cert_file, &client.cert)?;
    std::fs::write(&files.key_file, &client.key)?;
    let monitoring = Monitoring::start(
        &logs,
        MonitoringOptions {
            rules_yaml: "groups:
  - name: pier-webhook
    interval: 1s
    rules:
      - alert: KafkaBrokerDiskLow
        expr: vector(1) > 0
        labels: {namespace: kafka, kafkacluster: demo, pier_action: addDisk, broker_id: \"2\", size: 100Gi, mount_path: /kafka/data-2}
"
            .into(),
            webhook_url: format!("https://localhost:{}/alerts", hook.addr.port()),
            scrape_targets: Vec::new(),
            webhook_credentials_file: Some(hook.token_file()),
            webhook_tls: Some(files),
            ..Default::default()
        },
    )
    .await?;
    let request = wait_for(
        "the alert at the sink",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let first = hook.sink.calls().into_iter().flatten().next();
            async move { first }
        },
    )
    .await?;
    assert_eq!(request.alertname, "KafkaBrokerDiskLow");
    assert_eq!(
        request.action,
        Some(ActionRequest::AddDisk {
            target: pier::api::VolumeTarget::Broker(2),
            size: "100Gi".into(),
            storage_class: None,
            mount_path: Some("/kafka/data-2".into()),
        })
    );
    assert_eq!(hook.requests(401), 0);
    drop(monitoring);
    Ok(())
}
