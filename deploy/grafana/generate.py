#!/usr/bin/env python3
"""Writes agentry.json, the Grafana dashboard, from the panel list below.

The JSON is committed (an SRE imports it as it is); this script is its
source. `python3 deploy/grafana/generate.py --check` fails when the two
differ, and the Prometheus test evaluates every query it holds against a
real Prometheus scraping two instances.
"""

import json
import pathlib
import sys

OUT = pathlib.Path(__file__).with_name("agentry.json")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Every query is scoped by the two template variables.
S = 'job=~"$job", instance=~"$instance"'
RATE = "$__rate_interval"
SERVER_ERRORS = 'status=~"5.."'
HITS = 'outcome="hit"'


def rate(metric, labels="", by=None):
    selector = f"{metric}{{{S}{', ' + labels if labels else ''}}}"
    inner = f"rate({selector}[{RATE}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def quantile(q, metric, by=None, labels=""):
    group = f"le, {by}" if by else "le"
    selector = f"{metric}_bucket{{{S}{', ' + labels if labels else ''}}}"
    return f"histogram_quantile({q}, sum by ({group}) (rate({selector}[{RATE}])))"


def gauge(metric, by=None, agg="sum", labels=""):
    selector = f"{metric}{{{S}{', ' + labels if labels else ''}}}"
    return f"{agg} by ({by}) ({selector})" if by else f"{agg}({selector})"


def target(expr, legend=""):
    return {"expr": expr, "legendFormat": legend}


def panel(title, description, unit, *targets, kind="timeseries", width=8):
    return {
        "title": title,
        "description": description,
        "unit": unit,
        "targets": list(targets),
        "kind": kind,
        "width": width,
    }


def latency(title, description, metric, by=None, labels=""):
    legend = "{{" + by + "}} " if by else ""
    return panel(
        title,
        description,
        "s",
        target(quantile(0.5, metric, by, labels), legend + "p50"),
        target(quantile(0.99, metric, by, labels), legend + "p99"),
    )


