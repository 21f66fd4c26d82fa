"""``ctdid batch``: many series as Ray tasks, each the result folder ``ctdid run`` writes.

One local Ray with 2 workers serves the module; three tiny series (2 x 32 x 32), one of them a
truncated file. Each reference result is ``ctdid run`` with one torch thread, as the batch's
tasks use by default.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ctdid.batch import (
    BATCH_FILE,
    SeriesSpec,
    find_series,
    init_ray,
    make_job,
    partial_folder,
    read_manifest,
)
from ctdid.errors import CTDIDError, InputError

if importlib.util.find_spec("ray") is None:  # (not imported here: init_ray imports it)
    pytest.skip("ray is not installed (pip install 'ctdid[batch]')", allow_module_level=True)

#: The model file given as ``--model FILE:build`` (copied beside the series).
MODEL_FILE = Path(__file__).parent / "smoother_model.py"
OPTIONS = ["--method", "did", "--candidates", "1", "--train-slices", "2"]
#: run.json keys that hold times (or say the run was resumed): not compared. Also
#: ``previews_shown``: ``ctdid run`` shows a volume's previews while it runs (run.json records
#: them); a batch series is made in a hidden partial folder that nobody views, so it makes none.
TIMES = {
    "timings", "elapsed_s", "timings_s", "seconds", "trajectory_seconds", "resumed",
    "previews_shown",
}  # fmt: skip


def tiny_series(seed: int, n: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    img = np.full((2, n, n), -1000.0, np.float32)
    img[:, yy**2 + xx**2 < (0.42 * n) ** 2] = 40.0
    return (img + rng.normal(0.0, 30.0, img.shape)).astype(np.float32)


def cli(*args: str | Path) -> tuple[int, str, str]:
    """``ctdid.cli.main`` in this process: (exit status, stdout, stderr)."""
    from ctdid.cli import main

    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        pytest.raises(SystemExit) as exc,
    ):
        main([str(a) for a in args])
    return int(exc.value.code or 0), out.getvalue(), err.getvalue()


def rows(folder: Path) -> dict[str, dict[str, str]]:
    with (folder / BATCH_FILE).open(newline="") as fh:
        return {r["series"]: r for r in csv.DictReader(fh)}


def without_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def assert_same_result(a: Path, b: Path) -> None:
    """Same candidates and weights (bytes), run.json and metrics.csv but for the times."""
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.suffix in (".npy", ".safetensors"))
    assert files == sorted(
        p.relative_to(b) for p in b.rglob("*") if p.suffix in (".npy", ".safetensors")
    )
    assert any(str(f).startswith("candidates") for f in files)
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    docs = [without_times(json.loads((f / "run.json").read_text())) for f in (a, b)]
    assert docs[0] == docs[1]
    assert docs[1]["status"] == "done"
    metrics = [list(csv.DictReader((f / "metrics.csv").open())) for f in (a, b)]
    for row in (*metrics[0], *metrics[1]):
        row.pop("elapsed_s", None)
    assert metrics[0] == metrics[1]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three series (``c`` truncated), the model file, and ``ctdid run`` on ``a`` and ``b``."""
    import torch

    root = tmp_path_factory.mktemp("batch")
    shutil.copyfile(MODEL_FILE, root / "tiny_model.py")
    series = root / "series"
    series.mkdir()
    for name, seed in (("a", 0), ("b", 1)):
        np.save(series / f"{name}.npy", tiny_series(seed))
    (series / "c.npy").write_bytes((series / "a.npy").read_bytes()[:100])
    model = f"{root / 'tiny_model.py'}:build"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in ("a", "b"):
            code, _, err = cli(
                "run", series / f"{name}.npy", "--model", model, "--out", root / "ref" / name,
                *OPTIONS,
            )  # fmt: skip
            assert code == 0, err
    finally:
        torch.set_num_threads(threads)
    return {"root": root, "series": series, "model": model, "ref": root / "ref"}


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    """One local Ray with 2 CPUs for the module (the batches below find it running)."""
    ray, started = init_ray(workers=2)
    assert started
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def first(work: dict[str, Any], ray_local: Any) -> dict[str, Any]:
    out = work["root"] / "out"
    code, stdout, stderr = cli(
        "batch", work["series"], "--out", out, "--model", work["model"], "--workers", "2",
        *OPTIONS,
    )  # fmt: skip
    return {"out": out, "code": code, "stdout": stdout, "stderr": stderr}


def test_local_ray_listens_on_loopback_only(ray_local: Any) -> None:
    assert [n["NodeManagerAddress"] for n in ray_local.nodes()] == ["127.0.0.1"]
    assert ray_local.cluster_resources()["CPU"] == 2


