//! `/projects/{id}/switches`: every feature switch (they apply to every project) with its
//! state and owner, a flip form per switch, and the latest changes; and
//! `/projects/{id}/switches/{key}`: one switch, its definition, the flip form and its
//! audit history with a revert form per earlier version.
//!
//! Every change is a POST form with a required reason: it works without JavaScript, and
//! the page it returns to says what happened.

use leptos::prelude::*;
use sightline_collector::{SwitchAction, SwitchChange, SwitchRecord};
use sightline_protocol::{
    AttributeOp, Condition, MAX_DESCRIPTION_LEN, MAX_VALUE_LEN, Switch, SwitchState,
};

use super::{Chrome, Ctx, Notice, NoticeLine, TopBar};
use crate::format;

/// Longest reason the audit log keeps (as the API's).
pub(crate) const MAX_REASON_LEN: usize = 1_024;

/// The list's filters (`?q=&state=`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SwitchFilters {
    /// Words to find in the key, label or owner.
    pub(crate) text: String,
    pub(crate) state: Option<SwitchState>,
}

/// States a switch can be set to, as the forms and the API name them.
pub(crate) fn parse_state(value: &str) -> Option<SwitchState> {
    [
        SwitchState::Off,
        SwitchState::On,
        SwitchState::Selective,
        SwitchState::Inherit,
    ]
    .into_iter()
    .find(|s| s.as_str() == value)
}

impl SwitchFilters {
    pub(crate) fn from_params(text: Option<&str>, state: Option<&str>) -> Option<SwitchFilters> {
        let text = text.unwrap_or("").trim();
        if text.len() > super::errors::MAX_FILTER_LEN {
            return None;
        }
        let state = match state.unwrap_or("") {
            "" => None,
            other => Some(parse_state(other)?),
        };
        Some(SwitchFilters {
            text: text.to_owned(),
            state,
        })
    }

    pub(crate) fn params(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !self.text.is_empty() {
            out.push(("q", self.text.clone()));
        }
        if let Some(state) = self.state {
            out.push(("state", state.as_str().to_owned()));
        }
        out
    }

    pub(crate) fn matches(&self, switch: &Switch) -> bool {
        let needle = self.text.to_lowercase();
        self.state.is_none_or(|s| s == switch.state)
            && (needle.is_empty()
                || [&switch.key, &switch.label, &switch.owner]
                    .iter()
                    .any(|field| field.to_lowercase().contains(&needle)))
    }
}

/// What the switches list shows.
#[derive(Debug, Clone)]
pub(crate) struct SwitchesList {
    pub(crate) chrome: Chrome,
    pub(crate) now: i64,
    pub(crate) filters: SwitchFilters,
    /// Every switch, by key (filtered here).
    pub(crate) switches: Vec<SwitchRecord>,
    /// The latest changes of any switch, newest first.
    pub(crate) recent: Vec<SwitchChange>,
    pub(crate) notice: Option<Notice>,
}

/// What a switch's page shows.
#[derive(Debug, Clone)]
pub(crate) struct SwitchDetail {
    pub(crate) chrome: Chrome,
    pub(crate) now: i64,
    pub(crate) record: SwitchRecord,
    /// The parent switch (`a` of `a:b`) exists.
    pub(crate) parent_exists: bool,
    /// Newest first.
    pub(crate) history: Vec<SwitchChange>,
    pub(crate) notice: Option<Notice>,
}

/// A state as a coloured label.
#[component]
fn StateBadge(state: SwitchState) -> impl IntoView {
    view! { <span class=format!("badge state-{}", state.as_str())>{state.as_str()}</span> }
}

/// The link to a switch's page.
fn switch_href(ctx: &Ctx, key: &str) -> String {
    ctx.link(&format!("/switches/{}", super::encode_path(key)), &[])
}

/// Where a switch's forms post to.
fn action_href(project: u64, key: &str, what: &str) -> String {
    format!(
        "/projects/{project}/switches/{}/{what}",
        super::encode_path(key)
    )
}

/// Condition kinds as the add form names them, with what its values field means.
const CONDITION_KINDS: [(&str, &str); 6] = [
    ("percentage", "Percentage of users (sticky)"),
    ("users", "User ids"),
    ("ip", "IP addresses or CIDR blocks"),
    ("host", "Hosts"),
    ("environment", "Environments"),
    ("attribute", "App attribute"),
];

