//! Integration tests: the real app against real PostgreSQL and Redis.

mod admin;
mod audit;
mod auth;
mod browser;
mod bus;
mod caches;
mod chat_support;
mod cli;
mod cluster;
mod deliveries;
mod deliveries_api;
mod dispatch;
mod edge;
mod evals;
mod health;
mod isolation;
mod knowledge;
mod leads;
mod lockout;
mod mcp;
mod outbox;
mod pipeline;
mod rate_limits;
mod recordings;
mod redis_loss;
mod resources;
mod seed;
mod signatures;
mod tokens;
mod tools;
mod twilio;
mod webhook_bench;
mod webhook_endpoints;
mod widget;

mod helpers;
