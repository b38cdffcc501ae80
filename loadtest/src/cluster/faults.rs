//! Faults on a timeline inside the measured window: each is one or two
//! steps (a Redis restart is a stop and, later, a start; a receiver fault
//! begins and ends), run in time order while the load goes on.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::figures::FaultTime;
use super::fleet::{Instance, PrivateRedis};
use super::receiver::{Behaviour, Receiver};
use crate::cli::{ClusterArgs, Persistence};
use crate::pg;
use crate::server::{self, Resources};

/// What the steps act on.
pub struct Context<'a> {
    pub resources: &'a Resources,
    pub instances: &'a [Instance],
    pub redis: Option<&'a PrivateRedis>,
    pub receiver: &'a Receiver,
    /// Owner URL, for pg_terminate_backend.
    pub database_url: &'a str,
    pub database: &'a str,
    pub redis_down_for: Duration,
    pub receiver_fault_for: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Kill,
    StopRedis,
    StartRedis,
    CutPostgres,
    Receiver(Behaviour),
    ReceiverHealthy,
}

impl Action {
    /// Whether the step ends its fault (the others begin it).
    fn ends(self) -> bool {
        matches!(self, Self::StartRedis | Self::ReceiverHealthy)
    }
}

struct Step {
    at: Instant,
    action: Action,
    fault: usize,
}

pub struct Timeline {
    clock: Instant,
    steps: Vec<Step>,
    faults: Vec<FaultTime>,
}

impl Timeline {
    /// `clock`: when the lanes started; `window_start`: the measured
    /// window's start on it; fault offsets count from there.
    pub fn new(args: &ClusterArgs, clock: Instant, window_start: Duration) -> Self {
        let mut steps = Vec::new();
        let mut faults = Vec::new();
        for (index, (kind, offset)) in args.fault_times().into_iter().enumerate() {
            let start = clock + window_start + offset;
            faults.push(FaultTime {
                kind,
                detail: String::new(),
                start_ms: 0,
                end_ms: 0,
            });
            let mut step = |at: Instant, action: Action| {
                steps.push(Step {
                    at,
                    action,
                    fault: index,
                })
            };
            match kind {
                "kill_instance" => step(start, Action::Kill),
                "restart_redis" => {
                    step(start, Action::StopRedis);
                    step(start + args.redis_down_for, Action::StartRedis);
                }
                "cut_postgres" => step(start, Action::CutPostgres),
                "slow_receiver" | "failing_receiver" => {
                    let behaviour = if kind == "slow_receiver" {
                        Behaviour::Slow
                    } else {
                        Behaviour::Failing
                    };
                    step(start, Action::Receiver(behaviour));
                    step(start + args.receiver_fault_for, Action::ReceiverHealthy);
                }
                other => unreachable!("fault_times names no fault {other}"),
            }
        }
        // Stable: a fault's start stays before its end at equal times.
        steps.sort_by_key(|step| step.at);
        Self {
            clock,
            steps,
            faults,
        }
    }

    fn now_ms(&self) -> u32 {
        u32::try_from(self.clock.elapsed().as_millis()).unwrap_or(u32::MAX)
    }

    /// Runs every step due before `deadline`, then waits for it.
    pub async fn run_until(&mut self, context: &Context<'_>, deadline: Instant) {
        while self.steps.first().is_some_and(|step| step.at <= deadline) {
            let step = self.steps.remove(0);
            tokio::time::sleep_until(step.at.into()).await;
            self.perform(context, &step).await;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }

    /// Ends the faults still under way (their end falls after the window)
    /// and returns what happened.
    pub async fn finish(mut self, context: &Context<'_>) -> Vec<FaultTime> {
        for step in std::mem::take(&mut self.steps) {
            self.perform(context, &step).await;
        }
        self.faults
    }

    async fn perform(&mut self, context: &Context<'_>, step: &Step) {
        let began = self.now_ms();
        let detail = match act(context, step.action).await {
            Ok(detail) => detail,
            Err(error) => format!("failed: {error:#}"),
        };
        eprintln!("loadtest: fault step {:?}: {detail}", step.action);
        let fault = &mut self.faults[step.fault];
        if step.action.ends() {
            fault.end_ms = began;
            fault.detail = format!("{}; {detail}", fault.detail);
        } else {
            fault.start_ms = began;
            fault.end_ms = began;
            fault.detail = detail;
        }
    }
}

async fn act(context: &Context<'_>, action: Action) -> anyhow::Result<String> {
    match action {
        Action::Kill => {
            let victim = context.instances.last().context("no instance to kill")?;
            let child = context
                .resources
                .take_child(&victim.name)
                .with_context(|| format!("{} is not running", victim.name))?;
            anyhow::ensure!(
                server::signal(&child, libc::SIGKILL),
                "could not signal {}",
                victim.name
            );
            let mut child = child;
            let _ = child.wait().await;
            Ok(format!("SIGKILL {} (pid {})", victim.name, victim.pid))
        }
        Action::StopRedis => {
            let redis = context.redis.context("no private Redis to restart")?;
            redis.stop(context.resources).await;
            let kept = match redis.persistence {
                Persistence::None => "no persistence: every key is gone",
                Persistence::Aof => "append-only file written on shutdown",
            };
            Ok(format!(
                "redis-server stopped (SIGTERM; {kept}) for {:?}",
                context.redis_down_for
            ))
        }
        Action::StartRedis => {
            let redis = context.redis.context("no private Redis to restart")?;
            redis.start(context.resources).await?;
            Ok("redis-server started again on the same port".to_owned())
        }
        Action::CutPostgres => {
            let mut connection = pg::connect_maintenance(context.database_url).await?;
            let terminated: i64 = sqlx::query_scalar(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind(context.database)
            .fetch_one(&mut connection)
            .await?;
            Ok(format!(
                "pg_terminate_backend of all {terminated} sessions on {}",
                context.database
            ))
        }
        Action::Receiver(behaviour) => {
            context.receiver.set_behaviour(behaviour);
            Ok(match behaviour {
                Behaviour::Slow => format!(
                    "receiver answers after the attempt deadline, for {:?}",
                    context.receiver_fault_for
                ),
                _ => format!("receiver answers 500, for {:?}", context.receiver_fault_for),
            })
        }
        Action::ReceiverHealthy => {
            context.receiver.set_behaviour(Behaviour::Healthy);
            Ok("receiver healthy again".to_owned())
        }
    }
}
