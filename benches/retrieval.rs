//! Retrieval benchmark of the real hybrid path, written to `docs/BENCHMARKS.md`.
//!
//! For 1k, 10k and 100k chunks, each in its own namespace (one tenant's
//! agent), a deterministic synthetic corpus is embedded with the offline
//! embedder and stored through the real store code (`create_document` and
//! `store_chunks`, one transaction per document) in a dedicated PostgreSQL
//! database, `agentry_bench_retrieval`, created at the start and dropped at the
//! end. Queries then go through a real `RagRetriever` actor backed by the real
//! `PgKnowledgeStore`: namespace version check, in-memory exhaustive dense
//! top-20, PostgreSQL full-text top-20, reciprocal-rank fusion and the fetch
//! of the ten chunks' texts.
//!
//! Per size, after a cold first query (which loads the namespace's vectors):
//! - a timed pass over a fixed set of synthetic queries gives p50 and p99,
//!   and, against exhaustive dense search over the same vectors, recall@10;
//!   a thin wrapper around the store times its calls within that pass, and
//!   the in-memory steps are timed on their own, to show where the time goes;
//! - criterion measures the same actor round trip (`hybrid_retrieval/<size>`),
//!   cycling through the queries, and its median goes into the report.
//!
//! `cargo bench --bench retrieval` runs it all and rewrites the report.
//! While developing, `RETRIEVAL_BENCH_SIZES=1000,10000` and
//! `RETRIEVAL_BENCH_QUERIES=50` make small runs; those print the report
//! instead of writing it; `RETRIEVAL_BENCH_KEEP_DATABASE=1` keeps the database
//! for inspection. Run as a test (`cargo test --all-targets`), it only checks
//! the path on 1k chunks. DATABASE_URL, if set, names the PostgreSQL server
//! (its database name is replaced).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use agentry::accounts;
use agentry::configuration::Settings;
use agentry::db::knowledge::{self as kb, NewChunk, PgKnowledgeStore};
use agentry::db::{agents, bootstrap, Store};
use agentry::domain::AgentProfile;
use agentry_actors::knowledge::synthetic::{
    SyntheticChunk, SyntheticConfig, SyntheticCorpus, SyntheticQuery,
};
use agentry_actors::knowledge::{
    reciprocal_rank_fusion, DenseIndex, OfflineEmbedder, DEFAULT_DIMENSIONS, OFFLINE_EMBEDDER_NAME,
    RRF_K,
};
use agentry_actors::ports::{KnowledgeChunk, KnowledgeStore, Namespace, StoreError, StoredVector};
use agentry_actors::rag_retriever::{RagArgs, RagMsg, RagRetriever};
use agentry_actors::{AgentId, Secret};
use async_trait::async_trait;
use criterion::{BenchmarkId, Criterion, SamplingMode};
use ractor::{Actor, ActorRef};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::oneshot;
use uuid::Uuid;

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
/// Queries in the timed pass of each size: fewer at 100k, where the full-text
/// half makes each one cost about a second of PostgreSQL time.
fn queries_for(size: usize) -> usize {
    if size >= 100_000 {
        100
    } else {
        200
    }
}
/// Queries whose full-text matches are counted (the count costs about as much as the ranking).
const MATCH_COUNT_QUERIES: usize = 20;
/// Connections loading documents at once.
const LOADERS: usize = 2;
const QUERY_SEED: u64 = 7;
/// Passages asked of the retriever, as the chat path asks for a handful.
const LIMIT: usize = 10;
/// Candidates each ranking contributes in the retriever (its private constant).
const CANDIDATES: usize = 20;
const DATABASE: &str = "agentry_bench_retrieval";
const GROUP: &str = "hybrid_retrieval";
const REPORT: &str = "docs/BENCHMARKS.md";

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
        (vec![1_000], Some(10))
    };
    let full_run = sizes == SIZES && queries_override.is_none();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = SystemTime::now();

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
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let clock = Instant::now();
    let corpus = SyntheticCorpus::generate(&SyntheticConfig {
        chunks: largest,
        ..SyntheticConfig::default()
    });
    let embedder = OfflineEmbedder::default();
    let vectors: Vec<Vec<f32>> = corpus
        .chunks
        .iter()
        .map(|chunk| embedder.embed_one(&chunk.text))
        .collect();
    eprintln!(
        "corpus: {largest} chunks generated and embedded in {:.1?}",
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
            "loaded {size} chunks in {} documents in {load_time:.1?}",
            loaded.documents
        );
        namespaces.push((size, loaded, load_time));
    }
    // What autovacuum does after a bulk load: statistics for the planner and
    // the GIN index's pending list merged, so plans and scans are steady-state.
    runtime.block_on(vacuum_analyze(&settings));

    let mut results = Vec::new();
    let mut retrievers = Vec::new();
    for (size, loaded, load_time) in namespaces {
        let sub = SyntheticCorpus {
            vocabulary: corpus.vocabulary.clone(),
            chunks: corpus.chunks[..size].to_vec(),
        };
        let queries = sub.queries(queries_override.unwrap_or(queries_for(size)), QUERY_SEED);
        let (result, actor) = runtime.block_on(measure(
            size,
            &loaded,
            load_time,
            &corpus.chunks[..size],
            &vectors[..size],
            &queries,
            &store,
        ));
        eprintln!(
            "{size}: p50 {} p99 {} recall@10 {:.3}",
            fmt_duration(result.p50),
            fmt_duration(result.p99),
            result.recall
        );
        results.push(result);
        retrievers.push((size, actor, queries));
    }

    let mut group = criterion.benchmark_group(GROUP);
    group
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (size, actor, queries) in &retrievers {
        // Criterion's minimum where a query takes about a second.
        group.sample_size(if *size >= 100_000 { 10 } else { 20 });
        let mut next = 0;
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let clock = Instant::now();
                    for _ in 0..iters {
                        let query = &queries[next % queries.len()].text;
                        next += 1;
                        black_box(retrieve(actor, query).await);
                    }
                    clock.elapsed()
                })
            })
        });
    }
    group.finish();
    criterion.final_summary();

    for result in &mut results {
        result.criterion_median = criterion_median(result.size, started);
    }
    let report = render_report(&results, &server_version);
    if full_run {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(REPORT);
        std::fs::create_dir_all(path.parent().expect("report directory")).expect("docs/");
        std::fs::write(&path, &report).expect("report written");
        eprintln!("wrote {}", path.display());
    } else if benchmarking {
        println!("{report}");
        eprintln!("(custom sizes or query count: {REPORT} left unchanged)");
    }

    runtime.block_on(async {
        for (_, actor, _) in retrievers {
            actor.stop(None);
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
/// of its time in fsync, and loading is not what is measured (reads are the same).
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
    documents: usize,
    /// The stored id of each synthetic chunk, by index (the store assigns ids).
    chunk_ids: Vec<Uuid>,
}

/// A tenant and agent of their own, then one transaction per synthetic
/// document: `create_document` then `store_chunks` (which bumps the version),
/// from two connections at once.
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
    let agent = AgentId::from(agent.id);

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
                let group = &chunks[range.clone()];
                let content: Vec<&str> = group.iter().map(|c| c.text.as_str()).collect();
                let new_chunks: Vec<NewChunk> = group
                    .iter()
                    .zip(&vectors[range.clone()])
                    .enumerate()
                    .map(|(ordinal, (chunk, vector))| NewChunk {
                        ordinal: ordinal as i32,
                        heading: String::new(),
                        body: chunk.text.clone(),
                        embedding: vector.clone(),
                    })
                    .collect();
                let mut tx = store.tenant(tenant).await.expect("tenant tx");
                let document = kb::create_document(
                    &mut tx,
                    agent,
                    &format!("Synthetic document {number}"),
                    "text",
                    &content.join("\n\n"),
                )
                .await
                .expect("document created");
                kb::store_chunks(
                    &mut tx,
                    agent,
                    document.id,
                    &new_chunks,
                    OFFLINE_EMBEDDER_NAME,
                )
                .await
                .expect("chunks stored");
                tx.commit().await.expect("document committed");
                stored.push((number, document.id));
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
            .bind(agent.as_uuid())
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
        namespace: Namespace { tenant, agent },
        documents: groups.len(),
        chunk_ids,
    }
}

