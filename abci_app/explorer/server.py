"""The explorer's web app (Starlette + Jinja2 + htmx): every page in HTML, and its JSON twin under /api.

Routes are declared once in PAGES; each one serves `/path` (HTML), `/path?fragment=1`
(the page's body alone, for htmx to swap in when a new block arrives) and
`/api/path` (the view's dict as JSON). A node that does not answer gives the
page with a banner saying so (JSON: 503 with {"error", "node_down": true});
an argument that names nothing gives 404 with one line; a node answer of the
wrong shape gives 502 with the same banner; nothing shows a stack trace or a
local path (the log has it).

A public explorer is open to anyone: chat answers run outside the page threads
and are admitted a few at a time (chat.ChatHost), page views are computed once
per block (views.Reader.page) by at most PAGE_WORKERS threads, request bodies
are capped, the Host header must be one the explorer serves (DNS rebinding),
and every answer carries a strict CSP. The node and IPFS URLs appear in pages
only when they are loopback addresses or given for display (--public-node).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import secrets
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import anyio
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from abci_app.explorer import views
from abci_app.explorer.chat import ChatHost
from abci_app.explorer.views import MALFORMED_ERRORS, VIEW_ERRORS, BadRequest, Reader

MAX_BODY_BYTES = 16 * 1024  # a chat message is at most 2 000 characters
PAGE_WORKERS = 8  # page views computing at once (each may wait on the node); the rest queue without holding a thread
SESSION_COOKIE = "gc_chat"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                                 b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
MAX_ID_DIGITS = 18  # path ids and heights: below 2**63, and far below Python's 4 300-digit int limit


class IdConvertor(Convertor):
    """`{name:id}`: a whole number of at most MAX_ID_DIGITS ASCII digits (5 000 nines is a 404, not a 500)."""

    regex = "[0-9]{1,%d}" % MAX_ID_DIGITS

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("id", IdConvertor())


class BadBody(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Page:
    path: str  # a Starlette path; {name:id} / {name:str} parameters go to the view by name
    template: str
    view: Callable[..., dict] | None  # None: the page is rendered from other state (the chat)
    title: str
    live: bool = False  # refreshed (htmx) when the chain moves
    query: tuple[str, ...] = ()  # optional integer query parameters passed to the view


PAGES = [
    Page("/", "home.html", views.home, "Overview", live=True),
    Page("/blocks", "blocks.html", views.blocks, "Blocks", live=True, query=("before",)),
    Page("/blocks/{height:id}", "block.html", views.block, "Block"),
    Page("/txs/{hash_text:str}", "tx.html", views.tx, "Transaction"),
    Page("/accounts/{address_text:str}", "account.html", views.account, "Account"),
    Page("/validators", "validators.html", views.validators, "Validators", live=True),
    Page("/rounds", "rounds.html", views.rounds, "Training rounds", live=True),
    Page("/rounds/{round_id:id}", "round.html", views.training_round, "Training round", live=True),
    Page("/versions", "versions.html", views.versions, "Model versions"),
    Page("/versions/{version_id:id}", "version.html", views.version, "Model version"),
    Page("/datasets", "datasets.html", views.datasets, "Datasets"),
    Page("/proposals", "proposals.html", views.proposals, "Proposals"),
    Page("/proposals/{proposal_id:id}", "proposal.html", views.proposal, "Proposal"),
    Page("/params", "params.html", views.params, "Parameters"),
]
CHAT = Page("/chat", "chat.html", None, "Chat")
NAV = [("/", "Overview"), ("/blocks", "Blocks"), ("/validators", "Validators"), ("/rounds", "Rounds"), ("/versions", "Versions"),
       ("/datasets", "Datasets"), ("/proposals", "Proposals"), ("/params", "Params"), ("/chat", "Chat")]


# --- template helpers ----------------------------------------------------------


def _short_time(text: str) -> str:
    parsed = views.parse_time(text)
    return parsed.strftime("%Y-%m-%d %H:%M:%S") if parsed else (text or "-")


def _loss(micro: Any) -> str:
    """Millionths of a nat as nats; `-` for a figure the chain did not record (None, or missing in the template)."""
    return f"{micro / 1e6:.4f}" if isinstance(micro, int) and not isinstance(micro, bool) else "-"


def _short(text: str, keep: int = 10) -> str:
    text = str(text or "")
    return text if len(text) <= 2 * keep + 1 else f"{text[:keep]}…{text[-keep:]}"


def templates() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.filters.update(short_time=_short_time, loss=_loss, short=_short, tojson_pretty=lambda v: json.dumps(v, indent=2, sort_keys=True))
    return env


# --- the app -------------------------------------------------------------------


def public_url(url: str, given: str | None) -> str | None:
    """What pages may show of `url`: `given` (--public-node/--public-ipfs) when set, else `url` less any user:password
    when its host is a loopback address, else nothing (an internal address is nobody's business)."""
    if given:
        return _without_userinfo(given)
    host = urlsplit(url if "://" in url else "http://" + url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return _without_userinfo(url) if loopback else None


def _hidden_names(shown: dict[str, str]) -> Callable[[str], str]:
    """A filter putting each URL's public name (or a placeholder) in place of the URL in a visitor-facing line,
    in every spelling the clients use (as given, with http:// added, without a trailing slash)."""
    pairs: list[tuple[str, str]] = []
    for url, name in shown.items():
        bare = url.rstrip("/")
        for spelling in {url, bare, bare if "://" in bare else "http://" + bare}:
            if spelling and spelling != name:
                pairs.append((spelling, name))
    pairs.sort(key=lambda pair: -len(pair[0]))  # the longest spelling first, so a shorter one cannot split it

    def hide(text: str) -> str:
        for spelling, name in pairs:
            text = text.replace(spelling, name)
        return text

    return hide


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url if "://" in url else "http://" + url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class SecurityHeaders:
    """ASGI middleware adding SECURITY_HEADERS to every answer."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def read_json(request: Request) -> Any:
    """The request's JSON body: application/json only (a cross-site form cannot send it without a preflight),
    at most MAX_BODY_BYTES (read in pieces, refused past the cap), and no NaN/Infinity."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise BadBody(415, "send the body as Content-Type: application/json")
    length = request.headers.get("content-length", "")
    if length and (not length.isascii() or not length.isdigit() or len(length) > 12 or int(length) > MAX_BODY_BYTES):
        raise BadBody(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise BadBody(413, f"the body is larger than {MAX_BODY_BYTES} bytes")

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(raw, parse_constant=refuse)
    except (ValueError, RecursionError):
        raise BadBody(400, "the body is not JSON") from None


def parse_version(value: Any) -> int | None:
    """A chat body's `version`: null/"" (latest), or a whole number (as a number or decimal ASCII text)."""
    if value in (None, ""):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**MAX_ID_DIGITS:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= MAX_ID_DIGITS:
        return int(value)
    raise BadBody(400, "version must be a whole number 0 or more, or null for the latest")


class ChatStream(StreamingResponse):
    """NDJSON events of one chat answer, read from its thread (ChatHost.run_answer); the moment the browser
    leaves, the answer is told to stop (and frees the model at its next token), whatever the event loop does
    with abandoned generators."""

    def __init__(self, start: Callable[[Callable[[dict | None], None]], threading.Event], headers: dict[str, str]):
        super().__init__(iter(()), media_type="application/x-ndjson", headers=headers)
        self.start = start

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict | None] = asyncio.Queue()

        def push(event: dict | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone (server stopping): nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, event)

        cancelled = self.start(push)
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    cancelled.set()
                    group.cancel_scope.cancel()

                group.start_soon(watch)
                while (event := await queue.get()) is not None:
                    await send({"type": "http.response.body", "body": (json.dumps(event) + "\n").encode(), "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()
        finally:
            cancelled.set()


def create_app(node: str, ipfs: str, home: Path, preload_chat: bool = True, *, allowed_hosts: Sequence[str] = (),
               public_node: str | None = None, public_ipfs: str | None = None) -> Starlette:
    """The explorer of the chain at `node` (CometBFT RPC), fetching models through the Kubo API at `ipfs`
    into `home`/cache; `preload_chat` pulls and loads the latest version in the background at startup.
    Requests must name one of LOOPBACK_HOSTS or `allowed_hosts` in their Host header; pages show the
    node and IPFS URLs as public_url() allows."""
    reader = Reader(node, ipfs)
    shown_node, shown_ipfs = public_url(node, public_node), public_url(ipfs, public_ipfs)
    reader.public_node, reader.public_ipfs = shown_node, shown_ipfs
    node_name = f"node {shown_node}" if shown_node else "the explorer's node"
    hidden = _hidden_names({node: shown_node or "(the node)", ipfs: shown_ipfs or "(the IPFS node)"})
    chat = ChatHost(node, ipfs, home, scrub=hidden)
    env = templates()
    pages = anyio.CapacityLimiter(PAGE_WORKERS)

    def render(request: Request, template: str, context: dict, status: int = 200) -> HTMLResponse:
        fragment = request.query_params.get("fragment") == "1"
        html = env.get_template(template).render(request=request, nav=NAV, node=shown_node, ipfs=shown_ipfs, fragment=fragment,
                                                 twin=json_twin(request), **context)
        return HTMLResponse(html, status_code=status)

    async def read_node(compute: Callable[[], Any]) -> Any:
        return await anyio.to_thread.run_sync(compute, limiter=pages)

    def node_problem(exc: Exception) -> tuple[int, str]:
        """(status, one line) for a view that failed because of its node: down (503) or talking nonsense (502)."""
        if isinstance(exc, VIEW_ERRORS):
            return 503, f"{node_name} could not answer: {hidden(' '.join(str(exc).split()))[:300]}"
        log.warning("explorer: the node sent a malformed answer: %r", exc, exc_info=exc)  # or a view's own bug: the trace tells
        return 502, f"{node_name} sent an answer the explorer cannot read (a node of another version, or a broken one)"

    def endpoint(page: Page, as_json: bool) -> Callable[[Request], Any]:
        async def serve(request: Request) -> Response:
            args = dict(request.path_params)
            for name in page.query:
                raw = request.query_params.get(name)
                if raw in (None, ""):
                    args[name] = None
                elif raw.isascii() and raw.isdigit() and len(raw) <= MAX_ID_DIGITS:
                    args[name] = int(raw)
                else:
                    return _problem(request, page, as_json, 400, f"query parameter {name} must be a whole number")
            key = (page.path, tuple(sorted(args.items())))
            try:
                data = await read_node(lambda: reader.page(key, lambda: page.view(reader, **args)))
            except BadRequest as exc:
                return _problem(request, page, as_json, 404, str(exc))
            except (*VIEW_ERRORS, *MALFORMED_ERRORS) as exc:
                status, message = node_problem(exc)
                return _problem(request, page, as_json, status, message, node_down=True)
            if as_json:
                return JSONResponse(data)
            return render(request, page.template, {"page": page, "data": data})

        return serve

    def _problem(request: Request, page: Page, as_json: bool, status: int, message: str, node_down: bool = False) -> Response:
        if as_json:
            return JSONResponse({"error": message, "node_down": node_down}, status_code=status)
        return render(request, "problem.html", {"page": page, "message": message, "node_down": node_down}, status)

    def session_of(request: Request) -> tuple[str, bool]:
        """The visitor's chat session from the cookie the explorer issued, or a new one (True: set the cookie)."""
        held = request.cookies.get(SESSION_COOKIE, "")
        if re.fullmatch("[0-9a-f]{32}", held):
            return held, False
        return secrets.token_hex(16), True

    def with_session(response: Response, session: str, new: bool) -> Response:
        if new:
            response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict", path="/")
        return response

    async def chat_page(request: Request) -> Response:
        try:
            history = await read_node(reader.history)
        except (*VIEW_ERRORS, *MALFORMED_ERRORS):
            history = None
        session, new = session_of(request)
        return with_session(render(request, "chat.html", {"page": CHAT, "versions": history, "chat": chat.state}), session, new)

    async def chat_status(request: Request) -> Response:
        return JSONResponse(chat.state)

    def chat_refusal(status: int, message: str, **extra: Any) -> Response:
        """A refused chat request: one NDJSON line, as the stream would say it."""
        return Response(json.dumps({"error": message, **extra}) + "\n", status_code=status, media_type="application/x-ndjson",
                        headers={"Cache-Control": "no-store", **({"Retry-After": "5"} if status == 429 else {})})

    async def chat_send(request: Request) -> Response:
        """POST {"message", "version"?}: the answer streamed as NDJSON events (ChatHost.reply) for the session cookie."""
        try:
            body = await read_json(request)
            if not isinstance(body, dict) or not isinstance(body.get("message"), str):
                raise BadBody(400, 'send JSON {"message": TEXT, "version": N or null}')
            message, version = body["message"], parse_version(body.get("version"))
        except BadBody as exc:
            return chat_refusal(exc.status, str(exc))
        if not chat.admit():  # decided before any thread is taken: a flood of chat requests is refused, never queued
            return chat_refusal(429, "the model is busy answering other visitors; try again in a few seconds", busy=True)
        session, new = session_of(request)
        stream = ChatStream(lambda push: chat.run_answer(session, message, version, push),
                            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        return with_session(stream, session, new)

    async def chat_reset(request: Request) -> Response:
        try:
            await read_json(request)
        except BadBody as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        session, new = session_of(request)
        chat.reset(session)
        return with_session(JSONResponse({"reset": True}), session, new)

    async def live(request: Request) -> Response:
        try:
            return JSONResponse(await read_node(lambda: views.live(reader)))
        except (*VIEW_ERRORS, *MALFORMED_ERRORS) as exc:
            return JSONResponse({"error": node_problem(exc)[1], "node_down": True})

    async def search(request: Request) -> Response:
        """One box for a height, a tx hash or an address."""
        text = request.query_params.get("q", "").strip()
        if text.isascii() and text.isdigit() and len(text) <= MAX_ID_DIGITS:
            return RedirectResponse(f"/blocks/{int(text)}", status_code=303)
        if len(text.removeprefix("0x")) == 64:
            return RedirectResponse(f"/txs/{quote(text.removeprefix('0x'), safe='')}", status_code=303)
        return RedirectResponse(f"/accounts/{quote(text[:200], safe='')}", status_code=303)

    async def unexpected(request: Request, exc: Exception) -> Response:
        incident = uuid.uuid4().hex[:12]
        log.exception("explorer: unexpected error %s on %s", incident, request.url.path)
        message = f"internal error {incident} (the explorer's log has the details)"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message, "node_down": False}, status_code=500)
        return HTMLResponse(env.get_template("problem.html").render(request=request, nav=NAV, node=shown_node, ipfs=shown_ipfs, fragment=False,
                                                                    twin=None, page=None, message=message, node_down=False), status_code=500)

    routes: list[Any] = []
    for page in PAGES:
        routes.append(Route(page.path, endpoint(page, as_json=False)))
        routes.append(Route("/api/home" if page.path == "/" else "/api" + page.path, endpoint(page, as_json=True)))
    routes += [
        Route("/api/live", live),
        Route("/chat", chat_page),
        Route("/api/chat", chat_send, methods=["POST"]),
        Route("/api/chat/reset", chat_reset, methods=["POST"]),
        Route("/api/chat/status", chat_status),
        Route("/search", search),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if preload_chat:
            chat.preload()
        yield
        reader.close()

    hosts = sorted({*LOOPBACK_HOSTS, *allowed_hosts})
    middleware = [Middleware(SecurityHeaders), Middleware(TrustedHostMiddleware, allowed_hosts=hosts)]
    app = Starlette(routes=routes, exception_handlers={Exception: unexpected}, lifespan=lifespan, middleware=middleware)
    app.state.reader, app.state.chat = reader, chat
    return app


def json_twin(request: Request) -> str:
    """The /api address of the page asked for, with its query (less `fragment`)."""
    path = request.url.path
    api = "/api/home" if path == "/" else "/api/chat/status" if path == CHAT.path else "/api" + path
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "fragment"])
    return api + ("?" + query if query else "")
