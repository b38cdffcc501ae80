//! Retrieval benchmark of the in-memory path a chat turn takes, written to the
//! "Retrieval" section of `docs/BENCHMARKS.md`.
//!
//! For 1k, 10k and 100k chunks, each in its own namespace (one tenant's
//! agent), a deterministic synthetic corpus is embedded with the offline
//! embedder and stored through the real store code (`create_document` and
//! `store_chunks`, one transaction per document) in a dedicated PostgreSQL
//! database, `agentry_bench_retrieval`, created at the start and dropped at the
//! end. A real `RagRetriever` actor over the real `PgKnowledgeStore` then loads
//! each namespace's snapshot into a `ResidentNamespaces`, and queries take the
//! chat turn's path: `rag_retriever::snapshot` (a resident hit, no database
//! call) then `rag_retriever::search` (embed the question, hybrid search).
//!
//! Per size:
//! - the cold full load through the actor (store read and build), the
//!   snapshot's heap bytes and the process's RSS growth;
//! - a timed pass over a fixed set of synthetic queries, one caller: p50, p99;
//!   the same queries split into their steps (embed, dense only, lexical only,
//!   full search), and quality against exact f32 dense search;
//! - throughput of two concurrent callers against one;
//! - criterion's median of the same path (`hybrid_retrieval/<size>`);
//! - last, incremental loads: a new document stored, an old one deleted, and
//!   the actor bringing the snapshot up to date.
//!
//! `cargo bench --bench retrieval` runs it all and rewrites the report's
//! Retrieval section (other sections of the file are kept as they are).
//! While developing, `RETRIEVAL_BENCH_SIZES=1000,10000` and
//! `RETRIEVAL_BENCH_QUERIES=50` make small runs; those print the section
//! instead of writing it; `RETRIEVAL_BENCH_KEEP_DATABASE=1` keeps the database
//! for inspection. Run as a test (`cargo test --all-targets`), it only checks
//! the path on 1k chunks. DATABASE_URL, if set, names the PostgreSQL server
//! (its database name is replaced).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::hint::black_box;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use agentry::accounts;
use agentry::configuration::Settings;
use agentry::db::knowledge::{self as kb, NewChunk, PgKnowledgeStore};
use agentry::db::{agents, bootstrap, Store};
use agentry::domain::AgentProfile;
use agentry_actors::knowledge::synthetic::{SyntheticChunk, SyntheticConfig, SyntheticCorpus};
use agentry_actors::knowledge::{
    DenseIndex, OfflineEmbedder, DEFAULT_DIMENSIONS, OFFLINE_EMBEDDER_NAME,
};
use agentry_actors::llm::Embedder;
use agentry_actors::ports::{
    DocumentVersion, KnowledgeChunk, KnowledgeStore, Namespace, NamespaceChanges, StoreError,
};
use agentry_actors::rag_retriever::{self, RagArgs, RagMsg, RagRetriever, Resident};
use agentry_actors::resident::ResidentNamespaces;
use agentry_actors::{AgentId, Secret};
use async_trait::async_trait;
use criterion::{BenchmarkId, Criterion, SamplingMode};
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::{Actor, ActorRef};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::oneshot;
use uuid::Uuid;

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
/// Queries in the timed pass of each size (the first ones are the previous
/// run's query set: see [`PREVIOUS`]).
const QUERIES: usize = 1_000;
/// Connections loading documents at once.
const LOADERS: usize = 2;
const QUERY_SEED: u64 = 7;
/// Passages a chat turn asks the retriever for.
const LIMIT: usize = 10;
/// Candidates each ranking contributes before fusion (`rag_retriever`'s private constant).
const CANDIDATES: usize = 20;
/// Chunks per synthetic document (`SyntheticConfig`'s default).
const CHUNKS_PER_DOCUMENT: usize = 8;
/// Incremental updates per size, each one document added and one deleted.
const UPDATE_ROUNDS: usize = 5;
/// Length of each of the alternating one-caller and two-caller runs, and how many of each.
const PARALLEL_RUN: Duration = Duration::from_secs(1);
const PARALLEL_RUNS: usize = 3;
const DATABASE: &str = "agentry_bench_retrieval";
const GROUP: &str = "hybrid_retrieval";
const REPORT: &str = "docs/BENCHMARKS.md";
const SECTION: &str = "## Retrieval";

/// Goals for the warm p99, by namespace size.
const P99_GOALS: [(usize, Duration); 2] = [
    (1_000, Duration::from_micros(500)),
    (100_000, Duration::from_millis(5)),
];

/// The previous run's figures (2026-11-23, PostgreSQL full-text path): the
/// "before" columns, and the source hit@10 this path must not fall below.
struct Previous {
    size: usize,
    /// The first this many of the same seeded queries.
    queries: usize,
    p50: Duration,
    p99: Duration,
    criterion_median: Duration,
    recall: f64,
    /// Source hit@10, percent as the previous report rounded it.
    hybrid_hit: u32,
    dense_hit: u32,
    full_text_hit: u32,
    cold_first_query: Duration,
}

const PREVIOUS_RUN: &str = "2026-11-23";
const PREVIOUS: [Previous; 3] = [
    Previous {
        size: 1_000,
        queries: 200,
        p50: Duration::from_micros(4_120),
        p99: Duration::from_micros(6_520),
        criterion_median: Duration::from_micros(2_760),
        recall: 0.601,
        hybrid_hit: 90,
        dense_hit: 76,
        full_text_hit: 90,
        cold_first_query: Duration::from_micros(43_900),
    },
    Previous {
        size: 10_000,
        queries: 200,
        p50: Duration::from_micros(6_400),
        p99: Duration::from_micros(38_900),
        criterion_median: Duration::from_micros(7_500),
        recall: 0.558,
        hybrid_hit: 73,
        dense_hit: 64,
        full_text_hit: 70,
        cold_first_query: Duration::from_micros(193_100),
    },
    Previous {
        size: 100_000,
        queries: 100,
        p50: Duration::from_micros(17_300),
        p99: Duration::from_micros(44_400),
        criterion_median: Duration::from_micros(18_900),
        recall: 0.529,
        hybrid_hit: 43,
        dense_hit: 46,
        full_text_hit: 17,
        cold_first_query: Duration::from_micros(2_610_000),
    },
];

