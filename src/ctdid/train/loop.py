"""Supervised training of a denoiser on low/normal-dose pairs, with checkpoints and resume.

The network is built by :func:`ctdid.models.build_model` and wrapped in a
:class:`ctdid.core.adapter.HUAdapter`: patches come in HU, the loss is the mean squared error in
network units, and the shipped weights and card use the same units. Adam with the learning rate
divided by 10 at 50 % and 75 % of the iterations follows the paper.

Outputs in ``out_dir``: ``<name>.safetensors`` (the network's state dict), ``<name>.card.yaml``
(:class:`ctdid.models.ModelCard`), ``<name>.curve.png`` (training loss and validation RMSE),
``<name>.config.json`` (:class:`TrainConfig`), ``train_log.jsonl`` (one JSON object per log
entry) and ``checkpoint.pt`` (everything needed to resume).

Examples
--------
>>> from ctdid.train import TrainConfig, train
>>> cfg = TrainConfig(name="compact-ld25", dataset="pairs", dose=0.25, iterations=20000)
>>> result = train(cfg, out_dir="runs/compact-ld25")                    # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from ctdid.core.adapter import HUAdapter
from ctdid.errors import InputError, OutputExistsError
from ctdid.train.config import TrainConfig
from ctdid.train.dataset import PairPatchDataset, split_pairs
from ctdid.train.pairs import (
    SIMULATE_FORMAT,
    check_not_held_out,
    list_pairs,
    load_pair,
    read_dataset_info,
)

__all__ = [
    "CHECKPOINT_NAME",
    "LOG_NAME",
    "TrainProgress",
    "TrainResult",
    "build_adapter",
    "evaluate",
    "output_paths",
    "train",
]

#: File name of the resumable checkpoint in ``out_dir``.
CHECKPOINT_NAME = "checkpoint.pt"
#: File name of the JSON-lines training log in ``out_dir``.
LOG_NAME = "train_log.jsonl"


@dataclasses.dataclass(frozen=True)
class TrainProgress:
    """State after one iteration, given to the ``progress`` callback.

    Attributes
    ----------
    iteration : int
        Iterations done (1 after the first step).
    iterations : int
        Total iterations of the run.
    loss : float
        This step's MSE in network units.
    lr : float
        Learning rate used for this step.
    val_rmse_hu : float or None
        Latest validation RMSE in HU (None before the first validation).
    """

    iteration: int
    iterations: int
    loss: float
    lr: float
    val_rmse_hu: float | None


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What :func:`train` wrote and measured.

    Attributes
    ----------
    weights, card, curve, config, log, checkpoint : Path
        Output files.
    metrics : dict
        The card's metrics (HU RMSEs, final loss).
    iterations_run : int
        Iterations done by this call (0 if a finished checkpoint was resumed).
    seconds_per_iteration : float or None
        Mean wall time of a training step in this call, validation excluded.
    """

    weights: Path
    card: Path
    curve: Path
    config: Path
    log: Path
    checkpoint: Path
    metrics: dict[str, Any]
    iterations_run: int
    seconds_per_iteration: float | None


def output_paths(out_dir: str | os.PathLike[str], name: str) -> dict[str, Path]:
    """The files :func:`train` writes for model ``name`` in ``out_dir`` (key -> path)."""
    d = Path(out_dir)
    return {
        "weights": d / f"{name}.safetensors",
        "card": d / f"{name}.card.yaml",
        "curve": d / f"{name}.curve.png",
        "config": d / f"{name}.config.json",
        "log": d / LOG_NAME,
        "checkpoint": d / CHECKPOINT_NAME,
    }


def _result_paths(paths: dict[str, Path]) -> dict[str, Path]:
    keys = ("weights", "card", "curve", "config", "log", "checkpoint")
    return {k: paths[k] for k in keys}


def _size_multiple(net: nn.Module) -> int:
    m = getattr(net, "required_multiple", 1)
    m = m() if callable(m) else m
    return int(m) if isinstance(m, int) and m >= 1 else 1