/// Attribute comparisons as the add form names them.
const ATTRIBUTE_OPS: [(AttributeOp, &str); 3] = [
    (AttributeOp::Equals, "equals"),
    (AttributeOp::In, "in"),
    (AttributeOp::Prefix, "prefix"),
];

/// A condition from the add form's fields: `kind` (one of [`CONDITION_KINDS`]), `values`
/// (comma- or newline-separated; for a percentage one number, `%` allowed) and, for an
/// attribute, its `name` and comparison `op`. `None` when the fields make no condition;
/// bounds (percent range, CIDR syntax, lengths) are the switch's own validation.
pub(crate) fn condition_from_form(
    kind: &str,
    values: &str,
    name: &str,
    op: &str,
) -> Option<Condition> {
    let list: Vec<String> = values
        .split([',', '\n'])
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect();
    if list.is_empty() {
        return None;
    }
    Some(match kind {
        "percentage" => {
            let [value] = list.as_slice() else {
                return None;
            };
            Condition::Percentage {
                percent: value.trim_end_matches('%').trim().parse().ok()?,
            }
        }
        "users" => Condition::Users { ids: list },
        "ip" => Condition::Ip { cidrs: list },
        "host" => Condition::Host { hosts: list },
        "environment" => Condition::Environment { environments: list },
        "attribute" => Condition::Attribute {
            name: Some(name.trim()).filter(|n| !n.is_empty())?.to_owned(),
            op: ATTRIBUTE_OPS
                .into_iter()
                .find(|(_, text)| *text == op)
                .map(|(op, _)| op)?,
            values: list,
        },
        _ => return None,
    })
}

/// One condition in words: `25 % of users`, `user id in a, b`, ….
pub(crate) fn describe(condition: &Condition) -> String {
    match condition {
        Condition::Percentage { percent } => format!("{percent} % of users"),
        Condition::Users { ids } => format!("user id in {}", ids.join(", ")),
        Condition::Ip { cidrs } => format!("client IP in {}", cidrs.join(", ")),
        Condition::Host { hosts } => format!("host in {}", hosts.join(", ")),
        Condition::Environment { environments } => {
            format!("environment in {}", environments.join(", "))
        }
        Condition::Attribute { name, op, values } => {
            let op = ATTRIBUTE_OPS
                .into_iter()
                .find(|(o, _)| o == op)
                .map_or("?", |(_, text)| text);
            format!("attribute {name} {op} {}", values.join(", "))
        }
    }
}

/// A switch's conditions or exclusions, each with a remove form (reason required).
#[component]
fn ConditionList(
    project: u64,
    record: SwitchRecord,
    back: String,
    /// The exclusions rather than the conditions.
    exclusion: bool,
) -> impl IntoView {
    let key = record.switch.key.clone();
    let list = if exclusion {
        record.switch.exclusions.clone()
    } else {
        record.switch.conditions.clone()
    };
    if list.is_empty() {
        return view! { <p class="muted">"None."</p> }.into_any();
    }
    let which = if exclusion {
        "exclusions"
    } else {
        "conditions"
    };
    let rows = list
        .iter()
        .enumerate()
        .map(|(index, condition)| {
            let reason_id = format!("remove-{which}-{index}");
            view! {
                <li data-condition=index>
                    <span class="condition-text">{describe(condition)}</span>
                    <details class="flip-inline">
                        <summary>"Remove…"</summary>
                        <form class="flip condition-remove" method="post"
                            action=action_href(project, &key, "conditions")>
                            <input type="hidden" name="back" value=back.clone()/>
                            <input type="hidden" name="expected_version"
                                value=record.version.to_string()/>
                            <input type="hidden" name="edit" value="remove"/>
                            <input type="hidden" name="list" value=which/>
                            <input type="hidden" name="index" value=index.to_string()/>
                            <label for=reason_id.clone()>"Reason (required)"</label>
                            <input id=reason_id type="text" name="reason" required=true
                                maxlength=MAX_REASON_LEN/>
                            <button type="submit">"Remove"</button>
                        </form>
                    </details>
                </li>
            }
        })
        .collect_view();
    view! { <ul class=format!("conditions {which}")>{rows}</ul> }.into_any()
}