fn previous(size: usize) -> Option<&'static Previous> {
    PREVIOUS.iter().find(|p| p.size == size)
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // binary without it, as a smoke test: one small size, no report.
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let (sizes, queries_override) = if benchmarking {
        (
            env_list("RETRIEVAL_BENCH_SIZES").unwrap_or_else(|| SIZES.to_vec()),
            env_list("RETRIEVAL_BENCH_QUERIES").and_then(|v| v.first().copied()),
        )
    } else {
        check_section_splice();
        (vec![1_000], Some(10))
    };
    let full_run = sizes == SIZES && queries_override.is_none();
    let query_count = queries_override.unwrap_or(QUERIES).max(2);
    let (parallel_run, rounds) = if benchmarking {
        (PARALLEL_RUN, UPDATE_ROUNDS)
    } else {
        (Duration::from_millis(100), 2)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = SystemTime::now();
    // The server's recorder: the path's metrics cost what they cost there,
    // and its counters tell whether warm queries stayed off the actor.
    let metrics = agentry::telemetry::metrics_handle();

    let settings = bench_settings();
    let store = runtime.block_on(async {
        create_database(&settings).await;
        bootstrap::prepare(&settings.database)
            .await
            .expect("benchmark database prepared")
    });
    let server_version: String = runtime.block_on(async {
        sqlx::query_scalar("SHOW server_version")
            .fetch_one(store.pool())
            .await
            .expect("server version")
    });

    // One corpus; the smaller namespaces hold prefixes of it (the generator is
    // sequential, so a prefix is exactly the smaller corpus of the same seed).
    // The chunks past the largest size are the documents the updates add.
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let extra = rounds * CHUNKS_PER_DOCUMENT;
    let clock = Instant::now();
    let corpus = SyntheticCorpus::generate(&SyntheticConfig {
        chunks: largest + extra,
        chunks_per_document: CHUNKS_PER_DOCUMENT,
        ..SyntheticConfig::default()
    });
    let embedder = Arc::new(OfflineEmbedder::default());
    let vectors: Vec<Vec<f32>> = corpus
        .chunks
        .iter()
        .map(|chunk| embedder.embed_one(&chunk.text))
        .collect();
    eprintln!(
        "corpus: {} chunks generated and embedded in {:.1?}",
        corpus.chunks.len(),
        clock.elapsed()
    );

    let mut namespaces = Vec::new();
    for &size in &sizes {
        let clock = Instant::now();
        let loaded = runtime.block_on(load_namespace(
            &settings,
            &store,
            &corpus.chunks[..size],
            &vectors[..size],
        ));
        let load_time = clock.elapsed();
        eprintln!(
            "stored {size} chunks in {} documents in {load_time:.1?}",
            loaded.documents.len()
        );
        namespaces.push((size, loaded, load_time));
    }
    // What autovacuum does after a bulk load: statistics for the planner, so
    // the snapshot loads' reads are planned as in a settled database.
    runtime.block_on(vacuum_analyze(&settings));

    // Unbounded: the budget and its evictions are not what is measured.
    let resident: Arc<Resident> = Arc::new(ResidentNamespaces::new(usize::MAX));
    let context = Context {
        store: &store,
        resident: &resident,
        embedder: &embedder,
        metrics: &metrics,
        parallel_run,
    };
    let mut results = Vec::new();
    let mut benches = Vec::new();
    for (size, loaded, load_time) in namespaces {
        let sub = SyntheticCorpus {
            vocabulary: corpus.vocabulary.clone(),
            chunks: corpus.chunks[..size].to_vec(),
        };
        let queries = sub.queries(query_count, QUERY_SEED);
        let index_of: HashMap<Uuid, usize> = sub
            .chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| (chunk.chunk_id, i))
            .collect();
        let queries: Vec<Query> = queries
            .into_iter()
            .map(|query| Query {
                source: loaded.chunk_ids[index_of[&query.source_chunk]],
                text: query.text,
            })
            .collect();
        let (result, bench) = runtime.block_on(measure(
            &context,
            size,
            loaded,
            load_time,
            &corpus.chunks[..size],
            &vectors[..size],
            queries,
        ));
        eprintln!(
            "{size}: p50 {} p99 {} | hybrid source hit@10 {} | cold load {} | {} heap",
            fmt_duration(result.p50),
            fmt_duration(result.p99),
            percent(result.quality.hybrid_hits, result.quality.queries),
            fmt_duration(result.cold.total),
            fmt_bytes(result.cold.heap_bytes),
        );
        results.push(result);
        benches.push(bench);
    }

    let mut group = criterion.benchmark_group(GROUP);
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for bench in &benches {
        let mut next = 0;
        group.bench_function(BenchmarkId::from_parameter(bench.size), |b| {
            b.iter_custom(|iters| {
                let (first, caller) = (next, bench.caller.clone());
                next += iters as usize;
                runtime.block_on(async {
                    tokio::spawn(async move {
                        let clock = Instant::now();
                        for i in 0..iters as usize {
                            black_box(caller.retrieve(first + i).await);
                        }
                        clock.elapsed()
                    })
                    .await
                    .expect("criterion caller")
                })
            })
        });
    }
    group.finish();
    criterion.final_summary();

    // Last, as they change the namespaces the figures above were taken on.
    for (result, bench) in results.iter_mut().zip(&benches) {
        result.criterion_median = criterion_median(result.size, started);
        let update = runtime.block_on(incremental_updates(
            &context,
            bench,
            &corpus.chunks[..result.size],
            &corpus.chunks[largest..],
            &vectors[largest..],
            rounds,
        ));
        eprintln!(
            "{}: incremental load median {} (store {})",
            result.size,
            fmt_duration(update.total),
            fmt_duration(update.store)
        );
        result.update = Some(update);
    }

    let section = render_section(&results, &server_version);
    if full_run {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(REPORT);
        std::fs::create_dir_all(path.parent().expect("report directory")).expect("docs/");
        let existing = std::fs::read_to_string(&path).ok();
        std::fs::write(&path, splice_section(existing.as_deref(), &section))
            .expect("report written");
        eprintln!("wrote the {SECTION} section of {}", path.display());
    } else if benchmarking {
        println!("{section}");
        eprintln!("(custom sizes or query count: {REPORT} left unchanged)");
    }

    runtime.block_on(async {
        for bench in benches {
            bench.actor.stop(None);
        }
        store.pool().close().await;
        if std::env::var_os("RETRIEVAL_BENCH_KEEP_DATABASE").is_none() {
            drop_database(&settings).await;
        }
    });
}

fn env_list(name: &str) -> Option<Vec<usize>> {
    let value = std::env::var(name).ok()?;
    let list: Vec<usize> = value
        .split(',')
        .filter_map(|v| v.trim().replace('_', "").parse().ok())
        .collect();
    (!list.is_empty()).then_some(list)
}

/// The test profile, honouring DATABASE_URL, pointed at the benchmark's own database.
fn bench_settings() -> Settings {
    let mut env: HashMap<String, String> = std::env::vars()
        .filter(|(name, _)| name == "DATABASE_URL")
        .collect();
    env.insert("AGENTRY_ENV".into(), "test".into());
    let mut settings = Settings::load_from(env).expect("settings load");
    let mut url = url::Url::parse(settings.database.url.expose()).expect("database url");
    url.set_path(&format!("/{DATABASE}"));
    settings.database.url = Secret::new(url.to_string());
    settings.database.max_connections = 4;
    settings
}

/// A fresh benchmark database. Commits do not wait for the WAL flush there:
/// loading 100k chunks one document per transaction would otherwise spend most
/// of its time in fsync, and storing is not what is measured (reads are the same).
async fn create_database(settings: &Settings) {
    drop_database(settings).await;
    let mut conn = bootstrap::maintenance_connection(&settings.database)
        .await
        .expect("maintenance connection");
    let name = bootstrap::quote_ident(DATABASE);
    for statement in [
        format!("CREATE DATABASE {name}"),
        format!("ALTER DATABASE {name} SET synchronous_commit = off"),
    ] {
        sqlx::raw_sql(&statement)
            .execute(&mut conn)
            .await
            .expect("benchmark database created");
    }
    let _ = conn.close().await;
}

async fn drop_database(settings: &Settings) {
    let mut conn = bootstrap::maintenance_connection(&settings.database)
        .await
        .expect("maintenance connection");
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        bootstrap::quote_ident(DATABASE)
    ))
    .execute(&mut conn)
    .await
    .expect("benchmark database dropped");
    let _ = conn.close().await;
}

async fn vacuum_analyze(settings: &Settings) {
    let mut conn = bootstrap::owner_options(&settings.database)
        .expect("owner options")
        .connect()
        .await
        .expect("owner connection");
    // One statement per query: VACUUM refuses a (multi-statement) transaction.
    for table in ["kb_chunks", "kb_documents"] {
        sqlx::raw_sql(&format!("VACUUM ANALYZE {table}"))
            .execute(&mut conn)
            .await
            .expect("vacuum analyze");
    }
    let _ = conn.close().await;
}

struct Loaded {
    namespace: Namespace,
    /// Each synthetic document's stored id and its chunks' range in the corpus.
    documents: Vec<(Uuid, Range<usize>)>,
    /// The stored id of each synthetic chunk, by index (the store assigns ids).
    chunk_ids: Vec<Uuid>,
}

