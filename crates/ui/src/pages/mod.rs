//! Pages: each renders plain data (no store access) into a complete HTML document.

mod message;
mod overview;

use leptos::prelude::*;

pub(crate) use message::Message;
pub(crate) use overview::{Overview, OverviewPage};

use crate::{assets, period::Period};

/// A project as the pages show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProjectLink {
    pub(crate) id: u64,
    pub(crate) name: String,
}

/// Renders a page component into a complete HTML5 document.
pub(crate) fn document(page: impl IntoView + 'static) -> String {
    view! { <Shell>{page}</Shell> }.to_html()
}

/// `<!DOCTYPE html>`, `<head>` and `<body>` around a page.
#[component]
fn Shell(children: Children) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="color-scheme" content="light dark"/>
                <title>"Sightline"</title>
                <link rel="stylesheet" href=assets::css_href()/>
            </head>
            <body>{children()}</body>
        </html>
    }
}

/// The top bar: the product name and, when known, a link per project (the current one marked).
#[component]
fn TopBar(
    /// Projects to link to; empty on error pages.
    projects: Vec<ProjectLink>,
    /// The project being shown, if any.
    current: Option<u64>,
    /// Kept when switching projects.
    period: Period,
) -> impl IntoView {
    let links = projects
        .into_iter()
        .map(|p| {
            let here = (Some(p.id) == current).then_some("page");
            view! { <a href=project_href(p.id, period) aria-current=here>{p.name}</a> }
        })
        .collect_view();
    view! {
        <header class="bar">
            <a class="brand" href="/">"Sightline"</a>
            <nav class="projects" aria-label="Projects">{links}</nav>
        </header>
    }
}

/// Link to a project's overview; the default period is left out of the URL.
pub(crate) fn project_href(id: u64, period: Period) -> String {
    if period == Period::default() {
        format!("/projects/{id}")
    } else {
        format!("/projects/{id}?statsPeriod={}", period.as_str())
    }
}
