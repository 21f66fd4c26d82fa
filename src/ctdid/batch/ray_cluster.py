"""Ray for ``ctdid batch``: a local instance bound to the loopback interface, or a cluster."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ctdid.errors import CTDIDError

_INSTALL = "ctdid batch needs Ray: pip install 'ctdid[batch]'"


@contextmanager
def _loopback_only() -> Iterator[None]:
    """Make a local Ray bind its ports to 127.0.0.1 (Ray otherwise uses the node's address).

    Ray keeps a head node on the loopback interface when clusters are disabled
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when Ray is imported); the flag is
    restored once the local instance runs.
    """
    key = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    old_env = os.environ.get(key)
    os.environ[key] = "0"
    constants: Any = sys.modules.get("ray._private.ray_constants")
    old_flag = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if constants is not None and old_flag is not None:
        constants.ENABLE_RAY_CLUSTER = False  # Ray was imported before the flag was set
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old_env
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None:
            if old_flag is None:  # Ray's own default for this platform and environment
                old_flag = (old_env or "1").lower() not in ("0", "false") and not getattr(
                    constants, "IS_WINDOWS_OR_OSX", False
                )
            constants.ENABLE_RAY_CLUSTER = old_flag


def init_ray(
    *, workers: int | None = None, threads: int = 1, address: str | None = None
) -> tuple[Any, bool]:
    """Start or join Ray quietly; return the ``ray`` module and whether this call started it.

    A Ray already initialised in this process is used as it is. Without ``address`` a local
    instance starts with ``workers * threads`` CPUs (default: every core), no dashboard,
    its ports on 127.0.0.1; ``address`` (``HOST:PORT`` of ``ray start --head``, or
    ``auto``) joins a running cluster; one on 127.0.0.1 is joined on the loopback interface
    (Ray would otherwise look for it at the node's own address).

    Raises
    ------
    CTDIDError
        Ray is not installed (the message says how to install it), or the cluster cannot be
        reached.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with _loopback_only() if address is None or _is_loopback(address) else _nothing():
        try:
            import ray
        except ImportError:
            raise CTDIDError(_INSTALL) from None
        if ray.is_initialized():
            return ray, False
        quiet: dict[str, Any] = {
            "include_dashboard": False,
            "logging_level": logging.ERROR,
            "log_to_driver": False,
        }
        try:
            if address is None:
                cpus = None if workers is None else int(workers) * max(1, int(threads))
                ray.init(address="local", num_cpus=cpus, _node_ip_address="127.0.0.1", **quiet)
            else:
                ray.init(address=address, **quiet)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            if address is None:
                raise CTDIDError(f"cannot start Ray here: {exc}") from None
            raise CTDIDError(
                f"cannot join the Ray cluster {address}: {exc} (a cluster with token "
                "authentication also needs RAY_AUTH_MODE=token and its token here)"
            ) from None
    return ray, True


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _is_loopback(address: str) -> bool:
    """Whether a cluster address names this machine's loopback interface."""
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")
