"""The login page (accounts mode), the signed-in user's corner of the header, and what a tab shows once its
access was revoked."""

from fasthtml.common import H1, A, Button, Div, Form, Input, Label, P, Span, Title

from quanda.components import ids


def LoginPage(error: str = "", name: str = ""):
    return (
        Title("Sign in · Quanda"),
        Div(
            H1("Quanda"),
            Form(
                Label("User name", Input(name="username", value=name, autocomplete="username", required=True,
                                         autofocus=True, id="login-user")),
                Label("Password", Input(name="password", type="password", autocomplete="current-password",
                                        required=True, id="login-password")),
                P(error, cls="error", role="alert", id="login-error") if error else "",
                Button("Sign in", type="submit", id="login-submit"),
                method="post", action="/login", cls="login-form",
            ),
            cls="login card",
        ),
    )


def AccountBar(name: str):
    return Div(Span(name, cls="account-name", id="account-name"),
               Form(Button("Sign out", type="submit", cls="secondary small", id="logout"), method="post",
                    action="/logout", cls="inline"),
               cls="account")


def SignedOut(reason: str):
    """The page's notice once the tab's access was revoked ("signed out: your password was changed"): it stays
    (no close button), and the page stops (static/quanda.js: the socket is closed with 1008 and not reopened)."""
    return Div(Span(reason, cls="notice-text"), A("Sign in again", href="/login", cls="signed-out-login"),
               id=ids.NOTICE, cls="notice error signed-out", role="alert", hx_swap_oob="true")
