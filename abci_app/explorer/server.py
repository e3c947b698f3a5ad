"""The explorer's web app (Starlette + Jinja2 + htmx): every page in HTML, and its JSON twin under /api.

Routes are declared once in PAGES; each one serves `/path` (HTML), `/path?fragment=1`
(the page's body alone, for htmx to swap in when a new block arrives) and
`/api/path` (the view's dict as JSON). A node that does not answer gives the
page with a banner saying so (JSON: 503 with {"error", "node_down": true});
an argument that names nothing gives 404 with one line; nothing shows a
stack trace (the log has it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from abci_app.explorer import views
from abci_app.explorer.chat import ChatHost
from abci_app.explorer.views import VIEW_ERRORS, BadRequest, Reader

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Page:
    path: str  # a Starlette path; {name:int} / {name:str} parameters go to the view by name
    template: str
    view: Callable[..., dict] | None  # None: the page is rendered from other state (the chat)
    title: str
    live: bool = False  # refreshed (htmx) when the chain moves
    query: tuple[str, ...] = ()  # optional integer query parameters passed to the view


PAGES = [
    Page("/", "home.html", views.home, "Overview", live=True),
    Page("/blocks", "blocks.html", views.blocks, "Blocks", live=True, query=("before",)),
    Page("/blocks/{height:int}", "block.html", views.block, "Block"),
    Page("/txs/{hash_text:str}", "tx.html", views.tx, "Transaction"),
    Page("/accounts/{address_text:str}", "account.html", views.account, "Account"),
    Page("/validators", "validators.html", views.validators, "Validators", live=True),
    Page("/rounds", "rounds.html", views.rounds, "Training rounds", live=True),
    Page("/rounds/{round_id:int}", "round.html", views.training_round, "Training round", live=True),
    Page("/versions", "versions.html", views.versions, "Model versions"),
    Page("/versions/{version_id:int}", "version.html", views.version, "Model version"),
    Page("/datasets", "datasets.html", views.datasets, "Datasets"),
    Page("/proposals", "proposals.html", views.proposals, "Proposals"),
    Page("/proposals/{proposal_id:int}", "proposal.html", views.proposal, "Proposal"),
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


def create_app(node: str, ipfs: str, home: Path, preload_chat: bool = True) -> Starlette:
    """The explorer of the chain at `node` (CometBFT RPC), fetching models through the Kubo API at `ipfs`
    into `home`/cache; `preload_chat` pulls and loads the latest version in the background at startup."""
    reader = Reader(node, ipfs)
    chat = ChatHost(node, ipfs, home)
    env = templates()

    def render(request: Request, template: str, context: dict, status: int = 200) -> HTMLResponse:
        fragment = request.query_params.get("fragment") == "1"
        html = env.get_template(template).render(request=request, nav=NAV, node=node, ipfs=ipfs, fragment=fragment,
                                                 twin=json_twin(request), **context)
        return HTMLResponse(html, status_code=status)

    def endpoint(page: Page, as_json: bool) -> Callable[[Request], Any]:
        async def serve(request: Request) -> Response:
            args = dict(request.path_params)
            try:
                for name in page.query:
                    raw = request.query_params.get(name)
                    args[name] = int(raw) if raw not in (None, "") else None
            except ValueError:
                return _problem(request, page, as_json, 400, f"query parameter {name} must be a whole number")
            try:
                data = await run_in_threadpool(page.view, reader, **args)
            except BadRequest as exc:
                return _problem(request, page, as_json, 404, str(exc))
            except VIEW_ERRORS as exc:
                return _problem(request, page, as_json, 503, f"node {node} could not answer: {' '.join(str(exc).split())}", node_down=True)
            if as_json:
                return JSONResponse(data)
            return render(request, page.template, {"page": page, "data": data})

        return serve

    def _problem(request: Request, page: Page, as_json: bool, status: int, message: str, node_down: bool = False) -> Response:
        if as_json:
            return JSONResponse({"error": message, "node_down": node_down}, status_code=status)
        return render(request, "problem.html", {"page": page, "message": message, "node_down": node_down}, status)

    async def chat_page(request: Request) -> Response:
        history = await run_in_threadpool(_history_or_none, reader)
        return render(request, "chat.html", {"page": CHAT, "versions": history,
                                             "chat": chat.state, "session": secrets.token_hex(16)})

    async def chat_status(request: Request) -> Response:
        return JSONResponse(chat.state)

    async def chat_send(request: Request) -> Response:
        """POST {"session", "message", "version"?}: the answer streamed as NDJSON events (ChatHost.reply)."""
        try:
            body = await request.json()
            session, message = str(body["session"])[:64], str(body["message"])
            version = None if body.get("version") in (None, "") else int(body["version"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'send JSON {"session": ID, "message": TEXT, "version": N or null}'}, status_code=400)
        if version is not None and version < 0:
            return JSONResponse({"error": "version must be 0 or more"}, status_code=400)
        events = chat.reply(session, message, version)
        return StreamingResponse((json.dumps(e) + "\n" for e in events), media_type="application/x-ndjson",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def chat_reset(request: Request) -> Response:
        try:
            session = str((await request.json())["session"])[:64]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'send JSON {"session": ID}'}, status_code=400)
        chat.reset(session)
        return JSONResponse({"reset": True})

    async def live(request: Request) -> Response:
        try:
            return JSONResponse(await run_in_threadpool(views.live, reader))
        except VIEW_ERRORS as exc:
            return JSONResponse({"error": f"node {node} could not answer: {' '.join(str(exc).split())}", "node_down": True})

    async def search(request: Request) -> Response:
        """One box for a height, a tx hash or an address."""
        text = request.query_params.get("q", "").strip()
        if text.isdigit():
            return RedirectResponse(f"/blocks/{int(text)}", status_code=303)
        if len(text.removeprefix("0x")) == 64:
            return RedirectResponse(f"/txs/{quote(text.removeprefix('0x'), safe='')}", status_code=303)
        return RedirectResponse(f"/accounts/{quote(text, safe='')}", status_code=303)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("explorer: unexpected error on %s", request.url.path)
        message = f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:300]} (the explorer's log has the details)"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message, "node_down": False}, status_code=500)
        return HTMLResponse(env.get_template("problem.html").render(request=request, nav=NAV, node=node, ipfs=ipfs, fragment=False, twin=None,
                                                                    page=None, message=message, node_down=False), status_code=500)

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

    app = Starlette(routes=routes, exception_handlers={Exception: unexpected}, lifespan=lifespan)
    app.state.reader, app.state.chat = reader, chat
    return app


def json_twin(request: Request) -> str:
    """The /api address of the page asked for, with its query (less `fragment`)."""
    path = request.url.path
    api = "/api/home" if path == "/" else "/api/chat/status" if path == CHAT.path else "/api" + path
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "fragment"])
    return api + ("?" + query if query else "")


def _history_or_none(reader: Reader) -> list[dict] | None:
    try:
        return reader.chain.query_pages("/registry/history")
    except VIEW_ERRORS:
        return None