def build_adapter(config: TrainConfig) -> HUAdapter:
    """The untrained network of ``config`` wrapped in its :class:`HUAdapter` (no residual).

    Raises
    ------
    InputError
        Unknown architecture or bad architecture options.
    """
    from ctdid.models import build_model

    net = build_model(config.architecture, config.model_config)
    return HUAdapter(
        net,
        hu_offset=config.hu_offset,
        hu_scale=config.hu_scale,
        residual=False,
        size_multiple=_size_multiple(net),
    )


def evaluate(
    adapter: HUAdapter,
    pairs: list[tuple[NDArray[np.float32], NDArray[np.float32]]],
    *,
    device: torch.device | None = None,
) -> tuple[float, float]:
    """RMSE in HU of the denoised and of the input images on full slices (pixels pooled).

    Parameters
    ----------
    adapter : HUAdapter
        The denoiser.
    pairs : list of (low, normal)
        Float32 HU slices (y, x).
    device : torch.device, optional
        Where the adapter lives.

    Returns
    -------
    denoised_rmse, input_rmse : float
        HU.
    """
    was_training = adapter.training
    adapter.eval()
    sse_out = sse_in = 0.0
    n = 0
    try:
        with torch.no_grad():
            for low, normal in pairs:
                x = torch.as_tensor(low, device=device)[None, None]
                out = adapter(x)[0, 0].cpu().numpy().astype(np.float64)
                ref = normal.astype(np.float64)
                sse_out += float(np.sum((out - ref) ** 2))
                sse_in += float(np.sum((low.astype(np.float64) - ref) ** 2))
                n += ref.size
    finally:
        adapter.train(was_training)
    return math.sqrt(sse_out / n), math.sqrt(sse_in / n)


def _val_pairs(
    config: TrainConfig,
) -> tuple[list[Path], list[tuple[NDArray[np.float32], NDArray[np.float32]]]]:
    if config.val_files is not None:
        train_files = list_pairs(config.dataset)
        val_files = [Path(f) for f in config.val_files]
        resolved = {f.resolve() for f in val_files}
        train_files = [f for f in train_files if f.resolve() not in resolved]
        if not train_files:
            raise InputError("every pair file is a validation file", path=config.dataset)
    else:
        train_files, val_files = split_pairs(config.dataset, n_val=config.n_val)
    val = []
    for f in val_files:
        pair = load_pair(f)
        val.append((pair.low_at(config.dose), pair.normal))
    return train_files, val


def _test_pair(config: TrainConfig) -> tuple[NDArray[np.float32], NDArray[np.float32]] | None:
    if config.test_low is None or config.test_normal is None:
        return None
    from ctdid.io import read_volume
    from ctdid.sim import rescale_noise

    kwargs = dict(config.test_read)
    low = read_volume(config.test_low, **kwargs).hu
    normal = read_volume(config.test_normal, **kwargs).hu
    if low.shape != normal.shape:
        raise InputError(
            f"test pair shapes differ: {low.shape} and {normal.shape}", path=config.test_low
        )
    low2, normal2 = low[0], normal[0]
    if config.dose != config.test_dose:
        low2 = rescale_noise(normal2, low2, pair_dose=config.test_dose, dose=config.dose)
    return low2.astype(np.float32), normal2.astype(np.float32)


def _all_data_text(config: TrainConfig, infos: list[dict[str, Any]], sizes: list[int]) -> str:
    """The card's ``training_data``: each folder's text, with its share of the patches."""
    folders = [config.dataset, *config.extra_datasets]
    weights = config.dataset_weights
    parts = []
    for i, (folder, info, n) in enumerate(zip(folders, infos, sizes, strict=True)):
        text = _training_data_text(info, config, n, folder=folder)
        if weights is not None:
            text = f"{100 * weights[i] / sum(weights):.0f} % of the patches: {text}"
        parts.append(text)
    return " | ".join(parts)


