"""The terminal's side of the HTTP API: requests, and SSE streams that reconnect and resume by Last-Event-ID.

Every failure becomes a `Problem`: what went wrong, what to do about it, and whether waiting helps (the
connection was refused or cut, the server is restarting: `retry`) or not (no access, not a Quanda server).

    Problem
     ├── retry=True   cannot reach the server, connection cut, silence past the read timeout, 5xx, 503
     └── retry=False  401/403 (a token is needed or refused), 404 (no such route: another or older server),
                      a protocol error that reconnecting does not cure, a stream ending with `signed-out`
                      (the token was revoked: status 401, and the app stops)

Access: with a token (`--token` or QUANDA_API_TOKEN) every request carries `Authorization: Bearer`; without
one, the client takes a session as a browser tab does (local mode: the one workspace of this machine) and says
where it comes from (`Origin`), as the server's door asks of session-authenticated requests.
"""

from __future__ import annotations

from urllib.parse import quote

import asyncio
import json
import random
from typing import Any, AsyncIterator, Callable

import httpx

from .sse import ProtocolError, SSEEvent, SSEParser

CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 30.0
STREAM_READ_TIMEOUT_S = 45.0  # 3 keep-alives missed (the server sends one every 15 s)
BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 5.0
SIGNED_OUT = "signed-out"  # the event a stream ends with when its token is revoked
SIGNED_OUT_HINT = ("the client has stopped; create a new token with `python -m quanda tokens create NAME` on the "
                   "server and start it again with --token qk_…; ^Q quits")


class Problem(Exception):
    def __init__(self, text: str, hint: str = "", retry: bool = False, status: int | None = None):
        super().__init__(text)
        self.text, self.hint, self.retry, self.status = text, hint, retry, status

    def __str__(self) -> str:
        return f"{self.text} — {self.hint}" if self.hint else self.text


def backoff(attempt: int) -> float:
    """Full jitter, doubling up to BACKOFF_MAX_S."""
    return random.uniform(BACKOFF_FIRST_S / 2, min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** attempt))