/// One document through the store code, in one transaction: `create_document`
/// then `store_chunks` (which bumps the namespace version).
async fn store_document(
    store: &Store,
    namespace: Namespace,
    title: &str,
    chunks: &[SyntheticChunk],
    vectors: &[Vec<f32>],
) -> Uuid {
    let content: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
    let new_chunks: Vec<NewChunk> = chunks
        .iter()
        .zip(vectors)
        .enumerate()
        .map(|(ordinal, (chunk, vector))| NewChunk {
            ordinal: ordinal as i32,
            heading: String::new(),
            body: chunk.text.clone(),
            embedding: vector.clone(),
        })
        .collect();
    let mut tx = store.tenant(namespace.tenant).await.expect("tenant tx");
    let document = kb::create_document(
        &mut tx,
        namespace.agent,
        title,
        "text",
        &content.join("\n\n"),
    )
    .await
    .expect("document created");
    kb::store_chunks(
        &mut tx,
        namespace.agent,
        document.id,
        &new_chunks,
        OFFLINE_EMBEDDER_NAME,
    )
    .await
    .expect("chunks stored");
    tx.commit().await.expect("document committed");
    document.id
}

/// A tenant and agent of their own, then one transaction per synthetic
/// document, from two connections at once.
async fn load_namespace(
    settings: &Settings,
    store: &Store,
    chunks: &[SyntheticChunk],
    vectors: &[Vec<f32>],
) -> Loaded {
    let size = chunks.len();
    let tenant = accounts::create_tenant(
        store,
        &format!("Retrieval bench {size}"),
        &format!("bench-{size}@example.com"),
        Secret::new("retrieval-bench-password".to_owned()),
    )
    .await
    .expect("tenant created")
    .tenant_id;
    let mut tx = store.tenant(tenant).await.expect("tenant tx");
    let agent = agents::create(
        &mut tx,
        agents::NewAgent {
            name: "Retrieval bench",
            system_prompt: "Answer from the knowledge base.",
            profile: &AgentProfile::default(),
        },
    )
    .await
    .expect("agent created");
    tx.commit().await.expect("agent committed");
    let namespace = Namespace {
        tenant,
        agent: AgentId::from(agent.id),
    };

    // Synthetic documents: runs of chunks sharing a document id.
    let mut groups = Vec::new();
    let mut start = 0;
    for group in chunks.chunk_by(|a, b| a.document_id == b.document_id) {
        groups.push(start..start + group.len());
        start += group.len();
    }
    let load = |worker: usize| {
        let groups = &groups;
        async move {
            let mut stored = Vec::new();
            for (number, range) in groups.iter().enumerate().skip(worker).step_by(LOADERS) {
                let id = store_document(
                    store,
                    namespace,
                    &format!("Synthetic document {number}"),
                    &chunks[range.clone()],
                    &vectors[range.clone()],
                )
                .await;
                stored.push((number, id));
            }
            stored
        }
    };
    // Autovacuum's part, while the load runs: without fresh statistics on
    // kb_documents, each connection keeps the plan it made for the chunk
    // foreign-key check while the table was nearly empty, which walks all the
    // tenant's documents through kb_documents_agent_idx, so every insert
    // costs more than the one before (a 100k load took three times as long).
    let (finished, mut finishing) = oneshot::channel::<()>();
    let analyze = async {
        let mut conn = bootstrap::owner_options(&settings.database)
            .expect("owner options")
            .connect()
            .await
            .expect("owner connection");
        loop {
            tokio::select! {
                _ = &mut finishing => break,
                () = tokio::time::sleep(Duration::from_secs(2)) => {
                    sqlx::raw_sql("ANALYZE kb_documents")
                        .execute(&mut conn)
                        .await
                        .expect("analyze");
                }
            }
        }
        let _ = conn.close().await;
    };
    let loaders = async {
        let loaded = futures_util::future::join_all((0..LOADERS).map(load)).await;
        let _ = finished.send(());
        loaded
    };
    let (loaded, ()) = tokio::join!(loaders, analyze);
    let mut document_ids = vec![Uuid::nil(); groups.len()];
    for (number, id) in loaded.into_iter().flatten() {
        document_ids[number] = id;
    }

    let mut tx = store.tenant(tenant).await.expect("tenant tx");
    let rows: Vec<(Uuid, Uuid, i32)> =
        sqlx::query_as("SELECT id, document_id, ordinal FROM kb_chunks WHERE agent_id = $1")
            .bind(namespace.agent.as_uuid())
            .fetch_all(tx.conn())
            .await
            .expect("chunk ids");
    let stored: HashMap<(Uuid, i32), Uuid> = rows
        .into_iter()
        .map(|(id, document, ordinal)| ((document, ordinal), id))
        .collect();
    let chunk_ids = groups
        .iter()
        .zip(&document_ids)
        .flat_map(|(range, document)| {
            (0..range.len()).map(|ordinal| stored[&(*document, ordinal as i32)])
        })
        .collect();
    Loaded {
        namespace,
        documents: document_ids.into_iter().zip(groups).collect(),
        chunk_ids,
    }
}

async fn namespace_version(store: &Store, namespace: Namespace) -> i64 {
    let mut tx = store.tenant(namespace.tenant).await.expect("tenant tx");
    sqlx::query_scalar(
        "SELECT version FROM kb_namespace_versions WHERE tenant_id = $1 AND agent_id = $2",
    )
    .bind(namespace.tenant.as_uuid())
    .bind(namespace.agent.as_uuid())
    .fetch_optional(tx.conn())
    .await
    .expect("namespace version")
    .unwrap_or(0)
}

/// The real store, timing `changes` (the only call a load makes), so that a
/// load's time splits into reading the store and building the snapshot.
struct TimedStore {
    inner: PgKnowledgeStore,
    reads: Mutex<Vec<Duration>>,
}

#[async_trait]
impl KnowledgeStore for TimedStore {
    async fn changes(
        &self,
        namespace: Namespace,
        held: &[DocumentVersion],
    ) -> Result<NamespaceChanges, StoreError> {
        let clock = Instant::now();
        let changes = self.inner.changes(namespace, held).await;
        self.reads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(clock.elapsed());
        changes
    }
}

impl TimedStore {
    fn last_read(&self) -> Duration {
        self.reads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .last()
            .copied()
            .unwrap_or_default()
    }
}

struct Query {
    text: String,
    /// The stored id of the chunk the query's words come from.
    source: Uuid,
}

/// What a chat turn holds to retrieve: the resident registry, the
/// namespace's actor, the embedder and the version its first write returned.
#[derive(Clone)]
struct Caller {
    resident: Arc<Resident>,
    actor: ActorRef<RagMsg>,
    embedder: Arc<OfflineEmbedder>,
    namespace: Namespace,
    version: i64,
    queries: Arc<Vec<String>>,
}

impl Caller {
    /// The turn's retrieval of query `n` (cycling): snapshot, then search.
    async fn retrieve(&self, n: usize) -> Vec<Uuid> {
        let query = &self.queries[n % self.queries.len()];
        let snapshot =
            rag_retriever::snapshot(&self.resident, &self.actor, self.namespace, self.version)
                .await
                .expect("snapshot");
        rag_retriever::search(snapshot, self.embedder.as_ref(), query, LIMIT)
            .await
            .expect("search")
            .passages
            .into_iter()
            .map(|passage| passage.id)
            .collect()
    }
}

/// What later phases need of a measured size.
struct Bench {
    size: usize,
    actor: ActorRef<RagMsg>,
    caller: Caller,
    knowledge: Arc<TimedStore>,
    loaded: Loaded,
}

struct Context<'a> {
    store: &'a Store,
    resident: &'a Arc<Resident>,
    embedder: &'a Arc<OfflineEmbedder>,
    metrics: &'a PrometheusHandle,
    parallel_run: Duration,
}

struct SizeResult {
    size: usize,
    documents: usize,
    store_time: Duration,
    cold: ColdLoad,
    p50: Duration,
    p99: Duration,
    criterion_median: Option<Duration>,
    split: Split,
    /// Over all the queries, and over the previous run's query set.
    quality: Quality,
    previous_set: Quality,
    parallel: Parallel,
    /// Warm lookups of the timed pass: resident hits, and loads the actor made.
    warm_lookups: usize,
    warm_misses: u64,
    warm_loads: u64,
    update: Option<Update>,
}