/// Adds a condition (turns the switch on when selective) or an exclusion (keeps it off,
/// winning over every condition).
#[component]
fn ConditionForm(project: u64, record: SwitchRecord, back: String) -> impl IntoView {
    let key = record.switch.key.clone();
    let kinds = CONDITION_KINDS
        .into_iter()
        .map(|(value, label)| view! { <option value=value>{label}</option> })
        .collect_view();
    let ops = ATTRIBUTE_OPS
        .into_iter()
        .map(|(_, text)| view! { <option value=text>{text}</option> })
        .collect_view();
    view! {
        <form class="flip condition-add" method="post" action=action_href(project, &key, "conditions")>
            <input type="hidden" name="back" value=back/>
            <input type="hidden" name="expected_version" value=record.version.to_string()/>
            <input type="hidden" name="edit" value="add"/>
            <fieldset class="states">
                <legend>"Adds"</legend>
                <label class="choice">
                    <input type="radio" name="list" value="conditions" checked=true/>
                    <span>"A condition"<small>" turns it on when selective"</small></span>
                </label>
                <label class="choice">
                    <input type="radio" name="list" value="exclusions"/>
                    <span>"An exclusion"<small>" keeps it off, over any condition"</small></span>
                </label>
            </fieldset>
            <label for="condition-kind">"Kind"</label>
            <select id="condition-kind" name="kind">{kinds}</select>
            <label for="condition-values">"Values"</label>
            <input id="condition-values" type="text" name="values" required=true
                placeholder="25 for a percentage; otherwise comma-separated ids, CIDRs, hosts, …"/>
            <label for="condition-name">"Attribute name and comparison (app attribute only)"</label>
            <div class="inline">
                <input id="condition-name" type="text" name="name" placeholder="e.g. plan"/>
                <select name="op" aria-label="comparison">{ops}</select>
            </div>
            <label for="condition-reason">"Reason (required, kept in the audit log)"</label>
            <input id="condition-reason" type="text" name="reason" required=true
                maxlength=MAX_REASON_LEN placeholder="e.g. open to the beta customers"/>
            <button type="submit" class="primary">"Add"</button>
        </form>
    }
}

/// Off / on / selective (and inherit for a child switch), a required reason, apply.
#[component]
fn FlipForm(
    project: u64,
    record: SwitchRecord,
    back: String,
    /// The parent switch (`a` of `a:b`) exists, so inheriting from it means something.
    parent_exists: bool,
) -> impl IntoView {
    let key = record.switch.key.clone();
    let mut states = vec![
        (SwitchState::Off, "Off", "for everyone"),
        (SwitchState::On, "On", "for everyone"),
        (
            SwitchState::Selective,
            "Selective",
            "where a condition matches",
        ),
    ];
    if parent_exists || record.switch.state == SwitchState::Inherit {
        states.push((SwitchState::Inherit, "Inherit", "the parent's state"));
    }
    let radios = states
        .into_iter()
        .map(|(state, label, hint)| {
            let current = state == record.switch.state;
            view! {
                <label class="choice">
                    <input type="radio" name="state" value=state.as_str() checked=current required=true/>
                    <span>{label}<small>{format!(" {hint}")}{current.then_some(" (now)")}</small></span>
                </label>
            }
        })
        .collect_view();
    let reason_id = format!("reason-{key}");
    view! {
        <form class="flip" method="post" action=action_href(project, &key, "state")>
            <input type="hidden" name="back" value=back/>
            <input type="hidden" name="expected_version" value=record.version.to_string()/>
            <fieldset class="states">
                <legend>"State"</legend>
                {radios}
            </fieldset>
            <label for=reason_id.clone()>"Reason (required, kept in the audit log)"</label>
            <input id=reason_id type="text" name="reason" required=true maxlength=MAX_REASON_LEN
                placeholder="e.g. p99 doubled after the 14:00 deploy"/>
            <button type="submit" class="primary">"Apply"</button>
        </form>
    }
}

/// Label, owner, description and default, changed together with a required reason.
#[component]
fn DetailsForm(project: u64, record: SwitchRecord, back: String) -> impl IntoView {
    let s = record.switch;
    view! {
        <details class="edit-details">
            <summary>"Edit label, owner and description"</summary>
            <form class="flip details" method="post" action=action_href(project, &s.key, "details")>
                <input type="hidden" name="back" value=back/>
                <input type="hidden" name="expected_version" value=record.version.to_string()/>
                <label>"Label"
                    <input type="text" name="label" value=s.label maxlength=MAX_VALUE_LEN/>
                </label>
                <label>"Owner"
                    <input type="text" name="owner" value=s.owner maxlength=MAX_VALUE_LEN
                        placeholder="a person or a team"/>
                </label>
                <label>"Description"
                    <textarea name="description" rows="4" maxlength=MAX_DESCRIPTION_LEN>
                        {format::textarea_text(&s.description)}
                    </textarea>
                </label>
                <label class="choice">
                    <input type="checkbox" name="default" value="on" checked=s.default/>
                    <span>"On before the first sync"<small>" (what agents use until they reach Sightline)"</small></span>
                </label>
                <label>"Reason (required, kept in the audit log)"
                    <input type="text" name="reason" required=true maxlength=MAX_REASON_LEN/>
                </label>
                <button type="submit">"Save"</button>
            </form>
        </details>
    }
}

