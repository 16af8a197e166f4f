"""The login page (accounts mode) and the signed-in user's corner of the header."""

from fasthtml.common import H1, Button, Div, Form, Input, Label, P, Span, Title


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