struct ColdLoad {
    total: Duration,
    store: Duration,
    heap_bytes: usize,
    /// What the snapshot's chunks are as plain data: texts and f32 vectors.
    raw_bytes: usize,
    rss_growth: Option<usize>,
}

/// Medians of each step over the queries.
#[derive(Default)]
struct Split {
    embed: Duration,
    dense: Duration,
    lexical: Duration,
    full: Duration,
    /// Exact f32 top-20 over the same vectors (`DenseIndex`), for reference.
    exact_dense: Duration,
}

#[derive(Default)]
struct Quality {
    queries: usize,
    /// Sum over queries of |hybrid top 10 ∩ exact dense top 10| / 10.
    recall_sum: f64,
    /// Same, for the snapshot's int8 dense ranking alone.
    dense_recall_sum: f64,
    hybrid_hits: usize,
    dense_hits: usize,
    exact_hits: usize,
    lexical_hits: usize,
}

impl Quality {
    fn add(&mut self, outcome: &Outcome) {
        self.queries += 1;
        self.recall_sum += outcome.recall;
        self.dense_recall_sum += outcome.dense_recall;
        self.hybrid_hits += usize::from(outcome.hybrid_hit);
        self.dense_hits += usize::from(outcome.dense_hit);
        self.exact_hits += usize::from(outcome.exact_hit);
        self.lexical_hits += usize::from(outcome.lexical_hit);
    }

    fn recall(&self) -> f64 {
        self.recall_sum / self.queries.max(1) as f64
    }

    fn dense_recall(&self) -> f64 {
        self.dense_recall_sum / self.queries.max(1) as f64
    }
}

/// One query's quality figures.
struct Outcome {
    recall: f64,
    dense_recall: f64,
    hybrid_hit: bool,
    dense_hit: bool,
    exact_hit: bool,
    lexical_hit: bool,
}

struct Parallel {
    one_qps: f64,
    two_qps: f64,
}

impl Parallel {
    fn ratio(&self) -> f64 {
        self.two_qps / self.one_qps.max(1e-9)
    }
}

/// Incremental loads: medians over the rounds.
struct Update {
    rounds: usize,
    total: Duration,
    store: Duration,
    slowest: Duration,
    heap_bytes: usize,
}

async fn measure(
    context: &Context<'_>,
    size: usize,
    loaded: Loaded,
    store_time: Duration,
    chunks: &[SyntheticChunk],
    vectors: &[Vec<f32>],
    queries: Vec<Query>,
) -> (SizeResult, Bench) {
    let namespace = loaded.namespace;
    let knowledge = Arc::new(TimedStore {
        inner: PgKnowledgeStore::new(context.store.clone()),
        reads: Mutex::default(),
    });
    let (actor, _) = Actor::spawn(
        None,
        RagRetriever,
        RagArgs {
            namespace,
            knowledge: knowledge.clone(),
            resident: context.resident.clone(),
        },
    )
    .await
    .expect("retriever spawned");

    // Cold: the namespace is not resident, so the actor reads it all and builds.
    let version = namespace_version(context.store, namespace).await;
    assert!(context.resident.current(namespace, version).is_none());
    let rss_before = rss_bytes();
    let clock = Instant::now();
    let (reply, answer) = oneshot::channel();
    actor
        .send_message(RagMsg::Snapshot {
            version,
            reply,
            span: tracing::Span::none(),
        })
        .expect("retriever alive");
    let snapshot = answer
        .await
        .expect("retriever replied")
        .expect("snapshot loaded");
    let cold_total = clock.elapsed();
    let rss_after = rss_bytes();
    assert_eq!(snapshot.len(), size, "every chunk loaded");
    let cold = ColdLoad {
        total: cold_total,
        store: knowledge.last_read(),
        heap_bytes: snapshot.heap_bytes(),
        raw_bytes: raw_bytes(chunks, vectors),
        rss_growth: rss_before
            .zip(rss_after)
            .map(|(before, after)| after.saturating_sub(before)),
    };

    let caller = Caller {
        resident: context.resident.clone(),
        actor: actor.clone(),
        embedder: context.embedder.clone(),
        namespace,
        version,
        queries: Arc::new(queries.iter().map(|q| q.text.clone()).collect()),
    };
    // A first pass warms caches and the blocking pool; the second is timed.
    warm_pass(&caller, queries.len().min(50)).await;
    let (misses_before, loads_before) = (misses(context.metrics), loads(context.metrics));
    let (mut latencies, hybrid) = warm_pass(&caller, queries.len()).await;
    let (warm_misses, warm_loads) = (
        misses(context.metrics) - misses_before,
        loads(context.metrics) - loads_before,
    );
    latencies.sort();

    // The steps on their own, and quality against exact dense search.
    let mut exact = DenseIndex::new(DEFAULT_DIMENSIONS).expect("dimensions");
    exact.reserve(size);
    for (id, vector) in loaded.chunk_ids.iter().zip(vectors) {
        exact.insert(*id, Uuid::nil(), vector).expect("vector fits");
    }
    // Each step in a pass of its own over all the queries, so that each runs
    // with the caches as consecutive turns leave them (one step's data does
    // not evict another's).
    let (mut embed_times, mut vectors) = (Vec::new(), Vec::new());
    for query in &queries {
        let clock = Instant::now();
        let embedded = context
            .embedder
            .embed(std::slice::from_ref(&query.text))
            .await
            .expect("embedded");
        embed_times.push(clock.elapsed());
        vectors.extend(embedded.vectors.into_iter().next());
    }
    let ids = |passages: Vec<KnowledgeChunk>| -> Vec<Uuid> {
        passages.into_iter().map(|p| p.id).collect()
    };
    let pass = |step: &dyn Fn(&[f32], &str) -> Vec<Uuid>| {
        let mut times = Vec::with_capacity(queries.len());
        let results: Vec<Vec<Uuid>> = queries
            .iter()
            .zip(&vectors)
            .map(|(query, vector)| {
                let clock = Instant::now();
                let ids = step(vector, &query.text);
                times.push(clock.elapsed());
                ids
            })
            .collect();
        (median(&mut times), results)
    };
    let (dense_time, dense) = pass(&|v, _| ids(snapshot.search(Some(v), "", CANDIDATES, LIMIT)));
    let (lexical_time, lexical) =
        pass(&|_, text| ids(snapshot.search(None, text, CANDIDATES, LIMIT)));
    let (full_time, full) = pass(&|v, text| ids(snapshot.search(Some(v), text, CANDIDATES, LIMIT)));
    let (exact_time, exact_top) = pass(&|v, _| {
        let top = exact.top_k(v, CANDIDATES).expect("query vector fits");
        top.into_iter().take(LIMIT).map(|(id, _)| id).collect()
    });
    assert_eq!(full, hybrid, "the path returns the snapshot's ranking");

    let mut quality = Quality::default();
    let mut previous_set = Quality::default();
    let previous_queries = previous(size).map_or(0, |p| p.queries);
    for (n, query) in queries.iter().enumerate() {
        let exact_top: HashSet<Uuid> = exact_top[n].iter().copied().collect();
        let overlap = |ids: &[Uuid]| {
            ids.iter().filter(|id| exact_top.contains(id)).count() as f64 / LIMIT as f64
        };
        let outcome = Outcome {
            recall: overlap(&hybrid[n]),
            dense_recall: overlap(&dense[n]),
            hybrid_hit: hybrid[n].contains(&query.source),
            dense_hit: dense[n].contains(&query.source),
            exact_hit: exact_top.contains(&query.source),
            lexical_hit: lexical[n].contains(&query.source),
        };
        quality.add(&outcome);
        if n < previous_queries {
            previous_set.add(&outcome);
        }
    }
    drop(exact);
    let split = Split {
        embed: median(&mut embed_times),
        dense: dense_time,
        lexical: lexical_time,
        full: full_time,
        exact_dense: exact_time,
    };

    let parallel = parallel_throughput(&caller, context.parallel_run).await;

    let result = SizeResult {
        size,
        documents: loaded.documents.len(),
        store_time,
        cold,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        criterion_median: None,
        split,
        quality,
        previous_set,
        parallel,
        warm_lookups: queries.len(),
        warm_misses,
        warm_loads,
        update: None,
    };
    let bench = Bench {
        size,
        actor,
        caller,
        knowledge,
        loaded,
    };
    (result, bench)
}