/// The real store, timing the calls the retriever makes and keeping each
/// full-text ranking, so that one pass gives latencies, the split and recall.
/// Its own cost (a clock read and a push under an uncontended lock) is
/// well below a microsecond.
struct TimedStore {
    inner: PgKnowledgeStore,
    log: Mutex<StoreLog>,
}

#[derive(Default)]
struct StoreLog {
    version: Vec<Duration>,
    lexical: Vec<Duration>,
    fetch: Vec<Duration>,
    rankings: Vec<Vec<Uuid>>,
}

#[async_trait]
impl KnowledgeStore for TimedStore {
    async fn namespace_version(&self, namespace: Namespace) -> Result<i64, StoreError> {
        let clock = Instant::now();
        let version = self.inner.namespace_version(namespace).await;
        self.log.lock().unwrap().version.push(clock.elapsed());
        version
    }

    async fn namespace_vectors(
        &self,
        namespace: Namespace,
    ) -> Result<Vec<StoredVector>, StoreError> {
        self.inner.namespace_vectors(namespace).await
    }

    async fn lexical_search(
        &self,
        namespace: Namespace,
        query: &str,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        let clock = Instant::now();
        let ranking = self.inner.lexical_search(namespace, query, limit).await;
        let elapsed = clock.elapsed();
        let mut log = self.log.lock().unwrap();
        log.lexical.push(elapsed);
        if let Ok(ids) = &ranking {
            log.rankings.push(ids.clone());
        }
        ranking
    }

