//! `GET /api/v1/usage?from=YYYY-MM-DD&to=YYYY-MM-DD`: the tenant's daily
//! usage totals for billing, as the `rollup_usage` job last computed them,
//! one entry per day of the range (zeros included) and their sum.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::db::usage_daily::{self, UsageRow};
use crate::http::error::ApiError;
use crate::http::extract::TenantUser;
use crate::http::AppState;

/// The longest range one request may ask for, in days (both ends included).
pub const MAX_RANGE_DAYS: i64 = 366;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(usage))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    /// The first day, YYYY-MM-DD (required).
    #[param(format = Date)]
    from: Option<String>,
    /// The last day, YYYY-MM-DD (required; at most 366 days after `from`, both included).
    #[param(format = Date)]
    to: Option<String>,
}

#[derive(Clone, Copy, Default, Serialize, ToSchema)]
struct Totals {
    /// Chat turns answered (usage events of kind `chat`).
    turns: i64,
    /// Every usage event (turns and embeddings).
    events: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
}

impl Totals {
    fn add(&mut self, row: &UsageRow) {
        if row.kind == "chat" {
            self.turns += row.events;
        }
        self.events += row.events;
        self.prompt_tokens += row.prompt_tokens;
        self.completion_tokens += row.completion_tokens;
    }
}

#[derive(Serialize, ToSchema)]
struct Day {
    day: NaiveDate,
    #[serde(flatten)]
    totals: Totals,
}

#[derive(Serialize, ToSchema)]
struct ModelTotals {
    kind: String,
    provider: String,
    model: String,
    events: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
}

#[derive(Serialize, ToSchema)]
struct Sum {
    #[serde(flatten)]
    totals: Totals,
    by_model: Vec<ModelTotals>,
}

#[derive(Serialize, ToSchema)]
struct UsageReport {
    from: NaiveDate,
    to: NaiveDate,
    days: Vec<Day>,
    total: Sum,
}

fn parse_day(name: &str, value: Option<&str>) -> Result<NaiveDate, ApiError> {
    let value =
        value.ok_or_else(|| ApiError::BadRequest(format!("{name} is required (YYYY-MM-DD)")))?;
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .filter(|_| value.len() == 10)
        .ok_or_else(|| ApiError::BadRequest(format!("{name} must be a date as YYYY-MM-DD")))
}

/// The range asked for, or why it cannot be had.
fn parse_range(query: &UsageQuery) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let from = parse_day("from", query.from.as_deref())?;
    let to = parse_day("to", query.to.as_deref())?;
    if to < from {
        return Err(ApiError::BadRequest(
            "to must not be earlier than from".into(),
        ));
    }
    if (to - from).num_days() + 1 > MAX_RANGE_DAYS {
        return Err(ApiError::BadRequest(format!(
            "a range covers at most {MAX_RANGE_DAYS} days"
        )));
    }
    Ok((from, to))
}

/// Daily usage totals for billing, every day of the range, and their sum.
#[utoipa::path(get, path = "/usage", tag = "tenant", security(("dashboard" = [])), params(UsageQuery),
    responses((status = 200, description = "The usage report", body = UsageReport),
        (status = 400, description = "A missing, malformed or reversed date, or a range over 366 days")))]
async fn usage(
    State(state): State<AppState>,
    user: TenantUser,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Json<UsageReport>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let (from, to) = parse_range(&query)?;
    let mut tx = state.store.tenant(user.tenant).await?;
    let rows = usage_daily::between(&mut tx, from, to).await?;
    tx.commit().await?;
    Ok(Json(report(from, to, &rows)))
}

fn report(from: NaiveDate, to: NaiveDate, rows: &[UsageRow]) -> UsageReport {
    let mut days: BTreeMap<NaiveDate, Totals> = from
        .iter_days()
        .take_while(|day| *day <= to)
        .map(|day| (day, Totals::default()))
        .collect();
    let mut total = Totals::default();
    let mut by_model: BTreeMap<(&str, &str, &str), ModelTotals> = BTreeMap::new();
    for row in rows {
        days.entry(row.day).or_default().add(row);
        total.add(row);
        let model = by_model
            .entry((&row.kind, &row.provider, &row.model))
            .or_insert_with(|| ModelTotals {
                kind: row.kind.clone(),
                provider: row.provider.clone(),
                model: row.model.clone(),
                events: 0,
                prompt_tokens: 0,
                completion_tokens: 0,
            });
        model.events += row.events;
        model.prompt_tokens += row.prompt_tokens;
        model.completion_tokens += row.completion_tokens;
    }
    UsageReport {
        from,
        to,
        days: days
            .into_iter()
            .map(|(day, totals)| Day { day, totals })
            .collect(),
        total: Sum {
            totals: total,
            by_model: by_model.into_values().collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(from: Option<&str>, to: Option<&str>) -> UsageQuery {
        UsageQuery {
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
        }
    }

    #[test]
    fn ranges_are_dates_in_order_and_at_most_a_year() {
        assert!(parse_range(&query(Some("2026-12-01"), Some("2026-12-01"))).is_ok());
        assert!(parse_range(&query(Some("2026-01-01"), Some("2027-01-01"))).is_ok());
        for (from, to) in [
            (None, Some("2026-12-01")),
            (Some("2026-12-01"), None),
            (Some("2026-13-01"), Some("2026-12-01")),
            (Some("2026-12-1"), Some("2026-12-02")),
            (Some("yesterday"), Some("2026-12-02")),
            (Some("2026-12-02"), Some("2026-12-01")),
            (Some("2026-01-01"), Some("2027-01-02")),
        ] {
            assert!(parse_range(&query(from, to)).is_err(), "{from:?}..{to:?}");
        }
    }

    #[test]
    fn every_day_of_the_range_is_reported_and_summed() {
        let day = |d| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        let row = |d, kind: &str, events, prompt| UsageRow {
            day: day(d),
            kind: kind.into(),
            provider: "offline".into(),
            model: "m".into(),
            events,
            prompt_tokens: prompt,
            completion_tokens: 1,
        };
        let rows = [
            row(1, "chat", 2, 10),
            row(1, "embedding", 2, 4),
            row(3, "chat", 1, 5),
        ];
        let report = report(day(1), day(3), &rows);
        assert_eq!(report.days.len(), 3);
        assert_eq!(report.days[0].totals.turns, 2);
        assert_eq!(report.days[0].totals.events, 4);
        assert_eq!(report.days[1].totals.events, 0);
        assert_eq!(report.total.totals.turns, 3);
        assert_eq!(report.total.totals.prompt_tokens, 19);
        assert_eq!(report.total.totals.completion_tokens, 3);
        assert_eq!(report.total.by_model.len(), 2);
    }
}