def _training_data_text(
    info: dict[str, Any], config: TrainConfig, n_train: int, *, folder: str | None = None
) -> str:
    folder = config.dataset if folder is None else folder
    if info.get("format") == SIMULATE_FORMAT:  # a `ctdid simulate` folder: stored doses
        return _simulate_data_text(info, config, n_train, folder=folder)
    pairs = info.get("pairs", [])
    kinds: dict[str, int] = {}
    for rec in pairs:
        kinds[str(rec.get("kind", "?"))] = kinds.get(str(rec.get("kind", "?")), 0) + 1
    real = sorted({str(s.get("name")) for s in info.get("real_sources", [])})
    parts = [
        f"{n_train} training slice(s) from pairs folder {Path(folder).name!r} "
        f"(ctdid dataset, seed {info.get('seed', '?')}, base dose {info.get('base_dose', '?')})"
    ]
    if kinds:
        parts.append("kinds: " + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())))
    if real:
        parts.append(
            "real normal-dose sources (noise inserted in the projection domain): " + ", ".join(real)
        )
    if info.get("n_phantoms"):
        parts.append(
            f"{info['n_phantoms']} procedural ctdid.sim phantoms (abdomen, chest) scanned in "
            "simulation with Poisson + electronic noise"
        )
    parts.append(f"inputs at dose {config.dose} by the image-domain noise-rescaling shortcut")
    return "; ".join(parts)


def _simulate_data_text(
    info: dict[str, Any], config: TrainConfig, n_train: int, *, folder: str
) -> str:
    options = info.get("options", {})
    kinds: dict[str, int] = {}
    for rec in info.get("slices", []):
        kinds[str(rec.get("kind", "?"))] = kinds.get(str(rec.get("kind", "?")), 0) + 1
    real = sorted({str(s.get("name")) for s in options.get("real_sources", [])})
    parts = [
        f"{n_train} training slice(s) from 'ctdid simulate' folder {Path(folder).name!r} "
        f"(seed {options.get('seed', '?')}, stored doses {options.get('doses', '?')}, "
        f"{options.get('realisations', '?')} noise realisation(s) each)"
    ]
    if kinds:
        parts.append("kinds: " + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())))
    if real:
        parts.append(
            "real normal-dose sources (noise inserted in the projection domain): " + ", ".join(real)
        )
    if options.get("phantoms"):
        parts.append(
            f"{options['phantoms']} procedural ctdid.sim phantoms (abdomen, chest) scanned in "
            "simulation with Poisson + electronic noise"
        )
    parts.append(f"inputs: the images simulated at dose {config.dose}")
    return "; ".join(parts)


def _portable_config(config: TrainConfig) -> dict[str, Any]:
    """The config for the card, with file names instead of this machine's paths."""
    data = config.to_dict()
    for key in ("dataset", "test_low", "test_normal"):
        if data[key] is not None:
            data[key] = Path(data[key]).name
    data["extra_datasets"] = [Path(f).name for f in data["extra_datasets"]]
    if data["val_files"] is not None:
        data["val_files"] = [Path(f).name for f in data["val_files"]]
    return data


def _kernel_text(infos: list[dict[str, Any]]) -> str | None:
    records = [r for info in infos for r in (info.get("pairs") or info.get("slices", []))]
    kernels = sorted({str(r.get("kernel")) for r in records if r.get("kernel")})
    return ",".join(kernels) if kernels else None


def _write_log(path: Path, history: list[dict[str, Any]]) -> None:
    from ctdid.io.atomic import atomic_file

    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_text("".join(json.dumps(h) + "\n" for h in history), encoding="utf-8")


