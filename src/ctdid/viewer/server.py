"""The web server of ``ctdid view``: a result folder and the static viewer page, nothing else.

The browser gets the run description (``/api/result``) and single slices as raw little-endian
int16 HU (``/api/slice/{candidate}/{z}``) and does window/level, ROI statistics and comparison
itself. The server writes only ``picks.json`` and files under ``exports/`` inside the result
folder.

Previews (pixel blends listed under ``previews`` in ``run.json`` while a single-slice DID run
fine-tunes) are served beside the candidates under the key ``p{id}`` (``/api/slice/p3/0``),
which no candidate id (digits only) can take; ``/api/result`` gives each listed preview its
``key`` and ``view_order``, the candidates and previews merged in strength order. A preview
that DID has replaced is answered 404. Previews cannot be picked or exported (409): they are
transient and their files are deleted when DID's candidates replace them.

Candidates of a volume's shared trajectory that are listed under ``rendering`` (weights saved,
volume not complete yet) are served under their id too: each slice asked for is rendered on
demand from the weights with the run's model (:class:`ctdid.viewer.ondemand.OnDemandRenderer`,
header ``X-Rendered: on-demand``) and cached; once the volume is listed, slices come from disk.
``/api/result`` lists them under ``rendering`` (and in ``view_order``) when the model is at
hand, and says under ``on_demand`` whether it is and why not. They cannot be picked or
exported until their volume is complete (409). A volume's previews (``"on_demand": true``, no
file) are rendered the same way, slice by slice, as the blend of the input, the default and
t_low (:meth:`ctdid.viewer.ondemand.OnDemandRenderer.preview_slice`), and listed only when the
model is at hand.

Security: bound to 127.0.0.1 by default, with a Host-header check against DNS rebinding. Binding
to another address needs ``allow_remote=True`` and then every request must carry a random token
(``?token=`` in the page address, ``X-CTDID-Token`` on API calls); anything else is answered
403. POST bodies must be JSON (415 otherwise, which also stops cross-site form posts) and at
most :data:`MAX_BODY` bytes (413).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import secrets
import socket
import threading
import time
import warnings
import webbrowser
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ctdid.errors import CTDIDError, InputError
from ctdid.io.atomic import atomic_file
from ctdid.results import CandidateRecord, ResultReader
from ctdid.viewer.ondemand import OnDemandRenderer

__all__ = [
    "EXPORT_FORMATS",
    "MAX_BODY",
    "TASK_PRESETS",
    "create_app",
    "preview_key",
    "roi_stats",
    "serve",
    "serve_in_thread",
    "slice_int16",
    "view",
    "view_order",
]

#: Largest accepted request body in bytes.
MAX_BODY = 64 * 1024

#: Task names offered in the page (any other free text is accepted too).
TASK_PRESETS = ("low-contrast lesion", "high-contrast detail")

#: Export formats of the page: name -> (write_volume format, suffix, suffix for several slices).
EXPORT_FORMATS: dict[str, tuple[str, str, str]] = {
    "dicom": ("dicom", "_dicom", "_dicom"),
    "nifti": ("nifti", ".nii.gz", ".nii.gz"),
    "png": ("png", ".png", "_png"),
}

_STATIC_FILES = {
    "viewer.js": "text/javascript; charset=utf-8",
    "viewer.css": "text/css; charset=utf-8",
}
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,119}$")
_TASK_MAX = 200


def _static_text(name: str) -> str:
    return resources.files("ctdid.viewer").joinpath("static", name).read_text(encoding="utf-8")


def slice_int16(image: NDArray[Any]) -> NDArray[np.int16]:
    """HU slice as the viewer receives it: rounded to nearest (half to even), clipped to int16."""
    arr = np.rint(np.asarray(image, dtype=np.float32))
    return np.clip(arr, -32768, 32767).astype("<i2")


def roi_stats(
    data: NDArray[Any], *, shape: str, x0: float, y0: float, x1: float, y1: float
) -> dict[str, float]:
    """Mean and STD (population, ddof=0) of a 2-D slice inside an ROI, as the page computes them.

    Parameters
    ----------
    data : ndarray, shape (y, x)
    shape : {"rect", "circle"}
        ``rect``: pixels whose centres lie in the box ``[x0, x1] x [y0, y1]`` (pixel ``(i, j)``
        has its centre at ``(i + 0.5, j + 0.5)``). ``circle``: the ellipse inscribed in that box.
    x0, y0, x1, y1 : float
        Corners in image pixel coordinates.

    Returns
    -------
    dict
        ``n``, ``mean``, ``std`` (NaN when the ROI holds no pixel).
    """
    ny, nx = data.shape
    xa, xb = sorted((float(x0), float(x1)))
    ya, yb = sorted((float(y0), float(y1)))
    yy, xx = np.mgrid[:ny, :nx]
    cx, cy = xx + 0.5, yy + 0.5
    if shape == "rect":
        mask = (cx >= xa) & (cx <= xb) & (cy >= ya) & (cy <= yb)
    elif shape == "circle":
        rx, ry = (xb - xa) / 2.0, (yb - ya) / 2.0
        if rx <= 0 or ry <= 0:
            mask = np.zeros((ny, nx), dtype=bool)
        else:
            mask = ((cx - (xa + rx)) / rx) ** 2 + ((cy - (ya + ry)) / ry) ** 2 <= 1.0
    else:
        raise InputError(f"unknown ROI shape {shape!r}; use rect or circle")
    vals = np.asarray(data, dtype=np.float64)[mask]
    if vals.size == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan}
    return {"n": int(vals.size), "mean": float(vals.mean()), "std": float(vals.std())}


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Guard:
    """Pure ASGI middleware: Host check, token check and body size limit."""

    def __init__(self, app: ASGIApp, *, token: str | None, check_host: bool) -> None:
        self.app = app
        self.token = token
        self.check_host = check_host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self.check_host:
            host = request.headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name.lower() not in _LOCAL_HOSTS:
                await _error(403, "forbidden host")(scope, receive, send)
                return
        if self.token is not None:
            given = request.query_params.get("token") or request.headers.get("x-ctdid-token", "")
            if not secrets.compare_digest(given.encode(), self.token.encode()):
                await _error(403, "missing or wrong token")(scope, receive, send)
                return
        length = request.headers.get("content-length")
        if length is not None:
            try:
                too_big = int(length) > MAX_BODY
            except ValueError:
                await _error(400, "bad Content-Length")(scope, receive, send)
                return
            if too_big:
                await _error(413, f"request body over {MAX_BODY} bytes")(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


async def _read_json(request: Request) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise _HTTPError(415, "send JSON (Content-Type: application/json)")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY:
            raise _HTTPError(413, f"request body over {MAX_BODY} bytes")
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _HTTPError(400, f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _HTTPError(400, "expected a JSON object")
    return doc


def _error_page(title: str, message: str, status: int) -> HTMLResponse:
    body = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>ctdid viewer: error</title>"
        "<style>body{font:15px system-ui,sans-serif;background:#15171a;color:#e6e6e6;"
        "margin:3em}h1{color:#ff8a80;font-size:1.4em}code{color:#ffd180}</style></head>"
        f"<body><h1>{html.escape(title)}</h1><p id='error-message'><code>{html.escape(message)}"
        "</code></p><p>Check the folder given to <code>ctdid view</code>; it must be a result "
        "folder written by <code>ctdid run</code> (with <code>run.json</code>).</p>"
        "</body></html>"
    )
    return HTMLResponse(body, status_code=status)


_PREVIEW_KEY = re.compile(r"^p([0-9]{1,6})$")


def preview_key(record_id: int) -> str:
    """The viewer's key of preview ``record_id`` (``p3``): never a candidate id (digits)."""
    return f"p{int(record_id)}"