/// What a change did, field by field: `state off → on`, `conditions changed`, ….
fn changes(old: Option<&Switch>, new: &Switch) -> Vec<String> {
    let Some(old) = old else {
        return vec![format!("created, {}", new.state.as_str())];
    };
    let mut out = Vec::new();
    if old.state != new.state {
        out.push(format!(
            "state {} → {}",
            old.state.as_str(),
            new.state.as_str()
        ));
    }
    let mut text = |name: &str, a: &str, b: &str| {
        if a != b {
            out.push(format!("{name} “{a}” → “{b}”"));
        }
    };
    text("label", &old.label, &new.label);
    text("owner", &old.owner, &new.owner);
    if old.description != new.description {
        out.push("description changed".to_owned());
    }
    if old.default != new.default {
        out.push(format!("default {} → {}", old.default, new.default));
    }
    if old.conditions != new.conditions {
        out.push("conditions changed".to_owned());
    }
    if old.exclusions != new.exclusions {
        out.push("exclusions changed".to_owned());
    }
    out
}

/// Audit rows: who, when, what, why; with `revert`, a revert form on each earlier version.
#[component]
fn AuditTable(
    ctx: Ctx,
    now: i64,
    rows: Vec<SwitchChange>,
    /// The switch's current version: the revert forms go on the other rows.
    revert: Option<(u64, String)>,
    /// Show the switch key column (the all-switches log).
    with_key: bool,
) -> impl IntoView {
    let body = rows
        .into_iter()
        .map(|c| {
            let what = changes(c.old.as_ref(), &c.new).join("; ");
            let key_cell = with_key.then(|| {
                view! { <td><a href=switch_href(&ctx, &c.key)><code>{c.key.clone()}</code></a></td> }
            });
            let revert_cell = revert.as_ref().map(|(current, back)| {
                let form = (c.version != *current).then(|| {
                    view! {
                        <form class="revert" method="post" action=action_href(ctx.project, &c.key, "revert")>
                            <input type="hidden" name="back" value=back.clone()/>
                            <input type="hidden" name="version" value=c.version.to_string()/>
                            <input type="hidden" name="expected_version" value=current.to_string()/>
                            <input type="text" name="reason" required=true maxlength=MAX_REASON_LEN
                                placeholder="reason" aria-label=format!("Reason to revert to version {}", c.version)/>
                            <button type="submit">{format!("Revert to v{}", c.version)}</button>
                        </form>
                    }
                });
                view! { <td>{form}</td> }
            });
            let action = match c.action {
                SwitchAction::Create => "create",
                SwitchAction::Update => "update",
                SwitchAction::Revert => "revert",
            };
            view! {
                <tr data-version=c.version.to_string()>
                    {key_cell}
                    <td class="num">{format!("v{}", c.version)}</td>
                    <td title=format::date_time(c.at)>{format::ago(c.at, now)}</td>
                    <td class="who">{c.actor.clone()}</td>
                    <td class="opt">{action}</td>
                    <td class="what wrap">{what}</td>
                    <td class="why wrap">{c.reason.clone()}</td>
                    {revert_cell}
                </tr>
            }
        })
        .collect_view();
    view! {
        <div class="table-wrap">
            <table class="audit">
                <thead>
                    <tr>
                        {with_key.then(|| view! { <th scope="col">"Switch"</th> })}
                        <th scope="col" class="num">"Version"</th>
                        <th scope="col">"When"</th>
                        <th scope="col">"Who"</th>
                        <th scope="col" class="opt">"Action"</th>
                        <th scope="col">"Old → new"</th>
                        <th scope="col">"Reason"</th>
                        {revert.is_some().then(|| view! { <th scope="col">"Revert"</th> })}
                    </tr>
                </thead>
                <tbody>{body}</tbody>
            </table>
        </div>
    }
}

