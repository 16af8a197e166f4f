"""create_app(settings, store=None): the web app around the Quanda core (placeholder until the app issue)."""

from __future__ import annotations


from fasthtml.common import H1, P, Titled, fast_app

from app.config import Settings
from app.quanda import open_store


def create_app(settings: Settings | None = None, store=None):
    settings = settings or Settings.from_env()

    async def lifespan(app):
        app.state.store = store or await open_store(settings.db_url, max_token_bytes=settings.max_token_bytes,
                                                    max_message_bytes=settings.max_message_bytes)
        yield
        if store is None:
            await app.state.store.close()

    app, rt = fast_app(default_hdrs=False, lifespan=lifespan)

    @rt("/")
    def index():
        return Titled("Quanda", P("The Quanda core is running on ", settings.db_url, "."))

    return app
