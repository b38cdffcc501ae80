//! The audit tables are append-only in the database itself, for every role.

use agentry::db::AUDIT_TABLES;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::helpers::{set_tenant, spawn_app};

/// Inserts one row into each audit table (the connection has app.tenant_id set).
pub async fn insert_one_row_per_audit_table(
    conn: &mut PgConnection,
    tenant: Uuid,
    agent: Uuid,
    conversation: Uuid,
) {
    sqlx::query("INSERT INTO agent_action_runs (id, tenant_id, agent_id, conversation_id, tool, status) VALUES ($1, $2, $3, $4, 'capture_lead', 'succeeded')")
        .bind(Uuid::now_v7()).bind(tenant).bind(agent).bind(conversation)
        .execute(&mut *conn).await.unwrap();
    sqlx::query("INSERT INTO agent_usage_events (id, tenant_id, agent_id, conversation_id, kind, provider, model, prompt_tokens, completion_tokens) VALUES ($1, $2, $3, $4, 'chat', 'offline', 'offline-1', 10, 5)")
        .bind(Uuid::now_v7()).bind(tenant).bind(agent).bind(conversation)
        .execute(&mut *conn).await.unwrap();
    sqlx::query("INSERT INTO agent_webhook_deliveries (id, tenant_id, endpoint_id, event_id, event_type, attempt, outcome, response_status) VALUES ($1, $2, $3, $4, 'lead.created', 1, 'success', 200)")
        .bind(Uuid::now_v7()).bind(tenant).bind(Uuid::now_v7()).bind(Uuid::now_v7())
        .execute(&mut *conn).await.unwrap();
    sqlx::query("INSERT INTO voice_pii_audits (id, tenant_id, conversation_id, pii_kind, occurrences) VALUES ($1, $2, $3, 'email', 1)")
        .bind(Uuid::now_v7()).bind(tenant).bind(conversation)
        .execute(&mut *conn).await.unwrap();
    sqlx::query("INSERT INTO privacy_erasures (id, tenant_id, requested_by, key_kind, counts) VALUES ($1, $2, $3, 'email', '{}')")
        .bind(Uuid::now_v7()).bind(tenant).bind(Uuid::now_v7())
        .execute(&mut *conn).await.unwrap();
}

#[tokio::test]
async fn update_and_delete_on_every_audit_table_fail_for_the_app_role_and_the_owner() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Audit Co").await;
    let agent: Uuid = app.create_agent(&tenant.token, "Audited").await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let mut conn = app.app_role_connection().await;
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, tenant.id).await;
    insert_one_row_per_audit_table(&mut tx, tenant.id.as_uuid(), agent, Uuid::now_v7()).await;
    tx.commit().await.unwrap();

    for table in AUDIT_TABLES {
        for statement in [
            format!("UPDATE {table} SET created_at = now()"),
            format!("DELETE FROM {table}"),
            format!("TRUNCATE {table}"),
        ] {
            // As the application role, with its tenant set (so RLS would let the row through).
            let mut tx = conn.begin().await.unwrap();
            set_tenant(&mut tx, tenant.id).await;
            let result = sqlx::query(&statement).execute(&mut *tx).await;
            assert!(result.is_err(), "app role: {statement} succeeded");
            tx.rollback().await.unwrap();
        }
    }

    let mut owner = app.owner_connection().await;
    for table in AUDIT_TABLES {
        for statement in [
            format!("UPDATE {table} SET created_at = now()"),
            format!("DELETE FROM {table}"),
            format!("TRUNCATE {table}"),
        ] {
            let error = sqlx::query(&statement)
                .execute(&mut owner)
                .await
                .expect_err(&statement);
            assert!(
                error.to_string().contains("append-only"),
                "owner: {statement}: {error}"
            );
        }
        let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut owner)
            .await
            .unwrap();
        assert_eq!(count, 1, "{table} lost its row");
    }
}
