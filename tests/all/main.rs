//! The integration tests: one binary, so every test shares one throwaway
//! PostgreSQL server (each test still gets a database of its own).

mod analytics;
mod conditions;
mod context;
mod demo;
mod distribution;
mod faults;
mod guard;
mod inputs;
mod isolation;
mod logins;
mod migrations;
mod money;
mod ops;
mod outbox;
mod platform;
mod repo;
mod savepoint;
mod session;
mod shards;
mod spans;
mod sql_layer;
mod support;
