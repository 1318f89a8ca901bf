//! `GET /v1/round`: what an aggregator reads every round, in one answer.

use axum::{
    Json,
    extract::{RawQuery, State},
};
use scaler_api::wire;

use super::{
    AppState,
    error::ApiError,
    manage::{events_limit, host_view},
    query::Query,
    stats::brief_stats,
};
use crate::manage::events::EventQuery;

/// `GET /v1/round[?since_ms=T][&limit=N][&containers=true]`: the brief
/// stats (as `/v1/stats?fields=brief`), the host (as `/v1/host`), the
/// events (as `/v1/events` with the same `since_ms` and `limit`) and, with
/// `containers=true`, the subscriptions (as `/v1/containers`). One request
/// where an aggregator would make three or four: requests, not bytes, are
/// most of what reading a host costs both sides.
pub async fn round(State(app): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<wire::Round>, ApiError> {
    let q = Query::parse(q.as_deref(), &["since_ms", "limit", "containers"])?;
    let query = EventQuery { since_id: None, since_ms: q.u64("since_ms")?, container: None, limit: events_limit(&q)? };
    let with_containers = match q.str("containers") {
        None | Some("false") => false,
        Some("true") | Some("") => true,
        Some(v) => return Err(ApiError::bad_request("containers", format!("must be true or false, got {v:?}"))),
    };
    // The host view takes the manager's lock itself: before ours.
    let host = host_view(&app);
    let (events, containers) = {
        let m = app.manager();
        (m.events.query(&query), with_containers.then(|| m.views()))
    };
    Ok(Json(wire::Round { stats: brief_stats(&app.shared, None), host, events, containers }))
}
