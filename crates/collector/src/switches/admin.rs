//! The switch operations for an in-process client (the dashboard): the same checks, audit
//! rows and live publication as `/api/0/switches/`, without a round trip through HTTP,
//! and the admin-credential check that guards them.
//!
//! Reached through [`crate::Query::switchboard`], so whatever holds a read handle can
//! show switches; changing one still needs the admin credential when one is configured
//! ([`Switchboard::admits`]), exactly as the API does.

use std::sync::Arc;

use sightline_protocol::{Condition, Switch, SwitchState};

use super::{Action, AuditFilter, ChangeMeta, ChangeRecord, SwitchRecord, Switches};
use crate::Error;
use crate::http::extract::constant_time_eq;

/// One edit of a switch's conditions or exclusions, as the dashboard makes them.
#[derive(Debug, Clone, PartialEq)]
pub enum ConditionEdit {
    /// Appends `condition` to the conditions, or with `exclusion` to the exclusions.
    Add {
        exclusion: bool,
        condition: Condition,
    },
    /// Removes the condition (or exclusion) at `index`.
    Remove { exclusion: bool, index: usize },
}

/// The descriptive fields of a switch, as the dashboard's edit form sets them together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchDetails {
    /// Short human name.
    pub label: String,
    /// Who to ask about it (a person or a team).
    pub owner: String,
    /// What it guards and when to flip it.
    pub description: String,
    /// What agents use before their first snapshot (and when they cannot reach us).
    pub default: bool,
}

/// Switch administration for the dashboard. Cheap to clone.
#[derive(Clone)]
pub struct Switchboard {
    switches: Switches,
    admin_token: Option<Arc<str>>,
}

impl std::fmt::Debug for Switchboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Switchboard")
            .field("token_required", &self.admin_token.is_some())
            .finish()
    }
}

impl Switchboard {
    pub(crate) fn new(switches: Switches, admin_token: Option<Arc<str>>) -> Switchboard {
        Switchboard {
            switches,
            admin_token,
        }
    }

    /// Whether an admin token is configured: without one the API is open, and so are the
    /// dashboard's changes.
    pub fn token_required(&self) -> bool {
        self.admin_token.is_some()
    }

    /// Whether `given` is the admin credential (always, when none is configured).
    /// Compared in constant time.
    pub fn admits(&self, given: Option<&str>) -> bool {
        match &self.admin_token {
            None => true,
            Some(token) => {
                given.is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
            }
        }
    }

    /// Every switch, by key.
    pub async fn list(&self) -> Result<Vec<SwitchRecord>, Error> {
        Ok(self.switches.store()?.load_switches().await?.1)
    }

    /// One switch.
    pub async fn get(&self, key: &str) -> Result<Option<SwitchRecord>, Error> {
        self.switches.store()?.switch(key).await
    }

    /// One switch's changes, newest first.
    pub async fn history(&self, key: &str) -> Result<Vec<ChangeRecord>, Error> {
        self.switches.store()?.switch_history(key).await
    }

    /// Every change `filter` admits, newest first, at most `limit`.
    pub async fn audit(
        &self,
        limit: u32,
        filter: &AuditFilter,
    ) -> Result<Vec<ChangeRecord>, Error> {
        self.switches.store()?.switch_audit(limit, filter).await
    }

    /// Sets a switch's state, audited as `actor` with `reason` (required). With
    /// `expected_version`, 409 if the switch moved on since the client saw it.
    pub async fn set_state(
        &self,
        key: &str,
        state: SwitchState,
        actor: &str,
        reason: &str,
        expected_version: Option<u64>,
    ) -> Result<SwitchRecord, Error> {
        let meta = meta(actor, reason, expected_version)?;
        self.update(key, meta, |switch| {
            switch.state = state;
            Ok(())
        })
        .await
    }

