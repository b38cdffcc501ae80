//! agentry: a multi-tenant backend for website and phone AI agents.
//!
//! This crate is the service: configuration, the HTTP edge, the PostgreSQL
//! store, the Redis bus, crypto, and the binary's commands. The pipeline
//! stages live in `agentry-actors` and reach the outside world through ports
//! that this crate implements.

pub mod accounts;
pub mod api_tokens;
pub mod bus;
pub mod configuration;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod evals;
pub mod files;
pub mod http;
pub mod jobs;
pub mod kb_ingest;
pub mod live;
pub mod llm;
pub mod llm_resolver;
pub mod lockout;
pub mod metrics_catalog;
pub mod net_guard;
pub mod object_storage;
pub mod privacy;
pub mod rate_limit;
pub mod recordings;
pub mod saturation;
pub mod seed;
pub mod sms_sender;
pub mod startup;
pub mod telemetry;
pub mod templates;
pub mod text_tools;
pub mod tokens;
pub mod twilio;
pub mod webhook_delivery;
pub mod webhook_dispatch;
pub mod webhook_echo;
pub mod webhook_retry;
pub mod webhook_signing;
pub mod webhook_supervisor;
pub mod widget_sessions;
