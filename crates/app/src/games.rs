//! Games: the cross-game leaderboard and score submission.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, Row, SqlitePool};

use crate::error::AppError;
use crate::extract::{Id, JsonBody, Params};
use crate::features::{Features, LEADERBOARD_CACHE, LeaderboardCache};
use crate::unix_now;

/// Leaderboard entries returned when `limit` is not given.
const DEFAULT_LIMIT: i64 = 10;
/// Most leaderboard entries one request may ask for.
const MAX_LIMIT: i64 = 100;
/// Highest score accepted; anything above is a cheater or a bug.
const MAX_SCORE: i64 = 10_000_000;

#[derive(Deserialize)]
pub(crate) struct LeaderboardParams {
    #[serde(default)]
    limit: Option<i64>,
    /// Only this game's scores.
    #[serde(default)]
    game: Option<i64>,
}

#[derive(Serialize)]
pub(crate) struct Entry {
    rank: usize,
    score_id: i64,
    score: i64,
    game_id: i64,
    game: String,
    user_id: i64,
    username: String,
    created_at: i64,
}

impl FromRow<'_, SqliteRow> for Entry {
    fn from_row(row: &SqliteRow) -> Result<Self, sqlx::Error> {
        Ok(Entry {
            rank: 0,
            score_id: row.try_get("id")?,
            score: row.try_get("score")?,
            game_id: row.try_get("game_id")?,
            game: row.try_get("game")?,
            user_id: row.try_get("user_id")?,
            username: row.try_get("username")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

#[derive(Serialize)]
pub(crate) struct Leaderboard {
    entries: Vec<Entry>,
}

/// `GET /leaderboard[?limit=&game=]`: the top scores across all games (or
/// one), with game and player names, in one query.
pub(crate) async fn leaderboard(
    State(db): State<SqlitePool>,
    Extension(cache): Extension<LeaderboardCache>,
    features: Features,
    Params(params): Params<LeaderboardParams>,
) -> Result<Response, AppError> {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::BadRequest("limit must be between 1 and 100"));
    }
    // With `leaderboard:cache` on, a recent answer is served without a query.
    let cached = features.on(LEADERBOARD_CACHE);
    if cached && let Some(hit) = cache.get((params.game, limit)) {
        return Ok(([("x-cache", "hit")], Json(hit.as_ref().clone())).into_response());
    }
    let mut entries = sqlx::query_as::<_, Entry>(
        "SELECT s.id, s.score, s.created_at, s.game_id, g.name AS game, s.user_id, u.username \
         FROM scores s JOIN games g ON g.id = s.game_id JOIN users u ON u.id = s.user_id \
         WHERE ?1 IS NULL OR s.game_id = ?1 \
         ORDER BY s.score DESC, s.id LIMIT ?2",
    )
    .bind(params.game)
    .bind(limit)
    .fetch_all(&db)
    .await?;
    for (rank, entry) in (1..).zip(entries.iter_mut()) {
        entry.rank = rank;
    }
    if !cached {
        return Ok(Json(Leaderboard { entries }).into_response());
    }
    let board = Leaderboard { entries };
    // Cannot fail for this type (no map with non-string keys); uncached if it ever did.
    let Ok(value) = serde_json::to_value(&board) else {
        return Ok(Json(board).into_response());
    };
    cache.put((params.game, limit), Arc::new(value.clone()));
    Ok(([("x-cache", "miss")], Json(value)).into_response())
}

#[derive(Deserialize)]
pub(crate) struct NewScore {
    user_id: i64,
    score: i64,
}

#[derive(Serialize)]
pub(crate) struct ScoreRecorded {
    id: i64,
    game_id: i64,
    user_id: i64,
    score: i64,
    /// The score's position in its game (1 = best).
    rank: i64,
    created_at: i64,
}

/// `POST /games/{id}/scores`: records a score and answers with its rank.
pub(crate) async fn post_score(
    State(db): State<SqlitePool>,
    Id(game_id): Id,
    JsonBody(new): JsonBody<NewScore>,
) -> Result<(StatusCode, Json<ScoreRecorded>), AppError> {
    if !(0..=MAX_SCORE).contains(&new.score) {
        return Err(AppError::BadRequest("score out of range"));
    }
    let game: Option<i64> = sqlx::query_scalar("SELECT id FROM games WHERE id = ?")
        .bind(game_id)
        .fetch_optional(&db)
        .await?;
    if game.is_none() {
        return Err(AppError::NotFound);
    }
    let user: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE id = ?")
        .bind(new.user_id)
        .fetch_optional(&db)
        .await?;
    if user.is_none() {
        return Err(AppError::BadRequest("unknown user"));
    }
    let created_at = unix_now();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO scores (game_id, user_id, score, created_at) VALUES (?, ?, ?, ?) \
         RETURNING id",
    )
    .bind(game_id)
    .bind(new.user_id)
    .bind(new.score)
    .bind(created_at)
    .fetch_one(&db)
    .await?;
    let better: i64 =
        sqlx::query_scalar("SELECT COUNT(id) FROM scores WHERE game_id = ? AND score > ?")
            .bind(game_id)
            .bind(new.score)
            .fetch_one(&db)
            .await?;
    Ok((
        StatusCode::CREATED,
        Json(ScoreRecorded {
            id,
            game_id,
            user_id: new.user_id,
            score: new.score,
            rank: better + 1,
            created_at,
        }),
    ))
}

/// One score of a replay, in the order the scores came in.
#[derive(Serialize)]
pub(crate) struct ReplayFrame {
    created_at: i64,
    user_id: i64,
    score: i64,
}

impl FromRow<'_, SqliteRow> for ReplayFrame {
    fn from_row(row: &SqliteRow) -> Result<Self, sqlx::Error> {
        Ok(ReplayFrame {
            created_at: row.try_get("created_at")?,
            user_id: row.try_get("user_id")?,
            score: row.try_get("score")?,
        })
    }
}

#[derive(Serialize)]
pub(crate) struct Replay {
    game_id: i64,
    /// When the first score came in.
    opened_at: i64,
    frames: Vec<ReplayFrame>,
}

/// Frames one replay shows at most.
const MAX_REPLAY_FRAMES: i64 = 500;

/// `GET /games/{id}/replay`: the game's scores in the order they came in.
pub(crate) async fn replay(
    State(db): State<SqlitePool>,
    Id(game_id): Id,
) -> Result<Json<Replay>, AppError> {
    let frames = sqlx::query_as::<_, ReplayFrame>(
        "SELECT created_at, user_id, score FROM scores WHERE game_id = ? \
         ORDER BY created_at, id LIMIT ?",
    )
    .bind(game_id)
    .bind(MAX_REPLAY_FRAMES)
    .fetch_all(&db)
    .await?;
    tracing::debug!(game_id, frames = frames.len(), "replay frames loaded");
    let opened_at = opening_frame(game_id, &frames).created_at;
    Ok(Json(Replay {
        game_id,
        opened_at,
        frames,
    }))
}

/// The frame a replay opens with.
///
/// A deliberate bug for the demo's error view: it assumes every replay has a frame,
/// so a game without scores (an unknown id) panics here.
fn opening_frame(game_id: i64, frames: &[ReplayFrame]) -> &ReplayFrame {
    frames
        .first()
        .unwrap_or_else(|| panic!("replay {game_id} has no frames"))
}