/// One caller, one retrieval at a time, on a runtime worker as a turn runs:
/// each retrieval's latency and result.
async fn warm_pass(caller: &Caller, count: usize) -> (Vec<Duration>, Vec<Vec<Uuid>>) {
    let caller = caller.clone();
    tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(count);
        let mut results = Vec::with_capacity(count);
        for n in 0..count {
            let clock = Instant::now();
            let ids = caller.retrieve(n).await;
            latencies.push(clock.elapsed());
            results.push(ids);
        }
        (latencies, results)
    })
    .await
    .expect("warm pass")
}

/// Queries per second from one caller and from two at once, over alternating
/// runs (so that the machine's noise falls on both alike).
async fn parallel_throughput(caller: &Caller, run: Duration) -> Parallel {
    let mut done = [0usize; 2];
    let mut spent = [Duration::ZERO; 2];
    for _ in 0..PARALLEL_RUNS {
        for callers in [1, 2] {
            let clock = Instant::now();
            let deadline = clock + run;
            let tasks: Vec<_> = (0..callers)
                .map(|task| {
                    let caller = caller.clone();
                    tokio::spawn(async move {
                        // Different queries for each caller, as different turns ask.
                        let mut n = task * 7_919;
                        while Instant::now() < deadline {
                            black_box(caller.retrieve(n).await);
                            n += 1;
                        }
                        n - task * 7_919
                    })
                })
                .collect();
            for task in tasks {
                done[callers - 1] += task.await.expect("caller");
            }
            spent[callers - 1] += clock.elapsed();
        }
    }
    Parallel {
        one_qps: done[0] as f64 / spent[0].as_secs_f64(),
        two_qps: done[1] as f64 / spent[1].as_secs_f64(),
    }
}

/// Rounds of: a new document stored and an old one deleted through the store
/// code, then a turn asking for the new version, which the actor loads
/// incrementally. Checks that the change is searchable as it should be.
async fn incremental_updates(
    context: &Context<'_>,
    bench: &Bench,
    chunks: &[SyntheticChunk],
    new_chunks: &[SyntheticChunk],
    new_vectors: &[Vec<f32>],
    rounds: usize,
) -> Update {
    let (store, resident, embedder) = (context.store, context.resident, context.embedder);
    let namespace = bench.loaded.namespace;
    let (mut totals, mut reads) = (Vec::new(), Vec::new());
    let mut heap_bytes = 0;
    for round in 0..rounds {
        let range = round * CHUNKS_PER_DOCUMENT..(round + 1) * CHUNKS_PER_DOCUMENT;
        store_document(
            store,
            namespace,
            &format!("Added document {round}"),
            &new_chunks[range.clone()],
            &new_vectors[range.clone()],
        )
        .await;
        let (deleted, deleted_range) = &bench.loaded.documents[round];
        let mut tx = store.tenant(namespace.tenant).await.expect("tenant tx");
        kb::delete_document(&mut tx, namespace.agent, *deleted)
            .await
            .expect("document deleted");
        tx.commit().await.expect("deletion committed");
        let version = namespace_version(store, namespace).await;
        let held = resident.resident(namespace).map(|(_, s)| s.len());

        let clock = Instant::now();
        let snapshot = rag_retriever::snapshot(resident, &bench.actor, namespace, version)
            .await
            .expect("snapshot updated");
        totals.push(clock.elapsed());
        reads.push(bench.knowledge.last_read());
        heap_bytes = snapshot.heap_bytes();

        let deleted_ids: HashSet<Uuid> = bench.loaded.chunk_ids[deleted_range.clone()]
            .iter()
            .copied()
            .collect();
        assert_eq!(
            Some(snapshot.len()),
            held.map(|n| n + new_chunks[range.clone()].len() - deleted_ids.len()),
            "one document in, one out"
        );
        let added = &new_chunks[range.start];
        let found = snapshot.search(
            Some(&embedder.embed_one(&added.text)),
            &added.text,
            CANDIDATES,
            1,
        );
        assert_eq!(
            found.first().map(|p| p.text.as_str()),
            Some(added.text.as_str()),
            "the added document is searchable"
        );
        // Its own words and vector find other chunks now.
        let deleted_text = &chunks[deleted_range.start].text;
        let found = snapshot.search(
            Some(&embedder.embed_one(deleted_text)),
            deleted_text,
            CANDIDATES,
            LIMIT,
        );
        assert!(
            !found.is_empty() && found.iter().all(|p| !deleted_ids.contains(&p.id)),
            "the deleted document is gone"
        );
    }
    let slowest = totals.iter().copied().max().unwrap_or_default();
    Update {
        rounds,
        total: median(&mut totals),
        store: median(&mut reads),
        slowest,
        heap_bytes,
    }
}

/// The chunks as plain data (texts and f32 vectors), to set a snapshot's heap size against.
fn raw_bytes(chunks: &[SyntheticChunk], vectors: &[Vec<f32>]) -> usize {
    chunks.iter().map(|c| c.text.len()).sum::<usize>()
        + vectors
            .iter()
            .map(|v| v.len() * size_of::<f32>())
            .sum::<usize>()
}

/// The process's resident set size, from /proc (Linux).
fn rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The sum of a Prometheus counter's series whose labels include all of `labels`.
fn counter(metrics: &PrometheusHandle, name: &str, labels: &[&str]) -> u64 {
    metrics
        .render()
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && labels.iter().all(|label| line.contains(label))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn misses(metrics: &PrometheusHandle) -> u64 {
    counter(
        metrics,
        "agentry_cache_lookups_total",
        &["cache=\"namespace\"", "outcome=\"miss\""],
    )
}

fn loads(metrics: &PrometheusHandle) -> u64 {
    counter(metrics, "agentry_retriever_loads_total", &[])
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    percentile(values, 0.5)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn fmt_duration(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 10.0 {
        format!("{micros:.2} µs")
    } else if micros < 1_000.0 {
        format!("{micros:.0} µs")
    } else if micros < 10_000.0 {
        format!("{:.2} ms", micros / 1e3)
    } else if micros < 1_000_000.0 {
        format!("{:.1} ms", micros / 1e3)
    } else if micros < 10_000_000.0 {
        format!("{:.2} s", micros / 1e6)
    } else {
        format!("{:.1} s", micros / 1e6)
    }
}

fn fmt_count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_bytes(bytes: usize) -> String {
    let mb = bytes as f64 / 1e6;
    if mb < 10.0 {
        format!("{mb:.2} MB")
    } else {
        format!("{mb:.0} MB")
    }
}

/// A ratio of durations, "×3.2" style.
fn times(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-12)
}

fn share(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

fn percent(part: usize, whole: usize) -> String {
    format!("{:.0}%", share(part, whole))
}

/// Where criterion writes, resolved as criterion does (minus its `cargo metadata` step).
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        PathBuf::from(home)
    } else if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        PathBuf::from(target).join("criterion")
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/criterion")
    }
}

