//! Extractors shared by the endpoints; each rejects with [`Error`], so every refusal
//! goes through the one `IntoResponse` impl.

use axum::extract::{FromRef, FromRequestParts, Path};
use axum::http::{HeaderMap, Uri, header, request::Parts};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{Error, Project, Query};

/// The project key a Sentry-style client authenticates with, from (in this order)
/// `X-Sentry-Auth: Sentry sentry_key=…`, `Authorization: Sentry sentry_key=…`, or the
/// `?sentry_key=` query parameter. Rejects with 401 when there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SentryKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for SentryKey {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        key_from_headers(&parts.headers)
            .or_else(|| key_from_query(&parts.uri))
            .map(SentryKey)
            .ok_or(Error::MissingKey)
    }
}

fn key_from_headers(headers: &HeaderMap) -> Option<String> {
    ["x-sentry-auth", header::AUTHORIZATION.as_str()]
        .into_iter()
        .flat_map(|name| headers.get_all(name))
        .filter_map(|value| value.to_str().ok())
        .find_map(key_from_auth)
}

/// `Sentry sentry_version=7, sentry_client=…, sentry_key=<key>` → `<key>`.
fn key_from_auth(value: &str) -> Option<String> {
    let (scheme, params) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("sentry") {
        return None;
    }
    params
        .split(',')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| name.trim() == "sentry_key")
        .map(|(_, key)| key.trim().to_owned())
        .filter(|key| !key.is_empty())
}

fn key_from_query(uri: &Uri) -> Option<String> {
    #[derive(Deserialize)]
    struct KeyParam {
        sentry_key: Option<String>,
    }
    axum::extract::Query::<KeyParam>::try_from_uri(uri)
        .ok()?
        .0
        .sentry_key
        .filter(|key| !key.is_empty())
}

/// The `{project_id}` path segment as a number (400 otherwise).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProjectId(pub u64);

impl<S: Send + Sync> FromRequestParts<S> for ProjectId {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        Path::<u64>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| ProjectId(id))
            .map_err(|_| Error::BadRequest("project id must be a number".to_owned()))
    }
}

/// The addressed project and the key the request's headers or query string carry, if
/// any, before deciding whether that key (or one found later in the body) is right.
///
/// Sentry envelopes may carry their key only in the envelope header's `dsn`, which is
/// known once the body is read: [`ClaimedProject::authorize`] takes that late key. A
/// request that does carry a key in its headers is refused at once when it is wrong,
/// before its body is read. 404 for an unknown project.
#[derive(Debug, Clone)]
pub(crate) struct ClaimedProject {
    project: Project,
    key: Option<String>,
}

impl<S> FromRequestParts<S> for ClaimedProject
where
    S: Send + Sync,
    Query: FromRef<S>,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let key = key_from_headers(&parts.headers).or_else(|| key_from_query(&parts.uri));
        let ProjectId(id) = ProjectId::from_request_parts(parts, state).await?;
        let project = Query::from_ref(state)
            .project(id)
            .await?
            .ok_or(Error::ProjectNotFound)?;
        let claimed = ClaimedProject { project, key };
        if let Some(key) = &claimed.key {
            claimed.check(key)?;
        }
        Ok(claimed)
    }
}

impl ClaimedProject {
    /// The project, when the request's own key is right or, lacking one, `late_key` is:
    /// 401 without any key, 403 for another project's key.
    pub(crate) fn authorize(self, late_key: Option<&str>) -> Result<Project, Error> {
        let key = self.key.as_deref().or(late_key).ok_or(Error::MissingKey)?;
        self.check(key)?;
        Ok(self.project)
    }

    fn check(&self, key: &str) -> Result<(), Error> {
        if constant_time_eq(self.project.public_key.as_bytes(), key.as_bytes()) {
            Ok(())
        } else {
            Err(Error::WrongKey)
        }
    }
}

/// The addressed project, after checking the request's [`SentryKey`] belongs to it:
/// 401 without a key, 404 for an unknown project, 403 for another project's key.
#[derive(Debug, Clone)]
pub(crate) struct AuthedProject(pub Project);

impl<S> FromRequestParts<S> for AuthedProject
where
    S: Send + Sync,
    Query: FromRef<S>,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        // A missing key is reported before an unknown project, as it always was.
        SentryKey::from_request_parts(parts, state).await?;
        let claimed = ClaimedProject::from_request_parts(parts, state).await?;
        claimed.authorize(None).map(AuthedProject)
    }
}

/// Query-string parameters, with a 400 naming the bad parameter when they do not parse.
#[derive(Debug, Clone)]
pub(crate) struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|rejection| Error::BadRequest(rejection.body_text()))
    }
}

/// Compares secrets in time that depends only on their length, so response timing does
/// not reveal how much of a guessed token was right.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    async fn key_of(request: Request<()>) -> Result<SentryKey, Error> {
        let (mut parts, ()) = request.into_parts();
        SentryKey::from_request_parts(&mut parts, &()).await
    }

    #[tokio::test]
    async fn finds_the_key_wherever_sentry_clients_put_it() {
        let with = |name: &str, value: &str| {
            Request::builder()
                .uri("/api/1/metrics")
                .header(name, value)
                .body(())
                .unwrap()
        };
        let expected = SentryKey("abc123".into());
        let auth = "Sentry sentry_version=7, sentry_client=agent/0.1, sentry_key=abc123";
        assert_eq!(key_of(with("X-Sentry-Auth", auth)).await.unwrap(), expected);
        assert_eq!(key_of(with("Authorization", auth)).await.unwrap(), expected);
        assert_eq!(
            key_of(with("x-sentry-auth", "sentry sentry_key=abc123"))
                .await
                .unwrap(),
            expected
        );
        let query = Request::builder()
            .uri("/api/1/metrics?sentry_version=7&sentry_key=abc123")
            .body(())
            .unwrap();
        assert_eq!(key_of(query).await.unwrap(), expected);
    }

    #[tokio::test]
    async fn a_request_without_a_usable_key_is_refused() {
        for (name, value) in [
            ("Authorization", "Bearer abc123"),
            ("X-Sentry-Auth", "Sentry sentry_version=7"),
            ("X-Sentry-Auth", "Sentry sentry_key="),
            ("X-Other", "sentry_key=abc123"),
        ] {
            let request = Request::builder()
                .uri("/api/1/metrics?sentry_key=")
                .header(name, value)
                .body(())
                .unwrap();
            assert!(
                matches!(key_of(request).await, Err(Error::MissingKey)),
                "{name}: {value}"
            );
        }
    }

    #[test]
    fn compares_secrets_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(constant_time_eq(b"", b""));
    }
}
