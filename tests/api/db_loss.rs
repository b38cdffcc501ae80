//! PostgreSQL ends every session of the app's database under load
//! (`pg_terminate_backend`, as a failover or an operator does): requests
//! caught by it fail with a JSON 503, never a 500, and the pool reconnects
//! by itself.

use std::time::{Duration, Instant};

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn requests_cut_off_from_postgres_get_503_and_the_pool_recovers() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Cut off").await;
    let path = "/api/v1/conversations";
    assert_eq!(app.get(path, &tenant.token).await.status(), 200);

    // Readers keep requests in flight while every session is cut, three times.
    let stop_at = Instant::now() + Duration::from_secs(3);
    let mut readers = Vec::new();
    for _ in 0..8 {
        let client = app.client.clone();
        let url = app.url(path);
        let token = tenant.token.clone();
        readers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while Instant::now() < stop_at {
                let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
                let status = response.status().as_u16();
                if status != 200 {
                    statuses.push((status, response.text().await.unwrap()));
                } else {
                    statuses.push((status, String::new()));
                }
            }
            statuses
        }));
    }
    let mut owner = app.owner_connection().await;
    let mut terminated = 0i64;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        terminated += sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(app.database_name())
        .fetch_one(&mut owner)
        .await
        .unwrap();
    }
    assert!(terminated > 0, "the app had sessions to cut");

    let mut seen = Vec::new();
    for reader in readers {
        seen.extend(reader.await.unwrap());
    }
    for (status, body) in &seen {
        assert!(
            *status == 200 || *status == 503,
            "a request cut off from PostgreSQL got {status}: {body}"
        );
        if *status == 503 {
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(json["error"]["code"], "unavailable", "{json}");
        }
    }
    assert!(seen.iter().filter(|(s, _)| *s == 200).count() > 8);

    // The pool has replaced the connections it lost.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = app.get(path, &tenant.token).await;
        if response.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the pool did not recover");
        assert_error(response, 503, "unavailable").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