ROWS = [
    ("Overview", [
        panel("Instances up", "Instances Prometheus scrapes successfully.", "short",
              target(f'sum(up{{{S}}})', "up"), kind="stat", width=4),
        panel("Versions", "Instances per running version.", "short",
              target(gauge("agentry_build_info", "version", "count"), "{{version}}"), kind="stat", width=4),
        panel("Requests per second", "All HTTP requests, cluster-wide.", "reqps",
              target(rate("agentry_http_requests_total"), "requests/s"), kind="stat", width=4),
        panel("5xx ratio", "Share of HTTP responses that are server errors.", "percentunit",
              target(f'(({rate("agentry_http_requests_total", labels=SERVER_ERRORS)}) or vector(0)) / {rate("agentry_http_requests_total")}', "5xx"),
              kind="stat", width=4),
        panel("Dependencies up", "Whether PostgreSQL and Redis answer each instance (what /readyz checks).", "short",
              target(gauge("agentry_dependency_up", "instance, dependency", "min"), "{{instance}} {{dependency}}"), width=8),
    ]),
    ("HTTP", [
        panel("Requests by instance", "Request rate per instance.", "reqps",
              target(rate("agentry_http_requests_total", by="instance"), "{{instance}}")),
        panel("Requests by route", "Request rate per route template.", "reqps",
              target(rate("agentry_http_requests_total", by="method, route"), "{{method}} {{route}}")),
        panel("Responses by status", "Response rate per status code.", "reqps",
              target(rate("agentry_http_requests_total", by="status"), "{{status}}")),
        latency("Latency", "HTTP latency until the response head, cluster-wide.", "agentry_http_request_duration_seconds"),
        panel("p99 latency by route", "The slowest routes.", "s",
              target(quantile(0.99, "agentry_http_request_duration_seconds", "method, route"), "{{method}} {{route}}")),
        panel("In flight", "Requests being handled, per instance.", "short",
              target(gauge("agentry_http_requests_in_flight", "instance"), "{{instance}}")),
    ]),
    ("Chat turns", [
        panel("Turns by channel and outcome", "Chat turns per second.", "ops",
              target(rate("agentry_chat_turns_total", by="channel, outcome"), "{{channel}} {{outcome}}")),
        latency("Turn latency by channel", "A turn inside its session: retrieval, model rounds, tools, storing.",
                "agentry_chat_turn_duration_seconds", by="channel"),
        panel("p99 turn latency by instance", "Tells one slow instance from a slow cluster.", "s",
              target(quantile(0.99, "agentry_chat_turn_duration_seconds", "instance"), "{{instance}}")),
        panel("Open chat sessions", "Conversation actors alive, per instance.", "short",
              target(gauge("agentry_chat_sessions", "instance"), "{{instance}}")),
        panel("Cache hit ratio", "Per turn cache: history, agent brief, LLM provider, namespace.", "percentunit",
              target(f'{rate("agentry_cache_lookups_total", labels=HITS, by="cache")} / {rate("agentry_cache_lookups_total", by="cache")}', "{{cache}}")),
        panel("Widget sessions", "Widget session reads and writes in Redis.", "ops",
              target(rate("agentry_widget_session_operations_total", by="operation, outcome"), "{{operation}} {{outcome}}"),
              target(quantile(0.99, "agentry_widget_session_operation_duration_seconds"), "p99 seconds")),
    ]),
    ("Retriever and guardrails", [
        panel("Retriever queries", "Knowledge-base queries per second by outcome.", "ops",
              target(rate("agentry_retriever_queries_total", by="outcome"), "{{outcome}}")),
        latency("Retriever latency", "Embedding the question and the hybrid search.", "agentry_retriever_query_duration_seconds"),
        panel("Resident namespaces", "Namespace snapshots in memory, per instance.", "short",
              target(gauge("agentry_retriever_resident_namespaces", "instance"), "{{instance}} namespaces"),
              target(gauge("agentry_retriever_resident_bytes", "instance"), "{{instance}} bytes")),
        panel("Namespace loads and evictions", "Snapshots loaded (by kind) and evicted.", "ops",
              target(rate("agentry_retriever_loads_total", by="kind"), "load {{kind}}"),
              target(rate("agentry_retriever_evictions_total"), "evictions")),
        latency("Finalizer latency", "Guardrails per reply fragment.", "agentry_finalizer_duration_seconds"),
        panel("Guardrail removals", "What the guardrails removed, by rule.", "ops",
              target(rate("agentry_guardrail_removals_total", by="rule"), "{{rule}}")),
    ]),
    ("LLM providers", [
        panel("Requests by provider", "Completion requests by provider and outcome.", "reqps",
              target(rate("agentry_llm_requests_total", by="provider, outcome"), "{{provider}} {{outcome}}")),
        latency("Latency by provider", "Completion latency including retries.", "agentry_llm_request_duration_seconds", by="provider"),
        panel("Tokens by provider", "Tokens billed per second, prompt and completion.", "short",
              target(rate("agentry_llm_tokens_total", by="provider, kind"), "{{provider}} {{kind}}")),
        panel("Retries", "Provider requests retried.", "ops",
              target(rate("agentry_llm_retries_total", by="provider"), "{{provider}}")),
        panel("Embeddings", "Embedding requests by provider and outcome, and their p99.", "ops",
              target(rate("agentry_llm_embedding_requests_total", by="provider, outcome"), "{{provider}} {{outcome}}"),
              target(quantile(0.99, "agentry_llm_embedding_request_duration_seconds", "provider"), "{{provider}} p99 seconds")),
    ]),
    ("Tools", [
        panel("Tool runs", "Tool calls by tool and run status.", "ops",
              target(rate("agentry_tool_runs_total", by="tool, outcome"), "{{tool}} {{outcome}}")),
        latency("Tool latency", "Each tool call's own unit of work.", "agentry_tool_run_duration_seconds", by="tool"),
        panel("MCP tool calls", "Calls through /mcp, and those that failed.", "ops",
              target(rate("agentry_mcp_tool_calls_total", by="tool"), "{{tool}}"),
              target(rate("agentry_mcp_tool_errors_total", by="tool"), "{{tool}} errors")),
    ]),
    ("Webhooks", [
        panel("Outbox backlog", "Events not yet published (every instance reads the same table: max, not sum).", "short",
              target(gauge("agentry_outbox_backlog", agg="max"), "backlog"),
              target(gauge("agentry_outbox_oldest_age_seconds", agg="max"), "oldest (s)")),
        panel("Outbox relay", "Relay passes by outcome, and events published.", "ops",
              target(rate("agentry_outbox_relay_runs_total", by="outcome"), "{{outcome}}"),
              target(rate("agentry_outbox_published_total"), "events published")),
        panel("Delivery outcomes", "Delivery attempts by resulting state.", "ops",
              target(rate("agentry_webhook_deliveries_total", by="state"), "{{state}}")),
        latency("Attempt latency", "Receivers' response time per attempt.", "agentry_webhook_attempt_duration_seconds"),
        latency("Retry lateness", "How long after its due time a retry ran.", "agentry_webhook_retry_lateness_seconds"),
        panel("Stream backlog", "Pending (delivered, unacknowledged), delayed retries, stream length.", "short",
              target(gauge("agentry_webhook_pending", agg="max"), "pending"),
              target(gauge("agentry_webhook_delayed", agg="max"), "delayed"),
              target(gauge("agentry_webhook_stream_length", agg="max"), "stream length")),
        panel("Oldest pending", "Age of the oldest unacknowledged event.", "s",
              target(gauge("agentry_webhook_oldest_pending_age_seconds", agg="max"), "oldest pending")),
    ]),
    ("Rate limits", [
        panel("Decisions by tier", "Allowed and limited, by tier.", "ops",
              target(rate("agentry_rate_limit_decisions_total", by="tier, outcome"), "{{tier}} {{outcome}}")),
        panel("Decided where", "redis: cluster-wide; local: an instance alone while Redis is away.", "ops",
              target(rate("agentry_rate_limit_decisions_total", by="source"), "{{source}}"),
              target(rate("agentry_rate_limit_unavailable_total", by="tier"), "without Redis {{tier}}")),
        panel("Shards on local fallback", "Limiter shards deciding without Redis, per instance.", "short",
              target(gauge("agentry_rate_limit_shards_local", "instance", "max"), "{{instance}}")),
        latency("Check latency", "From ask to decision.", "agentry_rate_limit_check_duration_seconds"),
        panel("Batch size", "Decisions per Redis pipeline.", "short",
              target(quantile(0.5, "agentry_rate_limit_batch_size"), "p50"),
              target(quantile(0.99, "agentry_rate_limit_batch_size"), "p99")),
    ]),
    ("Ingest, files and scheduled jobs", [
        panel("Ingest", "Knowledge documents ingested by outcome.", "ops",
              target(rate("agentry_ingest_jobs_total", by="outcome"), "{{outcome}}"),
              target(quantile(0.99, "agentry_ingest_duration_seconds"), "p99 seconds")),
        panel("Ingest backlog", "Jobs queued or in progress, and the oldest one's age.", "short",
              target(gauge("agentry_ingest_backlog", agg="max"), "backlog"),
              target(gauge("agentry_ingest_oldest_age_seconds", agg="max"), "oldest (s)")),
        panel("File scans", "clamd verdicts by outcome, scan p99, files waiting.", "ops",
              target(rate("agentry_file_scans_total", by="outcome"), "{{outcome}}"),
              target(quantile(0.99, "agentry_file_scan_duration_seconds"), "p99 seconds"),
              target(gauge("agentry_file_scan_backlog", agg="max"), "waiting"),
              target(gauge("agentry_file_scan_oldest_age_seconds", agg="max"), "oldest waiting (s)")),
        panel("Job runs", "Scheduled job runs by job and outcome.", "ops",
              target(rate("agentry_job_runs_total", by="scheduled_job, outcome"), "{{scheduled_job}} {{outcome}}")),
        panel("Since last success", "Seconds since each job last succeeded anywhere in the cluster.", "s",
              target(f'time() - {gauge("agentry_job_last_success_timestamp_seconds", "scheduled_job", "max")}', "{{scheduled_job}}")),
        latency("Job duration", "Scheduled job run time.", "agentry_job_duration_seconds", by="scheduled_job"),
    ]),
    ("SMS and voice", [
        panel("SMS", "Outbound texts by outcome, keywords, late replies.", "ops",
              target(rate("agentry_sms_outbound_total", by="outcome"), "outbound {{outcome}}"),
              target(rate("agentry_sms_keywords_total", by="keyword"), "keyword {{keyword}}"),
              target(rate("agentry_sms_late_replies_total"), "late replies"),
              target(quantile(0.99, "agentry_sms_send_duration_seconds"), "send p99 seconds")),
        panel("SMS queue", "Outbound texts waiting, and the oldest one's age.", "short",
              target(gauge("agentry_sms_outbound_backlog", agg="max"), "waiting"),
              target(gauge("agentry_sms_outbound_oldest_age_seconds", agg="max"), "oldest (s)")),
        panel("Voice", "Calls answered, transfers, recordings.", "ops",
              target(rate("agentry_voice_calls_total"), "calls"),
              target(rate("agentry_voice_transfers_total"), "transfers"),
              target(rate("agentry_recordings_total", by="outcome"), "recordings {{outcome}}"),
              target(rate("agentry_recording_transcriptions_total", by="outcome"), "transcriptions {{outcome}}"),
              target(quantile(0.99, "agentry_recording_transcription_duration_seconds"), "transcription p99 seconds")),
        panel("Twilio signature refusals", "Webhooks refused for a bad signature.", "ops",
              target(rate("agentry_twilio_signature_refusals_total"), "refused")),
    ]),
    ("Saturation and restarts", [
        panel("PostgreSQL pool", "Connections busy and idle per instance, and the limit.", "short",
              target(gauge("agentry_db_pool_connections", "instance, state"), "{{instance}} {{state}}"),
              target(gauge("agentry_db_pool_max_connections", "instance"), "{{instance}} max")),
        panel("Redis connections", "Client connections by pool and state.", "short",
              target(gauge("agentry_redis_connections", "instance, pool, state"), "{{instance}} {{pool}} {{state}}")),
        latency("Dependency check latency", "PostgreSQL and Redis ping time.", "agentry_dependency_check_duration_seconds", by="dependency"),
        panel("Actor restarts", "Crashed actors replaced by their supervisor.", "ops",
              target(rate("agentry_actor_restarts_total", by="actor"), "{{actor}}")),
        panel("Sign-in lockouts", "Clients locked out after failed sign-ins.", "ops",
              target(rate("agentry_auth_lockouts_total"), "lockouts")),
    ]),
]