    /// Adds or removes one condition or exclusion of a switch, audited as `actor` with
    /// `reason` (required); the result is validated as every change is. With
    /// `expected_version`, 409 if the switch moved on since the client saw it.
    pub async fn edit_conditions(
        &self,
        key: &str,
        edit: ConditionEdit,
        actor: &str,
        reason: &str,
        expected_version: Option<u64>,
    ) -> Result<SwitchRecord, Error> {
        let meta = meta(actor, reason, expected_version)?;
        self.update(key, meta, |switch| {
            match edit {
                ConditionEdit::Add {
                    exclusion,
                    condition,
                } => list_of(switch, exclusion).push(condition),
                ConditionEdit::Remove { exclusion, index } => {
                    let list = list_of(switch, exclusion);
                    if index >= list.len() {
                        return Err(Error::BadRequest(format!(
                            "the switch has no condition {index}"
                        )));
                    }
                    list.remove(index);
                }
            }
            Ok(())
        })
        .await
    }

    /// Sets a switch's label, owner, description and default together, audited as
    /// `actor` with `reason` (required); bounded and validated as the API's `PATCH`. With
    /// `expected_version`, 409 if the switch moved on since the client saw it.
    pub async fn edit_details(
        &self,
        key: &str,
        details: SwitchDetails,
        actor: &str,
        reason: &str,
        expected_version: Option<u64>,
    ) -> Result<SwitchRecord, Error> {
        let meta = meta(actor, reason, expected_version)?;
        self.update(key, meta, |switch| {
            switch.label = details.label;
            switch.owner = details.owner;
            switch.description = details.description;
            switch.default = details.default;
            Ok(())
        })
        .await
    }

    /// Changes an existing switch in place with `edit`.
    async fn update(
        &self,
        key: &str,
        meta: ChangeMeta,
        edit: impl FnOnce(&mut Switch) -> Result<(), Error>,
    ) -> Result<SwitchRecord, Error> {
        self.switches
            .change(key, Action::Update, meta, |existing| {
                let mut switch = existing.ok_or(Error::NotFound("switch"))?.switch.clone();
                edit(&mut switch)?;
                Ok(switch)
            })
            .await
    }

    /// Puts a switch back to the definition it had at `version`, recorded as a new
    /// version.
    pub async fn revert(
        &self,
        key: &str,
        version: u64,
        actor: &str,
        reason: &str,
        expected_version: Option<u64>,
    ) -> Result<SwitchRecord, Error> {
        let meta = meta(actor, reason, expected_version)?;
        self.switches.revert(key, version, meta).await
    }
}

/// A switch's conditions, or its exclusions.
fn list_of(switch: &mut Switch, exclusion: bool) -> &mut Vec<Condition> {
    if exclusion {
        &mut switch.exclusions
    } else {
        &mut switch.conditions
    }
}

/// Who changes a switch, why, and from which version: as the API checks them.
fn meta(actor: &str, reason: &str, expected_version: Option<u64>) -> Result<ChangeMeta, Error> {
    Ok(ChangeMeta {
        actor: actor.to_owned(),
        reason: super::api::reason_of(Some(reason.to_owned()))?,
        expected_version,
    })
}

impl Switches {
    /// Back to the definition of `version`, as a new version; shared by the API and the
    /// dashboard.
    pub(crate) async fn revert(
        &self,
        key: &str,
        version: u64,
        meta: ChangeMeta,
    ) -> Result<SwitchRecord, Error> {
        // Checked before the lookup so a missing reason is a 400 whatever the version.
        if meta.reason.trim().is_empty() {
            return Err(Error::BadRequest(
                "a non-empty reason is required for every change".to_owned(),
            ));
        }
        let target = self
            .store()?
            .switch_change(key, version)
            .await?
            .ok_or(Error::NotFound("switch version"))?;
        self.change(key, Action::Revert, meta, |existing| {
            existing.ok_or(Error::NotFound("switch"))?;
            Ok(target.new)
        })
        .await
    }
}