def view_order(reader: ResultReader, *, rendering: bool = False) -> list[int | str]:
    """The slider's entries: candidate ids and preview keys, high resolution to low noise.

    Candidates keep ``run.json``'s ``order``; each listed preview goes in at its strength
    (after the candidates of equal strength). With ``rendering``, the candidates listed under
    ``rendering`` (shown on demand) go in at their strength too; without it, the previews
    rendered on demand (a volume's, ``on_demand``) are left out as well.
    """
    cands = reader.ordered()
    if rendering and reader.rendering:
        rank = {"high": 0, "default": 1, "low": 2}
        cands = sorted(
            [*cands, *reader.rendering.values()],
            key=lambda r: (r.strength, rank.get(r.direction, 1), r.id),
        )
    previews = sorted(
        (r for r in reader.previews.values() if rendering or not r.on_demand),
        key=lambda r: (r.strength, r.id),
    )
    merged: list[int | str] = []
    i = 0
    for rec in cands:
        while i < len(previews) and previews[i].strength < rec.strength:
            merged.append(preview_key(previews[i].id))
            i += 1
        merged.append(rec.id)
    merged.extend(preview_key(r.id) for r in previews[i:])
    return merged


class _Result:
    """The result folder, re-read on demand, shared by the request handlers."""

    def __init__(self, folder: Path, renderer: OnDemandRenderer) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._reader: ResultReader | None = None
        self.renderer = renderer

    def reader(self, *, refresh: bool = False) -> ResultReader:
        with self._lock:
            if self._reader is None:
                self._reader = ResultReader(self.folder)
            elif refresh:
                self._reader.refresh()
            return self._reader

    def record(self, cand: Any) -> CandidateRecord:
        """The record of candidate ``cand`` (int or digit string) listed in run.json."""
        if isinstance(cand, bool) or not isinstance(cand, (int, str)):
            raise _HTTPError(400, "candidate must be an integer id")
        text = str(cand)
        if not text.isdigit() or len(text) > 6:
            raise _HTTPError(404, "no such candidate")
        cid = int(text)
        reader = self.reader()
        if cid not in reader.records:
            reader = self.reader(refresh=True)  # a running job may just have added it
        if cid not in reader.records:
            raise _HTTPError(404, "no such candidate")
        return reader.records[cid]

    def record_for_pick(self, cand: Any) -> CandidateRecord:
        """:meth:`record` for picks and exports, refusing a preview key or a candidate still
        being rendered with a clear 409."""
        if isinstance(cand, str) and _PREVIEW_KEY.match(cand):
            raise _HTTPError(
                409,
                f"{cand} is a preview (pixel blend) shown while DID runs; previews cannot be "
                "picked or exported: wait for DID's candidates and pick one of them",
            )
        cid = self.rendering_id(cand)
        if cid is not None:
            raise _HTTPError(
                409,
                f"candidate {cid} is still being rendered for the whole scan (shown on demand "
                "from its weights); pick or export it once its volume is complete",
            )
        return self.record(cand)

    def rendering_id(self, cand: Any) -> int | None:
        """The id of ``cand`` if it is listed under ``rendering`` and not under candidates."""
        text = str(cand)
        if isinstance(cand, bool) or not text.isdigit() or len(text) > 6:
            return None
        cid = int(text)
        reader = self.reader()
        if cid in reader.records:
            return None
        if cid not in reader.rendering or (self.folder / f"candidates/c{cid:03d}.npy").is_file():
            reader = self.reader(refresh=True)  # not known yet, or its volume may be listed
        return cid if cid in reader.rendering and cid not in reader.records else None

    def on_demand_preview_id(self, cand: Any) -> int | None:
        """The id of preview key ``cand`` if that preview is listed and rendered on demand."""
        match = _PREVIEW_KEY.match(cand) if isinstance(cand, str) else None
        if match is None:
            return None
        pid = int(match.group(1))
        rec = self.reader().previews.get(pid)
        if rec is None:
            rec = self.reader(refresh=True).previews.get(pid)
        return pid if rec is not None and rec.on_demand else None

    def image_slice(self, cand: str, z: int) -> tuple[NDArray[np.float32], int, bool]:
        """Slice ``z`` of the input, a candidate or a preview: HU (y, x), the number of
        slices, and whether it was rendered on demand."""
        pid = self.on_demand_preview_id(cand)
        cid = None if pid is not None else self.rendering_id(cand)
        if pid is None and cid is None:
            volume = self.volume(cand)
            if not 0 <= z < volume.shape[0]:
                raise _HTTPError(404, f"slice {z} out of range 0..{volume.shape[0] - 1}")
            return volume[z], volume.shape[0], False
        reader = self.reader()
        if not 0 <= z < reader.shape[0]:
            raise _HTTPError(404, f"slice {z} out of range 0..{reader.shape[0] - 1}")
        try:
            if pid is not None:
                return self.renderer.preview_slice(reader, pid, z), reader.shape[0], True
            assert cid is not None
            return self.renderer.slice(reader, cid, z), reader.shape[0], True
        except InputError as exc:
            fresh = self.reader(refresh=True)
            if pid is not None and pid not in fresh.previews:
                raise _HTTPError(404, f"preview {cand} is gone: replaced by DID's candidates"
                                 ) from None  # fmt: skip
            if cid is not None and cid in fresh.records:  # listed meanwhile: from disk
                return self.volume(cid)[z], reader.shape[0], False
            raise _HTTPError(503, str(exc)) from None

    def preview_volume(self, key: str) -> NDArray[np.float32]:
        """The image of the listed preview ``key`` (``p3``); 404 once DID replaced it."""
        match = _PREVIEW_KEY.match(key)
        if match is None:
            raise _HTTPError(404, "no such preview")
        pid = int(match.group(1))
        gone = _HTTPError(404, f"preview {key} is gone: replaced by DID's candidates")
        reader = self.reader()
        if pid not in reader.previews:
            reader = self.reader(refresh=True)
            if pid not in reader.previews:
                raise gone
        try:
            return reader.preview(pid)
        except InputError:  # unlisted and deleted since this reader read run.json
            if pid not in self.reader(refresh=True).previews:
                raise gone from None
            raise

    def volume(self, cand: Any) -> NDArray[np.float32]:
        """The image of ``input``, a candidate id or a preview key, HU (z, y, x)."""
        if cand == "input":
            return self.reader().input()
        if isinstance(cand, str) and _PREVIEW_KEY.match(cand):
            return self.preview_volume(cand)
        return self.reader().candidate(self.record(cand).id)