/// Criterion's median for `hybrid_retrieval/<size>`, if measured in this run.
fn criterion_median(size: usize, since: SystemTime) -> Option<Duration> {
    let path = criterion_home()
        .join(GROUP)
        .join(size.to_string())
        .join("new/estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let estimates: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
    let nanos = estimates["median"]["point_estimate"].as_f64()?;
    Some(Duration::from_secs_f64(nanos / 1e9))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|model| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// What the report file holds before this section when the bench creates it.
const REPORT_HEADER: &str = "# Benchmarks\n\n\
    All figures below come from one run of one benchmark on a shared machine. That\n\
    machine is noisy (other builds and tests run beside the benchmark), so absolute\n\
    figures can move by tens of percent between runs: compare figures within a run,\n\
    and prefer the ratios.\n";

/// `existing` with its `## Retrieval` section (up to the next `## ` heading
/// outside a code block, or the end) replaced by `section`, everything else
/// kept as it is; the section is appended if missing, and a new file gets the
/// report's header first.
fn splice_section(existing: Option<&str>, section: &str) -> String {
    let section = section.trim_end();
    let Some(existing) = existing.filter(|text| !text.trim().is_empty()) else {
        return format!("{REPORT_HEADER}\n{section}\n");
    };
    // Byte offsets of each line start, and whether it is a level-2 heading
    // outside fenced code.
    let mut headings: Vec<(usize, &str)> = Vec::new();
    let mut fenced = false;
    let mut offset = 0;
    for line in existing.split_inclusive('\n') {
        let text = line.trim_end();
        if text.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && text.starts_with("## ") {
            headings.push((offset, text));
        }
        offset += line.len();
    }
    let Some(start) = headings.iter().position(|(_, text)| *text == SECTION) else {
        return format!("{}\n\n{section}\n", existing.trim_end());
    };
    let from = headings[start].0;
    match headings.get(start + 1) {
        Some((to, _)) => format!("{}{section}\n\n{}", &existing[..from], &existing[*to..]),
        None => format!("{}{section}\n", &existing[..from]),
    }
}

/// The smoke test's check of [`splice_section`] (a bench has no unit tests).
fn check_section_splice() {
    let section = format!("{SECTION}\n\nnew figures\n");
    assert_eq!(
        splice_section(None, &section),
        format!("{REPORT_HEADER}\n{SECTION}\n\nnew figures\n")
    );
    let other = "## Chat turn\n\n```sh\n## not a heading\n```\n\nits figures\n";
    let before = format!("# Benchmarks\n\nintro\n\n{SECTION}\n\nold\n\n### Sub\n\nold\n\n{other}");
    assert_eq!(
        splice_section(Some(&before), &section),
        format!("# Benchmarks\n\nintro\n\n{SECTION}\n\nnew figures\n\n{other}")
    );
    let before = format!("# Benchmarks\n\n{other}\n{SECTION}\n\nold\n");
    assert_eq!(
        splice_section(Some(&before), &section),
        format!("# Benchmarks\n\n{other}\n{SECTION}\n\nnew figures\n")
    );
    assert_eq!(
        splice_section(Some(&format!("# Benchmarks\n\n{other}")), &section),
        format!(
            "# Benchmarks\n\n{}\n\n{SECTION}\n\nnew figures\n",
            other.trim_end()
        )
    );
}

fn render_section(results: &[SizeResult], server_version: &str) -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = chrono::Utc::now().format("%Y-%m-%d");
    let query_count = results.first().map_or(0, |r| r.quality.queries);
    let queries = fmt_count(query_count);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{SECTION}\n\n\
         Written by `benches/retrieval.rs`; reproduce (and rewrite this section) with\n\n\
         ```sh\ncargo bench --bench retrieval\n```\n\n\
         It needs PostgreSQL (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432`);\n\
         it creates the database `{DATABASE}` and drops it at the end.\n\n\
         - Run: {date} (UTC), release build.\n\
         - Machine: {cpu}, {cpus} logical CPUs, **shared and noisy**; PostgreSQL {server_version}\n  \
           on the same machine over loopback TCP, default settings. Tokio runtime of 2 workers.\n",
        cpu = cpu_model(),
    );
    let _ = writeln!(
        out,
        "### What is measured\n\n\
         - **Corpus**: `knowledge::synthetic` with its defaults (seed `0x5eed`): chunks of\n  \
           60–120 Zipf-distributed words from a 4,000-word vocabulary, {CHUNKS_PER_DOCUMENT} chunks per document\n  \
           sharing a topic, embedded by `OfflineEmbedder` ({DEFAULT_DIMENSIONS} dimensions). Each size is one\n  \
           namespace (its own tenant and agent) holding a prefix of the same corpus, stored\n  \
           through `create_document` and `store_chunks`, one transaction per document.\n\
         - **Queries**: {queries} per size from `SyntheticCorpus::queries` (seed {QUERY_SEED}): 3–8 words\n  \
           drawn from one chunk, the query's *source chunk*. The first 200 (100 at 100k) are\n  \
           the previous run's queries, on the same corpus.\n\
         - **Path**: what a chat turn does: `rag_retriever::snapshot` (the namespace is resident\n  \
           at the turn's version: a registry lookup, no actor message, no database call) then\n  \
           `rag_retriever::search` with `OfflineEmbedder`, limit {LIMIT}: embed the question, int8\n  \
           dense top-{CANDIDATES} reranked in f32, BM25 top-{CANDIDATES} over the question's rarest terms,\n  \
           reciprocal-rank fusion, the {LIMIT} passages copied out (past 20,000 chunks the search\n  \
           runs on the blocking pool). One caller on a runtime worker, one query at a time,\n  \
           after a warm-up pass; the process's Prometheus recorder installed, as in the server.\n\
         - **p50 / p99**: nearest-rank percentiles over the timed pass (p99 is the\n  \
           {nth} slowest of {queries}). **Criterion median**: criterion's median for\n  \
           `{GROUP}/<chunks>` (flat sampling, 50 samples, cycling through the queries).\n\
         - **Quality**, against exact search: `DenseIndex::top_k`, exhaustive f32 cosine over\n  \
           the same vectors. **recall@10**: mean |top 10 ∩ exact dense top 10| / 10, for the\n  \
           hybrid result and for the snapshot's int8 dense ranking alone. **Source hit@10**:\n  \
           share of queries whose source chunk is in the top 10: hybrid, the snapshot's dense\n  \
           ranking alone (`search(Some(v), \"\", …)`), exact dense, and lexical alone\n  \
           (`search(None, text, …)`).\n",
        nth = ordinal(query_count - percentile_rank(query_count, 0.99) + 1),
    );

    let _ = writeln!(
        out,
        "### Results\n\n\
         Before: the previous run ({PREVIOUS_RUN}), where each query was an actor round trip with three\n\
         PostgreSQL calls (version check, full-text top-20, chunk fetch) beside an exact f32 dense scan.\n\n\
         | chunks | p50 | p99 | criterion median | p50 before | p99 before | criterion before | p99 ×faster |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in results {
        let before = previous(r.size);
        let show = |d: Option<Duration>| d.map_or("n/a".to_owned(), fmt_duration);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            fmt_count(r.size),
            fmt_duration(r.p50),
            fmt_duration(r.p99),
            show(r.criterion_median),
            show(before.map(|p| p.p50)),
            show(before.map(|p| p.p99)),
            show(before.map(|p| p.criterion_median)),
            before.map_or("n/a".to_owned(), |p| format!("×{:.0}", times(p.p99, r.p99))),
        );
    }
    let lookups: usize = results.iter().map(|r| r.warm_lookups).sum();
    let misses: u64 = results.iter().map(|r| r.warm_misses).sum();
    let loads: u64 = results.iter().map(|r| r.warm_loads).sum();
    let _ = writeln!(
        out,
        "\nIn the timed passes, {} of {} snapshot lookups were resident hits and the actors made {} loads\n\
         (the process's own `agentry_cache_lookups_total` and `agentry_retriever_loads_total`).\n",
        fmt_count(lookups - misses as usize),
        fmt_count(lookups),
        loads,
    );

    let _ = writeln!(
        out,
        "### Quality\n\n\
         Over all {queries} queries:\n\n\
         | chunks | recall@10: hybrid vs exact dense | int8 dense vs exact | source hit@10: hybrid | dense (int8) | exact dense | lexical |\n\
         |---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in results {
        let q = &r.quality;
        let _ = writeln!(
            out,
            "| {} | {:.3} | {:.3} | {} | {} | {} | {} |",
            fmt_count(r.size),
            q.recall(),
            q.dense_recall(),
            percent(q.hybrid_hits, q.queries),
            percent(q.dense_hits, q.queries),
            percent(q.exact_hits, q.queries),
            percent(q.lexical_hits, q.queries),
        );
    }
    let _ = writeln!(
        out,
        "\nOn the previous run's queries, beside that run's figures (its dense ranking was the\n\
         exact one; its lexical ranking was PostgreSQL's full-text search):\n\n\
         | chunks | queries | recall@10 | before | source hit@10: hybrid | before | exact dense | before | lexical | before (full-text) |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in results {
        let (q, Some(before)) = (&r.previous_set, previous(r.size)) else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} | {:.3} | {} | {}% | {} | {}% | {} | {}% |",
            fmt_count(r.size),
            q.queries,
            q.recall(),
            before.recall,
            percent(q.hybrid_hits, q.queries),
            before.hybrid_hit,
            percent(q.exact_hits, q.queries),
            before.dense_hit,
            percent(q.lexical_hits, q.queries),
            before.full_text_hit,
        );
    }

    let _ = writeln!(
        out,
        "\n### Where the time goes\n\n\
         Medians per step over the same queries, each step timed in a pass of its own over all\n\
         of them (so one step's data does not evict another's from the caches) on the resident\n\
         snapshot: embedding the question (through the `Embedder` trait, as the path does),\n\
         `NamespaceSnapshot::search` with the vector only (dense), with the text only\n\
         (lexical), and with both (full: both rankings, fusion, copying the passages out).\n\
         *Path overhead* is the path's p50 less embed and full search: the resident lookup,\n\
         metrics, and past 20,000 chunks the hop to the blocking pool. The exact f32 scan\n\
         (`DenseIndex::top_k`, top-{CANDIDATES}) is not on the path; it shows what the int8 index saves.\n\n\
         | chunks | embed query | dense only | lexical only | full search | path overhead | exact f32 dense (reference) |\n\
         |---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in results {
        let s = &r.split;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            fmt_count(r.size),
            fmt_duration(s.embed),
            fmt_duration(s.dense),
            fmt_duration(s.lexical),
            fmt_duration(s.full),
            match path_overhead(r) {
                Duration::ZERO => "≈ 0 (noise)".to_owned(),
                overhead => fmt_duration(overhead),
            },
            fmt_duration(s.exact_dense),
        );
    }

    let _ = writeln!(
        out,
        "\n### Parallel callers\n\n\
         Retrievals of one namespace from one caller, then from two at once (tokio tasks on the\n\
         2-worker runtime, each its own queries), {PARALLEL_RUNS} alternating runs of each; queries per\n\
         second over all runs. Searches run on the callers' own threads, not in the actor,\n\
         so two callers should approach twice the throughput of one on 2 CPUs.\n\n\
         | chunks | 1 caller | 2 callers | ratio |\n\
         |---:|---:|---:|---:|"
    );
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {:.0} q/s | {:.0} q/s | ×{:.2} |",
            fmt_count(r.size),
            r.parallel.one_qps,
            r.parallel.two_qps,
            r.parallel.ratio(),
        );
    }

    let _ = writeln!(
        out,
        "\n### Loading\n\n\
         *Stored*: the {LOADERS} connections storing the namespace's documents, one transaction per\n\
         document (`create_document`, `store_chunks`), with `ANALYZE kb_documents` every two\n\
         seconds standing in for autovacuum in this fresh database (without it each pooled\n\
         connection keeps a chunk foreign-key plan made while `kb_documents` was nearly empty).\n\
         *Cold load*: `RagMsg::Snapshot` to the namespace's actor with nothing resident, i.e.\n\
         `PgKnowledgeStore::changes` (version, documents and all chunks in one repeatable-read\n\
         transaction; *store read*) then `NamespaceSnapshot::apply` to an empty snapshot and\n\
         registration; before, the cold first query loaded the vectors. *Heap*: `heap_bytes()`\n\
         of the snapshot; *Plain data*: the chunks' texts and f32 vectors alone.\n\
         *RSS growth*: `VmRSS` after the cold load less before, including allocator memory\n\
         not returned from the load's transient buffers. *Incremental*: {rounds} rounds of one new\n\
         document of {CHUNKS_PER_DOCUMENT} chunks stored and one old document deleted (two version bumps), then a\n\
         turn asking for the new version: the actor reads only the changed documents' chunks\n\
         (with every document's version) and applies the change to the resident snapshot; median\n\
         and slowest round, the median's store read, and the heap after the last round.\n\n\
         | chunks | documents | stored | cold load | store read | before: cold first query | heap | heap per chunk | plain data | RSS growth |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        rounds = results
            .iter()
            .find_map(|r| r.update.as_ref().map(|u| u.rounds))
            .unwrap_or(0),
    );
    let show = |d: Option<Duration>| d.map_or("n/a".to_owned(), fmt_duration);
    for r in results {
        let c = &r.cold;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} B | {} | {} |",
            fmt_count(r.size),
            fmt_count(r.documents),
            fmt_duration(r.store_time),
            fmt_duration(c.total),
            fmt_duration(c.store),
            show(previous(r.size).map(|p| p.cold_first_query)),
            fmt_bytes(c.heap_bytes),
            fmt_count(c.heap_bytes / r.size.max(1)),
            fmt_bytes(c.raw_bytes),
            c.rss_growth.map_or("n/a".to_owned(), fmt_bytes),
        );
    }
    let _ = writeln!(
        out,
        "\n| chunks | incremental load | store read | slowest round | heap after |\n\
         |---:|---:|---:|---:|---:|"
    );
    for r in results {
        let Some(update) = &r.update else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            fmt_count(r.size),
            fmt_duration(update.total),
            fmt_duration(update.store),
            fmt_duration(update.slowest),
            fmt_bytes(update.heap_bytes),
        );
    }

    let _ = writeln!(out, "\n### Goals\n");
    let _ = writeln!(out, "| goal | figure | met |\n|---|---:|:---:|");
    for (goal, figure, met) in goals(results) {
        let _ = writeln!(
            out,
            "| {goal} | {figure} | {} |",
            if met { "yes" } else { "**no**" }
        );
    }

    let _ = writeln!(out, "\n### Reading\n\n{}", reading(results));
    out
}

