//! User profiles with their activity stats.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, Row, SqlitePool};

use crate::error::AppError;
use crate::extract::Id;

#[derive(Serialize)]
pub(crate) struct UserStats {
    comments: i64,
    /// Sum of the scores of the user's comments.
    karma: i64,
    votes_cast: i64,
    games_played: i64,
    best_score: Option<i64>,
}

#[derive(Serialize)]
pub(crate) struct Profile {
    id: i64,
    username: String,
    display_name: String,
    bio: String,
    location: String,
    created_at: i64,
    stats: UserStats,
}

impl FromRow<'_, SqliteRow> for Profile {
    fn from_row(row: &SqliteRow) -> Result<Self, sqlx::Error> {
        Ok(Profile {
            id: row.try_get("id")?,
            username: row.try_get("username")?,
            display_name: row.try_get("display_name")?,
            bio: row.try_get("bio")?,
            location: row.try_get("location")?,
            created_at: row.try_get("created_at")?,
            stats: UserStats {
                comments: row.try_get("comments")?,
                karma: row.try_get("karma")?,
                votes_cast: row.try_get("votes_cast")?,
                games_played: row.try_get("games_played")?,
                best_score: row.try_get("best_score")?,
            },
        })
    }
}

/// `GET /users/{id}`: the user's profile and activity stats.
pub(crate) async fn show(
    State(db): State<SqlitePool>,
    Id(id): Id,
) -> Result<Json<Profile>, AppError> {
    let profile = sqlx::query_as::<_, Profile>(
        "SELECT u.id, u.username, u.created_at, p.display_name, p.bio, p.location, \
            (SELECT COUNT(id) FROM comments WHERE author_id = u.id) AS comments, \
            (SELECT COALESCE(SUM(score), 0) FROM comments WHERE author_id = u.id) AS karma, \
            (SELECT COUNT(comment_id) FROM votes WHERE user_id = u.id) AS votes_cast, \
            (SELECT COUNT(id) FROM scores WHERE user_id = u.id) AS games_played, \
            (SELECT MAX(score) FROM scores WHERE user_id = u.id) AS best_score \
         FROM users u JOIN profiles p ON p.user_id = u.id WHERE u.id = ?",
    )
    .bind(id)
    .fetch_optional(&db)
    .await?
    .ok_or(AppError::NotFound)?;
    Ok(Json(profile))
}
