//! The scan worker: claims pending files (a lease in PostgreSQL, so a scan
//! lost with its instance is taken over once the lease runs out), streams
//! each one's plaintext to clamd, and records `clean` or `infected`. A failed
//! scan (clamd down, an ERROR reply) records nothing: the file stays pending
//! and is tried again when its lease ends. It wakes at once for uploads on
//! this instance and polls for the others' every `files.scan_poll_ms`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentry_actors::TenantId;
use tokio::sync::watch;
use uuid::Uuid;

use super::clamd::{Clamd, Verdict};
use super::{FileError, Files};
use crate::bus::RedisBus;
use crate::db::files;
use crate::db::{DbError, Store};

/// Files claimed per round.
const BATCH: i32 = 4;

pub struct ScanWorker {
    pub files: Arc<Files>,
    pub store: Store,
    pub bus: RedisBus,
    pub clamd: Clamd,
    /// This instance's name on its leases.
    pub claimer: Uuid,
    pub max_document_chars: usize,
}

/// One scan's outcome: counted, timed and logged together.
struct ScanEvent {
    outcome: &'static str,
    started: Instant,
}

impl ScanEvent {
    fn emit(self, file: Uuid, detail: Option<&str>) {
        let outcome = self.outcome;
        metrics::counter!("agentry_file_scans_total", "outcome" => outcome).increment(1);
        metrics::histogram!("agentry_file_scan_duration_seconds", "outcome" => outcome)
            .record(self.started.elapsed().as_secs_f64());
        match detail {
            Some(detail) => {
                tracing::warn!(%file, outcome, detail, "file scan failed; it stays pending")
            }
            None => tracing::info!(%file, outcome, "file scanned"),
        }
    }
}

impl ScanWorker {
    /// Runs until `shutdown` turns true; the scan in hand is finished first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let wake = self.files.scan_wake.clone();
        let poll = Duration::from_millis(self.files.settings.scan_poll_ms);
        let lease = Duration::from_secs(self.files.settings.scan_lease_secs);
        while !*shutdown.borrow() {
            let claimed = match files::claim_pending(&self.store, self.claimer, lease, BATCH).await
            {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "file scans: claim failed");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            for (tenant, file) in claimed {
                self.scan_one(tenant, file).await;
            }
        }
    }

    async fn scan_one(&self, tenant: TenantId, file: Uuid) {
        let started = Instant::now();
        let (outcome, detail) = match self.scan(tenant, file).await {
            Ok(Some(Verdict::Clean)) => ("clean", None),
            Ok(Some(Verdict::Infected(_))) => ("infected", None),
            Ok(None) => ("gone", None),
            Err(error) => ("error", Some(error.to_string())),
        };
        ScanEvent { outcome, started }.emit(file, detail.as_deref());
    }

    /// The verdict recorded; `None` when the file went (deleted, or another
    /// instance's verdict came first).
    async fn scan(&self, tenant: TenantId, id: Uuid) -> Result<Option<Verdict>, FileError> {
        let mut tx = self.store.tenant(tenant).await?;
        let row = match files::get(&mut tx, id).await {
            Ok(row) => row,
            Err(DbError::NotFound) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        drop(tx);
        let content = self
            .files
            .open(tenant, &row, 0..row.size_bytes as u64)
            .await?;
        let verdict = self.clamd.scan(content).await?;
        let (status, signature) = match &verdict {
            Verdict::Clean => ("clean", None),
            Verdict::Infected(signature) => ("infected", Some(signature.as_str())),
        };
        let mut tx = self.store.tenant(tenant).await?;
        let recorded = files::record_scan(&mut tx, id, status, signature).await?;
        tx.commit().await?;
        if !recorded {
            return Ok(None);
        }
        if verdict == Verdict::Clean {
            let row = files::FileRow {
                scan_status: status.to_owned(),
                ..row
            };
            if let Err(error) = self
                .files
                .attach_to_knowledge(
                    &self.store,
                    &self.bus,
                    self.max_document_chars,
                    tenant,
                    &row,
                )
                .await
            {
                tracing::warn!(file = %id, %error, "a clean file was not added to its knowledge base");
            }
        }
        Ok(Some(verdict))
    }
}