fn ordinal(n: usize) -> String {
    match n {
        1 => "slowest".to_owned(),
        2 => "2nd".to_owned(),
        3 => "3rd".to_owned(),
        n => format!("{n}th"),
    }
}

/// The nearest rank `percentile` picks among `n` values.
fn percentile_rank(n: usize, p: f64) -> usize {
    ((p * n as f64).ceil() as usize).clamp(1, n.max(1))
}

/// The path's p50 less the steps it is made of (0 when noise makes it negative).
fn path_overhead(r: &SizeResult) -> Duration {
    r.p50.saturating_sub(r.split.embed + r.split.full)
}

/// Each goal the report states: its wording, the figure, whether it is met.
/// Source hit@10 is compared on the previous run's queries, rounded as that
/// run's report rounded it.
fn goals(results: &[SizeResult]) -> Vec<(String, String, bool)> {
    let mut goals = Vec::new();
    for (size, goal) in P99_GOALS {
        if let Some(r) = results.iter().find(|r| r.size == size) {
            goals.push((
                format!("p99 ≤ {} at {} chunks", fmt_duration(goal), fmt_count(size)),
                fmt_duration(r.p99),
                r.p99 <= goal,
            ));
        }
    }
    for r in results {
        let Some(before) = previous(r.size) else {
            continue;
        };
        let q = &r.previous_set;
        if q.queries == 0 {
            continue;
        }
        let hit = share(q.hybrid_hits, q.queries).round();
        goals.push((
            format!(
                "hybrid source hit@10 ≥ {}% at {} chunks (previous queries)",
                before.hybrid_hit,
                fmt_count(r.size)
            ),
            format!("{hit:.0}%"),
            hit >= f64::from(before.hybrid_hit),
        ));
    }
    goals
}

