#!/usr/bin/env python3
"""Writes alerts.test.yml, the promtool unit tests of alerts.yml.

Each case feeds synthetic series and expects the alert to stay quiet at
one time and fire, with the given labels and summary, at a later one.
promtool compares annotations whole, so the runbook text is taken from
alerts.yml rather than written twice. Run with --check to fail when the
committed file is stale; then `promtool test rules alerts.test.yml`.
"""

import json
import pathlib
import sys

import yaml

HERE = pathlib.Path(__file__).parent
RULES = HERE / "alerts.yml"
OUT = HERE / "alerts.test.yml"
A = 'job="agentry", instance="a:9100"'
B = 'job="agentry", instance="b:9100"'

# (alert, input series, quiet at, fires at, extra labels, summary)
CASES = [
    ("AgentryInstanceDown",
     [(f"up{{{A}}}", "1 0x10"), (f"up{{{B}}}", "1x10")],
     "1m", "3m", {"instance": "a:9100", "job": "agentry"},
     "agentry instance a:9100 is not scraped"),
    ("AgentryNotReady",
     [(f'agentry_dependency_up{{{A}, dependency="redis"}}', "1 1 0x10"),
      (f'agentry_dependency_up{{{A}, dependency="postgres"}}', "1x12"),
      (f'agentry_dependency_up{{{B}, dependency="redis"}}', "1x12")],
     "2m", "5m", {"instance": "a:9100", "dependency": "redis"},
     "a:9100 cannot reach redis"),
    ("AgentryHighErrorRatio",
     [(f'agentry_http_requests_total{{{A}, route="/api/widget/chat", status="200"}}', "0+100x30"),
      (f'agentry_http_requests_total{{{A}, route="/api/widget/chat", status="500"}}', "0x10 0+10x20")],
     "10m", "25m", {},
     "9.091% of HTTP responses are 5xx"),
    ("AgentrySlowTurns",
     [(f'agentry_chat_turn_duration_seconds_bucket{{{A}, channel="widget", le="1"}}', "0+10x10 100+1x30"),
      (f'agentry_chat_turn_duration_seconds_bucket{{{A}, channel="widget", le="5"}}', "0+10x10 100+1x30"),
      (f'agentry_chat_turn_duration_seconds_bucket{{{A}, channel="widget", le="10"}}', "0+10x10 100+10x30"),
      (f'agentry_chat_turn_duration_seconds_bucket{{{A}, channel="widget", le="+Inf"}}', "0+10x10 100+10x30")],
     "10m", "30m", {},
     "p99 chat turn latency is 9.944s"),
    ("AgentryWebhookBacklogGrowing",
     [(f"agentry_outbox_backlog{{{A}}}", "0x10 0+10x40"),
      (f"agentry_webhook_pending{{{A}}}", "0x50")],
     "15m", "40m", {},
     "webhook backlog keeps growing (290 events)"),
    ("AgentryOutboxStalled",
     [(f"agentry_outbox_oldest_age_seconds{{{A}}}", "0x5 0+60x20")],
     "8m", "20m", {},
     "the oldest unpublished outbox event is 14m 0s old"),
    ("AgentryWebhookPendingTooOld",
     [(f"agentry_webhook_oldest_pending_age_seconds{{{A}}}", "0+60x30")],
     "12m", "20m", {},
     "a webhook event has waited 20m 0s for its dispatcher"),
    ("AgentryWebhookDeliveriesFailing",
     [(f'agentry_webhook_deliveries_total{{{A}, state="success"}}', "0+4x20 80+1x40"),
      (f'agentry_webhook_deliveries_total{{{A}, state="retrying"}}', "0x20 0+3x40")],
     "20m", "55m", {},
     "75% of webhook attempts fail"),
    ("AgentryRateLimiterLocal",
     [(f"agentry_rate_limit_shards_local{{{A}}}", "0x3 4x10"),
      (f"agentry_rate_limit_shards_local{{{B}}}", "0x13")],
     "3m", "8m", {"instance": "a:9100"},
     "a:9100 limits requests without Redis"),
    ("AgentryActorRestartStorm",
     [(f'agentry_actor_restarts_total{{{A}, actor="chat_session"}}', "0x10 0+3x10"),
      (f'agentry_actor_restarts_total{{{A}, actor="rag_retriever"}}', "0+1x20")],
     "10m", "16m", {"instance": "a:9100", "actor": "chat_session"},
     "chat_session actors restarted 15 times in 5 minutes on a:9100"),
    ("AgentryIngestBacklog",
     [(f"agentry_ingest_oldest_age_seconds{{{A}}}", "0x5 0+60x40")],
     "15m", "30m", {},
     "a knowledge document has waited 24m 0s for ingest"),
    ("AgentryScheduledJobFailing",
     [(f'agentry_job_runs_total{{{A}, scheduled_job="rollup_usage", outcome="failure"}}', "0x60 0+1x60"),
      (f'agentry_job_runs_total{{{A}, scheduled_job="rollup_usage", outcome="success"}}', "0+1x60 60x60"),
      (f'agentry_job_runs_total{{{A}, scheduled_job="purge_sessions", outcome="failure"}}', "0+1x120"),
      (f'agentry_job_runs_total{{{A}, scheduled_job="purge_sessions", outcome="success"}}', "0+1x120")],
     "70m", "120m", {"scheduled_job": "rollup_usage"},
     "scheduled job rollup_usage failed and has not succeeded for an hour"),
    ("AgentryScheduledJobStale",
     # Last success at t=0 for one job; the other succeeds every minute.
     [(f'agentry_job_last_success_timestamp_seconds{{{A}, scheduled_job="purge_sessions"}}', "0x40"),
      (f'agentry_job_interval_seconds{{{A}, scheduled_job="purge_sessions"}}', "300x40"),
      (f'agentry_job_last_success_timestamp_seconds{{{A}, scheduled_job="rollup_usage"}}', "0+60x40"),
      (f'agentry_job_interval_seconds{{{A}, scheduled_job="rollup_usage"}}', "900x40")],
     "15m", "30m", {"scheduled_job": "purge_sessions"},
     "scheduled job purge_sessions last succeeded 30m 0s ago"),
]


def build():
    rules = {rule["alert"]: rule for group in yaml.safe_load(RULES.read_text())["groups"]
             for rule in group["rules"]}
    tested = {case[0] for case in CASES}
    if tested != set(rules):
        sys.exit(f"alerts without a test: {sorted(set(rules) - tested)}; "
                 f"tests without an alert: {sorted(tested - set(rules))}")
    tests = []
    for alert, series, quiet_at, fires_at, labels, summary in CASES:
        rule = rules[alert]
        tests.append({
            "name": alert,
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series],
            "alert_rule_test": [
                {"eval_time": quiet_at, "alertname": alert, "exp_alerts": []},
                {"eval_time": fires_at, "alertname": alert, "exp_alerts": [{
                    "exp_labels": {**rule["labels"], **labels},
                    "exp_annotations": {"summary": summary,
                                        "runbook": rule["annotations"]["runbook"]},
                }]},
            ],
        })
    header = ("# Generated by generate_tests.py from its cases and alerts.yml's runbooks;\n"
              "# edit those, not this file. Run: promtool test rules alerts.test.yml\n")
    body = {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": tests}
    return header + yaml.safe_dump(body, sort_keys=False, width=100)


def main():
    text = build()
    if "--check" in sys.argv:
        if OUT.read_text() != text:
            sys.exit(f"{OUT} is stale: run python3 {pathlib.Path(__file__)}")
        return
    OUT.write_text(text)


if __name__ == "__main__":
    main()
