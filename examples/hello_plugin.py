"""A complete small Quanda plugin: a menu page with a counter that every tab of the session sees.

Install it as a package with an entry point (pyproject.toml):

    [project.entry-points."quanda.plugins"]
    hello = "examples.hello_plugin"
"""

from fasthtml.common import H3, APIRouter, Article, Button, Form, Hidden, P, Span

from app.plugins import Plugin

router = APIRouter()


@router.get("/hello/count")
async def count(request, session):
    ctx = request.app.state.ctx
    record = await ctx.store.get_record("hello", session.get("sid", "")) or {"count": 0}
    return Span(str(record["count"]), id="hello-count")


def Counter(value: int, oob: bool = False):
    return Span(str(value), id="hello-count", hx_swap_oob="true" if oob else None)


async def page(ctx, sid):
    record = await ctx.store.get_record("hello", sid) or {"count": 0}
    return Article(H3("Hello"), P("Pressed ", Counter(record["count"]), " times."),
                   Form(Hidden(name="action", value="hello.press"), Button("Press", id="hello-press"), ws_send=True),
                   cls="card")


async def on_press(conn, data):
    ctx = conn.hub.ctx
    record = await ctx.store.get_record("hello", conn.sid) or {"count": 0}
    record["count"] += 1
    await ctx.store.put_record("hello", conn.sid, record)
    await ctx.hub.broadcast(conn.sid, Counter(record["count"], oob=True))
    await ctx.post_event(conn.sid, f"You pressed Hello ({record['count']}).")


plugin = Plugin(name="hello", label="Hello", order=90, router=router, page=page,
                ws_handlers={"hello.press": on_press}, system_prompt="The Hello page counts button presses.")