/// A paragraph on the figures, from the figures.
fn reading(results: &[SizeResult]) -> String {
    let (Some(first), Some(last)) = (results.first(), results.last()) else {
        return "No sizes were measured.".to_owned();
    };
    let mut text = String::new();
    let _ = write!(
        text,
        "From {} to {} chunks the warm retrieval's median goes from {} to {} and its p99 from {} to {}.",
        fmt_count(first.size),
        fmt_count(last.size),
        fmt_duration(first.p50),
        fmt_duration(last.p50),
        fmt_duration(first.p99),
        fmt_duration(last.p99),
    );
    if let Some(before) = previous(last.size) {
        let _ = write!(
            text,
            " At {} chunks that is {:.0} times faster at the median and {:.0} times at p99 than the \
             PostgreSQL path ({} and {}).",
            fmt_count(last.size),
            times(before.p50, last.p50),
            times(before.p99, last.p99),
            fmt_duration(before.p50),
            fmt_duration(before.p99),
        );
    }
    let goals = goals(results);
    let missed: Vec<&(String, String, bool)> = goals.iter().filter(|g| !g.2).collect();
    if goals.is_empty() {
        // Sizes without goals: nothing to say.
    } else if missed.is_empty() {
        let _ = write!(text, " All {} goals are met.", goals.len());
    } else {
        let list: Vec<String> = missed
            .iter()
            .map(|(goal, figure, _)| format!("{goal} (measured {figure})"))
            .collect();
        let _ = write!(
            text,
            " {} of {} goals are met; missed: {}.",
            goals.len() - missed.len(),
            goals.len(),
            list.join("; ")
        );
    }

    let s = &last.split;
    let mut steps = [
        ("the dense ranking", s.dense),
        ("the lexical ranking", s.lexical),
        ("embedding the question", s.embed),
        ("the path's overhead", path_overhead(last)),
    ];
    steps.sort_by_key(|step| std::cmp::Reverse(step.1));
    let _ = write!(
        text,
        " At {} chunks {} costs most ({}), then {} ({}) and {} ({}); the full search, both \
         rankings with fusion, takes {}.",
        fmt_count(last.size),
        steps[0].0,
        fmt_duration(steps[0].1),
        steps[1].0,
        fmt_duration(steps[1].1),
        steps[2].0,
        fmt_duration(steps[2].1),
        fmt_duration(s.full),
    );
    let _ = write!(
        text,
        " The int8 dense scan with its f32 rerank takes {} against {} for the exact f32 scan \
         (×{:.1}), and its top 10 shares {:.1}% of the exact top 10{}.",
        fmt_duration(s.dense),
        fmt_duration(s.exact_dense),
        times(s.exact_dense, s.dense),
        100.0 * last.quality.dense_recall(),
        if results.len() > 1 {
            let low = results
                .iter()
                .map(|r| r.quality.dense_recall())
                .fold(f64::INFINITY, f64::min);
            format!(" (at least {:.1}% at every size)", 100.0 * low)
        } else {
            String::new()
        },
    );

    let quality: Vec<String> = results
        .iter()
        .filter_map(|r| {
            let before = previous(r.size)?;
            (r.previous_set.queries > 0).then(|| {
                format!(
                    "{} at {} chunks (before {}%)",
                    percent(r.previous_set.hybrid_hits, r.previous_set.queries),
                    fmt_count(r.size),
                    before.hybrid_hit
                )
            })
        })
        .collect();
    if !quality.is_empty() {
        let _ = write!(
            text,
            " On the previous run's queries the hybrid finds the source chunk in {}.",
            quality.join(", ")
        );
    }
    let q = &last.quality;
    let hybrid = share(q.hybrid_hits, q.queries);
    let dense = share(q.dense_hits, q.queries);
    let effect = if hybrid > dense + 2.0 {
        "so fusing in the lexical ranking finds source chunks that dense alone misses"
    } else if hybrid + 2.0 < dense {
        "so on this corpus fusing in the lexical ranking costs some source chunks that dense alone finds"
    } else {
        "so on this corpus fusion neither finds nor loses many source chunks compared with dense alone"
    };
    let _ = write!(
        text,
        " Over all queries at {} chunks: hybrid {}, dense alone {} (exact f32 {}), lexical alone {}, {effect}",
        fmt_count(last.size),
        percent(q.hybrid_hits, q.queries),
        percent(q.dense_hits, q.queries),
        percent(q.exact_hits, q.queries),
        percent(q.lexical_hits, q.queries),
    );
    if let Some(before) = previous(last.size) {
        let lexical = share(q.lexical_hits, q.queries);
        let compared = if lexical > f64::from(before.full_text_hit) + 2.0 {
            "more"
        } else if lexical + 2.0 < f64::from(before.full_text_hit) {
            "fewer"
        } else {
            "about as many"
        };
        let _ = write!(
            text,
            "; the in-memory BM25 alone finds {compared} than PostgreSQL's full-text ranking did ({}%)",
            before.full_text_hit
        );
    }
    text.push('.');

    let ratios: Vec<String> = results
        .iter()
        .map(|r| format!("×{:.2}", r.parallel.ratio()))
        .collect();
    let lowest = results
        .iter()
        .min_by(|a, b| a.parallel.ratio().total_cmp(&b.parallel.ratio()))
        .map(|r| (r.size, r.parallel.ratio()));
    let _ = write!(
        text,
        " Two concurrent callers get {} the throughput of one (by size)",
        ratios.join(" / ")
    );
    let messages = results.iter().map(|r| r.warm_misses).sum::<u64>();
    match lowest {
        Some((_, ratio)) if ratio >= 1.6 => {
            let _ = write!(
                text,
                ", at or near the ×2 that 2 CPUs allow: turns search in parallel, not one \
                 after another behind the namespace's mailbox."
            );
        }
        Some((size, ratio)) => {
            let _ = write!(
                text,
                "; at {} chunks only ×{ratio:.2}. {}",
                fmt_count(size),
                if messages == 0 {
                    "The mailbox cannot be the cause, as the warm lookups sent the actor no \
                     message: the two searches compete for the 2 CPUs and their memory \
                     (with each other and with the shared machine's other load)."
                } else {
                    "Some warm lookups went to the actor (see above), whose mailbox serializes them."
                }
            );
        }
        None => {}
    }

    let c = &last.cold;
    let _ = write!(
        text,
        " Loading {} chunks cold takes {} ({:.0}% of it reading the store){}, and the snapshot \
         holds {} on the heap, {} bytes a chunk, {:.1} times the chunks' texts and f32 vectors \
         as plain data.",
        fmt_count(last.size),
        fmt_duration(c.total),
        100.0 * times(c.store, c.total),
        previous(last.size).map_or(String::new(), |before| format!(
            ", against {} for the previous cold first query, which loaded only the vectors",
            fmt_duration(before.cold_first_query)
        )),
        fmt_bytes(c.heap_bytes),
        fmt_count(c.heap_bytes / last.size.max(1)),
        c.heap_bytes as f64 / c.raw_bytes.max(1) as f64,
    );
    if let Some(update) = &last.update {
        let _ = write!(
            text,
            " An incremental load after one document in and one out takes {} ({:.1}% of the cold load; \
             {:.0}% of it reading the store, which still lists every document's version).",
            fmt_duration(update.total),
            100.0 * times(update.total, c.total),
            100.0 * times(update.store, update.total),
        );
    }
    let _ = write!(
        text,
        " Synthetic words and offline hash embeddings make the quality figures a regression \
         check rather than a forecast for real documents; the latencies carry over."
    );
    text
}