class QuandaClient:
    def __init__(self, url: str, token: str | None = None):
        self.url = url.rstrip("/")
        self.token = token or None
        base = httpx.URL(self.url)
        headers = {"Origin": f"{base.scheme}://{base.netloc.decode()}", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self.http = httpx.AsyncClient(base_url=self.url, headers=headers, follow_redirects=False,
                                      timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))
        self._session = False
        self.stopped: Problem | None = None  # signed out: every request is refused with this

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- problems ---------------------------------------------------------------------------------------------

    def transport_problem(self, exc: Exception) -> Problem:
        if isinstance(exc, httpx.ConnectError):
            return Problem(f"cannot reach {self.url} ({exc or 'connection refused'})",
                           "is the server running? Start it with `python main.py`, or point --url at it; "
                           "retrying", retry=True)
        if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
            return Problem(f"{self.url} does not answer", "check the address and the network; retrying", retry=True)
        if isinstance(exc, httpx.ReadTimeout):
            return Problem("no word from the server for a while (the connection is probably dead)",
                           "reconnecting", retry=True)
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            return Problem("the connection to the server was cut", "reconnecting; the answer resumes where it "
                           "stopped", retry=True)
        if isinstance(exc, ProtocolError):
            return Problem(f"the server sent something unexpected: {exc}",
                           "reconnecting; if it keeps happening, check that --url is a Quanda server", retry=True)
        return Problem(f"talking to the server failed: {exc!r}", "retrying", retry=True)

    def status_problem(self, response: httpx.Response) -> Problem:
        status = response.status_code
        try:
            said = response.json().get("error", "")
        except (ValueError, AttributeError):
            said = ""
        said = said or response.reason_phrase
        if status == 401:
            hint = ("the server does not know this token: in local mode start it with the same "
                    "QUANDA_API_TOKEN, or run without --token" if self.token else
                    "this server has accounts: create a token with `python -m quanda tokens create NAME` on the "
                    "server, then pass --token qk_… or set QUANDA_API_TOKEN")
            return Problem(f"the server refused access ({said})", hint, status=status)
        if status == 403:
            return Problem(f"the server refused the request ({said})",
                           "use the address the server prints (e.g. http://127.0.0.1:5001) as --url", status=status)
        if status == 400 and "host name" in said:
            return Problem(f"the server does not answer to {httpx.URL(self.url).host}",
                           "use the address it was started on, or add this name to QUANDA_ALLOWED_HOSTS there",
                           status=status)
        if status == 404 and response.request.url.path.startswith("/api/chat"):
            return Problem(f"{self.url} has no chat API ({said})",
                           "is it a Quanda server of this version? Update it, or check --url", status=status)
        if status in (502, 503, 504) or status >= 500:
            return Problem(f"the server is in trouble ({status}: {said})", "retrying", retry=True, status=status)
        return Problem(said, status=status)

    # -- requests ---------------------------------------------------------------------------------------------

    async def ensure_session(self) -> None:
        """Without a token: a session, as a browser tab gets one (local mode's workspace)."""
        if self.token or self._session:
            return
        try:
            response = await self.http.get("/", headers={"Accept": "text/html"})
        except httpx.HTTPError as exc:
            raise self.transport_problem(exc) from None
        if response.status_code in (302, 303) and "/login" in response.headers.get("location", ""):
            raise Problem("this server has accounts and the client has no token",
                          "create one with `python -m quanda tokens create NAME` on the server, then pass --token "
                          "qk_… or set QUANDA_API_TOKEN")
        if response.status_code >= 400:
            raise self.status_problem(response)
        self._session = True

    async def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) of a 2xx answer; a Problem otherwise."""
        if self.stopped is not None:
            raise self.stopped
        await self.ensure_session()
        try:
            response = await self.http.request(method, path, json=body if method != "GET" else None)
        except httpx.HTTPError as exc:
            raise self.transport_problem(exc) from None
        if response.status_code >= 300:
            raise self.status_problem(response)
        try:
            return response.status_code, response.json()
        except ValueError:
            raise Problem(f"{method} {path} did not answer JSON", "check that --url is a Quanda server") from None

    async def ask(self, text: str, model: str | None = None) -> dict[str, Any]:
        return (await self.request("POST", "/api/chat/ask", {"text": text, **({"model": model} if model else {})}))[1]

    async def stop(self, answer_id: str) -> dict[str, Any]:
        return (await self.request("POST", f"/api/chat/answers/{answer_id}/stop", {}))[1]

    async def retry(self, answer_id: str) -> dict[str, Any]:
        return (await self.request("POST", f"/api/chat/answers/{answer_id}/retry", {}))[1]

    async def decide(self, key: str, approve: bool) -> dict[str, Any]:
        verb = "approve" if approve else "reject"
        return (await self.request("POST", f"/api/chat/approvals/{quote(key, safe='')}/{verb}", {}))[1]

    async def undo(self, key: str) -> dict[str, Any]:
        return (await self.request("POST", f"/api/chat/actions/{quote(key, safe='')}/undo", {}))[1]

    async def new_conversation(self) -> dict[str, Any]:
        return (await self.request("POST", "/api/chat/new", {}))[1]

    async def message(self, message_id: str) -> dict[str, Any]:
        return (await self.request("GET", f"/api/messages/{message_id}"))[1]

    # -- streams ----------------------------------------------------------------------------------------------

    async def events(self, path: str, last_id: Callable[[], str | None], *,
                     on_problem: Callable[[Problem], None] = lambda p: None,
                     on_open: Callable[[], None] = lambda: None) -> AsyncIterator[tuple[SSEEvent, Any]]:
        """The events of an SSE stream as (event, its JSON data), for as long as the caller wants them: when the
        connection fails, `on_problem` hears why and the stream is opened again after a backoff, with
        `Last-Event-ID: last_id()` (the position the caller has applied, so nothing is missed or repeated).
        A Problem that waiting does not cure is raised."""
        attempt = 0
        while True:
            try:
                await self.ensure_session()
                resume = last_id()
                async with self.http.stream("GET", path, headers={"Accept": "text/event-stream",
                                                                 **({"Last-Event-ID": resume} if resume else {})},
                                            timeout=httpx.Timeout(STREAM_READ_TIMEOUT_S,
                                                                  connect=CONNECT_TIMEOUT_S)) as response:
                    if response.status_code != 200:
                        await response.aread()
                        raise self.status_problem(response)
                    if not response.headers.get("content-type", "").startswith("text/event-stream"):
                        raise Problem(f"{path} is not an event stream", "check that --url is a Quanda server")
                    attempt = 0
                    on_open()
                    parser = SSEParser()
                    async for chunk in response.aiter_raw():
                        for event in parser.feed(chunk):
                            try:
                                data = json.loads(event.data)
                            except ValueError:
                                raise ProtocolError(f"event {event.event!r} without JSON data") from None
                            if event.event == SIGNED_OUT:  # the token was revoked: reconnecting cannot help
                                raise Problem(str(data.get("reason") or "signed out")[:200], SIGNED_OUT_HINT,
                                              status=401)
                            yield event, data
                raise httpx.RemoteProtocolError("the server ended the stream")
            except Problem as problem:
                if not problem.retry:
                    raise
                on_problem(problem)
            except (httpx.HTTPError, ProtocolError) as exc:
                on_problem(self.transport_problem(exc))
            await asyncio.sleep(backoff(attempt))
            attempt += 1

