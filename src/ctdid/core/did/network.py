"""Calls of the denoiser the engine makes: checked forward passes, copies, deterministic cuDNN."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import Tensor, nn

__all__ = [
    "apply_net",
    "channels_last",
    "deterministic",
    "floating_parameters",
    "forward_measured",
    "model_output",
    "pools_over_image",
    "state_copy",
    "trainable_copy",
    "tuned_parameters",
]

#: Which weights the robust and fast modes fine-tune (``DIDOptions.tune``).
TUNE: tuple[str, ...] = ("all", "biases", "last")


def model_output(net: nn.Module, x: Tensor) -> Tensor:
    """``net(x)``, checked to be a tensor of the input's shape (HU in, HU out)."""
    y = net(x)
    if not isinstance(y, Tensor) or y.shape != x.shape:
        got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(
            f"the model must map HU images (B, 1, H, W) to the same shape; "
            f"input {tuple(x.shape)} gave {got}"
        )
    return y


def apply_net(net: nn.Module, x: Tensor, batch_size: int | None) -> Tensor:
    """Apply ``net`` without gradients, in chunks of ``batch_size`` along axis 0."""
    with torch.no_grad():
        if batch_size is None or x.shape[0] <= batch_size:
            return model_output(net, x).detach()
        return torch.cat(
            [
                model_output(net, x[i : i + batch_size]).detach()
                for i in range(0, x.shape[0], batch_size)
            ]
        )


