"""The viewer's HTTP server without a browser (starlette's TestClient)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
from viewer_factory import make_result

from ctdid.errors import InputError
from ctdid.io import read_volume
from ctdid.results import ResultReader
from ctdid.viewer.server import (
    MAX_BODY,
    create_app,
    roi_stats,
    serve_in_thread,
    slice_int16,
    view,
)

with warnings.catch_warnings():  # starlette >= 1.0 asks for httpx2 (not installed)
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

LOCAL = "http://127.0.0.1"


def client(folder: Path, token: str | None = None) -> TestClient:
    return TestClient(create_app(folder, token=token), base_url=LOCAL)


def test_page_and_static_files(result64: Path) -> None:
    c = client(result64)
    r = c.get("/")
    assert r.status_code == 200
    assert 'id="cand-slider"' in r.text and "high resolution" in r.text and "low noise" in r.text
    assert "{{TOKEN_QS}}" not in r.text
    js = c.get("/static/viewer.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert c.get("/static/viewer.css").status_code == 200
    assert c.get("/static/index.html").status_code == 404
    assert c.get("/static/server.py").status_code == 404


def test_result_document(result64: Path) -> None:
    r = client(result64).get("/api/result")
    assert r.status_code == 200
    doc = r.json()
    reader = ResultReader(result64)
    assert doc["status"] == "done"
    assert doc["order"] == reader.doc["order"]
    assert doc["order"] != sorted(doc["order"])  # ids are not curve order here
    assert doc["default_candidate"] == 0
    assert len(doc["candidates"]) == 7
    assert doc["candidates"][0]["labels"]["noise_hu"] == pytest.approx(17.0)
    assert doc["shape_zyx"] == [1, 64, 64]
    assert doc["picks"] == {}


def test_slice_is_rounded_int16(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    w = make_result(folder, nz=3)
    # values that need rounding and clipping
    img = np.zeros(w.shape, dtype=np.float32)
    img[1, 0, :4] = [1.4, 1.6, -2.6, 40000.0]
    img[1, 1, :2] = [-40000.0, 0.5]
    rec = w.add(img, direction="low", strength=1.0, step=9, progress=1.0, elapsed_s=1.0)
    c = client(folder)
    r = c.get(f"/api/slice/{rec.id}/1")
    assert r.status_code == 200
    assert r.headers["x-shape"] == "64,64" and r.headers["x-slices"] == "3"
    data = np.frombuffer(r.content, dtype="<i2").reshape(64, 64)
    assert data[0, :4].tolist() == [1, 2, -3, 32767]
    assert data[1, :2].tolist() == [-32768, 0]
    r_in = c.get("/api/slice/input/2")
    expected = slice_int16(ResultReader(folder).input()[2])
    assert np.array_equal(np.frombuffer(r_in.content, dtype="<i2").reshape(64, 64), expected)


@pytest.mark.parametrize(
    "path",
    [
        "/api/slice/../../etc/passwd",
        "/api/slice/%2e%2e/%2e%2e/etc/passwd",
        "/api/slice/..%2f..%2fetc%2fpasswd/0",
        "/api/slice/%2e%2e%2f%2e%2e%2frun.json/0",
        "/api/slice/99/0",
        "/api/slice/-1/0",
        "/api/slice/1e1/0",
        "/api/slice/run.json/0",
        "/api/slice/input/5",
        "/api/slice/0/-1",
        "/api/slice/0/x",
        "/static/../results.py",
        "/static/%2e%2e%2fserver.py",
        "/run.json",
        "/input.npy",
        "/candidates/c000.npy",
    ],
)
def test_nothing_outside_the_api(result64: Path, path: str) -> None:
    r = client(result64).get(path)
    assert r.status_code in (400, 404)
    assert b"root:" not in r.content and b"ctdid-result" not in r.content


def test_host_header_checked_without_token(result64: Path) -> None:
    c = TestClient(create_app(result64), base_url="http://evil.example")
    assert c.get("/api/result").status_code == 403
    c2 = TestClient(create_app(result64), base_url="http://localhost:8123")
    assert c2.get("/api/result").status_code == 200


def test_token_required_when_remote(result64: Path) -> None:
    c = client(result64, token="s3cret")
    assert c.get("/").status_code == 403
    assert c.get("/api/result").status_code == 403
    assert c.get("/api/result?token=wrong").status_code == 403
    assert c.get("/api/slice/0/0").status_code == 403
    assert c.post("/api/picks", json={"candidate": 0, "task": "x"}).status_code == 403
    page = c.get("/?token=s3cret")
    assert page.status_code == 200
    assert "/static/viewer.js?token=s3cret" in page.text
    assert c.get("/static/viewer.js?token=s3cret").status_code == 200
    ok = c.get("/api/result", headers={"X-CTDID-Token": "s3cret"})
    assert ok.status_code == 200
    assert not (result64 / "picks.json").exists()


def test_body_size_and_type_limits(result64: Path) -> None:
    c = client(result64)
    big = json.dumps({"candidate": 0, "task": "x" * (MAX_BODY + 10)})
    r = c.post("/api/picks", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413

    def chunks():  # no Content-Length: the limit applies while reading
        for _ in range(MAX_BODY // 1024 + 2):
            yield b" " * 1024

    r = c.post("/api/picks", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    r = c.post("/api/picks", content=b"candidate=0&task=x")
    assert r.status_code == 415  # a cross-site form post
    r = c.post("/api/picks", content=b"{", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert not (result64 / "picks.json").exists()


def test_picks_written_atomically_and_merged(result64: Path) -> None:
    c = client(result64)
    assert c.get("/api/picks").json()["picks"] == {}
    r = c.post("/api/picks", json={"candidate": 4, "task": "low-contrast lesion"})
    assert r.status_code == 200
    r = c.post("/api/picks", json={"candidate": 5, "task": "high-contrast detail"})
    r = c.post("/api/picks", json={"candidate": 2, "task": "low-contrast lesion"})
    doc = json.loads((result64 / "picks.json").read_text())
    assert doc["format"] == "ctdid-picks"
    assert set(doc["picks"]) == {"low-contrast lesion", "high-contrast detail"}
    assert doc["picks"]["low-contrast lesion"]["candidate"] == 2
    assert doc["picks"]["low-contrast lesion"]["file"] == "candidates/c002.npy"
    assert doc["picks"]["high-contrast detail"]["source"] == "ctdid view"
    assert c.get("/api/result").json()["picks"]["high-contrast detail"]["candidate"] == 5
    assert [p.name for p in result64.iterdir() if p.name.startswith(".")] == []
    for bad in ({"candidate": 42, "task": "x"}, {"candidate": "../x", "task": "x"}):
        assert c.post("/api/picks", json=bad).status_code == 404
    assert c.post("/api/picks", json={"candidate": 1, "task": " "}).status_code == 400
    assert c.post("/api/picks", json={"candidate": True, "task": "x"}).status_code == 400


def test_export_formats_inside_result(result64: Path) -> None:
    c = client(result64)
    reader = ResultReader(result64)
    for fmt in ("nifti", "png", "dicom"):
        r = c.post(
            "/api/export", json={"candidate": 3, "format": fmt, "task": "low-contrast lesion"}
        )
        assert r.status_code == 200, r.text
        (rel,) = r.json()["written"]
        path = result64 / rel
        assert path.exists()
        assert path.resolve().parent == (result64 / "exports").resolve()
    nii = next((result64 / "exports").glob("*.nii.gz"))
    vol = read_volume(nii)
    assert vol.spacing == pytest.approx(reader.spacing)
    assert np.allclose(vol.hu, reader.candidate(3), atol=1e-3)
    dcm = next(p for p in (result64 / "exports").iterdir() if p.is_dir())
    assert np.allclose(read_volume(dcm).hu, reader.candidate(3), atol=1.0)
    # never overwritten without permission
    again = {"candidate": 3, "format": "nifti", "task": "low-contrast lesion"}
    assert c.post("/api/export", json=again).status_code == 409
    assert c.post("/api/export", json={**again, "overwrite": True}).status_code == 200


@pytest.mark.parametrize(
    "name", ["../evil.nii.gz", "/tmp/evil.nii.gz", "a/b.png", "..", ".hidden.png", "x..png"]
)
def test_export_names_stay_in_exports(result64: Path, name: str) -> None:
    r = client(result64).post("/api/export", json={"candidate": 0, "format": "png", "name": name})
    assert r.status_code == 400
    assert not (result64 / "exports").exists()
    assert not (result64.parent / "evil.nii.gz").exists()


def test_export_rejects_bad_requests(result64: Path) -> None:
    c = client(result64)
    assert c.post("/api/export", json={"candidate": 0, "format": "exe"}).status_code == 400
    assert c.post("/api/export", json={"candidate": 77, "format": "png"}).status_code == 404
    bad_window = {"candidate": 0, "format": "png", "window": [100, 100]}
    assert c.post("/api/export", json=bad_window).status_code == 400


def test_roi_endpoint_matches_numpy(result64: Path) -> None:
    data = slice_int16(ResultReader(result64).candidate(2)[0]).astype(np.float64)
    r = client(result64).post(
        "/api/roi",
        json={
            "candidate": 2,
            "z": 0,
            "shape": "rect",
            "x0": 10.2,
            "y0": 12.7,
            "x1": 30.0,
            "y1": 20,
        },
    )
    assert r.status_code == 200
    sub = data[13:20, 10:30]  # centres 10.5..29.5 and 13.5..19.5
    assert r.json()["n"] == sub.size
    assert r.json()["mean"] == pytest.approx(sub.mean())
    assert r.json()["std"] == pytest.approx(sub.std())


def test_roi_stats_circle() -> None:
    data = np.arange(100, dtype=np.float64).reshape(10, 10)
    st = roi_stats(data, shape="circle", x0=2, y0=2, x1=8, y1=8)
    yy, xx = np.mgrid[:10, :10] + 0.5
    mask = (xx - 5) ** 2 + (yy - 5) ** 2 <= 9
    assert st["n"] == mask.sum()
    assert st["mean"] == pytest.approx(data[mask].mean())
    assert st["std"] == pytest.approx(data[mask].std())
    with pytest.raises(InputError):
        roi_stats(data, shape="star", x0=0, y0=0, x1=1, y1=1)


def test_error_pages(tmp_path: Path) -> None:
    missing = client(tmp_path / "nothing")
    r = missing.get("/")
    assert r.status_code == 404 and "No ctdid result here" in r.text
    assert missing.get("/api/result").status_code == 404
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")
    r = client(broken).get("/")
    assert r.status_code == 500 and "Broken ctdid result" in r.text and "unreadable" in r.text
    assert "error" in client(broken).get("/api/result").json()


def test_missing_candidate_file(result64: Path) -> None:
    (result64 / "candidates" / "c001.npy").unlink()
    r = client(result64).get("/api/slice/1/0")
    assert r.status_code == 500 and "cannot read" in r.json()["error"]


def test_running_result_grows(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    w = make_result(folder, strengths=(0.0,), finish=False)
    c = client(folder)
    assert c.get("/api/result").json()["status"] == "running"
    assert c.get("/api/slice/1/0").status_code == 404
    w.add(np.zeros(w.shape), direction="low", strength=0.5, step=1, progress=0.5, elapsed_s=1)
    assert c.get("/api/slice/1/0").status_code == 200
    w.finish()
    doc = c.get("/api/result").json()
    assert doc["status"] == "done" and doc["order"] == [0, 1]


def test_serve_in_thread_binds_localhost(result64: Path) -> None:
    with serve_in_thread(result64) as url:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "api/result", timeout=5) as resp:
            assert json.loads(resp.read())["status"] == "done"


def test_remote_needs_permission(result64: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="allow-remote"), serve_in_thread(result64, host="0.0.0.0"):
        pass
    with pytest.raises(InputError, match="no such"), serve_in_thread(tmp_path / "missing"):
        pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        busy = s.getsockname()[1]
        with pytest.raises(InputError, match="cannot listen"), serve_in_thread(result64, port=busy):
            pass


def test_remote_url_carries_token(result64: Path) -> None:
    with serve_in_thread(result64, host="127.0.0.2", allow_remote=True) as url:
        assert "?token=" in url
        base, token = url.split("?token=")
        port = base.rstrip("/").rsplit(":", 1)[1]
        plain = f"http://127.0.0.2:{port}/api/result"
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(plain, timeout=5)
        assert info.value.code == 403
        with urllib.request.urlopen(f"{plain}?token={token}", timeout=5) as resp:
            assert resp.status == 200


def test_view_prints_address_and_stops_on_ctrl_c(
    result64: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    seen: list[int] = []

    def interrupted(self: object, sockets: list[socket.socket]) -> None:
        seen.append(sockets[0].getsockname()[1])
        raise KeyboardInterrupt

    monkeypatch.setattr(uvicorn.Server, "run", interrupted)
    view(result64, host="127.0.0.1", port=0, open_browser=False, allow_remote=False)
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:{seen[0]}/" in out and "Ctrl-C" in out


def test_dicom_export_is_derived_from_the_dicom_input(tmp_path: Path) -> None:
    import pydicom

    from ctdid.io import write_volume
    from ctdid.results import ResultWriter
    from ctdid.volume import CTVolume

    hu = np.random.default_rng(1).normal(40, 20, (2, 32, 32)).round().astype(np.float32)
    src = tmp_path / "src_dicom"
    write_volume(CTVolume(hu, spacing=(2.5, 0.8, 0.8)), src, params={"test": 1})
    source = read_volume(src)
    w = ResultWriter(
        tmp_path / "result",
        input_hu=source.hu,
        spacing=source.spacing,
        info={"input": {"path": str(src)}},
    )
    w.add(source.hu - 5, direction="default", strength=0.0, step=0, progress=0, elapsed_s=0)
    w.finish()
    r = client(tmp_path / "result").post(
        "/api/export", json={"candidate": 0, "format": "dicom", "task": "lesion"}
    )
    assert r.status_code == 200, r.text
    out = tmp_path / "result" / r.json()["written"][0]
    files = sorted(out.iterdir()) if out.is_dir() else [out]
    first = pydicom.dcmread(files[0])
    src_first = pydicom.dcmread(sorted(src.iterdir())[0])
    assert first.StudyInstanceUID == src_first.StudyInstanceUID
    assert first.SeriesInstanceUID != src_first.SeriesInstanceUID
    refs = {
        item.ReferencedSOPInstanceUID
        for f in files
        for item in pydicom.dcmread(f).SourceImageSequence
    }
    assert refs <= {pydicom.dcmread(f).SOPInstanceUID for f in src.iterdir()}
    np.testing.assert_allclose(read_volume(out).hu, source.hu - 5, atol=0.5)
