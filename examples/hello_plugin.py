"""A complete small Quanda plugin: a menu page with a counter that every tab of its owner sees.

Install it as a package with an entry point (pyproject.toml):

    [project.entry-points."quanda.plugins"]
    hello = "examples.hello_plugin"
"""

from fasthtml.common import H3, APIRouter, Article, Button, Form, Hidden, P, Span

from quanda.api import Handle, Plugin, handle_of

router = APIRouter()


def Counter(value: int, oob: bool = False):
    return Span(str(value), id="hello-count", hx_swap_oob="true" if oob else None)


async def presses(h: Handle) -> int:
    return (await h.store.get_record("hello", h.owner) or {"count": 0})["count"]


@router.get("/hello/count")
async def count(request):
    return Counter(await presses(await handle_of(request)))


async def page(h: Handle):
    return Article(H3("Hello"), P("Pressed ", Counter(await presses(h)), " times."),
                   Form(Hidden(name="action", value="hello.press"), Button("Press", id="hello-press"), ws_send=True),
                   cls="card")


async def on_press(h: Handle, data: dict):
    count = await presses(h) + 1
    await h.store.put_record("hello", h.owner, {"count": count})
    await h.publish("hello.pressed", count=count)  # every tab of this owner, on every server
    await h.post_event(f"You pressed Hello ({count}).")


async def show_count(h: Handle, fact: dict):  # runs for each tab showing this page
    return Counter(fact["count"], oob=True)


plugin = Plugin(name="hello", label="Hello", order=90, router=router, page=page,
                ws_handlers={"hello.press": on_press}, fact_views={"hello.pressed": show_count},
                system_prompt="The Hello page counts button presses.")