def test_batch_results_are_those_of_ctdid_run(work: dict[str, Any], first: dict[str, Any]) -> None:
    out = first["out"]
    assert first["code"] == 1, first["stderr"]  # one series failed
    table = rows(out)
    assert list(table) == ["a", "b", "c"]
    for name in ("a", "b"):
        row = table[name]
        assert row["status"] == "done" and row["error"] == ""
        assert int(row["candidates"]) == len(
            json.loads((out / name / "run.json").read_text())["candidates"]
        )
        assert row["coverage"].startswith("high=") and float(row["seconds"]) > 0
        assert_same_result(work["ref"] / name, out / name)
    bad = table["c"]
    assert bad["status"] == "failed" and bad["candidates"] == ""
    assert "c.npy" in bad["error"] and "not a NumPy" in bad["error"] and "\n" not in bad["error"]
    assert not (out / "c").exists() and not partial_folder(out, "c").exists()
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no partial folder left
    summary = first["stdout"].replace("\n", " ")
    assert "2 done, 0 skipped, 1 failed" in summary and str(out / BATCH_FILE) in summary
    assert "not a NumPy" in summary and "Traceback" not in first["stderr"]


def test_rerun_does_nothing(work: dict[str, Any], first: dict[str, Any]) -> None:
    out = first["out"]
    before = {p: p.stat().st_mtime_ns for p in (out / "a").rglob("*")}
    before.update({p: p.stat().st_mtime_ns for p in (out / "b").rglob("*")})
    code, stdout, _ = cli("batch", work["series"], "--out", out, "--model", work["model"], *OPTIONS)
    assert code == 1
    assert {n: r["status"] for n, r in rows(out).items()} == {
        "a": "skipped",
        "b": "skipped",
        "c": "failed",
    }
    after = {p: p.stat().st_mtime_ns for p in (*(out / "a").rglob("*"), *(out / "b").rglob("*"))}
    assert after == before
    assert "0 done, 2 skipped, 1 failed" in stdout.replace("\n", " ")
    # other options: the finished folder holds another run, which is an error, not redone
    code, stdout, _ = cli(
        "batch", work["series"], "--out", out, "--model", work["model"], "--method", "did",
        "--candidates", "2", "--train-slices", "2",
    )  # fmt: skip
    assert code == 1 and rows(out)["a"]["status"] == "failed"
    assert "n_candidates 1 -> 2" in rows(out)["a"]["error"]
    assert {p: p.stat().st_mtime_ns for p in (out / "a").rglob("*")} == {
        p: t for p, t in before.items() if p.is_relative_to(out / "a")
    }


