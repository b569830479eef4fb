//! The Switches pages' handlers: the list, one switch with its history, and the forms
//! that flip, revert, edit conditions and edit details (label, owner, description,
//! default). Changes go through [`sightline_collector::Switchboard`]: the same checks,
//! audit rows and live publication as `/api/0/switches/`.

use axum::{
    Form,
    extract::{self, Path, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use leptos::prelude::*;
use serde::Deserialize;
use sightline_collector::{AuditFilter, ConditionEdit, SwitchDetails, SwitchRecord};

use super::{
    PageError, PageParams, UiState, frame, html_page, require_admin, same_origin, with_notice,
};
use crate::pages::{
    self, Notice, Section, SwitchDetail, SwitchFilters, SwitchPage, SwitchesList, SwitchesPage,
};

/// Latest changes shown under the list.
const RECENT_CHANGES: u32 = 15;

/// Who the audit log names for changes made here: the dashboard acts with the admin
/// credential, as the API's changes are recorded as `admin`.
const ACTOR: &str = "admin (dashboard)";

/// `GET /projects/{id}/switches?q=&state=`
pub(super) async fn switches_list(
    State(state): State<UiState>,
    Path(id): Path<String>,
    params: Result<extract::Query<PageParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let params = PageParams::from(params)?;
    let filters = SwitchFilters::from_params(params.q.as_deref(), params.state.as_deref())
        .ok_or(PageError::BadFilter)?;
    let frame = frame(&state.query, &id, &params).await?;
    let chrome = frame.chrome(
        Section::Switches,
        "/switches",
        filters.params(),
        &headers,
        &state.site,
    );
    require_admin(&state.query, &headers, chrome.ctx.here())?;
    let board = state.query.switchboard();
    let switches = board.list().await?;
    let recent = board.audit(RECENT_CHANGES, &AuditFilter::default()).await?;
    let (theme, bundle) = (chrome.theme, chrome.bundle.clone());
    let data = SwitchesList {
        chrome,
        now: frame.now,
        filters,
        switches,
        recent,
        notice: params.notice(),
    };
    let html = pages::document(theme, bundle, move || view! { <SwitchesPage data=data/> });
    Ok(html_page(StatusCode::OK, html))
}

/// `GET /projects/{id}/switches/{key}`
pub(super) async fn switch_detail(
    State(state): State<UiState>,
    Path((id, key)): Path<(String, String)>,
    params: Result<extract::Query<PageParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let params = PageParams::from(params)?;
    let frame = frame(&state.query, &id, &params).await?;
    let mut chrome = frame.chrome(
        Section::Switches,
        "/switches",
        Vec::new(),
        &headers,
        &state.site,
    );
    chrome.ctx.path = format!(
        "/projects/{}/switches/{}",
        frame.project.id,
        pages::encode_path(&key)
    );
    require_admin(&state.query, &headers, chrome.ctx.here())?;
    let board = state.query.switchboard();
    let record = board.get(&key).await?.ok_or(PageError::SwitchNotFound)?;
    let history = board.history(&key).await?;
    let parent_exists = match sightline_protocol::parent_key(&key) {
        Some(parent) => board.get(parent).await?.is_some(),
        None => false,
    };
    let (theme, bundle) = (chrome.theme, chrome.bundle.clone());
    let data = SwitchDetail {
        chrome,
        now: frame.now,
        record,
        parent_exists,
        history,
        notice: params.notice(),
    };
    let html = pages::document(theme, bundle, move || view! { <SwitchPage data=data/> });
    Ok(html_page(StatusCode::OK, html))
}

/// The flip form's fields.
#[derive(Debug, Deserialize)]
pub(super) struct FlipForm {
    state: Option<String>,
    #[serde(default)]
    reason: String,
    expected_version: Option<u64>,
    #[serde(default)]
    back: String,
}

/// The revert form's fields.
#[derive(Debug, Deserialize)]
pub(super) struct RevertForm {
    version: u64,
    #[serde(default)]
    reason: String,
    expected_version: Option<u64>,
    #[serde(default)]
    back: String,
}

/// The condition forms' fields: `edit` is `add` (with `kind`, `values`, and for an
/// attribute `name` and `op`) or `remove` (with `index`); `list` is `conditions` or
/// `exclusions`.
#[derive(Debug, Deserialize)]
pub(super) struct ConditionForm {
    edit: String,
    list: String,
    index: Option<usize>,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    values: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    op: String,
    #[serde(default)]
    reason: String,
    expected_version: Option<u64>,
    #[serde(default)]
    back: String,
}

impl ConditionForm {
    /// The edit the fields ask for; `None` when they make none.
    fn edit(&self) -> Option<ConditionEdit> {
        let exclusion = match self.list.as_str() {
            "conditions" => false,
            "exclusions" => true,
            _ => return None,
        };
        match self.edit.as_str() {
            "add" => Some(ConditionEdit::Add {
                exclusion,
                condition: pages::condition_from_form(
                    &self.kind,
                    &self.values,
                    &self.name,
                    &self.op,
                )?,
            }),
            "remove" => Some(ConditionEdit::Remove {
                exclusion,
                index: self.index?,
            }),
            _ => None,
        }
    }
}

/// What every switch form checks first: it came from our own pages, by an admin.
fn guard(state: &UiState, headers: &HeaderMap, back: &str) -> Result<(), PageError> {
    same_origin(headers)?;
    require_admin(&state.query, headers, back.to_owned())
}

/// Runs the change a form asked for with its `reason`: nothing without one,
/// [`Notice::Invalid`] when the fields make no change (`None`), otherwise the change's
/// [`outcome`]; then back to the form's page with the notice.
async fn finish(
    reason: &str,
    expected_version: Option<u64>,
    back: &str,
    done: Notice,
    change: Option<impl Future<Output = Result<SwitchRecord, sightline_collector::Error>>>,
) -> Result<Response, PageError> {
    let notice = match change {
        _ if reason.trim().is_empty() => Notice::ReasonMissing,
        Some(change) => outcome(change.await, expected_version, done)?,
        None => Notice::Invalid,
    };
    Ok(Redirect::to(&with_notice(back, notice)).into_response())
}

/// What a change tells the person who asked for it: `done`; `Unchanged` when the switch
/// stayed at the version their page showed; or why it was refused.
fn outcome(
    result: Result<SwitchRecord, sightline_collector::Error>,
    expected_version: Option<u64>,
    done: Notice,
) -> Result<Notice, PageError> {
    use sightline_collector::Error;
    match result {
        Ok(record) if Some(record.version) == expected_version => Ok(Notice::Unchanged),
        Ok(_) => Ok(done),
        Err(Error::Conflict(_)) => Ok(Notice::Conflict),
        Err(Error::BadRequest(_)) => Ok(Notice::Invalid),
        Err(Error::NotFound(_)) => Err(PageError::SwitchNotFound),
        Err(other) => Err(other.into()),
    }
}

/// `POST /projects/{id}/switches/{key}/state` with `state, reason, expected_version, back`.
pub(super) async fn set_state(
    State(state): State<UiState>,
    Path((_, key)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<FlipForm>,
) -> Result<Response, PageError> {
    guard(&state, &headers, &form.back)?;
    let target = form
        .state
        .as_deref()
        .and_then(pages::parse_state)
        .ok_or(PageError::BadForm)?;
    let change = state.query.switchboard().set_state(
        &key,
        target,
        ACTOR,
        &form.reason,
        form.expected_version,
    );
    finish(
        &form.reason,
        form.expected_version,
        &form.back,
        Notice::Flipped,
        Some(change),
    )
    .await
}

/// `POST /projects/{id}/switches/{key}/conditions`: adds or removes one condition or
/// exclusion ([`ConditionForm`]).
pub(super) async fn conditions(
    State(state): State<UiState>,
    Path((_, key)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<ConditionForm>,
) -> Result<Response, PageError> {
    guard(&state, &headers, &form.back)?;
    let change = form.edit().map(|edit| {
        state.query.switchboard().edit_conditions(
            &key,
            edit,
            ACTOR,
            &form.reason,
            form.expected_version,
        )
    });
    finish(
        &form.reason,
        form.expected_version,
        &form.back,
        Notice::ConditionsChanged,
        change,
    )
    .await
}

/// The switch page's details form: label, owner, description and the default (a
/// checkbox: absent means off), with `reason, expected_version, back`.
#[derive(Debug, Deserialize)]
pub(super) struct DetailsForm {
    #[serde(default)]
    label: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    description: String,
    default: Option<String>,
    #[serde(default)]
    reason: String,
    expected_version: Option<u64>,
    #[serde(default)]
    back: String,
}

/// `POST /projects/{id}/switches/{key}/details` ([`DetailsForm`]).
pub(super) async fn details(
    State(state): State<UiState>,
    Path((_, key)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<DetailsForm>,
) -> Result<Response, PageError> {
    guard(&state, &headers, &form.back)?;
    let details = SwitchDetails {
        label: form.label.trim().to_owned(),
        owner: form.owner.trim().to_owned(),
        // browsers send a textarea's line breaks as CRLF
        description: form.description.trim().replace("\r\n", "\n"),
        default: form
            .default
            .as_deref()
            .is_some_and(|v| matches!(v, "on" | "1" | "true")),
    };
    let change = state.query.switchboard().edit_details(
        &key,
        details,
        ACTOR,
        &form.reason,
        form.expected_version,
    );
    finish(
        &form.reason,
        form.expected_version,
        &form.back,
        Notice::DetailsChanged,
        Some(change),
    )
    .await
}

/// `POST /projects/{id}/switches/{key}/revert` with `version, reason, expected_version,
/// back`.
pub(super) async fn revert(
    State(state): State<UiState>,
    Path((_, key)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<RevertForm>,
) -> Result<Response, PageError> {
    guard(&state, &headers, &form.back)?;
    let change = state.query.switchboard().revert(
        &key,
        form.version,
        ACTOR,
        &form.reason,
        form.expected_version,
    );
    finish(
        &form.reason,
        form.expected_version,
        &form.back,
        Notice::Reverted,
        Some(change),
    )
    .await
}
