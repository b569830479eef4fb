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

/// The admin sign-in, shown instead of a page that needs the admin credential when the
/// server has one configured (`SIGHTLINE_ADMIN_TOKEN`). The token goes into an HttpOnly,
/// same-site cookie; nothing else is remembered.
#[component]
pub(crate) fn SignIn(
    /// The page to return to.
    back: String,
    /// The last attempt had the wrong token.
    wrong: bool,
) -> impl IntoView {
    view! {
        <header class="bar">
            <a class="brand" href="/">"Sightline"</a>
        </header>
        <main class="page">
            <section class="message">
                <h1>"Admin sign-in"</h1>
                <p>"This page shows and changes data the API guards with the admin token. \
                    Enter the token the server was started with (SIGHTLINE_ADMIN_TOKEN)."</p>
                {wrong.then(|| view! { <p class="notice error" role="alert">"That is not the admin token."</p> })}
                <form class="signin" method="post" action="/signin">
                    <input type="hidden" name="back" value=back/>
                    <label>"Admin token "
                        <input type="password" name="token" required=true autocomplete="current-password"/>
                    </label>
                    <button type="submit" class="primary">"Sign in"</button>
                </form>
            </section>
        </main>
    }
}