@pytest.mark.filterwarnings("ignore:no model card given")
def test_interrupted_batch_resumes(work: dict[str, Any], first: dict[str, Any]) -> None:
    """``a`` stopped inside its run (partial folder), ``b`` finished: a rerun ends ``a``."""
    import torch

    from ctdid.io import read_volume
    from ctdid.runner import RunProgress, run_did
    from ctdid.runner.console import load_denoiser

    out = work["root"] / "resumed"
    out.mkdir()
    shutil.copytree(first["out"] / "b", out / "b")

    def stop(p: RunProgress) -> None:
        if p.stage == "candidate" and p.done == 2:
            raise KeyboardInterrupt("stopped")

    # the options of the batch below, as ctdid batch makes them
    defaults = {"model": work["model"], "method": "did", "candidates": 1, "train_slices": 2}
    job = make_job(SeriesSpec("a", work["series"] / "a.npy"), defaults=defaults)
    model, info = load_denoiser(job.model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_did(
                read_volume(job.input), model, out_dir=partial_folder(out, "a"),
                options=job.options, progress=stop, model_info=info,
            )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert json.loads((partial_folder(out, "a") / "run.json").read_text())["status"] == "failed"
    manifest = work["root"] / "manifest.csv"
    manifest.write_text("input,name,candidates\nseries/a.npy,a,1\nseries/b.npy,b,\n")
    code, _, err = cli("batch", manifest, "--out", out, "--model", work["model"], *OPTIONS[:2],
                       "--train-slices", "2", "--candidates", "3")  # fmt: skip
    assert code == 1  # b's row takes --candidates 3: another run than the one in b/
    table = rows(out)
    assert table["a"]["status"] == "done", table["a"]
    assert json.loads((out / "a" / "run.json").read_text())["resumed"] is True
    assert not partial_folder(out, "a").exists()
    assert_same_result(work["ref"] / "a", out / "a")
    assert table["b"]["status"] == "failed" and "n_candidates 1 -> 3" in table["b"]["error"]
    code, stdout, err = cli("batch", manifest, "--out", out, "--model", work["model"], *OPTIONS)
    assert code == 0, err
    assert {n: r["status"] for n, r in rows(out).items()} == {"a": "skipped", "b": "skipped"}
    assert "0 done, 2 skipped, 0 failed" in stdout.replace("\n", " ")


def test_overwrite_runs_again(work: dict[str, Any], first: dict[str, Any]) -> None:
    out = work["root"] / "again"
    shutil.copytree(first["out"] / "b", out / "b")
    (out / "b" / "metrics.csv").write_text("stale")
    manifest = work["root"] / "only_b.csv"
    manifest.write_text(f"input,name\n{work['series'] / 'b.npy'},b\n")
    code, _, err = cli(
        "batch", manifest, "--out", out, "--model", work["model"], "--overwrite", *OPTIONS
    )
    assert code == 0, err
    assert rows(out)["b"]["status"] == "done"
    assert_same_result(work["ref"] / "b", out / "b")
    assert sorted(p.name for p in out.iterdir()) == ["b", BATCH_FILE]


# ------------------------------------------------------------------------------------------------
# without Ray, series discovery and options (no task runs)


def test_without_ray_says_how_to_install(
    work: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    code, _, err = cli("batch", work["series"], "--out", tmp_path / "o", "--model", work["model"])
    assert code == 2
    assert err.strip() == "ctdid: error: ctdid batch needs Ray: pip install 'ctdid[batch]'"
    assert not (tmp_path / "o").exists()
    with pytest.raises(CTDIDError, match=r"pip install 'ctdid\[batch\]'"):
        init_ray()


def test_find_series_in_a_folder(tmp_path: Path) -> None:
    (tmp_path / "dicom_series").mkdir()
    np.save(tmp_path / "b.npy", np.zeros((1, 4, 4), np.float32))
    (tmp_path / "b.json").write_text("{}")  # a NumPy sidecar, not a series
    (tmp_path / "c.nii.gz").write_bytes(b"")
    (tmp_path / "d.mhd").write_text("")
    (tmp_path / "d.raw").write_bytes(b"")  # the MetaImage's data file
    (tmp_path / ".hidden.npy").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "results").mkdir()
    with pytest.warns(UserWarning, match="not CT series, left out: notes.txt"):
        specs = find_series(tmp_path, out=tmp_path / "results")
    assert [(s.name, s.input.name) for s in specs] == [
        ("b", "b.npy"),
        ("c", "c.nii.gz"),
        ("d", "d.mhd"),
        ("dicom_series", "dicom_series"),
    ]
    np.save(tmp_path / "c.npy", np.zeros((1, 4, 4), np.float32))
    with pytest.raises(InputError, match="same result folder 'c'"), pytest.warns(UserWarning):
        find_series(tmp_path, out=tmp_path / "results")
    with pytest.raises(InputError, match="no series found"):
        find_series(tmp_path / "results")
    with pytest.raises(InputError, match=r"a folder of series .* or a CSV manifest"):
        find_series(tmp_path / "b.npy")


def test_manifest_rows_and_their_options(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "input,name,mode,per-slice,seed,reference\n"
        "scans/x.npy,,fast,yes,3,refs/x.npy\n"
        "/abs/y.nii.gz,why,,,,\n"
        "z.npy,z,,maybe,,\n"
    )
    x, y, z = read_manifest(manifest)
    assert (x.name, x.input) == ("x", tmp_path / "scans" / "x.npy")
    assert x.values == {"mode": "fast", "per_slice": True, "seed": 3,
                        "reference": tmp_path / "refs" / "x.npy"}  # fmt: skip
    assert (y.name, y.input, y.values) == ("why", Path("/abs/y.nii.gz"), {})
    job = make_job(x, defaults={"model": "m.py:f", "mode": "robust", "candidates": 2})
    assert job.options.mode == "fast" and not job.options.shared and job.options.seed == 3
    assert job.options.n_candidates == 2 and job.reference == tmp_path / "refs" / "x.npy"
    assert make_job(y, defaults={"model": "m.py:f"}).options.mode == "robust"
    with pytest.raises(InputError, match="row 4: column per_slice: not a yes/no value"):
        make_job(z, defaults={"model": "m.py:f"})
    with pytest.raises(InputError, match="no model"):
        make_job(y)
    with pytest.raises(InputError, match="unknown mode"):
        make_job(SeriesSpec("s", tmp_path, {"mode": "slow"}), defaults={"model": "m"})
    manifest.write_text("input,colour\nx.npy,red\n")
    with pytest.raises(InputError, match=r"unknown manifest column.*colour"):
        read_manifest(manifest)
    manifest.write_text("name\nx\n")
    with pytest.raises(InputError, match="no 'input' column"):
        read_manifest(manifest)


def test_help_lists_batch() -> None:
    code, stdout, _ = cli("--help")
    assert code == 0 and "batch" in stdout
    code, stdout, _ = cli("batch", "--help")
    assert code == 0 and "--address" in stdout and "--workers" in stdout


def test_bad_batch_option_is_one_line_exit_2(work: dict[str, Any], tmp_path: Path) -> None:
    code, _, err = cli(
        "batch", work["series"], "--out", tmp_path / "o", "--model", "m", "--window", "1,2,3"
    )
    assert code == 2 and err.strip().startswith("ctdid: error:") and "window" in err
    assert not (tmp_path / "o").exists()
