"""A sweep's jobs checked as ``debiasbench run`` checks its input, before anything is written.

``run`` refuses bad input (a dataset ``root`` that is not there, a device this machine
lacks, a ``base_run`` the store does not hold) in one line before it opens the store, so a
refused command leaves nothing behind. A sweep's jobs would each meet the same refusal in
their worker, after the sweep had created the store and its experiments, and end as
FAILED jobs that no FAILED run records. So the sweep makes the same checks for every job
first and refuses the whole sweep, in one line naming the first bad job, before it writes
anything: a researcher learns at once that a dataset's files are missing, not after the
other jobs have run for hours.

What is checked where the jobs run on this machine (the ``local`` launcher): the device,
and each distinct dataset config's files (``BenchmarkDataset.check_files``: a cheap look,
no image decoded). Launchers that run jobs on other machines (Ray, Slurm, a plugin's) see
the data and devices of their nodes, not this one's: there only what does not depend on
the machine is checked (the heartbeat setting, ``base_run``), and a job whose node lacks
the data fails as a FAILED job.
"""

from __future__ import annotations

import json
from typing import Any

from debiasbench.contract.config import RunConfig
from debiasbench.core.errors import UserError
from debiasbench.sweep.monitor import job_label


def dataset_config(config: RunConfig) -> tuple[str, str]:
    """What identifies a job's data: the dataset and its parameters."""
    return config.dataset, json.dumps(config.dataset_params, sort_keys=True, default=str)


def check_jobs(jobs: list[RunConfig], tracking_uri: str | None, on_this_machine: bool) -> None:
    """Refuse (``UserError``, one line naming the job and how many jobs share the problem)
    where ``run`` would refuse a job's input before opening the store; only reads (the
    store is not created). ``on_this_machine``: the jobs run here, so the device and the
    data files are checked too."""
    from debiasbench.core.registry import DATASETS
    from debiasbench.run.base_model import check_base_run
    from debiasbench.run.runner import resolve_device
    from debiasbench.track import heartbeat
    from debiasbench.track.store import Tracker

    heartbeat.interval()  # DEBIASBENCH_HEARTBEAT_SECONDS, as run refuses it
    checked_data: set[tuple[str, str]] = set()
    checked_devices: set[str] = set()
    trackers: dict[str, Any] = {}
    for config in jobs:
        data, shared = dataset_config(config), False
        try:
            if on_this_machine and config.device not in checked_devices:
                resolve_device(config.device)
                checked_devices.add(config.device)
            if on_this_machine and data not in checked_data:
                shared = True
                DATASETS.get(config.dataset).check_files(config.dataset_params)
                checked_data.add(data)
                shared = False
            if config.base_run:
                tracker = trackers.get(config.experiment) or trackers.setdefault(
                    config.experiment, Tracker(tracking_uri, config.experiment))
                check_base_run(config, tracker)  # read only
        except UserError as exc:
            others = sum(dataset_config(other) == data for other in jobs) - 1 if shared else 0
            also = f" (and {others} other job{'s' if others > 1 else ''} of this dataset config)" if others else ""
            raise UserError(f"sweep job {job_label(config)}{also}: {str(exc).rstrip('.')}; the sweep ran no job "
                            "(every job's input is checked before the first one starts)") from None