#[component]
pub(crate) fn SwitchesPage(data: SwitchesList) -> impl IntoView {
    let SwitchesList {
        chrome,
        now,
        filters,
        switches,
        recent,
        notice,
    } = data;
    let ctx = chrome.ctx.clone();
    let total = switches.len();
    let all_keys: Vec<String> = switches.iter().map(|r| r.switch.key.clone()).collect();
    let shown: Vec<SwitchRecord> = switches
        .into_iter()
        .filter(|r| filters.matches(&r.switch))
        .collect();
    let keys: std::collections::HashSet<String> = all_keys.into_iter().collect();
    let back = ctx.here();
    let state_options = std::iter::once(("", "Any state"))
        .chain([
            ("off", "off"),
            ("on", "on"),
            ("selective", "selective"),
            ("inherit", "inherit"),
        ])
        .map(|(value, label)| {
            let selected = filters.state.map_or("", SwitchState::as_str) == value;
            view! { <option value=value selected=selected>{label}</option> }
        })
        .collect_view();
    let hidden = ctx.hidden_fields();
    let table = if shown.is_empty() {
        let text = if total == 0 {
            "No switches yet. Create them through the API (POST /api/0/switches/)."
        } else {
            "No switch matches these filters."
        };
        view! { <p class="empty">{text}</p> }.into_any()
    } else {
        let rows = shown
            .into_iter()
            .map(|record| {
                let s = &record.switch;
                let key = s.key.clone();
                let parent_exists = sightline_protocol::parent_key(&key)
                    .is_some_and(|parent| keys.contains(parent));
                view! {
                    <tr data-key=key.clone()>
                        <td class="key"><a href=switch_href(&ctx, &key)><code>{key.clone()}</code></a></td>
                        <td class="label wrap">{s.label.clone()}</td>
                        <td class="state-cell"><StateBadge state=s.state/></td>
                        <td class="opt">{s.owner.clone()}</td>
                        <td class="opt" title=format::date_time(record.updated_at)>
                            {format!("v{} · {}", record.version, format::ago(record.updated_at, now))}
                        </td>
                        <td>
                            <details class="flip-inline">
                                <summary>"Flip…"</summary>
                                <FlipForm project=ctx.project record=record.clone() back=back.clone()
                                    parent_exists=parent_exists/>
                            </details>
                        </td>
                    </tr>
                }
            })
            .collect_view();
        view! {
            <div class="table-wrap">
                <table class="switches">
                    <thead>
                        <tr>
                            <th scope="col">"Key"</th>
                            <th scope="col">"Label"</th>
                            <th scope="col">"State"</th>
                            <th scope="col" class="opt">"Owner"</th>
                            <th scope="col" class="opt">"Changed"</th>
                            <th scope="col"><span class="sr-only">"Change"</span></th>
                        </tr>
                    </thead>
                    <tbody>{rows}</tbody>
                </table>
            </div>
        }
        .into_any()
    };
    let recent_view = (!recent.is_empty()).then(|| {
        view! {
            <h2>"Latest changes"</h2>
            <AuditTable ctx=ctx.clone() now=now rows=recent revert=None with_key=true/>
        }
    });
    view! {
        <TopBar chrome=chrome/>
        <main class="page">
            <div class="page-head">
                <div>
                    <h1>"Switches"</h1>
                    <p class="sub">"Feature switches apply to every project; a change reaches connected agents within a second."</p>
                </div>
            </div>
            <NoticeLine notice=notice/>
            <form class="filters" method="get" action=ctx.path.clone() role="search">
                {hidden}
                <label class="grow">
                    <span>"Search"</span>
                    <input type="search" name="q" value=filters.text.clone() placeholder="key, label or owner"/>
                </label>
                <label><span>"State"</span><select name="state">{state_options}</select></label>
                <button type="submit">"Apply"</button>
            </form>
            {table}
            {recent_view}
        </main>
    }
}

