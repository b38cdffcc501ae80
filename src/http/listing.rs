//! The query of the dashboard's lists: cursor pages (newest first, the
//! cursor is the last id of the previous page; ids are time-ordered UUIDv7s)
//! and filters on a field with a fixed set of values.

use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::http::error::ApiError;

pub const DEFAULT_PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 200;

/// The query of a list with no filters: `?cursor=&limit=`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// The page size a client asked for, or why it cannot have it.
pub fn page_limit(asked: Option<i64>) -> Result<i64, ApiError> {
    let limit = asked.unwrap_or(DEFAULT_PAGE);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_PAGE}"
        )))
    }
}

/// Cuts rows fetched with `limit + 1` (one more than asked tells whether
/// another page follows) to the page and its `next_cursor`.
pub fn into_page<T>(
    mut rows: Vec<T>,
    limit: i64,
    id: impl Fn(&T) -> Uuid,
) -> (Vec<T>, Option<Uuid>) {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more.then(|| rows.last().map(&id)).flatten();
    (rows, next_cursor)
}

/// Refuses a filter value outside `allowed`, naming the values there are.
pub fn check_one_of(field: &str, value: Option<&str>, allowed: &[&str]) -> Result<(), ApiError> {
    match value {
        Some(value) if !allowed.contains(&value) => Err(ApiError::BadRequest(format!(
            "{field} must be one of {}",
            allowed.join(", ")
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_has_a_cursor_only_when_more_follow() {
        let ids: Vec<Uuid> = (1..=3).map(Uuid::from_u128).collect();
        assert_eq!(
            into_page(ids.clone(), 2, |id| *id),
            (ids[..2].to_vec(), Some(ids[1]))
        );
        assert_eq!(
            into_page(ids[..2].to_vec(), 2, |id| *id),
            (ids[..2].to_vec(), None)
        );
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(MAX_PAGE + 1)).is_err());
        assert_eq!(page_limit(None).unwrap(), DEFAULT_PAGE);
        assert!(check_one_of("state", Some("x"), &["a", "b"]).is_err());
        assert!(check_one_of("state", Some("b"), &["a", "b"]).is_ok());
        assert!(check_one_of("state", None, &["a"]).is_ok());
    }
}