def _plot_curve(path: Path, history: list[dict[str, Any]], *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from ctdid.io.atomic import atomic_file

    train_pts = [(h["iteration"], h["loss"]) for h in history if "loss" in h]
    val_pts = [(h["iteration"], h["val_rmse_hu"]) for h in history if "val_rmse_hu" in h]
    test_pts = [(h["iteration"], h["test_rmse_hu"]) for h in history if "test_rmse_hu" in h]
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    if train_pts:
        ax.plot(*zip(*train_pts, strict=True), color="tab:blue", lw=1, label="train MSE")
    ax.set_xlabel("iteration")
    ax.set_ylabel("train loss (MSE, network units)", color="tab:blue")
    ax.set_yscale("log")
    ax2 = ax.twinx()
    if val_pts:
        ax2.plot(*zip(*val_pts, strict=True), "o-", color="tab:red", label="val RMSE")
    if test_pts:
        ax2.plot(*zip(*test_pts, strict=True), "s--", color="tab:green", label="test RMSE")
    ax2.set_ylabel("RMSE (HU)", color="tab:red")
    ax.set_title(title)
    handles = ax.get_legend_handles_labels()
    handles2 = ax2.get_legend_handles_labels()
    if handles[0] or handles2[0]:
        ax2.legend(handles[0] + handles2[0], handles[1] + handles2[1], loc="upper right")
    fig.tight_layout()
    with atomic_file(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png")


def _save_checkpoint(
    path: Path,
    *,
    iteration: int,
    adapter: HUAdapter,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: TrainConfig,
    history: list[dict[str, Any]],
) -> None:
    from ctdid.io.atomic import atomic_file

    state = {
        "iteration": iteration,
        "model": adapter.net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "config": config.to_dict(),
        "history": history,
    }
    with atomic_file(path, overwrite=True) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt checkpoint: say which file
        raise InputError(f"cannot read training checkpoint: {exc}", path=path) from None
    if not isinstance(state, dict) or "iteration" not in state or "model" not in state:
        raise InputError("not a ctdid training checkpoint", path=path)
    return state


def train(
    config: TrainConfig,
    *,
    out_dir: str | os.PathLike[str],
    progress: Callable[[TrainProgress], None] | None = None,
    resume: bool = True,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train a denoiser on a pairs folder and write weights, card, curve, config and log.

    Parameters
    ----------
    config : TrainConfig
        The run.
    out_dir : path-like
        Output folder (created). Use one folder per model.
    progress : callable, optional
        Called with a :class:`TrainProgress` after every iteration.
    resume : bool, optional
        Continue from ``out_dir/checkpoint.pt`` if it exists (default). Finished iterations are
        not redone; the config must match the checkpoint's (except checkpoint/validation/log
        intervals and threads).
    overwrite : bool, optional
        Replace existing outputs; with ``resume=False`` also start over from an existing
        checkpoint.
    device : torch device, optional
        Where to train (default CPU).
    stop_after : int, optional
        Stop (after writing a checkpoint) once this many iterations are done in total, without
        writing the final outputs; for splitting a long run. Default: run to the end.

    Returns
    -------
    TrainResult

    Raises
    ------
    InputError
        Bad dataset or config, or a checkpoint of another config.
    OutputExistsError
        Outputs exist and ``overwrite`` is false, or a checkpoint exists with ``resume=False``
        and ``overwrite`` false.
    """
    out = Path(out_dir)
    paths = output_paths(out, config.name)
    finals = [paths[k] for k in ("weights", "card", "curve", "config")]
    if not overwrite:
        for p in finals:
            if p.exists():
                raise OutputExistsError("exists; pass --overwrite to replace it", path=p)
    for folder in (config.dataset, *config.extra_datasets):
        check_not_held_out(Path(folder).name, path=folder)
    state = _resume_state(config, paths["checkpoint"], resume=resume, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)

    dev = torch.device("cpu") if device is None else torch.device(device)
    old_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _run(config, out, paths, state, progress, dev, stop_after, overwrite)
    finally:
        torch.set_num_threads(old_threads)


def _resume_state(
    config: TrainConfig, ckpt_path: Path, *, resume: bool, overwrite: bool
) -> dict[str, Any] | None:
    """The checkpoint to resume (None: start afresh), checked against ``config``."""
    if not ckpt_path.exists():
        return None
    if not resume:
        if not overwrite:
            raise OutputExistsError(
                "a checkpoint exists; resume it or pass --overwrite to start over",
                path=ckpt_path,
            )
        return None
    state = _load_checkpoint(ckpt_path)
    try:
        saved = TrainConfig.from_dict(state["config"])
    except InputError as exc:
        raise InputError(f"checkpoint config: {exc.problem}", path=ckpt_path) from None
    diff = config.differences(saved)
    if diff:
        raise InputError(
            f"checkpoint was made with another config (differs in {', '.join(diff)}); "
            "pass --no-resume --overwrite to start over",
            path=ckpt_path,
        )
    return state


def _run(
    config: TrainConfig,
    out: Path,
    paths: dict[str, Path],
    state: dict[str, Any] | None,
    progress: Callable[[TrainProgress], None] | None,
    dev: torch.device,
    stop_after: int | None,
    overwrite: bool,
) -> TrainResult:
    """Train (from ``state`` if given) and write the outputs: :func:`train` past its checks."""
    info = read_dataset_info(config.dataset)
    train_files, val = _val_pairs(config)
    extras = [(folder, list_pairs(folder)) for folder in config.extra_datasets]
    groups = [train_files] + [files for _, files in extras]
    weights = None
    if config.dataset_weights is not None:
        weights = [
            share / len(files)
            for share, files in zip(config.dataset_weights, groups, strict=True)
            for _ in files
        ]
    test = _test_pair(config)
    dataset = PairPatchDataset(
        [f for files in groups for f in files],
        dose=config.dose,
        patch=config.patch,
        augment=config.augment,
        seed=config.seed,
        min_body_fraction=config.min_body_fraction,
        weights=weights,
    )
    torch.manual_seed(config.seed)
    trainer = _Trainer.start_or_resume(config, dev, val, test, state)
    end = config.iterations if stop_after is None else min(config.iterations, stop_after)
    step_seconds = trainer.train_until(end, dataset, paths, progress)
    ran = max(0, end - trainer.start)
    sec_per_it = step_seconds / ran if ran else None
    metrics: dict[str, Any] = {}
    if end == config.iterations:
        metrics = trainer.final_metrics(paths["log"])
        infos = [info] + [read_dataset_info(folder) for folder, _ in extras]
        sizes = [len(files) for files in groups]
        _write_outputs(
            trainer,
            paths,
            metrics,
            data_text=_all_data_text(config, infos, sizes),
            kernel=_kernel_text(infos),
            overwrite=overwrite,
        )
    return TrainResult(
        **_result_paths(paths),
        metrics=metrics,
        iterations_run=ran,
        seconds_per_iteration=sec_per_it,
    )


@dataclasses.dataclass
class _Trainer:
    """The network, optimiser and schedule of a run, with its history and evaluation data."""

    config: TrainConfig
    adapter: HUAdapter
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    dev: torch.device
    val: list[tuple[NDArray[np.float32], NDArray[np.float32]]]
    test: tuple[NDArray[np.float32], NDArray[np.float32]] | None
    start: int = 0  # iterations done before this call
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @classmethod
    def start_or_resume(
        cls,
        config: TrainConfig,
        dev: torch.device,
        val: list[tuple[NDArray[np.float32], NDArray[np.float32]]],
        test: tuple[NDArray[np.float32], NDArray[np.float32]] | None,
        state: dict[str, Any] | None,
    ) -> _Trainer:
        """A fresh network, Adam and step schedule, restored from a checkpoint ``state``."""
        adapter = build_adapter(config).to(dev)
        optimizer = torch.optim.Adam(adapter.net.parameters(), lr=config.lr)
        milestones = sorted({max(1, round(m * config.iterations)) for m in config.lr_milestones})
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=milestones, gamma=config.lr_gamma
        )
        trainer = cls(config, adapter, optimizer, scheduler, dev, val, test)
        if state is not None:
            adapter.net.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            trainer.start = int(state["iteration"])
            trainer.history = list(state["history"])
        return trainer

    def validate(self, iteration: int) -> dict[str, Any]:
        """A history entry with the validation and test RMSEs (HU) at ``iteration``."""
        entry: dict[str, Any] = {"iteration": iteration}
        if self.val:
            rmse, rmse_in = evaluate(self.adapter, self.val, device=self.dev)
            entry.update(val_rmse_hu=rmse, val_input_rmse_hu=rmse_in)
        if self.test is not None:
            rmse, rmse_in = evaluate(self.adapter, [self.test], device=self.dev)
            entry.update(test_rmse_hu=rmse, test_input_rmse_hu=rmse_in)
        return entry

    def step(self, dataset: PairPatchDataset, it: int) -> tuple[float, float]:
        """One optimiser step on batch ``it``; its loss and learning rate."""
        low, normal = dataset.batch(it, self.config.batch_size)
        low, normal = low.to(self.dev), normal.to(self.dev)
        lr = self.optimizer.param_groups[0]["lr"]
        pred = self.adapter.forward_net(self.adapter.to_net(low))
        loss = F.mse_loss(pred, self.adapter.to_net(normal))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"training loss became {loss_value} at iteration {it + 1}")
        return loss_value, lr

    def train_until(
        self,
        end: int,
        dataset: PairPatchDataset,
        paths: dict[str, Path],
        progress: Callable[[TrainProgress], None] | None,
    ) -> float:
        """Train from :attr:`start` to ``end`` iterations, logging, validating and saving.

        Returns the wall time of the training steps alone, in seconds.
        """
        config, history = self.config, self.history
        last_val: float | None = next(
            (h["val_rmse_hu"] for h in reversed(history) if "val_rmse_hu" in h), None
        )
        self.adapter.train()
        window: list[float] = []
        step_seconds = 0.0
        t_window = time.perf_counter()
        for it in range(self.start, end):
            t0 = time.perf_counter()
            loss_value, lr = self.step(dataset, it)
            step_seconds += time.perf_counter() - t0
            window.append(loss_value)
            done = it + 1
            if done % config.log_every == 0 or done == end:
                history.append(
                    {
                        "iteration": done,
                        "loss": float(np.mean(window)),
                        "lr": lr,
                        "seconds": round(time.perf_counter() - t_window, 4),
                    }
                )
                window = []
                t_window = time.perf_counter()
            if done % config.val_every == 0 or done == config.iterations:
                entry = self.validate(done)
                history.append(entry)
                last_val = entry.get("val_rmse_hu", last_val)
            if progress is not None:
                progress(TrainProgress(done, config.iterations, loss_value, lr, last_val))
            if done % config.checkpoint_every == 0 or done == end:
                self.save_checkpoint(paths, done)
        return step_seconds

    def save_checkpoint(self, paths: dict[str, Path], iteration: int) -> None:
        """Write the checkpoint and the log after ``iteration`` iterations."""
        _save_checkpoint(
            paths["checkpoint"],
            iteration=iteration,
            adapter=self.adapter,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            config=self.config,
            history=self.history,
        )
        _write_log(paths["log"], self.history)

    def final_metrics(self, log: Path) -> dict[str, Any]:
        """The card's metrics: the last validation (made now if missing) and the final loss."""
        history, iterations = self.history, self.config.iterations
        final = next((h for h in reversed(history) if "iteration" in h and "loss" not in h), None)
        if final is None or final["iteration"] != iterations:
            final = self.validate(iterations)
            history.append(final)
            _write_log(log, history)
        losses = [h["loss"] for h in history if "loss" in h]
        metrics: dict[str, Any] = {
            k: round(float(v), 3) for k, v in final.items() if k != "iteration" and v is not None
        }
        if losses:
            metrics["final_train_mse_net"] = float(losses[-1])
        metrics["val_slices"] = len(self.val)
        return metrics


def _write_outputs(
    trainer: _Trainer,
    paths: dict[str, Path],
    metrics: dict[str, Any],
    *,
    data_text: str,
    kernel: str | None,
    overwrite: bool,
) -> None:
    """Write the weights, the model card, the training curve and the config."""
    from safetensors.torch import save_file

    from ctdid.io.atomic import atomic_file
    from ctdid.models import ModelCard, sha256_file

    config, adapter = trainer.config, trainer.adapter
    store = getattr(torch, config.weights_dtype)
    tensors = {
        k: (v.to(store) if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in adapter.net.state_dict().items()
    }
    with atomic_file(paths["weights"], overwrite=overwrite) as tmp:
        save_file(
            tensors,
            str(tmp),
            metadata={"name": config.name, "architecture": config.architecture},
        )
    card = ModelCard(
        name=config.name,
        architecture=config.architecture,
        hu_offset=config.hu_offset,
        hu_scale=config.hu_scale,
        architecture_config=dict(config.model_config),
        residual=False,
        size_multiple=adapter.size_multiple,
        training_dose=config.dose,
        kernel=kernel,
        training_data=data_text,
        licence=config.licence,
        weights_sha256=sha256_file(paths["weights"]),
        metrics=metrics,
        training_config=_portable_config(config),
        notes=config.notes,
    )
    card.save(paths["card"], overwrite=overwrite)
    _plot_curve(paths["curve"], trainer.history, title=f"{config.name} (dose {config.dose})")
    config.save(paths["config"], overwrite=overwrite)