#[component]
pub(crate) fn SwitchPage(data: SwitchDetail) -> impl IntoView {
    let SwitchDetail {
        chrome,
        now,
        record,
        parent_exists,
        history,
        notice,
    } = data;
    let ctx = chrome.ctx.clone();
    let back = ctx.here();
    let list = ctx.link("/switches", &[]);
    let s = record.switch.clone();
    let or_dash = |text: &str| {
        if text.is_empty() {
            "–".to_owned()
        } else {
            text.to_owned()
        }
    };
    let owner = or_dash(&s.owner);
    let description = or_dash(&s.description);
    view! {
        <TopBar chrome=chrome/>
        <main class="page">
            <p class="crumbs"><a href=list>"← Switches"</a></p>
            <div class="page-head">
                <div>
                    <h1><code>{s.key.clone()}</code></h1>
                    <p class="note">{s.label.clone()}</p>
                </div>
                <StateBadge state=s.state/>
            </div>
            <NoticeLine notice=notice/>
            <div class="issue-grid">
                <div class="issue-main">
                    <section class="panel">
                        <h2>"Flip"</h2>
                        <FlipForm project=ctx.project record=record.clone() back=back.clone()
                            parent_exists=parent_exists/>
                    </section>
                    <section class="panel">
                        <h2>"Conditions"</h2>
                        <h3>"Any turns it on (when selective)"</h3>
                        <ConditionList project=ctx.project record=record.clone() back=back.clone()
                            exclusion=false/>
                        <h3>"Exclusions (win over conditions)"</h3>
                        <ConditionList project=ctx.project record=record.clone() back=back.clone()
                            exclusion=true/>
                        <h3>"Add"</h3>
                        <ConditionForm project=ctx.project record=record.clone() back=back.clone()/>
                    </section>
                </div>
                <aside class="issue-side">
                    <section class="panel">
                        <h2>"Definition"</h2>
                        <dl class="facts">
                            <dt>"Owner"</dt><dd>{owner}</dd>
                            <dt>"Description"</dt><dd>{description}</dd>
                            <dt>"Before the first sync"</dt><dd>{if s.default { "on" } else { "off" }}</dd>
                            <dt>"Version"</dt><dd>{format!("v{}", record.version)}</dd>
                            <dt>"State since"</dt><dd title=format::date_time(record.state_since)>{format::ago(record.state_since, now)}</dd>
                        </dl>
                        <DetailsForm project=ctx.project record=record.clone() back=back.clone()/>
                    </section>
                </aside>
            </div>
            <section class="panel">
                <h2>"History"</h2>
                <AuditTable ctx=ctx.clone() now=now rows=history
                    revert=Some((record.version, back)) with_key=false/>
            </section>
        </main>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_add_form_makes_each_kind_of_condition() {
        let users = condition_from_form("users", " alice,bob\n carol ,, ", "", "");
        assert_eq!(
            users,
            Some(Condition::Users {
                ids: vec!["alice".into(), "bob".into(), "carol".into()]
            })
        );
        assert_eq!(
            condition_from_form("percentage", "12.5 %", "", ""),
            Some(Condition::Percentage { percent: 12.5 })
        );
        assert_eq!(
            condition_from_form("attribute", "pro", " plan ", "equals"),
            Some(Condition::Attribute {
                name: "plan".into(),
                op: AttributeOp::Equals,
                values: vec!["pro".into()]
            })
        );
        for (kind, values, name, op) in [
            ("percentage", "10, 20", "", ""),
            ("percentage", "ten", "", ""),
            ("users", " , ", "", ""),
            ("attribute", "pro", "", "equals"),
            ("attribute", "pro", "plan", "like"),
            ("weekday", "monday", "", ""),
        ] {
            assert_eq!(
                condition_from_form(kind, values, name, op),
                None,
                "{kind} {values}"
            );
        }
        // every kind the form offers parses
        for (kind, _) in CONDITION_KINDS {
            let values = if kind == "percentage" {
                "5"
            } else {
                "10.0.0.0/8"
            };
            assert!(
                condition_from_form(kind, values, "plan", "in").is_some(),
                "{kind}"
            );
        }
    }

    #[test]
    fn conditions_read_as_words() {
        let op = |op| Condition::Attribute {
            name: "plan".into(),
            op,
            values: vec!["pro".into(), "team".into()],
        };
        assert_eq!(
            describe(&op(AttributeOp::In)),
            "attribute plan in pro, team"
        );
        assert_eq!(
            describe(&op(AttributeOp::Prefix)),
            "attribute plan prefix pro, team"
        );
        assert_eq!(
            describe(&Condition::Percentage { percent: 25.0 }),
            "25 % of users"
        );
        assert_eq!(
            describe(&Condition::Ip {
                cidrs: vec!["10.0.0.0/8".into()]
            }),
            "client IP in 10.0.0.0/8"
        );
    }
}