    async fn chunks(
        &self,
        namespace: Namespace,
        ids: &[Uuid],
    ) -> Result<Vec<KnowledgeChunk>, StoreError> {
        let clock = Instant::now();
        let chunks = self.inner.chunks(namespace, ids).await;
        self.log.lock().unwrap().fetch.push(clock.elapsed());
        chunks
    }
}

async fn retrieve(actor: &ActorRef<RagMsg>, query: &str) -> Vec<Uuid> {
    let (reply, answer) = oneshot::channel();
    actor
        .cast(RagMsg::Retrieve {
            query: query.to_owned(),
            limit: LIMIT,
            reply,
        })
        .expect("retriever alive");
    answer
        .await
        .expect("retriever replied")
        .expect("retrieval succeeded")
        .into_iter()
        .map(|chunk| chunk.id)
        .collect()
}

struct SizeResult {
    size: usize,
    documents: usize,
    queries: usize,
    load_time: Duration,
    cold_first_query: Duration,
    p50: Duration,
    p99: Duration,
    criterion_median: Option<Duration>,
    recall: f64,
    hybrid_source_hits: usize,
    dense_source_hits: usize,
    lexical_source_hits: usize,
    /// Medians of the retriever's steps.
    split: Split,
    /// Median share of the namespace's chunks the OR-ed full-text query
    /// matches, over the first few queries.
    lexical_match_share: f64,
}

#[derive(Default)]
struct Split {
    version: Duration,
    embed: Duration,
    dense: Duration,
    lexical: Duration,
    fuse: Duration,
    fetch: Duration,
}

