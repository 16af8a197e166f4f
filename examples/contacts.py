"""Contacts: a one-file CRUD app with its own SQLite table (fastlite) and its own page, and Quanda's chat beside
it. The assistant can add and delete contacts (two actions) and reads the address book (readable state);
what it does shows at once in every open tab.

    pip install quanda          # the wheel
    python contacts.py          # http://127.0.0.1:5001 (QUANDA_PORT), the LLM of OLLAMA_HOST or QUANDA_LLM_URL

Login-less local mode: everything belongs to the one person at this machine (QUANDA_AUTH=local).
"""

import os

import uvicorn
from fasthtml.common import H1, Button, Div, FastHTML, Form, Input, Li, Main, P, Span, Title, Ul
from fastlite import database

from quanda.api import ClientError, Quanda

db = database(os.environ.get("CONTACTS_DB", "contacts.db"))
contacts = db.t.contacts
if contacts not in db.t:
    contacts.create(id=int, workspace=str, name=str, email=str, pk="id")

q = Quanda(name="contacts", label="Contacts",
           about="The page is the user's address book; add or delete contacts with your tools.")


def rows(workspace: str) -> list:
    return contacts(where="workspace = ?", where_args=[workspace], order_by="id")


@q.action
def add_contact(workspace: str, name: str, email: str = "") -> str:
    """Add a contact to the user's address book."""
    row = contacts.insert(workspace=workspace, name=name.strip(), email=email.strip())
    return f"Added the contact {row['name']} (id {row['id']})."


@q.action
def delete_contact(workspace: str, id: int) -> str:
    """Delete the contact with this id."""
    found = [c for c in rows(workspace) if c["id"] == id]
    if not found:
        raise ClientError(f"there is no contact with id {id}")
    contacts.delete(id)
    return f"Deleted the contact {found[0]['name']} (id {id})."


@q.readable
def address_book(workspace: str) -> str:
    """The user's contacts now"""
    return "\n".join(f"- id {c['id']}: {c['name']} {c['email']}".rstrip() for c in rows(workspace)) or "(no contacts)"


@q.live
def ContactList(workspace: str):
    items = rows(workspace)
    return Ul(*[Li(Span(c["name"], cls="contact-name"), " ", Span(c["email"], cls="muted"), " ",
                   Button("Delete", hx_post=f"/contacts/{c['id']}/delete", hx_swap="none", cls="secondary small"))
                for c in items] or [Li("No contacts yet.", cls="muted")], id="contacts")


app = FastHTML(default_hdrs=False)  # Quanda's mount brings htmx and its own scripts: nothing from a CDN
q.mount(app)


@app.get("/")
async def index(request):
    workspace = await q.workspace_of(request)
    return Title("Contacts"), Div(Div(
        Main(H1("Contacts"),
             Form(Input(name="name", placeholder="Name", required=True), Input(name="email", placeholder="Email"),
                  Button("Add", id="add"), hx_post="/contacts", hx_swap="none"),
             ContactList(workspace), P("Ask the assistant on the right to add or remove someone.", cls="muted")),
        q.sidebar(), cls="layout"), cls="quanda-host")


@app.post("/contacts")
async def add_by_hand(request, name: str, email: str = ""):
    workspace = await q.workspace_of(request)
    if name.strip():
        text = add_contact(workspace, name, email)  # an action is still the host's own function
        await q.tell(workspace, "You a" + text[1:])  # "You added the contact …": the assistant sees it
        await q.changed(workspace)


@app.post("/contacts/{contact_id}/delete")
async def delete_by_hand(request, contact_id: int):
    workspace = await q.workspace_of(request)
    try:
        text = delete_contact(workspace, contact_id)
    except ClientError:
        return
    await q.tell(workspace, "You d" + text[1:])
    await q.changed(workspace)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("QUANDA_PORT", "5001")))