def create_app(
    result_dir: str | os.PathLike[str],
    *,
    token: str | None = None,
    model: Any = None,
) -> Starlette:
    """Make the viewer's ASGI application for one result folder.

    Parameters
    ----------
    result_dir : path
        A result folder of ``ctdid run`` (it may still be running, or be broken: the page then
        shows an error).
    model : nn.Module, optional
        The run's denoiser, to render slices of candidates still being rendered on demand
        (``ctdid run --view`` passes its own). Default: loaded from ``run.json`` when needed.
    token : str, optional
        When given, every request must carry it (``?token=`` or header ``X-CTDID-Token``) and
        the Host header is not checked (remote use). Without it only local Host names are
        served.

    Returns
    -------
    starlette.applications.Starlette
    """
    folder = Path(result_dir).absolute()
    result = _Result(folder, OnDemandRenderer(folder, model=model))
    token_qs = "" if token is None else "?token=" + token
    routes = [
        *_page_routes(result, token_qs),
        *_read_routes(result),
        *_post_routes(result),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(_Guard, token=token, check_host=token is None)
    return app


def _guarded(func: Callable[[Request], Any]) -> Callable[[Request], Any]:
    """An API endpoint that answers its errors as JSON (ctdid errors: 500 or 409)."""

    async def endpoint(request: Request) -> Response:
        try:
            return await func(request)
        except _HTTPError as exc:
            return _error(exc.status, exc.message)
        except CTDIDError as exc:
            return _error(500 if isinstance(exc, InputError) else 409, str(exc))

    return endpoint


def _page_routes(result: _Result, token_qs: str) -> list[Route]:
    """Routes of the page itself: ``/`` and its static files."""

    async def index(request: Request) -> Response:
        try:
            await run_in_threadpool(result.reader, refresh=True)
        except InputError as exc:
            missing = not result.folder.is_dir() or not (result.folder / "run.json").is_file()
            title = "No ctdid result here" if missing else "Broken ctdid result"
            return _error_page(title, str(exc), 404 if missing else 500)
        page = _static_text("index.html").replace("{{TOKEN_QS}}", html.escape(token_qs))
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC_FILES:
            return _error(404, "not found")
        return Response(
            _static_text(name),
            media_type=_STATIC_FILES[name],
            headers={"Cache-Control": "no-cache"},
        )

    return [Route("/", index), Route("/static/{name}", static)]


def _read_routes(result: _Result) -> list[Route]:
    """API routes that read the result: the run description and single slices."""

    def read() -> tuple[ResultReader, bool, str | None]:
        reader = result.reader(refresh=True)
        if not reader.rendering and not any(r.on_demand for r in reader.previews.values()):
            return reader, False, None
        ok, why = result.renderer.status(reader.doc)  # loads the model the first time
        return reader, ok, why

    async def api_result(request: Request) -> Response:
        try:
            reader, on_demand, why_not = await run_in_threadpool(read)
        except InputError as exc:
            return _error(404 if not (result.folder / "run.json").is_file() else 500, str(exc))
        doc = dict(reader.doc)
        doc["rendering"] = (
            [{**rec.to_json(), "on_demand": True} for rec in reader.rendering.values()]
            if on_demand
            else []
        )
        doc["on_demand"] = {"available": on_demand, "reason": why_not}
        doc["status"] = reader.status
        doc["previews"] = [
            {**rec.to_json(), "key": preview_key(rec.id)}
            for rec in sorted(reader.previews.values(), key=lambda r: r.id)
            if on_demand or not rec.on_demand
        ]
        doc["view_order"] = view_order(reader, rendering=on_demand)
        default = reader.default_record()
        if default is None and on_demand:
            default = next((r for r in reader.rendering.values() if r.direction == "default"), None)
        doc["default_candidate"] = None if default is None else default.id
        doc["picks"] = _load_picks(result.folder).get("picks", {})
        doc["task_presets"] = list(TASK_PRESETS)
        doc["export_formats"] = list(EXPORT_FORMATS)
        doc["result_name"] = result.folder.name
        return JSONResponse(doc, headers={"Cache-Control": "no-store"})

    async def api_slice(request: Request) -> Response:
        cand = request.path_params["cand"]
        z_text = request.path_params["z"]
        if not z_text.isdigit() or len(z_text) > 6:
            raise _HTTPError(404, "slice index must be a non-negative integer")
        is_id = cand.isdigit() and len(cand) <= 6
        if cand != "input" and not is_id and not _PREVIEW_KEY.match(cand):
            raise _HTTPError(404, "no such candidate")
        return await run_in_threadpool(_slice_response, result, cand, int(z_text))

    return [
        Route("/api/result", _guarded(api_result)),
        Route("/api/slice/{cand}/{z}", _guarded(api_slice)),
    ]


def _slice_response(result: _Result, cand: str, z: int) -> Response:
    """Slice ``z`` of the input, a candidate or a preview as raw little-endian int16 HU.

    A candidate listed under ``rendering`` is rendered on demand (``X-Rendered``).
    """
    image, n_slices, on_demand = result.image_slice(cand, z)
    data = slice_int16(image)
    ny, nx = data.shape
    return Response(
        data.tobytes(),
        media_type="application/octet-stream",
        headers={
            "X-Shape": f"{ny},{nx}",
            "X-Slices": str(n_slices),
            "X-Dtype": "int16-le",
            "X-Rendered": "on-demand" if on_demand else "stored",
            "Cache-Control": "no-cache",
        },
    )


def _post_routes(result: _Result) -> list[Route]:
    """API routes that take a JSON body: picks (also GET), exports and ROI statistics."""

    async def api_picks(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(_load_picks(result.folder))
        body = await _read_json(request)
        rec = await run_in_threadpool(result.record_for_pick, body.get("candidate"))
        task = body.get("task")
        if not isinstance(task, str) or not task.strip() or len(task) > _TASK_MAX:
            raise _HTTPError(400, f"task must be non-empty text of at most {_TASK_MAX} characters")
        doc = await run_in_threadpool(_save_pick, result.folder, rec, task.strip())
        return JSONResponse(doc)

    async def api_export(request: Request) -> Response:
        body = await _read_json(request)
        rec = await run_in_threadpool(result.record_for_pick, body.get("candidate"))
        target, files = await run_in_threadpool(_export, result.reader(), rec, body)
        rel = str(target.relative_to(result.folder.resolve()))
        return JSONResponse({"written": [rel], "files": len(files), "candidate": rec.id})

    async def api_roi(request: Request) -> Response:
        return _roi_response(result, await _read_json(request))

    return [
        Route("/api/picks", _guarded(api_picks), methods=["GET", "POST"]),
        Route("/api/export", _guarded(api_export), methods=["POST"]),
        Route("/api/roi", _guarded(api_roi), methods=["POST"]),
    ]


def _roi_response(result: _Result, body: Mapping[str, Any]) -> Response:
    """ROI statistics of a slice of the input or of a candidate, as the page computes them."""
    cand = body.get("candidate")
    try:
        z = int(body.get("z", 0))
        box = [float(body[k]) for k in ("x0", "y0", "x1", "y1")]
    except (KeyError, TypeError, ValueError):
        raise _HTTPError(400, "need z, x0, y0, x1, y1 numbers") from None
    shape = body.get("shape", "rect")
    if shape not in ("rect", "circle"):
        raise _HTTPError(400, "shape must be rect or circle")
    if not isinstance(cand, (int, str)) or isinstance(cand, bool):
        raise _HTTPError(400, "candidate must be an integer id, a preview key or 'input'")
    image, _, _ = result.image_slice(str(cand), z)
    stats = roi_stats(slice_int16(image), shape=shape, x0=box[0], y0=box[1], x1=box[2], y1=box[3])
    return JSONResponse({k: (None if v != v else v) for k, v in stats.items()})


def _load_picks(folder: Path) -> dict[str, Any]:
    path = folder / "picks.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"format": "ctdid-picks", "picks": {}}
    if not isinstance(doc, dict) or not isinstance(doc.get("picks"), dict):
        return {"format": "ctdid-picks", "picks": {}}
    return doc


_PICK_LOCK = threading.Lock()


def _save_pick(folder: Path, rec: CandidateRecord, task: str) -> dict[str, Any]:
    with _PICK_LOCK:
        doc = _load_picks(folder)
        doc["format"] = "ctdid-picks"
        doc["picks"][task] = rec.pick_entry(
            task,
            source="ctdid view",
            time=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        with atomic_file(folder / "picks.json", overwrite=True) as tmp:
            tmp.write_text(json.dumps(doc, indent=2))
    return doc


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return slug[:40] or "pick"


def _export(
    reader: ResultReader, rec: CandidateRecord, body: Mapping[str, Any]
) -> tuple[Path, list[Path]]:
    from ctdid import __version__
    from ctdid.io import write_volume
    from ctdid.volume import CTVolume

    fmt = body.get("format")
    if fmt not in EXPORT_FORMATS:
        raise _HTTPError(400, f"format must be one of {', '.join(EXPORT_FORMATS)}")
    task = body.get("task") or ""
    if not isinstance(task, str) or len(task) > _TASK_MAX:
        raise _HTTPError(400, "task must be text")
    window = body.get("window", [-160.0, 240.0])
    try:
        low, high = float(window[0]), float(window[1])
    except (TypeError, ValueError, IndexError, KeyError):
        raise _HTTPError(400, "window must be [low, high] in HU") from None
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise _HTTPError(400, "window must be finite with high > low")
    wfmt, suffix, multi_suffix = EXPORT_FORMATS[fmt]
    image = reader.candidate(rec.id, mmap=False)
    name = body.get("name")
    if name is None:
        stem = f"{_slug(task) if task else 'pick'}_c{rec.id:03d}_s{rec.strength:+.2f}"
        name = stem + (multi_suffix if image.shape[0] > 1 else suffix)
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise _HTTPError(400, "name: letters, digits and . _ + - only, no '..'")
    exports = reader.folder / "exports"
    target = (exports / name).resolve()
    if target.parent != exports.resolve():
        raise _HTTPError(400, "exports go into the result's exports/ folder only")
    overwrite = body.get("overwrite") is True
    if target.exists() and not overwrite:
        raise _HTTPError(409, f"exports/{name} exists; export again with overwrite")
    exports.mkdir(exist_ok=True)
    meta = {"ctdid_candidate": rec.id, "ctdid_strength": rec.strength}
    source = _source_volume(reader, image.shape)
    if source is not None:  # same study, geometry and DICOM headers: a derived series
        volume = source.with_hu(image, **meta)
    else:
        volume = CTVolume(hu=image, spacing=reader.spacing, meta=meta)
    model = reader.doc.get("model") if isinstance(reader.doc.get("model"), dict) else {}
    model_name = str(model.get("name", "model")) if model else "model"
    config = reader.doc.get("config")
    method = str(config.get("method", "did")) if isinstance(config, dict) else "did"
    curve = reader.doc.get("curve")
    if isinstance(curve, dict) and rec.direction in ("high", "low"):
        method = str(curve.get(rec.direction, method))  # the method that made this side
    elif isinstance(curve, dict):
        method = "did" if curve.get("high") == curve.get("low") == "did" else str(curve["high"])
    how = "Deep Interactive Denoiser" if method == "did" else f"{method} baseline (no DID)"
    params = {
        "tool": "ctdid view",
        "method": method,
        "model": model_name,
        "weights_sha256": model.get("weights_sha256") if model else None,
        "strength": round(rec.strength, 6),
        "direction": rec.direction,
        "step": rec.step,
        "task": task,
    }
    derivation = (
        f"Denoised by ctdid {__version__} {how}, model {model_name}, "
        f"strength {rec.strength:+.3f} ({rec.direction}, candidate {rec.id})"
        + (f", picked in the viewer for task {task}" if task else ", exported from the viewer")
    )
    files = write_volume(
        volume,
        target,
        format=wfmt,
        overwrite=overwrite,
        window=(low, high),
        description=f"ctdid {'DID' if method == 'did' else method} {model_name} "
        f"s={rec.strength:+.2f}",
        derivation=derivation,
        params=params,
    )
    return target, files


def _source_volume(reader: ResultReader, shape: tuple[int, ...]) -> Any:
    """The run's input volume (geometry and DICOM headers) when it is still readable.

    ``run.json`` records the input's path (and DICOM series). Only a DICOM input is re-read,
    and only when its shape matches the candidate's; anything else gives None and the export
    carries the spacing of ``run.json`` alone.
    """
    from ctdid.io import read_volume
    from ctdid.io.formats import detect_read_format

    info = reader.doc.get("input")
    if not isinstance(info, dict) or not isinstance(info.get("path"), str):
        return None
    path = Path(info["path"])
    try:
        if not path.exists() or detect_read_format(path) != "dicom":
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vol = read_volume(path, format="dicom", series=info.get("series"))
    except (CTDIDError, OSError, ValueError):
        return None
    if vol.shape != tuple(shape) or vol.dicom_headers is None:
        return None
    return vol


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _prepare(
    result_dir: str | os.PathLike[str], host: str, port: int, allow_remote: bool, model: Any = None
) -> tuple[Starlette, socket.socket, str]:
    folder = Path(result_dir)
    if not folder.is_dir():
        raise InputError("no such result folder", path=folder)
    local = host in _LOCAL_HOSTS
    if not local and not allow_remote:
        raise InputError(
            f"refusing to listen on {host}: the viewer binds 127.0.0.1 unless --allow-remote"
        )
    if not 0 <= int(port) <= 65535:
        raise InputError(f"port must be 0..65535, got {port}")
    token = None if local else secrets.token_urlsafe(24)
    app = create_app(folder, token=token, model=model)
    sock = _bind("127.0.0.1" if host == "localhost" else host, int(port))
    bound_port = sock.getsockname()[1]
    shown = host if host not in ("0.0.0.0", "::") else socket.gethostname()
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    url = f"http://{shown}:{bound_port}/" + ("" if token is None else f"?token={token}")
    return app, sock, url


def serve(
    result_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    open_browser: bool = False,
    allow_remote: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the viewer for ``result_dir`` until interrupted (Ctrl-C).

    Parameters
    ----------
    result_dir : path
        The result folder.
    host : str
        Address to bind; 127.0.0.1 by default. Any non-local address needs ``allow_remote``
        and then requires the random token printed in the address.
    port : int
        0 picks a free port.
    open_browser : bool
        Open the page in the default web browser once listening.
    allow_remote : bool
        Allow binding a non-local address.
    on_ready : callable, optional
        Called with the page address (token included) once the socket listens.

    Raises
    ------
    InputError
        Missing folder, a non-local host without ``allow_remote``, or a port in use.
    """
    import uvicorn

    app, sock, url = _prepare(result_dir, host, port, allow_remote)
    if on_ready is not None:
        on_ready(url)
    if open_browser:
        webbrowser.open(url)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


@contextmanager
def serve_in_thread(
    result_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    allow_remote: bool = False,
    model: Any = None,
) -> Iterator[str]:
    """Run the viewer server in a background thread; yield the page address.

    For ``ctdid run --view``, tests and benchmarks. ``model``: the run's denoiser, for
    on-demand rendering (see :func:`create_app`). The server stops when the ``with`` block
    ends.
    """
    import uvicorn

    app, sock, url = _prepare(result_dir, host, port, allow_remote, model)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10.0
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        sock.close()
        raise RuntimeError("viewer server did not start")
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10.0)
        sock.close()


def view(
    result_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    open_browser: bool = False,
    allow_remote: bool = False,
) -> None:
    """Entry point of ``ctdid view``: print the address, serve until Ctrl-C."""

    def ready(url: str) -> None:
        print(f"ctdid viewer for {Path(result_dir)} at {url}", flush=True)
        print("press Ctrl-C to stop", flush=True)

    with suppress(KeyboardInterrupt):
        serve(
            result_dir,
            host=host,
            port=port,
            open_browser=open_browser,
            allow_remote=allow_remote,
            on_ready=ready,
        )