impl Split {
    fn sum(&self) -> Duration {
        self.version + self.embed + self.dense + self.lexical + self.fuse + self.fetch
    }
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    size: usize,
    loaded: &Loaded,
    load_time: Duration,
    chunks: &[SyntheticChunk],
    vectors: &[Vec<f32>],
    queries: &[SyntheticQuery],
    store: &Store,
) -> (SizeResult, ActorRef<RagMsg>) {
    let namespace = loaded.namespace;
    let knowledge = Arc::new(TimedStore {
        inner: PgKnowledgeStore::new(store.clone()),
        log: Mutex::default(),
    });
    let embedder = OfflineEmbedder::default();
    let (actor, _) = Actor::spawn(
        None,
        RagRetriever,
        RagArgs {
            namespace,
            knowledge: knowledge.clone(),
            embedder: Arc::new(embedder.clone()),
        },
    )
    .await
    .expect("retriever spawned");

    // Cold: the first query loads the namespace's vectors from PostgreSQL.
    let clock = Instant::now();
    retrieve(&actor, &queries[0].text).await;
    let cold_first_query = clock.elapsed();
    retrieve(&actor, &queries[1 % queries.len()].text).await;
    *knowledge.log.lock().unwrap() = StoreLog::default();

    // The timed pass: one round trip per query, through the actor.
    let mut latencies = Vec::with_capacity(queries.len());
    let mut hybrid = Vec::with_capacity(queries.len());
    for query in queries {
        let clock = Instant::now();
        let ids = retrieve(&actor, &query.text).await;
        latencies.push(clock.elapsed());
        hybrid.push(ids);
    }
    latencies.sort();
    let mut log = std::mem::take(&mut *knowledge.log.lock().unwrap());
    assert_eq!(log.rankings.len(), queries.len(), "one ranking per query");

    // Exhaustive dense search over the same vectors the retriever holds, and
    // the in-memory steps timed on their own.
    let mut index = DenseIndex::new(DEFAULT_DIMENSIONS).expect("dimensions");
    index.reserve(size);
    for (id, vector) in loaded.chunk_ids.iter().zip(vectors) {
        index.insert(*id, Uuid::nil(), vector).expect("vector fits");
    }
    let index_of: HashMap<Uuid, usize> = chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| (chunk.chunk_id, i))
        .collect();
    let (mut embed, mut dense_times, mut fuse) = (Vec::new(), Vec::new(), Vec::new());
    let mut recall_sum = 0.0;
    let (mut hybrid_source_hits, mut dense_source_hits, mut lexical_source_hits) = (0, 0, 0);
    for ((query, hybrid_ids), lexical) in queries.iter().zip(&hybrid).zip(&log.rankings) {
        let source = loaded.chunk_ids[index_of[&query.source_chunk]];

        let clock = Instant::now();
        let vector = embedder.embed_one(&query.text);
        embed.push(clock.elapsed());

        let clock = Instant::now();
        let dense: Vec<Uuid> = index
            .top_k(&vector, CANDIDATES)
            .expect("query vector fits")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        dense_times.push(clock.elapsed());

        let clock = Instant::now();
        let lists = [dense.clone(), lexical.clone()];
        black_box(reciprocal_rank_fusion(&lists, RRF_K));
        fuse.push(clock.elapsed());

        let dense_top: HashSet<Uuid> = dense.iter().take(LIMIT).copied().collect();
        let overlap = hybrid_ids
            .iter()
            .filter(|id| dense_top.contains(id))
            .count();
        recall_sum += overlap as f64 / LIMIT as f64;
        hybrid_source_hits += usize::from(hybrid_ids.contains(&source));
        dense_source_hits += usize::from(dense_top.contains(&source));
        lexical_source_hits += usize::from(lexical.iter().take(LIMIT).any(|id| *id == source));
    }
    let split = Split {
        version: median(&mut log.version),
        embed: median(&mut embed),
        dense: median(&mut dense_times),
        lexical: median(&mut log.lexical),
        fuse: median(&mut fuse),
        fetch: median(&mut log.fetch),
    };

    // Counting a query's matches costs about as much as ranking them: a few queries suffice.
    let mut match_shares = Vec::new();
    for query in queries.iter().take(MATCH_COUNT_QUERIES) {
        let matched = lexical_matches(store, namespace, &query.text).await;
        match_shares.push(matched as f64 / size as f64);
    }
    match_shares.sort_by(f64::total_cmp);

    let result = SizeResult {
        size,
        documents: loaded.documents,
        queries: queries.len(),
        load_time,
        cold_first_query,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        criterion_median: None,
        recall: recall_sum / queries.len() as f64,
        hybrid_source_hits,
        dense_source_hits,
        lexical_source_hits,
        split,
        lexical_match_share: match_shares
            .get(match_shares.len() / 2)
            .copied()
            .unwrap_or(0.0),
    };
    (result, actor)
}

