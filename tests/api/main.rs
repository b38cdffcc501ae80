//! Integration tests: the real app against real PostgreSQL and Redis.

mod admin;
mod audit;
mod auth;
mod bus;
mod cli;
mod edge;
mod health;
mod isolation;
mod resources;
mod seed;
mod widget;

mod helpers;
