//! Files: streamed encrypted uploads, clamd scanning (the real daemon, with
//! the EICAR signature of tests/clamav), downloads that check ownership and
//! scan status before the first byte, ranges, share links across instances,
//! and knowledge-base ingestion of an attached PDF.

use std::time::Duration;

use agentry::configuration::Settings;
use reqwest::multipart::{Form, Part};
use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::chat_support::{reply, site, visitor_token};
use crate::helpers::{
    assert_error, body, recordings_dir, spawn_app_on, spawn_app_with, wait_for_document_status,
    TestApp,
};

const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// Where a real clamd answers: `bash .ci/run` starts one and sets
/// AGENTRY_TEST_CLAMD_ADDR; without it the tests that need a verdict say
/// they did not run, as the other tests of outside tools do.
pub(crate) fn clamd() -> Option<String> {
    let found = std::env::var("AGENTRY_TEST_CLAMD_ADDR").ok();
    if found.is_none() {
        eprintln!("file scanning test not run: set AGENTRY_TEST_CLAMD_ADDR to a clamd (bash .ci/run starts one)");
    }
    found
}

fn scanned(settings: &mut Settings, clamd: &str) {
    settings.files.clamd_addr = clamd.to_owned();
    settings.files.scan_poll_ms = 100;
}

/// An address where nothing listens: every scan fails and files stay pending.
fn clamd_down(settings: &mut Settings) {
    settings.files.clamd_addr = "tcp://127.0.0.1:1".into();
    settings.files.scan_poll_ms = 100;
}

pub(crate) async fn upload(
    app: &TestApp,
    token: &str,
    name: &str,
    claimed_type: &str,
    bytes: Vec<u8>,
    agent_id: Option<&str>,
) -> Response {
    let mut form = Form::new().part(
        "file",
        Part::bytes(bytes)
            .file_name(name.to_owned())
            .mime_str(claimed_type)
            .unwrap(),
    );
    if let Some(agent) = agent_id {
        form = form.text("agent_id", agent.to_owned());
    }
    app.request(Method::POST, "/api/v1/files", Some(token))
        .multipart(form)
        .send()
        .await
        .expect("upload sent")
}

pub(crate) async fn uploaded(app: &TestApp, token: &str, name: &str, bytes: Vec<u8>) -> Value {
    let response = upload(app, token, name, "application/octet-stream", bytes, None).await;
    assert_eq!(response.status(), 201);
    body(response).await
}