def forward_measured(net: nn.Module, x: Tensor) -> tuple[Tensor, int]:
    """Forward pass with gradients; also the bytes autograd saves for the backward pass."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: Tensor) -> Tensor:
        try:
            key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
            seen[key] = key[1]
        except (RuntimeError, NotImplementedError):  # pragma: no cover - exotic tensors
            pass
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = model_output(net, x)
    return y, int(sum(seen.values()))


def pools_over_image(model: nn.Module) -> bool:
    """Whether a layer of ``model`` normalises with statistics taken over the image.

    Instance, group and layer norms (and modules named like them, such as ctdid's
    ``SafeInstanceNorm2d``) make the output on a crop differ from the crop of the output.
    Batch norm in eval mode uses fixed statistics and does not count.
    """
    pooled = (nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)
    for m in model.modules():
        name = type(m).__name__
        if isinstance(m, pooled) or "InstanceNorm" in name or "GroupNorm" in name:
            return True
    return False


def state_copy(net: nn.Module) -> dict[str, Tensor]:
    """CPU copy of a network's state dict (a candidate's weights), in the standard format."""
    return {
        k: v.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
        for k, v in net.state_dict().items()
    }


def _in_format(t: Tensor, memory_format: torch.memory_format) -> Tensor:
    """``t`` (4-D) with the strides of ``memory_format`` spelled out, copied if needed.

    ``Tensor.contiguous(memory_format=...)`` leaves a tensor with one channel (the input
    image, the first convolution's weight) as it is, since both formats fit it; its strides
    then say "standard", and the convolution after it computes in the standard format, which
    every later layer converts back (about a fifth of a fast-mode run on the CPU). Explicit
    strides make the choice unambiguous.
    """
    _, c, h, w = t.shape
    if memory_format == torch.channels_last:
        strides = (h * w * c, 1, w * c, c)
    else:
        strides = (c * h * w, h * w, w, 1)
    if t.stride() == strides:
        return t
    out = torch.empty_strided(t.shape, strides, dtype=t.dtype, device=t.device)
    out.copy_(t)
    return out


def _channels_last_input(module: nn.Module, args: tuple[object, ...]) -> tuple[object, ...]:
    if args and isinstance(args[0], Tensor) and args[0].dim() == 4:
        return (_in_format(args[0], torch.channels_last), *args[1:])
    return args


def _set_format(net: nn.Module, memory_format: torch.memory_format) -> None:
    with torch.no_grad():
        for t in (*net.parameters(), *net.buffers()):
            if t.dim() == 4:  # the same parameter objects, new strides
                t.data = _in_format(t.data, memory_format)


def channels_last(net: nn.Module, x: Tensor, y: Tensor, *, tol_hu: float = 0.01) -> str | None:
    """Put ``net`` (the engine's own copy) in the channels-last memory format, if it works.

    Its 4-D weights are stored channels-last (the parameter objects stay the same) and a
    forward pre-hook gives every 4-D input the same format, so oneDNN or cuDNN convolutions
    need no layout conversions. Values are unchanged; sums may run in another order (outputs
    differ by about 1e-4 HU), which is why the engine computes the default and ``t_low``
    before switching. The switch is checked: ``net`` applied to ``x`` (one HU image,
    (1, 1, H, W)) must still give ``y`` within ``tol_hu``; a network that fails or differs in
    the new format (e.g. one that calls ``.view`` on its activations) is switched back.

    Returns
    -------
    str or None
        ``None`` if ``net`` now computes channels-last, else why it was left as it was.
    """
    _set_format(net, torch.channels_last)
    handle = net.register_forward_pre_hook(_channels_last_input)
    why: str | None = None
    try:
        with torch.no_grad():
            diff = float((model_output(net, x) - y).abs().max())
        if not diff <= tol_hu:
            why = f"output differs by {diff:.3g} HU in channels-last"
    except (RuntimeError, ValueError) as exc:
        why = f"forward fails in channels-last: {str(exc).splitlines()[0][:200]}"
    if why is not None:
        handle.remove()
        _set_format(net, torch.contiguous_format)
    return why


def trainable_copy(
    model: nn.Module, device: torch.device, *, tune: str = "all"
) -> tuple[nn.Module, list[nn.Parameter]]:
    """A deep copy of ``model`` on ``device`` in eval mode, and the parameters to fine-tune.

    Only the parameters :func:`tuned_parameters` selects require gradients.

    Raises
    ------
    ValueError
        If the model has no floating-point parameters.
    """
    net = copy.deepcopy(model).to(device)
    net.eval()
    params = [p for _, p in tuned_parameters(net, tune)]
    if not params:
        raise ValueError(f"the model has no floating-point parameters to fine-tune (tune={tune!r})")
    chosen = {id(p) for p in params}
    for p in floating_parameters(net):
        p.requires_grad_(id(p) in chosen)
    return net, params


def floating_parameters(net: nn.Module) -> list[nn.Parameter]:
    """The parameters the engine fine-tunes: all floating-point ones, in module order."""
    return [p for p in net.parameters() if p.is_floating_point()]


def tuned_parameters(net: nn.Module, tune: str = "all") -> list[tuple[str, nn.Parameter]]:
    """The named floating-point parameters the engine fine-tunes, in module order.

    Parameters
    ----------
    net : nn.Module
        The network.
    tune : {"all", "biases", "last"}
        ``"all"``: every floating-point parameter (the paper). ``"biases"``: the
        one-dimensional ones only (per-channel biases and gains, a GainTuning-like subset).
        ``"last"``: the last third of the parameter tensors in module order (at least two),
        i.e. the layers next to the output.

    Raises
    ------
    ValueError
        If ``tune`` is unknown.
    """
    named = [(n, p) for n, p in net.named_parameters() if p.is_floating_point()]
    if tune == "all":
        return named
    if tune == "biases":
        return [(n, p) for n, p in named if p.dim() == 1]
    if tune == "last":
        return named[-max(2, len(named) // 3) :]
    raise ValueError(f"tune must be one of {', '.join(TUNE)}, got {tune!r}")


@contextlib.contextmanager
def deterministic(device: torch.device, enabled: bool) -> Iterator[None]:
    """Deterministic cuDNN within the block only (restored after); no-op off CUDA."""
    if not enabled or device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    with cudnn.flags(enabled=cudnn.enabled, benchmark=False, deterministic=True, allow_tf32=False):
        yield