def build():
    panels, next_id, y = [], 1, 0
    for title, row in ROWS:
        panels.append({
            "type": "row", "title": title, "id": next_id, "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": [],
        })
        next_id, y, x = next_id + 1, y + 1, 0
        for spec in row:
            if x + spec["width"] > 24:
                x, y = 0, y + 8
            built = {
                "type": spec["kind"],
                "title": spec["title"],
                "description": spec["description"],
                "id": next_id,
                "datasource": DATASOURCE,
                "gridPos": {"h": 8, "w": spec["width"], "x": x, "y": y},
                "fieldConfig": {"defaults": {"unit": spec["unit"]}, "overrides": []},
                "targets": [
                    {"refId": chr(ord("A") + i), "datasource": DATASOURCE, **t}
                    for i, t in enumerate(spec["targets"])
                ],
            }
            if spec["kind"] == "timeseries":
                built["options"] = {"legend": {"displayMode": "list", "placement": "bottom"},
                                    "tooltip": {"mode": "multi"}}
            panels.append(built)
            next_id, x = next_id + 1, x + spec["width"]
        y += 8

    def variable(name, label, query):
        return {
            "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
            "query": {"query": query, "refId": name}, "definition": query,
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1,
        }

    return {
        "title": "agentry",
        "uid": "agentry-overview",
        "description": "RED per stage, backlogs, webhooks, limits, LLM providers and saturation of an agentry cluster.",
        "tags": ["agentry"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "annotations": {"list": []},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            variable("job", "Job", "label_values(agentry_build_info, job)"),
            variable("instance", "Instance", 'label_values(agentry_build_info{job=~"$job"}, instance)'),
        ]},
        "panels": panels,
    }


def main():
    text = json.dumps(build(), indent=2) + "\n"
    if "--check" in sys.argv:
        if OUT.read_text() != text:
            sys.exit(f"{OUT} is stale: run python3 {pathlib.Path(__file__)}")
        return
    OUT.write_text(text)


if __name__ == "__main__":
    main()