/// How many of the namespace's chunks the retriever's full-text query matches
/// (the rows PostgreSQL ranks): the same term selection as `lexical_search`.
async fn lexical_matches(store: &Store, namespace: Namespace, query: &str) -> i64 {
    let mut tx = store.tenant(namespace.tenant).await.expect("tenant tx");
    let Some(terms) = kb::full_text_terms(&mut tx, namespace, query)
        .await
        .expect("full-text terms")
    else {
        return 0;
    };
    sqlx::query_scalar(
        "SELECT count(*) FROM kb_chunks c
         WHERE c.tenant_id = $1 AND c.namespace = $2 AND c.search @@ $3::tsquery",
    )
    .bind(namespace.tenant.as_uuid())
    .bind(namespace.to_string())
    .bind(terms)
    .fetch_one(tx.conn())
    .await
    .expect("match count")
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
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn percent(part: usize, whole: usize) -> String {
    format!("{:.0}%", 100.0 * part as f64 / whole.max(1) as f64)
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

fn render_report(results: &[SizeResult], server_version: &str) -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = chrono::Utc::now().format("%Y-%m-%d");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Benchmarks\n\n\
         All figures below come from one run of one benchmark on a shared machine. That\n\
         machine is noisy (other builds and tests run beside the benchmark), so absolute\n\
         figures can move by tens of percent between runs: compare figures within a run,\n\
         and prefer the ratios.\n\n\
         ## Retrieval\n\n\
         Written by `benches/retrieval.rs`; reproduce (and rewrite this file) with\n\n\
         ```sh\ncargo bench --bench retrieval\n```\n\n\
         It needs PostgreSQL (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432`);\n\
         it creates the database `{DATABASE}` and drops it at the end.\n\n\
         - Run: {date} (UTC), release build.\n\
         - Machine: {cpu}, {cpus} logical CPUs, **shared and noisy**; PostgreSQL {server_version}\n  \
           on the same machine over loopback TCP, default settings.\n",
        cpu = cpu_model(),
    );
    let _ = writeln!(
        out,
        "### What is measured\n\n\
         - **Corpus**: `knowledge::synthetic` with its defaults (seed `0x5eed`): chunks of\n  \
           60–120 Zipf-distributed words from a 4,000-word vocabulary, 8 chunks per document\n  \
           sharing a topic, embedded by `OfflineEmbedder` (384 dimensions). Each size is one\n  \
           namespace (its own tenant and agent) holding a prefix of the same corpus, stored\n  \
           through `create_document` and `store_chunks`, one transaction per document. All\n  \
           namespaces share the tables, as tenants do; `VACUUM ANALYZE` follows the load.\n\
         - **Queries**: a fixed set per size from `SyntheticCorpus::queries` (seed {QUERY_SEED}):\n  \
           3–8 words drawn from one chunk, the query's *source chunk*.\n\
         - **Path**: each query is sent to a real `RagRetriever` actor over the real\n  \
           `PgKnowledgeStore`, limit {LIMIT}, one at a time, warm (a first query has loaded the\n  \
           namespace's vectors into memory): namespace version check, exhaustive dense top-{CANDIDATES}\n  \
           in memory, PostgreSQL full-text top-{CANDIDATES}, reciprocal-rank fusion, fetch of the\n  \
           {LIMIT} chunks' texts. The latency is the actor round trip.\n\
         - **p50 / p99**: nearest-rank percentiles over one timed pass of the queries (so p99\n  \
           is the 2nd slowest of 200, or the slowest of 100). **Criterion median**: criterion's\n  \
           own median for `{GROUP}/<chunks>` (flat sampling, 20 samples, 10 at 100k, cycling\n  \
           through the same queries).\n\
         - **recall@10**: mean of |hybrid top 10 ∩ exhaustive dense top 10| / 10, exhaustive\n  \
           dense being `DenseIndex::top_k` over all the namespace's chunks. `DenseIndex` is\n  \
           itself exhaustive (exact cosine), so this is not an approximation loss: it\n  \
           measures how far fusion with full-text moves the top 10 away from pure dense\n  \
           ranking. **Source hit@10**: share of queries whose source chunk is in the top 10\n  \
           of the hybrid retriever, of exhaustive dense alone, and of full-text alone (the\n  \
           first 10 of the ranking the retriever got from PostgreSQL).\n"
    );

    let _ = writeln!(out, "### Results\n");
    let _ = writeln!(
        out,
        "| chunks | queries | p50 | p99 | criterion median | recall@10 vs dense | source hit@10: hybrid | dense | full-text |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.3} | {} | {} | {} |",
            fmt_count(r.size),
            r.queries,
            fmt_duration(r.p50),
            fmt_duration(r.p99),
            r.criterion_median.map_or("n/a".to_owned(), fmt_duration),
            r.recall,
            percent(r.hybrid_source_hits, r.queries),
            percent(r.dense_source_hits, r.queries),
            percent(r.lexical_source_hits, r.queries),
        );
    }

    let _ = writeln!(
        out,
        "\n### Where the time goes\n\n\
         Medians per step over the same timed pass. The store calls (version check,\n\
         full-text ranking, chunk fetch; each its own transaction, as the retriever does\n\
         them) are timed inside the actor's path by a thin wrapper around\n\
         `PgKnowledgeStore`; the in-memory steps (embedding the query, the dense scan,\n\
         fusion) are timed on their own over the same vectors afterwards. *Matched* is the\n\
         median share of the namespace's chunks that the full-text query matches\n\
         (first {MATCH_COUNT_QUERIES} queries), i.e. the rows PostgreSQL ranks to keep its top {CANDIDATES}.\n\n\
         | chunks | version check | embed query | dense top-{CANDIDATES} | full-text top-{CANDIDATES} | fusion | fetch {LIMIT} chunks | sum | matched |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in results {
        let s = &r.split;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0}% |",
            fmt_count(r.size),
            fmt_duration(s.version),
            fmt_duration(s.embed),
            fmt_duration(s.dense),
            fmt_duration(s.lexical),
            fmt_duration(s.fuse),
            fmt_duration(s.fetch),
            fmt_duration(s.sum()),
            100.0 * r.lexical_match_share,
        );
    }

    let _ = writeln!(
        out,
        "\n### Loading\n\n\
         Documents are loaded from {LOADERS} connections at once, one transaction per document\n\
         (`create_document`, `store_chunks`). Meanwhile `ANALYZE kb_documents` runs every two\n\
         seconds, standing in for autovacuum in this fresh database: without statistics, each\n\
         pooled connection keeps the plan it made for the chunks' foreign-key check while\n\
         `kb_documents` was nearly empty, a scan of `kb_documents_agent_idx` over all the\n\
         tenant's documents, so every chunk insert costs more than the one before (when this\n\
         benchmark was written, loading 100k chunks took four times as long). Production\n\
         databases are analyzed by autovacuum as tables grow, but a first bulk ingest into a\n\
         new database can meet the same plan until it is. The cold first query loads the\n\
         namespace's vectors into the retriever.\n\n\
         | chunks | documents | load | cold first query |\n\
         |---:|---:|---:|---:|"
    );
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            fmt_count(r.size),
            fmt_count(r.documents),
            fmt_duration(r.load_time),
            fmt_duration(r.cold_first_query),
        );
    }

    let _ = writeln!(out, "\n### Reading\n\n{}", reading(results));
    out
}

/// A paragraph on the figures, from the figures.
fn reading(results: &[SizeResult]) -> String {
    let (Some(first), Some(last)) = (results.first(), results.last()) else {
        return "No sizes were measured.".to_owned();
    };
    let mut text = String::new();
    let _ = write!(
        text,
        "From {} to {} chunks the median warm query goes from {} to {} (×{:.1}) and p99 from {} to {}.",
        fmt_count(first.size),
        fmt_count(last.size),
        fmt_duration(first.p50),
        fmt_duration(last.p50),
        last.p50.as_secs_f64() / first.p50.as_secs_f64().max(1e-9),
        fmt_duration(first.p99),
        fmt_duration(last.p99),
    );
    let s = &last.split;
    let sum = s.sum().as_secs_f64();
    let share = |d: Duration| {
        let share = 100.0 * d.as_secs_f64() / sum.max(1e-12);
        if share < 1.0 {
            "under 1%".to_owned()
        } else {
            format!("{share:.0}%")
        }
    };
    let mut steps = [
        ("the PostgreSQL full-text ranking", s.lexical),
        ("the in-memory dense scan", s.dense),
        ("the chunk fetch", s.fetch),
        ("the version check", s.version),
        ("embedding the query", s.embed),
    ];
    steps.sort_by_key(|step| std::cmp::Reverse(step.1));
    let _ = write!(
        text,
        " At {} chunks {} dominates ({}, {} of the summed steps), then {} ({}, {}) and {} ({}, {}); \
         fusion is negligible.",
        fmt_count(last.size),
        steps[0].0,
        fmt_duration(steps[0].1),
        share(steps[0].1),
        steps[1].0,
        fmt_duration(steps[1].1),
        share(steps[1].1),
        steps[2].0,
        fmt_duration(steps[2].1),
        share(steps[2].1),
    );
    let _ = write!(
        text,
        " The full-text query ORs only the question's rarest words, chosen from per-namespace \
         lexeme statistics so that together they occur in at most a quarter of the namespace \
         and at most 1,500 chunks; it matches about {:.0}% of the namespace's chunks, which \
         PostgreSQL finds through a GIN index over (namespace, search) and ranks with \
         `ts_rank_cd` before keeping {CANDIDATES}. From {} to {} chunks its cost grows ×{:.1} \
         against ×{:.1} for the exhaustive dense scan, and at the largest size it costs {:.1} \
         times the dense scan.",
        100.0 * last.lexical_match_share,
        fmt_count(first.size),
        fmt_count(last.size),
        last.split.lexical.as_secs_f64() / first.split.lexical.as_secs_f64().max(1e-9),
        last.split.dense.as_secs_f64() / first.split.dense.as_secs_f64().max(1e-9),
        last.split.lexical.as_secs_f64() / last.split.dense.as_secs_f64().max(1e-9),
    );
    let recall_low = results
        .iter()
        .map(|r| r.recall)
        .fold(f64::INFINITY, f64::min);
    let recall_high = results.iter().map(|r| r.recall).fold(0.0, f64::max);
    let hybrid = last.hybrid_source_hits as f64 / last.queries.max(1) as f64;
    let dense = last.dense_source_hits as f64 / last.queries.max(1) as f64;
    let effect = if hybrid > dense + 0.02 {
        "so fusing in full-text finds source chunks that dense alone misses"
    } else if hybrid + 0.02 < dense {
        "so on this corpus fusing in full-text costs some source chunks that dense alone finds"
    } else {
        "so on this corpus fusion neither finds nor loses source chunks compared with dense alone"
    };
    let _ = write!(
        text,
        " On quality, the hybrid top 10 shares {:.0}–{:.0}% of its chunks with the exact dense \
         top 10 across sizes: fusion swaps about {:.0} of the 10 for full-text candidates. Whether \
         the question's source chunk comes back: hybrid {}, dense alone {}, full-text alone {} \
         at {} chunks, {effect}. In a large namespace the candidate cap keeps only the \
         question's very rarest words, so full-text alone misses source chunks whose \
         distinguishing words are merely uncommon; dense retrieval covers those. Synthetic words \
         and offline hash embeddings make the quality figures a regression check rather than a \
         forecast for real documents; the latencies carry over.",
        100.0 * recall_low,
        100.0 * recall_high,
        10.0 * (1.0 - last.recall),
        percent(last.hybrid_source_hits, last.queries),
        percent(last.dense_source_hits, last.queries),
        percent(last.lexical_source_hits, last.queries),
        fmt_count(last.size),
    );
    text
}