/// The file once its scan status is no longer `pending`.
pub(crate) async fn wait_for_scan(app: &TestApp, token: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let file = body(app.get(&format!("/api/v1/files/{id}"), token).await).await;
        if file["scan_status"] != "pending" {
            return file;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still pending: {file}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn share(app: &TestApp, token: &str, id: &str, expires_in: &str) -> Value {
    let response = app
        .post_json(
            &format!("/api/v1/files/{id}/share"),
            Some(token),
            &json!({ "expires_in": expires_in }),
        )
        .await;
    assert_eq!(response.status(), 201);
    body(response).await
}

async fn fetch(app: &TestApp, path: &str, token: Option<&str>, range: Option<&str>) -> Response {
    let mut request = app.request(Method::GET, path, token);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    request.send().await.expect("download sent")
}

fn header<'a>(response: &'a Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn an_eicar_upload_is_infected_and_never_served_by_the_dashboard_or_a_share_link() {
    let Some(clamd) = clamd() else { return };
    let app = spawn_app_with(|settings| scanned(settings, &clamd)).await;
    let setup = site(&app, "Scan Co").await;
    let tenant = &setup.tenant;
    // Attached to an agent, yet never indexed.
    let response = upload(
        &app,
        &tenant.token,
        "invoice.txt",
        "text/plain",
        EICAR.to_vec(),
        Some(&setup.agent_id),
    )
    .await;
    assert_eq!(response.status(), 201);
    let file = body(response).await;
    assert_eq!(file["scan_status"], "pending");
    let id = file["id"].as_str().unwrap();
    let file = wait_for_scan(&app, &tenant.token, id).await;
    assert_eq!(file["scan_status"], "infected", "{file}");
    assert!(
        file["scan_signature"]
            .as_str()
            .unwrap()
            .starts_with("Agentry.Test.EICAR"),
        "{file}"
    );
    assert_eq!(file["kb_document_id"], Value::Null);
    let documents = body(
        app.get(
            &format!("/api/v1/agents/{}/documents", setup.agent_id),
            &tenant.token,
        )
        .await,
    )
    .await;
    assert_eq!(documents["documents"], json!([]));
    let path = format!("/api/v1/files/{id}/content");
    let refused = assert_error(
        fetch(&app, &path, Some(&tenant.token), None).await,
        451,
        "infected",
    )
    .await;
    assert!(!refused.to_string().contains("EICAR-STANDARD"), "{refused}");
    let link = share(&app, &tenant.token, id, "24h").await;
    let url = link["url"].as_str().unwrap();
    assert_error(fetch(&app, url, None, None).await, 451, "infected").await;
    assert_error(
        fetch(&app, url, None, Some("bytes=0-9")).await,
        451,
        "infected",
    )
    .await;
    let metrics = app.metrics_text().await;
    // At least this scan (the recorder is the process's, shared by tests in it).
    assert!(
        metrics.contains("agentry_file_scans_total{outcome=\"infected\"} "),
        "{metrics}"
    );
    assert!(
        metrics.contains("agentry_file_scan_duration_seconds"),
        "scan duration histogram"
    );
}

#[tokio::test]
async fn a_clean_pdf_downloads_byte_identical_in_whole_and_by_range_and_joins_the_knowledge_base() {
    let Some(clamd) = clamd() else { return };
    let app = spawn_app_with(|settings| scanned(settings, &clamd)).await;
    let setup = site(&app, "Lighthouse Museum").await;
    let token = &setup.tenant.token;
    let pdf = agentry::files::text::pdf_with_text(
        "The lighthouse museum opens at 7am on weekdays and tickets cost twelve dollars.",
    );
    // The client claims an image: the bytes say PDF.
    let response = upload(
        &app,
        token,
        "brochure.png",
        "image/png",
        pdf.clone(),
        Some(&setup.agent_id),
    )
    .await;
    assert_eq!(response.status(), 201);
    let file = body(response).await;
    assert_eq!(file["content_type"], "application/pdf");
    assert_eq!(file["size_bytes"], pdf.len());
    let id = file["id"].as_str().unwrap().to_owned();
    let file = wait_for_scan(&app, token, &id).await;
    assert_eq!(file["scan_status"], "clean", "{file}");

    let path = format!("/api/v1/files/{id}/content");
    let whole = fetch(&app, &path, Some(token), None).await;
    assert_eq!(whole.status(), 200);
    assert_eq!(header(&whole, "content-type"), "application/pdf");
    assert_eq!(header(&whole, "content-length"), pdf.len().to_string());
    assert_eq!(header(&whole, "x-content-type-options"), "nosniff");
    assert_eq!(header(&whole, "cache-control"), "no-store");
    assert!(
        header(&whole, "content-disposition").starts_with("attachment; filename=\"brochure.png\"")
    );
    assert_eq!(whole.bytes().await.unwrap(), pdf);

    let part = fetch(&app, &path, Some(token), Some("bytes=10-99")).await;
    assert_eq!(part.status(), 206);
    assert_eq!(
        header(&part, "content-range"),
        format!("bytes 10-99/{}", pdf.len())
    );
    assert_eq!(part.bytes().await.unwrap(), pdf[10..100]);
    let tail = fetch(&app, &path, Some(token), Some("bytes=-20")).await;
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap(), pdf[pdf.len() - 20..]);
    let past = fetch(
        &app,
        &path,
        Some(token),
        Some(&format!("bytes={}-", pdf.len())),
    )
    .await;
    assert_eq!(
        header(&past, "content-range"),
        format!("bytes */{}", pdf.len())
    );
    assert_error(past, 416, "range_not_satisfiable").await;

    // Attached: its text becomes a document of the agent, and answers come from it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let document = loop {
        let file = body(app.get(&format!("/api/v1/files/{id}"), token).await).await;
        if let Some(document) = file["kb_document_id"].as_str() {
            break document.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never attached: {file}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ready = wait_for_document_status(&app, token, &setup.agent_id, &document, "ready").await;
    assert_eq!(ready["title"], "brochure.png");
    let visitor = visitor_token(&app, &setup.public_key).await;
    let answer = reply(&app, &visitor, "When does the lighthouse museum open?").await;
    assert!(answer.contains("7am"), "{answer}");

    // Deleting the file takes its document out of the knowledge base too.
    let deleted = app.delete(&format!("/api/v1/files/{id}"), token).await;
    assert_eq!(deleted.status(), 204);
    let documents = body(
        app.get(
            &format!("/api/v1/agents/{}/documents", setup.agent_id),
            token,
        )
        .await,
    )
    .await;
    assert_eq!(documents["documents"], json!([]));
}

#[tokio::test]
async fn ranges_across_segments_come_back_exact() {
    // Unscanned (scanning off): ranges are about the segments, not the verdict.
    let app = spawn_app_with(|_| {}).await;
    let tenant = app.create_tenant("Range Co").await;
    // Text over several 64 KiB segments.
    let text: Vec<u8> = (0..300_000u32)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz\n"[(i % 27) as usize])
        .collect();
    let file = uploaded(&app, &tenant.token, "long.txt", text.clone()).await;
    let id = file["id"].as_str().unwrap();
    assert_eq!(file["content_type"], "text/plain");
    assert_eq!(file["scan_status"], "unscanned");
    let path = format!("/api/v1/files/{id}/content");
    for (range, slice) in [
        ("bytes=65530-131080", 65_530..131_081),
        ("bytes=131072-", 131_072..300_000),
        ("bytes=0-0", 0..1),
        ("bytes=299999-400000", 299_999..300_000),
    ] {
        let part = fetch(&app, &path, Some(&tenant.token), Some(range)).await;
        assert_eq!(part.status(), 206, "{range}");
        assert_eq!(
            header(&part, "content-length"),
            slice.len().to_string(),
            "{range}"
        );
        assert_eq!(part.bytes().await.unwrap(), text[slice], "{range}");
    }
    let whole = fetch(&app, &path, Some(&tenant.token), None).await;
    assert_eq!(header(&whole, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(whole.bytes().await.unwrap(), text);
}

#[tokio::test]
async fn another_tenants_file_is_not_found_and_a_pending_file_is_not_served() {
    let app = spawn_app_with(clamd_down).await;
    let owner = app.create_tenant("Owner Co").await;
    let other = app.create_tenant("Other Co").await;
    let file = uploaded(
        &app,
        &owner.token,
        "price list.md",
        b"# Prices\n\nTea: 3 EUR".to_vec(),
    )
    .await;
    assert_eq!(file["content_type"], "text/markdown");
    let id = file["id"].as_str().unwrap();
    // clamd does not answer: the file stays pending, and pending is not served.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let content = format!("/api/v1/files/{id}/content");
    assert_error(
        fetch(&app, &content, Some(&owner.token), None).await,
        409,
        "conflict",
    )
    .await;
    let link = share(&app, &owner.token, id, "1h").await;
    assert_error(
        fetch(&app, link["url"].as_str().unwrap(), None, None).await,
        409,
        "conflict",
    )
    .await;
    let shown = body(app.get(&format!("/api/v1/files/{id}"), &owner.token).await).await;
    assert_eq!(shown["scan_status"], "pending");

    for path in [
        format!("/api/v1/files/{id}"),
        content,
        format!("/api/v1/files/{id}/shares"),
    ] {
        assert_error(app.get(&path, &other.token).await, 404, "not_found").await;
    }
    assert_error(
        app.delete(&format!("/api/v1/files/{id}"), &other.token)
            .await,
        404,
        "not_found",
    )
    .await;
    let response = app
        .post_json(
            &format!("/api/v1/files/{id}/share"),
            Some(&other.token),
            &json!({ "expires_in": "1h" }),
        )
        .await;
    assert_error(response, 404, "not_found").await;
    let listed = body(app.get("/api/v1/files", &other.token).await).await;
    assert_eq!(listed["files"], json!([]));
    let listed = body(app.get("/api/v1/files", &owner.token).await).await;
    assert_eq!(listed["files"][0]["id"], id);

    // Deleting removes the row and the sealed object.
    let object = recordings_dir(&app.database).join(format!("files/{}/{id}.sealed", owner.id));
    assert!(object.exists(), "{object:?}");
    assert_eq!(
        app.delete(&format!("/api/v1/files/{id}"), &owner.token)
            .await
            .status(),
        204
    );
    assert!(!object.exists());
    assert_error(
        app.get(&format!("/api/v1/files/{id}"), &owner.token).await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn share_links_expire_refuse_tampering_and_are_revoked_on_every_instance() {
    let first = spawn_app_with(|settings| {
        settings.files.share_expiries.insert("1h".into(), 5);
    })
    .await;
    let prefix = first.settings.redis.prefix.clone();
    let second = spawn_app_on(
        &first.database,
        |settings| settings.redis.prefix = prefix,
        false,
    )
    .await;
    let tenant = first.create_tenant("Share Co").await;
    let bytes = b"Our autumn price sheet".to_vec();
    let file = uploaded(&first, &tenant.token, "prices.txt", bytes.clone()).await;
    assert_eq!(file["scan_status"], "unscanned");
    let id = file["id"].as_str().unwrap();
    let short = share(&first, &tenant.token, id, "1h").await;
    let permanent = share(&first, &tenant.token, id, "permanent").await;
    assert_eq!(permanent["expires_at"], Value::Null);
    let expires_at: chrono::DateTime<chrono::Utc> =
        short["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(
        expires_at <= chrono::Utc::now() + chrono::Duration::seconds(6),
        "1h is configured as five seconds here: {expires_at}"
    );
    for link in [&short, &permanent] {
        let url = link["url"].as_str().unwrap();
        assert!(url.starts_with("/api/files/shared/"), "{url}");
        let served = fetch(&second, url, None, None).await;
        assert_eq!(served.status(), 200);
        assert_eq!(header(&served, "x-content-type-options"), "nosniff");
        assert_eq!(served.bytes().await.unwrap(), bytes);
    }
    let ranged = fetch(
        &second,
        permanent["url"].as_str().unwrap(),
        None,
        Some("bytes=4-9"),
    )
    .await;
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.unwrap(), bytes[4..10]);

    // Tampered: another signature, expiry or share id.
    let url = permanent["url"].as_str().unwrap();
    let (path, query) = url.split_once('?').unwrap();
    let signature = query.split("signature=").nth(1).unwrap();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let short_id = short["id"].as_str().unwrap();
    for forged in [
        format!("{path}?expires=0&signature={flipped}{}", &signature[1..]),
        format!("{path}?expires=4102444800&signature={signature}"),
        format!("/api/files/shared/{short_id}?expires=0&signature={signature}"),
        format!(
            "/api/files/shared/{}?expires=0&signature={signature}",
            uuid::Uuid::now_v7()
        ),
        path.to_owned(),
    ] {
        assert_error(fetch(&second, &forged, None, None).await, 403, "forbidden").await;
    }

    // Revoked on the first instance: gone on the second at once.
    let revoke = format!(
        "/api/v1/files/{id}/shares/{}",
        permanent["id"].as_str().unwrap()
    );
    assert_eq!(first.delete(&revoke, &tenant.token).await.status(), 204);
    assert_error(fetch(&second, url, None, None).await, 410, "gone").await;
    let listed = body(
        second
            .get(&format!("/api/v1/files/{id}/shares"), &tenant.token)
            .await,
    )
    .await;
    let shares = listed["shares"].as_array().unwrap();
    assert_eq!(shares.len(), 2);
    assert!(shares
        .iter()
        .any(|s| s["id"] == permanent["id"] && s["revoked_at"].is_string()));

    // The short link's configured five seconds run out.
    let left = (expires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(300)).await;
    assert_error(
        fetch(&second, short["url"].as_str().unwrap(), None, None).await,
        410,
        "gone",
    )
    .await;

    for bad in [
        json!({ "expires_in": "2h" }),
        json!({ "expires_in": "1h", "lead_id": uuid::Uuid::now_v7() }),
    ] {
        let response = first
            .post_json(
                &format!("/api/v1/files/{id}/share"),
                Some(&tenant.token),
                &bad,
            )
            .await;
        assert_error(response, 422, "invalid").await;
    }
}

#[tokio::test]
async fn a_scan_claimed_by_an_instance_that_died_is_taken_over_when_its_lease_ends() {
    let Some(clamd) = clamd() else { return };
    let mut first = spawn_app_with(|settings| {
        clamd_down(settings);
        settings.files.clamd_timeout_secs = 1;
        settings.files.scan_lease_secs = 3;
    })
    .await;
    let tenant = first.create_tenant("Lease Co").await;
    let file = uploaded(
        &first,
        &tenant.token,
        "form.txt",
        b"Application form".to_vec(),
    )
    .await;
    let id: uuid::Uuid = file["id"].as_str().unwrap().parse().unwrap();
    let mut conn = first.owner_connection().await;
    let lease_query = "SELECT scan_claimed_by, scan_lease_until FROM files WHERE id = $1";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (dead_claimer, lease_until) = loop {
        let (claimer, until): (Option<uuid::Uuid>, Option<chrono::DateTime<chrono::Utc>>) =
            sqlx::query_as(lease_query)
                .bind(id)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        if let (Some(claimer), Some(until)) = (claimer, until) {
            break (claimer, until);
        }
        assert!(tokio::time::Instant::now() < deadline, "never claimed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The instance dies holding the lease; one with a working clamd takes over.
    first.begin_shutdown();
    let prefix = first.settings.redis.prefix.clone();
    let second = spawn_app_on(
        &first.database,
        |settings| {
            scanned(settings, &clamd);
            settings.redis.prefix = prefix;
        },
        false,
    )
    .await;
    let scanned_file = wait_for_scan(&second, &tenant.token, &id.to_string()).await;
    assert_eq!(scanned_file["scan_status"], "clean", "{scanned_file}");
    let scanned_at: chrono::DateTime<chrono::Utc> = scanned_file["scanned_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        scanned_at >= lease_until,
        "taken over before the lease ended: {scanned_at} < {lease_until}"
    );
    let (claimer, _): (Option<uuid::Uuid>, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as(lease_query)
            .bind(id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        claimer, None,
        "a finished scan holds no lease (was {dead_claimer})"
    );
}

#[tokio::test]
async fn an_oversized_upload_is_413_and_leaves_nothing_behind_while_other_routes_keep_their_limit()
{
    const MAX: u64 = 400_000;
    let app = spawn_app_with(|settings| settings.files.max_bytes = MAX).await;
    let tenant = app.create_tenant("Big Co").await;
    let response = upload(
        &app,
        &tenant.token,
        "big.bin",
        "text/plain",
        vec![7u8; MAX as usize + 1],
        None,
    )
    .await;
    assert_error(response, 413, "payload_too_large").await;
    let mut conn = app.owner_connection().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM files")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    let files_dir = recordings_dir(&app.database).join("files");
    let mut left = Vec::new();
    let mut dirs = vec![files_dir];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                left.push(entry.path());
            }
        }
    }
    assert_eq!(
        left,
        Vec::<std::path::PathBuf>::new(),
        "objects left behind"
    );

    // Exactly the limit is taken, above http.max_body_bytes (256 KiB) ...
    let file = uploaded(&app, &tenant.token, "exact.bin", vec![7u8; MAX as usize]).await;
    assert_eq!(file["size_bytes"], MAX);
    assert_eq!(file["content_type"], "application/octet-stream");
    // ... which still holds for every other route.
    let large = json!({ "name": "x".repeat(300_000), "system_prompt": "p" });
    let response = app
        .post_json("/api/v1/agents", Some(&tenant.token), &large)
        .await;
    assert_error(response, 413, "payload_too_large").await;
    let response = app
        .request(Method::POST, "/api/v1/files", Some(&tenant.token))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(response, 415, "unsupported_media_type").await;
}

/// Run with `--ignored --nocapture`: upload and download throughput of a
/// 50 MiB file, and the process's peak RSS (the client's side streams too).
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn bench_a_50_mib_file_streams_in_and_out() {
    use futures_util::StreamExt;
    const SIZE: usize = 50 * 1024 * 1024;
    const CHUNK: usize = 256 * 1024;
    let app = spawn_app_with(|settings| settings.files.max_bytes = SIZE as u64).await;
    let tenant = app.create_tenant("Bench Co").await;
    let rss = |field: &str| -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|line| line.starts_with(field)).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            / 1024
    };
    let before = rss("VmRSS:");
    let chunks = futures_util::stream::iter(0..SIZE / CHUNK)
        .map(|i| Ok::<_, std::io::Error>(vec![(i % 251) as u8; CHUNK]));
    let part = Part::stream_with_length(reqwest::Body::wrap_stream(chunks), SIZE as u64)
        .file_name("big.bin");
    let started = std::time::Instant::now();
    let response = app
        .request(Method::POST, "/api/v1/files", Some(&tenant.token))
        .multipart(Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    let upload_secs = started.elapsed().as_secs_f64();
    assert_eq!(response.status(), 201);
    let id = body(response).await["id"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    let response = fetch(
        &app,
        &format!("/api/v1/files/{id}/content"),
        Some(&tenant.token),
        None,
    )
    .await;
    let mut stream = response.bytes_stream();
    let mut received = 0usize;
    while let Some(chunk) = stream.next().await {
        received += chunk.unwrap().len();
    }
    let download_secs = started.elapsed().as_secs_f64();
    assert_eq!(received, SIZE);
    let mib = SIZE as f64 / (1024.0 * 1024.0);
    println!(
        "50 MiB: upload {:.0} MiB/s, download {:.0} MiB/s; RSS before {before} MiB, peak {} MiB",
        mib / upload_secs,
        mib / download_secs,
        rss("VmHWM:")
    );
}
