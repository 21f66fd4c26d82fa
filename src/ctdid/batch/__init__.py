"""Many scans at once: ``ctdid batch``, one Ray task per CT series.

Every series becomes one Ray task that writes exactly the result folder ``ctdid run`` writes
(through :func:`ctdid.runner.run_did`), under ``OUT/<name>``. A new result is made in the
hidden folder ``OUT/.<name>.partial`` (:func:`partial_folder`) and renamed to ``OUT/<name>``
once it is finished, so ``OUT/<name>`` only ever holds a finished run. A rerun of the same
batch

* skips the series whose ``OUT/<name>`` holds the same finished run: the runner's resume check
  compares its ``run.json`` with the options, the model (state-dict sha256) and the input
  (shape and sha256); a folder holding another run is an error row, ``overwrite`` redoes it;
* finishes the interrupted ones from their partial folder with the runner's resume logic
  (``resume.json``: finished slices, slice batches and fine-tuning are not done again).

One bad series (unreadable, wrong shape, a bad option in its manifest row) gives a failed
row and does not stop the others. ``OUT/batch.csv`` has one row per finished series:
``series, status (done | skipped | failed), error, seconds, candidates, coverage``.

Ray (``pip install 'ctdid[batch]'``) is imported only here and only when a batch runs. By
default it starts on this machine with one worker per core, bound to the loopback interface,
without its dashboard; ``address`` joins a running cluster (``ray start --head``), whose
nodes must have ctdid installed and see the input and output paths. Each task uses
``threads`` torch threads; with a CUDA ``device`` each task asks Ray for one GPU. A result is
bit for bit that of ``ctdid run`` with the same options and as many torch threads (the
floating-point sums, and so the candidates, depend on the number of threads).
"""

from __future__ import annotations

from ctdid.batch.jobs import (
    SeriesJob,
    SeriesResult,
    check_defaults,
    make_job,
    partial_folder,
    run_series,
)
from ctdid.batch.ray_cluster import init_ray
from ctdid.batch.scheduler import BatchSummary, run_batch, run_batch_with_progress, summary_table
from ctdid.batch.series import (
    BATCH_FILE,
    CSV_COLUMNS,
    DEFAULTS,
    OPTION_COLUMNS,
    SeriesSpec,
    find_series,
    read_manifest,
)

__all__ = [
    "BATCH_FILE",
    "CSV_COLUMNS",
    "DEFAULTS",
    "OPTION_COLUMNS",
    "BatchSummary",
    "SeriesJob",
    "SeriesResult",
    "SeriesSpec",
    "check_defaults",
    "find_series",
    "init_ray",
    "make_job",
    "partial_folder",
    "read_manifest",
    "run_batch",
    "run_batch_with_progress",
    "run_series",
    "summary_table",
]
