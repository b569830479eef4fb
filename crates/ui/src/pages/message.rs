//! Error and notice pages (404, 400, 503): a heading, one sentence, a way back.

use leptos::prelude::*;

/// A page that only says something.
#[component]
pub(crate) fn Message(
    /// Page heading, e.g. "Project not found".
    heading: &'static str,
    /// One or two sentences; never internal error text.
    #[prop(into)]
    detail: String,
) -> impl IntoView {
    view! {
        <header class="bar">
            <a class="brand" href="/">"Sightline"</a>
        </header>
        <main class="page">
            <section class="message">
                <h1>{heading}</h1>
                <p>{detail}</p>
                <p><a href="/">"Back to the dashboard"</a></p>
            </section>
        </main>
    }
}
